//! Micro-benchmarks of what one scrape does in userspace, on synthetic map contents:
//!
//! - `families/*`: map entries (already read and summed over CPUs) → metric families, through
//!   the same functions the pollers call (`Http::families`, `NetBpf::families`,
//!   `DiskBpf::families`), with cgroup ids resolved against a directory tree laid out like a
//!   cgroup hierarchy (one directory per cgroup).
//! - `encode/*`: the Prometheus text exposition of N series (HTTP histograms), and that text
//!   gzip-compressed at levels 1, 2 and 6.
//! - `scrape/*`: HTTP_HIST entries making N series through the registry (families, self
//!   metrics, exposition), plain and gzipped at the endpoint's level: a scrape without the map
//!   reads.
//! - `host/gather_encode`: the procfs collectors (cpu, meminfo, loadavg, pressure, diskstats,
//!   netdev) reading this machine's /proc, gathered and encoded by the registry.
//!
//! Reading the BPF maps themselves (syscalls) is not here: `cargo xtask bench` measures whole
//! scrapes of the running collector.
use std::{hint::black_box, io::Write as _, path::Path, sync::Arc, time::Duration};

use collector::{
    cgroup::{Expiry, Resolver},
    disk::{Devices, DiskBpf, DiskExpiry},
    host, http,
    http::{Http, HttpExpiry},
    metrics::{Collector, Family, Out, Registry},
    network::{NetBpf, NetExpiry, Netdev},
};
use collector_common::{
    disk::{CgroupIoKey, DevOp, LATENCY_BUCKETS},
    http::{ActiveKey, HttpHist, HttpKey, SIDE_CLIENT, SIDE_SERVER},
    network::NetCounters,
};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// A directory tree with `n` leaf "cgroups" (`/bench.slice/cg<i>.service`) and the resolver
/// over it; returns the inode numbers (what the kernel programs record as cgroup ids).
struct Cgroups {
    _dir: tempfile::TempDir,
    resolver: Resolver,
    ids: Vec<u64>,
}

fn cgroups(n: usize) -> Cgroups {
    use std::os::unix::fs::MetadataExt as _;
    let dir = tempfile::Builder::new()
        .prefix("collector-bench")
        .tempdir_in(if Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" })
        .expect("temporary directory");
    let slice = dir.path().join("bench.slice");
    std::fs::create_dir(&slice).unwrap();
    let ids = (0..n)
        .map(|i| {
            let p = slice.join(format!("cg{i}.service"));
            std::fs::create_dir(&p).unwrap();
            std::fs::metadata(&p).unwrap().ino()
        })
        .collect();
    let resolver = Resolver::new(Some(dir.path().to_path_buf()));
    Cgroups { _dir: dir, resolver, ids }
}

/// `n` HTTP_HIST entries, each with its own label set: half server side, half client side,
/// spread over methods, status codes, ports, 100 cgroups and 8 process names.
fn http_entries(n: usize, cg: &Cgroups) -> Vec<(HttpKey, HttpHist)> {
    (0..n)
        .map(|i| {
            let j = i / 2;
            let mut k = HttpKey {
                cgroup_id: cg.ids[j % cg.ids.len()],
                status: 200 + (j / 9 % 400) as u16,
                port: 8000 + (j / 3600) as u16,
                method: 1 + (j % 9) as u8,
                side: if i % 2 == 0 { SIDE_SERVER } else { SIDE_CLIENT },
                ..HttpKey::default()
            };
            k.comm[..4].copy_from_slice(b"svc0");
            k.comm[3] = b'0' + (j % 8) as u8;
            if k.side == SIDE_CLIENT {
                k.family = 4;
                k.addr[..4].copy_from_slice(&[10, 0, (j >> 8) as u8, j as u8]);
            }
            let mut h = HttpHist::ZERO;
            for (b, c) in h.duration.iter_mut().enumerate().take(17) {
                *c = (i as u64 + b as u64) % 7;
            }
            h.req_size[1] = 3;
            h.resp_size[4] = 3;
            h.duration_sum_ns = 123_456_789;
            (k, h)
        })
        .collect()
}

/// The default `--collector.cgroup.ttl`: each scrape checks that every cgroup still exists
/// (one `stat` per distinct cgroup), as the pollers do in production.
const TTL: Duration = Duration::from_secs(300);

/// Expiry state as the pollers start with it.
fn http_expiry() -> HttpExpiry {
    (Expiry::new(TTL), Expiry::gauge(TTL))
}

fn families_http(c: &mut Criterion) {
    let cg = cgroups(100);
    let buckets = http::parse_buckets(http::DEFAULT_BUCKETS).unwrap();
    let active: Vec<(ActiveKey, i64)> =
        (0..20).map(|i| (ActiveKey { cgroup_id: cg.ids[i], port: 8000, ..ActiveKey::default() }, 1)).collect();
    let mut g = c.benchmark_group("families/http");
    g.sample_size(10);
    // HTTP_HIST holds at most 8192 entries (plus overflow): 1k and a full map. Each entry is one
    // label set of three histograms (51 series with the default buckets).
    for n in [1000, 8192] {
        let entries = http_entries(n, &cg);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &entries, |b, e| {
            b.iter(|| {
                let mut out = Out::default();
                Http::families(e, &active, &cg.resolver, &Default::default(), &buckets, &http_expiry(), &mut out);
                black_box(out.families)
            })
        });
    }
    g.finish();
}

fn families_net(c: &mut Criterion) {
    let mut g = c.benchmark_group("families/netbpf");
    g.sample_size(10);
    for n in [1000, 10_000, 100_000] {
        let cg = cgroups(n);
        let entries: Vec<(u64, NetCounters)> = cg
            .ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let v = i as u64;
                (*id, NetCounters { rx_bytes: v * 1000, rx_packets: v, tx_bytes: v * 900, tx_packets: v })
            })
            .collect();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &entries, |b, e| {
            b.iter(|| {
                let mut out = Out::default();
                NetBpf::families(e, &cg.resolver, &NetExpiry::new(TTL), &mut out);
                black_box(out.families)
            })
        });
    }
    g.finish();
}

/// dev_t of a block device sysfs knows, in the kernel's encoding (major << 20 | minor).
fn some_block_device() -> u32 {
    std::fs::read_dir("/sys/dev/block")
        .ok()
        .and_then(|mut d| d.next())
        .and_then(|e| e.ok())
        .and_then(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let (ma, mi) = name.split_once(':')?;
            Some((ma.parse::<u32>().ok()? << 20) | mi.parse::<u32>().ok()?)
        })
        .unwrap_or(8 << 20)
}

fn families_disk(c: &mut Criterion) {
    let devices = Devices::new(Path::new("/sys"));
    let dev = some_block_device();
    let latency: Vec<(DevOp, [u64; LATENCY_BUCKETS], u64)> =
        (0..2).map(|op| (DevOp { dev, op }, [3; LATENCY_BUCKETS], 1_000_000)).collect();
    let mut g = c.benchmark_group("families/diskbpf");
    g.sample_size(10);
    // CGROUP_IO entries: n/2 cgroups, each reading and writing one device.
    for n in [1000, 10_000, 100_000] {
        let cg = cgroups(n / 2);
        let entries: Vec<(CgroupIoKey, u64)> = (0..n)
            .map(|i| (CgroupIoKey { cgroup_id: cg.ids[i / 2], dev, op: (i % 2) as u32 }, 4096 * i as u64))
            .collect();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &entries, |b, e| {
            b.iter(|| {
                let mut out = Out::default();
                DiskBpf::families(&latency, e, &devices, &cg.resolver, &DiskExpiry::new(TTL), &mut out);
                black_box(out.families)
            })
        });
    }
    g.finish();
}

/// The gzip level the endpoint uses (`server.rs`, tower-http's `CompressionLayer` quality).
const ENDPOINT_GZIP_LEVEL: u32 = 2;

/// Families holding about `series` series: HTTP histograms (51 series per label set).
fn http_families(series: usize, cg: &Cgroups) -> (Vec<Family>, usize) {
    let buckets = http::parse_buckets(http::DEFAULT_BUCKETS).unwrap();
    let entries = http_entries(series.div_ceil(51), cg);
    let mut out = Out::default();
    Http::families(&entries, &[], &cg.resolver, &Default::default(), &buckets, &http_expiry(), &mut out);
    let text = write(&out.families);
    let n = text.split(|b| *b == b'\n').filter(|l| !l.is_empty() && l[0] != b'#').count();
    (out.families, n)
}

fn write(families: &[Family]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(families.iter().map(Family::size_hint).sum());
    for f in families {
        f.write(&mut buf);
    }
    buf
}

fn gzip(text: &[u8], level: u32) -> Vec<u8> {
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
    z.write_all(text).unwrap();
    z.finish().unwrap()
}

fn encode(c: &mut Criterion) {
    let cg = cgroups(100);
    let mut g = c.benchmark_group("encode");
    g.sample_size(10);
    for series in [1000, 10_000, 100_000] {
        let (families, n) = http_families(series, &cg);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("text", series), &families, |b, f| b.iter(|| black_box(write(f))));
        let text = write(&families);
        // gzip of the same text at flate2's default level (6) and at 1 and 2, the fast levels.
        for level in [1, 2, 6] {
            g.bench_with_input(BenchmarkId::new(format!("gzip-level{level}"), series), &text, |b, t| {
                b.iter(|| black_box(gzip(t, level)))
            });
        }
    }
    g.finish();
}

/// A collector returning fixed HTTP_HIST contents through `Http::families`, as the `http`
/// collector does with what it read from the map.
struct SyntheticHttp {
    cg: Cgroups,
    entries: Vec<(HttpKey, HttpHist)>,
    buckets: Vec<f64>,
}

impl Collector for SyntheticHttp {
    fn name(&self) -> &'static str {
        "http"
    }

    fn collect(&self, out: &mut Out) -> anyhow::Result<()> {
        Http::families(&self.entries, &[], &self.cg.resolver, &Default::default(), &self.buckets, &http_expiry(), out);
        Ok(())
    }
}

/// What a scrape does after reading the maps: HTTP_HIST entries making about N series →
/// families → the registry's exposition (self and process metrics included), and that text
/// gzipped at the endpoint's level.
fn scrape(c: &mut Criterion) {
    let mut g = c.benchmark_group("scrape");
    g.sample_size(10);
    for series in [1000usize, 10_000, 100_000] {
        let cg = cgroups(100);
        let entries = http_entries(series.div_ceil(51), &cg);
        let buckets = http::parse_buckets(http::DEFAULT_BUCKETS).unwrap();
        let mut registry = Registry::new();
        registry.collectors.push(Box::new(SyntheticHttp { cg, entries, buckets }));
        let text = registry.encode().unwrap();
        let n = text.split(|b| *b == b'\n').filter(|l| !l.is_empty() && l[0] != b'#').count();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::new("text", series), |b| b.iter(|| black_box(registry.encode().unwrap())));
        g.bench_function(BenchmarkId::new("gzip", series), |b| {
            b.iter(|| black_box(gzip(&registry.encode().unwrap(), ENDPOINT_GZIP_LEVEL)))
        });
    }
    g.finish();
}

fn host_scrape(c: &mut Criterion) {
    let procfs = Path::new("/proc");
    let mut registry = Registry::new();
    registry.collectors.push(Box::new(host::Cpu::new(procfs)));
    registry.collectors.push(Box::new(host::Memory::new(procfs)));
    registry.collectors.push(Box::new(host::Load::new(procfs)));
    if let Ok(p) = host::Pressure::new(procfs) {
        registry.collectors.push(Box::new(p));
    }
    let devices = Arc::new(Devices::new(Path::new("/sys")));
    registry.collectors.push(Box::new(collector::disk::Diskstats::new(
        procfs,
        devices,
        &collector::disk::DiskstatsFlags { include_partitions: false, device_exclude: collector::disk::Exclude(None) },
    )));
    registry.collectors.push(Box::new(Netdev::new(procfs)));
    let mut g = c.benchmark_group("host");
    g.bench_function("gather_encode", |b| b.iter(|| black_box(registry.encode().unwrap())));
    g.finish();
}

criterion_group! {
    name = benches;
    // Short runs: the whole suite must fit in `cargo xtask bench`'s time budget.
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = families_http, families_net, families_disk, encode, scrape, host_scrape
}
criterion_main!(benches);
