//! Arrivals on TLS server sockets: the packet programs give up a socket whose received stream
//! starts with a TLS handshake record, but while HTTPS is captured they still note when each of
//! its segments with payload arrives (`TLS_ARRIVALS`, by ports and peer address). The TLS
//! capture (`plain.rs`, `tls.rs`) takes that time as the start of a server's request, as a
//! cleartext request starts when its bytes reach the host.
use aya_ebpf::{Global, bindings::__sk_buff, helpers::bpf_ktime_get_ns, macros::map, maps::LruHashMap};
use collector_common::http::tls::{ArrivalKey, MAX_TLS_CONNS, RecvOffsets, v4_mapped};

use super::packet::load;

/// Offsets of the `tcp:tcp_rcv_space_adjust` fields `tls_recv` reads, from the tracepoint's
/// format file (set by the daemon before load).
// SAFETY: unmangled so that the daemon can set it by this name before load; the name is unique
// in the object.
#[unsafe(no_mangle)]
pub static RECV_OFFSETS: Global<RecvOffsets> = Global::new(RecvOffsets { sport: 0, dport: 0, saddr_v6: 0, daddr_v6: 0 });

/// When each TLS server socket last received payload (see `ArrivalKey`), written by the
/// packet ingress program (`tls_arrived`), read by `tls_recv` (tls.rs).
#[map]
pub static TLS_ARRIVALS: LruHashMap<ArrivalKey, u64> = LruHashMap::with_max_entries(MAX_TLS_CONNS, 0);

/// Whether the daemon captures TLS (it sets `RECV_OFFSETS` then; a field offset is never 0).
#[inline(always)]
pub fn capturing() -> bool {
    RECV_OFFSETS.load().sport != 0
}

/// A segment with payload arrived on a server socket whose stream started with a TLS handshake
/// (the packet ingress program, which gives such sockets up at once, calls this for each):
/// notes when, for `tls_recv`. `ports`: the TCP header's first four bytes (source and
/// destination port, big-endian); `family`: 4 or 6. A global function, called from the entry
/// program only: its locals are in a leaf frame of their own, not in the entry program's frame,
/// which every chain of calls of the ingress program includes.
// SAFETY: unmangled (and exported) so that it stays a global function, verified once; the name
// is unique in the object.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn tls_arrived(skb: *mut __sk_buff, ports: u64, family: u64) -> i64 {
    // SAFETY: `bpf_ktime_get_ns` takes no argument and touches no memory of the program.
    let now = unsafe { bpf_ktime_get_ns() };
    let peer_addr = if family == 4 {
        match load::<[u8; 4]>(skb, 12) {
            Some(a) => v4_mapped(a),
            None => return 0,
        }
    } else {
        match load::<[u8; 16]>(skb, 8) {
            Some(a) => a,
            None => return 0,
        }
    };
    let [s0, s1, d0, d1] = (ports as u32).to_be_bytes();
    let key = ArrivalKey {
        peer_addr,
        local_port: u16::from_be_bytes([d0, d1]),
        peer_port: u16::from_be_bytes([s0, s1]),
        _pad: 0,
    };
    // One aligned 8-byte store when the entry exists, which `tls_recv` reads whole.
    super::put(&TLS_ARRIVALS, &key, &now);
    0
}

