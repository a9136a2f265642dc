//! Framing specs from Python (`netring.framing`) to the engine's `Framing`.
//!
//! The Python classes hand over a plain tuple (`spec._spec()`); parsing and
//! validation happen here, once, so errors name the argument the same way
//! for every entry point (`Server(framing=)`, `transport.set_framing`).

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use netring_core::framing::Framing;

use crate::errors::netring_error;

/// Parse a framing tuple: `("raw",)`, `("length_prefixed", header,
/// big_endian, includes_header, max_packet)`, `("delimited", delimiter,
/// max_line, strip)`, `("exactly", n)` or `("resp", max_bulk, max_command, max_inline)`.
pub fn from_py(spec: &Bound<'_, PyAny>) -> PyResult<Framing> {
    let py = spec.py();
    let tuple = match spec.cast::<PyTuple>() {
        Ok(t) => t.clone(),
        Err(_) => spec.call_method0("_spec")?.cast_into::<PyTuple>()?,
    };
    let kind: String = tuple.get_item(0)?.extract()?;
    let framing = match kind.as_str() {
        "raw" => Framing::Raw,
        "length_prefixed" => Framing::LengthPrefixed {
            header: tuple.get_item(1)?.extract()?,
            big_endian: tuple.get_item(2)?.extract()?,
            includes_header: tuple.get_item(3)?.extract()?,
            max_packet: tuple.get_item(4)?.extract()?,
        },
        "delimited" => Framing::Delimited {
            delimiter: tuple
                .get_item(1)?
                .cast_into::<PyBytes>()?
                .as_bytes()
                .to_vec(),
            max_line: tuple.get_item(2)?.extract()?,
            strip: tuple.get_item(3)?.extract()?,
        },
        "exactly" => Framing::Exactly(tuple.get_item(1)?.extract()?),
        "resp" => Framing::Resp(netring_core::framing::resp::Limits {
            max_bulk: tuple.get_item(1)?.extract()?,
            max_command: tuple.get_item(2)?.extract()?,
            max_inline: tuple.get_item(3)?.extract()?,
        }),
        other => {
            return Err(netring_error(
                py,
                "ConfigurationError",
                format!("framing: unknown kind {other:?}"),
            ))
        }
    };
    // NOTE: the spec's constructor already ran this (`check_framing`), and
    // it runs again whenever a spec reaches the engine (listen, connect,
    // `set_framing`): one rule, the engine's, run twice, not a second
    // check. The decoder relies on it (a 3-byte header would index out of
    // range on an IO thread), and a spec can be altered after construction
    // or handed over as a bare tuple.
    framing
        .validate()
        .map_err(|e| netring_error(py, "ConfigurationError", e.to_string()))?;
    Ok(framing)
}

/// Validate a framing spec tuple (raises `ConfigurationError`).
#[pyfunction]
pub fn check_framing(spec: &Bound<'_, PyAny>) -> PyResult<()> {
    from_py(spec).map(drop)
}
