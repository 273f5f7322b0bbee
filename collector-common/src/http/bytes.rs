//! Word-at-a-time helpers over a direction's window (`framer::Window`): little-endian words,
//! byte search, ASCII digits. Shaped for the BPF verifier: indices into the window go through
//! memory so that the masks the verifier needs stay (see `word_at`).

use super::framer::WINDOW_WORDS;

/// Little-endian word of up to 8 bytes.
pub const fn le(b: &[u8]) -> u64 {
    let mut v = 0u64;
    let mut i = 0;
    while i < b.len() {
        v |= (b[i] as u64) << (8 * i);
        i += 1;
    }
    v
}

/// 0x20 in every byte that holds a letter of `b` (so only letters are folded to lower case).
pub(super) const fn letters(b: &[u8]) -> u64 {
    let mut v = 0u64;
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_lowercase() {
            v |= 0x20 << (8 * i);
        }
        i += 1;
    }
    v
}

/// The top bit of every byte of `w` that is not an ASCII digit (exact for every byte).
#[inline(always)]
pub(super) fn non_digits(w: u64) -> u64 {
    const HI: u64 = 0x8080_8080_8080_8080;
    let low = w & !HI;
    // Above '9' once 0x46 is added; below '0' unless 0x50 is added; no carry between bytes.
    let above = low + 0x4646_4646_4646_4646;
    let not_below = low + 0x5050_5050_5050_5050;
    (above | !not_below | w) & HI
}

/// The first `n` (1..=8) bytes of `w` (digits) right-aligned behind ASCII zeros.
#[inline(always)]
pub(super) fn pad8(w: u64, n: u32) -> u64 {
    let n = if n > 8 {
        8
    } else if n == 0 {
        1
    } else {
        n
    };
    (w << (8 * (8 - n))) | ((0x3030_3030_3030_3030u64 >> (8 * n - 1)) >> 1)
}

/// Eight ASCII digits (the first in the low byte) as a number.
#[inline(always)]
pub(super) fn parse8(w: u64) -> u64 {
    const MASK: u64 = 0x0000_00ff_0000_00ff;
    const MUL1: u64 = 100 + (1_000_000 << 32);
    const MUL2: u64 = 1 + (10_000 << 32);
    let v = w.wrapping_sub(0x3030_3030_3030_3030);
    let v = v.wrapping_mul(10).wrapping_add(v >> 8);
    ((v & MASK).wrapping_mul(MUL1).wrapping_add(((v >> 16) & MASK).wrapping_mul(MUL2))) >> 32
}

/// Word `j` of the window. The index goes through memory so that LLVM, which may prove it
/// below 16 from the caller's checks, cannot drop the mask the verifier needs to see.
#[inline(always)]
pub(super) fn word_at(buf: &[u64; WINDOW_WORDS], j: usize) -> u64 {
    // SAFETY: reads a local.
    buf[unsafe { core::ptr::read_volatile(&j) } & (WINDOW_WORDS - 1)]
}

/// Byte `i` (0..WINDOW) of the window.
#[inline(always)]
pub fn byte_at(buf: &[u64; WINDOW_WORDS], i: u32) -> u8 {
    (word_at(buf, (i >> 3) as usize) >> ((i & 7) * 8)) as u8
}

/// The 8 bytes starting at byte `p` of the window, little-endian (bytes past the window are
/// whatever it holds; callers mask them off).
#[inline(always)]
pub fn window8(buf: &[u64; WINDOW_WORDS], p: u32) -> u64 {
    let j = (p >> 3) as usize;
    let s = (p & 7) * 8;
    let first = word_at(buf, j);
    if s == 0 { first } else { (first >> s) | (word_at(buf, j + 1) << (64 - s)) }
}

/// Index of the first '\n' at or after byte `i` among the first `len` bytes of the window;
/// `len` when there is none. A doubtful match returns `i`, which sends the byte through the
/// exact per-byte parser.
#[inline(always)]
pub(super) fn find_newline(buf: &[u64; WINDOW_WORDS], i: u32, len: u32) -> u32 {
    find_newline_within::<WINDOW_WORDS>(buf, i, len)
}

/// [`find_newline`] over the `WORDS` words from the one holding byte `i` at most: `len` when
/// there is none there either. The BPF verifier follows a loop once per iteration for every way
/// of reaching it; inside the header-line loop (8 lines a step) a search of the whole window was
/// most of what it checked in the HTTP/1 step.
#[inline(always)]
pub(super) fn find_newline_within<const WORDS: usize>(buf: &[u64; WINDOW_WORDS], i: u32, len: u32) -> u32 {
    let mut j = (i >> 3) as usize;
    let mut mask = !0u64 << ((i & 7) * 8);
    let mut n = 0;
    while n < WORDS && j < WINDOW_WORDS {
        n += 1;
        if (j as u32) * 8 >= len {
            return len;
        }
        let w = word_at(buf, j);
        let bits = byte_bits(w, b'\n') & mask;
        if bits != 0 {
            let k = j as u32 * 8 + lowest_flagged_byte(bits);
            if k >= len {
                return len;
            }
            return if (w >> ((k & 7) * 8)) as u8 == b'\n' { k } else { i };
        }
        mask = !0;
        j += 1;
    }
    len
}

/// Index (0..8) of the lowest byte of `flags` with its top bit set, for words in which only
/// bytes' top bits are set (`byte_bits`, `non_digits`): `trailing_zeros() / 8` for a nonzero
/// one, 0 for zero (callers check). BPF has no count instruction: LLVM lowers `trailing_zeros`
/// to a branch for zero, a de Bruijn multiply and a byte load from a table in read-only data.
/// Here the lowest flag, shifted to its byte's bottom bit, is 2^(8k); times the constant, whose
/// byte 7 - k holds k, it puts k in the top byte.
#[inline(always)]
pub(super) fn lowest_flagged_byte(flags: u64) -> u32 {
    let low = flags & flags.wrapping_neg();
    // The mask changes no value; it tells the BPF verifier the range (0..8), which it cannot
    // infer from a multiply: with 0..256 it kept more states apart (46k more instructions).
    ((low >> 7).wrapping_mul(0x0001_0203_0405_0607) >> 56) as u32 & 7
}

/// Bytes equal to `c` in `w` get their top bit set (exact for the lowest such byte; a byte
/// above a match may be flagged falsely).
#[inline(always)]
pub(super) fn byte_bits(w: u64, c: u8) -> u64 {
    let x = w ^ (0x0101_0101_0101_0101 * c as u64);
    x.wrapping_sub(0x0101_0101_0101_0101) & !x & 0x8080_8080_8080_8080
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every combination of the eight bytes' top bits, and the words `byte_bits` and
    /// `non_digits` make from text.
    #[test]
    fn lowest_flagged_byte_is_trailing_zeros_over_8() {
        for m in 1u64..256 {
            let flags = (0..8).filter(|k| m >> k & 1 != 0).fold(0u64, |f, k| f | 0x80 << (8 * k));
            assert_eq!(lowest_flagged_byte(flags), flags.trailing_zeros() / 8, "{flags:#x}");
        }
        let w = u64::from_le_bytes(*b"ab\ncd\n\r\n");
        assert_eq!(lowest_flagged_byte(byte_bits(w, b'\n')), 2);
        assert_eq!(lowest_flagged_byte(non_digits(u64::from_le_bytes(*b"1234567x"))), 7);
    }
}
