//! Engine and listener configuration, validated once at construction.
//!
//! Every limit has a documented default here; the Python layer exposes the
//! same names and relies on [`EngineConfig::validate`] for range checks, so a
//! wrong argument fails when the server is constructed, naming the argument.

use crate::error::ConfigError;

/// Default size of one receive buffer, in bytes.
pub const DEFAULT_BUFFER_SIZE_BYTES: usize = 16 * 1024;
/// Default number of receive buffers per IO thread (power of two; the
/// provided-buffer ring requires one).
pub const DEFAULT_BUFFERS_PER_THREAD: usize = 512;
/// Default write-queue high-water mark (asyncio's): `pause_writing()` above it.
pub const DEFAULT_WRITE_HIGH_WATER_BYTES: usize = 64 * 1024;
/// Default hard cap on one connection's queued writes: past it the peer is
/// not reading and the connection is aborted (the water marks warn first).
pub const DEFAULT_MAX_WRITE_BUFFER_BYTES: usize = 64 << 20;
/// Default listen backlog.
pub const DEFAULT_BACKLOG: i32 = 1024;
/// Upper bound on IO threads; more never helps and each owns a ring.
pub const MAX_IO_THREADS: usize = 256;

/// Which IO backend an engine runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Completion-based: io_uring.
    IoUring,
    /// Readiness-based fallback: epoll.
    Epoll,
}

impl Backend {
    /// The name used in stats, logs and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Backend::IoUring => "io_uring",
            Backend::Epoll => "epoll",
        }
    }
}

/// What the caller asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendChoice {
    /// Probe io_uring, fall back to epoll on any failure.
    Auto,
    /// Exactly this backend, or an error.
    Exactly(Backend),
}

impl std::str::FromStr for BackendChoice {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s {
            "auto" => Ok(BackendChoice::Auto),
            "io_uring" => Ok(BackendChoice::Exactly(Backend::IoUring)),
            "epoll" => Ok(BackendChoice::Exactly(Backend::Epoll)),
            other => Err(ConfigError::new(
                "backend",
                format!("must be 'auto', 'io_uring' or 'epoll', not {other:?}"),
            )),
        }
    }
}

/// Configuration of one engine (one pool of IO threads).
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Number of IO threads.
    pub io_threads: usize,
    /// Backend to run on.
    pub backend: BackendChoice,
    /// Size of one receive buffer, in bytes.
    pub buffer_size: usize,
    /// Receive buffers per IO thread.
    pub buffers_per_thread: usize,
    /// Cap on the bytes the engine buffers for connections beyond its fixed
    /// receive buffers (queued writes, partial packets, input held while
    /// paused); `None`: no cap. At the cap, connections holding such bytes
    /// stop reading until the total falls to 3/4 of it.
    pub max_buffer_memory: Option<usize>,
    /// Where large packets of a known size are reassembled (the bindings'
    /// `bytes`: one copy); `None`: a vector, then the user's copy.
    pub packet_alloc: Option<std::sync::Arc<dyn crate::framing::PacketAlloc>>,
    /// Sends of at least this many bytes go zero-copy where the backend
    /// can (io_uring `SEND_ZC`): the kernel reads the queued buffers in
    /// place, which stay held until its notification; a connection whose
    /// zero-copy send the kernel copied anyway (loopback) sends normally
    /// from then on. `None` (the default): never.
    pub zerocopy_threshold: Option<usize>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            io_threads: default_io_threads(),
            backend: BackendChoice::Auto,
            buffer_size: DEFAULT_BUFFER_SIZE_BYTES,
            buffers_per_thread: DEFAULT_BUFFERS_PER_THREAD,
            max_buffer_memory: None,
            packet_alloc: None,
            zerocopy_threshold: None,
        }
    }
}

/// The smallest `zerocopy_threshold`: below a page, pinning costs more
/// than the copy it saves.
pub const MIN_ZEROCOPY_THRESHOLD_BYTES: usize = 4096;

/// One IO thread per CPU available to this process.
pub fn default_io_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(MAX_IO_THREADS)
}

impl EngineConfig {
    /// Check every field; the error names the offending argument.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.io_threads == 0 || self.io_threads > MAX_IO_THREADS {
            return Err(ConfigError::new(
                "io_threads",
                format!(
                    "must be between 1 and {MAX_IO_THREADS}, not {}",
                    self.io_threads
                ),
            ));
        }
        if !(512..=(1 << 20)).contains(&self.buffer_size) {
            return Err(ConfigError::new(
                "buffer_size",
                format!(
                    "must be between 512 and 1048576 bytes, not {}",
                    self.buffer_size
                ),
            ));
        }
        if let Some(t) = self.zerocopy_threshold {
            if !(MIN_ZEROCOPY_THRESHOLD_BYTES..=(1 << 30)).contains(&t) {
                return Err(ConfigError::new(
                    "zerocopy_threshold",
                    format!(
                        "must be between {MIN_ZEROCOPY_THRESHOLD_BYTES} and 1073741824 bytes, not {t}"
                    ),
                ));
            }
        }
        let n = self.buffers_per_thread;
        if !(2..=32768).contains(&n) || !n.is_power_of_two() {
            return Err(ConfigError::new(
                "buffers_per_thread",
                format!("must be a power of two between 2 and 32768, not {n}"),
            ));
        }
        Ok(())
    }
}

/// Configuration of one listening socket.
#[derive(Clone, Debug)]
pub struct ListenConfig {
    /// Address to bind.
    pub addr: std::net::SocketAddr,
    /// Listen backlog.
    pub backlog: i32,
    /// Set SO_REUSEPORT before binding.
    pub reuse_port: bool,
    /// What every accepted connection starts with.
    pub conn: ConnOptions,
    /// Connection limits.
    pub limits: ListenLimits,
}

/// What a listener does with a connection over `max_connections`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overflow {
    /// Stop taking connections from the accept queue (the kernel backlog
    /// holds them, then refuses past it) until one closes.
    #[default]
    Hold,
    /// Accept it and close it at once (the client sees a closed connection
    /// instead of waiting).
    Close,
}

/// Connection limits of one listener. A connection over
/// `max_connections_per_ip` is always accepted and closed: holding it would
/// stall every other address queued behind it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListenLimits {
    /// Open connections from this listener at most.
    pub max_connections: Option<usize>,
    /// Open connections from one peer IP address at most.
    pub max_connections_per_ip: Option<usize>,
    /// What happens at `max_connections`.
    pub overflow: Overflow,
    /// Connections whose stream layer is not ready yet (TLS handshakes in
    /// progress) at most. Beyond it the listener stops accepting: new
    /// connections wait in the kernel's backlog until a handshake ends, so
    /// stalled handshakes cost a bounded amount of memory.
    pub max_unready: Option<usize>,
}

/// Per-connection settings a listener gives each connection it accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnOptions {
    /// How the stream is cut into packets.
    pub framing: crate::framing::Framing,
    /// Report the connection idle after this long with nothing received.
    pub idle_timeout: Option<std::time::Duration>,
    /// TCP keepalive: probe after `idle` of silence, every `interval`,
    /// give up after `count` unanswered probes (the kernel then resets the
    /// connection and `connection_lost` gets the error).
    pub keepalive: Option<Keepalive>,
    /// Abort the connection when its queued writes pass this many bytes
    /// (a peer that does not read).
    pub max_write_buffer: usize,
    /// Close the connection when a framed packet that has started does not
    /// finish within this long (slowloris).
    pub frame_timeout: Option<std::time::Duration>,
    /// A stream layer between the wire and framing (TLS, PROXY protocol):
    /// see `layer.rs`.
    pub layer: Option<crate::layer::Layer>,
}

impl Default for ConnOptions {
    fn default() -> Self {
        ConnOptions {
            framing: Default::default(),
            idle_timeout: None,
            keepalive: None,
            max_write_buffer: DEFAULT_MAX_WRITE_BUFFER_BYTES,
            frame_timeout: None,
            layer: None,
        }
    }
}

/// TCP keepalive settings (`SO_KEEPALIVE`, `TCP_KEEPIDLE`, `TCP_KEEPINTVL`,
/// `TCP_KEEPCNT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keepalive {
    /// Silence before the first probe.
    pub idle: std::time::Duration,
    /// Between probes.
    pub interval: std::time::Duration,
    /// Unanswered probes before the connection is dropped.
    pub count: u32,
}

impl Keepalive {
    /// Apply to a socket.
    pub(crate) fn apply(&self, sock: &socket2::SockRef<'_>) -> std::io::Result<()> {
        let ka = socket2::TcpKeepalive::new()
            .with_time(self.idle)
            .with_interval(self.interval)
            .with_retries(self.count);
        sock.set_tcp_keepalive(&ka)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_errors_name_the_argument() {
        EngineConfig::default().validate().unwrap();
        let bad = EngineConfig {
            io_threads: 0,
            ..Default::default()
        };
        assert_eq!(bad.validate().unwrap_err().argument, "io_threads");
        let bad = EngineConfig {
            buffers_per_thread: 100,
            ..Default::default()
        };
        assert_eq!(bad.validate().unwrap_err().argument, "buffers_per_thread");
        assert!("nope".parse::<BackendChoice>().is_err());
    }
}
