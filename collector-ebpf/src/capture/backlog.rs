//! Bytes that arrive before their connection's socket exists. A listening socket's connection is
//! created when the handshake's last ACK arrives; two things bring a request to the host before
//! that, and its segment then passes the ingress hook with the listening socket:
//! - the accept queue was full when the ACK came (a burst of connections to a busy server): the
//!   kernel drops the ACK, the client, whose side is established, sends its request, and the
//!   request's segment (retransmitted until the queue has room) creates the connection;
//! - TCP Fast Open: the request travels in the SYN, and the connection is created with it.
//!
//! Either way the kernel queues the bytes to the new socket without passing the hook again.
//! So they are kept here: in the reorder stash (`stash.rs`) under a key of their own, with
//! where the stream starts and when its first segment arrived (`HTTP_BACKLOG`, by the
//! connection's addresses and ports). The new socket's first segment (its response, or more of
//! the request) finds them, and the protocol parses them from the stash with their arrival
//! time, before the segment itself (`skb.rs`).
use aya_ebpf::{
    bindings::__sk_buff,
    helpers::{bpf_ktime_get_ns, generated::bpf_get_prandom_u32},
    macros::map,
    maps::LruHashMap,
};
use collector_common::capture::{after, stash::index_of};

use super::{
    conn::{Held, SRC_PACKET, Seg},
    packet::load,
    stash,
};

/// A connection as its server sees it: addresses (IPv4 in the first 4 bytes), ports, family.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FlowKey {
    pub local: [u8; 16],
    pub peer: [u8; 16],
    pub local_port: u16,
    pub peer_port: u16,
    pub family: u32,
}

/// A connection's request bytes kept before its socket exists.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Embryo {
    /// The key of its stash blocks (a random one with the top bit set: real socket cookies are
    /// a counter from 1).
    pub cookie: u64,
    /// When its first segment arrived.
    pub arrival: u64,
    /// Stream position of its first byte.
    pub first: u32,
    /// The stash blocks it holds.
    pub held: Held,
    pub _pad: u32,
}

/// Connections whose bytes arrived before their socket (LRU: one whose socket never came, as
/// a client that gave up, makes room for others; its stash blocks go with the daemon's sweep
/// of blocks older than a minute).
#[map]
static HTTP_BACKLOG: LruHashMap<FlowKey, Embryo> = LruHashMap::with_max_entries(4096, 0);

/// The connection of a packet as its server sees it: `egress` the packet leaves (the server's
/// socket sends it), else it arrives. `ports`: the TCP header's first four bytes.
#[inline(always)]
pub fn flow_key(skb: *mut __sk_buff, family: u8, ports: u32, egress: bool) -> Option<FlowKey> {
    let mut key = FlowKey { local: [0; 16], peer: [0; 16], local_port: 0, peer_port: 0, family: family as u32 };
    let (src, dst) = if family == 4 { (12, 16) } else { (8, 24) };
    let (local_at, peer_at) = if egress { (src, dst) } else { (dst, src) };
    if family == 4 {
        key.local[..4].copy_from_slice(&load::<[u8; 4]>(skb, local_at)?);
        key.peer[..4].copy_from_slice(&load::<[u8; 4]>(skb, peer_at)?);
    } else {
        key.local = load::<[u8; 16]>(skb, local_at)?;
        key.peer = load::<[u8; 16]>(skb, peer_at)?;
    }
    let [s0, s1, d0, d1] = ports.to_be_bytes();
    let (sport, dport) = (u16::from_be_bytes([s0, s1]), u16::from_be_bytes([d0, d1]));
    (key.local_port, key.peer_port) = if egress { (sport, dport) } else { (dport, sport) };
    Some(key)
}

/// A segment with payload arrived on a listening socket: keeps its bytes, stream positions
/// `[seq, seq + len)` at packet offset `payload`, for the connection it belongs to. `how`: the
/// family (bits 0..8) and the TCP header's first four bytes, the ports (bits 32..64). A global
/// function: verified once, in a frame of its own, with its loop over the stash blocks.
// SAFETY: unmangled (and exported) so that it stays a global function, verified once; the name
// is unique in the object.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn backlog_keep(skb: *mut __sk_buff, seq: u64, payload: u64, len: u64, how: u64) -> i64 {
    let Some(key) = flow_key(skb, how as u8, (how >> 32) as u32, false) else { return 0 };
    // SAFETY: `bpf_ktime_get_ns` takes no argument and touches no memory of the program.
    let now = unsafe { bpf_ktime_get_ns() };
    let seq = seq as u32;
    let e = match HTTP_BACKLOG.get_ptr_mut(&key) {
        Some(e) => e,
        None => {
            // SAFETY: takes no argument; returns a pseudo-random number.
            let cookie = unsafe { bpf_get_prandom_u32() } as u64 | 1 << 63;
            let fresh = Embryo { cookie, arrival: now, first: seq, held: Held { lo: 0, hi: 0 }, _pad: 0 };
            let _ = HTTP_BACKLOG.insert(&key, &fresh, 0);
            match HTTP_BACKLOG.get_ptr_mut(&key) {
                Some(e) => e,
                None => return 0,
            }
        }
    };
    // SAFETY: this run's lookup result in `HTTP_BACKLOG` (preallocated LRU memory, valid until
    // the program returns, even if evicted meanwhile), plain integers. Two copies of one
    // segment (a retransmission) may pass on two CPUs at once, the listener taking segments
    // without a lock: both write the same stash bytes, and a lost update of `first` or `held`
    // can only leave a block out (deleted by the daemon's sweep), never write outside the entry.
    let e = unsafe { &mut *e };
    // A segment before the first seen (reordered) starts the stream.
    if after(e.first, seq) {
        e.first = seq;
    }
    let from = if after(e.first, seq) { e.first } else { seq };
    let first_index = index_of(from);
    let (cookie, first) = (e.cookie, e.first);
    let mut k = 0u32;
    while k < 64 {
        let index = first_index.wrapping_add(k);
        if backlog_put(skb, cookie, seq as u64 | (first as u64) << 32, payload | len << 32, index as u64) == 0 {
            break;
        }
        stash::add_held(&mut e.held, index);
        k += 1;
    }
    0
}

/// Keeps the part of a segment (`seqs`: its place, bits 0..32, and the stream's first byte,
/// bits 32..64; `at`: its payload's offset, bits 0..32, and length, bits 32..64) that falls in
/// stash block `index` of the connection-to-be `cookie`: nonzero when it did. A global
/// function: verified once, however many blocks a segment spans.
// SAFETY: unmangled (and exported) so that it stays a global function, verified once; the name
// is unique in the object.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn backlog_put(skb: *mut __sk_buff, cookie: u64, seqs: u64, at: u64, index: u64) -> i64 {
    // SAFETY: `bpf_ktime_get_ns` takes no argument and touches no memory of the program.
    let now = unsafe { bpf_ktime_get_ns() };
    let (seq, first) = (seqs as u32, (seqs >> 32) as u32);
    let (payload, len) = (at as u32, (at >> 32) as u32);
    let seg = Seg { seq, end: seq.wrapping_add(len), payload, src: SRC_PACKET, now };
    stash::put(skb, cookie, true, &seg, first, index as u32) as i64
}

/// The bytes kept for the connection of this packet (its socket's first segment with payload,
/// `egress` when it leaves), if any: taken out of `HTTP_BACKLOG`.
#[inline(always)]
pub fn take(skb: *mut __sk_buff, family: u8, ports: u32, egress: bool) -> Option<Embryo> {
    let key = flow_key(skb, family, ports, egress)?;
    // SAFETY: the value is copied out at once; `Embryo` is plain data.
    let e = unsafe { HTTP_BACKLOG.get(&key) }.copied()?;
    let _ = HTTP_BACKLOG.remove(&key);
    Some(e)
}
