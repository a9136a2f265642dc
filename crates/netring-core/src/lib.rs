//! netring's engine: IO threads over io_uring (epoll fallback), connections
//! with generation-tagged ids, pooled receive buffers and ordered write
//! queues. No Python here: the bindings crate drives it through
//! [`Engine`] and [`Handler`], and `cargo test` covers it alone.
//!
//! The modules form layers; each uses only those below it (no cycles:
//! `tests/layers.rs` checks), from the bottom:
//!
//! 1. `error`, `config`, `stats`, `sync`, `memory`, `limits`, `housekeeping`,
//!    `prefetch`, `framing/`, `layer` — plain data and pure code (framers,
//!    the stream-layer seam's traits, the file prefetch thread);
//! 2. `driver/` — the kernel side (io_uring, epoll) behind one trait;
//! 3. `flow` — write flow control;
//! 4. `conn/`, then `udp` — one connection's or endpoint's state;
//! 5. `timer`, `mailbox`, `shared` — per-thread deadlines, cross-thread
//!    commands, what an engine's threads share;
//! 6. `core/` — one IO thread's state machine (`ThreadCore`);
//! 7. `handle` — `ConnRef` / `EndpointRef`;
//! 8. `event` — what the user sees (`Event`, `Batch`, `Handler`);
//! 9. `io_thread` — the loop, turn by turn;
//! 10. `engine` — starting threads, listeners, connects.

pub mod config;
pub mod conn;
mod core;
pub mod driver;
pub mod engine;
pub mod error;
pub mod event;
pub mod flow;
pub mod framing;
pub mod handle;
mod housekeeping;
mod io_thread;
pub mod layer;
pub mod limits;
#[cfg(test)]
mod machine_tests;
pub mod mailbox;
mod memory;
mod prefetch;
mod shared;
pub mod stats;
pub mod sync;
mod timer;
pub mod udp;

pub use crate::core::ThreadCore;
pub use config::{Backend, BackendChoice, ConnOptions, EngineConfig, Keepalive, ListenConfig};
pub use conn::ConnId;
pub use engine::Engine;
pub use error::{ConfigError, Error};
pub use event::{Batch, Event, Handler};
pub use flow::Written;
pub use handle::{ConnRef, EndpointRef};
pub use io_thread::{Clock, Hosted, IoLoop, Turns};
pub use stats::{HistogramSnapshot, StatsSnapshot, TimesSnapshot, HISTOGRAM_BUCKETS};
pub use udp::UdpConfig;
