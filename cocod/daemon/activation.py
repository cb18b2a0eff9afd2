"""Socket activation: serve the listening socket systemd passes instead of binding one.

systemd's protocol: file descriptors start at 3, ``$LISTEN_FDS`` says how many, and
``$LISTEN_PID`` names the process they are meant for (a child must not take them).
"""

from __future__ import annotations

import os
import socket
from collections.abc import MutableMapping

SD_LISTEN_FDS_START = 3


def take_inherited_socket(env: MutableMapping[str, str] | None = None) -> socket.socket | None:
    """The first passed listening socket, or None; the variables are removed once used."""
    env = os.environ if env is None else env
    if env.get("LISTEN_PID") != str(os.getpid()):
        return None
    try:
        count = int(env.get("LISTEN_FDS", "0"))
    except ValueError:
        return None
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(name, None)
    if count < 1:
        return None
    sock = socket.socket(fileno=SD_LISTEN_FDS_START)
    os.set_inheritable(sock.fileno(), False)
    return sock
