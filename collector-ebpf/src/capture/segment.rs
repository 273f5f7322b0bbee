//! The packet driver: TCP segments from the `cgroup_skb` hooks, in arrival order, handed to a
//! connection's protocol by stream position. What it does for every protocol:
//! - sets up a new connection (its `Ident`, the protocol's starting positions);
//! - keeps the segment's place (`Conn::seg`), or a run of stashed bytes, for the parse steps;
//! - loads the bytes a step asks for from the packet or the reorder stash;
//! - the positional bookkeeping before a segment (the socket's in-order point on its received
//!   stream, from `bpf_tcp_sock`) and after it (settling, the FIN, stash blocks no longer
//!   needed, the state deleted once both streams ended);
//! - records what the protocol reports (`Recorder`, through the protocol's record function).
//!
//! A program may pass global functions only its context and scalars on every kernel from 5.10,
//! so each protocol instantiates the functions here as global functions of its own, which find
//! the connection again through the packet's socket, and the programs call those
//! ([`Globals`]). From 5.12 a global function may also take a pointer to memory of a known
//! size: the object built for those kernels (feature `kernel-5-12`) hands the protocols'
//! functions the connection's `Body` instead, which saves a socket lookup in each call.
use core::ffi::c_void;

use aya_ebpf::{
    bindings::{__sk_buff, bpf_sock, bpf_tcp_sock},
    helpers::generated::{bpf_get_socket_cookie, bpf_skb_cgroup_id, bpf_skb_load_bytes},
};
use collector_common::{
    capture::{Pending, Sink, Stream, WINDOW, Window, after},
    drop,
    http2::Frame,
};

use super::{
    backlog::Embryo,
    conn::{Body, Conn, DEFER_BYTES, DEFER_FIN, DEFER_RST, Ident, Owner, ROLE_CLIENT, ROLE_SERVER, SRC_STASH, Seg, di,
           owners, release, sk_storage, sk_storage_delete},
    packet::{TCP_FIN, TCP_RST, peer_addr, tcp_sock},
    record::active_add,
    stash,
};
use crate::drops;

/// Parse steps per segment. A step consumes a whole start line and up to 8 header lines, or
/// everything up to a body's end, or one byte of a line cut by the end of the segment; a
/// segment that needs more (a 64 KiB GRO segment of small pipelined requests) is followed up
/// to here and its connection's direction re-synchronises on a later message.
pub const MAX_STEPS: u32 = 512;

/// A protocol's global functions over its TCP connections (http1.rs, http2.rs): each runs the
/// function of this file of the same name on the connection, which it finds again through the
/// packet's socket, or (`parse`, `arrive`, `finish`, `step` in the build for 5.12 and later)
/// takes by pointer.
///
/// `b` is the connection's [`Body`] (the caller holds the connection), as an untyped pointer:
/// the functions that take it by pointer cast it back to their protocol's; the others find the
/// connection again and ignore it.
pub trait Globals {
    /// Runs up to `MAX_STEPS` parse steps ([`parse`]), `how` as there.
    fn parse(b: *mut c_void, skb: *mut __sk_buff, how: u64) -> i64;
    /// The positional bookkeeping of the current segment ([`arrive`]).
    fn arrive(b: *mut c_void, skb: *mut __sk_buff, egress: u64) -> i64;
    /// Keeps the current segment in the stash from block `first` on ([`keep_all`]).
    fn keep_all(skb: *mut __sk_buff, egress: u64, first: u64) -> i64;
    /// After the current segment ([`finish`]).
    fn finish(b: *mut c_void, skb: *mut __sk_buff, how: u64) -> i64;
    /// One parse step ([`step`]).
    fn step(b: *mut c_void, skb: *mut __sk_buff, egress: u64) -> i64;
    /// Points a direction at its stashed bytes ([`stash::run`]).
    fn stash_run(skb: *mut __sk_buff, egress: u64) -> i64;
    /// Keeps the current segment's part in one stash block ([`stash::keep`]).
    fn keep(skb: *mut __sk_buff, egress: u64, index: u64) -> i64;
    /// Records one exchange of the connection `id` ([`record`]).
    fn record(id: &Ident, skb: *mut __sk_buff, what: u64, dur: u64, req_bytes: u64, resp_bytes: u64) -> i64;
    /// Hands a frame of the connection `id` to the daemon (a protocol that reports frames,
    /// `Sink::frame`); nothing by default.
    #[inline(always)]
    fn frame(id: &Ident, f: &Frame, w: &Window) {
        let _ = (id, f, w);
    }
}

/// Records a protocol's events for one connection.
pub struct Recorder<'a, G> {
    pub id: &'a Ident,
    /// The packet being handled (null in the close hook, which records no exchange).
    pub skb: *mut __sk_buff,
    pub egress: bool,
    pub g: core::marker::PhantomData<G>,
}

impl<'a, G> Recorder<'a, G> {
    #[inline(always)]
    pub fn new(id: &'a Ident, skb: *mut __sk_buff, egress: bool) -> Self {
        Self { id, skb, egress, g: core::marker::PhantomData }
    }
}

impl<G: Globals> Sink for Recorder<'_, G> {
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
        let what = self.egress as u64 | (p.method as u64) << 8 | (status as u64) << 16 | (p.version as u64) << 32;
        G::record(self.id, self.skb, what, now.saturating_sub(p.start_ns), p.req_bytes, resp_bytes);
    }

    #[inline(always)]
    fn frame(&mut self, f: &Frame, w: &Window) {
        G::frame(self.id, f, w);
    }
}

/// Sets up a new connection of the socket `sk` whose first followed segment (`seq`, of
/// direction `egress`) starts a request (`response` false) or a response: its role, the
/// protocol's starting positions, and its `Ident`. `tp`: the socket's TCP state; `syn`: the
/// segment is a SYN with data (TCP Fast Open), whose peer's stream has no start yet; `ports`:
/// the TCP header's first four bytes.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn start<P: Stream>(
    conn: &mut Conn<P>,
    skb: *mut __sk_buff,
    sk: *mut bpf_sock,
    tp: &bpf_tcp_sock,
    egress: bool,
    response: bool,
    syn: bool,
    seq: u32,
    ports: u32,
    family: u8,
) {
    // Where the other direction starts, when nothing has passed on it yet (so that its first
    // segment is followed even when it arrives out of order); else it is picked up at its first
    // segment that starts a message.
    // (Both values always set: the verifier of 5.10 refuses reading a stack slot that one path
    // left unwritten, which an `Option` can become.)
    let (other_fresh, other_start) = if egress {
        (tp.bytes_received == 0 && !syn, tp.rcv_nxt)
    } else {
        (tp.snd_nxt == tp.snd_una && tp.bytes_acked <= 1, tp.snd_nxt)
    };
    let role = if egress != response { ROLE_CLIENT } else { ROLE_SERVER };
    let is_req = (role == ROLE_SERVER) != egress;
    // The received stream: requests on a server, responses on a client.
    conn.p.start(role == ROLE_SERVER, is_req, seq, if other_fresh { Some(other_start) } else { None });
    identify(&mut conn.id, skb, sk, egress, role, ports, family);
    // SAFETY: `skb` is this program's context, the argument the helper takes; the helper only
    // reads the socket's cookie (assigning it atomically on first use).
    conn.id.cookie = unsafe { bpf_get_socket_cookie(skb as *mut c_void) };
}

/// Sets up the connection of a server socket whose request's first bytes arrived before the
/// socket existed (`capture::backlog`): they are in the stash under the embryo's key, to be
/// parsed with their arrival time; the current segment (`seq`, direction `egress`) is the
/// socket's first with payload, the response's start when it leaves.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn start_embryo<P: Stream>(
    conn: &mut Conn<P>,
    e: &Embryo,
    skb: *mut __sk_buff,
    sk: *mut bpf_sock,
    tp: &bpf_tcp_sock,
    egress: bool,
    seq: u32,
    ports: u32,
    family: u8,
) {
    let (other_fresh, other_start) =
        if egress { (true, seq) } else { (tp.snd_nxt == tp.snd_una && tp.bytes_acked <= 1, tp.snd_nxt) };
    conn.p.start(true, true, e.first, if other_fresh { Some(other_start) } else { None });
    identify(&mut conn.id, skb, sk, egress, ROLE_SERVER, ports, family);
    conn.id.cookie = e.cookie;
    conn.held[di(true)] = e.held;
    conn.seg[di(true)] = Seg { seq: e.first, end: e.first, payload: 0, src: SRC_STASH, now: e.arrival };
}

/// Sets a new connection's `Ident` (but its cookie): its role, cgroup, ports (`ports`: the TCP
/// header's first four bytes, big-endian), peer address and the process that created its
/// socket.
#[inline(always)]
fn identify(id: &mut Ident, skb: *mut __sk_buff, sk: *mut bpf_sock, egress: bool, role: u8, ports: u32, family: u8) {
    id.role = role;
    // SAFETY: `skb` is this program's `__sk_buff` context, valid for the whole run and the
    // argument the helper takes; the helper only reads the cgroup of the packet's socket.
    id.cgroup_id = unsafe { bpf_skb_cgroup_id(skb) };
    let (sport, dport) = ((ports >> 16) as u16, ports as u16);
    // Local and peer as seen by this socket.
    let (local, peer) = if egress { (sport, dport) } else { (dport, sport) };
    id.local_port = local;
    id.peer_port = peer;
    id.family = family;
    peer_addr(skb, family, egress, &mut id.addr);
    // SAFETY: `sk_storage` returns null (None) or this socket's `Owner` (16 bytes, any value
    // valid), valid until the program returns. It is written only when the socket is created
    // (`http_sock_create`, or the kernel copying a listener's), before any segment, so a
    // shared reference is not overlapped by a write.
    if let Some(o) = unsafe { sk_storage::<Owner>(owners(), sk, false).as_ref() } {
        id.comm = o.comm;
    }
}

/// What [`arrive`] tells the program to do with the segment's payload.
pub const ARRIVE_NONE: i64 = 0;
pub const ARRIVE_PARSE: i64 = 1;
pub const ARRIVE_KEEP: i64 = 2;

/// `parse` flag: parse the packet first (else only what the stash holds).
pub const PARSE_PACKET: u64 = 2;

/// `finish` flag: the segment carries a FIN.
pub const FINISH_FIN: u64 = 2;
/// `finish` flag: a reset was left by a nested program (`defer`): the connection is closed.
pub const FINISH_RST: u64 = 4;

/// [`step`]: the segment needs no more steps and the direction holds nothing in the stash (so
/// [`parse`] need not look there).
pub const STEP_LAST: i64 = 2;

/// Follows one segment of a connection the program holds (claimed): `seq` and `plen` its place
/// in its stream and length, `payload` the offset of its first payload byte, `flags` the TCP
/// flags. Gives the connection back (or deletes it).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn follow<P: Stream, G: Globals>(
    conn: &mut Conn<P>,
    map: *const c_void,
    skb: *mut __sk_buff,
    sk: *mut bpf_sock,
    egress: bool,
    seq: u32,
    plen: u32,
    payload: u32,
    flags: u8,
    now: u64,
) {
    // A reset: the waiting requests are given up, and the connection's stash blocks and state
    // deleted.
    if flags & TCP_RST != 0 {
        closed::<P, G>(conn, map, sk);
        return;
    }
    // What a program nesting on the holder's CPU left (see `defer`), before this segment.
    if follow_deferred::<P, G>(conn, skb) {
        return;
    }
    // Requests flow in on servers and out on clients.
    let is_req = (conn.id.role == ROLE_SERVER) != egress;
    let packet = Seg { seq, end: seq.wrapping_add(plen), payload, src: super::conn::SRC_PACKET, now };
    conn.seg[di(is_req)] = packet;
    let eg = egress as u64;
    if plen > 0 {
        // What the stash holds from the position on (its missing bytes came in an earlier
        // segment, or the position moved since).
        if conn.held[di(is_req)].lo != conn.held[di(is_req)].hi {
            G::parse(body(conn), skb, eg);
            conn.seg[di(is_req)] = packet;
        }
        match G::arrive(body(conn), skb, eg) {
            ARRIVE_PARSE => {
                G::parse(body(conn), skb, eg | PARSE_PACKET);
            }
            ARRIVE_KEEP => {
                // Beyond a missing byte the protocol needs: kept for when it arrives.
                let pos = conn.p.position(is_req);
                let from = if after(pos, seq) { pos } else { seq };
                G::keep_all(skb, eg, collector_common::capture::stash::index_of(from) as u64);
            }
            _ => {}
        }
    }
    // The connection's state is deleted once both streams have ended (then nothing is left to
    // give back).
    if G::finish(body(conn), skb, eg | if flags & TCP_FIN != 0 { FINISH_FIN } else { 0 }) == 0
        && !follow_deferred::<P, G>(conn, skb)
    {
        release(conn);
    }
}

/// Keeps a segment of direction `egress` that reached the hooks while the program holding its
/// connection runs on this CPU (`conn::held_here`): this one interrupted it (a softirq's
/// ingress run nesting in a process-context egress run of the same socket) and cannot wait
/// for it. The segment's bytes go to the stash, its place and time to the direction's `seg`,
/// and the direction is marked (`deferred`), with its FIN or RST if it carries one: the holder
/// follows them before it lets go (or the next program that takes the connection does, when
/// this came after the holder's last look), with that time. The holder changes only its own
/// direction meanwhile, so only a received segment (ingress: the interrupted holder sends) is
/// kept; false otherwise (the segment is then not followed, counted as `http_busy`). A sent
/// one cannot nest: the kernel sends a socket's segments from a softirq only when no process
/// holds the socket (timers, TCP small queues and the backlog leave the work to the owner's
/// `release_sock` otherwise), and pure ACKs take no connection anyway.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn defer<P: Stream, G: Globals>(
    conn: &mut Conn<P>,
    skb: *mut __sk_buff,
    egress: bool,
    seq: u32,
    plen: u32,
    payload: u32,
    flags: u8,
    now: u64,
) -> bool {
    if egress || (plen == 0 && flags & (TCP_FIN | TCP_RST) == 0) {
        return false;
    }
    let is_req = conn.id.role == ROLE_SERVER;
    let d = di(is_req);
    // The mark is changed by a plain read and store: the holder, suspended under this
    // program, does not run meanwhile, and programs that nest do not nest in each other.
    if flags & TCP_RST != 0 {
        // The connection is closed once what was left before it has been followed.
        conn.deferred |= DEFER_RST;
        return true;
    }
    let end = seq.wrapping_add(plen);
    // The segments left so far, as one range (they continue each other, or the bookkeeping
    // will find the gap) and one time: a request's start (a server's received stream) is its
    // first segment's, a response's end (a client's) its last segment's, or its FIN's.
    let (lo, hi, when) = if conn.deferred & (DEFER_BYTES | DEFER_FIN) != 0 {
        let old = conn.seg[d];
        let lo = if after(old.seq, seq) { seq } else { old.seq };
        let hi = if after(end, old.end) { end } else { old.end };
        (lo, hi, if is_req { old.now } else { now })
    } else {
        (seq, end, now)
    };
    if plen > 0 {
        // This segment's bytes to the stash (`keep` copies the direction's current segment).
        conn.seg[d] = Seg { seq, end, payload, src: super::conn::SRC_PACKET, now };
        let pos = conn.p.position(is_req);
        let from = if after(pos, seq) { pos } else { seq };
        G::keep_all(skb, 0, collector_common::capture::stash::index_of(from) as u64);
        conn.deferred |= DEFER_BYTES;
    }
    conn.seg[d] = Seg { seq: lo, end: hi, payload, src: super::conn::SRC_PACKET, now: when };
    if flags & TCP_FIN != 0 {
        conn.deferred = (conn.deferred & 0xffff_ffff) | DEFER_FIN | (end as u64) << 32;
    }
    true
}

/// Follows what programs that nested on the holder's CPU left (see `defer`; nothing in the
/// common case: a plain read): the positional bookkeeping of their range and the parse of
/// their bytes from the stash, with the time they noted, then their FIN, then a reset, which
/// closes the connection. The received direction is ingress, whatever the role. True when the
/// connection's state was deleted (both streams ended, or a reset): the caller must not touch
/// it again. Inline, with the protocol's global functions: a global function of its own would
/// take one more frame on the chains of calls below it than the verifier allows.
#[inline(always)]
fn follow_deferred<P, G: Globals>(conn: &mut Conn<P>, skb: *mut __sk_buff) -> bool {
    let left = conn.deferred;
    if left == 0 {
        return false;
    }
    // Taken off by an atomic add of its negation, not a store of 0: a program that nests
    // between the read and this instruction adds to the mark (a bit this one did not have, a
    // FIN's position where it had none), and that stays for the next look; what it merges
    // into the range in `seg` is read below.
    crate::atomic::add(&raw mut conn.deferred, left.wrapping_neg());
    if left & DEFER_BYTES != 0 && G::arrive(body(conn), skb, 0) != ARRIVE_NONE {
        G::parse(body(conn), skb, 0);
    }
    if left & DEFER_FIN != 0 {
        // At the FIN's place (the parse may have pointed `seg` at runs of stashed bytes; their
        // time is the one left).
        let (fin, d) = ((left >> 32) as u32, di(conn.id.role == ROLE_SERVER));
        let s = &mut conn.seg[d];
        (s.seq, s.end) = (fin, fin);
        if G::finish(body(conn), skb, FINISH_FIN) != 0 {
            return true;
        }
    }
    left & DEFER_RST != 0 && G::finish(body(conn), skb, FINISH_RST) != 0
}

/// One parse step of the current segment of direction `egress`: loads the bytes the protocol
/// needs into its window and runs one step. Nonzero when the segment needs no more steps
/// (`STEP_LAST` when the stash holds nothing for the direction either).
#[inline(always)]
pub fn step<P: Stream, G: Globals>(conn: &mut Body<P>, skb: *mut __sk_buff, egress: bool) -> i64 {
    let is_req = (conn.id.role == ROLE_SERVER) != egress;
    let (src, seq, end, payload, now) = {
        let s = &conn.seg[di(is_req)];
        (s.src, s.seq, s.end, s.payload, s.now)
    };
    if src == SRC_STASH {
        if let Some((p, _)) = conn.p.needs_window(is_req, end)
            && !stash::fill_window(conn, is_req, p, end)
        {
            return 1;
        }
    } else if let Some((p, n)) = conn.p.needs_window(is_req, end) {
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
        let w = conn.p.window(is_req);
        // SAFETY: `skb` is the program's context; the destination is the direction's window,
        // WINDOW bytes inside this socket's connection value, and 1 <= len <= WINDOW, so the
        // helper writes within it; it checks `off` and `len` against the packet and fails rather
        // than read past it.
        let r = unsafe { bpf_skb_load_bytes(skb as *const c_void, off, w.buf.as_mut_ptr() as *mut c_void, len as u32) };
        if r != 0 {
            return 1;
        }
        w.base = p;
        w.len = n;
    }
    let mut rec = Recorder::<G>::new(&conn.id, skb, egress);
    if !conn.p.step(is_req, end, now, &mut rec) {
        return 0;
    }
    let held = conn.held[di(is_req)];
    if held.lo == held.hi { STEP_LAST } else { 1 }
}

/// The connection's [`Body`] as the global functions take it (see [`Globals`]).
#[inline(always)]
pub fn body<P>(conn: &mut Conn<P>) -> *mut c_void {
    (&raw mut conn.b).cast()
}

/// The connection a caller handed a protocol's global function (kernels from 5.12): the `Body`
/// of the connection it holds.
#[cfg(feature = "kernel-5-12")]
#[inline(always)]
pub fn handed<P>(b: *mut Body<P>) -> Option<&'static mut Body<P>> {
    // SAFETY: the verifier checks a global function's pointer argument at every call: memory of
    // at least `Body<P>`'s size, or null (checked here). Every caller passes [`body`] of the
    // connection it holds (claimed), in its socket's storage, valid until the program returns;
    // no other program changes it meanwhile, and the caller does not use its own reference while
    // the call runs (see `http1::conn_of`).
    unsafe { b.as_mut() }
}

/// Calls a protocol's global function `$f` with the connection `$b` ([`body`]) where the build
/// hands it over (feature `kernel-5-12`), without it before (the function finds it again).
macro_rules! with_conn {
    ($f:ident($skb:expr, $b:expr, $a:expr)) => {{
        #[cfg(feature = "kernel-5-12")]
        return $f($skb, $b.cast(), $a);
        #[cfg(not(feature = "kernel-5-12"))]
        return {
            let _ = $b;
            $f($skb, $a)
        };
    }};
}
pub(crate) use with_conn;

/// Runs up to `MAX_STEPS` parse steps of the direction `how & 1`: of the packet when
/// `how & PARSE_PACKET`, then of whatever the stash holds from the position on. `b`: the
/// connection's body, for the steps (see [`Globals`]).
#[inline(always)]
pub fn parse<G: Globals>(b: *mut c_void, skb: *mut __sk_buff, how: u64) -> i64 {
    let egress = how & 1;
    let mut run = how & PARSE_PACKET == 0;
    let mut i = 0;
    while i < MAX_STEPS {
        if run && G::stash_run(skb, egress) != 0 {
            return 0;
        }
        let r = G::step(b, skb, egress);
        if r == STEP_LAST {
            return 0;
        }
        run = r != 0;
        i += 1;
    }
    0
}

/// Keeps the current segment of direction `egress`, from stash block `first` on (up to 64
/// blocks: a 64 KiB segment).
#[inline(always)]
pub fn keep_all<G: Globals>(skb: *mut __sk_buff, egress: u64, first: u64) -> i64 {
    let mut k = 0u64;
    while k < 64 {
        if G::keep(skb, egress, (first as u32).wrapping_add(k as u32) as u64) != 0 {
            return 0;
        }
        k += 1;
    }
    0
}

/// The positional bookkeeping for the current segment of direction `egress` (in `Conn::seg`):
/// what the socket has taken in order on its received stream (what ends before it has ended,
/// a response waiting for a gap may be recorded), then the protocol's `arrive`. Returns
/// `ARRIVE_PARSE` when its bytes are to be parsed, `ARRIVE_KEEP` when they lie beyond a byte
/// the protocol needs and still waits for.
#[inline(always)]
pub fn arrive<P: Stream, G: Globals>(conn: &mut Body<P>, sk: *mut bpf_sock, skb: *mut __sk_buff, egress: bool) -> i64 {
    let is_req = (conn.id.role == ROLE_SERVER) != egress;
    let seg = conn.seg[di(is_req)];
    let rcv_nxt = tcp_sock(sk).map(|tp| tp.rcv_nxt);
    let mut rec = Recorder::<G>::new(&conn.id, skb, egress);
    // The stream this socket receives (requests on a server, responses on a client): its bytes
    // before the socket's in-order point have all arrived, whichever segments passed here, so
    // a body that ends before it has ended (before a response to it is parsed, and even when
    // some of its segments passed before the connection was followed), and a response that
    // waited for a gap before it is recorded.
    let received = conn.id.role == ROLE_SERVER;
    if let Some(r) = rcv_nxt {
        conn.p.received_upto(received, r, seg.now, &mut rec);
    }
    let len = seg.end.wrapping_sub(seg.seq);
    if len == 0 {
        return ARRIVE_NONE;
    }
    // Up to where the socket has taken this stream in order: everything before a segment it
    // sends; for a received one, its next expected byte.
    let frontier = if egress { seg.seq } else { rcv_nxt.unwrap_or(seg.seq) };
    if conn.p.arrive(is_req, seg.seq, len, frontier, seg.now, &mut rec) {
        return ARRIVE_PARSE;
    }
    if conn.p.needs_bytes(is_req) && after(seg.seq, conn.p.position(is_req)) { ARRIVE_KEEP } else { ARRIVE_NONE }
}

/// After the current segment of direction `how & 1` was parsed: what is known of bytes that
/// arrived before, the FIN when `how & FINISH_FIN`, stash blocks no longer needed, and the
/// connection's state (in `map`) once both streams have ended: 1 when it was deleted.
#[inline(always)]
pub fn finish<P: Stream, G: Globals>(
    conn: &mut Body<P>,
    map: *const c_void,
    sk: *mut bpf_sock,
    skb: *mut __sk_buff,
    how: u64,
) -> i64 {
    if how & FINISH_RST != 0 {
        closed::<P, G>(conn, map, sk);
        return 1;
    }
    let egress = how & 1 != 0;
    let is_req = (conn.id.role == ROLE_SERVER) != egress;
    let seg = conn.seg[di(is_req)];
    let mut rec = Recorder::<G>::new(&conn.id, skb, egress);
    conn.p.settle(is_req, seg.now, &mut rec);
    if how & FINISH_FIN != 0 {
        conn.p.fin(is_req, seg.end, seg.now, &mut rec);
    }
    let all = conn.p.stopped(is_req);
    stash::forget(conn, is_req, all);
    if conn.p.ended() {
        let mut rec = Recorder::<G>::new(&conn.id, skb, egress);
        conn.p.flush(&mut rec);
        stash::forget(conn, true, true);
        stash::forget(conn, false, true);
        sk_storage_delete(map, sk);
        return 1;
    }
    0
}

/// A socket reaching TCP_CLOSE with the connection taken (the close hook): what waits is given
/// up, and the stash blocks and the state (in `map`) deleted.
#[inline(always)]
pub fn closed<P: Stream, G: Globals>(conn: &mut Body<P>, map: *const c_void, sk: *mut bpf_sock) {
    let mut rec = Recorder::<G>::new(&conn.id, core::ptr::null_mut(), false);
    conn.p.abandon_all(&mut rec);
    stash::forget(conn, true, true);
    stash::forget(conn, false, true);
    sk_storage_delete(map, sk);
}
