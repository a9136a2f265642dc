//! Framing through the engine, on both backends: large packets reassembled
//! across small receive buffers, and oversize frames closing only their
//! connection.

mod common;

use std::io::{Read, Write};
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
