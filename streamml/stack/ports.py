"""TCP port helpers for the embedded stack (everything binds 127.0.0.1)."""

from __future__ import annotations

import socket
import time


def free_port(host: str = "127.0.0.1") -> int:
    """Return a port that is free right now.

    The kernel picks it from the ephemeral range, which never overlaps the
    6800-7300 range Ceph OSDs scan for themselves. There is a small race
    between closing this probe socket and the daemon binding the port; the
    daemon then fails to start and the caller's error says so.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout: float) -> None:
    """Block until host:port accepts connections; TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    while not port_open(host, port):
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{host}:{port} did not open within {timeout:.0f}s")
        time.sleep(0.05)
