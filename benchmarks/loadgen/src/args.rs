//! Command-line options of `netring-loadgen`, parsed by hand (`--key value`).
//!
//! `main` calls [`Opts::parse`] once; every option is validated here so the
//! rest of the program can trust `size`, `conns` and `depth` to be usable.
//! `--tls`, `--churn` and `--proxy-v2` are flags (no value); every other option takes one.
//! `--timeout-ms` defaults by mode: 200 ms for udp, 2000 ms with `--reconnect-every`.

use std::time::Duration;

pub const USAGE: &str = "\
usage: netring-loadgen --port P [options]
  --host H          server address (default 127.0.0.1)
  --port P          server port (required)
  --conns N         connections, or connected UDP sockets (default 50)
  --size S          message size in bytes (default 64); in lp mode the payload size;
                    in udp mode the datagram size (at least 16)
  --depth D         messages outstanding per connection (default 1)
  --duration SECS   measured window (default 5)
  --warmup SECS     unmeasured warm-up before the window (default 1)
  --mode M          raw | lp | line | udp | ws (default raw); ws: each connection
                    upgrades (GET / with Upgrade: websocket), then sends binary
                    frames of --size bytes (at most 65535) and expects them echoed
  --timeout-ms MS   udp: a datagram unanswered this long is lost and replaced (default 200);
                    --reconnect-every: a connect not established, or an echo not complete,
                    this long is a failure (default 2000)
  --server-pid PID  sample this process's utime+stime from /proc at the window edges
  --extra-pid PID   sample another process too (e.g. a proxy's upstream), as extra_cpu_us
  --tls             speak TLS 1.3 (TLS13_AES_128_GCM_SHA256, X25519 only; raw mode):
                    every connection completes its handshake before the warm-up starts
  --tls-ca FILE     PEM CA certificate(s) the server's certificate must chain to (with --tls)
  --tls-server-name NAME  name the certificate must be valid for, sent as SNI
                    (default: --host)
  --proxy-v2        open every TCP connection with a PROXY protocol v2 header (TCP over
                    IPv4, a made-up client 203.0.113.x per connection), as HAProxy's
                    send-proxy-v2 does: for servers behind a balancer
  --churn           with --tls: every message on a new connection (connect, full
                    handshake without resumption, one echo of --size bytes, close_notify,
                    close); --conns of them in flight, --depth 1; msgs = handshakes
  --reconnect-every K  plain TCP (raw, lp, line): each of --conns slots connects
                    (non-blocking), has K messages echoed at --depth, closes, and
                    connects again, every connection with payloads of its own. Failures
                    are counted, not fatal (exit 0 if any message completed): connects
                    and connect_failures (refused, reset, or not established within
                    --timeout-ms), lost (messages in flight when the server closed or
                    reset the connection; those connections: conns_broken), closed_idle
                    (closed with nothing in flight), corrupted (a wrong echo: that
                    connection is dropped), reply_timeouts (an echo not complete within
                    --timeout-ms: dropped, its messages lost); counts cover the whole
                    run, warm-up included; timeline: [msgs, connects, failures] per
                    100 ms of the window; connect_p50_us/connect_p99_us/connect_max_us
";

/// How a message is framed on the wire; the server echoes it unchanged.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// S payload bytes, no framing: the server returns what it got.
    Raw,
    /// A 4-byte big-endian length, then S payload bytes.
    Lp,
    /// S-2 printable bytes, then `\r\n`.
    Line,
    /// UDP datagrams of S bytes: an 8-byte sequence number, then payload.
    Udp,
    /// WebSocket (RFC 6455) after an HTTP upgrade of each connection: one
    /// masked binary frame of S payload bytes; the echo is the unmasked
    /// frame a server sends (its header differs from the one sent).
    Ws,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Raw => "raw",
            Mode::Lp => "lp",
            Mode::Line => "line",
            Mode::Udp => "udp",
            Mode::Ws => "ws",
        }
    }

    /// Bytes the echo of one message of payload size `size` takes on the
    /// wire (the message itself, except in ws mode: the server's frame).
    pub fn wire_len(self, size: usize) -> usize {
        match self {
            Mode::Lp => size + 4,
            Mode::Ws => ws_header_len(size) + size,
            Mode::Raw | Mode::Line | Mode::Udp => size,
        }
    }
}

/// A WebSocket frame header's length for `size` payload bytes, without a mask.
pub fn ws_header_len(size: usize) -> usize {
    if size < 126 {
        2
    } else {
        4
    }
}

#[derive(Debug)]
pub struct Opts {
    pub host: String,
    pub port: u16,
    pub conns: usize,
    pub size: usize,
    pub depth: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub mode: Mode,
    pub server_pid: Option<u32>,
    pub extra_pid: Option<u32>,
    /// udp: when a datagram is lost; --reconnect-every: when a connect or an echo failed.
    pub timeout: Duration,
    pub tls: bool,
    pub proxy_v2: bool,
    pub tls_ca: Option<String>,
    pub tls_server_name: Option<String>,
    pub churn: bool,
    /// Messages per connection before it is closed and replaced (`--reconnect-every`).
    pub reconnect_every: Option<u64>,
}

const MAX_SIZE_BYTES: usize = 16 << 20;
/// The largest UDP payload over IPv4.
const MAX_UDP_BYTES: usize = 65_507;

impl Opts {
    pub fn parse(mut args: impl Iterator<Item = String>) -> Result<Opts, String> {
        let mut o = Opts {
            host: "127.0.0.1".into(),
            port: 0,
            conns: 50,
            size: 64,
            depth: 1,
            duration: Duration::from_secs(5),
            warmup: Duration::from_secs(1),
            mode: Mode::Raw,
            server_pid: None,
            extra_pid: None,
            timeout: Duration::ZERO, // resolved by mode below
            tls: false,
            proxy_v2: false,
            tls_ca: None,
            tls_server_name: None,
            churn: false,
            reconnect_every: None,
        };
        let mut timeout = None;
        while let Some(key) = args.next() {
            match key.as_str() {
                "-h" | "--help" => return Err(String::new()),
                "--tls" => {
                    o.tls = true;
                    continue;
                }
                "--churn" => {
                    o.churn = true;
                    continue;
                }
                "--proxy-v2" => {
                    o.proxy_v2 = true;
                    continue;
                }
                _ => {}
            }
            let val = args.next().ok_or_else(|| format!("{key} needs a value"))?;
            match key.as_str() {
                "--host" => o.host = val,
                "--port" => o.port = num(&key, &val)?,
                "--conns" => o.conns = num(&key, &val)?,
                "--size" => o.size = num(&key, &val)?,
                "--depth" => o.depth = num(&key, &val)?,
                "--duration" => o.duration = secs(&key, &val)?,
                "--warmup" => o.warmup = secs(&key, &val)?,
                "--server-pid" => o.server_pid = Some(num(&key, &val)?),
                "--extra-pid" => o.extra_pid = Some(num(&key, &val)?),
                "--tls-ca" => o.tls_ca = Some(val),
                "--tls-server-name" => o.tls_server_name = Some(val),
                "--timeout-ms" => timeout = Some(Duration::from_millis(num(&key, &val)?)),
                "--reconnect-every" => o.reconnect_every = Some(num(&key, &val)?),
                "--mode" => {
                    o.mode = match val.as_str() {
                        "raw" => Mode::Raw,
                        "lp" => Mode::Lp,
                        "line" => Mode::Line,
                        "udp" => Mode::Udp,
                        "ws" => Mode::Ws,
                        _ => {
                            return Err(format!(
                                "--mode must be raw, lp, line, udp or ws, not {val:?}"
                            ))
                        }
                    }
                }
                _ => return Err(format!("unknown option {key}")),
            }
        }
        let (min_size, max_size) = match o.mode {
            Mode::Line => (3, MAX_SIZE_BYTES),
            Mode::Udp => (16, MAX_UDP_BYTES),
            Mode::Raw | Mode::Lp => (1, MAX_SIZE_BYTES),
            Mode::Ws => (1, 65535),
        };
        if o.port == 0 {
            return Err("--port is required".into());
        }
        if o.conns == 0 || o.depth == 0 || o.duration.is_zero() {
            return Err("--conns, --depth and --duration must be positive".into());
        }
        if !(min_size..=max_size).contains(&o.size) {
            return Err(format!("--size must be in {min_size}..={max_size}"));
        }
        let default_ms = if o.reconnect_every.is_some() {
            2000
        } else {
            200
        };
        o.timeout = timeout.unwrap_or(Duration::from_millis(default_ms));
        if o.timeout.is_zero() {
            return Err("--timeout-ms must be positive".into());
        }
        if o.reconnect_every == Some(0) {
            return Err("--reconnect-every must be positive".into());
        }
        if o.reconnect_every.is_some()
            && (o.tls || o.proxy_v2 || !matches!(o.mode, Mode::Raw | Mode::Lp | Mode::Line))
        {
            return Err(
                "--reconnect-every needs --mode raw, lp or line, without --tls \
                        or --proxy-v2"
                    .into(),
            );
        }
        if o.tls && o.mode != Mode::Raw {
            return Err("--tls needs --mode raw".into());
        }
        if o.proxy_v2 && (o.mode == Mode::Udp || o.churn) {
            return Err("--proxy-v2 needs a TCP mode without --churn".into());
        }
        if o.tls && o.tls_ca.is_none() {
            return Err("--tls needs --tls-ca FILE".into());
        }
        if !o.tls && (o.tls_ca.is_some() || o.tls_server_name.is_some()) {
            return Err("--tls-ca and --tls-server-name need --tls".into());
        }
        if o.churn && (!o.tls || o.depth != 1) {
            return Err("--churn needs --tls and --depth 1".into());
        }
        Ok(o)
    }
}

fn num<T: std::str::FromStr>(key: &str, val: &str) -> Result<T, String> {
    val.parse()
        .map_err(|_| format!("{key}: not a valid number: {val:?}"))
}

fn secs(key: &str, val: &str) -> Result<Duration, String> {
    let s: f64 = num(key, val)?;
    Duration::try_from_secs_f64(s).map_err(|_| format!("{key}: not a valid duration: {val:?}"))
}
