//! HTTP/2, one protocol behind the capture's seam: its framer is
//! `collector_common::http2::framer::H2` (pure, host-tested), which implements
//! `collector_common::capture::Stream`. Here, its kernel glue: its TCP connections in their
//! socket's local storage (`H2_CONNS`), the packet driver (`capture::segment`) instantiated as
//! global functions of its own, and the ring buffer that takes the frames to the daemon
//! (`HTTP2_EVENTS`), which decodes the header blocks and records the exchanges
//! (collector/src/http2/). The entry programs (`skb.rs`) dispatch connections classified HTTP/2
//! here (`capture::detect`: the client's preface, or a server's first SETTINGS frame).
use core::ffi::c_void;

use aya_ebpf::{
    bindings::{__sk_buff, BPF_NOEXIST, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, bpf_sock},
    helpers::bpf_ktime_get_ns,
    btf_maps::SkStorage,
    macros::{btf_map, map},
    maps::{HashMap, PerCpuArray, RingBuf},
};
use collector_common::{
    capture::{Stream, WINDOW_WORDS, Window, after},
    drop,
    http::tls::{MAX_TLS_CONNS, TlsKey},
    http2::{EV_UPGRADE, Event, Frame, chunk_word, is_server_preface, midstream_join},
};

use crate::{
    capture::{
        conn::{CLAIM_ROUNDS, Conn, Ident, ROLE_SERVER, claim, claim_rounds, release, sk_storage, sk_storage_delete},
        packet::{load, socket_of},
        plain::{self, Call, TlsConn, TlsSeg},
        record,
        segment::{self, with_conn},
        stash,
    },
    drops, http1,
};

#[cfg(feature = "kernel-5-12")]
use crate::capture::conn::Body;

pub use collector_common::http2::framer::H2;

const _: () = {
    use core::mem::{offset_of, size_of};
    // docs/metrics.md quotes the socket storage a followed HTTP/2 connection takes.
    assert!(offset_of!(Conn<H2>, b.id) % 8 == 0 && size_of::<Conn<H2>>() < 1024);
    assert!(offset_of!(Event, data) % 8 == 0 && size_of::<Event>() == 88 + 256);
    assert!(size_of::<TlsConn<H2>>() == collector_common::http2::TLS_H2_CONN_SIZE);
};

/// HTTP/2 connections in their socket's local storage (see `capture::conn::Conn`).
#[btf_map]
static H2_CONNS: SkStorage<Conn<H2>> = SkStorage::new();

/// Frames to the daemon: 4 MiB, about 12,000 events (a request and its response take 3 to 5).
/// An event that finds it full is counted (`http2_events_lost`), and the daemon sees the gap in
/// the connection's event numbers.
#[map]
static HTTP2_EVENTS: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);

/// The size of `HTTP2_EVENTS`.
const RING_BYTES: u32 = 4 << 20;

/// The map of HTTP/2 TCP connections.
#[inline(always)]
pub fn conns() -> *const c_void {
    &H2_CONNS as *const SkStorage<Conn<H2>> as *const c_void
}

/// The HTTP/2 connection of socket `sk`, if followed (`create`: created zeroed if absent).
#[inline(always)]
pub fn conn_of(sk: *mut bpf_sock, create: bool) -> Option<&'static mut Conn<H2>> {
    // SAFETY: as `http1::conn_of`: null (None) or this socket's value, valid until the program
    // returns, changed only by the program holding it (`claim`).
    unsafe { sk_storage::<Conn<H2>>(conns(), sk, create).as_mut() }
}

/// The HTTP/2 connection of the packet's socket.
#[inline(always)]
fn conn_of_skb(skb: *mut __sk_buff) -> Option<(&'static mut Conn<H2>, *mut bpf_sock)> {
    let sk = socket_of(skb)?;
    conn_of(sk, false).map(|c| (c, sk))
}

/// The capture's drivers for HTTP/2: the global functions below.
pub struct Http2;

impl segment::Globals for Http2 {
    #[inline(always)]
    fn parse(b: *mut c_void, skb: *mut __sk_buff, how: u64) -> i64 {
        with_conn!(h2_parse(skb, b, how))
    }
    #[inline(always)]
    fn arrive(b: *mut c_void, skb: *mut __sk_buff, egress: u64) -> i64 {
        with_conn!(h2_arrive(skb, b, egress))
    }
    #[inline(always)]
    fn keep_all(skb: *mut __sk_buff, egress: u64, first: u64) -> i64 {
        h2_keep_all(skb, egress, first)
    }
    #[inline(always)]
    fn finish(b: *mut c_void, skb: *mut __sk_buff, how: u64) -> i64 {
        with_conn!(h2_finish(skb, b, how))
    }
    #[inline(always)]
    fn step(b: *mut c_void, skb: *mut __sk_buff, egress: u64) -> i64 {
        with_conn!(h2_step(skb, b, egress))
    }
    #[inline(always)]
    fn stash_run(skb: *mut __sk_buff, egress: u64) -> i64 {
        h2_stash_run(skb, egress)
    }
    #[inline(always)]
    fn keep(skb: *mut __sk_buff, egress: u64, index: u64) -> i64 {
        h2_keep(skb, egress, index)
    }
    #[inline(always)]
    fn record(_id: &Ident, _skb: *mut __sk_buff, _what: u64, _dur: u64, _req_bytes: u64, _resp_bytes: u64) -> i64 {
        // The daemon records HTTP/2 exchanges from the frames.
        0
    }
    #[inline(always)]
    fn frame(id: &Ident, f: &Frame, w: &Window) {
        emit(id, f, w);
    }
}

/// One event to the daemon: the connection's `Ident`, the frame, and the window with only the
/// chunk's bytes (`f.n` from `f.at`): the rest of it, which may hold other frames' bytes (a DATA
/// payload, a GOAWAY's debug data), is zeroed and never leaves the kernel.
#[inline(always)]
fn emit(id: &Ident, f: &Frame, w: &Window) {
    let Some(mut e) = HTTP2_EVENTS.reserve::<Event>(0) else {
        drops::count(drop::HTTP2_EVENTS_LOST);
        return;
    };
    let p = e.as_mut_ptr();
    // SAFETY: `p` points at the reserved record, `size_of::<Event>()` bytes owned by this
    // program until it is submitted; every field is written before the submit (the data words
    // whole, zero outside the chunk), so the daemon reads no uninitialised memory.
    unsafe {
        (*p).cookie = id.cookie;
        (*p).ns = f.ns;
        (*p).cgroup_id = id.cgroup_id;
        (*p).comm = id.comm;
        (*p).addr = id.addr;
        (*p).local_port = id.local_port;
        (*p).peer_port = id.peer_port;
        (*p).family = id.family;
        (*p).role = id.role;
        (*p).scheme = id.scheme;
        (*p).is_req = f.is_req as u8;
        (*p).kind = f.kind;
        (*p).ftype = f.ftype;
        (*p).fflags = f.fflags;
        (*p).at = f.at as u8;
        (*p).stream = f.stream;
        (*p).flen = f.flen;
        (*p).off = f.off;
        (*p).n = f.n;
        (*p).seq = f.seq;
        let words = (*p).data.as_mut_ptr() as *mut u64;
        let (lo, hi) = (f.at, f.at + f.n);
        let mut i = 0;
        while i < WINDOW_WORDS {
            *words.add(i) = chunk_word(w.buf[i], i as u32, lo, hi);
            i += 1;
        }
    }
    // No wakeup of the daemon's reader per event: each costs an interrupt and a scheduler
    // wakeup inside this program's run (2 µs per event here, in a VM: 12 of a gRPC response's
    // 14 µs). The reader drains the buffer every 20 ms by itself, and is woken once a quarter of
    // the buffer waits.
    let backlog = HTTP2_EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    e.submit(if backlog > RING_BYTES as u64 / 4 { BPF_RB_FORCE_WAKEUP } else { BPF_RB_NO_WAKEUP } as u64);
}

// The packet driver's global functions (see `capture::segment`). Each is unmangled (and
// exported) so that it stays a global function, verified once; the names are unique in the
// object.

/// Takes the connection of `skb`, waiting up to `CLAIM_ROUNDS` rounds (as `http1::http_claim`).
// SAFETY: unmangled: see above.
/// `collector_common::http2::midstream_join` of a TLS call's bytes (`buf` in the traced
/// process, `n` bytes, at least 16), for a connection seen from its middle. A global function:
/// its frame (the 16 bytes read) is not on the stack of the chain of calls that follows the
/// connection (5.10 allows 512 bytes for the deepest chain).
// SAFETY: unmangled (and exported) so that it stays a global function, verified once; the name
// is unique in the object.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn h2_join_user(buf: u64, n: u64) -> i64 {
    plain::read_user::<[u64; 2]>(buf).map_or(0, |b| midstream_join(b[0], b[1], n as u32) as i64)
}

#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn h2_claim(skb: *mut __sk_buff) -> i64 {
    let Some(sk) = socket_of(skb) else { return 0 };
    match conn_of(sk, false) {
        Some(conn) => claim_rounds(conn, CLAIM_ROUNDS) as i64,
        None => 0,
    }
}

/// Up to `MAX_STEPS` parse steps (`capture::segment::parse`) of the connection `b`.
// SAFETY: unmangled: see above.
#[unsafe(no_mangle)]
#[inline(never)]
#[cfg(feature = "kernel-5-12")]
pub extern "C" fn h2_parse(skb: *mut __sk_buff, b: *mut Body<H2>, how: u64) -> i64 {
    segment::parse::<Http2>(b.cast(), skb, how)
}

/// Up to `MAX_STEPS` parse steps (`capture::segment::parse`).
// SAFETY: unmangled: see above.
#[unsafe(no_mangle)]
#[inline(never)]
#[cfg(not(feature = "kernel-5-12"))]
pub extern "C" fn h2_parse(skb: *mut __sk_buff, how: u64) -> i64 {
    segment::parse::<Http2>(core::ptr::null_mut(), skb, how)
}

/// The positional bookkeeping of the current segment (`capture::segment::arrive`).
// SAFETY: unmangled: see above.
#[unsafe(no_mangle)]
#[inline(never)]
#[cfg(feature = "kernel-5-12")]
pub extern "C" fn h2_arrive(skb: *mut __sk_buff, b: *mut Body<H2>, egress: u64) -> i64 {
    let (Some(conn), Some(sk)) = (segment::handed(b), socket_of(skb)) else { return segment::ARRIVE_NONE };
    segment::arrive::<_, Http2>(conn, sk, skb, egress != 0)
}

/// The positional bookkeeping of the current segment (`capture::segment::arrive`).
// SAFETY: unmangled: see above.
#[unsafe(no_mangle)]
#[inline(never)]
#[cfg(not(feature = "kernel-5-12"))]
pub extern "C" fn h2_arrive(skb: *mut __sk_buff, egress: u64) -> i64 {
    let Some((conn, sk)) = conn_of_skb(skb) else { return segment::ARRIVE_NONE };
    segment::arrive::<_, Http2>(conn, sk, skb, egress != 0)
}

/// Keeps the current segment in the stash (`capture::segment::keep_all`).
// SAFETY: unmangled: see above.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn h2_keep_all(skb: *mut __sk_buff, egress: u64, first: u64) -> i64 {
    segment::keep_all::<Http2>(skb, egress, first)
}

/// After the current segment (`capture::segment::finish`): nonzero when the state was deleted.
// SAFETY: unmangled: see above.
#[unsafe(no_mangle)]
#[inline(never)]
#[cfg(feature = "kernel-5-12")]
pub extern "C" fn h2_finish(skb: *mut __sk_buff, b: *mut Body<H2>, how: u64) -> i64 {
    let (Some(conn), Some(sk)) = (segment::handed(b), socket_of(skb)) else { return 0 };
    segment::finish::<_, Http2>(conn, conns(), sk, skb, how)
}

/// After the current segment (`capture::segment::finish`): nonzero when the state was deleted.
// SAFETY: unmangled: see above.
#[unsafe(no_mangle)]
#[inline(never)]
#[cfg(not(feature = "kernel-5-12"))]
pub extern "C" fn h2_finish(skb: *mut __sk_buff, how: u64) -> i64 {
    let Some((conn, sk)) = conn_of_skb(skb) else { return 0 };
    segment::finish::<_, Http2>(conn, conns(), sk, skb, how)
}

/// One parse step (`capture::segment::step`).
// SAFETY: unmangled: see above.
#[unsafe(no_mangle)]
#[inline(never)]
#[cfg(feature = "kernel-5-12")]
pub extern "C" fn h2_step(skb: *mut __sk_buff, b: *mut Body<H2>, egress: u64) -> i64 {
    let Some(conn) = segment::handed(b) else { return 1 };
    segment::step::<_, Http2>(conn, skb, egress != 0)
}

/// One parse step (`capture::segment::step`).
// SAFETY: unmangled: see above.
#[unsafe(no_mangle)]
#[inline(never)]
#[cfg(not(feature = "kernel-5-12"))]
pub extern "C" fn h2_step(skb: *mut __sk_buff, egress: u64) -> i64 {
    let Some((conn, _)) = conn_of_skb(skb) else { return 1 };
    segment::step::<_, Http2>(conn, skb, egress != 0)
}

/// Points a direction at its stashed bytes (`capture::stash::run`).
// SAFETY: unmangled: see above.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn h2_stash_run(skb: *mut __sk_buff, egress: u64) -> i64 {
    let Some((conn, _)) = conn_of_skb(skb) else { return 1 };
    stash::run(conn, egress != 0)
}

/// Keeps the current segment's part in stash block `index` (`capture::stash::keep`).
// SAFETY: unmangled: see above.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn h2_keep(skb: *mut __sk_buff, egress: u64, index: u64) -> i64 {
    let Some((conn, _)) = conn_of_skb(skb) else { return 1 };
    stash::keep(conn, skb, egress != 0, index as u32)
}

/// HTTP/2 TLS connections (ALPN `h2`, read at the TLS library: `capture::plain`), as
/// `http1::TLS_CONNS` for HTTP/1. Not preallocated.
#[map]
static TLS_H2_CONNS: HashMap<TlsKey, TlsConn<H2>> =
    HashMap::with_max_entries(MAX_TLS_CONNS, aya_ebpf::bindings::BPF_F_NO_PREALLOC);

/// A zeroed connection to insert from (too large for the stack).
static ZERO_TLS_CONN: TlsConn<H2> = TlsConn {
    p: H2::ZERO,
    seg: [TlsSeg { seq: 0, end: 0, buf: 0, now: 0 }; 2],
    next: [0; 2],
    exact: 0,
    _pad: 0,
    id: Ident::ZERO,
};

/// Where a new connection's state is built before it is inserted whole (see [`tls_create`]).
#[map]
static TLS_H2_NEW: PerCpuArray<TlsConn<H2>> = PerCpuArray::with_max_entries(1, 0);

/// The HTTP/2 TLS connection of `key`, if followed.
#[inline(always)]
pub fn tls_conn(key: &TlsKey) -> Option<&'static mut TlsConn<H2>> {
    // SAFETY: as `http1::tls_conn`: the value of `key`, valid until the program returns, used
    // by one thread at a time.
    TLS_H2_CONNS.get_ptr_mut(key).and_then(|p| unsafe { p.as_mut() })
}

/// Creates the HTTP/2 TLS connection of `key`, whose first bytes (`call`) are (`class`, a
/// `plain::TLS_H2*`) the client's preface, a server's first SETTINGS frame, or in the middle of
/// a connection a request's or a response's HEADERS frame. The state is built in `TLS_H2_NEW`
/// and inserted whole (`BPF_NOEXIST`), so that a thread that finds the connection finds it
/// started: two threads of a process can meet a new connection at once (Go's HTTP/2 server
/// writes its SETTINGS on one while it reads the client's preface on another), and both compute
/// the same start. (Inserted zeroed, then started in place, both found it unstarted and started
/// it, the second resetting positions the first had placed bytes at: that direction was lost.)
#[inline(always)]
pub fn tls_create(key: &TlsKey, call: &Call, class: i64) -> Option<&'static mut TlsConn<H2>> {
    // SAFETY: this CPU's slot, used by this program run alone (a program runs to completion on
    // its CPU), and valid until it returns.
    if let Some(new) = TLS_H2_NEW.get_ptr_mut(0).and_then(|p| unsafe { p.as_mut() }) {
        // SAFETY: both are valid, aligned values of the type, and do not overlap (a map value
        // and a read-only global).
        unsafe { core::ptr::copy_nonoverlapping(&ZERO_TLS_CONN, new, 1) };
        let response = class == plain::TLS_H2_SERVER || class == plain::TLS_H2_JOIN_RESPONSE;
        plain::start(new, call, response);
        if class >= plain::TLS_H2_JOIN_REQUEST {
            new.p.join(!response, 0);
        }
        // The daemon's key of the connection: the process and the library's connection object,
        // with the top bit set (socket cookies count up from 1).
        new.id.cookie = 1 << 63 | (key.tgid as u64) << 44 ^ key.ssl;
        let _ = TLS_H2_CONNS.insert(key, new, BPF_NOEXIST as u64);
    }
    let conn = tls_conn(key);
    if conn.is_none() {
        drops::count(drop::TLS_CONN_FULL);
    }
    conn
}

impl plain::Globals for Http2 {
    #[inline(always)]
    fn step(ssl: u64, is_req: u64) -> i64 {
        tls_h2_step(ssl, is_req)
    }
    #[inline(always)]
    fn record(_ssl: u64, _what: u64, _dur: u64, _req_bytes: u64, _resp_bytes: u64) -> i64 {
        0
    }
    #[inline(always)]
    fn frame(id: &Ident, f: &Frame, w: &Window) {
        emit(id, f, w);
    }
}

// The plaintext driver's global functions (see `capture::plain`), as above.

/// One parse step of the current call's bytes (`capture::plain::step`).
// SAFETY: unmangled: see above.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn tls_h2_step(ssl: u64, is_req: u64) -> i64 {
    let Some(conn) = tls_conn(&plain::key_of(ssl)) else { return 1 };
    plain::step::<_, Http2>(conn, ssl, is_req != 0)
}

/// The bookkeeping before the parse of the current call's bytes: nonzero when they are to be
/// parsed.
// SAFETY: unmangled: see above.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn tls_h2_arrive(ssl: u64, is_req: u64) -> i64 {
    match tls_conn(&plain::key_of(ssl)) {
        Some(conn) => plain::arrive::<_, Http2>(conn, ssl, is_req != 0) as i64,
        None => 0,
    }
}

/// The parse steps of the current call's bytes.
// SAFETY: unmangled: see above.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn tls_h2_parse(ssl: u64, is_req: u64) -> i64 {
    plain::parse::<Http2>(ssl, is_req);
    0
}

/// After the current call's bytes.
// SAFETY: unmangled: see above.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn tls_h2_settle(ssl: u64, is_req: u64) -> i64 {
    if let Some(conn) = tls_conn(&plain::key_of(ssl)) {
        plain::settle::<_, Http2>(conn, ssl, is_req != 0);
    }
    0
}

/// A TLS connection freed: its end goes to the daemon, and the state is deleted.
// SAFETY: unmangled: see above.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn tls_h2_close(ssl: u64) -> i64 {
    let key = plain::key_of(ssl);
    let Some(conn) = tls_conn(&key) else { return 0 };
    plain::close::<_, Http2>(conn, ssl);
    let _ = TLS_H2_CONNS.remove(&key);
    0
}

/// An HTTP/1 connection of the packet's socket whose 101 ended its HTTP/1 part
/// (`Exchange::upgrading`), after the current segment was followed as HTTP/1 (`how`: egress,
/// bit 0, and the TCP flags, bits 8..16; `at`: the payload's offset, bits 0..32, and length,
/// bits 32..64): when the bytes after the 101's head are the server's first HTTP/2 frame
/// (`Upgrade: h2c`), the connection becomes an HTTP/2 one from those positions on — its state
/// moves to `H2_CONNS` and the request that asked for the switch goes to the daemon as stream 1
/// (`EV_UPGRADE`): returns 1, the new connection taken, for the caller to follow the rest of
/// the segment as HTTP/2 (from the program itself: the stack of a chain of calls is bounded
/// on 5.10); anything else records the 101 and follows nothing more. Waits for the next
/// segment when this one ends with the head.
// SAFETY: unmangled: see above.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn h2_upgrade(skb: *mut __sk_buff, how: u64, seq: u64, at: u64) -> i64 {
    let egress = how & 1 != 0;
    let (seq, payload, plen) = (seq as u32, at as u32, (at >> 32) as u32);
    let Some(sk) = socket_of(skb) else { return 0 };
    let Some(old) = http1::conn_of(sk, false) else { return 0 };
    if !claim(old, CLAIM_ROUNDS) {
        return 0;
    }
    if !old.p.upgrading() {
        release(old);
        return 0;
    }
    // SAFETY: `bpf_ktime_get_ns` takes no argument and touches no memory of the program.
    let now = unsafe { bpf_ktime_get_ns() };
    let (req_pos, resp_pos, pending) = old.p.upgrade_point();
    // The responses' stream decides: a segment of the requests' waits.
    let is_req = (old.id.role == ROLE_SERVER) != egress;
    let end = seq.wrapping_add(plen);
    if is_req || resp_pos == end {
        release(old);
        return 0;
    }
    let head = if !after(seq, resp_pos) && after(end, resp_pos) && end.wrapping_sub(resp_pos) >= 8 {
        load::<[u8; 8]>(skb, payload.wrapping_add(resp_pos.wrapping_sub(seq))).map(u64::from_le_bytes)
    } else {
        None
    };
    let h2c = head.is_some_and(is_server_preface);
    let new = if h2c { conn_of(sk, true) } else { None };
    let Some(new) = new else {
        if h2c {
            drops::count(drop::HTTP_CONN_STORAGE);
        }
        let b = &mut old.b;
        let mut rec = segment::Recorder::<http1::Http1>::new(&b.id, skb, egress);
        b.p.not_upgraded(now, &mut rec);
        release(old);
        return 0;
    };
    // A new value, created zeroed just now by this program: nobody else holds it (a program on
    // another CPU that found it meanwhile waits for this claim).
    if !claim(new, CLAIM_ROUNDS) {
        release(old);
        return 0;
    }
    if new.id.role == 0 {
        new.id = old.id;
        new.p.start(old.id.role == ROLE_SERVER, true, req_pos, Some(resp_pos));
        // The request that asked for the switch: stream 1, its response to come in frames. It
        // leaves the HTTP/1 in-flight gauge (HTTP/2 exchanges are not in it).
        new.p.events = 1;
        let f = Frame {
            ns: pending.start_ns,
            seq: 0,
            is_req: true,
            kind: EV_UPGRADE,
            ftype: 0,
            fflags: pending.method,
            stream: 1,
            flen: 0,
            off: 0,
            n: 0,
            at: 0,
        };
        emit(&new.id, &f, &new.p.req.w);
        record::active_add(&old.id, u64::MAX);
    }
    stash::forget(old, true, true);
    stash::forget(old, false, true);
    sk_storage_delete(http1::conns(), sk);
    1
}
