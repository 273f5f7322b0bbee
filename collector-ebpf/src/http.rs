//! HTTP: socket-level HTTP/1.x request/response tracking on cgroup_skb ingress and egress of the
//! cgroup v2 root. Every TCP segment with payload is fed, in stream order (TCP sequence numbers),
//! to a per-connection, per-direction HTTP/1.x framer kept in the socket's local storage. The framer
//! parses only start lines and the headers that frame a message (Content-Length,
//! Transfer-Encoding: chunked); bodies are skipped arithmetically, so a large or sendfile
//! response costs the same as a small one. Requests wait in a per-connection FIFO (pipelining)
//! until their response's last byte passes; the duration and sizes then go into histograms
//! aggregated in the kernel (`HTTP_HIST`). No payload byte leaves the kernel.
//!
//! Server side (a socket that receives requests): from the first request byte arriving
//! (ingress) to the last response byte leaving (egress). Client side (a socket that sends
//! requests): from the first request byte leaving to the last response byte arriving.
use core::{
    ffi::c_void,
    intrinsics::{AtomicOrdering, atomic_xadd},
};

use aya_ebpf::{
    EbpfContext,
    bindings::{
        __sk_buff, BPF_NOEXIST, BPF_SK_STORAGE_GET_F_CREATE, BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB,
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB, BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG, bpf_sock,
    },
    btf_maps::SkStorage,
    helpers::{
        bpf_get_current_comm, bpf_ktime_get_ns,
        generated::{
            bpf_loop, bpf_sk_fullsock, bpf_sk_storage_delete, bpf_sk_storage_get, bpf_skb_cgroup_id, bpf_skb_load_bytes,
            bpf_tcp_sock,
        },
    },
    macros::{btf_map, cgroup_skb, map, sock_ops},
    maps::{Array, HashMap, PerCpuHashMap},
    programs::{SkBuffContext, SockOpsContext},
};
use collector_common::{
    drop,
    http::{
        ActiveKey, BOUND_CAP, HttpHist, HttpKey, MAX_DURATION_BOUNDS, OVERFLOW_METHOD, SIDE_CLIENT, SIDE_SERVER,
        method, size_bucket,
    },
};

use crate::{drops, network};

/// Upper bounds of the duration buckets in nanoseconds, set by the daemon; unused slots hold
/// `BOUND_CAP` so nothing lands beyond the configured +Inf bucket.
#[unsafe(no_mangle)]
static DURATION_BOUNDS_NS: [u64; MAX_DURATION_BOUNDS] = [BOUND_CAP; MAX_DURATION_BOUNDS];

/// Benchmarks only (`cargo xtask bench`, set by the daemon from `COLLECTOR_BENCH_HTTP_STAGE`):
/// 0 runs the whole program; 1, 2 and 3 return at the stage boundaries whose cost the bench
/// breaks down (docs/performance.md). A read-only global, so the verifier knows its value: the
/// branches not taken and the code only they reach are dropped from the loaded program (the
/// loads of the global stay, a few instructions).
#[unsafe(no_mangle)]
static HTTP_BENCH_STAGE: u32 = 0;

/// Whether the program returns at benchmark stage `stage` (see `HTTP_BENCH_STAGE`).
#[inline(always)]
fn bench_stop(stage: u32) -> bool {
    // A volatile read: the compiler would fold the initial value.
    unsafe { core::ptr::read_volatile(&raw const HTTP_BENCH_STAGE) == stage }
}

/// Packet bytes loaded per `bpf_skb_load_bytes` (a copy out of the skb's page fragments costs
/// the same for 16 or 128 bytes).
const BUF_WORDS: usize = 16;
const BUF: u32 = (BUF_WORDS * 8) as u32;

/// Requests in flight per connection (pipelining depth); a power of two.
const PIPELINE: usize = 8;
/// Parser steps per segment: a step consumes at least one byte (a GSO segment carries at most
/// 64 KiB), usually a whole line or more.
const MAX_STEPS: u32 = 1 << 17;

// Parser states.
const S_START: u8 = 0;
const S_REQLINE: u8 = 1;
const S_RESPLINE: u8 = 2;
const S_HEADERS: u8 = 3;
const S_HDR_LF: u8 = 4;
const S_BODY: u8 = 5;
const S_CHUNK_SIZE: u8 = 6;
const S_CHUNK_EXT: u8 = 7;
const S_CHUNK_DATA: u8 = 8;
const S_CHUNK_END: u8 = 9;
const S_TRAILER: u8 = 10;
const S_TRAILER_LF: u8 = 11;
const S_UNTIL_CLOSE: u8 = 12;
/// Not HTTP/1.x (or no longer followable): segments are ignored.
const S_IGNORE: u8 = 13;

// Header matcher states.
const M_NONE: u8 = 0;
const M_CL: u8 = 1;
const M_TE: u8 = 2;
const M_CL_VAL: u8 = 3;
const M_TE_VAL: u8 = 4;

// Stream flags.
const F_SYNCED: u8 = 1;
const F_CHUNKED: u8 = 2;
const F_HAS_CL: u8 = 4;
const F_METHOD_DONE: u8 = 8;
const F_DIGIT: u8 = 16;

// Connection roles (set when the connection state is created).
const ROLE_SERVER: u8 = 1;
const ROLE_CLIENT: u8 = 2;
const ROLE_NOT_HTTP: u8 = 3;

const CL_NAME: &[u8; 15] = b"content-length:";
/// Little-endian words of the header names, and masks that lower-case their letters only.
const fn le(b: &[u8]) -> u64 {
    let mut v = 0u64;
    let mut i = 0;
    while i < b.len() {
        v |= (b[i] as u64) << (8 * i);
        i += 1;
    }
    v
}
/// 0x20 in every byte that holds a letter of `b` (so only letters are folded to lower case).
const fn letters(b: &[u8]) -> u64 {
    let mut v = 0u64;
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_lowercase() {
            v |= 0x20 << (8 * i);
        }
        i += 1;
    }
    v
}
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
const TE_NAME: &[u8; 18] = b"transfer-encoding:";
const CHUNKED: &[u8; 7] = b"chunked";

/// One direction of a connection.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Stream {
    next_seq: u32,
    state: u8,
    hmatch: u8,
    hidx: u8,
    flags: u8,
    line_pos: u32,
    status: u16,
    method_len: u8,
    _pad: u8,
    /// First bytes of the start line (the method), big-endian.
    word: u64,
    /// The last 8 bytes seen on the start line.
    tail: u64,
    /// Body or chunk bytes still to skip.
    remaining: u64,
    content_length: u64,
    /// Body bytes of the current message.
    body: u64,
    // The walk over the current segment. Kept in the map value rather than on the stack: the
    // verifier does not track map memory, so the bpf_loop callback converges at once.
    w_off: u32,
    w_end: u32,
    w_base: u32,
    w_stop: u32,
    w_now: u64,
    w_len: u32,
    _wpad: u32,
    /// Packet bytes [w_base, w_base + w_len) loaded by the last reload, in memory order.
    w_buf: [u64; BUF_WORDS],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Pending {
    start_ns: u64,
    req_bytes: u64,
    method: u8,
    _pad: [u8; 7],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Conn {
    /// The stream carrying requests (ingress for servers, egress for clients) and responses.
    req: Stream,
    resp: Stream,
    // The byte arrays sit at 8-byte offsets so that copying them into a key is two word moves
    // (an unaligned copy becomes a call to a byte-wise memcpy).
    /// Name of the process that owns the socket (first 16 bytes, NUL-padded), when seen.
    comm: [u8; 16],
    addr: [u8; 16],
    cgroup_id: u64,
    local_port: u16,
    peer_port: u16,
    family: u8,
    role: u8,
    // The FIFO of waiting requests: `pushed` is written only on the request direction and
    // `popped` only on the response direction, so a request arriving on one CPU while the
    // previous response leaves on another loses no update. Both wrap; the difference is the
    // number waiting (at most PIPELINE).
    pushed: u8,
    popped: u8,
    /// Bit 0: FIN seen on egress; bit 1: on ingress.
    fin: u8,
    _pad: [u8; 7],
    pending: [Pending; PIPELINE],
}

static ZERO_HIST: HttpHist = HttpHist::ZERO;

/// Entry 0 is set to 1 by the daemon once both programs are attached. The two hooks are
/// attached one after the other: a connection whose request passed the first while the second
/// was not yet attached would have its response missed and every later response paired with
/// the request before it. Until then the programs only count packets.
#[map]
static HTTP_ARMED: Array<u32> = Array::with_max_entries(1, 0);

/// Connection state in the socket's local storage: found through the socket itself (no hashing,
/// no table to outgrow), created zeroed on the first segment that starts a request or a
/// response (see `handle`), and freed by the kernel with the socket (or deleted earlier, on FIN
/// both ways or RST).
#[btf_map]
static HTTP_CONNS: SkStorage<Conn> = SkStorage::new();

/// Sockets that are not (or not yet) followed, one byte each so other protocols cost no
/// connection state: `MIDSTREAM_TRIES` once the socket is known not to carry HTTP/1.x (and is
/// not looked at again), below it the segments seen from the middle of its stream that
/// started no message.
#[btf_map]
static HTTP_NOT_HTTP: SkStorage<u8> = SkStorage::new();

/// The socket's value in a socket-storage map (`create`: a zeroed one if it has none).
#[inline(always)]
fn sk_storage<T>(map: &SkStorage<T>, sk: *mut bpf_sock, create: bool) -> *mut T {
    let flags = if create { BPF_SK_STORAGE_GET_F_CREATE as u64 } else { 0 };
    let map = map as *const SkStorage<T> as *mut c_void;
    unsafe { bpf_sk_storage_get(map, sk as *mut c_void, core::ptr::null_mut(), flags) as *mut T }
}

/// Segments of a connection seen from the middle of its stream that may pass without starting
/// a message before the connection is taken for something other than HTTP/1.x.
const MIDSTREAM_TRIES: u8 = 64;

/// Whether a segment starting at `seq` carries the first payload byte of its direction of the
/// connection: the next expected sequence number minus the bytes the socket has received
/// (ingress), or the oldest unacknowledged one minus the bytes acknowledged (egress). The
/// kernel counts the acknowledged SYN in `bytes_acked` (measured here: the first payload byte
/// sent is one past that difference), so either of the two counts as the start.
#[inline(always)]
fn at_stream_start(sk: *mut bpf_sock, egress: bool, seq: u32) -> bool {
    let tp = unsafe { bpf_tcp_sock(sk) };
    let Some(tp) = (unsafe { tp.as_ref() }) else { return false };
    if egress {
        seq.wrapping_sub(tp.snd_una.wrapping_sub(tp.bytes_acked as u32)) <= 1
    } else {
        seq == tp.rcv_nxt.wrapping_sub(tp.bytes_received as u32)
    }
}

/// A known method and its space at the start of 8 bytes (little-endian): (method id, its
/// length, its bytes packed big-endian).
#[inline(always)]
fn known_method(w: u64) -> Option<(u8, u32, u64)> {
    let spaces = byte_bits(w, b' ');
    // The lowest flagged byte is exact.
    let p = spaces.trailing_zeros() / 8;
    if spaces == 0 || p == 0 || p > 7 {
        return None;
    }
    let word = (w & ((1u64 << (8 * p)) - 1)).swap_bytes() >> (64 - 8 * p);
    let m = method::from_word(word, p);
    (m != method::OTHER).then_some((m, p, word))
}

#[inline(always)]
fn sk_storage_delete<T>(map: &SkStorage<T>, sk: *mut bpf_sock) {
    unsafe { bpf_sk_storage_delete(map as *const SkStorage<T> as *mut c_void, sk as *mut c_void) };
}

/// Aggregated histograms. Shared by all CPUs (atomic adds): one entry per label set.
#[map]
static HTTP_HIST: HashMap<HttpKey, HttpHist> = HashMap::with_max_entries(8192, 0);

/// Server requests in flight per (cgroup, port): +1 when a request starts, -1 when its response
/// ends or it is abandoned (two's complement adds, summed over the CPUs by the daemon). Per CPU
/// because the two usually happen on different CPUs (a request arrives in the receiving
/// softirq, its response leaves from the serving thread): a shared counter would move between
/// their caches twice per request. Atomic adds all the same: a softirq can interrupt a program
/// on its CPU and update the same slot.
#[map]
static HTTP_ACTIVE: PerCpuHashMap<ActiveKey, u64> = PerCpuHashMap::with_max_entries(4096, 0);

/// What the bpf_loop callback needs that does not change during a walk.
#[repr(C)]
struct Walk {
    skb: *mut __sk_buff,
    conn: *mut Conn,
    is_req: u64,
}

#[inline(always)]
fn atomic_add(p: *mut u64, v: u64) {
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, v) };
}

#[inline(always)]
fn load<T>(skb: *mut __sk_buff, off: u32) -> Option<T> {
    let mut v = core::mem::MaybeUninit::<T>::uninit();
    let r = unsafe {
        bpf_skb_load_bytes(skb as *const c_void, off, v.as_mut_ptr() as *mut c_void, core::mem::size_of::<T>() as u32)
    };
    if r == 0 { Some(unsafe { v.assume_init() }) } else { None }
}

#[inline(always)]
fn active_add(conn: &Conn, delta: u64) {
    if conn.role != ROLE_SERVER {
        return;
    }
    // As words (layout asserted below): a literal's 6-byte padding array becomes a memset call.
    let key: ActiveKey =
        unsafe { core::mem::transmute::<[u64; 2], ActiveKey>([conn.cgroup_id, conn.local_port as u64]) };
    let p = match HTTP_ACTIVE.get_ptr_mut(&key) {
        Some(p) => Some(p),
        None => {
            let _ = HTTP_ACTIVE.insert(&key, &0, BPF_NOEXIST as u64);
            HTTP_ACTIVE.get_ptr_mut(&key)
        }
    };
    if let Some(p) = p {
        atomic_add(p, delta);
    }
}

/// Requests still waiting can no longer be answered: each is counted as abandoned and leaves
/// the in-flight gauge.
#[inline(always)]
fn abandon_waiting(conn: &mut Conn) {
    let n = waiting(conn) as u64;
    if n > 0 {
        drops::add(drop::HTTP_ABANDONED, n);
        active_add(conn, n.wrapping_neg());
    }
    conn.popped = conn.pushed;
}

/// Counts `reason`, abandons every waiting request and stops parsing the connection.
#[inline(always)]
fn give_up(conn: &mut Conn, reason: u32) {
    drops::count(reason);
    abandon_waiting(conn);
    conn.role = ROLE_NOT_HTTP;
    conn.req.state = S_IGNORE;
    conn.resp.state = S_IGNORE;
}

#[inline(always)]
fn reset_message(st: &mut Stream) {
    // Volatile stores: LLVM would merge plain ones into a memset, which the BPF target turns
    // into a call to a byte-wise loop.
    use core::ptr::write_volatile as set;
    unsafe {
        set(&mut st.state, S_START);
        set(&mut st.hmatch, M_NONE);
        set(&mut st.hidx, 0);
        set(&mut st.flags, st.flags & F_SYNCED);
        set(&mut st.line_pos, 0);
        set(&mut st.status, 0);
        set(&mut st.method_len, 0);
        set(&mut st.word, 0);
        set(&mut st.tail, 0);
        set(&mut st.remaining, 0);
        set(&mut st.content_length, 0);
        set(&mut st.body, 0);
    }
}

const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<HttpKey>() == 48 && offset_of!(HttpKey, comm) == 8 && offset_of!(HttpKey, status) == 24);
    assert!(offset_of!(HttpKey, port) == 26 && offset_of!(HttpKey, method) == 28 && offset_of!(HttpKey, side) == 29);
    assert!(offset_of!(HttpKey, family) == 30 && offset_of!(HttpKey, addr) == 32);
    assert!(size_of::<ActiveKey>() == 16 && offset_of!(ActiveKey, port) == 8);
    assert!(offset_of!(Conn, comm) % 8 == 0 && offset_of!(Conn, addr) % 8 == 0);
    // docs/metrics.md quotes the socket storage a followed connection takes.
    assert!(size_of::<Conn>() == 680);
};

/// A 16-byte array of a `Conn` (8-byte aligned, asserted above) as two words.
#[inline(always)]
fn words16(b: &[u8; 16]) -> [u64; 2] {
    let p = b.as_ptr() as *const u64;
    unsafe { [*p, *p.add(1)] }
}

/// Requests waiting for their response.
#[inline(always)]
fn waiting(conn: &Conn) -> u8 {
    conn.pushed.wrapping_sub(conn.popped)
}

/// A request starts: it waits at the tail of the FIFO (the caller checked there is room).
#[inline(always)]
fn push_request(conn: &mut Conn, m: u8, now: u64) {
    let tail = (conn.pushed as usize) & (PIPELINE - 1);
    // Field by field: the padding is never read (a literal would memset it byte-wise).
    let p = &mut conn.pending[tail];
    p.start_ns = now;
    p.req_bytes = 0;
    p.method = m;
    conn.pushed = conn.pushed.wrapping_add(1);
    active_add(conn, 1);
}

/// Records the response to the oldest waiting request.
#[inline(always)]
fn complete(conn: &mut Conn, status: u16, resp_bytes: u64, now: u64) {
    http_complete(conn, status as u64, resp_bytes, now);
}

/// The body of [`complete`], a global function: the verifier checks it once on its own instead
/// of at every place the parser finishes a response.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn http_complete(conn: *mut Conn, status: u64, resp_bytes: u64, now: u64) -> i64 {
    let Some(conn) = (unsafe { conn.as_mut() }) else { return 0 };
    let status = status as u16;
    if waiting(conn) == 0 {
        drops::count(drop::HTTP_RESPONSE_UNMATCHED);
        return 0;
    }
    let p = conn.pending[(conn.popped as usize) & (PIPELINE - 1)];
    conn.popped = conn.popped.wrapping_add(1);
    active_add(conn, u64::MAX);
    let server = conn.role == ROLE_SERVER;
    let status = if (100..600).contains(&status) { status } else { 0 };
    let port = if server { conn.local_port } else { conn.peer_port };
    let side = if server { SIDE_SERVER } else { SIDE_CLIENT };
    let (family, addr) = if server { (0, [0u64; 2]) } else { (conn.family, words16(&conn.addr)) };
    let comm = words16(&conn.comm);
    // The key assembled as words (its layout is asserted below): built field by field or
    // from a literal, LLVM zeroes and copies it with calls to byte-wise memset/memcpy loops.
    let mut key: HttpKey = unsafe {
        core::mem::transmute::<[u64; 6], HttpKey>([
            conn.cgroup_id,
            comm[0],
            comm[1],
            status as u64 | (port as u64) << 16 | (p.method as u64) << 32 | (side as u64) << 40 | (family as u64) << 48,
            addr[0],
            addr[1],
        ])
    };
    let h = match HTTP_HIST.get_ptr_mut(&key) {
        Some(h) => Some(h),
        None => {
            // BPF_NOEXIST fails too when another CPU inserted the key meanwhile: look again.
            let _ = HTTP_HIST.insert(&key, &ZERO_HIST, BPF_NOEXIST as u64);
            match HTTP_HIST.get_ptr_mut(&key) {
                Some(h) => Some(h),
                None => {
                    // Full: the overflow entry of this side (created by the daemon) takes it.
                    drops::count(drop::HTTP_MAP_FULL);
                    key = HttpKey { method: OVERFLOW_METHOD, side: key.side, ..HttpKey::default() };
                    HTTP_HIST.get_ptr_mut(&key)
                }
            }
        }
    };
    let Some(h) = h else { return 0 };
    let dur = now.saturating_sub(p.start_ns).min(BOUND_CAP - 1);
    // Bucket = number of bounds below the duration, summed without branches so that the
    // verifier follows one path here (bounds and durations stay below 2^62, so the sign bit of
    // `bound - dur` says whether dur > bound).
    // The bounds are read through a pointer the compiler cannot see through (so it neither
    // folds the defaults nor hoists all 32 loads onto the stack).
    let bounds: *const [u64; MAX_DURATION_BOUNDS] =
        unsafe { core::ptr::read_volatile(&(&raw const DURATION_BOUNDS_NS)) };
    let mut idx = 0u64;
    let mut i = 0usize;
    while i < MAX_DURATION_BOUNDS {
        idx += unsafe { (*bounds)[i] }.wrapping_sub(dur) >> 63;
        i += 1;
    }
    let idx = idx as usize;
    if idx > MAX_DURATION_BOUNDS {
        return 0;
    }
    unsafe {
        atomic_add(&mut (*h).duration[idx], 1);
        atomic_add(&mut (*h).duration_sum_ns, dur);
        let r = size_bucket(p.req_bytes);
        if r < (*h).req_size.len() {
            atomic_add(&mut (*h).req_size[r], 1);
        }
        atomic_add(&mut (*h).req_size_sum, p.req_bytes);
        let s = size_bucket(resp_bytes);
        if s < (*h).resp_size.len() {
            atomic_add(&mut (*h).resp_size[s], 1);
        }
        atomic_add(&mut (*h).resp_size_sum, resp_bytes);
    }
    0
}

/// A message's last byte has been parsed.
#[inline(always)]
fn message_done(conn: &mut Conn, is_req: bool, now: u64) {
    if is_req {
        if waiting(conn) > 0 {
            let last = (conn.pushed.wrapping_sub(1) as usize) & (PIPELINE - 1);
            conn.pending[last].req_bytes = conn.req.body;
        }
        reset_message(&mut conn.req);
    } else {
        let (status, body) = (conn.resp.status, conn.resp.body);
        complete(conn, status, body, now);
        reset_message(&mut conn.resp);
    }
}

/// The blank line after the headers: decide how the body is framed (RFC 9112 §6.3).
#[inline(always)]
fn headers_done(conn: &mut Conn, is_req: bool, now: u64) {
    let st = if is_req { &mut conn.req } else { &mut conn.resp };
    let chunked = st.flags & F_CHUNKED != 0;
    let has_cl = st.flags & F_HAS_CL != 0;
    let cl = st.content_length;
    if is_req {
        if chunked {
            st.state = S_CHUNK_SIZE;
            st.remaining = 0;
        } else if has_cl && cl > 0 {
            st.state = S_BODY;
            st.remaining = cl;
        } else {
            message_done(conn, true, now);
        }
        return;
    }
    let status = st.status;
    if (100..200).contains(&status) && status != 101 {
        // Interim response (100 Continue, 103 Early Hints): the final one follows.
        reset_message(st);
        return;
    }
    let head_method = conn.pending[(conn.popped as usize) & (PIPELINE - 1)].method;
    if status == 101 || (head_method == method::CONNECT && (200..300).contains(&status)) {
        // The connection changes protocol: record the exchange, ignore what follows.
        complete(conn, status, 0, now);
        conn.req.state = S_IGNORE;
        conn.resp.state = S_IGNORE;
        return;
    }
    let head_request = waiting(conn) > 0 && head_method == method::HEAD;
    let st = &mut conn.resp;
    if head_request || status == 204 || status == 304 {
        message_done(conn, false, now);
    } else if chunked {
        st.state = S_CHUNK_SIZE;
        st.remaining = 0;
    } else if has_cl {
        if cl == 0 {
            message_done(conn, false, now);
        } else {
            st.state = S_BODY;
            st.remaining = cl;
        }
    } else {
        // Neither length nor chunked: the body runs to the end of the connection.
        st.state = S_UNTIL_CLOSE;
    }
}

/// One more byte `l` (lower-cased) of a header name being matched at index `i`: on a mismatch
/// the line is of no interest; after the whole name, `then` is the matcher state. Returns
/// true when the name is complete.
#[inline(always)]
fn match_name(st: &mut Stream, name: &[u8], i: usize, l: u8, then: u8) -> bool {
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

/// Longest method token followed (RFC 9110 sets no limit; a longer run of token characters
/// without a space is taken for something that is not HTTP).
const MAX_METHOD: u32 = 64;

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

/// Feeds one byte to the parser of one direction.
#[inline(always)]
fn feed(conn: &mut Conn, is_req: bool, b: u8, now: u64) {
    http_feed(conn, is_req as u64, b as u64, now);
}

/// The body of [`feed`], a global function verified once on its own.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn http_feed(conn: *mut Conn, is_req: u64, b: u64, now: u64) -> i64 {
    let Some(conn) = (unsafe { conn.as_mut() }) else { return 0 };
    let (is_req, b) = (is_req != 0, b as u8);
    http_feed_inner(conn, is_req, b, now);
    0
}

#[inline(always)]
fn http_feed_inner(conn: &mut Conn, is_req: bool, b: u8, now: u64) {
    let st = if is_req { &mut conn.req } else { &mut conn.resp };
    let mut state = st.state;
    if state == S_START {
        if b == b'\r' || b == b'\n' {
            return; // stray line breaks between messages are allowed
        }
        if is_req {
            if !b.is_ascii_uppercase() {
                give_up(conn, drop::HTTP_DESYNC);
                return;
            }
            if waiting(conn) as usize >= PIPELINE {
                give_up(conn, drop::HTTP_PIPELINE_OVERFLOW);
                return;
            }
            push_request(conn, method::OTHER, now);
            conn.req.state = S_REQLINE;
        } else {
            if b != b'H' {
                give_up(conn, drop::HTTP_DESYNC);
                return;
            }
            conn.resp.state = S_RESPLINE;
        }
        state = if is_req { S_REQLINE } else { S_RESPLINE };
    }
    let st = if is_req { &mut conn.req } else { &mut conn.resp };
    match state {
        S_REQLINE => {
            let pos = st.line_pos;
            if b == b'\n' {
                if st.flags & F_METHOD_DONE == 0 || (st.tail != V11 && st.tail != V10) {
                    give_up(conn, drop::HTTP_DESYNC);
                    return;
                }
                st.state = S_HEADERS;
                st.line_pos = 0;
                return;
            }
            if st.flags & F_METHOD_DONE == 0 {
                if b == b' ' && pos > 0 {
                    st.flags |= F_METHOD_DONE;
                    let m = method::from_word(st.word, pos);
                    if waiting(conn) > 0 {
                        let last = (conn.pushed.wrapping_sub(1) as usize) & (PIPELINE - 1);
                        conn.pending[last].method = m;
                    }
                } else if is_tchar(b) && pos < MAX_METHOD {
                    if pos < 8 {
                        st.word = (st.word << 8) | b as u64;
                    }
                } else {
                    give_up(conn, drop::HTTP_DESYNC);
                    return;
                }
            }
            let st = &mut conn.req;
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
                give_up(conn, drop::HTTP_DESYNC);
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
                    headers_done(conn, is_req, now);
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
                        st.flags |= F_HAS_CL;
                    } else if b != b' ' && b != b'\t' && b != b'\r' {
                        st.hmatch = M_NONE;
                    }
                }
                M_TE_VAL => {
                    if i < CHUNKED.len() && l == CHUNKED[i] {
                        st.hidx += 1;
                        if st.hidx as usize == CHUNKED.len() {
                            st.flags |= F_CHUNKED;
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
                headers_done(conn, is_req, now);
            } else {
                give_up(conn, drop::HTTP_DESYNC);
            }
        }
        S_CHUNK_SIZE | S_CHUNK_EXT => {
            if b == b'\n' {
                if st.flags & F_DIGIT == 0 {
                    give_up(conn, drop::HTTP_DESYNC);
                    return;
                }
                st.flags &= !F_DIGIT;
                if st.remaining == 0 {
                    st.state = S_TRAILER;
                    st.line_pos = 0;
                } else {
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
                    give_up(conn, drop::HTTP_DESYNC);
                    return;
                }
            };
            if st.remaining < (1 << 50) {
                st.remaining = (st.remaining << 4) | v as u64;
            }
            st.flags |= F_DIGIT;
        }
        S_CHUNK_END => {
            // CRLF after chunk data.
            if b == b'\n' {
                st.state = S_CHUNK_SIZE;
                st.remaining = 0;
            } else if b != b'\r' {
                give_up(conn, drop::HTTP_DESYNC);
            }
        }
        S_TRAILER => {
            if st.line_pos == 0 {
                if b == b'\r' {
                    st.state = S_TRAILER_LF;
                    return;
                }
                if b == b'\n' {
                    message_done(conn, is_req, now);
                    return;
                }
                st.line_pos = 1;
            } else if b == b'\n' {
                st.line_pos = 0;
            }
        }
        S_TRAILER_LF => {
            if b == b'\n' {
                message_done(conn, is_req, now);
            } else {
                give_up(conn, drop::HTTP_DESYNC);
            }
        }
        _ => {}
    }
}

/// One parser step: skip body bytes; or read a start line and up to 8 header lines whole; or
/// jump over the rest of a line of no interest; or feed one byte to the per-byte parser.
/// Returns 1 to stop the loop.
extern "C" fn step(_index: u64, ctx: *mut c_void) -> i64 {
    let w = unsafe { &*(ctx as *const Walk) };
    let conn = unsafe { &mut *w.conn };
    let is_req = w.is_req != 0;
    let st = if is_req { &mut conn.req } else { &mut conn.resp };
    let (off, end) = (st.w_off, st.w_end);
    if off >= end || st.w_stop != 0 {
        return 1;
    }
    let now = st.w_now;
    let left = (end - off) as u64;
    match st.state {
        S_BODY | S_CHUNK_DATA => {
            let n = if st.remaining < left { st.remaining } else { left };
            st.remaining -= n;
            st.body += n;
            st.w_off = off + n as u32;
            let last = n == left;
            if st.remaining == 0 {
                if st.state == S_BODY {
                    message_done(conn, is_req, now);
                } else {
                    st.state = S_CHUNK_END;
                }
            }
            return last as i64;
        }
        S_UNTIL_CLOSE => {
            st.body += left;
            st.w_off = end;
            return 1;
        }
        S_IGNORE => {
            st.w_off = end;
            return 1;
        }
        _ => {}
    }
    // Bytes the parser must read are loaded up to 128 at a time into the map value. A reload
    // also happens when fewer than WANT loaded bytes remain but the segment has more, so the
    // fast paths below see whole start lines and header names.
    let loaded_end = st.w_base.saturating_add(st.w_len);
    if off < st.w_base || off >= loaded_end || (loaded_end - off < WANT && loaded_end < end && off > st.w_base) {
        let n = (if left < BUF as u64 { left } else { BUF as u64 }) as u32;
        // Re-read through memory so the bound check below stays in the program (LLVM knows
        // it holds; the verifier needs to see it).
        let n = unsafe { core::ptr::read_volatile(&n) };
        if n == 0 || n > BUF {
            st.w_stop = 1;
            return 1;
        }
        let r = unsafe { bpf_skb_load_bytes(w.skb as *const c_void, off, st.w_buf.as_mut_ptr() as *mut c_void, n) };
        if r != 0 {
            st.w_stop = 1;
            return 1;
        }
        st.w_base = off;
        st.w_len = n;
    }
    let i = off.wrapping_sub(st.w_base) & (BUF - 1);
    let len = st.w_len;
    // Fast paths over whole lines; each returns the bytes it consumed (0: not taken, the
    // per-byte parser below decides). A start line and the header lines after it go in one
    // step, and a segment they finish ends the loop at once.
    let mut n = 0u32;
    if st.state == S_START {
        n = if is_req {
            http_request_line(conn, i as u64, len as u64, now)
        } else {
            http_status_line(&mut conn.resp, i as u64, len as u64)
        } as u32;
    }
    let st = if is_req { &mut conn.req } else { &mut conn.resp };
    if st.state == S_HEADERS && st.line_pos == 0 && i + n < len {
        let r = http_header_lines(st, (i + n) as u64, len as u64) as u64;
        n += (r & 0xff) as u32;
        if r & 0x100 != 0 {
            st.w_off = off + n;
            headers_done(conn, is_req, now);
            let st = if is_req { &conn.req } else { &conn.resp };
            return (st.w_off >= end) as i64;
        }
    }
    if n > 0 {
        let st = if is_req { &mut conn.req } else { &mut conn.resp };
        st.w_off = off + n;
        return (st.w_off >= end) as i64;
    }
    let st = if is_req { &mut conn.req } else { &mut conn.resp };
    // Inside a line the parser does not need (a request target, a header other than
    // Content-Length and Transfer-Encoding, a reason phrase, a chunk extension, a trailer),
    // jump to the next line break: a word-at-a-time search over the loaded bytes.
    let skippable = match st.state {
        S_REQLINE => st.flags & F_METHOD_DONE != 0,
        S_HEADERS | S_TRAILER => st.line_pos > 0 && st.hmatch == M_NONE,
        S_RESPLINE => st.line_pos >= 13,
        S_CHUNK_EXT => true,
        _ => false,
    };
    let from = i;
    if skippable && from < len {
        let k = find_newline(&st.w_buf, from, len);
        if k < len && k > from && (st.state == S_HEADERS || st.state == S_TRAILER) {
            // Take the line break too: the next line starts clean.
            st.line_pos = 0;
            st.hmatch = M_NONE;
            st.w_off = off + (k - i) + 1;
            return 0;
        }
        if k > from {
            let n = k - i;
            if st.state == S_REQLINE {
                // Keep the last 8 bytes of the request line: its end is checked for "HTTP/1.x".
                st.tail = if n >= 8 {
                    window8(&st.w_buf, k - 8).swap_bytes()
                } else {
                    let x = window8(&st.w_buf, i) & ((1u64 << (8 * n)) - 1);
                    (st.tail << (8 * n)) | (x.swap_bytes() >> (64 - 8 * n))
                };
            }
            st.line_pos = st.line_pos.saturating_add(n);
            st.w_off = off + n;
            return 0;
        }
    }
    let b = byte_at(&st.w_buf, i);
    st.w_off = off + 1;
    feed(conn, is_req, b, now);
    0
}

/// Loaded bytes the fast paths want ahead of the current offset (a request line start,
/// "HTTP/1.1 200 ", a header name and a short value).
const WANT: u32 = 40;

const V11: u64 = u64::from_be_bytes(*b"TTP/1.1\r");
const V10: u64 = u64::from_be_bytes(*b"TTP/1.0\r");

/// A request line "METHOD target HTTP/1.x" starting at byte `i` of the loaded block, for the
/// known methods: starts the request and, when the whole line is loaded, moves on to the
/// headers. Returns the bytes consumed (0: not taken).
#[inline(always)]
fn request_line(conn: &mut Conn, i: u32, len: u32, now: u64) -> u32 {
    if i + 8 > len || waiting(conn) as usize >= PIPELINE {
        return 0;
    }
    let Some((m, p, word)) = known_method(window8(&conn.req.w_buf, i)) else { return 0 };
    push_request(conn, m, now);
    let st = &mut conn.req;
    st.state = S_REQLINE;
    st.flags |= F_METHOD_DONE;
    st.word = word;
    st.tail = (word << 8) | b' ' as u64;
    st.line_pos = p + 1;
    let k = find_newline(&st.w_buf, i + p + 1, len);
    // "M / HTTP/1.1\r\n" at the least: a line break found past "HTTP/1.x\r".
    if k < len && k >= i + p + 11 && k >= 8 {
        let tail = window8(&st.w_buf, k - 8).swap_bytes();
        if tail == V11 || tail == V10 {
            st.state = S_HEADERS;
            st.line_pos = 0;
            return k + 1 - i;
        }
    }
    p + 1
}

/// A global function's block position and length (it is verified for any argument values):
/// `None` unless both lie within the loaded block.
#[inline(always)]
fn block_range(i: u64, len: u64) -> Option<(u32, u32)> {
    (i < BUF as u64 && len <= BUF as u64).then_some((i as u32, len as u32))
}

/// [`request_line`] as a global function, verified once on its own.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn http_request_line(conn: *mut Conn, i: u64, len: u64, now: u64) -> i64 {
    let (Some(conn), Some((i, len))) = (unsafe { conn.as_mut() }, block_range(i, len)) else { return 0 };
    request_line(conn, i, len, now) as i64
}

/// [`status_line`] as a global function, verified once on its own.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn http_status_line(st: *mut Stream, i: u64, len: u64) -> i64 {
    let (Some(st), Some((i, len))) = (unsafe { st.as_mut() }, block_range(i, len)) else { return 0 };
    status_line(st, i, len) as i64
}

/// [`header_lines`] as a global function, verified once on its own: bytes consumed in the low
/// 8 bits, bit 8 set at the end of the headers.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn http_header_lines(st: *mut Stream, i: u64, len: u64) -> i64 {
    let (Some(st), Some((i, len))) = (unsafe { st.as_mut() }, block_range(i, len)) else { return 0 };
    let (n, end) = header_lines(st, i, len);
    (n as i64) | if end { 0x100 } else { 0 }
}

/// A status line "HTTP/1.x ddd" starting at byte `i`: takes the code and, when the line's end
/// is loaded, moves on to the headers. Returns the bytes consumed (0: not taken).
#[inline(always)]
fn status_line(st: &mut Stream, i: u32, len: u32) -> u32 {
    if i + 13 > len {
        return 0;
    }
    const HTTP1: u64 = le(b"HTTP/1.");
    let w0 = window8(&st.w_buf, i);
    let w1 = window8(&st.w_buf, i + 8);
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
        let k = find_newline(&st.w_buf, i + 13, len);
        if k < len && k > i + 13 {
            st.state = S_HEADERS;
            st.line_pos = 0;
            return k + 1 - i;
        }
        st.line_pos = 13;
        return 13;
    }
    if after == b'\r' && i + 14 < len && byte_at(&st.w_buf, i + 13) == b'\n' {
        st.state = S_HEADERS;
        st.line_pos = 0;
        return 14;
    }
    // Anything else goes through the per-byte parser from the code's end.
    st.line_pos = 12;
    12
}

/// Header lines from a line start at byte `i`: lines of no interest are skipped and a
/// Content-Length value is read whole, up to 8 lines. Returns the bytes consumed (0: decide
/// byte by byte) and whether they ended with the blank line that closes the headers. The
/// stream is left at a line start, inside a skippable line, or at a framing header's value.
#[inline(always)]
fn header_lines(st: &mut Stream, i: u32, len: u32) -> (u32, bool) {
    let mut j = i;
    let mut lines = 0;
    while lines < 8 {
        // One range for every way of reaching here, so the verifier prunes the loop instead
        // of following each line length separately (j stays below 256; the mask is exact).
        j = unsafe { core::ptr::read_volatile(&j) } & 0xff;
        if j >= len {
            break;
        }
        let b = byte_at(&st.w_buf, j);
        if b == b'\n' {
            return (j + 1 - i, true);
        }
        if b == b'\r' {
            if j + 1 < len && byte_at(&st.w_buf, j + 1) == b'\n' {
                return (j + 2 - i, true);
            }
            break;
        }
        let l = b | 0x20;
        if (l == b'c' && j + 15 > len) || (l == b't' && j + 18 > len) {
            // A name cut by the end of the segment: byte by byte.
            break;
        }
        if l == b'c' {
            let w0 = window8(&st.w_buf, j) | CL_MASK0;
            let w1 = (window8(&st.w_buf, j + 8) & 0x00ff_ffff_ffff_ffff) | CL_MASK1;
            if w0 == CL_WORD0 && w1 == CL_WORD1 {
                let (value, next) = content_length(&st.w_buf, j + 15, len);
                if next > 0 {
                    st.flags |= F_HAS_CL;
                    st.content_length = value;
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
            let w0 = window8(&st.w_buf, j) | TE_MASK0;
            let w1 = window8(&st.w_buf, j + 8) | TE_MASK1;
            let w2 = (window8(&st.w_buf, j + 16) & 0xffff) | TE_MASK2;
            if w0 == TE_WORD0 && w1 == TE_WORD1 && w2 == TE_WORD2 {
                st.hmatch = M_TE_VAL;
                st.hidx = 0;
                st.line_pos = 18;
                return (j + 18 - i, false);
            }
        }
        // A line of no interest: to its line break.
        let k = find_newline(&st.w_buf, j + 1, len);
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

/// A Content-Length value "[OWS]digits[OWS]\r\n" from byte `p`: (value, index after the line
/// break), or index 0 when it is anything else or not all loaded (the per-byte parser then
/// reads it).
#[inline(always)]
fn content_length(buf: &[u64; BUF_WORDS], p: u32, len: u32) -> (u64, u32) {
    let mut v = 0u64;
    let mut digit = false;
    let mut k = 0u32;
    while k < 24 {
        let q = p + k;
        if q + 1 >= len {
            return (0, 0);
        }
        let b = byte_at(buf, q);
        if b.is_ascii_digit() {
            if v >= (1 << 50) {
                return (0, 0);
            }
            v = v * 10 + (b - b'0') as u64;
            digit = true;
        } else if b == b'\r' {
            if digit && byte_at(buf, q + 1) == b'\n' {
                return (v, q + 2);
            }
            return (0, 0);
        } else if b != b' ' && b != b'\t' {
            return (0, 0);
        }
        k += 1;
    }
    (0, 0)
}

/// Word `j` of the loaded block. The index goes through memory so that LLVM, which may prove
/// it below 16 from the caller's checks, cannot drop the mask the verifier needs to see.
#[inline(always)]
fn word_at(buf: &[u64; BUF_WORDS], j: usize) -> u64 {
    buf[unsafe { core::ptr::read_volatile(&j) } & (BUF_WORDS - 1)]
}

/// Byte `i` (0..128) of the loaded block.
#[inline(always)]
fn byte_at(buf: &[u64; BUF_WORDS], i: u32) -> u8 {
    (word_at(buf, (i >> 3) as usize) >> ((i & 7) * 8)) as u8
}

/// The 8 bytes starting at byte `p` of the loaded block, little-endian (bytes past the block
/// are whatever the buffer holds; callers mask them off).
#[inline(always)]
fn window8(buf: &[u64; BUF_WORDS], p: u32) -> u64 {
    let j = (p >> 3) as usize;
    let s = (p & 7) * 8;
    let first = word_at(buf, j);
    if s == 0 { first } else { (first >> s) | (word_at(buf, j + 1) << (64 - s)) }
}

/// Index of the first '\n' at or after byte `i` among the first `len` loaded bytes; `len`
/// when there is none. A doubtful match returns `i`, which sends the byte through the exact
/// per-byte parser.
#[inline(always)]
fn find_newline(buf: &[u64; BUF_WORDS], i: u32, len: u32) -> u32 {
    let mut j = (i >> 3) as usize;
    let mut mask = !0u64 << ((i & 7) * 8);
    while j < BUF_WORDS {
        if (j as u32) * 8 >= len {
            return len;
        }
        let w = word_at(buf, j);
        let bits = byte_bits(w, b'\n') & mask;
        if bits != 0 {
            let k = j as u32 * 8 + bits.trailing_zeros() / 8;
            if k >= len {
                return len;
            }
            return if (w >> ((k & 7) * 8)) as u8 == b'\n' { k } else { i };
        }
        mask = !0;
        j += 1;
    }
    len
}
/// Bytes equal to `c` in `w` get their top bit set (exact for the lowest such byte; a byte
/// above a match may be flagged falsely).
#[inline(always)]
fn byte_bits(w: u64, c: u8) -> u64 {
    let x = w ^ (0x0101_0101_0101_0101 * c as u64);
    x.wrapping_sub(0x0101_0101_0101_0101) & !x & 0x8080_8080_8080_8080
}

const TCP_FIN: u8 = 0x01;
/// `Conn::fin` bits: a FIN seen leaving, arriving.
const FIN_EGRESS: u8 = 1;
const FIN_INGRESS: u8 = 2;
const TCP_RST: u8 = 0x04;

/// IP header length, family and the first 14 bytes of the TCP header, read by direct packet
/// access: at these hooks the headers sit in the skb's linear part, so most packets (pure ACKs
/// above all) cost no helper call. `Ok(None)`: not TCP. `Err(())`: the linear part is too
/// short to tell; the caller then uses `headers_loaded`.
#[inline(always)]
fn headers_direct(ctx: &SkBuffContext) -> Result<Option<(u32, u8, [u8; 14])>, ()> {
    let (data, data_end) = (ctx.data(), ctx.data_end());
    if data + 40 > data_end {
        return Err(());
    }
    let v = unsafe { *(data as *const u8) };
    let (ip_len, family) = match v >> 4 {
        4 => {
            if unsafe { *((data + 9) as *const u8) } != 6 {
                return Ok(None);
            }
            (((v & 0x0f) as usize) * 4, 4u8)
        }
        6 => {
            if unsafe { *((data + 6) as *const u8) } != 6 {
                return Ok(None);
            }
            (40usize, 6u8)
        }
        _ => return Ok(None),
    };
    if ip_len < 20 {
        return Ok(None);
    }
    if data + ip_len + 14 > data_end {
        return Err(());
    }
    let tcp = unsafe { core::ptr::read_unaligned((data + ip_len) as *const [u8; 14]) };
    Ok(Some((ip_len as u32, family, tcp)))
}

/// The same through `bpf_skb_load_bytes`, for packets whose headers are not all linear.
#[inline(always)]
fn headers_loaded(skb: *mut __sk_buff) -> Option<(u32, u8, [u8; 14])> {
    let v = load::<u8>(skb, 0)?;
    let (ip_len, family) = match v >> 4 {
        4 => {
            if load::<u8>(skb, 9)? != 6 {
                return None;
            }
            (((v & 0x0f) as u32) * 4, 4u8)
        }
        // TCP directly after the fixed header; extension headers are not followed.
        6 => {
            if load::<u8>(skb, 6)? != 6 {
                return None;
            }
            (40u32, 6u8)
        }
        _ => return None,
    };
    Some((ip_len, family, load::<[u8; 14]>(skb, ip_len)?))
}

#[inline(always)]
fn handle(ctx: &SkBuffContext, egress: bool) {
    if bench_stop(1) {
        return;
    }
    if network::counted_by_http() {
        network::count(ctx, egress);
    }
    let skb = ctx.as_ptr() as *mut __sk_buff;
    let hdr = match headers_direct(ctx) {
        Ok(h) => h,
        Err(()) => headers_loaded(skb),
    };
    let Some((ip_len, family, tcp)) = hdr else { return };
    let doff = ((tcp[12] >> 4) as u32) * 4;
    let flags = tcp[13];
    let payload = ip_len + doff;
    let end = unsafe { (*skb).len };
    if payload > end {
        return;
    }
    let plen = end - payload;
    let closing = flags & (TCP_FIN | TCP_RST) != 0;
    if plen == 0 && !closing {
        return; // pure ACK
    }
    if bench_stop(2) {
        return;
    }
    if HTTP_ARMED.get(0).is_none_or(|a| *a == 0) {
        return;
    }
    let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    // The socket this segment belongs to: the hook sets it for both directions, and only full
    // sockets reach it, but the verifier wants both checked.
    let sk = unsafe { (*skb).__bindgen_anon_2.sk };
    if sk.is_null() {
        return;
    }
    let sk = unsafe { bpf_sk_fullsock(sk) };
    if sk.is_null() {
        return;
    }
    let mut conn_ptr = sk_storage(&HTTP_CONNS, sk, false);
    if conn_ptr.is_null() {
        if plen == 0 {
            return;
        }
        let mark = sk_storage(&HTTP_NOT_HTTP, sk, false);
        if !mark.is_null() && unsafe { *mark } >= MIDSTREAM_TRIES {
            return;
        }
        // The first bytes decide. A request line start ("GET ...") makes this socket a server
        // if it was received and a client if it was sent; a status line start ("HTTP/") the
        // other way round, so a connection caught between a request and its response is
        // followed from that response on.
        let head = if plen >= 8 {
            load::<[u8; 8]>(skb, payload)
        } else {
            load::<u8>(skb, payload).map(|b| [b, 0, 0, 0, 0, 0, 0, 0])
        };
        let head = u64::from_le_bytes(head.unwrap_or([0; 8]));
        let response = head & 0xff_ffff_ffff == le(b"HTTP/");
        // At the start of the byte stream anything else is not HTTP/1.x, for good. A connection
        // that was open before the collector started is seen from the middle of its stream
        // (a body, or the part of a message after a segment boundary): it is picked up at the
        // first segment that starts a response or a request with a known method, and given up
        // after MIDSTREAM_TRIES segments that do not.
        let at_start = at_stream_start(sk, egress, seq);
        let looks = response
            || if at_start { (head as u8).is_ascii_uppercase() } else { known_method(head).is_some() };
        if !looks {
            let mark = if mark.is_null() { sk_storage(&HTTP_NOT_HTTP, sk, true) } else { mark };
            if mark.is_null() {
                drops::count(drop::HTTP_CONN_STORAGE);
            } else {
                unsafe { *mark = if at_start { MIDSTREAM_TRIES } else { (*mark).saturating_add(1) } };
            }
            return;
        }
        conn_ptr = sk_storage(&HTTP_CONNS, sk, true);
        if conn_ptr.is_null() {
            drops::count(drop::HTTP_CONN_STORAGE);
            return;
        }
        let conn = unsafe { &mut *conn_ptr };
        conn.role = if egress != response { ROLE_CLIENT } else { ROLE_SERVER };
        conn.cgroup_id = unsafe { bpf_skb_cgroup_id(skb) };
        let (sport, dport) = (u16::from_be_bytes([tcp[0], tcp[1]]), u16::from_be_bytes([tcp[2], tcp[3]]));
        // Local and peer as seen by this socket.
        let (local, peer, peer_addr_off) = if egress { (sport, dport, 16u32) } else { (dport, sport, 12u32) };
        conn.local_port = local;
        conn.peer_port = peer;
        conn.family = family;
        if family == 4 {
            if let Some(a) = load::<[u8; 4]>(skb, peer_addr_off) {
                conn.addr[..4].copy_from_slice(&a);
            }
        } else if let Some(a) = load::<[u8; 16]>(skb, if egress { 24 } else { 8 }) {
            conn.addr = a;
        }
    }
    let conn = unsafe { &mut *conn_ptr };
    let now = unsafe { bpf_ktime_get_ns() };

    if plen > 0 && conn.role != ROLE_NOT_HTTP {
        // Requests flow in on servers and out on clients.
        let is_req = (conn.role == ROLE_SERVER) != egress;
        let st = if is_req { &mut conn.req } else { &mut conn.resp };
        let mut off = payload;
        if st.flags & F_SYNCED == 0 {
            st.flags |= F_SYNCED;
        } else {
            let diff = seq.wrapping_sub(st.next_seq) as i32;
            if diff > 0 {
                // Bytes are missing (lost or reordered): the framing cannot be followed.
                give_up(conn, drop::HTTP_DESYNC);
                return;
            }
            if diff < 0 {
                // Retransmission: skip what was already parsed.
                let dup = (-(diff as i64)) as u32;
                if dup >= plen {
                    return;
                }
                off += dup;
            }
        }
        let st = if is_req { &mut conn.req } else { &mut conn.resp };
        st.next_seq = seq.wrapping_add(plen);
        if bench_stop(3) {
            return;
        }
        if egress && conn.comm[0] == 0 && st.state == S_START {
            // A message starting on egress is almost always sent from the writing process.
            if let Ok(c) = bpf_get_current_comm() {
                conn.comm = c;
            }
        }
        let st = if is_req { &mut conn.req } else { &mut conn.resp };
        st.w_off = off;
        st.w_end = end;
        st.w_base = u32::MAX;
        st.w_len = 0;
        st.w_stop = 0;
        st.w_now = now;
        let mut walk = Walk { skb, conn: conn_ptr, is_req: is_req as u64 };
        unsafe {
            bpf_loop(MAX_STEPS, step as *mut c_void, &mut walk as *mut Walk as *mut c_void, 0);
        }
        let conn = unsafe { &mut *conn_ptr };
        let st = if is_req { &conn.req } else { &conn.resp };
        if st.w_off < st.w_end && st.w_stop == 0 && conn.role != ROLE_NOT_HTTP {
            give_up(conn, drop::HTTP_DESYNC);
        }
    }

    let conn = unsafe { &mut *conn_ptr };
    if closing {
        if flags & TCP_RST != 0 {
            abandon_waiting(conn);
            sk_storage_delete(&HTTP_CONNS, sk);
            return;
        }
        conn.fin |= if egress { FIN_EGRESS } else { FIN_INGRESS };
        // A FIN on the response direction ends a body that runs to the end of the connection.
        if egress == (conn.role == ROLE_SERVER) && conn.resp.state == S_UNTIL_CLOSE {
            let (status, body) = (conn.resp.status, conn.resp.body);
            complete(conn, status, body, now);
            reset_message(&mut conn.resp);
        }
    }
    // No response can follow a FIN on the response direction: requests still waiting (or
    // arriving after it) are abandoned now, not when (or if) the peer closes too.
    if conn.fin & if conn.role == ROLE_SERVER { FIN_EGRESS } else { FIN_INGRESS } != 0 {
        abandon_waiting(conn);
    }
    if conn.fin == FIN_EGRESS | FIN_INGRESS {
        sk_storage_delete(&HTTP_CONNS, sk);
    }
}

#[cgroup_skb(ingress)]
pub fn http_ingress(ctx: SkBuffContext) -> i32 {
    handle(&ctx, false);
    1
}

#[cgroup_skb(egress)]
pub fn http_egress(ctx: SkBuffContext) -> i32 {
    handle(&ctx, true);
    1
}

/// `TCP_CLOSE` in `include/net/tcp_states.h` (a stable UAPI-visible value).
const TCP_CLOSE: u32 = 7;

/// Sockets reaching TCP_CLOSE (sock_ops on the cgroup v2 root, like the cgroup_skb programs: no
/// kernel BTF needed). Most connections close with a FIN or RST that `http_ingress`/`http_egress`
/// see and settle; this settles the others — a retransmission or keepalive timeout, a socket torn
/// down in repair mode — whose waiting requests would otherwise stay in the in-flight gauge.
/// The kernel calls sock_ops programs on state changes only for sockets that asked for it, so
/// the program asks when a connection is established (sockets connected before the collector
/// started never ask; docs/metrics.md).
#[sock_ops]
pub fn http_sock_close(ctx: SockOpsContext) -> u32 {
    match ctx.op() {
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB | BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB => {
            // Keeps whatever other sock_ops programs asked for on this socket.
            let _ = ctx.set_cb_flags((ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG) as i32);
        }
        BPF_SOCK_OPS_STATE_CB if ctx.arg(1) == TCP_CLOSE => {
            let sk = unsafe { (*ctx.ops).__bindgen_anon_2.sk };
            if sk.is_null() {
                return 1;
            }
            if let Some(conn) = unsafe { sk_storage(&HTTP_CONNS, sk, false).as_mut() } {
                abandon_waiting(conn);
                sk_storage_delete(&HTTP_CONNS, sk);
            }
        }
        _ => {}
    }
    1
}
