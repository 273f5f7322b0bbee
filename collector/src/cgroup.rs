//! Cgroup v2: finding the hierarchy (pure v2, or hybrid with v2 at `unified/`), and turning the
//! cgroup ids the kernel programs record into a path and, where the path shows one, a container
//! id or systemd unit, and the container's names ([`crate::identity`]).
use std::{
    collections::{HashMap, HashSet},
    hash::Hash,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::identity::{self, Containers, Workload};

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
    /// The Kubernetes pod uid the path shows ([`identity::pod_uid`]).
    pub pod_uid: Option<String>,
    /// The container's names, when found ([`Containers`]).
    pub workload: Option<Arc<Workload>>,
}

/// The labels every per-cgroup family carries: `cgroup`, `container_id`, `systemd_unit` and
/// the workload's identity labels that have a value; `<deleted>` for a cgroup gone from the
/// hierarchy before it was seen. One place for every poller (disk, network).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Labels {
    path: String,
    container_id: String,
    systemd_unit: String,
    workload: Option<Arc<Workload>>,
}

impl Labels {
    pub fn of(id: Option<&Identity>) -> Self {
        match id {
            Some(i) => Self {
                path: i.path.clone(),
                container_id: i.container_id.clone(),
                systemd_unit: i.systemd_unit.clone(),
                workload: i.workload.clone(),
            },
            None => Self {
                path: "<deleted>".into(),
                container_id: String::new(),
                systemd_unit: String::new(),
                workload: None,
            },
        }
    }

    /// Appends the label pairs.
    pub fn push<'a>(&'a self, out: &mut Vec<(&'static str, &'a str)>) {
        out.extend([
            ("cgroup", self.path.as_str()),
            ("container_id", &self.container_id),
            ("systemd_unit", &self.systemd_unit),
        ]);
        if let Some(w) = &self.workload {
            out.extend(w.labels());
        }
    }
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
    let mut id = Identity {
        path: if path.is_empty() { "/".into() } else { path.into() },
        pod_uid: identity::pod_uid(path),
        ..Default::default()
    };
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
    /// Container names; `None`: containers are known by id only.
    containers: Option<Containers>,
}

#[derive(Default)]
struct State {
    by_id: HashMap<u64, Identity>,
    deleted: HashSet<u64>,
}

impl Resolver {
    pub fn new(root: Option<PathBuf>) -> Self {
        Self { root, state: Mutex::new(State::default()), containers: None }
    }

    /// Names containers too ([`Containers`]).
    pub fn with_containers(mut self, containers: Containers) -> Self {
        self.containers = Some(containers);
        self
    }

    /// Containers whose names were not found ([`Containers::unresolved`]).
    pub fn unresolved_containers(&self) -> Option<u64> {
        self.containers.as_ref().map(Containers::unresolved)
    }

    /// The id of the cgroup at `path` as `/proc/<pid>/cgroup` shows it (`0::` line). Read from
    /// a cgroup namespace other than the process's, the path starts with `/..` components up to
    /// the namespaces' common ancestor: the cgroup is then the one whose path ends with the
    /// rest, when exactly one does.
    pub fn id_of_path(&self, path: &str) -> Option<u64> {
        self.root.as_ref()?;
        let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        let up = comps.iter().take_while(|c| **c == "..").count();
        let rest = comps[up..].join("/");
        let find = |st: &State| -> Option<u64> {
            let mut hits = st.by_id.iter().filter(|(_, i)| {
                let p = i.path.trim_start_matches('/');
                if up == 0 { p == rest } else { !rest.is_empty() && (p == rest || p.ends_with(&format!("/{rest}"))) }
            });
            let (id, _) = hits.next()?;
            hits.next().is_none().then_some(*id)
        };
        let mut st = self.state.lock().unwrap();
        if let Some(id) = find(&st) {
            return Some(id);
        }
        let fresh = scan(self.root.as_ref()?);
        st.by_id.extend(fresh);
        find(&st)
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
            if let Some(c) = &self.containers {
                // Containers gone from the hierarchy no longer count as unnamed.
                c.retain(&fresh.values().map(|i| i.container_id.as_str()).filter(|c| !c.is_empty()).collect());
            }
            st.by_id.extend(fresh);
            for id in unknown {
                if !st.by_id.contains_key(&id) {
                    st.deleted.insert(id);
                }
            }
        }
        let mut out = HashMap::new();
        for id in ids {
            let mut found = st.by_id.get(&id).cloned();
            if let (Some(c), Some(i)) = (&self.containers, found.as_mut())
                && i.workload.is_none()
                && !i.container_id.is_empty()
                && let Some(w) = c.lookup(&i.container_id, i.pod_uid.as_deref())
            {
                i.workload = Some(Arc::new(w));
                st.by_id.insert(id, i.clone());
            }
            out.insert(id, found);
        }
        out
    }
}

impl Resolver {
    /// Whether cgroup `id` still exists: its directory is there with the same inode. Without
    /// a cgroup v2 hierarchy nothing can be told apart, and every id counts as alive.
    fn alive(&self, id: u64) -> bool {
        let Some(root) = &self.root else { return true };
        let path = match self.state.lock().unwrap().by_id.get(&id) {
            Some(i) => i.path.clone(),
            None => return false,
        };
        std::fs::metadata(root.join(path.trim_start_matches('/'))).is_ok_and(|m| m.ino() == id)
    }

    /// Liveness for one scrape: each cgroup is looked at once (a `stat` of its directory),
    /// however many entries it has, and not at all when nothing expires (`expires` false).
    pub fn gone_check(&self, expires: bool) -> Gone<'_> {
        Gone { resolver: self, expires, seen: HashMap::new() }
    }
}

/// `collector_identity_unresolved_containers`: a source of the registry's self metrics.
pub struct IdentityMetrics(pub Arc<Resolver>);

impl crate::metrics::Collector for IdentityMetrics {
    fn name(&self) -> &'static str {
        "identity"
    }

    fn collect(&self, out: &mut crate::metrics::Out) -> anyhow::Result<()> {
        if let Some(n) = self.0.unresolved_containers() {
            let mut f = crate::metrics::Family::gauge(
                "collector_identity_unresolved_containers",
                "Containers in the cgroup hierarchy with series whose names were not found (no Docker \
                 config, no kubelet pod log directory): their series carry the container id only.",
            );
            f.add(&[], n as f64);
            out.push(f);
        }
        Ok(())
    }
}

/// See [`Resolver::gone_check`].
pub struct Gone<'a> {
    resolver: &'a Resolver,
    expires: bool,
    seen: HashMap<u64, bool>,
}

impl Gone<'_> {
    /// Whether cgroup `id` no longer exists (always false when nothing expires).
    pub fn is(&mut self, id: u64) -> bool {
        self.expires && *self.seen.entry(id).or_insert_with(|| !self.resolver.alive(id))
    }
}

/// Expiry of series of deleted cgroups (`--collector.cgroup.ttl`), for one poller.
///
/// A map entry expires when its cgroup no longer exists and its value has not changed for
/// the TTL (a socket can outlive its cgroup and keep counting). An expired entry is deleted
/// from the kernel map, so maps do not fill up with the dead. Its last value is kept in
/// userspace while other, live entries still report under the same labels (a restarted
/// service has a new cgroup with the same path; processes share a service name), so counters
/// never go backwards; a label set whose every entry has expired disappears.
pub struct Expiry<K, L, V> {
    ttl: Duration,
    /// Counters keep expired values while their label set lives; gauges drop them.
    keep_retired: bool,
    state: Mutex<ExpiryState<K, L, V>>,
}

struct ExpiryState<K, L, V> {
    /// Entries of deleted cgroups: the value fingerprint, and since when it is unchanged.
    idle: HashMap<K, (u64, Instant)>,
    /// Summed last values of expired entries, per label set.
    retired: HashMap<L, V>,
}

/// One map entry as a poller read it.
pub struct Entry<K, L, V> {
    pub key: K,
    pub labels: L,
    /// The entry's cgroup no longer exists.
    pub gone: bool,
    /// Changes whenever the entry gets new data (e.g. a packet or request count).
    pub fingerprint: u64,
    pub value: V,
}

impl<K: Hash + Eq + Clone, L: Hash + Eq + Clone, V: Clone> Expiry<K, L, V> {
    /// For counters. `ttl` zero: nothing expires.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            keep_retired: true,
            state: Mutex::new(ExpiryState { idle: HashMap::new(), retired: HashMap::new() }),
        }
    }

    /// For gauges: an expired entry's value is dropped with it.
    pub fn gauge(ttl: Duration) -> Self {
        Self { keep_retired: false, ..Self::new(ttl) }
    }

    /// Whether entries can expire at all (TTL not zero).
    pub fn expires(&self) -> bool {
        !self.ttl.is_zero()
    }

    /// Sums the entries per label set (with the values of expired entries that still have
    /// live company) and returns the sums and the keys to delete from the map now.
    pub fn aggregate(
        &self,
        entries: Vec<Entry<K, L, V>>,
        zero: V,
        add: impl Fn(&mut V, &V),
    ) -> (HashMap<L, V>, Vec<K>) {
        self.aggregate_at(entries, zero, add, Instant::now())
    }

    fn aggregate_at(
        &self,
        entries: Vec<Entry<K, L, V>>,
        zero: V,
        add: impl Fn(&mut V, &V),
        now: Instant,
    ) -> (HashMap<L, V>, Vec<K>) {
        let mut st = self.state.lock().unwrap();
        let st = &mut *st;
        let mut sums: HashMap<L, V> = HashMap::new();
        let mut delete = Vec::new();
        let mut idle_seen = HashSet::new();
        for e in entries {
            if e.gone && !self.ttl.is_zero() {
                idle_seen.insert(e.key.clone());
                let since = match st.idle.get_mut(&e.key) {
                    Some((fp, since)) if *fp == e.fingerprint => *since,
                    Some(slot) => {
                        *slot = (e.fingerprint, now);
                        now
                    }
                    None => {
                        st.idle.insert(e.key.clone(), (e.fingerprint, now));
                        now
                    }
                };
                if now.duration_since(since) >= self.ttl {
                    if self.keep_retired {
                        add(st.retired.entry(e.labels).or_insert_with(|| zero.clone()), &e.value);
                    }
                    st.idle.remove(&e.key);
                    idle_seen.remove(&e.key);
                    delete.push(e.key);
                    continue;
                }
            }
            add(sums.entry(e.labels).or_insert_with(|| zero.clone()), &e.value);
        }
        st.idle.retain(|k, _| idle_seen.contains(k));
        // Retired values count only while their label set has live entries.
        st.retired.retain(|l, _| sums.contains_key(l));
        for (l, v) in &st.retired {
            if let Some(s) = sums.get_mut(l) {
                add(s, v);
            }
        }
        (sums, delete)
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
    fn expiry_keeps_counters_monotonic_and_drops_dead_series() {
        let ttl = Duration::from_secs(60);
        let x: Expiry<u64, &str, u64> = Expiry::new(ttl);
        let t0 = Instant::now();
        let e = |key, labels, gone, value| Entry { key, labels, gone, fingerprint: value, value };
        let run = |entries, secs| x.aggregate_at(entries, 0, |a, b| *a += b, t0 + Duration::from_secs(secs));
        // Cgroup 1 (path /a) is gone; cgroup 2 is alive with the same path (a restart); 3 is
        // gone alone under /b.
        let (sums, del) = run(vec![e(1, "/a", true, 10), e(2, "/a", false, 5), e(3, "/b", true, 7)], 0);
        assert_eq!((sums["/a"], sums["/b"], del.len()), (15, 7, 0));
        // New data on 3 restarts its clock.
        let (_, del) = run(vec![e(1, "/a", true, 10), e(2, "/a", false, 6), e(3, "/b", true, 8)], 30);
        assert!(del.is_empty());
        // 60 s after: 1 expires; /a keeps counting its value (no counter reset).
        let (sums, mut del) = run(vec![e(1, "/a", true, 10), e(2, "/a", false, 7), e(3, "/b", true, 8)], 60);
        assert_eq!((sums["/a"], sums["/b"]), (17, 8));
        assert_eq!(del, vec![1]);
        // The map entry is gone; the sum still holds it.
        let (sums, d) = run(vec![e(2, "/a", false, 9), e(3, "/b", true, 8)], 70);
        assert_eq!(sums["/a"], 19);
        assert!(d.is_empty());
        // 3 expires at 90 s: /b disappears.
        let (sums, d) = run(vec![e(2, "/a", false, 9), e(3, "/b", true, 8)], 90);
        del.extend(d);
        assert_eq!(del, vec![1, 3]);
        assert!(!sums.contains_key("/b"));
        // When /a's last entry dies and expires, /a disappears with its retired value.
        let (_, d) = run(vec![e(2, "/a", true, 9)], 100);
        assert!(d.is_empty());
        let (sums, d) = run(vec![e(2, "/a", true, 9)], 160);
        assert_eq!(d, vec![2]);
        assert!(sums.is_empty());
        let (sums, _) = run(vec![], 170);
        assert!(sums.is_empty());
        // TTL zero: nothing expires.
        let never: Expiry<u64, &str, u64> = Expiry::new(Duration::ZERO);
        let (sums, d) =
            never.aggregate_at(vec![e(1, "/a", true, 1)], 0, |a, b| *a += b, t0 + Duration::from_secs(1 << 30));
        assert_eq!((sums["/a"], d.len()), (1, 0));
    }

    #[test]
    fn v2_root_detection_reports_what_it_found() {
        let dir = tempfile::tempdir().unwrap();
        let err = find_v2_root(dir.path()).unwrap_err();
        assert!(err.contains("not cgroup2"), "{err}");
    }
}
