"""Argument checks for the public API: the one place they live.

``Server``, ``IOPool`` (its constructor, timers, ``connect``,
``create_datagram_endpoint``), ``WorkerPool`` and the framing specs check
their arguments with these when they are called, so a wrong argument raises
at configuration time, naming it: ``TypeError`` for a wrong type,
``ConfigurationError`` (a ``ValueError``) for a wrong value. A check that
only one argument needs (``overflow``, ``queue``) stays beside it; each rule
is written once. The native engine is handed checked values only.

Framing specs are the exception: their range rules are the engine's own
(``Framing::validate`` in Rust, which Rust users call too), reached through
``_native.check_framing`` when a spec is built; Python checks their types.
"""

from __future__ import annotations

import ipaddress
import math
import os
from typing import Any

from .errors import ConfigurationError

BACKENDS = ("auto", "io_uring", "epoll")
#: Most IO threads in one pool (the engine's ``MAX_IO_THREADS``).
MAX_IO_THREADS = 256
#: Most worker threads in one ``WorkerPool``.
MAX_WORKER_THREADS = 1024
#: Longest duration accepted, in seconds (about 31 million years): any
#: sensible timeout is far below it, and the engine's clock arithmetic far
#: above it. Use None for "never".
MAX_SECONDS = 1e15


def check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    """``value`` as an int in [low, high], or a TypeError/ConfigurationError
    naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: must be an int, not {type(value).__name__}")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ConfigurationError(f"{name}: must be {bound}, not {value}")
    return value


def check_seconds(name: str, value: object, *, positive: bool = False) -> float:
    """A finite, non-negative (or positive) number of seconds, at most
    ``MAX_SECONDS``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name}: must be a number of seconds, not {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        need = "positive" if positive else "non-negative"
        raise ConfigurationError(f"{name}: must be a finite {need} number, not {value!r}")
    if v > MAX_SECONDS:
        raise ConfigurationError(
            f"{name}: must be at most {MAX_SECONDS:g} seconds (None: never), not {value!r}")
    return v


def check_keepalive(value: object) -> tuple[float, float, int] | None:
    """``(idle_seconds, interval_seconds, count)`` or None."""
    if value is None:
        return None
    if not isinstance(value, tuple) or len(value) != 3:
        raise TypeError("keepalive: must be a tuple (idle, interval, count)")
    idle = check_seconds("keepalive idle", value[0], positive=True)
    interval = check_seconds("keepalive interval", value[1], positive=True)
    count = check_int("keepalive count", value[2], 1, 127)
    if idle < 1 or interval < 1:
        raise ConfigurationError("keepalive: idle and interval are whole seconds, at least 1")
    return (idle, interval, count)


def choose_backend(backend: object) -> str:
    """The backend argument, or ``$NETRING_BACKEND``, or "auto"."""
    if backend is None:
        backend = os.environ.get("NETRING_BACKEND", "auto") or "auto"
    if not isinstance(backend, str):
        raise TypeError(f"backend: must be a str, not {type(backend).__name__}")
    if backend not in BACKENDS:
        raise ConfigurationError(f"backend: must be one of {BACKENDS}, not {backend!r}")
    return backend


#: The smallest ``zerocopy_threshold`` (a page: below it pinning costs more
#: than the copy it saves).
MIN_ZEROCOPY_THRESHOLD = 4096


def check_pool_options(io_threads: object, backend: object, buffer_size: object,
                       buffers_per_thread: object, max_buffer_memory: object,
                       zerocopy_threshold: object = None) -> dict[str, Any]:
    """The ``IOPool`` arguments (also ``Server``'s, for its own pool),
    checked; ``backend`` resolved (``choose_backend``), the rest as given
    (None: the default)."""
    if io_threads is not None:
        check_int("io_threads", io_threads, 1, MAX_IO_THREADS)
    if buffer_size is not None:
        check_int("buffer_size", buffer_size, 512, 1 << 20)
    if buffers_per_thread is not None:
        n = check_int("buffers_per_thread", buffers_per_thread, 2, 32768)
        if n & (n - 1):
            raise ConfigurationError(f"buffers_per_thread: must be a power of two, not {n}")
    if max_buffer_memory is not None:
        check_int("max_buffer_memory", max_buffer_memory, 1)
    if zerocopy_threshold is not None:
        check_int("zerocopy_threshold", zerocopy_threshold, MIN_ZEROCOPY_THRESHOLD, 1 << 30)
    return {"io_threads": io_threads, "backend": choose_backend(backend),
            "buffer_size": buffer_size, "buffers_per_thread": buffers_per_thread,
            "max_buffer_memory": max_buffer_memory, "zerocopy_threshold": zerocopy_threshold}


def check_framing(framing: object) -> Any:
    """A framing spec (``Raw()`` for None)."""
    from .framing import Delimited, Exactly, LengthPrefixed, Raw, Resp

    if framing is None:
        return Raw()
    if not isinstance(framing, Raw | LengthPrefixed | Delimited | Exactly | Resp):
        raise TypeError("framing: must be netring.Raw(), LengthPrefixed(), Delimited(), "
                        f"Exactly() or Resp(), not {type(framing).__name__}")
    return framing


def is_ip(host: str) -> bool:
    """Whether ``host`` is an IP literal (no resolution needed)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def check_addr(name: str, addr: object, *, port_min: int = 0) -> tuple[str, int]:
    """A ``(host, port)`` pair, type-checked (host may be a name)."""
    if not isinstance(addr, tuple) or len(addr) < 2:
        raise TypeError(f"{name}: must be a (host, port) tuple, not {addr!r}")
    host, port = addr[0], addr[1]
    if not isinstance(host, str):
        raise TypeError(f"{name}: host must be a str, not {type(host).__name__}")
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"{name}: port must be an int, not {type(port).__name__}")
    if not port_min <= port <= 65535:
        raise ConfigurationError(f"{name}: port must be in {port_min}..65535, not {port}")
    return host, port


def check_groups(groups: Any) -> list[tuple[str, str | None]]:
    """``multicast_groups``: group addresses, or ``(group, interface)`` pairs."""
    if isinstance(groups, str | bytes):
        raise TypeError("multicast_groups: must be a list of addresses, not a single string")
    out: list[tuple[str, str | None]] = []
    for item in groups:
        group, iface = (item, None) if isinstance(item, str) else tuple(item)
        for what, value in (("group", group), ("interface", iface)):
            if value is None:
                continue
            try:
                ip = ipaddress.ip_address(value)
            except (TypeError, ValueError):
                raise ConfigurationError(
                    f"multicast_groups: {what} {value!r} is not an IP address") from None
            if what == "group" and not ip.is_multicast:
                raise ConfigurationError(
                    f"multicast_groups: {value} is not a multicast address")
        out.append((str(group), None if iface is None else str(iface)))
    return out
