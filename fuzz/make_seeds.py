"""Write the committed seed inputs, corpus/<target>/seed-*; layouts in src/lib.rs.

Run from anywhere: python3 fuzz/make_seeds.py. libFuzzer adds its own finds
to the same folders under hash names, which fuzz/.gitignore keeps out of git.
"""

import pathlib
import struct

CORPUS = pathlib.Path(__file__).resolve().parent / "corpus"


def split(*lens: int) -> bytes:
    return bytes([len(lens), *lens])


SEEDS = {
    "length_prefixed": {
        # 2-byte big-endian, max_packet 100, a byte at a time.
        "be16-bytewise": bytes([0x05, 100]) + split(1) + b"\x00\x03abc\x00\x00\x00\x05hello",
        # 4-byte little-endian counting itself, pieces of 3 and 5.
        "le32-includes-header": bytes([0x0A, 50]) + split(3, 5)
        + struct.pack("<I", 8) + b"ping" + struct.pack("<I", 4) + struct.pack("<I", 6) + b"ok",
        # 1-byte header, max_packet 3: the second header is too large.
        "u8-too-large": bytes([0x00, 3]) + split(2) + b"\x02ab\x09xxxx",
        # 8-byte header declaring 1 GiB under the 1 GiB ceiling: no allocation ahead.
        "u64-declares-1gib": bytes([0xF7, 0]) + split(7) + struct.pack(">Q", 1 << 30) + b"x" * 40,
    },
    "delimited": {
        # \r\n, strip, max_line 42, a byte at a time.
        "crlf-strip-bytewise": bytes([0x11, 40]) + b"\r\n" + split(1)
        + b"hello\r\nworld\r\n\r\npartial",
        # Small alphabet: delimiter aab (self-overlapping), pieces of 2 and 3.
        "aab-overlap": bytes([0x22, 20]) + bytes([0, 0, 1]) + split(2, 3)
        + bytes([0, 0, 0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 1, 0, 1, 0, 0]),
        # \n kept, max_line 5: the second line is too long.
        "lf-too-long": bytes([0x00, 4]) + b"\n" + split(4) + b"ab\ncdefgh\n",
        # A 16-byte delimiter, max_line 16 + 16 * 16.
        "sixteen-byte-delimiter": bytes([0x8F, 16]) + b"<<END-OF-RECORD>" + split(5, 11)
        + b"first<<END-OF-RECORD>second<<END-OF-REC<<END-OF-RECORD>",
    },
    "exactly": {
        "seven-uneven-pieces": bytes([0, 6]) + split(1, 4, 10) + bytes(range(30)),
        "one-bytewise-with-empty": bytes([0, 0]) + split(1, 0) + b"abcdef",
        "ceiling-1gib": bytes([0xC0, 0]) + split(60) + b"y" * 100,
    },
    "switching": {
        # Length-prefixed; lines from right after its first packet; exactly(3)
        # from right after the first line; raw from right after a record.
        "lp-lines-exactly-raw": bytes([0, 0x20, 0x05, 100])
        + bytes([17]) + b"\x00\x03abcline1\nline2\n"
        + bytes([0xC0, 0x00, 50]) + b"\n"
        + bytes([0xE0, 0, 2]) + bytes([6]) + b"xyzxyz"
        + bytes([0x80]) + bytes([8]) + b"rawbytes",
        # A 1-byte-header packet half received, then exactly(2) re-frames it.
        "switch-mid-packet": bytes([0, 0x20, 0x00, 50])
        + bytes([4]) + b"\x05abc"
        + bytes([0xE0, 0, 1]) + bytes([3]) + b"def",
    },
}

for target, seeds in SEEDS.items():
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in seeds.items():
        (folder / f"seed-{name}").write_bytes(data)
