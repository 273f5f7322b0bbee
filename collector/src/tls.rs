//! TLS capture, the daemon's half (the kernel's is collector-ebpf/src/tls.rs): finds the files
//! that hold a TLS library in the processes of the host and of its containers, attaches the
//! uprobes to each once (by file: the kernel then fires them in every process that maps it,
//! including processes started later), detaches them when no process maps the file any more,
//! and deletes the kernel's state of connections whose process exited without freeing them.
//!
//! What is attached, per file a process maps (`/proc/<pid>/maps`, opened through
//! `/proc/<pid>/root` so that a container's files are its own):
//! - `libssl.so*` (OpenSSL 1.1 and 3, BoringSSL built as a shared library), and any executable
//!   that exports `SSL_read` and `SSL_write` (OpenSSL linked statically, as in Node.js): entry
//!   probes on `SSL_read`, `SSL_read_ex`, `SSL_write`, `SSL_write_ex` (the `_ex` ones where the
//!   library has them), a return probe on each, and an entry probe on `SSL_free`.
//! - Skipped, with one log line per file and a count by reason: Go binaries using
//!   `crypto/tls` (Go moves goroutine stacks, so return probes would corrupt them; capturing Go
//!   needs probes on each return instruction instead, not done yet), and the other TLS
//!   libraries (GnuTLS, NSS, wolfSSL, mbed TLS, rustls inside binaries: nothing to attach to).
use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData},
    programs::{UProbe, uprobe::UProbeAttachLocation, uprobe::UProbeLinkId, uprobe::UProbeScope},
};
use collector_common::{
    http::tls::{RecvOffsets, TLS_CONN_SIZE, TlsKey},
    names::{map, program},
};
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
use object::{Object as _, ObjectSection as _, ObjectSymbol as _};

use crate::{
    bpf::{self, Loader},
    metrics::{Collector, Family, Out},
};

/// How often the processes are looked at for new TLS libraries (and for files no longer used).
pub const SCAN_INTERVAL: Duration = Duration::from_secs(1);

/// How long probes attached because a process opened the file stay without a process seen
/// mapping it (the opener maps it right after opening; one that has exited by the next scan
/// leaves nothing to keep them for).
const OPEN_HOLD: Duration = Duration::from_secs(2);

/// At most this many files are watched for opens (each is a TLS library or an executable
/// holding one; a host has few).
const MAX_WATCHED: usize = 512;

/// Where the host's own TLS libraries are looked for at start-up (under `/proc/1/root`: the
/// host's root when the collector shares the host's process namespace; else under `/`).
const HOST_LIBRARY_DIRS: [&str; 9] = [
    "usr/lib/x86_64-linux-gnu",
    "usr/lib/aarch64-linux-gnu",
    "usr/lib64",
    "usr/lib",
    "usr/local/lib",
    "lib/x86_64-linux-gnu",
    "lib/aarch64-linux-gnu",
    "lib64",
    "lib",
];

/// The probes of an OpenSSL-compatible library: (program, function, required).
const ENTRY_PROBES: [(&str, &str, bool); 6] = [
    (program::TLS_READ, "SSL_read", true),
    (program::TLS_WRITE, "SSL_write", true),
    (program::TLS_READ_EX, "SSL_read_ex", false),
    (program::TLS_WRITE_EX, "SSL_write_ex", false),
    (program::TLS_FREE, "SSL_free", true),
    (program::TLS_HANDSHAKE, "SSL_do_handshake", false),
];

/// The `RECV_OFFSETS` global: where `tcp:tcp_rcv_space_adjust` keeps the socket's ports and
/// addresses on this kernel.
pub fn recv_offsets(tracefs: &Path) -> Result<RecvOffsets, String> {
    let f = bpf::tracepoint_fields(
        tracefs,
        "tcp",
        "tcp_rcv_space_adjust",
        &[("sport", 2, 2), ("dport", 2, 2), ("saddr_v6", 16, 16), ("daddr_v6", 16, 16)],
    )?;
    Ok(RecvOffsets {
        sport: f["sport"].offset,
        dport: f["dport"].offset,
        saddr_v6: f["saddr_v6"].offset,
        daddr_v6: f["daddr_v6"].offset,
    })
}

/// What a file is, for the capture.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    /// OpenSSL's API: the file offsets of the probed functions (absent `_ex` ones: None).
    OpenSsl(Vec<(&'static str, u64)>),
    /// Go's crypto/tls: entry probes (program, file offset) on `(*Conn).Read`, `Write` and
    /// `Close`, and `go_tls_ret` on each return instruction of Read and Write.
    Go(Vec<(&'static str, u64)>),
    /// A TLS implementation the capture does not follow (the reason).
    Skipped(&'static str),
    /// No TLS library.
    None,
}

/// A file the uprobes are attached to.
struct Target {
    /// The path as the first process seen mapping it names it.
    path: String,
    /// `openssl` or `go`.
    library: &'static str,
    links: Vec<(&'static str, UProbeLinkId)>,
    pids: usize,
    /// Attached because a process opened the file: kept until then even when no process is
    /// seen mapping it.
    hold: Option<Instant>,
    /// The first scan that saw no process mapping the file since one last did.
    unused_since: Option<Instant>,
}

/// A file watched for opens.
#[derive(Clone)]
struct Watched {
    id: FileId,
    /// As `Target::path`.
    path: String,
    /// The file as this process reaches it.
    file: PathBuf,
}

/// The files watched for opens (inotify `IN_OPEN`): every file the probes were attached to
/// since start-up, and the host's own `libssl.so*`. A process that starts and finishes its TLS
/// between two scans (curl, a script) opens its library first: the probes are attached then.
struct Opens {
    watches: Watches,
    by_wd: HashMap<WatchDescriptor, Watched>,
    ids: HashSet<FileId>,
    full_logged: bool,
}

/// File identity: device and inode, as `/proc/<pid>/maps` shows them.
type FileId = (u64, u64);

/// The state of the capture: the files examined, those attached, and the kernel's connections.
pub struct Capture {
    ebpf: Arc<Mutex<Ebpf>>,
    procfs: PathBuf,
    examined: HashMap<FileId, Kind>,
    targets: HashMap<FileId, Target>,
    /// Files skipped (path, reason), logged once each.
    skipped: HashMap<FileId, (String, &'static str)>,
    conns: BpfHashMap<MapData, TlsKey, [u8; TLS_CONN_SIZE]>,
    last_sweep: Instant,
    /// Attach failures by file, logged once.
    failed: HashSet<FileId>,
    /// Open watches, when inotify is available; `inotify` is the instance, until [`run`] takes
    /// it to read its events.
    opens: Option<Opens>,
    inotify: Option<Inotify>,
    /// How long probes stay on a file no process maps (`--collector.http.tls-detach-after`).
    detach_after: Duration,
    /// Set by [`shutdown`]: nothing is attached any more.
    shutting_down: bool,
}

/// The capture, once the HTTP collector started it: the scanning thread and the self metrics
/// reach it here.
pub static CAPTURE: std::sync::OnceLock<Arc<Mutex<Capture>>> = std::sync::OnceLock::new();

/// The capture's self metrics, a source of the registry.
pub struct Tls(pub Arc<Mutex<Capture>>);

impl Capture {
    /// Loads the TLS programs and attaches the receive tracepoint; the uprobes are attached by
    /// [`Capture::scan`].
    pub fn start(loader: &mut Loader, procfs: &Path, detach_after: Duration) -> Result<Self, String> {
        for (prog, func, _) in ENTRY_PROBES {
            loader.load_uprobe(prog, format!("uprobe:{func}"))?;
        }
        loader.load_uprobe(program::TLS_RET, "uretprobe:SSL_read,SSL_read_ex,SSL_write,SSL_write_ex".into())?;
        for (prog, func) in GO_FUNCTIONS.iter().filter(|(p, _)| *p != program::TLS_HANDSHAKE) {
            loader.load_uprobe(prog, format!("uprobe:{func}"))?;
        }
        loader.load_uprobe(program::GO_TLS_RET, "uprobe:returns of crypto/tls.(*Conn).Read,Write".into())?;
        loader.attach_tracepoint(program::TLS_RECV, "tcp", "tcp_rcv_space_adjust")?;
        let conns =
            loader.take_map(map::TLS_CONNS).and_then(|m| Ok(BpfHashMap::try_from(m)?)).map_err(|e| format!("{e:#}"))?;
        let (opens, inotify) = match Inotify::init() {
            Ok(i) => {
                let opens =
                    Opens { watches: i.watches(), by_wd: HashMap::new(), ids: HashSet::new(), full_logged: false };
                (Some(opens), Some(i))
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "tls: no inotify: a process is attached at the first scan that sees it (within a second), \
                     so one that finishes its TLS sooner is missed"
                );
                (None, None)
            }
        };
        let mut capture = Self {
            ebpf: loader.ebpf.clone(),
            procfs: procfs.to_path_buf(),
            examined: HashMap::new(),
            targets: HashMap::new(),
            skipped: HashMap::new(),
            conns,
            last_sweep: Instant::now(),
            failed: HashSet::new(),
            opens,
            inotify,
            detach_after,
            shutting_down: false,
        };
        capture.watch_host_libraries();
        Ok(capture)
    }

    /// Looks at every process (see [`Capture::scan_maps`]). Returns the files newly attached.
    pub fn scan(&mut self) -> Vec<String> {
        let maps = read_maps(&self.procfs);
        self.scan_maps(maps)
    }

    /// Looks at every process's memory map (`maps`, from [`read_maps`]): attaches to TLS
    /// libraries not attached yet, detaches from files no process has mapped for a while, and
    /// now and then deletes the state of connections of exited processes. Returns the files
    /// newly attached.
    pub fn scan_maps(&mut self, maps: Option<Vec<(u32, Option<String>)>>) -> Vec<String> {
        let mut users: HashMap<FileId, usize> = HashMap::new();
        let mut attached = Vec::new();
        let Some(maps) = maps else { return attached };
        let mut live = HashSet::new();
        // Every candidate file some process maps, whatever it is.
        let mut mapped: HashSet<FileId> = HashSet::new();
        for (pid, maps) in &maps {
            let pid = *pid;
            live.insert(pid);
            let Some(maps) = maps else { continue };
            let mut seen = HashSet::new();
            for (id, path) in candidates(maps) {
                if !seen.insert(id) {
                    continue;
                }
                mapped.insert(id);
                if !self.examined.contains_key(&id) {
                    let file = self.file_of(pid, path, id.1);
                    let kind = examine(&file, path, id.1);
                    self.examined.insert(id, kind);
                }
                match &self.examined[&id] {
                    Kind::OpenSsl(_) | Kind::Go(_) => {
                        // Attached already under another identity of the same file (its probes
                        // attached on an open: see `target_key`): the maps' identity from now on.
                        if let Some(k) = self.target_key(id, path).filter(|k| *k != id)
                            && let Some(t) = self.targets.remove(&k)
                        {
                            self.targets.insert(id, t);
                        }
                        *users.entry(id).or_default() += 1;
                        if !self.targets.contains_key(&id) && !self.failed.contains(&id) {
                            let file = self.file_of(pid, path, id.1);
                            if self.attach_target(id, path, &file, Some(pid), None) {
                                attached.push(path.to_owned());
                            }
                        }
                    }
                    Kind::Skipped(reason) => {
                        if let std::collections::hash_map::Entry::Vacant(e) = self.skipped.entry(id) {
                            tracing::info!(path, pid, reason, "tls: library skipped");
                            e.insert((path.to_owned(), reason));
                        }
                    }
                    Kind::None => {}
                }
            }
        }
        // What was learnt of files no process maps any more is forgotten (hosts that run many
        // distinct executables over time would grow these maps otherwise); a file seen again is
        // examined again.
        self.examined.retain(|id, _| mapped.contains(id));
        self.skipped.retain(|id, _| mapped.contains(id));
        // Files no process has mapped for `detach_after`: their probes go (those attached on an
        // open not before their hold is over).
        let now = Instant::now();
        for (id, t) in self.targets.iter_mut() {
            t.pids = users.get(id).copied().unwrap_or(0);
            if t.pids > 0 {
                t.hold = None;
                t.unused_since = None;
            } else {
                t.unused_since.get_or_insert(now);
            }
        }
        let gone: Vec<FileId> = self
            .targets
            .iter()
            .filter(|(_, t)| {
                t.pids == 0
                    && t.hold.is_none_or(|h| now >= h)
                    && t.unused_since.is_some_and(|u| now.duration_since(u) >= self.detach_after)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            if let Some(t) = self.targets.remove(&id) {
                self.detach(t.links);
                tracing::info!(path = t.path, "tls: uprobes detached (no process maps the file)");
            }
            self.failed.remove(&id);
        }
        if self.last_sweep.elapsed() >= Duration::from_secs(30) {
            self.last_sweep = Instant::now();
            self.sweep(&live);
        }
        attached
    }

    /// Attaches the probes of file `id` (examined already), reached at `file`, named `path`;
    /// `pid`: the process seen mapping it, `hold`: for a file attached because it was opened.
    /// Whether it is attached now; a failure is logged and not tried again while the file is
    /// mapped.
    fn attach_target(&mut self, id: FileId, path: &str, file: &Path, pid: Option<u32>, hold: Option<Instant>) -> bool {
        let (offsets, go) = match &self.examined[&id] {
            Kind::OpenSsl(o) => (o.clone(), false),
            Kind::Go(o) => (o.clone(), true),
            _ => return false,
        };
        let api = if go { "Go crypto/tls" } else { "OpenSSL API" };
        let why = if hold.is_some() { "opened" } else { "mapped" };
        match self.attach(file, &offsets, !go) {
            Ok(links) => {
                tracing::info!(path, pid, api, probes = links.len(), by = why, "tls: uprobes attached");
                let library = if go { "go" } else { "openssl" };
                let target = Target { path: path.to_owned(), library, links, pids: 0, hold, unused_since: None };
                self.targets.insert(id, target);
                self.watch(id, path, file);
                true
            }
            Err(e) => {
                tracing::warn!(path, pid, error = format!("{e:#}"), "tls: attaching failed");
                self.failed.insert(id);
                false
            }
        }
    }

    /// Watches `file` (identity `id`, named `path`) for opens, when this process reaches the
    /// same file there as processes' maps name (not so through an overlay mount, whose files
    /// have identities of their own).
    fn watch(&mut self, id: FileId, path: &str, file: &Path) {
        let Some(o) = self.opens.as_mut() else { return };
        if std::fs::metadata(file).map(|m| file_id(&m)).ok() != Some(id) {
            return;
        }
        if o.ids.contains(&id) {
            // Watched already: the path that reaches it now (an earlier one may go stale).
            if let Some(w) = o.by_wd.values_mut().find(|w| w.id == id) {
                w.file = file.to_owned();
                w.path = path.to_owned();
            }
            return;
        }
        if o.by_wd.len() >= MAX_WATCHED {
            if !o.full_logged {
                o.full_logged = true;
                tracing::info!(
                    max = MAX_WATCHED,
                    path,
                    "tls: no more files watched for opens (found by the scans only)"
                );
            }
            return;
        }
        match o.watches.add(file, WatchMask::OPEN) {
            Ok(wd) => {
                o.by_wd.insert(wd, Watched { id, path: path.to_owned(), file: file.to_owned() });
                o.ids.insert(id);
            }
            Err(e) => tracing::debug!(path, error = %e, "tls: watching for opens failed"),
        }
    }

    /// Watches the host's own OpenSSL libraries (`libssl.so*` in the usual directories), so
    /// that the first process to use one is attached when it opens it.
    fn watch_host_libraries(&mut self) {
        // The host's root as process 1 sees it; this process's own when that is not readable
        // (a sandbox that hides process 1's files, even from root).
        let init_root = self.procfs.join("1").join("root");
        let root = if std::fs::read_dir(&init_root).is_ok() { init_root } else { PathBuf::from("/") };
        for dir in HOST_LIBRARY_DIRS {
            let Ok(entries) = std::fs::read_dir(root.join(dir)) else { continue };
            for e in entries.flatten() {
                let name = e.file_name();
                let Some(name) = name.to_str().filter(|n| n.starts_with("libssl.so")) else { continue };
                // The library itself, not a link to it (`libssl.so` of the development package).
                if e.file_type().is_ok_and(|t| t.is_symlink()) {
                    continue;
                }
                let file = e.path();
                let Ok(meta) = std::fs::metadata(&file) else { continue };
                let id = file_id(&meta);
                if self.opens.as_ref().is_none_or(|o| o.ids.contains(&id)) {
                    continue;
                }
                let path = format!("/{dir}/{name}");
                if matches!(examine(&file, &path, id.1), Kind::OpenSsl(_)) {
                    self.watch(id, &path, &file);
                }
            }
        }
    }

    /// The key of the target of file `id`, named `path`: `id`, or that of a target with the
    /// same inode and path under another device number. Such a file was attached on an open,
    /// with the identity `stat` gives, which is not always the one processes' maps show (btrfs
    /// gives a subvolume's files a device number of their own).
    fn target_key(&self, id: FileId, path: &str) -> Option<FileId> {
        if self.targets.contains_key(&id) {
            return Some(id);
        }
        self.targets.iter().find(|(k, t)| k.1 == id.1 && t.path == path).map(|(k, _)| *k)
    }

    /// A watched file was opened: attaches its probes now unless they are.
    pub fn opened(&mut self, wd: &WatchDescriptor) {
        if self.shutting_down {
            return;
        }
        let Some(w) = self.opens.as_ref().and_then(|o| o.by_wd.get(wd)).cloned() else { return };
        let hold = Instant::now() + OPEN_HOLD;
        if let Some(t) = self.target_key(w.id, &w.path).and_then(|k| self.targets.get_mut(&k)) {
            if t.pids == 0 {
                t.hold = Some(hold);
            }
            return;
        }
        if self.failed.contains(&w.id) {
            return;
        }
        // The path the file was watched through can have gone stale (the root of a process
        // that has exited): only the same file is examined, and only a TLS library is
        // remembered (the scans examine what they find themselves).
        if std::fs::metadata(&w.file).map(|m| file_id(&m)).ok() != Some(w.id) {
            return;
        }
        if let std::collections::hash_map::Entry::Vacant(e) = self.examined.entry(w.id) {
            let kind = examine(&w.file, &w.path, w.id.1);
            if !matches!(kind, Kind::OpenSsl(_) | Kind::Go(_)) {
                return;
            }
            e.insert(kind);
        }
        self.attach_target(w.id, &w.path, &w.file, None, Some(hold));
    }

    /// A watch the kernel removed (the file deleted, its file system unmounted).
    fn unwatched(&mut self, wd: &WatchDescriptor) {
        if let Some(o) = self.opens.as_mut()
            && let Some(w) = o.by_wd.remove(wd)
        {
            o.ids.remove(&w.id);
        }
    }

    /// Whether a uprobe attaches on this thread, detached at once; for
    /// [`crate::caps::uprobes_need_sys_admin`]. It goes on this executable, at the start of
    /// its writable segment in the file: the kernel installs breakpoints only in mappings that
    /// may execute and are not writable, so this one is installed nowhere (a probe on the ELF
    /// header would write a breakpoint into this process's read-only mapping of it).
    pub fn try_attach(&self) -> bool {
        let Some(off) = writable_segment_offset(Path::new("/proc/self/exe")) else { return false };
        let mut ebpf = self.ebpf.lock().unwrap();
        let Some(Ok(p)) = ebpf.program_mut(program::TLS_FREE).map(<&mut UProbe>::try_from) else { return false };
        match p.attach([UProbeAttachLocation::AbsoluteOffset(off)], "/proc/self/exe", UProbeScope::AllProcesses) {
            Ok(link) => {
                let _ = p.detach(link);
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "tls: a uprobe without CAP_SYS_ADMIN");
                false
            }
        }
    }

    /// The file a process maps at `path` (inode `inode`): the path itself when it names that
    /// file here too (a process sharing this one's mounts), else the path through
    /// `/proc/<pid>/root`, which resolves in the process's own mounts (a container).
    fn file_of(&self, pid: u32, path: &str, inode: u64) -> PathBuf {
        use std::os::unix::fs::MetadataExt as _;
        if std::fs::metadata(path).is_ok_and(|m| m.ino() == inode) {
            return PathBuf::from(path);
        }
        self.procfs.join(pid.to_string()).join("root").join(path.trim_start_matches('/'))
    }

    /// Attaches an entry probe per (program, offset), and with `returns` the return probe on
    /// each but `SSL_free`.
    fn attach(
        &mut self,
        file: &Path,
        offsets: &[(&'static str, u64)],
        returns: bool,
    ) -> anyhow::Result<Vec<(&'static str, UProbeLinkId)>> {
        let mut ebpf = self.ebpf.lock().unwrap();
        let mut links = Vec::new();
        let mut result = Ok(());
        for (prog, off) in offsets {
            let r = (|| -> anyhow::Result<()> {
                let p: &mut UProbe = ebpf.program_mut(prog).context("program missing")?.try_into()?;
                let at = UProbeAttachLocation::AbsoluteOffset(*off);
                links.push((*prog, p.attach([at], file, UProbeScope::AllProcesses).with_context(|| prog.to_string())?));
                if returns && ![program::TLS_FREE, program::TLS_HANDSHAKE].contains(prog) {
                    let r: &mut UProbe = ebpf.program_mut(program::TLS_RET).context("program missing")?.try_into()?;
                    links.push((
                        program::TLS_RET,
                        r.attach([at], file, UProbeScope::AllProcesses).context("return probe")?,
                    ));
                }
                Ok(())
            })();
            if r.is_err() {
                result = r;
                break;
            }
        }
        drop(ebpf);
        if let Err(e) = result {
            self.detach(links);
            return Err(e);
        }
        Ok(links)
    }

    /// Detaches probes, without waiting: the kernel waits for a grace period per probe it
    /// removes (tens to hundreds of milliseconds each), so the links are closed on a thread of
    /// their own (see [`release`]), and no scrape waits for it.
    fn detach(&mut self, links: Vec<(&'static str, UProbeLinkId)>) {
        let owned = self.take_links(links);
        let _ = std::thread::Builder::new().name("tls-detach".into()).spawn(move || release(owned));
    }

    /// Takes the links out of their programs, to close them outside the lock.
    fn take_links(&mut self, links: Vec<(&'static str, UProbeLinkId)>) -> Vec<aya::programs::uprobe::UProbeLink> {
        let mut ebpf = self.ebpf.lock().unwrap();
        let mut out = Vec::new();
        for (prog, link) in links {
            if let Some(Ok(p)) = ebpf.program_mut(prog).map(<&mut UProbe>::try_from)
                && let Ok(l) = p.take_link(link)
            {
                out.push(l);
            }
        }
        out
    }

    /// Deletes the connections of processes that are gone.
    fn sweep(&mut self, live: &HashSet<u32>) {
        let dead: Vec<TlsKey> = self.conns.keys().filter_map(Result::ok).filter(|k| !live.contains(&k.tgid)).collect();
        for k in dead {
            let _ = self.conns.remove(&k);
        }
    }
}

/// The file offset of the first writable loadable segment of an ELF file with file content.
fn writable_segment_offset(file: &Path) -> Option<u64> {
    use object::ObjectSegment as _;
    let f = std::fs::File::open(file).ok()?;
    // SAFETY: a read-only private mapping of this process's own executable, only parsed.
    let data = unsafe { memmap2::Mmap::map(&f) }.ok()?;
    let obj = object::File::parse(&*data).ok()?;
    obj.segments().find_map(|seg| match seg.flags() {
        object::SegmentFlags::Elf { p_flags, .. } if p_flags.0 & object::elf::PF_W.0 != 0 => {
            seg.file_range().1.gt(&0).then_some(seg.file_range().0)
        }
        _ => None,
    })
}

/// A file's identity as `/proc/<pid>/maps` writes it (device major and minor, inode).
fn file_id(m: &std::fs::Metadata) -> FileId {
    use std::os::unix::fs::MetadataExt as _;
    let dev = m.dev();
    ((libc::major(dev) as u64) << 32 | libc::minor(dev) as u64, m.ino())
}

/// File-backed executable mappings of a `/proc/<pid>/maps` text that may hold a TLS library:
/// ((device, inode), path).
fn candidates(maps: &str) -> impl Iterator<Item = (FileId, &str)> {
    maps.lines().filter_map(|line| {
        let mut f = line.split_ascii_whitespace();
        let (_range, perms, _off, dev, inode) = (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
        let path = f.next()?;
        if !perms.contains('x') || !path.starts_with('/') || f.next().is_some() {
            return None;
        }
        let (major, minor) = dev.split_once(':')?;
        let dev = u64::from_str_radix(major, 16).ok()? << 32 | u64::from_str_radix(minor, 16).ok()?;
        Some(((dev, inode.parse().ok()?), path))
    })
}

/// Names of TLS libraries the capture does not follow.
const OTHER_LIBRARIES: [(&str, &str); 5] = [
    ("libgnutls.so", "GnuTLS is not captured"),
    ("libssl3.so", "NSS is not captured"),
    ("libnss3.so", "NSS is not captured"),
    ("libwolfssl.so", "wolfSSL is not captured"),
    ("libmbedtls.so", "mbed TLS is not captured"),
];

/// Looks at one file: an OpenSSL-compatible library or binary, a skipped TLS library, or
/// nothing of interest. `inode` guards against a file replaced since it was mapped.
fn examine(file: &Path, path: &str, inode: u64) -> Kind {
    let name = path.rsplit('/').next().unwrap_or(path);
    if let Some((_, reason)) = OTHER_LIBRARIES.iter().find(|(prefix, _)| name.starts_with(prefix)) {
        return Kind::Skipped(reason);
    }
    let Ok(f) = std::fs::File::open(file) else { return Kind::None };
    use std::os::unix::fs::MetadataExt as _;
    if f.metadata().map(|m| m.ino()).ok() != Some(inode) {
        return Kind::None;
    }
    // SAFETY: a read-only private mapping of a file opened for reading; the bytes are only
    // parsed. A file truncated meanwhile by another process could fault on access: libraries and
    // executables a process maps are not rewritten in place (installers replace them).
    let Ok(data) = (unsafe { memmap2::Mmap::map(&f) }) else { return Kind::None };
    let Ok(obj) = object::File::parse(&*data) else { return Kind::None };
    let libssl = name.starts_with("libssl.so");
    let mut found: HashMap<&str, u64> = HashMap::new();
    let mut go: HashMap<&str, (u64, u64)> = HashMap::new();
    for sym in obj.dynamic_symbols().chain(obj.symbols()) {
        let Ok(n) = sym.name() else { continue };
        if !sym.is_definition() {
            continue;
        }
        if let Some((_, f)) = GO_FUNCTIONS.iter().find(|(_, f)| *f == n)
            && let Some(off) = file_offset(&obj, &sym)
        {
            go.insert(f, (off, sym.size()));
        }
        if let Some((_, f, _)) = ENTRY_PROBES.iter().find(|(_, f, _)| *f == n)
            && !found.contains_key(f)
            && let Some(off) = file_offset(&obj, &sym)
        {
            found.insert(f, off);
        }
    }
    let complete = ENTRY_PROBES.iter().all(|(_, f, required)| !required || found.contains_key(f));
    if complete {
        let offsets = ENTRY_PROBES.iter().filter_map(|(prog, f, _)| found.get(f).map(|o| (*prog, *o))).collect();
        return Kind::OpenSsl(offsets);
    }
    if !go.is_empty() {
        return go_probes(&obj, &data, &go);
    }
    if obj.section_by_name(".go.buildinfo").is_some() && obj.symbols().next().is_none() {
        return Kind::Skipped("stripped Go binary (no symbols to find crypto/tls in)");
    }
    if libssl {
        return Kind::Skipped("no SSL_read/SSL_write/SSL_free symbols");
    }
    Kind::None
}

/// The functions of Go's crypto/tls that are probed: (program, symbol).
const GO_FUNCTIONS: [(&str, &str); 4] = [
    (program::GO_TLS_READ, "crypto/tls.(*Conn).Read"),
    (program::GO_TLS_WRITE, "crypto/tls.(*Conn).Write"),
    (program::GO_TLS_CLOSE, "crypto/tls.(*Conn).Close"),
    (program::TLS_HANDSHAKE, "crypto/tls.(*Conn).handshakeContext"),
];

/// The file offset of a symbol's address.
fn file_offset(obj: &object::File<'_>, sym: &object::Symbol<'_, '_>) -> Option<u64> {
    let sec = obj.section_by_index(sym.section_index()?).ok()?;
    let (sec_off, _) = sec.file_range()?;
    match UProbeAttachLocation::from_virtual_address(sym.address(), sec.address(), sec_off) {
        Ok(UProbeAttachLocation::AbsoluteOffset(off)) => Some(off),
        _ => None,
    }
}

/// The Go toolchain version a binary was built with (its minor version: 21 for go1.21.5), from
/// the build information Go 1.18 and later embed inline (`.go.buildinfo`).
fn go_minor(obj: &object::File<'_>) -> Option<u32> {
    let data = obj.section_by_name(".go.buildinfo")?.data().ok()?;
    // A 14-byte magic, pointer size, flags (bit 1: inline strings), then at 32 the version as
    // a varint-prefixed string.
    if data.len() < 33 || !data.starts_with(b"\xff Go buildinf:") || data[15] & 2 == 0 {
        return None;
    }
    let len = data[32] as usize;
    let v = std::str::from_utf8(data.get(33..33 + len)?).ok()?;
    v.strip_prefix("go1.")?.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// The probes of a Go binary that uses crypto/tls (`funcs`: file offset and size of each
/// function found), or why it is skipped.
fn go_probes(obj: &object::File<'_>, data: &[u8], funcs: &HashMap<&str, (u64, u64)>) -> Kind {
    if obj.architecture() != object::Architecture::X86_64 {
        return Kind::Skipped("Go crypto/tls is captured on x86-64 only");
    }
    // The register ABI (arguments and results in registers, g in R14) from Go 1.17; the build
    // information that tells the version is inline from 1.18.
    if !go_minor(obj).is_some_and(|m| m >= 18) {
        return Kind::Skipped("Go before 1.18 is not captured");
    }
    let mut out = Vec::new();
    for (prog, name) in GO_FUNCTIONS {
        let Some(&(off, size)) = funcs.get(name) else {
            if prog == program::TLS_HANDSHAKE {
                continue;
            }
            return Kind::Skipped("crypto/tls functions not found");
        };
        let Some(code) = data.get(off as usize..(off + size) as usize).filter(|c| !c.is_empty()) else {
            return Kind::Skipped("crypto/tls function outside the file");
        };
        match prog {
            program::GO_TLS_WRITE => out.push((prog, off + after_stack_check(code))),
            program::GO_TLS_READ => {
                out.push((prog, off));
                let rets = return_offsets(code);
                if rets.is_empty() {
                    return Kind::Skipped("no return instruction found in crypto/tls");
                }
                out.extend(rets.into_iter().map(|r| (program::GO_TLS_RET, off + r)));
            }
            _ => out.push((prog, off)),
        }
    }
    Kind::Go(out)
}

/// Where a Go function's body starts: after the stack check of its prologue (`cmp rsp,
/// [r14+16]` or, for a large frame, a `lea` and a `cmp` on it, then a conditional jump to the
/// stack growth at the end), which a goroutine whose stack grew passes again from the top. 0
/// for a function without one. Nothing before it touches the argument registers.
fn after_stack_check(code: &[u8]) -> u64 {
    let mut d = iced_x86::Decoder::new(64, code, iced_x86::DecoderOptions::NONE);
    let mut ins = iced_x86::Instruction::default();
    let mut compared = false;
    for _ in 0..4 {
        if !d.can_decode() {
            break;
        }
        d.decode_out(&mut ins);
        match ins.mnemonic() {
            iced_x86::Mnemonic::Cmp if ins.memory_base() == iced_x86::Register::R14 => compared = true,
            iced_x86::Mnemonic::Jbe | iced_x86::Mnemonic::Jb if compared => return d.position() as u64,
            iced_x86::Mnemonic::Lea | iced_x86::Mnemonic::Cmp => {}
            _ => break,
        }
    }
    0
}

/// Offsets of the return instructions in a function's machine code (x86-64).
fn return_offsets(code: &[u8]) -> Vec<u64> {
    let mut d = iced_x86::Decoder::new(64, code, iced_x86::DecoderOptions::NONE);
    let mut out = Vec::new();
    let mut ins = iced_x86::Instruction::default();
    while d.can_decode() {
        let at = d.position() as u64;
        d.decode_out(&mut ins);
        if ins.is_invalid() {
            break;
        }
        if ins.mnemonic() == iced_x86::Mnemonic::Ret {
            out.push(at);
        }
    }
    out
}

impl Collector for Tls {
    fn name(&self) -> &'static str {
        "tls"
    }

    fn collect(&self, out: &mut Out) -> anyhow::Result<()> {
        let c = self.0.lock().unwrap();
        let mut attached = Family::gauge(
            "collector_tls_attached",
            "Files (TLS libraries, binaries with OpenSSL linked in) the TLS uprobes are attached to, one \
             series per file, with the processes mapping it at the last scan in collector_tls_processes.",
        );
        let mut procs = Family::gauge(
            "collector_tls_processes",
            "Processes mapping a file the TLS uprobes are attached to, at the last scan.",
        );
        let mut targets: Vec<&Target> = c.targets.values().collect();
        targets.sort_by(|a, b| a.path.cmp(&b.path));
        for t in targets {
            attached.add(&[("library", t.library), ("path", &t.path)], 1.0);
            procs.add(&[("library", t.library), ("path", &t.path)], t.pids as f64);
        }
        out.push(attached);
        out.push(procs);
        let mut skipped = Family::gauge(
            "collector_tls_skipped_files",
            "Files holding a TLS implementation the capture does not follow, by reason (each logged once).",
        );
        let mut by_reason: HashMap<&str, usize> = HashMap::new();
        for (_, reason) in c.skipped.values() {
            *by_reason.entry(reason).or_default() += 1;
        }
        let mut reasons: Vec<_> = by_reason.into_iter().collect();
        reasons.sort();
        for (reason, n) in reasons {
            skipped.add(&[("reason", reason)], n as f64);
        }
        out.push(skipped);
        let mut watched = Family::gauge(
            "collector_tls_watched_files",
            "Files watched for opens (TLS libraries and binaries attached since start-up, the host's libssl): a \
             process opening one is attached at once rather than at the next scan.",
        );
        watched.add(&[], c.opens.as_ref().map_or(0, |o| o.by_wd.len()) as f64);
        out.push(watched);
        Ok(())
    }
}

/// Closes uprobe links all at once, one thread each, and returns when all are closed: the
/// kernel's wait for a grace period after removing a probe is then shared by all of them
/// instead of paid once per probe (twenty probes took over 5 s one after the other).
fn release(links: Vec<aya::programs::uprobe::UProbeLink>) {
    std::thread::scope(|s| {
        for l in links {
            s.spawn(move || drop(l));
        }
    });
}

/// Reads the open events of the watched files, attaching at each (see [`Opens`]).
fn read_opens(mut inotify: Inotify, capture: Arc<Mutex<Capture>>) {
    let mut buf = [0u8; 4096];
    loop {
        let events: Vec<(WatchDescriptor, EventMask)> = match inotify.read_events_blocking(&mut buf) {
            Ok(events) => events.map(|e| (e.wd, e.mask)).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "tls: reading open events failed: attaching at the scans only");
                return;
            }
        };
        let mut c = capture.lock().unwrap();
        for (wd, mask) in events {
            if mask.contains(EventMask::IGNORED) {
                c.unwatched(&wd);
            } else if mask.contains(EventMask::OPEN) {
                c.opened(&wd);
            }
        }
    }
}

/// Detaches every probe before the process exits (SIGTERM), in parallel (see [`release`]):
/// left to the process's exit, the kernel would remove them one after the other.
pub fn shutdown() {
    let Some(capture) = CAPTURE.get() else { return };
    let mut c = capture.lock().unwrap();
    c.shutting_down = true;
    let links: Vec<_> = c.targets.drain().flat_map(|(_, t)| t.links).collect();
    let owned = c.take_links(links);
    drop(c);
    release(owned);
}

/// Runs the scans until the process exits (on a thread of its own, started after the
/// capabilities were dropped to those the scans need).
pub fn run(capture: Arc<Mutex<Capture>>) {
    if let Some(inotify) = capture.lock().unwrap().inotify.take() {
        let c = capture.clone();
        let started = std::thread::Builder::new().name("tls-open".into()).spawn(move || read_opens(inotify, c));
        if let Err(e) = started {
            tracing::warn!(error = %e, "tls: not watching for opens (thread)");
        }
    }
    let procfs = capture.lock().unwrap().procfs.clone();
    loop {
        std::thread::sleep(SCAN_INTERVAL);
        // Read without the lock, which an open of a watched file waits for.
        let maps = read_maps(&procfs);
        let mut c = capture.lock().unwrap();
        if c.shutting_down {
            return;
        }
        c.scan_maps(maps);
    }
}

/// Every process's id and memory map (`/proc/<pid>/maps`; None when it cannot be read); None
/// when procfs cannot be listed.
fn read_maps(procfs: &Path) -> Option<Vec<(u32, Option<String>)>> {
    let dir = std::fs::read_dir(procfs).ok()?;
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        out.push((pid, std::fs::read_to_string(entry.path().join("maps")).ok()));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_instructions() {
        // push rbp; mov rbp,rsp; test eax,eax; je +2; pop rbp; ret; xor eax,eax; pop rbp; ret
        let code = [0x55, 0x48, 0x89, 0xe5, 0x85, 0xc0, 0x74, 0x02, 0x5d, 0xc3, 0x31, 0xc0, 0x5d, 0xc3];
        assert_eq!(return_offsets(&code), vec![9, 13]);
        // 0xc3 inside an instruction is not a return: mov eax, 0xc3c3c3c3; ret
        assert_eq!(return_offsets(&[0xb8, 0xc3, 0xc3, 0xc3, 0xc3, 0xc3]), vec![5]);
    }

    #[test]
    fn this_executable_has_a_writable_segment() {
        let off = writable_segment_offset(Path::new("/proc/self/exe")).unwrap();
        assert!(off > 0);
    }

    #[test]
    fn go_prologue() {
        // cmp rsp,[r14+0x10]; jbe +0x40; push rbp
        let code = [0x49, 0x3b, 0x66, 0x10, 0x76, 0x40, 0x55];
        assert_eq!(after_stack_check(&code), 6);
        // lea r12,[rsp-0x100]; cmp r12,[r14+0x10]; jbe +0x40; push rbp
        let code = [0x4c, 0x8d, 0xa4, 0x24, 0x00, 0xff, 0xff, 0xff, 0x4d, 0x3b, 0x66, 0x10, 0x76, 0x40, 0x55];
        assert_eq!(after_stack_check(&code), 14);
        // No stack check: push rbp; ...
        assert_eq!(after_stack_check(&[0x55, 0x48, 0x89, 0xe5]), 0);
    }

    #[test]
    fn maps_candidates() {
        let maps = "\
55d0c0a00000-55d0c0a28000 r--p 00000000 fe:01 1048601                    /usr/bin/python3.11
55d0c0a28000-55d0c0d2e000 r-xp 00028000 fe:01 1048601                    /usr/bin/python3.11
7f5e3c000000-7f5e3c021000 rw-p 00000000 00:00 0 
7f5e3d1c7000-7f5e3d227000 r-xp 0001f000 fe:01 1057361                    /usr/lib/x86_64-linux-gnu/libssl.so.3
7f5e3d300000-7f5e3d301000 r-xp 00000000 00:00 0                          [vdso]
7f5e3d400000-7f5e3d401000 r-xp 00000000 00:1a 77                         /memfd:x (deleted)
";
        let c: Vec<_> = candidates(maps).collect();
        assert_eq!(
            c,
            vec![
                (((0xfe << 32) | 1, 1048601), "/usr/bin/python3.11"),
                (((0xfe << 32) | 1, 1057361), "/usr/lib/x86_64-linux-gnu/libssl.so.3"),
            ]
        );
    }

    #[test]
    fn examines_this_hosts_libssl_and_others() {
        // Debian's libssl3 (a dependency of the test machine's curl and nginx).
        let lib = Path::new("/usr/lib/x86_64-linux-gnu/libssl.so.3");
        use std::os::unix::fs::MetadataExt as _;
        let ino = std::fs::metadata(lib).unwrap().ino();
        match examine(lib, "/usr/lib/x86_64-linux-gnu/libssl.so.3", ino) {
            Kind::OpenSsl(offsets) => {
                let progs: Vec<&str> = offsets.iter().map(|(p, _)| *p).collect();
                assert_eq!(
                    progs,
                    [
                        program::TLS_READ,
                        program::TLS_WRITE,
                        program::TLS_READ_EX,
                        program::TLS_WRITE_EX,
                        program::TLS_FREE,
                        program::TLS_HANDSHAKE
                    ]
                );
                assert!(offsets.iter().all(|(_, o)| *o > 0));
            }
            k => panic!("{k:?}"),
        }
        // A binary without TLS, and a wrong inode.
        let sh = Path::new("/bin/sh");
        let ino = std::fs::metadata(sh).unwrap().ino();
        assert_eq!(examine(sh, "/bin/sh", ino), Kind::None);
        assert_eq!(examine(lib, "/usr/lib/x86_64-linux-gnu/libssl.so.3", ino), Kind::None);
        assert_eq!(examine(sh, "/usr/lib/libgnutls.so.30", ino), Kind::Skipped("GnuTLS is not captured"));
    }
}
