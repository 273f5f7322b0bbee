//! HTTP/2 behind the capture's seam: the framer (`framer::H2`) as a
//! `collector_common::capture::Stream`.

use super::framer::{H2, S_IGNORE, S_SEEK, Window, needs_bytes, skippable};
use crate::capture::{Sink, Stream};

impl Stream for H2 {
    #[inline(always)]
    fn start(&mut self, _received: bool, is_req: bool, seq: u32, other: Option<u32>) {
        // The connection is classified at its first bytes: the client's preface on the
        // requests' direction, or the server's SETTINGS on the responses'.
        self.dir_mut(is_req).sync(seq, is_req);
        if let Some(o) = other {
            self.dir_mut(!is_req).sync(o, !is_req);
        }
    }

    #[inline(always)]
    fn arrive<S: Sink>(&mut self, is_req: bool, seq: u32, len: u32, frontier: u32, now: u64, sink: &mut S) -> bool {
        H2::arrive(self, is_req, seq, len, frontier, now, sink)
    }

    #[inline(always)]
    fn received_upto<S: Sink>(&mut self, received: bool, upto: u32, now: u64, sink: &mut S) {
        self.reached(received, upto, now, sink);
    }

    #[inline(always)]
    fn needs_window(&self, is_req: bool, seg_end: u32) -> Option<(u32, u32)> {
        self.dir(is_req).needs_window(seg_end)
    }

    #[inline(always)]
    fn window(&mut self, is_req: bool) -> &mut Window {
        &mut self.dir_mut(is_req).w
    }

    #[inline(always)]
    fn step<S: Sink>(&mut self, is_req: bool, seg_end: u32, now: u64, sink: &mut S) -> bool {
        H2::step(self, is_req, seg_end, now, sink)
    }

    #[inline(always)]
    fn settle<S: Sink>(&mut self, is_req: bool, now: u64, sink: &mut S) {
        H2::settle(self, is_req, now, sink)
    }

    #[inline(always)]
    fn fin<S: Sink>(&mut self, is_req: bool, fin: u32, now: u64, sink: &mut S) {
        H2::fin(self, is_req, fin, now, sink)
    }

    #[inline(always)]
    fn abandon_all<S: Sink>(&mut self, sink: &mut S) {
        self.close(sink)
    }

    #[inline(always)]
    fn ended(&self) -> bool {
        H2::ended(self)
    }

    #[inline(always)]
    fn flush<S: Sink>(&mut self, sink: &mut S) {
        self.close(sink)
    }

    #[inline(always)]
    fn position(&self, is_req: bool) -> u32 {
        self.dir(is_req).pos
    }

    #[inline(always)]
    fn needs_bytes(&self, is_req: bool) -> bool {
        needs_bytes(self.dir(is_req).state)
    }

    #[inline(always)]
    fn takes_bytes(&self, is_req: bool) -> bool {
        let s = self.dir(is_req).state;
        needs_bytes(s) || skippable(s)
    }

    #[inline(always)]
    fn stopped(&self, is_req: bool) -> bool {
        self.dir(is_req).state == S_IGNORE
    }

    #[inline(always)]
    fn resyncs(&self, is_req: bool) -> bool {
        self.dir(is_req).state == S_SEEK
    }
}
