//! Filesystem space and inodes per mount (`statvfs(3)`), with node_exporter's semantics:
//! the host's mounts from `<procfs>/1/mountinfo` (the init process's mount namespace: the
//! host's when the collector runs in a container with the host's /proc), each measured at
//! `<rootfs>/<mount point>` (`--path.rootfs`, the host's root mounted into the container).
//! Pseudo filesystems and the mount points of container runtimes are left out by two regular
//! expressions (node_exporter's defaults); a mount point mounted over again counts once, as
//! the last mount (the one visible there).
//!
//! A `statvfs` can block for as long as a network filesystem does not answer: each runs on a
//! thread of its own with a time limit; a mount point that did not answer in time is reported
//! with `system_filesystem_device_error` 1 and not asked again until its call returns.
use std::{
    collections::{HashMap, HashSet},
    ffi::CString,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, mpsc},
    time::Duration,
};

use anyhow::Context as _;
use clap::Args;

use crate::{
    disk::Exclude,
    metrics::{Collector, Family, Out},
};

/// How long one `statvfs` may take before its mount point counts as not answering.
const STATVFS_TIMEOUT: Duration = Duration::from_secs(5);

/// The filesystem collector's flags.
#[derive(Args, Debug, Clone)]
pub struct FilesystemFlags {
    /// Regular expression of mount points the filesystem collector leaves out (node_exporter's
    /// default).
    #[arg(
        long = "collector.filesystem.mount-points-exclude",
        default_value = "^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)",
        value_parser = crate::disk::parse_exclude
    )]
    pub mount_points_exclude: Exclude,

    /// Regular expression of filesystem types the filesystem collector leaves out (pseudo
    /// filesystems; node_exporter's default).
    #[arg(
        long = "collector.filesystem.fs-types-exclude",
        default_value = "^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|iso9660|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|erofs|sysfs|tracefs)$",
        value_parser = crate::disk::parse_exclude
    )]
    pub fs_types_exclude: Exclude,
}

/// One mount measured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub device: String,
    pub fstype: String,
    pub mountpoint: String,
}

/// `statvfs(3)`'s figures, in bytes and inodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Space {
    pub size: u64,
    pub free: u64,
    pub avail: u64,
    pub files: u64,
    pub files_free: u64,
    pub readonly: bool,
}

/// The mounts to measure from mountinfo's entries (in mount order): excluded ones left out,
/// and a mount point mounted more than once kept as its last mount.
pub fn select(entries: &[procfs::process::MountInfo], flags: &FilesystemFlags) -> Vec<Mount> {
    let excluded = |e: &Exclude, s: &str| e.0.as_ref().is_some_and(|r| r.is_match(s));
    let mut out: Vec<Mount> = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    for m in entries {
        let mountpoint = m.mount_point.to_string_lossy().into_owned();
        if excluded(&flags.mount_points_exclude, &mountpoint) || excluded(&flags.fs_types_exclude, &m.fs_type) {
            continue;
        }
        let mount = Mount {
            device: m.mount_source.clone().unwrap_or_default(),
            fstype: m.fs_type.clone(),
            mountpoint: mountpoint.clone(),
        };
        match at.get(&mountpoint) {
            Some(&i) => out[i] = mount,
            None => {
                at.insert(mountpoint, out.len());
                out.push(mount);
            }
        }
    }
    out
}

/// `statvfs(3)` of `path`.
pub fn statvfs(path: &Path) -> std::io::Result<Space> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    let mut s = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path that outlives the call; `s` is a writable
    // `statvfs` the call fills (read below only when it returned 0).
    if unsafe { libc::statvfs(c.as_ptr(), s.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the call returned 0, so it filled `s`.
    let s = unsafe { s.assume_init() };
    // (The fields are u64 on the 64-bit Linux targets the collector is built for.)
    let unit = s.f_frsize;
    Ok(Space {
        size: s.f_blocks.saturating_mul(unit),
        free: s.f_bfree.saturating_mul(unit),
        avail: s.f_bavail.saturating_mul(unit),
        files: s.f_files,
        files_free: s.f_ffree,
        readonly: s.f_flag & libc::ST_RDONLY != 0,
    })
}

/// The filesystem collector.
pub struct Filesystem {
    procfs: PathBuf,
    rootfs: PathBuf,
    flags: FilesystemFlags,
    /// Mount points whose `statvfs` has not returned yet (past the time limit).
    stuck: Arc<Mutex<HashSet<String>>>,
}

impl Filesystem {
    /// Checks that the mount table can be read.
    pub fn new(procfs: &Path, rootfs: &Path, flags: &FilesystemFlags) -> Result<Self, String> {
        let f = Self {
            procfs: procfs.to_owned(),
            rootfs: rootfs.to_owned(),
            flags: flags.clone(),
            stuck: Default::default(),
        };
        f.mounts().map_err(|e| format!("{e:#}"))?;
        Ok(f)
    }

    fn mounts(&self) -> anyhow::Result<Vec<Mount>> {
        let path = self.procfs.join("1/mountinfo");
        let file = std::fs::File::open(&path).with_context(|| format!("reading {}", path.display()))?;
        let infos = procfs::FromRead::from_read(file).with_context(|| format!("parsing {}", path.display()))?;
        let procfs::process::MountInfos(entries) = infos;
        Ok(select(&entries, &self.flags))
    }

    /// `statvfs` of a mount point under the root, within the time limit; `None` if it did not
    /// answer in time (or has not answered since it last did not).
    fn measure(&self, mountpoint: &str) -> Option<std::io::Result<Space>> {
        if self.stuck.lock().unwrap().contains(mountpoint) {
            return None;
        }
        let path = self.rootfs.join(mountpoint.trim_start_matches('/'));
        let (tx, rx) = mpsc::channel();
        let stuck = self.stuck.clone();
        let name = mountpoint.to_owned();
        std::thread::spawn(move || {
            let r = statvfs(&path);
            if tx.send(r).is_err() {
                // Timed out: answered at last.
                stuck.lock().unwrap().remove(&name);
            }
        });
        match rx.recv_timeout(STATVFS_TIMEOUT) {
            Ok(r) => Some(r),
            Err(_) => {
                tracing::warn!(mountpoint, "statvfs did not answer in time: not asked again until it does");
                self.stuck.lock().unwrap().insert(mountpoint.to_owned());
                None
            }
        }
    }
}

impl Collector for Filesystem {
    fn name(&self) -> &'static str {
        "filesystem"
    }

    fn collect(&self, out: &mut Out) -> anyhow::Result<()> {
        let gauges = [
            ("system_filesystem_size_bytes", "Filesystem size in bytes (statvfs f_blocks × f_frsize)."),
            ("system_filesystem_free_bytes", "Free bytes, including those reserved for root (f_bfree)."),
            ("system_filesystem_avail_bytes", "Bytes available to unprivileged users (f_bavail)."),
            ("system_filesystem_files", "Inodes in all (f_files)."),
            ("system_filesystem_files_free", "Free inodes (f_ffree)."),
            ("system_filesystem_readonly", "1 when the filesystem is mounted read-only."),
            (
                "system_filesystem_device_error",
                "1 when statvfs of the mount point failed or did not answer within 5 s (then the other \
                 filesystem series of the mount are absent).",
            ),
        ];
        let mut families: Vec<Family> = gauges.iter().map(|(n, h)| Family::gauge(n, h)).collect();
        for m in self.mounts()? {
            let labels =
                [("device", m.device.as_str()), ("fstype", m.fstype.as_str()), ("mountpoint", m.mountpoint.as_str())];
            let space = match self.measure(&m.mountpoint) {
                Some(Ok(s)) => s,
                Some(Err(e)) => {
                    tracing::debug!(mountpoint = m.mountpoint, error = %e, "statvfs failed");
                    families[6].add(&labels, 1.0);
                    continue;
                }
                None => {
                    families[6].add(&labels, 1.0);
                    continue;
                }
            };
            let values =
                [space.size, space.free, space.avail, space.files, space.files_free, u64::from(space.readonly), 0];
            for (f, v) in families.iter_mut().zip(values) {
                f.add(&labels, v as f64);
            }
        }
        for f in families {
            out.push(f);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        f: FilesystemFlags,
    }

    const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
24 22 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
25 22 0:5 / /dev rw,nosuid,relatime shared:2 - devtmpfs udev rw,size=4096k
26 22 0:23 / /run rw,nosuid,nodev,noexec,relatime shared:5 - tmpfs tmpfs rw,size=1600000k
27 22 8:2 / /data rw,relatime shared:30 - xfs /dev/sdb1 rw
28 22 0:40 / /var/lib/docker/overlay2/abc/merged rw,relatime - overlay overlay rw,lowerdir=/x
29 27 8:3 / /data rw,relatime shared:31 - ext4 /dev/sdc1 rw
30 22 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw
";

    #[test]
    fn pseudo_container_and_covered_mounts_are_left_out() {
        let flags = Cli::parse_from(["x"]).f;
        let procfs::process::MountInfos(entries) = procfs::FromRead::from_read(MOUNTINFO.as_bytes()).unwrap();
        let got: Vec<(String, String, String)> =
            select(&entries, &flags).into_iter().map(|m| (m.device, m.fstype, m.mountpoint)).collect();
        let want = [("/dev/sda1", "ext4", "/"), ("tmpfs", "tmpfs", "/run"), ("/dev/sdc1", "ext4", "/data")];
        assert_eq!(got, want.map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned())));
        // Empty expressions leave nothing out (the covered /data still counts once).
        let all = Cli::parse_from([
            "x",
            "--collector.filesystem.mount-points-exclude=",
            "--collector.filesystem.fs-types-exclude=",
        ])
        .f;
        assert_eq!(select(&entries, &all).len(), 8);
    }

    #[test]
    fn statvfs_of_the_root_and_an_error() {
        let s = statvfs(Path::new("/")).unwrap();
        assert!(s.size > 0 && s.free <= s.size && s.avail <= s.free && s.files_free <= s.files);
        assert!(statvfs(Path::new("/no/such/path")).is_err());
    }
}
