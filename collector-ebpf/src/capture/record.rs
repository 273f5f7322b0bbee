//! Recording exchanges, below the protocols: the aggregated histograms (`HTTP_HIST`: duration,
//! request and response body size per label set) and the server-side in-flight gauge
//! (`HTTP_ACTIVE`). A protocol reports a request started, an exchange done or requests given
//! up (`collector_common::capture::Sink`); the drivers call in here with the connection's
//! `Ident`.
use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_NOEXIST},
    macros::map,
    maps::PerCpuHashMap,
};
use collector_common::{
    drop,
    http::{
        ActiveKey, BOUND_CAP, HttpHist, HttpKey, MAX_DURATION_BOUNDS, OVERFLOW_METHOD, SIDE_CLIENT, SIDE_SERVER,
        SIZE_BOUNDS_PADDED, VERSION_SHIFT, bucket_search,
    },
};

use super::{
    conn::{Ident, ROLE_SERVER},
    packet::words16,
};
use crate::{atomic::add as atomic_add, drops};

const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<HttpKey>() == 48 && offset_of!(HttpKey, comm) == 8 && offset_of!(HttpKey, status) == 24);
    assert!(offset_of!(HttpKey, port) == 26 && offset_of!(HttpKey, method) == 28 && offset_of!(HttpKey, side) == 29);
    assert!(offset_of!(HttpKey, family) == 30 && offset_of!(HttpKey, scheme) == 31 && offset_of!(HttpKey, addr) == 32);
    assert!(size_of::<ActiveKey>() == 16 && offset_of!(ActiveKey, port) == 8 && offset_of!(ActiveKey, scheme) == 10);
    assert!(offset_of!(Ident, comm) == 0 && offset_of!(Ident, addr) == 16);
};

/// Upper bounds of the duration buckets in nanoseconds, set by the daemon; unused slots hold
/// `BOUND_CAP` so nothing lands beyond the configured +Inf bucket.
// SAFETY: unmangled so that the daemon can set it by this name before load; no other symbol in
// the object has the name, so nothing else is bound to it.
#[unsafe(no_mangle)]
static DURATION_BOUNDS_NS: [u64; MAX_DURATION_BOUNDS] = [BOUND_CAP; MAX_DURATION_BOUNDS];

/// The body size bounds (padded to 16 with `BOUND_CAP`), read through a pointer the compiler
/// cannot see through (see `bucket`).
// SAFETY: an unmangled global of its own (the daemon leaves it at its initial value); no other
// symbol in the object has the name, so nothing else is bound to it.
#[unsafe(no_mangle)]
static SIZE_BOUNDS_B: [u64; 16] = SIZE_BOUNDS_PADDED;

static ZERO_HIST: HttpHist = HttpHist::ZERO;

/// Aggregated histograms, one entry per label set, a slot per CPU (the daemon sums them): with
/// one slot shared by all CPUs, every exchange of a label set moved its cache lines between the
/// CPUs recording it (six atomic adds each), a cost that grows with the cores. Not preallocated
/// (a slot is 512 bytes, per CPU): an entry takes memory when its label set first records.
/// Atomic adds all the same: programs nest on a CPU.
#[map]
static HTTP_HIST: PerCpuHashMap<HttpKey, HttpHist> = PerCpuHashMap::with_max_entries(8192, BPF_F_NO_PREALLOC);

/// Server requests in flight per (cgroup, port): +1 when a request starts, -1 when its response
/// ends or it is abandoned (two's complement adds, summed over the CPUs by the daemon). Per CPU
/// because the two usually happen on different CPUs (a request arrives in the receiving
/// softirq, its response leaves from the serving thread): a shared counter would move between
/// their caches twice per request. Atomic adds all the same: a softirq can interrupt a program
/// on its CPU and update the same slot.
#[map]
static HTTP_ACTIVE: PerCpuHashMap<ActiveKey, u64> = PerCpuHashMap::with_max_entries(4096, 0);

/// Adds `delta` (two's complement) to the in-flight gauge of a server socket.
#[inline(always)]
pub fn active_add(id: &Ident, delta: u64) {
    if id.role != ROLE_SERVER {
        return;
    }
    // As words (layout asserted above): a literal's 6-byte padding becomes a memset call.
    // SAFETY: `[u64; 2]` and `ActiveKey` are both 16 bytes (asserted above; `transmute` checks
    // the sizes too), and `ActiveKey` holds only integers and bytes with explicit padding, so
    // any bits are a valid value. On this little-endian target the second word sets `port`
    // (offset 8, asserted) and `scheme` (offset 10) and zeroes `_pad`, as the map hashes all
    // 16 bytes.
    let key: ActiveKey = unsafe {
        core::mem::transmute::<[u64; 2], ActiveKey>([id.cgroup_id, id.local_port as u64 | (id.scheme as u64) << 16])
    };
    let p = match HTTP_ACTIVE.get_ptr_mut(&key) {
        Some(p) => Some(p),
        None => {
            let _ = HTTP_ACTIVE.insert(&key, &0, BPF_NOEXIST as u64);
            HTTP_ACTIVE.get_ptr_mut(&key)
        }
    };
    if let Some(p) = p {
        atomic_add(p, delta);
    }
}

/// Bucket of `v` among `bounds` (the number of bounds below it; `collector_common`'s
/// `bucket_search`, a binary search without branches, so that the verifier follows one path:
/// 6 reads for the 32 duration bounds and 5 for the 16 size bounds, where a sum over every
/// bound took 58 per exchange). The bounds are read through a pointer the compiler cannot
/// see through: with constant bounds LLVM folds them into compares and branches.
#[inline(always)]
fn bucket<const N: usize>(bounds: *const [u64; N], v: u64) -> u64 {
    let b = bucket_search::<N>(
        |i| {
            // The index masked again after going through memory: LLVM proves the search's
            // indices below N, drops its mask, and sums the steps with OR (their bits are
            // disjoint); 6.1's verifier tracks no bounds through an OR of two unknown registers
            // (6.12's does) and refused the pointer sum that followed.
            // SAFETY: reads a local.
            let i = unsafe { core::ptr::read_volatile(&i) } & (N - 1);
            // SAFETY: callers pass `&raw const` of one of the two bound statics (N elements
            // each) and i < N (masked above, N a power of two), so the element is in bounds,
            // aligned and initialised; the statics are never written while programs run (set
            // before load, then frozen), so the read races with nothing. Volatile, when each
            // is used: LLVM would otherwise fold constant bounds, or load them all first and
            // spill them to the stack (its frame is small: 512 bytes for the whole call chain).
            unsafe { core::ptr::read_volatile(&(*bounds)[i]) }
        },
        v,
    );
    // The result through memory too: LLVM proves the duration's bucket at most 32 and drops
    // the caller's check against its 33 slots, which the verifier needs (the OR again).
    // SAFETY: reads a local.
    unsafe { core::ptr::read_volatile(&b) }
}

/// Records one exchange of the connection `id` (the protocols' record functions call it, with
/// the connection's `Ident`): its histogram entry, and the end of the request in the
/// in-flight gauge. `what` holds the direction of the packet (bit 0, unused here), the method
/// (bits 8..16), the status (bits 16..32) and the protocol version (bits 32..36, into the
/// key's scheme byte, see `collector_common::http::VERSION_SHIFT`).
#[inline(always)]
pub fn record(id: &Ident, what: u64, dur: u64, req_bytes: u64, resp_bytes: u64) {
    active_add(id, u64::MAX);
    let (method, status, version) = ((what >> 8) as u8, (what >> 16) as u16, (what >> 32) as u8 & 0x0f);
    let server = id.role == ROLE_SERVER;
    let port = if server { id.local_port } else { id.peer_port };
    let side = if server { SIDE_SERVER } else { SIDE_CLIENT };
    let (family, addr) = if server { (0, [0u64; 2]) } else { (id.family, words16(&id.addr)) };
    let comm = words16(&id.comm);
    // The key assembled as words (its layout is asserted above): built field by field or
    // from a literal, LLVM zeroes and copies it with calls to byte-wise memset/memcpy loops.
    // SAFETY: `[u64; 6]` and `HttpKey` are both 48 bytes (asserted above; `transmute` checks
    // the sizes too), and `HttpKey` holds only integers and bytes with explicit padding, so any
    // bits are a valid value. On this little-endian target the words land in the fields at the
    // offsets asserted above, and `_pad` gets the zero top byte of word 3, as the map hashes
    // all 48 bytes.
    let mut key: HttpKey = unsafe {
        core::mem::transmute::<[u64; 6], HttpKey>([
            id.cgroup_id,
            comm[0],
            comm[1],
            status as u64
                | (port as u64) << 16
                | (method as u64) << 32
                | (side as u64) << 40
                | (family as u64) << 48
                | ((id.scheme | version << VERSION_SHIFT) as u64) << 56,
            addr[0],
            addr[1],
        ])
    };
    let h = match HTTP_HIST.get_ptr_mut(&key) {
        Some(h) => Some(h),
        None => {
            // BPF_NOEXIST fails too when another CPU inserted the key meanwhile: look again.
            let _ = HTTP_HIST.insert(&key, &ZERO_HIST, BPF_NOEXIST as u64);
            match HTTP_HIST.get_ptr_mut(&key) {
                Some(h) => Some(h),
                None => {
                    // Full: the overflow entry of this side (created by the daemon) takes it.
                    // The key rewritten in place (a second key would take stack room).
                    drops::count(drop::HTTP_MAP_FULL);
                    let side = key.side;
                    let words = &raw mut key as *mut u64;
                    let mut i = 0;
                    while i < 6 {
                        let w = if i == 3 { (OVERFLOW_METHOD as u64) << 32 | (side as u64) << 40 } else { 0 };
                        // SAFETY: `key` is a 48-byte, 8-byte aligned `HttpKey` on this frame
                        // (layout asserted above), so words 0..6 are in bounds and aligned, and
                        // any bits are a valid `HttpKey` (only integers and bytes, padding
                        // spelled out): here only `method` and `side` are set, in word 3.
                        // Volatile stores: LLVM would turn the zeroing into a call of `memset`,
                        // a function of its own whose frame counts against the verifier's bound
                        // on a chain of calls (512 bytes; the TLS programs' chain is at it).
                        unsafe { core::ptr::write_volatile(words.add(i), w) };
                        i += 1;
                    }
                    HTTP_HIST.get_ptr_mut(&key)
                }
            }
        }
    };
    let Some(h) = h else { return };
    let dur = dur.min(BOUND_CAP - 1);
    let d = bucket(&raw const DURATION_BOUNDS_NS, dur) as usize;
    let r = bucket(&raw const SIZE_BOUNDS_B, req_bytes) as usize;
    let s = bucket(&raw const SIZE_BOUNDS_B, resp_bytes) as usize;
    // SAFETY: `h` is this run's lookup result in `HTTP_HIST`, this CPU's slot: aligned and valid
    // until the program returns (an entry the daemon deletes meanwhile is freed only after an
    // RCU grace period, and only loses these adds). Every index is checked against its array
    // (the lengths are constants, read from no memory), and each access only takes one word's
    // address for `atomic_add`, so a program nesting on this CPU adding to the slot meanwhile
    // does not race with it.
    unsafe {
        if d < (*h).duration.len() {
            atomic_add(&mut (*h).duration[d], 1);
        }
        atomic_add(&mut (*h).duration_sum_ns, dur);
        if r < (*h).req_size.len() {
            atomic_add(&mut (*h).req_size[r], 1);
        }
        atomic_add(&mut (*h).req_size_sum, req_bytes);
        if s < (*h).resp_size.len() {
            atomic_add(&mut (*h).resp_size[s], 1);
        }
        atomic_add(&mut (*h).resp_size_sum, resp_bytes);
    }
}

