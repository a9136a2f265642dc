//! TLS in the engine: a stream layer over rustls, for accepted connections
//! ([`TlsServer`]) and outbound ones ([`TlsClient`]).
//!
//! Crypto provider: *ring*. It builds here in ~20 s from C and assembly
//! with the compiler CI already has; aws-lc-rs needs cmake and several
//! minutes on two cores, for speed this engine does not need yet (AES-GCM
//! and ChaCha20 on ring run at GB/s per core).
//!
//! Each received chunk goes into rustls (`read_tls`, possibly in several
//! calls when a chunk is larger than rustls takes at once), then
//! `process_new_packets`; the plaintext it yields is exactly
//! `plaintext_bytes_to_read` long, so it is read without zero-filling a
//! scratch buffer. Handshake messages and alerts are taken with
//! `write_tls` after every call. The protocol's writes of one dispatch
//! arrive in one `on_write` (the seam batches them), so they become as few
//! records as their size allows.
//!
//! The peer's `close_notify` ends the plaintext stream: the EOF that
//! follows is an ordinary `eof_received`. An EOF without it is a
//! truncation, and `connection_lost` says so.
//!
//! A server's settings can be replaced while it runs ([`TlsServer::reload`]):
//! handshakes that start afterwards use the new certificates; connections
//! already open keep the session they negotiated.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig};
use rustls::{ServerConnection, SupportedProtocolVersion};

use super::{LayerError, LayerFactory, LayerInfo, LayerOut, StreamLayer};

const NAME: &str = "tls";

/// How long a handshake may take by default (the common servers' 10 s).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Sessions a server remembers for resumption by session id, by default.
pub const DEFAULT_SESSION_CACHE: usize = 256;

/// The start of a reason that is a failed certificate verification (as
/// OpenSSL says it; the bindings raise `ssl.SSLCertVerificationError`).
pub const VERIFY_FAILED: &str = "certificate verify failed";

/// The reason of a stream that ended without `close_notify` (the bindings
/// raise `ssl.SSLEOFError`).
pub const TRUNCATED: &str = "the peer closed the connection without close_notify (truncated)";

/// Whether a server asks its clients for certificates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClientAuth {
    /// Never (the default).
    #[default]
    None,
    /// Asked; a client without one is accepted, one with a bad one is not.
    Optional,
    /// A client without a valid certificate is refused.
    Required,
}

/// The oldest protocol version allowed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MinVersion {
    /// TLS 1.2 and 1.3 (the default).
    #[default]
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

static TLS13_ONLY: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];

impl MinVersion {
    fn versions(self) -> &'static [&'static SupportedProtocolVersion] {
        match self {
            MinVersion::Tls12 => rustls::ALL_VERSIONS,
            MinVersion::Tls13 => TLS13_ONLY,
        }
    }
}

/// A certificate chain (leaf first) and its private key, in PEM.
#[derive(Clone, Default)]
pub struct PemIdentity {
    /// `CERTIFICATE` blocks, leaf first.
    pub chain: Vec<u8>,
    /// One private key: PKCS#8, PKCS#1 or SEC1, or an encrypted PKCS#8
    /// (`ENCRYPTED PRIVATE KEY`, PBES2) with `password`.
    pub key: Vec<u8>,
    /// The password of an encrypted key.
    pub password: Option<Vec<u8>>,
}

impl std::fmt::Debug for PemIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PemIdentity")
            .field("chain", &self.chain.len())
            .field("password", &self.password.as_ref().map(|_| "..."))
            .finish_non_exhaustive()
    }
}

/// What a server's TLS is made from (see [`TlsServer::new`]).
#[derive(Clone, Debug)]
pub struct TlsServerSettings {
    /// The certificate for clients that name no host, or one not in `sni`.
    pub identity: PemIdentity,
    /// Certificates by the host name a client asks for (SNI), lower case.
    pub sni: Vec<(String, PemIdentity)>,
    /// ALPN protocols offered, in order of preference.
    pub alpn: Vec<Vec<u8>>,
    /// CA certificates (PEM) that client certificates must chain to.
    pub client_ca: Option<Vec<u8>>,
    /// Whether clients are asked for certificates.
    pub client_auth: ClientAuth,
    /// The oldest version allowed.
    pub min_version: MinVersion,
    /// Sessions remembered for resumption by id (0: none).
    pub session_cache: usize,
    /// Issue session tickets (resumption without server state).
    pub session_tickets: bool,
    /// How long a handshake may take (`None`: no limit).
    pub handshake_timeout: Option<Duration>,
    /// The cipher suites allowed, by OpenSSL's names (`None`: all that
    /// rustls offers).
    pub ciphers: Option<Vec<String>>,
}

impl TlsServerSettings {
    /// Defaults around one certificate.
    pub fn new(identity: PemIdentity) -> Self {
        TlsServerSettings {
            identity,
            sni: Vec::new(),
            alpn: Vec::new(),
            client_ca: None,
            client_auth: ClientAuth::None,
            min_version: MinVersion::Tls12,
            session_cache: DEFAULT_SESSION_CACHE,
            session_tickets: true,
            handshake_timeout: Some(DEFAULT_HANDSHAKE_TIMEOUT),
            ciphers: None,
        }
    }
}

/// *ring*'s provider with the cipher suites `ciphers` names (OpenSSL's
/// names; `None`: all of them). Names rustls does not have are ignored, as
/// OpenSSL's cipher lists ignore unknown ones; none left is an error.
fn provider(ciphers: Option<&[String]>) -> Result<Arc<CryptoProvider>, String> {
    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(allowed) = ciphers {
        provider
            .cipher_suites
            .retain(|s| allowed.contains(&cipher_name(s.suite()).0));
        if provider.cipher_suites.is_empty() {
            let offered: Vec<String> = rustls::crypto::ring::default_provider()
                .cipher_suites
                .iter()
                .map(|s| cipher_name(s.suite()).0)
                .collect();
            return Err(format!(
                "ciphers: none of {allowed:?} is a suite netring offers ({})",
                offered.join(", ")
            ));
        }
    }
    Ok(Arc::new(provider))
}

/// The OpenSSL names of the cipher suites netring can negotiate, TLS 1.3
/// ones first.
pub fn cipher_names() -> Vec<String> {
    rustls::crypto::ring::default_provider()
        .cipher_suites
        .iter()
        .map(|s| cipher_name(s.suite()).0)
        .collect()
}

fn certificates(what: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what}: no CERTIFICATE block in the PEM data"));
    }
    Ok(certs)
}

const ENCRYPTED_BEGIN: &str = "-----BEGIN ENCRYPTED PRIVATE KEY-----";
const ENCRYPTED_END: &str = "-----END ENCRYPTED PRIVATE KEY-----";

fn private_key(
    what: &str,
    pem: &[u8],
    password: Option<&[u8]>,
) -> Result<PrivateKeyDer<'static>, String> {
    let text = String::from_utf8_lossy(pem);
    if let Some(start) = text.find(ENCRYPTED_BEGIN) {
        let Some(password) = password else {
            return Err(format!("{what}: the key is encrypted; give its password"));
        };
        let end = text[start..]
            .find(ENCRYPTED_END)
            .map(|e| start + e + ENCRYPTED_END.len())
            .ok_or_else(|| format!("{what}: no {ENCRYPTED_END} line"))?;
        let (_, doc) = pkcs8::der::Document::from_pem(&text[start..end])
            .map_err(|e| format!("{what}: {e}"))?;
        let info = pkcs8::EncryptedPrivateKeyInfo::try_from(doc.as_bytes())
            .map_err(|e| format!("{what}: {e}"))?;
        let plain = info
            .decrypt(password)
            .map_err(|_| format!("{what}: cannot decrypt it (a wrong password?)"))?;
        return Ok(PrivateKeyDer::Pkcs8(plain.as_bytes().to_vec().into()));
    }
    if text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(format!(
            "{what}: a legacy encrypted PEM key (Proc-Type); convert it to PKCS#8 with \
             `openssl pkcs8 -topk8 -in KEY -out NEW.key` (encrypted) or `openssl pkey -in KEY -out PLAIN.key`"
        ));
    }
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("{what}: {e}"))
}

fn certified_key(
    what: &str,
    id: &PemIdentity,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, String> {
    let chain = certificates(&format!("{what}certificate chain"), &id.chain)?;
    let key = private_key(
        &format!("{what}private key"),
        &id.key,
        id.password.as_deref(),
    )?;
    CertifiedKey::from_der(chain, key, provider)
        .map(Arc::new)
        .map_err(|e| format!("{what}certificate and key: {e}"))
}

fn roots(what: &str, pem: &[u8]) -> Result<Arc<RootCertStore>, String> {
    let mut store = RootCertStore::empty();
    for cert in certificates(what, pem)? {
        store.add(cert).map_err(|e| format!("{what}: {e}"))?;
    }
    Ok(Arc::new(store))
}

/// Picks the certificate by the name the client asked for.
#[derive(Debug)]
struct ByName {
    default: Arc<CertifiedKey>,
    names: HashMap<String, Arc<CertifiedKey>>,
}

impl ResolvesServerCert for ByName {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let chosen = hello
            .server_name()
            .and_then(|name| self.names.get(&name.to_ascii_lowercase()));
        Some(chosen.unwrap_or(&self.default).clone())
    }
}

fn server_config(s: &TlsServerSettings) -> Result<Arc<ServerConfig>, String> {
    let provider = provider(s.ciphers.as_deref())?;
    let default = certified_key("", &s.identity, &provider)?;
    let mut names = HashMap::new();
    for (name, id) in &s.sni {
        let key = certified_key(&format!("sni {name:?}: "), id, &provider)?;
        names.insert(name.to_ascii_lowercase(), key);
    }
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(s.min_version.versions())
        .map_err(|e| format!("protocol versions: {e}"))?;
    let builder = match (s.client_auth, &s.client_ca) {
        (ClientAuth::None, _) => builder.with_no_client_auth(),
        (_, None) => return Err("client_auth needs a CA bundle (ca=) to check against".into()),
        (auth, Some(ca)) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots("ca", ca)?, provider);
            let verifier = if auth == ClientAuth::Optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| format!("ca: {e}"))?)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(ByName { default, names }));
    config.alpn_protocols = s.alpn.clone();
    config.session_storage = if s.session_cache > 0 {
        rustls::server::ServerSessionMemoryCache::new(s.session_cache)
    } else {
        Arc::new(rustls::server::NoServerSessionStorage {})
    };
    if s.session_tickets {
        config.ticketer =
            rustls::crypto::ring::Ticketer::new().map_err(|e| format!("session tickets: {e}"))?;
    }
    Ok(Arc::new(config))
}

/// A listener's TLS: makes each accepted connection's layer.
pub struct TlsServer {
    /// The config and handshake timeout new handshakes use.
    current: RwLock<(Arc<ServerConfig>, Option<Duration>)>,
}

impl TlsServer {
    /// Check `settings` and build the server's TLS; the error says what is
    /// wrong with which input.
    pub fn new(settings: &TlsServerSettings) -> Result<Self, String> {
        let config = server_config(settings)?;
        Ok(TlsServer {
            current: RwLock::new((config, settings.handshake_timeout)),
        })
    }

    /// Replace the settings: handshakes that start from now on use them;
    /// open connections keep what they negotiated. On an error nothing
    /// changes.
    pub fn reload(&self, settings: &TlsServerSettings) -> Result<(), String> {
        let config = server_config(settings)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) =
            (config, settings.handshake_timeout);
        Ok(())
    }

    /// As [`TlsServer::reload`], with settings another one already checked.
    pub fn reload_from(&self, other: &TlsServer) {
        let current = other.current();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = current;
    }

    /// Another server with the same settings, reloaded on its own (one per
    /// listener; sessions and tickets stay shared).
    pub fn duplicate(&self) -> TlsServer {
        TlsServer {
            current: RwLock::new(self.current()),
        }
    }

    fn current(&self) -> (Arc<ServerConfig>, Option<Duration>) {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl LayerFactory for TlsServer {
    fn new_layer(
        &self,
        _peer: Option<SocketAddr>,
        _local: Option<SocketAddr>,
        _outbound: bool,
    ) -> Box<dyn StreamLayer> {
        let conn = ServerConnection::new(self.current().0)
            .map(Connection::Server)
            .map_err(|e| e.to_string());
        Box::new(Tls::new(conn, None))
    }

    fn name(&self) -> &'static str {
        NAME
    }

    fn ready_timeout(&self) -> Option<Duration> {
        self.current().1
    }
}

/// What a client's TLS is made from (see [`TlsClientConfig::new`]).
#[derive(Clone, Debug, Default)]
pub struct TlsClientSettings {
    /// CA certificates (PEM) the server's certificate must chain to;
    /// `None`: the system's trusted roots.
    pub ca: Option<Vec<u8>>,
    /// A certificate to present when the server asks for one.
    pub identity: Option<PemIdentity>,
    /// ALPN protocols offered, in order of preference.
    pub alpn: Vec<Vec<u8>>,
    /// The oldest version allowed.
    pub min_version: MinVersion,
    /// How long a handshake may take (`None`: no limit).
    pub handshake_timeout: Option<Duration>,
    /// The cipher suites allowed, by OpenSSL's names (`None`: all).
    pub ciphers: Option<Vec<String>>,
}

/// The system's trusted roots (the platform's CA bundle, read once).
fn system_roots() -> Result<Arc<RootCertStore>, String> {
    static ROOTS: std::sync::OnceLock<Result<Arc<RootCertStore>, String>> =
        std::sync::OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut store = RootCertStore::empty();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map_or_else(|| "none found".to_string(), |e| e.to_string());
                return Err(format!(
                    "no system CA certificates ({why}); give ca= explicitly"
                ));
            }
            Ok(Arc::new(store))
        })
        .clone()
}

/// A client's TLS settings, built once and shared by every connect that
/// uses them (sessions are resumed across those connects).
pub struct TlsClientConfig {
    config: Arc<ClientConfig>,
    handshake_timeout: Option<Duration>,
}

impl TlsClientConfig {
    /// Check `settings` and build the client's TLS.
    pub fn new(settings: &TlsClientSettings) -> Result<Self, String> {
        let provider = provider(settings.ciphers.as_deref())?;
        let roots = match &settings.ca {
            Some(pem) => roots("ca", pem)?,
            None => system_roots()?,
        };
        let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| format!("ca: {e}"))?;
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(settings.min_version.versions())
            .map_err(|e| format!("protocol versions: {e}"))?
            .with_webpki_verifier(verifier);
        let mut config = match &settings.identity {
            None => builder.with_no_client_auth(),
            Some(id) => {
                let chain = certificates("client certificate chain", &id.chain)?;
                let key = private_key("client private key", &id.key, id.password.as_deref())?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("client certificate and key: {e}"))?
            }
        };
        config.alpn_protocols = settings.alpn.clone();
        Ok(TlsClientConfig {
            config: Arc::new(config),
            handshake_timeout: settings.handshake_timeout,
        })
    }

    /// The layer factory for connects to `server_name` (a DNS name or an IP
    /// address: what the certificate must be valid for, and the SNI sent
    /// when it is a name).
    pub fn for_server(&self, server_name: &str) -> Result<TlsClient, String> {
        let name = ServerName::try_from(server_name.to_string())
            .map_err(|e| format!("server_hostname {server_name:?}: {e}"))?;
        Ok(TlsClient {
            config: self.config.clone(),
            name,
            hostname: server_name.to_string(),
            handshake_timeout: self.handshake_timeout,
        })
    }
}

/// An outbound connection's TLS: one server name.
pub struct TlsClient {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    hostname: String,
    handshake_timeout: Option<Duration>,
}

impl LayerFactory for TlsClient {
    fn new_layer(
        &self,
        _peer: Option<SocketAddr>,
        _local: Option<SocketAddr>,
        _outbound: bool,
    ) -> Box<dyn StreamLayer> {
        let conn = ClientConnection::new(self.config.clone(), self.name.clone())
            .map(Connection::Client)
            .map_err(|e| e.to_string());
        Box::new(Tls::new(conn, Some(self.hostname.clone())))
    }

    fn name(&self) -> &'static str {
        NAME
    }

    fn ready_timeout(&self) -> Option<Duration> {
        self.handshake_timeout
    }
}

/// What a TLS session negotiated (`get_extra_info`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// `"TLSv1.2"` or `"TLSv1.3"`, as Python's `ssl` names them.
    pub version: &'static str,
    /// The cipher suite by OpenSSL's name (what Python's `ssl` reports).
    pub cipher: String,
    /// The cipher's key length in bits.
    pub secret_bits: u32,
    /// The protocol ALPN chose, if any.
    pub alpn: Option<Vec<u8>>,
    /// The host name: the one the client asked for (SNI) on a server, the
    /// one verified on a client.
    pub server_name: Option<String>,
    /// The peer's certificate chain, DER, leaf first (empty: none given).
    pub peer_certificates: Vec<Vec<u8>>,
    /// Whether the session was resumed (no full handshake).
    pub resumed: bool,
}

/// OpenSSL's name and the key bits of a rustls cipher suite.
fn cipher_name(suite: rustls::CipherSuite) -> (String, u32) {
    use rustls::CipherSuite as S;
    let (name, bits) = match suite {
        S::TLS13_AES_128_GCM_SHA256 => ("TLS_AES_128_GCM_SHA256", 128),
        S::TLS13_AES_256_GCM_SHA384 => ("TLS_AES_256_GCM_SHA384", 256),
        S::TLS13_CHACHA20_POLY1305_SHA256 => ("TLS_CHACHA20_POLY1305_SHA256", 256),
        S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => ("ECDHE-ECDSA-AES128-GCM-SHA256", 128),
        S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => ("ECDHE-ECDSA-AES256-GCM-SHA384", 256),
        S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => ("ECDHE-ECDSA-CHACHA20-POLY1305", 256),
        S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => ("ECDHE-RSA-AES128-GCM-SHA256", 128),
        S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => ("ECDHE-RSA-AES256-GCM-SHA384", 256),
        S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => ("ECDHE-RSA-CHACHA20-POLY1305", 256),
        other => return (format!("{other:?}"), 0),
    };
    (name.to_string(), bits)
}

/// Where the peer's record stream stands: the bytes of the record not yet
/// complete are what rustls holds between reads (`buffered`, counted in
/// `max_buffer_memory`). Complete records are processed and dropped.
#[derive(Default)]
struct RecordScan {
    header: [u8; 5],
    header_have: usize,
    body_left: usize,
    body_have: usize,
}

impl RecordScan {
    fn feed(&mut self, mut wire: &[u8]) {
        while !wire.is_empty() {
            if self.header_have < 5 {
                let n = (5 - self.header_have).min(wire.len());
                self.header[self.header_have..self.header_have + n].copy_from_slice(&wire[..n]);
                self.header_have += n;
                wire = &wire[n..];
                if self.header_have == 5 {
                    self.body_left =
                        usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
                    self.body_have = 0;
                } else {
                    break;
                }
            }
            let n = self.body_left.min(wire.len());
            self.body_left -= n;
            self.body_have += n;
            wire = &wire[n..];
            if self.body_left == 0 {
                self.header_have = 0; // complete: rustls processes it
                self.body_have = 0;
            }
        }
    }

    fn partial(&self) -> usize {
        self.header_have + self.body_have
    }
}

/// One connection's TLS state.
struct Tls {
    /// `Err`: rustls refused to start a session (a bad configuration).
    conn: Result<Connection, String>,
    /// The incomplete record rustls holds.
    scan: RecordScan,
    /// The peer's `close_notify` arrived.
    peer_closed: bool,
    /// A client's server name (for `get_extra_info`).
    hostname: Option<String>,
}

fn error(reason: impl std::fmt::Display) -> LayerError {
    LayerError::new(NAME, reason.to_string())
}

/// A handshake failure's reason; a certificate the client rejected says so
/// the way OpenSSL does.
fn handshake_error(e: rustls::Error) -> LayerError {
    match e {
        rustls::Error::InvalidCertificate(why) => error(format!("{VERIFY_FAILED}: {why}")),
        e => error(e),
    }
}

impl Tls {
    fn new(conn: Result<Connection, String>, hostname: Option<String>) -> Self {
        Tls {
            conn,
            scan: RecordScan::default(),
            peer_closed: false,
            hostname,
        }
    }

    /// Whatever rustls has to send (handshake messages, records, alerts).
    fn flush(conn: &mut Connection, out: &mut LayerOut) {
        while conn.wants_write() {
            match conn.write_tls(&mut out.wire) {
                Ok(0) | Err(_) => break, // NOTE: writing to a Vec cannot fail
                Ok(_) => {}
            }
        }
    }
}

impl StreamLayer for Tls {
    fn on_start(&mut self, out: &mut LayerOut) -> Result<(), LayerError> {
        if let Ok(conn) = self.conn.as_mut() {
            Self::flush(conn, out); // a client's ClientHello
        }
        Ok(())
    }

    fn on_read(&mut self, mut wire: &[u8], out: &mut LayerOut) -> Result<(), LayerError> {
        let conn = self.conn.as_mut().map_err(|e| error(e.clone()))?;
        self.scan.feed(wire);
        while !wire.is_empty() {
            let taken = conn.read_tls(&mut wire).map_err(error)?;
            let state = match conn.process_new_packets() {
                Ok(state) => state,
                Err(e) => {
                    Self::flush(conn, out); // the alert
                    return Err(handshake_error(e));
                }
            };
            let n = state.plaintext_bytes_to_read();
            if n > 0 {
                let start = out.plain.len();
                out.plain.resize(start + n, 0);
                conn.reader()
                    .read_exact(&mut out.plain[start..])
                    .map_err(error)?;
            }
            if state.peer_has_closed() && !self.peer_closed {
                self.peer_closed = true;
                out.eof = true;
            }
            if taken == 0 {
                break; // rustls takes no more until it is read (cannot happen: read above)
            }
        }
        Self::flush(conn, out);
        Ok(())
    }

    fn on_write(&mut self, plain: &[u8], out: &mut LayerOut) -> Result<(), LayerError> {
        let conn = self.conn.as_mut().map_err(|e| error(e.clone()))?;
        // NOTE: rustls takes at most its buffer limit (64 KiB of records
        // not yet written out) per call: encrypt a piece, take the records,
        // and go on, so a write of any size goes through.
        let mut rest = plain;
        while !rest.is_empty() {
            let n = conn.writer().write(rest).map_err(error)?;
            Self::flush(conn, out);
            if n == 0 {
                return Err(error("rustls took no plaintext with its buffer empty"));
            }
            rest = &rest[n..];
        }
        Ok(())
    }

    fn on_eof(&mut self, _out: &mut LayerOut) -> Result<(), LayerError> {
        if self.peer_closed {
            return Ok(());
        }
        Err(error(TRUNCATED))
    }

    fn on_close(&mut self, out: &mut LayerOut) {
        if let Ok(conn) = self.conn.as_mut() {
            conn.send_close_notify();
            Self::flush(conn, out);
        }
    }

    fn is_ready(&self) -> bool {
        self.conn.as_ref().is_ok_and(|c| !c.is_handshaking())
    }

    fn buffered(&self) -> usize {
        self.scan.partial()
    }

    fn info(&self) -> LayerInfo {
        let Ok(conn) = self.conn.as_ref() else {
            return LayerInfo::default();
        };
        let (cipher, secret_bits) = conn
            .negotiated_cipher_suite()
            .map_or((String::new(), 0), |s| cipher_name(s.suite()));
        let server_name = match conn {
            Connection::Server(s) => s.server_name().map(str::to_string),
            Connection::Client(_) => self.hostname.clone(),
        };
        LayerInfo {
            tls: Some(TlsInfo {
                version: match conn.protocol_version() {
                    Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
                    Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
                    _ => "",
                },
                cipher,
                secret_bits,
                alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
                server_name,
                peer_certificates: conn
                    .peer_certificates()
                    .map(|c| c.iter().map(|d| d.to_vec()).collect())
                    .unwrap_or_default(),
                resumed: conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
            }),
            ..LayerInfo::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RecordScan;

    #[test]
    fn the_incomplete_record_is_what_is_buffered() {
        let mut scan = RecordScan::default();
        let record = |len: u16| {
            let mut r = vec![0x17, 3, 3];
            r.extend_from_slice(&len.to_be_bytes());
            r.extend(std::iter::repeat_n(0u8, usize::from(len)));
            r
        };
        let mut stream = record(100);
        stream.extend(record(16384));
        scan.feed(&stream[..3]);
        assert_eq!(scan.partial(), 3, "part of a header");
        scan.feed(&stream[3..105]);
        assert_eq!(scan.partial(), 0, "one whole record");
        scan.feed(&stream[105..105 + 5000]);
        assert_eq!(scan.partial(), 5000);
        scan.feed(&stream[105 + 5000..]);
        assert_eq!(scan.partial(), 0);
        // One byte at a time, across records.
        for b in record(7).iter().chain(record(0).iter()) {
            scan.feed(std::slice::from_ref(b));
        }
        assert_eq!(scan.partial(), 0);
    }
}
