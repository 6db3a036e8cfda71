"""How many CPU threads training should use.

torch's default is one thread per CPU of the machine. In a container limited
to fewer CPUs by a cgroup quota (a Kubernetes CPU limit), that many threads
take turns on the allowed share and mostly wait on each other: a small network
then trains many times slower than with one thread per allowed CPU.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_V2 = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1 = (Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us"))


def available_cpus() -> int:
    """CPUs this process may run on, capped by its cgroup CPU quota when it has one."""
    count = len(os.sched_getaffinity(0))
    quota = cpu_quota(_read(CGROUP_V2), _read(CGROUP_V1[0]), _read(CGROUP_V1[1]))
    return max(1, min(count, quota)) if quota is not None else count


def cpu_quota(v2_max: str | None, v1_quota: str | None, v1_period: str | None) -> int | None:
    """Whole CPUs a cgroup quota allows, rounded up; None without a quota.

    ``v2_max`` is the content of cgroup v2 ``cpu.max`` ("max 100000" or
    "200000 100000"); the v1 pair is ``cpu.cfs_quota_us`` (-1: none) and
    ``cpu.cfs_period_us``.
    """
    if v2_max is not None:
        parts = v2_max.split()
        if len(parts) == 2 and parts[0] != "max":
            return math.ceil(int(parts[0]) / int(parts[1]))
        return None
    if v1_quota is not None and v1_period is not None and int(v1_quota) > 0:
        return math.ceil(int(v1_quota) / int(v1_period))
    return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, ValueError):
        return None
