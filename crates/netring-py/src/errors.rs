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
        // NOTE: no layer ships yet (the TLS and PROXY issues add theirs,
        // with their own exception classes); the reason is kept.
        ConnError::Layer(l) => netring_error(py, "ConnectionClosedError", l.to_string()),
    }
}
