//! UDP endpoints end to end, on each backend: echo, truncation reported
//! (never cut), sends from other threads, pause, close flushing the queue.

mod common;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use netring_core::{
    Backend, BackendChoice, Batch, ConnId, EndpointRef, Engine, EngineConfig, Event, Handler,
    UdpConfig,
};

#[derive(Default)]
struct Log {
    opened: Vec<(u64, SocketAddr)>,
    truncated: Vec<(usize, Option<SocketAddr>)>,
    errors: Vec<std::io::ErrorKind>,
    closed: Vec<ConnId>,
    received: usize,
    refs: Vec<EndpointRef>,
}

/// Echoes every datagram to its sender.
struct UdpEcho {
    eps: HashMap<ConnId, EndpointRef>,
    log: Arc<Mutex<Log>>,
}

impl Handler for UdpEcho {
    fn dispatch(&mut self, batch: &mut Batch<'_>) {
        while let Some(ev) = batch.next() {
            match ev {
                Event::EndpointOpened {
                    endpoint,
                    token,
                    local,
                    ..
                } => {
                    self.log
                        .lock()
                        .unwrap()
                        .opened
                        .push((token, local.unwrap()));
                    self.log.lock().unwrap().refs.push(endpoint.clone());
                    self.eps.insert(endpoint.id(), endpoint);
                }
                Event::Datagram {
                    endpoint,
                    data,
                    addr,
                } => {
                    self.log.lock().unwrap().received += 1;
                    self.eps[&endpoint].send_to(data, addr);
                }
                Event::DatagramTruncated { addr, size, .. } => {
                    self.log.lock().unwrap().truncated.push((size, addr));
                }
                Event::DatagramError { error, .. } => {
                    self.log.lock().unwrap().errors.push(error.kind());
                }
                Event::EndpointClosed { endpoint, .. } => {
                    self.eps.remove(&endpoint);
                    self.log.lock().unwrap().closed.push(endpoint);
                }
                _ => {}
            }
        }
    }
}

fn udp_engine(backend: Backend, buffer_size: usize) -> (Engine, Arc<Mutex<Log>>) {
    let log = Arc::new(Mutex::new(Log::default()));
    let l2 = log.clone();
    let engine = Engine::start(
        EngineConfig {
            backend: BackendChoice::Exactly(backend),
            io_threads: 1,
            buffer_size,
            ..Default::default()
        },
        move |_, io_loop| {
            io_loop.run(&mut UdpEcho {
                eps: HashMap::new(),
                log: l2.clone(),
            })
        },
    )
    .expect("engine starts");
    (engine, log)
}

fn client() -> UdpSocket {
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c
}

#[test]
fn echoes_datagrams_intact_and_reports_truncation() {
    let _serial = serial();
    for_each_backend(|backend| {
        let fds_before = fd_count();
        let (engine, log) = udp_engine(backend, 2048);
        let addr = engine
            .udp_open(7, &UdpConfig::new("127.0.0.1:0".parse().unwrap()))
            .expect("udp_open");
        assert!(wait_for(5, || log.lock().unwrap().opened.len() == 1));
        assert_eq!(log.lock().unwrap().opened[0], (7, addr));
        let c = client();
        let mut buf = vec![0u8; 4096];
        let cap = netring_core::udp::datagram_capacity(2048);
        for i in 0..2000u32 {
            // Windows of 8 in flight, sizes up to exactly the capacity.
            let len = if i % 100 == 0 {
                cap
            } else {
                (i as usize * 37) % 1400
            };
            let msg: Vec<u8> = (0..len).map(|j| (i as usize + j) as u8).collect();
            c.send_to(&msg, addr).unwrap();
            let (n, from) = c
                .recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("datagram {i} ({len} bytes): {e}"));
            assert_eq!(from, addr);
            assert_eq!(&buf[..n], &msg[..], "datagram {i} corrupted");
        }
        // One byte over the capacity: reported with its size, not echoed.
        c.send_to(&vec![1u8; cap + 1], addr).unwrap();
        assert!(wait_for(5, || !log.lock().unwrap().truncated.is_empty()));
        let (size, from) = log.lock().unwrap().truncated[0];
        assert_eq!(size, cap + 1);
        assert_eq!(from, Some(c.local_addr().unwrap()));
        c.send_to(b"after", addr).unwrap();
        let (n, _) = c.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"after");
        // Counted when the kernel reports the send, maybe after the client
        // already has the datagram.
        assert!(wait_for(5, || engine.stats().datagrams_out == 2001));
        let s = engine.stats();
        assert_eq!(s.datagrams_truncated, 1);
        assert_eq!(s.datagrams_in, 2001);
        engine.shutdown(Duration::from_secs(1));
        assert_eq!(log.lock().unwrap().closed.len(), 1);
        drop((engine, c));
        assert_eq!(fd_count(), fds_before, "descriptors leaked");
    });
}

#[test]
fn sends_from_other_threads_arrive_in_order_and_close_flushes() {
    let _serial = serial();
    for_each_backend(|backend| {
        let (engine, log) = udp_engine(backend, 2048);
        let c = client();
        let mut cfg = UdpConfig::new("127.0.0.1:0".parse().unwrap());
        cfg.remote = Some(c.local_addr().unwrap());
        let addr = engine.udp_open(1, &cfg).expect("udp_open");
        assert!(wait_for(5, || log.lock().unwrap().refs.len() == 1));
        let ep = log.lock().unwrap().refs[0].clone();
        // Read while sending. The client's receive buffer holds only a few
        // hundred small datagrams and the kernel drops the rest, so the
        // sender stays at most 64 ahead of the reader (a loaded CI machine
        // can starve the reader for longer than any fixed pause).
        let received = Arc::new(AtomicU32::new(0));
        let progress = received.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 16];
            for i in 0..500u32 {
                let (n, from) = c
                    .recv_from(&mut buf)
                    .unwrap_or_else(|e| panic!("datagram {i}: {e}"));
                assert_eq!(from, addr);
                assert_eq!(&buf[..n], &i.to_be_bytes());
                progress.store(i + 1, Ordering::Release);
            }
        });
        for i in 0..500u32 {
            assert!(wait_for(5, || received.load(Ordering::Acquire) + 64 > i));
            assert_ne!(
                ep.send_to(&i.to_be_bytes(), None),
                netring_core::Written::Dropped
            );
        }
        ep.close(); // after the sends: they are flushed first
        reader.join().unwrap();
        assert!(wait_for(5, || log.lock().unwrap().closed.len() == 1));
        // The handle is stale now: a no-op, never another endpoint's socket.
        assert_eq!(ep.send_to(b"late", None), netring_core::Written::Queued);
        engine.shutdown(Duration::from_secs(1));
    });
}

#[test]
fn peer_errors_are_reported_and_the_endpoint_keeps_working() {
    let _serial = serial();
    for_each_backend(|backend| {
        let (engine, log) = udp_engine(backend, 2048);
        // A connected endpoint whose peer port has nobody: ECONNREFUSED
        // comes back through ICMP, on the send or the next recv.
        let gone = UdpSocket::bind("127.0.0.1:0").unwrap();
        let gone_addr = gone.local_addr().unwrap();
        drop(gone);
        let mut cfg = UdpConfig::new("127.0.0.1:0".parse().unwrap());
        cfg.remote = Some(gone_addr);
        engine.udp_open(2, &cfg).expect("udp_open");
        assert!(wait_for(5, || log.lock().unwrap().refs.len() == 1));
        let ep = log.lock().unwrap().refs[0].clone();
        for _ in 0..3 {
            ep.send_to(b"anyone?", None);
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(wait_for(5, || log
            .lock()
            .unwrap()
            .errors
            .contains(&std::io::ErrorKind::ConnectionRefused)));
        assert!(log.lock().unwrap().closed.is_empty(), "endpoint closed");
        engine.shutdown(Duration::from_secs(1));
        assert_eq!(log.lock().unwrap().closed.len(), 1);
    });
}
