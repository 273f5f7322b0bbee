//! HTTP/2 (RFC 9113), the part shared by the kernel programs and the daemon.
//!
//! The kernel follows each direction of a connection frame by frame (`framer`: the 9-byte
//! frame headers, by stream position through the capture's seam, skipping DATA payloads by
//! length) and hands the daemon, through a bounded ring buffer, one [`Event`] per frame that
//! matters: the frame's header, and for HEADERS, CONTINUATION and SETTINGS frames their payload
//! in chunks of up to [`CHUNK`] bytes. Header blocks are HPACK-compressed with a table that
//! lives for the whole connection (RFC 7541), which only a decoder that sees every block in
//! order can follow; the daemon decodes them as they come (`collector/src/http2/`), keeps the
//! few values it labels with (`:method`, `:status`, `content-type`, `grpc-status`, and `:path`
//! of gRPC calls) and drops the rest at once. DATA payloads never leave the kernel.

pub mod framer;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
mod stream;
#[cfg(test)]
mod tests_framer;

/// The client's connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Length of a frame header.
pub const FRAME_HEADER: u32 = 9;

// Frame types (RFC 9113 §6).
pub const DATA: u8 = 0;
pub const HEADERS: u8 = 1;
pub const PRIORITY: u8 = 2;
pub const RST_STREAM: u8 = 3;
pub const SETTINGS: u8 = 4;
pub const PUSH_PROMISE: u8 = 5;
pub const PING: u8 = 6;
pub const GOAWAY: u8 = 7;
pub const WINDOW_UPDATE: u8 = 8;
pub const CONTINUATION: u8 = 9;

// Frame flags.
pub const FLAG_END_STREAM: u8 = 0x1;
pub const FLAG_ACK: u8 = 0x1;
pub const FLAG_END_HEADERS: u8 = 0x4;
pub const FLAG_PADDED: u8 = 0x8;
pub const FLAG_PRIORITY: u8 = 0x20;

/// Payload bytes an event carries at most (the capture's window).
pub const CHUNK: usize = crate::capture::WINDOW as usize;

/// Size of an HTTP/2 TLS connection's value in `TLS_H2_CONNS` (asserted by the kernel crate),
/// for the daemon's sweep of connections whose process is gone.
pub const TLS_H2_CONN_SIZE: usize = 752;

/// Largest frame payload followed: SETTINGS_MAX_FRAME_SIZE's upper limit (2^24 - 1).
pub const MAX_FRAME: u32 = (1 << 24) - 1;

// `Event::kind`.
/// A frame, or a chunk of one's payload (`off`, `n`, `data`).
pub const EV_FRAME: u8 = 1;
/// The direction lost its place in the stream (bytes it needed are gone, or a frame header
/// that is not HTTP/2's): no more events of it; the streams it carried are given up and the
/// connection's HPACK table can no longer be followed.
pub const EV_LOST: u8 = 2;
/// The connection ended (both streams ended, reset, or closed): its state can go.
pub const EV_CLOSED: u8 = 3;
/// An HTTP/1.1 connection switched to HTTP/2 (`Upgrade: h2c`, answered 101): the request that
/// asked is stream 1, `fflags` its method (`http::method`), `ns` when it started; the
/// connection's first event.
pub const EV_UPGRADE: u8 = 4;

/// One event of an HTTP/2 connection, from the kernel to the daemon (ring buffer `HTTP2_EVENTS`).
///
/// Frames of one direction come in stream order; those of the two directions of a connection
/// interleave as the programs saw them. A frame's events:
/// - HEADERS, CONTINUATION, SETTINGS, PUSH_PROMISE: one per chunk of the payload (`off` its
///   offset in the payload, `n` its length; one with `n == 0` for an empty payload), `ns` when
///   the chunk's bytes passed (the first chunk: the frame's first byte);
/// - DATA, RST_STREAM: one, `n == 0`, `ns` when the frame's last byte passed;
/// - other frame types: none.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Event {
    /// The socket's cookie: the connection's key.
    pub cookie: u64,
    pub ns: u64,
    /// As `capture::conn::Ident` in the kernel: who the connection is counted for.
    pub cgroup_id: u64,
    pub comm: [u8; 16],
    pub addr: [u8; 16],
    pub local_port: u16,
    pub peer_port: u16,
    pub family: u8,
    /// `ROLE_SERVER` (1) or `ROLE_CLIENT` (2).
    pub role: u8,
    /// `http::SCHEME_HTTP` or `SCHEME_HTTPS`.
    pub scheme: u8,
    /// 1: the requests' direction (client to server); 0: the responses'.
    pub is_req: u8,
    pub kind: u8,
    pub ftype: u8,
    pub fflags: u8,
    /// Where the chunk's bytes start in `data` (a window loaded from the reorder stash starts
    /// at the 8-byte boundary below the chunk).
    pub at: u8,
    /// The frame's stream identifier (reserved bit cleared).
    pub stream: u32,
    /// The frame's payload length.
    pub flen: u32,
    pub off: u32,
    pub n: u32,
    /// The connection's event counter (both directions), one per event the framer made: a gap
    /// means events were lost on the way (the ring buffer was full).
    pub seq: u32,
    pub data: [u8; CHUNK],
}

impl Event {
    pub const ZERO: Event = Event {
        cookie: 0,
        ns: 0,
        cgroup_id: 0,
        comm: [0; 16],
        addr: [0; 16],
        local_port: 0,
        peer_port: 0,
        family: 0,
        role: 0,
        scheme: 0,
        is_req: 0,
        kind: 0,
        ftype: 0,
        fflags: 0,
        at: 0,
        stream: 0,
        flen: 0,
        off: 0,
        n: 0,
        seq: 0,
        data: [0; CHUNK],
    };
}

crate::impl_pod!(Event);

/// What the framer reports of one frame (the kernel fills the rest of an [`Event`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Frame {
    /// When the event's bytes passed (see [`Event`]).
    pub ns: u64,
    pub seq: u32,
    pub is_req: bool,
    pub kind: u8,
    pub ftype: u8,
    pub fflags: u8,
    pub stream: u32,
    pub flen: u32,
    /// Offset in the payload of the chunk, and its length (its bytes: `n` of the direction's
    /// window from byte `at`, see [`crate::capture::Sink::frame`]).
    pub off: u32,
    pub n: u32,
    pub at: u32,
}

/// Whether a frame type's payload goes to the daemon (header blocks, SETTINGS for the header
/// table size, and the first [`GOAWAY_SENT`] bytes of GOAWAY for its last stream id).
#[inline(always)]
pub fn carries_payload(ftype: u8) -> bool {
    matches!(ftype, HEADERS | CONTINUATION | SETTINGS | PUSH_PROMISE | GOAWAY)
}

/// The bytes of a GOAWAY frame's payload that go to the daemon: the last stream id and the
/// error code (RFC 9113 §6.8), not the debug data after them.
pub const GOAWAY_SENT: u32 = 8;

/// Word `i` of a window (`v`: bytes [8i, 8i + 8), the first in the low bits) with only the
/// bytes of a chunk `[lo, hi)` kept, the others zero: what an event carries of the window (the
/// rest may be other frames' bytes, a DATA payload or a GOAWAY's debug data, which never leave
/// the kernel).
#[inline(always)]
pub fn chunk_word(v: u64, i: u32, lo: u32, hi: u32) -> u64 {
    let start = i * 8;
    if start + 8 <= lo || start >= hi {
        return 0;
    }
    let mut v = v;
    if start < lo {
        v &= u64::MAX.wrapping_shl((lo - start) * 8);
    }
    if start + 8 > hi {
        v &= u64::MAX.wrapping_shr((start + 8 - hi) * 8);
    }
    v
}

/// Whether a frame type gets an event without payload, at its last byte.
#[inline(always)]
pub fn reported_at_end(ftype: u8) -> bool {
    matches!(ftype, DATA | RST_STREAM)
}

/// Whether 8 bytes (little-endian, as `capture::detect` reads them) can start the frames a
/// server sends first: a SETTINGS frame on stream 0, not an ACK, whose length is a multiple of
/// 6 below 64 settings (RFC 9113 §3.4: the server's preface).
#[inline(always)]
pub fn is_server_preface(head: u64) -> bool {
    let b = head.to_le_bytes();
    let len = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
    b[3] == SETTINGS
        && b[4] & FLAG_ACK == 0
        && b[5] & 0x7f == 0
        && b[6] == 0
        && b[7] == 0
        && len.is_multiple_of(6)
        && len < 6 * 64
}

/// [`midstream_join`]: a HEADERS frame that opens a request.
pub const JOIN_REQUEST: u8 = 1;
/// [`midstream_join`]: a HEADERS frame that carries a response's head.
pub const JOIN_RESPONSE: u8 = 2;
/// [`midstream_join`]: a HEADERS frame whose first field does not tell (a dynamic table entry,
/// a size update, a regular field: trailers).
pub const JOIN_HEADERS: u8 = 3;
/// Largest frame [`midstream_join`] takes: SETTINGS_MAX_FRAME_SIZE's initial value.
pub const JOIN_MAX_FRAME: u32 = 16384;

/// Where a connection is seen from the middle of its streams (it was open before the collector
/// started), whether bytes that start a segment of one direction (`lo`, `hi`: its first 16
/// bytes, little-endian, as the capture reads them; `avail`: how many it has) start a frame to
/// follow the direction from: a whole HEADERS frame (END_HEADERS, stream id odd, at most
/// [`JOIN_MAX_FRAME`] bytes, all in the segment) whose header block begins with a pseudo-header
/// field (RFC 9113 §8.3: they come first) named by the static table — `:authority`,
/// `:method`, `:path` or `:scheme` ([`JOIN_REQUEST`]), or `:status` ([`JOIN_RESPONSE`]) —
/// or with another first field ([`JOIN_HEADERS`]: enough where the direction is known); 0
/// otherwise. Writers put a frame at the start of most writes, and most requests' and
/// responses' first field is one of these. A frame header's bytes are not recognisable as such,
/// so this can take another protocol's bytes for a frame; the framer then loses its place at
/// the first frame that makes no sense (`EV_LOST`).
#[inline(always)]
pub fn midstream_join(lo: u64, hi: u64, avail: u32) -> u8 {
    let byte = |i: u32| if i < 8 { (lo >> (i * 8)) as u8 } else { (hi >> ((i - 8) * 8)) as u8 };
    let flen = (byte(0) as u32) << 16 | (byte(1) as u32) << 8 | byte(2) as u32;
    let flags = byte(4);
    let stream = (byte(5) as u32) << 24 | (byte(6) as u32) << 16 | (byte(7) as u32) << 8 | byte(8) as u32;
    let known = FLAG_END_STREAM | FLAG_END_HEADERS | FLAG_PADDED | FLAG_PRIORITY;
    if byte(3) != HEADERS
        || flags & !known != 0
        || flags & FLAG_END_HEADERS == 0
        || stream & 0x8000_0001 != 1
        || flen == 0
        || flen > JOIN_MAX_FRAME
        || flen + FRAME_HEADER > avail
    {
        return 0;
    }
    // Pad length, then the priority fields (RFC 9113 §6.2).
    let padded = flags & FLAG_PADDED != 0;
    let skip = padded as u32 + if flags & FLAG_PRIORITY != 0 { 5 } else { 0 };
    let pad = if padded { byte(FRAME_HEADER) as u32 } else { 0 };
    if skip + pad >= flen {
        return 0;
    }
    // The first field's name: indexed (§6.1), literal with incremental indexing (§6.2.1), or
    // without or never indexed (§6.2.2, §6.2.3); a size update (§6.3) is not taken.
    let x = byte(FRAME_HEADER + skip);
    let name = if x & 0x80 != 0 {
        x & 0x7f
    } else if x & 0xc0 == 0x40 {
        x & 0x3f
    } else if x & 0xe0 == 0x20 {
        0
    } else {
        x & 0x0f
    };
    match name {
        1..=7 => JOIN_REQUEST,
        8..=14 => JOIN_RESPONSE,
        _ => JOIN_HEADERS,
    }
}
