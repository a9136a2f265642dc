//! Framing through the engine, on both backends: large packets reassembled
//! across small receive buffers, and oversize frames closing only their
//! connection.

mod common;

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use netring_core::framing::Framing;
use netring_core::EngineConfig;

fn lp(max_packet: usize) -> Framing {
    Framing::LengthPrefixed {
        header: 4,
        big_endian: true,
        includes_header: false,
        max_packet,
    }
}

#[test]
fn sixteen_mib_packet_through_1_kib_buffers_arrives_whole() {
    let _serial = serial();
    for_each_backend(|backend| {
        let config = EngineConfig {
            io_threads: 1,
            buffer_size: 1024,
            buffers_per_thread: 64,
            ..Default::default()
        };
        let (engine, addr, log) = framed_echo_engine(backend, config, lp(16 << 20));
        let payload: Vec<u8> = (0..16u32 << 20).map(|i| (i % 251) as u8).collect();
        let mut c = connect(addr);
        let mut reader = c.try_clone().unwrap();
        let expect = payload.clone();
        let t = std::thread::spawn(move || {
            let mut got = vec![0u8; expect.len()];
            reader.read_exact(&mut got).unwrap();
            got == expect
        });
        c.write_all(&(payload.len() as u32).to_be_bytes()).unwrap();
        c.write_all(&payload).unwrap();
        assert!(t.join().unwrap(), "reassembled packet corrupted");
        assert!(log.lock().unwrap().closed.is_empty());
        engine.shutdown(Duration::from_secs(1));
    });
}

#[test]
fn oversize_header_closes_only_that_connection() {
    let _serial = serial();
    for_each_backend(|backend| {
        let config = EngineConfig {
            io_threads: 1,
            ..Default::default()
        };
        let (engine, addr, log) = framed_echo_engine(backend, config, lp(1000));
        let mut good = connect(addr);
        let mut bad = connect(addr);
        bad.write_all(&u32::MAX.to_be_bytes()).unwrap();
        let mut rest = Vec::new();
        let _ = bad.read_to_end(&mut rest);
        assert!(rest.is_empty());
        assert!(wait_for(5, || log.lock().unwrap().closed.len() == 1));
        assert_eq!(
            log.lock().unwrap().closed[0].1,
            Some(std::io::ErrorKind::InvalidData),
            "closed for the wrong reason"
        );
        good.write_all(&[0, 0, 0, 2, b'o', b'k']).unwrap();
        let mut buf = [0u8; 2];
        good.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ok");
        engine.shutdown(Duration::from_secs(1));
    });
}

#[test]
fn lines_split_anywhere_are_delivered_whole() {
    let _serial = serial();
    for_each_backend(|backend| {
        let framing = Framing::Delimited {
            delimiter: b"\r\n".to_vec(),
            max_line: 64,
            strip: true,
        };
        let config = EngineConfig {
            io_threads: 1,
            ..Default::default()
        };
        let (engine, addr, _log) = framed_echo_engine(backend, config, framing);
        let mut c = connect(addr);
        c.set_nodelay(true).unwrap();
        let stream = b"one\r\ntwo\r\nthree\r\n";
        for b in stream {
            c.write_all(&[*b]).unwrap();
        }
        let mut buf = [0u8; 11];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"onetwothree");
        engine.shutdown(Duration::from_secs(1));
    });
}

/// Takes every packet of a read in one go (`Batch::packets_of`), records
/// the runs, and echoes each run with one `write_packets_inline`.
struct Batches {
    conns: std::collections::HashMap<netring_core::ConnId, netring_core::ConnRef>,
    framing: Framing,
    runs: Arc<Mutex<Vec<Vec<Vec<u8>>>>>,
    closed: Arc<Mutex<Vec<Option<std::io::ErrorKind>>>>,
}

impl netring_core::Handler for Batches {
    fn dispatch(&mut self, batch: &mut netring_core::Batch<'_>) {
        use netring_core::Event;
        while let Some(ev) = batch.next() {
            match ev {
                Event::Opened { conn, .. } => {
                    self.conns.insert(conn.id(), conn);
                }
                Event::Packet { conn, data } => {
                    let mut run = vec![data];
                    batch.packets_of(conn, &mut run);
                    let (_, error) = self.conns[&conn].write_packets_inline(&self.framing, &run);
                    assert!(error.is_none());
                    let owned = run.iter().map(|p| p.to_vec()).collect();
                    self.runs.lock().unwrap().push(owned);
                }
                Event::Closed { conn, error } => {
                    self.conns.remove(&conn);
                    self.closed.lock().unwrap().push(error.map(|e| match e {
                        netring_core::conn::ConnError::Frame(_) => std::io::ErrorKind::InvalidData,
                        _ => std::io::ErrorKind::Other,
                    }));
                }
                _ => {}
            }
        }
    }
}

#[test]
fn packets_of_cuts_a_whole_read_and_write_packets_frames_them_back() {
    let _serial = serial();
    for_each_backend(|backend| {
        let framing = lp(1000);
        let runs = Arc::new(Mutex::new(Vec::new()));
        let closed = Arc::new(Mutex::new(Vec::new()));
        let (r2, c2, f2) = (runs.clone(), closed.clone(), framing.clone());
        let engine = netring_core::Engine::start(
            EngineConfig {
                io_threads: 1,
                backend: netring_core::BackendChoice::Exactly(backend),
                ..Default::default()
            },
            move |_, io_loop| {
                let mut h = Batches {
                    conns: Default::default(),
                    framing: f2.clone(),
                    runs: r2.clone(),
                    closed: c2.clone(),
                };
                io_loop.run(&mut h);
            },
        )
        .expect("engine starts");
        let addr = listen_local(&engine, framing.clone());
        let frame = |p: &[u8]| {
            let mut v = (p.len() as u32).to_be_bytes().to_vec();
            v.extend_from_slice(p);
            v
        };
        let payloads: Vec<Vec<u8>> = (0..6u8).map(|i| vec![b'a' + i; i as usize * 3]).collect();
        let wire: Vec<u8> = payloads.iter().flat_map(|p| frame(p)).collect();
        // Three whole packets and half of the fourth in one write; the rest
        // in a second write once the first run has been delivered.
        let cut =
            frame(&payloads[0]).len() + frame(&payloads[1]).len() + frame(&payloads[2]).len() + 5;
        let mut c = connect(addr);
        c.write_all(&wire[..cut]).unwrap();
        assert!(wait_for(5, || runs.lock().unwrap().len() == 1));
        c.write_all(&wire[cut..]).unwrap();
        let mut echoed = vec![0u8; wire.len()];
        c.read_exact(&mut echoed).unwrap();
        assert_eq!(echoed, wire, "echo reframed differently");
        let got = runs.lock().unwrap().clone();
        assert_eq!(got[0], payloads[..3].to_vec(), "first read's run");
        assert_eq!(got.concat(), payloads, "every packet once, in order");
        // A bad header after good packets in one read: the good ones are
        // delivered, then only this connection closes, for the frame.
        let before = runs.lock().unwrap().len();
        let mut bad = frame(b"ok1");
        bad.extend(frame(b"ok2"));
        bad.extend(u32::MAX.to_be_bytes());
        c.write_all(&bad).unwrap();
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest);
        assert_eq!(rest, [frame(b"ok1"), frame(b"ok2")].concat());
        assert!(wait_for(5, || closed.lock().unwrap().len() == 1));
        assert_eq!(
            closed.lock().unwrap()[0],
            Some(std::io::ErrorKind::InvalidData)
        );
        let after: Vec<Vec<u8>> = runs.lock().unwrap()[before..].concat();
        assert_eq!(after, vec![b"ok1".to_vec(), b"ok2".to_vec()]);
        engine.shutdown(Duration::from_secs(1));
    });
}
