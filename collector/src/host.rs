//! Host: CPU, memory, load and pressure (PSI), file handles, connection tracking and the clock,
//! read from procfs (and `adjtimex(2)`) on every scrape.
use std::{
    path::PathBuf,
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use procfs::{FromRead as _, FromReadSI as _};

use crate::metrics::{Collector, Family, Out};

/// `/proc/stat`: per-CPU time by mode, and the busy ratio over the last interval.
pub struct Cpu {
    stat: PathBuf,
    system_info: procfs::ExplicitSystemInfo,
    /// The sample the ratio is measured from, and the last ratio.
    last: Mutex<(Option<Sample>, f64)>,
}

/// When a CPU sample was taken, and its (busy, total) ticks.
type Sample = (Instant, (u64, u64));

/// The busy ratio is recomputed only when at least this much time has passed since the sample
/// it is measured from, so that close scrapes do not report noise from a tiny window.
const MIN_RATIO_WINDOW: Duration = Duration::from_secs(1);

impl Cpu {
    /// Takes a first sample so the first scrape already has an interval to measure; if
    /// /proc/stat cannot be read now, the collector reports failure on scrapes instead.
    pub fn new(procfs_root: &std::path::Path) -> Self {
        let cpu = Self {
            stat: procfs_root.join("stat"),
            system_info: procfs::ExplicitSystemInfo {
                boot_time_secs: 0,
                ticks_per_second: procfs::ticks_per_second(),
                page_size: procfs::page_size(),
                is_little_endian: cfg!(target_endian = "little"),
            },
            last: Mutex::new((None, 0.0)),
        };
        if let Ok(stats) = cpu.read() {
            cpu.last.lock().unwrap().0 = Some((Instant::now(), busy_total(&stats.total)));
        }
        cpu
    }

    fn read(&self) -> anyhow::Result<procfs::KernelStats> {
        procfs::KernelStats::from_file(&self.stat, &self.system_info)
            .with_context(|| format!("reading {}", self.stat.display()))
    }
}

/// Busy and total ticks of a CPU time sample. Idle time is `idle + iowait`.
pub fn busy_total(t: &procfs::CpuTime) -> (u64, u64) {
    let idle = t.idle + t.iowait.unwrap_or(0);
    let busy = t.user + t.nice + t.system + t.irq.unwrap_or(0) + t.softirq.unwrap_or(0) + t.steal.unwrap_or(0);
    (busy, busy + idle)
}

/// Fraction of CPU time spent busy between two samples, in 0..=1.
pub fn busy_ratio((b0, t0): (u64, u64), (b1, t1): (u64, u64)) -> f64 {
    let dt = t1.saturating_sub(t0);
    if dt == 0 {
        return 0.0;
    }
    (b1.saturating_sub(b0) as f64 / dt as f64).clamp(0.0, 1.0)
}

impl Collector for Cpu {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn collect(&self, out: &mut Out) -> anyhow::Result<()> {
        let stats = self.read()?;
        let tps = self.system_info.ticks_per_second as f64;
        let mut time = Family::counter(
            "system_cpu_time_seconds_total",
            "Seconds each CPU spent in each mode (from /proc/stat; guest time is included in user).",
        );
        for (i, t) in stats.cpu_time.iter().enumerate() {
            let cpu = i.to_string();
            let modes = [
                ("user", Some(t.user)),
                ("nice", Some(t.nice)),
                ("system", Some(t.system)),
                ("idle", Some(t.idle)),
                ("iowait", t.iowait),
                ("irq", t.irq),
                ("softirq", t.softirq),
                ("steal", t.steal),
            ];
            for (mode, ticks) in modes {
                if let Some(ticks) = ticks {
                    time.add(&[("cpu", &cpu), ("mode", mode)], ticks as f64 / tps);
                }
            }
        }
        out.push(time);

        let ratio = {
            let mut last = self.last.lock().unwrap();
            let now = Instant::now();
            let sample = busy_total(&stats.total);
            match last.0 {
                Some((at, _)) if now.duration_since(at) < MIN_RATIO_WINDOW => last.1,
                Some((_, prev)) => {
                    let r = busy_ratio(prev, sample);
                    *last = (Some((now, sample)), r);
                    r
                }
                None => {
                    last.0 = Some((now, sample));
                    last.1
                }
            }
        };
        let mut usage = Family::gauge(
            "system_cpu_usage_ratio",
            "Fraction of CPU time (all CPUs) spent busy since the previous sample (0..1); \
             samples are taken on scrapes at least 1s apart.",
        );
        usage.add(&[], ratio);
        out.push(usage);

        let mut count = Family::gauge("system_cpus", "Number of logical CPUs listed in /proc/stat.");
        count.add(&[], stats.cpu_time.len() as f64);
        out.push(count);
        Ok(())
    }
}

/// `/proc/meminfo`.
pub struct Memory {
    path: PathBuf,
}

impl Memory {
    pub fn new(procfs_root: &std::path::Path) -> Self {
        Self { path: procfs_root.join("meminfo") }
    }
}

impl Collector for Memory {
    fn name(&self) -> &'static str {
        "meminfo"
    }

    fn collect(&self, out: &mut Out) -> anyhow::Result<()> {
        let bytes = std::fs::read(&self.path).with_context(|| format!("reading {}", self.path.display()))?;
        let m = parse_meminfo(&bytes).with_context(|| format!("parsing {}", self.path.display()))?;
        let available = m.mem_available.context("MemAvailable missing from meminfo (kernel older than 3.14?)")?;
        let gauges: [(&str, &str, u64); 8] = [
            ("system_memory_total_bytes", "Total usable memory (MemTotal).", m.mem_total),
            (
                "system_memory_used_bytes",
                "Memory in use: MemTotal - MemAvailable (what `free` reports as used).",
                m.mem_total.saturating_sub(available),
            ),
            (
                "system_memory_available_bytes",
                "Memory available for new work without swapping (MemAvailable).",
                available,
            ),
            ("system_memory_free_bytes", "Memory not used for anything (MemFree).", m.mem_free),
            ("system_memory_cached_bytes", "Page cache (Cached).", m.cached),
            ("system_memory_buffers_bytes", "Block device buffers (Buffers).", m.buffers),
            ("system_memory_swap_total_bytes", "Total swap space (SwapTotal).", m.swap_total),
            (
                "system_memory_swap_used_bytes",
                "Swap space in use (SwapTotal - SwapFree).",
                m.swap_total.saturating_sub(m.swap_free),
            ),
        ];
        for (name, help, v) in gauges {
            gauge(out, name, help, v as f64);
        }
        Ok(())
    }
}

/// Parses meminfo. The kernel writes ASCII; anything else is refused before it reaches
/// procfs-core 0.17, whose parser panics on a field name ending in a multi-byte character.
pub fn parse_meminfo(bytes: &[u8]) -> anyhow::Result<procfs::Meminfo> {
    anyhow::ensure!(bytes.is_ascii(), "non-ASCII bytes in meminfo");
    // procfs-core multiplies by the unit unchecked (a panic in debug builds, a wrapped value in
    // release): values are refused above what fits in bytes.
    let text = std::str::from_utf8(bytes)?;
    for line in text.lines() {
        let mut words = line.split_whitespace().skip(1);
        if let Some(v) = words.next().and_then(|v| v.parse::<u64>().ok()) {
            let shift = match words.next().map(|u| u.to_ascii_lowercase()) {
                Some(u) if u.starts_with('k') => 10,
                Some(u) if u.starts_with('m') => 20,
                Some(u) if u.starts_with('g') => 30,
                _ => 0,
            };
            anyhow::ensure!(v <= u64::MAX >> shift, "meminfo value out of range in {line:?}");
        }
    }
    Ok(procfs::Meminfo::from_read(bytes)?)
}

/// `/proc/loadavg`.
pub struct Load {
    path: PathBuf,
}

impl Load {
    pub fn new(procfs_root: &std::path::Path) -> Self {
        Self { path: procfs_root.join("loadavg") }
    }
}

impl Collector for Load {
    fn name(&self) -> &'static str {
        "loadavg"
    }

    fn collect(&self, out: &mut Out) -> anyhow::Result<()> {
        let l =
            procfs::LoadAverage::from_file(&self.path).with_context(|| format!("reading {}", self.path.display()))?;
        let mut f = Family::gauge(
            "system_load_average",
            "Load average: runnable and uninterruptible tasks, averaged over the period.",
        );
        f.add(&[("period", "1m")], l.one as f64)
            .add(&[("period", "5m")], l.five as f64)
            .add(&[("period", "15m")], l.fifteen as f64);
        out.push(f);
        let mut r = Family::gauge("system_processes_running", "Tasks currently runnable (from /proc/loadavg).");
        r.add(&[], l.cur as f64);
        out.push(r);
        Ok(())
    }
}

/// `/proc/pressure/{cpu,memory,io}` (PSI).
pub struct Pressure {
    dir: PathBuf,
}

impl Pressure {
    /// Fails when the kernel exposes no PSI files (built without CONFIG_PSI, or booted psi=0).
    pub fn new(procfs_root: &std::path::Path) -> Result<Self, String> {
        let dir = procfs_root.join("pressure");
        match std::fs::read_to_string(dir.join("cpu")) {
            Ok(_) => Ok(Self { dir }),
            Err(e) => Err(format!(
                "PSI not available ({}: {e}); kernel without CONFIG_PSI or booted with psi=0",
                dir.join("cpu").display()
            )),
        }
    }
}

/// Parses one PSI file into (kind, total stall microseconds) pairs.
pub fn parse_psi(text: &str) -> anyhow::Result<Vec<(&str, u64)>> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut words = line.split_whitespace();
        let kind = words.next().context("empty PSI line")?;
        anyhow::ensure!(kind == "some" || kind == "full", "unexpected PSI line {line:?}");
        let total = words
            .find_map(|w| w.strip_prefix("total="))
            .with_context(|| format!("no total= in PSI line {line:?}"))?
            .parse::<u64>()
            .with_context(|| format!("bad total= in PSI line {line:?}"))?;
        out.push((kind, total));
    }
    anyhow::ensure!(!out.is_empty(), "PSI file is empty");
    Ok(out)
}

impl Collector for Pressure {
    fn name(&self) -> &'static str {
        "pressure"
    }

    fn collect(&self, out: &mut Out) -> anyhow::Result<()> {
        let mut f = Family::counter(
            "system_pressure_stalled_seconds_total",
            "Seconds in which some (or all, kind=full) non-idle tasks were stalled on the resource (PSI).",
        );
        for resource in ["cpu", "memory", "io"] {
            let path = self.dir.join(resource);
            let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            for (kind, total_us) in parse_psi(&text).with_context(|| format!("parsing {}", path.display()))? {
                f.add(&[("resource", resource), ("kind", kind)], total_us as f64 / 1e6);
            }
        }
        out.push(f);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psi_parses_some_and_full() {
        let t = "some avg10=0.28 avg60=0.64 avg300=0.99 total=6026109\nfull avg10=0.13 avg60=0.55 avg300=0.90 total=5459876\n";
        assert_eq!(parse_psi(t).unwrap(), vec![("some", 6026109), ("full", 5459876)]);
        assert!(parse_psi("").is_err());
        assert!(parse_psi("some avg10=1").is_err());
        assert!(parse_psi("garbage total=1").is_err());
        assert!(parse_psi("some total=abc").is_err());
    }

    #[test]
    fn busy_ratio_is_busy_over_total() {
        assert!((busy_ratio((100, 200), (130, 300)) - 0.3).abs() < 1e-9);
        assert_eq!(busy_ratio((100, 200), (100, 200)), 0.0);
        // Counters going backwards (a CPU taken offline) never give a ratio outside 0..1.
        assert!((0.0..=1.0).contains(&busy_ratio((1000, 2000), (130, 300))));
        assert!((0.0..=1.0).contains(&busy_ratio((100, 200), (300, 250))));
    }
}

/// Pushes one label-less gauge.
fn gauge(out: &mut Out, name: &str, help: &str, value: f64) {
    let mut f = Family::gauge(name, help);
    f.add(&[], value);
    out.push(f);
}

/// One unsigned integer of a procfs file (the first word of its first line).
fn read_u64(path: &std::path::Path) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let word = text.split_whitespace().next().with_context(|| format!("{} is empty", path.display()))?;
    word.parse().with_context(|| format!("parsing {}", path.display()))
}

/// `/proc/sys/fs/file-nr`: file handles allocated and the system's maximum.
pub struct FileFd {
    path: PathBuf,
}

impl FileFd {
    pub fn new(procfs_root: &std::path::Path) -> Result<Self, String> {
        let f = Self { path: procfs_root.join("sys/fs/file-nr") };
        f.read().map_err(|e| format!("{e:#}"))?;
        Ok(f)
    }

    /// Allocated and maximum.
    fn read(&self) -> anyhow::Result<(u64, u64)> {
        let text = std::fs::read_to_string(&self.path).with_context(|| format!("reading {}", self.path.display()))?;
        let w: Vec<u64> = text
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .with_context(|| format!("parsing {}", self.path.display()))?;
        anyhow::ensure!(w.len() == 3, "{}: 3 numbers expected, found {}", self.path.display(), w.len());
        Ok((w[0], w[2]))
    }
}

impl Collector for FileFd {
    fn name(&self) -> &'static str {
        "filefd"
    }

    fn collect(&self, out: &mut Out) -> anyhow::Result<()> {
        let (allocated, maximum) = self.read()?;
        gauge(out, "system_filefd_allocated", "File handles allocated on the host (file-nr).", allocated as f64);
        gauge(out, "system_filefd_maximum", "Most file handles the host allocates (fs.file-max).", maximum as f64);
        Ok(())
    }
}

/// `/proc/sys/net/netfilter/nf_conntrack_{count,max}`: connection tracking entries and limit
/// (present once the nf_conntrack module is loaded).
pub struct Conntrack {
    count: PathBuf,
    max: PathBuf,
}

impl Conntrack {
    pub fn new(procfs_root: &std::path::Path) -> Result<Self, String> {
        let dir = procfs_root.join("sys/net/netfilter");
        let c = Self { count: dir.join("nf_conntrack_count"), max: dir.join("nf_conntrack_max") };
        if !c.count.exists() {
            return Err(format!("{} is absent (the nf_conntrack module is not loaded)", c.count.display()));
        }
        read_u64(&c.count).and_then(|_| read_u64(&c.max)).map_err(|e| format!("{e:#}"))?;
        Ok(c)
    }
}

impl Collector for Conntrack {
    fn name(&self) -> &'static str {
        "conntrack"
    }

    fn collect(&self, out: &mut Out) -> anyhow::Result<()> {
        let (count, max) = (read_u64(&self.count)?, read_u64(&self.max)?);
        gauge(
            out,
            "system_conntrack_entries",
            "Connection tracking entries in use (nf_conntrack_count).",
            count as f64,
        );
        gauge(
            out,
            "system_conntrack_entries_limit",
            "Most connection tracking entries (nf_conntrack_max).",
            max as f64,
        );
        Ok(())
    }
}

/// The clock: boot time (`btime` of /proc/stat), the current time, and the kernel's clock
/// discipline (`adjtimex(2)` read-only: offset, errors, synchronised or not), as node_exporter's
/// `time`, `stat` and `timex` collectors.
pub struct Clock {
    stat: PathBuf,
}

/// What `adjtimex(2)` (modes 0: read only, no privilege needed) says.
#[derive(Clone, Copy, Debug)]
pub struct Timex {
    pub offset_s: f64,
    pub maxerror_s: f64,
    pub esterror_s: f64,
    /// STA_UNSYNC clear: the kernel's clock is synchronised (by an NTP or PTP daemon).
    pub synced: bool,
}

/// Reads the kernel's clock discipline.
pub fn timex() -> std::io::Result<Timex> {
    // SAFETY: an all-zero `timex` is valid (modes 0: the call only reads the kernel's state
    // into it).
    let mut t: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: `t` is a valid, writable `timex` for the duration of the call.
    let state = unsafe { libc::adjtimex(&mut t) };
    if state < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // The offset is in ns when STA_NANO is set, else in µs.
    let unit = if t.status & libc::STA_NANO != 0 { 1e-9 } else { 1e-6 };
    Ok(Timex {
        offset_s: t.offset as f64 * unit,
        maxerror_s: t.maxerror as f64 * 1e-6,
        esterror_s: t.esterror as f64 * 1e-6,
        synced: t.status & libc::STA_UNSYNC == 0 && state != libc::TIME_ERROR,
    })
}

impl Clock {
    pub fn new(procfs_root: &std::path::Path) -> Result<Self, String> {
        let c = Self { stat: procfs_root.join("stat") };
        c.boot_time().map_err(|e| format!("{e:#}"))?;
        timex().map_err(|e| format!("adjtimex: {e}"))?;
        Ok(c)
    }

    fn boot_time(&self) -> anyhow::Result<u64> {
        let text = std::fs::read_to_string(&self.stat).with_context(|| format!("reading {}", self.stat.display()))?;
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("btime "))
            .with_context(|| format!("no btime in {}", self.stat.display()))?;
        line.trim().parse().with_context(|| format!("parsing btime in {}", self.stat.display()))
    }
}

impl Collector for Clock {
    fn name(&self) -> &'static str {
        "time"
    }

    fn collect(&self, out: &mut Out) -> anyhow::Result<()> {
        let boot = self.boot_time()? as f64;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let t = timex().context("adjtimex")?;
        let gauges = [
            ("system_boot_time_seconds", "When the host booted, in seconds since the epoch (btime).", boot),
            ("system_time_seconds", "The host's clock, in seconds since the epoch.", now.as_secs_f64()),
            (
                "system_timex_offset_seconds",
                "The kernel clock's offset from its reference, as the time daemon last set it (adjtimex).",
                t.offset_s,
            ),
            (
                "system_timex_maxerror_seconds",
                "Maximum error the kernel assumes for its clock (adjtimex).",
                t.maxerror_s,
            ),
            ("system_timex_estimated_error_seconds", "Estimated error of the kernel's clock (adjtimex).", t.esterror_s),
            (
                "system_timex_sync_status",
                "1 when the kernel's clock is synchronised by a time daemon (adjtimex: STA_UNSYNC clear).",
                if t.synced { 1.0 } else { 0.0 },
            ),
        ];
        for (name, help, v) in gauges {
            gauge(out, name, help, v);
        }
        Ok(())
    }
}
