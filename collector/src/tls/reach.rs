//! How the capture reaches processes' maps and files, and attaches probes: by itself (where no
//! helper runs: this process then keeps the capabilities for it), or through the privileged
//! helper's requests ([`super::privileged`]), which leaves this process without any.
use std::{
    os::fd::{BorrowedFd, RawFd},
    path::{Path, PathBuf},
};

use aya::programs::uprobe::UProbeLinkId;

use super::{
    files::{self, FileId, Stamp},
    privileged::{self as p, WatchKind},
};
use crate::helper::{MISSING, OK, Reply};

/// Who reaches the files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// This process.
    Own,
    /// The privileged helper.
    Helper,
}

/// The probes of one file: links of this process's, or a handle of the helper's.
pub enum Links {
    Own(Vec<(&'static str, UProbeLinkId)>),
    Helper(u32),
}

/// A regular file's identity and stamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub id: FileId,
    pub stamp: Stamp,
}

/// Why a file's metadata could not be had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missing {
    /// No such file.
    Gone,
    /// Not a regular file, not readable, or the helper is gone.
    Other,
}

/// The host's OpenSSL libraries: the root they were found under, the library directories
/// there, and each library (its directory, name and identity).
#[derive(Debug, Default)]
pub struct HostLibraries {
    pub root: PathBuf,
    pub dirs: Vec<String>,
    pub files: Vec<(String, FileId)>,
}

fn ask(request: &[u8]) -> Option<Reply> {
    crate::helper::exchange(request, None)
}

fn with_inode(kind: u8, ino: u64, path: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt as _;
    [&[kind][..], &ino.to_le_bytes(), path.as_os_str().as_bytes()].concat()
}

impl Reach {
    /// Every process's id and memory map (its executable file mappings at least; None where it
    /// cannot be read); None when procfs cannot be listed.
    pub fn maps(self, procfs: &Path) -> Option<Vec<(u32, Option<String>)>> {
        if self == Reach::Own {
            return files::read_maps(procfs);
        }
        let r = ask(&[p::MAPS]).filter(|r| r.code == OK)?;
        let text = String::from_utf8(r.payload).ok()?;
        let mut out: Vec<(u32, Option<String>)> = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("P ") {
                let (pid, unreadable) = match rest.strip_suffix(" -") {
                    Some(pid) => (pid, true),
                    None => (rest, false),
                };
                let Ok(pid) = pid.parse() else { continue };
                out.push((pid, (!unreadable).then(String::new)));
            } else if let Some((_, Some(maps))) = out.last_mut() {
                maps.push_str(line);
                maps.push('\n');
            }
        }
        Some(out)
    }

    /// A regular file's identity and stamp.
    pub fn stat(self, path: &Path) -> Result<Meta, Missing> {
        if self == Reach::Own {
            return match std::fs::metadata(path) {
                Ok(m) if m.is_file() => Ok(Meta { id: files::file_id(&m), stamp: Stamp::of(&m) }),
                Ok(_) => Err(Missing::Other),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Missing::Gone),
                Err(_) => Err(Missing::Other),
            };
        }
        use std::os::unix::ffi::OsStrExt as _;
        let r = ask(&[&[p::STAT][..], path.as_os_str().as_bytes()].concat()).ok_or(Missing::Other)?;
        match r.code {
            OK if r.payload.len() == 40 => {
                let v = |i: usize| u64::from_le_bytes(r.payload[i * 8..i * 8 + 8].try_into().unwrap());
                Ok(Meta { id: (v(0), v(1)), stamp: Stamp { ino: v(1), size: v(2), mtime: (v(3) as i64, v(4) as i64) } })
            }
            MISSING => Err(Missing::Gone),
            _ => Err(Missing::Other),
        }
    }

    /// The file at `path` for reading, if it is still inode `ino`.
    pub fn open(self, path: &Path, ino: u64) -> Option<std::fs::File> {
        if self == Reach::Own {
            return super::elf::open_checked(path, ino);
        }
        let r = ask(&with_inode(p::OPEN, ino, path)).filter(|r| r.code == OK)?;
        let f = std::fs::File::from(r.fd?);
        use std::os::unix::fs::MetadataExt as _;
        (f.metadata().ok()?.ino() == ino).then_some(f)
    }

    /// Watches `path` (inode `ino` for a file) in the inotify instance `fd`.
    pub fn watch(self, fd: RawFd, path: &Path, ino: u64, kind: WatchKind) -> std::io::Result<i32> {
        if self == Reach::Own {
            return p::add_watch(fd, path, kind);
        }
        let mut req = with_inode(p::WATCH, ino, path);
        req.insert(1, (kind == WatchKind::Dir) as u8);
        match ask(&req) {
            Some(r) if r.code == OK && r.payload.len() == 4 => {
                Ok(i32::from_le_bytes(r.payload[..4].try_into().unwrap()))
            }
            Some(r) => Err(std::io::Error::other(format!("refused by the helper ({})", r.code))),
            None => Err(std::io::Error::other("no helper")),
        }
    }

    /// Hands the inotify instance `fd` to the helper, which adds the watches to it.
    pub fn share_inotify(self, fd: BorrowedFd<'_>) -> bool {
        self == Reach::Own || crate::helper::exchange(&[p::INOTIFY], Some(fd)).is_some_and(|r| r.code == OK)
    }

    /// The host's OpenSSL libraries and library directories.
    pub fn host_libraries(self, procfs: &Path) -> HostLibraries {
        let text = if self == Reach::Own {
            p::host_libraries_text(procfs)
        } else {
            match ask(&[p::HOST_LIBS]).filter(|r| r.code == OK) {
                Some(r) => String::from_utf8_lossy(&r.payload).into_owned(),
                None => return HostLibraries { root: PathBuf::from("/"), ..Default::default() },
            }
        };
        let mut out = HostLibraries::default();
        for line in text.lines() {
            match line.split_at_checked(2) {
                Some(("R ", root)) => out.root = PathBuf::from(root),
                Some(("D ", dir)) => out.dirs.push(dir.to_owned()),
                Some(("F ", rest)) => {
                    let mut it = rest.rsplitn(3, ' ');
                    let (Some(ino), Some(dev), Some(path)) = (it.next(), it.next(), it.next()) else { continue };
                    let (Ok(dev), Ok(ino)) = (dev.parse(), ino.parse()) else { continue };
                    out.files.push((path.to_owned(), (dev, ino)));
                }
                _ => {}
            }
        }
        out
    }

    /// Attaches the probes to `file` (inode `ino`): by this process at `offsets` (`go`:
    /// Go's crypto/tls), or by the helper at the offsets it finds itself.
    pub fn attach(
        self,
        capture: &mut super::Capture,
        file: &Path,
        ino: u64,
        offsets: &[(&'static str, u64)],
        go: bool,
    ) -> anyhow::Result<(Links, usize)> {
        if self == Reach::Own {
            let links = capture.attach(file, offsets, !go)?;
            let n = links.len();
            return Ok((Links::Own(links), n));
        }
        let r = ask(&with_inode(p::ATTACH, ino, file)).ok_or_else(|| anyhow::anyhow!("the helper is gone"))?;
        match r.code {
            OK if r.payload.len() == 7 => {
                let handle = u32::from_le_bytes(r.payload[..4].try_into().unwrap());
                let n = u16::from_le_bytes(r.payload[4..6].try_into().unwrap()) as usize;
                Ok((Links::Helper(handle), n))
            }
            _ if !r.payload.is_empty() => anyhow::bail!("{}", String::from_utf8_lossy(&r.payload)),
            code => anyhow::bail!("refused by the helper ({code})"),
        }
    }
}

/// Detaches the helper's probes of `handle` (it waits for the kernel on a thread of its own).
pub fn detach_helper(handle: u32) {
    let _ = ask(&[&[p::DETACH][..], &handle.to_le_bytes()].concat());
}

/// Detaches all of the helper's probes at once, and returns when they are.
pub fn detach_all_helper() {
    let _ = ask(&[p::DETACH_ALL]);
}
