"""Ports for the embedded stack come from outside the kernel's ephemeral range.

An outgoing connection takes its local port from the ephemeral range, so a port
probed free there can be taken before the daemon binds it; a CI run lost a
service's health port that way.
"""

import socket
from pathlib import Path

from streamml.stack import ports
from streamml.stack.ports import free_ports


def ephemeral_low() -> int:
    return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])


def test_a_block_is_consecutive_bindable_and_below_the_ephemeral_range():
    ports = free_ports(5)
    assert ports == list(range(ports[0], ports[0] + 5))
    assert ports[-1] < ephemeral_low()
    held = []
    try:
        for port in ports:
            sock = socket.socket()
            sock.bind(("127.0.0.1", port))
            held.append(sock)
    finally:
        for sock in held:
            sock.close()


def test_a_held_port_is_never_handed_out(monkeypatch):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", free_ports(1)[0]))
        listener.listen()
        held = listener.getsockname()[1]
        monkeypatch.setattr(ports, "_unreserved_range", lambda: (held - 2, held + 3))
        handed_out = {free_ports(1)[0] for _ in range(100)}
    assert held not in handed_out
    assert handed_out <= {held - 2, held - 1, held + 1}
