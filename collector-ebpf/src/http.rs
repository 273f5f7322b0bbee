//! HTTP: socket-level HTTP/1.x request/response tracking on cgroup_skb ingress and egress of the
//! cgroup v2 root. Every TCP segment with payload is handed, with its position in the byte
//! stream (TCP sequence number), to the connection's framer
//! (`collector_common::http::framer`), kept in the socket's local storage. This file holds
//! only what is kernel-specific: packet access, the connection's storage and identity, and
//! recording the framer's events into maps (`HTTP_HIST`, `HTTP_ACTIVE`, `DROPS`). No payload
//! byte leaves the kernel.
//!
//! Server side (a socket that receives requests): from the first request byte arriving
//! (ingress) to the last response byte leaving (egress). Client side (a socket that sends
//! requests): from the first request byte leaving to the last response byte arriving.
//!
//! Kernels: the programs load from Linux 5.10 on. They use no `bpf_loop` (5.17) and no
//! `bpf_get_current_comm` in cgroup_skb (6.13). Every loop is a plain bounded loop; the long
//! ones sit in global functions of their own, which the verifier checks once however many
//! places call them: a segment's parse steps in `http_parse` (up to `MAX_STEPS` calls of
//! `http_step`, itself a global function, and of `http_stash_run` for runs of stashed bytes),
//! keeping a segment in the reorder stash in `http_keep_all` (calls of `http_keep`), waiting
//! for a busy connection in `http_claim` (the close hook inlines a shorter wait). The process
//! that owns a socket is recorded when the socket is created (`http_sock_create`,
//! cgroup/sock_create).
use core::{
    ffi::c_void,
    intrinsics::{AtomicOrdering, atomic_xadd},
};

use aya_ebpf::{
    EbpfContext,
    bindings::{
        __sk_buff, BPF_F_NO_PREALLOC, BPF_NOEXIST, BPF_SK_STORAGE_GET_F_CREATE, BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB,
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB, BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG, bpf_sock,
        bpf_spin_lock, bpf_tcp_sock,
    },
    btf_maps::SkStorage,
    helpers::{
        bpf_get_current_comm, bpf_ktime_get_ns,
        generated::{
            bpf_get_socket_cookie, bpf_sk_fullsock, bpf_sk_storage_delete, bpf_sk_storage_get, bpf_skb_cgroup_id,
            bpf_skb_load_bytes, bpf_spin_lock as spin_lock, bpf_spin_unlock as spin_unlock, bpf_tcp_sock,
        },
    },
    macros::{btf_map, cgroup_skb, cgroup_sock, map, sock_ops},
    maps::{Array, HashMap, PerCpuHashMap},
    programs::{SkBuffContext, SockContext, SockOpsContext},
};
use collector_common::{
    drop,
    http::{
        ActiveKey, BOUND_CAP, HttpHist, HttpKey, MAX_DURATION_BOUNDS, OVERFLOW_METHOD, SIDE_CLIENT, SIDE_SERVER,
        SIZE_BOUNDS,
        framer::{self, Exchange, Pending, Sink, WINDOW},
        stash::{self, BLOCK, Block, BlockKey},
    },
};

use crate::{drops, network, process, tls};

/// Upper bounds of the duration buckets in nanoseconds, set by the daemon; unused slots hold
/// `BOUND_CAP` so nothing lands beyond the configured +Inf bucket.
// SAFETY: unmangled so that the daemon can set it by this name before load; no other symbol in
// the object has the name, so nothing else is bound to it.
#[unsafe(no_mangle)]
static DURATION_BOUNDS_NS: [u64; MAX_DURATION_BOUNDS] = [BOUND_CAP; MAX_DURATION_BOUNDS];

/// The body size bounds, read through a pointer the compiler cannot see through (see
/// `bucket`).
// SAFETY: an unmangled global of its own (the daemon leaves it at its initial value); no other
// symbol in the object has the name, so nothing else is bound to it.
#[unsafe(no_mangle)]
static SIZE_BOUNDS_B: [u64; SIZE_BOUNDS.len()] = SIZE_BOUNDS;

/// Benchmarks only (`cargo xtask bench`, set by the daemon from `COLLECTOR_BENCH_HTTP_STAGE`):
/// 0 runs the whole program; 1, 2 and 3 return at the stage boundaries whose cost the bench
/// breaks down (docs/performance.md). A read-only global, so the verifier knows its value: the
/// branches not taken and the code only they reach are dropped from the loaded program (the
/// loads of the global stay, a few instructions).
// SAFETY: unmangled so that the daemon can set it by this name before load; no other symbol in
// the object has the name, so nothing else is bound to it.
#[unsafe(no_mangle)]
static HTTP_BENCH_STAGE: u32 = 0;

/// Whether the program returns at benchmark stage `stage` (see `HTTP_BENCH_STAGE`).
#[inline(always)]
fn bench_stop(stage: u32) -> bool {
    // SAFETY: reads an immutable static through a reference: valid, aligned and initialised,
    // and never written while programs run (the daemon sets it before load and the loader
    // freezes read-only data), so nothing races with the read. Volatile so LLVM reads the value
    // the daemon set instead of folding the initial 0.
    unsafe { core::ptr::read_volatile(&raw const HTTP_BENCH_STAGE) == stage }
}

/// Parse steps per segment. A step consumes a whole start line and up to 8 header lines, or
/// everything up to a body's end, or one byte of a line cut by the end of the segment; a
/// segment that needs more (a 64 KiB GRO segment of small pipelined requests) is followed up
/// to here and its connection's direction re-synchronises on a later message.
pub(crate) const MAX_STEPS: u32 = 512;

// Connection roles (set when the connection state is created).
pub(crate) const ROLE_SERVER: u8 = 1;
pub(crate) const ROLE_CLIENT: u8 = 2;

/// Where the bytes `http_step` parses lie: `http_step` is a global function verified once,
/// which cannot take pointers on every kernel, so it finds this through the socket.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Seg {
    /// Stream position of the first byte, and one past the last.
    seq: u32,
    end: u32,
    /// In the packet (`SRC_PACKET`): offset of the first payload byte.
    payload: u32,
    /// `SRC_PACKET`, or `SRC_STASH` for a run of bytes held in the reorder stash.
    src: u32,
    now: u64,
}

const SRC_PACKET: u32 = 0;
const SRC_STASH: u32 = 1;

/// The blocks of the reorder stash a direction holds: indices `[lo, hi)` (empty when equal).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Held {
    lo: u32,
    hi: u32,
}

/// Who the connection's requests are counted for (the histogram key fields it contributes).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Ident {
    // The byte arrays sit at 8-byte offsets so that copying them into a key is two word moves
    // (an unaligned copy becomes a call to a byte-wise memcpy).
    /// Name of the process that created the socket (or its listening socket), NUL-padded; all
    /// zero when the socket existed before the collector started.
    pub(crate) comm: [u8; 16],
    pub(crate) addr: [u8; 16],
    pub(crate) cgroup_id: u64,
    pub(crate) local_port: u16,
    pub(crate) peer_port: u16,
    pub(crate) family: u8,
    pub(crate) role: u8,
    /// `SCHEME_HTTP`, or `SCHEME_HTTPS` for a TLS connection (tls.rs).
    pub(crate) scheme: u8,
    pub(crate) _pad: u8,
    /// The socket's cookie (keys of its stash blocks).
    pub(crate) cookie: u64,
}

#[repr(C)]
pub struct Conn {
    /// Guards `busy` (see `claim`).
    lock: bpf_spin_lock,
    /// Set while a program follows the connection. Segments of one socket can reach the hooks
    /// on two CPUs at once (a veth or loopback peer hands each segment to the receiving stack
    /// on the CPU that sent it; a response may leave while a request arrives), and the
    /// framer's state must be changed by one at a time.
    busy: u32,
    ex: Exchange,
    /// The current segment of the request and of the response direction.
    seg: [Seg; 2],
    /// Stash blocks of the request and of the response direction.
    held: [Held; 2],
    id: Ident,
}

const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<HttpKey>() == 48 && offset_of!(HttpKey, comm) == 8 && offset_of!(HttpKey, status) == 24);
    assert!(offset_of!(HttpKey, port) == 26 && offset_of!(HttpKey, method) == 28 && offset_of!(HttpKey, side) == 29);
    assert!(offset_of!(HttpKey, family) == 30 && offset_of!(HttpKey, scheme) == 31 && offset_of!(HttpKey, addr) == 32);
    assert!(size_of::<ActiveKey>() == 16 && offset_of!(ActiveKey, port) == 8 && offset_of!(ActiveKey, scheme) == 10);
    assert!(offset_of!(Conn, id) % 8 == 0 && offset_of!(Ident, comm) == 0 && offset_of!(Ident, addr) == 16);
    // docs/metrics.md quotes the socket storage a followed connection takes.
    assert!(size_of::<Conn>() == 1104);
};

static ZERO_HIST: HttpHist = HttpHist::ZERO;

/// Entry 0 is set to 1 by the daemon once both programs are attached. The two hooks are
/// attached one after the other: a connection whose request passed the first while the second
/// was not yet attached would have its response missed and every later response paired with
/// the request before it. Until then the programs only count packets.
#[map]
static HTTP_ARMED: Array<u32> = Array::with_max_entries(1, 0);

/// Connection state in the socket's local storage: found through the socket itself (no hashing,
/// no table to outgrow), created zeroed on the first segment that starts a request or a
/// response (see `new_conn`), and freed by the kernel with the socket (or deleted earlier:
/// when both streams have ended, on RST, or when the socket reaches TCP_CLOSE otherwise, in
/// `http_sock_close`).
#[btf_map]
static HTTP_CONNS: SkStorage<Conn> = SkStorage::new();

/// Sockets that are not (or not yet) followed, one byte each so other protocols cost no
/// connection state: `MIDSTREAM_TRIES` once the socket is known not to carry HTTP/1.x (and is
/// not looked at again), below it the segments seen from the middle of its stream that
/// started no message.
#[btf_map]
static HTTP_NOT_HTTP: SkStorage<u8> = SkStorage::new();

/// The process that created a socket (see `http_sock_create`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Owner {
    comm: [u8; 16],
}

/// A socket-storage map whose values are copied to the sockets a listening socket accepts
/// (`BPF_F_CLONE`): a server's connections carry the owner of its listening socket. aya's
/// `SkStorage` has no flag for it; this is the same BTF map definition with the flag.
#[repr(C)]
pub struct CloneSkStorage<T> {
    r#type: *const [i32; aya_ebpf::bindings::bpf_map_type::BPF_MAP_TYPE_SK_STORAGE as usize],
    key: *const i32,
    value: *const T,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; (aya_ebpf::bindings::BPF_F_NO_PREALLOC | aya_ebpf::bindings::BPF_F_CLONE) as usize],
}

// SAFETY: a map definition, not data: the fields are null pointers whose types alone describe
// the map in BTF (type, key, value, flags), and no code reads or writes through them. The
// static's address is used only as the map reference the loader rewrites into the map, so
// sharing it between CPUs shares nothing that could race. (A static must be `Sync`, which raw
// pointer fields are not by themselves.)
unsafe impl<T> Sync for CloneSkStorage<T> {}

#[btf_map]
static HTTP_OWNER: CloneSkStorage<Owner> = CloneSkStorage {
    r#type: core::ptr::null(),
    key: core::ptr::null(),
    value: core::ptr::null(),
    max_entries: core::ptr::null(),
    map_flags: core::ptr::null(),
};

/// Rounds a program waits for a connection another CPU is following (a round is a lock and an
/// unlock, tens of nanoseconds, up to a hundred when the other CPU holds the line: tens of
/// microseconds in all, more than a segment's parse takes). The verifier bounds the branches
/// a program may keep pending (8192), which bounds this.
const CLAIM_ROUNDS: u32 = 1024;

/// Takes the connection for this program run if no other CPU holds it (one round of `claim`).
#[inline(always)]
fn try_claim(conn: &mut Conn) -> bool {
    // SAFETY: `conn.lock` is the `bpf_spin_lock` of this socket's `HTTP_CONNS` value, reached
    // through a reference valid for this run (see `sk_storage`), and the map's BTF declares the
    // lock, which the helper requires (the verifier refuses it otherwise). The kernel takes the
    // lock word atomically, so CPUs taking it at once do not race. It is held only around the
    // two accesses to `busy` below, with no call in between, and released on every path, as
    // the verifier requires.
    unsafe { spin_lock(&mut conn.lock) };
    let free = conn.busy == 0;
    if free {
        conn.busy = 1;
    }
    // SAFETY: as above: releases the lock just taken.
    unsafe { spin_unlock(&mut conn.lock) };
    free
}

/// Takes the connection for this program run: waits while another CPU holds it, up to `rounds`
/// rounds. False when it stayed busy (the segment is then not followed, and counted).
#[inline(always)]
fn claim(conn: &mut Conn, rounds: u32) -> bool {
    let mut k = 0;
    while k < rounds {
        if try_claim(conn) {
            return true;
        }
        k += 1;
    }
    drops::count(drop::HTTP_BUSY);
    false
}

/// Gives the connection back (the lock orders the state's stores before it).
#[inline(always)]
fn release(conn: &mut Conn) {
    // SAFETY: `conn.lock` is the `bpf_spin_lock` of this socket's `HTTP_CONNS` value, reached
    // through a reference valid for this run, and declared in the map's BTF as the helper
    // requires. The kernel takes it atomically; it is held around one store to `busy`, with no
    // call in between, and released just below, as the verifier requires.
    unsafe { spin_lock(&mut conn.lock) };
    conn.busy = 0;
    // SAFETY: as above: releases the lock just taken.
    unsafe { spin_unlock(&mut conn.lock) };
}

/// Segments of a connection seen from the middle of its stream that may pass without starting
/// a message before the connection is taken for something other than HTTP/1.x.
const MIDSTREAM_TRIES: u8 = 64;

/// The mark of a socket given up because its received stream started with a TLS handshake
/// record, while HTTPS is captured: its segments with payload still note when they arrived
/// (`tls::arrived`), where a TLS server's request starts.
const MARK_TLS_SERVER: u8 = MIDSTREAM_TRIES + 1;

/// The reorder stash (`collector_common::http::stash`): bytes of received streams that arrived
/// out of order while the framer waited for a byte it needs, in 1 KiB blocks. Allocated when
/// used (a block is about 2.2 KiB), deleted as the framer moves past them or the connection
/// ends; 4096 blocks at most (9 MiB) for the host. Blocks of sockets that went away without
/// the programs seeing it are deleted by the daemon after a minute.
#[map]
static HTTP_STASH: HashMap<BlockKey, Block> = HashMap::with_max_entries(4096, BPF_F_NO_PREALLOC);

/// A zeroed block to insert from (2 KiB do not fit on the stack).
static ZERO_BLOCK: Block = Block::ZERO;

/// Aggregated histograms. Shared by all CPUs (atomic adds): one entry per label set.
#[map]
static HTTP_HIST: HashMap<HttpKey, HttpHist> = HashMap::with_max_entries(8192, 0);

/// Server requests in flight per (cgroup, port): +1 when a request starts, -1 when its response
/// ends or it is abandoned (two's complement adds, summed over the CPUs by the daemon). Per CPU
/// because the two usually happen on different CPUs (a request arrives in the receiving
/// softirq, its response leaves from the serving thread): a shared counter would move between
/// their caches twice per request. Atomic adds all the same: a softirq can interrupt a program
/// on its CPU and update the same slot.
#[map]
static HTTP_ACTIVE: PerCpuHashMap<ActiveKey, u64> = PerCpuHashMap::with_max_entries(4096, 0);

/// The socket's value in a socket-storage map (`create`: a zeroed one if it has none).
#[inline(always)]
fn sk_storage<T>(map: *const c_void, sk: *mut bpf_sock, create: bool) -> *mut T {
    let flags = if create { BPF_SK_STORAGE_GET_F_CREATE as u64 } else { 0 };
    // SAFETY: `map` is one of this object's socket-storage maps (`conns`, `not_http`,
    // `owners`: the address of its definition, which the loader rewrites into the map) and `sk`
    // a socket the verifier accepts for this helper (a full socket from `bpf_sk_fullsock` or
    // `bpf_sock_ops.sk`, or the cgroup/sock_create context); it refuses the program otherwise.
    // The helper only looks the socket's value up (with `create`: allocates a zeroed one) and
    // returns null or a pointer to it, valid until the program returns (values are freed only
    // after an RCU grace period). Every caller pairs a map with its value type as `T` (`Conn`,
    // `u8`, `Owner`), so the cast names the value's real type.
    unsafe { bpf_sk_storage_get(map as *mut c_void, sk as *mut c_void, core::ptr::null_mut(), flags) as *mut T }
}

#[inline(always)]
fn conns() -> *const c_void {
    &HTTP_CONNS as *const SkStorage<Conn> as *const c_void
}

#[inline(always)]
fn not_http() -> *const c_void {
    &HTTP_NOT_HTTP as *const SkStorage<u8> as *const c_void
}

#[inline(always)]
fn owners() -> *const c_void {
    &HTTP_OWNER as *const CloneSkStorage<Owner> as *const c_void
}

#[inline(always)]
fn sk_storage_delete(map: *const c_void, sk: *mut bpf_sock) {
    // SAFETY: `map` is one of this object's socket-storage maps and `sk` a socket the verifier
    // accepts for the helper, as in `sk_storage`. The helper unlinks the socket's value, whose
    // memory is freed only after an RCU grace period: a reference a caller still holds stays
    // valid until the program returns, and no caller uses one after the delete (each returns
    // at once, and `handle` skips `release` when `http_finish` deleted the state).
    unsafe { bpf_sk_storage_delete(map as *mut c_void, sk as *mut c_void) };
}

/// The TCP state of a full socket.
#[inline(always)]
fn tcp_sock(sk: *mut bpf_sock) -> Option<&'static bpf_tcp_sock> {
    // SAFETY: `sk` is a full socket (from `bpf_sk_fullsock`; the verifier refuses anything
    // else). The helper returns null or a pointer to the socket's TCP fields, valid until the
    // program returns, which are read only at offsets the verifier checks. The `'static`
    // lifetime is nominal: callers use the reference within this run.
    unsafe { bpf_tcp_sock(sk).as_ref() }
}

#[inline(always)]
fn atomic_add(p: *mut u64, v: u64) {
    // SAFETY: callers pass a pointer to a `u64` in a map value they looked up in this run
    // (`HTTP_HIST`, or this CPU's slot of `HTTP_ACTIVE`): 8-byte aligned, and valid until the
    // program returns, since both maps are preallocated and their memory lives as long as the
    // map (an entry the daemon deletes meanwhile only loses the add). The add is atomic, so
    // other CPUs, or a program nesting on this one, adding to the same word lose nothing.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, v) };
}

#[inline(always)]
pub(crate) fn load<T>(skb: *mut __sk_buff, off: u32) -> Option<T> {
    let mut v = core::mem::MaybeUninit::<T>::uninit();
    // SAFETY: `skb` is the program's `__sk_buff` context (the verifier checks the argument),
    // and the destination is the local `v`, exactly the size_of::<T>() bytes the helper is told
    // to write; the helper checks `off` and the length against the packet and fails rather
    // than read past it.
    let r = unsafe {
        bpf_skb_load_bytes(skb as *const c_void, off, v.as_mut_ptr() as *mut c_void, core::mem::size_of::<T>() as u32)
    };
    // SAFETY: success means the helper wrote all size_of::<T>() bytes of `v`, and every `T`
    // loaded here (`u8` and byte arrays) is valid for any bytes.
    if r == 0 { Some(unsafe { v.assume_init() }) } else { None }
}

/// A 16-byte array (8-byte aligned, asserted above) as two words.
#[inline(always)]
pub(crate) fn words16(b: &[u8; 16]) -> [u64; 2] {
    let p = b.as_ptr() as *const u64;
    // SAFETY: callers pass `id.comm` or `id.addr` of the `Ident` of a `Conn` in socket storage
    // or of a `TlsConn` in `TLS_CONNS` (tls.rs): 16 readable bytes at 8-byte aligned offsets of
    // `Ident`, itself at an 8-byte aligned offset of either (asserted above and in tls.rs), in a
    // value the kernel aligns to 8 bytes, so both u64 reads are in bounds and aligned; any bytes
    // are a valid u64.
    unsafe { [*p, *p.add(1)] }
}

/// Records the framer's events for one connection.
struct Recorder<'a> {
    id: &'a Ident,
    /// The packet being handled (null in the close hook, which records no exchange).
    skb: *mut __sk_buff,
    egress: bool,
}

/// Adds `delta` (two's complement) to the in-flight gauge of a server socket.
#[inline(always)]
pub(crate) fn active_add(id: &Ident, delta: u64) {
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

/// Bucket of `v` among `bounds` (the number of bounds below it), summed without branches so
/// that the verifier follows one path. The bounds are read through a pointer the compiler
/// cannot see through: with constant bounds LLVM turns each term into a compare and a branch,
/// and the verifier of older kernels then follows 2^n paths.
#[inline(always)]
fn bucket<const N: usize>(bounds: *const [u64; N], v: u64) -> u64 {
    let v = if v >= BOUND_CAP { BOUND_CAP - 1 } else { v };
    let mut idx = 0u64;
    let mut i = 0usize;
    while i < N {
        // Bounds and values stay below 2^62: the sign bit of `bound - v` says v > bound. Each
        // bound is read volatile, when it is used: LLVM would otherwise fold constant bounds,
        // or load them all first and spill them to the stack (its frame is small: 512 bytes
        // for the whole call chain).
        // SAFETY: callers pass `&raw const` of one of the two bound statics (N elements each)
        // and i < N, so the element is in bounds, aligned and initialised; the statics are
        // never written while programs run (set before load, then frozen), so the read races
        // with nothing. Volatile only to keep LLVM from folding or hoisting the bounds.
        idx += unsafe { core::ptr::read_volatile(&(*bounds)[i]) }.wrapping_sub(v) >> 63;
        i += 1;
    }
    idx
}

impl Sink for Recorder<'_> {
    #[inline(always)]
    fn request_started(&mut self) {
        active_add(self.id, 1);
    }

    #[inline(always)]
    fn abandoned(&mut self, n: u64) {
        drops::add(drop::HTTP_ABANDONED, n);
        active_add(self.id, n.wrapping_neg());
    }

    #[inline(always)]
    fn dropped(&mut self, reason: u32) {
        drops::count(reason);
    }

    #[inline(always)]
    fn exchange_done(&mut self, p: &Pending, status: u16, resp_bytes: u64, now: u64) {
        let what = self.egress as u64 | (p.method as u64) << 8 | (status as u64) << 16;
        http_record(self.skb, what, now.saturating_sub(p.start_ns), p.req_bytes, resp_bytes);
    }
}

/// Records one exchange of the socket of `skb` into its histogram: `what` holds the
/// direction of the packet (bit 0), the method (bits 8..16) and the status (bits 16..32). A
/// global function (verified once, with its own stack frame) taking the context and scalars,
/// as global functions may on every kernel from 5.10.
// SAFETY: unmangled (and exported) so that it keeps global linkage and the kernel verifies it
// once as a global function; no other symbol in the object has the name, so nothing else is
// bound to it.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn http_record(skb: *mut __sk_buff, what: u64, dur: u64, req_bytes: u64, resp_bytes: u64) -> i64 {
    let Some(sk) = socket_of(skb) else { return 0 };
    // SAFETY: `sk_storage` returns null (None here) or this socket's `Conn`, valid until the
    // program returns. Only `id` is read, and only while the calling program holds the
    // connection (`claim`; the callers are the framer's events in `http_step`, `http_arrive`
    // and `http_finish`), whose own borrows of `id` are shared: no write overlaps the reads.
    let Some(conn) = (unsafe { sk_storage::<Conn>(conns(), sk, false).as_ref() }) else { return 0 };
    record(&conn.id, what, dur, req_bytes, resp_bytes);
    0
}

/// Records one exchange of the connection `id` (see `http_record`; tls.rs calls it for TLS
/// connections): its histogram entry, and the end of the request in the in-flight gauge.
#[inline(always)]
pub(crate) fn record(id: &Ident, what: u64, dur: u64, req_bytes: u64, resp_bytes: u64) {
    active_add(id, u64::MAX);
    let (method, status) = ((what >> 8) as u8, (what >> 16) as u16);
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
                | (id.scheme as u64) << 56,
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
    // SAFETY: `h` is this run's lookup result in `HTTP_HIST`: preallocated map memory, aligned
    // and valid until the program returns (an entry the daemon deletes meanwhile only loses
    // these adds). Every index is checked against its array (the lengths are constants, read
    // from no memory), and each access only takes one word's address for `atomic_add`, so the
    // adds of other CPUs to the same entry do not race with it.
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

/// The full socket of a packet.
#[inline(always)]
fn socket_of(skb: *mut __sk_buff) -> Option<*mut bpf_sock> {
    if skb.is_null() {
        return None;
    }
    // SAFETY: `skb` is non-null and is the program's `__sk_buff` context, valid for the whole
    // run: a global function's `__sk_buff *` argument is typed as the context, and the verifier
    // refuses a call passing anything else. Reading `sk` is a context load that the verifier
    // rewrites into the packet's socket pointer, or null.
    let sk = unsafe { (*skb).__bindgen_anon_2.sk };
    if sk.is_null() {
        return None;
    }
    // SAFETY: `sk` is the packet's socket from the context, non-null (checked above), the
    // argument the helper takes; it returns the socket as a full one, valid for this run, or
    // null.
    let sk = unsafe { bpf_sk_fullsock(sk) };
    (!sk.is_null()).then_some(sk)
}

/// Index of a direction in `Conn::seg`.
#[inline(always)]
fn di(is_req: bool) -> usize {
    if is_req { 0 } else { 1 }
}

/// One parse step of the current segment of the direction `egress` of the socket: loads the
/// bytes the framer needs into its window and runs one framer step. Returns nonzero when the
/// segment needs no more steps (`STEP_LAST` when the stash holds nothing for the direction
/// either). A global function: the verifier checks it once, on its own,
/// however many times the programs call it (arguments are the context and a scalar, which
/// global functions may take on every kernel from 5.10).
// SAFETY: unmangled (and exported) so that it stays a global function, verified once; the name
// is unique in the object.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn http_step(skb: *mut __sk_buff, egress: u64) -> i64 {
    let Some(sk) = socket_of(skb) else { return 1 };
    // SAFETY: `sk_storage` returns null (None here) or this socket's `Conn`, valid until the
    // program returns. The calling program holds the connection (`claim`), so no other program
    // changes it, and the caller's own reference stays unused until this call returns.
    let Some(conn) = (unsafe { sk_storage::<Conn>(conns(), sk, false).as_mut() }) else { return 1 };
    let is_req = (conn.id.role == ROLE_SERVER) != (egress != 0);
    let (src, seq, end, payload, now) = {
        let s = &conn.seg[di(is_req)];
        (s.src, s.seq, s.end, s.payload, s.now)
    };
    let cookie = conn.id.cookie;
    let d = conn.ex.dir_mut(is_req);
    if src == SRC_STASH {
        if let Some((p, _)) = d.needs_window(end) {
            let index = stash::index_of(p);
            let key = BlockKey { cookie, index, is_req: is_req as u32 };
            // SAFETY: a shared reference to a stash block of this connection, valid until the
            // program returns: `HTTP_STASH` is not preallocated, so even a block deleted
            // meanwhile is freed only after an RCU grace period. A connection's blocks are
            // written only by the program holding it, which is this run, so nothing writes the
            // block while it is read (the daemon only deletes blocks, never writes them).
            let Some(block) = (unsafe { HTTP_STASH.get(&key) }) else { return 1 };
            block.fill_window(d, index.wrapping_mul(BLOCK), p, end);
        }
    } else if let Some((p, n)) = d.needs_window(end) {
        if n == 0 || n > WINDOW {
            return 1;
        }
        // 1..=WINDOW in a form every verifier bounds: the verifier of 5.10 learns nothing from
        // `n != 0`, so `n - 1` goes through memory (LLVM cannot drop the mask), is masked, and
        // 1 is added back, in one 64-bit register.
        // SAFETY: reads a temporary local through a reference (valid, aligned, initialised, not
        // shared); volatile only so LLVM keeps the mask the verifier needs.
        let len = (unsafe { core::ptr::read_volatile(&(n as u64 - 1)) } & (WINDOW as u64 - 1)) + 1;
        let off = payload.wrapping_add(p.wrapping_sub(seq));
        // SAFETY: `skb` is the program's context; the destination is the direction's window,
        // WINDOW bytes inside this socket's `Conn`, and 1 <= len <= WINDOW, so the helper writes
        // within it; it checks `off` and `len` against the packet and fails rather than read
        // past it.
        let r = unsafe { bpf_skb_load_bytes(skb as *const c_void, off, d.win.as_mut_ptr() as *mut c_void, len as u32) };
        if r != 0 {
            return 1;
        }
        d.win_base = p;
        d.win_len = n;
    }
    let mut rec = Recorder { id: &conn.id, skb, egress: egress != 0 };
    if !conn.ex.step(is_req, end, now, &mut rec) {
        return 0;
    }
    let held = conn.held[di(is_req)];
    if held.lo == held.hi { STEP_LAST } else { 1 }
}

/// `http_step`: the segment needs no more steps and the direction holds nothing in the stash
/// (so `http_parse` need not look there).
const STEP_LAST: i64 = 2;

/// Points the direction `egress` of the socket at the run of stashed bytes from its framer's
/// position, for `http_step`: returns 0 when there is one, nonzero when the stash holds
/// nothing there. A global function, as `http_step`.
// SAFETY: unmangled (and exported) so that it stays a global function, verified once; the name
// is unique in the object.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn http_stash_run(skb: *mut __sk_buff, egress: u64) -> i64 {
    let Some(sk) = socket_of(skb) else { return 1 };
    // SAFETY: `sk_storage` returns null (None here) or this socket's `Conn`, valid until the
    // program returns. The calling program holds the connection (`claim`), so no other program
    // changes it, and the caller's own reference stays unused until this call returns.
    let Some(conn) = (unsafe { sk_storage::<Conn>(conns(), sk, false).as_mut() }) else { return 1 };
    let is_req = (conn.id.role == ROLE_SERVER) != (egress != 0);
    let held = conn.held[di(is_req)];
    let d = conn.ex.dir(is_req);
    let pos = d.pos;
    let index = stash::index_of(pos);
    if held.lo == held.hi
        || framer::after(held.lo, index)
        || !framer::after(held.hi, index)
        || !(framer::needs_bytes(d.state) || framer::skippable(d.state))
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
/// `index` (the framer waits for a missing byte before it). Returns nonzero when the segment
/// has nothing for that block (or beyond). A global function, as `http_step`.
// SAFETY: unmangled (and exported) so that it stays a global function, verified once; the name
// is unique in the object.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn http_keep(skb: *mut __sk_buff, egress: u64, index: u64) -> i64 {
    let Some(sk) = socket_of(skb) else { return 1 };
    // SAFETY: `sk_storage` returns null (None here) or this socket's `Conn`, valid until the
    // program returns. The calling program holds the connection (`claim`), so no other program
    // changes it, and the caller's own reference stays unused until this call returns.
    let Some(conn) = (unsafe { sk_storage::<Conn>(conns(), sk, false).as_mut() }) else { return 1 };
    let is_req = (conn.id.role == ROLE_SERVER) != (egress != 0);
    let seg = conn.seg[di(is_req)];
    let index = index as u32;
    let Some((o, n, at)) = stash::overlap(seg.seq, seg.end, conn.ex.dir(is_req).pos, index) else { return 1 };
    let key = BlockKey { cookie: conn.id.cookie, index, is_req: is_req as u32 };
    let block = match HTTP_STASH.get_ptr_mut(&key) {
        Some(b) => Some(b),
        None => {
            let _ = HTTP_STASH.insert(&key, &ZERO_BLOCK, BPF_NOEXIST as u64);
            HTTP_STASH.get_ptr_mut(&key)
        }
    };
    let Some(block) = block else {
        drops::count(drop::HTTP_STASH_FULL);
        return 1;
    };
    // SAFETY: `block` is this run's lookup result in `HTTP_STASH` (inserted zeroed just above if
    // absent): aligned, and valid until the program returns even if deleted meanwhile (the map
    // is not preallocated; values are freed after an RCU grace period). A connection's blocks
    // are written and read only by the program holding it, which is this run, so this is the
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
        return 1;
    }
    block.mark(o, len as u32);
    block.when = seg.now;
    let held = &mut conn.held[di(is_req)];
    if held.lo == held.hi {
        *held = Held { lo: index, hi: index.wrapping_add(1) };
    } else {
        if framer::after(held.lo, index) {
            held.lo = index;
        }
        if !framer::after(held.hi, index) {
            held.hi = index.wrapping_add(1);
        }
    }
    0
}

/// Deletes the stash blocks of a direction that lie wholly before its position (`all`: every
/// one, once the direction stopped following its stream or the connection ends).
#[inline(always)]
fn forget(conn: &mut Conn, is_req: bool, all: bool) {
    let held = conn.held[di(is_req)];
    if held.lo == held.hi {
        return;
    }
    let floor = if all { held.hi } else { stash::index_of(conn.ex.dir(is_req).pos) };
    let key = BlockKey { cookie: conn.id.cookie, index: 0, is_req: is_req as u32 };
    let mut lo = held.lo;
    let mut k = 0;
    while k < stash::SPAN / BLOCK + 1 && framer::after(floor, lo) && framer::after(held.hi, lo) {
        let _ = HTTP_STASH.remove(&BlockKey { index: lo, ..key });
        lo = lo.wrapping_add(1);
        k += 1;
    }
    conn.held[di(is_req)].lo = lo;
}

/// `http_parse` flag: parse the packet first (else only what the stash holds).
const PARSE_PACKET: u64 = 2;

/// Runs up to `MAX_STEPS` parse steps of the direction `how & 1`: of the packet when
/// `how & PARSE_PACKET`, then of whatever the stash holds from the position on. A global
/// function: the loop is verified once, its exits end the function.
// SAFETY: unmangled (and exported) so that it stays a global function, verified once; the name
// is unique in the object.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn http_parse(skb: *mut __sk_buff, how: u64) -> i64 {
    let egress = how & 1;
    let mut run = how & PARSE_PACKET == 0;
    let mut i = 0;
    while i < MAX_STEPS {
        if run && http_stash_run(skb, egress) != 0 {
            return 0;
        }
        let r = http_step(skb, egress);
        if r == STEP_LAST {
            return 0;
        }
        run = r != 0;
        i += 1;
    }
    0
}

/// Keeps the current segment of direction `egress`, from stash block `first` on (up to 64
/// blocks: a 64 KiB segment). A global function, as `http_parse`.
// SAFETY: unmangled (and exported) so that it stays a global function, verified once; the name
// is unique in the object.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn http_keep_all(skb: *mut __sk_buff, egress: u64, first: u64) -> i64 {
    let mut k = 0u64;
    while k < 64 {
        if http_keep(skb, egress, (first as u32).wrapping_add(k as u32) as u64) != 0 {
            return 0;
        }
        k += 1;
    }
    0
}

/// Takes the connection of `skb` (see `claim`); nonzero when it did. A global function: the
/// waiting loop is verified once.
// SAFETY: unmangled (and exported) so that it stays a global function, verified once; the name
// is unique in the object.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn http_claim(skb: *mut __sk_buff) -> i64 {
    let Some(sk) = socket_of(skb) else { return 0 };
    // SAFETY: `sk_storage` returns null (None) or this socket's `Conn`, valid until the program
    // returns. Another CPU may be changing the rest of the value: `claim` touches only `lock`
    // (through the helper, atomically) and `busy`, under that lock.
    match unsafe { sk_storage::<Conn>(conns(), sk, false).as_mut() } {
        Some(conn) => claim(conn, CLAIM_ROUNDS) as i64,
        None => 0,
    }
}

/// Whether a segment starting at `seq` carries the first payload byte of its direction of the
/// connection: the next expected sequence number minus the bytes the socket has received
/// (ingress), or the oldest unacknowledged one minus the bytes acknowledged (egress). The
/// kernel counts the acknowledged SYN in `bytes_acked` (measured here: the first payload byte
/// sent is one past that difference), so either of the two counts as the start.
#[inline(always)]
fn at_stream_start(tp: &bpf_tcp_sock, egress: bool, seq: u32) -> bool {
    if egress {
        seq.wrapping_sub(tp.snd_una.wrapping_sub(tp.bytes_acked as u32)) <= 1
    } else {
        seq == tp.rcv_nxt.wrapping_sub(tp.bytes_received as u32)
    }
}

const TCP_FIN: u8 = 0x01;
const TCP_RST: u8 = 0x04;

/// IP header length, family and the first 14 bytes of the TCP header, read by direct packet
/// access: at these hooks the headers sit in the skb's linear part, so most packets (pure ACKs
/// above all) cost no helper call. `Ok(None)`: not TCP. `Err(())`: the linear part is too
/// short to tell; the caller then uses `headers_loaded`.
#[inline(always)]
fn headers_direct(ctx: &SkBuffContext) -> Result<Option<(u32, u8, [u8; 14])>, ()> {
    let (data, data_end) = (ctx.data(), ctx.data_end());
    if data + 40 > data_end {
        return Err(());
    }
    // SAFETY: `data..data_end` is the linear part of this program's packet, readable for the
    // whole run (a cgroup_skb program cannot write or move it). The check above makes bytes
    // 0..40 readable, which covers this read and those of bytes 9 and 6 below; the verifier
    // refuses any packet read that a check against `data_end` does not cover.
    let v = unsafe { *(data as *const u8) };
    let (ip_len, family) = match v >> 4 {
        4 => {
            // SAFETY: as above: byte 9, within the 40 bytes checked.
            if unsafe { *((data + 9) as *const u8) } != 6 {
                return Ok(None);
            }
            (((v & 0x0f) as usize) * 4, 4u8)
        }
        6 => {
            // SAFETY: as above: byte 6, within the 40 bytes checked.
            if unsafe { *((data + 6) as *const u8) } != 6 {
                return Ok(None);
            }
            (40usize, 6u8)
        }
        _ => return Ok(None),
    };
    if ip_len < 20 {
        return Ok(None);
    }
    if data + ip_len + 14 > data_end {
        return Err(());
    }
    // SAFETY: as above: the 14 bytes at `ip_len` end before `data_end` (checked just above),
    // and the read is unaligned, so the header's position does not matter.
    let tcp = unsafe { core::ptr::read_unaligned((data + ip_len) as *const [u8; 14]) };
    Ok(Some((ip_len as u32, family, tcp)))
}

/// The same through `bpf_skb_load_bytes`, for packets whose headers are not all linear.
#[inline(always)]
fn headers_loaded(skb: *mut __sk_buff) -> Option<(u32, u8, [u8; 14])> {
    let v = load::<u8>(skb, 0)?;
    let (ip_len, family) = match v >> 4 {
        4 => {
            if load::<u8>(skb, 9)? != 6 {
                return None;
            }
            (((v & 0x0f) as u32) * 4, 4u8)
        }
        // TCP directly after the fixed header; extension headers are not followed.
        6 => {
            if load::<u8>(skb, 6)? != 6 {
                return None;
            }
            (40u32, 6u8)
        }
        _ => return None,
    };
    Some((ip_len, family, load::<[u8; 14]>(skb, ip_len)?))
}

/// Creates the connection state for a socket whose first payload segment (`seq`, first bytes
/// `head`) starts a request or a response, or is the first byte of its direction, and takes it
/// (`claim`); None when the socket is not (or not yet) to be followed.
#[inline(always)]
fn new_conn(
    skb: *mut __sk_buff,
    sk: *mut bpf_sock,
    egress: bool,
    seq: u32,
    payload: u32,
    plen: u32,
    tcp: &[u8; 14],
    family: u8,
) -> Option<&'static mut Conn> {
    let mark = sk_storage::<u8>(not_http(), sk, false);
    if !mark.is_null() {
        // SAFETY: read only when non-null (checked first): this socket's one-byte
        // `HTTP_NOT_HTTP` value, valid until the program returns; any byte is a valid u8.
        let m = unsafe { *mark };
        if m >= MIDSTREAM_TRIES {
            if m == MARK_TLS_SERVER && !egress {
                let ports = u32::from_be_bytes([tcp[0], tcp[1], tcp[2], tcp[3]]);
                tls::tls_arrived(skb, ports as u64, family as u64);
            }
            return None;
        }
    }
    let head = if plen >= 8 {
        load::<[u8; 8]>(skb, payload)
    } else {
        load::<u8>(skb, payload).map(|b| [b, 0, 0, 0, 0, 0, 0, 0])
    };
    let head = u64::from_le_bytes(head.unwrap_or([0; 8]));
    let tp = tcp_sock(sk)?;
    // The first bytes decide. A request line start ("GET ...") makes this socket a server if
    // it was received and a client if it was sent; a status line start ("HTTP/") the other way
    // round, so a connection caught between a request and its response is followed from that
    // response on.
    let response = head & 0xff_ffff_ffff == framer::le(b"HTTP/");
    // At the start of the byte stream anything else is not HTTP/1.x, for good. A connection
    // that was open before the collector started is seen from the middle of its stream (a
    // body, or the part of a message after a segment boundary): it is picked up at the first
    // segment that starts a response or a request with a known method, and given up after
    // MIDSTREAM_TRIES segments that do not.
    let at_start = at_stream_start(tp, egress, seq);
    let looks =
        response || if at_start { (head as u8).is_ascii_uppercase() } else { framer::known_method(head).is_some() };
    if !looks && !egress && !at_start && tp.bytes_received == 0 {
        // Received ahead of the stream's first byte (which was lost or reordered): it decides
        // when it comes, and this segment costs no try.
        return None;
    }
    if !looks {
        let mark = if mark.is_null() { sk_storage::<u8>(not_http(), sk, true) } else { mark };
        if mark.is_null() {
            drops::count(drop::HTTP_CONN_STORAGE);
        } else {
            // SAFETY: `mark` is non-null (checked above): this socket's one-byte `HTTP_NOT_HTTP`
            // value, valid until the program returns. Programs on two CPUs may update it at
            // once; a lost increment only delays giving the socket up.
            // A received stream that starts with a TLS handshake record (0x16, version 3.x) is
            // a TLS server's, whose arrivals the TLS capture uses.
            let given_up = if !egress && head & 0xffff == 0x0316 && tls::capturing() {
                MARK_TLS_SERVER
            } else {
                MIDSTREAM_TRIES
            };
            unsafe { *mark = if at_start { given_up } else { (*mark).saturating_add(1) } };
            if at_start && given_up == MARK_TLS_SERVER {
                // The connection's own first arrival, so that a request read before any later
                // segment is noted never takes the time of an earlier connection with the same
                // ports and peer (its entry is not deleted when it closes).
                let ports = u32::from_be_bytes([tcp[0], tcp[1], tcp[2], tcp[3]]);
                tls::tls_arrived(skb, ports as u64, family as u64);
            }
        }
        return None;
    }
    // Where the other direction starts, when nothing has passed on it yet (so that its first
    // segment is followed even when it arrives out of order); else it is picked up at its first
    // segment that starts a message.
    // (Both values always set: the verifier of 5.10 refuses reading a stack slot that one path
    // left unwritten, which an `Option` can become.)
    let (other_fresh, other_start) = if egress {
        (tp.bytes_received == 0, tp.rcv_nxt)
    } else {
        (tp.snd_nxt == tp.snd_una && tp.bytes_acked <= 1, tp.snd_nxt)
    };
    // SAFETY: `sk_storage` returns null (None here) or this socket's `Conn`, created zeroed if
    // absent (all zero is a valid `Conn`), valid until the program returns. Another CPU may hold
    // and change it: nothing here touches it before `http_claim` (which reaches the value in a
    // global function of its own) has taken it.
    let Some(conn) = (unsafe { sk_storage::<Conn>(conns(), sk, true).as_mut() }) else {
        drops::count(drop::HTTP_CONN_STORAGE);
        return None;
    };
    if http_claim(skb) == 0 {
        return None;
    }
    if conn.id.role != 0 {
        // Created and set up meanwhile by a program on another CPU.
        return Some(conn);
    }
    let role = if egress != response { ROLE_CLIENT } else { ROLE_SERVER };
    let is_req = (role == ROLE_SERVER) != egress;
    // The received stream: requests on a server, responses on a client.
    conn.ex.dir_mut(role == ROLE_SERVER).sflags |= framer::SF_RECEIVED;
    conn.ex.dir_mut(is_req).sync(seq);
    if other_fresh {
        conn.ex.dir_mut(!is_req).sync(other_start);
    }
    let id = &mut conn.id;
    id.role = role;
    // SAFETY: `skb` is this program's `__sk_buff` context, valid for the whole run and the
    // argument the helper takes; the helper only reads the cgroup of the packet's socket.
    id.cgroup_id = unsafe { bpf_skb_cgroup_id(skb) };
    let (sport, dport) = (u16::from_be_bytes([tcp[0], tcp[1]]), u16::from_be_bytes([tcp[2], tcp[3]]));
    // Local and peer as seen by this socket.
    let (local, peer, peer_addr_off) = if egress { (sport, dport, 16u32) } else { (dport, sport, 12u32) };
    id.local_port = local;
    id.peer_port = peer;
    id.family = family;
    if family == 4 {
        if let Some(a) = load::<[u8; 4]>(skb, peer_addr_off) {
            id.addr[..4].copy_from_slice(&a);
        }
    } else if let Some(a) = load::<[u8; 16]>(skb, if egress { 24 } else { 8 }) {
        id.addr = a;
    }
    // SAFETY: `sk_storage` returns null (None) or this socket's `Owner` (16 bytes, any value
    // valid), valid until the program returns. It is written only when the socket is created
    // (`http_sock_create`, or the kernel copying a listener's), before any segment, so a
    // shared reference is not overlapped by a write.
    if let Some(o) = unsafe { sk_storage::<Owner>(owners(), sk, false).as_ref() } {
        id.comm = o.comm;
    }
    // SAFETY: `skb` is this program's context, the argument the helper takes; the helper only
    // reads the socket's cookie (assigning it atomically on first use).
    id.cookie = unsafe { bpf_get_socket_cookie(skb as *mut c_void) };
    Some(conn)
}

#[inline(always)]
fn handle(ctx: &SkBuffContext, egress: bool) {
    if bench_stop(1) {
        return;
    }
    if network::counted_by_http() {
        network::count(ctx, egress);
    }
    let skb = ctx.as_ptr() as *mut __sk_buff;
    let hdr = match headers_direct(ctx) {
        Ok(h) => h,
        Err(()) => headers_loaded(skb),
    };
    let Some((ip_len, family, tcp)) = hdr else { return };
    let doff = ((tcp[12] >> 4) as u32) * 4;
    let flags = tcp[13];
    let payload = ip_len + doff;
    // SAFETY: `skb` is this program's `__sk_buff` context, valid for the whole run; reading
    // `len` is a context load that the verifier checks and rewrites.
    let end = unsafe { (*skb).len };
    if payload > end {
        return;
    }
    let plen = end - payload;
    let closing = flags & (TCP_FIN | TCP_RST) != 0;
    if plen == 0 && !closing {
        return; // pure ACK
    }
    if bench_stop(2) {
        return;
    }
    if HTTP_ARMED.get(0).is_none_or(|a| *a == 0) {
        return;
    }
    let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    // The socket this segment belongs to: the hook sets it for both directions, and only full
    // sockets reach it, but the verifier wants both checked.
    // SAFETY: `skb` is this program's `__sk_buff` context, valid for the whole run; reading
    // `sk` is a context load that the verifier rewrites into the packet's socket pointer, or
    // null.
    let sk = unsafe { (*skb).__bindgen_anon_2.sk };
    if sk.is_null() {
        return;
    }
    // SAFETY: `sk` is the packet's socket from the context, non-null (checked above), the
    // argument the helper takes; it returns the socket as a full one, valid for this run, or
    // null.
    let sk = unsafe { bpf_sk_fullsock(sk) };
    if sk.is_null() {
        return;
    }
    // SAFETY: `sk_storage` returns null (None) or this socket's `Conn`, valid until the program
    // returns (freed only after an RCU grace period, even when deleted). It is not used before
    // `http_claim` has taken it, after which no other program changes it. The global functions
    // this run calls (`http_claim`, `http_parse`, `http_arrive`, `http_keep_all`, `http_finish`)
    // reach the same value again through `sk_storage`; each runs to completion while `conn` is
    // unused, and each is an out-of-line call (`inline(never)`) whose body writes through
    // pointers that helper calls return, so LLVM treats it as writing any memory and reuses
    // nothing read through `conn` across it. (Rust's aliasing rules proper would not let a
    // `&mut` stay live across such writes; this relies on that call boundary.)
    let conn = match unsafe { sk_storage::<Conn>(conns(), sk, false).as_mut() } {
        Some(c) => {
            // One round here (the common case: nobody else holds it), the waiting loop in a
            // global function of its own only when another CPU does.
            if !try_claim(c) && http_claim(skb) == 0 {
                return;
            }
            c
        }
        None if plen > 0 => match new_conn(skb, sk, egress, seq, payload, plen, &tcp, family) {
            Some(c) => c,
            None => return,
        },
        None => return,
    };
    if bench_stop(3) {
        release(conn);
        return;
    }
    // SAFETY: `bpf_ktime_get_ns` takes no argument and touches no memory of the program.
    let now = unsafe { bpf_ktime_get_ns() };
    // A reset: the waiting requests are given up, and the connection's stash blocks and state
    // deleted.
    if flags & TCP_RST != 0 {
        let mut rec = Recorder { id: &conn.id, skb, egress };
        conn.ex.abandon_all(&mut rec);
        forget(conn, true, true);
        forget(conn, false, true);
        sk_storage_delete(conns(), sk);
        return;
    }
    // Requests flow in on servers and out on clients.
    let is_req = (conn.id.role == ROLE_SERVER) != egress;
    let packet = Seg { seq, end: seq.wrapping_add(plen), payload, src: SRC_PACKET, now };
    conn.seg[di(is_req)] = packet;
    let eg = egress as u64;
    if plen > 0 {
        // What the stash holds from the position on (its missing bytes came in an earlier
        // segment, or the position moved since).
        if conn.held[di(is_req)].lo != conn.held[di(is_req)].hi {
            http_parse(skb, eg);
            conn.seg[di(is_req)] = packet;
        }
        match http_arrive(skb, eg) {
            ARRIVE_PARSE => {
                http_parse(skb, eg | PARSE_PACKET);
            }
            ARRIVE_KEEP => {
                // Beyond a missing byte the framer needs: kept for when it arrives.
                let d = conn.ex.dir(is_req);
                let from = if framer::after(d.pos, seq) { d.pos } else { seq };
                http_keep_all(skb, eg, stash::index_of(from) as u64);
            }
            _ => {}
        }
    }
    // The connection's state is deleted once both streams have ended (then nothing is left to
    // give back).
    if http_finish(skb, eg | if flags & TCP_FIN != 0 { FINISH_FIN } else { 0 }) == 0 {
        release(conn);
    }
}

/// What `http_arrive` tells the program to do with the segment's payload.
const ARRIVE_NONE: i64 = 0;
const ARRIVE_PARSE: i64 = 1;
const ARRIVE_KEEP: i64 = 2;

/// The positional bookkeeping for the current segment of direction `egress` (in `Conn::seg`):
/// what the socket has taken in order on its received stream (bodies that end before it have
/// ended, a response waiting for a gap may be recorded), then the framer's `arrive`. Returns
/// `ARRIVE_PARSE` when its bytes are to be parsed, `ARRIVE_KEEP` when they lie beyond a byte
/// the framer needs and still waits for. A global function, verified once.
// SAFETY: unmangled (and exported) so that it stays a global function, verified once; the name
// is unique in the object.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn http_arrive(skb: *mut __sk_buff, egress: u64) -> i64 {
    let Some(sk) = socket_of(skb) else { return ARRIVE_NONE };
    // SAFETY: `sk_storage` returns null (None here) or this socket's `Conn`, valid until the
    // program returns. The calling program holds the connection (`claim`), so no other program
    // changes it, and the caller's own reference stays unused until this call returns.
    let Some(conn) = (unsafe { sk_storage::<Conn>(conns(), sk, false).as_mut() }) else { return ARRIVE_NONE };
    let egress = egress != 0;
    let is_req = (conn.id.role == ROLE_SERVER) != egress;
    let seg = conn.seg[di(is_req)];
    let rcv_nxt = tcp_sock(sk).map(|tp| tp.rcv_nxt);
    let mut rec = Recorder { id: &conn.id, skb, egress };
    // The stream this socket receives (requests on a server, responses on a client): its bytes
    // before the socket's in-order point have all arrived, whichever segments passed here, so
    // a body that ends before it has ended (before a response to it is parsed, and even when
    // some of its segments passed before the connection was followed), and a response that
    // waited for a gap before it is recorded.
    let received = conn.id.role == ROLE_SERVER;
    if let Some(r) = rcv_nxt {
        conn.ex.reached(received, r, seg.now, &mut rec);
        if !received {
            let when = conn.ex.resp.fill_ns;
            conn.ex.resolve(r, when, &mut rec);
        }
    }
    let len = seg.end.wrapping_sub(seg.seq);
    if len == 0 {
        return ARRIVE_NONE;
    }
    // Up to where the socket has taken this stream in order: everything before a segment it
    // sends; for a received one, its next expected byte.
    let frontier = if egress { seg.seq } else { rcv_nxt.unwrap_or(seg.seq) };
    if conn.ex.arrive(is_req, seg.seq, len, frontier, seg.now, &mut rec) {
        return ARRIVE_PARSE;
    }
    let d = conn.ex.dir(is_req);
    if framer::needs_bytes(d.state) && framer::after(seg.seq, d.pos) { ARRIVE_KEEP } else { ARRIVE_NONE }
}

/// `http_finish` flag: the segment carries a FIN.
const FINISH_FIN: u64 = 2;

/// After the current segment of direction `egress & 1` was parsed: what is known of bytes that
/// arrived before, the FIN when `egress & FINISH_FIN`, stash blocks no longer needed, and the
/// connection's state once both streams have ended. A global function, verified once.
// SAFETY: unmangled (and exported) so that it stays a global function, verified once; the name
// is unique in the object.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn http_finish(skb: *mut __sk_buff, how: u64) -> i64 {
    let Some(sk) = socket_of(skb) else { return 0 };
    // SAFETY: `sk_storage` returns null (None here) or this socket's `Conn`, valid until the
    // program returns, even after the delete below (freed after an RCU grace period; it is not
    // used after it). The calling program holds the connection (`claim`), so no other program
    // changes it, and the caller's own reference stays unused until this call returns.
    let Some(conn) = (unsafe { sk_storage::<Conn>(conns(), sk, false).as_mut() }) else { return 0 };
    let egress = how & 1 != 0;
    let is_req = (conn.id.role == ROLE_SERVER) != egress;
    let seg = conn.seg[di(is_req)];
    let mut rec = Recorder { id: &conn.id, skb, egress };
    conn.ex.settle(is_req, seg.now, &mut rec);
    if how & FINISH_FIN != 0 {
        conn.ex.fin(is_req, seg.end, seg.now, &mut rec);
    }
    let state = conn.ex.dir(is_req).state;
    forget(conn, is_req, state == framer::S_LOST || state == framer::S_IGNORE);
    if conn.ex.ended() {
        let mut rec = Recorder { id: &conn.id, skb, egress };
        conn.ex.flush(&mut rec);
        forget(conn, true, true);
        forget(conn, false, true);
        sk_storage_delete(conns(), sk);
        return 1;
    }
    0
}

#[cgroup_skb(ingress)]
pub fn http_ingress(ctx: SkBuffContext) -> i32 {
    handle(&ctx, false);
    1
}

#[cgroup_skb(egress)]
pub fn http_egress(ctx: SkBuffContext) -> i32 {
    handle(&ctx, true);
    1
}

/// TCP sockets being created (cgroup/sock_create on the cgroup v2 root, in the creating
/// process): records the process's name with the socket (its main thread's, see process.rs). A listening socket's record is copied
/// to the connections it accepts (`BPF_F_CLONE`), so a server's connections are named after
/// the process that listens, a client's after the process that connects.
#[cgroup_sock(sock_create)]
pub fn http_sock_create(ctx: SockContext) -> i32 {
    // SAFETY: `ctx.sock` is this program's context, the `bpf_sock` of the socket being created,
    // valid for the whole run; `type` and `protocol` are context fields a cgroup/sock_create
    // program may read (the verifier checks the offsets and rewrites the loads).
    let (ty, proto) = unsafe { ((*ctx.sock).type_, (*ctx.sock).protocol) };
    // SOCK_STREAM, IPPROTO_TCP.
    if ty != 1 || proto != 6 {
        return 1;
    }
    // SAFETY: `sk_storage` with the context socket (which the helper takes in this program
    // type) returns null (None) or the socket's `Owner`, created zeroed, valid until the program
    // returns. The socket is still being created, not yet reachable by other programs, so the
    // `&mut` is the only reference to the value.
    // The process's name (process.rs), else the creating thread's.
    if let Some(o) = unsafe { sk_storage::<Owner>(owners(), ctx.sock, true).as_mut() }
        && let Some(c) = process::current_process_name().or_else(|| bpf_get_current_comm().ok())
    {
        o.comm = c;
    }
    1
}

/// `TCP_CLOSE` in `include/net/tcp_states.h` (a stable UAPI-visible value).
const TCP_CLOSE: u32 = 7;

/// Sockets reaching TCP_CLOSE (sock_ops on the cgroup v2 root, like the cgroup_skb programs: no
/// kernel BTF needed). Most connections close with a FIN or RST that `http_ingress`/`http_egress`
/// see and settle; this settles the others — a retransmission or keepalive timeout, a socket torn
/// down in repair mode — whose waiting requests would otherwise stay in the in-flight gauge.
/// The kernel calls sock_ops programs on state changes only for sockets that asked for it, so
/// the program asks when a connection is established (sockets connected before the collector
/// started never ask; docs/metrics.md).
#[sock_ops]
pub fn http_sock_close(ctx: SockOpsContext) -> u32 {
    match ctx.op() {
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB | BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB => {
            // Keeps whatever other sock_ops programs asked for on this socket.
            let _ = ctx.set_cb_flags((ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG) as i32);
        }
        BPF_SOCK_OPS_STATE_CB if ctx.arg(1) == TCP_CLOSE => {
            // SAFETY: `ctx.ops` is this program's `bpf_sock_ops` context, valid for the whole
            // run; reading `sk` is a context load that the verifier rewrites into the full
            // socket's pointer, or null (checked next).
            let sk = unsafe { (*ctx.ops).__bindgen_anon_2.sk };
            if sk.is_null() {
                return 1;
            }
            // Fewer rounds than a segment waits: the loop is inlined here, and a close while
            // another CPU parses the last segment is rare (a failed claim is counted; the
            // daemon sweeps stash blocks left behind).
            // SAFETY: `sk_storage` returns null (None) or this socket's `Conn`, valid until the
            // program returns (and after the delete below, which it is not used past). Another
            // CPU may be changing it until `claim` succeeds, and `claim` touches only `lock`
            // (through the helper) and `busy`, under that lock; after it, no other program
            // changes the value.
            if let Some(conn) = unsafe { sk_storage::<Conn>(conns(), sk, false).as_mut() }
                && claim(conn, 64)
            {
                let mut rec = Recorder { id: &conn.id, skb: core::ptr::null_mut(), egress: false };
                conn.ex.abandon_all(&mut rec);
                forget(conn, true, true);
                forget(conn, false, true);
                sk_storage_delete(conns(), sk);
            }
        }
        _ => {}
    }
    1
}
