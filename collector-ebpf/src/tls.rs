//! TLS: HTTP/1.x over TLS, from the plaintext the TLS library hands to the application and takes
//! from it. Uprobes on `SSL_read`, `SSL_read_ex`, `SSL_write` and `SSL_write_ex` (OpenSSL 1.1
//! and 3, BoringSSL; in `libssl.so` or linked into a binary that exports them, as Node.js does)
//! note the call's buffer (where a function and its `_ex` variant both call one that does the
//! work with the variant's arguments, that one instead, with the variant's program: the daemon
//! decides, `collector/src/tls/elf.rs`); a return probe on each takes how many bytes the call moved and feeds
//! them, with their position in that direction's plaintext stream, to the connection's framer
//! (`collector_common::http::framer`, the same as for cleartext). A TLS connection is keyed by
//! process and `SSL *`; its state lives in `TLS_CONNS` from its first bytes that start an HTTP
//! message until `SSL_free` (`tls_free`) or the process's exit (the daemon sweeps those).
//!
//! Which socket a TLS connection uses (its ports and peer address, the labels cleartext
//! exchanges get from their packets) comes from `tcp:tcp_rcv_space_adjust`, which the kernel
//! fires in the receiving thread on every `recvmsg` of a TCP socket that copies data
//! (`tls_recv`): a library reading its socket itself (OpenSSL's socket BIO) does it within the
//! `SSL_read` call, which names the connection exactly; a library fed by its caller (Node.js's
//! memory BIO) gets its bytes from the socket the thread received from last, just before.
//!
//! Duration over TLS: from the arrival of the request (the last segment the socket received up
//! to the `SSL_read` that yields the request's first byte, noted by the cleartext ingress
//! program in `TLS_ARRIVALS`; else that read's return) to the return of the `SSL_write` that
//! takes the last byte of the response (server side); from the return of the `SSL_write` taking the first request byte to the return of the
//! `SSL_read` yielding the last response byte (client side). No plaintext byte leaves the
//! kernel: the programs keep at most the framer's window of a message's start.
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{tracepoint, uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext, TracePointContext},
};
use collector_common::http::tls::{ArrivalKey, Peer};

use crate::{
    capture::{
        self,
        arrivals::{RECV_OFFSETS, TLS_ARRIVALS},
        plain::{self, Call, CallKey, TLS_CALLS, TLS_PROCS, TLS_RECV, note_process, read_user, thread_key},
    },
    http1, http2,
};

/// An entry probe program twice, under two names: attached a probe per offset (`uprobe`), and
/// through uprobe_multi links (`uprobe.multi`, Linux 6.6; the daemon loads one of the two:
/// `collector_common::names::program::UPROBES`).
macro_rules! entry_probe {
    ($(#[$doc:meta])* $single:ident, $multi:ident, |$ctx:ident: $ty:ty| $body:block) => {
        $(#[$doc])*
        #[uprobe]
        pub fn $single($ctx: $ty) -> u32 $body

        $(#[$doc])*
        #[uprobe(multi)]
        pub fn $multi($ctx: $ty) -> u32 $body
    };
}

/// A return probe program twice (see `entry_probe`).
macro_rules! return_probe {
    ($(#[$doc:meta])* $single:ident, $multi:ident, |$ctx:ident: $ty:ty| $body:block) => {
        $(#[$doc])*
        #[uretprobe]
        pub fn $single($ctx: $ty) -> u32 $body

        $(#[$doc])*
        #[uretprobe(multi)]
        pub fn $multi($ctx: $ty) -> u32 $body
    };
}

/// Entry of `SSL_read`/`SSL_write` (`ex`: their `_ex` variants): the call's connection and
/// buffer, for the return probe.
#[inline(always)]
fn enter(ctx: &ProbeContext, write: bool, ex: bool) -> u32 {
    let (Some(ssl), Some(buf)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) else { return 0 };
    let count_at = if ex { ctx.arg::<u64>(3).unwrap_or(0) } else { 0 };
    if ex && count_at == 0 {
        return 0;
    }
    let id = bpf_get_current_pid_tgid();
    note_process(id);
    let call = Call { ssl, buf, count_at, write: write as u32, _pad: 0, peer: Peer::default() };
    // A thread's entry stays between its calls (`tls_take` clears its `ssl`); only this
    // thread's programs use it, one at a time.
    capture::put(&TLS_CALLS, &thread_key(id), &call);
    0
}

entry_probe!(tls_read, tls_read_multi, |ctx: ProbeContext| {
    enter(&ctx, false, false)
});

entry_probe!(tls_read_ex, tls_read_ex_multi, |ctx: ProbeContext| {
    enter(&ctx, false, true)
});

entry_probe!(tls_write, tls_write_multi, |ctx: ProbeContext| {
    enter(&ctx, true, false)
});

entry_probe!(tls_write_ex, tls_write_ex_multi, |ctx: ProbeContext| {
    enter(&ctx, true, true)
});

return_probe!(
    /// Return of any of the four: the bytes the call moved go to the connection's framer.
    tls_ret, tls_ret_multi, |ctx: RetProbeContext| {
        let key = thread_key(bpf_get_current_pid_tgid());
        // SAFETY: two fields read at once from this thread's entry (only this thread's probes use
        // it, one at a time); plain integers.
        let Some((ssl, count_at)) = TLS_CALLS.get_ptr(&key).map(|c| unsafe { ((*c).ssl, (*c).count_at) }) else {
            return 0;
        };
        if ssl == 0 {
            // No call of this thread in progress (its entry is kept between calls).
            return 0;
        }
        // `int` in every variant: above 0 for success of the `_ex` ones and of the function they
        // share with the others where that is probed (the count stored at `count_at`: 1 from
        // `SSL_read_ex`), the byte count of the others.
        let ret = ctx.ret::<u64>() as u32 as i32;
        let n = if count_at != 0 {
            if ret > 0 { read_user::<u64>(count_at).unwrap_or(0) } else { 0 }
        } else if ret > 0 {
            ret as u64
        } else {
            0
        };
        feed_call(key, ssl, n);
        0
    }
);

/// The bytes the call `key` moved (`n`, 0 when it failed) go to its connection's protocol: the
/// bookkeeping in `tls_take` and `tls_arrive`, the parse in `tls_parse`, then `tls_settle`,
/// global functions called one after the other so that the verifier's bound on the stack of a
/// chain of calls (512 bytes, each frame rounded up to 32 on 5.10) holds on every kernel: the
/// deepest chain is this program, `tls_parse`, a step and the recording of an exchange.
#[inline(always)]
fn feed_call(key: CallKey, ssl: u64, n: u64) {
    let r = tls_take(key.id, key.process, n);
    if r & TAKE_H2 != 0 {
        let is_req = ((r & !TAKE_H2) - 1) as u64;
        if http2::tls_h2_arrive(ssl, is_req) != 0 {
            http2::tls_h2_parse(ssl, is_req);
        }
        http2::tls_h2_settle(ssl, is_req);
    } else if r != 0 {
        let is_req = (r - 1) as u64;
        if http1::tls_arrive(ssl, is_req) != 0 {
            http1::tls_parse(ssl, is_req);
        }
        http1::tls_settle(ssl, is_req);
    }
}

/// `tls_take`'s result bit for an HTTP/2 connection.
const TAKE_H2: i64 = 4;

/// Takes the call `(id, process)` out of `TLS_CALLS` (a thread's entry stays, its `ssl` set to 0:
/// no call in progress; a goroutine's goes) and, when it moved `n` bytes of a
/// connection followed, places them in their direction's stream (creating the connection's
/// state on its first bytes that start a message: the dispatch by protocol); returns 1 + the
/// direction (`is_req`) to parse, or 0. A global function: its frame is gone before the parse's
/// frames are pushed.
// SAFETY: unmangled (and exported) so that it stays a global function, verified once; the name
// is unique in the object.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn tls_take(id: u64, process: u64, n: u64) -> i64 {
    let ck = CallKey { id, process };
    let Some(c) = TLS_CALLS.get_ptr_mut(&ck) else { return 0 };
    // SAFETY: this thread's or goroutine's entry (map memory valid until the program returns),
    // copied out at once; only its own programs use it, one at a time.
    let call = unsafe { *c };
    if call.ssl == 0 {
        return 0;
    }
    if process == 0 {
        // SAFETY: as above.
        unsafe { (*c).ssl = 0 };
    } else {
        let _ = TLS_CALLS.remove(&ck);
    }
    if n == 0 || n > i32::MAX as u64 {
        return 0;
    }
    // The thread's own key: the socket it received from last names the connection.
    let key = plain::key_of(call.ssl);
    if let Some(c) = http1::tls_conn(&key) {
        return 1 + plain::place(c, &call, n) as i64;
    }
    if let Some(c) = http2::tls_conn(&key) {
        return TAKE_H2 | (1 + plain::place(c, &call, n) as i64);
    }
    let class = plain::classify(&key, &call, n);
    if class >= plain::TLS_H2 {
        return match http2::tls_create(&key, &call, class) {
            Some(c) => TAKE_H2 | (1 + plain::place(c, &call, n) as i64),
            None => 0,
        };
    }
    if class == plain::TLS_NONE {
        return 0;
    }
    match http1::tls_create(&key, &call, class == plain::TLS_RESPONSE) {
        Some(c) => 1 + plain::place(c, &call, n) as i64,
        None => 0,
    }
}

// Go's crypto/tls (`(*Conn).Read`, `(*Conn).Write`, `(*Conn).Close` of the binary, register
// ABI: the receiver in RAX, a slice argument's pointer and length in RBX and RCX, the first
// result in RAX). Go moves goroutine stacks, and a return probe rewrites the return address on
// the stack: it would break the program. So no return probe: `go_tls_ret` is an entry probe on
// each return instruction of Read (found by the daemon, which decodes the function). A Read is
// keyed by its goroutine (the `g` pointer, in R14 in Go's ABI), since a goroutine can move
// between threads while it waits inside Read. A Write is taken at its start (Go's Write writes
// all of its bytes or fails the connection; callers do not retry), on the conditional jump that
// ends the stack check of its prologue (the daemon places it there, and the Read entry too: the
// kernel emulates a probed branch, where it steps the first instruction, a compare, out of line
// with a second trap). The jump is taken when the goroutine's stack must grow (or it is to be
// preempted): the function then re-enters from its first instruction and reaches the jump
// again, so a Write whose jump will be taken is left for that pass (the flags the compare set
// tell: `jbe` jumps on carry or zero), and its bytes are fed once. Taking it at its
// start also orders it before the response: Go's HTTP client writes a request on one goroutine
// and reads the response on another, and a write's return can come after the response's.

/// Key of a Go call in `TLS_CALLS`: the goroutine and its process.
#[inline(always)]
fn go_key(ctx: &ProbeContext) -> CallKey {
    // SAFETY: `regs` is this program's context, the traced task's user registers, valid for
    // the run; a kprobe-type program may read it directly.
    let g = unsafe { (*ctx.regs).r14 };
    CallKey { id: g, process: (bpf_get_current_pid_tgid() >> 32) | 1 << 63 }
}

entry_probe!(go_tls_read, go_tls_read_multi, |ctx: ProbeContext| {
    // SAFETY: as in `go_key`.
    let (conn, buf) = unsafe { ((*ctx.regs).rax, (*ctx.regs).rbx) };
    let id = bpf_get_current_pid_tgid();
    note_process(id);
    let call = Call { ssl: conn, buf, count_at: 0, write: 0, _pad: 0, peer: Peer::default() };
    let _ = TLS_CALLS.insert(&go_key(&ctx), &call, 0);
    0
});

/// x86-64 RFLAGS: carry and zero, on either of which the stack check's `jbe` jumps.
const CARRY_OR_ZERO: u64 = 1 << 0 | 1 << 6;

entry_probe!(go_tls_write, go_tls_write_multi, |ctx: ProbeContext| {
    // SAFETY: as in `go_key`.
    let (conn, buf, len, flags) = unsafe { ((*ctx.regs).rax, (*ctx.regs).rbx, (*ctx.regs).rcx, (*ctx.regs).eflags) };
    if flags & CARRY_OR_ZERO != 0 {
        // The stack check fails: the stack grows and the function starts again (see above).
        return 0;
    }
    let key = go_key(&ctx);
    go_write_call(key.id, conn, buf);
    feed_call(key, conn, len);
    0
});

/// Notes a Go Write as a call of goroutine `g` of this process (as `tls_take` expects), in a
/// frame of its own that is gone before the parse's frames are pushed.
// SAFETY: unmangled (and exported) so that it stays a global function, verified once; the name
// is unique in the object.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn go_write_call(g: u64, conn: u64, buf: u64) -> i64 {
    let id = bpf_get_current_pid_tgid();
    note_process(id);
    let call = Call { ssl: conn, buf, count_at: 0, write: 1, _pad: 0, peer: Peer::default() };
    let key = CallKey { id: g, process: (id >> 32) | 1 << 63 };
    let _ = TLS_CALLS.insert(&key, &call, 0);
    0
}

entry_probe!(
    /// A return instruction of `(*Conn).Read`: the first result (the byte count) is in RAX.
    go_tls_ret, go_tls_ret_multi, |ctx: ProbeContext| {
        let key = go_key(&ctx);
        // SAFETY: one field read at once from this goroutine's entry (only its probes use it, one
        // at a time); a plain integer.
        let Some(ssl) = TLS_CALLS.get_ptr(&key).map(|c| unsafe { (*c).ssl }) else { return 0 };
        // SAFETY: as in `go_key`.
        let n = unsafe { (*ctx.regs).rax } as i64;
        feed_call(key, ssl, if n > 0 { n as u64 } else { 0 });
        0
    }
);

entry_probe!(
    /// `(*Conn).Close`: the connection's state goes.
    go_tls_close, go_tls_close_multi, |ctx: ProbeContext| {
        // SAFETY: as in `go_key`.
        let conn = unsafe { (*ctx.regs).rax };
        http1::tls_close(conn);
        http2::tls_h2_close(conn);
        0
    }
);

entry_probe!(
    /// A handshake starting (`SSL_do_handshake`, Go's `(*Conn).handshakeContext`): marks the
    /// process as a TLS user, so that `tls_recv` notes the sockets its threads receive from from
    /// now on. The handshake's reads may take in the first request too (Go reads what is there):
    /// the first `Read` then receives nothing itself and takes the socket noted here.
    tls_handshake, tls_handshake_multi, |_ctx: ProbeContext| {
        note_process(bpf_get_current_pid_tgid());
        0
    }
);

entry_probe!(
    /// `SSL_free`: the connection's state goes.
    tls_free, tls_free_multi, |ctx: ProbeContext| {
        if let Some(ssl) = ctx.arg::<u64>(0) {
            http1::tls_close(ssl);
            http2::tls_h2_close(ssl);
        }
        0
    }
);

/// `tcp:tcp_rcv_space_adjust`: a thread of a TLS-using process received from a TCP socket.
#[tracepoint]
pub fn tls_recv(ctx: TracePointContext) -> u32 {
    if !plain::any_noted() {
        return 0;
    }
    let id = bpf_get_current_pid_tgid();
    if TLS_PROCS.get_ptr(&((id >> 32) as u32)).is_none() {
        return 0;
    }
    let off = RECV_OFFSETS.load();
    // SAFETY: `read_at` copies the bytes at the field offsets of the format file (read by the
    // daemon) through `bpf_probe_read_kernel`, which fails rather than faults; any bytes are
    // valid for these integer and byte-array types.
    let fields = unsafe {
        (
            ctx.read_at::<u16>(off.sport as usize),
            ctx.read_at::<u16>(off.dport as usize),
            ctx.read_at::<[u8; 16]>(off.saddr_v6 as usize),
            ctx.read_at::<[u8; 16]>(off.daddr_v6 as usize),
        )
    };
    let (Ok(sport), Ok(dport), Ok(saddr), Ok(daddr)) = fields else { return 0 };
    let key = ArrivalKey { peer_addr: daddr, local_port: sport, peer_port: dport, _pad: 0 };
    // SAFETY: the value is copied out at once; any u64 is valid.
    let arrived = unsafe { TLS_ARRIVALS.get(&key) }.copied().unwrap_or(0);
    let peer = Peer { local_addr: saddr, peer_addr: daddr, local_port: sport, peer_port: dport, set: 1, arrived };
    // Only this thread's programs write or read its entry, one at a time.
    capture::put(&TLS_RECV, &id, &peer);
    if let Some(c) = TLS_CALLS.get_ptr_mut(&thread_key(id)) {
        // SAFETY: this thread's entry in `TLS_CALLS` (preallocated map memory, valid until the
        // program returns); only this thread's probes use the entry, and they run one at a
        // time on it.
        unsafe { (*c).peer = peer };
    }
    0
}
