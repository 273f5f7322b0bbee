//! HTTP/1.x behind the capture's seam: the framer (`framer::Exchange`) as a
//! `collector_common::capture::Stream`, the interface the kernel's drivers (packets and TLS
//! plaintext) and the host driver (`sim`) feed bytes through.

use super::framer::{Exchange, S_IGNORE, S_LOST, S_UPGRADED, SF_RECEIVED, Sink, Window, needs_bytes, skippable};

impl crate::capture::Stream for Exchange {
    #[inline(always)]
    fn start(&mut self, received: bool, is_req: bool, seq: u32, other: Option<u32>) {
        self.dir_mut(received).sflags |= SF_RECEIVED;
        self.dir_mut(is_req).sync(seq);
        if let Some(o) = other {
            self.dir_mut(!is_req).sync(o);
        }
    }

    #[inline(always)]
    fn arrive<S: Sink>(&mut self, is_req: bool, seq: u32, len: u32, frontier: u32, now: u64, sink: &mut S) -> bool {
        Exchange::arrive(self, is_req, seq, len, frontier, now, sink)
    }

    #[inline(always)]
    fn received_upto<S: Sink>(&mut self, received: bool, upto: u32, now: u64, sink: &mut S) {
        if skippable(self.dir(received).state) {
            self.reached(received, upto, now, sink);
        }
        if !received && self.has_deferred() {
            let when = self.resp.fill_ns;
            self.resolve(upto, when, sink);
        }
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
        Exchange::step(self, is_req, seg_end, now, sink)
    }

    #[inline(always)]
    fn settle<S: Sink>(&mut self, is_req: bool, now: u64, sink: &mut S) {
        Exchange::settle(self, is_req, now, sink)
    }

    #[inline(always)]
    fn fin<S: Sink>(&mut self, is_req: bool, fin: u32, now: u64, sink: &mut S) {
        Exchange::fin(self, is_req, fin, now, sink)
    }

    #[inline(always)]
    fn abandon_all<S: Sink>(&mut self, sink: &mut S) {
        Exchange::abandon_all(self, sink)
    }

    #[inline(always)]
    fn ended(&self) -> bool {
        Exchange::ended(self)
    }

    #[inline(always)]
    fn flush<S: Sink>(&mut self, sink: &mut S) {
        Exchange::flush(self, sink)
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
        let s = self.dir(is_req).state;
        s == S_LOST || s == S_IGNORE || s == S_UPGRADED
    }

    #[inline(always)]
    fn resyncs(&self, is_req: bool) -> bool {
        self.dir(is_req).state == S_LOST
    }

    #[inline(always)]
    fn not_switched<S: Sink>(&mut self, now: u64, sink: &mut S) {
        if self.upgrading() {
            self.not_upgraded(now, sink);
        }
    }
}
