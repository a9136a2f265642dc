//! netring's engine: IO threads over io_uring (epoll fallback), connections
//! with generation-tagged ids, pooled receive buffers and ordered write
//! queues. No Python here: the bindings crate drives it through
//! [`Engine`] and [`Handler`], and `cargo test` covers it alone.
//!
//! Map: `engine.rs` (threads, listeners, [`ConnRef`]) → `io_thread.rs` (the
//! loop) → `core.rs` (per-thread state machine) → `driver/` (kernel side),
//! with `event.rs` (what the user sees), `conn/` (one connection, its id and
//! write queue), `mailbox.rs` (cross-thread commands), `config.rs`, `stats.rs`.

pub mod config;
pub mod conn;
mod core;
pub mod driver;
pub mod engine;
pub mod error;
pub mod event;
pub mod framing;
mod io_thread;
pub mod limits;
pub mod mailbox;
mod memory;
pub mod stats;
mod timer;
pub mod udp;

pub use crate::core::{ThreadCore, Written};
pub use config::{Backend, BackendChoice, ConnOptions, EngineConfig, Keepalive, ListenConfig};
pub use conn::ConnId;
pub use engine::{ConnRef, EndpointRef, Engine};
pub use error::{ConfigError, Error};
pub use event::{Batch, Event, Handler};
pub use io_thread::IoLoop;
pub use stats::StatsSnapshot;
pub use udp::UdpConfig;
