//! A hosted engine (`Engine::start_hosted`): no IO thread; the test's own
//! thread drives it the way an asyncio loop does — wait for its fd to be
//! readable (or its next deadline), then `run_ready` — on both backends.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::BorrowedFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use netring_core::framing::Framing;
use netring_core::{BackendChoice, Engine, EngineConfig, Hosted};

/// One iteration of an owner's loop: sleep until the fd is readable or the
/// next deadline (at most 50 ms), then run what is ready.
fn turn(hosted: &mut Hosted, handler: &mut Echo) -> bool {
    let wait = hosted
        .next_deadline()
        .map_or(Duration::from_millis(50), |d| {
            d.saturating_duration_since(Instant::now())
                .min(Duration::from_millis(50))
        });
    // SAFETY: the fd is the hosted driver's, alive as long as `hosted`.
    let fd = unsafe { BorrowedFd::borrow_raw(hosted.fd()) };
    let mut fds = [rustix::event::PollFd::new(
        &fd,
        rustix::event::PollFlags::IN,
    )];
    let timeout = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: wait.as_nanos() as i64,
    };
    let _ = rustix::event::poll(&mut fds, Some(&timeout));
    hosted.run_ready(handler)
}

#[test]
fn a_hosted_engine_echoes_when_driven_by_its_owner_and_shuts_down() {
    for_each_backend(|backend| {
        let config = EngineConfig {
            io_threads: 1,
            backend: BackendChoice::Exactly(backend),
            ..Default::default()
        };
        let (engine, mut hosted) = Engine::start_hosted(config).expect("hosted engine");
        assert_eq!(engine.backend(), backend);
        let log = Arc::new(Mutex::new(Log::default()));
        let mut echo = Echo {
            conns: HashMap::new(),
            log: log.clone(),
        };
        let addr = listen_local(&engine, Framing::Raw);
        // The client runs on another thread; this one is the engine's.
        let client = std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            for i in 0..100u32 {
                let msg = format!("message {i}").into_bytes();
                s.write_all(&msg).unwrap();
                let mut got = vec![0; msg.len()];
                s.read_exact(&mut got).unwrap();
                assert_eq!(got, msg);
            }
            s.shutdown(std::net::Shutdown::Write).unwrap();
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).unwrap();
            assert!(rest.is_empty());
        });
        let end = Instant::now() + Duration::from_secs(20);
        while !client.is_finished() && Instant::now() < end {
            assert!(turn(&mut hosted, &mut echo));
        }
        client.join().expect("client");
        assert_eq!(log.lock().unwrap().opened, 1);
        // Shutdown: the owner drives it to the end.
        engine.shutdown(Duration::from_secs(1));
        assert!(engine.is_closed());
        let end = Instant::now() + Duration::from_secs(10);
        let mut running = true;
        while running && Instant::now() < end {
            running = turn(&mut hosted, &mut echo);
        }
        assert!(!running, "the hosted turns end after shutdown");
        assert_eq!(log.lock().unwrap().closed.len(), 1);
    });
}

#[test]
fn a_hosted_engine_has_exactly_one_thread() {
    let config = EngineConfig {
        io_threads: 2,
        ..Default::default()
    };
    let err = Engine::start_hosted(config).err().expect("refused");
    assert!(err.to_string().contains("io_threads"), "{err}");
}
