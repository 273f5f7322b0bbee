//! The HTTP/1.x framer: follows both byte streams of one TCP connection by their absolute
//! positions (TCP sequence numbers) and turns them into request/response exchanges. Pure: no
//! kernel helper, no allocation, no panic; the kernel programs (collector-ebpf/src/http.rs)
//! compile it in and feed it packet bytes, and the host tests and the fuzz target feed it byte
//! streams cut, reordered, duplicated and lost at will.
//!
//! How it is driven, per TCP segment `[seq, seq + len)` of one direction:
//! 1. [`Exchange::arrive`] does the positional bookkeeping and says whether bytes must be
//!    parsed. Body bytes are skipped by position, so a segment lost or reordered inside a body
//!    costs nothing: a later segment moves the position past the gap, and the retransmission,
//!    being behind the position, is ignored. A segment that starts beyond a position whose
//!    bytes the framer needs (a start line, a header, a chunk size) cannot be parsed; the
//!    direction waits for the missing bytes (their retransmission), and gives up only when the
//!    receiving socket has provably taken them already (`frontier`, the kernel's in-order
//!    receive point) — those bytes will not pass again.
//! 2. While [`Dir::needs_window`] asks for bytes, the driver copies them into the direction's
//!    window and calls [`Exchange::step`]; a step parses a whole start line and header lines
//!    at once when they are in the window, skips body bytes, or feeds one byte to the exact
//!    per-byte state machine (for lines cut by a segment's end).
//! 3. [`Exchange::settle`] applies what is known about bytes that arrived out of order before
//!    (a body whose end has passed completes now), and [`Exchange::fin`] the end of a stream.
//!
//! A direction that lost bytes it needed re-synchronises on the next segment that starts a
//! message (a request line with a known method, or a status line) at or beyond everything seen
//! so far; the requests waiting on the connection are given up (counted), so a loss costs the
//! messages in flight, never the rest of the connection.
//!
//! The code is shaped for the BPF verifier of the oldest kernel supported: indices into the
//! window are masked (through `read_volatile`, so LLVM cannot drop the mask the verifier needs),
//! loops are bounded, and multi-field resets use volatile stores (LLVM would turn them into a
//! `memset` call the BPF target cannot make).

use super::method;
use crate::drop;

/// Bytes of the window a step parses from (32 words: a typical response head, status line and
/// headers, takes two or three steps; with 16 it took four or five).
pub const WINDOW_WORDS: usize = 32;
pub const WINDOW: u32 = (WINDOW_WORDS * 8) as u32;
/// Requests in flight per connection (pipelining depth); a power of two.
pub const PIPELINE: usize = 8;
/// Loaded bytes the fast paths want ahead of the position (a request line start, "HTTP/1.1 200 ",
/// a header name and a short value): the window is reloaded when fewer remain and the segment
/// has more.
pub const WANT: u32 = 40;
/// Longest method token followed (RFC 9110 sets no limit; a longer run of token characters
/// without a space is taken for something that is not HTTP).
pub const MAX_METHOD: u32 = 64;

// Parser states.
pub const S_START: u8 = 0;
pub const S_REQLINE: u8 = 1;
pub const S_RESPLINE: u8 = 2;
pub const S_HEADERS: u8 = 3;
pub const S_HDR_LF: u8 = 4;
/// Body bytes framed by Content-Length (`remaining` left).
pub const S_BODY: u8 = 5;
pub const S_CHUNK_SIZE: u8 = 6;
pub const S_CHUNK_EXT: u8 = 7;
/// Chunk data and the CRLF after it (`remaining` left; the chunk's size was added to the body
/// when its size line was read).
pub const S_CHUNK_DATA: u8 = 8;
pub const S_TRAILER: u8 = 10;
pub const S_TRAILER_LF: u8 = 11;
/// A body that runs to the end of the stream.
pub const S_UNTIL_CLOSE: u8 = 12;
/// Nothing more to follow on this direction (upgraded protocol, stream ended, not HTTP).
pub const S_IGNORE: u8 = 13;
/// Bytes were lost: waiting for a segment that starts a message at or after `pos`.
pub const S_LOST: u8 = 14;

/// States whose bytes are skipped by position.
#[inline(always)]
pub fn skippable(state: u8) -> bool {
    matches!(state, S_BODY | S_CHUNK_DATA | S_UNTIL_CLOSE)
}

/// States that need the bytes at `pos`.
#[inline(always)]
pub fn needs_bytes(state: u8) -> bool {
    state <= S_HDR_LF || matches!(state, S_CHUNK_SIZE | S_CHUNK_EXT | S_TRAILER | S_TRAILER_LF)
}

// Header matcher states.
const M_NONE: u8 = 0;
const M_CL: u8 = 1;
const M_TE: u8 = 2;
const M_CL_VAL: u8 = 3;
const M_TE_VAL: u8 = 4;

// Stream flags (`Dir::sflags`).
/// `pos` and `hi` hold positions of this stream.
pub const SF_SYNCED: u8 = 1;
/// The stream's FIN has been seen at `fin`.
pub const SF_FIN: u8 = 2;
/// The FIN has been applied (everything before it parsed or skipped).
pub const SF_ENDED: u8 = 4;
/// The stream is received by the socket (ingress): its bytes reach the application in order,
/// after any gap before them is filled.
pub const SF_RECEIVED: u8 = 8;

// Message flags (`Dir::mflags`), cleared with each message.
const MF_CHUNKED: u8 = 1;
const MF_HAS_CL: u8 = 2;
const MF_METHOD_DONE: u8 = 4;
const MF_DIGIT: u8 = 8;

/// Whether stream position `a` is after `b` (positions wrap at 2^32; streams never hold more
/// than 2^31 bytes between two positions compared).
#[inline(always)]
pub fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// One direction of a connection.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Dir {
    /// Position of the next byte the framer needs (in body states: of the next body byte).
    pub pos: u32,
    /// One past the highest position seen on this direction.
    pub hi: u32,
    /// Position of the FIN (valid with `SF_FIN`).
    pub fin: u32,
    /// The position up to which the stream is in order at the socket (everything before it
    /// sent, or received without a gap), as of the segment being handled.
    pub inorder: u32,
    /// When that position last moved: the arrival of the segment that continued the stream.
    pub fill_ns: u64,
    /// Up to two runs of bytes received beyond a gap (`[ofo[0], ofo[1])` below
    /// `[ofo[2], ofo[3])`, empty when both ends are equal): when the gap is filled, the
    /// in-order point moves over them, without waiting for the kernel to say so on the next
    /// segment.
    pub ofo: [u32; 4],
    pub state: u8,
    pub sflags: u8,
    mflags: u8,
    hmatch: u8,
    hidx: u8,
    _pad: [u8; 3],
    line_pos: u32,
    /// A value passed through memory (see [`launder`]).
    scratch: u32,
    status: u16,
    _pad2: [u16; 3],
    /// First bytes of the start line (the method), big-endian.
    word: u64,
    /// The last 8 bytes seen on the start line.
    tail: u64,
    /// Body, chunk or chunk-end bytes still to skip.
    remaining: u64,
    content_length: u64,
    /// Body bytes of the current message.
    body: u64,
    /// Stream position of `win[0]`'s first byte and the number of valid bytes.
    pub win_base: u32,
    pub win_len: u32,
    /// Stream bytes `[win_base, win_base + win_len)`, in memory order.
    pub win: [u64; WINDOW_WORDS],
}

impl Dir {
    pub const ZERO: Dir = Dir {
        pos: 0,
        hi: 0,
        fin: 0,
        inorder: 0,
        fill_ns: 0,
        ofo: [0; 4],
        state: S_START,
        sflags: 0,
        mflags: 0,
        hmatch: M_NONE,
        hidx: 0,
        _pad: [0; 3],
        line_pos: 0,
        scratch: 0,
        status: 0,
        _pad2: [0; 3],
        word: 0,
        tail: 0,
        remaining: 0,
        content_length: 0,
        body: 0,
        win_base: 0,
        win_len: 0,
        win: [0; WINDOW_WORDS],
    };

    /// Starts following this direction at position `pos` (its first byte, or a message start).
    #[inline(always)]
    pub fn sync(&mut self, pos: u32) {
        self.pos = pos;
        self.hi = pos;
        self.inorder = pos;
        self.sflags = (self.sflags & SF_RECEIVED) | SF_SYNCED;
        self.state = S_START;
    }

    /// A segment `[s, e)` received beyond a gap joins the runs it touches, or makes a run of
    /// its own when there is room (the two runs nearest the in-order point are kept).
    #[inline(always)]
    fn add_run(&mut self, s: u32, e: u32) {
        let r = &mut self.ofo;
        let touches = |lo: u32, hi: u32| lo != hi && !after(s, hi) && !after(lo, e);
        if touches(r[0], r[1]) {
            if after(r[0], s) {
                r[0] = s;
            }
            if after(e, r[1]) {
                r[1] = e;
            }
            // The first run may now reach the second.
            if r[2] != r[3] && !after(r[2], r[1]) {
                if after(r[3], r[1]) {
                    r[1] = r[3];
                }
                r[2] = r[3];
            }
        } else if touches(r[2], r[3]) {
            if after(r[2], s) {
                r[2] = s;
            }
            if after(e, r[3]) {
                r[3] = e;
            }
        } else if r[0] == r[1] || after(r[0], s) {
            // Below the first run (or none yet): it becomes the first, the first the second.
            r[2] = r[0];
            r[3] = r[1];
            r[0] = s;
            r[1] = e;
        } else if r[2] == r[3] || after(r[2], s) {
            r[2] = s;
            r[3] = e;
        }
    }

    /// The in-order point once `inorder` is reached: it moves over the runs it reaches.
    #[inline(always)]
    fn through_runs(&mut self, inorder: u32) -> u32 {
        let mut p = inorder;
        let r = &mut self.ofo;
        let mut k = 0;
        while k < 2 {
            if r[0] != r[1] && !after(r[0], p) {
                if after(r[1], p) {
                    p = r[1];
                }
                r[0] = r[2];
                r[1] = r[3];
                r[2] = r[3];
            }
            k += 1;
        }
        p
    }

    /// The bytes the next step needs loaded into the window, as `(position, length)`, when the
    /// window does not hold them: from `pos`, up to `WINDOW` bytes and no further than
    /// `seg_end`. A reload also happens when fewer than `WANT` loaded bytes remain ahead and
    /// the segment has more, so the fast paths see whole start lines and header names.
    #[inline(always)]
    pub fn needs_window(&self, seg_end: u32) -> Option<(u32, u32)> {
        let pos = self.pos;
        if !after(seg_end, pos) || !(needs_bytes(self.state) || self.state == S_LOST) {
            return None;
        }
        let base = self.win_base;
        let loaded_end = base.wrapping_add(self.win_len);
        let inside = !after(base, pos) && after(loaded_end, pos);
        let short = loaded_end.wrapping_sub(pos) < WANT && after(seg_end, loaded_end) && pos != base;
        if inside && !short {
            return None;
        }
        let left = seg_end.wrapping_sub(pos);
        Some((pos, if left < WINDOW { left } else { WINDOW }))
    }
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
    pub _pad: [u8; 7],
}

/// Where the framer's events go: the kernel programs record them into maps, the tests into a
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
}

/// A response whose last byte has been parsed but has not reached the application yet: a
/// byte before it is missing at the receiving socket (lost, or reordered). It is recorded when
/// the gap is filled, with the time the gap was filled, as the application would see it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Deferred {
    pub req: Pending,
    pub body: u64,
    /// One past its last byte.
    pub end: u32,
    pub status: u16,
    pub on: u8,
    pub _pad: u8,
}

/// Both directions of one connection and the requests waiting on it.
///
/// The two directions are handled by different programs, which can run on two CPUs at once (a
/// request arriving while the previous response leaves). A segment of either direction can
/// change the whole `Exchange` (the other direction's in-order point and state, `popped` when
/// waiting requests are given up, the deferred response), so the kernel programs take the
/// connection before calling in here (`claim` in collector-ebpf/src/http.rs): one segment at a
/// time changes it. `pushed` counts requests started and `popped` requests answered or given
/// up; both wrap, and their difference is the number waiting (at most `PIPELINE`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Exchange {
    pub req: Dir,
    pub resp: Dir,
    pub pending: [Pending; PIPELINE],
    pub deferred: Deferred,
    pub pushed: u8,
    pub popped: u8,
    pub _pad: [u8; 6],
}

impl Exchange {
    pub const ZERO: Exchange = Exchange {
        req: Dir::ZERO,
        resp: Dir::ZERO,
        pending: [Pending { start_ns: 0, req_bytes: 0, method: 0, _pad: [0; 7] }; PIPELINE],
        deferred: Deferred {
            req: Pending { start_ns: 0, req_bytes: 0, method: 0, _pad: [0; 7] },
            body: 0,
            end: 0,
            status: 0,
            on: 0,
            _pad: 0,
        },
        pushed: 0,
        popped: 0,
        _pad: [0; 6],
    };

    #[inline(always)]
    pub fn dir(&self, is_req: bool) -> &Dir {
        if is_req { &self.req } else { &self.resp }
    }

    #[inline(always)]
    pub fn dir_mut(&mut self, is_req: bool) -> &mut Dir {
        if is_req { &mut self.req } else { &mut self.resp }
    }

    /// Requests waiting for their response.
    #[inline(always)]
    pub fn waiting(&self) -> u8 {
        self.pushed.wrapping_sub(self.popped)
    }

    /// Every waiting request is given up.
    #[inline(always)]
    pub fn abandon_waiting<S: Sink>(&mut self, sink: &mut S) {
        let n = self.waiting() as u64;
        if n > 0 {
            sink.abandoned(n);
        }
        self.popped = self.pushed;
    }

    /// The connection is reset or gone: every waiting request is given up, and so is a
    /// response that never reached the application (it waited for a gap to be filled).
    #[inline(always)]
    pub fn abandon_all<S: Sink>(&mut self, sink: &mut S) {
        if self.deferred.on != 0 {
            self.deferred.on = 0;
            sink.abandoned(1);
        }
        self.abandon_waiting(sink);
    }

    /// Records the deferred response once the receiving socket's in-order point `inorder` has
    /// passed it, at `when` (the time the point moved past it).
    #[inline(always)]
    pub fn resolve<S: Sink>(&mut self, inorder: u32, when: u64, sink: &mut S) {
        let f = &mut self.deferred;
        if f.on != 0 && !after(f.end, inorder) {
            f.on = 0;
            let (req, status, body) = (f.req, f.status, f.body);
            sink.exchange_done(&req, status, body, when);
        }
    }

    /// Whether a response waits for a gap before it to be filled.
    #[inline(always)]
    pub fn has_deferred(&self) -> bool {
        self.deferred.on != 0
    }

    /// The deferred response, if any, reached the application at the last time the in-order
    /// point of its stream moved (the connection ends, so nothing more will move it).
    #[inline(always)]
    pub fn flush<S: Sink>(&mut self, sink: &mut S) {
        let when = self.resp.fill_ns;
        self.resolve(self.deferred.end, when, sink);
    }

    /// Positional bookkeeping for a segment `[seq, seq + len)` of one direction. `frontier`
    /// is the position up to which the socket has taken the stream in order before this
    /// segment: for a received stream the kernel's next expected byte (which may lag behind
    /// the segments that passed, see below), for a stream this host sends `seq` (everything
    /// before it has been sent). Returns whether the driver must parse (from `pos`, which
    /// then lies inside the segment).
    #[inline(always)]
    pub fn arrive<S: Sink>(&mut self, is_req: bool, seq: u32, len: u32, frontier: u32, now: u64, sink: &mut S) -> bool {
        let end = seq.wrapping_add(len);
        let d = self.dir_mut(is_req);
        if d.sflags & SF_SYNCED == 0 {
            d.sync(seq);
            d.state = S_LOST;
        }
        if after(end, d.hi) {
            d.hi = end;
        }
        // A response that waited for a gap that has been filled meanwhile.
        if !is_req && d.sflags & SF_RECEIVED != 0 {
            let fill = d.fill_ns;
            self.resolve(frontier, fill, sink);
        }
        let d = self.dir_mut(is_req);
        // The in-order point before this segment: the kernel's, or further where segments that
        // passed here continue it without a gap. The kernel's lags behind those while the
        // receiving socket is held by its reader (they wait in its backlog, and its `rcv_nxt`
        // moves only when the reader lets go): a response ending in the next one has then
        // reached the application as soon as it is taken, not when a later segment shows it.
        let known = if after(d.inorder, frontier) { d.inorder } else { frontier };
        // The in-order point after this segment: it moves when the segment continues it, and
        // over the runs received beyond the gap the segment fills.
        let mut inorder = if !after(seq, known) && after(end, known) { end } else { known };
        if d.sflags & SF_RECEIVED != 0 {
            if after(seq, known) {
                d.add_run(seq, end);
            }
            inorder = d.through_runs(inorder);
        }
        if after(inorder, d.inorder) {
            d.inorder = inorder;
            d.fill_ns = now;
        }
        if !after(end, d.pos) || len == 0 {
            return false;
        }
        match d.state {
            S_IGNORE => return false,
            S_LOST => {
                // Only a segment that starts at or beyond everything seen may start a message.
                if after(d.pos, seq) {
                    d.pos = end;
                    return false;
                }
                d.pos = seq;
                return true;
            }
            _ => {}
        }
        if after(seq, d.pos) && skippable(d.state) {
            // A gap inside a body: the missing bytes are body bytes.
            self.skip_to(is_req, seq, now, sink);
        }
        let d = self.dir_mut(is_req);
        if !after(seq, d.pos) || !needs_bytes(d.state) {
            return d.state != S_IGNORE && d.state != S_LOST;
        }
        // The bytes at `pos` are missing. Still to come (a retransmission) unless the socket has
        // taken them in order already, without them passing here.
        if after(frontier, d.pos) {
            self.lose(is_req, sink);
            let d = self.dir_mut(is_req);
            d.pos = seq;
            return true;
        }
        false
    }

    /// After a segment: bytes that arrived out of order beyond `pos` earlier (up to `hi`) are
    /// known to exist, so a body that ends before `hi` has ended.
    #[inline(always)]
    pub fn settle<S: Sink>(&mut self, is_req: bool, now: u64, sink: &mut S) {
        let d = self.dir(is_req);
        if after(d.hi, d.pos) && skippable(d.state) {
            let hi = d.hi;
            self.skip_to(is_req, hi, now, sink);
        }
        self.apply_fin(is_req, now, sink);
        // A response whose bytes this segment brought in order.
        if !is_req {
            let inorder = self.resp.inorder;
            self.resolve(inorder, now, sink);
        }
    }

    /// Every byte of this direction before `upto` is known to have arrived (the receiving
    /// socket's in-order point): a body that ends before it has ended.
    #[inline(always)]
    pub fn reached<S: Sink>(&mut self, is_req: bool, upto: u32, now: u64, sink: &mut S) {
        let d = self.dir_mut(is_req);
        if d.sflags & SF_SYNCED == 0 || !skippable(d.state) {
            return;
        }
        if after(upto, d.hi) {
            d.hi = upto;
        }
        if after(upto, d.inorder) {
            d.inorder = upto;
        }
        self.skip_to(is_req, upto, now, sink);
        self.apply_fin(is_req, now, sink);
    }

    /// The stream of this direction ends at `fin` (the FIN's position: one past its last byte).
    #[inline(always)]
    pub fn fin<S: Sink>(&mut self, is_req: bool, fin: u32, now: u64, sink: &mut S) {
        let d = self.dir_mut(is_req);
        if d.sflags & SF_SYNCED == 0 {
            d.sync(fin);
        }
        d.fin = fin;
        d.sflags |= SF_FIN;
        if after(fin, d.hi) {
            d.hi = fin;
        }
        if skippable(d.state) {
            self.skip_to(is_req, fin, now, sink);
        }
        self.apply_fin(is_req, now, sink);
        if !is_req {
            let inorder = self.resp.inorder;
            self.resolve(inorder, now, sink);
        }
    }

    /// Whether both streams have ended (the connection state can go).
    #[inline(always)]
    pub fn ended(&self) -> bool {
        self.req.sflags & self.resp.sflags & SF_ENDED != 0
    }

    /// Once everything before the FIN is accounted for: a body that runs to the end of the
    /// stream ends, and no response can follow the end of the response stream.
    #[inline(always)]
    fn apply_fin<S: Sink>(&mut self, is_req: bool, now: u64, sink: &mut S) {
        let d = self.dir_mut(is_req);
        if d.sflags & (SF_FIN | SF_ENDED) != SF_FIN {
            return;
        }
        let lost = d.state == S_LOST;
        if !lost && after(d.fin, d.pos) {
            return;
        }
        if !is_req && d.state == S_UNTIL_CLOSE {
            let (status, body) = (d.status, d.body);
            self.complete(status, body, now, sink);
        }
        let d = self.dir_mut(is_req);
        d.sflags |= SF_ENDED;
        d.state = S_IGNORE;
        if !is_req {
            self.abandon_waiting(sink);
        }
    }

    /// Skips body bytes by position up to `upto` (which may lie in a gap): completes a body or
    /// a chunk that ends before it.
    #[inline(always)]
    fn skip_to<S: Sink>(&mut self, is_req: bool, upto: u32, now: u64, sink: &mut S) {
        // A body's or a chunk's end: one transition to a state that needs bytes.
        let mut k = 0;
        while k < 2 {
            let d = self.dir_mut(is_req);
            if !after(upto, d.pos) || !skippable(d.state) {
                return;
            }
            let adv = upto.wrapping_sub(d.pos) as u64;
            if d.state == S_UNTIL_CLOSE {
                d.body += adv;
                d.pos = upto;
                return;
            }
            let n = if d.remaining < adv { d.remaining } else { adv };
            d.pos = d.pos.wrapping_add(n as u32);
            d.remaining -= n;
            if d.state == S_BODY {
                d.body += n;
            }
            if d.remaining > 0 {
                return;
            }
            self.body_ended(is_req, now, sink);
            k += 1;
        }
    }

    /// `remaining` reached 0 in a body state.
    #[inline(always)]
    fn body_ended<S: Sink>(&mut self, is_req: bool, now: u64, sink: &mut S) {
        let d = self.dir_mut(is_req);
        if d.state == S_BODY {
            self.message_done(is_req, now, sink);
        } else {
            d.state = S_CHUNK_SIZE;
            d.remaining = 0;
        }
    }

    /// Bytes this direction needed are gone: the messages in flight are given up and the
    /// direction waits for a segment that starts a message.
    #[inline(always)]
    fn lose<S: Sink>(&mut self, is_req: bool, sink: &mut S) {
        sink.dropped(drop::HTTP_OUT_OF_ORDER);
        self.abandon_waiting(sink);
        let d = self.dir_mut(is_req);
        reset_message(d);
        d.state = S_LOST;
    }

    /// Counts `reason`, gives up the waiting requests and stops following the connection.
    #[inline(always)]
    pub fn give_up<S: Sink>(&mut self, reason: u32, sink: &mut S) {
        sink.dropped(reason);
        self.abandon_waiting(sink);
        self.req.state = S_IGNORE;
        self.resp.state = S_IGNORE;
    }

    /// A request starts: it waits at the tail of the FIFO (the caller checked there is room).
    #[inline(always)]
    fn push_request<S: Sink>(&mut self, m: u8, now: u64, sink: &mut S) {
        let tail = (self.pushed as usize) & (PIPELINE - 1);
        // Field by field: the padding is never read (a literal would memset it).
        let p = &mut self.pending[tail];
        p.start_ns = now;
        p.req_bytes = 0;
        p.method = m;
        self.pushed = self.pushed.wrapping_add(1);
        sink.request_started();
    }

    /// The response to the oldest waiting request ended (its last byte is at `resp.pos`).
    /// When the response stream is received and a byte before that one is still missing at
    /// the socket, it is recorded when the gap is filled ([`Exchange::resolve`]).
    #[inline(always)]
    fn complete<S: Sink>(&mut self, status: u16, resp_bytes: u64, now: u64, sink: &mut S) {
        if self.waiting() == 0 {
            sink.dropped(drop::HTTP_RESPONSE_UNMATCHED);
            return;
        }
        let p = self.pending[(self.popped as usize) & (PIPELINE - 1)];
        self.popped = self.popped.wrapping_add(1);
        let status = if (100..600).contains(&status) { status } else { 0 };
        // A response before this one that waited for a gap: recorded first, now that the gap
        // is filled (when it is).
        let inorder = self.resp.inorder;
        self.resolve(inorder, now, sink);
        let r = &self.resp;
        if r.sflags & SF_RECEIVED != 0 && after(r.pos, r.inorder) {
            // One response waits at a time: an earlier one still waiting is taken as having
            // arrived now.
            if self.deferred.on != 0 {
                let end = self.deferred.end;
                self.resolve(end, now, sink);
            }
            // Field by field: a literal would be built on the stack first (a kernel program's
            // stack is small).
            let end = self.resp.pos;
            let f = &mut self.deferred;
            f.req = p;
            f.body = resp_bytes;
            f.end = end;
            f.status = status;
            f.on = 1;
            return;
        }
        sink.exchange_done(&p, status, resp_bytes, now);
    }

    /// A message's last byte has been parsed or skipped.
    #[inline(always)]
    fn message_done<S: Sink>(&mut self, is_req: bool, now: u64, sink: &mut S) {
        if is_req {
            if self.waiting() > 0 {
                let last = (self.pushed.wrapping_sub(1) as usize) & (PIPELINE - 1);
                self.pending[last].req_bytes = self.req.body;
            }
            reset_message(&mut self.req);
        } else {
            let (status, body) = (self.resp.status, self.resp.body);
            self.complete(status, body, now, sink);
            reset_message(&mut self.resp);
        }
    }

    /// The blank line after the headers: decide how the body is framed (RFC 9112 §6.3).
    #[inline(always)]
    fn headers_done<S: Sink>(&mut self, is_req: bool, now: u64, sink: &mut S) {
        let st = self.dir_mut(is_req);
        let chunked = st.mflags & MF_CHUNKED != 0;
        let has_cl = st.mflags & MF_HAS_CL != 0;
        let cl = st.content_length;
        if is_req {
            if chunked {
                st.state = S_CHUNK_SIZE;
                st.remaining = 0;
            } else if has_cl && cl > 0 {
                st.state = S_BODY;
                st.remaining = cl;
            } else {
                self.message_done(true, now, sink);
            }
            return;
        }
        let status = st.status;
        if (100..200).contains(&status) && status != 101 {
            // Interim response (100 Continue, 103 Early Hints): the final one follows.
            reset_message(st);
            return;
        }
        let head_method = self.pending[(self.popped as usize) & (PIPELINE - 1)].method;
        if status == 101 || (head_method == method::CONNECT && (200..300).contains(&status)) {
            // The connection changes protocol: record the exchange, ignore what follows.
            self.complete(status, 0, now, sink);
            self.req.state = S_IGNORE;
            self.resp.state = S_IGNORE;
            return;
        }
        let head_request = self.waiting() > 0 && head_method == method::HEAD;
        let st = &mut self.resp;
        if head_request || status == 204 || status == 304 {
            self.message_done(false, now, sink);
        } else if chunked {
            st.state = S_CHUNK_SIZE;
            st.remaining = 0;
        } else if has_cl {
            if cl == 0 {
                self.message_done(false, now, sink);
            } else {
                st.state = S_BODY;
                st.remaining = cl;
            }
        } else {
            // Neither length nor chunked: the body runs to the end of the connection.
            st.state = S_UNTIL_CLOSE;
        }
    }

    /// One parse step at `pos` of a direction, within a segment that ends at `seg_end`: skips
    /// body bytes; or reads a start line and up to 8 header lines whole; or jumps over the rest
    /// of a line of no interest; or feeds one byte to the per-byte parser. The window must hold
    /// the byte at `pos` when the state needs bytes ([`Dir::needs_window`]). Returns true when
    /// nothing more of the segment is to be parsed.
    #[inline(always)]
    pub fn step<S: Sink>(&mut self, is_req: bool, seg_end: u32, now: u64, sink: &mut S) -> bool {
        let st = self.dir_mut(is_req);
        let pos = st.pos;
        if !after(seg_end, pos) {
            return true;
        }
        let left = seg_end.wrapping_sub(pos);
        match st.state {
            S_BODY | S_CHUNK_DATA => {
                let n = if st.remaining < left as u64 { st.remaining } else { left as u64 };
                st.remaining -= n;
                if st.state == S_BODY {
                    st.body += n;
                }
                st.pos = pos.wrapping_add(n as u32);
                if st.remaining == 0 {
                    self.body_ended(is_req, now, sink);
                }
                return !after(seg_end, self.dir(is_req).pos);
            }
            S_UNTIL_CLOSE => {
                st.body += left as u64;
                st.pos = seg_end;
                return true;
            }
            S_IGNORE => {
                st.pos = seg_end;
                return true;
            }
            _ => {}
        }
        let i = pos.wrapping_sub(st.win_base);
        let len = st.win_len;
        if i >= len || len > WINDOW {
            // The driver did not load the bytes (it could not): nothing more from this segment.
            return true;
        }
        if st.state == S_LOST {
            let starts = if is_req {
                i + 8 <= len && known_method(window8(&st.win, i)).is_some()
            } else {
                i + 5 <= len && window8(&st.win, i) & 0xff_ffff_ffff == le(b"HTTP/")
            };
            if !starts {
                st.pos = seg_end;
                return true;
            }
            reset_message(st);
            st.state = S_START;
        }
        // Fast paths over whole lines, one per step (the BPF verifier checks each on its own,
        // and the state passes from one to the next through memory); each returns the bytes
        // it consumed (0: not taken, the per-byte parser below decides).
        if st.state == S_START {
            let n = if is_req { self.request_line(i, len, now, sink) } else { status_line(&mut self.resp, i, len) };
            if n > 0 {
                let st = self.dir_mut(is_req);
                st.pos = pos.wrapping_add(n);
                return !after(seg_end, st.pos);
            }
        } else if st.state == S_CHUNK_SIZE && st.mflags & MF_DIGIT == 0 {
            let (size, n) = chunk_size(&st.win, i, len);
            if n > 0 {
                st.pos = pos.wrapping_add(n);
                if size == 0 {
                    st.state = S_TRAILER;
                    st.line_pos = 0;
                } else {
                    st.body += size;
                    st.remaining = size + 2;
                    st.state = S_CHUNK_DATA;
                }
                return !after(seg_end, st.pos);
            }
        } else if st.state == S_HEADERS && st.line_pos == 0 {
            let (n, end) = header_lines(st, i, len);
            if n > 0 {
                st.pos = pos.wrapping_add(n);
                if end {
                    self.headers_done(is_req, now, sink);
                }
                return !after(seg_end, self.dir(is_req).pos);
            }
        }
        let st = self.dir_mut(is_req);
        // Inside a line the parser does not need (a request target, a header other than
        // Content-Length and Transfer-Encoding, a reason phrase, a chunk extension, a trailer),
        // jump to the next line break: a word-at-a-time search over the loaded bytes.
        let skip = match st.state {
            S_REQLINE => st.mflags & MF_METHOD_DONE != 0,
            S_HEADERS | S_TRAILER => st.line_pos > 0 && st.hmatch == M_NONE,
            S_RESPLINE => st.line_pos >= 13,
            S_CHUNK_EXT => true,
            _ => false,
        };
        if skip {
            let k = find_newline(&st.win, i, len);
            if k < len && k > i && (st.state == S_HEADERS || st.state == S_TRAILER) {
                // Take the line break too: the next line starts clean.
                st.line_pos = 0;
                st.hmatch = M_NONE;
                st.pos = pos.wrapping_add(k - i + 1);
                return !after(seg_end, st.pos);
            }
            if k > i {
                let n = k - i;
                if st.state == S_REQLINE {
                    // Keep the last 8 bytes of the request line: its end is checked for "HTTP/1.x".
                    st.tail = if n >= 8 {
                        window8(&st.win, k - 8).swap_bytes()
                    } else {
                        let x = window8(&st.win, i) & ((1u64 << (8 * n)) - 1);
                        (st.tail << (8 * n)) | (x.swap_bytes() >> (64 - 8 * n))
                    };
                }
                st.line_pos = st.line_pos.saturating_add(n);
                st.pos = pos.wrapping_add(n);
                return !after(seg_end, st.pos);
            }
        }
        let b = byte_at(&st.win, i);
        st.pos = pos.wrapping_add(1);
        self.feed(is_req, b, now, sink);
        !after(seg_end, self.dir(is_req).pos)
    }

    /// A request line "METHOD target HTTP/1.x" starting at byte `i` of the window, for the
    /// known methods: starts the request and, when the whole line is loaded, moves on to the
    /// headers. Returns the bytes consumed (0: not taken).
    #[inline(always)]
    fn request_line<S: Sink>(&mut self, i: u32, len: u32, now: u64, sink: &mut S) -> u32 {
        if i + 8 > len || self.waiting() as usize >= PIPELINE {
            return 0;
        }
        let Some((m, p, word)) = known_method(window8(&self.req.win, i)) else { return 0 };
        self.push_request(m, now, sink);
        let st = &mut self.req;
        st.state = S_REQLINE;
        st.mflags |= MF_METHOD_DONE;
        st.word = word;
        st.tail = (word << 8) | b' ' as u64;
        st.line_pos = p + 1;
        let k = find_newline(&st.win, i + p + 1, len);
        // "M / HTTP/1.1\r\n" at the least: a line break found past "HTTP/1.x\r".
        if k < len && k >= i + p + 11 && k >= 8 {
            let tail = window8(&st.win, k - 8).swap_bytes();
            if tail == V11 || tail == V10 {
                st.state = S_HEADERS;
                st.line_pos = 0;
                return k + 1 - i;
            }
        }
        p + 1
    }

    /// Feeds one byte to the exact per-byte parser of one direction.
    #[inline(always)]
    fn feed<S: Sink>(&mut self, is_req: bool, b: u8, now: u64, sink: &mut S) {
        let st = self.dir_mut(is_req);
        let mut state = st.state;
        if state == S_START {
            if b == b'\r' || b == b'\n' {
                return; // stray line breaks between messages are allowed
            }
            if is_req {
                if !b.is_ascii_uppercase() {
                    self.give_up(drop::HTTP_DESYNC, sink);
                    return;
                }
                if self.waiting() as usize >= PIPELINE {
                    self.give_up(drop::HTTP_PIPELINE_OVERFLOW, sink);
                    return;
                }
                self.push_request(method::OTHER, now, sink);
                self.req.state = S_REQLINE;
            } else {
                if b != b'H' {
                    self.give_up(drop::HTTP_DESYNC, sink);
                    return;
                }
                self.resp.state = S_RESPLINE;
            }
            state = if is_req { S_REQLINE } else { S_RESPLINE };
        }
        let st = self.dir_mut(is_req);
        match state {
            S_REQLINE => {
                let pos = st.line_pos;
                if b == b'\n' {
                    if st.mflags & MF_METHOD_DONE == 0 || (st.tail != V11 && st.tail != V10) {
                        self.give_up(drop::HTTP_DESYNC, sink);
                        return;
                    }
                    st.state = S_HEADERS;
                    st.line_pos = 0;
                    return;
                }
                if st.mflags & MF_METHOD_DONE == 0 {
                    if b == b' ' && pos > 0 {
                        st.mflags |= MF_METHOD_DONE;
                        let m = method::from_word(st.word, pos);
                        if self.waiting() > 0 {
                            let last = (self.pushed.wrapping_sub(1) as usize) & (PIPELINE - 1);
                            self.pending[last].method = m;
                        }
                    } else if is_tchar(b) && pos < MAX_METHOD {
                        if pos < 8 {
                            st.word = (st.word << 8) | b as u64;
                        }
                    } else {
                        self.give_up(drop::HTTP_DESYNC, sink);
                        return;
                    }
                }
                let st = &mut self.req;
                st.tail = (st.tail << 8) | b as u64;
                st.line_pos = pos.saturating_add(1);
            }
            S_RESPLINE => {
                let pos = st.line_pos;
                let ok = match pos {
                    0 => b == b'H',
                    1 | 2 => b == b'T',
                    3 => b == b'P',
                    4 => b == b'/',
                    5 => b == b'1',
                    6 => b == b'.',
                    7 => b == b'0' || b == b'1',
                    8 => b == b' ',
                    9..=11 => {
                        if b.is_ascii_digit() {
                            st.status = st.status * 10 + (b - b'0') as u16;
                            true
                        } else {
                            false
                        }
                    }
                    12 => b == b' ' || b == b'\r' || b == b'\n',
                    _ => true,
                };
                if !ok || (b == b'\n' && pos < 12) {
                    self.give_up(drop::HTTP_DESYNC, sink);
                    return;
                }
                if b == b'\n' {
                    st.state = S_HEADERS;
                    st.line_pos = 0;
                } else {
                    st.line_pos = pos.saturating_add(1);
                }
            }
            S_HEADERS => {
                if st.line_pos == 0 {
                    if b == b'\r' {
                        st.state = S_HDR_LF;
                        return;
                    }
                    if b == b'\n' {
                        self.headers_done(is_req, now, sink);
                        return;
                    }
                    let l = lower(b);
                    st.hmatch = if l == b'c' {
                        M_CL
                    } else if l == b't' {
                        M_TE
                    } else {
                        M_NONE
                    };
                    st.hidx = 1;
                    st.line_pos = 1;
                    return;
                }
                st.line_pos = st.line_pos.saturating_add(1);
                if b == b'\n' {
                    st.line_pos = 0;
                    st.hmatch = M_NONE;
                    return;
                }
                let l = lower(b);
                let i = st.hidx as usize;
                match st.hmatch {
                    M_CL => {
                        if match_name(st, CL_NAME, i, l, M_CL_VAL) {
                            st.content_length = 0;
                        }
                    }
                    M_TE => {
                        if match_name(st, TE_NAME, i, l, M_TE_VAL) {
                            st.hidx = 0;
                        }
                    }
                    M_CL_VAL => {
                        if b.is_ascii_digit() {
                            if st.content_length < (1 << 50) {
                                st.content_length = st.content_length * 10 + (b - b'0') as u64;
                            }
                            st.mflags |= MF_HAS_CL;
                        } else if b != b' ' && b != b'\t' && b != b'\r' {
                            st.hmatch = M_NONE;
                        }
                    }
                    M_TE_VAL => {
                        if i < CHUNKED.len() && l == CHUNKED[i] {
                            st.hidx += 1;
                            if st.hidx as usize == CHUNKED.len() {
                                st.mflags |= MF_CHUNKED;
                                st.hidx = 0;
                            }
                        } else {
                            st.hidx = if l == b'c' { 1 } else { 0 };
                        }
                    }
                    _ => {}
                }
            }
            S_HDR_LF => {
                if b == b'\n' {
                    self.headers_done(is_req, now, sink);
                } else {
                    self.give_up(drop::HTTP_DESYNC, sink);
                }
            }
            S_CHUNK_SIZE | S_CHUNK_EXT => {
                if b == b'\n' {
                    if st.mflags & MF_DIGIT == 0 {
                        self.give_up(drop::HTTP_DESYNC, sink);
                        return;
                    }
                    st.mflags &= !MF_DIGIT;
                    if st.remaining == 0 {
                        st.state = S_TRAILER;
                        st.line_pos = 0;
                    } else {
                        st.body += st.remaining;
                        st.remaining += 2;
                        st.state = S_CHUNK_DATA;
                    }
                    return;
                }
                if state == S_CHUNK_EXT || b == b'\r' {
                    return;
                }
                let v = match b {
                    b'0'..=b'9' => b - b'0',
                    b'a'..=b'f' => b - b'a' + 10,
                    b'A'..=b'F' => b - b'A' + 10,
                    b';' | b' ' | b'\t' => {
                        st.state = S_CHUNK_EXT;
                        return;
                    }
                    _ => {
                        self.give_up(drop::HTTP_DESYNC, sink);
                        return;
                    }
                };
                if st.remaining < (1 << 50) {
                    st.remaining = (st.remaining << 4) | v as u64;
                }
                st.mflags |= MF_DIGIT;
            }
            S_TRAILER => {
                if st.line_pos == 0 {
                    if b == b'\r' {
                        st.state = S_TRAILER_LF;
                        return;
                    }
                    if b == b'\n' {
                        self.message_done(is_req, now, sink);
                        return;
                    }
                    st.line_pos = 1;
                } else if b == b'\n' {
                    st.line_pos = 0;
                }
            }
            S_TRAILER_LF => {
                if b == b'\n' {
                    self.message_done(is_req, now, sink);
                } else {
                    self.give_up(drop::HTTP_DESYNC, sink);
                }
            }
            _ => {}
        }
    }
}

/// Clears the per-message fields of a direction; it then waits at a message start.
#[inline(always)]
fn reset_message(st: &mut Dir) {
    // Volatile stores: LLVM would merge plain ones into a memset, which the BPF target turns
    // into a call to a byte-wise loop.
    use core::ptr::write_volatile as set;
    // SAFETY: each pointer comes from a live `&mut` field.
    unsafe {
        set(&mut st.state, S_START);
        set(&mut st.hmatch, M_NONE);
        set(&mut st.hidx, 0);
        set(&mut st.mflags, 0);
        set(&mut st.line_pos, 0);
        set(&mut st.status, 0);
        set(&mut st.word, 0);
        set(&mut st.tail, 0);
        set(&mut st.remaining, 0);
        set(&mut st.content_length, 0);
        set(&mut st.body, 0);
    }
}

/// One more byte `l` (lower-cased) of a header name being matched at index `i`: on a mismatch
/// the line is of no interest; after the whole name, `then` is the matcher state. Returns
/// true when the name is complete.
#[inline(always)]
fn match_name(st: &mut Dir, name: &[u8], i: usize, l: u8, then: u8) -> bool {
    if i < name.len() && l == name[i] {
        st.hidx += 1;
        if st.hidx as usize == name.len() {
            st.hmatch = then;
            return true;
        }
    } else {
        st.hmatch = M_NONE;
    }
    false
}

/// A character a method token may hold after its first (RFC 9110 tchar: letters, digits and
/// ``!#$%&'*+-.^_`|~``); the first must be an upper-case letter for the connection to count as
/// HTTP at all.
#[inline(always)]
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~'
        )
}

#[inline(always)]
fn lower(b: u8) -> u8 {
    if b.is_ascii_uppercase() { b | 0x20 } else { b }
}

const CL_NAME: &[u8; 15] = b"content-length:";
const TE_NAME: &[u8; 18] = b"transfer-encoding:";
const CHUNKED: &[u8; 7] = b"chunked";
const V11: u64 = u64::from_be_bytes(*b"TTP/1.1\r");
const V10: u64 = u64::from_be_bytes(*b"TTP/1.0\r");

/// Little-endian word of up to 8 bytes.
pub const fn le(b: &[u8]) -> u64 {
    let mut v = 0u64;
    let mut i = 0;
    while i < b.len() {
        v |= (b[i] as u64) << (8 * i);
        i += 1;
    }
    v
}

/// 0x20 in every byte that holds a letter of `b` (so only letters are folded to lower case).
const fn letters(b: &[u8]) -> u64 {
    let mut v = 0u64;
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_lowercase() {
            v |= 0x20 << (8 * i);
        }
        i += 1;
    }
    v
}
const CL_WORD0: u64 = le(b"content-");
const CL_MASK0: u64 = letters(b"content-");
const CL_WORD1: u64 = le(b"length:");
const CL_MASK1: u64 = letters(b"length:");
const TE_WORD0: u64 = le(b"transfer");
const TE_MASK0: u64 = letters(b"transfer");
const TE_WORD1: u64 = le(b"-encodin");
const TE_MASK1: u64 = letters(b"-encodin");
const TE_WORD2: u64 = le(b"g:");
const TE_MASK2: u64 = letters(b"g:");

/// A known method and its space at the start of 8 bytes (little-endian): (method id, its
/// length, its bytes packed big-endian).
#[inline(always)]
pub fn known_method(w: u64) -> Option<(u8, u32, u64)> {
    let spaces = byte_bits(w, b' ');
    // The lowest flagged byte is exact.
    let p = spaces.trailing_zeros() / 8;
    if spaces == 0 || p == 0 || p > 7 {
        return None;
    }
    let word = (w & ((1u64 << (8 * p)) - 1)).swap_bytes() >> (64 - 8 * p);
    let m = method::from_word(word, p);
    (m != method::OTHER).then_some((m, p, word))
}

/// A status line "HTTP/1.x ddd" starting at byte `i`: takes the code and, when the line's end
/// is loaded, moves on to the headers. Returns the bytes consumed (0: not taken).
#[inline(always)]
fn status_line(st: &mut Dir, i: u32, len: u32) -> u32 {
    if i + 13 > len {
        return 0;
    }
    const HTTP1: u64 = le(b"HTTP/1.");
    let w0 = window8(&st.win, i);
    let w1 = window8(&st.win, i + 8);
    let minor = (w0 >> 56) as u8;
    if w0 & 0x00ff_ffff_ffff_ffff != HTTP1 || (minor != b'0' && minor != b'1') || w1 as u8 != b' ' {
        return 0;
    }
    let (d0, d1, d2, after) = ((w1 >> 8) as u8, (w1 >> 16) as u8, (w1 >> 24) as u8, (w1 >> 32) as u8);
    if !(d0.is_ascii_digit() && d1.is_ascii_digit() && d2.is_ascii_digit()) {
        return 0;
    }
    st.status = (d0 - b'0') as u16 * 100 + (d1 - b'0') as u16 * 10 + (d2 - b'0') as u16;
    st.state = S_RESPLINE;
    if after == b' ' {
        let k = find_newline(&st.win, i + 13, len);
        if k < len && k > i + 13 {
            st.state = S_HEADERS;
            st.line_pos = 0;
            return k + 1 - i;
        }
        st.line_pos = 13;
        return 13;
    }
    if after == b'\r' && i + 14 < len && byte_at(&st.win, i + 13) == b'\n' {
        st.state = S_HEADERS;
        st.line_pos = 0;
        return 14;
    }
    // Anything else goes through the per-byte parser from the code's end.
    st.line_pos = 12;
    12
}

/// Header lines from a line start at byte `i`: lines of no interest are skipped and a
/// Content-Length value is read whole, up to 8 lines. Returns the bytes consumed (0: decide
/// byte by byte) and whether they ended with the blank line that closes the headers. The
/// stream is left at a line start, inside a skippable line, or at a framing header's value.
#[inline(always)]
fn header_lines(st: &mut Dir, i: u32, len: u32) -> (u32, bool) {
    let mut j = i;
    let mut lines = 0;
    while lines < 8 {
        // One range for every way of reaching here, so the verifier prunes the loop instead
        // of following each line length separately (j stays at or below WINDOW; the mask,
        // twice the window's size, is exact).
        j = launder(st, j) & (2 * WINDOW - 1);
        if j >= len {
            break;
        }
        let b = byte_at(&st.win, j);
        if b == b'\n' {
            return (j + 1 - i, true);
        }
        if b == b'\r' {
            if j + 1 < len && byte_at(&st.win, j + 1) == b'\n' {
                return (j + 2 - i, true);
            }
            break;
        }
        let l = b | 0x20;
        if (l == b'c' && j + 15 > len) || (l == b't' && j + 18 > len) {
            // A name cut by the end of the loaded bytes: byte by byte.
            break;
        }
        if l == b'c' {
            let w0 = window8(&st.win, j) | CL_MASK0;
            let w1 = (window8(&st.win, j + 8) & 0x00ff_ffff_ffff_ffff) | CL_MASK1;
            if w0 == CL_WORD0 && w1 == CL_WORD1 {
                let (value, next) = content_length(&st.win, j + 15, len);
                if next > 0 {
                    st.mflags |= MF_HAS_CL;
                    st.content_length = if value < (1 << 50) { value } else { 1 << 50 };
                    j = next;
                    lines += 1;
                    continue;
                }
                // The value byte by byte.
                st.hmatch = M_CL_VAL;
                st.hidx = 0;
                st.content_length = 0;
                st.line_pos = 15;
                return (j + 15 - i, false);
            }
        } else if l == b't' {
            let w0 = window8(&st.win, j) | TE_MASK0;
            let w1 = window8(&st.win, j + 8) | TE_MASK1;
            let w2 = (window8(&st.win, j + 16) & 0xffff) | TE_MASK2;
            if w0 == TE_WORD0 && w1 == TE_WORD1 && w2 == TE_WORD2 {
                st.hmatch = M_TE_VAL;
                st.hidx = 0;
                st.line_pos = 18;
                return (j + 18 - i, false);
            }
        }
        // A line of no interest: to its line break.
        let k = find_newline(&st.win, j + 1, len);
        if k < len && k > j + 1 {
            j = k + 1;
            lines += 1;
            continue;
        }
        // It goes on past the loaded bytes (or the search was unsure): skippable from here.
        st.hmatch = M_NONE;
        st.line_pos = 1;
        return (j + 1 - i, false);
    }
    st.line_pos = 0;
    st.hmatch = M_NONE;
    (j - i, false)
}

/// A Content-Length value "[SP|HTAB]digits\r\n" from byte `p` (up to 16 digits): (value, index
/// after the line break), or index 0 when it is anything else or not all loaded (the per-byte
/// parser then reads it). Word arithmetic without loops, so the verifier follows a couple of
/// paths here instead of one per digit sequence.
#[inline(always)]
fn content_length(buf: &[u64; WINDOW_WORDS], p: u32, len: u32) -> (u64, u32) {
    if p + 3 > len {
        return (0, 0);
    }
    let first = byte_at(buf, p);
    let q = if first == b' ' || first == b'\t' { p + 1 } else { p };
    let (w0, w1) = (window8(buf, q), window8(buf, q + 8));
    let (nd0, nd1) = (non_digits(w0), non_digits(w1));
    let n = if nd0 != 0 {
        nd0.trailing_zeros() / 8
    } else if nd1 != 0 {
        8 + nd1.trailing_zeros() / 8
    } else {
        return (0, 0);
    };
    if n == 0 || q + n + 2 > len || byte_at(buf, q + n) != b'\r' || byte_at(buf, q + n + 1) != b'\n' {
        return (0, 0);
    }
    let v = if n <= 8 {
        parse8(pad8(w0, n))
    } else {
        let m = (n - 8) as u64;
        // 10^m from the bits of m (1..=8), without a table or a branch.
        let bit = |k: u64| (m >> k) & 1;
        let pow = (1 + 9 * bit(0)) * (1 + 99 * bit(1)) * (1 + 9_999 * bit(2)) * (1 + 99_999_999 * bit(3));
        parse8(w0) * pow + parse8(pad8(w1, m as u32))
    };
    (v, q + n + 2)
}

/// A chunk size line "hex\r\n" (up to 7 digits, no extension) from byte `p`: (size, bytes
/// consumed), or 0 bytes when it is anything else or not all loaded (the per-byte parser then
/// reads it). Word arithmetic without loops, as `content_length`.
#[inline(always)]
fn chunk_size(buf: &[u64; WINDOW_WORDS], p: u32, len: u32) -> (u64, u32) {
    const HI: u64 = 0x8080_8080_8080_8080;
    if p + 3 > len {
        return (0, 0);
    }
    let w = window8(buf, p);
    let l = w | 0x2020_2020_2020_2020;
    let low = l & !HI;
    // 'a'..='f' after folding to lower case.
    let af = !(low + 0x1919_1919_1919_1919) & (low + 0x1f1f_1f1f_1f1f_1f1f) & !w & HI;
    let bad = non_digits(l) & !af;
    if bad == 0 {
        return (0, 0); // 8 digits or more: byte by byte
    }
    let n = bad.trailing_zeros() / 8;
    if n == 0 || p + n + 2 > len || byte_at(buf, p + n) != b'\r' || byte_at(buf, p + n + 1) != b'\n' {
        return (0, 0);
    }
    // Nibble values (digits and letters alike: the low 4 bits, plus 9 for letters), the last
    // digit moved to the top byte, then pairs, quads and octets of nibbles combined.
    let nib = (w & 0x0f0f_0f0f_0f0f_0f0f) + 9 * ((w >> 6) & 0x0101_0101_0101_0101);
    let x = nib << (8 * (8 - n));
    let y = ((x << 4) | (x >> 8)) & 0x00ff_00ff_00ff_00ff;
    let z = ((y << 8) | (y >> 16)) & 0x0000_ffff_0000_ffff;
    let v = ((z << 16) | (z >> 32)) & 0xffff_ffff;
    (v, n + 2)
}

/// The top bit of every byte of `w` that is not an ASCII digit (exact for every byte).
#[inline(always)]
fn non_digits(w: u64) -> u64 {
    const HI: u64 = 0x8080_8080_8080_8080;
    let low = w & !HI;
    // Above '9' once 0x46 is added; below '0' unless 0x50 is added; no carry between bytes.
    let above = low + 0x4646_4646_4646_4646;
    let not_below = low + 0x5050_5050_5050_5050;
    (above | !not_below | w) & HI
}

/// The first `n` (1..=8) bytes of `w` (digits) right-aligned behind ASCII zeros.
#[inline(always)]
fn pad8(w: u64, n: u32) -> u64 {
    let n = if n > 8 {
        8
    } else if n == 0 {
        1
    } else {
        n
    };
    (w << (8 * (8 - n))) | ((0x3030_3030_3030_3030u64 >> (8 * n - 1)) >> 1)
}

/// Eight ASCII digits (the first in the low byte) as a number.
#[inline(always)]
fn parse8(w: u64) -> u64 {
    const MASK: u64 = 0x0000_00ff_0000_00ff;
    const MUL1: u64 = 100 + (1_000_000 << 32);
    const MUL2: u64 = 1 + (10_000 << 32);
    let v = w.wrapping_sub(0x3030_3030_3030_3030);
    let v = v.wrapping_mul(10).wrapping_add(v >> 8);
    ((v & MASK).wrapping_mul(MUL1).wrapping_add(((v >> 16) & MASK).wrapping_mul(MUL2))) >> 32
}

/// `v` stored in and read back from the direction's memory. The BPF verifier does not follow
/// values through map memory, so every way of reaching the caller's loop looks alike to it and
/// the loop is checked once per iteration rather than once per path into it.
#[inline(always)]
fn launder(st: &mut Dir, v: u32) -> u32 {
    // SAFETY: a field of a live `&mut`.
    unsafe {
        core::ptr::write_volatile(&mut st.scratch, v);
        core::ptr::read_volatile(&st.scratch)
    }
}

/// Word `j` of the window. The index goes through memory so that LLVM, which may prove it
/// below 16 from the caller's checks, cannot drop the mask the verifier needs to see.
#[inline(always)]
fn word_at(buf: &[u64; WINDOW_WORDS], j: usize) -> u64 {
    // SAFETY: reads a local.
    buf[unsafe { core::ptr::read_volatile(&j) } & (WINDOW_WORDS - 1)]
}

/// Byte `i` (0..WINDOW) of the window.
#[inline(always)]
pub fn byte_at(buf: &[u64; WINDOW_WORDS], i: u32) -> u8 {
    (word_at(buf, (i >> 3) as usize) >> ((i & 7) * 8)) as u8
}

/// The 8 bytes starting at byte `p` of the window, little-endian (bytes past the window are
/// whatever it holds; callers mask them off).
#[inline(always)]
pub fn window8(buf: &[u64; WINDOW_WORDS], p: u32) -> u64 {
    let j = (p >> 3) as usize;
    let s = (p & 7) * 8;
    let first = word_at(buf, j);
    if s == 0 { first } else { (first >> s) | (word_at(buf, j + 1) << (64 - s)) }
}

/// Index of the first '\n' at or after byte `i` among the first `len` bytes of the window;
/// `len` when there is none. A doubtful match returns `i`, which sends the byte through the
/// exact per-byte parser.
#[inline(always)]
fn find_newline(buf: &[u64; WINDOW_WORDS], i: u32, len: u32) -> u32 {
    let mut j = (i >> 3) as usize;
    let mut mask = !0u64 << ((i & 7) * 8);
    while j < WINDOW_WORDS {
        if (j as u32) * 8 >= len {
            return len;
        }
        let w = word_at(buf, j);
        let bits = byte_bits(w, b'\n') & mask;
        if bits != 0 {
            let k = j as u32 * 8 + bits.trailing_zeros() / 8;
            if k >= len {
                return len;
            }
            return if (w >> ((k & 7) * 8)) as u8 == b'\n' { k } else { i };
        }
        mask = !0;
        j += 1;
    }
    len
}

/// Bytes equal to `c` in `w` get their top bit set (exact for the lowest such byte; a byte
/// above a match may be flagged falsely).
#[inline(always)]
fn byte_bits(w: u64, c: u8) -> u64 {
    let x = w ^ (0x0101_0101_0101_0101 * c as u64);
    x.wrapping_sub(0x0101_0101_0101_0101) & !x & 0x8080_8080_8080_8080
}
