//! What the kernel programs (`collector-ebpf`) and the daemon (`collector`) share: the keys and
//! values of the maps, all `#[repr(C)]` plain data so that both sides read the same bytes, and
//! the HTTP framer (`http::framer`, with its reorder stash `http::stash`), pure code that the
//! kernel programs compile in and that the host tests and the fuzz target drive (`http::sim`).
#![cfg_attr(not(test), no_std)]

pub mod capture;
pub mod disk;
pub mod http;
pub mod http2;
pub mod names;
pub mod network;
pub mod process;

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
    /// More pipelined requests in flight on one connection than the queue holds: the
    /// connection is no longer parsed and its waiting requests are abandoned.
    pub const HTTP_PIPELINE_OVERFLOW: u32 = 6;
    /// Bytes that looked like HTTP but are not a valid HTTP/1.x message (a malformed start
    /// line, header section, chunk size or trailer, a method token longer than the framer
    /// follows): the connection is no longer parsed and its waiting requests are abandoned.
    /// (Bytes lost to a gap in the TCP sequence count as `HTTP_OUT_OF_ORDER` instead.)
    pub const HTTP_DESYNC: u32 = 7;
    /// Requests still waiting for a response when their connection was reset, closed or given up.
    pub const HTTP_ABANDONED: u32 = 8;
    /// A connection's state, or the one-byte mark of a socket found not to carry HTTP/1.x,
    /// could not be allocated in its socket's local storage (out of memory, or the socket's
    /// option-memory limit `net.core.optmem_max` reached): the connection is not followed (an
    /// unmarked socket is looked at again on its next segment).
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
    /// longer than a program waits (1 ms): not followed, which may cost an exchange. Also a close
    /// that the close hook (`http_sock_close`) could not settle for the same reason.
    pub const HTTP_BUSY: u32 = 12;
    /// A TLS connection's state could not be created (`TLS_CONNS` full, 16384 connections
    /// followed at once): its exchanges are not measured.
    pub const TLS_CONN_FULL: u32 = 13;
    /// An HTTP/2 frame event found the ring buffer to the daemon full (`HTTP2_EVENTS`: the
    /// daemon fell behind): the daemon sees the gap and gives up the connection's open streams
    /// and its header decoding.
    pub const HTTP2_EVENTS_LOST: u32 = 14;
    pub const COUNT: u32 = 15;
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
        "tls_connection_map_full",
        "http2_events_lost",
    ];
}

/// Implements `aya::Pod` for the userspace side (`user` feature) so the types can be read
/// from maps and written as globals.
#[macro_export]
macro_rules! impl_pod {
    ($($t:ty),* $(,)?) => {
        $(
            // SAFETY: used only for `#[repr(C)]` types made of integers and arrays of them, with
            // any padding spelled out as fields: every byte is initialised and any bytes are a
            // valid value, which is what `aya::Pod` asks of a type.
            #[cfg(feature = "user")]
            unsafe impl aya::Pod for $t {}
        )*
    };
}
