//! TLS capture, the daemon's half (the kernel's is collector-ebpf/src/tls.rs): finds the files
//! that hold a TLS library, attaches the uprobes to each once (by file: the kernel then fires
//! them in every process that maps it, including processes started later), keeps them there
//! for as long as the file exists, and deletes the kernel's state of connections whose process
//! exited without freeing them.
//!
//! - `elf`: what a file holds (OpenSSL's functions, Go's crypto/tls, another TLS library).
//! - `files`: processes' executable mappings and file identities, from procfs.
//! - `opens`: inotify watches on the files attached and on the libraries' directories.
//! - `reach`: how maps and files are read and probes attached: by this process, or through the
//!   privileged helper (`privileged`, its side), which leaves this process no capability.
//!
//! Files are found three ways: the host's `libssl.so*` at start-up (attached whether or not a
//! process maps them), every process's memory map once a second ([`SCAN_INTERVAL`]), and
//! libraries written or renamed into a watched directory. Probes leave a file when it is gone
//! (deleted or replaced, and no process maps it any more), or when more than `max_files` files
//! are attached (the least recently used one that no process maps).
use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData},
};
use collector_common::{
    http::tls::{Peer, RecvOffsets, TLS_CALL_SIZE, TLS_CONN_SIZE, TlsKey},
    http2::TLS_H2_CONN_SIZE,
    names::{map, program},
};

use crate::bpf::{self, Loader};

mod elf;
mod files;
mod metrics;
mod opens;
pub mod privileged;
mod probes;
mod reach;

use elf::{ENTRY_PROBES, GO_FUNCTIONS, Kind, examine};
use files::{FileId, Stamp};
use opens::{Event, Opens};
use reach::{Links, Meta, Missing, Reach};

/// How often the processes are looked at for new TLS libraries (and the attached files checked).
pub const SCAN_INTERVAL: Duration = Duration::from_secs(1);

/// Files attached at most, by default (`--collector.http.tls-max-files`).
pub const DEFAULT_MAX_FILES: u64 = 256;

/// Where the host's own TLS libraries are looked for (under `/proc/1/root`: the host's root
/// when the collector shares the host's process namespace; else under `/`).
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

/// Why probes left a file (`collector_tls_detached_files_total{reason}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gone {
    /// The file was deleted, and no process maps it any more.
    Deleted,
    /// Another file took its name (an upgrade), or it was rewritten in place, and no process
    /// maps it any more.
    Replaced,
    /// More than `max_files` files were attached: the least recently used one no process maps.
    Evicted,
}

impl Gone {
    const ALL: [Gone; 3] = [Gone::Deleted, Gone::Replaced, Gone::Evicted];

    fn label(self) -> &'static str {
        match self {
            Gone::Deleted => "deleted",
            Gone::Replaced => "replaced",
            Gone::Evicted => "evicted",
        }
    }
}

/// A file the uprobes are attached to.
struct Target {
    /// The path as processes name it.
    path: String,
    /// `openssl` or `go`.
    library: &'static str,
    /// Its probes.
    links: Links,
    /// Processes mapping it at the last scan.
    pids: usize,
    /// The last scan that saw it mapped, or the last open of it: eviction takes the least
    /// recently used first.
    last_used: Instant,
    /// Where this process reaches the file, to check it still exists: a path in this
    /// process's mounts, or one through `/proc/<via>/root` (a container's).
    reach: PathBuf,
    via: Option<u32>,
    /// The file when it was attached.
    stamp: Stamp,
    /// The file lost its name (deleted or replaced), since when: its probes go when no process
    /// maps it.
    unlinked: Option<(Gone, Instant)>,
    /// One of the host's libraries (in its library directories): never evicted.
    host: bool,
}

/// The state of the capture: the files examined, those attached, and the kernel's connections.
pub struct Capture {
    ebpf: Arc<Mutex<Ebpf>>,
    procfs: PathBuf,
    /// Who reads the processes' maps and files and attaches the probes.
    reach: Reach,
    /// The host's root, where its libraries are (set by [`Capture::begin`]).
    host_root: PathBuf,
    /// The programs are the uprobe_multi twins (see [`program::UPROBES`]).
    multi: bool,
    examined: HashMap<FileId, Kind>,
    targets: HashMap<FileId, Target>,
    /// Files skipped (path, reason), logged once each.
    skipped: HashMap<FileId, (String, &'static str)>,
    conns: BpfHashMap<MapData, TlsKey, [u8; TLS_CONN_SIZE]>,
    /// The HTTP/2 TLS connections (`TLS_H2_CONNS`), swept the same way.
    h2_conns: BpfHashMap<MapData, TlsKey, [u8; TLS_H2_CONN_SIZE]>,
    /// Per-thread and per-process entries the probes keep between calls (`TLS_CALLS`, keyed
    /// by thread or goroutine; `TLS_RECV`, by thread; `TLS_PROCS`, by process), swept the same
    /// way: LRU maps, but an exited process's entries would otherwise stay until evicted.
    calls: BpfHashMap<MapData, [u64; 2], [u8; TLS_CALL_SIZE]>,
    recv: BpfHashMap<MapData, u64, [u8; core::mem::size_of::<Peer>()]>,
    procs: BpfHashMap<MapData, u32, u8>,
    last_sweep: Instant,
    /// Attach failures by file, logged once, not tried again while the file is mapped.
    failed: HashSet<FileId>,
    /// File watches, when inotify is available; `inotify` is the instance, until [`run`] takes
    /// it to read its events.
    opens: Option<Opens>,
    inotify: Option<inotify::Inotify>,
    /// Files attached at most (`--collector.http.tls-max-files`).
    max_files: usize,
    /// Files whose probes went, by reason (`Gone::ALL` order).
    detached: [u64; 3],
    /// Files not attached because `max_files` files in use were.
    full: u64,
    /// Set by [`shutdown`]: nothing is attached any more.
    shutting_down: bool,
}

/// The capture, once the HTTP collector started it: the scanning thread and the self metrics
/// reach it here.
pub static CAPTURE: std::sync::OnceLock<Arc<Mutex<Capture>>> = std::sync::OnceLock::new();

/// The capture's self metrics, a source of the registry.
pub struct Tls(pub Arc<Mutex<Capture>>);

/// How a file came to be attached (for the log).
#[derive(Clone, Copy)]
enum By {
    /// A host library, at start-up.
    Host,
    /// A process maps it (a scan).
    Mapped(u32),
    /// A process opened it (it was attached before, then evicted).
    Opened,
    /// Written or renamed into a watched directory, or under the name of a replaced file.
    Created,
}

impl Capture {
    /// Loads the TLS programs and attaches the receive tracepoint; the uprobes are attached
    /// from [`Capture::begin`] on.
    pub fn start(loader: &mut Loader, procfs: &Path, max_files: usize) -> Result<Self, String> {
        // One link per program and file (removed after one grace period) where the kernel has
        // uprobe_multi links (6.6); one per probe elsewhere.
        let multi = aya::sys::is_uprobe_multi_supported(aya::sys::UProbeMultiFeature::LinkCreation).unwrap_or(false);
        let name = |p: &'static str| if multi { program::multi_of(p) } else { p };
        let kind = if multi { "uprobe.multi" } else { "uprobe" };
        for (prog, func, _) in ENTRY_PROBES {
            loader.load_uprobe(prog, name(prog), format!("{kind}:{func}"))?;
        }
        loader.load_uprobe(
            program::TLS_RET,
            name(program::TLS_RET),
            format!("uret{}:SSL_read,SSL_read_ex,SSL_write,SSL_write_ex", &kind[1..]),
        )?;
        for (prog, func) in GO_FUNCTIONS.iter().filter(|(p, _)| *p != program::TLS_HANDSHAKE) {
            loader.load_uprobe(prog, name(prog), format!("{kind}:{func}"))?;
        }
        loader.load_uprobe(
            program::GO_TLS_RET,
            name(program::GO_TLS_RET),
            format!("{kind}:returns of crypto/tls.(*Conn).Read"),
        )?;
        loader.attach_tracepoint(program::TLS_RECV, "tcp", "tcp_rcv_space_adjust")?;
        let conns = take_hash(loader, map::TLS_CONNS)?;
        let h2_conns = take_hash(loader, map::TLS_H2_CONNS)?;
        let calls = take_hash(loader, map::TLS_CALLS)?;
        let recv = take_hash(loader, map::TLS_RECV)?;
        let procs = take_hash(loader, map::TLS_PROCS)?;
        let (opens, inotify) = match Opens::new() {
            Ok((o, i)) => (Some(o), Some(i)),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "tls: no inotify: libraries new to the collector are attached at the first scan that \
                     sees them mapped (within a second), and evicted files when a process maps them again"
                );
                (None, None)
            }
        };
        Ok(Self {
            ebpf: loader.ebpf.clone(),
            procfs: procfs.to_path_buf(),
            reach: Reach::Own,
            host_root: PathBuf::from("/"),
            multi,
            examined: HashMap::new(),
            targets: HashMap::new(),
            skipped: HashMap::new(),
            conns,
            h2_conns,
            calls,
            recv,
            procs,
            last_sweep: Instant::now(),
            failed: HashSet::new(),
            opens,
            inotify,
            max_files: max_files.max(1),
            detached: [0; 3],
            full: 0,
            shutting_down: false,
        })
    }

    /// Starts attaching: the host's OpenSSL libraries, and every TLS library processes map
    /// now; `helper`: through the privileged helper (which was handed the programs), else by
    /// this process. Returns the files attached.
    pub fn begin(&mut self, helper: bool) -> Vec<String> {
        if helper {
            self.reach = Reach::Helper;
            let shared = self.inotify.as_ref().is_some_and(|i| {
                use std::os::fd::AsFd as _;
                self.reach.share_inotify(i.as_fd())
            });
            if !shared && self.inotify.take().is_some() {
                self.opens = None;
                tracing::warn!("tls: the helper took no watches: files are attached at the scans only");
            }
        }
        self.attach_host_libraries();
        self.scan()
    }

    /// The descriptors of the uprobe programs, which the helper keeps to attach them.
    pub fn program_fds(&self) -> Vec<std::os::fd::RawFd> {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        let ebpf = self.ebpf.lock().unwrap();
        let mut names: Vec<&'static str> = ENTRY_PROBES.iter().map(|(p, _, _)| *p).collect();
        names.extend(GO_FUNCTIONS.iter().map(|(p, _)| *p));
        names.extend([program::TLS_RET, program::GO_TLS_RET]);
        names
            .into_iter()
            .filter_map(|n| ebpf.program(self.prog(n))?.fd().ok().map(|fd| fd.as_fd().as_raw_fd()))
            .collect()
    }

    /// The program loaded for `logical` (its uprobe_multi twin where those are used).
    fn prog(&self, logical: &'static str) -> &'static str {
        if self.multi { program::multi_of(logical) } else { logical }
    }

    /// Looks at every process (see [`Capture::scan_maps`]). Returns the files newly attached.
    pub fn scan(&mut self) -> Vec<String> {
        let maps = self.reach.maps(&self.procfs);
        self.scan_maps(maps)
    }

    /// Looks at every process's memory map (`maps`, from [`files::read_maps`]): attaches to TLS
    /// libraries not attached yet, checks that the attached files still exist (their probes go
    /// once one is gone and no process maps it), and now and then deletes the state of
    /// connections of exited processes. Returns the files newly attached.
    pub fn scan_maps(&mut self, maps: Option<Vec<(u32, Option<String>)>>) -> Vec<String> {
        let mut attached = Vec::new();
        let Some(maps) = maps else { return attached };
        let now = Instant::now();
        let mut users: HashMap<FileId, usize> = HashMap::new();
        // A process mapping each attached file that is reached through a process's root.
        let mut mapper: HashMap<FileId, (u32, String)> = HashMap::new();
        let mut live = HashSet::new();
        // Every candidate file some process maps, whatever it is.
        let mut mapped: HashSet<FileId> = HashSet::new();
        for (pid, maps) in &maps {
            let pid = *pid;
            live.insert(pid);
            let Some(maps) = maps else { continue };
            let mut seen = HashSet::new();
            for m in files::candidates(maps) {
                if !seen.insert(m.id) {
                    continue;
                }
                mapped.insert(m.id);
                if let Some(key) = self.target_key(m.id, m.path) {
                    // Attached already, maybe under another identity of the same file (its
                    // probes attached through `stat`: see `target_key`): the maps' from now on.
                    if key != m.id
                        && let Some(t) = self.targets.remove(&key)
                    {
                        self.targets.insert(m.id, t);
                    }
                    *users.entry(m.id).or_default() += 1;
                    mapper.entry(m.id).or_insert((pid, m.path.to_owned()));
                    continue;
                }
                if m.deleted {
                    // Not attached, and no name to reach it by: nothing to do.
                    continue;
                }
                if !self.examined.contains_key(&m.id) {
                    let file = self.file_of(pid, m.path, m.id.1);
                    let reach = self.reach;
                    let kind = examine(m.path, || reach.open(&file, m.id.1));
                    self.examined.insert(m.id, kind);
                }
                match &self.examined[&m.id] {
                    Kind::OpenSsl(_) | Kind::Go(_) => {
                        *users.entry(m.id).or_default() += 1;
                        if !self.failed.contains(&m.id) {
                            let file = self.file_of(pid, m.path, m.id.1);
                            if self.attach_target(m.id, m.path, &file, By::Mapped(pid)) {
                                attached.push(m.path.to_owned());
                            }
                        }
                    }
                    Kind::Skipped(reason) => {
                        if let std::collections::hash_map::Entry::Vacant(e) = self.skipped.entry(m.id) {
                            tracing::info!(path = m.path, pid, reason, "tls: library skipped");
                            e.insert((m.path.to_owned(), reason));
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
        self.failed.retain(|id| mapped.contains(id));
        for (id, t) in self.targets.iter_mut() {
            t.pids = users.get(id).copied().unwrap_or(0);
            if t.pids > 0 {
                t.last_used = now;
            }
            // A file reached through the root of a process that exited: through one that maps
            // it now.
            if t.via.is_some_and(|p| !live.contains(&p))
                && let Some((pid, path)) = mapper.get(id)
            {
                t.reach = self.procfs.join(pid.to_string()).join("root").join(path.trim_start_matches('/'));
                t.via = Some(*pid);
            }
        }
        let ids: Vec<FileId> = self.targets.keys().copied().collect();
        for id in ids {
            self.check(id);
        }
        if self.last_sweep.elapsed() >= Duration::from_secs(30) {
            self.last_sweep = Instant::now();
            self.sweep(&live);
        }
        attached
    }

    /// Checks that the attached file `id` still has its name. Once it lost it (deleted, or
    /// another file under its name), its probes go as soon as no process maps it, and not
    /// before a scan interval has passed (a rename, seen as a new name in a watched directory,
    /// gives it back). A TLS library that took its name is attached at once. A file rewritten
    /// in place is detached at once: its code moved under the probes.
    fn check(&mut self, id: FileId) {
        let Some(t) = self.targets.get(&id) else { return };
        // A container's file, reached through the root of a process that exited (none maps it
        // now): not checked until one maps it again.
        if t.via.is_some_and(|p| !self.procfs.join(p.to_string()).exists()) {
            return;
        }
        let (path, reach, stamp) = (t.path.clone(), t.reach.clone(), t.stamp);
        let now = Instant::now();
        let gone = match self.reach.stat(&reach) {
            Err(Missing::Gone) => Some(Gone::Deleted),
            Err(Missing::Other) => return,
            Ok(m) if m.stamp.ino != stamp.ino => {
                self.attach_new(&path, &reach, &m);
                Some(Gone::Replaced)
            }
            Ok(m) if m.stamp != stamp => {
                tracing::warn!(path, "tls: an attached file was rewritten in place: probes moved to its new code");
                self.remove(id, Gone::Replaced);
                self.attach_new(&path, &reach, &m);
                return;
            }
            Ok(_) => None,
        };
        let Some(t) = self.targets.get_mut(&id) else { return };
        match (gone, t.unlinked) {
            (None, _) => t.unlinked = None,
            (Some(why), None) => {
                tracing::info!(
                    path = t.path,
                    why = why.label(),
                    processes = t.pids,
                    "tls: attached file lost its name"
                );
                t.unlinked = Some((why, now));
            }
            (Some(_), Some((why, since))) => {
                if t.pids == 0 && now.duration_since(since) >= SCAN_INTERVAL {
                    self.remove(id, why);
                }
            }
        }
    }

    /// Attaches the file now at `reach` (named `path`, metadata `m`) if it is a TLS library
    /// not attached yet: what took the name of a replaced file, or what was written into a
    /// watched directory. An attached file under a new name (renamed into place) is named so.
    fn attach_new(&mut self, path: &str, reach: &Path, m: &Meta) {
        let id = m.id;
        if let Some(t) = self.targets.get_mut(&id) {
            if t.path != path {
                t.path = path.to_owned();
                t.reach = reach.to_owned();
                t.unlinked = None;
            }
            return;
        }
        if self.target_key(id, path).is_some() || self.failed.contains(&id) {
            return;
        }
        let r = self.reach;
        let kind = examine(path, || r.open(reach, id.1));
        if matches!(kind, Kind::OpenSsl(_) | Kind::Go(_)) {
            self.examined.insert(id, kind);
            self.attach_target(id, path, reach, By::Created);
        }
    }

    /// Detaches file `id` for `why` (its watch goes too unless it was only evicted: opening it
    /// attaches it again).
    fn remove(&mut self, id: FileId, why: Gone) {
        let Some(t) = self.targets.remove(&id) else { return };
        match t.links {
            Links::Own(links) => self.detach(links),
            Links::Helper(handle) => reach::detach_helper(handle),
        }
        self.detached[Gone::ALL.iter().position(|g| *g == why).unwrap_or(0)] += 1;
        if why != Gone::Evicted
            && let Some(o) = self.opens.as_mut()
        {
            o.unwatch_file(id);
        }
        tracing::info!(path = t.path, why = why.label(), "tls: uprobes detached");
    }

    /// Makes room for one more attached file: evicts the least recently used file that no
    /// process maps while `max_files` are attached. False when every attached file is in use.
    fn make_room(&mut self) -> bool {
        while self.targets.len() >= self.max_files {
            let lru = self
                .targets
                .iter()
                .filter(|(_, t)| t.pids == 0 && !t.host)
                .min_by_key(|(_, t)| t.last_used)
                .map(|(id, _)| *id);
            match lru {
                Some(id) => self.remove(id, Gone::Evicted),
                None => return false,
            }
        }
        true
    }

    /// Attaches the probes of file `id` (examined already), reached at `file`, named `path`.
    /// Whether it is attached now; a failure is logged and not tried again while the file is
    /// mapped.
    fn attach_target(&mut self, id: FileId, path: &str, file: &Path, by: By) -> bool {
        if self.shutting_down {
            return false;
        }
        let (offsets, go) = match &self.examined[&id] {
            Kind::OpenSsl(o) => (o.clone(), false),
            Kind::Go(o) => (o.clone(), true),
            _ => return false,
        };
        let Ok(meta) = self.reach.stat(file) else { return false };
        if !self.make_room() {
            self.full += 1;
            tracing::warn!(path, max = self.max_files, "tls: not attached: as many files as allowed are in use");
            return false;
        }
        let api = if go { "Go crypto/tls" } else { "OpenSSL API" };
        let (pid, why) = match by {
            By::Host => (None, "host library"),
            By::Mapped(pid) => (Some(pid), "mapped"),
            By::Opened => (None, "opened"),
            By::Created => (None, "created"),
        };
        match self.reach.attach(self, file, id.1, &offsets, go) {
            Ok((links, programs)) => {
                tracing::info!(path, pid, api, programs, by = why, "tls: uprobes attached");
                let library = if go { "go" } else { "openssl" };
                let via = file.strip_prefix(&self.procfs).ok().and_then(|p| p.iter().next()?.to_str()?.parse().ok());
                let target = Target {
                    path: path.to_owned(),
                    library,
                    links,
                    pids: 0,
                    last_used: Instant::now(),
                    reach: file.to_owned(),
                    via,
                    stamp: meta.stamp,
                    unlinked: None,
                    host: matches!(by, By::Host) || self.in_host_library_dir(file),
                };
                self.targets.insert(id, target);
                let reach = self.reach;
                if let Some(o) = self.opens.as_mut() {
                    o.watch_file(reach, id, path, file);
                    // A library's directory: what is written into it later (an upgrade, a new
                    // copy) is attached before a process uses it.
                    let name = Path::new(path).file_name().and_then(|n| n.to_str()).unwrap_or("");
                    if opens::is_libssl(name)
                        && let (Some(dir), Some(dpath)) = (file.parent(), Path::new(path).parent())
                    {
                        o.watch_dir(reach, dir, &dpath.display().to_string());
                    }
                }
                true
            }
            Err(e) => {
                tracing::warn!(path, pid, error = format!("{e:#}"), "tls: attaching failed");
                self.failed.insert(id);
                false
            }
        }
    }

    /// Whether this process reaches `file` in one of the host's library directories.
    fn in_host_library_dir(&self, file: &Path) -> bool {
        file.parent().is_some_and(|p| HOST_LIBRARY_DIRS.iter().any(|d| p == self.host_root.join(d)))
    }

    /// Attaches the host's own OpenSSL libraries (`libssl.so*` in the usual directories, not
    /// links to them such as the development package's `libssl.so`), whether or not a process
    /// maps them, and watches those directories for new ones.
    fn attach_host_libraries(&mut self) {
        let host = self.reach.host_libraries(&self.procfs);
        self.host_root = host.root.clone();
        let reach = self.reach;
        if let Some(o) = self.opens.as_mut() {
            for dir in &host.dirs {
                o.watch_dir(reach, &host.root.join(dir), &format!("/{dir}"));
            }
        }
        for (rel, id) in host.files {
            let file = host.root.join(&rel);
            let path = format!("/{rel}");
            if self.target_key(id, &path).is_some() {
                continue;
            }
            let kind = examine(&path, || reach.open(&file, id.1));
            if matches!(kind, Kind::OpenSsl(_)) {
                self.examined.insert(id, kind);
                self.attach_target(id, &path, &file, By::Host);
            }
        }
    }

    /// The key of the target of file `id`, named `path`: `id`, or that of a target with the
    /// same inode and path under another device number. Such a file was attached through its
    /// `stat` identity (a host library, one written into a watched directory), which is not
    /// always the one processes' maps show (btrfs gives a subvolume's files a device number of
    /// their own).
    fn target_key(&self, id: FileId, path: &str) -> Option<FileId> {
        if self.targets.contains_key(&id) {
            return Some(id);
        }
        self.targets.iter().find(|(k, t)| k.1 == id.1 && t.path == path).map(|(k, _)| *k)
    }

    /// Handles what a watch reported.
    fn event(&mut self, e: Event) {
        if self.shutting_down {
            return;
        }
        match e {
            Event::Opened { id, path, file } => {
                if let Some(t) = self.target_key(id, &path).and_then(|k| self.targets.get_mut(&k)) {
                    t.last_used = Instant::now();
                    return;
                }
                // Evicted earlier: attached again (the watch went stale if the file changed).
                if self.failed.contains(&id) || self.reach.stat(&file).map(|m| m.id).ok() != Some(id) {
                    return;
                }
                let reach = self.reach;
                if let std::collections::hash_map::Entry::Vacant(e) = self.examined.entry(id) {
                    let kind = examine(&path, || reach.open(&file, id.1));
                    if !matches!(kind, Kind::OpenSsl(_) | Kind::Go(_)) {
                        return;
                    }
                    e.insert(kind);
                }
                self.attach_target(id, &path, &file, By::Opened);
            }
            Event::Changed { id } => {
                self.check(id);
            }
            Event::Created { path, file } => {
                if let Ok(m) = self.reach.stat(&file) {
                    self.attach_new(&path, &file, &m);
                }
            }
        }
    }

    /// The file a process maps at `path` (inode `inode`): the path itself when it names that
    /// file here too (a process sharing this one's mounts), else the path through
    /// `/proc/<pid>/root`, which resolves in the process's own mounts (a container).
    fn file_of(&self, pid: u32, path: &str, inode: u64) -> PathBuf {
        if self.reach.stat(Path::new(path)).is_ok_and(|m| m.id.1 == inode) {
            return PathBuf::from(path);
        }
        self.procfs.join(pid.to_string()).join("root").join(path.trim_start_matches('/'))
    }

    /// Deletes the connections of processes that are gone, and what the probes keep per
    /// process and thread between calls.
    fn sweep(&mut self, live: &HashSet<u32>) {
        sweep_map(&mut self.conns, |k| !live.contains(&k.tgid));
        sweep_map(&mut self.h2_conns, |k| !live.contains(&k.tgid));
        sweep_map(&mut self.calls, |k| !live.contains(&call_process(k)));
        sweep_map(&mut self.recv, |k| !live.contains(&((k >> 32) as u32)));
        sweep_map(&mut self.procs, |k| !live.contains(k));
    }
}

/// Takes the hash (or LRU hash) map `name` out of the object.
fn take_hash<K: aya::Pod, V: aya::Pod>(loader: &mut Loader, name: &str) -> Result<BpfHashMap<MapData, K, V>, String> {
    loader.take_map(name).and_then(|m| Ok(BpfHashMap::try_from(m)?)).map_err(|e| format!("{e:#}"))
}

/// Deletes the entries of `map` whose key `gone` says belongs to a process that is gone.
fn sweep_map<K: aya::Pod, V: aya::Pod>(map: &mut BpfHashMap<MapData, K, V>, gone: impl Fn(&K) -> bool) {
    let dead: Vec<K> = map.keys().filter_map(Result::ok).filter(|k| gone(k)).collect();
    for k in dead {
        let _ = map.remove(&k);
    }
}

/// The process of a `TLS_CALLS` key: a thread's (`[pid_tgid, 0]`) or a goroutine's (`[g,
/// process | 1 << 63]`).
fn call_process(k: &[u64; 2]) -> u32 {
    if k[1] == 0 { (k[0] >> 32) as u32 } else { (k[1] & !(1 << 63)) as u32 }
}

/// Detaches every probe before the process exits (SIGTERM), in parallel (see [`release`]):
/// left to the process's exit, the kernel would remove them one after the other.
pub fn shutdown() {
    let Some(capture) = CAPTURE.get() else { return };
    let mut c = capture.lock().unwrap();
    c.shutting_down = true;
    let mut own = Vec::new();
    let mut helper = false;
    for (_, t) in c.targets.drain() {
        match t.links {
            Links::Own(l) => own.extend(l),
            Links::Helper(_) => helper = true,
        }
    }
    let owned = c.take_links(own);
    drop(c);
    if helper {
        reach::detach_all_helper();
    }
    probes::release(owned);
}

/// Runs the scans until the process exits (on a thread of its own, started after the
/// capabilities were dropped to those the scans need), and the watches' events on another.
pub fn run(capture: Arc<Mutex<Capture>>) {
    if let Some(inotify) = capture.lock().unwrap().inotify.take() {
        let c = capture.clone();
        let started = std::thread::Builder::new().name("tls-open".into()).spawn(move || {
            opens::read_events(inotify, |events| {
                let mut c = c.lock().unwrap();
                for (wd, mask, name) in events {
                    let e = c.opens.as_mut().and_then(|o| o.resolve(&wd, mask, name.as_ref()));
                    if let Some(e) = e {
                        c.event(e);
                    }
                }
            })
        });
        if let Err(e) = started {
            tracing::warn!(error = %e, "tls: not watching files (thread)");
        }
    }
    let (procfs, reach) = {
        let c = capture.lock().unwrap();
        (c.procfs.clone(), c.reach)
    };
    loop {
        std::thread::sleep(SCAN_INTERVAL);
        // Read without the lock, which an open of a watched file waits for.
        let maps = reach.maps(&procfs);
        let mut c = capture.lock().unwrap();
        if c.shutting_down {
            return;
        }
        if reach == Reach::Helper && !crate::helper::usable() {
            // The probes were the helper's: they went with it.
            c.shutting_down = true;
            c.targets.clear();
            if let Some(o) = c.opens.as_mut() {
                o.clear();
            }
            tracing::error!("tls: the privileged helper is gone, and its uprobes with it: HTTPS is no longer captured");
            return;
        }
        c.scan_maps(maps);
    }
}
