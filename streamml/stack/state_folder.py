"""Checks on the embedded stack's state folder before anything starts in it.

Each problem stops ``streamml up`` with one line that names it and the fix;
none of them ever deletes a file.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from streamml.stack.files import write_private

# Bumped whenever a folder written by one release cannot be resumed by another.
# 1 (unmarked): in-memory broker and a memstore OSD, emptied at every start.
# 2: durable broker (Tansu s3:// through the RGW proxy) and a bluestore OSD,
#    or, marked "ephemeral", today's in-memory broker and memstore OSD.
STATE_FORMAT = 2
# Below this, Ceph's monitor shuts itself down and the OSD cannot write.
MIN_FREE_BYTES = 1 << 30
KEEP = "nothing was deleted"


class StateFolderError(Exception):
    """The state folder cannot host this stack; the message says why and what to do."""


def format_file(state_dir: Path) -> Path:
    return state_dir / "state-format.json"


def check_state_folder(state_dir: Path, ephemeral: bool) -> None:
    """Refuse a folder made by another streamml, or in the other mode."""
    mode = "ephemeral" if ephemeral else "durable"
    marker = format_file(state_dir)
    if not marker.exists():
        if (state_dir / "ceph").exists() or (state_dir / "stack.json").exists():
            raise StateFolderError(
                f"{state_dir} was made by an earlier streamml (state format 1, which kept no data "
                f"across restarts) and cannot be resumed; {KEEP}: choose a new --state-dir, or delete "
                f"{state_dir} yourself to reuse it")
        return
    try:
        found = json.loads(marker.read_text())
        found_format, found_mode = int(found["format"]), str(found["mode"])
    except (OSError, ValueError, KeyError, TypeError):
        raise StateFolderError(
            f"{marker} is unreadable or damaged; {KEEP}: restore it (it says "
            f'{{"format": {STATE_FORMAT}, "mode": "{mode}"}} for this release) or choose a new --state-dir'
        ) from None
    if found_format != STATE_FORMAT:
        raise StateFolderError(
            f"{state_dir} holds a stack in state format {found_format}, and this streamml reads format "
            f"{STATE_FORMAT}; {KEEP}: run the streamml that made it, or choose a new --state-dir")
    if found_mode != mode:
        fix = "drop --ephemeral" if found_mode == "durable" else "add --ephemeral"
        raise StateFolderError(
            f"{state_dir} holds a {found_mode} stack; {fix} to start it, or choose a new --state-dir "
            f"({KEEP})")


def mark_state_folder(state_dir: Path, ephemeral: bool) -> None:
    if not format_file(state_dir).exists():
        mode = "ephemeral" if ephemeral else "durable"
        write_private(format_file(state_dir), json.dumps({"format": STATE_FORMAT, "mode": mode}) + "\n")


def check_free_space(state_dir: Path, need: int = MIN_FREE_BYTES) -> None:
    free = shutil.disk_usage(state_dir).free
    if free < need:
        raise StateFolderError(
            f"the disk of {state_dir} has {free >> 20} MiB free and the stack needs at least "
            f"{need >> 20} MiB; free some space or choose a --state-dir on another disk ({KEEP})")


def make_private_folder(state_dir: Path) -> None:
    """The folder holds keys and keyrings: only its owner may enter it. A folder
    the user made is left as it is unless it is already a stack's."""
    if not state_dir.exists():
        state_dir.mkdir(mode=0o700, parents=True)
    if format_file(state_dir).exists() or not any(state_dir.iterdir()):
        os.chmod(state_dir, 0o700)
