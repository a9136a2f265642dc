//! The one place engine errors become Python exceptions.
//!
//! The exception classes live in `netring/errors.py` (so that
//! `ConfigurationError` can also be a `ValueError`); they are looked up once
//! and cached.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

use netring_core::conn::{ConnError, LimitError};
use netring_core::framing::FrameError;
use netring_core::layer::{tls, LayerError};
use netring_core::Error;

static ERRORS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

fn class<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyType>> {
    let module = ERRORS.get_or_try_init(py, || py.import("netring.errors").map(Bound::unbind))?;
    Ok(module.bind(py).getattr(name)?.cast_into::<PyType>()?)
}

/// Build an instance of `netring.errors.<name>(message)`.
pub fn netring_error(py: Python<'_>, name: &str, message: String) -> PyErr {
    match class(py, name) {
        Ok(cls) => PyErr::from_type(cls, message),
        Err(e) => e,
    }
}

/// Convert an engine error.
pub fn to_py(py: Python<'_>, e: Error) -> PyErr {
    match e {
        Error::Config(c) => netring_error(py, "ConfigurationError", c.to_string()),
        Error::BackendUnavailable(why) => netring_error(py, "BackendUnavailableError", why),
        Error::Io(io) => io.into(),
        Error::Closed => netring_error(py, "NetringError", "the engine is shut down".into()),
    }
}

/// Convert why a connection ended into the exception `connection_lost` gets.
pub fn conn_error(py: Python<'_>, e: ConnError) -> PyErr {
    match e {
        ConnError::Io(io) => io.into(),
        ConnError::Frame(
            f @ (FrameError::PacketTooLarge { .. } | FrameError::LineTooLong { .. }),
        ) => netring_error(py, "FrameTooLargeError", f.to_string()),
        ConnError::Frame(f) => netring_error(py, "FramingError", f.to_string()),
        ConnError::Limit(l @ LimitError::WriteBuffer { .. }) => {
            netring_error(py, "WriteBufferLimitError", l.to_string())
        }
        ConnError::Limit(l @ LimitError::FrameTimeout { .. }) => {
            netring_error(py, "FrameTimeoutError", l.to_string())
        }
        ConnError::Layer(l) => layer_error(py, &l),
    }
}

/// A stream layer's reason as an exception: TLS failures as `ssl`'s
/// (`netring.TLSError` is an `ssl.SSLError`; a rejected certificate an
/// `ssl.SSLCertVerificationError`, a truncated stream an `ssl.SSLEOFError`).
pub fn layer_error(py: Python<'_>, l: &LayerError) -> PyErr {
    if l.layer != "tls" {
        return netring_error(py, "ConnectionClosedError", l.to_string());
    }
    let class = if l.reason.starts_with(tls::VERIFY_FAILED) {
        "TLSCertVerificationError"
    } else if l.reason == tls::TRUNCATED {
        "TLSEOFError"
    } else {
        "TLSError"
    };
    netring_error(py, class, l.reason.clone())
}

/// An IO error as an exception; one that carries a layer's reason (an
/// outbound connect whose handshake failed) as [`layer_error`] does.
pub fn io_error(py: Python<'_>, e: std::io::Error) -> PyErr {
    match e.get_ref().and_then(|r| r.downcast_ref::<LayerError>()) {
        Some(l) => layer_error(py, l),
        None => e.into(),
    }
}
