//! TLS settings built at configuration time: `netring.TLSConfig` and
//! `netring.TLSClientConfig` hold one of these, so a bad certificate or key
//! raises `ConfigurationError` when the config is made, not when a peer
//! connects; and the TLS fields of `Transport.get_extra_info`.

use std::sync::Arc;
use std::time::Duration;

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use netring_core::layer::tls::{
    ClientAuth, MinVersion, PemIdentity, TlsClientConfig as CoreClientConfig, TlsClientSettings,
    TlsInfo, TlsServer, TlsServerSettings,
};
use netring_core::layer::Layer;

use crate::errors::netring_error;

fn config_error(py: Python<'_>, e: String) -> PyErr {
    netring_error(py, "ConfigurationError", format!("TLS: {e}"))
}

fn min_version(py: Python<'_>, v: &str) -> PyResult<MinVersion> {
    match v {
        "TLSv1.2" => Ok(MinVersion::Tls12),
        "TLSv1.3" => Ok(MinVersion::Tls13),
        other => Err(config_error(
            py,
            format!("min_version: 'TLSv1.2' or 'TLSv1.3', not {other:?}"),
        )),
    }
}

/// A server's TLS configuration, shared by every connection of the
/// listeners that use it. Each listener gets its own copy
/// (`for_listener`), so `Server.reload_tls` changes that server only.
#[pyclass(module = "netring._native", name = "TLSServerConfig", frozen)]
pub struct TlsServerConfig {
    factory: Arc<TlsServer>,
    /// A listener's copy: what its connections' `sslcontext` is.
    context: Option<Py<PyAny>>,
}

#[pymethods]
impl TlsServerConfig {
    #[new]
    #[pyo3(signature = (cert_chain, key, alpn, handshake_timeout, sni, client_ca, client_auth,
                        min_version, session_cache, session_tickets, password=None,
                        ciphers=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        cert_chain: Vec<u8>,
        key: Vec<u8>,
        alpn: Vec<Vec<u8>>,
        handshake_timeout: Option<f64>,
        sni: Vec<(String, Vec<u8>, Vec<u8>)>,
        client_ca: Option<Vec<u8>>,
        client_auth: &str,
        min_version: &str,
        session_cache: usize,
        session_tickets: bool,
        password: Option<Vec<u8>>,
        ciphers: Option<Vec<String>>,
    ) -> PyResult<Self> {
        let client_auth = match client_auth {
            "none" => ClientAuth::None,
            "optional" => ClientAuth::Optional,
            "required" => ClientAuth::Required,
            other => {
                return Err(config_error(
                    py,
                    format!("client_auth: 'none', 'optional' or 'required', not {other:?}"),
                ))
            }
        };
        let mut settings = TlsServerSettings::new(PemIdentity {
            chain: cert_chain,
            key,
            password: password.clone(),
        });
        settings.sni = sni
            .into_iter()
            .map(|(name, chain, key)| {
                let password = password.clone();
                (
                    name,
                    PemIdentity {
                        chain,
                        key,
                        password,
                    },
                )
            })
            .collect();
        settings.alpn = alpn;
        settings.client_ca = client_ca;
        settings.client_auth = client_auth;
        settings.min_version = self::min_version(py, min_version)?;
        settings.session_cache = session_cache;
        settings.session_tickets = session_tickets;
        settings.handshake_timeout = handshake_timeout.map(Duration::from_secs_f64);
        settings.ciphers = ciphers;
        // NOTE: building checks every certificate and key (CPU-bound,
        // milliseconds): without the GIL.
        let built = py.detach(|| TlsServer::new(&settings));
        built
            .map(|f| TlsServerConfig {
                factory: Arc::new(f),
                context: None,
            })
            .map_err(|e| config_error(py, e))
    }

    /// A copy for one listener (same settings, replaced on its own), whose
    /// connections' `get_extra_info("sslcontext")` is `context`.
    #[pyo3(signature = (context=None))]
    fn for_listener(&self, context: Option<Py<PyAny>>) -> Self {
        TlsServerConfig {
            factory: Arc::new(self.factory.duplicate()),
            context,
        }
    }

    /// Use `other`'s settings for handshakes from now on.
    fn reload(&self, other: &TlsServerConfig) {
        self.factory.reload_from(&other.factory);
    }
}

impl TlsServerConfig {
    /// The stream layer a listener gives its connections.
    pub fn layer(&self) -> Layer {
        Layer(self.factory.clone())
    }

    /// What its connections' `get_extra_info("sslcontext")` is.
    pub fn context(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.context.as_ref().map(|c| c.clone_ref(py))
    }
}

/// A client's TLS configuration, shared by the connects that use it.
#[pyclass(module = "netring._native", name = "TLSClientConfig", frozen)]
pub struct TlsClientConfig {
    config: CoreClientConfig,
}

#[pymethods]
impl TlsClientConfig {
    #[new]
    #[pyo3(signature = (ca, cert_chain, key, alpn, min_version, handshake_timeout, password=None,
                        ciphers=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        ca: Option<Vec<u8>>,
        cert_chain: Option<Vec<u8>>,
        key: Option<Vec<u8>>,
        alpn: Vec<Vec<u8>>,
        min_version: &str,
        handshake_timeout: Option<f64>,
        password: Option<Vec<u8>>,
        ciphers: Option<Vec<String>>,
    ) -> PyResult<Self> {
        let identity = match (cert_chain, key) {
            (Some(chain), Some(key)) => Some(PemIdentity {
                chain,
                key,
                password,
            }),
            (None, None) => None,
            _ => return Err(config_error(py, "cert and key go together".into())),
        };
        let settings = TlsClientSettings {
            ca,
            identity,
            alpn,
            min_version: self::min_version(py, min_version)?,
            handshake_timeout: handshake_timeout.map(Duration::from_secs_f64),
            ciphers,
        };
        let built = py.detach(|| CoreClientConfig::new(&settings));
        built
            .map(|config| TlsClientConfig { config })
            .map_err(|e| config_error(py, e))
    }

    /// The layer for connects to `server_hostname`, whose connection's
    /// `get_extra_info("sslcontext")` is `context`; a name that cannot be
    /// one (empty, bad characters) raises `ConfigurationError`.
    #[pyo3(signature = (server_hostname, context=None))]
    fn for_server(
        &self,
        py: Python<'_>,
        server_hostname: &str,
        context: Option<Py<PyAny>>,
    ) -> PyResult<TlsClientLayer> {
        self.config
            .for_server(server_hostname)
            .map(|f| TlsClientLayer {
                layer: Layer(Arc::new(f)),
                context,
            })
            .map_err(|e| config_error(py, e))
    }
}

/// One connect's TLS (a client config and a server name).
#[pyclass(module = "netring._native", name = "TLSClientLayer", frozen)]
pub struct TlsClientLayer {
    layer: Layer,
    context: Option<Py<PyAny>>,
}

impl TlsClientLayer {
    pub fn layer(&self) -> Layer {
        self.layer.clone()
    }

    /// What the connection's `get_extra_info("sslcontext")` is.
    pub fn context(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.context.as_ref().map(|c| c.clone_ref(py))
    }
}

/// The OpenSSL names of the cipher suites netring negotiates (what
/// `ciphers=` chooses from), TLS 1.3 ones first.
#[pyfunction]
pub fn tls_cipher_names() -> Vec<String> {
    netring_core::layer::tls::cipher_names()
}

/// `get_extra_info(name)` for a TLS connection: asyncio's names and shapes
/// (`cipher` as `SSLSocket.cipher()`, `peercert` as `getpeercert()`,
/// `sslcontext`: the `ssl.SSLContext` its settings came from or the netring
/// config, `ssl_object`: an object with `ssl.SSLObject`'s read-only
/// methods), and `ssl_version`, `alpn_protocol`, `server_hostname`,
/// `session_reused`, `peercert_der` (the leaf, DER) of netring's own.
pub fn extra_info<'py>(
    py: Python<'py>,
    tls: &TlsInfo,
    context: Option<&Py<PyAny>>,
    name: &str,
    default: Option<Bound<'py, PyAny>>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let field = |n: &str| -> PyResult<Bound<'py, PyAny>> {
        Ok(extra_info(py, tls, context, n, None)?.unwrap_or_else(|| py.None().into_bound(py)))
    };
    let value = match name {
        "sslcontext" => match context {
            Some(c) => c.clone_ref(py).into_bound(py),
            None => return Ok(default),
        },
        "ssl_object" => py
            .import(intern!(py, "netring.tls"))?
            .getattr(intern!(py, "TLSObject"))?
            .call1((
                field("ssl_version")?,
                field("cipher")?,
                field("alpn_protocol")?,
                field("server_hostname")?,
                field("peercert_der")?,
                field("session_reused")?,
                field("sslcontext")?,
            ))?,
        "cipher" => (tls.cipher.as_str(), tls.version, tls.secret_bits)
            .into_pyobject(py)?
            .into_any(),
        "ssl_version" => tls.version.into_pyobject(py)?.into_any(),
        "alpn_protocol" => match &tls.alpn {
            Some(p) => String::from_utf8_lossy(p).into_pyobject(py)?.into_any(),
            None => py.None().into_bound(py),
        },
        "server_hostname" => match &tls.server_name {
            Some(n) => n.into_pyobject(py)?.into_any(),
            None => py.None().into_bound(py),
        },
        "session_reused" => tls.resumed.into_pyobject(py)?.to_owned().into_any(),
        "peercert_der" => match tls.peer_certificates.first() {
            Some(der) => PyBytes::new(py, der).into_any(),
            None => py.None().into_bound(py),
        },
        "peercert" => match tls.peer_certificates.first() {
            // Decoded by Python's own ssl code, so the dict is exactly
            // what asyncio's SSL transports give.
            Some(der) => py.import(intern!(py, "netring.tls"))?.call_method1(
                intern!(py, "_decode_certificate"),
                PyTuple::new(py, [PyBytes::new(py, der)])?,
            )?,
            None => py.None().into_bound(py),
        },
        _ => return Ok(default),
    };
    Ok(Some(value))
}
