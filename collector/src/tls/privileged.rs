//! The HTTPS capture's privileged steps, run by the helper ([`crate::helper`]) for the daemon,
//! which holds no capability once it serves the network: reading every process's memory map,
//! reaching files through other processes' roots and other users' files, attaching and
//! detaching the uprobes, and watching the files attached.
//!
//! What the helper may touch is bounded by what it sees itself, not by what the daemon says:
//! - a file's content (a descriptor passed to the daemon, which examines it unprivileged;
//!   probes; a watch) only for a regular ELF file that some process maps executable now (its
//!   device and inode), that the helper attached before (its path), or that is named
//!   `libssl.so*` and has one link (no hard link made to another file) — never `/etc/shadow`,
//!   a device, a link, or a directory's listing. The last component of a path is never
//!   followed if it is a link, a file is first opened without any access (`O_PATH`: no device's
//!   `open` runs) and reopened for reading through that descriptor only once it is known to be
//!   a regular file, so what is read is what was checked;
//! - probes only at the offsets its own reading of that file gives (a copy of it read into
//!   memory: [`super::elf::examine_copy`]), never at offsets the daemon names;
//! - a file's metadata (identity, size, time) only for a regular file; a directory's watch
//!   only for a host library directory or one that holds a `libssl.so*` file, through a
//!   descriptor of it;
//! - the memory maps only as the executable file mappings they list (device, inode, path), at
//!   most [`MAX_MAPS`] bytes of them.
use std::{
    collections::{HashMap, HashSet},
    io::Write as _,
    os::{
        fd::{AsRawFd as _, OwnedFd, RawFd},
        unix::fs::{FileExt as _, MetadataExt as _, OpenOptionsExt as _},
    },
    path::{Component, Path, PathBuf},
    sync::{Arc, Mutex},
};

use aya::programs::uprobe::UProbeLinkId;

use super::{
    Capture, HOST_LIBRARY_DIRS,
    elf::{Kind, examine_copy},
    files::{self, FileId},
    opens::is_libssl,
};
use crate::helper::{MISSING, NONE, OK, REFUSED, Reply};

/// The requests (first byte; the helper's own are below 16).
/// Every process's executable file mappings.
pub const MAPS: u8 = 16;
/// A regular file's identity, size and modification time: `[STAT, path]`.
pub const STAT: u8 = 17;
/// A descriptor of a file, to examine: `[OPEN, inode (8), path]`.
pub const OPEN: u8 = 18;
/// The TLS probes on a file: `[ATTACH, inode (8), path]`; answers a handle (4), the number of
/// programs attached (2) and whether it is Go's crypto/tls (1).
pub const ATTACH: u8 = 19;
/// Detaches what a handle attached: `[DETACH, handle (4)]`.
pub const DETACH: u8 = 20;
/// Detaches everything, all at once (the daemon is stopping).
pub const DETACH_ALL: u8 = 21;
/// The daemon's inotify instance, passed with the request.
pub const INOTIFY: u8 = 22;
/// A watch on a file (`[WATCH, 0, inode (8), path]`) or a directory (`[WATCH, 1, 0 (8),
/// path]`) in that instance; answers the watch descriptor (4).
pub const WATCH: u8 = 23;
/// The host's OpenSSL libraries and library directories.
pub const HOST_LIBS: u8 = 24;

/// Whether `request` is one of the capture's.
pub fn is_request(request: &[u8]) -> bool {
    matches!(request.first(), Some(&(MAPS..=HOST_LIBS)))
}

/// Files attached since start, remembered (for an evicted file opened again) at most.
const MAX_REMEMBERED: usize = 4096;

/// The most of the mappings list sent (a host of very many processes: the maps of the rest
/// are left out of that scan, the processes listed as unreadable).
pub const MAX_MAPS: usize = 12 << 20;

/// What a watch is on (the masks are the helper's choice, not the daemon's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchKind {
    File,
    Dir,
}

impl WatchKind {
    fn mask(self) -> u32 {
        match self {
            WatchKind::File => libc::IN_OPEN | libc::IN_ATTRIB | libc::IN_CLOSE_WRITE,
            WatchKind::Dir => libc::IN_CLOSE_WRITE | libc::IN_MOVED_TO | libc::IN_ONLYDIR,
        }
    }
}

/// Adds a watch on `path` to the inotify instance `fd`.
pub fn add_watch(fd: RawFd, path: &Path, kind: WatchKind) -> std::io::Result<i32> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: a NUL-terminated path and plain values.
    let wd = unsafe { libc::inotify_add_watch(fd, c.as_ptr(), kind.mask()) };
    if wd < 0 { Err(std::io::Error::last_os_error()) } else { Ok(wd) }
}

/// The host's root as process 1 sees it (under `procfs`); `/` when that is not readable (a
/// sandbox that hides process 1's files, even from root).
pub fn host_root(procfs: &Path) -> PathBuf {
    let init_root = procfs.join("1").join("root");
    if std::fs::read_dir(&init_root).is_ok() { init_root } else { PathBuf::from("/") }
}

/// The helper's side of the capture.
pub struct Privileged {
    procfs: PathBuf,
    /// The capture as it was when the helper was forked: its loaded programs (their
    /// descriptors kept open) attach here. None where it was not started (and in tests).
    capture: Option<Arc<Mutex<Capture>>>,
    inotify: Option<OwnedFd>,
    handles: HashMap<u32, Vec<(&'static str, UProbeLinkId)>>,
    next: u32,
    /// Files some process mapped executable at the last look: (device, inode) as the maps
    /// write them, and (inode, file name) for file systems whose `stat` device differs from the
    /// maps' (btrfs subvolumes).
    mapped: HashSet<FileId>,
    mapped_names: HashSet<(u64, String)>,
    /// The paths of the files attached since start (a file replaced under one of them is
    /// attached at once).
    attached: HashSet<PathBuf>,
}

impl Privileged {
    pub fn new(procfs: &Path) -> Self {
        Self {
            procfs: procfs.to_owned(),
            capture: super::CAPTURE.get().cloned(),
            inotify: None,
            handles: HashMap::new(),
            next: 1,
            mapped: HashSet::new(),
            mapped_names: HashSet::new(),
            attached: HashSet::new(),
        }
    }

    /// The answer to one request (`fd`: the descriptor passed with it).
    pub fn answer(&mut self, request: &[u8], fd: Option<OwnedFd>) -> Reply {
        let (&kind, rest) = request.split_first().expect("is_request");
        match (kind, rest) {
            (MAPS, []) => Reply::ok(self.maps()),
            (STAT, path) => match checked_path(path) {
                Some(p) => stat(p),
                None => Reply::code(REFUSED),
            },
            (OPEN, _) if rest.len() > 8 => {
                let (ino, path) = split_inode(rest);
                let Some(p) = checked_path(path) else { return Reply::code(REFUSED) };
                match self.open_permitted(p, ino) {
                    Ok(f) => Reply { code: OK, payload: Vec::new(), fd: Some(f.into()) },
                    Err(code) => Reply::code(code),
                }
            }
            (ATTACH, _) if rest.len() > 8 => {
                let (ino, path) = split_inode(rest);
                let Some(p) = checked_path(path) else { return Reply::code(REFUSED) };
                self.attach(p, ino)
            }
            (DETACH, handle) if handle.len() == 4 => {
                let handle = u32::from_le_bytes(handle.try_into().unwrap());
                match self.handles.remove(&handle) {
                    Some(links) => {
                        let owned = self.take(links);
                        let _ = std::thread::Builder::new()
                            .name("tls-detach".into())
                            .spawn(move || super::probes::release(owned));
                        Reply::code(OK)
                    }
                    None => Reply::code(REFUSED),
                }
            }
            (DETACH_ALL, []) => {
                let links: Vec<_> = self.handles.drain().flat_map(|(_, l)| l).collect();
                let owned = self.take(links);
                super::probes::release(owned);
                Reply::code(OK)
            }
            (INOTIFY, []) => match fd {
                Some(fd) if self.inotify.is_none() && is_inotify(&fd) => {
                    self.inotify = Some(fd);
                    Reply::code(OK)
                }
                _ => Reply::code(REFUSED),
            },
            (WATCH, [k @ (0 | 1), more @ ..]) if more.len() > 8 => {
                let (ino, path) = split_inode(more);
                let Some(p) = checked_path(path) else { return Reply::code(REFUSED) };
                let kind = if *k == 0 { WatchKind::File } else { WatchKind::Dir };
                self.watch(p, ino, kind)
            }
            (HOST_LIBS, []) => Reply::ok(host_libraries_text(&self.procfs).into_bytes()),
            _ => Reply::code(REFUSED),
        }
    }

    /// Every process's executable file mappings, as `P <pid>` lines (`P <pid> -` where its map
    /// could not be read), each followed by its mappings in `/proc/<pid>/maps`'s own format
    /// (address, permissions and offset left out), one line per file.
    fn maps(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        self.mapped.clear();
        self.mapped_names.clear();
        for (pid, maps) in files::read_maps(&self.procfs).unwrap_or_default() {
            // Past the bound, the processes are still listed (the daemon sweeps the state of
            // those that are gone), their maps left for a later scan.
            let Some(maps) = maps.filter(|_| out.len() < MAX_MAPS) else {
                let _ = writeln!(out, "P {pid} -");
                continue;
            };
            let _ = writeln!(out, "P {pid}");
            let mut seen = HashSet::new();
            for m in files::candidates(&maps) {
                if !seen.insert(m.id) {
                    continue;
                }
                self.mapped.insert(m.id);
                self.mapped_names.insert((m.id.1, file_name(m.path).to_owned()));
                let deleted = if m.deleted { " (deleted)" } else { "" };
                let _ =
                    writeln!(out, "0 x 0 {:x}:{:x} {} {}{deleted}", m.id.0 >> 32, m.id.0 & 0xffff_ffff, m.id.1, m.path);
            }
        }
        out
    }

    /// Opens `path` if it is a regular ELF file of inode `ino` that the capture may read
    /// (see the module's documentation); the answer's code otherwise.
    fn open_permitted(&mut self, path: &Path, ino: u64) -> Result<std::fs::File, u8> {
        let f = open_regular(path)?;
        let m = f.metadata().map_err(|_| NONE)?;
        if m.ino() != ino {
            return Err(REFUSED);
        }
        let mut magic = [0u8; 4];
        if f.read_exact_at(&mut magic, 0).is_err() || &magic != b"\x7fELF" {
            return Err(REFUSED);
        }
        let id = files::file_id(&m);
        let name = file_name_of(path);
        let single = m.nlink() == 1;
        let known = |p: &Self| p.mapped.contains(&id) || (single && p.mapped_names.contains(&(ino, name.to_owned())));
        if known(self) || self.attached.contains(path) || (single && is_libssl(name)) {
            return Ok(f);
        }
        // Mapped since the last look (a process that just started)?
        self.maps();
        if known(self) { Ok(f) } else { Err(REFUSED) }
    }

    /// Attaches the probes to the file at `path` (inode `ino`), at the offsets this process
    /// finds in it.
    fn attach(&mut self, path: &Path, ino: u64) -> Reply {
        let f = match self.open_permitted(path, ino) {
            Ok(f) => f,
            Err(code) => return Reply::code(code),
        };
        let Some(capture) = self.capture.clone() else { return Reply::code(NONE) };
        let kind = examine_copy(&path.to_string_lossy(), &f);
        let (offsets, go) = match kind {
            Kind::OpenSsl(o) => (o, false),
            Kind::Go(o) => (o, true),
            _ => return Reply::code(REFUSED),
        };
        // The file examined, through its descriptor: no other file can take its name meanwhile.
        let at = PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()));
        let at = if at.exists() { at } else { path.to_owned() };
        match capture.lock().unwrap().attach(&at, &offsets, !go) {
            Ok(links) => {
                let handle = self.next;
                self.next = self.next.wrapping_add(1).max(1);
                let programs = links.len() as u16;
                self.handles.insert(handle, links);
                if self.attached.len() >= MAX_REMEMBERED {
                    self.attached.clear();
                }
                self.attached.insert(path.to_owned());
                let mut payload = handle.to_le_bytes().to_vec();
                payload.extend(programs.to_le_bytes());
                payload.push(go as u8);
                Reply::ok(payload)
            }
            Err(e) => Reply { code: NONE, payload: format!("{e:#}").into_bytes(), fd: None },
        }
    }

    fn take(&mut self, links: Vec<(&'static str, UProbeLinkId)>) -> Vec<aya::programs::uprobe::UProbeLink> {
        match &self.capture {
            Some(c) => c.lock().unwrap().take_links(links),
            None => Vec::new(),
        }
    }

    /// A watch on a permitted file or library directory, through a descriptor of it (the
    /// watch is on what was checked).
    fn watch(&mut self, path: &Path, ino: u64, kind: WatchKind) -> Reply {
        let opened = match kind {
            WatchKind::File => self.open_permitted(path, ino),
            WatchKind::Dir => self.library_dir(path),
        };
        let f = match opened {
            Ok(f) => f,
            Err(code) => return Reply::code(code),
        };
        let Some(inotify) = self.inotify.as_ref().map(|f| f.as_raw_fd()) else { return Reply::code(NONE) };
        match add_watch(inotify, Path::new(&format!("/proc/self/fd/{}", f.as_raw_fd())), kind) {
            Ok(wd) => Reply::ok(wd.to_le_bytes().to_vec()),
            Err(_) => Reply::code(NONE),
        }
    }

    /// Opens the directory `path` (not through a link in its last component) if it is one of
    /// the host's library directories, or holds an OpenSSL library; what is listed is what was
    /// opened.
    fn library_dir(&self, path: &Path) -> Result<std::fs::File, u8> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| if e.kind() == std::io::ErrorKind::NotFound { MISSING } else { REFUSED })?;
        let root = host_root(&self.procfs);
        let host = HOST_LIBRARY_DIRS.iter().any(|d| path == root.join(d));
        let libssl = || {
            std::fs::read_dir(format!("/proc/self/fd/{}", f.as_raw_fd()))
                .is_ok_and(|d| d.flatten().any(|e| e.file_name().to_str().is_some_and(is_libssl)))
        };
        if host || libssl() { Ok(f) } else { Err(REFUSED) }
    }
}

/// An inode (8 bytes, little-endian) and the rest.
fn split_inode(b: &[u8]) -> (u64, &[u8]) {
    (u64::from_le_bytes(b[..8].try_into().unwrap()), &b[8..])
}

/// A path the capture may name: absolute, UTF-8, no NUL and no `..` (which, after a
/// process's `root` link, would leave its root).
fn checked_path(b: &[u8]) -> Option<&Path> {
    let s = std::str::from_utf8(b).ok()?;
    let p = Path::new(s);
    (s.starts_with('/') && !s.contains('\0') && p.components().all(|c| c != Component::ParentDir)).then_some(p)
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn file_name_of(path: &Path) -> &str {
    path.file_name().and_then(|n| n.to_str()).unwrap_or("")
}

/// Opens a regular file for reading: first without any access and without following a link
/// in the last component (`O_PATH`: no device's `open` runs), then, once that descriptor is
/// known to be a regular file, for reading through it (the same file).
fn open_regular(path: &Path) -> Result<std::fs::File, u8> {
    let missing = |e: std::io::Error| if e.kind() == std::io::ErrorKind::NotFound { MISSING } else { REFUSED };
    let handle = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(missing)?;
    let m = handle.metadata().map_err(|_| NONE)?;
    if !m.is_file() {
        return Err(REFUSED);
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(format!("/proc/self/fd/{}", handle.as_raw_fd()))
        .map_err(|_| NONE)?;
    let again = f.metadata().map_err(|_| NONE)?;
    if !again.is_file() || (again.dev(), again.ino()) != (m.dev(), m.ino()) {
        return Err(REFUSED);
    }
    Ok(f)
}

/// The answer to [`STAT`]: device (as maps write it) and inode, size, modification time
/// (seconds, nanoseconds), 8 bytes each.
fn stat(path: &Path) -> Reply {
    // Not through a link in the last component (a file's own name only).
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => {
            let id = files::file_id(&m);
            let mut out = Vec::with_capacity(40);
            for v in [id.0, id.1, m.size(), m.mtime() as u64, m.mtime_nsec() as u64] {
                out.extend(v.to_le_bytes());
            }
            Reply::ok(out)
        }
        Ok(_) => Reply::code(REFUSED),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Reply::code(MISSING),
        Err(_) => Reply::code(NONE),
    }
}

/// Whether `fd` is an inotify instance.
fn is_inotify(fd: &OwnedFd) -> bool {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .is_ok_and(|l| l.to_str() == Some("anon_inode:inotify"))
}

/// The answer to [`HOST_LIBS`]: `R <root>`, then for each host library directory that exists
/// `D <dir>` and its OpenSSL libraries (regular files, not links) as `F <dir>/<name> <device>
/// <inode>`.
pub fn host_libraries_text(procfs: &Path) -> String {
    use std::fmt::Write as _;
    let root = host_root(procfs);
    let mut out = format!("R {}\n", root.display());
    for dir in HOST_LIBRARY_DIRS {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else { continue };
        let _ = writeln!(out, "D {dir}");
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str().filter(|n| is_libssl(n)) else { continue };
            if e.file_type().is_ok_and(|t| t.is_symlink()) {
                continue;
            }
            let Ok(m) = std::fs::metadata(e.path()) else { continue };
            if m.is_file() {
                let id: FileId = files::file_id(&m);
                let _ = writeln!(out, "F {dir}/{name} {} {}", id.0, id.1);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(p: &mut Privileged, r: &[u8]) -> Reply {
        assert!(is_request(r));
        p.answer(r, None)
    }

    fn with_inode(kind: u8, ino: u64, path: &str) -> Vec<u8> {
        [&[kind][..], &ino.to_le_bytes(), path.as_bytes()].concat()
    }

    /// An inotify instance handed to the helper, as the daemon does.
    fn with_inotify(p: &mut Privileged) {
        use std::os::fd::FromRawFd as _;
        // SAFETY: a new descriptor, owned here alone.
        let fd = unsafe { OwnedFd::from_raw_fd(libc::inotify_init1(libc::IN_CLOEXEC)) };
        assert_eq!(p.answer(&[INOTIFY], Some(fd)).code, OK);
    }

    #[test]
    fn files_the_capture_may_not_touch_are_refused() {
        let mut p = Privileged::new(Path::new("/proc"));
        with_inotify(&mut p);
        let shadow = std::fs::metadata("/etc/shadow").unwrap().ino();
        let d = tempfile::tempdir().unwrap();
        // Links under a library's name: to /etc/shadow, and to an ELF file some process maps
        // (this test's executable); a hard link to a copy of it (two links: not the file a
        // library would be); the executable through another process's descriptor link.
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let exe_ino = std::fs::metadata(&exe).unwrap().ino();
        let to_shadow = d.path().join("libssl.so.3");
        std::os::unix::fs::symlink("/etc/shadow", &to_shadow).unwrap();
        let to_exe = d.path().join("libssl.so.4");
        std::os::unix::fs::symlink(&exe, &to_exe).unwrap();
        let copy = d.path().join("copy");
        std::fs::copy(&exe, &copy).unwrap();
        let hard = d.path().join("libssl.so.5");
        std::fs::hard_link(&copy, &hard).unwrap();
        let copy_ino = std::fs::metadata(&copy).unwrap().ino();
        let exe_fd = std::fs::File::open(&exe).unwrap();
        let via_fd = format!("/proc/{}/fd/{}", std::process::id(), exe_fd.as_raw_fd());
        let s = |p: &Path| p.to_str().unwrap().to_owned();
        for bad in [
            with_inode(OPEN, shadow, "/etc/shadow"),
            with_inode(OPEN, shadow, "/etc/../etc/shadow"),
            with_inode(OPEN, 1, "etc/shadow"),
            with_inode(OPEN, 1, "/dev/null"),
            with_inode(OPEN, 1, "/proc/self/root/../../etc/shadow"),
            with_inode(OPEN, shadow, &s(&to_shadow)),
            with_inode(OPEN, exe_ino, &s(&to_exe)),
            with_inode(OPEN, copy_ino, &s(&hard)),
            with_inode(OPEN, exe_ino, &via_fd),
            with_inode(ATTACH, shadow, "/etc/shadow"),
            with_inode(ATTACH, copy_ino, &s(&hard)),
            [&[WATCH, 0][..], &shadow.to_le_bytes(), b"/etc/shadow"].concat(),
            [&[WATCH, 0][..], &shadow.to_le_bytes(), s(&to_shadow).as_bytes()].concat(),
            [&[WATCH, 1][..], &0u64.to_le_bytes(), b"/root"].concat(),
            [&[WATCH, 1][..], &0u64.to_le_bytes(), b"/etc"].concat(),
            [&[STAT][..], b"/dev/null"].concat(),
            [&[STAT][..], s(&to_shadow).as_bytes()].concat(),
            [&[STAT][..], b"relative"].concat(),
            vec![MAPS, 1],
            vec![DETACH, 1, 0, 0, 0],
            vec![DETACH, 1],
            vec![INOTIFY],
            vec![HOST_LIBS, 0],
            vec![OPEN, 1, 2, 3],
        ] {
            let r = ask(&mut p, &bad);
            assert_eq!((r.code, r.fd.is_none(), r.payload.is_empty()), (REFUSED, true, true), "{bad:?}");
        }
        // A vanished file.
        assert_eq!(ask(&mut p, &with_inode(OPEN, 1, "/nonexistent/libssl.so.3")).code, MISSING);
        assert_eq!(ask(&mut p, &[&[STAT][..], b"/nonexistent/libssl.so.3"].concat()).code, MISSING);
        // What passes the checks: a watch on the executable some process maps; no attach
        // without a capture loaded (a unit test has none).
        let ok = [&[WATCH, 0][..], &exe_ino.to_le_bytes(), exe.to_str().unwrap().as_bytes()].concat();
        assert_eq!(ask(&mut p, &ok).code, OK);
        assert_eq!(ask(&mut p, &with_inode(ATTACH, exe_ino, exe.to_str().unwrap())).code, NONE);
    }

    #[test]
    fn mapped_executables_and_libraries_are_opened() {
        let mut p = Privileged::new(Path::new("/proc"));
        // This test's own executable: mapped by this process.
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let ino = std::fs::metadata(&exe).unwrap().ino();
        let r = ask(&mut p, &with_inode(OPEN, ino, exe.to_str().unwrap()));
        assert_eq!(r.code, OK);
        let fd = r.fd.unwrap();
        assert_eq!(std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap().ino(), ino);
        // The wrong inode.
        assert_eq!(ask(&mut p, &with_inode(OPEN, ino + 1, exe.to_str().unwrap())).code, REFUSED);
        // Through this process's root, as for a container's file.
        let through = format!("/proc/{}/root{}", std::process::id(), exe.display());
        assert_eq!(ask(&mut p, &with_inode(OPEN, ino, &through)).code, OK);
        // An ELF file nobody maps, not named libssl: refused; under a libssl name: opened.
        let d = tempfile::tempdir().unwrap();
        let copy = d.path().join("copy");
        std::fs::copy(&exe, &copy).unwrap();
        let cino = std::fs::metadata(&copy).unwrap().ino();
        assert_eq!(ask(&mut p, &with_inode(OPEN, cino, copy.to_str().unwrap())).code, REFUSED);
        let lib = d.path().join("libssl.so.3");
        std::fs::rename(&copy, &lib).unwrap();
        assert_eq!(ask(&mut p, &with_inode(OPEN, cino, lib.to_str().unwrap())).code, OK);
        // Its metadata.
        let r = ask(&mut p, &[&[STAT][..], lib.to_str().unwrap().as_bytes()].concat());
        assert_eq!(r.code, OK);
        assert_eq!(u64::from_le_bytes(r.payload[8..16].try_into().unwrap()), cino);
        // The maps list this process and its executable.
        let r = ask(&mut p, &[MAPS]);
        let text = String::from_utf8(r.payload).unwrap();
        let me = format!("P {}\n", std::process::id());
        let at = text.find(&me).unwrap();
        assert!(text[at..].lines().nth(1).unwrap().ends_with(exe.to_str().unwrap()), "{}", &text[at..at + 300]);
        // The host's libraries.
        let r = ask(&mut p, &[HOST_LIBS]);
        let text = String::from_utf8(r.payload).unwrap();
        let root = host_root(Path::new("/proc"));
        assert!(text.starts_with(&format!("R {}\n", root.display())), "{text}");
        assert!(text.contains("F usr/lib/x86_64-linux-gnu/libssl.so.3 "), "{text}");
    }
}
