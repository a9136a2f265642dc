"""TLS for servers: the engine's own (rustls, on the IO threads).

A ``TLSConfig`` is checked when it is made: a certificate or key that cannot
be read or does not match raises ``ConfigurationError`` here, not when the
first client connects. One config can serve any number of servers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from . import _native
from ._args import check_seconds
from .errors import ConfigurationError

#: How long a client may take to complete its handshake, by default.
DEFAULT_HANDSHAKE_TIMEOUT_SECONDS = 10.0

PemSource = str | os.PathLike[str] | bytes


def _pem(name: str, source: object) -> bytes:
    """PEM bytes from bytes (as they are) or from a file path."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        if b"-----BEGIN" not in data:
            raise ConfigurationError(f"{name}: not PEM data (no '-----BEGIN' line)")
        return data
    if isinstance(source, str | os.PathLike):
        try:
            with open(source, "rb") as f:
                return f.read()
        except OSError as e:
            raise ConfigurationError(f"{name}: cannot read {os.fspath(source)!r}: {e}") from e
    raise TypeError(f"{name}: must be a file path or PEM bytes, not {type(source).__name__}")


class TLSConfig:
    """A server's TLS settings.

    Args:
        cert: the certificate chain, leaf first: a PEM file's path or PEM bytes.
        key: its private key (PKCS#8, PKCS#1 or SEC1; unencrypted): a path or
            PEM bytes.
        alpn: protocols offered by ALPN, in order of preference (e.g.
            ``["h2", "http/1.1"]``).
        handshake_timeout: seconds a client may take to complete its
            handshake before the connection is closed (default 10, like the
            common servers'; ``None``: no limit).

    Handshakes run in the engine; ``connection_made`` comes once one has
    completed, and a failed one never reaches the protocol. Framing, water
    marks and limits apply to the plaintext, as on plain TCP. ``close()`` and
    ``write_eof()`` send ``close_notify``; the peer's ``close_notify`` is
    ``eof_received``; a stream that ends without it reaches
    ``connection_lost`` with an error saying it was truncated.
    """

    def __init__(self, cert: PemSource, key: PemSource, *,
                 alpn: Sequence[str] | None = None,
                 handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT_SECONDS) -> None:
        protocols: list[bytes] = []
        for p in alpn or ():
            if not isinstance(p, str):
                raise TypeError(f"alpn: protocol names are str, not {type(p).__name__}")
            raw = p.encode()
            if not 1 <= len(raw) <= 255:
                raise ConfigurationError(f"alpn: {p!r} must be 1 to 255 bytes")
            protocols.append(raw)
        self.alpn: tuple[str, ...] = tuple(alpn or ())
        self.handshake_timeout = (None if handshake_timeout is None else
                                  check_seconds("handshake_timeout", handshake_timeout,
                                                positive=True))
        self._native = _native.TLSServerConfig(_pem("cert", cert), _pem("key", key), protocols,
                                               self.handshake_timeout)

    def __repr__(self) -> str:
        return f"<netring.TLSConfig alpn={list(self.alpn)}>"
