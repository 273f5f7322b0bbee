//! The reorder stash in the kernel (`collector_common::capture::stash`): bytes of received
//! streams that arrived out of order while the protocol waited for a byte it needs, in 1 KiB
//! blocks, parsed once the missing bytes arrive. The operations here work on any protocol's
//! connection (`Body<P>`, the part of `Conn<P>` past its claim words); a protocol's global functions wrap them (http1.rs).
use core::ffi::c_void;

use aya_ebpf::{
    bindings::{__sk_buff, BPF_F_NO_PREALLOC, BPF_NOEXIST},
    helpers::generated::bpf_skb_load_bytes,
    macros::map,
    maps::HashMap,
};
use collector_common::{
    capture::{
        Stream, after,
        stash::{self, BLOCK, Block, BlockKey},
    },
    drop,
};

use super::conn::{Body, Held, ROLE_SERVER, SRC_STASH, Seg, di};
use crate::drops;

/// The blocks: allocated when used (a block is about 2.2 KiB), deleted as the protocol moves
/// past them or the connection ends; 4096 blocks at most (9 MiB) for the host. Blocks of
/// sockets that went away without the programs seeing it are deleted by the daemon after a
/// minute.
#[map]
static HTTP_STASH: HashMap<BlockKey, Block> = HashMap::with_max_entries(4096, BPF_F_NO_PREALLOC);

/// A zeroed block to insert from (2 KiB do not fit on the stack).
static ZERO_BLOCK: Block = Block::ZERO;

/// Loads the window of direction `is_req` from the stashed block holding `p`, for a run of
/// stashed bytes that ends at `end`. False when the block is gone.
#[inline(always)]
pub fn fill_window<P: Stream>(conn: &mut Body<P>, is_req: bool, p: u32, end: u32) -> bool {
    let index = stash::index_of(p);
    let key = BlockKey { cookie: conn.id.cookie, index, is_req: is_req as u32 };
    // SAFETY: a shared reference to a stash block of this connection, valid until the program
    // returns: `HTTP_STASH` is not preallocated, so even a block deleted meanwhile is freed only
    // after an RCU grace period. A connection's blocks are written only by the program holding
    // it, which is this run, so nothing writes the block while it is read (the daemon only
    // deletes blocks, never writes them).
    let Some(block) = (unsafe { HTTP_STASH.get(&key) }) else { return false };
    block.fill_window(conn.p.window(is_req), index.wrapping_mul(BLOCK), p, end);
    true
}

/// Points the direction `egress` of the connection at the run of stashed bytes from its
/// protocol's position, for the next steps: 0 when there is one, nonzero when the stash holds
/// nothing there.
#[inline(always)]
pub fn run<P: Stream>(conn: &mut Body<P>, egress: bool) -> i64 {
    let is_req = (conn.id.role == ROLE_SERVER) != egress;
    let held = conn.held[di(is_req)];
    let pos = conn.p.position(is_req);
    let index = stash::index_of(pos);
    // A direction that lost its place looks at them too, for a message's start (bytes left by a
    // nested program, `segment::defer`: a lost direction's own blocks are deleted).
    if held.lo == held.hi
        || after(held.lo, index)
        || !after(held.hi, index)
        || !(conn.p.takes_bytes(is_req) || conn.p.resyncs(is_req))
    {
        return 1;
    }
    let key = BlockKey { cookie: conn.id.cookie, index, is_req: is_req as u32 };
    // SAFETY: a shared reference to a stash block of this connection, valid until the program
    // returns (`HTTP_STASH` is not preallocated: a block deleted meanwhile is freed only after
    // an RCU grace period). Only the program holding the connection, this run, writes its
    // blocks, so nothing writes the block while it is read.
    let Some(block) = (unsafe { HTTP_STASH.get(&key) }) else { return 1 };
    let start = index.wrapping_mul(BLOCK);
    let o = pos.wrapping_sub(start) & (BLOCK - 1);
    if !block.has(o) {
        return 1;
    }
    let now = conn.seg[di(is_req)].now;
    conn.seg[di(is_req)] = Seg { seq: pos, end: start.wrapping_add(block.run_end(o)), payload: 0, src: SRC_STASH, now };
    0
}

/// Keeps the part of the current segment of direction `egress` that falls in stash block
/// `index` (the protocol waits for a missing byte before it). Nonzero when the segment has
/// nothing for that block (or beyond).
#[inline(always)]
pub fn keep<P: Stream>(conn: &mut Body<P>, skb: *mut __sk_buff, egress: bool, index: u32) -> i64 {
    let is_req = (conn.id.role == ROLE_SERVER) != egress;
    let seg = conn.seg[di(is_req)];
    let pos = conn.p.position(is_req);
    if !put(skb, conn.id.cookie, is_req, &seg, pos, index) {
        return 1;
    }
    add_held(&mut conn.held[di(is_req)], index);
    0
}

/// Notes that stash block `index` is held in `held`.
#[inline(always)]
pub fn add_held(held: &mut Held, index: u32) {
    if held.lo == held.hi {
        *held = Held { lo: index, hi: index.wrapping_add(1) };
    } else {
        if after(held.lo, index) {
            held.lo = index;
        }
        if !after(held.hi, index) {
            held.hi = index.wrapping_add(1);
        }
    }
}

/// Copies the part of segment `seg` (of the packet `skb`) that falls in block `index` of the
/// stream `is_req` of the socket `cookie`, for a direction waiting at `pos`, into the stash.
/// False when the segment has nothing for that block (or beyond), or it could not be kept.
#[inline(always)]
pub fn put(skb: *mut __sk_buff, cookie: u64, is_req: bool, seg: &Seg, pos: u32, index: u32) -> bool {
    let Some((o, n, at)) = stash::overlap(seg.seq, seg.end, pos, index) else { return false };
    let key = BlockKey { cookie, index, is_req: is_req as u32 };
    let block = match HTTP_STASH.get_ptr_mut(&key) {
        Some(b) => Some(b),
        None => {
            let _ = HTTP_STASH.insert(&key, &ZERO_BLOCK, BPF_NOEXIST as u64);
            HTTP_STASH.get_ptr_mut(&key)
        }
    };
    let Some(block) = block else {
        drops::count(drop::HTTP_STASH_FULL);
        return false;
    };
    // SAFETY: `block` is this run's lookup result in `HTTP_STASH` (inserted zeroed just above if
    // absent): aligned, and valid until the program returns even if deleted meanwhile (the map
    // is not preallocated; values are freed after an RCU grace period). A connection's blocks
    // are written and read only by the program holding it (or, before the connection exists,
    // by the one holding its listening socket's segment), which is this run, so this is the
    // only reference to the block in use (the daemon only deletes blocks, never writes them).
    let block = unsafe { &mut *block };
    // Offset and length in forms every verifier bounds: o < BLOCK, 1 <= len <= BLOCK, so the
    // copy stays within the value's 2 * BLOCK bytes of data.
    let o = o & (BLOCK - 1);
    // SAFETY: reads a temporary local through a reference (valid, aligned, initialised, not
    // shared); volatile only so LLVM keeps the mask the verifier needs.
    let len = (unsafe { core::ptr::read_volatile(&(n as u64 - 1)) } & (BLOCK as u64 - 1)) + 1;
    // SAFETY: o < BLOCK (masked above) and `data` is 2 * BLOCK bytes, so the offset pointer
    // stays inside the block's data.
    let dst = unsafe { (block.data.as_mut_ptr() as *mut u8).add(o as usize) };
    // SAFETY: `dst` is at offset o < BLOCK of the block's 2 * BLOCK bytes of data and
    // 1 <= len <= BLOCK, so o + len <= 2 * BLOCK and the helper writes within the value; `skb`
    // is the program's context, and the helper checks the packet offset and length and fails
    // rather than read past the packet.
    let r = unsafe {
        bpf_skb_load_bytes(skb as *const c_void, seg.payload.wrapping_add(at), dst as *mut c_void, len as u32)
    };
    if r != 0 {
        return false;
    }
    block.mark(o, len as u32);
    block.when = seg.now;
    true
}

/// Deletes the stash blocks of a direction that lie wholly before its position (`all`: every
/// one, once the direction stopped following its stream or the connection ends).
#[inline(always)]
pub fn forget<P: Stream>(conn: &mut Body<P>, is_req: bool, all: bool) {
    let held = conn.held[di(is_req)];
    if held.lo == held.hi {
        return;
    }
    let floor = if all { held.hi } else { stash::index_of(conn.p.position(is_req)) };
    let key = BlockKey { cookie: conn.id.cookie, index: 0, is_req: is_req as u32 };
    let mut lo = held.lo;
    let mut k = 0;
    while k < stash::SPAN / BLOCK + 1 && after(floor, lo) && after(held.hi, lo) {
        let _ = HTTP_STASH.remove(&BlockKey { index: lo, ..key });
        lo = lo.wrapping_add(1);
        k += 1;
    }
    conn.held[di(is_req)].lo = lo;
}
