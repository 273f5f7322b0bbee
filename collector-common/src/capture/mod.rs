//! The seam between the protocol-neutral capture and the protocols it follows.
//!
//! The kernel programs (`collector-ebpf/src/capture/`) take bytes from two sources: TCP
//! segments at the `cgroup_skb` hooks (in arrival order, with their stream positions: sequence
//! numbers) and TLS plaintext at the TLS library's calls (in order). They find the connection,
//! classify a new one once from its first bytes, do the positional bookkeeping that does not
//! depend on the protocol (the socket's in-order point, bytes kept in the reorder [`stash`]
//! while a needed one is missing), and hand the bytes to the connection's protocol through
//! [`Stream`]. The protocol reports what it finds to a [`Sink`]: requests started and
//! exchanges done, which the capture records (histograms, in-flight gauge); it never sees
//! where the bytes came from.
//!
//! A protocol is its pure framer (here, in its own module: `http` for HTTP/1.x), which
//! implements [`Stream`] and is driven by the host tests and a fuzz target as the kernel
//! drives it, plus its kernel glue (`collector-ebpf/src/<protocol>.rs`: its connection
//! storage and the capture's generic drivers instantiated for it) and one entry in the
//! dispatch of the programs (docs/metrics.md, "Adding a protocol").

pub mod stash;

/// Bytes of the window a step parses from (32 words: a typical HTTP/1 response head, status
/// line and headers, takes two or three steps; with 16 it took four or five).
pub const WINDOW_WORDS: usize = 32;
pub const WINDOW: u32 = (WINDOW_WORDS * 8) as u32;

/// Whether stream position `a` is after `b` (positions wrap at 2^32; streams never hold more
/// than 2^31 bytes between two positions compared).
#[inline(always)]
pub fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// The bytes of one direction a protocol's step parses: the capture loads them (from the
/// packet, the reorder stash or the TLS library's buffer) where [`Stream::needs_window`] asks.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Window {
    /// Stream position of `buf[0]`'s first byte and the number of valid bytes.
    pub base: u32,
    pub len: u32,
    /// Stream bytes `[base, base + len)`, in memory order.
    pub buf: [u64; WINDOW_WORDS],
}

impl Window {
    pub const ZERO: Window = Window { base: 0, len: 0, buf: [0; WINDOW_WORDS] };
}

/// A request waiting for its response.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pending {
    /// When its first byte arrived (server) or left (client).
    pub start_ns: u64,
    /// Its body size (known once its last byte passed).
    pub req_bytes: u64,
    pub method: u8,
    /// Its protocol version (`http::VERSION_*`), 0 when unknown.
    pub version: u8,
    pub _pad: [u8; 6],
}

/// Where a protocol's events go: the kernel programs record them into maps, the tests into a
/// list.
pub trait Sink {
    /// A request started (its first byte was parsed); it now waits for its response.
    fn request_started(&mut self);
    /// The response to `req` ended at `now`: its status (0 when not a valid code) and body size.
    fn exchange_done(&mut self, req: &Pending, status: u16, resp_bytes: u64, now: u64);
    /// `n` waiting requests will get no response (connection reset or closed, bytes lost).
    fn abandoned(&mut self, n: u64);
    /// Something could not be followed; `reason` is a `collector_common::drop` index.
    fn dropped(&mut self, reason: u32);
    /// A protocol that leaves the exchanges to the daemon (HTTP/2, `crate::http2`) reports a
    /// frame, or a chunk of one's payload: its bytes are `f.n` of `w` from byte `f.at`.
    #[inline(always)]
    fn frame(&mut self, f: &crate::http2::Frame, w: &Window) {
        let _ = (f, w);
    }
}

/// A protocol's framer as the capture drives it: both byte streams of one connection followed
/// by their absolute positions (TCP sequence numbers, or plaintext offsets), bytes handed over
/// in any order, each direction parsed where it needs bytes and skipped by position where it
/// does not. `is_req` names a direction: the requests' stream (received on a server, sent on
/// a client) or the responses'.
///
/// Per piece of a stream `[seq, seq + len)` the capture calls [`Stream::arrive`]; when it says
/// to parse, [`Stream::step`] until it is done, loading [`Stream::window`] where
/// [`Stream::needs_window`] asks; then [`Stream::settle`], and [`Stream::fin`] at a stream's
/// end. Bytes that arrive beyond a position the protocol [`Stream::needs_bytes`] at are kept
/// in the stash and handed over once the gap is filled.
pub trait Stream {
    /// Starts following a connection: `received` is the direction the socket receives (its
    /// bytes reach the application in order, after any gap is filled); direction `is_req`
    /// starts at `seq` (its first byte, or a message start), the other at `other` when known.
    fn start(&mut self, received: bool, is_req: bool, seq: u32, other: Option<u32>);
    /// Positional bookkeeping for `[seq, seq + len)` of a direction; `frontier`: up to where
    /// the socket has taken that stream in order (for a stream the host sends, `seq`). Whether
    /// to parse it (from [`Stream::position`], which then lies inside it).
    fn arrive<S: Sink>(&mut self, is_req: bool, seq: u32, len: u32, frontier: u32, now: u64, sink: &mut S) -> bool;
    /// Every byte of the received direction before `upto` has reached the socket in order (its
    /// in-order point moved, maybe without a segment of that direction passing): what ends
    /// before it has ended, and a response that waited for a gap before it is recorded.
    fn received_upto<S: Sink>(&mut self, received: bool, upto: u32, now: u64, sink: &mut S);
    /// The bytes the next step of a direction needs loaded, `(position, length)`, up to
    /// `seg_end`, when the window does not hold them.
    fn needs_window(&self, is_req: bool, seg_end: u32) -> Option<(u32, u32)>;
    /// The window of a direction, to load.
    fn window(&mut self, is_req: bool) -> &mut Window;
    /// One parse step of a direction within bytes that end at `seg_end`; true when nothing
    /// more of them is to be parsed.
    fn step<S: Sink>(&mut self, is_req: bool, seg_end: u32, now: u64, sink: &mut S) -> bool;
    /// After a piece of a direction: what is known of bytes that arrived before it.
    fn settle<S: Sink>(&mut self, is_req: bool, now: u64, sink: &mut S);
    /// The stream of a direction ends at `fin` (one past its last byte).
    fn fin<S: Sink>(&mut self, is_req: bool, fin: u32, now: u64, sink: &mut S);
    /// The connection is reset or gone: what waits is given up.
    fn abandon_all<S: Sink>(&mut self, sink: &mut S);
    /// Both streams have ended: the connection's state can go (after [`Stream::flush`]).
    fn ended(&self) -> bool;
    /// The connection ends: what waited for the received stream's in-order point is recorded
    /// at the last time it moved.
    fn flush<S: Sink>(&mut self, sink: &mut S);
    /// The position of a direction: the next byte it needs or skips.
    fn position(&self, is_req: bool) -> u32;
    /// Whether the direction needs the bytes at its position (not only their count).
    fn needs_bytes(&self, is_req: bool) -> bool;
    /// Whether the direction takes bytes at its position at all (needs or skips them).
    fn takes_bytes(&self, is_req: bool) -> bool;
    /// Whether the direction stopped following its stream (lost its place, or nothing more to
    /// follow): bytes kept for it are of no use.
    fn stopped(&self, is_req: bool) -> bool;
    /// Whether the direction lost its place and waits for bytes that start a message (which
    /// [`Stream::step`] looks for).
    fn resyncs(&self, is_req: bool) -> bool;
    /// Where the capture does not switch protocols (TLS plaintext: `Upgrade: h2c` is cleartext
    /// only), a protocol that switched (HTTP/1's 101) learns that what follows is not followed
    /// (at `now`). Nothing by default.
    #[inline(always)]
    fn not_switched<S: Sink>(&mut self, now: u64, sink: &mut S) {
        let _ = (now, sink);
    }
}
