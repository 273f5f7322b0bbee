//! Disk: /proc/diskstats per device (`diskstats`), and from the block-layer tracepoints
//! (`diskbpf`) the I/O latency histogram per device and operation and the bytes each cgroup
//! submits. Kernel half: collector-ebpf/src/disk.rs.
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use anyhow::Context as _;
use aya::maps::{MapData, PerCpuHashMap};
use collector_common::disk::{
    BlockTpOffsets, CgroupIoKey, CgroupIoVal, DevOp, LATENCY_BUCKETS, LatencyHist, bucket_upper_seconds, op,
};
use collector_common::names::{global, map, program};
use procfs::FromRead as _;

use crate::{
    bpf::{self, Loader},
    cgroup::{self, Entry, Expiry, Resolver},
    metrics::{Collector, Family, Out},
};

/// Block device names by major:minor, and whether each is a partition, from sysfs.
pub struct Devices {
    sysfs: PathBuf,
    cache: Mutex<HashMap<(u32, u32), (String, bool)>>,
}

impl Devices {
    pub fn new(sysfs: &Path) -> Self {
        Self { sysfs: sysfs.to_path_buf(), cache: Mutex::new(HashMap::new()) }
    }

    /// (name, is_partition); `None` when sysfs does not know the device.
    pub fn lookup(&self, major: u32, minor: u32) -> Option<(String, bool)> {
        let mut cache = self.cache.lock().unwrap();
        if let Some(v) = cache.get(&(major, minor)) {
            return Some(v.clone());
        }
        let dir = self.sysfs.join("dev/block").join(format!("{major}:{minor}"));
        let target = std::fs::read_link(&dir).ok()?;
        let name = target.file_name()?.to_string_lossy().into_owned();
        let v = (name, dir.join("partition").exists());
        cache.insert((major, minor), v.clone());
        Some(v)
    }

    /// Name of a kernel-encoded dev_t (major << 20 | minor), falling back to `major:minor`.
    pub fn name_of_kdev(&self, dev: u32) -> String {
        let (major, minor) = (dev >> 20, dev & 0xf_ffff);
        self.lookup(major, minor).map(|(n, _)| n).unwrap_or_else(|| format!("{major}:{minor}"))
    }
}

/// The diskstats collector's flags.
#[derive(clap::Args, Debug, Clone)]
pub struct DiskstatsFlags {
    /// Also report partitions in the diskstats collector (whole devices only by default).
    #[arg(long = "collector.diskstats.include-partitions")]
    pub include_partitions: bool,

    /// Regular expression of device names the diskstats collector leaves out.
    #[arg(long = "collector.diskstats.device-exclude", default_value = "^(ram|loop|fd|zram)\\d+$", value_parser = parse_exclude)]
    pub device_exclude: Exclude,
}

/// `--collector.diskstats.device-exclude`: none when empty.
#[derive(Debug, Clone)]
pub struct Exclude(pub Option<regex::Regex>);

pub fn parse_exclude(s: &str) -> Result<Exclude, regex::Error> {
    Ok(Exclude(if s.is_empty() { None } else { Some(regex::Regex::new(s)?) }))
}

/// `/proc/diskstats`.
pub struct Diskstats {
    path: PathBuf,
    devices: Arc<Devices>,
    include_partitions: bool,
    exclude: Option<regex::Regex>,
}

impl Diskstats {
    pub fn new(procfs_root: &Path, devices: Arc<Devices>, flags: &DiskstatsFlags) -> Self {
        Self {
            path: procfs_root.join("diskstats"),
            devices,
            include_partitions: flags.include_partitions,
            exclude: flags.device_exclude.0.clone(),
        }
    }
}

const SECTOR: f64 = 512.0;

impl Collector for Diskstats {
    fn name(&self) -> &'static str {
        "diskstats"
    }

    fn collect(&self, out: &mut Out) -> anyhow::Result<()> {
        let stats =
            procfs::DiskStats::from_file(&self.path).with_context(|| format!("reading {}", self.path.display()))?;
        let mut ops = Family::counter(
            "system_disk_io_operations_total",
            "Completed I/O requests per device and operation (from /proc/diskstats).",
        );
        let mut merged = Family::counter(
            "system_disk_io_merged_total",
            "Adjacent requests merged into one per device and operation.",
        );
        let mut bytes = Family::counter("system_disk_io_bytes_total", "Bytes transferred per device and operation.");
        let mut op_time = Family::counter(
            "system_disk_operation_time_seconds_total",
            "Seconds spent by all requests of an operation (sum over requests; can exceed wall time).",
        );
        let mut io_time = Family::counter(
            "system_disk_io_time_seconds_total",
            "Seconds the device had at least one request in flight (busy time).",
        );
        let mut weighted = Family::counter(
            "system_disk_io_weighted_time_seconds_total",
            "Seconds spent doing I/O weighted by the number of requests in flight.",
        );
        let mut in_progress = Family::gauge("system_disk_io_in_progress", "Requests currently in flight.");
        for d in &stats.0 {
            let is_partition = self.devices.lookup(d.major as u32, d.minor as u32).map(|(_, p)| p).unwrap_or(false);
            if (is_partition && !self.include_partitions) || self.exclude.as_ref().is_some_and(|r| r.is_match(&d.name))
            {
                continue;
            }
            let dev = d.name.as_str();
            let per_op = [
                ("read", Some(d.reads), Some(d.merged), Some(d.sectors_read), Some(d.time_reading)),
                ("write", Some(d.writes), Some(d.writes_merged), Some(d.sectors_written), Some(d.time_writing)),
                ("discard", d.discards, d.discards_merged, d.sectors_discarded, d.time_discarding),
                ("flush", d.flushes, None, None, d.time_flushing),
            ];
            for (operation, n, m, sectors, ms) in per_op {
                let l = [("device", dev), ("operation", operation)];
                if let Some(n) = n {
                    ops.add(&l, n as f64);
                }
                if let Some(m) = m {
                    merged.add(&l, m as f64);
                }
                if let Some(s) = sectors {
                    bytes.add(&l, s as f64 * SECTOR);
                }
                if let Some(ms) = ms {
                    op_time.add(&l, ms as f64 / 1e3);
                }
            }
            io_time.add(&[("device", dev)], d.time_in_progress as f64 / 1e3);
            weighted.add(&[("device", dev)], d.weighted_time_in_progress as f64 / 1e3);
            in_progress.add(&[("device", dev)], d.in_progress as f64);
        }
        for f in [ops, merged, bytes, op_time, io_time, weighted, in_progress] {
            out.push(f);
        }
        Ok(())
    }
}

/// `diskbpf`: reads the LATENCY and CGROUP_IO maps.
pub struct DiskBpf {
    latency: PerCpuHashMap<MapData, DevOp, LatencyHist>,
    /// Behind a lock: expired entries are deleted (needs `&mut`).
    cgroup_io: Mutex<PerCpuHashMap<MapData, CgroupIoKey, CgroupIoVal>>,
    devices: Arc<Devices>,
    cgroups: Arc<Resolver>,
    expiry: DiskExpiry,
}

/// Offsets of (dev, sector, nr_sector, rwbs) in a block tracepoint, from its format file.
fn block_offsets(tracefs: &Path, name: &str) -> Result<BlockTpOffsets, String> {
    let f = bpf::tracepoint_fields(
        tracefs,
        "block",
        name,
        &[("dev", 4, 4), ("sector", 8, 8), ("nr_sector", 4, 4), ("rwbs", 2, 64)],
    )?;
    Ok(BlockTpOffsets {
        dev: f["dev"].offset,
        sector: f["sector"].offset,
        nr_sector: f["nr_sector"].offset,
        rwbs: f["rwbs"].offset,
    })
}

/// Globals the disk programs need, or why they cannot run.
pub fn globals(tracefs: &Result<PathBuf, String>) -> Result<Vec<(&'static str, Vec<u8>)>, String> {
    let tracefs = tracefs.as_ref().map_err(Clone::clone)?;
    Ok(vec![
        (global::RQ_ISSUE_OFFSETS, bpf::as_bytes(&block_offsets(tracefs, "block_rq_issue")?)),
        (global::RQ_COMPLETE_OFFSETS, bpf::as_bytes(&block_offsets(tracefs, "block_rq_complete")?)),
        (global::BIO_QUEUE_OFFSETS, bpf::as_bytes(&block_offsets(tracefs, "block_bio_queue")?)),
    ])
}

const PROGRAMS: [(&str, &str); 3] = [
    (program::BLOCK_RQ_ISSUE, "block_rq_issue"),
    (program::BLOCK_RQ_COMPLETE, "block_rq_complete"),
    (program::BLOCK_BIO_QUEUE, "block_bio_queue"),
];

impl DiskBpf {
    /// Attaches the block programs and takes their maps; on failure nothing stays attached.
    pub fn start(
        loader: &mut Loader,
        devices: Arc<Devices>,
        cgroups: Arc<Resolver>,
        ttl: std::time::Duration,
    ) -> Result<Self, String> {
        for (program, tp) in PROGRAMS {
            if let Err(e) = loader.attach_tracepoint(program, "block", tp) {
                for (p, _) in PROGRAMS {
                    loader.unload(p);
                }
                return Err(e);
            }
        }
        let maps = (|| -> anyhow::Result<_> {
            Ok((
                PerCpuHashMap::try_from(loader.take_map(map::LATENCY)?)?,
                PerCpuHashMap::try_from(loader.take_map(map::CGROUP_IO)?)?,
            ))
        })();
        let (latency, cgroup_io) = maps.map_err(|e| format!("{e:#}"))?;
        Ok(Self { latency, cgroup_io: Mutex::new(cgroup_io), devices, cgroups, expiry: Expiry::new(ttl) })
    }
}

impl Collector for DiskBpf {
    fn name(&self) -> &'static str {
        "diskbpf"
    }

    fn collect(&self, out: &mut Out) -> anyhow::Result<()> {
        let mut latency = Vec::new();
        for entry in self.latency.iter() {
            let (key, values) = entry.context("reading the LATENCY map")?;
            let mut counts = [0u64; LATENCY_BUCKETS];
            let mut sum_ns = 0u64;
            bpf::sum_per_cpu(&values, |h| {
                for (c, b) in counts.iter_mut().zip(h.buckets.iter()) {
                    *c += b;
                }
                sum_ns += h.sum_ns;
            });
            latency.push((key, counts, sum_ns));
        }
        let mut cgroup_io = self.cgroup_io.lock().unwrap();
        let mut entries = Vec::new();
        for entry in cgroup_io.iter() {
            let (key, values) = entry.context("reading the CGROUP_IO map")?;
            let mut bytes = 0u64;
            bpf::sum_per_cpu(&values, |v| bytes += v.bytes);
            entries.push((key, bytes));
        }
        let expired = Self::families(&latency, &entries, &self.devices, &self.cgroups, &self.expiry, out);
        for key in expired {
            cgroup_io.remove(&key).context("deleting an expired CGROUP_IO entry")?;
        }
        Ok(())
    }
}

/// Expiry state of the per-cgroup disk series.
pub type DiskExpiry = Expiry<CgroupIoKey, (cgroup::Labels, String, &'static str), u64>;

impl DiskBpf {
    /// Map contents (summed over CPUs) → families: `latency` holds (device and operation,
    /// bucket counts, sum of ns), `entries` the bytes per cgroup, device and operation. Returns
    /// the cgroup entries that expired, which the caller deletes from the map. Separate from
    /// reading the maps so benchmarks can feed it synthetic entries.
    pub fn families(
        latency: &[(DevOp, [u64; LATENCY_BUCKETS], u64)],
        entries: &[(CgroupIoKey, u64)],
        devices: &Devices,
        cgroups: &Resolver,
        expiry: &DiskExpiry,
        out: &mut Out,
    ) -> Vec<CgroupIoKey> {
        let mut hist = Family::histogram(
            "system_disk_io_latency_seconds",
            "Block I/O latency per device and operation: from the request being issued to the \
             device driver to its completion (block_rq_issue to block_rq_complete).",
        );
        for (key, counts, sum_ns) in latency {
            let device = devices.name_of_kdev(key.dev);
            let operation = op::NAMES.get(key.op as usize).copied().unwrap_or("other");
            hist.add_histogram(
                &[("device", &device), ("operation", operation)],
                counts,
                bucket_upper_seconds,
                *sum_ns as f64 / 1e9,
            );
        }
        out.push(hist);

        // Sum per (cgroup identity, device, op): deleted cgroups fold into one series.
        let ids = cgroups.resolve(entries.iter().map(|(k, _)| k.cgroup_id).collect::<Vec<_>>());
        let mut gone = cgroups.gone_check(expiry.expires());
        let entries = entries
            .iter()
            .map(|&(key, bytes)| Entry {
                labels: (
                    cgroup::Labels::of(ids[&key.cgroup_id].as_ref()),
                    devices.name_of_kdev(key.dev),
                    op::NAMES.get(key.op as usize).copied().unwrap_or("other"),
                ),
                gone: gone.is(key.cgroup_id),
                fingerprint: bytes,
                value: bytes,
                key,
            })
            .collect();
        let (sums, expired) = expiry.aggregate(entries, 0, |s, b| *s += b);
        let mut io = Family::counter(
            "cgroup_disk_io_bytes_total",
            "Bytes of block I/O submitted by tasks of a cgroup, per device and operation \
             (block_bio_queue; writeback of buffered writes is attributed to the flusher's cgroup).",
        );
        for ((labels, device, operation), bytes) in &sums {
            let mut l = Vec::with_capacity(10);
            labels.push(&mut l);
            l.extend([("device", device.as_str()), ("operation", *operation)]);
            io.add(&l, *bytes as f64);
        }
        out.push(io);
        expired
    }
}
