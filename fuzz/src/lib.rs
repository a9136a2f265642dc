//! The harness shared by the framing fuzz targets: it turns fuzz input into a
//! framing rule, a byte stream and a script of `decode` feeds and
//! `set_framing` switches, runs a [`Decoder`] through the script and checks
//! every step against [`reference::decode_all`], the naive framer.
//!
//! Input layout (every target; reading past the end yields zeros):
//!
//! - `length_prefixed`: `[flags] [limit] [split] [stream…]`
//! - `delimited`:       `[flags] [limit] [delimiter…] [split] [stream…]`
//! - `exactly`:         `[size] [size] [split] [stream…]`
//! - `switching`:       `[flags] [kind] [params…]` then ops: a byte below
//!   0x80 feeds that many following bytes; a byte from 0x80 switches to the
//!   rule it names (bits 5–6: raw, length-prefixed, delimited, exactly),
//!   parameters following. A switch right after a feed's packet applies
//!   before the rest of that feed, as a protocol callback would.
//!
//! `[split]` is `count` (low 4 bits) then `count` piece lengths, cycled over
//! the stream (0 feeds an empty input), so `[1, 1]` feeds a byte at a time.
//!
//! What is checked, at every call:
//! - packets and error equal the reference framer's on the stream since the
//!   last switch (the reference is prefix-stable, so one run per rule
//!   suffices), and an error shows only once its bytes were given;
//! - completeness: a call that returns no packet has consumed all its input
//!   and holds no complete packet and no detectable error;
//! - `buffered()` is exactly the bytes consumed since the last packet, at
//!   most the rule's limit (or what a switch carried over), and
//!   `allocated()` stays within twice that (no allocation ahead of data);
//! - a packet lying inside the current input is `Borrowed` from it at the
//!   right place, one that started earlier is `Owned`.
//!
//! Raw framing has no reference (its packets are the chunks as fed): a raw
//! packet must be the next non-empty run of bytes, and raw buffers nothing.

use netring_core::framing::{
    reference, Decoder, FrameError, Framing, Packet, MAX_PACKET_LIMIT_BYTES,
};

/// A cursor over fuzz input.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// Read from `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    /// The next byte, or 0 past the end.
    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// The next `n` bytes (fewer at the end).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.data.split_at(n.min(self.data.len()));
        self.data = tail;
        head
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// What is left.
    pub fn rest(self) -> &'a [u8] {
        self.data
    }
}

/// `[flags] [limit]`: flags bits 0–1 header 1/2/4/8, bit 2 big-endian,
/// bit 3 includes_header, bits 4–7 max_packet scale: 15 is the 1 GiB
/// ceiling (a declared body must still not be allocated ahead of its bytes),
/// 14 is `limit * 256`, anything else `limit` (0..=255).
pub fn length_prefixed(input: &mut Input) -> Framing {
    let flags = input.byte();
    let limit = usize::from(input.byte());
    let framing = Framing::LengthPrefixed {
        header: [1, 2, 4, 8][usize::from(flags & 3)],
        big_endian: flags & 4 != 0,
        includes_header: flags & 8 != 0,
        max_packet: match flags >> 4 {
            15 => MAX_PACKET_LIMIT_BYTES,
            14 => limit << 8,
            _ => limit,
        },
    };
    valid(framing)
}

/// `[flags] [limit] [delimiter…]`: flags bits 0–3 delimiter length − 1,
/// bit 4 strip, bit 5 small alphabet (the delimiter's bytes become `a`/`b`,
/// so self-overlapping delimiters are common; [`small_alphabet`] does the
/// same to a stream), bits 6–7 max_line: 3 is the 1 GiB ceiling, 2 is
/// `d + limit * 16`, else `d + limit`. Returns the rule and the alphabet bit.
pub fn delimited(input: &mut Input) -> (Framing, bool) {
    let flags = input.byte();
    let limit = usize::from(input.byte());
    let d = 1 + usize::from(flags & 15);
    let small = flags & 32 != 0;
    let mut delimiter = input.bytes(d).to_vec();
    delimiter.resize(d, 0);
    if small {
        small_alphabet(&mut delimiter);
    }
    let framing = Framing::Delimited {
        delimiter,
        max_line: match flags >> 6 {
            3 => MAX_PACKET_LIMIT_BYTES,
            2 => d + (limit << 4),
            _ => d + limit,
        },
        strip: flags & 16 != 0,
    };
    (valid(framing), small)
}

/// `[a] [b]`: `a`'s top bits 3 is the 1 GiB ceiling, 2 is
/// `1 + ((a & 63) << 8 | b)`, else `1 + b` (1..=256).
pub fn exactly(input: &mut Input) -> Framing {
    let (a, b) = (usize::from(input.byte()), usize::from(input.byte()));
    let n = match a >> 6 {
        3 => MAX_PACKET_LIMIT_BYTES,
        2 => 1 + ((a & 63) << 8 | b),
        _ => 1 + b,
    };
    valid(Framing::Exactly(n))
}

/// `[a] [b] [c]`: RESP requests with `max_bulk` 1..=256, `max_command`
/// 16..=4,096 and `max_inline` 16..=271.
pub fn resp(input: &mut Input) -> Framing {
    let (a, b, c) = (
        usize::from(input.byte()),
        usize::from(input.byte()),
        usize::from(input.byte()),
    );
    valid(Framing::Resp(netring_core::framing::resp::Limits {
        max_bulk: 1 + a,
        max_command: 16 + (b << 4),
        max_inline: 16 + c,
    }))
}

/// Any rule: `kind` bits 5–6 pick raw, length-prefixed, delimited or
/// exactly, whose parameters follow.
pub fn any_framing(kind: u8, input: &mut Input) -> Framing {
    match (kind >> 5) & 3 {
        0 => Framing::Raw,
        1 => length_prefixed(input),
        2 => delimited(input).0,
        _ => exactly(input),
    }
}

/// Map bytes onto `a`/`b`.
pub fn small_alphabet(bytes: &mut [u8]) {
    for b in bytes {
        *b = b'a' + (*b & 1);
    }
}

fn valid(framing: Framing) -> Framing {
    if let Err(e) = framing.validate() {
        panic!("harness built an invalid rule {framing:?}: {e}");
    }
    framing
}

/// `[count] [len…]`: the piece lengths, cycled by [`cut`].
pub fn split_lengths(input: &mut Input) -> Vec<usize> {
    let count = input.byte() & 15;
    (0..count).map(|_| usize::from(input.byte())).collect()
}

/// Feeds covering `total` bytes in pieces of `lens` (cycled; 0 feeds an
/// empty input). No lengths: one feed; all zero: an empty feed, then one.
pub fn cut(total: usize, lens: &[usize]) -> Vec<Op> {
    if lens.iter().all(|&n| n == 0) {
        let mut ops = if lens.is_empty() {
            vec![]
        } else {
            vec![Op::Feed(0)]
        };
        ops.push(Op::Feed(total));
        return ops;
    }
    let mut ops = Vec::new();
    let mut pos = 0;
    for &n in lens.iter().cycle() {
        if pos == total {
            break;
        }
        let n = n.min(total - pos);
        ops.push(Op::Feed(n));
        pos += n;
    }
    ops
}

/// One step of a script.
#[derive(Debug, Clone)]
pub enum Op {
    /// Give the decoder the stream's next `n` bytes, calling `decode` until
    /// they are consumed.
    Feed(usize),
    /// `set_framing`: between feeds, or right after a feed's packet.
    Switch(Framing),
}

/// Run `ops` over `stream` starting under `framing`, checking every call
/// (see the module doc). The feeds must cover `stream` exactly.
pub fn check(framing: Framing, stream: &[u8], ops: &[Op]) {
    let mut m = Model::new(framing, stream);
    let mut fed = 0;
    // A last empty feed delivers what a final switch left re-framable.
    let drain = Op::Feed(0);
    let mut i = 0;
    while let Some(op) = ops.get(i).or((i == ops.len()).then_some(&drain)) {
        i += 1;
        match op {
            Op::Switch(f) => m.switch(f.clone()),
            Op::Feed(n) => {
                let mut rest = &stream[fed..fed + n];
                fed += n;
                loop {
                    match m.decode(rest) {
                        Step::Failed => return,
                        Step::Idle => break,
                        Step::Packet(used) => {
                            rest = &rest[used..];
                            if let Some(Op::Switch(f)) = ops.get(i) {
                                m.switch(f.clone());
                                i += 1;
                            }
                        }
                    }
                }
            }
        }
    }
    assert_eq!(fed, stream.len(), "harness: feeds do not cover the stream");
    m.finish();
}

enum Step {
    Packet(usize),
    Idle,
    Failed,
}

/// The decoder under test and what the reference says it must do.
struct Model<'s> {
    dec: Decoder,
    framing: Framing,
    stream: &'s [u8],
    /// Stream bytes the decoder has consumed.
    consumed: usize,
    /// Where the current rule started (the end of the last packet before
    /// the switch), and where its last packet ended.
    seg_start: usize,
    seg_end: usize,
    /// Packets produced under the current rule.
    emitted: Vec<Vec<u8>>,
    /// The reference on `stream[seg_start..]` (unused for Raw).
    expected: (Vec<Vec<u8>>, Option<FrameError>),
    /// Bytes buffered when the rule last changed (the replay's size).
    carried: usize,
}

impl<'s> Model<'s> {
    fn new(framing: Framing, stream: &'s [u8]) -> Self {
        let expected = expect(&framing, stream);
        Model {
            dec: Decoder::new(framing.clone()),
            framing,
            stream,
            consumed: 0,
            seg_start: 0,
            seg_end: 0,
            emitted: Vec::new(),
            expected,
            carried: 0,
        }
    }

    fn decode(&mut self, input: &[u8]) -> Step {
        let before = self.consumed;
        match self.dec.decode(input) {
            Err(e) => {
                self.failed(e, before + input.len());
                Step::Failed
            }
            Ok((used, None)) => {
                assert_eq!(
                    used,
                    input.len(),
                    "no packet, yet {} of {} input bytes left unconsumed at stream offset {before} under {:?}",
                    input.len() - used,
                    input.len(),
                    self.framing
                );
                self.consumed += used;
                self.idle();
                Step::Idle
            }
            Ok((used, Some(packet))) => {
                assert!(
                    used <= input.len(),
                    "consumed {used} of a {}-byte input",
                    input.len()
                );
                self.consumed += used;
                self.packet(&packet, input, before);
                Step::Packet(used)
            }
        }
    }

    fn packet(&mut self, packet: &Packet, input: &[u8], before: usize) {
        let bytes = packet.as_slice();
        let (prefix, suffix) = overhead(&self.framing);
        let start = self.seg_end;
        let end = start + prefix + bytes.len() + suffix;
        let framing = &self.framing;
        assert!(
            end <= self.consumed,
            "packet #{} under {framing:?} ends at stream offset {end}, but only {} bytes were received",
            self.emitted.len(),
            self.consumed
        );
        if *framing == Framing::Raw {
            assert!(!bytes.is_empty(), "an empty raw packet");
            assert_eq!(
                bytes,
                &self.stream[start..end],
                "raw packet at offset {start}"
            );
        } else {
            let k = self.emitted.len();
            match self.expected.0.get(k) {
                Some(want) => assert_eq!(
                    bytes, want,
                    "packet #{k} under {framing:?} (stream offset {start}) differs from the reference"
                ),
                None => panic!(
                    "packet #{k} under {framing:?} (stream offset {start}, {bytes:?}) but the reference \
                     has only {k} packets then {:?}",
                    self.expected.1
                ),
            }
        }
        // Zero-copy contract: the packet's framed bytes (for length-prefixed,
        // the body) lie inside this input exactly when they start at or after
        // it (all earlier bytes were consumed by earlier calls).
        let region = start + prefix;
        match packet {
            Packet::Borrowed(b) => {
                let at = (b.as_ptr() as usize).wrapping_sub(input.as_ptr() as usize);
                assert!(
                    region >= before && at == region - before && at + b.len() <= input.len(),
                    "packet #{} Borrowed from input offset {at}, expected a copy or offset {}",
                    self.emitted.len(),
                    region.wrapping_sub(before)
                );
            }
            Packet::Built(_) => unreachable!("the fuzzer's decoders have no PacketAlloc"),
            Packet::Owned(_) => assert!(
                end == region || region < before,
                "packet #{} lies inside the current input (stream offset {region} >= {before}) but was copied",
                self.emitted.len()
            ),
        }
        self.seg_end = end;
        self.emitted.push(bytes.to_vec());
        self.check_buffer();
    }

    /// A call returned no packet: all was consumed, and nothing complete or
    /// erroneous may be held back.
    fn idle(&mut self) {
        self.check_buffer();
        if self.framing == Framing::Raw {
            assert_eq!(self.seg_end, self.consumed, "raw framing held bytes back");
            return;
        }
        let k = self.emitted.len();
        let (want, err) = &self.expected;
        if let Some(next) = want.get(k) {
            let (prefix, suffix) = overhead(&self.framing);
            let end = self.seg_end + prefix + next.len() + suffix;
            assert!(
                end > self.consumed,
                "packet #{k} under {:?} (stream offset {}..{end}) was fully received ({} bytes) but not returned",
                self.framing,
                self.seg_end,
                self.consumed
            );
        } else if err.is_some() {
            let (_, early) = expect(&self.framing, &self.stream[self.seg_start..self.consumed]);
            assert_eq!(
                early, None,
                "the error was detectable after {} bytes under {:?} but not reported",
                self.consumed, self.framing
            );
        }
    }

    /// `decode` failed with `e` after being given the stream up to `given`.
    fn failed(&mut self, e: FrameError, given: usize) {
        let framing = &self.framing;
        assert_ne!(*framing, Framing::Raw, "raw framing failed: {e:?}");
        let (want, err) = &self.expected;
        assert_eq!(
            (&self.emitted, Some(&e)),
            (want, err.as_ref()),
            "under {framing:?}: the decoder's packets and error vs the reference's"
        );
        let (_, seen) = expect(framing, &self.stream[self.seg_start..given]);
        assert_eq!(
            seen,
            Some(e),
            "under {framing:?}: error reported before the bytes that show it (given up to {given})"
        );
    }

    fn switch(&mut self, framing: Framing) {
        self.check_buffer();
        self.carried = self.dec.buffered();
        self.dec.set_framing(framing.clone());
        assert_eq!(
            self.dec.buffered(),
            self.carried,
            "set_framing lost or grew bytes"
        );
        self.seg_start = self.seg_end;
        self.expected = expect(&framing, &self.stream[self.seg_start..]);
        self.framing = framing;
        self.emitted.clear();
        self.check_buffer();
    }

    fn finish(&self) {
        if self.framing != Framing::Raw {
            assert_eq!(
                (&self.emitted, None),
                (&self.expected.0, self.expected.1.as_ref()),
                "under {:?}: at end of stream, the decoder's packets vs the reference's",
                self.framing
            );
        }
        assert_eq!(self.consumed, self.stream.len());
    }

    /// Buffering is exact and bounded, and memory follows data.
    fn check_buffer(&self) {
        let buffered = self.dec.buffered();
        assert_eq!(
            buffered,
            self.consumed - self.seg_end,
            "buffered() vs bytes consumed since the last packet, under {:?}",
            self.framing
        );
        let bound = limit(&self.framing).max(self.carried);
        assert!(
            buffered <= bound,
            "{buffered} bytes buffered, above the bound {bound} under {:?}",
            self.framing
        );
        // Growth at most doubles what is held (Vec's first allocation is 8
        // bytes); a switch's replay keeps its capacity until the next switch.
        let allocated = self.dec.allocated();
        assert!(
            allocated <= 2 * buffered.max(8) + self.carried,
            "{allocated} bytes allocated for {buffered} buffered ({} carried) under {:?}",
            self.carried,
            self.framing
        );
    }
}

fn expect(framing: &Framing, stream: &[u8]) -> (Vec<Vec<u8>>, Option<FrameError>) {
    if *framing == Framing::Raw {
        (Vec::new(), None)
    } else {
        reference::decode_all(framing, stream)
    }
}

/// Stream bytes around a packet's payload: the header, the stripped delimiter.
fn overhead(framing: &Framing) -> (usize, usize) {
    match framing {
        Framing::LengthPrefixed { header, .. } => (usize::from(*header), 0),
        Framing::Delimited {
            delimiter, strip, ..
        } => (0, if *strip { delimiter.len() } else { 0 }),
        Framing::Raw | Framing::Exactly(_) | Framing::Resp(_) => (0, 0),
    }
}

/// Most bytes a rule may hold for an unfinished packet.
fn limit(framing: &Framing) -> usize {
    match framing {
        Framing::Raw => 0,
        Framing::LengthPrefixed {
            header, max_packet, ..
        } => usize::from(*header) + max_packet,
        Framing::Delimited { max_line, .. } => *max_line,
        Framing::Exactly(n) => *n,
        // An unfinished command: its declared bytes plus a header line in
        // progress, or an inline line.
        Framing::Resp(netring_core::framing::resp::Limits {
            max_command,
            max_inline,
            ..
        }) => (*max_command + netring_core::framing::resp::MAX_HEADER_LINE).max(*max_inline),
    }
}
