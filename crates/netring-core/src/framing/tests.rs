//! Framer tests: every split of a stream yields the same packets as the
//! reference framer; encode/decode round trips (proptest); bad input.

use proptest::prelude::*;

use super::reference::decode_all;
use super::*;

/// Decode `stream` fed in pieces of the given sizes (cycled).
fn decode_split(
    framing: &Framing,
    stream: &[u8],
    sizes: &[usize],
) -> (Vec<Vec<u8>>, Option<FrameError>) {
    let mut dec = Decoder::new(framing.clone());
    let mut out = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    while pos < stream.len() {
        let n = sizes[i % sizes.len()].max(1).min(stream.len() - pos);
        i += 1;
        let mut piece = &stream[pos..pos + n];
        pos += n;
        loop {
            match dec.decode(piece) {
                Ok((used, packet)) => {
                    piece = &piece[used..];
                    match packet {
                        Some(p) => out.push(p.as_slice().to_vec()),
                        None => break,
                    }
                }
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

fn lp(header: u8, big_endian: bool, includes_header: bool, max_packet: usize) -> Framing {
    Framing::LengthPrefixed {
        header,
        big_endian,
        includes_header,
        max_packet,
    }
}

fn lines(delimiter: &[u8], max_line: usize, strip: bool) -> Framing {
    Framing::Delimited {
        delimiter: delimiter.to_vec(),
        max_line,
        strip,
    }
}

fn encode_all(framing: &Framing, packets: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in packets {
        framing.encode(p, &mut out).unwrap();
    }
    out
}

fn sample_framings() -> Vec<Framing> {
    vec![
        lp(1, true, false, 255),
        lp(2, false, true, 70_000),
        lp(4, true, false, 1 << 20),
        lp(8, false, false, 1 << 20),
        lines(b"\r\n", 200, true),
        lines(b"\n", 200, false),
        lines(b"END", 64, true),
        lines(b"aa", 64, false),
        Framing::Exactly(7),
    ]
}

fn sample_packets(framing: &Framing) -> Vec<Vec<u8>> {
    let mut packets: Vec<Vec<u8>> = (0..40u32)
        .map(|i| {
            (0..(i * 7 % 53))
                .map(|b| b"abcxyz\r"[(b as usize + i as usize) % 7])
                .collect()
        })
        .collect();
    if let Framing::Exactly(n) = framing {
        packets = packets
            .into_iter()
            .map(|mut p| {
                p.resize(*n, b'q');
                p
            })
            .collect();
    }
    if let Framing::Delimited { delimiter, .. } = framing {
        // Payloads must not contain the delimiter (or a prefix of it ending the line).
        packets = packets
            .into_iter()
            .map(|p| p.into_iter().filter(|b| !delimiter.contains(b)).collect())
            .collect();
    }
    packets
}

#[test]
fn every_split_point_yields_the_same_packets() {
    for framing in sample_framings() {
        let packets = sample_packets(&framing);
        let stream = encode_all(&framing, &packets);
        let expect = decode_all(&framing, &stream);
        let strip = !matches!(framing, Framing::Delimited { strip: false, .. });
        if strip {
            assert_eq!(
                expect.0, packets,
                "reference disagrees with encode for {framing:?}"
            );
        }
        // One byte at a time, a few fixed patterns, and every 2-way split.
        for sizes in [
            vec![1],
            vec![2],
            vec![3, 1, 4, 1, 5],
            vec![64],
            vec![stream.len()],
        ] {
            assert_eq!(
                decode_split(&framing, &stream, &sizes),
                expect,
                "{framing:?} {sizes:?}"
            );
        }
        for cut in 0..stream.len() {
            let sizes = [cut.max(1), stream.len()];
            assert_eq!(
                decode_split(&framing, &stream, &sizes),
                expect,
                "{framing:?} cut {cut}"
            );
        }
    }
}

#[test]
fn raw_delivers_chunks_as_they_come() {
    let mut dec = Decoder::new(Framing::Raw);
    assert_eq!(
        dec.decode(b"abc").unwrap(),
        (3, Some(Packet::Borrowed(b"abc")))
    );
    assert_eq!(dec.decode(b"").unwrap(), (0, None));
}

#[test]
fn whole_packets_inside_one_input_are_borrowed() {
    let mut dec = Decoder::new(lp(4, true, false, 100));
    let (used, p) = dec.decode(b"\0\0\0\x03abc\0\0").unwrap();
    assert_eq!(used, 7);
    assert!(matches!(p, Some(Packet::Borrowed(b"abc"))));
}

#[test]
fn oversize_headers_fail_before_anything_is_buffered() {
    for (framing, header) in [
        (lp(4, true, false, 1 << 20), vec![0xFF, 0xFF, 0xFF, 0xFF]),
        (
            lp(8, true, false, 1 << 20),
            (1u64 << 63).to_be_bytes().to_vec(),
        ),
        (lp(2, true, false, 1000), 1001u16.to_be_bytes().to_vec()),
    ] {
        let mut dec = Decoder::new(framing);
        let err = dec.decode(&header).unwrap_err();
        assert!(matches!(err, FrameError::PacketTooLarge { .. }), "{err:?}");
        assert_eq!(dec.allocated(), 0, "allocated for a refused body");
    }
}

#[test]
fn declared_body_is_not_allocated_ahead_of_its_bytes() {
    let mut dec = Decoder::new(lp(4, true, false, 16 << 20));
    dec.decode(&(16u32 << 20).to_be_bytes()).unwrap();
    dec.decode(&[1u8; 1024]).unwrap();
    assert!(dec.allocated() <= 2048, "capacity {}", dec.allocated());
}

#[test]
fn zero_length_header_is_an_empty_packet() {
    let mut dec = Decoder::new(lp(4, true, false, 10));
    let (used, p) = dec.decode(&[0, 0, 0, 0, 9]).unwrap();
    assert_eq!(used, 4);
    assert_eq!(p.unwrap().as_slice(), b"");
}

#[test]
fn header_counting_itself_must_cover_itself() {
    let mut dec = Decoder::new(lp(2, true, true, 10));
    assert!(matches!(
        dec.decode(&[0, 1]).unwrap_err(),
        FrameError::HeaderTooShort { .. }
    ));
}

#[test]
fn max_line_bytes_without_a_delimiter_fail() {
    let framing = lines(b"\r\n", 16, true);
    let mut dec = Decoder::new(framing.clone());
    assert!(dec.decode(&[b'x'; 16]).is_err());
    // Split: fails at the 16th byte, not before.
    let mut dec = Decoder::new(framing.clone());
    assert_eq!(dec.decode(&[b'x'; 15]).unwrap(), (15, None));
    assert!(dec.decode(b"y").is_err());
    // 14 bytes + CRLF = 16 fits exactly.
    let mut dec = Decoder::new(framing);
    dec.decode(&[b'x'; 14]).unwrap();
    assert_eq!(dec.decode(b"\r").unwrap(), (1, None));
    assert_eq!(
        dec.decode(b"\n").unwrap().1.unwrap().as_slice(),
        &[b'x'; 14]
    );
}

#[test]
fn delimiter_split_across_reads() {
    let mut dec = Decoder::new(lines(b"\r\n", 100, true));
    assert_eq!(dec.decode(b"hello\r").unwrap(), (6, None));
    let (used, p) = dec.decode(b"\nworld").unwrap();
    assert_eq!(used, 1);
    assert_eq!(p.unwrap().as_slice(), b"hello");
}

#[test]
fn switching_rules_reframes_buffered_bytes() {
    // A header line, then a 5-byte body, then lines again; all in one read,
    // and again split in every way.
    let stream = b"LEN 5\r\nhelloNEXT\r\nte";
    for cut in 1..stream.len() {
        let mut dec = Decoder::new(lines(b"\r\n", 100, true));
        let mut got = Vec::new();
        for piece in [&stream[..cut], &stream[cut..]] {
            let mut piece: &[u8] = piece;
            while let (used, Some(p)) = dec.decode(piece).unwrap() {
                piece = &piece[used..];
                let p = p.as_slice().to_vec();
                if p == b"LEN 5" {
                    dec.set_framing(Framing::Exactly(5));
                } else if p == b"hello" {
                    dec.set_framing(lines(b"\r\n", 100, true));
                }
                got.push(p);
            }
        }
        assert_eq!(
            got,
            vec![b"LEN 5".to_vec(), b"hello".to_vec(), b"NEXT".to_vec()],
            "cut {cut}"
        );
        assert_eq!(dec.buffered(), 2, "'te' waits for its delimiter");
    }
}

#[test]
fn encode_rejects_what_the_header_cannot_hold() {
    let mut out = Vec::new();
    assert!(lp(1, true, false, 1000)
        .encode(&[0; 256], &mut out)
        .is_err());
    assert!(lp(1, true, true, 1000).encode(&[0; 255], &mut out).is_err());
    assert!(lp(1, true, false, 1000).encode(&[0; 255], &mut out).is_ok());
}

#[test]
fn validate_names_the_argument() {
    assert_eq!(
        lp(3, true, false, 10).validate().unwrap_err().argument,
        "header_size"
    );
    assert_eq!(
        lines(b"", 10, true).validate().unwrap_err().argument,
        "delimiter"
    );
    assert_eq!(
        lines(&[b'x'; 17], 100, true)
            .validate()
            .unwrap_err()
            .argument,
        "delimiter"
    );
    assert_eq!(Framing::Exactly(0).validate().unwrap_err().argument, "n");
}

fn any_framing() -> impl Strategy<Value = Framing> {
    prop_oneof![
        (
            prop::sample::select(vec![1u8, 2, 4, 8]),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(h, be, inc)| lp(h, be, inc, 70_000)),
        (
            prop::collection::vec(any::<u8>(), 1..4),
            8usize..300,
            any::<bool>()
        )
            .prop_map(|(d, max, strip)| lines(&d, max.max(d.len()), strip)),
        (1usize..50).prop_map(Framing::Exactly),
        (1usize..100, 16usize..400, 16usize..100).prop_map(|(b, c, i)| Framing::Resp(
            resp::Limits {
                max_bulk: b,
                max_command: c,
                max_inline: i,
            }
        )),
    ]
}

/// RESP commands: arrays of bulk strings (binary, CRLF inside) and inline lines.
fn resp_stream() -> impl Strategy<Value = Vec<u8>> {
    let arg = prop::collection::vec(prop::sample::select(b"ab\r\n*$0".to_vec()), 0..12);
    let array = prop::collection::vec(arg, 0..5).prop_map(|args| {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(&a);
            out.extend_from_slice(b"\r\n");
        }
        out
    });
    let inline = prop::collection::vec(prop::sample::select(b"PING x\t".to_vec()), 0..10).prop_map(
        |mut l| {
            l.extend_from_slice(b"\r\n");
            l
        },
    );
    prop::collection::vec(prop_oneof![array, inline], 0..10).prop_map(|cmds| cmds.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn arbitrary_bytes_decode_like_the_reference(
        framing in any_framing(),
        stream in prop::collection::vec(any::<u8>(), 0..600),
        sizes in prop::collection::vec(1usize..40, 1..8),
    ) {
        prop_assert_eq!(decode_split(&framing, &stream, &sizes), decode_all(&framing, &stream));
    }

    #[test]
    fn resp_commands_at_every_split_decode_like_the_reference(
        stream in resp_stream(),
        sizes in prop::collection::vec(1usize..20, 1..8),
    ) {
        let framing = Framing::Resp(resp::Limits { max_bulk: 1 << 16, max_command: 1 << 20, max_inline: 1024 });
        let expect = decode_all(&framing, &stream);
        prop_assert_eq!(&expect.1, &None);
        prop_assert_eq!(expect.0.concat(), stream.clone());
        prop_assert_eq!(decode_split(&framing, &stream, &sizes), expect.clone());
        prop_assert_eq!(decode_split(&framing, &stream, &[1]), expect);
    }

    #[test]
    fn encode_then_decode_round_trips(
        (h, be, inc) in (prop::sample::select(vec![1u8, 2, 4, 8]), any::<bool>(), any::<bool>()),
        packets in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..20),
        sizes in prop::collection::vec(1usize..64, 1..8),
    ) {
        let framing = lp(h, be, inc, 70_000);
        let stream = encode_all(&framing, &packets);
        prop_assert_eq!(decode_split(&framing, &stream, &sizes), (packets, None));
    }
}

/// A `PacketAlloc` over vectors that counts what it was asked for.
#[derive(Debug, Default)]
struct VecAlloc(std::sync::Mutex<Vec<usize>>);

#[derive(Debug)]
struct VecBuf(Vec<u8>);

impl PacketBuf for VecBuf {
    fn bytes(&self) -> &[u8] {
        &self.0
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any> {
        self
    }
}

impl PacketAlloc for VecAlloc {
    fn alloc(&self, len: usize) -> Option<Box<dyn PacketBuf>> {
        self.0.lock().unwrap().push(len);
        Some(Box::new(VecBuf(vec![0xEE; len])))
    }
}

#[test]
fn large_packets_are_built_once_in_the_allocators_buffer() {
    let alloc = std::sync::Arc::new(VecAlloc::default());
    let framing = lp(4, true, false, 1 << 20);
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    let small = vec![9u8; 1000];
    let stream = encode_all(&framing, &[big.clone(), small.clone(), big.clone()]);
    let mut d = Decoder::new(framing.clone());
    d.set_alloc(Some(alloc.clone()));
    let mut got = Vec::new();
    for chunk in stream.chunks(16 * 1024) {
        let mut at = 0;
        while at < chunk.len() {
            let (used, packet) = d.decode(&chunk[at..]).expect("valid stream");
            at += used;
            match packet {
                Some(Packet::Built(b)) => got.push(("built", b.bytes().to_vec())),
                Some(p) => got.push(("copied", p.as_slice().to_vec())),
                None => assert!(used > 0 || at == chunk.len()),
            }
            if used == 0 {
                break;
            }
        }
        // A packet in progress is counted as held (and its buffer as allocated).
        if d.in_packet() {
            assert!(d.allocated() >= d.buffered());
        }
    }
    assert_eq!(
        got,
        vec![("built", big.clone()), ("copied", small), ("built", big)],
        "large packets built (sized from the header), small ones as before"
    );
    assert_eq!(*alloc.0.lock().unwrap(), vec![100_000, 100_000]);
}

#[test]
fn a_rule_change_in_the_middle_of_a_built_packet_replays_its_bytes() {
    let alloc = std::sync::Arc::new(VecAlloc::default());
    let mut d = Decoder::new(lp(4, true, false, 1 << 20));
    d.set_alloc(Some(alloc.clone()));
    let mut input = (BUILD_MIN_BYTES as u32 * 2).to_be_bytes().to_vec();
    input.extend(std::iter::repeat_n(b'a', 100));
    input.extend_from_slice(b"\n");
    let (used, p) = d.decode(&input[..50]).expect("ok");
    assert!(p.is_none() && used == 50);
    assert_eq!(d.buffered(), 50);
    // Switch to lines: the header and the 46 body bytes seen are re-framed.
    d.set_framing(lines(b"\n", 1 << 20, true));
    let mut out = Vec::new();
    let mut rest = &input[50..];
    loop {
        let (used, p) = d.decode(rest).expect("ok");
        rest = &rest[used..];
        match p {
            Some(p) => out.push(p.as_slice().to_vec()),
            None if used == 0 || rest.is_empty() => break,
            None => {}
        }
    }
    let mut want = (BUILD_MIN_BYTES as u32 * 2).to_be_bytes().to_vec();
    want.extend(std::iter::repeat_n(b'a', 100));
    assert_eq!(out, vec![want]);
}
