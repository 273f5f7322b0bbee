//! HTTP/2 exchanges and gRPC calls, aggregated in the daemon: the assembler's finished streams
//! (`assemble::Done`) go into the HTTP histograms the kernel keeps for HTTP/1 (same keys, with
//! `network_protocol_version` "2" in the key's scheme byte, see `collector_common::http`), and
//! gRPC calls into the RPC histograms here, which `rpc_families` turns into OpenTelemetry's
//! `rpc_{server,client}_call_duration_seconds`.
use std::collections::{HashMap, HashSet};

use collector_common::http::{
    HttpHist, HttpKey, MAX_DURATION_BOUNDS, SIDE_CLIENT, SIDE_SERVER, VERSION_2, VERSION_SHIFT, size_bucket,
};

use super::assemble::Done;

/// Distinct `rpc_method` values kept at most; calls of further methods get `_OTHER` (and are
/// counted in `collector_http2_dropped_total{reason="rpc_method_limit"}`).
pub const MAX_RPC_METHODS: usize = 1000;

/// gRPC status codes by number (grpc/doc/statuscodes.md), as OpenTelemetry's
/// `rpc.response.status_code` writes them.
pub const GRPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// `RpcKey::code` of a call that ended without a grpc-status: reset by either side
/// (`CANCELLED`), or ended without trailers (`UNKNOWN`).
const CODE_CANCELLED: u8 = 1;
const CODE_UNKNOWN: u8 = 2;

/// Who made or served a gRPC call, and which.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RpcKey {
    pub cgroup_id: u64,
    pub comm: [u8; 16],
    pub side: u8,
    /// Server side: the local port; client side: the peer's.
    pub port: u16,
    /// Client side: the peer's address family (4, 6) and address; server side 0.
    pub family: u8,
    pub addr: [u8; 16],
    /// `package.Service/Method`, `_OTHER` past the limit, empty with the label off.
    pub method: String,
    /// Index in `GRPC_CODES`.
    pub code: u8,
}

/// One RPC label set's duration histogram (the HTTP duration bounds).
#[derive(Clone, Copy, Debug)]
pub struct RpcHist {
    pub duration: [u64; MAX_DURATION_BOUNDS + 1],
    pub duration_sum_ns: u64,
}

impl RpcHist {
    pub const ZERO: RpcHist = RpcHist { duration: [0; MAX_DURATION_BOUNDS + 1], duration_sum_ns: 0 };
}

/// What the daemon aggregated from HTTP/2 connections.
pub struct Records {
    pub http: HashMap<HttpKey, HttpHist>,
    pub rpc: HashMap<RpcKey, RpcHist>,
    /// The `rpc_method` values seen (bounded by `MAX_RPC_METHODS`).
    methods: HashSet<String>,
    /// Upper bounds of the duration buckets (ns).
    bounds: Vec<u64>,
    /// Whether `rpc_method` is a label (`--no-collector.http.grpc-method` turns it off).
    rpc_method_label: bool,
    /// Calls whose method went to `_OTHER` because of the limit.
    pub rpc_method_limited: u64,
    /// Streams recorded with labels that may be missing (`Done::certain` false).
    pub uncertain: u64,
}

/// Index of the duration bucket for `ns`: the number of bounds below it.
fn duration_bucket(bounds: &[u64], ns: u64) -> usize {
    bounds.iter().take_while(|b| **b < ns).count()
}

impl Records {
    pub fn new(bounds: Vec<u64>, rpc_method_label: bool) -> Self {
        Self {
            http: HashMap::new(),
            rpc: HashMap::new(),
            methods: HashSet::new(),
            bounds,
            rpc_method_label,
            rpc_method_limited: 0,
            uncertain: 0,
        }
    }

    /// Records one finished stream: a gRPC call into the RPC histograms, anything else into
    /// the HTTP ones.
    pub fn add(&mut self, d: &Done) {
        let server = d.conn.role == 1;
        let side = if server { SIDE_SERVER } else { SIDE_CLIENT };
        let port = if server { d.conn.local_port } else { d.conn.peer_port };
        let (family, addr) = if server { (0, [0; 16]) } else { (d.conn.family, d.conn.addr) };
        let dur = d.end_ns.saturating_sub(d.start_ns);
        let bucket = duration_bucket(&self.bounds, dur);
        if !d.certain {
            self.uncertain += 1;
        }
        if let Some(g) = &d.grpc {
            let method = if !self.rpc_method_label {
                String::new()
            } else if self.methods.contains(&g.method) {
                g.method.clone()
            } else if self.methods.len() < MAX_RPC_METHODS {
                self.methods.insert(g.method.clone());
                g.method.clone()
            } else {
                self.rpc_method_limited += 1;
                "_OTHER".to_owned()
            };
            let code = match g.status {
                Some(c) if (c as usize) < GRPC_CODES.len() => c,
                Some(_) => CODE_UNKNOWN,
                None if d.reset => CODE_CANCELLED,
                None => CODE_UNKNOWN,
            };
            let key = RpcKey { cgroup_id: d.conn.cgroup_id, comm: d.conn.comm, side, port, family, addr, method, code };
            let h = self.rpc.entry(key).or_insert(RpcHist::ZERO);
            h.duration[bucket] += 1;
            h.duration_sum_ns += dur;
            return;
        }
        let key = HttpKey {
            cgroup_id: d.conn.cgroup_id,
            comm: d.conn.comm,
            status: if (100..600).contains(&d.status) { d.status } else { 0 },
            port,
            method: d.method,
            side,
            family,
            scheme: d.conn.scheme | VERSION_2 << VERSION_SHIFT,
            addr,
        };
        let h = self.http.entry(key).or_insert(HttpHist::ZERO);
        h.duration[bucket] += 1;
        h.duration_sum_ns += dur;
        h.req_size[size_bucket(d.req_bytes)] += 1;
        h.req_size_sum += d.req_bytes;
        h.resp_size[size_bucket(d.resp_bytes)] += 1;
        h.resp_size_sum += d.resp_bytes;
    }
}
