//! Connections: who a connection's exchanges are counted for (`Ident`), a TCP connection's
//! state in its socket's local storage (`Conn`, around a protocol's state), the one-byte mark
//! of a socket that is not (or not yet) followed, the process that created each socket, and
//! the claim that lets one program at a time change a connection.
use core::ffi::c_void;

use aya_ebpf::{
    bindings::{BPF_SK_STORAGE_GET_F_CREATE, bpf_sock, bpf_spin_lock},
    btf_maps::SkStorage,
    helpers::generated::{
        bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_sk_storage_delete, bpf_sk_storage_get, bpf_spin_lock as spin_lock,
        bpf_spin_unlock as spin_unlock,
    },
    macros::{btf_map, map},
    maps::Array,
};
use collector_common::drop;

use crate::drops;

// Connection roles (set when the connection state is created).
pub const ROLE_SERVER: u8 = 1;
pub const ROLE_CLIENT: u8 = 2;

/// Who the connection's requests are counted for (the histogram key fields it contributes).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Ident {
    // The byte arrays sit at 8-byte offsets so that copying them into a key is two word moves
    // (an unaligned copy becomes a call to a byte-wise memcpy).
    /// Name of the process that created the socket (or its listening socket), NUL-padded; all
    /// zero when the socket existed before the collector started.
    pub comm: [u8; 16],
    pub addr: [u8; 16],
    pub cgroup_id: u64,
    pub local_port: u16,
    pub peer_port: u16,
    pub family: u8,
    pub role: u8,
    /// `SCHEME_HTTP`, or `SCHEME_HTTPS` for a TLS connection (plain.rs).
    pub scheme: u8,
    pub _pad: u8,
    /// The socket's cookie (keys of its stash blocks).
    pub cookie: u64,
}

impl Ident {
    pub const ZERO: Ident = Ident {
        comm: [0; 16],
        addr: [0; 16],
        cgroup_id: 0,
        local_port: 0,
        peer_port: 0,
        family: 0,
        role: 0,
        scheme: 0,
        _pad: 0,
        cookie: 0,
    };
}

/// Where the bytes a parse step of a TCP connection reads lie: the steps are global functions
/// verified once, which cannot take pointers on every kernel, so they find this through the
/// socket.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Seg {
    /// Stream position of the first byte, and one past the last.
    pub seq: u32,
    pub end: u32,
    /// In the packet (`SRC_PACKET`): offset of the first payload byte.
    pub payload: u32,
    /// `SRC_PACKET`, or `SRC_STASH` for a run of bytes held in the reorder stash.
    pub src: u32,
    pub now: u64,
}

pub const SRC_PACKET: u32 = 0;
pub const SRC_STASH: u32 = 1;

/// The blocks of the reorder stash a direction holds: indices `[lo, hi)` (empty when equal).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Held {
    pub lo: u32,
    pub hi: u32,
}

/// A TCP connection followed by protocol `P` (`collector_common::capture::Stream`), in its
/// socket's local storage: created zeroed on the first segment that starts a message (see
/// `skb.rs`), freed by the kernel with the socket (or deleted earlier: when both streams have
/// ended, on RST, or by the close hook).
#[repr(C)]
pub struct Conn<P> {
    /// Guards `busy` (see `claim`).
    pub lock: bpf_spin_lock,
    /// Nonzero while a program follows the connection: 1 + the CPU it runs on. Segments of one
    /// socket can reach the hooks on two CPUs at once (a veth or loopback peer hands each
    /// segment to the receiving stack on the CPU that sent it; a response may leave while a
    /// request arrives), and the protocol's state must be changed by one at a time.
    pub busy: u32,
    /// Everything else (reached through `Deref`: `conn.p` is `conn.b.p`).
    pub b: Body<P>,
}

/// A connection past its claim words: what the program holding it changes. On kernels from
/// 5.12 the protocols' global functions take it by pointer (`segment::Globals`): the verifier
/// refuses a pointer to map memory whose range covers a `bpf_spin_lock`, hence the split.
#[repr(C)]
pub struct Body<P> {
    /// The protocol's state.
    pub p: P,
    /// The current segment of the request and of the response direction.
    pub seg: [Seg; 2],
    /// Stash blocks of the request and of the response direction.
    pub held: [Held; 2],
    /// What programs that nested on the CPU of the one holding the connection left of the
    /// received direction, the only one they leave (`segment::defer`): `DEFER_*` bits in the
    /// low half, the FIN's position in the high half (with `DEFER_FIN`). Followed by the holder
    /// before it lets go, or by the next program that takes the connection.
    pub deferred: u64,
    pub id: Ident,
}

/// `Body::deferred`: bytes were left, in the stash (their range and time in `seg`).
pub const DEFER_BYTES: u64 = 1;
/// `Body::deferred`: the direction's FIN was left, at the position in the high half.
pub const DEFER_FIN: u64 = 2;
/// `Body::deferred`: a reset was left (the connection is closed when it is followed).
pub const DEFER_RST: u64 = 4;

impl<P> core::ops::Deref for Conn<P> {
    type Target = Body<P>;
    #[inline(always)]
    fn deref(&self) -> &Body<P> {
        &self.b
    }
}

impl<P> core::ops::DerefMut for Conn<P> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut Body<P> {
        &mut self.b
    }
}

/// Index of a direction in `seg` and `held`.
#[inline(always)]
pub fn di(is_req: bool) -> usize {
    if is_req { 0 } else { 1 }
}

/// Entry 0 is set to 1 by the daemon once both packet programs are attached. The two hooks
/// are attached one after the other: a connection whose request passed the first while the
/// second was not yet attached would have its response missed and every later response paired
/// with the request before it. Until then the programs only count packets.
#[map]
static HTTP_ARMED: Array<u32> = Array::with_max_entries(1, 0);

/// Whether the packet programs follow connections yet (see `HTTP_ARMED`).
#[inline(always)]
pub fn armed() -> bool {
    HTTP_ARMED.get(0).is_some_and(|a| *a != 0)
}

/// Sockets that are not (or not yet) followed, one byte each so other protocols cost no
/// connection state: `MIDSTREAM_TRIES` once the socket is known not to carry a protocol
/// followed (and is not looked at again), below it the segments seen from the middle of its
/// stream that started no message.
#[btf_map]
static HTTP_NOT_HTTP: SkStorage<u8> = SkStorage::new();

/// Segments of a connection seen from the middle of its stream that may pass without starting
/// a message before the connection is taken for something no protocol here follows.
pub const MIDSTREAM_TRIES: u8 = 64;

/// The mark of a socket given up because its received stream started with a TLS handshake
/// record, while HTTPS is captured: its segments with payload still note when they arrived
/// (`arrivals.rs`), where a TLS server's request starts.
pub const MARK_TLS_SERVER: u8 = MIDSTREAM_TRIES + 1;

/// The process that created a socket (see `http_sock_create`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Owner {
    pub comm: [u8; 16],
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

/// The socket's value in a socket-storage map (`create`: a zeroed one if it has none).
#[inline(always)]
pub fn sk_storage<T>(map: *const c_void, sk: *mut bpf_sock, create: bool) -> *mut T {
    let flags = if create { BPF_SK_STORAGE_GET_F_CREATE as u64 } else { 0 };
    // SAFETY: `map` is one of this object's socket-storage maps (a protocol's connections,
    // `not_followed`, `owners`: the address of its definition, which the loader rewrites into
    // the map) and `sk` a socket the verifier accepts for this helper (a full socket from
    // `bpf_sk_fullsock` or `bpf_sock_ops.sk`, or the cgroup/sock_create context); it refuses
    // the program otherwise. The helper only looks the socket's value up (with `create`:
    // allocates a zeroed one) and returns null or a pointer to it, valid until the program
    // returns (values are freed only after an RCU grace period). Every caller pairs a map with
    // its value type as `T` (`Conn<P>`, `u8`, `Owner`), so the cast names the value's real type.
    unsafe { bpf_sk_storage_get(map as *mut c_void, sk as *mut c_void, core::ptr::null_mut(), flags) as *mut T }
}

/// Deletes the socket's value in a socket-storage map.
#[inline(always)]
pub fn sk_storage_delete(map: *const c_void, sk: *mut bpf_sock) {
    // SAFETY: `map` is one of this object's socket-storage maps and `sk` a socket the verifier
    // accepts for the helper, as in `sk_storage`. The helper unlinks the socket's value, whose
    // memory is freed only after an RCU grace period: a reference a caller still holds stays
    // valid until the program returns, and no caller uses one after the delete (each returns
    // at once, and the packet programs skip `release` when the state was deleted).
    unsafe { bpf_sk_storage_delete(map as *mut c_void, sk as *mut c_void) };
}

/// The map of the one-byte marks of sockets not followed.
#[inline(always)]
pub fn not_followed() -> *const c_void {
    &HTTP_NOT_HTTP as *const SkStorage<u8> as *const c_void
}

/// The map of the sockets' creating processes.
#[inline(always)]
pub fn owners() -> *const c_void {
    &HTTP_OWNER as *const CloneSkStorage<Owner> as *const c_void
}

/// Rounds of one call of a protocol's claim function (`http1::http_claim`): a round is a lock
/// and an unlock, tens of nanoseconds, up to a hundred when the other CPU holds the line. The
/// verifier bounds the branches one function may keep pending (8192), which bounds this; a
/// segment that waits longer calls the function again (`wait`).
pub const CLAIM_ROUNDS: u32 = 1024;

/// How long a segment waits in all for a connection another CPU holds. A program holding a
/// connection runs for microseconds as a rule, but one that keeps a 64 KiB segment in the reorder
/// stash and parses it from there (64 blocks) holds it for longer than `CLAIM_ROUNDS` rounds
/// take on a two-CPU machine (measured: one wait in about 30 runs of the nested-program test
/// needed a second call); only a CPU that stalls (a virtual CPU the host deschedules) holds it
/// past this bound.
pub const CLAIM_WAIT_NS: u64 = 1_000_000;

/// Calls of the claim function at most in one wait (a bound for the verifier; `CLAIM_WAIT_NS`
/// ends the wait first: 64 × 1024 rounds take well over a millisecond).
pub const CLAIM_CALLS: u32 = 64;

/// Waits for a connection another CPU holds: calls `once` (a protocol's claim function, up to
/// `CLAIM_ROUNDS` rounds) until it takes the connection or `CLAIM_WAIT_NS` have passed. False
/// when it stayed busy (the segment is then not followed, and counted).
#[inline(always)]
pub fn wait(mut once: impl FnMut() -> bool) -> bool {
    // SAFETY: `bpf_ktime_get_ns` takes no argument and touches no memory of the program.
    let start = unsafe { bpf_ktime_get_ns() };
    let mut i = 0;
    while i < CLAIM_CALLS {
        if once() {
            return true;
        }
        // SAFETY: as above.
        if unsafe { bpf_ktime_get_ns() }.wrapping_sub(start) >= CLAIM_WAIT_NS {
            break;
        }
        i += 1;
    }
    drops::count(drop::HTTP_BUSY);
    false
}

/// This CPU's mark in `Conn::busy`: 1 + its number.
#[inline(always)]
pub fn this_cpu() -> u32 {
    // SAFETY: takes no argument; returns the number of the CPU the program runs on.
    unsafe { bpf_get_smp_processor_id() }.wrapping_add(1)
}

/// Whether the program holding the connection runs on this CPU: this program interrupted it
/// (a softirq's ingress run nesting in a process-context egress run of the same socket), and
/// waiting for it would be waiting for itself.
#[inline(always)]
pub fn held_here<P>(conn: &Conn<P>) -> bool {
    // A plain read: only a program holding the connection writes `busy` (under the lock), and
    // the one that matters here, on this CPU, is suspended under this one.
    conn.busy == this_cpu()
}

/// Takes the connection for this program run if no other CPU holds it (one round of `claim`).
#[inline(always)]
pub fn try_claim<P>(conn: &mut Conn<P>) -> bool {
    // Before the lock: no helper may be called while it is held.
    let me = this_cpu();
    // SAFETY: `conn.lock` is the `bpf_spin_lock` of this socket's connection value, reached
    // through a reference valid for this run (see `sk_storage`), and the map's BTF declares the
    // lock, which the helper requires (the verifier refuses it otherwise). The kernel takes the
    // lock word atomically, so CPUs taking it at once do not race. It is held only around the
    // two accesses to `busy` below, with no call in between, and released on every path, as
    // the verifier requires.
    unsafe { spin_lock(&mut conn.lock) };
    let free = conn.busy == 0;
    if free {
        conn.busy = me;
    }
    // SAFETY: as above: releases the lock just taken.
    unsafe { spin_unlock(&mut conn.lock) };
    free
}

/// Takes the connection for this program run: waits while another CPU holds it, up to `rounds`
/// rounds. False when it stayed busy (nothing counted: see `claim` and `wait`).
#[inline(always)]
pub fn claim_rounds<P>(conn: &mut Conn<P>, rounds: u32) -> bool {
    let mut k = 0;
    while k < rounds {
        if try_claim(conn) {
            return true;
        }
        k += 1;
    }
    false
}

/// `claim_rounds`, and a failure counted (the segment or close is then not followed).
#[inline(always)]
pub fn claim<P>(conn: &mut Conn<P>, rounds: u32) -> bool {
    if claim_rounds(conn, rounds) {
        return true;
    }
    drops::count(drop::HTTP_BUSY);
    false
}

/// Set by the daemon to 1 where the CPU makes a CPU's stores visible to the others in the order
/// it made them (x86-64's total store order): a connection is then given back with a plain store
/// of `busy` (`release`) instead of a round of the lock. A read-only global, so the verifier
/// drops the branch not taken.
// SAFETY: unmangled so that the daemon can set it by this name before load; no other symbol in
// the object has the name, so nothing else is bound to it.
#[unsafe(no_mangle)]
static HTTP_STORES_ORDERED: u8 = 0;

/// Gives the connection back. The next program to take it (on another CPU, through the lock)
/// must see every store this one made to the state before it sees `busy` at 0. Where stores
/// are ordered (`HTTP_STORES_ORDERED`), a compiler fence (the compiler emits the state's
/// stores before it; no instruction) and a plain store do that; elsewhere a round of the lock.
/// The plain store saves a lock and an unlock per segment: 5.7% of the BPF time per request
/// (docs/performance.md). It cannot overwrite another CPU's claim: only the holder stores 0,
/// and others set `busy` only after they have seen it at 0.
#[inline(always)]
pub fn release<P>(conn: &mut Conn<P>) {
    // SAFETY: reads an immutable static through a reference: valid, aligned and initialised,
    // and never written while programs run (the daemon sets it before load and the loader
    // freezes read-only data). Volatile so LLVM reads the value the daemon set.
    if unsafe { core::ptr::read_volatile(&raw const HTTP_STORES_ORDERED) } != 0 {
        core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::Release);
        // SAFETY: `conn.busy` is a field of this socket's connection value, reached through a
        // reference valid for this run (see `sk_storage`): aligned and writable. Volatile so the
        // store is made, after the fence.
        unsafe { core::ptr::write_volatile(&raw mut conn.busy, 0) };
        return;
    }
    // SAFETY: `conn.lock` is the `bpf_spin_lock` of this socket's connection value, reached
    // through a reference valid for this run, and declared in the map's BTF as the helper
    // requires. The kernel takes it atomically; it is held around one store to `busy`, with no
    // call in between, and released just below, as the verifier requires.
    unsafe { spin_lock(&mut conn.lock) };
    conn.busy = 0;
    // SAFETY: as above: releases the lock just taken.
    unsafe { spin_unlock(&mut conn.lock) };
}
