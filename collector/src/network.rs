//! Network: /proc/net/dev per interface (`netdev`), and from cgroup_skb programs on the cgroup
//! v2 root the bytes and packets of every cgroup (`netbpf`). Kernel half:
//! collector-ebpf/src/network.rs.
use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use aya::maps::{MapData, PerCpuHashMap};
use collector_common::names::{map, program};
use collector_common::network::NetCounters;
use procfs::FromRead as _;

use crate::{
    bpf::{self, Loader},
    cgroup::{self, Entry, Expiry, Resolver},
    metrics::{Collector, Family, Out},
};

/// `/proc/net/dev` (the network namespace of the process reading it).
pub struct Netdev {
    path: PathBuf,
}

impl Netdev {
    pub fn new(procfs_root: &std::path::Path) -> Self {
        Self { path: procfs_root.join("net/dev") }
    }
}

impl Collector for Netdev {
    fn name(&self) -> &'static str {
        "netdev"
    }

    fn collect(&self, out: &mut Out) -> anyhow::Result<()> {
        let devs = procfs::net::InterfaceDeviceStatus::from_file(&self.path)
            .with_context(|| format!("reading {}", self.path.display()))?;
        // Every network namespace has lo: no interface at all means a truncated file.
        anyhow::ensure!(!devs.0.is_empty(), "no interfaces in {} (truncated?)", self.path.display());
        let mut bytes = Family::counter(
            "system_network_bytes_total",
            "Bytes received and transmitted per network interface (from /proc/net/dev).",
        );
        let mut packets = Family::counter("system_network_packets_total", "Packets per interface and direction.");
        let mut errors = Family::counter("system_network_errors_total", "Errors per interface and direction.");
        let mut dropped =
            Family::counter("system_network_dropped_total", "Packets dropped per interface and direction.");
        let mut names: Vec<_> = devs.0.keys().collect();
        names.sort();
        for name in names {
            let d = &devs.0[name];
            for (direction, b, p, e, dr) in [
                ("receive", d.recv_bytes, d.recv_packets, d.recv_errs, d.recv_drop),
                ("transmit", d.sent_bytes, d.sent_packets, d.sent_errs, d.sent_drop),
            ] {
                let l = [("device", name.as_str()), ("direction", direction)];
                bytes.add(&l, b as f64);
                packets.add(&l, p as f64);
                errors.add(&l, e as f64);
                dropped.add(&l, dr as f64);
            }
        }
        for f in [bytes, packets, errors, dropped] {
            out.push(f);
        }
        Ok(())
    }
}

/// `netbpf`: reads the CGROUP_NET map.
pub struct NetBpf {
    /// Behind a lock: expired entries are deleted (needs `&mut`).
    map: Mutex<PerCpuHashMap<MapData, u64, NetCounters>>,
    cgroups: Arc<Resolver>,
    expiry: NetExpiry,
}

impl NetBpf {
    /// Attaches `cgroup_net_ingress`/`cgroup_net_egress` to the v2 root (on failure nothing stays
    /// attached), unless the HTTP programs are attached and count packets into the same map
    /// (the object was loaded with `NET_IN_HTTP` set).
    pub fn start(
        loader: &mut Loader,
        cgroups: Arc<Resolver>,
        counted_by_http: bool,
        ttl: Duration,
    ) -> Result<Self, String> {
        let root = cgroups.root().ok_or("no cgroup v2 hierarchy")?.to_path_buf();
        if !counted_by_http {
            loader.attach_cgroup_skb_pair(program::CGROUP_NET_INGRESS, program::CGROUP_NET_EGRESS, &root)?;
        }
        let map = loader
            .take_map(map::CGROUP_NET)
            .and_then(|m| Ok(PerCpuHashMap::try_from(m)?))
            .map_err(|e| format!("{e:#}"))?;
        Ok(Self { map: Mutex::new(map), cgroups, expiry: Expiry::new(ttl) })
    }
}

impl Collector for NetBpf {
    fn name(&self) -> &'static str {
        "netbpf"
    }

    fn collect(&self, out: &mut Out) -> anyhow::Result<()> {
        let mut map = self.map.lock().unwrap();
        let mut entries = Vec::new();
        for entry in map.iter() {
            let (id, values) = entry.context("reading the CGROUP_NET map")?;
            let mut sum = NetCounters::default();
            bpf::sum_per_cpu(&values, |c| {
                sum.rx_bytes += c.rx_bytes;
                sum.rx_packets += c.rx_packets;
                sum.tx_bytes += c.tx_bytes;
                sum.tx_packets += c.tx_packets;
            });
            entries.push((id, sum));
        }
        let expired = Self::families(&entries, &self.cgroups, &self.expiry, out);
        for id in expired {
            map.remove(&id).with_context(|| format!("deleting the expired CGROUP_NET entry of cgroup {id}"))?;
        }
        Ok(())
    }
}

/// Expiry state of the per-cgroup network series.
pub type NetExpiry = Expiry<u64, cgroup::Labels, NetCounters>;

impl NetBpf {
    /// Map contents (counters summed over CPUs) → the per-cgroup families; returns the entries
    /// that expired (their cgroup is gone and they saw nothing new for the TTL), which the
    /// caller deletes from the map. Separate from reading the map so benchmarks can feed it
    /// synthetic entries.
    pub fn families(entries: &[(u64, NetCounters)], cgroups: &Resolver, expiry: &NetExpiry, out: &mut Out) -> Vec<u64> {
        let ids = cgroups.resolve(entries.iter().map(|(id, _)| *id).collect::<Vec<_>>());
        let mut gone = cgroups.gone_check(expiry.expires());
        let entries = entries
            .iter()
            .map(|&(id, c)| Entry {
                key: id,
                labels: cgroup::Labels::of(ids[&id].as_ref()),
                gone: gone.is(id),
                fingerprint: c.rx_packets + c.tx_packets,
                value: c,
            })
            .collect();
        let (sums, expired) = expiry.aggregate(entries, NetCounters::default(), |s, c| {
            s.rx_bytes += c.rx_bytes;
            s.rx_packets += c.rx_packets;
            s.tx_bytes += c.tx_bytes;
            s.tx_packets += c.tx_packets;
        });
        let mut bytes = Family::counter(
            "cgroup_network_bytes_total",
            "Bytes of IP packets (headers included) sent and received by sockets of a cgroup, \
             counted by cgroup_skb programs on the cgroup v2 root (loopback included).",
        );
        let mut packets = Family::counter("cgroup_network_packets_total", "IP packets per cgroup and direction.");
        for (labels, c) in &sums {
            for (direction, b, p) in [("receive", c.rx_bytes, c.rx_packets), ("transmit", c.tx_bytes, c.tx_packets)] {
                let mut l = Vec::with_capacity(9);
                labels.push(&mut l);
                l.push(("direction", direction));
                bytes.add(&l, b as f64);
                packets.add(&l, p as f64);
            }
        }
        out.push(bytes);
        out.push(packets);
        expired
    }
}
