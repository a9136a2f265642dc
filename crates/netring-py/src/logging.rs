//! Bridge from the engine's `log` records to Python's `logging` module
//! (logger `netring`), so engine messages such as "io_uring unavailable;
//! using epoll" or "accept failed; backing off" reach the user's handlers.
//!
//! Records below INFO are dropped before touching Python. If the
//! interpreter is gone (finalising), the record is dropped.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

static LOGGER: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

struct Bridge;

impl log::Log for Bridge {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Info
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Error => 40,
            log::Level::Warn => 30,
            log::Level::Info => 20,
            log::Level::Debug => 10,
            log::Level::Trace => 5,
        };
        let message = record.args().to_string();
        Python::try_attach(|py| {
            let logger = LOGGER.get_or_try_init(py, || {
                py.import("logging")?
                    .call_method1("getLogger", ("netring",))
                    .map(Bound::unbind)
            });
            if let Ok(logger) = logger {
                // NOTE: a failing handler must not take the engine down;
                // Python's logging already reports handler errors itself.
                let _ = logger.call_method1(py, "log", (level, message));
            }
        });
    }

    fn flush(&self) {}
}

static BRIDGE: Bridge = Bridge;

/// Install the bridge (once per process; later calls are no-ops).
pub fn install() {
    if log::set_logger(&BRIDGE).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}
