//! The HTTP/2 framer: follows both byte streams of a connection frame by frame, by stream
//! position, as the capture hands them over (`crate::capture::Stream`, in `stream.rs`). Per
//! direction it reads each 9-byte frame header (also when a segment boundary cuts it), hands
//! the payloads of HEADERS, CONTINUATION, SETTINGS and PUSH_PROMISE frames to the sink in
//! chunks of the window (of a GOAWAY frame, its first 8 bytes only: the last stream id and the
//! error code, never its debug data), and skips every other payload by its length, without its bytes (so a
//! gap inside a DATA payload costs nothing). Header blocks are not decoded here: HPACK's table
//! spans the connection, and the daemon decodes the chunks (`collector/src/http2/`).
//!
//! HTTP/2 has no message boundary to re-synchronise on: a direction whose needed bytes are
//! gone (or whose frames stop making sense) reports `EV_LOST` and is followed no further. A
//! connection seen from the middle of its streams (open before the collector started) is
//! followed from a segment that starts with a request's or a response's HEADERS frame
//! (`super::midstream_join`), and its other direction from its first segment that starts with
//! one of its own ([`S_SEEK`]).

use crate::{
    capture::{Sink, WINDOW, after},
    drop,
    http::{byte_at, window8},
};

pub use crate::capture::Window;

use super::{
    CONTINUATION, EV_CLOSED, EV_FRAME, EV_LOST, FLAG_ACK, FRAME_HEADER, Frame, GOAWAY, GOAWAY_SENT, HEADERS,
    JOIN_HEADERS, JOIN_REQUEST, JOIN_RESPONSE, PREFACE, PUSH_PROMISE, SETTINGS, midstream_join, reported_at_end,
};

// Direction states.
/// The client's preface (`remaining` bytes of it left), skipped by position.
pub const S_PREFACE: u8 = 0;
/// A frame header (`got` of its 9 bytes read).
pub const S_HEAD: u8 = 1;
/// A payload that goes to the sink (`remaining` left), chunk by chunk.
pub const S_CHUNKS: u8 = 2;
/// A payload skipped by position (`remaining` left).
pub const S_SKIP: u8 = 3;
/// Nothing more to follow on this direction (ended, or its place lost).
pub const S_IGNORE: u8 = 4;
/// A direction of a connection seen from its middle, whose frames are not found yet: each
/// segment that starts at or beyond everything seen of it is looked at for a HEADERS frame of
/// its own (`super::midstream_join`), from which it is followed.
pub const S_SEEK: u8 = 5;
/// Bytes [`S_SEEK`] looks at (`super::midstream_join`'s).
const SEEK_BYTES: u32 = 16;

// Stream flags (`Dir::sflags`).
/// `pos` and `hi` hold positions of this stream.
pub const SF_SYNCED: u8 = 1;
/// The stream's FIN has been seen at `fin`.
pub const SF_FIN: u8 = 2;
/// Everything before the FIN is accounted for.
pub const SF_ENDED: u8 = 4;

/// States whose bytes are skipped by position.
#[inline(always)]
pub fn skippable(state: u8) -> bool {
    state == S_PREFACE || state == S_SKIP
}

/// States that need the bytes at `pos`.
#[inline(always)]
pub fn needs_bytes(state: u8) -> bool {
    state == S_HEAD || state == S_CHUNKS
}

/// One direction of a connection.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Dir {
    /// Position of the next byte the framer needs or skips.
    pub pos: u32,
    /// One past the highest position seen on this direction.
    pub hi: u32,
    /// Position of the FIN (valid with `SF_FIN`).
    pub fin: u32,
    /// Payload (or preface) bytes left of the current frame.
    pub remaining: u32,
    /// The current frame's payload length and stream.
    pub flen: u32,
    pub stream: u32,
    pub state: u8,
    pub sflags: u8,
    pub ftype: u8,
    pub fflags: u8,
    /// Bytes of the frame header read so far (into `head`, first byte lowest).
    pub got: u32,
    pub head: u64,
    /// The header's ninth byte.
    pub head9: u64,
    /// The bytes a step reads (see [`Window`]).
    pub w: Window,
}

impl Dir {
    pub const ZERO: Dir = Dir {
        pos: 0,
        hi: 0,
        fin: 0,
        remaining: 0,
        flen: 0,
        stream: 0,
        state: S_HEAD,
        sflags: 0,
        ftype: 0,
        fflags: 0,
        got: 0,
        head: 0,
        head9: 0,
        w: Window::ZERO,
    };

    /// Starts following this direction at position `pos`: its first byte, the client's preface
    /// on the requests' direction.
    #[inline(always)]
    pub fn sync(&mut self, pos: u32, preface: bool) {
        self.pos = pos;
        self.hi = pos;
        self.sflags = SF_SYNCED;
        self.got = 0;
        if preface {
            self.state = S_PREFACE;
            self.remaining = PREFACE.len() as u32;
        } else {
            self.state = S_HEAD;
            self.remaining = 0;
        }
    }

    /// The bytes the next step needs loaded into the window, `(position, length)`, when the
    /// window does not hold them: a frame header wants its 9 bytes together where the segment
    /// has them (and a segment looked at for a frame to join at its first 16); a chunk of
    /// payload starts the window (its bytes go out as they lie there).
    #[inline(always)]
    pub fn needs_window(&self, seg_end: u32) -> Option<(u32, u32)> {
        let pos = self.pos;
        if !after(seg_end, pos) || !(needs_bytes(self.state) || self.state == S_SEEK) {
            return None;
        }
        let base = self.w.base;
        let loaded_end = base.wrapping_add(self.w.len);
        let inside = !after(base, pos) && after(loaded_end, pos);
        let ok = if self.state == S_CHUNKS {
            // A chunk goes out from where it lies in the window (the packet driver loads from
            // `pos`, the stash from the 8-byte boundary below it).
            inside
        } else {
            let want = if self.state == S_SEEK { SEEK_BYTES } else { FRAME_HEADER - self.got };
            inside && (loaded_end.wrapping_sub(pos) >= want || !after(seg_end, loaded_end))
        };
        if ok {
            return None;
        }
        let left = seg_end.wrapping_sub(pos);
        Some((pos, if left < WINDOW { left } else { WINDOW }))
    }
}

/// Both directions of one HTTP/2 connection.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct H2 {
    pub req: Dir,
    pub resp: Dir,
    /// Events made so far (see `Event::seq`).
    pub events: u32,
    /// Nonzero once `EV_CLOSED` went out.
    pub closed: u32,
}

impl H2 {
    pub const ZERO: H2 = H2 { req: Dir::ZERO, resp: Dir::ZERO, events: 0, closed: 0 };

    #[inline(always)]
    pub fn dir(&self, is_req: bool) -> &Dir {
        if is_req { &self.req } else { &self.resp }
    }

    #[inline(always)]
    pub fn dir_mut(&mut self, is_req: bool) -> &mut Dir {
        if is_req { &mut self.req } else { &mut self.resp }
    }

    /// Follows a connection seen from its middle: direction `is_req` from `pos`, a HEADERS
    /// frame's first byte (`super::midstream_join`), the other from its first segment that
    /// starts with one of its own ([`S_SEEK`]). After `Stream::start`.
    #[inline(always)]
    pub fn join(&mut self, is_req: bool, pos: u32) {
        self.dir_mut(is_req).sync(pos, false);
        let other = self.dir_mut(!is_req);
        other.sflags = 0;
        other.state = S_HEAD;
    }

    /// Reports an event of direction `is_req` (`kind`, with the current frame's fields; a chunk
    /// of `n` bytes at payload offset `off`, the window's from byte `at`).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn emit<S: Sink>(&mut self, is_req: bool, kind: u8, off: u32, n: u32, at: u32, now: u64, sink: &mut S) {
        let seq = self.events;
        self.events = seq.wrapping_add(1);
        let d = self.dir(is_req);
        let f = Frame {
            ns: now,
            seq,
            is_req,
            kind,
            ftype: d.ftype,
            fflags: d.fflags,
            stream: d.stream,
            flen: d.flen,
            off,
            n,
            at,
        };
        sink.frame(&f, &d.w);
    }

    /// The connection ends: reported once.
    #[inline(always)]
    pub fn close<S: Sink>(&mut self, sink: &mut S) {
        if self.closed == 0 {
            self.closed = 1;
            self.emit(true, EV_CLOSED, 0, 0, 0, 0, sink);
        }
    }

    /// Bytes this direction needed are gone, or its frames make no sense: reported, and the
    /// direction followed no further.
    #[inline(always)]
    pub fn lose<S: Sink>(&mut self, is_req: bool, reason: u32, now: u64, sink: &mut S) {
        sink.dropped(reason);
        self.emit(is_req, EV_LOST, 0, 0, 0, now, sink);
        self.dir_mut(is_req).state = S_IGNORE;
    }

    /// Positional bookkeeping for `[seq, seq + len)` of a direction (`Stream::arrive`).
    #[inline(always)]
    pub fn arrive<S: Sink>(&mut self, is_req: bool, seq: u32, len: u32, frontier: u32, now: u64, sink: &mut S) -> bool {
        let end = seq.wrapping_add(len);
        let d = self.dir_mut(is_req);
        if d.sflags & SF_SYNCED == 0 {
            // A direction whose start was not known when the connection was set up: its frames
            // are looked for.
            d.sync(seq, false);
            d.state = S_SEEK;
        }
        if after(end, d.hi) {
            d.hi = end;
        }
        if !after(end, d.pos) || len == 0 || d.state == S_IGNORE {
            return false;
        }
        if d.state == S_SEEK {
            // Only a segment that starts at or beyond everything seen may start the frames.
            if after(d.pos, seq) {
                d.pos = end;
                return false;
            }
            d.pos = seq;
            return true;
        }
        if after(seq, d.pos) && skippable(d.state) {
            // A gap inside a skipped payload: the missing bytes are its bytes.
            self.skip_to(is_req, seq, now, sink);
        }
        let d = self.dir(is_req);
        if !after(seq, d.pos) || !needs_bytes(d.state) {
            return d.state != S_IGNORE;
        }
        // The bytes at `pos` are missing: still to come (a retransmission), unless the socket has
        // taken them in order already without them passing here.
        if after(frontier, d.pos) {
            self.lose(is_req, drop::HTTP_OUT_OF_ORDER, now, sink);
        }
        false
    }

    /// Skips payload bytes by position up to `upto` (which may lie in a gap): a payload that ends
    /// before it ends (reported at its end when its type is).
    #[inline(always)]
    pub fn skip_to<S: Sink>(&mut self, is_req: bool, upto: u32, now: u64, sink: &mut S) {
        let d = self.dir_mut(is_req);
        if !after(upto, d.pos) || !skippable(d.state) {
            return;
        }
        let adv = upto.wrapping_sub(d.pos);
        let n = if d.remaining < adv { d.remaining } else { adv };
        d.pos = d.pos.wrapping_add(n);
        d.remaining -= n;
        if d.remaining == 0 {
            self.payload_end(is_req, now, sink);
        }
    }

    /// The current payload (or the preface) has ended.
    #[inline(always)]
    fn payload_end<S: Sink>(&mut self, is_req: bool, now: u64, sink: &mut S) {
        let d = self.dir(is_req);
        if d.state != S_PREFACE && reported_at_end(d.ftype) {
            self.emit(is_req, EV_FRAME, 0, 0, 0, now, sink);
        }
        let d = self.dir_mut(is_req);
        d.state = S_HEAD;
        d.got = 0;
    }

    /// One parse step of a direction within bytes that end at `seg_end`, from the window (the
    /// capture loaded what [`Dir::needs_window`] asked for). True when nothing more of them is
    /// to be parsed.
    #[inline(always)]
    pub fn step<S: Sink>(&mut self, is_req: bool, seg_end: u32, now: u64, sink: &mut S) -> bool {
        let d = self.dir_mut(is_req);
        if !after(seg_end, d.pos) {
            return true;
        }
        match d.state {
            S_PREFACE | S_SKIP => {
                self.skip_to(is_req, seg_end, now, sink);
            }
            S_HEAD => {
                let loaded_end = d.w.base.wrapping_add(d.w.len);
                let end = if after(seg_end, loaded_end) { loaded_end } else { seg_end };
                // Header bytes, one at a time (at most 9 in a step).
                let mut k = 0;
                while k < FRAME_HEADER {
                    if d.got >= FRAME_HEADER || !after(end, d.pos) {
                        break;
                    }
                    let i = d.pos.wrapping_sub(d.w.base);
                    if i >= WINDOW {
                        break;
                    }
                    let b = byte_at(&d.w.buf, i) as u64;
                    if d.got < 8 {
                        d.head |= b << ((d.got & 7) * 8);
                    } else {
                        d.head9 = b;
                    }
                    d.got += 1;
                    d.pos = d.pos.wrapping_add(1);
                    k += 1;
                }
                if d.got < FRAME_HEADER {
                    return !after(seg_end, d.pos) || k == 0;
                }
                self.frame_header(is_req, now, sink);
            }
            S_CHUNKS => {
                let at = d.pos.wrapping_sub(d.w.base);
                if at >= d.w.len || d.w.len > WINDOW {
                    return true;
                }
                let avail = d.w.len - at;
                let n = if d.remaining < avail { d.remaining } else { avail };
                let left = seg_end.wrapping_sub(d.pos);
                let n = if n < left { n } else { left };
                if n == 0 {
                    return true;
                }
                let off = d.flen - d.remaining;
                // A GOAWAY frame's first bytes only (its debug data stays here).
                let n = if d.ftype == GOAWAY && off + n > GOAWAY_SENT { GOAWAY_SENT.saturating_sub(off) } else { n };
                if n == 0 {
                    d.state = S_SKIP;
                    return false;
                }
                self.emit(is_req, EV_FRAME, off, n, at, now, sink);
                let d = self.dir_mut(is_req);
                d.pos = d.pos.wrapping_add(n);
                d.remaining -= n;
                if d.remaining == 0 {
                    d.state = S_HEAD;
                    d.got = 0;
                } else if d.ftype == GOAWAY && d.flen - d.remaining >= GOAWAY_SENT {
                    d.state = S_SKIP;
                }
            }
            S_SEEK => {
                // The first 16 bytes, loaded unless the segment is shorter (`needs_window`); the
                // frame must lie in the segment, not in the window.
                let i = d.pos.wrapping_sub(d.w.base);
                let avail = seg_end.wrapping_sub(d.pos);
                // Its own kind of head, or a HEADERS frame that does not tell (the direction is
                // known: what matters is where its frames start).
                let own = if is_req { JOIN_REQUEST } else { JOIN_RESPONSE };
                let found = if i >= d.w.len || d.w.len > WINDOW || (d.w.len - i < SEEK_BYTES && d.w.len - i < avail) {
                    0
                } else {
                    midstream_join(window8(&d.w.buf, i), window8(&d.w.buf, i + 8), avail)
                };
                if found != own && found != JOIN_HEADERS {
                    d.pos = seg_end;
                    return true;
                }
                d.state = S_HEAD;
                d.got = 0;
                return false;
            }
            _ => return true,
        }
        !after(seg_end, self.dir(is_req).pos) || self.dir(is_req).state == S_IGNORE
    }

    /// A frame header has been read (`head`, `head9`): the payload's state.
    #[inline(always)]
    fn frame_header<S: Sink>(&mut self, is_req: bool, now: u64, sink: &mut S) {
        let d = self.dir_mut(is_req);
        let h = d.head;
        let flen = ((h & 0xff) as u32) << 16 | ((h >> 8 & 0xff) as u32) << 8 | (h >> 16 & 0xff) as u32;
        let ftype = (h >> 24) as u8;
        let fflags = (h >> 32) as u8;
        let stream = (((h >> 40 & 0x7f) as u32) << 24
            | ((h >> 48 & 0xff) as u32) << 16
            | ((h >> 56) as u32) << 8
            | d.head9 as u32)
            & 0x7fff_ffff;
        d.head = 0;
        d.head9 = 0;
        d.got = 0;
        d.flen = flen;
        d.ftype = ftype;
        d.fflags = fflags;
        d.stream = stream;
        d.remaining = flen;
        // Frames a peer may not send (RFC 9113 §6): HEADERS and CONTINUATION on stream 0,
        // SETTINGS on another; taken for a lost place rather than followed.
        let header_block = ftype == HEADERS || ftype == CONTINUATION || ftype == PUSH_PROMISE;
        if (header_block && stream == 0) || (ftype == SETTINGS && (stream != 0 || !flen.is_multiple_of(6))) {
            self.lose(is_req, drop::HTTP_DESYNC, now, sink);
            return;
        }
        // SETTINGS acknowledgements carry nothing the daemon needs; every other SETTINGS frame
        // goes, empty ones too (each endpoint's first frame is one: the daemon knows from it
        // that it saw the direction from its start).
        // A GOAWAY frame's last stream id tells which requests the server will not answer.
        let to_sink = header_block
            || (ftype == SETTINGS && fflags & FLAG_ACK == 0)
            || (ftype == GOAWAY && stream == 0 && flen >= GOAWAY_SENT);
        if to_sink {
            if flen == 0 {
                self.emit(is_req, EV_FRAME, 0, 0, 0, now, sink);
            } else {
                self.dir_mut(is_req).state = S_CHUNKS;
            }
        } else if flen == 0 {
            self.payload_end(is_req, now, sink);
        } else {
            self.dir_mut(is_req).state = S_SKIP;
        }
    }

    /// After a piece of a direction: payload bytes that arrived beyond `pos` earlier (up to
    /// `hi`) are known to exist, and the FIN.
    #[inline(always)]
    pub fn settle<S: Sink>(&mut self, is_req: bool, now: u64, sink: &mut S) {
        let hi = self.dir(is_req).hi;
        self.skip_to(is_req, hi, now, sink);
        self.apply_fin(is_req);
    }

    /// Every byte of the received direction before `upto` has reached the socket in order.
    #[inline(always)]
    pub fn reached<S: Sink>(&mut self, is_req: bool, upto: u32, now: u64, sink: &mut S) {
        let d = self.dir_mut(is_req);
        if d.sflags & SF_SYNCED == 0 || !skippable(d.state) {
            return;
        }
        if after(upto, d.hi) {
            d.hi = upto;
        }
        self.skip_to(is_req, upto, now, sink);
        self.apply_fin(is_req);
    }

    /// The stream of a direction ends at `fin`.
    #[inline(always)]
    pub fn fin<S: Sink>(&mut self, is_req: bool, fin: u32, now: u64, sink: &mut S) {
        let d = self.dir_mut(is_req);
        if d.sflags & SF_SYNCED == 0 || d.state == S_SEEK {
            d.sync(fin, false);
            d.state = S_IGNORE;
        }
        d.fin = fin;
        d.sflags |= SF_FIN;
        if after(fin, d.hi) {
            d.hi = fin;
        }
        self.skip_to(is_req, fin, now, sink);
        self.apply_fin(is_req);
    }

    /// Once everything before the FIN is accounted for, the direction has ended.
    #[inline(always)]
    fn apply_fin(&mut self, is_req: bool) {
        let d = self.dir_mut(is_req);
        if d.sflags & (SF_FIN | SF_ENDED) != SF_FIN {
            return;
        }
        if d.state != S_IGNORE && after(d.fin, d.pos) {
            return;
        }
        d.sflags |= SF_ENDED;
        d.state = S_IGNORE;
    }

    /// Whether both streams have ended.
    #[inline(always)]
    pub fn ended(&self) -> bool {
        self.req.sflags & self.resp.sflags & SF_ENDED != 0
    }
}
