//! Cgroup v2: finding the hierarchy (pure v2, or hybrid with v2 at `unified/`), and turning the
//! cgroup ids the kernel programs record into a path and, where the path shows one, a container
//! id or systemd unit.
use std::{
    collections::{HashMap, HashSet},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::Mutex,
};

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

fn fs_magic(path: &Path) -> std::io::Result<i64> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_type as i64)
}

/// The cgroup v2 mount under `cgroupfs`: `cgroupfs` itself on a pure v2 host, or
/// `cgroupfs/unified` on a hybrid one. The error says what was found instead.
pub fn find_v2_root(cgroupfs: &Path) -> Result<PathBuf, String> {
    let mut seen = Vec::new();
    for candidate in [cgroupfs.to_path_buf(), cgroupfs.join("unified")] {
        match fs_magic(&candidate) {
            Ok(CGROUP2_SUPER_MAGIC) => return Ok(candidate),
            Ok(magic) => seen.push(format!("{} is not cgroup2 (fs magic {magic:#x})", candidate.display())),
            Err(e) => seen.push(format!("{}: {e}", candidate.display())),
        }
    }
    Err(format!("no cgroup v2 hierarchy found: {}", seen.join("; ")))
}

/// What a cgroup path says about its owner.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// Path below the v2 root, `/` for the root itself.
    pub path: String,
    /// Container id (64 hex characters) for Docker, containerd, CRI-O and Podman layouts.
    pub container_id: String,
    /// The systemd unit (`*.service`, `*.scope`, …) the cgroup is or belongs to.
    pub systemd_unit: String,
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Parses a cgroup path (relative to the v2 root) into an [`Identity`].
///
/// Recognised: `docker-<id>.scope`, `cri-containerd-<id>.scope`, `crio-<id>.scope`,
/// `libpod-<id>.scope` (systemd driver) and a bare `<id>` component (cgroupfs driver:
/// `/docker/<id>`, `/kubepods/…/<id>`). The systemd unit is the deepest component with a unit
/// suffix that is not a container scope.
pub fn identify(path: &str) -> Identity {
    let mut id = Identity { path: if path.is_empty() { "/".into() } else { path.into() }, ..Default::default() };
    for comp in path.split('/').filter(|c| !c.is_empty()) {
        let stem = comp.strip_suffix(".scope").unwrap_or(comp);
        let candidate = ["docker-", "cri-containerd-", "crio-", "libpod-"]
            .iter()
            .find_map(|p| stem.strip_prefix(p))
            .unwrap_or(stem);
        if is_container_id(candidate) {
            id.container_id = candidate.to_owned();
            continue;
        }
        const UNIT_SUFFIXES: [&str; 5] = [".service", ".scope", ".socket", ".mount", ".swap"];
        if UNIT_SUFFIXES.iter().any(|s| comp.ends_with(s)) {
            id.systemd_unit = comp.to_owned();
        }
    }
    id
}

/// Resolves cgroup ids (the v2 directory's inode number, which is what
/// `bpf_get_current_cgroup_id`/`bpf_skb_cgroup_id` return) to identities.
///
/// An id never seen before triggers a rescan of the hierarchy. Callers read the kernel maps
/// before resolving, so a cgroup that produced an entry existed before the rescan: an id the
/// rescan does not find has been deleted. Kernfs ids are 64-bit and never reused, so deleted ids
/// are remembered and cost one rescan each.
pub struct Resolver {
    /// `None` without a cgroup v2 hierarchy: ids cannot be resolved.
    root: Option<PathBuf>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    by_id: HashMap<u64, Identity>,
    deleted: HashSet<u64>,
}

impl Resolver {
    pub fn new(root: Option<PathBuf>) -> Self {
        Self { root, state: Mutex::new(State::default()) }
    }

    pub fn root(&self) -> Option<&Path> {
        self.root.as_deref()
    }

    /// Looks up every id; `None` for ids no longer in the hierarchy.
    pub fn resolve(&self, ids: impl IntoIterator<Item = u64> + Clone) -> HashMap<u64, Option<Identity>> {
        let Some(root) = &self.root else {
            let unresolved = Identity { path: "<no cgroup v2>".into(), ..Default::default() };
            return ids.into_iter().map(|id| (id, Some(unresolved.clone()))).collect();
        };
        let mut st = self.state.lock().unwrap();
        let unknown: Vec<u64> =
            ids.clone().into_iter().filter(|id| !st.by_id.contains_key(id) && !st.deleted.contains(id)).collect();
        if !unknown.is_empty() {
            let fresh = scan(root);
            // Identities of cgroups that vanished since the last scan stay known: their ids
            // still label counters read before they went.
            st.by_id.extend(fresh);
            for id in unknown {
                if !st.by_id.contains_key(&id) {
                    st.deleted.insert(id);
                }
            }
        }
        ids.into_iter().map(|id| (id, st.by_id.get(&id).cloned())).collect()
    }
}

/// Walks the hierarchy; cgroups vanishing during the walk are skipped.
fn scan(root: &Path) -> HashMap<u64, Identity> {
    let mut out = HashMap::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let Ok(meta) = std::fs::metadata(&dir) else { continue };
        out.insert(meta.ino(), identify(&rel));
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                let name = e.file_name().to_string_lossy().into_owned();
                stack.push((e.path(), format!("{rel}/{name}")));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f1c4d8bd1c1e2f3a4b5c6d7e8f90123456789abcdef0123456789abcdef0123";

    #[test]
    fn identities() {
        assert_eq!(identify(""), Identity { path: "/".into(), ..Default::default() });
        let i = identify("/system.slice/nginx.service");
        assert_eq!((i.container_id.as_str(), i.systemd_unit.as_str()), ("", "nginx.service"));
        let i = identify(&format!("/system.slice/docker-{ID}.scope"));
        assert_eq!((i.container_id.as_str(), i.systemd_unit.as_str()), (ID, ""));
        let i = identify(&format!("/docker/{ID}"));
        assert_eq!(i.container_id, ID);
        let i = identify(&format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-{ID}.scope"
        ));
        assert_eq!(i.container_id, ID);
        let i = identify(&format!("/kubepods/besteffort/pod12/{ID}"));
        assert_eq!(i.container_id, ID);
        let i = identify("/user.slice/user-0.slice/session-4.scope");
        assert_eq!(i.systemd_unit, "session-4.scope");
        // Not 64 hex characters: no container id.
        assert_eq!(identify("/docker/abc").container_id, "");
        assert_eq!(identify(&format!("/docker/{}x", &ID[..63])).container_id, "");
    }

    #[test]
    fn scan_maps_inodes_to_paths() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("system.slice/a.service")).unwrap();
        let ino = std::fs::metadata(dir.path().join("system.slice/a.service")).unwrap().ino();
        let r = Resolver::new(Some(dir.path().to_path_buf()));
        let got = r.resolve([ino, 1]);
        assert_eq!(got[&ino].as_ref().unwrap().path, "/system.slice/a.service");
        assert_eq!(got[&ino].as_ref().unwrap().systemd_unit, "a.service");
        assert!(got[&1].is_none());
    }

    #[test]
    fn v2_root_detection_reports_what_it_found() {
        let dir = tempfile::tempdir().unwrap();
        let err = find_v2_root(dir.path()).unwrap_err();
        assert!(err.contains("not cgroup2"), "{err}");
    }
}
