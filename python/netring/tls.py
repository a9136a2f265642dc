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
import warnings
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


def _ciphers(ciphers: Sequence[str] | None) -> list[str] | None:
    """The cipher suites allowed, by OpenSSL's names: each must be one
    netring negotiates (``cipher_names()``)."""
    if ciphers is None:
        return None
    if isinstance(ciphers, str):
        raise TypeError("ciphers: a sequence of suite names, not one str")
    known = cipher_names()
    chosen = list(ciphers)
    for name in chosen:
        if not isinstance(name, str):
            raise TypeError(f"ciphers: suite names are str, not {type(name).__name__}")
        if name not in known:
            raise ConfigurationError(
                f"ciphers: {name!r} is not a suite netring negotiates ({', '.join(known)})")
    if not chosen:
        raise ConfigurationError("ciphers: empty (no suite could be negotiated)")
    return chosen


def cipher_names() -> list[str]:
    """The cipher suites netring can negotiate, by OpenSSL's names (as
    ``get_extra_info("cipher")`` reports them), TLS 1.3 ones first."""
    return _native.tls_cipher_names()


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
        ciphers: the cipher suites allowed, by OpenSSL's names (default:
            all of ``netring.tls.cipher_names()``: AES-GCM and ChaCha20-Poly1305
            with ECDHE, nothing else).
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
                 password: Password | None = None,
                 ciphers: Sequence[str] | None = None) -> None:
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
        self.session_tickets = session_tickets
        names: list[tuple[str, bytes, bytes]] = []
        for name, pair in (sni or {}).items():
            if not isinstance(name, str) or not name or name.startswith("."):
                raise ConfigurationError(f"sni: {name!r} is not a host name")
            if not (isinstance(pair, tuple) and len(pair) == 2):
                raise TypeError(f"sni[{name!r}]: must be a (cert, key) pair")
            names.append((name.lower(), _pem(f"sni[{name!r}] cert", pair[0]),
                          _pem(f"sni[{name!r}] key", pair[1])))
        self.sni_names: tuple[str, ...] = tuple(n for n, _, _ in names)
        ciphers = _ciphers(ciphers)
        self.ciphers: tuple[str, ...] | None = None if ciphers is None else tuple(ciphers)
        #: What its connections' ``get_extra_info("sslcontext")`` is.
        self._context: Any = self
        self._native = _native.TLSServerConfig(
            _pem("cert", cert), _pem("key", key), protocols, self.handshake_timeout, names,
            None if ca is None else _pem("ca", ca), client_auth, self.min_version,
            self.session_cache, session_tickets, _password(password), ciphers)

    @classmethod
    def from_ssl_context(cls, context: ssl.SSLContext, *,
                         handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT_SECONDS,
                         max_handshakes: int = DEFAULT_MAX_HANDSHAKES) -> TLSConfig:
        """The same server settings as an ``ssl.SSLContext``'s, so that code
        written for asyncio's ``ssl=`` runs on the engine's TLS (what
        ``netring.aio.install()`` does with ``create_server(ssl=...)``).

        A context keeps no readable copy of its certificate: netring notes
        what ``load_cert_chain`` (and ``set_alpn_protocols``...) are given
        on contexts made after netring is imported, so the context must be
        made after that. The result is a snapshot: later changes to the
        context do not reach it (``Server.reload_tls`` swaps certificates).
        Raises ``ConfigurationError`` naming the setting when the context
        has one the engine cannot honour: made before the import, no or
        several certificates, an ``sni_callback``, a maximum version
        below TLS 1.3, CRL checks, ``set_ecdh_curve``, a key log, CA
        directories (``capath``), or no cipher suite in common. The
        context's cipher list is honoured by offering only the suites it
        enables; protocols older than TLS 1.2 are not offered (rustls has
        none)."""
        got = _Settings(context, server_side=True)
        config = cls(got.chain[0], got.chain[1] or got.chain[0], password=got.chain[2],
                     alpn=got.alpn, handshake_timeout=handshake_timeout, ca=got.ca,
                     client_auth=got.client_auth, min_version=got.min_version,
                     session_tickets=got.tickets, max_handshakes=max_handshakes,
                     ciphers=got.ciphers)
        config._context = context
        return config

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
        ciphers: the cipher suites allowed, by OpenSSL's names (default:
            all of ``netring.tls.cipher_names()``).

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
                 password: Password | None = None,
                 ciphers: Sequence[str] | None = None) -> None:
        if server_hostname is not None and not isinstance(server_hostname, str):
            raise TypeError(
                f"server_hostname: must be a str, not {type(server_hostname).__name__}")
        if (cert is None) != (key is None):
            raise ConfigurationError("cert and key go together")
        self.server_hostname = server_hostname
        self.alpn: tuple[str, ...] = tuple(alpn or ())
        self.min_version: str = _version(min_version)
        self.handshake_timeout = _timeout(handshake_timeout)
        ciphers = _ciphers(ciphers)
        self.ciphers: tuple[str, ...] | None = None if ciphers is None else tuple(ciphers)
        #: What its connections' ``get_extra_info("sslcontext")`` is.
        self._context: Any = self
        self._native = _native.TLSClientConfig(
            None if ca is None else _pem("ca", ca),
            None if cert is None else _pem("cert", cert),
            None if key is None else _pem("key", key),
            _alpn(alpn), self.min_version, self.handshake_timeout, _password(password),
            ciphers)
        if server_hostname is not None:
            self._native.for_server(server_hostname)  # a bad name raises here

    @classmethod
    def from_ssl_context(cls, context: ssl.SSLContext, *, server_hostname: str | None = None,
                         handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT_SECONDS,
                         ) -> TLSClientConfig:
        """The same client settings as an ``ssl.SSLContext``'s (what
        ``netring.aio.install()`` does with ``create_connection(ssl=...)``):
        its CA certificates (``get_ca_certs``; the system's roots when it
        loaded only the default paths), the client certificate given to
        ``load_cert_chain`` after netring was imported, ALPN,
        versions and cipher suites. Raises ``ConfigurationError`` naming
        the setting when the engine cannot honour the context: no
        verification or no host name check (the engine always does
        both), a context made before netring was imported, CA
        directories, CRL checks, a maximum version below TLS 1.3, no
        cipher suite in common."""
        got = _Settings(context, server_side=False)
        chain = got.chain if got.chain else (None, None, None)
        config = cls(server_hostname=server_hostname, ca=got.ca, cert=chain[0],
                     key=None if chain[0] is None else (chain[1] or chain[0]),
                     password=chain[2], alpn=got.alpn, min_version=got.min_version,
                     handshake_timeout=handshake_timeout, ciphers=got.ciphers)
        config._context = context
        return config

    def _layer(self, host: str) -> Any:
        """The engine's layer for one connect to ``host``."""
        return self._native.for_server(self.server_hostname or host, self._context)

    def __repr__(self) -> str:
        return (f"<netring.TLSClientConfig server_hostname={self.server_hostname!r} "
                f"alpn={list(self.alpn)} min_version={self.min_version}>")


class TLSObject:
    """``get_extra_info("ssl_object")`` of a netring TLS connection: the
    read-only part of ``ssl.SSLObject`` (what asyncio code asks a
    connection's ``ssl_object``), answered from what the handshake
    negotiated. The session itself lives in the engine."""

    __slots__ = ("_alpn", "_cipher", "_der", "_version", "context", "server_hostname",
                 "session_reused")

    def __init__(self, version: str, cipher: tuple[str, str, int], alpn: str | None,
                 server_hostname: str | None, peercert_der: bytes | None,
                 session_reused: bool, context: Any) -> None:
        self._version = version
        self._cipher = cipher
        self._alpn = alpn
        self._der = peercert_der
        self.server_hostname = server_hostname
        self.session_reused = session_reused
        self.context = context

    def version(self) -> str:
        """``"TLSv1.2"`` or ``"TLSv1.3"``."""
        return self._version

    def cipher(self) -> tuple[str, str, int]:
        """``(name, protocol, secret bits)``, as ``ssl.SSLObject.cipher()``."""
        return self._cipher

    def selected_alpn_protocol(self) -> str | None:
        return self._alpn

    def getpeercert(self, binary_form: bool = False) -> Any:
        """The peer's certificate: DER with ``binary_form``, else the dict
        ``ssl`` gives (``None`` when the peer gave none)."""
        if self._der is None:
            return None
        return self._der if binary_form else _decode_certificate(self._der)

    def compression(self) -> None:
        return None

    def pending(self) -> int:
        return 0

    def __repr__(self) -> str:
        return f"<netring.TLSObject {self._version} {self._cipher[0]}>"


# -- ssl.SSLContext settings ----------------------------------------------------

#: Where the calls netring notes are kept on each context made after
#: netring's import (a context without it was made before: its earlier
#: calls are unknown).
_NOTES = "_netring_tls_notes"


def _notes(context: ssl.SSLContext) -> dict[str, Any]:
    """The context's notes, counting one more change (a throwaway dict for
    a context made before netring's import: what it had is unknown)."""
    notes: dict[str, Any] | None = context.__dict__.get(_NOTES)
    if notes is None:
        return {}
    notes["changes"] = notes.get("changes", 0) + 1
    return notes


def _note_calls() -> None:
    """Wrap the ``ssl.SSLContext`` methods whose arguments cannot be read
    back from a context, so that ``TLSConfig.from_ssl_context`` can: each
    wrapper calls the original, then notes what it was given (once it
    succeeded). Idempotent."""
    cls = ssl.SSLContext
    if getattr(cls, "_netring_noted", False):
        return

    original_new = cls.__new__

    def __new__(kind: type, protocol: Any = None, *args: Any, **kwargs: Any) -> Any:
        if protocol is None:
            # NOTE: warned here, so that it names the caller, as the
            # original's does (one frame further down now).
            warnings.warn("ssl.SSLContext() without protocol argument is deprecated.",
                          category=DeprecationWarning, stacklevel=2)
            protocol = ssl.PROTOCOL_TLS
        self = original_new(kind, protocol, *args, **kwargs)
        self.__dict__[_NOTES] = {"changes": 0}
        return self

    original_chain = cls.load_cert_chain

    def load_cert_chain(self: ssl.SSLContext, certfile: Any, keyfile: Any = None,
                        password: Any = None) -> None:
        original_chain(self, certfile, keyfile, password)
        # NOTE: read now, as OpenSSL just did: the files may be temporary.
        try:
            chain = (_pem("certfile", certfile),
                     None if keyfile is None else _pem("keyfile", keyfile), password)
        except (ConfigurationError, TypeError) as e:
            chain = e  # an error to report if this context is converted
        _notes(self).setdefault("chain", []).append(chain)

    original_alpn = cls.set_alpn_protocols

    def set_alpn_protocols(self: ssl.SSLContext, alpn_protocols: Any) -> None:
        protocols = list(alpn_protocols)  # an iterator is read once
        original_alpn(self, protocols)
        _notes(self)["alpn"] = protocols

    original_paths = cls.set_default_verify_paths

    def set_default_verify_paths(self: ssl.SSLContext) -> None:
        original_paths(self)
        _notes(self)["default_paths"] = True

    original_locations = cls.load_verify_locations

    def load_verify_locations(self: ssl.SSLContext, cafile: Any = None, capath: Any = None,
                              cadata: Any = None) -> None:
        original_locations(self, cafile, capath, cadata)
        notes = _notes(self)
        if capath is not None:
            notes["capath"] = True

    original_curve = cls.set_ecdh_curve

    def set_ecdh_curve(self: ssl.SSLContext, name: str) -> None:
        original_curve(self, name)
        _notes(self)["ecdh_curve"] = name

    for wrapper, original in ((load_cert_chain, original_chain),
                              (set_alpn_protocols, original_alpn),
                              (set_default_verify_paths, original_paths),
                              (load_verify_locations, original_locations),
                              (set_ecdh_curve, original_curve)):
        functools.update_wrapper(wrapper, original)
        setattr(cls, wrapper.__name__, wrapper)
    __new__.__doc__ = original_new.__doc__
    cls.__new__ = staticmethod(__new__)  # type: ignore[assignment]
    cls._netring_noted = True  # type: ignore[attr-defined]


_note_calls()

_CRL_FLAGS = ssl.VERIFY_CRL_CHECK_LEAF | ssl.VERIFY_CRL_CHECK_CHAIN


class _Settings:
    """What an ``ssl.SSLContext`` asks for, in ``TLSConfig`` terms; raises
    ``ConfigurationError`` for what the engine cannot honour."""

    def __init__(self, context: ssl.SSLContext, *, server_side: bool) -> None:
        if not isinstance(context, ssl.SSLContext):
            raise TypeError(f"context: must be an ssl.SSLContext, not {type(context).__name__}")
        if _NOTES not in context.__dict__:
            raise ConfigurationError(
                "ssl.SSLContext: made before netring was imported, so what it was given "
                "(certificate, ALPN, CA paths) cannot be read back: the engine's TLS cannot "
                "honour it")
        notes = dict(context.__dict__[_NOTES])
        side = "server" if server_side else "client"
        wrong = ssl.PROTOCOL_TLS_CLIENT if server_side else ssl.PROTOCOL_TLS_SERVER
        if context.protocol == wrong:
            raise ConfigurationError(f"the context is not for a {side} ({context.protocol!r})")

        def refuse(why: str) -> None:
            raise ConfigurationError(f"ssl.SSLContext: {why}: the engine's TLS cannot honour it")

        chains = notes.get("chain", [])
        if len(chains) > 1:
            refuse("several certificates loaded (load_cert_chain called more than once)")
        if chains and isinstance(chains[0], Exception):
            refuse(f"its certificate cannot be read again: {chains[0]}")
        self.chain: tuple[Any, Any, Any] | None = chains[0] if chains else None
        if server_side and self.chain is None:
            refuse("no certificate (load_cert_chain was never called)")
        if server_side and context.sni_callback is not None:
            refuse("an sni_callback")
        if notes.get("ecdh_curve"):
            refuse(f"set_ecdh_curve({notes['ecdh_curve']!r})")
        if notes.get("capath"):
            refuse("CA certificates in a directory (load_verify_locations(capath=...))")
        if context.verify_flags & _CRL_FLAGS:
            refuse("CRL checks (verify_flags)")
        if getattr(context, "keylog_filename", None):
            refuse("a key log (keylog_filename)")
        top = context.maximum_version
        no_13 = bool(context.options & ssl.OP_NO_TLSv1_3)
        if no_13 or top not in (ssl.TLSVersion.MAXIMUM_SUPPORTED, ssl.TLSVersion.TLSv1_3):
            refuse(f"TLS 1.3 is not allowed (maximum_version {top!r})")
        only_13 = (context.minimum_version == ssl.TLSVersion.TLSv1_3
                   or bool(context.options & ssl.OP_NO_TLSv1_2))
        self.min_version: TLSVersion = "TLSv1.3" if only_13 else "TLSv1.2"
        self.tickets = not context.options & ssl.OP_NO_TICKET and (
            not server_side or context.num_tickets > 0)
        self.alpn: list[str] = notes.get("alpn", [])
        enabled = {c["name"] for c in context.get_ciphers()}
        ours = cipher_names()
        allowed = [name for name in ours if name in enabled]
        if not allowed:
            refuse("no cipher suite in common (the context enables none of "
                   f"{', '.join(ours)})")
        self.ciphers: list[str] | None = None if allowed == ours else allowed
        mode = context.verify_mode
        # NOTE: a server that asks for no client certificate needs no CAs
        # (create_default_context(CLIENT_AUTH) loads the system's anyway).
        ders = context.get_ca_certs(binary_form=True) if (
            mode != ssl.CERT_NONE or not server_side) else []
        self.ca: bytes | None = (
            "".join(ssl.DER_cert_to_PEM_cert(d) for d in ders).encode() if ders else None)
        if server_side:
            self.client_auth: ClientAuth = {ssl.CERT_NONE: "none", ssl.CERT_OPTIONAL: "optional",
                                            ssl.CERT_REQUIRED: "required"}[mode]
            if mode != ssl.CERT_NONE and self.ca is None:
                refuse("client certificates are checked (verify_mode) against no loaded CA")
        else:
            if mode != ssl.CERT_REQUIRED:
                refuse(f"verify_mode {mode!r} (the engine always verifies the server)")
            if not context.check_hostname:
                refuse("check_hostname is off (the engine always checks the name)")
            if self.ca is None and not notes.get("default_paths"):
                refuse("no CA certificates loaded")


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
