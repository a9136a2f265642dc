//! The stream-layer seam end to end, on real loopback sockets and both
//! backends: the toy layer of `netring_core::layer::testing` (a handshake
//! the server answers on its own, a byte transform, an end-of-stream
//! mark) under the echo handler, with raw and framed connections.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};

use common::*;
use netring_core::framing::Framing;
use netring_core::layer::testing::{encode, ToyFactory, END, HELLO, WELCOME};
use netring_core::layer::Layer;
use netring_core::{Backend, ConnOptions, Engine, EngineConfig};

fn toy_echo(backend: Backend, framing: Framing) -> (Engine, SocketAddr, Arc<Mutex<Log>>) {
    let (engine, log) = start_echo(backend, EngineConfig::default());
    let conn = ConnOptions {
        framing,
        layer: Some(Layer(Arc::new(ToyFactory::default()))),
        ..Default::default()
    };
    let addr = listen_local_with(&engine, conn);
    (engine, addr, log)
}

fn wire(plain: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode(plain, &mut out);
    out
}

fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    s.read_exact(&mut buf).unwrap();
    buf
}

#[test]
fn a_layered_echo_handshakes_transforms_both_ways_and_ends_with_its_mark() {
    for_each_backend(|backend| {
        let (engine, addr, log) = toy_echo(backend, Framing::Raw);
        let mut c = connect(addr);
        // The handshake one byte at a time, then data in the same write as
        // its last byte: the layer sees the wire cut anywhere.
        for b in &HELLO[..HELLO.len() - 1] {
            c.write_all(&[*b]).unwrap();
        }
        let mut last = vec![b'\n'];
        let payload: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
        last.extend(wire(&payload));
        c.write_all(&last).unwrap();
        assert_eq!(read_n(&mut c, WELCOME.len()), WELCOME);
        let echoed = read_n(&mut c, wire(&payload).len());
        assert_eq!(echoed, wire(&payload), "echoed through the layer both ways");
        // Our end mark and FIN: the server sees EOF, closes, and its layer
        // sends its own end mark before the FIN.
        c.write_all(&END).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, END);
        assert!(wait_for(5, || log.lock().unwrap().closed.len() == 1));
        let l = log.lock().unwrap();
        assert_eq!((l.opened, l.eofs), (1, 1));
        assert_eq!(l.closed[0].1, None, "a clean close");
        drop(l);
        engine.shutdown(std::time::Duration::from_secs(1));
    });
}

#[test]
fn framing_cuts_the_plaintext_and_a_bad_peer_never_reaches_the_protocol() {
    for_each_backend(|backend| {
        let framing = Framing::Delimited {
            delimiter: b"\n".to_vec(),
            max_line: 1024,
            strip: true,
        };
        let (engine, addr, log) = toy_echo(backend, framing);
        let mut c = connect(addr);
        let mut msg = HELLO.to_vec();
        msg.extend(wire(b"one\ntwo\nthr"));
        c.write_all(&msg).unwrap();
        c.write_all(&wire(b"ee\n")).unwrap();
        assert_eq!(read_n(&mut c, WELCOME.len()), WELCOME);
        // The echo handler writes each line's payload back (no delimiter).
        assert_eq!(
            read_n(&mut c, wire(b"onetwothree").len()),
            wire(b"onetwothree")
        );
        // A peer that does not speak the layer: closed, never opened.
        let mut bad = connect(addr);
        bad.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        bad.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        let _ = bad.read_to_end(&mut rest);
        assert!(rest.is_empty(), "nothing sent to a bad peer: {rest:?}");
        // A truncated stream (FIN without the end mark) is reported as such.
        c.shutdown(Shutdown::Write).unwrap();
        assert!(wait_for(5, || log.lock().unwrap().closed.len() == 1));
        let l = log.lock().unwrap();
        assert_eq!(l.opened, 1, "the bad peer was never opened");
        assert_eq!(
            l.closed[0].1,
            Some(std::io::ErrorKind::ConnectionAborted),
            "a layer error"
        );
        drop(l);
        engine.shutdown(std::time::Duration::from_secs(1));
    });
}
