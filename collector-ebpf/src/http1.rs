//! HTTP/1.x, one protocol behind the capture's seam: its framer is
//! `collector_common::http::framer::Exchange` (pure, host-tested, fuzzed), which implements
//! `collector_common::capture::Stream`. Here, its kernel glue: where its connections live (a
//! TCP connection's in its socket's local storage, a TLS connection's in `TLS_CONNS`), and the
//! capture's drivers (`capture::segment`, `capture::plain`) instantiated as global functions
//! of its own. The entry programs (`skb.rs`, `tls.rs`) dispatch connections classified HTTP/1
//! here.
//!
//! Each global function is verified once, however many places call it. A global function may
//! take only the program's context and scalars on every kernel from 5.10, so each finds the
//! connection again: through the packet's socket, or by process and TLS connection object; the
//! build for 5.12 and later hands the packet functions the connection by pointer instead
//! (`segment::with_conn`).
use core::ffi::c_void;

use aya_ebpf::{
    bindings::{__sk_buff, BPF_NOEXIST, bpf_sock},
    btf_maps::SkStorage,
    macros::{btf_map, map},
    maps::HashMap,
};
use collector_common::{
    capture::Window,
    drop,
    http::{
        framer::Exchange,
        tls::{MAX_TLS_CONNS, TLS_CONN_SIZE, TlsKey},
    },
};

use crate::{
    capture::{
        conn::{CLAIM_ROUNDS, Conn, Ident, claim, claim_rounds, sk_storage},
        backlog,
        packet::{load, socket_of, tcp_sock},
        plain::{self, Call, TlsConn, TlsSeg},
        record,
        segment::{self, with_conn},
        stash,
    },
    drops,
};

#[cfg(feature = "kernel-5-12")]
use crate::capture::conn::Body;

const _: () = {
    use core::mem::{offset_of, size_of};
    // docs/metrics.md quotes the socket storage a followed connection takes.
    assert!(size_of::<Conn<Exchange>>() == 1112 && offset_of!(Conn<Exchange>, b.id) % 8 == 0);
    assert!(size_of::<TlsConn<Exchange>>() == TLS_CONN_SIZE && offset_of!(TlsConn<Exchange>, id) % 8 == 0);
    assert!(size_of::<Window>() == 8 + 8 * collector_common::capture::WINDOW_WORDS);
};

/// HTTP/1 connections in their socket's local storage (see `capture::conn::Conn`).
#[btf_map]
static HTTP_CONNS: SkStorage<Conn<Exchange>> = SkStorage::new();

/// The map of HTTP/1 TCP connections.
#[inline(always)]
pub fn conns() -> *const c_void {
    &HTTP_CONNS as *const SkStorage<Conn<Exchange>> as *const c_void
}

/// The HTTP/1 connection of socket `sk`, if followed (`create`: created zeroed if absent).
#[inline(always)]
pub fn conn_of(sk: *mut bpf_sock, create: bool) -> Option<&'static mut Conn<Exchange>> {
    // SAFETY: `sk_storage` returns null (None here) or this socket's `Conn<Exchange>`, valid
    // until the program returns (freed only after an RCU grace period, even when deleted).
    // Callers change it only while they hold it (`claim`), so no other program changes it
    // meanwhile; the global functions below reach the same value again while the caller's own
    // reference stays unused (each is an out-of-line call, `inline(never)`, whose body writes
    // through pointers that helper calls return, so LLVM treats it as writing any memory and
    // reuses nothing read through the caller's reference across it).
    unsafe { sk_storage::<Conn<Exchange>>(conns(), sk, create).as_mut() }
}

/// The HTTP/1 connection of the packet's socket.
#[inline(always)]
fn conn_of_skb(skb: *mut __sk_buff) -> Option<(&'static mut Conn<Exchange>, *mut bpf_sock)> {
    let sk = socket_of(skb)?;
    conn_of(sk, false).map(|c| (c, sk))
}

/// The capture's drivers for HTTP/1: the global functions below.
pub struct Http1;

impl segment::Globals for Http1 {
    #[inline(always)]
    fn parse(b: *mut c_void, skb: *mut __sk_buff, how: u64) -> i64 {
        with_conn!(http_parse(skb, b, how))
    }
    #[inline(always)]
    fn arrive(b: *mut c_void, skb: *mut __sk_buff, egress: u64) -> i64 {
        with_conn!(http_arrive(skb, b, egress))
    }
    #[inline(always)]
    fn keep_all(skb: *mut __sk_buff, egress: u64, first: u64) -> i64 {
        http_keep_all(skb, egress, first)
    }
    #[inline(always)]
    fn finish(b: *mut c_void, skb: *mut __sk_buff, how: u64) -> i64 {
        with_conn!(http_finish(skb, b, how))
    }
    #[inline(always)]
    fn step(b: *mut c_void, skb: *mut __sk_buff, egress: u64) -> i64 {
        with_conn!(http_step(skb, b, egress))
    }
    #[inline(always)]
    fn stash_run(skb: *mut __sk_buff, egress: u64) -> i64 {
        http_stash_run(skb, egress)
    }
    #[inline(always)]
    fn keep(skb: *mut __sk_buff, egress: u64, index: u64) -> i64 {
        http_keep(skb, egress, index)
    }
    #[inline(always)]
    fn record(id: &Ident, skb: *mut __sk_buff, what: u64, dur: u64, req_bytes: u64, resp_bytes: u64) -> i64 {
        #[cfg(feature = "kernel-5-12")]
        return {
            let _ = skb;
            http_record(id, what, dur, req_bytes, resp_bytes)
        };
        #[cfg(not(feature = "kernel-5-12"))]
        return {
            let _ = id;
            http_record(skb, what, dur, req_bytes, resp_bytes)
        };
    }
}

impl plain::Globals for Http1 {
    #[inline(always)]
    fn step(ssl: u64, is_req: u64) -> i64 {
        tls_step(ssl, is_req)
    }
    #[inline(always)]
    fn record(ssl: u64, what: u64, dur: u64, req_bytes: u64, resp_bytes: u64) -> i64 {
        tls_record(ssl, what, dur, req_bytes, resp_bytes)
    }
}

// The packet driver's global functions (see `capture::segment`). Each is unmangled (and
// exported) so that it stays a global function, verified once; the names are unique in the
// object.

/// Takes the connection of `skb`, waiting up to `CLAIM_ROUNDS` rounds while another CPU holds it
/// (see `capture::conn::claim_rounds`; nothing counted: `capture::conn::wait` calls it again or
/// counts); nonzero when it did. The waiting loop is verified once.
// SAFETY: unmangled: see above.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn http_claim(skb: *mut __sk_buff) -> i64 {
    let Some(sk) = socket_of(skb) else { return 0 };
    // Another CPU may be changing the rest of the value: `claim` touches only `lock` (through
    // the helper, atomically) and `busy`, under that lock.
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
pub extern "C" fn http_parse(skb: *mut __sk_buff, b: *mut Body<Exchange>, how: u64) -> i64 {
    segment::parse::<Http1>(b.cast(), skb, how)
}

/// Up to `MAX_STEPS` parse steps (`capture::segment::parse`) of the connection `b`.
// SAFETY: unmangled: see above.
#[unsafe(no_mangle)]
#[inline(never)]
#[cfg(not(feature = "kernel-5-12"))]
pub extern "C" fn http_parse(skb: *mut __sk_buff, how: u64) -> i64 {
    segment::parse::<Http1>(core::ptr::null_mut(), skb, how)
}

/// The positional bookkeeping of the current segment (`capture::segment::arrive`).
// SAFETY: unmangled: see above.
#[unsafe(no_mangle)]
#[inline(never)]
#[cfg(feature = "kernel-5-12")]
pub extern "C" fn http_arrive(skb: *mut __sk_buff, b: *mut Body<Exchange>, egress: u64) -> i64 {
    let (Some(conn), Some(sk)) = (segment::handed(b), socket_of(skb)) else { return segment::ARRIVE_NONE };
    segment::arrive::<_, Http1>(conn, sk, skb, egress != 0)
}

/// The positional bookkeeping of the current segment (`capture::segment::arrive`).
// SAFETY: unmangled: see above.
#[unsafe(no_mangle)]
#[inline(never)]
#[cfg(not(feature = "kernel-5-12"))]
pub extern "C" fn http_arrive(skb: *mut __sk_buff, egress: u64) -> i64 {
    let Some((conn, sk)) = conn_of_skb(skb) else { return segment::ARRIVE_NONE };
    segment::arrive::<_, Http1>(conn, sk, skb, egress != 0)
}

/// Keeps the current segment in the stash (`capture::segment::keep_all`).
// SAFETY: unmangled: see above.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn http_keep_all(skb: *mut __sk_buff, egress: u64, first: u64) -> i64 {
    segment::keep_all::<Http1>(skb, egress, first)
}

/// After the current segment (`capture::segment::finish`): nonzero when the state was deleted.
// SAFETY: unmangled: see above.
#[unsafe(no_mangle)]
#[inline(never)]
#[cfg(feature = "kernel-5-12")]
pub extern "C" fn http_finish(skb: *mut __sk_buff, b: *mut Body<Exchange>, how: u64) -> i64 {
    let (Some(conn), Some(sk)) = (segment::handed(b), socket_of(skb)) else { return 0 };
    segment::finish::<_, Http1>(conn, conns(), sk, skb, how)
}

/// After the current segment (`capture::segment::finish`): nonzero when the state was deleted.
// SAFETY: unmangled: see above.
#[unsafe(no_mangle)]
#[inline(never)]
#[cfg(not(feature = "kernel-5-12"))]
pub extern "C" fn http_finish(skb: *mut __sk_buff, how: u64) -> i64 {
    let Some((conn, sk)) = conn_of_skb(skb) else { return 0 };
    segment::finish::<_, Http1>(conn, conns(), sk, skb, how)
}

/// One parse step (`capture::segment::step`).
// SAFETY: unmangled: see above.
#[unsafe(no_mangle)]
#[inline(never)]
#[cfg(feature = "kernel-5-12")]
pub extern "C" fn http_step(skb: *mut __sk_buff, b: *mut Body<Exchange>, egress: u64) -> i64 {
    let Some(conn) = segment::handed(b) else { return 1 };
    segment::step::<_, Http1>(conn, skb, egress != 0)
}

/// One parse step (`capture::segment::step`).
// SAFETY: unmangled: see above.
#[unsafe(no_mangle)]
#[inline(never)]
#[cfg(not(feature = "kernel-5-12"))]
pub extern "C" fn http_step(skb: *mut __sk_buff, egress: u64) -> i64 {
    let Some((conn, _)) = conn_of_skb(skb) else { return 1 };
    segment::step::<_, Http1>(conn, skb, egress != 0)
}

/// Points a direction at its stashed bytes (`capture::stash::run`).
// SAFETY: unmangled: see above.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn http_stash_run(skb: *mut __sk_buff, egress: u64) -> i64 {
    let Some((conn, _)) = conn_of_skb(skb) else { return 1 };
    stash::run(conn, egress != 0)
}

/// Keeps the current segment's part in stash block `index` (`capture::stash::keep`).
// SAFETY: unmangled: see above.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn http_keep(skb: *mut __sk_buff, egress: u64, index: u64) -> i64 {
    let Some((conn, _)) = conn_of_skb(skb) else { return 1 };
    stash::keep(conn, skb, egress != 0, index as u32)
}

/// The first segment with payload of a server socket whose request came before the socket
/// existed (`capture::backlog`): when the bytes kept for it are found, creates and takes its
/// connection (nonzero), its request's bytes left in the stash for `http_parse`. `how`: the
/// direction (bit 0, egress) and the family (bits 8..16); `seq`: the segment's place.
// SAFETY: unmangled: see above.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn http_adopt(skb: *mut __sk_buff, how: u64, seq: u64) -> i64 {
    let (egress, family) = (how & 1 != 0, (how >> 8) as u8);
    let Some(sk) = socket_of(skb) else { return 0 };
    let Some(tp) = tcp_sock(sk) else { return 0 };
    // The TCP header follows the IP header (no IPv6 extension headers: see `packet.rs`).
    let ip_len = if family == 4 {
        match load::<u8>(skb, 0) {
            Some(v) => ((v & 0x0f) as u32) * 4,
            None => return 0,
        }
    } else {
        40
    };
    let Some(ports) = load::<[u8; 4]>(skb, ip_len) else { return 0 };
    let ports = u32::from_be_bytes(ports);
    let Some(e) = backlog::take(skb, family, ports, egress) else { return 0 };
    let Some(conn) = conn_of(sk, true) else {
        drops::count(drop::HTTP_CONN_STORAGE);
        return 0;
    };
    if !claim(conn, CLAIM_ROUNDS) {
        return 0;
    }
    if conn.id.role == 0 {
        segment::start_embryo(conn, &e, skb, sk, tp, egress, seq as u32, ports, family);
    }
    1
}

/// Records one exchange of the socket of `skb` into its histogram (`capture::record`): `what`
/// holds the direction of the packet (bit 0), the method (bits 8..16) and the status (bits
/// 16..32). Only `id` is read, while the calling program holds the connection.
// SAFETY: unmangled: see above.
#[unsafe(no_mangle)]
#[inline(never)]
#[cfg(not(feature = "kernel-5-12"))]
pub extern "C" fn http_record(skb: *mut __sk_buff, what: u64, dur: u64, req_bytes: u64, resp_bytes: u64) -> i64 {
    let Some((conn, _)) = conn_of_skb(skb) else { return 0 };
    record::record(&conn.id, what, dur, req_bytes, resp_bytes);
    0
}

/// Records one exchange of the connection `id` (`capture::record`), `what` as above (kernels
/// from 5.12: the caller hands the connection's `Ident` over).
// SAFETY: unmangled: see above.
#[unsafe(no_mangle)]
#[inline(never)]
#[cfg(feature = "kernel-5-12")]
pub extern "C" fn http_record(id: *const Ident, what: u64, dur: u64, req_bytes: u64, resp_bytes: u64) -> i64 {
    // SAFETY: a global function's pointer argument is checked by the verifier at every call
    // (memory of at least `Ident`'s size, or null); the callers pass the `id` of the connection
    // they hold, in its socket's storage, valid until the program returns.
    let Some(id) = (unsafe { id.as_ref() }) else { return 0 };
    record::record(id, what, dur, req_bytes, resp_bytes);
    0
}

/// HTTP/1 TLS connections. Not preallocated (a value is about 1 KiB): created on a connection's
/// first HTTP bytes, deleted by `tls_close` or the daemon's sweep.
#[map]
static TLS_CONNS: HashMap<TlsKey, TlsConn<Exchange>> =
    HashMap::with_max_entries(MAX_TLS_CONNS, aya_ebpf::bindings::BPF_F_NO_PREALLOC);

/// A zeroed connection to insert from (too large for the stack).
static ZERO_TLS_CONN: TlsConn<Exchange> = TlsConn {
    p: Exchange::ZERO,
    seg: [TlsSeg { seq: 0, end: 0, buf: 0, now: 0 }; 2],
    next: [0; 2],
    exact: 0,
    _pad: 0,
    id: Ident::ZERO,
};

/// The HTTP/1 TLS connection of `key`, if followed.
#[inline(always)]
pub fn tls_conn(key: &TlsKey) -> Option<&'static mut TlsConn<Exchange>> {
    // SAFETY: the value of `key` in `TLS_CONNS`, valid until the program returns (the map is not
    // preallocated: a value deleted meanwhile is freed after an RCU grace period). A connection
    // is used by one thread at a time (OpenSSL's `SSL` objects are not to be shared between
    // threads without locking, which the application does), so no other program changes it
    // while this one does; the global functions below reach it again by key while the caller
    // leaves its own reference unused.
    TLS_CONNS.get_ptr_mut(key).and_then(|p| unsafe { p.as_mut() })
}

/// Creates the HTTP/1 TLS connection of `key`, whose first bytes (`call`) start a request
/// (`response` false) or a response.
#[inline(always)]
pub fn tls_create(key: &TlsKey, call: &Call, response: bool) -> Option<&'static mut TlsConn<Exchange>> {
    let _ = TLS_CONNS.insert(key, &ZERO_TLS_CONN, BPF_NOEXIST as u64);
    let Some(conn) = tls_conn(key) else {
        drops::count(drop::TLS_CONN_FULL);
        return None;
    };
    if conn.id.role == 0 {
        plain::start(conn, call, response);
    }
    Some(conn)
}

// The plaintext driver's global functions (see `capture::plain`), as above.

/// Records one exchange of the TLS connection `ssl` of this process.
// SAFETY: unmangled: see above.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn tls_record(ssl: u64, what: u64, dur: u64, req_bytes: u64, resp_bytes: u64) -> i64 {
    if let Some(conn) = tls_conn(&plain::key_of(ssl)) {
        record::record(&conn.id, what, dur, req_bytes, resp_bytes);
    }
    0
}

/// One parse step of the current call's bytes (`capture::plain::step`).
// SAFETY: unmangled: see above.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn tls_step(ssl: u64, is_req: u64) -> i64 {
    let Some(conn) = tls_conn(&plain::key_of(ssl)) else { return 1 };
    plain::step::<_, Http1>(conn, ssl, is_req != 0)
}

/// The bookkeeping before the parse of the current call's bytes (`capture::plain::arrive`):
/// nonzero when they are to be parsed.
// SAFETY: unmangled: see above.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn tls_arrive(ssl: u64, is_req: u64) -> i64 {
    match tls_conn(&plain::key_of(ssl)) {
        Some(conn) => plain::arrive::<_, Http1>(conn, ssl, is_req != 0) as i64,
        None => 0,
    }
}

/// The parse steps of the current call's bytes (`capture::plain::parse`): the loop in a frame
/// of its own, small, under the steps' frames.
// SAFETY: unmangled: see above.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn tls_parse(ssl: u64, is_req: u64) -> i64 {
    plain::parse::<Http1>(ssl, is_req);
    0
}

/// After the current call's bytes (`capture::plain::settle`).
// SAFETY: unmangled: see above.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn tls_settle(ssl: u64, is_req: u64) -> i64 {
    if let Some(conn) = tls_conn(&plain::key_of(ssl)) {
        plain::settle::<_, Http1>(conn, ssl, is_req != 0);
    }
    0
}

/// A TLS connection freed (`SSL_free`, Go's `Close`): a response that ends with it ends, the
/// rest of what waits is given up, and the state is deleted.
// SAFETY: unmangled: see above.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn tls_close(ssl: u64) -> i64 {
    let key = plain::key_of(ssl);
    plain::forget_tries(&key);
    let Some(conn) = tls_conn(&key) else { return 0 };
    plain::close::<_, Http1>(conn, ssl);
    let _ = TLS_CONNS.remove(&key);
    0
}
