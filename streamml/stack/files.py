"""Files of the embedded stack that hold secrets, and text that might quote one."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, atomically: a reader sees the old
    content or the new, and the content is never readable by others, not even
    for a moment (the file is created 0600 before anything is written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to a leftover tmp file
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """text with every given secret replaced by "***" (an error quoting a
    command line or a tool's output must not carry one into a log)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
