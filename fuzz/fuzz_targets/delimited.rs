//! Delimited framing (delimiter 1 to 16 bytes, strip or keep, small or huge
//! max_line), the stream fed in fuzzer-chosen pieces, checked against the
//! reference framer. The small-alphabet bit maps delimiter and stream onto
//! `a`/`b`, so partial and overlapping delimiter matches are the norm.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netring_fuzz::{check, cut, delimited, small_alphabet, split_lengths, Input};

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let (framing, small) = delimited(&mut input);
    let lens = split_lengths(&mut input);
    let mut stream = input.rest().to_vec();
    if small {
        small_alphabet(&mut stream);
    }
    check(framing, &stream, &cut(stream.len(), &lens));
});
