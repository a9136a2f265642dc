//! What an engine's IO threads and handles share: the mailboxes, counters,
//! the buffer-memory count and the id sources. Below the per-thread core,
//! so that the core can reach other threads' mailboxes without knowing the
//! engine that owns them.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::config::Backend;
use crate::mailbox::{Cmd, Mailbox};
use crate::memory::Memory;
use crate::stats::{Stats, ThreadTimes};

/// State shared by an engine's threads and its handles.
pub struct Shared {
    pub(crate) id: u64,
    pub(crate) backend: Backend,
    pub(crate) fallback_reason: Option<String>,
    pub(crate) mailboxes: Vec<Mailbox>,
    pub(crate) stats: Stats,
    /// Each IO thread's turn and callback times (its own, by index).
    pub(crate) times: Vec<ThreadTimes>,
    pub(crate) round_robin: AtomicUsize,
    pub(crate) next_listener: AtomicUsize,
    /// Timer ids and connect tokens.
    pub(crate) next_token: AtomicU64,
    /// Bytes buffered for connections (see `EngineConfig::max_buffer_memory`).
    pub(crate) memory: Memory,
    /// Why the engine stopped on its own (an IO thread died).
    pub(crate) failure: Mutex<Option<String>>,
    /// Where large packets of a known size are reassembled (see
    /// `EngineConfig::packet_alloc`).
    pub(crate) packet_alloc: Option<std::sync::Arc<dyn crate::framing::PacketAlloc>>,
    /// Sends of at least this many bytes go zero-copy where the backend
    /// can (see `EngineConfig::zerocopy_threshold`).
    pub(crate) zerocopy_threshold: Option<usize>,
    /// Reads cold file windows into the page cache for `sendfile`.
    pub(crate) prefetch: crate::prefetch::Prefetcher,
}

static NEXT_ENGINE_ID: AtomicU64 = AtomicU64::new(1);

impl Shared {
    /// The shared state of a new engine with one mailbox per IO thread.
    pub(crate) fn new(
        backend: Backend,
        fallback_reason: Option<String>,
        io_threads: usize,
        max_buffer_memory: Option<usize>,
    ) -> std::io::Result<Self> {
        Ok(Shared {
            id: NEXT_ENGINE_ID.fetch_add(1, Ordering::Relaxed),
            backend,
            fallback_reason,
            mailboxes: (0..io_threads)
                .map(|_| Mailbox::new())
                .collect::<Result<Vec<_>, _>>()?,
            stats: Stats::default(),
            times: (0..io_threads).map(|_| ThreadTimes::default()).collect(),
            round_robin: AtomicUsize::new(0),
            next_listener: AtomicUsize::new(0),
            next_token: AtomicU64::new(1),
            memory: Memory::new(max_buffer_memory),
            failure: Mutex::new(None),
            prefetch: Default::default(),
            packet_alloc: None,
            zerocopy_threshold: None,
        })
    }

    /// IO thread `thread` died: record why (the first failure wins), drop
    /// what is sent to it from now on, and shut the other threads down.
    pub(crate) fn fail(&self, thread: u16, why: String) {
        crate::sync::lock(&self.failure).get_or_insert(why);
        self.mailboxes[usize::from(thread)].close();
        let now = std::time::Instant::now();
        for mb in &self.mailboxes {
            mb.push(Cmd::Shutdown { deadline: now });
        }
    }

    pub(crate) fn next_target(&self) -> usize {
        self.round_robin.fetch_add(1, Ordering::Relaxed)
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}
