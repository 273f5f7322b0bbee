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
//! Once a direction's table can no longer be followed — bytes of it lost (a gap in a frame's
//! chunks, a frame cut short, [`EV_LOST`]), a block that does not decode or is larger than
//! [`Limits::block`], frames against HTTP/2's rules, or a connection joined after its start — the
//! direction is *broken*: its blocks are no longer decoded, and its streams still complete, with
//! `certain: false` and the labels it would have given unknown (method `OTHER` (0), status 0).
//!
//! Approximations: a DATA frame's whole payload length counts as body bytes (padding included).
//! Whole frames that the kernel could not deliver go unnoticed unless they break the framing
//! (a CONTINUATION with no block open, a block not continued) or the decoding. Pushed streams
//! (server push, even stream ids) are not reported: their PUSH_PROMISE and HEADERS blocks are
//! decoded only to keep the server's table in step.
use std::collections::{BTreeMap, HashMap};

use collector_common::http::method;
use collector_common::http2::{
    CONTINUATION, DATA, EV_CLOSED, EV_FRAME, EV_LOST, EV_UPGRADE, Event, FLAG_ACK, FLAG_END_HEADERS, FLAG_END_STREAM,
    FLAG_PADDED, FLAG_PRIORITY, HEADERS, PUSH_PROMISE, RST_STREAM, SETTINGS, carries_payload,
};

use super::hpack;

/// SETTINGS_HEADER_TABLE_SIZE's identifier, and its initial value (RFC 9113 §6.5.2): the table
/// size every encoder starts with.
const SETTINGS_HEADER_TABLE_SIZE: u16 = 1;
const INITIAL_TABLE: usize = 4096;
/// Capacity a block buffer keeps for the next block; a larger one is freed after its block.
const KEEP_CAPACITY: usize = 4096;
/// Indices of [`Conn::dirs`]: `Event::is_req`.
const RESP: usize = 0;
const REQ: usize = 1;

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
    /// Header blocks the HPACK decoder rejected (their direction is broken from then on).
    pub decode_errors: u64,
    /// Header blocks larger than [`Limits::block`] (their direction is broken from then on).
    pub block_too_large: u64,
    /// Chunks of a frame's payload that did not come (a gap in the offsets, a frame that ended
    /// before its payload did, or began after its start): their direction is broken.
    pub chunks_lost: u64,
    /// Frames against HTTP/2's rules, or a sign of whole frames lost: a CONTINUATION with no
    /// header block open, a block interrupted by another frame, padding longer than the frame.
    /// Their direction is broken.
    pub protocol_errors: u64,
    /// Directions first seen after their start (their first frame was not a SETTINGS frame): a
    /// connection followed from its middle (opened before the collector, or evicted), whose
    /// tables were never seen; also a connection whose first event is not its first (`seq`
    /// above 0: its state was evicted, or its first events lost). Broken from the start.
    pub joined_late: u64,
    /// Gaps in a connection's event numbers (`Event::seq`): events the kernel could not put in
    /// the full ring buffer. The connection's open streams are given up and both directions
    /// are broken.
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
    fn of(ev: &Event) -> Self {
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
    /// False when a block the labels come from could not be decoded (its direction broken).
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
                    }
                    None => {
                        if self.conns.len() >= self.limits.conns
                            && let Some((_, old)) = self.lru.pop_first()
                            && let Some(c) = self.conns.remove(&old)
                        {
                            self.stats.conns_evicted += 1;
                            self.stats.abandoned += c.streams.len() as u64;
                        }
                        let mut c = Conn::new(ev, self.tick);
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
                self.stats.abandoned += c.streams.len() as u64;
                c.streams.clear();
                let dir = &mut c.dirs[d];
                dir.lost = true;
                dir.broken = true;
                dir.frame = None;
                dir.block = None;
                clear(&mut dir.buf);
                if c.dirs.iter().all(|x| x.lost) {
                    self.remove(ev.cookie);
                }
            }
            EV_CLOSED => {
                if let Some(c) = self.remove(ev.cookie) {
                    self.stats.abandoned += c.streams.len() as u64;
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

struct Conn {
    id: Ident,
    /// When the connection was last active (`Assembler::tick`).
    tick: u64,
    dirs: [Dir; 2],
    streams: HashMap<u32, Stream>,
    /// Highest stream a request opened: stream ids only grow (RFC 9113 §5.1.1), so a request
    /// HEADERS at or below it is a request's trailers, or of a stream not followed.
    last_id: u32,
    /// The event number expected next (`Event::seq`).
    next_seq: u32,
}

/// One direction of a connection.
struct Dir {
    hpack: hpack::Decoder,
    /// Its first event came (which tells whether the direction was seen from its start).
    seen: bool,
    /// Its blocks are no longer decoded.
    broken: bool,
    /// [`EV_LOST`] came: no more events of it.
    lost: bool,
    /// When its last event passed.
    last_ns: u64,
    /// The frame whose payload is coming in chunks, until its last chunk.
    frame: Option<Frame>,
    /// The header block being gathered, until its END_HEADERS frame ends.
    block: Option<Block>,
    /// The block's bytes so far (unless a block fits in its last chunk).
    buf: Vec<u8>,
}

#[derive(Clone, Copy)]
struct Frame {
    ftype: u8,
    flags: u8,
    stream: u32,
    flen: u32,
    /// Offset of the chunk expected next.
    next: u32,
    /// No chunk of it went missing so far.
    intact: bool,
    /// Payload offsets of the header block fragment (without pad length, priority, promised
    /// stream id and padding).
    lo: u32,
    hi: u32,
    /// A SETTINGS frame's setting being read, and how many of its 6 bytes came.
    setting: [u8; 6],
    have: usize,
}

#[derive(Clone, Copy)]
struct Block {
    stream: u32,
    /// A PUSH_PROMISE block (decoded for the table only).
    push: bool,
    /// Its HEADERS frame had END_STREAM.
    end_stream: bool,
    /// When its HEADERS frame's first byte passed.
    ns: u64,
}

struct Stream {
    start_ns: u64,
    method: u8,
    grpc: Option<Grpc>,
    status: u16,
    /// The final (not 1xx) response headers came: a later response block is trailers.
    final_seen: bool,
    certain: bool,
    req_bytes: u64,
    resp_bytes: u64,
}

/// The values kept of a decoded block.
#[derive(Default)]
struct Fields {
    method: u8,
    status: u16,
    grpc: bool,
    grpc_status: Option<u8>,
    /// `:path` without its `/`, of a gRPC request only.
    path: Option<String>,
}

impl Dir {
    fn new() -> Self {
        Self {
            hpack: hpack::Decoder::new(INITIAL_TABLE),
            seen: false,
            broken: false,
            lost: false,
            last_ns: 0,
            frame: None,
            block: None,
            buf: Vec::new(),
        }
    }

    /// Whether `more` bytes fit in the block; if not, the direction breaks.
    fn room(&mut self, more: usize, lim: &Limits, st: &mut Stats) -> bool {
        if self.buf.len() + more <= lim.block {
            return true;
        }
        st.block_too_large += 1;
        self.broken = true;
        clear(&mut self.buf);
        false
    }
}

impl Conn {
    fn new(ev: &Event, tick: u64) -> Self {
        Self {
            id: Ident::of(ev),
            tick,
            dirs: [Dir::new(), Dir::new()],
            streams: HashMap::new(),
            last_id: 0,
            next_seq: ev.seq.wrapping_add(1),
        }
    }

    /// Events were lost: the open streams are given up, and neither direction's blocks are
    /// decoded from now on (its streams still count, with the labels not known).
    fn lose_all(&mut self, st: &mut Stats) {
        st.abandoned += self.streams.len() as u64;
        self.streams.clear();
        for dir in &mut self.dirs {
            dir.seen = true;
            dir.broken = true;
            dir.frame = None;
            dir.block = None;
            clear(&mut dir.buf);
        }
    }

    /// The connection switched from HTTP/1.1 (`Upgrade: h2c`, [`EV_UPGRADE`]): the request
    /// that asked for it is stream 1, whose response comes in HTTP/2 frames; it has no body to
    /// wait for (RFC 9113 §3.2 leaves the request half-closed).
    fn upgraded(&mut self, ev: &Event) {
        if self.last_id >= 1 {
            return;
        }
        self.last_id = 1;
        let s = Stream {
            start_ns: ev.ns,
            method: ev.fflags,
            grpc: None,
            status: 0,
            final_seen: false,
            certain: true,
            req_bytes: 0,
            resp_bytes: 0,
        };
        self.streams.insert(1, s);
    }

    /// An [`EV_FRAME`] event of direction `d`.
    fn frame(&mut self, ev: &Event, d: usize, lim: &Limits, st: &mut Stats, out: &mut impl FnMut(Done)) {
        let dir = &mut self.dirs[d];
        if dir.lost {
            return;
        }
        if !dir.seen {
            dir.seen = true;
            // Each endpoint's first frame is a SETTINGS frame (RFC 9113 §3.4).
            if !(ev.ftype == SETTINGS && ev.fflags & FLAG_ACK == 0 && ev.off == 0) {
                st.joined_late += 1;
                dir.broken = true;
            }
        }
        let at = ev.at as usize;
        let Some(data) = ev.data.get(at..at.saturating_add(ev.n as usize)) else {
            // Not a chunk of the window it came in.
            st.chunks_lost += 1;
            dir.broken = true;
            return;
        };
        let end = ev.off.saturating_add(data.len() as u32);
        if end > ev.flen {
            // Not a chunk of the frame it names.
            st.chunks_lost += 1;
            dir.broken = true;
            return;
        }
        let continues = matches!(dir.frame, Some(f) if ev.off != 0 && (f.ftype, f.stream, f.flen) == (ev.ftype, ev.stream, ev.flen));
        if continues {
            if let Some(f) = &mut dir.frame
                && f.next != ev.off
            {
                f.intact = false;
                st.chunks_lost += 1;
                dir.broken = true;
            }
        } else {
            self.interrupt(d, ev, lim, st, out);
            match ev.ftype {
                DATA | RST_STREAM => self.whole(d, ev, out),
                t if carries_payload(t) => self.begin(d, ev, data, st),
                _ => {}
            }
        }
        self.dirs[d].last_ns = ev.ns;
        if self.dirs[d].frame.is_some() {
            self.chunk(d, ev, data, lim, st, out);
        }
    }

    /// A new frame of direction `d` begins: the frame in progress, and a header block that it
    /// does not continue, end here.
    fn interrupt(&mut self, d: usize, ev: &Event, lim: &Limits, st: &mut Stats, out: &mut impl FnMut(Done)) {
        let dir = &mut self.dirs[d];
        if let Some(f) = dir.frame.take() {
            st.chunks_lost += 1;
            dir.broken = true;
            if is_block(f.ftype) && f.flags & FLAG_END_HEADERS != 0 {
                self.block_end(d, self.dirs[d].last_ns, &[], lim, st, out);
            }
        }
        let dir = &mut self.dirs[d];
        if let Some(b) = dir.block
            && (ev.ftype != CONTINUATION || ev.stream != b.stream)
        {
            // A block's frames follow one another on its stream (RFC 9113 §6.10).
            st.protocol_errors += 1;
            dir.broken = true;
            self.block_end(d, self.dirs[d].last_ns, &[], lim, st, out);
        }
    }

    /// The first event of a frame with a payload (`data`, its first chunk unless bytes were lost).
    fn begin(&mut self, d: usize, ev: &Event, data: &[u8], st: &mut Stats) {
        let dir = &mut self.dirs[d];
        if ev.off != 0 {
            st.chunks_lost += 1;
            dir.broken = true;
        }
        let (ftype, flags) = (ev.ftype, ev.fflags);
        let mut f = Frame {
            ftype,
            flags,
            stream: ev.stream,
            flen: ev.flen,
            next: ev.off,
            intact: ev.off == 0,
            lo: 0,
            hi: ev.flen,
            setting: [0; 6],
            have: 0,
        };
        match ftype {
            HEADERS | PUSH_PROMISE => {
                dir.block = Some(Block {
                    stream: ev.stream,
                    push: ftype == PUSH_PROMISE,
                    end_stream: ftype == HEADERS && flags & FLAG_END_STREAM != 0,
                    ns: ev.ns,
                });
                // RFC 9113 §6.2, §6.6: pad length, then priority fields or promised stream id.
                let padded = flags & FLAG_PADDED != 0;
                let fields = match ftype {
                    HEADERS if flags & FLAG_PRIORITY != 0 => 5,
                    HEADERS => 0,
                    _ => 4,
                };
                f.lo = u32::from(padded) + fields;
                let pad = if padded { data.first().copied().map(u32::from) } else { Some(0) };
                match pad.filter(|&p| f.lo + p <= ev.flen) {
                    Some(p) => f.hi = ev.flen - p,
                    None => {
                        st.protocol_errors += 1;
                        dir.broken = true;
                    }
                }
            }
            CONTINUATION if dir.block.is_none() => {
                st.protocol_errors += 1;
                dir.broken = true;
            }
            _ => {}
        }
        dir.frame = Some(f);
    }

    /// A chunk (`data`) of the frame in progress of direction `d`.
    fn chunk(&mut self, d: usize, ev: &Event, data: &[u8], lim: &Limits, st: &mut Stats, out: &mut impl FnMut(Done)) {
        let dir = &mut self.dirs[d];
        let Some(mut f) = dir.frame else { return };
        let end = ev.off + data.len() as u32;
        f.next = end;
        if f.ftype == SETTINGS && f.stream == 0 && f.flags & FLAG_ACK == 0 && f.intact {
            for &b in data {
                f.setting[f.have] = b;
                f.have += 1;
                if f.have == f.setting.len() {
                    f.have = 0;
                    let [i0, i1, v @ ..] = f.setting;
                    if u16::from_be_bytes([i0, i1]) == SETTINGS_HEADER_TABLE_SIZE {
                        // The endpoint that sends this receives the other direction's blocks.
                        let size = (u32::from_be_bytes(v) as usize).min(lim.table.max(INITIAL_TABLE));
                        self.dirs[1 - d].hpack.set_max_allowed(size);
                    }
                }
            }
        }
        let dir = &mut self.dirs[d];
        let frag = if is_block(f.ftype) {
            let (a, b) = (f.lo.clamp(ev.off, end) - ev.off, f.hi.clamp(ev.off, end) - ev.off);
            &data[a as usize..b.max(a) as usize]
        } else {
            &[]
        };
        if end < f.flen {
            dir.frame = Some(f);
        } else {
            dir.frame = None;
            if is_block(f.ftype) && f.flags & FLAG_END_HEADERS != 0 {
                return self.block_end(d, ev.ns, frag, lim, st, out);
            }
        }
        if dir.block.is_some() && !dir.broken && dir.room(frag.len(), lim, st) {
            dir.buf.extend_from_slice(frag);
        }
    }

    /// The header block of direction `d` ended at `ns`, with `tail` its last bytes.
    fn block_end(&mut self, d: usize, ns: u64, tail: &[u8], lim: &Limits, st: &mut Stats, out: &mut impl FnMut(Done)) {
        let dir = &mut self.dirs[d];
        let Some(b) = dir.block.take() else { return };
        let mut fields = None;
        if !dir.broken && dir.room(tail.len(), lim, st) {
            let res = if dir.buf.is_empty() {
                decode(&mut dir.hpack, tail, d == REQ)
            } else {
                dir.buf.extend_from_slice(tail);
                decode(&mut dir.hpack, &dir.buf, d == REQ)
            };
            match res {
                Ok(f) => fields = Some(f),
                Err(_) => {
                    st.decode_errors += 1;
                    dir.broken = true;
                }
            }
        }
        clear(&mut dir.buf);
        if !b.push {
            self.headers(d, b, fields, ns, lim, st, out);
        }
    }

    /// A HEADERS block of direction `d` ended at `ns`; `fields` if it was decoded.
    #[allow(clippy::too_many_arguments)]
    fn headers(
        &mut self,
        d: usize,
        b: Block,
        fields: Option<Fields>,
        ns: u64,
        lim: &Limits,
        st: &mut Stats,
        out: &mut impl FnMut(Done),
    ) {
        if d == REQ {
            // A request opens a stream; pushed streams (even) are not counted.
            if b.stream.is_multiple_of(2) || b.stream <= self.last_id {
                return;
            }
            self.last_id = b.stream;
            if self.dirs[RESP].lost {
                st.abandoned += 1;
                return;
            }
            if self.streams.len() >= lim.streams {
                st.streams_overflow += 1;
                return;
            }
            let certain = fields.is_some();
            let f = fields.unwrap_or_default();
            let grpc = if f.grpc { Some(Grpc { method: f.path.unwrap_or_default(), status: None }) } else { None };
            let s = Stream {
                start_ns: b.ns,
                method: f.method,
                grpc,
                status: 0,
                final_seen: false,
                certain,
                req_bytes: 0,
                resp_bytes: 0,
            };
            self.streams.insert(b.stream, s);
            return;
        }
        let Some(s) = self.streams.get_mut(&b.stream) else { return };
        match fields {
            // Informational (1xx): the final response is still to come.
            Some(f) if !s.final_seen && (100..200).contains(&f.status) && !b.end_stream => return,
            Some(f) => {
                if !s.final_seen {
                    s.status = f.status;
                }
                if let (Some(g), Some(code)) = (&mut s.grpc, f.grpc_status) {
                    g.status = Some(code);
                }
            }
            // Trailers matter to gRPC calls only.
            None if s.final_seen && s.grpc.is_none() => {}
            None => s.certain = false,
        }
        s.final_seen = true;
        if b.end_stream {
            self.finish(b.stream, ns, false, out);
        }
    }

    /// A DATA or RST_STREAM frame of direction `d` (at its last byte).
    fn whole(&mut self, d: usize, ev: &Event, out: &mut impl FnMut(Done)) {
        let Some(s) = self.streams.get_mut(&ev.stream) else { return };
        if ev.ftype == RST_STREAM {
            return self.finish(ev.stream, ev.ns, true, out);
        }
        if d == REQ {
            s.req_bytes += u64::from(ev.flen);
        } else {
            s.resp_bytes += u64::from(ev.flen);
            if ev.fflags & FLAG_END_STREAM != 0 {
                self.finish(ev.stream, ev.ns, false, out);
            }
        }
    }

    fn finish(&mut self, id: u32, end_ns: u64, reset: bool, out: &mut impl FnMut(Done)) {
        let Some(s) = self.streams.remove(&id) else { return };
        out(Done {
            conn: self.id,
            stream: id,
            method: s.method,
            status: s.status,
            req_bytes: s.req_bytes,
            resp_bytes: s.resp_bytes,
            start_ns: s.start_ns,
            end_ns,
            reset,
            grpc: s.grpc,
            certain: s.certain,
        });
    }
}

fn is_block(ftype: u8) -> bool {
    matches!(ftype, HEADERS | PUSH_PROMISE | CONTINUATION)
}

/// Empties a block buffer, and frees it if it grew large.
fn clear(buf: &mut Vec<u8>) {
    if buf.capacity() > KEEP_CAPACITY {
        *buf = Vec::new();
    } else {
        buf.clear();
    }
}

/// Decodes a header block, keeping only the values labelled with (`request`: `:path` too).
fn decode(dec: &mut hpack::Decoder, block: &[u8], request: bool) -> Result<Fields, hpack::Error> {
    let mut f = Fields::default();
    let mut path = None;
    dec.decode(block, |name, value| match name {
        b":method" => f.method = method_id(value),
        b":status" => f.status = digits(value, 3).and_then(|v| u16::try_from(v).ok()).unwrap_or(0),
        b"grpc-status" => f.grpc_status = digits(value, 3).and_then(|v| u8::try_from(v).ok()),
        b"content-type" => f.grpc = value.get(..16).is_some_and(|p| p.eq_ignore_ascii_case(b"application/grpc")),
        b":path" if request => path = Some(value.to_vec()),
        _ => {}
    })?;
    if f.grpc
        && let Some(p) = path
    {
        f.path = Some(String::from_utf8_lossy(p.strip_prefix(b"/").unwrap_or(&p)).into_owned());
    }
    Ok(f)
}

/// The `collector_common::http::method` id of a `:method` value.
fn method_id(v: &[u8]) -> u8 {
    if v.len() > 8 {
        return method::OTHER;
    }
    let w = v.iter().fold(0u64, |w, &b| w << 8 | u64::from(b));
    method::from_word(w, v.len() as u32)
}

/// The value of 1 to `max` ASCII digits.
fn digits(v: &[u8], max: usize) -> Option<u32> {
    if v.is_empty() || v.len() > max || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0, |n, &b| n * 10 + u32::from(b - b'0')))
}

#[cfg(test)]
#[path = "tests_assemble.rs"]
mod tests;
