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
//! This file holds the state and the positional bookkeeping; `parse` the message syntax (start
//! lines, headers, chunk sizes: a step), `bytes` the word-at-a-time helpers both use.
//!
//! The code is shaped for the BPF verifier of the oldest kernel supported: indices into the
//! window are masked (through `read_volatile`, so LLVM cannot drop the mask the verifier needs),
//! loops are bounded, and multi-field resets use volatile stores (LLVM would turn them into a
//! `memset` call the BPF target cannot make).

use super::method;
pub use crate::capture::{Pending, Sink, WINDOW, WINDOW_WORDS, Window, after};
use crate::drop;

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
/// A 101 (Switching Protocols) ended the response's head at `resp.pos`, the request ended at
/// `req.pos`: nothing more is parsed as HTTP/1; the capture switches the connection to HTTP/2
/// when the server's first HTTP/2 frame follows the 101 (`Upgrade: h2c`), else it records the
/// 101 ([`Exchange::not_upgraded`]) and follows nothing more. The request still waits, for its
/// response on HTTP/2's stream 1.
pub const S_UPGRADED: u8 = 15;

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
pub(super) const M_NONE: u8 = 0;
pub(super) const M_CL: u8 = 1;
pub(super) const M_TE: u8 = 2;
pub(super) const M_CL_VAL: u8 = 3;
pub(super) const M_TE_VAL: u8 = 4;

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
pub(super) const MF_CHUNKED: u8 = 1;
pub(super) const MF_HAS_CL: u8 = 2;
pub(super) const MF_METHOD_DONE: u8 = 4;
pub(super) const MF_DIGIT: u8 = 8;

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
    pub(super) mflags: u8,
    pub(super) hmatch: u8,
    pub(super) hidx: u8,
    pub(super) _pad: [u8; 3],
    pub(super) line_pos: u32,
    /// A value passed through memory (see [`launder`]).
    pub(super) scratch: u32,
    pub(super) status: u16,
    pub(super) _pad2: [u16; 3],
    /// First bytes of the start line (the method), big-endian.
    pub(super) word: u64,
    /// The last 8 bytes seen on the start line.
    pub(super) tail: u64,
    /// Body, chunk or chunk-end bytes still to skip.
    pub(super) remaining: u64,
    pub(super) content_length: u64,
    /// Body bytes of the current message.
    pub(super) body: u64,
    /// The bytes a step parses (see [`Window`]).
    pub w: Window,
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
        w: Window::ZERO,
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
        let base = self.w.base;
        let loaded_end = base.wrapping_add(self.w.len);
        let inside = !after(base, pos) && after(loaded_end, pos);
        let short = loaded_end.wrapping_sub(pos) < WANT && after(seg_end, loaded_end) && pos != base;
        if inside && !short {
            return None;
        }
        let left = seg_end.wrapping_sub(pos);
        Some((pos, if left < WINDOW { left } else { WINDOW }))
    }
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
        pending: [Pending { start_ns: 0, req_bytes: 0, method: 0, version: 0, _pad: [0; 6] }; PIPELINE],
        deferred: Deferred {
            req: Pending { start_ns: 0, req_bytes: 0, method: 0, version: 0, _pad: [0; 6] },
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
            S_IGNORE | S_UPGRADED => return false,
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

    /// Whether a 101 switched the connection's protocol and the capture is to decide what it
    /// switched to (see [`S_UPGRADED`]).
    #[inline(always)]
    pub fn upgrading(&self) -> bool {
        self.resp.state == S_UPGRADED
    }

    /// Where the new protocol starts on the request and on the response direction, and the
    /// request that asked for it.
    #[inline(always)]
    pub fn upgrade_point(&self) -> (u32, u32, Pending) {
        (self.req.pos, self.resp.pos, self.pending[(self.popped as usize) & (PIPELINE - 1)])
    }

    /// The protocol switched to is not followed: the 101 is recorded as the request's response
    /// (at `now`), and nothing more is followed.
    #[inline(always)]
    pub fn not_upgraded<S: Sink>(&mut self, now: u64, sink: &mut S) {
        self.complete(101, 0, now, sink);
        self.req.state = S_IGNORE;
        self.resp.state = S_IGNORE;
    }

    /// Whether both streams have ended (the connection state can go).
    #[inline(always)]
    pub fn ended(&self) -> bool {
        self.req.sflags & self.resp.sflags & SF_ENDED != 0
    }

    /// Once everything before the FIN is accounted for: a body that runs to the end of the
    /// stream ends, and no response can follow the end of the response stream.
    #[inline(always)]
    pub(super) fn apply_fin<S: Sink>(&mut self, is_req: bool, now: u64, sink: &mut S) {
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
    pub(super) fn skip_to<S: Sink>(&mut self, is_req: bool, upto: u32, now: u64, sink: &mut S) {
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
    pub(super) fn body_ended<S: Sink>(&mut self, is_req: bool, now: u64, sink: &mut S) {
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
    pub(super) fn lose<S: Sink>(&mut self, is_req: bool, sink: &mut S) {
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
    pub(super) fn push_request<S: Sink>(&mut self, m: u8, now: u64, sink: &mut S) {
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
    pub(super) fn complete<S: Sink>(&mut self, status: u16, resp_bytes: u64, now: u64, sink: &mut S) {
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
    pub(super) fn message_done<S: Sink>(&mut self, is_req: bool, now: u64, sink: &mut S) {
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
    pub(super) fn headers_done<S: Sink>(&mut self, is_req: bool, now: u64, sink: &mut S) {
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
        if status == 101 && self.waiting() > 0 {
            self.req.state = S_UPGRADED;
            self.resp.state = S_UPGRADED;
            return;
        }
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
}

/// Clears the per-message fields of a direction; it then waits at a message start.
#[inline(always)]
pub(super) fn reset_message(st: &mut Dir) {
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
