"""systemd socket activation: the listening sockets systemd (or
``systemd-socket-activate``) hands a service, as ``sd_listen_fds`` reads
them.

systemd binds the ports (privileged ones too) before the service starts and
passes them as descriptors 3, 4, ... with ``LISTEN_FDS`` (how many),
``LISTEN_PID`` (which process they are for) and ``LISTEN_FDNAMES`` (their
``FileDescriptorName=``). Serve one with ``netring.Server(factory, fd=fd)``;
``python -m netring serve`` picks them up by itself.
"""

from __future__ import annotations

import os

__all__ = ["LISTEN_FDS_START", "listen_fds"]

#: The first descriptor systemd passes.
LISTEN_FDS_START = 3


def listen_fds(unset_environment: bool = True) -> list[tuple[str, int]]:
    """The sockets passed to this process, as ``(name, fd)`` in order (name
    ``"unknown"`` where systemd gave none); empty when none were, or when
    they were meant for another process (``LISTEN_PID``). Each is marked
    close-on-exec. With ``unset_environment`` (the default, as
    ``sd_listen_fds(1)``) the variables are removed, so child processes do
    not take them for their own."""
    try:
        pid = int(os.environ.get("LISTEN_PID", ""))
        count = int(os.environ.get("LISTEN_FDS", ""))
    except ValueError:
        return []
    names = os.environ.get("LISTEN_FDNAMES", "")
    if unset_environment:
        for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(var, None)
    if pid != os.getpid() or count <= 0:
        return []
    labels = names.split(":") if names else []
    fds = []
    for i in range(count):
        fd = LISTEN_FDS_START + i
        os.set_inheritable(fd, False)
        fds.append((labels[i] if i < len(labels) and labels[i] else "unknown", fd))
    return fds
