//! Shared helpers for the engine's integration tests: each test body runs
//! once per backend ([`for_each_backend`]), with an echo handler that records
//! what happened and an engine started on loopback port 0.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use netring_core::conn::ConnError;
use netring_core::driver::epoll::EpollDriver;
use netring_core::driver::probe_io_uring;
use netring_core::framing::Framing;
use netring_core::{
    Backend, BackendChoice, Batch, ConnId, ConnOptions, ConnRef, Engine, EngineConfig, Event,
    Handler, ListenConfig,
};

/// What happened to connections, for assertions.
#[derive(Default, Debug)]
pub struct Log {
    pub opened: usize,
    pub closed: Vec<(ConnId, Option<std::io::ErrorKind>)>,
    pub eofs: usize,
    pub refs: Vec<ConnRef>,
}

/// Echoes everything; closes on EOF.
pub struct Echo {
    pub conns: HashMap<ConnId, ConnRef>,
    pub log: Arc<Mutex<Log>>,
}

impl Handler for Echo {
    fn dispatch(&mut self, batch: &mut Batch<'_>) {
        while let Some(ev) = batch.next() {
            match ev {
                Event::Opened { conn, .. } => {
                    let mut log = self.log.lock().unwrap();
                    log.opened += 1;
                    log.refs.push(conn.clone());
                    self.conns.insert(conn.id(), conn);
                }
                Event::Data { conn, data } | Event::Packet { conn, data } => {
                    self.conns[&conn].write(data);
                }
                Event::Eof { conn } => {
                    self.log.lock().unwrap().eofs += 1;
                    self.conns[&conn].close();
                }
                Event::Closed { conn, error } => {
                    self.conns.remove(&conn);
                    self.log.lock().unwrap().closed.push((
                        conn,
                        error.map(|e| match e {
                            ConnError::Io(e) => e.kind(),
                            ConnError::Frame(_) => std::io::ErrorKind::InvalidData,
                            ConnError::Limit(_) => std::io::ErrorKind::Other,
                            ConnError::Layer(_) => std::io::ErrorKind::ConnectionAborted,
                        }),
                    ));
                }
                Event::PauseWriting { .. }
                | Event::ResumeWriting { .. }
                | Event::Timer { .. }
                | Event::IdleTimeout { .. }
                | Event::Connected { .. }
                | Event::ConnectFailed { .. } => {}
                _ => {}
            }
        }
    }
}

/// Why `backend` cannot run here, if it cannot.
fn unavailable(backend: Backend) -> Option<String> {
    match backend {
        Backend::IoUring => probe_io_uring().err(),
        Backend::Epoll => EpollDriver::new(2, 512).err(),
    }
}

/// Run `test` once on each backend that works here; a backend that does not
/// is skipped with its reason printed.
pub fn for_each_backend(mut test: impl FnMut(Backend)) {
    for backend in [Backend::IoUring, Backend::Epoll] {
        if let Some(why) = unavailable(backend) {
            eprintln!("skipping the {} backend: {why}", backend.name());
            continue;
        }
        eprintln!("--- on the {} backend", backend.name());
        test(backend);
    }
}

/// An echo engine on exactly `backend`, listening on 127.0.0.1:0.
pub fn echo_engine(
    backend: Backend,
    config: EngineConfig,
) -> (Engine, SocketAddr, Arc<Mutex<Log>>) {
    framed_echo_engine(backend, config, Framing::Raw)
}

/// As [`echo_engine`], with `framing`: each packet's payload is echoed
/// without its framing (length header or delimiter).
pub fn framed_echo_engine(
    backend: Backend,
    config: EngineConfig,
    framing: Framing,
) -> (Engine, SocketAddr, Arc<Mutex<Log>>) {
    let (engine, log) = start_echo(backend, config);
    let addr = listen_local(&engine, framing);
    (engine, addr, log)
}

/// An engine on exactly `backend` whose threads run the echo handler,
/// listening nowhere yet.
pub fn start_echo(backend: Backend, config: EngineConfig) -> (Engine, Arc<Mutex<Log>>) {
    let config = EngineConfig {
        backend: BackendChoice::Exactly(backend),
        ..config
    };
    let log = Arc::new(Mutex::new(Log::default()));
    let l2 = log.clone();
    let engine = Engine::start(config, move |_, io_loop| {
        let mut h = Echo {
            conns: HashMap::new(),
            log: l2.clone(),
        };
        io_loop.run(&mut h);
    })
    .expect("engine starts");
    assert_eq!(engine.backend(), backend);
    (engine, log)
}

/// Listen on 127.0.0.1:0 with `framing`; the bound address.
pub fn listen_local(engine: &Engine, framing: Framing) -> SocketAddr {
    listen_local_with(
        engine,
        ConnOptions {
            framing,
            ..Default::default()
        },
    )
}

/// Listen on 127.0.0.1:0 giving connections `conn`; the bound address.
pub fn listen_local_with(engine: &Engine, conn: ConnOptions) -> SocketAddr {
    let (_, addr) = engine
        .listen(&ListenConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            backlog: 1024,
            reuse_port: false,
            conn,
            limits: Default::default(),
        })
        .expect("listen");
    addr
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Open descriptors of this process.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Wait until `f` holds, at most `secs` seconds.
pub fn wait_for(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    f()
}

static SERIAL: Mutex<()> = Mutex::new(());

/// Tests that count descriptors run one at a time.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}
