"""TLS in the engine (rustls with *ring*, on the IO threads).

``TLSConfig`` is a server's, ``TLSClientConfig`` an outbound connection's.
Both are checked when they are made: a certificate or key that cannot be
read or does not match raises ``ConfigurationError`` here, not when the
first peer connects. One config can serve any number of servers or
connects.
"""

from __future__ import annotations

import functools
import os
import ssl
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from . import _native
from ._args import check_int, check_seconds
from .errors import ConfigurationError

#: How long a peer may take to complete its handshake, by default.
DEFAULT_HANDSHAKE_TIMEOUT_SECONDS = 10.0

#: Sessions a server remembers for resumption by session id, by default.
DEFAULT_SESSION_CACHE = 256

#: TLS handshakes in progress per IO thread at most, by default.
DEFAULT_MAX_HANDSHAKES = 1024

PemSource = str | os.PathLike[str] | bytes
ClientAuth = Literal["none", "optional", "required"]
TLSVersion = Literal["TLSv1.2", "TLSv1.3"]

_VERSIONS = ("TLSv1.2", "TLSv1.3")


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


def _alpn(alpn: Sequence[str] | None) -> list[bytes]:
    if isinstance(alpn, str):
        raise TypeError("alpn: a sequence of protocol names, not one str")
    protocols: list[bytes] = []
    for p in alpn or ():
        if not isinstance(p, str):
            raise TypeError(f"alpn: protocol names are str, not {type(p).__name__}")
        raw = p.encode()
        if not 1 <= len(raw) <= 255:
            raise ConfigurationError(f"alpn: {p!r} must be 1 to 255 bytes")
        protocols.append(raw)
    return protocols


Password = str | bytes | Callable[[], str | bytes]


def _password(password: object) -> bytes | None:
    """A key's password as bytes: given, or returned by a callable (as
    ``ssl.SSLContext.load_cert_chain`` takes it)."""
    if password is None:
        return None
    if callable(password):
        password = password()
    if isinstance(password, str):
        return password.encode()
    if isinstance(password, bytes | bytearray):
        return bytes(password)
    raise TypeError(f"password: must be str, bytes or a callable returning one, "
                    f"not {type(password).__name__}")


def _version(min_version: str) -> str:
    if min_version not in _VERSIONS:
        raise ConfigurationError(
            f"min_version: must be 'TLSv1.2' or 'TLSv1.3', not {min_version!r}")
    return min_version


def _timeout(handshake_timeout: float | None) -> float | None:
    return (None if handshake_timeout is None else
            check_seconds("handshake_timeout", handshake_timeout, positive=True))


class TLSConfig:
    """A server's TLS settings.

    Args:
        cert: the certificate chain, leaf first: a PEM file's path or PEM bytes.
        key: its private key (PKCS#8, PKCS#1 or SEC1; or an encrypted PKCS#8
            ``ENCRYPTED PRIVATE KEY`` with ``password``): a path or PEM bytes.
        password: the encrypted key's password: str, bytes, or a callable
            returning one (as ``ssl.SSLContext.load_cert_chain``); used for
            the ``sni`` keys too.
        alpn: protocols offered by ALPN, in order of preference (e.g.
            ``["h2", "http/1.1"]``).
        handshake_timeout: seconds a client may take to complete its
            handshake before the connection is closed (default 10, like the
            common servers'; ``None``: no limit).
        sni: certificates by host name, ``{"name": (cert, key)}``: a client
            that asks for one of these names (SNI) gets its certificate; any
            other client gets ``cert``.
        ca: CA certificates (path or PEM bytes) that client certificates must
            chain to; needed for ``client_auth``.
        client_auth: ``"none"`` (default), ``"optional"`` (asked for; a client
            without one is accepted, one with a bad one is not) or
            ``"required"``. The certificate a client gave is
            ``get_extra_info("peercert")``.
        min_version: ``"TLSv1.2"`` (default) or ``"TLSv1.3"``.
        session_cache: sessions remembered for resumption by id (bounded;
            0: none; default 256).
        session_tickets: issue session tickets (resumption without server
            state; default on). Keys rotate every 6 hours.
        max_handshakes: handshakes in progress per IO thread at most
            (default 1024). Beyond it the server stops accepting: new
            connections wait in the kernel's backlog until a handshake ends
            (completes, fails or times out), so a flood of stalled
            handshakes costs bounded memory and open connections are served
            as usual.

    Handshakes run in the engine; ``connection_made`` comes once one has
    completed, and a failed one never reaches the protocol (it is counted
    as ``handshakes_failed`` in ``stats()`` and logged at DEBUG on
    ``netring.core``). Framing, water marks and limits apply to the
    plaintext, as on plain TCP. ``close()`` and ``write_eof()`` send
    ``close_notify``; the peer's ``close_notify`` is ``eof_received``; a
    stream that ends without it reaches ``connection_lost`` with
    ``TLSEOFError``. ``Server.reload_tls(new_config)`` swaps the
    certificates of a running server.
    """

    def __init__(self, cert: PemSource, key: PemSource, *,
                 alpn: Sequence[str] | None = None,
                 handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT_SECONDS,
                 sni: Mapping[str, tuple[PemSource, PemSource]] | None = None,
                 ca: PemSource | None = None,
                 client_auth: ClientAuth = "none",
                 min_version: TLSVersion = "TLSv1.2",
                 session_cache: int = DEFAULT_SESSION_CACHE,
                 session_tickets: bool = True,
                 max_handshakes: int = DEFAULT_MAX_HANDSHAKES,
                 password: Password | None = None) -> None:
        protocols = _alpn(alpn)
        self.alpn: tuple[str, ...] = tuple(alpn or ())
        self.handshake_timeout = _timeout(handshake_timeout)
        if client_auth not in ("none", "optional", "required"):
            raise ConfigurationError(
                f"client_auth: must be 'none', 'optional' or 'required', not {client_auth!r}")
        if client_auth != "none" and ca is None:
            raise ConfigurationError(
                f"client_auth={client_auth!r}: needs ca= (the CA bundle client certificates "
                "must chain to)")
        self.client_auth: str = client_auth
        self.min_version: str = _version(min_version)
        self.session_cache = check_int("session_cache", session_cache, 0, 1 << 24)
        self.max_handshakes = check_int("max_handshakes", max_handshakes, 1, 1 << 24)
        if not isinstance(session_tickets, bool):
            raise TypeError(
                f"session_tickets: must be a bool, not {type(session_tickets).__name__}")
        names: list[tuple[str, bytes, bytes]] = []
        for name, pair in (sni or {}).items():
            if not isinstance(name, str) or not name or name.startswith("."):
                raise ConfigurationError(f"sni: {name!r} is not a host name")
            if not (isinstance(pair, tuple) and len(pair) == 2):
                raise TypeError(f"sni[{name!r}]: must be a (cert, key) pair")
            names.append((name.lower(), _pem(f"sni[{name!r}] cert", pair[0]),
                          _pem(f"sni[{name!r}] key", pair[1])))
        self.sni_names: tuple[str, ...] = tuple(n for n, _, _ in names)
        self._native = _native.TLSServerConfig(
            _pem("cert", cert), _pem("key", key), protocols, self.handshake_timeout, names,
            None if ca is None else _pem("ca", ca), client_auth, self.min_version,
            self.session_cache, session_tickets, _password(password))

    def __repr__(self) -> str:
        return (f"<netring.TLSConfig alpn={list(self.alpn)} sni={list(self.sni_names)} "
                f"client_auth={self.client_auth} min_version={self.min_version}>")


class TLSClientConfig:
    """TLS for outbound connections (``IOPool.connect(..., tls=...)``).

    Args:
        server_hostname: the name the server's certificate must be valid for
            (and the SNI sent); default: the ``host`` given to ``connect``.
        ca: CA certificates (path or PEM bytes) the server's certificate must
            chain to; default: the system's trusted roots (read with
            ``rustls-native-certs``: ``/etc/ssl/certs`` or ``SSL_CERT_FILE``).
        cert, key: a client certificate and its key for servers that ask for
            one (``password`` for an encrypted key, as in ``TLSConfig``).
        alpn: protocols offered by ALPN, in order of preference.
        min_version: ``"TLSv1.2"`` (default) or ``"TLSv1.3"``.
        handshake_timeout: seconds the handshake may take (default 10;
            ``None``: only the connect's own timeout).

    Verification is always on. A certificate the client rejects fails the
    connect's future with ``TLSCertVerificationError`` (an
    ``ssl.SSLCertVerificationError``) naming the reason; any other failed
    handshake with ``TLSError`` (an ``ssl.SSLError``). Sessions are resumed
    across the connects that share a config.
    """

    def __init__(self, *, server_hostname: str | None = None,
                 ca: PemSource | None = None,
                 cert: PemSource | None = None, key: PemSource | None = None,
                 alpn: Sequence[str] | None = None,
                 min_version: TLSVersion = "TLSv1.2",
                 handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT_SECONDS,
                 password: Password | None = None) -> None:
        if server_hostname is not None and not isinstance(server_hostname, str):
            raise TypeError(
                f"server_hostname: must be a str, not {type(server_hostname).__name__}")
        if (cert is None) != (key is None):
            raise ConfigurationError("cert and key go together")
        self.server_hostname = server_hostname
        self.alpn: tuple[str, ...] = tuple(alpn or ())
        self.min_version: str = _version(min_version)
        self.handshake_timeout = _timeout(handshake_timeout)
        self._native = _native.TLSClientConfig(
            None if ca is None else _pem("ca", ca),
            None if cert is None else _pem("cert", cert),
            None if key is None else _pem("key", key),
            _alpn(alpn), self.min_version, self.handshake_timeout, _password(password))
        if server_hostname is not None:
            self._native.for_server(server_hostname)  # a bad name raises here

    def _layer(self, host: str) -> Any:
        """The engine's layer for one connect to ``host``."""
        return self._native.for_server(self.server_hostname or host)

    def __repr__(self) -> str:
        return (f"<netring.TLSClientConfig server_hostname={self.server_hostname!r} "
                f"alpn={list(self.alpn)} min_version={self.min_version}>")


def _decode_certificate(der: bytes) -> dict[str, Any]:
    """``get_extra_info("peercert")``: a DER certificate as the dict
    ``ssl.SSLSocket.getpeercert()`` gives, decoded by Python's own ssl
    module (so the shapes are exactly asyncio's). A copy: the caller may
    change it."""
    return dict(_decoded(der))


@functools.lru_cache(maxsize=256)
def _decoded(der: bytes) -> dict[str, Any]:
    import _ssl

    pem = ssl.DER_cert_to_PEM_cert(der)
    with tempfile.NamedTemporaryFile("w", suffix=".pem") as f:
        f.write(pem)
        f.flush()
        decoded: dict[str, Any] = _ssl._test_decode_cert(f.name)  # type: ignore[attr-defined]
    return decoded
