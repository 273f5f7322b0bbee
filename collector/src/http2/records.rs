//! HTTP/2 exchanges and gRPC calls, aggregated in the daemon: the assembler's finished streams
//! (`assemble::Done`) go into the HTTP histograms the kernel keeps for HTTP/1 (same keys, with
//! `network_protocol_version` "2" in the key's scheme byte, see `collector_common::http`), and
//! gRPC calls into the RPC histograms here, which `rpc_families` turns into OpenTelemetry's
//! `rpc_{server,client}_call_duration_seconds`.
use std::collections::{HashMap, HashSet};

use collector_common::http::{
    HttpHist, HttpKey, MAX_DURATION_BOUNDS, OVERFLOW_METHOD, SIDE_CLIENT, SIDE_SERVER, VERSION_2, VERSION_SHIFT,
    size_bucket,
};

use super::assemble::Done;

/// Distinct `rpc_method` values kept at most; calls of further methods get `_OTHER` (and are
/// counted in `collector_http2_dropped_total{reason="rpc_method_limit"}`).
pub const MAX_RPC_METHODS: usize = 1000;

/// Label sets kept at most in each of the HTTP/2 exchanges' and the gRPC calls' histograms, as
/// in the kernel's HTTP/1 map (8192): a stream whose label set is new past it is recorded in
/// its side's overflow series (`service_name="_overflow"`) and counted in
/// `collector_http2_dropped_total{reason="label_set_limit"}`.
pub const MAX_LABEL_SETS: usize = 8192;

/// `RpcKey::cgroup_id` of a side's overflow series.
pub const OVERFLOW_CGROUP: u64 = u64::MAX;

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
/// (`CANCELLED`; `DEADLINE_EXCEEDED` once the request's `grpc-timeout` has passed), or ended
/// without trailers (`UNKNOWN`).
const CODE_CANCELLED: u8 = 1;
const CODE_UNKNOWN: u8 = 2;
const CODE_DEADLINE_EXCEEDED: u8 = 4;

/// How much earlier than its `grpc-timeout` a reset may come and still be the deadline's: the
/// client's clock starts before the request's first byte is sent.
const DEADLINE_SLACK_NS: u64 = 2_000_000;

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
    /// Streams recorded in an overflow series because their label set was new past
    /// [`MAX_LABEL_SETS`].
    pub label_sets_full: u64,
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
            label_sets_full: 0,
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
            // A method new past the method limit is `_OTHER`; one within it takes a slot only
            // once its label set is recorded (not when it goes to the overflow series).
            let (method, mut new_method, mut limited) = if !self.rpc_method_label {
                (String::new(), false, false)
            } else if self.methods.contains(&g.method) {
                (g.method.clone(), false, false)
            } else if self.methods.len() < MAX_RPC_METHODS {
                (g.method.clone(), true, false)
            } else {
                ("_OTHER".to_owned(), false, true)
            };
            let code = match g.status {
                Some(c) if (c as usize) < GRPC_CODES.len() => c,
                Some(_) => CODE_UNKNOWN,
                None if d.reset && g.timeout_ns.is_some_and(|t| dur + DEADLINE_SLACK_NS >= t) => CODE_DEADLINE_EXCEEDED,
                None if d.reset => CODE_CANCELLED,
                None => CODE_UNKNOWN,
            };
            let mut key =
                RpcKey { cgroup_id: d.conn.cgroup_id, comm: d.conn.comm, side, port, family, addr, method, code };
            if self.rpc.len() >= MAX_LABEL_SETS && !self.rpc.contains_key(&key) {
                self.label_sets_full += 1;
                (new_method, limited) = (false, false);
                key = RpcKey {
                    cgroup_id: OVERFLOW_CGROUP,
                    comm: [0; 16],
                    side,
                    port: 0,
                    family: 0,
                    addr: [0; 16],
                    method: "_OTHER".to_owned(),
                    code,
                };
            }
            if new_method {
                self.methods.insert(g.method.clone());
            }
            if limited {
                self.rpc_method_limited += 1;
            }
            let h = self.rpc.entry(key).or_insert(RpcHist::ZERO);
            h.duration[bucket] += 1;
            h.duration_sum_ns += dur;
            return;
        }
        let mut key = HttpKey {
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
        if self.http.len() >= MAX_LABEL_SETS && !self.http.contains_key(&key) {
            // The HTTP families' overflow series of the side (as the kernel's, `crate::http`).
            self.label_sets_full += 1;
            key = HttpKey {
                cgroup_id: 0,
                comm: [0; 16],
                status: 0,
                port: 0,
                method: OVERFLOW_METHOD,
                side,
                family: 0,
                // Version 2: not the kernel's overflow key, which the same map reading holds.
                scheme: VERSION_2 << VERSION_SHIFT,
                addr: [0; 16],
            };
        }
        let h = self.http.entry(key).or_insert(HttpHist::ZERO);
        h.duration[bucket] += 1;
        h.duration_sum_ns += dur;
        h.req_size[size_bucket(d.req_bytes)] += 1;
        h.req_size_sum += d.req_bytes;
        h.resp_size[size_bucket(d.resp_bytes)] += 1;
        h.resp_size_sum += d.resp_bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http2::assemble::{Grpc, Ident};

    fn done(port: u16, grpc: Option<&str>) -> Done {
        Done {
            conn: Ident { local_port: port, role: 1, ..Default::default() },
            stream: 1,
            method: 1,
            status: 200,
            req_bytes: 0,
            resp_bytes: 10,
            start_ns: 0,
            end_ns: 1_000_000,
            reset: false,
            grpc: grpc.map(|m| Grpc { method: m.to_owned(), status: Some(0), timeout_ns: None }),
            certain: true,
        }
    }

    /// Past the limit, new label sets go to the side's overflow series, counted; known ones
    /// keep recording; the method label's own limit gives `_OTHER`.
    #[test]
    fn label_sets_are_bounded() {
        let mut r = Records::new(vec![1_000_000_000], true);
        for port in 0..MAX_LABEL_SETS as u16 {
            r.add(&done(port, None));
        }
        assert_eq!((r.http.len(), r.label_sets_full), (MAX_LABEL_SETS, 0));
        r.add(&done(60000, None));
        r.add(&done(60001, None));
        r.add(&done(5, None));
        assert_eq!((r.http.len(), r.label_sets_full), (MAX_LABEL_SETS + 1, 2));
        let overflow: Vec<_> = r.http.iter().filter(|(k, _)| k.method == OVERFLOW_METHOD).collect();
        assert_eq!(overflow.len(), 1);
        assert_eq!(overflow[0].0.side, SIDE_SERVER);
        assert_eq!(overflow[0].1.duration.iter().sum::<u64>(), 2);
        // gRPC calls: one label set per port here too.
        for port in 0..MAX_LABEL_SETS as u16 {
            r.add(&done(port, Some("shop.Cart/Add")));
        }
        r.add(&done(60000, Some("shop.Cart/Add")));
        assert_eq!(r.label_sets_full, 3);
        assert!(r.rpc.keys().any(|k| k.cgroup_id == OVERFLOW_CGROUP && k.method == "_OTHER"));
        // Methods past their own limit.
        let mut r = Records::new(vec![1_000_000_000], true);
        for i in 0..MAX_RPC_METHODS + 5 {
            r.add(&done(1, Some(&format!("svc.S/M{i}"))));
        }
        assert_eq!(r.rpc_method_limited, 5);
        assert_eq!(r.rpc.keys().filter(|k| k.method == "_OTHER").count(), 1);
        // Reset without a status: at the deadline, or before it.
        let mut r = Records::new(vec![1_000_000_000], true);
        for (timeout, end) in [
            (Some(50_000_000), 50_500_000),
            (Some(50_000_000), 49_000_000),
            (Some(50_000_000), 20_000_000),
            (None, 50_000_000),
        ] {
            let mut d = done(1, Some("svc.S/A"));
            d.reset = true;
            d.end_ns = end;
            d.grpc.as_mut().unwrap().status = None;
            d.grpc.as_mut().unwrap().timeout_ns = timeout;
            r.add(&d);
        }
        let codes: std::collections::BTreeMap<u8, u64> =
            r.rpc.iter().map(|(k, h)| (k.code, h.duration.iter().sum())).collect();
        assert_eq!(codes, [(CODE_CANCELLED, 2), (CODE_DEADLINE_EXCEEDED, 2)].into());
        // The label off: one series.
        let mut r = Records::new(vec![1_000_000_000], false);
        r.add(&done(1, Some("svc.S/A")));
        r.add(&done(1, Some("svc.S/B")));
        assert_eq!(r.rpc.len(), 1);
        assert!(r.rpc.keys().all(|k| k.method.is_empty()));
    }
}
