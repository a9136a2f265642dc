//! PyO3 bindings for netring's engine, built by maturin as `netring._native`.
//!
//! Thin on purpose: `engine.rs` wraps the engine and dispatches events to
//! Python protocols, `transport.rs` is asyncio's transport interface over a
//! connection handle, `errors.rs` maps engine errors to Python exceptions.

mod dispatch;
mod engine;
mod errors;
mod framing;
mod logging;
mod tls;
mod transport;
mod udp;
mod util;

use pyo3::prelude::*;

/// Report which backend `auto` would pick here, and why.
#[pyfunction]
fn probe_backend(py: Python<'_>) -> (String, Option<String>) {
    py.detach(|| match netring_core::driver::probe_io_uring() {
        Ok(()) => ("io_uring".to_string(), None),
        Err(why) => ("epoll".to_string(), Some(why)),
    })
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    logging::install(m.py())?;
    m.add_class::<engine::Engine>()?;
    m.add_class::<transport::Transport>()?;
    m.add_class::<tls::TlsServerConfig>()?;
    m.add_class::<tls::TlsClientConfig>()?;
    m.add_class::<tls::TlsClientLayer>()?;
    m.add_function(wrap_pyfunction!(tls::tls_cipher_names, m)?)?;
    m.add_class::<engine::HostedTurns>()?;
    m.add_class::<udp::DatagramTransport>()?;
    m.add_function(wrap_pyfunction!(probe_backend, m)?)?;
    m.add_function(wrap_pyfunction!(framing::check_framing, m)?)?;
    m.add(
        "DEFAULT_MAX_PACKET_BYTES",
        netring_core::framing::DEFAULT_MAX_PACKET_BYTES,
    )?;
    m.add(
        "DEFAULT_MAX_LINE_BYTES",
        netring_core::framing::DEFAULT_MAX_LINE_BYTES,
    )?;
    m.add(
        "DEFAULT_WRITE_HIGH_WATER_BYTES",
        netring_core::config::DEFAULT_WRITE_HIGH_WATER_BYTES,
    )?;
    m.add(
        "DEFAULT_BUFFER_SIZE_BYTES",
        netring_core::config::DEFAULT_BUFFER_SIZE_BYTES,
    )?;
    m.add(
        "DEFAULT_BUFFERS_PER_THREAD",
        netring_core::config::DEFAULT_BUFFERS_PER_THREAD,
    )?;
    m.add("DEFAULT_BACKLOG", netring_core::config::DEFAULT_BACKLOG)?;
    m.add(
        "DEFAULT_MAX_WRITE_BUFFER_BYTES",
        netring_core::config::DEFAULT_MAX_WRITE_BUFFER_BYTES,
    )?;
    m.add(
        "DEFAULT_MAX_SEND_QUEUE_BYTES",
        netring_core::udp::DEFAULT_MAX_SEND_QUEUE,
    )?;
    m.add(
        "DATAGRAM_HEADROOM_BYTES",
        netring_core::udp::DATAGRAM_HEADROOM,
    )?;
    Ok(())
}
