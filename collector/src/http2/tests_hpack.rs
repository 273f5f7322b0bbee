//! The HPACK decoder: RFC 7541's examples (Appendix C) with the dynamic table after each block,
//! differential tests against loona-hpack's decoder on blocks that httlib-hpack encodes (two
//! implementations written apart from this one), Huffman round trips, malformed blocks, random
//! bytes, and a timing comparison (printed with `--nocapture`).
use std::hint::black_box;
use std::time::Instant;

use httlib_hpack::Encoder;

use super::*;

type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// Hex, spaces ignored (as RFC 7541 prints its examples).
fn hex(s: &str) -> Vec<u8> {
    let d: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    d.chunks(2).map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap()).collect()
}

fn fields(l: &[(&str, &str)]) -> Fields {
    l.iter().map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec())).collect()
}

fn decode(d: &mut Decoder, block: &[u8]) -> Result<Fields, Error> {
    let mut out = Vec::new();
    d.decode(block, |n, v| out.push((n.to_vec(), v.to_vec()))).map(|()| out)
}

/// The dynamic table, newest first, checked against its size as HPACK counts it.
fn table(d: &Decoder) -> Fields {
    let t = &d.table;
    let out: Fields = (0..t.entries.len())
        .map(|j| t.get(62 + j, false).unwrap().map(|(n, v)| (n.to_vec(), v.to_vec())).unwrap())
        .collect();
    assert_eq!(t.size, out.iter().map(|(n, v)| n.len() + v.len() + 32).sum::<usize>());
    assert!(t.size <= t.max && t.max <= d.max_allowed);
    assert!(t.bytes.len() <= t.room() && t.bytes.capacity() <= t.room().max(64), "{} {}", t.bytes.capacity(), t.max);
    out
}

/// Decodes `block`, checking the fields, then the dynamic table (newest first) and its size.
fn step(d: &mut Decoder, block: &[u8], want: &[(&str, &str)], want_table: &[(&str, &str)], size: usize) {
    assert_eq!(decode(d, block).unwrap(), fields(want), "{block:02x?}");
    assert_eq!(table(d), fields(want_table), "{block:02x?}");
    assert_eq!(d.table.size, size, "{block:02x?}");
}

/// Appends an integer with a `prefix`-bit prefix and the bits `flags` above it (§5.1).
fn int_encode(mut v: usize, prefix: u32, flags: u8, out: &mut Vec<u8>) {
    let max = (1 << prefix) - 1;
    if v < max {
        out.push(flags | v as u8);
        return;
    }
    out.push(flags | max as u8);
    v -= max;
    while v >= 128 {
        out.push(0x80 | v as u8);
        v >>= 7;
    }
    out.push(v as u8);
}

#[test]
fn rfc7541_c1_integers() {
    let read = |b: &[u8], prefix| {
        let mut rest = b;
        int(&mut rest, prefix).map(|v| (v, rest.len()))
    };
    assert_eq!(read(&[0xea], 5), Ok((10, 0)));
    assert_eq!(read(&[31, 154, 10, 0x82], 5), Ok((1337, 1)));
    assert_eq!(read(&[42], 8), Ok((42, 0)));
    // u32::MAX is the largest: 31 + 0xffff_ffe0 in 7-bit groups.
    assert_eq!(read(&[31, 0xe0, 0xff, 0xff, 0xff, 0x0f], 5), Ok((u32::MAX as usize, 0)));
    assert_eq!(read(&[31, 0xe1, 0xff, 0xff, 0xff, 0x0f], 5), Err(Error::Integer));
    assert_eq!(read(&[31, 0x80, 0x80, 0x80, 0x80, 0x10], 5), Err(Error::Integer));
    assert_eq!(read(&[31, 0x80, 0x80, 0x80, 0x80, 0x80, 0], 5), Err(Error::Integer));
    assert_eq!(read(&[], 5), Err(Error::Truncated));
    assert_eq!(read(&[31], 5), Err(Error::Truncated));
    assert_eq!(read(&[31, 0x80], 5), Err(Error::Truncated));
}

#[test]
fn rfc7541_c2_field_representations() {
    let mut d = Decoder::new(4096);
    let kv = [("custom-key", "custom-header")];
    step(&mut d, &hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572"), &kv, &kv, 55);
    let mut d = Decoder::new(4096);
    step(&mut d, &hex("040c 2f73 616d 706c 652f 7061 7468"), &[(":path", "/sample/path")], &[], 0);
    step(&mut d, &hex("1008 7061 7373 776f 7264 0673 6563 7265 74"), &[("password", "secret")], &[], 0);
    step(&mut d, &hex("82"), &[(":method", "GET")], &[], 0);
}

const REQ1: [(&str, &str); 4] =
    [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com")];
const REQ3: [(&str, &str); 5] = [
    (":method", "GET"),
    (":scheme", "https"),
    (":path", "/index.html"),
    (":authority", "www.example.com"),
    ("custom-key", "custom-value"),
];
const AUTH: (&str, &str) = (":authority", "www.example.com");
const NO_CACHE: (&str, &str) = ("cache-control", "no-cache");

fn requests(blocks: [&str; 3]) {
    let mut d = Decoder::new(4096);
    step(&mut d, &hex(blocks[0]), &REQ1, &[AUTH], 57);
    let mut req2 = REQ1.to_vec();
    req2.push(NO_CACHE);
    step(&mut d, &hex(blocks[1]), &req2, &[NO_CACHE, AUTH], 110);
    step(&mut d, &hex(blocks[2]), &REQ3, &[("custom-key", "custom-value"), NO_CACHE, AUTH], 164);
}

#[test]
fn rfc7541_c3_requests() {
    requests([
        "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        "8286 84be 5808 6e6f 2d63 6163 6865",
        "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
    ]);
}

#[test]
fn rfc7541_c4_requests_with_huffman() {
    requests([
        "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
        "8286 84be 5886 a8eb 1064 9cbf",
        "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
    ]);
}

const DATE1: &str = "Mon, 21 Oct 2013 20:13:21 GMT";
const DATE2: &str = "Mon, 21 Oct 2013 20:13:22 GMT";
const LOC: &str = "https://www.example.com";
const COOKIE: &str = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1";

/// The responses of C.5 and C.6: a 256-byte table, with evictions.
fn responses(d: &mut Decoder, blocks: [&str; 3]) {
    let (private, date, loc) = (("cache-control", "private"), ("date", DATE1), ("location", LOC));
    let first = [(":status", "302"), private, date, loc];
    step(d, &hex(blocks[0]), &first, &[loc, date, private, (":status", "302")], 222);
    let second = [(":status", "307"), private, date, loc];
    // `:status: 302` evicted to make room for `:status: 307`.
    step(d, &hex(blocks[1]), &second, &[(":status", "307"), loc, date, private], 222);
    let third =
        [(":status", "200"), private, ("date", DATE2), loc, ("content-encoding", "gzip"), ("set-cookie", COOKIE)];
    let table = [("set-cookie", COOKIE), ("content-encoding", "gzip"), ("date", DATE2)];
    step(d, &hex(blocks[2]), &third, &table, 215);
}

const C5: [&str; 3] = [
    "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32
     3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
    "4803 3330 37c1 c0bf",
    "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d 54c0 5a04 677a 6970
     7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 5541 5851 5745 4f49 553b 206d 6178 2d61
     6765 3d33 3630 303b 2076 6572 7369 6f6e 3d31",
];
const C6: [&str; 3] = [
    "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad
     1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
    "4883 640e ffc1 c0bf",
    "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2
     e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
];

#[test]
fn rfc7541_c5_responses() {
    responses(&mut Decoder::new(256), C5);
}

#[test]
fn rfc7541_c6_responses_with_huffman() {
    responses(&mut Decoder::new(256), C6);
    // The same after a size update from HTTP/2's 4096 to 256; index 66 is past the table.
    let mut d = Decoder::new(4096);
    step(&mut d, &hex("3fe101 82"), &[(":method", "GET")], &[], 0);
    assert_eq!(d.table.max, 256);
    responses(&mut d, C6);
    assert_eq!(decode(&mut d, &hex("c2")), Err(Error::Index));
}

#[test]
fn static_table_as_loona_hpack() {
    let mut reference = loona_hpack::Decoder::new();
    let mut d = Decoder::new(4096);
    for i in 1..=61u8 {
        let block = [0x80 | i];
        assert_eq!(decode(&mut d, &block).unwrap(), reference.decode(&block).unwrap(), "{i}");
    }
}

#[test]
fn literal_names_indexed_and_evicted() {
    let mut d = Decoder::new(4096);
    // Table size 100; `name-x: v…` (78) is the name of the next field, which evicts it (§4.4).
    let mut block = hex("3f45 4006");
    block.extend(b"name-x");
    block.push(40);
    block.extend([b'v'; 40]);
    assert_eq!(decode(&mut d, &block).unwrap().len(), 1);
    let mut block = vec![0x40 | 62, 30];
    block.extend([b'w'; 30]);
    let w = "w".repeat(30);
    step(&mut d, &block, &[("name-x", &w)], &[("name-x", &w)], 68);
    // Without indexing and never indexed, by a dynamic name: the table does not change.
    let block = hex("0f2f 0161 1f2f 0162");
    assert_eq!(decode(&mut d, &block).unwrap(), fields(&[("name-x", "a"), ("name-x", "b")]));
    assert_eq!(table(&d), fields(&[("name-x", &w)]));
    // A field larger than the table empties it.
    let mut block = vec![0x40, 0x7f, 0x00];
    block.extend([b'n'; 127]);
    block.push(0);
    decode(&mut d, &block).unwrap();
    assert_eq!((table(&d), d.table.size, d.table.bytes.len()), (vec![], 0, 0));
    // Size updates: several at the start; none after a field; none above the maximum allowed.
    step(&mut d, &hex("20 3fe11f 82"), &[(":method", "GET")], &[], 0);
    assert_eq!(d.table.max, 4096);
    assert_eq!(decode(&mut d, &hex("82 20")), Err(Error::LateSizeUpdate));
    let mut d = Decoder::new(4096);
    assert_eq!(decode(&mut d, &hex("3fe21f")), Err(Error::TableSize));
}

#[test]
fn max_allowed() {
    // A new decoder's table is 4096 bytes, or less if that is all that is allowed.
    assert_eq!(Decoder::new(100).table.max, 100);
    let mut d = Decoder::new(65536);
    assert_eq!(d.table.max, 4096);
    // Only a size update grows the table.
    let mut block = hex("3fe1ff03 40 01 61 7f 00");
    block.extend([b'x'; 127]);
    let x = "x".repeat(127);
    step(&mut d, &block, &[("a", &x)], &[("a", &x)], 160);
    assert_eq!(d.table.max, 65536);
    for i in 0..1000 {
        let v = format!("{i:0100}");
        let mut block = vec![0x40, 1, b'b', 100];
        block.extend(v.as_bytes());
        decode(&mut d, &block).unwrap();
    }
    assert_eq!(table(&d).len(), 65536 / 133);
    // A lower maximum shrinks the table at once; a size update must then be at most that.
    d.set_max_allowed(1000);
    assert_eq!((table(&d).len(), d.table.max), (7, 1000));
    assert!(d.table.bytes.capacity() <= 1500);
    assert_eq!(decode(&mut d, &hex("be")).unwrap()[0].1, format!("{:0100}", 999).into_bytes());
    assert_eq!(decode(&mut d, &hex("c5")), Err(Error::Index));
    let mut d = Decoder::new(4096);
    d.set_max_allowed(1000);
    assert_eq!(decode(&mut d, &hex("3fca07")), Err(Error::TableSize));
    let mut d = Decoder::new(4096);
    d.set_max_allowed(1000);
    step(&mut d, &hex("3fc907 3f2f 82"), &[(":method", "GET")], &[], 0);
    assert_eq!(d.table.max, 78);
    d.set_max_allowed(8192);
    assert_eq!(d.table.max, 78);
}

#[test]
fn malformed_blocks() {
    for (block, err) in [
        ("ff", Error::Truncated),
        ("1f", Error::Truncated),
        ("40", Error::Truncated),
        ("00", Error::Truncated),
        ("0003 6162", Error::Truncated),
        ("400a 6375", Error::Truncated),
        ("0001 61", Error::Truncated),
        ("0001 617f", Error::Truncated),
        ("80", Error::Index),
        ("be", Error::Index),
        ("ff80 01", Error::Index),
        ("7e 00", Error::Index),
        ("0f2f 00", Error::Index),
        ("3fe21f", Error::TableSize),
        ("82 3f", Error::LateSizeUpdate),
        ("82 20", Error::LateSizeUpdate),
        // `a` (00011) then 000: padding not all ones.
        ("0081 1800", Error::Huffman),
        // 8 bits of padding; `a` then 11 bits of it.
        ("0081 ff00", Error::Huffman),
        ("0082 1fff 00", Error::Huffman),
        // EOS (30 ones) in a string, and after a symbol.
        ("0084 ffff ffff 00", Error::Huffman),
        ("0085 1fff ffff ff00", Error::Huffman),
        ("ffff ffff ff7f", Error::Integer),
        ("7f80 8080 8080 00", Error::Integer),
        ("0f ffff ffff 0f", Error::Integer),
    ] {
        let mut d = Decoder::new(4096);
        assert_eq!(decode(&mut d, &hex(block)), Err(err), "{block}");
        // Its table emptied and no longer known: a dynamic index is unknown from then on.
        assert_eq!((d.table.size, d.table.entries.len(), d.partial()), (0, 0, true));
        assert_eq!(decode(&mut d, &hex("82 be")).unwrap(), fields(&[(":method", "GET")]), "{block}");
        assert_eq!(d.unknown(), 1);
    }
    // Valid neighbours: `a` with 3 bits of padding, an empty Huffman string, an empty block.
    let mut d = Decoder::new(4096);
    assert_eq!(decode(&mut d, &hex("0081 1f00 0080 80")).unwrap(), fields(&[("a", ""), ("", "")]));
    assert_eq!(decode(&mut d, &[]).unwrap(), vec![]);
}

/// Huffman-codes `s` with [`huffman::CODES`].
fn huffman_encode(s: &[u8]) -> Vec<u8> {
    let (mut out, mut acc, mut bits) = (Vec::new(), 0u64, 0);
    for &b in s {
        let (code, len) = huffman::CODES[usize::from(b)];
        acc = acc << len | u64::from(code);
        bits += u32::from(len);
        while bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    if bits > 0 {
        out.push((acc << (8 - bits)) as u8 | (0xff >> bits));
    }
    out
}

/// A block with one field not indexed, `x: <value Huffman-coded>`.
fn huffman_block(coded: &[u8]) -> Vec<u8> {
    let mut block = vec![0, 1, b'x'];
    int_encode(coded.len(), 7, 0x80, &mut block);
    block.extend(coded);
    block
}

#[test]
fn huffman_codes_are_rfc7541s() {
    // Some of Appendix B's codes, as hex aligned to the least significant bit.
    for (sym, code, len) in [
        (0, 0x1ff8, 13),
        (1, 0x7fffd8, 23),
        (10, 0x3ffffffc, 30),
        (22, 0x3ffffffe, 30),
        (32, 0x14, 6),
        (b'/' as usize, 0x18, 6),
        (b'0' as usize, 0x0, 5),
        (b'<' as usize, 0x7ffc, 15),
        (b'X' as usize, 0xfc, 8),
        (b'\\' as usize, 0x7fff0, 19),
        (b'a' as usize, 0x3, 5),
        (b'z' as usize, 0x7b, 7),
        (b'~' as usize, 0x1ffd, 13),
        (127, 0xffffffc, 28),
        (128, 0xfffe6, 20),
        (195, 0x7fff1, 19),
        (200, 0x3ffffe2, 26),
        (249, 0xffffffe, 28),
        (254, 0x7fffff0, 27),
        (255, 0x3ffffee, 26),
        (256, 0x3fffffff, 30),
    ] {
        assert_eq!(huffman::CODES[sym], (code, len), "{sym}");
    }
}

#[test]
fn huffman_round_trips() {
    let mut reference = loona_hpack::Decoder::new();
    let mut d = Decoder::new(4096);
    let all: Vec<u8> = (0..=255).collect();
    let mut strings: Vec<Vec<u8>> = (0..=255).map(|b| vec![b]).collect();
    strings.extend(all.chunks(40).map(<[u8]>::to_vec));
    strings.extend([b"www.example.com".to_vec(), b"application/grpc".to_vec(), vec![]]);
    for s in &strings {
        let block = huffman_block(&huffman_encode(s));
        let want = vec![(b"x".to_vec(), s.clone())];
        assert_eq!(decode(&mut d, &block).unwrap(), want, "{s:?}");
        assert_eq!(reference.decode(&block).unwrap(), want, "{s:?}");
        // httlib-hpack's encoder codes the same.
        let mut block = Vec::new();
        let mut enc = Encoder::default();
        enc.encode((b"x".to_vec(), s.clone(), Encoder::HUFFMAN_VALUE), &mut block).unwrap();
        assert_eq!(decode(&mut d, &block).unwrap(), want, "{s:?}");
    }
    // All 256 values in one string (past a 127-byte length).
    let block = huffman_block(&huffman_encode(&all));
    assert_eq!(decode(&mut d, &block).unwrap(), vec![(b"x".to_vec(), all.clone())]);
    assert_eq!(reference.decode(&block).unwrap(), vec![(b"x".to_vec(), all)]);
}

/// xorshift64*: a deterministic stream of pseudo-random numbers.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn string(&mut self, max: usize) -> Vec<u8> {
        let len = self.below(max + 1);
        let binary = self.below(8) == 0;
        (0..len).map(|_| if binary { self.next() as u8 } else { b' ' + self.below(95) as u8 }).collect()
    }
}

const NAMES: [&str; 12] = [
    ":method",
    ":path",
    ":authority",
    ":status",
    "content-type",
    "user-agent",
    "cookie",
    "grpc-timeout",
    "grpc-status",
    "x-request-id",
    "accept-encoding",
    "te",
];

/// A random header list: names and values of pools (which the encoder finds in its table) or
/// new, and with each field how to encode it (httlib-hpack's flags).
fn header_list(rng: &mut Rng, pool: &mut Vec<Vec<u8>>) -> Vec<(Vec<u8>, Vec<u8>, u8)> {
    (0..1 + rng.below(12))
        .map(|_| {
            let name = match rng.below(3) {
                0 => rng.string(30).to_ascii_lowercase(),
                _ => NAMES[rng.below(NAMES.len())].as_bytes().to_vec(),
            };
            let value = if rng.below(2) == 0 && !pool.is_empty() {
                pool[rng.below(pool.len())].clone()
            } else {
                let max = if rng.below(10) == 0 { 300 } else { 40 };
                let v = rng.string(max);
                pool.push(v.clone());
                v
            };
            let huffman = rng.below(4) as u8;
            let indexing = [Encoder::WITH_INDEXING, Encoder::WITH_INDEXING, 0, Encoder::NEVER_INDEXED][rng.below(4)];
            let best = if rng.below(4) == 0 { 0 } else { Encoder::BEST_FORMAT };
            (name, value, huffman | indexing | best)
        })
        .collect()
}

#[test]
fn partial_table() {
    let mut d = Decoder::new(4096).with_ceiling(65536);
    d.forget();
    assert_eq!((d.partial(), d.table.max), (true, 65536));
    // An index beyond the entries seen: unknown, not an error.
    assert_eq!(decode(&mut d, &hex("82 be 85")).unwrap(), fields(&[(":method", "GET"), (":path", "/index.html")]));
    assert_eq!(d.unknown(), 1);
    // Entries added from now on are known: index 62 is the latest.
    let custom = "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572";
    assert_eq!(decode(&mut d, &hex(custom)).unwrap(), fields(&[("custom-key", "custom-header")]));
    assert_eq!((decode(&mut d, &hex("be bf")).unwrap(), d.unknown()), (fields(&[("custom-key", "custom-header")]), 1));
    // A literal named by an entry never seen: unknown, and the entry it adds has no known name.
    assert_eq!((decode(&mut d, &hex("7f01 0178")).unwrap(), d.unknown()), (vec![], 1));
    assert_eq!(
        (decode(&mut d, &hex("be bf c0")).unwrap(), d.unknown()),
        (fields(&[("custom-key", "custom-header")]), 2)
    );
    // Taking its name from it is unknown too (without indexing: nothing added).
    assert_eq!((decode(&mut d, &hex("0f2f 0179")).unwrap(), d.unknown()), (vec![], 1));
    // A size update to 0 evicts everything: the table is known again.
    assert_eq!(decode(&mut d, &hex("20 3f e11f 82")).unwrap(), fields(&[(":method", "GET")]));
    assert!(!d.partial());
    assert_eq!(decode(&mut d, &hex("be")), Err(Error::Index));
}

/// Decodes a block, also returning how many fields were unknown.
fn decode_partial(d: &mut Decoder, block: &[u8]) -> (Fields, usize) {
    let got = decode(d, block).unwrap();
    (got, d.unknown())
}

/// Whether `part` is `whole` with some fields left out, in order.
fn is_subsequence(part: &Fields, whole: &Fields) -> bool {
    let mut it = whole.iter();
    part.iter().all(|f| it.any(|w| w == f))
}

#[test]
fn partial_tables_against_whole_ones() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let (mut known, mut unknown, mut healed) = (0, 0, 0);
    for _ in 0..40 {
        let mut enc = Encoder::default();
        let mut whole = Decoder::new(16384);
        // Joins after a random number of blocks, as the decoder of a connection followed from
        // its middle.
        let join = rng.below(60);
        let mut late = Decoder::new(4096).with_ceiling(65536);
        late.forget();
        let mut pool = Vec::new();
        for i in 0..150 {
            let mut block = Vec::new();
            match rng.below(16) {
                0 => {
                    let size = [64, 256, 1000, 4096, 8192, 16384][rng.below(6)];
                    enc.update_max_dynamic_size(size, &mut block).unwrap();
                }
                1 => {
                    enc.update_max_dynamic_size(0, &mut block).unwrap();
                    enc.update_max_dynamic_size(4096, &mut block).unwrap();
                }
                _ => {}
            }
            let list = header_list(&mut rng, &mut pool);
            for (n, v, flags) in &list {
                enc.encode((n.clone(), v.clone(), *flags), &mut block).unwrap();
            }
            let want = decode(&mut whole, &block).unwrap();
            if i < join {
                continue;
            }
            let (got, n) = decode_partial(&mut late, &block);
            // What it passes is exactly what the whole table gives; the rest is counted.
            assert_eq!(got.len() + n, want.len());
            assert!(is_subsequence(&got, &want));
            if !late.partial() {
                assert_eq!(got, want);
                healed += 1;
            }
            known += got.len();
            unknown += n;
        }
    }
    println!("partial: {known} fields known, {unknown} unknown, {healed} blocks after the table was whole again");
    assert!(known > 10 * unknown && unknown > 0 && healed > 0);
}

#[test]
fn differential_against_loona_hpack() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut blocks, mut updates) = (0, 0);
    for _ in 0..40 {
        let mut enc = Encoder::default();
        let mut reference = loona_hpack::Decoder::new();
        reference.set_max_allowed_table_size(16384);
        let mut d = Decoder::new(16384);
        let mut allowed = 16384;
        let mut pool = Vec::new();
        for _ in 0..150 {
            let mut block = Vec::new();
            match rng.below(12) {
                0 => {
                    let size = [0, 64, 256, 1000, 4096, 8192, 16384][rng.below(7)].min(allowed);
                    enc.update_max_dynamic_size(size, &mut block).unwrap();
                    updates += 1;
                }
                1 => {
                    // Emptied then restored, as encoders clear their tables.
                    enc.update_max_dynamic_size(0, &mut block).unwrap();
                    enc.update_max_dynamic_size(4096.min(allowed), &mut block).unwrap();
                }
                2 => {
                    // SETTINGS lowered: the decoders allow less, and the encoder updates.
                    allowed = [512, 2048, 4096][rng.below(3)];
                    reference.set_max_allowed_table_size(allowed as usize);
                    d.set_max_allowed(allowed as usize);
                    let size = enc.max_dynamic_size().min(allowed);
                    enc.update_max_dynamic_size(size, &mut block).unwrap();
                }
                3 => {
                    allowed = 16384;
                    reference.set_max_allowed_table_size(16384);
                    d.set_max_allowed(16384);
                }
                _ => {}
            }
            let list = header_list(&mut rng, &mut pool);
            for (n, v, flags) in &list {
                enc.encode((n.clone(), v.clone(), *flags), &mut block).unwrap();
            }
            let want: Fields = list.into_iter().map(|(n, v, _)| (n, v)).collect();
            let got = decode(&mut d, &block).unwrap();
            assert_eq!(got, reference.decode(&block).unwrap());
            assert_eq!(got, want);
            assert_eq!(d.table.max, enc.max_dynamic_size() as usize);
            table(&d);
            blocks += 1;
        }
    }
    println!("differential: {blocks} blocks, {updates} size updates");
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(42);
    let mut enc = Encoder::default();
    let mut pool = Vec::new();
    let mut d = Decoder::new(4096);
    let mut ok = 0;
    for i in 0..200_000 {
        let mut block = Vec::new();
        if i % 2 == 0 {
            block.extend((0..rng.below(64)).map(|_| rng.next() as u8));
        } else {
            // A valid block with a few bytes changed, to reach past the first field.
            for (n, v, flags) in header_list(&mut rng, &mut pool) {
                enc.encode((n, v, flags), &mut block).unwrap();
            }
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(block.len());
                block[at] = rng.next() as u8;
            }
            block.truncate(block.len() - rng.below(block.len().min(4)));
        }
        if pool.len() > 1000 {
            pool.clear();
        }
        match decode(&mut d, &block) {
            Ok(_) => ok += 1,
            Err(_) => d = Decoder::new(if i % 3 == 0 { 4096 } else { 256 }),
        }
        table(&d);
        if i % 1000 == 0 {
            enc = Encoder::default();
        }
    }
    println!("random blocks: {ok} of 200000 decoded");
}

fn per_block(n: u32, mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed().as_nanos() as f64 / f64::from(n)
}

#[test]
fn timing_against_loona_hpack() {
    let request: Vec<(&str, &str)> = vec![
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/helloworld.Greeter/SayHello"),
        (":authority", "localhost:50051"),
        ("content-type", "application/grpc"),
        ("user-agent", "grpc-go/1.60.0"),
        ("te", "trailers"),
        ("grpc-timeout", "998726u"),
        ("grpc-accept-encoding", "gzip"),
        ("x-request-id", "6f1c2a9e-43b1-4e55-9d0c-2b7f0d1e8a44"),
    ];
    let response: Vec<(&str, &str)> = vec![
        (":status", "200"),
        ("content-type", "application/grpc"),
        ("grpc-encoding", "identity"),
        ("grpc-accept-encoding", "gzip"),
        ("date", "Tue, 14 May 2024 09:30:12 GMT"),
        ("server", "envoy"),
    ];
    let flags = Encoder::HUFFMAN_NAME | Encoder::HUFFMAN_VALUE | Encoder::WITH_INDEXING | Encoder::BEST_FORMAT;
    for (what, list) in [("gRPC request", request), ("gRPC response", response)] {
        let mut enc = Encoder::default();
        let mut first = Vec::new();
        for (n, v) in &list {
            enc.encode((n.as_bytes().to_vec(), v.as_bytes().to_vec(), flags), &mut first).unwrap();
        }
        let mut again = Vec::new();
        for (n, v) in &list {
            enc.encode((n.as_bytes().to_vec(), v.as_bytes().to_vec(), flags), &mut again).unwrap();
        }
        let n = 2000;
        let ours = per_block(n, || {
            let mut d = Decoder::new(4096);
            d.decode(black_box(&first), |n, v| {
                black_box((n, v));
            })
            .unwrap();
        });
        let theirs = per_block(n, || {
            let mut d = loona_hpack::Decoder::new();
            d.decode_with_cb(black_box(&first), |n, v| {
                black_box((n, v));
            })
            .unwrap();
        });
        // The first block again and again on one decoder: its literals decoded and indexed
        // (evicting), its buffers grown.
        let mut d = Decoder::new(4096);
        let warm = per_block(n * 10, || {
            d.decode(black_box(&first), |n, v| {
                black_box((n, v));
            })
            .unwrap();
        });
        let mut r = loona_hpack::Decoder::new();
        let theirs_warm = per_block(n, || {
            r.decode_with_cb(black_box(&first), |n, v| {
                black_box((n, v));
            })
            .unwrap();
        });
        let ours_again = per_block(n * 10, || {
            d.decode(black_box(&again), |n, v| {
                black_box((n, v));
            })
            .unwrap();
        });
        let theirs_again = per_block(n * 10, || {
            r.decode_with_cb(black_box(&again), |n, v| {
                black_box((n, v));
            })
            .unwrap();
        });
        println!(
            "{what}: first block ({} bytes, Huffman) on a new decoder {ours:.0} ns, loona-hpack \
             {theirs:.0} ns; on a warm decoder {warm:.0} ns, loona-hpack {theirs_warm:.0} ns; next block \
             ({} bytes, indexed) {ours_again:.0} ns, loona-hpack {theirs_again:.0} ns",
            first.len(),
            again.len()
        );
    }
}
