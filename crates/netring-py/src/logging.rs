//! The engine's `log` records → Python's `logging`, through `pyo3-log`.
//!
//! Names: `pyo3-log` names a record's Python logger after its target
//! (`a::b` → `a.b`). Targets are first moved under `netring`: the engine's
//! `netring_core::x` becomes `netring::x` (logger `netring.x`), any other
//! target `t` becomes `netring::t`. So handlers and levels set on
//! `logging.getLogger("netring")` apply to every engine record, as they did
//! when every record went to the `netring` logger itself.
//!
//! Levels map to Python's (`Trace` → 5). Records of DEBUG and above are
//! handed to Python, which decides by the effective level of the record's
//! logger *at that moment*: `Caching::Loggers` caches the logger objects,
//! not their levels, so `setLevel` at run time takes effect at once (with
//! levels cached, a level changed after a target's first record would be
//! ignored). The price is taking the GIL for every DEBUG-or-above record,
//! which the engine emits rarely (a backend fallback, an accept episode, an
//! abort).
//!
//! A record logged while the interpreter is shutting down is dropped, and
//! an exception raised inside Python's logging is dropped too (Python
//! reports handler errors itself): neither may touch an IO thread.

use log::{LevelFilter, Log, Metadata, Record};
use pyo3::prelude::*;
use pyo3_log::{Caching, Logger};

/// The Python logger every engine record is filed under.
const ROOT: &str = "netring";
/// The engine crate's target prefix, replaced by [`ROOT`].
const ENGINE: &str = "netring_core";

/// Target `target` moved under [`ROOT`].
fn python_target(target: &str) -> String {
    let under = |prefix: &str| {
        target
            .strip_prefix(prefix)
            .filter(|rest| rest.is_empty() || rest.starts_with("::"))
    };
    if let Some(rest) = under(ENGINE) {
        format!("{ROOT}{rest}")
    } else if under(ROOT).is_some() {
        target.to_string()
    } else {
        format!("{ROOT}::{target}")
    }
}

/// `pyo3-log`'s logger, with targets renamed and Python state guarded.
struct Bridge {
    inner: Logger,
}

impl Log for Bridge {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        let target = python_target(metadata.target());
        self.inner.enabled(
            &Metadata::builder()
                .level(metadata.level())
                .target(&target)
                .build(),
        )
    }

    fn log(&self, record: &Record<'_>) {
        let target = python_target(record.target());
        Python::try_attach(|py| {
            // NOTE: pyo3-log restores a failure of Python's logging as the
            // thread's pending exception; take it (and keep one that was
            // pending before) so no IO thread carries a stray exception into
            // its next callback.
            let pending = PyErr::take(py);
            self.inner.log(
                &Record::builder()
                    .args(*record.args())
                    .level(record.level())
                    .target(&target)
                    .module_path(record.module_path())
                    .file(record.file())
                    .line(record.line())
                    .build(),
            );
            drop(PyErr::take(py));
            if let Some(e) = pending {
                e.restore(py);
            }
        });
    }

    fn flush(&self) {}
}

/// Install the bridge (once per process; later calls are no-ops).
pub fn install(py: Python<'_>) -> PyResult<()> {
    let inner = Logger::new(py, Caching::Loggers)?.filter(LevelFilter::Debug);
    if log::set_boxed_logger(Box::new(Bridge { inner })).is_ok() {
        log::set_max_level(LevelFilter::Debug);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::python_target;

    #[test]
    fn engine_targets_move_under_netring() {
        assert_eq!(python_target("netring_core"), "netring");
        assert_eq!(python_target("netring_core::core"), "netring::core");
        assert_eq!(
            python_target("netring_core::driver::epoll"),
            "netring::driver::epoll"
        );
        assert_eq!(python_target("netring::x"), "netring::x");
        assert_eq!(python_target("_native::engine"), "netring::_native::engine");
        assert_eq!(python_target("netring_corex"), "netring::netring_corex");
    }
}
