//! Loading the embedded eBPF object: privileges, tracefs and its format files, globals, and
//! attaching programs. Each signal module (disk, network) asks for its programs here and gets
//! either its maps or the reason it cannot run.
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use aya::{Ebpf, EbpfLoader, maps::MapData};

use collector_common::names;

use crate::metrics::{Collector, Family, Out};

/// The object built by `cargo xtask build-ebpf` for kernels before 5.12, embedded at compile
/// time.
static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("COLLECTOR_EBPF_OBJECT"));

/// The same programs built for kernels from 5.12 (the feature `kernel-5-12` of collector-ebpf):
/// HTTP/1's and HTTP/2's packet functions take the connection by pointer instead of finding it
/// again through the packet's socket (docs/performance.md); 5.10 refuses a global function's pointer argument.
static OBJECT_5_12: &[u8] = aya::include_bytes_aligned!(env!("COLLECTOR_EBPF_OBJECT_5_12"));

/// The object for the running kernel, and which it is ("5.12" or "5.10").
fn object() -> (&'static [u8], &'static str) {
    if aya::util::KernelVersion::current().is_ok_and(|v| v >= aya::util::KernelVersion::new(5, 12, 0)) {
        (OBJECT_5_12, "5.12")
    } else {
        (OBJECT, "5.10")
    }
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; later ones use memory cgroups.
/// Raising it needs CAP_SYS_RESOURCE, which a container may not have: failure is not fatal.
fn raise_memlock() {
    let lim = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) } != 0 {
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "could not raise RLIMIT_MEMLOCK (only kernels before 5.11 need it)"
        );
    }
}

/// What to do when the maps cannot be created because the kernel charges them to a low
/// RLIMIT_MEMLOCK (kernels before 5.11, when the limit could not be raised): None otherwise.
fn memlock_hint() -> Option<String> {
    let old = aya::util::KernelVersion::current().is_ok_and(|v| v < aya::util::KernelVersion::new(5, 11, 0));
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    if !old || unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 || lim.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    Some(format!(
        "this kernel (before 5.11) charges BPF maps to RLIMIT_MEMLOCK, which is {} KiB and could not be \
         raised: run with LimitMEMLOCK=infinity (systemd), `prlimit --memlock=unlimited`, `ulimit -l \
         unlimited`, or grant CAP_SYS_RESOURCE",
        lim.rlim_cur / 1024
    ))
}

/// Why opening a tracepoint event was refused, when `kernel.perf_event_paranoid` is above 2:
/// Debian's (and Ubuntu's) kernels add a level 3 at which some versions (Debian 11's 5.10)
/// allow it only with CAP_SYS_ADMIN, whatever CAP_PERFMON says. None otherwise.
fn perf_paranoid_hint(e: &anyhow::Error) -> Option<String> {
    let refused = e.chain().any(|c| {
        let s = c.to_string();
        s.contains("Permission denied") || s.contains("Operation not permitted")
    });
    let level: i32 = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid").ok()?.trim().parse().ok()?;
    (refused && level > 2).then(|| {
        format!(
            "kernel.perf_event_paranoid is {level}, at which this kernel lets only CAP_SYS_ADMIN open \
             tracepoint events: set it to 2 (sysctl -w kernel.perf_event_paranoid=2) or grant CAP_SYS_ADMIN"
        )
    })
}

/// Finds tracefs: the given path, or /sys/kernel/tracing, or /sys/kernel/debug/tracing;
/// mounts it at /sys/kernel/tracing when nothing is mounted there yet.
pub fn find_tracefs(explicit: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(p) = explicit {
        return if p.join("events").is_dir() {
            Ok(p.to_path_buf())
        } else {
            Err(format!("{} has no events/ directory: not a tracefs mount", p.display()))
        };
    }
    let candidates = [Path::new("/sys/kernel/tracing"), Path::new("/sys/kernel/debug/tracing")];
    if let Some(p) = candidates.iter().find(|p| p.join("events").is_dir()) {
        return Ok(p.to_path_buf());
    }
    let target = candidates[0];
    let src = c"tracefs";
    let dst = c"/sys/kernel/tracing";
    if target.is_dir() && unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), src.as_ptr(), 0, std::ptr::null()) } == 0 {
        tracing::info!("mounted tracefs at /sys/kernel/tracing");
        if target.join("events").is_dir() {
            return Ok(target.to_path_buf());
        }
    }
    Err(format!(
        "tracefs not found at {} or {} and could not be mounted ({}); mount it with \
         `mount -t tracefs tracefs /sys/kernel/tracing` or pass --path.tracefs",
        candidates[0].display(),
        candidates[1].display(),
        std::io::Error::last_os_error()
    ))
}

/// One field of a tracepoint format file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub offset: u32,
    pub size: u32,
}

/// Parses a tracepoint `format` file into field name → offset and size.
pub fn parse_format(text: &str) -> std::collections::HashMap<String, Field> {
    let mut fields = std::collections::HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("field:") else { continue };
        let mut parts = rest.split(';').map(str::trim);
        let Some(decl) = parts.next() else { continue };
        let (mut offset, mut size) = (None, None);
        for p in parts {
            if let Some(v) = p.strip_prefix("offset:") {
                offset = v.parse().ok();
            } else if let Some(v) = p.strip_prefix("size:") {
                size = v.parse().ok();
            }
        }
        // The name is the last word of the declaration, without an array suffix.
        let Some(name) = decl.split_whitespace().last() else { continue };
        let name = name.split('[').next().unwrap_or(name);
        if let (Some(offset), Some(size)) = (offset, size) {
            fields.insert(name.to_owned(), Field { offset, size });
        }
    }
    fields
}

/// Reads `events/<category>/<name>/format` and returns the fields, checking that each
/// `(name, min size, max size)` in `want` exists with a size in range.
pub fn tracepoint_fields(
    tracefs: &Path,
    category: &str,
    name: &str,
    want: &[(&str, u32, u32)],
) -> Result<std::collections::HashMap<String, Field>, String> {
    let path = tracefs.join("events").join(category).join(name).join("format");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("tracepoint {category}:{name} not available ({}: {e})", path.display()))?;
    let fields = parse_format(&text);
    for (field, min, max) in want {
        match fields.get(*field) {
            Some(f) if (*min..=*max).contains(&f.size) => {}
            Some(f) => {
                return Err(format!(
                    "tracepoint {category}:{name} field {field} has size {} (expected {min}..={max})",
                    f.size
                ));
            }
            None => return Err(format!("tracepoint {category}:{name} has no field {field}")),
        }
    }
    Ok(fields)
}

/// The loaded object. Dropping it detaches and unloads every program.
/// The bytes of a global's value.
pub fn as_bytes<T: Copy>(v: &T) -> Vec<u8> {
    // SAFETY: T is a #[repr(C)] plain-data type from collector-common with no padding bytes
    // left uninitialised by construction (all fields are u32).
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }.to_vec()
}

/// Name → bytes of the globals a collector's programs need, set when the object is loaded.
pub type Globals = Vec<(&'static str, Vec<u8>)>;

/// An eBPF program and the hook it was meant for.
#[derive(Clone, Debug)]
pub struct ProgramStatus {
    pub program: &'static str,
    pub hook: String,
    pub attached: bool,
}

pub struct Loader {
    /// Shared with the TLS capture, which attaches its uprobes to libraries found after
    /// start-up (tls.rs).
    pub ebpf: std::sync::Arc<std::sync::Mutex<Ebpf>>,
    pub programs: Vec<ProgramStatus>,
}

impl Loader {
    /// Loads the object with the given globals (name → bytes). Maps are created; programs are
    /// loaded only when a collector attaches them.
    pub fn load(globals: &[(&'static str, Vec<u8>)]) -> anyhow::Result<Self> {
        raise_memlock();
        let mut loader = EbpfLoader::new();
        for (name, bytes) in globals {
            loader.override_global(name, bytes.as_slice(), true);
        }
        let (object, built_for) = object();
        tracing::debug!(built_for, "loading the eBPF object built for this kernel");
        let ebpf = loader.load(object).map_err(|e| {
            let e = anyhow::Error::new(e).context("loading the eBPF object");
            match memlock_hint() {
                Some(hint) => e.context(hint),
                None => e,
            }
        })?;
        Ok(Self { ebpf: std::sync::Arc::new(std::sync::Mutex::new(ebpf)), programs: Vec::new() })
    }

    /// Whether `program` is attached.
    pub fn is_attached(&self, program: &str) -> bool {
        self.programs.iter().any(|p| p.program == program && p.attached)
    }

    /// Records a program's outcome for `collector_bpf_program_attached`.
    pub fn record(&mut self, program: &'static str, hook: String, attached: bool) {
        self.programs.push(ProgramStatus { program, hook, attached });
    }

    /// Takes a map out of the object for a poller to own.
    pub fn take_map(&mut self, name: &str) -> anyhow::Result<aya::maps::Map> {
        self.ebpf.lock().unwrap().take_map(name).with_context(|| format!("map {name} missing from the eBPF object"))
    }

    /// Runs `attach` (load and attach one program of the object), records the outcome for
    /// `collector_bpf_program_attached` and shortens the error for the log.
    fn attach_with(
        &mut self,
        program: &'static str,
        hook: String,
        attach: impl FnOnce(&mut aya::programs::Program) -> anyhow::Result<()>,
    ) -> Result<(), String> {
        self.attach_with_as(program, program, hook, attach)
    }

    /// [`Loader::attach_with`] for the object's program `loaded`, recorded as `program`.
    fn attach_with_as(
        &mut self,
        program: &'static str,
        loaded: &'static str,
        hook: String,
        attach: impl FnOnce(&mut aya::programs::Program) -> anyhow::Result<()>,
    ) -> Result<(), String> {
        let start = std::time::Instant::now();
        let mut ebpf = self.ebpf.lock().unwrap();
        let result = ebpf.program_mut(loaded).context("program missing from the object").and_then(attach);
        if result.is_ok() {
            // What the verifier did (the count from 5.16 on), for the matrix and for users
            // wondering about start-up time on a slow machine.
            let verified =
                ebpf.program(loaded).and_then(|p| p.info().ok()).and_then(|i| i.verified_instruction_count());
            tracing::debug!(
                program,
                ms = start.elapsed().as_millis() as u64,
                verified_insns = verified,
                "program loaded and attached"
            );
        }
        drop(ebpf);
        self.record(program, hook.clone(), result.is_ok());
        result.map_err(|e| short_reason(&hook, &e))
    }

    /// Loads and attaches a classic tracepoint program.
    pub fn attach_tracepoint(&mut self, program: &'static str, category: &str, name: &str) -> Result<(), String> {
        self.attach_with(program, format!("tracepoint/{category}/{name}"), |p| {
            let prog: &mut aya::programs::TracePoint = p.try_into()?;
            prog.load().context("load")?;
            prog.attach(category, name).map_err(|e| {
                let e = anyhow::Error::new(e).context("attach");
                match perf_paranoid_hint(&e) {
                    Some(hint) => e.context(hint),
                    None => e,
                }
            })?;
            Ok(())
        })
    }

    /// Loads a uprobe program (attached later, per library, by the TLS capture): `program` as
    /// `collector_bpf_program_attached` names it, `loaded` the one of the object (it or its
    /// uprobe_multi twin), `hook` for the log.
    pub fn load_uprobe(&mut self, program: &'static str, loaded: &'static str, hook: String) -> Result<(), String> {
        self.attach_with_as(program, loaded, hook, |p| {
            let prog: &mut aya::programs::UProbe = p.try_into()?;
            prog.load().context("load")?;
            Ok(())
        })
    }

    /// Loads and attaches a sock_ops program to a cgroup directory, next to any other programs
    /// already there (see [`cgroup_attach_mode`]).
    pub fn attach_sock_ops(&mut self, program: &'static str, cgroup: &Path) -> Result<(), String> {
        self.attach_with(program, format!("sock_ops:{}", cgroup.display()), |p| {
            let file = open_cgroup(cgroup)?;
            let prog: &mut aya::programs::SockOps = p.try_into()?;
            prog.load().context("load")?;
            prog.attach(&file, cgroup_attach_mode()).context("attach")?;
            Ok(())
        })
    }

    /// Loads and attaches a cgroup/sock program (`sock_create` and the like) to a cgroup
    /// directory, next to any other programs already there (see [`cgroup_attach_mode`]).
    pub fn attach_cgroup_sock(&mut self, program: &'static str, cgroup: &Path) -> Result<(), String> {
        self.attach_with(program, format!("cgroup_sock:{}", cgroup.display()), |p| {
            let file = open_cgroup(cgroup)?;
            let prog: &mut aya::programs::CgroupSock = p.try_into()?;
            prog.load().context("load")?;
            prog.attach(&file, cgroup_attach_mode()).context("attach")?;
            Ok(())
        })
    }

    /// Loads and attaches a cgroup_skb program to a cgroup directory, next to any other
    /// programs already there (see [`cgroup_attach_mode`]).
    pub fn attach_cgroup_skb(
        &mut self,
        program: &'static str,
        cgroup: &Path,
        attach: aya::programs::CgroupSkbAttachType,
    ) -> Result<(), String> {
        let dir = match attach {
            aya::programs::CgroupSkbAttachType::Ingress => "ingress",
            aya::programs::CgroupSkbAttachType::Egress => "egress",
        };
        self.attach_with(program, format!("cgroup_skb/{dir}:{}", cgroup.display()), |p| {
            let file = open_cgroup(cgroup)?;
            let prog: &mut aya::programs::CgroupSkb = p.try_into()?;
            prog.load().context("load")?;
            prog.attach(&file, attach, cgroup_attach_mode()).context("attach")?;
            Ok(())
        })
    }

    /// Attaches an ingress and an egress cgroup_skb program to `cgroup`: both, or neither.
    pub fn attach_cgroup_skb_pair(
        &mut self,
        ingress: &'static str,
        egress: &'static str,
        cgroup: &Path,
    ) -> Result<(), String> {
        use aya::programs::CgroupSkbAttachType::{Egress, Ingress};
        let result = self
            .attach_cgroup_skb(ingress, cgroup, Ingress)
            .and_then(|()| self.attach_cgroup_skb(egress, cgroup, Egress));
        if result.is_err() {
            self.unload(ingress);
            self.unload(egress);
        }
        result
    }

    /// Unloads a program again (after a sibling failed), so a skipped collector leaves nothing
    /// attached.
    pub fn unload(&mut self, program: &str) {
        if let Some(p) = self.ebpf.lock().unwrap().program_mut(program) {
            let _ = match p {
                aya::programs::Program::TracePoint(p) => p.unload(),
                aya::programs::Program::CgroupSkb(p) => p.unload(),
                aya::programs::Program::SockOps(p) => p.unload(),
                aya::programs::Program::CgroupSock(p) => p.unload(),
                aya::programs::Program::UProbe(p) => p.unload(),
                _ => Ok(()),
            };
        }
        for s in self.programs.iter_mut().filter(|s| s.program == program) {
            s.attached = false;
        }
    }
}

/// A cgroup directory, opened for attaching programs to it.
fn open_cgroup(cgroup: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::File::open(cgroup).with_context(|| format!("opening {}", cgroup.display()))
}

/// How cgroup programs attach beside others on the same cgroup: a BPF link from 5.7 on (links
/// always coexist, and the kernel rejects flags on them), BPF_F_ALLOW_MULTI on older kernels.
fn cgroup_attach_mode() -> aya::programs::CgroupAttachMode {
    let links = aya::util::KernelVersion::current().is_ok_and(|v| v >= aya::util::KernelVersion::new(5, 7, 0));
    if links { aya::programs::CgroupAttachMode::Single } else { aya::programs::CgroupAttachMode::AllowMultiple }
}

/// A skip reason short enough for a log line and a label value: a verifier rejection keeps only
/// the verifier's last words (the whole log goes to the debug log).
fn short_reason(hook: &str, e: &anyhow::Error) -> String {
    let full = format!("{e:#}");
    match full.split_once("Verifier output:") {
        Some((head, log)) => {
            tracing::debug!(hook, verifier_log = log, "verifier rejected the program");
            // The verifier's complaint is the line before its statistics.
            let lines: Vec<&str> = log.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
            let stats = lines.iter().position(|l| l.starts_with("verification time")).unwrap_or(lines.len());
            let tail = lines[..stats].last().copied().unwrap_or("");
            format!("{hook}: {} verifier: {}", head.trim(), tail.trim())
        }
        None => format!("{hook}: {full}"),
    }
}

/// Sums a per-CPU value over CPUs.
pub fn sum_per_cpu<V: aya::Pod>(values: &aya::maps::PerCpuValues<V>, mut add: impl FnMut(&V)) {
    for v in values.iter() {
        add(v);
    }
}

/// The loader's own metrics, a source of the registry like the collectors: which program is
/// attached where (`collector_bpf_program_attached`) and the per-CPU drop counters of the
/// kernel programs (`collector_bpf_events_dropped_total`, reasons in `collector_common::drop`).
pub struct SelfMetrics {
    programs: Vec<ProgramStatus>,
    map: aya::maps::PerCpuArray<MapData, u64>,
}

impl SelfMetrics {
    /// Takes the drop counters' map; the programs attached so far are reported.
    pub fn new(loader: &mut Loader) -> anyhow::Result<Self> {
        Ok(Self {
            programs: loader.programs.clone(),
            map: aya::maps::PerCpuArray::try_from(loader.take_map(names::map::DROPS)?)?,
        })
    }

    /// A read of the map, for [`crate::caps::map_reads_need`]: the error of the `bpf()` call.
    pub fn probe_read(&self) -> std::io::Result<()> {
        match self.map.get(&0, 0) {
            Ok(_) => Ok(()),
            Err(aya::maps::MapError::SyscallError(e)) => Err(e.io_error),
            Err(e) => Err(std::io::Error::other(e.to_string())),
        }
    }

    /// (reason, count) for every reason.
    pub fn read(&self) -> anyhow::Result<Vec<(&'static str, u64)>> {
        let mut out = Vec::new();
        for (i, name) in collector_common::drop::NAMES.iter().enumerate() {
            let values = self.map.get(&(i as u32), 0)?;
            out.push((*name, values.iter().sum()));
        }
        Ok(out)
    }
}

impl Collector for SelfMetrics {
    fn name(&self) -> &'static str {
        "bpf"
    }

    fn collect(&self, out: &mut Out) -> anyhow::Result<()> {
        let mut attached = Family::gauge(
            "collector_bpf_program_attached",
            "Whether an eBPF program is attached to its hook (1) or not (0).",
        );
        for p in &self.programs {
            attached.add(&[("program", p.program), ("hook", &p.hook)], if p.attached { 1.0 } else { 0.0 });
        }
        out.push(attached);
        let mut f = Family::counter(
            "collector_bpf_events_dropped_total",
            "Kernel events not recorded: a bounded map was full, or a completion had no matching start.",
        );
        match self.read() {
            Ok(counts) => {
                for (reason, n) in counts {
                    f.add(&[("reason", reason)], n as f64);
                }
            }
            Err(e) => tracing::warn!(error = format!("{e:#}"), "reading the DROPS map failed"),
        }
        out.push(f);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every map, program and global the daemon names (collector_common::names) is a symbol
    /// of both embedded objects: an exact entry of its string table (NUL before and after).
    #[test]
    fn names_match_the_object() {
        let has = |name: &str| {
            let mut needle = vec![0u8];
            needle.extend_from_slice(name.as_bytes());
            needle.push(0);
            [OBJECT, OBJECT_5_12].iter().all(|o| o.windows(needle.len()).any(|w| w == needle.as_slice()))
        };
        let multi = names::program::UPROBES.map(|(_, m)| m);
        for name in names::map::ALL.iter().chain(&names::program::ALL).chain(&names::global::ALL).chain(&multi) {
            assert!(has(name), "{name} is not in the eBPF object");
        }
        assert!(!has("NO_SUCH_MAP"));
    }

    #[test]
    fn format_file_parsing() {
        let text = "name: block_rq_issue\nID: 1234\nformat:\n\
            \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
            \tfield:dev_t dev;\toffset:8;\tsize:4;\tsigned:0;\n\
            \tfield:sector_t sector;\toffset:16;\tsize:8;\tsigned:0;\n\
            \tfield:char rwbs[10];\toffset:34;\tsize:10;\tsigned:0;\n\
            \tfield:__data_loc char[] cmd;\toffset:60;\tsize:4;\tsigned:0;\n\n\
            print fmt: \"%d\", REC->dev\n";
        let f = parse_format(text);
        assert_eq!(f["dev"], Field { offset: 8, size: 4 });
        assert_eq!(f["sector"], Field { offset: 16, size: 8 });
        assert_eq!(f["rwbs"], Field { offset: 34, size: 10 });
        assert_eq!(f["cmd"], Field { offset: 60, size: 4 });
        assert!(parse_format("garbage\nfield:x;offset:zz;size:1;").is_empty());
    }
}
