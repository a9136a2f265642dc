//! Engine errors. The bindings turn each kind into one Python exception, in
//! one place (`netring-py/src/errors.rs`).

use std::fmt;

/// A configuration value out of range; names the argument.
#[derive(Debug, Clone)]
pub struct ConfigError {
    /// The argument's name as the user spelled it.
    pub argument: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(argument: &'static str, message: String) -> Self {
        ConfigError { argument, message }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.argument, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Everything that can fail when starting an engine or a listener.
#[derive(Debug)]
pub enum Error {
    /// A configuration value is out of range.
    Config(ConfigError),
    /// The requested backend cannot run here; the string says why
    /// (e.g. `io_uring_setup: EPERM`).
    BackendUnavailable(String),
    /// An OS error (bind, listen, thread spawn...).
    Io(std::io::Error),
    /// The engine has been shut down.
    Closed,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(e) => e.fmt(f),
            Error::BackendUnavailable(why) => write!(f, "backend unavailable: {why}"),
            Error::Io(e) => e.fmt(f),
            Error::Closed => f.write_str("engine is shut down"),
        }
    }
}

impl std::error::Error for Error {}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Config(e)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}
