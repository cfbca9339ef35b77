"""free_port never hands out the same port twice in a row (a server and its middlebox)."""

from __future__ import annotations

import socket

import pytest

from atls_scenarios import processes


class _Socket:
    """A socket whose bind(0) gets the ports given, in order (as the kernel may)."""

    ports: list[int] = []

    def __init__(self, *args: object) -> None:
        self.port = 0

    def __enter__(self) -> _Socket:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def bind(self, address: tuple[str, int]) -> None:
        self.port = _Socket.ports.pop(0)

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)


def test_a_port_just_handed_out_is_not_handed_out_again(monkeypatch: pytest.MonkeyPatch) -> None:
    # The interop runner picked a server's port, then the middlebox's: the kernel
    # offered the same free port twice (the first was not bound yet), mitmdump could
    # not listen, and the client reached the server directly.
    monkeypatch.setattr(socket, "socket", _Socket)
    _Socket.ports = [41001, 41001, 41002]
    first = processes.free_port()
    second = processes.free_port()
    assert (first, second) == (41001, 41002)
