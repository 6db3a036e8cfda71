"""The validator, killed (``os._exit(137)``, as SIGKILL would) at a chosen write of a decision or the pointer.

    python tests/integration/validator/crash_at.py before:2   # dies just before its second such write
    python tests/integration/validator/crash_at.py after:2    # dies just after it, before announcing

Nothing in the service knows: the store's conditional writes are wrapped here, and
the process ends with no flush, no commit and no goodbye to the consumer group.
"""

from __future__ import annotations

import os
import runpy
import sys

from streamml.store import ObjectStore

WHEN, _, NUMBER = sys.argv[1].partition(":")
REGISTRY_FILES = ("decision.json", "champion.json")
seen = 0


def crashing(write):
    def wrapped(self, key, *args, **kwargs):
        global seen
        if not key.endswith(REGISTRY_FILES):
            return write(self, key, *args, **kwargs)
        seen += 1
        if WHEN == "before" and seen == int(NUMBER):
            os._exit(137)
        result = write(self, key, *args, **kwargs)
        if WHEN == "after" and seen == int(NUMBER):
            os._exit(137)
        return result

    return wrapped


ObjectStore.create = crashing(ObjectStore.create)
ObjectStore.replace = crashing(ObjectStore.replace)
sys.argv = sys.argv[:1]  # the service takes its settings from the environment, not arguments
runpy.run_module("services.validator", run_name="__main__", alter_sys=True)
