"""TCP port helpers for the embedded stack (everything binds 127.0.0.1)."""

from __future__ import annotations

import random
import socket
import time
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    """Return a port that is free right now; see free_ports."""
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Return `count` consecutive ports that are free right now.

    They come from below the kernel's ephemeral range, so an outgoing
    connection (a Kafka client, a boto3 pool) can never take one between
    this probe and the daemon binding it; that happened when ports came from
    the ephemeral range. The range also stays clear of the 6800-7300 ports
    Ceph OSDs scan for themselves. A daemon started by something else in
    the meantime still wins the race; its caller's error then says so.
    """
    low, high = _unreserved_range()
    rng = random.SystemRandom()
    for _ in range(200):
        first = rng.randrange(low, high - count)
        if all(_bindable(host, port) for port in range(first, first + count)):
            return list(range(first, first + count))
    raise OSError(f"no {count} consecutive free ports in {low}-{high} on {host}")


def _unreserved_range() -> tuple[int, int]:
    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    return 20000, max(ephemeral_low, 20000 + 1000)


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


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
