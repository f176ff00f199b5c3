"""This machine's loopback interface, where distrec's local servers and process groups live:
a free port on 127.0.0.1, and the environment that keeps gloo on it."""

from __future__ import annotations

import functools
import socket

__all__ = ["free_port", "gloo_on_loopback"]


def free_port() -> int:
    """A port nothing on 127.0.0.1 listens on now (the OS's pick; free until someone binds it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@functools.cache
def gloo_on_loopback() -> dict[str, str]:
    """``GLOO_SOCKET_IFNAME`` naming the loopback interface (gloo would otherwise pick the host's
    address, which a single-machine Ray does not use); empty where it has no known name."""
    name = next((name for _, name in socket.if_nameindex() if name in ("lo", "lo0")), None)
    return {"GLOO_SOCKET_IFNAME": name} if name else {}
