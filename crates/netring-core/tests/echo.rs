//! End-to-end engine behaviour without Python: echo, ENOBUFS refill, large
//! writes with short sends, stale handles, shutdown with operations in flight.
//! Every test runs once per backend (see `common::for_each_backend`).

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::*;
use netring_core::EngineConfig;

fn config(threads: usize) -> EngineConfig {
    EngineConfig {
        io_threads: threads,
        ..Default::default()
    }
}

#[test]
fn echoes_many_connections_and_shuts_down_clean() {
    let _serial = serial();
    for_each_backend(|backend| {
        let fds_before = fd_count();
        let (engine, addr, log) = echo_engine(backend, config(2));
        let mut clients: Vec<_> = (0..50).map(|_| connect(addr)).collect();
        for round in 0..20u8 {
            for (i, c) in clients.iter_mut().enumerate() {
                c.write_all(&[round, i as u8, 1, 2, 3]).unwrap();
            }
            for (i, c) in clients.iter_mut().enumerate() {
                let mut buf = [0u8; 5];
                c.read_exact(&mut buf).unwrap();
                assert_eq!(buf, [round, i as u8, 1, 2, 3]);
            }
        }
        let s = engine.stats();
        assert_eq!(s.accepted, 50);
        assert_eq!(s.bytes_in, 50 * 20 * 5);
        drop(clients);
        assert!(wait_for(5, || log.lock().unwrap().closed.len() == 50));
        assert_eq!(log.lock().unwrap().eofs, 50);
        engine.shutdown(Duration::from_secs(1));
        drop(engine);
        assert_eq!(fd_count(), fds_before, "descriptors leaked");
    });
}

#[test]
fn buffer_pool_exhaustion_rearms_instead_of_failing() {
    let _serial = serial();
    for_each_backend(|backend| {
        // Two 512-byte buffers: every burst runs the pool dry (ENOBUFS).
        let cfg = EngineConfig {
            io_threads: 1,
            buffers_per_thread: 2,
            buffer_size: 512,
            ..Default::default()
        };
        let (engine, addr, log) = echo_engine(backend, cfg);
        let payload: Vec<u8> = (0..2_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut c = connect(addr);
        let mut reader = c.try_clone().unwrap();
        let expect = payload.clone();
        let t = std::thread::spawn(move || {
            let mut got = vec![0u8; expect.len()];
            reader.read_exact(&mut got).unwrap();
            assert!(got == expect, "echo corrupted");
        });
        c.write_all(&payload).unwrap();
        t.join().unwrap();
        assert!(
            log.lock().unwrap().closed.is_empty(),
            "connection failed on ENOBUFS"
        );
        engine.shutdown(Duration::from_secs(1));
    });
}

#[test]
fn large_write_arrives_whole_through_short_sends() {
    let _serial = serial();
    for_each_backend(|backend| {
        let (engine, addr, _log) = echo_engine(backend, config(1));
        let payload: Vec<u8> = (0..32 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
        let mut c = connect(addr);
        let mut reader = c.try_clone().unwrap();
        let expect = payload.clone();
        let t = std::thread::spawn(move || {
            let mut got = vec![0u8; expect.len()];
            reader.read_exact(&mut got).unwrap();
            got == expect
        });
        c.write_all(&payload).unwrap();
        assert!(t.join().unwrap(), "large echo corrupted");
        assert!(engine.stats().bytes_out >= payload.len() as u64);
        engine.shutdown(Duration::from_secs(1));
    });
}

#[test]
fn stale_handle_never_touches_a_reused_slot() {
    let _serial = serial();
    for_each_backend(|backend| {
        let (engine, addr, log) = echo_engine(backend, config(1));
        let mut a = connect(addr);
        a.write_all(b"x").unwrap();
        let mut one = [0u8; 1];
        a.read_exact(&mut one).unwrap();
        let stale = log.lock().unwrap().refs[0].clone();
        drop(a);
        assert!(wait_for(5, || log.lock().unwrap().closed.len() == 1));
        let mut b = connect(addr); // reuses slot 0 with a new generation
        assert!(wait_for(5, || log.lock().unwrap().opened == 2));
        let fresh = log.lock().unwrap().refs[1].id();
        assert_eq!(fresh.index, stale.id().index);
        assert_ne!(fresh.generation, stale.id().generation);
        stale.write(b"WRONG");
        stale.abort();
        b.write_all(b"ok").unwrap();
        let mut buf = [0u8; 2];
        b.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ok");
        assert_eq!(
            log.lock().unwrap().closed.len(),
            1,
            "stale abort closed the new connection"
        );
        engine.shutdown(Duration::from_secs(1));
    });
}

#[test]
fn shutdown_with_operations_in_flight_finishes_by_its_deadline() {
    let _serial = serial();
    for_each_backend(|backend| {
        let fds_before = fd_count();
        let (engine, addr, log) = echo_engine(backend, config(2));
        // A client that never reads: the echo's sends stall in flight.
        let mut c = connect(addr);
        let big = vec![1u8; 8 * 1024 * 1024];
        let writer = std::thread::spawn(move || {
            let _ = c.write_all(&big);
            c
        });
        assert!(wait_for(5, || engine.stats().bytes_in > 1024 * 1024));
        let t0 = std::time::Instant::now();
        engine.shutdown(Duration::from_millis(200));
        let took = t0.elapsed();
        assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
        assert_eq!(log.lock().unwrap().closed.len(), 1);
        drop(writer.join());
        drop(engine);
        assert_eq!(fd_count(), fds_before, "descriptors leaked");
    });
}

/// Writes from another thread, then its own: the IO thread's write must not
/// overtake the other thread's, still in the mailbox (issue: workers).
struct CrossThreadWriter;

impl netring_core::Handler for CrossThreadWriter {
    fn dispatch(&mut self, batch: &mut netring_core::Batch<'_>) {
        while let Some(ev) = batch.next() {
            if let netring_core::Event::Opened { conn, .. } = ev {
                for i in 0..100u8 {
                    let remote = conn.clone();
                    std::thread::spawn(move || assert!(remote.write(&[b'a', i])))
                        .join()
                        .unwrap();
                    assert!(conn.write(&[b'b', i]));
                }
                let remote = conn.clone();
                std::thread::spawn(move || remote.write(b"!"))
                    .join()
                    .unwrap();
                conn.close(); // after every write, including the remote one
            }
        }
    }
}

#[test]
fn owner_writes_queue_behind_writes_still_in_the_mailbox() {
    let _serial = serial();
    for_each_backend(|backend| {
        let engine = netring_core::Engine::start(
            EngineConfig {
                backend: netring_core::BackendChoice::Exactly(backend),
                ..config(1)
            },
            |_, io_loop| io_loop.run(&mut CrossThreadWriter),
        )
        .expect("engine starts");
        let (_, addr) = engine
            .listen(&netring_core::ListenConfig {
                addr: "127.0.0.1:0".parse().unwrap(),
                backlog: 16,
                reuse_port: false,
                conn: Default::default(),
                limits: Default::default(),
            })
            .expect("listen");
        let mut c = connect(addr);
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        let mut expect = Vec::new();
        for i in 0..100u8 {
            expect.extend_from_slice(&[b'a', i, b'b', i]);
        }
        expect.push(b'!');
        assert_eq!(got, expect);
        engine.shutdown(Duration::from_secs(1));
    });
}

/// Panics on the first connection it is given.
struct Panicky;

impl netring_core::Handler for Panicky {
    fn dispatch(&mut self, batch: &mut netring_core::Batch<'_>) {
        if let Some(netring_core::Event::Opened { .. }) = batch.next() {
            panic!("boom");
        }
    }
}

#[test]
fn an_io_thread_that_panics_is_reported_and_the_engine_shuts_down() {
    let _serial = serial();
    for_each_backend(|backend| {
        let log = std::sync::Arc::new(std::sync::Mutex::new(Log::default()));
        let config = EngineConfig {
            io_threads: 2,
            backend: netring_core::BackendChoice::Exactly(backend),
            ..Default::default()
        };
        let engine = netring_core::Engine::start(config, move |index, io_loop| {
            if index == 1 {
                io_loop.run(&mut Panicky);
            } else {
                let mut h = Echo {
                    conns: Default::default(),
                    log: log.clone(),
                };
                io_loop.run(&mut h);
            }
        })
        .expect("engine starts");
        let addr = listen_local(&engine, netring_core::framing::Framing::Raw);
        // Connections go round robin: the second lands on thread 1.
        let _clients: Vec<_> = (0..4).map(|_| connect(addr)).collect();
        assert!(wait_for(5, || engine.failure().is_some()));
        let why = engine.failure().unwrap();
        assert!(why.starts_with("IO thread 1 panicked: boom"), "{why}");
        // The other thread shut down by itself; shutdown joins promptly.
        let t0 = std::time::Instant::now();
        engine.shutdown(Duration::from_secs(5));
        assert!(t0.elapsed() < Duration::from_secs(3));
        assert!(connect_fails(addr), "nothing listens any more");
    });
}

fn connect_fails(addr: std::net::SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err()
}
