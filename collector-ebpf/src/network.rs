//! Network: cgroup_skb programs on the cgroup v2 root count every packet of every socket by
//! the socket's cgroup (`bpf_skb_cgroup_id`), in both directions, loopback included.
//! They never drop traffic: both return 1 (allow).
//!
//! When the HTTP programs run too, the daemon sets `NET_IN_HTTP` and attaches only those: they
//! call [`count`] first, which saves a program run per packet.
use aya_ebpf::{
    EbpfContext,
    bindings::__sk_buff,
    helpers::generated::bpf_skb_cgroup_id,
    macros::{cgroup_skb, map},
    maps::PerCpuHashMap,
    programs::SkBuffContext,
};
use collector_common::{drop, network::NetCounters};

use crate::drops::lookup_or_init;

#[map]
static CGROUP_NET: PerCpuHashMap<u64, NetCounters> = PerCpuHashMap::with_max_entries(16384, 0);

/// Set by the daemon (read-only data, so the verifier drops the branch that is not taken):
/// 1 when `http_ingress`/`http_egress` count packets here instead of the programs below.
// SAFETY: unmangled so that the daemon can set it by this name before load; no other symbol in
// the object has the name, so nothing else is bound to it.
#[unsafe(no_mangle)]
static NET_IN_HTTP: u8 = 0;

/// Whether the HTTP programs count packets for this collector.
#[inline(always)]
pub fn counted_by_http() -> bool {
    // SAFETY: reads an immutable static through a reference: valid, aligned and initialised,
    // and never written while programs run (the daemon sets it before load and the loader
    // freezes read-only data), so nothing races with the read. Volatile so LLVM reads the value
    // the daemon set instead of folding the initial 0.
    unsafe { core::ptr::read_volatile(&NET_IN_HTTP) != 0 }
}

#[inline(always)]
pub fn count(ctx: &SkBuffContext, egress: bool) {
    let len = ctx.len() as u64;
    // SAFETY: the pointer is this program's own `__sk_buff` context, valid for the whole run and
    // the argument type the helper takes (the verifier checks it); the helper only reads the
    // cgroup of the packet's socket.
    let cgroup_id = unsafe { bpf_skb_cgroup_id(ctx.as_ptr() as *mut __sk_buff) };
    let Some(c) = lookup_or_init(&CGROUP_NET, &cgroup_id, &ZERO, drop::CGROUP_NET_FULL) else {
        return;
    };
    // `c` is this CPU's slot of the `CGROUP_NET` value for `cgroup_id`, looked up in this run:
    // preallocated map memory, aligned and valid until the program returns, even if the daemon
    // deletes the expired entry meanwhile (these counts are then lost with it). Atomic adds: a
    // program nesting on this CPU (ingress in a softirq during a process-context egress run)
    // may add to the same slot meanwhile.
    // SAFETY: field addresses of the slot (no access is made here).
    let (bytes, packets) = unsafe {
        if egress {
            (&raw mut (*c).tx_bytes, &raw mut (*c).tx_packets)
        } else {
            (&raw mut (*c).rx_bytes, &raw mut (*c).rx_packets)
        }
    };
    crate::atomic::add(bytes, len);
    crate::atomic::add(packets, 1);
}

static ZERO: NetCounters = NetCounters { rx_bytes: 0, rx_packets: 0, tx_bytes: 0, tx_packets: 0 };

#[cgroup_skb(ingress)]
pub fn cgroup_net_ingress(ctx: SkBuffContext) -> i32 {
    count(&ctx, false);
    1
}

#[cgroup_skb(egress)]
pub fn cgroup_net_egress(ctx: SkBuffContext) -> i32 {
    count(&ctx, true);
    1
}
