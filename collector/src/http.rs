//! HTTP: request duration, body sizes and in-flight requests of every HTTP/1.x server and client
//! on the host, from the socket-level parser in collector-ebpf/src/http.rs. The kernel
//! aggregates histograms per (cgroup, process, method, status, port[, peer]); this poller turns
//! process and cgroup into `service_name`, `service_namespace` and the workload's identity
//! labels ([`crate::identity`]) and exports OpenTelemetry-style metrics.
use std::{
    borrow::Cow,
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use anyhow::Context as _;
use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuHashMap};
use collector_common::capture::stash::{Block, BlockKey};
use collector_common::http::{
    ActiveKey, BOUND_CAP, HttpHist, HttpKey, MAX_DURATION_BOUNDS, OVERFLOW_METHOD, SCHEME_HTTP, SCHEME_MASK,
    SCHEME_NAMES, SIDE_CLIENT, SIDE_SERVER, SIZE_BOUNDS, SIZE_BUCKETS, VERSION_2, VERSION_NAMES, VERSION_SHIFT, method,
};
use collector_common::names::{global, map, program};
use collector_common::process::{MAX_PROCESSES, NO_FIELD, RenameOffsets};

use crate::{
    bpf::{self, Globals, Loader, sum_per_cpu},
    cgroup::{Entry, Expiry, Identity, Resolver},
    identity::{Declared, ProcessKey, Processes, Workload},
    metrics::{Collector, Family, Out},
};

/// The HTTP collector's flags.
#[derive(clap::Args, Debug, Clone)]
pub struct HttpFlags {
    /// Upper bounds (seconds) of the HTTP duration histogram buckets, increasing, at most 32.
    #[arg(long = "collector.http.duration-buckets", default_value = DEFAULT_BUCKETS, value_parser = |s: &str| parse_buckets(s).map(Buckets))]
    pub duration_buckets: Buckets,

    /// Attach the HTTP close hook (a sock_ops program on the cgroup v2 root that settles requests
    /// on sockets closed by a timeout) [default: enabled].
    #[arg(long = "collector.http.close-hook", overrides_with = "no_close_hook")]
    pub close_hook: bool,

    /// Do not attach the HTTP close hook (requests waiting on a socket that a timeout closes then
    /// stay in http_server_active_requests), e.g. where another tool's sock_ops program must be
    /// the only one on the cgroup v2 root.
    #[arg(long = "no-collector.http.close-hook", overrides_with = "close_hook")]
    pub no_close_hook: bool,

    /// Capture HTTPS: HTTP/1.x read and written through OpenSSL (libssl.so, or linked into a
    /// binary such as node) or Go's crypto/tls, with uprobes on their read and write functions;
    /// exchanges get url_scheme="https" [default: enabled].
    #[arg(long = "collector.http.tls", overrides_with = "no_tls")]
    pub tls: bool,

    /// Do not capture HTTPS (no uprobes; the collector then also keeps no capability for them).
    #[arg(long = "no-collector.http.tls", overrides_with = "tls")]
    pub no_tls: bool,

    /// Files (TLS libraries, binaries) the HTTPS uprobes are attached to at most. Probes stay
    /// on a file for as long as it exists, so that every process that maps it later is covered
    /// from its first call; past this many, the least recently used file no process maps is
    /// detached (counted in collector_tls_detached_files_total{reason="evicted"}).
    #[arg(long = "collector.http.tls-max-files", default_value_t = crate::tls::DEFAULT_MAX_FILES,
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub tls_max_files: u64,

    /// Label gRPC calls with their method (`rpc_method`, `package.Service/Method`; at most 1000
    /// distinct values, then `_OTHER`) [default: enabled].
    #[arg(long = "collector.http.grpc-method", overrides_with = "no_grpc_method")]
    pub grpc_method: bool,

    /// Leave `rpc_method` empty (one series per service and status code instead of per method).
    #[arg(long = "no-collector.http.grpc-method", overrides_with = "grpc_method")]
    pub no_grpc_method: bool,
}

/// `--collector.http.duration-buckets`, parsed.
#[derive(Debug, Clone)]
pub struct Buckets(pub Vec<f64>);

/// The globals the HTTP programs need: the duration bounds, whether the CPU keeps stores in
/// order, the `task:task_rename` field offsets (process names; none when tracefs is not there),
/// and the benchmark stage when one is asked for.
pub fn globals(flags: &HttpFlags, tracefs: &Result<PathBuf, String>) -> anyhow::Result<Globals> {
    let mut globals = vec![(global::DURATION_BOUNDS_NS, bounds_global(&flags.duration_buckets.0))];
    // x86-64 keeps each CPU's stores in order for the others (total store order): a connection
    // is given back with a plain store (collector-ebpf's `conn::release`).
    if cfg!(target_arch = "x86_64") {
        globals.push((global::HTTP_STORES_ORDERED, vec![1]));
    }
    match tracefs.as_ref().map_err(Clone::clone).and_then(|t| rename_offsets(t)) {
        Ok(off) => globals.push((global::RENAME_OFFSETS, bpf::as_bytes(&off))),
        Err(reason) => tracing::warn!(
            %reason,
            "http: renames of a process's main thread are not followed (service_name keeps the \
             executable's name)"
        ),
    }
    if !flags.no_tls {
        match tracefs.as_ref().map_err(Clone::clone).and_then(|t| crate::tls::recv_offsets(t)) {
            Ok(off) => globals.push((global::RECV_OFFSETS, bpf::as_bytes(&off))),
            Err(reason) => {
                tracing::warn!(%reason, "http: HTTPS is not captured (the TLS capture needs this tracepoint)")
            }
        }
    }
    if let Some(stage) = bench_stage()? {
        tracing::warn!(
            stage,
            "COLLECTOR_BENCH_HTTP_STAGE is set: the HTTP programs return early (a benchmark of their \
             cost per stage) and record no HTTP metrics (at stage 1 no netbpf packet counts either)"
        );
        globals.push((global::HTTP_BENCH_STAGE, stage.to_ne_bytes().to_vec()));
    }
    if std::env::var_os("COLLECTOR_TEST_HTTP_DEFER").is_some_and(|v| v == "1") {
        tracing::warn!(
            "COLLECTOR_TEST_HTTP_DEFER is set: every received HTTP segment goes the way of one that \
             nested on the CPU of the program holding its connection (tests only)"
        );
        globals.push((global::HTTP_TEST_DEFER, 1u32.to_ne_bytes().to_vec()));
    }
    Ok(globals)
}

/// Offsets of `task:task_rename`'s `pid` (absent on some kernels: the renamed task is then the
/// current one) and `newcomm`.
fn rename_offsets(tracefs: &Path) -> Result<RenameOffsets, String> {
    let f = bpf::tracepoint_fields(tracefs, "task", "task_rename", &[("newcomm", 16, 16)])?;
    Ok(RenameOffsets {
        pid: f.get("pid").filter(|p| p.size == 4).map_or(NO_FIELD, |p| p.offset),
        newcomm: f["newcomm"].offset,
    })
}

/// Fills `PROCESS_NAMES` with the processes running now (their main thread's name, from
/// `/proc/<pid>/comm`); the tracepoints follow the processes started and renamed from here on
/// (entries they made meanwhile are kept). Returns how many were named.
fn name_processes(loader: &mut Loader, procfs: &Path) -> anyhow::Result<usize> {
    let mut names: BpfHashMap<_, u32, [u8; 16]> = BpfHashMap::try_from(loader.take_map(map::PROCESS_NAMES)?)?;
    let mut n = 0;
    for entry in std::fs::read_dir(procfs).context("listing processes")?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(comm) = std::fs::read(entry.path().join("comm")) else { continue };
        let raw = crate::identity::comm_key(&comm);
        // BPF_NOEXIST (include/uapi/linux/bpf.h): an entry the tracepoints made stays.
        if names.insert(&pid, &raw, 1).is_ok() {
            n += 1;
        }
        if n >= MAX_PROCESSES as usize {
            break;
        }
    }
    Ok(n)
}

/// Default duration buckets (seconds): 100 µs to 10 s.
pub const DEFAULT_BUCKETS: &str = "0.0001,0.00025,0.0005,0.001,0.0025,0.005,0.01,0.025,0.05,0.1,0.25,0.5,1,2.5,5,10";

/// Parses `--collector.http.duration-buckets`: increasing positive seconds, at most 32.
pub fn parse_buckets(s: &str) -> Result<Vec<f64>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let v: f64 = part.parse().map_err(|_| format!("bucket {part:?} is not a number"))?;
        if !(v.is_finite() && v > 0.0) {
            return Err(format!("bucket {part:?} must be a positive number of seconds"));
        }
        if out.last().is_some_and(|l| *l >= v) {
            return Err(format!("buckets must increase ({part} follows {})", out.last().unwrap()));
        }
        out.push(v);
    }
    if out.is_empty() || out.len() > MAX_DURATION_BOUNDS {
        return Err(format!("between 1 and {MAX_DURATION_BOUNDS} buckets are needed, got {}", out.len()));
    }
    Ok(out)
}

/// The stage at which the HTTP programs return, from `COLLECTOR_BENCH_HTTP_STAGE` (benchmarks
/// only: `cargo xtask bench` breaks the programs' cost down by stage, docs/performance.md):
/// 1 on entry, 2 after the packet count and the IP/TCP headers, 3 after the connection's
/// state is found in socket storage and claimed. Unset (or 0): the whole program.
pub fn bench_stage() -> anyhow::Result<Option<u32>> {
    parse_bench_stage(std::env::var_os("COLLECTOR_BENCH_HTTP_STAGE").as_deref())
}

fn parse_bench_stage(v: Option<&std::ffi::OsStr>) -> anyhow::Result<Option<u32>> {
    let Some(v) = v else { return Ok(None) };
    match v.to_str().and_then(|v| v.parse::<u32>().ok()) {
        Some(0) => Ok(None),
        Some(n @ 1..=3) => Ok(Some(n)),
        _ => anyhow::bail!("COLLECTOR_BENCH_HTTP_STAGE must be 0, 1, 2 or 3, got {v:?}"),
    }
}

/// The `DURATION_BOUNDS_NS` global for the kernel: bounds in ns, unused slots `BOUND_CAP`.
pub fn bounds_global(buckets: &[f64]) -> Vec<u8> {
    let mut ns = [BOUND_CAP; MAX_DURATION_BOUNDS];
    for (slot, b) in ns.iter_mut().zip(buckets) {
        *slot = (b * 1e9).round() as u64;
    }
    ns.iter().flat_map(|v| v.to_ne_bytes()).collect()
}

/// The process name the kernel recorded (NUL-padded), if any.
pub fn comm(raw: &[u8; 16]) -> Option<Cow<'_, str>> {
    let len = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    (len > 0).then(|| String::from_utf8_lossy(&raw[..len]))
}

/// `service_name`: the process name when the programs saw the owning process, else the
/// systemd unit, container id or cgroup path of the socket's cgroup.
pub fn service_name<'a>(comm: Option<Cow<'a, str>>, id: Option<&'a Identity>) -> Cow<'a, str> {
    if let Some(c) = comm {
        return c;
    }
    Cow::Borrowed(match id {
        Some(i) if !i.systemd_unit.is_empty() => &i.systemd_unit,
        Some(i) if !i.container_id.is_empty() => &i.container_id[..12],
        Some(i) => &i.path,
        None => "unknown",
    })
}

/// Who served or made a request: `service_name`, `service_namespace` and the workload's
/// identity labels.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Who {
    service: String,
    namespace: String,
    workload: Option<Arc<Workload>>,
}

impl Who {
    /// What the process declares, else what its container's names give
    /// ([`Workload::service`]), else [`service_name`].
    pub fn of(comm: Option<Cow<'_, str>>, id: Option<&Identity>, declared: Option<&Declared>) -> Self {
        let workload = id.and_then(|i| i.workload.clone());
        let declared_name = declared.map(|d| d.service_name.as_str()).filter(|s| !s.is_empty());
        let service = match declared_name.or_else(|| workload.as_deref().and_then(Workload::service)) {
            Some(s) => s.to_owned(),
            None => service_name(comm, id).into_owned(),
        };
        let namespace = declared
            .map(|d| d.service_namespace.as_str())
            .filter(|s| !s.is_empty())
            .or_else(|| workload.as_deref().and_then(Workload::namespace))
            .unwrap_or_default()
            .to_owned();
        Self { service, namespace, workload }
    }

    pub(crate) fn named(service: &str) -> Self {
        Self { service: service.to_owned(), ..Default::default() }
    }

    /// Appends the label pairs (`service_namespace` and identity labels only with a value).
    pub(crate) fn push<'a>(&'a self, out: &mut Vec<(&'static str, &'a str)>) {
        out.push(("service_name", &self.service));
        if !self.namespace.is_empty() {
            out.push(("service_namespace", &self.namespace));
        }
        if let Some(w) = &self.workload {
            out.extend(w.labels());
        }
    }
}

/// One label set of the HTTP histograms, before formatting (numbers stay numbers until the
/// text is written, once per label set); `None` fields are empty labels (the overflow entry, a
/// server-side address).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels {
    side: u8,
    scheme: u8,
    method: &'static str,
    status: Option<u16>,
    address: Option<IpAddr>,
    port: Option<u16>,
    who: Who,
}

pub struct Http {
    /// Behind locks: expired entries are deleted (needs `&mut`).
    hist: Mutex<PerCpuHashMap<MapData, HttpKey, HttpHist>>,
    /// Per CPU: a request usually starts on one CPU and ends on another; the sum is the gauge.
    active: Mutex<PerCpuHashMap<MapData, ActiveKey, u64>>,
    cgroups: Arc<Resolver>,
    buckets: Vec<f64>,
    expiry: HttpExpiry,
    stash: Mutex<Stash>,
    /// Declared service names (`--identity.environment`), or `None`.
    processes: Option<Processes>,
    /// HTTP/2 and gRPC, aggregated by the daemon from the kernel's frames (`crate::http2`);
    /// `None` when their reader could not start.
    h2: Option<Arc<crate::http2::events::Shared>>,
}

/// The kernel's reorder stash (`HTTP_STASH`): its blocks are deleted by the programs as the
/// framer moves on or the connection ends; a socket that goes away unseen (no FIN, RST or
/// close hook run) leaves its blocks, which this sweep deletes once they are a minute old.
struct Stash {
    map: BpfHashMap<MapData, BlockKey, Block>,
    last_sweep: std::time::Instant,
}

/// Age after which a stash block is taken for a leftover.
const STASH_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(60);

impl Stash {
    fn sweep(&mut self) -> anyhow::Result<()> {
        if self.last_sweep.elapsed() < STASH_MAX_AGE / 2 {
            return Ok(());
        }
        self.last_sweep = std::time::Instant::now();
        // The programs stamp blocks with bpf_ktime_get_ns, CLOCK_MONOTONIC.
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: a valid timespec to write.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        let now = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
        let old: Vec<BlockKey> = self
            .map
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, b)| now.saturating_sub(b.when) > STASH_MAX_AGE.as_nanos() as u64)
            .map(|(k, _)| k)
            .collect();
        for k in old {
            // Deleted meanwhile by the programs: fine.
            let _ = self.map.remove(&k);
        }
        Ok(())
    }
}

impl Http {
    /// Attaches the HTTP programs to the cgroup v2 root and creates the overflow entries.
    pub fn start(
        loader: &mut Loader,
        cgroups: Arc<Resolver>,
        flags: &HttpFlags,
        procfs: &Path,
        ttl: std::time::Duration,
        environment: bool,
        tracefs_ok: bool,
    ) -> Result<Self, String> {
        let (buckets, close_hook) = (flags.duration_buckets.0.clone(), !flags.no_close_hook);
        let root = cgroups.root().ok_or("no cgroup v2 hierarchy")?.to_path_buf();
        // Process names for service_name: followed from exec and renames from here on, and
        // filled with the processes running now once every program using the map is loaded
        // (below). Without them sockets are named after the thread creating them.
        let exec = loader.attach_tracepoint(program::HTTP_PROCESS_EXEC, "sched", "sched_process_exec");
        let rename = loader.attach_tracepoint(program::HTTP_PROCESS_RENAME, "task", "task_rename");
        // Before the packet programs: the process that owns a socket is recorded when the
        // socket is created. Without it, service_name falls back to the socket's cgroup.
        if let Err(e) = loader.attach_cgroup_sock(program::HTTP_SOCK_CREATE, &root) {
            tracing::warn!(
                reason = %e,
                "http: sockets are not named after their process (service_name is the cgroup's unit, \
                 container or path)"
            );
        }
        loader.attach_cgroup_skb_pair(program::HTTP_INGRESS, program::HTTP_EGRESS, &root)?;
        // Optional: settles requests of sockets that close without a FIN or RST passing the hooks.
        if !close_hook {
            tracing::info!(
                "http: close hook off (--no-collector.http.close-hook): requests waiting on sockets that \
                 close without a FIN or RST (timeouts) stay in http_server_active_requests"
            );
        } else if let Err(e) = loader.attach_sock_ops(program::HTTP_SOCK_CLOSE, &root) {
            tracing::warn!(
                reason = %e,
                "http: requests waiting on sockets that close without a FIN or RST (timeouts) stay in \
                 http_server_active_requests"
            );
        }
        if !flags.no_tls && tracefs_ok {
            start_tls(loader, procfs, flags.tls_max_files as usize);
        }
        match exec.and(rename).map_err(anyhow::Error::msg).and_then(|()| name_processes(loader, procfs)) {
            Ok(n) => tracing::debug!(processes = n, "http: process names"),
            Err(e) => tracing::warn!(
                reason = format!("{e:#}"),
                "http: sockets are named after the thread that creates them, not its process"
            ),
        }
        let maps = (|| -> anyhow::Result<_> {
            // Both hooks attached: the programs may start following connections (see
            // HTTP_ARMED in collector-ebpf/src/http.rs).
            let mut armed: Array<_, u32> = Array::try_from(loader.take_map(map::HTTP_ARMED)?)?;
            armed.set(0, &1, 0).context("arming the HTTP programs")?;
            let mut hist: PerCpuHashMap<_, HttpKey, HttpHist> =
                PerCpuHashMap::try_from(loader.take_map(map::HTTP_HIST)?)?;
            let cpus = aya::util::nr_cpus().map_err(|(_, e)| e).context("counting the possible CPUs")?;
            for side in [SIDE_SERVER, SIDE_CLIENT] {
                let key = HttpKey { method: OVERFLOW_METHOD, side, ..HttpKey::default() };
                let zeros = aya::maps::PerCpuValues::try_from(vec![HttpHist::ZERO; cpus.get() as usize])?;
                hist.insert(&key, zeros, 0).context("creating the HTTP overflow entry")?;
            }
            let stash = BpfHashMap::try_from(loader.take_map(map::HTTP_STASH)?)?;
            Ok((hist, PerCpuHashMap::try_from(loader.take_map(map::HTTP_ACTIVE)?)?, stash))
        })();
        let (hist, active, stash) = maps.map_err(|e| format!("{e:#}"))?;
        let bounds: Vec<u64> = buckets.iter().map(|b| (b * 1e9).round() as u64).collect();
        let h2 = loader.take_map(map::HTTP2_EVENTS).and_then(|m| {
            let records = crate::http2::records::Records::new(bounds, !flags.no_grpc_method);
            crate::http2::events::start(m, records, Expiry::new(ttl))
        });
        let h2 = match h2 {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(reason = format!("{e:#}"), "http: HTTP/2 and gRPC are not captured");
                None
            }
        };
        Ok(Self {
            hist: Mutex::new(hist),
            active: Mutex::new(active),
            cgroups,
            buckets,
            expiry: (Expiry::new(ttl), Expiry::gauge(ttl)),
            stash: Mutex::new(Stash { map: stash, last_sweep: std::time::Instant::now() }),
            processes: environment.then(|| Processes::new(procfs)),
            h2,
        })
    }
}

/// Starts the TLS capture (tls.rs), whose probes are attached once the process has dropped its
/// privileges (`app.rs`, [`crate::tls::Capture::begin`]); a failure leaves cleartext capture
/// running.
fn start_tls(loader: &mut Loader, procfs: &Path, max_files: usize) {
    match crate::tls::Capture::start(loader, procfs, max_files) {
        Ok(capture) => {
            let _ = crate::tls::CAPTURE.set(Arc::new(Mutex::new(capture)));
        }
        Err(reason) => tracing::warn!(%reason, "http: HTTPS is not captured"),
    }
}

fn add(into: &mut HttpHist, h: &HttpHist) {
    for (a, b) in into.duration.iter_mut().zip(h.duration.iter()) {
        *a += b;
    }
    for (a, b) in into.req_size.iter_mut().zip(h.req_size.iter()) {
        *a += b;
    }
    for (a, b) in into.resp_size.iter_mut().zip(h.resp_size.iter()) {
        *a += b;
    }
    into.duration_sum_ns += h.duration_sum_ns;
    into.req_size_sum += h.req_size_sum;
    into.resp_size_sum += h.resp_size_sum;
}

/// The server's address of a client-side key (IPv4-mapped IPv6 as IPv4).
pub fn peer_address(k: &HttpKey) -> Option<IpAddr> {
    match k.family {
        4 => Some(Ipv4Addr::new(k.addr[0], k.addr[1], k.addr[2], k.addr[3]).into()),
        6 => {
            let v6 = Ipv6Addr::from(k.addr);
            Some(v6.to_ipv4_mapped().map_or(v6.into(), IpAddr::from))
        }
        _ => None,
    }
}

impl Collector for Http {
    fn name(&self) -> &'static str {
        "http"
    }

    fn collect(&self, out: &mut Out) -> anyhow::Result<()> {
        let mut hist = self.hist.lock().unwrap();
        let mut active_map = self.active.lock().unwrap();
        let mut entries = Vec::new();
        for e in hist.iter() {
            let (k, per_cpu) = e.context("reading the HTTP_HIST map")?;
            // A slot per CPU (see collector-ebpf/src/capture/record.rs).
            let mut h = HttpHist::ZERO;
            sum_per_cpu(&per_cpu, |x| add(&mut h, x));
            entries.push((k, h));
        }
        let mut active_entries = Vec::new();
        for e in active_map.iter() {
            let (k, v) = e.context("reading the HTTP_ACTIVE map")?;
            // Two's complement adds: +1 on the CPU a request started on, -1 where it ended.
            let mut n = 0u64;
            sum_per_cpu(&v, |x| n = n.wrapping_add(*x));
            active_entries.push((k, n as i64));
        }
        // HTTP/2 exchanges, aggregated here (their keys carry version 2, never the kernel's;
        // their overflow series too).
        let h2 = self.h2.as_ref().map(|s| {
            let r = s.records.lock().unwrap();
            entries.extend(r.http.iter().map(|(k, h)| (*k, *h)));
            r.rpc.iter().map(|(k, h)| (k.clone(), *h)).collect::<Vec<_>>()
        });
        let declared = match &self.processes {
            Some(p) => {
                let keys: HashSet<ProcessKey> = entries
                    .iter()
                    .map(|(k, _)| (k.cgroup_id, k.comm))
                    .chain(h2.iter().flatten().map(|(k, _)| (k.cgroup_id, k.comm)))
                    .collect();
                p.declared(&keys, |path| self.cgroups.id_of_path(path))
            }
            None => HashMap::new(),
        };
        let (expired_hist, expired_active) =
            Self::families(&entries, &active_entries, &self.cgroups, &declared, &self.buckets, &self.expiry, out);
        for k in expired_hist {
            if k.scheme >> VERSION_SHIFT == VERSION_2 {
                if let Some(s) = &self.h2 {
                    s.records.lock().unwrap().http.remove(&k);
                }
                continue;
            }
            hist.remove(&k).context("deleting an expired HTTP_HIST entry")?;
        }
        if let (Some(s), Some(rpc)) = (&self.h2, h2) {
            let expired = crate::http2::families::rpc(&rpc, &self.cgroups, &declared, &self.buckets, &s.expiry, out);
            let mut r = s.records.lock().unwrap();
            for k in expired {
                r.rpc.remove(&k);
            }
            drop(r);
            crate::http2::families::stats(s, out);
        }
        for k in expired_active {
            active_map.remove(&k).context("deleting an expired HTTP_ACTIVE entry")?;
        }
        self.stash.lock().unwrap().sweep().context("sweeping the HTTP_STASH map")
    }
}

/// Expiry state of the HTTP histograms and of the in-flight gauge.
pub type HttpExpiry = (Expiry<HttpKey, Labels, HttpHist>, Expiry<ActiveKey, (u16, u8, Who), i64>);

impl Http {
    /// Map contents → metric families: the histograms of `HTTP_HIST` summed per label set, and
    /// the in-flight gauge from `HTTP_ACTIVE`, with the names processes declare (`declared`).
    /// Returns the entries of both maps that expired, which the caller deletes. Separate from
    /// reading the maps so benchmarks can feed it synthetic entries.
    pub fn families(
        entries: &[(HttpKey, HttpHist)],
        active_entries: &[(ActiveKey, i64)],
        cgroups: &Resolver,
        declared: &HashMap<ProcessKey, Declared>,
        buckets: &[f64],
        (hist_expiry, active_expiry): &HttpExpiry,
        out: &mut Out,
    ) -> (Vec<HttpKey>, Vec<ActiveKey>) {
        let ids = cgroups.resolve(entries.iter().map(|(k, _)| k.cgroup_id).collect::<Vec<_>>());
        let mut series = Vec::new();
        let mut gone = cgroups.gone_check(hist_expiry.expires());
        for (k, h) in entries {
            let labels = if k.method == OVERFLOW_METHOD {
                if h.duration.iter().all(|c| *c == 0) {
                    continue;
                }
                Labels {
                    side: k.side,
                    // The kernel's (no version) or HTTP/2's (version 2).
                    scheme: SCHEME_HTTP | (k.scheme & !0x0f),
                    method: "_OTHER",
                    status: None,
                    address: None,
                    port: None,
                    who: Who::named("_overflow"),
                }
            } else {
                Labels {
                    side: k.side,
                    scheme: k.scheme,
                    method: method::NAMES.get(k.method as usize).copied().unwrap_or("_OTHER"),
                    status: Some(k.status),
                    address: if k.side == SIDE_CLIENT { peer_address(k) } else { None },
                    port: Some(k.port),
                    who: Who::of(comm(&k.comm), ids[&k.cgroup_id].as_ref(), declared.get(&(k.cgroup_id, k.comm))),
                }
            };
            series.push(Entry {
                key: *k,
                labels,
                gone: k.method != OVERFLOW_METHOD && gone.is(k.cgroup_id),
                fingerprint: h.duration.iter().sum(),
                value: *h,
            });
        }
        let (sums, expired) = hist_expiry.aggregate(series, HttpHist::ZERO, add);
        let expired_hist = expired;
        let mut sums: Vec<(&Labels, &HttpHist)> = sums.iter().collect();
        sums.sort_unstable_by(|a, b| a.0.cmp(b.0));

        let dur_upper = |i: usize| buckets.get(i).copied();
        let size_upper = |i: usize| SIZE_BOUNDS.get(i).map(|b| *b as f64);
        for (side, prefix, what) in [(SIDE_SERVER, "http_server", "served"), (SIDE_CLIENT, "http_client", "made")] {
            let mut dur = Family::histogram(
                &format!("{prefix}_request_duration_seconds"),
                &format!(
                    "Duration of HTTP/1.x requests {what} by processes on this host, measured on their \
                     sockets from the first request byte to the last response byte."
                ),
            );
            let mut req = Family::histogram(
                &format!("{prefix}_request_body_size_bytes"),
                &format!("Size of the bodies of HTTP/1.x requests {what} (after chunked decoding framing)."),
            );
            let mut resp = Family::histogram(
                &format!("{prefix}_response_body_size_bytes"),
                &format!("Size of the bodies of HTTP/1.x responses to requests {what}."),
            );
            let (mut status, mut port) = (itoa::Buffer::new(), itoa::Buffer::new());
            for (l, h) in sums.iter().filter(|(l, _)| l.side == side) {
                let address = l.address.map(|a| a.to_string()).unwrap_or_default();
                let mut labels: Vec<(&str, &str)> = vec![
                    ("http_request_method", l.method),
                    ("http_response_status_code", l.status.map_or("", |s| status.format(s))),
                ];
                if side == SIDE_CLIENT {
                    labels.push(("server_address", &address));
                }
                labels.push(("server_port", l.port.map_or("", |p| port.format(p))));
                labels.push(("url_scheme", SCHEME_NAMES.get((l.scheme & SCHEME_MASK) as usize).copied().unwrap_or("")));
                labels.push((
                    "network_protocol_version",
                    VERSION_NAMES.get((l.scheme >> VERSION_SHIFT) as usize).copied().unwrap_or(""),
                ));
                l.who.push(&mut labels);
                dur.add_histogram(&labels, &h.duration[..=buckets.len()], dur_upper, h.duration_sum_ns as f64 / 1e9);
                req.add_histogram(&labels, &h.req_size[..SIZE_BUCKETS], size_upper, h.req_size_sum as f64);
                resp.add_histogram(&labels, &h.resp_size[..SIZE_BUCKETS], size_upper, h.resp_size_sum as f64);
            }
            out.push(dur);
            out.push(req);
            out.push(resp);
        }

        let ids = cgroups.resolve(active_entries.iter().map(|(k, _)| k.cgroup_id).collect::<Vec<_>>());
        // The process serving a port, from the histogram keys (the gauge is keyed by cgroup).
        let mut port_comm: HashMap<(u64, u16), &[u8; 16]> = HashMap::new();
        for (k, _) in entries.iter().filter(|(k, _)| k.side == SIDE_SERVER && k.method != OVERFLOW_METHOD) {
            if comm(&k.comm).is_some() {
                port_comm.insert((k.cgroup_id, k.port), &k.comm);
            }
        }
        let mut gone = cgroups.gone_check(active_expiry.expires());
        let series = active_entries
            .iter()
            .map(|(k, v)| Entry {
                key: *k,
                labels: (k.port, k.scheme, {
                    let c = port_comm.get(&(k.cgroup_id, k.port));
                    Who::of(
                        c.and_then(|c| comm(c)),
                        ids[&k.cgroup_id].as_ref(),
                        c.and_then(|c| declared.get(&(k.cgroup_id, **c))),
                    )
                }),
                gone: gone.is(k.cgroup_id),
                fingerprint: *v as u64,
                value: *v,
            })
            .collect();
        let (active, expired) = active_expiry.aggregate(series, 0, |s, v| *s += v);
        let mut gauge = Family::gauge(
            "http_server_active_requests",
            "HTTP/1.x requests received and not yet answered in full, per server port and service.",
        );
        let mut keys: Vec<_> = active.keys().collect();
        keys.sort();
        let mut port = itoa::Buffer::new();
        for k in keys {
            let mut labels = vec![
                ("server_port", port.format(k.0)),
                ("url_scheme", SCHEME_NAMES.get(k.1 as usize).copied().unwrap_or("")),
            ];
            k.2.push(&mut labels);
            gauge.add(&labels, active[k].max(0) as f64);
        }
        out.push(gauge);
        (expired_hist, expired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_stage_variable() {
        let parse = |v: Option<&str>| parse_bench_stage(v.map(std::ffi::OsStr::new));
        assert_eq!(parse(None).unwrap(), None);
        assert_eq!(parse(Some("0")).unwrap(), None);
        assert_eq!(parse(Some("1")).unwrap(), Some(1));
        assert_eq!(parse(Some("3")).unwrap(), Some(3));
        assert!(parse(Some("4")).is_err());
        assert!(parse(Some("")).is_err());
        assert!(parse(Some("full")).is_err());
    }

    #[test]
    fn bucket_flag() {
        assert_eq!(parse_buckets(DEFAULT_BUCKETS).unwrap().len(), 16);
        assert_eq!(parse_buckets("0.001, 0.01").unwrap(), vec![0.001, 0.01]);
        assert!(parse_buckets("").is_err());
        assert!(parse_buckets("0.1,0.01").is_err());
        assert!(parse_buckets("0,1").is_err());
        assert!(parse_buckets("x").is_err());
        assert!(
            parse_buckets(
                &vec!["1"; 33].iter().enumerate().map(|(i, _)| (i + 1).to_string()).collect::<Vec<_>>().join(",")
            )
            .is_err()
        );
        let g = bounds_global(&[0.001, 2.5]);
        assert_eq!(g.len(), 8 * MAX_DURATION_BOUNDS);
        assert_eq!(u64::from_ne_bytes(g[..8].try_into().unwrap()), 1_000_000);
        assert_eq!(u64::from_ne_bytes(g[8..16].try_into().unwrap()), 2_500_000_000);
        assert_eq!(u64::from_ne_bytes(g[16..24].try_into().unwrap()), BOUND_CAP);
    }

    #[test]
    fn services_and_addresses() {
        let id = Identity {
            path: "/system.slice/x.service".into(),
            container_id: String::new(),
            systemd_unit: "x.service".into(),
            ..Default::default()
        };
        assert_eq!(service_name(Some("nginx".into()), Some(&id)), "nginx");
        assert_eq!(service_name(None, Some(&id)), "x.service");
        assert_eq!(service_name(None, None), "unknown");
        // A declared name wins over the container's, which wins over the process name.
        let pod = Identity {
            workload: Some(Arc::new(Workload {
                k8s_namespace: "shop".into(),
                k8s_pod: "checkout-7d4b9c8f6d-x2k9p".into(),
                k8s_container: "app".into(),
                k8s_owner: "checkout".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let who = Who::of(Some("java".into()), Some(&pod), None);
        assert_eq!((who.service.as_str(), who.namespace.as_str()), ("checkout", "shop"));
        let declared = Declared { service_name: "cart".into(), service_namespace: String::new() };
        let who = Who::of(Some("java".into()), Some(&pod), Some(&declared));
        assert_eq!((who.service.as_str(), who.namespace.as_str()), ("cart", "shop"));
        let mut labels = Vec::new();
        who.push(&mut labels);
        assert_eq!(
            labels,
            [
                ("service_name", "cart"),
                ("service_namespace", "shop"),
                ("k8s_namespace_name", "shop"),
                ("k8s_pod_name", "checkout-7d4b9c8f6d-x2k9p"),
                ("k8s_container_name", "app"),
                ("k8s_owner_name", "checkout")
            ]
        );
        let who = Who::of(Some("nginx".into()), Some(&id), None);
        assert_eq!((who.service.as_str(), who.namespace.as_str(), who.workload.is_none()), ("nginx", "", true));
        let mut raw = [0u8; 16];
        raw[..5].copy_from_slice(b"nginx");
        assert_eq!(comm(&raw).as_deref(), Some("nginx"));
        assert_eq!(comm(&[0; 16]), None);
        assert_eq!(comm(b"0123456789abcdef").as_deref(), Some("0123456789abcdef"));
        let mut k = HttpKey { family: 4, ..HttpKey::default() };
        k.addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(peer_address(&k), Some(Ipv4Addr::LOCALHOST.into()));
        k.family = 6;
        k.addr = Ipv6Addr::LOCALHOST.octets();
        assert_eq!(peer_address(&k), Some(Ipv6Addr::LOCALHOST.into()));
        k.addr = Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped().octets();
        assert_eq!(peer_address(&k).unwrap().to_string(), "10.1.2.3");
        k.family = 0;
        assert_eq!(peer_address(&k), None);
    }
}
