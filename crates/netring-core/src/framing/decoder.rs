//! The per-connection decoding state machine (see `framing/mod.rs`).

use memchr::memmem;

use super::{FrameError, Framing};

/// One decoded packet: borrowed from the input when it lay inside one
/// input, owned when it was reassembled.
#[derive(Debug)]
pub enum Packet<'a> {
    /// A slice of the input passed to `decode`.
    Borrowed(&'a [u8]),
    /// Reassembled from several inputs.
    Owned(Vec<u8>),
    /// Reassembled into a buffer from the decoder's [`PacketAlloc`], sized
    /// from the length header (the bindings' own `bytes`).
    Built(Box<dyn PacketBuf>),
}

impl PartialEq for Packet<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Packet<'_> {}

impl Packet<'_> {
    /// The packet's bytes.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Packet::Borrowed(b) => b,
            Packet::Owned(v) => v,
            Packet::Built(b) => b.bytes(),
        }
    }

    /// Detach from the input.
    pub fn into_owned(self) -> Packet<'static> {
        match self {
            Packet::Borrowed(b) => Packet::Owned(b.to_vec()),
            Packet::Owned(v) => Packet::Owned(v),
            Packet::Built(b) => Packet::Built(b),
        }
    }
}

/// Makes the buffers large packets of a known size (length-prefixed,
/// fixed-size) are reassembled into, so that their bytes are copied once:
/// from the receive buffers straight into the object the user receives.
pub trait PacketAlloc: Send + Sync + std::fmt::Debug {
    /// A buffer of exactly `len` bytes (its contents will all be written);
    /// `None` (no memory): the packet is reassembled as usual.
    fn alloc(&self, len: usize) -> Option<Box<dyn PacketBuf>>;
}

/// A buffer from a [`PacketAlloc`]; its bytes stay where they are while it
/// lives.
pub trait PacketBuf: Send + std::fmt::Debug {
    fn bytes(&self) -> &[u8];
    fn bytes_mut(&mut self) -> &mut [u8];
    /// The buffer as itself, for the allocator's owner to take back.
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any>;
}

/// Packets at least this large (and of a size known from their header) are
/// built in a [`PacketAlloc`] buffer when the decoder has one; smaller ones
/// are copied twice as before, which costs less than the allocator's call.
pub const BUILD_MIN_BYTES: usize = 32 * 1024;

/// A connection's framing rule plus its partial packet.
///
/// Raw with nothing buffered, the common case, allocates nothing and takes
/// one word in the connection; any other rule lives in a box.
#[derive(Debug, Default)]
pub struct Decoder {
    rule: Option<Box<Rule>>,
}

/// What `Decoder` holds for every rule but bare Raw.
#[derive(Debug)]
struct Rule {
    framing: Framing,
    /// Length-prefixed: header bytes seen so far.
    header: [u8; 8],
    header_len: usize,
    /// Length-prefixed: the body length, once the header is complete.
    body_len: Option<usize>,
    /// Bytes of the packet in progress (body, pending line, record).
    partial: Vec<u8>,
    /// Bytes buffered under a previous rule, re-framed before new input.
    replay: Vec<u8>,
    /// Delimited (2 bytes or more): the delimiter's searcher, built once
    /// per rule; boxed, as it is large.
    finder: Option<Box<memmem::Finder<'static>>>,
    /// Resp: how far the command in progress was scanned.
    resp: super::resp::Scan,
    /// Where large packets of a known size are built (see `PacketAlloc`).
    alloc: Option<std::sync::Arc<dyn PacketAlloc>>,
    /// The packet being built there, and how much of it is filled.
    built: Option<(Box<dyn PacketBuf>, usize)>,
}

impl Decoder {
    /// A decoder with nothing buffered.
    pub fn new(framing: Framing) -> Self {
        Decoder {
            rule: (framing != Framing::Raw).then(|| Box::new(Rule::new(framing))),
        }
    }

    /// The current rule.
    pub fn framing(&self) -> &Framing {
        self.rule.as_ref().map_or(&super::RAW, |r| &r.framing)
    }

    /// Whether packets are raw chunks (no framing).
    pub fn is_raw(&self) -> bool {
        *self.framing() == Framing::Raw
    }

    /// Bytes of reassembly memory allocated (capacity, not length).
    pub fn allocated(&self) -> usize {
        self.rule.as_ref().map_or(0, |r| {
            r.partial.capacity()
                + r.replay.capacity()
                + r.built.as_ref().map_or(0, |b| b.0.bytes().len())
        })
    }

    /// Bytes held for an incomplete packet.
    pub fn buffered(&self) -> usize {
        self.rule.as_ref().map_or(0, |r| {
            r.header_len + r.partial.len() + r.replay.len() + r.built.as_ref().map_or(0, |b| b.1)
        })
    }

    /// Build large packets of a known size in buffers from `alloc` (until
    /// the rule changes: set it again then). Raw has nothing to build.
    pub fn set_alloc(&mut self, alloc: Option<std::sync::Arc<dyn PacketAlloc>>) {
        if let Some(rule) = self.rule.as_mut() {
            rule.alloc = alloc;
        }
    }

    /// Whether a packet has started but not finished.
    pub fn in_packet(&self) -> bool {
        self.buffered() > 0
    }

    /// Switch rules. Bytes buffered under the old rule are re-framed under
    /// the new one, before any new input.
    pub fn set_framing(&mut self, framing: Framing) {
        let Some(mut old) = self.rule.take() else {
            *self = Decoder::new(framing);
            return;
        };
        let mut pending = Vec::with_capacity(old.header_len + old.partial.len() + old.replay.len());
        pending.extend_from_slice(&old.header[..old.header_len]);
        if let Some((buf, filled)) = old.built.take() {
            pending.extend_from_slice(&buf.bytes()[..filled]);
        }
        pending.append(&mut old.partial);
        pending.append(&mut old.replay);
        if pending.is_empty() {
            *self = Decoder::new(framing);
        } else {
            let mut rule = Rule::new(framing);
            rule.replay = pending;
            self.rule = Some(Box::new(rule));
        }
    }

    /// Decode at most one packet from `input`. Returns the number of input
    /// bytes consumed and the packet, if one completed. Call again with the
    /// rest of the input until it returns `(0, None)` on empty input, or
    /// consumed everything without a packet.
    pub fn decode<'a>(
        &mut self,
        input: &'a [u8],
    ) -> Result<(usize, Option<Packet<'a>>), FrameError> {
        match &mut self.rule {
            None => Ok(raw(input)),
            Some(rule) => rule.decode(input),
        }
    }
}

/// Raw: whatever arrived is the packet.
fn raw(input: &[u8]) -> (usize, Option<Packet<'_>>) {
    if input.is_empty() {
        (0, None)
    } else {
        (input.len(), Some(Packet::Borrowed(input)))
    }
}

impl Rule {
    fn new(framing: Framing) -> Self {
        Rule {
            header: [0; 8],
            header_len: 0,
            body_len: None,
            partial: Vec::new(),
            replay: Vec::new(),
            finder: framing_finder_source(&framing)
                .map(|d| Box::new(memmem::Finder::new(&d).into_owned())),
            resp: Default::default(),
            alloc: None,
            built: None,
            framing,
        }
    }

    fn decode<'a>(&mut self, input: &'a [u8]) -> Result<(usize, Option<Packet<'a>>), FrameError> {
        while !self.replay.is_empty() {
            let mut replay = std::mem::take(&mut self.replay);
            let (used, packet) = match self.step(&replay) {
                Ok((used, packet)) => (used, packet.map(Packet::into_owned)),
                Err(e) => {
                    self.replay = replay;
                    return Err(e);
                }
            };
            // NOTE: without a packet, every rule consumes all it is given
            // (or fails), so this loop always makes progress.
            debug_assert!(packet.is_some() || used == replay.len());
            replay.drain(..used);
            self.replay = replay;
            if packet.is_some() {
                return Ok((0, packet));
            }
        }
        self.step(input)
    }

    fn step<'a>(&mut self, input: &'a [u8]) -> Result<(usize, Option<Packet<'a>>), FrameError> {
        match &self.framing {
            Framing::Raw => Ok(raw(input)),
            Framing::Exactly(n) => {
                let n = *n;
                Ok(self.fill_to(input, 0, n))
            }
            Framing::Resp(limits) => {
                let limits = *limits;
                if self.partial.is_empty() {
                    let mut st = super::resp::Scan::default();
                    if let Some(end) = super::resp::scan(input, &mut st, limits)? {
                        return Ok((end, Some(Packet::Borrowed(&input[..end]))));
                    }
                    self.resp = st;
                    self.partial.extend_from_slice(input);
                    return Ok((input.len(), None));
                }
                // The command started in an earlier read: append and resume
                // the scan where it stopped.
                let old = self.partial.len();
                self.partial.extend_from_slice(input);
                match super::resp::scan(&self.partial, &mut self.resp, limits)? {
                    Some(end) => {
                        self.partial.truncate(end);
                        let cmd = std::mem::take(&mut self.partial);
                        Ok((end - old, Some(Packet::Owned(cmd))))
                    }
                    None => Ok((input.len(), None)),
                }
            }
            Framing::LengthPrefixed {
                header,
                big_endian,
                includes_header,
                max_packet,
            } => {
                let h = usize::from(*header);
                let body_of = |head: &[u8]| -> Result<usize, FrameError> {
                    let declared = parse_length(head, *big_endian);
                    let body = if *includes_header {
                        declared
                            .checked_sub(h as u64)
                            .ok_or(FrameError::HeaderTooShort {
                                declared,
                                header: *header,
                            })?
                    } else {
                        declared
                    };
                    if body > *max_packet as u64 {
                        return Err(FrameError::PacketTooLarge {
                            declared,
                            limit: *max_packet,
                        });
                    }
                    Ok(body as usize)
                };
                // Fast path: a whole packet at the start of the input and
                // nothing buffered: borrow it, copying nothing.
                if self.header_len == 0 && self.body_len.is_none() && input.len() >= h {
                    let body = body_of(&input[..h])?;
                    if input.len() - h >= body {
                        return Ok((h + body, Some(Packet::Borrowed(&input[h..h + body]))));
                    }
                }
                let mut used = 0;
                if self.body_len.is_none() {
                    let take = (h - self.header_len).min(input.len());
                    self.header[self.header_len..self.header_len + take]
                        .copy_from_slice(&input[..take]);
                    self.header_len += take;
                    used = take;
                    if self.header_len < h {
                        return Ok((used, None));
                    }
                    self.body_len = Some(body_of(&self.header[..h])?);
                }
                let body = self.body_len.unwrap_or(0);
                let (n, packet) = self.fill_to(input, used, body);
                if packet.is_some() {
                    self.header_len = 0;
                    self.body_len = None;
                }
                Ok((used + n, packet))
            }
            Framing::Delimited {
                delimiter,
                max_line,
                strip,
            } => {
                let (d, max_line, strip) = (delimiter.len(), *max_line, *strip);
                if self.partial.is_empty() {
                    return match find(&self.finder, input, delimiter) {
                        Some(i) if i + d <= max_line => {
                            let end = if strip { i } else { i + d };
                            Ok((i + d, Some(Packet::Borrowed(&input[..end]))))
                        }
                        Some(_) => Err(FrameError::LineTooLong { limit: max_line }),
                        None if input.len() >= max_line => {
                            Err(FrameError::LineTooLong { limit: max_line })
                        }
                        None => {
                            self.partial.extend_from_slice(input);
                            Ok((input.len(), None))
                        }
                    };
                }
                // The delimiter may straddle the old bytes and the new ones:
                // append (never past max_line) and search from d-1 back.
                let old = self.partial.len();
                let take = input.len().min(max_line - old);
                self.partial.extend_from_slice(&input[..take]);
                let start = old.saturating_sub(d - 1);
                match find(&self.finder, &self.partial[start..], delimiter) {
                    Some(j) => {
                        let line_end = start + j + d;
                        self.partial.truncate(line_end);
                        let mut line = std::mem::take(&mut self.partial);
                        if strip {
                            line.truncate(line_end - d);
                        }
                        Ok((line_end - old, Some(Packet::Owned(line))))
                    }
                    None if self.partial.len() >= max_line => {
                        Err(FrameError::LineTooLong { limit: max_line })
                    }
                    None => Ok((take, None)),
                }
            }
        }
    }

    /// Collect `want` bytes into a packet, starting at `input[offset..]`.
    /// Returns the bytes consumed from `input[offset..]`.
    fn fill_to<'a>(
        &mut self,
        input: &'a [u8],
        offset: usize,
        want: usize,
    ) -> (usize, Option<Packet<'a>>) {
        let rest = &input[offset..];
        if self.partial.is_empty() && self.built.is_none() && rest.len() >= want {
            return (want, Some(Packet::Borrowed(&rest[..want])));
        }
        if self.built.is_none() && want >= BUILD_MIN_BYTES && self.partial.is_empty() {
            // NOTE: sized from the header at once (that is the point: one
            // copy). A peer that declares a large packet and sends little
            // holds up to `max_packet` here, counted in the buffer memory
            // (`max_buffer_memory`) and bounded in time by `frame_timeout`.
            self.built = self
                .alloc
                .as_ref()
                .and_then(|a| a.alloc(want))
                .map(|b| (b, 0));
        }
        if let Some((buf, filled)) = self.built.as_mut() {
            let take = (want - *filled).min(rest.len());
            buf.bytes_mut()[*filled..*filled + take].copy_from_slice(&rest[..take]);
            *filled += take;
            if *filled < want {
                return (take, None);
            }
            let (buf, _) = self.built.take().expect("just filled");
            return (take, Some(Packet::Built(buf)));
        }
        let take = (want - self.partial.len()).min(rest.len());
        let len = self.partial.len();
        if self.partial.capacity() < len + take {
            // Grow geometrically but never past the declared size, and never
            // ahead of the bytes actually received by more than 2x.
            let target = (len + take).max(2 * len).min(want);
            self.partial.reserve_exact(target - len);
        }
        self.partial.extend_from_slice(&rest[..take]);
        if self.partial.len() == want {
            (take, Some(Packet::Owned(std::mem::take(&mut self.partial))))
        } else {
            (take, None)
        }
    }
}

/// The delimiter a rule searches for, if it is Delimited.
fn framing_finder_source(framing: &Framing) -> Option<Vec<u8>> {
    match framing {
        // One byte: memchr, no searcher.
        Framing::Delimited { delimiter, .. } if delimiter.len() > 1 => Some(delimiter.clone()),
        _ => None,
    }
}

/// First occurrence of `needle` in `hay`: memchr for one byte, the prebuilt
/// searcher otherwise.
fn find(finder: &Option<Box<memmem::Finder<'static>>>, hay: &[u8], needle: &[u8]) -> Option<usize> {
    match (needle, finder) {
        ([b], _) => memchr::memchr(*b, hay),
        (_, Some(f)) => f.find(hay),
        (_, None) => memmem::find(hay, needle),
    }
}

fn parse_length(header: &[u8], big_endian: bool) -> u64 {
    // NOTE: one fixed-size load per header size: copying a variable number
    // of bytes into a stack word and loading it back stalled store-to-load
    // forwarding (half of this function's time in profiles).
    match (header, big_endian) {
        ([b], _) => u64::from(*b),
        (&[a, b], true) => u64::from(u16::from_be_bytes([a, b])),
        (&[a, b], false) => u64::from(u16::from_le_bytes([a, b])),
        (&[a, b, c, d], true) => u64::from(u32::from_be_bytes([a, b, c, d])),
        (&[a, b, c, d], false) => u64::from(u32::from_le_bytes([a, b, c, d])),
        (&[a, b, c, d, e, f, g, h], true) => u64::from_be_bytes([a, b, c, d, e, f, g, h]),
        (&[a, b, c, d, e, f, g, h], false) => u64::from_le_bytes([a, b, c, d, e, f, g, h]),
        (h, true) => h.iter().fold(0, |n, &b| n << 8 | u64::from(b)),
        (h, false) => h.iter().rev().fold(0, |n, &b| n << 8 | u64::from(b)),
    }
}
