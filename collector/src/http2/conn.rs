//! One HTTP/2 connection as the assembler ([`super::assemble`]) follows it: per direction its
//! HPACK decoder, the frame whose payload comes in chunks and the header block being gathered;
//! the streams open on it. Frame events go in ([`Conn::frame`]), completed exchanges come out.
use std::collections::HashMap;

use collector_common::http::method;
use collector_common::http2::{
    CONTINUATION, DATA, Event, FLAG_ACK, FLAG_END_HEADERS, FLAG_END_STREAM, FLAG_PADDED, FLAG_PRIORITY, GOAWAY,
    GOAWAY_SENT, HEADERS, PUSH_PROMISE, RST_STREAM, SETTINGS, carries_payload,
};

use super::{
    assemble::{Done, Grpc, Ident, Limits, Stats},
    hpack,
};

/// SETTINGS_HEADER_TABLE_SIZE's identifier, and its initial value (RFC 9113 §6.5.2): the table
/// size every encoder starts with.
const SETTINGS_HEADER_TABLE_SIZE: u16 = 1;
const INITIAL_TABLE: usize = 4096;
/// Capacity a block buffer keeps for the next block; a larger one is freed after its block.
const KEEP_CAPACITY: usize = 4096;
/// Indices of [`Conn::dirs`]: `Event::is_req`.
const RESP: usize = 0;
const REQ: usize = 1;

pub(super) struct Conn {
    pub(super) id: Ident,
    /// When the connection was last active (`Assembler::tick`).
    pub(super) tick: u64,
    dirs: [Dir; 2],
    streams: HashMap<u32, Stream>,
    /// Highest stream a request opened: stream ids only grow (RFC 9113 §5.1.1), so a request
    /// HEADERS at or below it is a request's trailers, or of a stream not followed.
    last_id: u32,
    /// The lowest last stream id of the server's GOAWAY frames: requests above it were not
    /// processed.
    goaway_last: Option<u32>,
    /// The event number expected next (`Event::seq`).
    pub(super) next_seq: u32,
}

/// One direction of a connection.
struct Dir {
    hpack: hpack::Decoder,
    /// Its first event came (which tells whether the direction was seen from its start).
    seen: bool,
    /// The header block being gathered cannot be decoded (bytes of it, or of a block before
    /// it, were lost): its fields are unknown. Set again at the next block's first frame.
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
    /// A SETTINGS frame's setting being read, and how many of its 6 bytes came (a GOAWAY
    /// frame's last stream id: 4 bytes).
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
    /// `grpc-timeout` of a request (ns).
    grpc_timeout_ns: Option<u64>,
    /// `:path` without its `/`, of a gRPC request only.
    path: Option<String>,
    /// Fields of the block were unknown (a partial table's): a value missing here may have been
    /// among them.
    unknown: bool,
}

impl Dir {
    fn new(lim: &Limits) -> Self {
        Self {
            hpack: hpack::Decoder::new(INITIAL_TABLE).with_ceiling(lim.table.max(INITIAL_TABLE)),
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
        self.lose_place();
        clear(&mut self.buf);
        false
    }

    /// Bytes of the direction were lost, or make no sense: the block being gathered cannot be
    /// decoded, and the decoder's table is no longer known (entries may have been added in
    /// what was lost): it goes on with what it sees from now on (`hpack`'s partial tables).
    fn lose_place(&mut self) {
        self.broken = true;
        self.hpack.forget();
    }
}

impl Conn {
    pub(super) fn new(ev: &Event, tick: u64, lim: &Limits) -> Self {
        Self {
            id: Ident::of(ev),
            tick,
            dirs: [Dir::new(lim), Dir::new(lim)],
            streams: HashMap::new(),
            last_id: 0,
            goaway_last: None,
            next_seq: ev.seq.wrapping_add(1),
        }
    }

    /// Bytes of a header block gathered on a direction, not decoded yet.
    #[cfg(test)]
    pub(super) fn buffered(&self, is_req: bool) -> usize {
        self.dirs[usize::from(is_req)].buf.len()
    }

    /// Streams open now.
    pub(super) fn open(&self) -> u64 {
        self.streams.len() as u64
    }

    /// [`EV_LOST`](collector_common::http2::EV_LOST) came for direction `d`: no more events of
    /// it, and the open streams are given up. True when both directions are lost.
    pub(super) fn lost(&mut self, d: usize, st: &mut Stats) -> bool {
        st.abandoned += self.open();
        self.streams.clear();
        let dir = &mut self.dirs[d];
        dir.lost = true;
        dir.lose_place();
        dir.frame = None;
        dir.block = None;
        clear(&mut dir.buf);
        self.dirs.iter().all(|x| x.lost)
    }

    /// Events were lost: the open streams are given up, and neither direction's table is known
    /// from now on (its blocks are decoded as far as they can be: streams still count, with
    /// the labels that are known).
    pub(super) fn lose_all(&mut self, st: &mut Stats) {
        st.abandoned += self.streams.len() as u64;
        self.streams.clear();
        for dir in &mut self.dirs {
            dir.seen = true;
            dir.lose_place();
            dir.frame = None;
            dir.block = None;
            clear(&mut dir.buf);
        }
    }

    /// The connection switched from HTTP/1.1 (`Upgrade: h2c`, [`EV_UPGRADE`]): the request
    /// that asked for it is stream 1, whose response comes in HTTP/2 frames; it has no body to
    /// wait for (RFC 9113 §3.2 leaves the request half-closed).
    pub(super) fn upgraded(&mut self, ev: &Event) {
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
    pub(super) fn frame(&mut self, ev: &Event, d: usize, lim: &Limits, st: &mut Stats, out: &mut impl FnMut(Done)) {
        let dir = &mut self.dirs[d];
        if dir.lost {
            return;
        }
        if !dir.seen {
            dir.seen = true;
            // Each endpoint's first frame is a SETTINGS frame (RFC 9113 §3.4).
            // Else it is followed from its middle: its table is not known, and what the blocks
            // give from then on is taken as far as it is known.
            if !(ev.ftype == SETTINGS && ev.fflags & FLAG_ACK == 0 && ev.off == 0) {
                st.joined_late += 1;
                dir.hpack.forget();
            }
        }
        let at = ev.at as usize;
        let Some(data) = ev.data.get(at..at.saturating_add(ev.n as usize)) else {
            // Not a chunk of the window it came in.
            st.chunks_lost += 1;
            dir.lose_place();
            return;
        };
        let end = ev.off.saturating_add(data.len() as u32);
        if end > ev.flen {
            // Not a chunk of the frame it names.
            st.chunks_lost += 1;
            dir.lose_place();
            return;
        }
        let continues = matches!(dir.frame, Some(f) if ev.off != 0 && (f.ftype, f.stream, f.flen) == (ev.ftype, ev.stream, ev.flen));
        if continues {
            if let Some(f) = &mut dir.frame
                && f.next != ev.off
            {
                f.intact = false;
                st.chunks_lost += 1;
                dir.lose_place();
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
            dir.lose_place();
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
            dir.lose_place();
            self.block_end(d, self.dirs[d].last_ns, &[], lim, st, out);
        }
    }

    /// The first event of a frame with a payload (`data`, its first chunk unless bytes were lost).
    fn begin(&mut self, d: usize, ev: &Event, data: &[u8], st: &mut Stats) {
        let dir = &mut self.dirs[d];
        if matches!(ev.ftype, HEADERS | PUSH_PROMISE) {
            // A new block: decoded unless bytes of it are lost.
            dir.broken = false;
        }
        if ev.off != 0 {
            st.chunks_lost += 1;
            dir.lose_place();
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
                        dir.lose_place();
                    }
                }
            }
            CONTINUATION if dir.block.is_none() => {
                st.protocol_errors += 1;
                dir.lose_place();
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
        if f.ftype == GOAWAY && f.stream == 0 && f.flen >= GOAWAY_SENT && f.intact && f.have < 4 {
            for &b in data.iter().take(4 - f.have) {
                f.setting[f.have] = b;
                f.have += 1;
            }
            if f.have == 4 && d == RESP {
                let [a, b, c, e, ..] = f.setting;
                self.goaway(u32::from_be_bytes([a, b, c, e]) & 0x7fff_ffff);
            }
        }
        // A GOAWAY frame's debug data does not come: it ends with its last stream id and code.
        let complete = if f.ftype == GOAWAY { f.flen.min(GOAWAY_SENT) } else { f.flen };
        let dir = &mut self.dirs[d];
        let frag = if is_block(f.ftype) {
            let (a, b) = (f.lo.clamp(ev.off, end) - ev.off, f.hi.clamp(ev.off, end) - ev.off);
            &data[a as usize..b.max(a) as usize]
        } else {
            &[]
        };
        if end < complete {
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
                    dir.lose_place();
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
            // Above a GOAWAY's last stream id (a request that crossed it): not processed.
            if self.goaway_last.is_some_and(|l| b.stream > l) {
                return;
            }
            if self.dirs[RESP].lost {
                st.abandoned += 1;
                return;
            }
            if self.streams.len() >= lim.streams {
                st.streams_overflow += 1;
                return;
            }
            let certain = fields.as_ref().is_some_and(|f| !f.unknown);
            let f = fields.unwrap_or_default();
            let grpc = if f.grpc {
                Some(Grpc { method: f.path.unwrap_or_default(), status: None, timeout_ns: f.grpc_timeout_ns })
            } else {
                None
            };
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
                // Trailers matter to gRPC calls only.
                if f.unknown && !(s.final_seen && s.grpc.is_none()) {
                    s.certain = false;
                }
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

    /// The server's GOAWAY: the requests above its last stream id were not processed, and will
    /// get no response on this connection (the client retries them elsewhere, RFC 9113 §6.8):
    /// they are not requests of this connection, and are forgotten.
    fn goaway(&mut self, last: u32) {
        self.goaway_last = Some(self.goaway_last.map_or(last, |l| l.min(last)));
        self.streams.retain(|&id, _| id <= last || id.is_multiple_of(2));
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
        b"grpc-timeout" if request => f.grpc_timeout_ns = grpc_timeout(value),
        _ => {}
    })?;
    f.unknown = dec.unknown() > 0;
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

/// A `grpc-timeout` value (at most 8 digits and a unit: `H`, `M`, `S`, `m`, `u`, `n`) in ns.
fn grpc_timeout(v: &[u8]) -> Option<u64> {
    let (&unit, n) = v.split_last()?;
    let n = u64::from(digits(n, 8)?);
    let ns = match unit {
        b'H' => 3_600_000_000_000,
        b'M' => 60_000_000_000,
        b'S' => 1_000_000_000,
        b'm' => 1_000_000,
        b'u' => 1_000,
        b'n' => 1,
        _ => return None,
    };
    Some(n.saturating_mul(ns))
}

/// The value of 1 to `max` ASCII digits.
fn digits(v: &[u8], max: usize) -> Option<u32> {
    if v.is_empty() || v.len() > max || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0, |n, &b| n * 10 + u32::from(b - b'0')))
}

#[cfg(test)]
mod tests {
    #[test]
    fn grpc_timeouts() {
        use super::grpc_timeout;
        assert_eq!(grpc_timeout(b"49996u"), Some(49_996_000));
        assert_eq!(grpc_timeout(b"1S"), Some(1_000_000_000));
        assert_eq!(grpc_timeout(b"99999999H"), Some(u64::MAX));
        assert_eq!(grpc_timeout(b"10m"), Some(10_000_000));
        for bad in [&b""[..], b"u", b"100", b"123456789S", b"1x", b"-1S", b"1 S"] {
            assert_eq!(grpc_timeout(bad), None, "{bad:?}");
        }
    }
}
