//! The packet entry programs: `cgroup_skb` ingress and egress on the cgroup v2 root see every
//! TCP segment of every socket on the host. Each segment with payload (or a FIN, or an RST) of
//! a connection followed goes to its protocol through the capture's packet driver
//! (`capture::segment`); a socket's first segment with payload classifies it, once
//! (`capture::detect`): followed by a protocol from then on, or marked not followed. Also the
//! socket programs: `http_sock_create` names every socket after its creating process, and
//! `http_sock_close` settles connections that close without a FIN or RST passing the hooks.
//!
//! Server side (a socket that receives requests): from the first request byte arriving
//! (ingress) to the last response byte leaving (egress). Client side (a socket that sends
//! requests): from the first request byte leaving to the last response byte arriving.
//!
//! Kernels: the programs load from Linux 5.10 on. They use no `bpf_loop` (5.17) and no
//! `bpf_get_current_comm` in cgroup_skb (6.13). Every loop is a plain bounded loop; the long
//! ones sit in global functions of their own, which the verifier checks once however many
//! places call them (http1.rs). No payload byte leaves the kernel.
use aya_ebpf::{
    bindings::{
        __sk_buff, bpf_sock, BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_TCP_LISTEN, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB, BPF_SOCK_OPS_STATE_CB,
        BPF_SOCK_OPS_STATE_CB_FLAG,
    },
    helpers::{bpf_get_current_comm, bpf_ktime_get_ns, generated::bpf_sk_fullsock},
    macros::{cgroup_skb, cgroup_sock, sock_ops},
    programs::{SkBuffContext, SockContext, SockOpsContext},
};
use collector_common::{
    drop,
    http2::{JOIN_REQUEST, JOIN_RESPONSE, midstream_join},
};

use crate::{
    capture::{
        arrivals, backlog,
        conn::{
            Conn, MARK_TLS_SERVER, MIDSTREAM_TRIES, Owner, armed, claim, held_here, not_followed, owners, release,
            sk_storage, try_claim, wait,
        },
        detect::{Class, classify},
        packet::{
            TCP_FIN, TCP_RST, TCP_SYN, at_stream_start, headers_direct, headers_loaded, load, skb_of, socket_of,
            tcp_sock,
        },
        segment,
    },
    drops,
    http1::{self, Http1},
    http2::{self, H2, Http2},
    network, process,
};

/// Benchmarks only (`cargo xtask bench`, set by the daemon from `COLLECTOR_BENCH_HTTP_STAGE`):
/// 0 runs the whole program; 1, 2 and 3 return at the stage boundaries whose cost the bench
/// breaks down (docs/performance.md). A read-only global, so the verifier knows its value: the
/// branches not taken and the code only they reach are dropped from the loaded program (the
/// loads of the global stay, a few instructions).
// SAFETY: unmangled so that the daemon can set it by this name before load; no other symbol in
// the object has the name, so nothing else is bound to it.
#[unsafe(no_mangle)]
static HTTP_BENCH_STAGE: u32 = 0;

/// Tests only (set by the daemon from `COLLECTOR_TEST_HTTP_DEFER`): every received segment with
/// payload of a connection followed goes the way of one that nested on the CPU of the program
/// holding its connection (`segment::defer`, then the holder's parse of it), which the tests
/// cannot bring about on loopback (the receiving softirq runs after the sending program there).
/// A read-only global, as `HTTP_BENCH_STAGE`: the branch is dropped from the loaded program.
// SAFETY: unmangled so that the daemon can set it by this name before load; no other symbol in
// the object has the name, so nothing else is bound to it.
#[unsafe(no_mangle)]
static HTTP_TEST_DEFER: u32 = 0;

/// Whether `HTTP_TEST_DEFER` is set.
#[inline(always)]
fn test_defer() -> bool {
    // SAFETY: as in `bench_stop`: an immutable static, read volatile.
    unsafe { core::ptr::read_volatile(&raw const HTTP_TEST_DEFER) != 0 }
}

/// Whether the program returns at benchmark stage `stage` (see `HTTP_BENCH_STAGE`).
#[inline(always)]
fn bench_stop(stage: u32) -> bool {
    // SAFETY: reads an immutable static through a reference: valid, aligned and initialised,
    // and never written while programs run (the daemon sets it before load and the loader
    // freezes read-only data), so nothing races with the read. Volatile so LLVM reads the value
    // the daemon set instead of folding the initial 0.
    unsafe { core::ptr::read_volatile(&raw const HTTP_BENCH_STAGE) == stage }
}

/// `skb_new_conn`: not followed (yet).
const NEW_NONE: i64 = 0;
/// `skb_new_conn`: followed from this segment, its connection taken.
const NEW_FOLLOWED: i64 = 1;
/// `skb_new_conn`: followed, its connection taken, its request's first bytes in the stash
/// (they came before the socket existed: `capture::backlog`).
const NEW_ADOPTED: i64 = 2;
/// `skb_new_conn`: followed as HTTP/2 from this segment, its connection taken.
const NEW_HTTP2: i64 = 3;

/// A socket seen for the first time with payload (`seq`; `how`: the direction, bit 0, egress,
/// the family, bits 8..16, the IP header's length, bits 16..32; `at`: the payload's offset,
/// bits 0..32, and length, bits 32..64), not marked as given up (the caller checks): classifies
/// it by its first bytes, creates and takes (claims) its connection state when a protocol
/// follows it, else marks it. A global function:
/// its frame (the classification's, the marks') is gone before the parse's frames are pushed.
// SAFETY: unmangled (and exported) so that it stays a global function, verified once; the name
// is unique in the object.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn skb_new_conn(skb: *mut __sk_buff, how: u64, seq: u64, at: u64) -> i64 {
    let (egress, family, ip_len) = (how & 1 != 0, (how >> 8) as u8, (how >> 16) as u32 & 0xffff);
    let (seq, payload, plen) = (seq as u32, at as u32, (at >> 32) as u32);
    let Some(sk) = socket_of(skb) else { return NEW_NONE };
    let Some(tcp) = load::<[u8; 14]>(skb, ip_len) else { return NEW_NONE };
    let syn = tcp[13] & TCP_SYN != 0;
    let ports = u32::from_be_bytes([tcp[0], tcp[1], tcp[2], tcp[3]]);
    let mark = sk_storage::<u8>(not_followed(), sk, false);
    let head = if plen >= 8 {
        load::<[u8; 8]>(skb, payload)
    } else {
        load::<u8>(skb, payload).map(|b| [b, 0, 0, 0, 0, 0, 0, 0])
    };
    let head = u64::from_le_bytes(head.unwrap_or([0; 8]));
    let Some(tp) = tcp_sock(sk) else { return NEW_NONE };
    // A server socket that received bytes no segment here showed: its request may have come
    // before the socket existed (`capture::backlog`), and wait in the stash. Adopted (and
    // taken) in a global function of its own; the caller then parses the request from the
    // stash, with its arrival time.
    if tp.bytes_received > 0 && http1::http_adopt(skb, egress as u64 | (family as u64) << 8, seq as u64) != 0 {
        return NEW_ADOPTED;
    }
    // The first bytes decide. A request line start ("GET ...") makes this socket a server if
    // it was received and a client if it was sent; a status line start ("HTTP/") the other way
    // round, so a connection caught between a request and its response is followed from that
    // response on. At the start of the byte stream anything else is not followed, for good. A
    // connection that was open before the collector started is seen from the middle of its
    // stream (a body, or the part of a message after a segment boundary): it is picked up at
    // the first segment that starts a response or a request with a known method, and given up
    // after MIDSTREAM_TRIES segments that do not.
    let at_start = at_stream_start(tp, egress, seq);
    let class = classify(head, at_start);
    let response = class == Class::Response;
    // HTTP/2 from the start of a stream: the client's preface starts the requests' stream, a
    // server's SETTINGS the responses'.
    if at_start && (class == Class::Http2 || class == Class::Http2Server) {
        return skb_new_h2(skb, how, seq as u64, (class == Class::Http2Server) as u64);
    }
    if class != Class::Request && !response {
        if !egress && !at_start && tp.bytes_received == 0 {
            // Received ahead of the stream's first byte (which was lost or reordered): it
            // decides when it comes, and this segment costs no try.
            return NEW_NONE;
        }
        // HTTP/2 from a segment in the middle of a connection (open before the collector
        // started) that starts with a request's or a response's HEADERS frame.
        if !at_start && class == Class::Other {
            let r = skb_join_h2(skb, how, seq as u64);
            if r != NEW_NONE {
                return r;
            }
        }
        let mark = if mark.is_null() { sk_storage::<u8>(not_followed(), sk, true) } else { mark };
        if mark.is_null() {
            drops::count(drop::HTTP_CONN_STORAGE);
        } else {
            // A received stream that starts with a TLS handshake record is a TLS server's,
            // whose arrivals the TLS capture uses.
            let given_up = if !egress && class == Class::Tls && arrivals::capturing() {
                MARK_TLS_SERVER
            } else {
                MIDSTREAM_TRIES
            };
            // SAFETY: `mark` is non-null (checked above): this socket's one-byte mark, valid until
            // the program returns. Programs on two CPUs may update it at once; a lost increment
            // only delays giving the socket up.
            unsafe { *mark = if at_start { given_up } else { (*mark).saturating_add(1) } };
            if at_start && given_up == MARK_TLS_SERVER {
                // The connection's own first arrival, so that a request read before any later
                // segment is noted never takes the time of an earlier connection with the same
                // ports and peer (its entry is not deleted when it closes).
                arrivals::tls_arrived(skb, ports as u64, family as u64);
            }
        }
        return NEW_NONE;
    }
    // Another CPU may hold and change the state: nothing here touches it before `http_claim`
    // (which reaches the value in a global function of its own) has taken it.
    let Some(conn) = http1::conn_of(sk, true).or_else(|| http1::conn_of(sk, false)) else {
        drops::count(drop::HTTP_CONN_STORAGE);
        return NEW_NONE;
    };
    if !wait(|| http1::http_claim(skb) != 0) {
        return NEW_NONE;
    }
    if conn.id.role == 0 {
        // Not created and set up meanwhile by a program on another CPU.
        segment::start(conn, skb, sk, tp, egress, response, syn, seq, ports, family);
    }
    NEW_FOLLOWED
}

/// `skb_new_conn` for a socket seen from the middle of its stream whose segment (`seq` and
/// `how` as there) starts with a request's or a response's HTTP/2
/// HEADERS frame (`collector_common::http2::midstream_join`; one that does not tell which
/// does not decide the connection's role): follows it as HTTP/2 from there ([`skb_new_h2`]).
/// A global function, as `skb_new_h2`.
// SAFETY: unmangled (and exported) so that it stays a global function, verified once; the name
// is unique in the object.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn skb_join_h2(skb: *mut __sk_buff, how: u64, seq: u64) -> i64 {
    // The payload's offset and length, found again (fewer values kept across the call).
    let ip_len = (how >> 16) as u32 & 0xffff;
    let Some(doff) = load::<u8>(skb, ip_len + 12) else { return NEW_NONE };
    let payload = ip_len + (doff >> 4) as u32 * 4;
    // SAFETY: `skb` is the calling program's `__sk_buff` context, valid for its whole run;
    // reading `len` is a context load that the verifier checks and rewrites.
    let plen = unsafe { (*skb).len }.saturating_sub(payload);
    if plen < 16 {
        return NEW_NONE;
    }
    // Its first 16 bytes as two little-endian words (BPF is little-endian).
    let Some(b) = load::<[u64; 2]>(skb, payload) else { return NEW_NONE };
    match midstream_join(b[0], b[1], plen) {
        JOIN_REQUEST => skb_new_h2(skb, how, seq, 2),
        JOIN_RESPONSE => skb_new_h2(skb, how, seq, 3),
        _ => NEW_NONE,
    }
}

/// `skb_new_conn` for a socket whose segment (`seq`; `how` as there) starts HTTP/2 (`what`: bit
/// 0, it starts the responses' stream; bit 1, in the middle of the connection): creates and
/// takes its state. A global function of its own, so that its frame is not on the stack of
/// `skb_new_conn`'s other paths (5.10 allows 512 bytes for the deepest chain of calls).
// SAFETY: unmangled (and exported) so that it stays a global function, verified once; the name
// is unique in the object.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn skb_new_h2(skb: *mut __sk_buff, how: u64, seq: u64, what: u64) -> i64 {
    let (egress, family, ip_len) = (how & 1 != 0, (how >> 8) as u8, (how >> 16) as u32 & 0xffff);
    let (seq, response, joined) = (seq as u32, what & 1 != 0, what & 2 != 0);
    let Some(sk) = socket_of(skb) else { return NEW_NONE };
    let Some(tcp) = load::<[u8; 14]>(skb, ip_len) else { return NEW_NONE };
    let syn = tcp[13] & TCP_SYN != 0;
    let ports = u32::from_be_bytes([tcp[0], tcp[1], tcp[2], tcp[3]]);
    let Some(tp) = tcp_sock(sk) else { return NEW_NONE };
    // A server's first SETTINGS and the client's preface can reach the hooks on two CPUs at
    // once, and the kernel fails the second of two creations of a socket's storage: what the
    // other CPU created is taken then.
    let Some(conn) = http2::conn_of(sk, true).or_else(|| http2::conn_of(sk, false)) else {
        drops::count(drop::HTTP_CONN_STORAGE);
        return NEW_NONE;
    };
    if !wait(|| http2::h2_claim(skb) != 0) {
        return NEW_NONE;
    }
    if conn.id.role == 0 {
        segment::start(conn, skb, sk, tp, egress, response, syn, seq, ports, family);
        if joined {
            conn.p.join(!response, seq);
        }
    }
    NEW_HTTP2
}

#[inline(always)]
fn handle(ctx: &SkBuffContext, egress: bool) {
    if bench_stop(1) {
        return;
    }
    if network::counted_by_http() {
        network::count(ctx, egress);
    }
    let skb = skb_of(ctx);
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
    if !armed() {
        return;
    }
    // A SYN's data (TCP Fast Open) starts one past its sequence number, which the SYN takes.
    let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]).wrapping_add((flags & TCP_SYN != 0) as u32);
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
    // SAFETY: `sk` is a full socket (checked non-null above); `state` is a field the verifier
    // lets cgroup_skb programs read (it rewrites the load).
    if unsafe { (*sk).state } == BPF_TCP_LISTEN {
        // A segment of a connection whose socket does not exist yet (see `capture::backlog`).
        if !egress && plen > 0 {
            let how = family as u64 | (u32::from_be_bytes([tcp[0], tcp[1], tcp[2], tcp[3]]) as u64) << 32;
            backlog::backlog_keep(skb, seq as u64, payload as u64, plen as u64, how);
        }
        return;
    }
    // A connection's state is created before the program creating it takes it (`skb_new_conn`):
    // one found not set up yet (no role) is given back, and this segment goes the way of a new
    // connection's, which sets it up (or waits for the creator to).
    let found = match http1::conn_of(sk, false) {
        Some(c) => {
            // One round here (the common case: nobody else holds it); when the holder runs on
            // this CPU, suspended under this program, the segment is left to it; the waiting
            // loop, in a global function of its own (called again while the wait lasts, see
            // `conn::wait`), only when another CPU holds it.
            if !try_claim(c) {
                if held_here(c) {
                    // SAFETY: `bpf_ktime_get_ns` takes no argument and touches no memory of the
                    // program.
                    let now = unsafe { bpf_ktime_get_ns() };
                    if !segment::defer::<_, Http1>(c, skb, egress, seq, plen, payload, flags, now) {
                        drops::count(drop::HTTP_BUSY);
                    }
                    return;
                }
                if !wait(|| http1::http_claim(skb) != 0) {
                    return;
                }
            }
            if c.id.role == 0 {
                release(c);
                None
            } else {
                Some(c)
            }
        }
        None => None,
    };
    let how = egress as u64 | (family as u64) << 8 | (ip_len as u64) << 16;
    let conn = match found {
        Some(c) => c,
        None if plen > 0 => {
            // A socket marked not followed costs this lookup and no more.
            let mark = sk_storage::<u8>(not_followed(), sk, false);
            if !mark.is_null() {
                // SAFETY: read only when non-null (checked first): this socket's one-byte mark,
                // valid until the program returns; any byte is a valid u8.
                let m = unsafe { *mark };
                if m >= MIDSTREAM_TRIES {
                    if m == MARK_TLS_SERVER && !egress {
                        let ports = u32::from_be_bytes([tcp[0], tcp[1], tcp[2], tcp[3]]);
                        arrivals::tls_arrived(skb, ports as u64, family as u64);
                    }
                    return;
                }
            }
            if let Some(c) = http2::conn_of(sk, false) {
                follow_h2(c, skb, sk, how, seq, plen, payload, flags);
                return;
            }
            let r = skb_new_conn(skb, how, seq as u64, payload as u64 | (plen as u64) << 32);
            if r == NEW_NONE {
                return;
            }
            if r == NEW_HTTP2 {
                if let Some(c) = http2::conn_of(sk, false) {
                    let now = now_ns();
                    segment::follow::<_, Http2>(c, http2::conns(), skb, sk, egress, seq, plen, payload, flags, now);
                }
                return;
            }
            let Some(c) = http1::conn_of(sk, false) else { return };
            if r == NEW_ADOPTED {
                // The request, from the stash, with its arrival time (ingress: the requests'
                // direction of a server).
                <http1::Http1 as segment::Globals>::parse(segment::body(c), skb, 0);
            }
            c
        }
        None => {
            // A FIN or RST of an HTTP/2 connection.
            if let Some(c) = http2::conn_of(sk, false) {
                follow_h2(c, skb, sk, how, seq, plen, payload, flags);
            }
            return;
        }
    };
    if bench_stop(3) {
        release(conn);
        return;
    }
    // SAFETY: `bpf_ktime_get_ns` takes no argument and touches no memory of the program.
    let now = unsafe { bpf_ktime_get_ns() };
    if test_defer() && segment::defer::<_, Http1>(conn, skb, egress, seq, plen, payload, flags, now) {
        // Tests only: left for the holder, which this program is too (see `HTTP_TEST_DEFER`);
        // its FIN or RST too.
        let flags = flags & !(TCP_FIN | TCP_RST);
        segment::follow::<_, Http1>(conn, http1::conns(), skb, sk, egress, seq, 0, payload, flags, now);
        return;
    }
    segment::follow::<_, Http1>(conn, http1::conns(), skb, sk, egress, seq, plen, payload, flags, now);
    // A 101 ended HTTP/1 on the connection: HTTP/2 may follow (`Upgrade: h2c`). A plain read
    // of the state, which the global function checks again once it holds the connection.
    if conn.p.upgrading()
        && http2::h2_upgrade(skb, egress as u64, seq as u64, payload as u64 | (plen as u64) << 32) != 0
        && let Some(c) = http2::conn_of(sk, false)
    {
        // Taken by `h2_upgrade`: the rest of the segment, as HTTP/2.
        segment::follow::<_, Http2>(c, http2::conns(), skb, sk, egress, seq, plen, payload, flags, now_ns());
    }
}

/// The current time.
#[inline(always)]
fn now_ns() -> u64 {
    // SAFETY: `bpf_ktime_get_ns` takes no argument and touches no memory of the program.
    unsafe { bpf_ktime_get_ns() }
}

/// A segment of an HTTP/2 connection: taken as an HTTP/1 one is (left to the holder when it
/// runs on this CPU under this program, else waited for), then followed; one not set up yet
/// (see `handle`) goes the way of a new connection's. `how` as `skb_new_conn`'s.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn follow_h2(
    c: &mut Conn<H2>,
    skb: *mut __sk_buff,
    sk: *mut bpf_sock,
    how: u64,
    seq: u32,
    plen: u32,
    payload: u32,
    flags: u8,
) {
    let egress = how & 1 != 0;
    if !try_claim(c) {
        if held_here(c) {
            if !segment::defer::<_, Http2>(c, skb, egress, seq, plen, payload, flags, now_ns()) {
                drops::count(drop::HTTP_BUSY);
            }
            return;
        }
        if !wait(|| http2::h2_claim(skb) != 0) {
            return;
        }
    }
    if c.id.role == 0 {
        release(c);
        if plen == 0 {
            return;
        }
        let r = skb_new_conn(skb, how, seq as u64, payload as u64 | (plen as u64) << 32);
        if r != NEW_HTTP2 {
            // Taken for HTTP/1 (it did not start like HTTP/2): given back, not followed here.
            if r != NEW_NONE
                && let Some(h1) = http1::conn_of(sk, false)
            {
                release(h1);
            }
            return;
        }
    }
    segment::follow::<_, Http2>(c, http2::conns(), skb, sk, egress, seq, plen, payload, flags, now_ns());
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
/// process): records the process's name with the socket (its main thread's, see process.rs).
/// A listening socket's record is copied to the connections it accepts (`BPF_F_CLONE`), so a
/// server's connections are named after the process that listens, a client's after the
/// process that connects.
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
            // daemon sweeps stash blocks left behind). After `claim`, no other program changes
            // the value.
            if let Some(conn) = http1::conn_of(sk, false) {
                if claim(conn, 64) {
                    segment::closed::<_, Http1>(conn, http1::conns(), sk);
                }
            } else if let Some(conn) = http2::conn_of(sk, false)
                && claim(conn, 64)
            {
                segment::closed::<_, Http2>(conn, http2::conns(), sk);
            }
        }
        _ => {}
    }
    1
}
