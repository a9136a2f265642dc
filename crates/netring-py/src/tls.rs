//! TLS settings built at configuration time: `netring.TLSConfig` holds one
//! of these, so a bad certificate or key raises `ConfigurationError` when
//! the config is made, not when a client connects.

use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;

use netring_core::layer::tls::TlsServer;
use netring_core::layer::Layer;

use crate::errors::netring_error;

/// A server's TLS configuration (certificate chain, key, ALPN), shared by
/// every connection of the listeners that use it.
#[pyclass(module = "netring._native", name = "TLSServerConfig", frozen)]
pub struct TlsServerConfig {
    factory: Arc<TlsServer>,
}

#[pymethods]
impl TlsServerConfig {
    #[new]
    #[pyo3(signature = (cert_chain, key, alpn, handshake_timeout=None))]
    fn new(
        py: Python<'_>,
        cert_chain: &[u8],
        key: &[u8],
        alpn: Vec<Vec<u8>>,
        handshake_timeout: Option<f64>,
    ) -> PyResult<Self> {
        TlsServer::from_pem(cert_chain, key, &alpn)
            .map(|f| TlsServerConfig {
                factory: Arc::new(
                    f.with_handshake_timeout(handshake_timeout.map(Duration::from_secs_f64)),
                ),
            })
            .map_err(|e| netring_error(py, "ConfigurationError", format!("TLS: {e}")))
    }
}

impl TlsServerConfig {
    /// The stream layer a listener gives its connections.
    pub fn layer(&self) -> Layer {
        Layer(self.factory.clone())
    }
}
