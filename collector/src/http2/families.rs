//! The gRPC call histograms (OpenTelemetry's RPC conventions, semconv 1.45) and the HTTP/2
//! capture's own counters, as metric families. HTTP/2 exchanges that are not gRPC calls join
//! the HTTP families (`crate::http`).
use std::{collections::HashMap, net::IpAddr};

use collector_common::http::{SIDE_CLIENT, SIDE_SERVER};

use super::{
    events::Shared,
    records::{GRPC_CODES, OVERFLOW_CGROUP, RpcHist, RpcKey},
};
use crate::{
    cgroup::{Entry, Expiry, Resolver},
    http::{Who, comm},
    identity::{Declared, ProcessKey},
    metrics::{Family, Out},
};

/// One label set of the RPC histograms.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RpcLabels {
    side: u8,
    method: String,
    code: u8,
    address: Option<IpAddr>,
    port: u16,
    who: Who,
}

/// Expiry of the RPC histograms' entries (as the HTTP histograms').
pub type RpcExpiry = Expiry<RpcKey, RpcLabels, RpcHist>;

fn add(into: &mut RpcHist, h: &RpcHist) {
    for (a, b) in into.duration.iter_mut().zip(h.duration.iter()) {
        *a += b;
    }
    into.duration_sum_ns += h.duration_sum_ns;
}

/// The peer address of a client-side key.
fn peer(k: &RpcKey) -> Option<IpAddr> {
    match k.family {
        4 => Some(IpAddr::from([k.addr[0], k.addr[1], k.addr[2], k.addr[3]])),
        6 => Some(IpAddr::from(k.addr)),
        _ => None,
    }
}

/// `rpc_server_call_duration_seconds` and `rpc_client_call_duration_seconds`. Returns the keys
/// that expired (their cgroup is gone and they stopped changing), which the caller deletes.
pub fn rpc(
    entries: &[(RpcKey, RpcHist)],
    cgroups: &Resolver,
    declared: &HashMap<ProcessKey, Declared>,
    buckets: &[f64],
    expiry: &RpcExpiry,
    out: &mut Out,
) -> Vec<RpcKey> {
    let ids = cgroups.resolve(entries.iter().map(|(k, _)| k.cgroup_id).collect::<Vec<_>>());
    let mut gone = cgroups.gone_check(expiry.expires());
    let series = entries
        .iter()
        .map(|(k, h)| Entry {
            key: k.clone(),
            labels: RpcLabels {
                side: k.side,
                method: k.method.clone(),
                code: k.code,
                address: if k.side == SIDE_CLIENT { peer(k) } else { None },
                port: k.port,
                who: if k.cgroup_id == OVERFLOW_CGROUP {
                    Who::named("_overflow")
                } else {
                    Who::of(comm(&k.comm), ids[&k.cgroup_id].as_ref(), declared.get(&(k.cgroup_id, k.comm)))
                },
            },
            // The overflow series stays, as HTTP's does.
            gone: k.cgroup_id != OVERFLOW_CGROUP && gone.is(k.cgroup_id),
            fingerprint: h.duration.iter().sum(),
            value: *h,
        })
        .collect();
    let (sums, expired) = expiry.aggregate(series, RpcHist::ZERO, add);
    let mut sums: Vec<(&RpcLabels, &RpcHist)> = sums.iter().collect();
    sums.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let upper = |i: usize| buckets.get(i).copied();
    for (side, prefix, what) in [(SIDE_SERVER, "rpc_server", "served"), (SIDE_CLIENT, "rpc_client", "made")] {
        let mut dur = Family::histogram(
            &format!("{prefix}_call_duration_seconds"),
            &format!(
                "Duration of gRPC calls {what} by processes on this host (HTTP/2, cleartext), measured on \
                 their sockets from the request's first HEADERS byte to the frame that ends the response \
                 stream (trailers included)."
            ),
        );
        let mut port = itoa::Buffer::new();
        for (l, h) in sums.iter().filter(|(l, _)| l.side == side) {
            let address = l.address.map(|a| a.to_string()).unwrap_or_default();
            let mut labels: Vec<(&str, &str)> = vec![
                ("rpc_system_name", "grpc"),
                ("rpc_method", &l.method),
                ("rpc_response_status_code", GRPC_CODES.get(l.code as usize).copied().unwrap_or("UNKNOWN")),
            ];
            if side == SIDE_CLIENT {
                labels.push(("server_address", &address));
            }
            labels.push(("server_port", port.format(l.port)));
            l.who.push(&mut labels);
            dur.add_histogram(&labels, &h.duration[..=buckets.len()], upper, h.duration_sum_ns as f64 / 1e9);
        }
        out.push(dur);
    }
    expired
}

/// The HTTP/2 capture's own counters.
pub fn stats(s: &Shared, out: &mut Out) {
    let st = *s.stats.lock().unwrap();
    let (limited, full, uncertain) = {
        let r = s.records.lock().unwrap();
        (r.rpc_method_limited, r.label_sets_full, r.uncertain)
    };
    let mut f = Family::counter(
        "collector_http2_dropped_total",
        "HTTP/2 streams or header decoding the daemon gave up, by reason (docs/metrics.md, HTTP/2).",
    );
    for (reason, v) in st.reasons() {
        f.add(&[("reason", reason)], v as f64);
    }
    f.add(&[("reason", "rpc_method_limit")], limited as f64);
    f.add(&[("reason", "label_set_limit")], full as f64);
    out.push(f);
    let mut u = Family::counter(
        "collector_http2_streams_uncertain_total",
        "HTTP/2 streams and gRPC calls recorded whose labels may be incomplete: a header block not decoded, or \
         one that referred to HPACK table entries never seen (a connection followed from its middle, opened \
         before the collector started, or after lost bytes); a label then missing is method _OTHER, an empty \
         status code, or an HTTP exchange where a gRPC call could not be told (docs/metrics.md, HTTP/2).",
    );
    u.add(&[], uncertain as f64);
    out.push(u);
    let mut g = Family::gauge("collector_http2_connections", "HTTP/2 connections the daemon follows now.");
    g.add(&[], *s.connections.lock().unwrap() as f64);
    out.push(g);
}
