//! RESP requests (arrays of bulk strings, inline lines, and whatever else
//! the fuzzer makes of them), the stream fed in fuzzer-chosen pieces,
//! checked against the reference framer (a from-scratch scan per command).
#![no_main]

use libfuzzer_sys::fuzz_target;
use netring_fuzz::{check, cut, resp, split_lengths, Input};

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let framing = resp(&mut input);
    let lens = split_lengths(&mut input);
    let stream = input.rest();
    check(framing, stream, &cut(stream.len(), &lens));
});
