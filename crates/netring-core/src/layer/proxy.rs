//! The PROXY protocol (v1 text, v2 binary) on accepted connections: a load
//! balancer in front (HAProxy's `send-proxy` / `send-proxy-v2`) tells the
//! server who the client is. The header is parsed before anything else
//! (before TLS, before framing), so `connection_made` already sees the
//! client's address as `peername`; the proxy's own stays in the layer's
//! info.
//!
//! Only connections from trusted networks may send a header: one from
//! anywhere else is closed before it opens (it could claim any address). A
//! malformed header, one over its size bound, or one that does not arrive
//! within the time limit closes the connection the same way, counted and
//! logged with the reason. A `LOCAL` (v2) or `UNKNOWN` (v1) header — the
//! proxy's own health checks — keeps the connection's real addresses.
//!
//! After the header the layer passes bytes through, or hands them to an
//! inner layer (TLS behind the proxy).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use super::{LayerError, LayerFactory, LayerInfo, LayerOut, StreamLayer};

const NAME: &str = "proxy";

/// The v2 header's signature.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// A v1 header's longest form (the spec's 107 bytes, CRLF included).
const V1_MAX: usize = 107;

/// The largest v2 header accepted (16 fixed bytes and the address block
/// with its TLVs); HAProxy's own headers are far smaller.
pub const V2_MAX: usize = 16 + 4096;

/// How long a client may take to send its header, by default.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Which header versions a listener accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyVersion {
    /// The text form only.
    V1,
    /// The binary form only.
    V2,
    /// Either (told apart by the first byte).
    Any,
}

/// A network: an address and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Network {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Network {
    /// Whether `ip` is in this network (an IPv4-mapped IPv6 address counts
    /// as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let bits = u32::from(self.prefix.min(32));
                let mask = if bits == 0 {
                    0
                } else {
                    u32::MAX << (32 - bits)
                };
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let bits = u32::from(self.prefix.min(128));
                let mask = if bits == 0 {
                    0
                } else {
                    u128::MAX << (128 - bits)
                };
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// A listener's PROXY protocol settings (the layer factory).
pub struct ProxyProtocol {
    version: ProxyVersion,
    trusted: Vec<Network>,
    timeout: Option<Duration>,
    /// A layer behind the header (TLS), made for each connection.
    inner: Option<super::Layer>,
}

impl ProxyProtocol {
    /// Accept `version` headers from peers in `trusted`, within `timeout`
    /// (`None`: no limit beyond the inner layer's).
    pub fn new(version: ProxyVersion, trusted: Vec<Network>, timeout: Option<Duration>) -> Self {
        ProxyProtocol {
            version,
            trusted,
            timeout,
            inner: None,
        }
    }

    /// With `inner` (e.g. TLS) after the header.
    pub fn with_inner(mut self, inner: super::Layer) -> Self {
        self.inner = Some(inner);
        self
    }
}

impl LayerFactory for ProxyProtocol {
    fn new_layer(
        &self,
        peer: Option<SocketAddr>,
        local: Option<SocketAddr>,
        outbound: bool,
    ) -> Box<dyn StreamLayer> {
        let untrusted = match peer {
            Some(p) if self.trusted.iter().any(|n| n.contains(p.ip())) => None,
            Some(p) => Some(format!(
                "a connection from {} (not a trusted proxy)",
                p.ip()
            )),
            None => Some("a connection without a peer address".to_string()),
        };
        Box::new(Proxy {
            version: self.version,
            untrusted,
            header: Vec::new(),
            parsed: None,
            proxy_peer: peer,
            inner: self
                .inner
                .as_ref()
                .map(|l| l.0.new_layer(peer, local, outbound)),
        })
    }

    fn name(&self) -> &'static str {
        NAME
    }

    fn ready_timeout(&self) -> Option<Duration> {
        let inner = self.inner.as_ref().and_then(|l| l.0.ready_timeout());
        match (self.timeout, inner) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        }
    }
}

/// What a header said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The client (`None`: LOCAL / UNKNOWN, or an address family this
    /// engine does not carry, such as a Unix socket).
    pub source: Option<SocketAddr>,
    /// Where the client connected to.
    pub destination: Option<SocketAddr>,
}

/// One connection's PROXY state.
struct Proxy {
    version: ProxyVersion,
    /// Why this peer may not send a header (it is refused at start).
    untrusted: Option<String>,
    /// The header's bytes so far.
    header: Vec<u8>,
    parsed: Option<Header>,
    /// The proxy's own address (the TCP peer).
    proxy_peer: Option<SocketAddr>,
    inner: Option<Box<dyn StreamLayer>>,
}

fn error(reason: impl Into<String>) -> LayerError {
    LayerError::new(NAME, reason)
}

/// Parse a complete header at the start of `buf`: `Ok(None)` while more
/// bytes are needed, else the header and its length.
pub fn parse(version: ProxyVersion, buf: &[u8]) -> Result<Option<(Header, usize)>, LayerError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let v2 = match (version, first) {
        (ProxyVersion::V1, b'P') | (ProxyVersion::Any, b'P') => false,
        (ProxyVersion::V2, b'\r') | (ProxyVersion::Any, b'\r') => true,
        _ => {
            return Err(error(format!(
                "not a PROXY protocol {} header (first byte {first:#04x})",
                match version {
                    ProxyVersion::V1 => "v1",
                    ProxyVersion::V2 => "v2",
                    ProxyVersion::Any => "v1 or v2",
                }
            )))
        }
    };
    if v2 {
        parse_v2(buf)
    } else {
        parse_v1(buf)
    }
}

fn parse_v1(buf: &[u8]) -> Result<Option<(Header, usize)>, LayerError> {
    let prefix = b"PROXY ";
    let n = buf.len().min(prefix.len());
    if buf[..n] != prefix[..n] {
        return Err(error("not a PROXY v1 header"));
    }
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() >= V1_MAX {
            return Err(error(format!("v1 header over {V1_MAX} bytes")));
        }
        return Ok(None);
    };
    if end + 2 > V1_MAX {
        return Err(error(format!("v1 header over {V1_MAX} bytes")));
    }
    let line =
        std::str::from_utf8(&buf[prefix.len()..end]).map_err(|_| error("v1 header is not text"))?;
    let fields: Vec<&str> = line.split(' ').collect();
    let header = match fields.as_slice() {
        ["UNKNOWN", ..] => Header {
            source: None,
            destination: None,
        },
        [proto @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let ip = |s: &str| -> Result<IpAddr, LayerError> {
                let ip: IpAddr = s
                    .parse()
                    .map_err(|_| error(format!("v1 header: bad address {s:?}")))?;
                if (*proto == "TCP4") != ip.is_ipv4() {
                    return Err(error(format!("v1 header: {s} is not a {proto} address")));
                }
                Ok(ip)
            };
            let port = |s: &str| -> Result<u16, LayerError> {
                if s.is_empty() || (s.len() > 1 && s.starts_with('0')) {
                    return Err(error(format!("v1 header: bad port {s:?}")));
                }
                s.parse()
                    .map_err(|_| error(format!("v1 header: bad port {s:?}")))
            };
            Header {
                source: Some(SocketAddr::new(ip(src)?, port(sport)?)),
                destination: Some(SocketAddr::new(ip(dst)?, port(dport)?)),
            }
        }
        _ => return Err(error(format!("v1 header: cannot parse {line:?}"))),
    };
    Ok(Some((header, end + 2)))
}

fn parse_v2(buf: &[u8]) -> Result<Option<(Header, usize)>, LayerError> {
    let n = buf.len().min(12);
    if buf[..n] != V2_SIGNATURE[..n] {
        return Err(error("not a PROXY v2 header (bad signature)"));
    }
    if buf.len() < 16 {
        return Ok(None);
    }
    let (ver_cmd, fam) = (buf[12], buf[13]);
    if ver_cmd >> 4 != 2 {
        return Err(error(format!(
            "v2 header: version {} is not 2",
            ver_cmd >> 4
        )));
    }
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if 16 + len > V2_MAX {
        return Err(error(format!(
            "v2 header of {} bytes, over {V2_MAX}",
            16 + len
        )));
    }
    if buf.len() < 16 + len {
        return Ok(None);
    }
    let body = &buf[16..16 + len];
    let local = Header {
        source: None,
        destination: None,
    };
    let header = match ver_cmd & 0x0f {
        0 => local, // LOCAL: the proxy's own connection (a health check)
        1 => match fam >> 4 {
            1 if body.len() >= 12 => {
                let ip = |b: &[u8]| IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]));
                Header {
                    source: Some(SocketAddr::new(
                        ip(&body[0..4]),
                        u16::from_be_bytes([body[8], body[9]]),
                    )),
                    destination: Some(SocketAddr::new(
                        ip(&body[4..8]),
                        u16::from_be_bytes([body[10], body[11]]),
                    )),
                }
            }
            2 if body.len() >= 36 => {
                let ip = |b: &[u8]| {
                    let octets: [u8; 16] = b.try_into().expect("16 bytes");
                    IpAddr::V6(Ipv6Addr::from(octets))
                };
                Header {
                    source: Some(SocketAddr::new(
                        ip(&body[0..16]),
                        u16::from_be_bytes([body[32], body[33]]),
                    )),
                    destination: Some(SocketAddr::new(
                        ip(&body[16..32]),
                        u16::from_be_bytes([body[34], body[35]]),
                    )),
                }
            }
            0 | 3 => local, // UNSPEC, or a Unix socket: no address to carry
            f @ (1 | 2) => {
                return Err(error(format!(
                    "v2 header: address block of {} bytes too short for family {f}",
                    body.len()
                )))
            }
            f => return Err(error(format!("v2 header: unknown address family {f}"))),
        },
        c => return Err(error(format!("v2 header: unknown command {c}"))),
    };
    Ok(Some((header, 16 + len)))
}

impl Proxy {
    /// Bytes after the header: to the inner layer, or through.
    fn pass(&mut self, wire: &[u8], out: &mut LayerOut) -> Result<(), LayerError> {
        match &mut self.inner {
            Some(inner) => inner.on_read(wire, out),
            None => {
                out.plain.extend_from_slice(wire);
                Ok(())
            }
        }
    }
}

impl StreamLayer for Proxy {
    fn on_start(&mut self, out: &mut LayerOut) -> Result<(), LayerError> {
        if let Some(why) = self.untrusted.take() {
            return Err(error(why));
        }
        match &mut self.inner {
            Some(inner) => inner.on_start(out),
            None => Ok(()),
        }
    }

    fn on_read(&mut self, wire: &[u8], out: &mut LayerOut) -> Result<(), LayerError> {
        if self.parsed.is_some() {
            return self.pass(wire, out);
        }
        // NOTE: parse in place when the header arrived whole (the usual
        // case: HAProxy sends it in one segment), else gather it.
        let (header, used, rest_from_wire) = if self.header.is_empty() {
            match parse(self.version, wire)? {
                Some((h, n)) => (h, n, true),
                None => {
                    self.header.extend_from_slice(wire);
                    return Ok(());
                }
            }
        } else {
            let before = self.header.len();
            self.header.extend_from_slice(wire);
            match parse(self.version, &self.header)? {
                Some((h, n)) => (h, n - before, true),
                None => return Ok(()),
            }
        };
        self.parsed = Some(header);
        self.header = Vec::new();
        if rest_from_wire && used < wire.len() {
            self.pass(&wire[used..], out)?;
        }
        Ok(())
    }

    fn on_write(&mut self, plain: &[u8], out: &mut LayerOut) -> Result<(), LayerError> {
        match &mut self.inner {
            Some(inner) => inner.on_write(plain, out),
            None => {
                out.wire.extend_from_slice(plain);
                Ok(())
            }
        }
    }

    fn on_eof(&mut self, out: &mut LayerOut) -> Result<(), LayerError> {
        if self.parsed.is_none() {
            return Err(error("the connection ended inside its PROXY header"));
        }
        match &mut self.inner {
            Some(inner) => inner.on_eof(out),
            None => Ok(()),
        }
    }

    fn on_close(&mut self, out: &mut LayerOut) {
        if let Some(inner) = &mut self.inner {
            inner.on_close(out);
        }
    }

    fn is_ready(&self) -> bool {
        self.parsed.is_some() && self.inner.as_ref().is_none_or(|i| i.is_ready())
    }

    fn buffered(&self) -> usize {
        self.header.len() + self.inner.as_ref().map_or(0, |i| i.buffered())
    }

    fn is_spent(&self) -> bool {
        self.parsed.is_some() && self.inner.is_none() && self.header.is_empty()
    }

    fn info(&self) -> LayerInfo {
        let mut info = self
            .inner
            .as_ref()
            .map_or_else(LayerInfo::default, |i| i.info());
        if let Some(h) = self.parsed {
            if let Some(source) = h.source {
                info.peer = Some(source);
                info.proxy_peer = self.proxy_peer;
                info.proxy_destination = h.destination;
            }
        }
        info
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | cmd);
        h.push(fam);
        h.extend_from_slice(&(body.len() as u16).to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    #[test]
    fn v1_headers() {
        let line = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET /";
        let (h, n) = parse(ProxyVersion::V1, line).unwrap().unwrap();
        assert_eq!(n, line.len() - 5);
        assert_eq!(h.source, Some("192.0.2.1:56324".parse().unwrap()));
        assert_eq!(h.destination, Some("198.51.100.2:443".parse().unwrap()));
        let line = b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n";
        let (h, _) = parse(ProxyVersion::Any, line).unwrap().unwrap();
        assert_eq!(h.source, Some("[2001:db8::1]:1".parse().unwrap()));
        let (h, _) = parse(ProxyVersion::V1, b"PROXY UNKNOWN\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.source, None);
        // Incomplete, then wrong.
        assert_eq!(parse(ProxyVersion::V1, b"PROXY TCP4 1.2").unwrap(), None);
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n"[..],
            b"PROXY TCP4 ::1 ::2 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"GET / HTTP/1.1\r\n",
        ] {
            assert!(parse(ProxyVersion::V1, bad).is_err(), "{bad:?}");
        }
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat();
        assert!(parse(ProxyVersion::V1, &long)
            .unwrap_err()
            .reason
            .contains("over 107"));
        assert!(parse(ProxyVersion::V2, b"PROXY UNKNOWN\r\n").is_err());
    }

    #[test]
    fn a_parsed_header_without_an_inner_layer_is_spent() {
        let factory = ProxyProtocol::new(
            ProxyVersion::V2,
            vec![Network {
                addr: "127.0.0.1".parse().unwrap(),
                prefix: 32,
            }],
            None,
        );
        let peer = Some("127.0.0.1:40000".parse().unwrap());
        let mut layer = factory.new_layer(peer, None, false);
        let mut out = LayerOut::default();
        layer.on_start(&mut out).unwrap();
        let mut body = vec![192, 0, 2, 1, 127, 0, 0, 1];
        body.extend_from_slice(&56324u16.to_be_bytes());
        body.extend_from_slice(&443u16.to_be_bytes());
        let h = v2(1, 0x11, &body);
        // Half a header: held, not spent.
        layer.on_read(&h[..10], &mut out).unwrap();
        assert!(!layer.is_spent() && !layer.is_ready());
        // The rest and the first bytes of the stream: passed on, then spent.
        layer
            .on_read(&[&h[10..], b"hello"].concat(), &mut out)
            .unwrap();
        assert!(layer.is_ready() && layer.is_spent());
        assert_eq!(out.plain, b"hello");
        assert_eq!(layer.buffered(), 0);
    }

    #[test]
    fn v2_headers() {
        let mut body = vec![192, 0, 2, 1, 198, 51, 100, 2];
        body.extend_from_slice(&56324u16.to_be_bytes());
        body.extend_from_slice(&443u16.to_be_bytes());
        body.extend_from_slice(&[0x04, 0x00, 0x01, 0xaa]); // a TLV, skipped
        let h = v2(1, 0x11, &body);
        let (header, n) = parse(ProxyVersion::V2, &h).unwrap().unwrap();
        assert_eq!(n, h.len());
        assert_eq!(header.source, Some("192.0.2.1:56324".parse().unwrap()));
        assert_eq!(
            header.destination,
            Some("198.51.100.2:443".parse().unwrap())
        );
        // One byte at a time: incomplete until the last.
        for end in 1..h.len() {
            assert_eq!(parse(ProxyVersion::Any, &h[..end]).unwrap(), None, "{end}");
        }
        let local = v2(0, 0x00, &[]);
        let (header, _) = parse(ProxyVersion::V2, &local).unwrap().unwrap();
        assert_eq!(header.source, None);
        let mut v6 = vec![0u8; 36];
        v6[15] = 1;
        v6[31] = 2;
        v6[32..34].copy_from_slice(&7u16.to_be_bytes());
        let (header, _) = parse(ProxyVersion::V2, &v2(1, 0x21, &v6)).unwrap().unwrap();
        assert_eq!(header.source, Some("[::1]:7".parse().unwrap()));
        // Too short for its family; over the bound; bad version; v1 only.
        assert!(parse(ProxyVersion::V2, &v2(1, 0x11, &[1, 2, 3])).is_err());
        let mut huge = v2(1, 0x11, &[]);
        huge[14..16].copy_from_slice(&60000u16.to_be_bytes());
        assert!(parse(ProxyVersion::V2, &huge)
            .unwrap_err()
            .reason
            .contains("over"));
        let mut v3 = h.clone();
        v3[12] = 0x31;
        assert!(parse(ProxyVersion::V2, &v3).is_err());
        assert!(parse(ProxyVersion::V1, &h).is_err());
    }

    #[test]
    fn networks_match_by_prefix_and_mapped_addresses() {
        let net = Network {
            addr: "10.1.0.0".parse().unwrap(),
            prefix: 16,
        };
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.0.9".parse().unwrap()));
        let any6 = Network {
            addr: "::".parse().unwrap(),
            prefix: 0,
        };
        assert!(any6.contains("2001:db8::1".parse().unwrap()));
        assert!(!any6.contains("127.0.0.1".parse().unwrap()));
    }
}
