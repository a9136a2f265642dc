//! Length-prefixed framing (header 1/2/4/8 bytes, either byte order, with
//! or without counting itself, small or huge max_packet), the stream fed in
//! fuzzer-chosen pieces, checked against the reference framer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netring_fuzz::{check, cut, length_prefixed, split_lengths, Input};

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let framing = length_prefixed(&mut input);
    let lens = split_lengths(&mut input);
    let stream = input.rest();
    check(framing, stream, &cut(stream.len(), &lens));
});
