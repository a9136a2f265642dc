//! `set_framing` between packets (and mid-packet, between feeds): bytes
//! buffered under the old rule are re-framed under the new one. Every rule's
//! packets are checked against the reference framer from the end of the
//! last packet before the switch; buffering stays within the rule's limit
//! or what the switch carried over; packets only ever come from bytes
//! received; nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netring_fuzz::{any_framing, check, small_alphabet, Input, Op};

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let small = input.byte() & 1 != 0;
    let kind = input.byte();
    let framing = any_framing(kind, &mut input);
    let mut stream = Vec::new();
    let mut ops = Vec::new();
    while !input.is_empty() {
        let op = input.byte();
        if op < 0x80 {
            let piece = input.bytes(usize::from(op));
            stream.extend_from_slice(piece);
            ops.push(Op::Feed(piece.len()));
        } else {
            ops.push(Op::Switch(any_framing(op, &mut input)));
        }
    }
    if small {
        small_alphabet(&mut stream);
    }
    check(framing, &stream, &ops);
});
