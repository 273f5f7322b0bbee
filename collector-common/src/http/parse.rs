//! HTTP/1.x message syntax, the framer's steps (`Exchange::step`): start lines, header lines
//! and chunk sizes read a word at a time from the direction's window when they are loaded
//! whole, and an exact per-byte state machine for what is cut by a segment's end. Shaped for
//! the BPF verifier as the rest of the framer (see `framer`).

use super::{
    VERSION_1_0, VERSION_1_1,
    bytes::{
        byte_at, byte_bits, find_newline, find_newline_within, le, letters, lowest_flagged_byte, non_digits, pad8,
        parse8, window8,
    },
    framer::*,
    method,
};
use crate::{capture::Sink, drop};

impl Exchange {
    /// One parse step at `pos` of a direction, within a segment that ends at `seg_end`: skips
    /// body bytes; or reads a start line, or up to 8 header lines and the blank line after
    /// them whole (then skipping a Content-Length body's bytes in the segment); or jumps over
    /// the rest of a line of no interest; or feeds one byte to the per-byte parser. The window
    /// must hold the byte at `pos` when the state needs bytes ([`Dir::needs_window`]). Returns
    /// true when nothing more of the segment is to be parsed.
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
            // Its position stays where the new protocol starts.
            S_UPGRADED => return true,
            _ => {}
        }
        let i = pos.wrapping_sub(st.w.base);
        let len = st.w.len;
        if i >= len || len > WINDOW {
            // The driver did not load the bytes (it could not): nothing more from this segment.
            return true;
        }
        if st.state == S_LOST {
            let starts = if is_req {
                i + 8 <= len && known_method(window8(&st.w.buf, i)).is_some()
            } else {
                i + 5 <= len && window8(&st.w.buf, i) & 0xff_ffff_ffff == le(b"HTTP/")
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
            let (size, n) = chunk_size(&st.w.buf, i, len);
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
                    // A body framed by Content-Length goes on in this step (it needs no bytes
                    // loaded): one step fewer for a message with a body.
                    let st = self.dir_mut(is_req);
                    if st.state == S_BODY && after(seg_end, st.pos) {
                        let left = seg_end.wrapping_sub(st.pos) as u64;
                        let n = if st.remaining < left { st.remaining } else { left };
                        st.remaining -= n;
                        st.body += n;
                        st.pos = st.pos.wrapping_add(n as u32);
                        if st.remaining == 0 {
                            self.message_done(is_req, now, sink);
                        }
                    }
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
            let k = find_newline(&st.w.buf, i, len);
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
                        window8(&st.w.buf, k - 8).swap_bytes()
                    } else {
                        let x = window8(&st.w.buf, i) & ((1u64 << (8 * n)) - 1);
                        (st.tail << (8 * n)) | (x.swap_bytes() >> (64 - 8 * n))
                    };
                }
                st.line_pos = st.line_pos.saturating_add(n);
                st.pos = pos.wrapping_add(n);
                return !after(seg_end, st.pos);
            }
        }
        let b = byte_at(&st.w.buf, i);
        st.pos = pos.wrapping_add(1);
        self.feed(is_req, b, now, sink);
        !after(seg_end, self.dir(is_req).pos)
    }

    /// A request line "METHOD target HTTP/1.x" starting at byte `i` of the window, for the
    /// known methods: starts the request and, when the whole line is loaded, moves on to the
    /// headers. Returns the bytes consumed (0: not taken).
    #[inline(always)]
    pub(super) fn request_line<S: Sink>(&mut self, i: u32, len: u32, now: u64, sink: &mut S) -> u32 {
        if i + 8 > len || self.waiting() as usize >= PIPELINE {
            return 0;
        }
        let Some((m, p, word)) = known_method(window8(&self.req.w.buf, i)) else { return 0 };
        self.push_request(m, now, sink);
        let st = &mut self.req;
        st.state = S_REQLINE;
        st.mflags |= MF_METHOD_DONE;
        st.word = word;
        st.tail = (word << 8) | b' ' as u64;
        st.line_pos = p + 1;
        let k = find_newline(&st.w.buf, i + p + 1, len);
        // "M / HTTP/1.1\r\n" at the least: a line break found past "HTTP/1.x\r".
        if k < len && k >= i + p + 11 && k >= 8 {
            let tail = window8(&st.w.buf, k - 8).swap_bytes();
            if tail == V11 || tail == V10 {
                let last = (self.pushed.wrapping_sub(1) as usize) & (PIPELINE - 1);
                self.pending[last].version = if tail == V10 { VERSION_1_0 } else { VERSION_1_1 };
                let st = &mut self.req;
                st.state = S_HEADERS;
                st.line_pos = 0;
                return k + 1 - i;
            }
        }
        p + 1
    }

    /// Feeds one byte to the exact per-byte parser of one direction.
    #[inline(always)]
    pub(super) fn feed<S: Sink>(&mut self, is_req: bool, b: u8, now: u64, sink: &mut S) {
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
                    let version = if st.tail == V10 { VERSION_1_0 } else { VERSION_1_1 };
                    st.state = S_HEADERS;
                    if self.waiting() > 0 {
                        let last = (self.pushed.wrapping_sub(1) as usize) & (PIPELINE - 1);
                        self.pending[last].version = version;
                    }
                    let st = &mut self.req;
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
    let p = lowest_flagged_byte(spaces);
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
    let w0 = window8(&st.w.buf, i);
    let w1 = window8(&st.w.buf, i + 8);
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
        let k = find_newline(&st.w.buf, i + 13, len);
        if k < len && k > i + 13 {
            st.state = S_HEADERS;
            st.line_pos = 0;
            return k + 1 - i;
        }
        st.line_pos = 13;
        return 13;
    }
    if after == b'\r' && i + 14 < len && byte_at(&st.w.buf, i + 13) == b'\n' {
        st.state = S_HEADERS;
        st.line_pos = 0;
        return 14;
    }
    // Anything else goes through the per-byte parser from the code's end.
    st.line_pos = 12;
    12
}

/// Header lines from a line start at byte `i`: lines of no interest are skipped and a
/// Content-Length value is read whole, up to 8 lines and the blank line after them. Returns
/// the bytes consumed (0: decide byte by byte) and whether they ended with the blank line that
/// closes the headers. The stream is left at a line start, inside a skippable line, or at a
/// framing header's value.
#[inline(always)]
fn header_lines(st: &mut Dir, i: u32, len: u32) -> (u32, bool) {
    let mut j = i;
    let mut lines = 0;
    loop {
        // One range for every way of reaching here, so the verifier prunes the loop instead
        // of following each line length separately (j stays at or below WINDOW; the mask,
        // twice the window's size, is exact).
        j = launder(st, j) & (2 * WINDOW - 1);
        if j >= len {
            break;
        }
        let b = byte_at(&st.w.buf, j);
        if b == b'\n' {
            return (j + 1 - i, true);
        }
        if b == b'\r' {
            if j + 1 < len && byte_at(&st.w.buf, j + 1) == b'\n' {
                return (j + 2 - i, true);
            }
            break;
        }
        // After 8 lines only the blank line that ends the headers (above) is taken in this
        // step: a head of 8 header lines (nginx's) ends in it.
        if lines == 8 {
            break;
        }
        let l = b | 0x20;
        if (l == b'c' && j + 15 > len) || (l == b't' && j + 18 > len) {
            // A name cut by the end of the loaded bytes: byte by byte.
            break;
        }
        if l == b'c' {
            let w0 = window8(&st.w.buf, j) | CL_MASK0;
            let w1 = (window8(&st.w.buf, j + 8) & 0x00ff_ffff_ffff_ffff) | CL_MASK1;
            if w0 == CL_WORD0 && w1 == CL_WORD1 {
                let (value, next) = content_length(&st.w.buf, j + 15, len);
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
            let w0 = window8(&st.w.buf, j) | TE_MASK0;
            let w1 = window8(&st.w.buf, j + 8) | TE_MASK1;
            let w2 = (window8(&st.w.buf, j + 16) & 0xffff) | TE_MASK2;
            if w0 == TE_WORD0 && w1 == TE_WORD1 && w2 == TE_WORD2 {
                st.hmatch = M_TE_VAL;
                st.hidx = 0;
                st.line_pos = 18;
                return (j + 18 - i, false);
            }
        }
        // A line of no interest: to its line break.
        // Within the next 16 words: a longer line goes on in the next steps (skipped there).
        let k = find_newline_within::<16>(&st.w.buf, j + 1, len);
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
        lowest_flagged_byte(nd0)
    } else if nd1 != 0 {
        8 + lowest_flagged_byte(nd1)
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
    let n = lowest_flagged_byte(bad);
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
