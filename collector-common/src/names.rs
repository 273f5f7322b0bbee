//! Names the daemon looks up in the kernel object: maps, programs and globals. The kernel
//! crate defines items of these names (a `#[map] static`, a program function, a
//! `#[no_mangle] static`); the daemon uses only these constants, and a test of the daemon
//! checks every one against the object it embeds.

/// Maps the daemon reads or fills.
pub mod map {
    pub const DROPS: &str = "DROPS";
    pub const LATENCY: &str = "LATENCY";
    pub const CGROUP_IO: &str = "CGROUP_IO";
    pub const CGROUP_NET: &str = "CGROUP_NET";
    pub const HTTP_ARMED: &str = "HTTP_ARMED";
    pub const HTTP_HIST: &str = "HTTP_HIST";
    pub const HTTP_ACTIVE: &str = "HTTP_ACTIVE";
    pub const HTTP_STASH: &str = "HTTP_STASH";
    pub const PROCESS_NAMES: &str = "PROCESS_NAMES";
    pub const TLS_CONNS: &str = "TLS_CONNS";
    pub const HTTP2_EVENTS: &str = "HTTP2_EVENTS";
    pub const TLS_H2_CONNS: &str = "TLS_H2_CONNS";
    pub const TLS_CALLS: &str = "TLS_CALLS";
    pub const TLS_RECV: &str = "TLS_RECV";
    pub const TLS_PROCS: &str = "TLS_PROCS";
    pub const ALL: [&str; 15] = [
        DROPS,
        LATENCY,
        CGROUP_IO,
        CGROUP_NET,
        HTTP_ARMED,
        HTTP_HIST,
        HTTP_ACTIVE,
        HTTP_STASH,
        PROCESS_NAMES,
        TLS_CONNS,
        HTTP2_EVENTS,
        TLS_H2_CONNS,
        TLS_CALLS,
        TLS_RECV,
        TLS_PROCS,
    ];
}

/// Programs the daemon attaches.
pub mod program {
    pub const BLOCK_RQ_ISSUE: &str = "block_rq_issue";
    pub const BLOCK_RQ_COMPLETE: &str = "block_rq_complete";
    pub const BLOCK_BIO_QUEUE: &str = "block_bio_queue";
    pub const CGROUP_NET_INGRESS: &str = "cgroup_net_ingress";
    pub const CGROUP_NET_EGRESS: &str = "cgroup_net_egress";
    pub const HTTP_INGRESS: &str = "http_ingress";
    pub const HTTP_EGRESS: &str = "http_egress";
    pub const HTTP_SOCK_CREATE: &str = "http_sock_create";
    pub const HTTP_SOCK_CLOSE: &str = "http_sock_close";
    pub const HTTP_PROCESS_EXEC: &str = "http_process_exec";
    pub const HTTP_PROCESS_RENAME: &str = "http_process_rename";
    pub const TLS_READ: &str = "tls_read";
    pub const TLS_READ_EX: &str = "tls_read_ex";
    pub const TLS_WRITE: &str = "tls_write";
    pub const TLS_WRITE_EX: &str = "tls_write_ex";
    pub const TLS_RET: &str = "tls_ret";
    pub const TLS_FREE: &str = "tls_free";
    pub const TLS_RECV: &str = "tls_recv";
    pub const GO_TLS_READ: &str = "go_tls_read";
    pub const GO_TLS_WRITE: &str = "go_tls_write";
    pub const GO_TLS_RET: &str = "go_tls_ret";
    pub const GO_TLS_CLOSE: &str = "go_tls_close";
    pub const TLS_HANDSHAKE: &str = "tls_handshake";

    /// The uprobe programs, each with a twin of the same code in a `uprobe.multi` section,
    /// loaded instead where the kernel has uprobe_multi links (6.6): one link per program and
    /// file, which the kernel removes after one grace period, where a probe per offset costs
    /// one each (tens of milliseconds, one after the other).
    pub const UPROBES: [(&str, &str); 11] = [
        (TLS_READ, "tls_read_multi"),
        (TLS_READ_EX, "tls_read_ex_multi"),
        (TLS_WRITE, "tls_write_multi"),
        (TLS_WRITE_EX, "tls_write_ex_multi"),
        (TLS_RET, "tls_ret_multi"),
        (TLS_FREE, "tls_free_multi"),
        (GO_TLS_READ, "go_tls_read_multi"),
        (GO_TLS_WRITE, "go_tls_write_multi"),
        (GO_TLS_RET, "go_tls_ret_multi"),
        (GO_TLS_CLOSE, "go_tls_close_multi"),
        (TLS_HANDSHAKE, "tls_handshake_multi"),
    ];

    /// The uprobe_multi twin of uprobe program `p` (`p` itself if it has none).
    pub fn multi_of(p: &'static str) -> &'static str {
        UPROBES.iter().find(|(s, _)| *s == p).map_or(p, |(_, m)| m)
    }

    pub const ALL: [&str; 23] = [
        BLOCK_RQ_ISSUE,
        BLOCK_RQ_COMPLETE,
        BLOCK_BIO_QUEUE,
        CGROUP_NET_INGRESS,
        CGROUP_NET_EGRESS,
        HTTP_INGRESS,
        HTTP_EGRESS,
        HTTP_SOCK_CREATE,
        HTTP_SOCK_CLOSE,
        HTTP_PROCESS_EXEC,
        HTTP_PROCESS_RENAME,
        TLS_READ,
        TLS_READ_EX,
        TLS_WRITE,
        TLS_WRITE_EX,
        TLS_RET,
        TLS_FREE,
        TLS_RECV,
        GO_TLS_READ,
        GO_TLS_WRITE,
        GO_TLS_RET,
        GO_TLS_CLOSE,
        TLS_HANDSHAKE,
    ];
}

/// Globals the daemon sets before the object is loaded.
pub mod global {
    pub const RQ_ISSUE_OFFSETS: &str = "RQ_ISSUE_OFFSETS";
    pub const RQ_COMPLETE_OFFSETS: &str = "RQ_COMPLETE_OFFSETS";
    pub const BIO_QUEUE_OFFSETS: &str = "BIO_QUEUE_OFFSETS";
    pub const DURATION_BOUNDS_NS: &str = "DURATION_BOUNDS_NS";
    pub const RENAME_OFFSETS: &str = "RENAME_OFFSETS";
    pub const HTTP_BENCH_STAGE: &str = "HTTP_BENCH_STAGE";
    pub const NET_IN_HTTP: &str = "NET_IN_HTTP";
    pub const RECV_OFFSETS: &str = "RECV_OFFSETS";
    pub const HTTP_TEST_DEFER: &str = "HTTP_TEST_DEFER";
    pub const HTTP_STORES_ORDERED: &str = "HTTP_STORES_ORDERED";
    pub const ALL: [&str; 10] = [
        RQ_ISSUE_OFFSETS,
        RQ_COMPLETE_OFFSETS,
        BIO_QUEUE_OFFSETS,
        DURATION_BOUNDS_NS,
        RENAME_OFFSETS,
        HTTP_BENCH_STAGE,
        NET_IN_HTTP,
        RECV_OFFSETS,
        HTTP_TEST_DEFER,
        HTTP_STORES_ORDERED,
    ];
}
