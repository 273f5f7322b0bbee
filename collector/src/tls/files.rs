//! The files the TLS capture looks at, as procfs shows them: every process's executable
//! mappings (`/proc/<pid>/maps`), the identity of a file (device and inode, as maps writes it),
//! and what tells that a file was replaced.
use std::path::Path;

/// File identity: device and inode, as `/proc/<pid>/maps` shows them.
pub type FileId = (u64, u64);

/// A file's identity as `/proc/<pid>/maps` writes it (device major and minor, inode).
pub fn file_id(m: &std::fs::Metadata) -> FileId {
    use std::os::unix::fs::MetadataExt as _;
    let dev = m.dev();
    ((libc::major(dev) as u64) << 32 | libc::minor(dev) as u64, m.ino())
}

/// What a file was when its probes were attached: a file under the same name with another
/// inode, size or modification time is another file (installed over it, or rewritten in
/// place), whose code is not where the probes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub ino: u64,
    pub size: u64,
    pub mtime: (i64, i64),
}

impl Stamp {
    pub fn of(m: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt as _;
        Self { ino: m.ino(), size: m.size(), mtime: (m.mtime(), m.mtime_nsec()) }
    }
}

/// One executable file mapping of a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapped<'a> {
    pub id: FileId,
    /// The path as the process names it (without maps' ` (deleted)` suffix).
    pub path: &'a str,
    /// The file was deleted (or replaced) since the process mapped it: it has no name left.
    pub deleted: bool,
}

/// File-backed executable mappings of a `/proc/<pid>/maps` text that may hold a TLS library.
pub fn candidates(maps: &str) -> impl Iterator<Item = Mapped<'_>> {
    maps.lines().filter_map(|line| {
        // Five fields, then the path: the rest of the line after the padding (it may hold
        // spaces).
        let mut rest = line;
        let mut field = || {
            let s = rest.trim_start();
            let end = s.find(|c: char| c.is_ascii_whitespace()).unwrap_or(s.len());
            rest = &s[end..];
            Some(&s[..end]).filter(|f| !f.is_empty())
        };
        let (_range, perms, _off, dev, inode) = (field()?, field()?, field()?, field()?, field()?);
        let rest = rest.trim();
        let (path, deleted) = match rest.strip_suffix(" (deleted)") {
            Some(p) => (p, true),
            None => (rest, false),
        };
        if !perms.contains('x') || !path.starts_with('/') {
            return None;
        }
        let (major, minor) = dev.split_once(':')?;
        let dev = u64::from_str_radix(major, 16).ok()? << 32 | u64::from_str_radix(minor, 16).ok()?;
        Some(Mapped { id: (dev, inode.parse().ok()?), path, deleted })
    })
}

/// Every process's id and memory map (`/proc/<pid>/maps`; None when it cannot be read); None
/// when procfs cannot be listed.
pub fn read_maps(procfs: &Path) -> Option<Vec<(u32, Option<String>)>> {
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
    fn maps_candidates() {
        let maps = "\
55d0c0a00000-55d0c0a28000 r--p 00000000 fe:01 1048601                    /usr/bin/python3.11
55d0c0a28000-55d0c0d2e000 r-xp 00028000 fe:01 1048601                    /usr/bin/python3.11
7f5e3c000000-7f5e3c021000 rw-p 00000000 00:00 0 
7f5e3d1c7000-7f5e3d227000 r-xp 0001f000 fe:01 1057361                    /usr/lib/x86_64-linux-gnu/libssl.so.3
7f5e3d1c8000-7f5e3d228000 r-xp 0001f000 fe:01 1057362                    /opt/my app/lib/libssl.so.3 (deleted)
7f5e3d300000-7f5e3d301000 r-xp 00000000 00:00 0                          [vdso]
7f5e3d400000-7f5e3d401000 r-xp 00000000 00:1a 77                         /memfd:x (deleted)
";
        let c: Vec<_> = candidates(maps).collect();
        let dev = (0xfe << 32) | 1;
        assert_eq!(
            c,
            vec![
                Mapped { id: (dev, 1048601), path: "/usr/bin/python3.11", deleted: false },
                Mapped { id: (dev, 1057361), path: "/usr/lib/x86_64-linux-gnu/libssl.so.3", deleted: false },
                Mapped { id: (dev, 1057362), path: "/opt/my app/lib/libssl.so.3", deleted: true },
                Mapped { id: (0x1a, 77), path: "/memfd:x", deleted: true },
            ]
        );
    }

    #[test]
    fn stamps_tell_a_rewritten_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("lib.so");
        std::fs::write(&f, b"one").unwrap();
        let a = Stamp::of(&std::fs::metadata(&f).unwrap());
        assert_eq!(a, Stamp::of(&std::fs::metadata(&f).unwrap()));
        std::fs::write(&f, b"three").unwrap();
        let b = Stamp::of(&std::fs::metadata(&f).unwrap());
        assert_eq!(a.ino, b.ino);
        assert_ne!(a, b);
    }
}
