//! HPACK's Huffman code (RFC 7541 §5.2, Appendix B) and a table-driven decoder for it.
//!
//! The code is canonical: each symbol's code follows from the lengths alone (shorter codes
//! first, and within a length in the order of the symbols), so only the lengths of Appendix B
//! are typed here and the codes derived from them ([`CODES`]; the tests check them against the
//! RFC's values and against other implementations).
//!
//! Decoding walks the code's tree four bits at a time: a state is an internal node of the tree
//! (256 of them for 257 symbols), and [`STEPS`] gives for each state and nibble the state that
//! follows, the symbol completed on the way if any (codes are at least 5 bits long, so a nibble
//! completes at most one), or that the nibble runs into EOS. The table (16 KiB) is built at
//! compile time. A string may end only at a symbol's end or within the padding: at most 7 bits,
//! all ones (a prefix of EOS), which [`PAD_OK`] marks.
use super::Error;

/// Code length in bits of each symbol: bytes 0 to 255, then EOS (256). RFC 7541 Appendix B.
#[rustfmt::skip]
const LENGTHS: [u8; 257] = [
    // 0..=31: control characters.
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28,
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,
    //   !   "   #   $   %   &   '   (   )   *   +   ,   -   .   /
    6, 10, 10, 12, 13,  6,  8, 11, 10, 10,  8, 11,  8,  6,  6,  6,
    //0  1   2   3   4   5   6   7   8   9   :   ;   <   =   >   ?
    5,  5,  5,  6,  6,  6,  6,  6,  6,  6,  7,  8, 15,  6, 12, 10,
    //@  A   B   C   D   E   F   G   H   I   J   K   L   M   N   O
    13,  6,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,
    //P  Q   R   S   T   U   V   W   X   Y   Z   [   \   ]   ^   _
    7,  7,  7,  7,  7,  7,  7,  7,  8,  7,  8, 13, 19, 13, 14,  6,
    //`  a   b   c   d   e   f   g   h   i   j   k   l   m   n   o
    15,  5,  6,  5,  6,  5,  6,  6,  6,  5,  7,  7,  6,  6,  6,  5,
    //p  q   r   s   t   u   v   w   x   y   z   {   |   }   ~  DEL
    6,  7,  6,  5,  5,  6,  7,  7,  7,  7,  7, 15, 11, 14, 13, 28,
    // 128..=255.
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23,
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23,
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23,
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
    // EOS.
    30,
];

/// EOS, the symbol that may not appear in a string.
const EOS: usize = 256;

/// Each symbol's code (in the low bits) and length: the canonical code of [`LENGTHS`].
pub(super) const CODES: [(u32, u8); 257] = codes();

const fn codes() -> [(u32, u8); 257] {
    let mut out = [(0, 0); 257];
    let mut code = 0u32;
    let mut len = 1;
    while len <= 30 {
        let mut s = 0;
        while s < out.len() {
            if LENGTHS[s] == len {
                out[s] = (code, len);
                code += 1;
            }
            s += 1;
        }
        code <<= 1;
        len += 1;
    }
    // A complete code: the last code of the longest length is all ones (EOS's).
    assert!(code == 1 << 31 && out[EOS].0 == (1 << 30) - 1);
    out
}

/// A child in [`tree`]: an internal node's index, or `LEAF` plus a symbol.
const LEAF: u16 = 0x200;

/// The code's tree: the two children (bit 0, bit 1) of each internal node; the root is 0.
const fn tree() -> [[u16; 2]; 256] {
    let mut nodes = [[0u16; 2]; 256];
    let mut used = 1;
    let mut s = 0;
    while s < CODES.len() {
        let (code, len) = CODES[s];
        let mut node = 0;
        let mut i = len - 1;
        while i > 0 {
            let bit = ((code >> i) & 1) as usize;
            // 0 is the root, never a child: an unset child.
            if nodes[node][bit] == 0 {
                nodes[node][bit] = used as u16;
                used += 1;
            }
            assert!(nodes[node][bit] < LEAF);
            node = nodes[node][bit] as usize;
            i -= 1;
        }
        assert!(nodes[node][(code & 1) as usize] == 0);
        nodes[node][(code & 1) as usize] = LEAF | s as u16;
        s += 1;
    }
    assert!(used == 256);
    nodes
}

/// What a nibble does in a state: the state after it (low byte), the symbol it completed if
/// any (second byte), and [`EMIT`] or [`FAIL`] (third byte).
type Step = u32;

/// The nibble completed a symbol.
const EMIT: u32 = 1 << 16;
/// The nibble completed EOS.
const FAIL: u32 = 2 << 16;

static STEPS: [[Step; 16]; 256] = steps();

const fn steps() -> [[Step; 16]; 256] {
    let nodes = tree();
    let mut out = [[0; 16]; 256];
    let mut state = 0;
    while state < 256 {
        let mut nib = 0;
        while nib < 16 {
            let mut step = 0;
            let mut node = state;
            let mut i = 4;
            while i > 0 {
                i -= 1;
                let child = nodes[node][(nib >> i) & 1];
                if child < LEAF {
                    node = child as usize;
                } else if (child & !LEAF) as usize == EOS {
                    step = FAIL;
                    break;
                } else {
                    step = EMIT | (child as u32 & 0xff) << 8;
                    node = 0;
                }
            }
            out[state][nib] = step | node as u32;
            nib += 1;
        }
        state += 1;
    }
    out
}

/// The states where a string may end: the root, and 1 to 7 bits of ones below it.
static PAD_OK: [bool; 256] = pad_ok();

const fn pad_ok() -> [bool; 256] {
    let nodes = tree();
    let mut out = [false; 256];
    let mut node = 0;
    let mut depth = 0;
    while depth <= 7 {
        out[node] = true;
        node = nodes[node][1] as usize;
        depth += 1;
    }
    out
}

/// Appends the decoding of the Huffman-coded `src` to `dst`. Errors on EOS in the string, and
/// on padding longer than 7 bits or not all ones.
pub(super) fn decode(src: &[u8], dst: &mut Vec<u8>) -> Result<(), Error> {
    // Without a branch on whether a nibble completes a symbol (which the processor could not
    // predict): each step writes its symbol byte at the end of the output, which grows only if
    // the step has EMIT. At most one symbol a nibble.
    let start = dst.len();
    dst.resize(start + src.len() * 2, 0);
    let out = dst.get_mut(start..).unwrap_or_default();
    let (mut state, mut n, mut flags) = (0u8, 0, 0);
    for &b in src {
        for nib in [b >> 4, b & 15] {
            let step = STEPS[usize::from(state)][usize::from(nib)];
            if let Some(o) = out.get_mut(n) {
                *o = (step >> 8) as u8;
            }
            n += (step >> 16) as usize & 1;
            flags |= step;
            state = step as u8;
        }
    }
    dst.truncate(start + n);
    if flags & FAIL == 0 && PAD_OK[usize::from(state)] { Ok(()) } else { Err(Error::Huffman) }
}
