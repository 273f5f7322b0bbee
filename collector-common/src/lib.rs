//! Map keys and values shared by the kernel programs (`collector-ebpf`) and the daemon
//! (`collector`). Everything here is `#[repr(C)]` plain data: both sides read the same bytes.
#![cfg_attr(not(test), no_std)]

pub mod disk;
pub mod http;
pub mod network;

/// Indices of the per-CPU `DROPS` array: events a kernel program could not record because a
/// bounded map was full, or could not match. The daemon exports each as
/// `collector_bpf_events_dropped_total{reason}`.
pub mod drop {
    /// The disk latency histogram map had no room for a new (device, operation).
    pub const DISK_HIST_FULL: u32 = 0;
    /// The per-cgroup disk I/O map had no room for a new (cgroup, device, operation).
    pub const CGROUP_IO_FULL: u32 = 1;
    /// The per-cgroup network map had no room for a new cgroup.
    pub const CGROUP_NET_FULL: u32 = 2;
    /// A request completed that was never seen being issued (issued before the program
    /// attached, evicted from the in-flight LRU map, or a partial completion).
    pub const DISK_UNMATCHED_COMPLETION: u32 = 3;
    /// An HTTP histogram entry could not be created (the request went to the overflow entry).
    pub const HTTP_MAP_FULL: u32 = 4;
    /// A response arrived with no request waiting for it.
    pub const HTTP_RESPONSE_UNMATCHED: u32 = 5;
    /// More pipelined requests in flight on one connection than the queue holds.
    pub const HTTP_PIPELINE_OVERFLOW: u32 = 6;
    /// Bytes that looked like HTTP but could not be followed (a gap in the TCP sequence, a
    /// malformed message, a parser budget exceeded): the connection is no longer parsed.
    pub const HTTP_DESYNC: u32 = 7;
    /// Requests still waiting for a response when their connection was reset, closed or given up.
    pub const HTTP_ABANDONED: u32 = 8;
    /// A connection's state could not be allocated in its socket's local storage (out of
    /// memory, or the socket's option-memory limit `net.core.optmem_max` reached): the
    /// connection is not followed.
    pub const HTTP_CONN_STORAGE: u32 = 9;
    /// Bytes the HTTP framer needed (a start line, a header, a chunk size) reached the socket
    /// out of order and were not kept: the messages in flight on the connection are given up
    /// and the direction re-synchronises on the next message.
    pub const HTTP_OUT_OF_ORDER: u32 = 10;
    /// The reorder stash (bytes received out of order while the framer waits for a missing
    /// one) had no room for a block: those bytes are not kept, which may cost an exchange
    /// (then counted as `http_out_of_order` too).
    pub const HTTP_STASH_FULL: u32 = 11;
    /// A segment whose connection another CPU kept busy (following an earlier segment) for
    /// longer than a program waits: not followed, which may cost an exchange.
    pub const HTTP_BUSY: u32 = 12;
    pub const COUNT: u32 = 13;
    /// Label values, indexed by the constants above.
    pub const NAMES: [&str; COUNT as usize] = [
        "disk_latency_map_full",
        "cgroup_io_map_full",
        "cgroup_network_map_full",
        "disk_completion_unmatched",
        "http_map_full",
        "http_response_unmatched",
        "http_pipeline_overflow",
        "http_desync",
        "http_abandoned",
        "http_connection_storage_failed",
        "http_out_of_order",
        "http_stash_full",
        "http_busy",
    ];
}

/// Implements `aya::Pod` for the userspace side (`user` feature) so the types can be read
/// from maps and written as globals.
#[macro_export]
macro_rules! impl_pod {
    ($($t:ty),* $(,)?) => {
        $(
            #[cfg(feature = "user")]
            unsafe impl aya::Pod for $t {}
        )*
    };
}
