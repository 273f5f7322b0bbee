//! The reorder stash: bytes of a received stream that arrive out of order while the protocol
//! waits for a byte it needs (a start line, a header, a chunk size lost on the way), kept in
//! blocks so that the framer can parse them once the missing bytes arrive. The socket takes
//! such segments into its out-of-order queue and delivers them later without passing the
//! hook again; without a copy, a lost segment holding a chunk size would leave the next chunk
//! sizes, or the next pipelined messages, behind for good.
//!
//! Blocks are `BLOCK` bytes of the stream at multiples of `BLOCK` (absolute positions), with a
//! bitmap of the bytes held; the kernel keeps them in a bounded hash map, the host driver in a
//! `HashMap`, both through the functions here. Only bytes within `SPAN` of the position the
//! framer waits at are kept, and blocks behind it are deleted as it moves on.

use super::{WINDOW, WINDOW_WORDS, Window, after};

/// Stream bytes per block.
pub const BLOCK: u32 = 1024;
const BLOCK_WORDS: usize = (BLOCK / 8) as usize;
/// How far beyond the position the framer waits at bytes are kept (256 blocks).
pub const SPAN: u32 = 256 * BLOCK;

/// Key of a block: the socket (its cookie), the direction and the block's index in the stream
/// (position / BLOCK).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct BlockKey {
    pub cookie: u64,
    pub index: u32,
    /// 1 for the request stream, 0 for the response stream.
    pub is_req: u32,
}

/// One block.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Block {
    /// Bit `i` set: stream byte `index * BLOCK + i` is held.
    pub valid: [u64; BLOCK_WORDS / 8],
    /// When it was last written (ns, the kernel's monotonic clock): the daemon deletes blocks
    /// of sockets that went away without the programs seeing them close. (Also the scratch of
    /// [`Block::mark`], which the writer overwrites with the time after it.)
    pub when: u64,
    /// The bytes. Twice the block: a copy of n bytes at offset o (o < BLOCK, n <= BLOCK - o)
    /// then stays within the value for a verifier that bounds o and n separately.
    pub data: [u64; 2 * BLOCK_WORDS],
}

impl Block {
    pub const ZERO: Block = Block { valid: [0; BLOCK_WORDS / 8], when: 0, data: [0; 2 * BLOCK_WORDS] };

    /// Marks bytes `[o, o + n)` held (o < BLOCK, n <= BLOCK - o).
    #[inline(always)]
    pub fn mark(&mut self, o: u32, n: u32) {
        // The range goes through the block's memory and is read back in every round: the BPF
        // verifier then follows each round once, not once per way the comparisons below went
        // in the rounds before (it does not track values through map memory).
        // SAFETY: a field of a live `&mut`.
        unsafe { core::ptr::write_volatile(&mut self.when, o as u64 | ((o + n) as u64) << 32) };
        let mut w = 0u32;
        while w < (BLOCK / 64) {
            // SAFETY: as above.
            let r = unsafe { core::ptr::read_volatile(&self.when) };
            let (o, end) = ((r as u32) & (2 * BLOCK - 1), ((r >> 32) as u32) & (2 * BLOCK - 1));
            let (lo, hi) = (w * 64, w * 64 + 64);
            let a = if o > lo { o } else { lo };
            let z = if end < hi { end } else { hi };
            if z > a {
                let bits = z - a;
                let m = if bits >= 64 { !0u64 } else { ((1u64 << bits) - 1) << (a - lo) };
                self.valid[(w as usize) & (BLOCK_WORDS / 8 - 1)] |= m;
            }
            w += 1;
        }
    }

    /// Whether byte `o` (< BLOCK) is held.
    #[inline(always)]
    pub fn has(&self, o: u32) -> bool {
        self.valid[((o >> 6) as usize) & (BLOCK_WORDS / 8 - 1)] >> (o & 63) & 1 != 0
    }

    /// One past the last byte of the run of held bytes from `o` (< BLOCK) on, within the block.
    #[inline(always)]
    pub fn run_end(&self, o: u32) -> u32 {
        let mut w = o >> 6;
        let mut mask = !0u64 << (o & 63);
        while w < BLOCK / 64 {
            let gaps = !self.valid[(w as usize) & (BLOCK_WORDS / 8 - 1)] & mask;
            if gaps != 0 {
                return w * 64 + gaps.trailing_zeros();
            }
            mask = !0;
            w += 1;
        }
        BLOCK
    }

    /// Loads a direction's window from this block (which starts at stream position `start`)
    /// for parsing at `pos`, up to `end` (the end of the run held from `pos`): whole words from
    /// the word holding `pos`, so the window starts up to 7 bytes before it.
    #[inline(always)]
    pub fn fill_window(&self, w: &mut Window, start: u32, pos: u32, end: u32) {
        let first = (pos.wrapping_sub(start) >> 3) & (BLOCK_WORDS as u32 - 1);
        let mut k = 0u32;
        while k < WINDOW_WORDS as u32 {
            // Words past the block are whatever the slack holds; the length below excludes them.
            w.buf[(k as usize) & (WINDOW_WORDS - 1)] = self.data[((first + k) as usize) & (2 * BLOCK_WORDS - 1)];
            k += 1;
        }
        let base = start.wrapping_add(first * 8);
        let len = end.wrapping_sub(base);
        w.base = base;
        w.len = if len < WINDOW { len } else { WINDOW };
    }
}

/// The part of a segment `[seq, end)` to keep in block `index`, for a direction waiting at
/// `pos`: (offset in the block, length, offset in the segment), or None.
#[inline(always)]
pub fn overlap(seq: u32, end: u32, pos: u32, index: u32) -> Option<(u32, u32, u32)> {
    let start = index.wrapping_mul(BLOCK);
    let limit = pos.wrapping_add(SPAN);
    let lo = if after(seq, start) { seq } else { start };
    let lo = if after(pos, lo) { pos } else { lo };
    let block_end = start.wrapping_add(BLOCK);
    let hi = if after(end, block_end) { block_end } else { end };
    let hi = if after(hi, limit) { limit } else { hi };
    if !after(hi, lo) {
        return None;
    }
    Some((lo.wrapping_sub(start), hi.wrapping_sub(lo), lo.wrapping_sub(seq)))
}

/// Index of the block holding position `pos`.
#[inline(always)]
pub fn index_of(pos: u32) -> u32 {
    pos / BLOCK
}
