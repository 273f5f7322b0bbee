//! The plaintext driver: bytes a TLS library hands to the application or takes from it (the
//! uprobes of `tls.rs`), in order, one byte stream per direction of each TLS connection, handed
//! to the connection's protocol as the packet driver hands segments (`segment.rs`). What it
//! does for every protocol:
//! - the library calls in progress (`TLS_CALLS`, entry probe to return) and the processes that
//!   use the library (`TLS_PROCS`);
//! - which socket a connection uses (its ports and peer address: `TLS_RECV`, the socket each
//!   thread received from last, from `tcp:tcp_rcv_space_adjust`), and when a server's request
//!   arrived (`arrivals.rs`);
//! - the place of each call's bytes in its stream (`TlsConn::seg`, `next`), the window loads
//!   from the application's buffer, the bookkeeping around the parse, and the end of a
//!   connection (`SSL_free`, Go's `Close`).
//!
//! No plaintext byte leaves the kernel: the protocols keep at most their window of a message.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, generated::bpf_probe_read_user},
    macros::map,
    maps::{Array, LruHashMap},
};
use collector_common::{
    capture::{Pending, Sink, Stream, WINDOW, Window},
    drop,
    http::tls::{MAX_TLS_CONNS, Peer, TlsKey},
    http2::{Frame, JOIN_REQUEST, JOIN_RESPONSE},
};

use super::{
    conn::{Ident, MIDSTREAM_TRIES, ROLE_SERVER, di},
    record::active_add,
};
use crate::drops;

/// The bytes of one direction handed over by the current library call.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TlsSeg {
    /// Stream position of the first byte, and one past the last.
    pub seq: u32,
    pub end: u32,
    /// The application's buffer (in the traced process).
    pub buf: u64,
    pub now: u64,
}

/// A TLS connection followed by protocol `P`, in the protocol's map of TLS connections (keyed
/// by process and the library's connection object): created on its first bytes that start a
/// message, deleted when the library frees the connection, or by the daemon's sweep once its
/// process exited.
#[repr(C)]
pub struct TlsConn<P> {
    pub p: P,
    /// The current call's bytes, of the request and of the response direction.
    pub seg: [TlsSeg; 2],
    /// Stream position of the next byte of each direction.
    pub next: [u32; 2],
    /// Nonzero once `id`'s ports and address come from a read of the connection (see
    /// `name`).
    pub exact: u32,
    pub _pad: u32,
    pub id: Ident,
}

/// A library call in progress on a thread, from its entry probe to its return probe.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Call {
    pub ssl: u64,
    pub buf: u64,
    /// `SSL_read_ex`/`SSL_write_ex`: where the library stores the byte count (0 otherwise).
    pub count_at: u64,
    pub write: u32,
    pub _pad: u32,
    /// The socket the thread received from during the call, if it did.
    pub peer: Peer,
}

const _: () = assert!(core::mem::size_of::<Call>() == collector_common::http::tls::TLS_CALL_SIZE);

/// Calls in progress, by thread (`bpf_get_current_pid_tgid`) or goroutine. A thread's entry
/// stays between its calls, `ssl` 0 while none is in progress, and is written in place (an
/// update of an LRU map takes a new element and frees the old); a goroutine's goes when its call
/// ends. LRU: the entry of a thread that died or stopped calling the library makes room for
/// others; the daemon deletes those of exited processes (as in `TLS_RECV` and `TLS_PROCS`).
#[map]
pub static TLS_CALLS: LruHashMap<CallKey, Call> = LruHashMap::with_max_entries(16384, 0);

/// Key of a call in progress: a thread (`bpf_get_current_pid_tgid`, and 0), or a goroutine
/// (its `g`, and the process id with the top bit set: two Go processes running the same binary
/// allocate their goroutines at the same addresses).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CallKey {
    pub id: u64,
    pub process: u64,
}

#[inline(always)]
pub fn thread_key(pid_tgid: u64) -> CallKey {
    CallKey { id: pid_tgid, process: 0 }
}

/// The socket each thread of a TLS-using process received from last.
#[map]
pub static TLS_RECV: LruHashMap<u64, Peer> = LruHashMap::with_max_entries(16384, 0);

/// Processes seen calling the library: `tls_recv` does nothing for the others.
#[map]
pub static TLS_PROCS: LruHashMap<u32, u8> = LruHashMap::with_max_entries(8192, 0);

/// Entry 0 is 1 once any process has been noted in `TLS_PROCS` (it stays 1): until then
/// `tls_recv`, which runs on every read of every TCP socket, returns after this array's
/// lookup (the verifier inlines it to a load) instead of a hash lookup of the process.
#[map]
static TLS_NOTED: Array<u32> = Array::with_max_entries(1, 0);

/// Whether a process has been noted as a TLS user since the programs were loaded.
#[inline(always)]
pub fn any_noted() -> bool {
    TLS_NOTED.get(0).is_some_and(|n| *n != 0)
}

/// Notes the current process as a TLS user (see `TLS_PROCS`).
#[inline(always)]
pub fn note_process(pid_tgid: u64) {
    // The flag first, so that a `tls_recv` that finds the process noted finds the flag set too;
    // written only while 0, so the line is not moved between CPUs on every call.
    if let Some(n) = TLS_NOTED.get_ptr_mut(0) {
        // SAFETY: entry 0 of a one-entry array map: preallocated, aligned and valid while the
        // program runs; a plain load and store of a flag that only ever goes from 0 to 1, so a
        // race with another CPU setting it stores the same value.
        unsafe {
            if *n == 0 {
                *n = 1;
            }
        }
    }
    // A lookup marks an entry of an LRU map as used, as an update does; an update also takes a
    // new element from the map's free lists and frees the old one, on every SSL call.
    let tgid = (pid_tgid >> 32) as u32;
    if TLS_PROCS.get_ptr(&tgid).is_none() {
        let _ = TLS_PROCS.insert(&tgid, &1, 0);
    }
}

/// The key of connection `ssl` of the current process.
#[inline(always)]
pub fn key_of(ssl: u64) -> TlsKey {
    TlsKey { tgid: (bpf_get_current_pid_tgid() >> 32) as u32, _pad: 0, ssl }
}

/// Reads a `T` from the traced process's memory.
#[inline(always)]
pub fn read_user<T>(addr: u64) -> Option<T> {
    let mut v = core::mem::MaybeUninit::<T>::uninit();
    // SAFETY: the destination is the local `v`, exactly size_of::<T>() bytes; the helper reads
    // user memory of the current task and fails (rather than faults) on an unmapped address.
    let r =
        unsafe { bpf_probe_read_user(v.as_mut_ptr() as *mut _, core::mem::size_of::<T>() as u32, addr as *const _) };
    // SAFETY: success means all bytes of `v` were written; every `T` read here is an integer or
    // a byte array, valid for any bytes.
    if r == 0 { Some(unsafe { v.assume_init() }) } else { None }
}

/// A protocol's global functions over its TLS connections (http1.rs): each finds the
/// connection by key and runs the function of this file of the same name.
pub trait Globals {
    /// One parse step ([`step`]).
    fn step(ssl: u64, is_req: u64) -> i64;
    /// Records one exchange of the connection.
    fn record(ssl: u64, what: u64, dur: u64, req_bytes: u64, resp_bytes: u64) -> i64;
    /// Hands a frame of the connection `id` to the daemon (see `segment::Globals::frame`).
    #[inline(always)]
    fn frame(id: &Ident, f: &Frame, w: &Window) {
        let _ = (id, f, w);
    }
}

/// Records a protocol's events for one TLS connection.
pub struct TlsRec<G> {
    pub ssl: u64,
    pub id: *const Ident,
    pub g: core::marker::PhantomData<G>,
}

impl<G> TlsRec<G> {
    #[inline(always)]
    pub fn new(ssl: u64, id: &Ident) -> Self {
        Self { ssl, id, g: core::marker::PhantomData }
    }
}

impl<G: Globals> Sink for TlsRec<G> {
    #[inline(always)]
    fn request_started(&mut self) {
        // SAFETY: `id` points at the `Ident` of the connection the caller holds, valid for
        // this run, only read.
        active_add(unsafe { &*self.id }, 1);
    }

    #[inline(always)]
    fn abandoned(&mut self, n: u64) {
        drops::add(drop::HTTP_ABANDONED, n);
        // SAFETY: as above.
        active_add(unsafe { &*self.id }, n.wrapping_neg());
    }

    #[inline(always)]
    fn dropped(&mut self, reason: u32) {
        drops::count(reason);
    }

    #[inline(always)]
    fn exchange_done(&mut self, p: &Pending, status: u16, resp_bytes: u64, now: u64) {
        let what = (p.method as u64) << 8 | (status as u64) << 16 | (p.version as u64) << 32;
        G::record(self.ssl, what, now.saturating_sub(p.start_ns), p.req_bytes, resp_bytes);
    }

    #[inline(always)]
    fn frame(&mut self, f: &Frame, w: &Window) {
        // SAFETY: as above.
        G::frame(unsafe { &*self.id }, f, w);
    }
}

/// Parse steps per call's bytes.
pub const MAX_STEPS: u32 = super::segment::MAX_STEPS;

/// One parse step of the current call's bytes of direction `is_req`: loads the bytes the
/// protocol needs into its window from the application's buffer and runs one step. Nonzero
/// when the bytes need no more steps.
#[inline(always)]
pub fn step<P: Stream, G: Globals>(conn: &mut TlsConn<P>, ssl: u64, is_req: bool) -> i64 {
    let (seq, end, buf, now) = {
        let s = &conn.seg[di(is_req)];
        (s.seq, s.end, s.buf, s.now)
    };
    if let Some((p, n)) = conn.p.needs_window(is_req, end) {
        if n == 0 || n > WINDOW {
            return 1;
        }
        // 1..=WINDOW in a form every verifier bounds (see `segment::step`).
        // SAFETY: reads a temporary local through a reference; volatile only so LLVM keeps the
        // mask the verifier needs.
        let len = (unsafe { core::ptr::read_volatile(&(n as u64 - 1)) } & (WINDOW as u64 - 1)) + 1;
        let src = buf.wrapping_add(p.wrapping_sub(seq) as u64);
        let w = conn.p.window(is_req);
        // SAFETY: the destination is the direction's window, WINDOW bytes inside this
        // connection's value, and 1 <= len <= WINDOW; the helper reads the traced process's
        // memory and fails rather than faults.
        let r = unsafe { bpf_probe_read_user(w.buf.as_mut_ptr() as *mut _, len as u32, src as *const _) };
        if r != 0 {
            return 1;
        }
        w.base = p;
        w.len = n;
    }
    let mut rec = TlsRec::<G>::new(ssl, &conn.id);
    conn.p.step(is_req, end, now, &mut rec) as i64
}

/// The bookkeeping before the current call's bytes of direction `is_req` are parsed, as the
/// packet driver's for a segment: everything before them has arrived in order (plaintext comes
/// in order), then the protocol's `arrive`. Whether to parse them ([`parse`]).
#[inline(always)]
pub fn arrive<P: Stream, G: Globals>(conn: &mut TlsConn<P>, ssl: u64, is_req: bool) -> bool {
    // Scalars, not a copy of the segment: the frames of the parse's chain of calls are small.
    let (seq, end, now) = {
        let s = &conn.seg[di(is_req)];
        (s.seq, s.end, s.now)
    };
    let received = conn.id.role == ROLE_SERVER;
    let upto = if is_req == received { seq } else { conn.next[di(received)] };
    let mut rec = TlsRec::<G>::new(ssl, &conn.id);
    conn.p.received_upto(received, upto, now, &mut rec);
    conn.p.arrive(is_req, seq, end.wrapping_sub(seq), seq, now, &mut rec)
}

/// Up to `MAX_STEPS` parse steps of the current call's bytes of direction `is_req`.
#[inline(always)]
pub fn parse<G: Globals>(ssl: u64, is_req: u64) {
    let mut i = 0;
    while i < MAX_STEPS {
        if G::step(ssl, is_req) != 0 {
            break;
        }
        i += 1;
    }
}

/// After the current call's bytes of direction `is_req`: what is known of bytes before them.
#[inline(always)]
pub fn settle<P: Stream, G: Globals>(conn: &mut TlsConn<P>, ssl: u64, is_req: bool) {
    let now = conn.seg[di(is_req)].now;
    let mut rec = TlsRec::<G>::new(ssl, &conn.id);
    conn.p.settle(is_req, now, &mut rec);
    conn.p.not_switched(now, &mut rec);
}

/// A connection freed: a response that ends with the connection ends, the rest of what waits
/// is given up (the caller deletes the state).
#[inline(always)]
pub fn close<P: Stream, G: Globals>(conn: &mut TlsConn<P>, ssl: u64) {
    // SAFETY: `bpf_ktime_get_ns` takes no argument and touches no memory of the program.
    let now = unsafe { bpf_ktime_get_ns() };
    let mut rec = TlsRec::<G>::new(ssl, &conn.id);
    let received = conn.id.role == ROLE_SERVER;
    let end = conn.next[di(!received)];
    conn.p.fin(!received, end, now, &mut rec);
    let end = conn.next[di(received)];
    conn.p.fin(received, end, now, &mut rec);
    conn.p.flush(&mut rec);
    conn.p.abandon_all(&mut rec);
}

/// When the socket `p` last received TLS bytes, if it is the connection `id`'s (0 otherwise).
#[inline(always)]
pub fn arrival_of(p: &Peer, id: &Ident) -> u64 {
    if p.local_port == id.local_port && p.peer_port == id.peer_port { p.arrived } else { 0 }
}

/// Sets the connection's ports and peer address from a socket the thread received from.
#[inline(always)]
pub fn name_conn(id: &mut Ident, peer: &Peer) {
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

/// The bytes a call moved (`n`) are the next of their direction of `conn`: names the
/// connection's socket if not done yet, places them in their stream, and takes their time (a
/// server's request from its arrival). Returns the direction (`is_req`).
#[inline(always)]
pub fn place<P>(conn: &mut TlsConn<P>, call: &Call, n: u64) -> bool {
    // Which socket: the one received from within this call; else, for a read, the one this
    // thread received from last (just before: the caller fed the library, or Go's Read read it
    // on this thread); a write's last socket is only a guess (a client may write from another
    // thread than it reads on), kept until a read names the connection. Exchanges are recorded
    // at the end of a response, which on both sides is after a read of the connection.
    let id = bpf_get_current_pid_tgid();
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
    is_req
}

/// TLS connections not (or not yet) followed: the number of calls whose bytes started no
/// message of a protocol followed, up to `MIDSTREAM_TRIES` (then the connection is taken for
/// another protocol).
#[map]
static TLS_TRIES: LruHashMap<TlsKey, u8> = LruHashMap::with_max_entries(MAX_TLS_CONNS, 0);

/// What a TLS connection's new bytes start (`classify`).
pub const TLS_NONE: i64 = 0;
/// An HTTP/1 request.
pub const TLS_REQUEST: i64 = 1;
/// An HTTP/1 response.
pub const TLS_RESPONSE: i64 = 2;
/// The HTTP/2 client preface.
pub const TLS_H2: i64 = 3;
/// An HTTP/2 server's first SETTINGS frame.
pub const TLS_H2_SERVER: i64 = 4;
/// A request's HEADERS frame in the middle of an HTTP/2 connection (open before the collector
/// started, `collector_common::http2::midstream_join`).
pub const TLS_H2_JOIN_REQUEST: i64 = 5;
/// A response's HEADERS frame in the middle of an HTTP/2 connection.
pub const TLS_H2_JOIN_RESPONSE: i64 = 6;

/// The class of a TLS connection's new bytes (`call`'s `n` bytes): an HTTP/1 request or
/// response, the HTTP/2 preface, on the first call of a connection an HTTP/2 server's
/// SETTINGS, or a request's or response's HTTP/2 HEADERS frame (`TLS_*`); `TLS_NONE` is counted as one more try (the connection is given up after
/// `MIDSTREAM_TRIES`). Plaintext may be seen from the middle of its stream (a process attached
/// mid-connection), so an HTTP/1 request starts only with a known method.
#[inline(always)]
pub fn classify(key: &TlsKey, call: &Call, n: u64) -> i64 {
    // SAFETY: the value is copied out at once; any byte is a valid u8.
    let tries = unsafe { TLS_TRIES.get(key) }.copied().unwrap_or(0);
    if tries >= MIDSTREAM_TRIES {
        return TLS_NONE;
    }
    let mut head = read_user::<u64>(call.buf).unwrap_or(0);
    if n < 8 {
        head &= (1u64 << (8 * n)) - 1;
    }
    match super::detect::classify(head, tries == 0) {
        super::detect::Class::Http2 => TLS_H2,
        super::detect::Class::Http2Server => TLS_H2_SERVER,
        super::detect::Class::Request if super::detect::classify(head, false) == super::detect::Class::Request => {
            TLS_REQUEST
        }
        super::detect::Class::Response => TLS_RESPONSE,
        _ => {
            // A call's bytes start at a frame's start where the peer's writes do, as they
            // mostly do: an HTTP/2 connection seen from its middle.
            let join = if n >= 16 { crate::http2::h2_join_user(call.buf, n) as u8 } else { 0 };
            match join {
                JOIN_REQUEST => TLS_H2_JOIN_REQUEST,
                JOIN_RESPONSE => TLS_H2_JOIN_RESPONSE,
                _ => {
                    let _ = TLS_TRIES.insert(key, &(tries + 1), 0);
                    TLS_NONE
                }
            }
        }
    }
}

/// Forgets the tries of a connection that ends.
#[inline(always)]
pub fn forget_tries(key: &TlsKey) {
    let _ = TLS_TRIES.remove(key);
}

/// Sets up a new TLS connection of the current process whose first bytes (`call`) start a
/// request (`response` false) or a response: its role, the protocol's starting positions and
/// its `Ident`.
#[inline(always)]
pub fn start<P: Stream>(conn: &mut TlsConn<P>, call: &Call, response: bool) {
    let write = call.write != 0;
    let role = if write != response { super::conn::ROLE_CLIENT } else { ROLE_SERVER };
    conn.p.start(role == ROLE_SERVER, true, 0, Some(0));
    let id = &mut conn.id;
    id.role = role;
    id.scheme = collector_common::http::SCHEME_HTTPS;
    // SAFETY: takes no argument; returns the current task's cgroup v2 id.
    id.cgroup_id = unsafe { aya_ebpf::helpers::generated::bpf_get_current_cgroup_id() };
    if let Some(c) = crate::process::current_process_name().or_else(|| aya_ebpf::helpers::bpf_get_current_comm().ok())
    {
        id.comm = c;
    }
}
