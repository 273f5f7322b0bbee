//! The HTTP/2 framer driven as the kernel drives it (`capture::Stream`): frames cut at every
//! segment boundary, gaps in skipped payloads and in needed bytes, a lost place.
extern crate std;

use std::vec::Vec;

use super::{
    CONTINUATION, DATA, EV_CLOSED, EV_FRAME, EV_LOST, FLAG_ACK, FLAG_END_HEADERS, FLAG_END_STREAM, GOAWAY, HEADERS,
    PING, PREFACE, RST_STREAM, SETTINGS, WINDOW_UPDATE, framer::H2,
};
use crate::capture::Stream;

use super::sim::{Rec, feed as feed_at};

/// `sim::feed` with the streams' positions from 1000.
#[allow(clippy::too_many_arguments)]
fn feed(h: &mut H2, is_req: bool, stream: &[u8], seq: u32, len: u32, frontier: u32, now: u64, rec: &mut Rec) -> bool {
    feed_at(h, is_req, stream, 1000, seq, len, frontier, now, rec)
}

fn frame(ftype: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let n = payload.len() as u32;
    let mut v = std::vec![(n >> 16) as u8, (n >> 8) as u8, n as u8, ftype, flags];
    v.extend_from_slice(&stream.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

fn client_stream(block: &[u8]) -> Vec<u8> {
    let mut s = PREFACE.to_vec();
    s.extend(frame(SETTINGS, 0, 0, &[0, 1, 0, 0, 0x10, 0, 0, 3, 0, 0, 0, 100]));
    s.extend(frame(SETTINGS, FLAG_ACK, 0, &[]));
    s.extend(frame(WINDOW_UPDATE, 0, 0, &[0, 0, 0x10, 0]));
    s.extend(frame(HEADERS, 0, 1, &block[..200]));
    s.extend(frame(CONTINUATION, FLAG_END_HEADERS, 1, &block[200..]));
    s.extend(frame(DATA, 0, 1, &[7; 1000]));
    s.extend(frame(PING, 0, 0, &[1; 8]));
    s.extend(frame(DATA, FLAG_END_STREAM, 1, &[8; 300]));
    s.extend(frame(HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, 3, &[0x82, 0x86, 0x84]));
    s.extend(frame(RST_STREAM, 0, 3, &[0, 0, 0, 8]));
    s
}

fn block() -> Vec<u8> {
    (0..700u32).map(|i| (i * 7 + 3) as u8).collect()
}

/// Events of the whole stream in one segment, checked by hand.
#[test]
fn frames_of_a_client_stream() {
    let b = block();
    let s = client_stream(&b);
    let mut h = H2::ZERO;
    h.start(false, true, 1000, Some(5000));
    let mut rec = Rec::default();
    assert!(feed(&mut h, true, &s, 1000, s.len() as u32, 1000, 1, &mut rec));
    let kinds: Vec<(u8, u32, u32, u32)> = rec.got.iter().map(|g| (g.f.ftype, g.f.stream, g.f.off, g.f.n)).collect();
    assert_eq!(
        kinds,
        std::vec![
            (SETTINGS, 0, 0, 12),
            (HEADERS, 1, 0, 200),
            // The CONTINUATION's first chunk is the rest of the window its header came in.
            (CONTINUATION, 1, 0, 247),
            (CONTINUATION, 1, 247, 253),
            (DATA, 1, 0, 0),
            (DATA, 1, 0, 0),
            (HEADERS, 3, 0, 3),
            (RST_STREAM, 3, 0, 0),
        ]
    );
    let mut joined = rec.got[1].bytes.clone();
    joined.extend(&rec.got[2].bytes);
    joined.extend(&rec.got[3].bytes);
    assert_eq!(joined, b);
    assert_eq!(rec.got[4].f.flen, 1000);
    assert_eq!(rec.got[5].f.fflags, FLAG_END_STREAM);
    assert!(rec.got.iter().all(|g| g.f.kind == EV_FRAME && g.f.is_req));
    assert_eq!(rec.got.iter().map(|g| g.f.seq).collect::<Vec<_>>(), (0..8).collect::<Vec<_>>());
    assert!(rec.drops.is_empty());
}

/// The same events, as (kind, type, stream, payload bytes), wherever segments cut the stream.
fn summary(rec: &Rec) -> Vec<(u8, u8, u32, u32, Vec<u8>)> {
    // Chunks are cut where segments end: joined per frame for the comparison.
    let mut out: Vec<(u8, u8, u32, u32, Vec<u8>)> = Vec::new();
    for g in &rec.got {
        match out.last_mut() {
            Some(last) if g.f.off != 0 && last.1 == g.f.ftype && last.2 == g.f.stream => last.4.extend(&g.bytes),
            _ => out.push((g.f.kind, g.f.ftype, g.f.stream, g.f.flen, g.bytes.clone())),
        }
    }
    out
}

#[test]
fn every_segment_boundary_gives_the_same_frames() {
    let b = block();
    let s = client_stream(&b);
    let whole = {
        let mut h = H2::ZERO;
        h.start(false, true, 1000, Some(5000));
        let mut rec = Rec::default();
        feed(&mut h, true, &s, 1000, s.len() as u32, 1000, 1, &mut rec);
        summary(&rec)
    };
    for size in [1u32, 2, 5, 9, 10, 17, 100, 255, 256, 257, 1000] {
        let mut h = H2::ZERO;
        h.start(false, true, 1000, Some(5000));
        let mut rec = Rec::default();
        let mut at = 0u32;
        while (at as usize) < s.len() {
            let len = size.min(s.len() as u32 - at);
            assert!(feed(&mut h, true, &s, 1000 + at, len, 1000 + at, at as u64, &mut rec), "size {size} at {at}");
            at += len;
        }
        assert_eq!(summary(&rec), whole, "segments of {size}");
        assert!(rec.drops.is_empty());
    }
}

/// A gap inside a DATA payload is skipped; a gap over a frame header waits for its bytes
/// (the driver keeps what comes beyond it), and is lost when the socket took them without
/// their passing here.
#[test]
fn gaps() {
    let b = block();
    let s = client_stream(&b);
    let data_at = s.windows(9).position(|w| w == [0, 3, 0xe8, DATA, 0, 0, 0, 0, 1]).unwrap() as u32;
    // Everything up to the DATA payload's middle, then from 600 bytes further on.
    let mut h = H2::ZERO;
    h.start(false, true, 1000, Some(5000));
    let mut rec = Rec::default();
    let cut = data_at + 9 + 100;
    assert!(feed(&mut h, true, &s, 1000, cut, 1000, 1, &mut rec));
    let resume = cut + 600;
    assert!(feed(&mut h, true, &s, 1000 + resume, s.len() as u32 - resume, 1000 + cut, 2, &mut rec));
    assert_eq!(rec.got.iter().filter(|g| g.f.ftype == DATA).count(), 2);
    assert!(rec.drops.is_empty());

    // A gap over the HEADERS frame's header: the later bytes are not parsed (kept)...
    let hdr_at = s.windows(9).position(|w| w == [0, 0, 200, HEADERS, 0, 0, 0, 0, 1]).unwrap() as u32;
    let mut h = H2::ZERO;
    h.start(false, true, 1000, Some(5000));
    let mut rec = Rec::default();
    feed(&mut h, true, &s, 1000, hdr_at + 4, 1000, 1, &mut rec);
    assert!(!feed(&mut h, true, &s, 1000 + hdr_at + 20, 40, 1000 + hdr_at + 4, 2, &mut rec));
    // ... until the missing bytes come.
    assert!(feed(&mut h, true, &s, 1000 + hdr_at + 4, s.len() as u32 - hdr_at - 4, 1000 + hdr_at + 4, 3, &mut rec));
    assert_eq!(rec.got.iter().filter(|g| g.f.ftype == DATA).count(), 2);

    // The socket took the missing bytes in order without their passing here: lost.
    let mut h = H2::ZERO;
    h.start(false, true, 1000, Some(5000));
    let mut rec = Rec::default();
    feed(&mut h, true, &s, 1000, hdr_at + 4, 1000, 1, &mut rec);
    assert!(!feed(&mut h, true, &s, 1000 + hdr_at + 20, 40, 1000 + hdr_at + 60, 2, &mut rec));
    assert_eq!(rec.got.last().unwrap().f.kind, EV_LOST);
    assert!(h.stopped(true));
}

/// A server's stream starts with its SETTINGS; a frame that HTTP/2 forbids loses the place;
/// the connection's end is reported once.
#[test]
fn server_stream_and_end() {
    let mut s = frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]);
    s.extend(frame(HEADERS, FLAG_END_HEADERS, 1, &[0x88]));
    s.extend(frame(DATA, FLAG_END_STREAM, 1, b"hello"));
    s.extend(frame(HEADERS, FLAG_END_HEADERS, 0, &[0x88]));
    s.extend(frame(DATA, 0, 1, b"never seen"));
    let mut h = H2::ZERO;
    h.start(true, false, 1000, Some(9000));
    let mut rec = Rec::default();
    feed(&mut h, false, &s, 1000, s.len() as u32, 1000, 5, &mut rec);
    let kinds: Vec<(u8, u8)> = rec.got.iter().map(|g| (g.f.kind, g.f.ftype)).collect();
    assert_eq!(kinds, std::vec![(EV_FRAME, SETTINGS), (EV_FRAME, HEADERS), (EV_FRAME, DATA), (EV_LOST, HEADERS)]);
    assert!(rec.got.iter().all(|g| !g.f.is_req));
    assert_eq!(rec.drops, std::vec![crate::drop::HTTP_DESYNC]);
    h.fin(true, 9000, 6, &mut rec);
    h.fin(false, 1000 + s.len() as u32, 6, &mut rec);
    assert!(h.ended());
    h.flush(&mut rec);
    h.abandon_all(&mut rec);
    assert_eq!(rec.got.iter().filter(|g| g.f.kind == EV_CLOSED).count(), 1);
}

/// A GOAWAY frame: its last stream id and error code (8 bytes) go to the sink, its debug data
/// never does, and the frames after it are followed; at every segment boundary.
#[test]
fn goaway_gives_its_last_stream_id_only() {
    let mut s = frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]);
    s.extend(frame(HEADERS, FLAG_END_HEADERS, 1, &[0x88]));
    let mut payload = std::vec![0, 0, 0, 1, 0, 0, 0, 0];
    payload.extend_from_slice(&[b's'; 300]);
    s.extend(frame(GOAWAY, 0, 0, &payload));
    s.extend(frame(GOAWAY, 0, 0, &[0, 0, 0, 3, 0, 0, 0, 2]));
    s.extend(frame(DATA, FLAG_END_STREAM, 1, b"hello"));
    for size in [1u32, 3, 8, 9, 12, 17, 100, 256, s.len() as u32] {
        let mut h = H2::ZERO;
        h.start(true, false, 1000, Some(9000));
        let mut rec = Rec::default();
        let mut at = 0u32;
        while (at as usize) < s.len() {
            let len = size.min(s.len() as u32 - at);
            feed(&mut h, false, &s, 1000 + at, len, 1000 + at, at as u64, &mut rec);
            at += len;
        }
        let frames = summary(&rec);
        let want: Vec<(u8, u8, u32, u32, Vec<u8>)> = std::vec![
            (EV_FRAME, SETTINGS, 0, 6, std::vec![0, 3, 0, 0, 0, 100]),
            (EV_FRAME, HEADERS, 1, 1, std::vec![0x88]),
            (EV_FRAME, GOAWAY, 0, 308, std::vec![0, 0, 0, 1, 0, 0, 0, 0]),
            (EV_FRAME, GOAWAY, 0, 8, std::vec![0, 0, 0, 3, 0, 0, 0, 2]),
            (EV_FRAME, DATA, 1, 5, std::vec![]),
        ];
        assert_eq!(frames, want, "segments of {size}");
        assert!(rec.got.iter().all(|g| !g.bytes.contains(&b's')), "debug data sent (segments of {size})");
        assert!(rec.drops.is_empty());
    }
}

/// 16 bytes of `b` as `midstream_join` takes them, zero-padded.
fn join_of(b: &[u8], avail: usize) -> u8 {
    let mut x = [0u8; 16];
    for (i, v) in b.iter().take(16).enumerate() {
        x[i] = *v;
    }
    let lo = u64::from_le_bytes(x[..8].try_into().unwrap());
    let hi = u64::from_le_bytes(x[8..].try_into().unwrap());
    super::midstream_join(lo, hi, avail as u32)
}

#[test]
fn midstream_join_points() {
    use super::{FLAG_PADDED, FLAG_PRIORITY, JOIN_HEADERS, JOIN_REQUEST, JOIN_RESPONSE};
    let eh = FLAG_END_HEADERS;
    let cases: [(Vec<u8>, u8); 16] = [
        // `:method: POST`, `:method: GET` with END_STREAM, `:path` literal, `:authority`.
        (frame(HEADERS, eh, 1, &[0x83, 0x86, 0x44, 1, b'/']), JOIN_REQUEST),
        (frame(HEADERS, eh | FLAG_END_STREAM, 7, &[0x82, 0x86, 0x84]), JOIN_REQUEST),
        (frame(HEADERS, eh, 3, &[0x04, 1, b'/', 0x82]), JOIN_REQUEST),
        (frame(HEADERS, eh, 3, &[0x41, 1, b'a', 0x82]), JOIN_REQUEST),
        // `:status: 200`, a literal `:status` without indexing and with incremental indexing.
        (frame(HEADERS, eh, 5, &[0x88, 0xbe]), JOIN_RESPONSE),
        (frame(HEADERS, eh, 5, &[0x08, 3, b'4', b'0', b'3']), JOIN_RESPONSE),
        (frame(HEADERS, eh, 5, &[0x48, 3, b'4', b'0', b'3']), JOIN_RESPONSE),
        // Padded and with priority: the block starts after them.
        (frame(HEADERS, eh | FLAG_PADDED | FLAG_PRIORITY, 9, &[2, 0, 0, 0, 1, 16, 0x88, 0, 0]), JOIN_RESPONSE),
        // HEADERS frames that do not tell their kind: trailers (a regular field first), a
        // dynamic entry first, a size update first.
        (frame(HEADERS, eh | FLAG_END_STREAM, 5, &[0x40, 11, b'g', b'r', b'p', b'c']), JOIN_HEADERS),
        (frame(HEADERS, eh, 5, &[0xbe, 0x88]), JOIN_HEADERS),
        (frame(HEADERS, eh, 5, &[0x20, 0x88]), JOIN_HEADERS),
        // Not join points: without END_HEADERS, on an even or a zero stream, a DATA frame,
        // padding as long as the frame, a frame longer than the segment.
        (frame(HEADERS, 0, 5, &[0x88]), 0),
        (frame(HEADERS, eh, 4, &[0x88]), 0),
        (frame(DATA, 0, 5, &[0x88, 0, 0, 0, 0, 0, 0]), 0),
        (frame(HEADERS, eh | FLAG_PADDED, 5, &[2, 0x88, 0]), 0),
        (frame(HEADERS, eh, 0, &[0x88]), 0),
    ];
    for (i, (b, want)) in cases.iter().enumerate() {
        assert_eq!(join_of(b, b.len()), *want, "case {i}");
    }
    let f = frame(HEADERS, eh, 1, &[0x83, 0x86, 0x84]);
    assert_eq!(join_of(&f, f.len() - 1), 0);
}

/// A connection seen from its middle: the requests' direction joined at a request's HEADERS
/// frame, the responses' at its first segment that starts with a response's.
#[test]
fn joined_from_the_middle() {
    let mut req = frame(HEADERS, FLAG_END_HEADERS, 5, &[0x83, 0x86, 0x44, 2, b'/', b'x', 0xbf]);
    req.extend(frame(DATA, FLAG_END_STREAM, 5, &[1; 40]));
    // Responses: the end of a DATA payload of stream 3, a PING, then stream 5's response.
    let tail = [9u8; 30];
    let ping = frame(PING, 0, 0, &[2; 8]);
    let mut resp5 = frame(HEADERS, FLAG_END_HEADERS, 5, &[0x88, 0xc0]);
    resp5.extend(frame(DATA, 0, 5, &[3; 20]));
    resp5.extend(frame(HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, 5, &[0x40, 1, b'a', 1, b'b']));
    let mut resp = tail.to_vec();
    resp.extend(&ping);
    resp.extend(&resp5);

    let mut h = H2::ZERO;
    // As the kernel sets it up (skb.rs): the requests' direction from the segment's start.
    h.start(true, true, 1000, Some(7000));
    h.join(true, 1000);
    let mut rec = Rec::default();
    assert!(feed(&mut h, true, &req, 1000, req.len() as u32, 1000, 1, &mut rec));
    // Each response segment is looked at; the first two start no response.
    let (a, b) = (tail.len() as u32, ping.len() as u32);
    let r = |seq: u32| 7000 + seq;
    feed_at(&mut h, false, &resp, 7000, r(0), a, r(0), 2, &mut rec);
    feed_at(&mut h, false, &resp, 7000, r(a), b, r(a), 3, &mut rec);
    assert!(!h.stopped(false));
    feed_at(&mut h, false, &resp, 7000, r(a + b), resp5.len() as u32, r(a + b), 4, &mut rec);
    let got: Vec<(bool, u8, u32, u32)> = rec.got.iter().map(|g| (g.f.is_req, g.f.ftype, g.f.stream, g.f.n)).collect();
    assert_eq!(
        got,
        std::vec![
            (true, HEADERS, 5, 7),
            (true, DATA, 5, 0),
            (false, HEADERS, 5, 2),
            (false, DATA, 5, 0),
            (false, HEADERS, 5, 5),
        ]
    );
    assert!(rec.got.iter().all(|g| g.f.kind == EV_FRAME));
    assert!(rec.drops.is_empty());
    // A segment that starts before what was seen is not looked at.
    let mut h = H2::ZERO;
    h.start(true, true, 1000, Some(7000));
    h.join(true, 1000);
    let mut rec = Rec::default();
    feed_at(&mut h, false, &resp, 7000, r(a + b), 4, r(a + b), 1, &mut rec);
    feed_at(&mut h, false, &resp, 7000, r(a + b), resp5.len() as u32, r(a + b), 2, &mut rec);
    assert!(rec.got.is_empty());
}

/// What an event carries of the window: the chunk's bytes, every other byte zero, for every
/// chunk position and length.
#[test]
fn events_carry_only_their_chunk() {
    let window: Vec<u8> = (0..256u32).map(|i| (i % 251 + 1) as u8).collect();
    let words: Vec<u64> = window.chunks(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect();
    for lo in 0..256u32 {
        for n in [0u32, 1, 2, 7, 8, 9, 15, 16, 63, 100, 255, 256] {
            let hi = (lo + n).min(256);
            let got: Vec<u8> = words
                .iter()
                .enumerate()
                .flat_map(|(i, w)| super::chunk_word(*w, i as u32, lo, lo + n).to_le_bytes())
                .collect();
            for (b, (g, w)) in got.iter().zip(&window).enumerate() {
                let inside = (lo..hi).contains(&(b as u32));
                assert_eq!(*g, if inside { *w } else { 0 }, "chunk [{lo}, {}) byte {b}", lo + n);
            }
        }
    }
}
