//! Fixed-size framing (1 to 16,384 bytes, or the 1 GiB ceiling), the stream
//! fed in fuzzer-chosen pieces, checked against the reference framer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netring_fuzz::{check, cut, exactly, split_lengths, Input};

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let framing = exactly(&mut input);
    let lens = split_lengths(&mut input);
    let stream = input.rest();
    check(framing, stream, &cut(stream.len(), &lens));
});
