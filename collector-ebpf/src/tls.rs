//! TLS: HTTP/1.x over TLS, from the plaintext the TLS library hands to the application and takes
//! from it. Uprobes on `SSL_read`, `SSL_read_ex`, `SSL_write` and `SSL_write_ex` (OpenSSL 1.1
//! and 3, BoringSSL; in `libssl.so` or linked into a binary that exports them, as Node.js does)
//! note the call's buffer; a return probe on each takes how many bytes the call moved and feeds
//! them, with their position in that direction's plaintext stream, to the connection's framer
//! (`collector_common::http::framer`, the same as for cleartext). A TLS connection is keyed by
//! process and `SSL *`; its state lives in `TLS_CONNS` from its first bytes that start an HTTP
//! message until `SSL_free` (`tls_free`) or the process's exit (the daemon sweeps those).
//!
//! Which socket a TLS connection uses (its ports and peer address, the labels cleartext
//! exchanges get from their packets) comes from `tcp:tcp_rcv_space_adjust`, which the kernel
//! fires in the receiving thread on every `recvmsg` of a TCP socket that copies data
//! (`tls_recv`): a library reading its socket itself (OpenSSL's socket BIO) does it within the
//! `SSL_read` call, which names the connection exactly; a library fed by its caller (Node.js's
//! memory BIO) gets its bytes from the socket the thread received from last, just before.
//!
//! Duration over TLS: from the arrival of the request (the last segment the socket received up
//! to the `SSL_read` that yields the request's first byte, noted by the cleartext ingress
//! program in `TLS_ARRIVALS`; else that read's return) to the return of the `SSL_write` that
//! takes the last byte of the response (server side); from the return of the `SSL_write` taking the first request byte to the return of the
//! `SSL_read` yielding the last response byte (client side). No plaintext byte leaves the
//! kernel: the programs keep at most the framer's window of a message's start.
use aya_ebpf::{
    Global,
    bindings::BPF_NOEXIST,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns,
        generated::{bpf_get_current_cgroup_id, bpf_probe_read_user},
    },
    macros::{map, tracepoint, uprobe, uretprobe},
    maps::{HashMap, LruHashMap},
    programs::{ProbeContext, RetProbeContext, TracePointContext},
};
use collector_common::{
    drop,
    http::{
        SCHEME_HTTPS,
        framer::{self, Exchange, Pending, Sink, WINDOW},
        tls::{ArrivalKey, MAX_TLS_CONNS, Peer, RecvOffsets, TLS_CONN_SIZE, TlsKey, v4_mapped},
    },
};

use crate::{
    drops,
    http::{self, Ident, MAX_STEPS, ROLE_CLIENT, ROLE_SERVER},
    process,
};

/// An entry probe program twice, under two names: attached a probe per offset (`uprobe`), and
/// through uprobe_multi links (`uprobe.multi`, Linux 6.6; the daemon loads one of the two:
/// `collector_common::names::program::UPROBES`).
macro_rules! entry_probe {
    ($(#[$doc:meta])* $single:ident, $multi:ident, |$ctx:ident: $ty:ty| $body:block) => {
        $(#[$doc])*
        #[uprobe]
        pub fn $single($ctx: $ty) -> u32 $body

        $(#[$doc])*
        #[uprobe(multi)]
        pub fn $multi($ctx: $ty) -> u32 $body
    };
}

/// A return probe program twice (see `entry_probe`).
macro_rules! return_probe {
    ($(#[$doc:meta])* $single:ident, $multi:ident, |$ctx:ident: $ty:ty| $body:block) => {
        $(#[$doc])*
        #[uretprobe]
        pub fn $single($ctx: $ty) -> u32 $body

        $(#[$doc])*
        #[uretprobe(multi)]
        pub fn $multi($ctx: $ty) -> u32 $body
    };
}

/// Offsets of the `tcp:tcp_rcv_space_adjust` fields `tls_recv` reads, from the tracepoint's
/// format file (set by the daemon before load).
// SAFETY: unmangled so that the daemon can set it by this name before load; the name is unique
// in the object.
#[unsafe(no_mangle)]
static RECV_OFFSETS: Global<RecvOffsets> = Global::new(RecvOffsets { sport: 0, dport: 0, saddr_v6: 0, daddr_v6: 0 });

/// The bytes of one direction handed over by the current library call.
#[repr(C)]
#[derive(Clone, Copy)]
struct TlsSeg {
    /// Stream position of the first byte, and one past the last.
    seq: u32,
    end: u32,
    /// The application's buffer (in the traced process).
    buf: u64,
    now: u64,
}

#[repr(C)]
pub struct TlsConn {
    ex: Exchange,
    /// The current call's bytes, of the request and of the response direction.
    seg: [TlsSeg; 2],
    /// Stream position of the next byte of each direction.
    next: [u32; 2],
    /// Nonzero once `id`'s ports and address come from a read of the connection (see
    /// `moved`).
    exact: u32,
    _pad: u32,
    id: Ident,
}

const _: () = assert!(core::mem::size_of::<TlsConn>() == TLS_CONN_SIZE && core::mem::offset_of!(TlsConn, id) % 8 == 0);

/// A library call in progress on a thread, from its entry probe to its return probe.
#[repr(C)]
#[derive(Clone, Copy)]
struct Call {
    ssl: u64,
    buf: u64,
    /// `SSL_read_ex`/`SSL_write_ex`: where the library stores the byte count (0 otherwise).
    count_at: u64,
    write: u32,
    _pad: u32,
    /// The socket the thread received from during the call, if it did.
    peer: Peer,
}

/// Calls in progress, by thread (`bpf_get_current_pid_tgid`). LRU: the entry of a thread that
/// died inside a call (its return probe never ran) makes room for others.
#[map]
static TLS_CALLS: LruHashMap<CallKey, Call> = LruHashMap::with_max_entries(16384, 0);

/// Key of a call in progress: a thread (`bpf_get_current_pid_tgid`, and 0), or a goroutine
/// (its `g`, and the process id with the top bit set: two Go processes running the same binary
/// allocate their goroutines at the same addresses).
#[repr(C)]
#[derive(Clone, Copy)]
struct CallKey {
    id: u64,
    process: u64,
}

#[inline(always)]
fn thread_key(pid_tgid: u64) -> CallKey {
    CallKey { id: pid_tgid, process: 0 }
}

/// The socket each thread of a TLS-using process received from last.
#[map]
static TLS_RECV: LruHashMap<u64, Peer> = LruHashMap::with_max_entries(16384, 0);

/// When each TLS server socket last received payload (see `ArrivalKey`), written by the
/// cleartext ingress program (`arrived`), read by `tls_recv`.
#[map]
static TLS_ARRIVALS: LruHashMap<ArrivalKey, u64> = LruHashMap::with_max_entries(MAX_TLS_CONNS, 0);

/// Whether the daemon captures TLS (it sets `RECV_OFFSETS` then; a field offset is never 0).
#[inline(always)]
pub fn capturing() -> bool {
    RECV_OFFSETS.load().sport != 0
}

/// A segment with payload arrived on a server socket whose stream started with a TLS handshake
/// (the cleartext ingress program, which gives such sockets up at once, calls this for each):
/// notes when, for `tls_recv`. `ports`: the TCP header's first four bytes (source and
/// destination port, big-endian); `family`: 4 or 6. A global function, called from the entry
/// program only: its locals are in a leaf frame of their own, not in the entry program's frame,
/// which every chain of calls of the ingress program includes.
// SAFETY: unmangled (and exported) so that it stays a global function, verified once; the name
// is unique in the object.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn tls_arrived(skb: *mut aya_ebpf::bindings::__sk_buff, ports: u64, family: u64) -> i64 {
    // SAFETY: `bpf_ktime_get_ns` takes no argument and touches no memory of the program.
    let now = unsafe { bpf_ktime_get_ns() };
    let peer_addr = if family == 4 {
        match http::load::<[u8; 4]>(skb, 12) {
            Some(a) => v4_mapped(a),
            None => return 0,
        }
    } else {
        match http::load::<[u8; 16]>(skb, 8) {
            Some(a) => a,
            None => return 0,
        }
    };
    let [s0, s1, d0, d1] = (ports as u32).to_be_bytes();
    let key = ArrivalKey {
        peer_addr,
        local_port: u16::from_be_bytes([d0, d1]),
        peer_port: u16::from_be_bytes([s0, s1]),
        _pad: 0,
    };
    let _ = TLS_ARRIVALS.insert(&key, &now, 0);
    0
}

/// Processes seen calling the library: `tls_recv` does nothing for the others.
#[map]
static TLS_PROCS: LruHashMap<u32, u8> = LruHashMap::with_max_entries(8192, 0);

/// TLS connections followed. Not preallocated (a value is about 1 KiB): created on a
/// connection's first HTTP bytes, deleted by `tls_free` or the daemon's sweep.
#[map]
static TLS_CONNS: HashMap<TlsKey, TlsConn> =
    HashMap::with_max_entries(MAX_TLS_CONNS, aya_ebpf::bindings::BPF_F_NO_PREALLOC);

/// TLS connections not (or not yet) followed: the number of calls whose bytes started no HTTP
/// message, up to `MIDSTREAM_TRIES` (then the connection is taken for another protocol).
#[map]
static TLS_TRIES: LruHashMap<TlsKey, u8> = LruHashMap::with_max_entries(MAX_TLS_CONNS, 0);

const MIDSTREAM_TRIES: u8 = 64;

/// A zeroed connection to insert from (too large for the stack).
static ZERO_CONN: TlsConn = TlsConn {
    ex: Exchange::ZERO,
    seg: [TlsSeg { seq: 0, end: 0, buf: 0, now: 0 }; 2],
    next: [0; 2],
    exact: 0,
    _pad: 0,
    id: Ident {
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
    },
};

#[inline(always)]
fn di(is_req: bool) -> usize {
    if is_req { 0 } else { 1 }
}

#[inline(always)]
fn key_of(ssl: u64) -> TlsKey {
    TlsKey { tgid: (bpf_get_current_pid_tgid() >> 32) as u32, _pad: 0, ssl }
}

/// Reads a `T` from the traced process's memory.
#[inline(always)]
fn read_user<T>(addr: u64) -> Option<T> {
    let mut v = core::mem::MaybeUninit::<T>::uninit();
    // SAFETY: the destination is the local `v`, exactly size_of::<T>() bytes; the helper reads
    // user memory of the current task and fails (rather than faults) on an unmapped address.
    let r =
        unsafe { bpf_probe_read_user(v.as_mut_ptr() as *mut _, core::mem::size_of::<T>() as u32, addr as *const _) };
    // SAFETY: success means all bytes of `v` were written; every `T` read here is an integer or
    // a byte array, valid for any bytes.
    if r == 0 { Some(unsafe { v.assume_init() }) } else { None }
}

/// The connection's state, if followed.
#[inline(always)]
fn conn_of(key: &TlsKey) -> Option<&'static mut TlsConn> {
    // SAFETY: the value of `key` in `TLS_CONNS`, valid until the program returns (the map is not
    // preallocated: a value deleted meanwhile is freed after an RCU grace period). A connection
    // is used by one thread at a time (OpenSSL's `SSL` objects are not to be shared between
    // threads without locking, which the application does), so no other program changes it
    // while this one does; the global functions of this file reach it again by key while the
    // caller leaves its own reference unused.
    TLS_CONNS.get_ptr_mut(key).and_then(|p| unsafe { p.as_mut() })
}

/// Records the framer's events for one TLS connection.
struct TlsRec {
    ssl: u64,
    id: *const Ident,
}

impl Sink for TlsRec {
    #[inline(always)]
    fn request_started(&mut self) {
        // SAFETY: `id` points at the `Ident` of the connection the caller holds, valid for
        // this run, only read.
        http::active_add(unsafe { &*self.id }, 1);
    }

    #[inline(always)]
    fn abandoned(&mut self, n: u64) {
        drops::add(drop::HTTP_ABANDONED, n);
        // SAFETY: as above.
        http::active_add(unsafe { &*self.id }, n.wrapping_neg());
    }

    #[inline(always)]
    fn dropped(&mut self, reason: u32) {
        drops::count(reason);
    }

    #[inline(always)]
    fn exchange_done(&mut self, p: &Pending, status: u16, resp_bytes: u64, now: u64) {
        let what = (p.method as u64) << 8 | (status as u64) << 16;
        tls_record(self.ssl, what, now.saturating_sub(p.start_ns), p.req_bytes, resp_bytes);
    }
}

/// Records one exchange of the connection `ssl` of this process (as `http_record` does for a
/// socket). A global function, verified once, with its own stack frame.
// SAFETY: unmangled (and exported) so that it stays a global function, verified once; the name
// is unique in the object.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn tls_record(ssl: u64, what: u64, dur: u64, req_bytes: u64, resp_bytes: u64) -> i64 {
    if let Some(conn) = conn_of(&key_of(ssl)) {
        http::record(&conn.id, what, dur, req_bytes, resp_bytes);
    }
    0
}

/// One parse step of the current call's bytes of direction `is_req`: loads the bytes the
/// framer needs into its window from the application's buffer and runs one framer step.
/// Nonzero when the bytes need no more steps. A global function, verified once.
// SAFETY: unmangled (and exported) so that it stays a global function, verified once; the name
// is unique in the object.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn tls_step(ssl: u64, is_req: u64) -> i64 {
    let Some(conn) = conn_of(&key_of(ssl)) else { return 1 };
    let is_req = is_req != 0;
    let (seq, end, buf, now) = {
        let s = &conn.seg[di(is_req)];
        (s.seq, s.end, s.buf, s.now)
    };
    let d = conn.ex.dir_mut(is_req);
    if let Some((p, n)) = d.needs_window(end) {
        if n == 0 || n > WINDOW {
            return 1;
        }
        // 1..=WINDOW in a form every verifier bounds (see `http_step`).
        // SAFETY: reads a temporary local through a reference; volatile only so LLVM keeps the
        // mask the verifier needs.
        let len = (unsafe { core::ptr::read_volatile(&(n as u64 - 1)) } & (WINDOW as u64 - 1)) + 1;
        let src = buf.wrapping_add(p.wrapping_sub(seq) as u64);
        // SAFETY: the destination is the direction's window, WINDOW bytes inside this
        // connection's `TlsConn`, and 1 <= len <= WINDOW; the helper reads the traced process's
        // memory and fails rather than faults.
        let r = unsafe { bpf_probe_read_user(d.win.as_mut_ptr() as *mut _, len as u32, src as *const _) };
        if r != 0 {
            return 1;
        }
        d.win_base = p;
        d.win_len = n;
    }
    let mut rec = TlsRec { ssl, id: &conn.id };
    conn.ex.step(is_req, end, now, &mut rec) as i64
}

/// The bookkeeping around the current call's bytes of direction `is_req`, as the cleartext
/// programs do for a segment: everything before them has arrived in order (plaintext comes in
/// order), then the framer's `arrive`, the parse, and `settle`. A global function, verified
/// once with its loop.
// SAFETY: unmangled (and exported) so that it stays a global function, verified once; the name
// is unique in the object.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn tls_feed(ssl: u64, is_req: u64) -> i64 {
    let Some(conn) = conn_of(&key_of(ssl)) else { return 0 };
    let req = is_req != 0;
    // Scalars, not a copy of the segment: this frame is in the deepest chain of calls.
    let (seq, end, now) = {
        let s = &conn.seg[di(req)];
        (s.seq, s.end, s.now)
    };
    let received = conn.id.role == ROLE_SERVER;
    let upto = if req == received { seq } else { conn.next[di(received)] };
    let mut rec = TlsRec { ssl, id: &conn.id };
    if framer::skippable(conn.ex.dir(received).state) {
        conn.ex.reached(received, upto, now, &mut rec);
    }
    if !received && conn.ex.has_deferred() {
        let when = conn.ex.resp.fill_ns;
        conn.ex.resolve(upto, when, &mut rec);
    }
    if conn.ex.arrive(req, seq, end.wrapping_sub(seq), seq, now, &mut rec) {
        // Up to `MAX_STEPS` parse steps, here rather than in a function of their own: every
        // frame of a chain of calls counts at least 32 bytes against the verifier's 512.
        let mut i = 0;
        while i < MAX_STEPS {
            if tls_step(ssl, is_req) != 0 {
                break;
            }
            i += 1;
        }
    }
    conn.ex.settle(req, now, &mut rec);
    0
}

/// A connection freed (`SSL_free`): a response that ends with the connection ends, the rest of
/// what waits is given up, and the state is deleted. A global function.
// SAFETY: unmangled (and exported) so that it stays a global function, verified once; the name
// is unique in the object.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn tls_close(ssl: u64) -> i64 {
    let key = key_of(ssl);
    let _ = TLS_TRIES.remove(&key);
    let Some(conn) = conn_of(&key) else { return 0 };
    // SAFETY: `bpf_ktime_get_ns` takes no argument and touches no memory of the program.
    let now = unsafe { bpf_ktime_get_ns() };
    let mut rec = TlsRec { ssl, id: &conn.id };
    let received = conn.id.role == ROLE_SERVER;
    let end = conn.next[di(!received)];
    conn.ex.fin(!received, end, now, &mut rec);
    let end = conn.next[di(received)];
    conn.ex.fin(received, end, now, &mut rec);
    conn.ex.flush(&mut rec);
    conn.ex.abandon_all(&mut rec);
    let _ = TLS_CONNS.remove(&key);
    0
}

/// When the socket `p` last received TLS bytes, if it is the connection `id`'s (0 otherwise).
#[inline(always)]
fn arrival_of(p: &Peer, id: &Ident) -> u64 {
    if p.local_port == id.local_port && p.peer_port == id.peer_port { p.arrived } else { 0 }
}

/// Sets the connection's ports and peer address from a socket the thread received from.
#[inline(always)]
fn name_conn(id: &mut Ident, peer: &Peer) {
    id.local_port = peer.local_port;
    id.peer_port = peer.peer_port;
    let a = &peer.peer_addr;
    let mapped = a[..10].iter().all(|b| *b == 0) && a[10] == 0xff && a[11] == 0xff;
    if mapped {
        id.family = 4;
        id.addr = [0; 16];
        id.addr[..4].copy_from_slice(&a[12..16]);
    } else {
        id.family = 6;
        id.addr = *a;
    }
}

/// Creates the state of a connection whose call moved bytes that start an HTTP message (a
/// request line read makes it a server, written a client; a status line the other way round).
#[inline(always)]
fn new_conn(key: &TlsKey, call: &Call, n: u64) -> Option<&'static mut TlsConn> {
    // SAFETY: the value is copied out at once; any byte is a valid u8.
    let tries = unsafe { TLS_TRIES.get(key) }.copied().unwrap_or(0);
    if tries >= MIDSTREAM_TRIES {
        return None;
    }
    let mut head = read_user::<u64>(call.buf).unwrap_or(0);
    if n < 8 {
        head &= (1u64 << (8 * n)) - 1;
    }
    let response = head & 0xff_ffff_ffff == framer::le(b"HTTP/");
    if !response && framer::known_method(head).is_none() {
        let _ = TLS_TRIES.insert(key, &(tries + 1), 0);
        return None;
    }
    let _ = TLS_CONNS.insert(key, &ZERO_CONN, BPF_NOEXIST as u64);
    let Some(conn) = conn_of(key) else {
        drops::count(drop::TLS_CONN_FULL);
        return None;
    };
    if conn.id.role != 0 {
        return Some(conn);
    }
    let write = call.write != 0;
    let role = if write != response { ROLE_CLIENT } else { ROLE_SERVER };
    conn.ex.dir_mut(role == ROLE_SERVER).sflags |= framer::SF_RECEIVED;
    conn.ex.dir_mut(true).sync(0);
    conn.ex.dir_mut(false).sync(0);
    let id = &mut conn.id;
    id.role = role;
    id.scheme = SCHEME_HTTPS;
    // SAFETY: takes no argument; returns the current task's cgroup v2 id.
    id.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    if let Some(c) = process::current_process_name().or_else(|| bpf_get_current_comm().ok()) {
        id.comm = c;
    }
    Some(conn)
}

/// Entry of `SSL_read`/`SSL_write` (`ex`: their `_ex` variants): the call's connection and
/// buffer, for the return probe.
#[inline(always)]
fn enter(ctx: &ProbeContext, write: bool, ex: bool) -> u32 {
    let (Some(ssl), Some(buf)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) else { return 0 };
    let count_at = if ex { ctx.arg::<u64>(3).unwrap_or(0) } else { 0 };
    if ex && count_at == 0 {
        return 0;
    }
    let id = bpf_get_current_pid_tgid();
    let _ = TLS_PROCS.insert(&((id >> 32) as u32), &1, 0);
    let call = Call { ssl, buf, count_at, write: write as u32, _pad: 0, peer: Peer::default() };
    let _ = TLS_CALLS.insert(&thread_key(id), &call, 0);
    0
}

entry_probe!(tls_read, tls_read_multi, |ctx: ProbeContext| {
    enter(&ctx, false, false)
});

entry_probe!(tls_read_ex, tls_read_ex_multi, |ctx: ProbeContext| {
    enter(&ctx, false, true)
});

entry_probe!(tls_write, tls_write_multi, |ctx: ProbeContext| {
    enter(&ctx, true, false)
});

entry_probe!(tls_write_ex, tls_write_ex_multi, |ctx: ProbeContext| {
    enter(&ctx, true, true)
});

return_probe!(
    /// Return of any of the four: the bytes the call moved go to the connection's framer.
    tls_ret, tls_ret_multi, |ctx: RetProbeContext| {
        let key = thread_key(bpf_get_current_pid_tgid());
        // SAFETY: two fields read at once from this thread's entry (only this thread's probes use
        // it, one at a time); plain integers.
        let Some((ssl, count_at)) = TLS_CALLS.get_ptr(&key).map(|c| unsafe { ((*c).ssl, (*c).count_at) }) else {
            return 0;
        };
        // `int` in every variant: 1 for success of the `_ex` ones, the byte count of the others.
        let ret = ctx.ret::<u64>() as u32 as i32;
        let n = if count_at != 0 {
            if ret == 1 { read_user::<u64>(count_at).unwrap_or(0) } else { 0 }
        } else if ret > 0 {
            ret as u64
        } else {
            0
        };
        feed_call(key, ssl, n);
        0
    }
);

/// The bytes the call `key` moved (`n`, 0 when it failed) go to its connection's framer: the
/// bookkeeping in `tls_take`, then the parse in `tls_feed`, called one after the other so that
/// the verifier's bound on the stack of a chain of calls (512 bytes) holds on every kernel
/// (it counts the caller's frame in each call it makes).
#[inline(always)]
fn feed_call(key: CallKey, ssl: u64, n: u64) {
    let r = tls_take(key.id, key.process, n);
    if r != 0 {
        tls_feed(ssl, (r - 1) as u64);
    }
}

/// Takes the call `(id, process)` out of `TLS_CALLS` and, when it moved `n` bytes of an HTTP
/// connection, notes them as the direction's current bytes (creating the connection's state on
/// its first bytes that start a message); returns 1 + the direction (`is_req`) to parse, or 0.
/// A global function: its frame is gone before the parse's frames are pushed.
// SAFETY: unmangled (and exported) so that it stays a global function, verified once; the name
// is unique in the object.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn tls_take(id: u64, process: u64, n: u64) -> i64 {
    let ck = CallKey { id, process };
    // SAFETY: the value is copied out at once; `Call` is plain data.
    let Some(call) = (unsafe { TLS_CALLS.get(&ck) }).copied() else { return 0 };
    let _ = TLS_CALLS.remove(&ck);
    if n == 0 || n > i32::MAX as u64 {
        return 0;
    }
    // The thread's own key: the socket it received from last names the connection.
    let id = bpf_get_current_pid_tgid();
    let key = TlsKey { tgid: (id >> 32) as u32, _pad: 0, ssl: call.ssl };
    let conn = match conn_of(&key) {
        Some(c) => c,
        None => match new_conn(&key, &call, n) {
            Some(c) => c,
            None => return 0,
        },
    };
    // Which socket: the one received from within this call; else, for a read, the one this
    // thread received from last (just before: the caller fed the library, or Go's Read read it
    // on this thread); a write's last socket is only a guess (a client may write from another
    // thread than it reads on), kept until a read names the connection. Exchanges are recorded
    // at the end of a response, which on both sides is after a read of the connection.
    let write = call.write != 0;
    if conn.exact == 0 {
        if call.peer.set != 0 {
            name_conn(&mut conn.id, &call.peer);
            conn.exact = 1;
        } else if !write || conn.id.local_port == 0 {
            // SAFETY: the value is copied out at once; `Peer` is plain data.
            if let Some(p) = unsafe { TLS_RECV.get(&id) }.copied() {
                name_conn(&mut conn.id, &p);
                conn.exact = !write as u32;
            }
        }
    }
    let is_req = (conn.id.role == ROLE_SERVER) != write;
    let seq = conn.next[di(is_req)];
    let end = seq.wrapping_add(n as u32);
    conn.next[di(is_req)] = end;
    // SAFETY: `bpf_ktime_get_ns` takes no argument and touches no memory of the program.
    let mut now = unsafe { bpf_ktime_get_ns() };
    // A server's request bytes count from when they arrived (as cleartext ones do): the last
    // arrival on the socket the bytes were read from, when the ingress program noted it.
    if is_req && conn.id.role == ROLE_SERVER {
        let arrived = if call.peer.set != 0 {
            arrival_of(&call.peer, &conn.id)
        } else {
            // SAFETY: a field read at once from this thread's entry; a plain integer.
            TLS_RECV.get_ptr(&id).map_or(0, |p| arrival_of(unsafe { &*p }, &conn.id))
        };
        if arrived != 0 && arrived < now {
            now = arrived;
        }
    }
    conn.seg[di(is_req)] = TlsSeg { seq, end, buf: call.buf, now };
    1 + is_req as i64
}

// Go's crypto/tls (`(*Conn).Read`, `(*Conn).Write`, `(*Conn).Close` of the binary, register
// ABI: the receiver in RAX, a slice argument's pointer and length in RBX and RCX, the first
// result in RAX). Go moves goroutine stacks, and a return probe rewrites the return address on
// the stack: it would break the program. So no return probe: `go_tls_ret` is an entry probe on
// each return instruction of Read (found by the daemon, which decodes the function). A Read is
// keyed by its goroutine (the `g` pointer, in R14 in Go's ABI), since a goroutine can move
// between threads while it waits inside Read. A Write is taken at its start (Go's Write writes
// all of its bytes or fails the connection; callers do not retry), after the stack check of its
// prologue (the daemon places it there: a goroutine whose stack must grow re-enters the
// function from its first instruction, which would feed the bytes twice). Taking it at its
// start also orders it before the response: Go's HTTP client writes a request on one goroutine
// and reads the response on another, and a write's return can come after the response's.

/// Key of a Go call in `TLS_CALLS`: the goroutine and its process.
#[inline(always)]
fn go_key(ctx: &ProbeContext) -> CallKey {
    // SAFETY: `regs` is this program's context, the traced task's user registers, valid for
    // the run; a kprobe-type program may read it directly.
    let g = unsafe { (*ctx.regs).r14 };
    CallKey { id: g, process: (bpf_get_current_pid_tgid() >> 32) | 1 << 63 }
}

entry_probe!(go_tls_read, go_tls_read_multi, |ctx: ProbeContext| {
    // SAFETY: as in `go_key`.
    let (conn, buf) = unsafe { ((*ctx.regs).rax, (*ctx.regs).rbx) };
    let id = bpf_get_current_pid_tgid();
    let _ = TLS_PROCS.insert(&((id >> 32) as u32), &1, 0);
    let call = Call { ssl: conn, buf, count_at: 0, write: 0, _pad: 0, peer: Peer::default() };
    let _ = TLS_CALLS.insert(&go_key(&ctx), &call, 0);
    0
});

entry_probe!(go_tls_write, go_tls_write_multi, |ctx: ProbeContext| {
    // SAFETY: as in `go_key`.
    let (conn, buf, len) = unsafe { ((*ctx.regs).rax, (*ctx.regs).rbx, (*ctx.regs).rcx) };
    let key = go_key(&ctx);
    go_write_call(key.id, conn, buf);
    feed_call(key, conn, len);
    0
});

/// Notes a Go Write as a call of goroutine `g` of this process (as `tls_take` expects), in a
/// frame of its own that is gone before the parse's frames are pushed.
// SAFETY: unmangled (and exported) so that it stays a global function, verified once; the name
// is unique in the object.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn go_write_call(g: u64, conn: u64, buf: u64) -> i64 {
    let id = bpf_get_current_pid_tgid();
    let _ = TLS_PROCS.insert(&((id >> 32) as u32), &1, 0);
    let call = Call { ssl: conn, buf, count_at: 0, write: 1, _pad: 0, peer: Peer::default() };
    let key = CallKey { id: g, process: (id >> 32) | 1 << 63 };
    let _ = TLS_CALLS.insert(&key, &call, 0);
    0
}

entry_probe!(
    /// A return instruction of `(*Conn).Read`: the first result (the byte count) is in RAX.
    go_tls_ret, go_tls_ret_multi, |ctx: ProbeContext| {
        let key = go_key(&ctx);
        // SAFETY: one field read at once from this goroutine's entry (only its probes use it, one
        // at a time); a plain integer.
        let Some(ssl) = TLS_CALLS.get_ptr(&key).map(|c| unsafe { (*c).ssl }) else { return 0 };
        // SAFETY: as in `go_key`.
        let n = unsafe { (*ctx.regs).rax } as i64;
        feed_call(key, ssl, if n > 0 { n as u64 } else { 0 });
        0
    }
);

entry_probe!(
    /// `(*Conn).Close`: the connection's state goes.
    go_tls_close, go_tls_close_multi, |ctx: ProbeContext| {
        // SAFETY: as in `go_key`.
        tls_close(unsafe { (*ctx.regs).rax });
        0
    }
);

entry_probe!(
    /// A handshake starting (`SSL_do_handshake`, Go's `(*Conn).handshakeContext`): marks the
    /// process as a TLS user, so that `tls_recv` notes the sockets its threads receive from from
    /// now on. The handshake's reads may take in the first request too (Go reads what is there):
    /// the first `Read` then receives nothing itself and takes the socket noted here.
    tls_handshake, tls_handshake_multi, |_ctx: ProbeContext| {
        let _ = TLS_PROCS.insert(&((bpf_get_current_pid_tgid() >> 32) as u32), &1, 0);
        0
    }
);

entry_probe!(
    /// `SSL_free`: the connection's state goes.
    tls_free, tls_free_multi, |ctx: ProbeContext| {
        if let Some(ssl) = ctx.arg::<u64>(0) {
            tls_close(ssl);
        }
        0
    }
);

/// `tcp:tcp_rcv_space_adjust`: a thread of a TLS-using process received from a TCP socket.
#[tracepoint]
pub fn tls_recv(ctx: TracePointContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    if TLS_PROCS.get_ptr(&((id >> 32) as u32)).is_none() {
        return 0;
    }
    let off = RECV_OFFSETS.load();
    // SAFETY: `read_at` copies the bytes at the field offsets of the format file (read by the
    // daemon) through `bpf_probe_read_kernel`, which fails rather than faults; any bytes are
    // valid for these integer and byte-array types.
    let fields = unsafe {
        (
            ctx.read_at::<u16>(off.sport as usize),
            ctx.read_at::<u16>(off.dport as usize),
            ctx.read_at::<[u8; 16]>(off.saddr_v6 as usize),
            ctx.read_at::<[u8; 16]>(off.daddr_v6 as usize),
        )
    };
    let (Ok(sport), Ok(dport), Ok(saddr), Ok(daddr)) = fields else { return 0 };
    let key = ArrivalKey { peer_addr: daddr, local_port: sport, peer_port: dport, _pad: 0 };
    // SAFETY: the value is copied out at once; any u64 is valid.
    let arrived = unsafe { TLS_ARRIVALS.get(&key) }.copied().unwrap_or(0);
    let peer = Peer { local_addr: saddr, peer_addr: daddr, local_port: sport, peer_port: dport, set: 1, arrived };
    let _ = TLS_RECV.insert(&id, &peer, 0);
    if let Some(c) = TLS_CALLS.get_ptr_mut(&thread_key(id)) {
        // SAFETY: this thread's entry in `TLS_CALLS` (preallocated map memory, valid until the
        // program returns); only this thread's probes use the entry, and they run one at a
        // time on it.
        unsafe { (*c).peer = peer };
    }
    0
}
