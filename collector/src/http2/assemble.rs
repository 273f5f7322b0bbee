//! Turns the HTTP/2 frame events of the kernel ([`Event`]) into completed exchanges ([`Done`]):
//! one per stream a client opened, from the first byte of its request's headers to the event
//! that ended its response.
//!
//! Header blocks are HPACK-compressed (RFC 7541) against a dynamic table per direction that
//! lives as long as the connection, so each direction has its own decoder ([`hpack`]) that
//! sees every block in order: request, response, trailer and PUSH_PROMISE blocks alike, also
//! those of streams that are not followed. A SETTINGS_HEADER_TABLE_SIZE that one endpoint sends
//! bounds the table of the blocks it receives, and is applied when the SETTINGS frame passes
//! (not at its ACK: an encoder cannot use a larger table before it has received the value; a
//! lowered value can make a block sent before its arrival look invalid, which then counts as a
//! decoding error).
//!
//! Privacy: of the header values decoded, only `:method`, `:status`, whether `content-type` is
//! gRPC's, `grpc-status` and, for gRPC requests only, `:path` are kept; the others are looked at
//! by name and dropped at once, never logged, and the buffer that gathers a block is cleared as
//! soon as it is decoded. The decoders' dynamic tables hold what the peers' encoders indexed,
//! as HPACK requires (at most [`Limits::table`] bytes each, as HPACK counts them), until the
//! connection ends.
//!
//! Where a direction's table can no longer be known — a connection followed from its middle
//! (opened before the collector started: the kernel picks it up at a request's or response's
//! HEADERS frame), bytes of it lost (a gap in a frame's chunks, a frame cut short, events the
//! kernel could not send), a block that does not decode or is larger than [`Limits::block`],
//! frames against HTTP/2's rules — the block where it happened is not decoded, and the decoder
//! goes on with a *partial* table ([`hpack`]'s "Partial tables"): the static table and the
//! entries added from then on are known, older dynamic entries are not. A stream whose blocks
//! referred to an unknown entry (or was not decoded) still completes, with `certain: false` and
//! the labels that were known (method `OTHER` (0) and status 0 where not; a gRPC call whose
//! `content-type` was unknown counts as an HTTP exchange).
//!
//! Approximations: a DATA frame's whole payload length counts as body bytes (padding included).
//! Whole frames that the kernel could not deliver go unnoticed unless they break the framing
//! (a CONTINUATION with no block open, a block not continued) or the decoding. Pushed streams
//! (server push, even stream ids) are not reported: their PUSH_PROMISE and HEADERS blocks are
//! decoded only to keep the server's table in step.
use std::collections::{BTreeMap, HashMap};

use collector_common::http2::{EV_CLOSED, EV_FRAME, EV_LOST, EV_UPGRADE, Event};

use super::conn::Conn;
#[cfg(test)]
use super::hpack;

/// Bounds on what the assembler keeps. A connection holds two dynamic tables of up to
/// [`Limits::table`] bytes each and, while a header block is gathered, up to [`Limits::block`]
/// bytes of it; a stream about a hundred bytes (and a gRPC call its method's name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections followed at once (at least one is): a new one beyond evicts the least
    /// recently active, whose open streams are abandoned.
    pub conns: usize,
    /// Streams open at once on one connection: a request beyond is not followed.
    pub streams: usize,
    /// Bytes of one header block (without padding and priority fields): a larger block breaks
    /// its direction.
    pub block: usize,
    /// Largest dynamic table followed (bytes as HPACK counts them; HTTP/2's initial 4096 always
    /// is): an endpoint's SETTINGS_HEADER_TABLE_SIZE above it is followed only up to it, and a
    /// table size update beyond it breaks the direction.
    pub table: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { conns: 16384, streams: 256, block: 64 << 10, table: 64 << 10 }
    }
}

/// What the assembler gave up or found wrong; monotonic counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Streams given up before their response ended: their connection's direction lost its
    /// place ([`EV_LOST`]; also requests made after the responses' direction did), the
    /// connection closed, or it was evicted.
    pub abandoned: u64,
    /// Requests not followed: their connection had [`Limits::streams`] streams open.
    pub streams_overflow: u64,
    /// Connections evicted to make room for a new one ([`Limits::conns`]).
    pub conns_evicted: u64,
    /// Header blocks the HPACK decoder rejected (their direction's table is partial from then
    /// on, see the module's documentation; so for every reason below but `events_lost`'s
    /// abandoned streams).
    pub decode_errors: u64,
    /// Header blocks larger than [`Limits::block`].
    pub block_too_large: u64,
    /// Chunks of a frame's payload that did not come (a gap in the offsets, a frame that ended
    /// before its payload did, or began after its start).
    pub chunks_lost: u64,
    /// Frames against HTTP/2's rules, or a sign of whole frames lost: a CONTINUATION with no
    /// header block open, a block interrupted by another frame, padding longer than the frame.
    pub protocol_errors: u64,
    /// Directions first seen after their start (their first frame was not a SETTINGS frame): a
    /// connection followed from its middle (opened before the collector started), whose
    /// tables were never seen; also a connection whose first event is not its first (`seq`
    /// above 0: its state was evicted, or its first events lost).
    pub joined_late: u64,
    /// Gaps in a connection's event numbers (`Event::seq`): events the kernel could not put in
    /// the full ring buffer. The connection's open streams are given up.
    pub events_lost: u64,
}

impl Stats {
    /// Each counter with its field's name (a `reason` label value).
    pub fn reasons(&self) -> [(&'static str, u64); 9] {
        [
            ("abandoned", self.abandoned),
            ("streams_overflow", self.streams_overflow),
            ("conns_evicted", self.conns_evicted),
            ("decode_errors", self.decode_errors),
            ("block_too_large", self.block_too_large),
            ("chunks_lost", self.chunks_lost),
            ("protocol_errors", self.protocol_errors),
            ("joined_late", self.joined_late),
            ("events_lost", self.events_lost),
        ]
    }
}

/// The connection an exchange was on, as the kernel identified it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Ident {
    /// The socket's cookie.
    pub cookie: u64,
    pub cgroup_id: u64,
    pub comm: [u8; 16],
    pub addr: [u8; 16],
    pub local_port: u16,
    pub peer_port: u16,
    pub family: u8,
    /// `ROLE_SERVER` (1) or `ROLE_CLIENT` (2): the side of the connection the socket is.
    pub role: u8,
    pub scheme: u8,
}

impl Ident {
    /// Takes the socket of a later event of the connection: over TLS the kernel learns it
    /// from a read of the connection (docs/metrics.md, HTTPS), which can come after its first
    /// frames (Go's HTTP/2 server writes its SETTINGS before any read is seen), and a write's
    /// guess is corrected by a read.
    fn named(&mut self, ev: &Event) {
        if ev.local_port != 0 {
            (self.local_port, self.peer_port, self.family, self.addr) =
                (ev.local_port, ev.peer_port, ev.family, ev.addr);
        }
    }

    pub(super) fn of(ev: &Event) -> Self {
        Self {
            cookie: ev.cookie,
            cgroup_id: ev.cgroup_id,
            comm: ev.comm,
            addr: ev.addr,
            local_port: ev.local_port,
            peer_port: ev.peer_port,
            family: ev.family,
            role: ev.role,
            scheme: ev.scheme,
        }
    }
}

/// What a gRPC call adds to an exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grpc {
    /// The request's `:path` without its leading `/` (`package.Service/Method`; invalid UTF-8
    /// replaced). As long as the peer made it, up to [`Limits::block`].
    pub method: String,
    /// `grpc-status` of the trailers, or of the response headers of a trailers-only response.
    pub status: Option<u8>,
    /// The request's `grpc-timeout` (ns): a call reset without a status once it has passed
    /// ended at its deadline.
    pub timeout_ns: Option<u64>,
}

/// One completed exchange (stream).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Done {
    pub conn: Ident,
    /// The stream identifier.
    pub stream: u32,
    /// `collector_common::http::method` id; `OTHER` (0) also when unknown.
    pub method: u8,
    /// The final response's `:status`; 0 if unknown (also a stream reset before its response).
    pub status: u16,
    /// DATA payload bytes (padding included) of the request, and of the response.
    pub req_bytes: u64,
    pub resp_bytes: u64,
    /// When the first byte of the request's HEADERS frame passed.
    pub start_ns: u64,
    /// When the response ended: the last byte of its DATA frame with END_STREAM, of the header
    /// block (trailers, or headers only) whose HEADERS frame had END_STREAM, or of an RST_STREAM.
    pub end_ns: u64,
    /// Ended by an RST_STREAM (either side's) before the response ended.
    pub reset: bool,
    /// Set when the request's `content-type` is `application/grpc…`.
    pub grpc: Option<Grpc>,
    /// False when a block the labels come from could not be decoded, or referred to a table
    /// entry that was never seen: a label may then be missing (method `OTHER`, status 0, or a
    /// gRPC call taken for an HTTP exchange).
    pub certain: bool,
}

/// The assembler: every connection's HPACK decoders, frame in progress and open streams.
pub struct Assembler {
    limits: Limits,
    stats: Stats,
    conns: HashMap<u64, Conn>,
    /// Connections by last activity (`Conn::tick`), least recent first: eviction order.
    lru: BTreeMap<u64, u64>,
    tick: u64,
}

impl Assembler {
    /// An assembler that follows no connection yet.
    pub fn new(limits: Limits) -> Self {
        Self { limits, stats: Stats::default(), conns: HashMap::new(), lru: BTreeMap::new(), tick: 0 }
    }

    /// What it gave up or found wrong so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Connections followed now.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Takes one event of the kernel's, in the order they came; `out` gets the exchanges it
    /// completes.
    pub fn event(&mut self, ev: &Event, out: &mut impl FnMut(Done)) {
        let d = usize::from(ev.is_req != 0);
        // Events the kernel could not send: what they said is unknown, so the connection's open
        // streams are given up and its tables can no longer be followed.
        if let Some(c) = self.conns.get_mut(&ev.cookie) {
            if ev.seq != c.next_seq {
                self.stats.events_lost += 1;
                c.lose_all(&mut self.stats);
            }
            c.next_seq = ev.seq.wrapping_add(1);
        }
        match ev.kind {
            EV_FRAME | EV_UPGRADE => {
                self.tick += 1;
                match self.conns.get_mut(&ev.cookie) {
                    Some(c) => {
                        self.lru.remove(&c.tick);
                        c.tick = self.tick;
                        c.id.named(ev);
                    }
                    None => {
                        if self.conns.len() >= self.limits.conns
                            && let Some((_, old)) = self.lru.pop_first()
                            && let Some(c) = self.conns.remove(&old)
                        {
                            self.stats.conns_evicted += 1;
                            self.stats.abandoned += c.open();
                        }
                        let mut c = Conn::new(ev, self.tick, &self.limits);
                        if ev.seq != 0 {
                            // Its first events went elsewhere: to a state evicted since, or
                            // lost on the way (which the kernel counts): joined late.
                            self.stats.joined_late += 1;
                            c.lose_all(&mut self.stats);
                        }
                        self.conns.insert(ev.cookie, c);
                    }
                }
                self.lru.insert(self.tick, ev.cookie);
                if let Some(c) = self.conns.get_mut(&ev.cookie) {
                    if ev.kind == EV_UPGRADE {
                        c.upgraded(ev);
                        return;
                    }
                    c.frame(ev, d, &self.limits, &mut self.stats, out);
                }
            }
            EV_LOST => {
                let Some(c) = self.conns.get_mut(&ev.cookie) else { return };
                if c.lost(d, &mut self.stats) {
                    self.remove(ev.cookie);
                }
            }
            EV_CLOSED => {
                if let Some(c) = self.remove(ev.cookie) {
                    self.stats.abandoned += c.open();
                }
            }
            _ => {}
        }
    }

    fn remove(&mut self, cookie: u64) -> Option<Conn> {
        let c = self.conns.remove(&cookie)?;
        self.lru.remove(&c.tick);
        Some(c)
    }
}

#[cfg(test)]
#[path = "tests_assemble.rs"]
mod tests;
