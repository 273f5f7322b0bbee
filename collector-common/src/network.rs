//! Per-cgroup network counters, counted by cgroup_skb programs on the cgroup v2 root.

/// Bytes are the IP packet length the cgroup_skb hook sees (`skb->len`: IP header onwards).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct NetCounters {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
}

crate::impl_pod!(NetCounters);
