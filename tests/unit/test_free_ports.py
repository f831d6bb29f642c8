"""Ports handed to servers started later: outside the kernel's ephemeral range (where outgoing
connections take theirs) and never the same number twice while a reservation stands."""

from __future__ import annotations

import socket
from pathlib import Path

from libs.embedded.ports import free_port, free_port_on


def _ephemeral_low() -> int:
    return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])


def test_picked_ports_are_below_the_ephemeral_range_and_bindable() -> None:
    for _ in range(20):
        port = free_port()
        assert 10_000 <= port < _ephemeral_low()
        with socket.socket() as server:
            server.bind(("127.0.0.1", port))


def test_no_port_is_handed_out_twice_while_reserved() -> None:
    picked = [free_port() for _ in range(300)]
    assert len(set(picked)) == len(picked)


def test_a_port_taken_on_one_of_the_hosts_is_not_picked_for_both() -> None:
    port = free_port_on(["127.0.0.2", "127.0.0.3"])
    for host in ("127.0.0.2", "127.0.0.3"):
        with socket.socket() as server:
            server.bind((host, port))
