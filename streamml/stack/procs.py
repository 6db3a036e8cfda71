"""Start and stop daemons of the embedded stack, tracked by pid files.

Daemons run in the foreground of their own session (the equivalent of
``setsid``): a Ctrl-C or a closing terminal in the parent must not reach them,
and ``streamml down`` from another shell must be able to stop them, which is
why each one gets a pid file and is stopped by PID, never by name.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import deque
from pathlib import Path

# Popen objects of the daemons this process started. Keeping them lets us
# reap our own children (no zombies while the parent lives) and avoids
# Python's "subprocess is still running" ResourceWarning.
_children: dict[int, subprocess.Popen] = {}


def spawn(
    cmd: list[str],
    *,
    log_path: Path,
    pid_path: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start cmd in a new session, stdout+stderr appended to log_path.

    Writes the PID to pid_path and returns it. The command must stay in the
    foreground (no self-daemonizing), so the PID written is the daemon's.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    pid_path.parent.mkdir(parents=True, exist_ok=True)
    with open(os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
            # What the stack's daemons write (stores, keys, logs) is for their owner alone.
            umask=0o077,
        )
    _children[proc.pid] = proc
    # Write-then-rename: a concurrent reader never sees an empty pid file.
    tmp = pid_path.with_name(pid_path.name + ".tmp")
    tmp.write_text(f"{proc.pid}\n")
    os.replace(tmp, pid_path)
    return proc.pid


def pid_alive(pid: int) -> bool:
    """True while pid runs; a zombie counts as dead."""
    child = _children.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        # Reaped: the PID is free for the kernel to reuse, forget the Popen.
        del _children[pid]
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # /proc/PID/stat: "pid (comm) STATE ..."; comm may contain spaces.
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def read_pid(pid_path: Path, exe: str) -> int | None:
    """The live PID recorded in pid_path, if it still runs executable exe.

    Checking the executable name guards against a stale pid file whose PID
    the kernel has since given to an unrelated process (after a reboot, say):
    we must never signal that one.
    """
    try:
        pid = int(pid_path.read_text().strip())
    except (OSError, ValueError):
        return None
    if not pid_alive(pid):
        return None
    if pid in _children:
        # Our own unreaped child: its PID cannot have been reused. Its cmdline
        # may still read empty for a moment, as execve wakes the parent before
        # the new argv is in place.
        return pid
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except OSError:
        return None
    return pid if os.path.basename(argv0.decode(errors="replace")) == exe else None


def terminate(pid: int, timeout: float = 10) -> bool:
    """SIGTERM pid, wait up to timeout, then SIGKILL.

    Returns True when the process exited on SIGTERM (a clean stop), False
    when it had to be killed, was already gone, or - for our own children,
    whose exit status we see - died of another signal (a SIGKILL sent just
    before, say, that had not taken effect yet).
    """
    child = _children.get(pid)
    if not pid_alive(pid):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    clean = _wait_gone(pid, timeout)
    if clean and child is not None:
        clean = child.returncode in (0, -signal.SIGTERM)
    if not clean:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _wait_gone(pid, 5)
    return clean


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):  # also reaps our own children
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def tail(path: Path, lines: int = 20) -> str:
    """The last lines of a log file ('' when it does not exist)."""
    try:
        with open(path, errors="replace") as f:
            return "".join(deque(f, maxlen=lines))
    except OSError:
        return ""
