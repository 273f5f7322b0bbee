//! What happens to the files the TLS capture knows, through inotify (no privilege, no mount
//! pinned): the files attached since start-up are watched for opens (a process starting to
//! use one that was evicted is attached again at once) and for changes (deleted, renamed over,
//! rewritten: checked at once), and the directories of the OpenSSL libraries (the host's
//! library directories, and those of every `libssl.so*` attached) for libraries written or
//! renamed into them (an upgrade, a new copy), which are attached before any process uses them.
//! Watches are added through the capture's reach ([`super::reach`]: by the privileged helper,
//! in this process's instance, where one runs) and removed here.
use std::{
    collections::{HashMap, HashSet},
    ffi::OsString,
    os::fd::{AsRawFd as _, RawFd},
    path::{Path, PathBuf},
};

use inotify::{EventMask, Inotify, WatchDescriptor};

use super::{files::FileId, privileged::WatchKind, reach::Reach};

/// At most this many files and directories are watched (a host has few TLS libraries).
pub const MAX_WATCHED: usize = 512;

/// What a watch is on.
#[derive(Clone, Debug)]
pub enum Watched {
    /// A file the probes were attached to: its identity, its path as processes name it, and
    /// where this process reaches it.
    File { id: FileId, path: String, file: PathBuf },
    /// A directory that holds an OpenSSL library: where this process reaches it, and its path
    /// as processes name it.
    Dir { dir: PathBuf, path: String },
}

/// What a watch reported.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A watched file was opened.
    Opened { id: FileId, path: String, file: PathBuf },
    /// A watched file changed: its links (deleted, renamed over) or its contents.
    Changed { id: FileId },
    /// A library was written or renamed into a watched directory.
    Created { path: String, file: PathBuf },
}

/// The watches.
pub struct Opens {
    /// The inotify instance's descriptor (the instance is [`read_events`]'s).
    fd: RawFd,
    by_wd: HashMap<i32, Watched>,
    files: HashMap<FileId, i32>,
    dirs: HashSet<PathBuf>,
    full_logged: bool,
}

/// Whether a file name is one of OpenSSL's libraries (`libssl.so`, `libssl.so.3`, ...).
pub fn is_libssl(name: &str) -> bool {
    name.starts_with("libssl.so")
}

impl Opens {
    /// The watches, and the inotify instance whose events [`read_events`] reads.
    pub fn new() -> std::io::Result<(Self, Inotify)> {
        let i = Inotify::init()?;
        let o = Self {
            fd: i.as_raw_fd(),
            by_wd: HashMap::new(),
            files: HashMap::new(),
            dirs: HashSet::new(),
            full_logged: false,
        };
        Ok((o, i))
    }

    /// Files and directories watched.
    pub fn count(&self) -> usize {
        self.by_wd.len()
    }

    fn room(&mut self, what: &str) -> bool {
        if self.by_wd.len() < MAX_WATCHED {
            return true;
        }
        if !self.full_logged {
            self.full_logged = true;
            tracing::info!(max = MAX_WATCHED, what, "tls: no more files watched (found by the scans only)");
        }
        false
    }

    /// Watches the file `file` (identity `id`, named `path`), when this process reaches the
    /// same file there as processes' maps name (not so through an overlay mount, whose files
    /// have identities of their own).
    pub fn watch_file(&mut self, reach: Reach, id: FileId, path: &str, file: &Path) {
        if reach.stat(file).map(|m| m.id).ok() != Some(id) {
            return;
        }
        if let Some(wd) = self.files.get(&id) {
            // Watched already: the path that reaches it now (an earlier one may go stale).
            self.by_wd.insert(*wd, Watched::File { id, path: path.to_owned(), file: file.to_owned() });
            return;
        }
        if !self.room(path) {
            return;
        }
        match reach.watch(self.fd, file, id.1, WatchKind::File) {
            Ok(wd) => {
                self.files.insert(id, wd);
                self.by_wd.insert(wd, Watched::File { id, path: path.to_owned(), file: file.to_owned() });
            }
            Err(e) => tracing::debug!(path, error = %e, "tls: watching a file failed"),
        }
    }

    /// Stops watching anything.
    pub fn clear(&mut self) {
        for wd in self.by_wd.keys() {
            // SAFETY: plain values; a watch of this process's own instance.
            unsafe { libc::inotify_rm_watch(self.fd, *wd) };
        }
        self.by_wd.clear();
        self.files.clear();
        self.dirs.clear();
    }

    /// Stops watching file `id` (deleted, or replaced: its probes are gone).
    pub fn unwatch_file(&mut self, id: FileId) {
        if let Some(wd) = self.files.remove(&id) {
            self.by_wd.remove(&wd);
            // SAFETY: plain values; a watch of this process's own instance.
            unsafe { libc::inotify_rm_watch(self.fd, wd) };
        }
    }

    /// Watches the directory `dir` (named `path` by processes) for libraries written or renamed
    /// into it.
    pub fn watch_dir(&mut self, reach: Reach, dir: &Path, path: &str) {
        if self.dirs.contains(dir) || !self.room(path) {
            return;
        }
        match reach.watch(self.fd, dir, 0, WatchKind::Dir) {
            Ok(wd) => {
                self.dirs.insert(dir.to_owned());
                // The same directory under two names (`/lib` a link to `/usr/lib`): one watch,
                // named as first found.
                self.by_wd.entry(wd).or_insert(Watched::Dir { dir: dir.to_owned(), path: path.to_owned() });
            }
            Err(e) => tracing::debug!(path, error = %e, "tls: watching a directory failed"),
        }
    }

    /// What an event of watch `wd` means.
    pub fn resolve(&mut self, wd: &WatchDescriptor, mask: EventMask, name: Option<&OsString>) -> Option<Event> {
        let wd = &wd.get_watch_descriptor_id();
        if mask.contains(EventMask::IGNORED) {
            // The kernel removed the watch (the file deleted and no longer in use, its file
            // system unmounted).
            match self.by_wd.remove(wd)? {
                Watched::File { id, .. } => {
                    self.files.remove(&id);
                    return Some(Event::Changed { id });
                }
                Watched::Dir { dir, .. } => {
                    self.dirs.remove(&dir);
                    return None;
                }
            }
        }
        match self.by_wd.get(wd)? {
            Watched::File { id, path, file } => {
                if mask.contains(EventMask::OPEN) {
                    Some(Event::Opened { id: *id, path: path.clone(), file: file.clone() })
                } else {
                    Some(Event::Changed { id: *id })
                }
            }
            Watched::Dir { dir, path } => {
                let name = name?.to_str()?;
                if !is_libssl(name) {
                    return None;
                }
                Some(Event::Created { path: format!("{}/{name}", path.trim_end_matches('/')), file: dir.join(name) })
            }
        }
    }
}

/// Reads the events of `inotify` until it fails, handing each batch to `handle`.
pub fn read_events(mut inotify: Inotify, mut handle: impl FnMut(Vec<(WatchDescriptor, EventMask, Option<OsString>)>)) {
    let mut buf = [0u8; 4096];
    loop {
        let events = match inotify.read_events_blocking(&mut buf) {
            Ok(events) => events.map(|e| (e.wd, e.mask, e.name.map(|n| n.to_owned()))).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "tls: reading file events failed: attaching at the scans only");
                return;
            }
        };
        handle(events);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real inotify events on a temporary directory: a library copied in, a watched file
    /// opened, rewritten and deleted.
    #[test]
    fn events_of_files_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (mut o, mut inotify) = Opens::new().unwrap();
        o.watch_dir(Reach::Own, d, "/libs");
        let lib = d.join("libssl.so.3");
        std::fs::write(&lib, b"elf").unwrap();
        std::fs::write(d.join("other.txt"), b"x").unwrap();
        let id = super::super::files::file_id(&std::fs::metadata(&lib).unwrap());
        o.watch_file(Reach::Own, id, "/libs/libssl.so.3", &lib);
        assert_eq!(o.count(), 2);
        drop(std::fs::File::open(&lib).unwrap());
        std::fs::remove_file(&lib).unwrap();
        let mut buf = [0u8; 4096];
        let mut got = Vec::new();
        let start = std::time::Instant::now();
        while got.len() < 4 && start.elapsed() < std::time::Duration::from_secs(5) {
            let events: Vec<_> = match inotify.read_events(&mut buf) {
                Ok(e) => e.map(|e| (e.wd, e.mask, e.name.map(|n| n.to_owned()))).collect(),
                Err(_) => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    continue;
                }
            };
            for (wd, mask, name) in events {
                if let Some(e) = o.resolve(&wd, mask, name.as_ref()) {
                    got.push(e);
                }
            }
        }
        assert_eq!(got[0], Event::Created { path: "/libs/libssl.so.3".into(), file: lib.clone() });
        assert_eq!(got[1], Event::Opened { id, path: "/libs/libssl.so.3".into(), file: lib.clone() });
        // The unlink (links count), then the watch removed with the file.
        assert!(got[2..].iter().all(|e| *e == Event::Changed { id }), "{got:?}");
        assert_eq!(o.count(), 1);
    }
}
