//! `--tls`: the client side of TLS over the same connections and checks.
//!
//! Every server must do the same crypto, so the client offers only TLS 1.3,
//! TLS13_AES_128_GCM_SHA256 and X25519 (rustls with *ring*, as the engine),
//! verifies the server's certificate against `--tls-ca` and never resumes a
//! session. Ciphertext is read from the socket into the caller's 64 KiB
//! buffer with plain mode's rule for a drained socket (a short read), fed to
//! rustls from there, and the plaintext is checked by `Conn::on_data` exactly
//! as in plain mode. Plaintext is written through `TlsStream`'s `Write`, so
//! `Conn::flush` is unchanged: one TLS record per flush of up to 16 KiB.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use rustls::client::Resumption;
use rustls::crypto::ring::{cipher_suite, default_provider, kx_group};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use crate::conn::Conn;
use crate::Failure;

/// The client configuration every connection of the run shares.
pub struct Client {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl Client {
    /// Trust the PEM certificates in `ca`; expect certificates for `name`.
    pub fn new(ca: &str, name: &str) -> Result<Client, String> {
        let bad = |e: &dyn std::fmt::Display| format!("--tls-ca {ca}: {e}");
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca).map_err(|e| bad(&e))? {
            roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
        }
        if roots.is_empty() {
            return Err(bad(&"no certificate in it"));
        }
        let provider = CryptoProvider {
            cipher_suites: vec![cipher_suite::TLS13_AES_128_GCM_SHA256],
            kx_groups: vec![kx_group::X25519],
            ..default_provider()
        };
        let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| format!("TLS configuration: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.resumption = Resumption::disabled();
        let name = ServerName::try_from(name.to_owned())
            .map_err(|e| format!("--tls-server-name {name:?}: {e}"))?;
        Ok(Client {
            config: Arc::new(config),
            name,
        })
    }

    /// Start a handshake on a connected (or connecting) socket: the
    /// ClientHello waits in rustls until the first `push`.
    pub fn start(&self, sock: TcpStream) -> Result<TlsStream, String> {
        let tls = ClientConnection::new(self.config.clone(), self.name.clone())
            .map_err(|e| format!("TLS: {e}"))?;
        Ok(TlsStream { sock, tls })
    }
}

/// A socket and its TLS session.
pub struct TlsStream {
    pub sock: TcpStream,
    pub tls: ClientConnection,
}

impl TlsStream {
    /// Write the records rustls holds to the socket: `Ok(true)` when none
    /// are left, `Ok(false)` when the socket is full (a writable edge follows).
    pub fn push(&mut self) -> io::Result<bool> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

impl Write for TlsStream {
    /// Encrypt as much of `buf` as the socket takes. Fewer bytes than asked
    /// (or `WouldBlock` for none) only when the socket is full, so
    /// `Conn::flush` can treat a short write as it does a socket's.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut taken = 0;
        loop {
            // NOTE: rustls encrypts at most its buffer limit (64 KiB) ahead
            // of the socket; the rest is taken once those records went out.
            taken += self.tls.writer().write(&buf[taken..])?;
            if !self.push()? || taken == buf.len() {
                break;
            }
        }
        if taken == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.push().map(|_| ())
    }
}

/// Decrypt `data` (ciphertext just read) and check the plaintext it yields;
/// returns the messages it completed.
fn feed(
    c: &mut Conn<TlsStream>,
    mut data: &[u8],
    plain: &mut [u8],
    now: Instant,
    record: &mut impl FnMut(Instant, Duration),
) -> Result<usize, Failure> {
    let mut completed = 0;
    while !data.is_empty() {
        let tls = &mut c.stream.tls;
        // NOTE: read_tls takes at most a few KiB per call (rustls's
        // deframer), so one socket read may take several rounds.
        let taken = tls
            .read_tls(&mut data)
            .map_err(|e| Failure::Io(format!("TLS read: {e}")))?;
        let state = tls
            .process_new_packets()
            .map_err(|e| Failure::Io(format!("TLS: {e}")))?;
        let (mut left, closed) = (state.plaintext_bytes_to_read(), state.peer_has_closed());
        while left > 0 {
            let n = c
                .stream
                .tls
                .reader()
                .read(plain)
                .map_err(|e| Failure::Io(format!("TLS plaintext: {e}")))?;
            left -= n;
            completed += c
                .on_data(&plain[..n], now, |lat| record(now, lat))
                .map_err(Failure::Mismatch)?;
        }
        if closed || taken == 0 {
            return Err(Failure::Io("server sent close_notify".into()));
        }
    }
    Ok(completed)
}

/// Read and decrypt everything the socket has (one 64 KiB read at a time,
/// until a short read); returns the messages completed.
pub fn read_all(
    c: &mut Conn<TlsStream>,
    buf: &mut [u8],
    plain: &mut [u8],
    record: &mut impl FnMut(Instant, Duration),
) -> Result<usize, Failure> {
    let mut completed = 0;
    loop {
        match c.stream.sock.read(buf) {
            Ok(0) => return Err(Failure::Io("server closed the connection".into())),
            Ok(n) => {
                let now = Instant::now();
                completed += feed(c, &buf[..n], plain, now, record)?;
                if n < buf.len() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Failure::Io(format!("read: {e}"))),
        }
    }
    Ok(completed)
}

/// `main::pump` over TLS: read and verify, refill the pipeline, write.
pub fn pump(
    c: &mut Conn<TlsStream>,
    buf: &mut [u8],
    plain: &mut [u8],
    record: &mut impl FnMut(Instant, Duration),
) -> Result<(), Failure> {
    let completed = read_all(c, buf, plain, record)?;
    if completed > 0 {
        c.queue(completed, Instant::now());
    }
    let fail = |e: io::Error| Failure::Io(format!("write: {e}"));
    c.flush().map_err(fail)?;
    // NOTE: records left by a full socket when every plaintext byte was
    // already taken, or made by rustls itself (alerts, key updates).
    c.stream.push().map_err(fail)?;
    Ok(())
}

/// Advance a handshake; `Ok(true)` once it completed (the client's Finished
/// is written or queued for the next write).
pub fn handshake(
    c: &mut Conn<TlsStream>,
    buf: &mut [u8],
    plain: &mut [u8],
) -> Result<bool, Failure> {
    let fail = |e: io::Error| Failure::Io(format!("handshake write: {e}"));
    c.stream.push().map_err(fail)?;
    read_all(c, buf, plain, &mut |_, _| {})?;
    c.stream.push().map_err(fail)?;
    Ok(!c.stream.tls.is_handshaking())
}
