//! Workload identity: the names a user knows for what runs in a cgroup (Docker container and
//! compose service; Kubernetes namespace, pod, container and owner) and for a process (the
//! service name and namespace it declares the OpenTelemetry way). Everything is read from files
//! in userspace (the Docker engine's container store, the kubelet's log directories,
//! `/proc/<pid>/environ`), cached, and looked at again only when a new cgroup or process shows
//! up: nothing is done per packet. docs/metrics.md ("Identity labels") documents each label,
//! its source and its limits.
use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// Where the names come from.
#[derive(clap::Args, Debug, Clone)]
pub struct IdentityFlags {
    /// The kubelet's pod log directory (`<namespace>_<pod>_<uid>/<container>/`): namespace, pod
    /// and owner names of the pods whose uid a cgroup path shows. Mount it read-only in a
    /// container; absent, series carry no Kubernetes names.
    #[arg(long = "identity.pod-logs-dir", default_value = "/var/log/pods")]
    pub pod_logs_dir: PathBuf,

    /// The kubelet's container log links (`<pod>_<namespace>_<container>-<container id>.log`):
    /// the container name of a container id (needed for pods with more than one container).
    #[arg(long = "identity.container-logs-dir", default_value = "/var/log/containers")]
    pub container_logs_dir: PathBuf,

    /// The Docker engine's container store (`<container id>/config.v2.json`): container and
    /// compose names, read without the Docker socket.
    #[arg(long = "identity.docker-dir", default_value = "/var/lib/docker/containers")]
    pub docker_dir: PathBuf,

    /// Name processes by what they declare in their environment: OTEL_SERVICE_NAME, or
    /// service.name and service.namespace in OTEL_RESOURCE_ATTRIBUTES [default: enabled]. Reading
    /// another user's /proc/<pid>/environ needs CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE, which
    /// are then kept.
    #[arg(long = "identity.environment", overrides_with = "no_environment")]
    pub environment: bool,

    /// Do not read process environments (CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE are dropped
    /// with the others).
    #[arg(long = "no-identity.environment", overrides_with = "environment")]
    pub no_environment: bool,
}

impl Default for IdentityFlags {
    fn default() -> Self {
        Self {
            pod_logs_dir: "/var/log/pods".into(),
            container_logs_dir: "/var/log/containers".into(),
            docker_dir: "/var/lib/docker/containers".into(),
            environment: false,
            no_environment: false,
        }
    }
}

/// The names of a container's workload; empty strings where a source has none.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Workload {
    /// Docker's container name (without the leading `/`).
    pub container_name: String,
    /// `com.docker.compose.service` and `com.docker.compose.project` of a compose container.
    pub compose_service: String,
    pub compose_project: String,
    pub k8s_namespace: String,
    pub k8s_pod: String,
    pub k8s_container: String,
    /// The pod's controller, from the pod name ([`owner_of_pod`]); empty where not certain.
    pub k8s_owner: String,
}

impl Workload {
    /// The identity labels with a value (an empty label is the same as none to Prometheus, and
    /// host processes then carry none of them).
    pub fn labels(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("container_name", self.container_name.as_str()),
            ("k8s_namespace_name", &self.k8s_namespace),
            ("k8s_pod_name", &self.k8s_pod),
            ("k8s_container_name", &self.k8s_container),
            ("k8s_owner_name", &self.k8s_owner),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
    }

    /// `service_name` unless the process declares one: the Kubernetes owner, then the
    /// Kubernetes container, then the compose service.
    pub fn service(&self) -> Option<&str> {
        [&self.k8s_owner, &self.k8s_container, &self.compose_service]
            .into_iter()
            .find(|s| !s.is_empty())
            .map(|s| s.as_str())
    }

    /// `service_namespace` unless the process declares one: the Kubernetes namespace, then the
    /// compose project.
    pub fn namespace(&self) -> Option<&str> {
        [&self.k8s_namespace, &self.compose_project].into_iter().find(|s| !s.is_empty()).map(|s| s.as_str())
    }
}

/// The pod uid a cgroup path shows: `kubepods…-pod<uid>.slice` (systemd driver, `-` of the uid
/// written `_`) or `/kubepods/…/pod<uid>/` (cgroupfs driver). Static pods have a 32-hex uid.
pub fn pod_uid(path: &str) -> Option<String> {
    if !path.contains("kubepods") {
        return None;
    }
    path.split('/').rev().find_map(|comp| {
        let stem = comp.strip_suffix(".slice").unwrap_or(comp);
        let at = stem.rfind("pod")?;
        if at > 0 && !stem[..at].ends_with('-') {
            return None;
        }
        let uid = &stem[at + 3..];
        let ok = matches!(uid.len(), 32 | 36) && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-' || b == b'_');
        ok.then(|| uid.replace('_', "-"))
    })
}

/// The characters of generated name suffixes (k8s.io/apimachinery `rand.String`, and the
/// pod-template-hash through `rand.SafeEncodeString`): no vowels, no 0, 1 or 3.
const GENERATED: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn generated(s: &str, len: std::ops::RangeInclusive<usize>) -> bool {
    len.contains(&s.len()) && s.bytes().all(|b| GENERATED.contains(&b))
}

/// The owner of a pod, from the naming its controller uses:
/// - `<deployment>-<pod-template-hash>-<5 generated>`: the Deployment (through its ReplicaSet);
/// - `<cronjob>-<scheduled minute>-<5 generated>`, `<job>-<index>-<5 generated>`: the CronJob
///   or indexed Job;
/// - `<name>-<5 generated>`: the DaemonSet, Job or ReplicaSet `<name>`;
/// - `<statefulset>-<ordinal>`: the StatefulSet.
///
/// Anything else (static pods `<name>-<node>`, bare pods) has no owner it can be sure of: `None`.
pub fn owner_of_pod(pod: &str) -> Option<&str> {
    let (rest, last) = pod.rsplit_once('-')?;
    if rest.is_empty() {
        return None;
    }
    if generated(last, 5..=5) {
        if let Some((owner, mid)) = rest.rsplit_once('-')
            && !owner.is_empty()
            && (generated(mid, 6..=10) || (!mid.is_empty() && mid.bytes().all(|b| b.is_ascii_digit())))
        {
            return Some(owner);
        }
        return Some(rest);
    }
    let ordinal =
        !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()) && (last == "0" || !last.starts_with('0'));
    ordinal.then_some(rest)
}

/// Looks up container names. Lookups that find nothing are retried, at most every
/// [`RETRY`]: the kubelet creates a container's log link after its cgroup.
pub struct Containers {
    flags: IdentityFlags,
    state: Mutex<ContainerState>,
    /// Containers whose names are not known (they keep their container id only).
    unresolved: AtomicU64,
}

const RETRY: Duration = Duration::from_secs(10);

#[derive(Default)]
struct ContainerState {
    /// Per container id: the names, or when to look again.
    cache: HashMap<String, Result<Workload, Instant>>,
}

impl Containers {
    pub fn new(flags: IdentityFlags) -> Self {
        Self { flags, state: Mutex::new(ContainerState::default()), unresolved: AtomicU64::new(0) }
    }

    /// The names of container `id` (in the pod `pod_uid` when the path shows one), or `None`.
    pub fn lookup(&self, id: &str, pod_uid: Option<&str>) -> Option<Workload> {
        let mut st = self.state.lock().unwrap();
        match st.cache.get(id) {
            Some(Ok(w)) => return Some(w.clone()),
            Some(Err(retry)) if Instant::now() < *retry => return None,
            _ => {}
        }
        let found = pod_uid.and_then(|uid| self.kubernetes(id, uid)).or_else(|| self.docker(id));
        st.cache.insert(id.to_owned(), found.clone().ok_or_else(|| Instant::now() + RETRY));
        self.count(&st);
        found
    }

    fn count(&self, st: &ContainerState) {
        self.unresolved.store(st.cache.values().filter(|v| v.is_err()).count() as u64, Ordering::Relaxed);
    }

    /// Containers seen whose names are not known.
    pub fn unresolved(&self) -> u64 {
        self.unresolved.load(Ordering::Relaxed)
    }

    /// Forgets the containers that are not in `live` (the container ids of the hierarchy now).
    pub fn retain(&self, live: &HashSet<&str>) {
        let mut st = self.state.lock().unwrap();
        st.cache.retain(|id, _| live.contains(id.as_str()));
        self.count(&st);
    }

    fn kubernetes(&self, id: &str, uid: &str) -> Option<Workload> {
        let pod_dir = std::fs::read_dir(&self.flags.pod_logs_dir).ok()?.flatten().find_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let mut parts = name.splitn(3, '_');
            let (ns, pod, u) = (parts.next()?, parts.next()?, parts.next()?);
            (u == uid).then(|| (ns.to_owned(), pod.to_owned(), e.path()))
        });
        let (namespace, pod, dir) = pod_dir?;
        // The container: from its log link, else the pod's only container directory.
        let container = self.container_of_link(id, &namespace, &pod).or_else(|| {
            let dirs: Vec<String> = std::fs::read_dir(&dir)
                .ok()?
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .filter_map(|e| e.file_name().into_string().ok())
                .collect();
            (dirs.len() == 1).then(|| dirs[0].clone())
        });
        Some(Workload {
            k8s_owner: owner_of_pod(&pod).unwrap_or_default().to_owned(),
            k8s_namespace: namespace,
            k8s_pod: pod,
            k8s_container: container.unwrap_or_default(),
            ..Default::default()
        })
    }

    /// `<pod>_<namespace>_<container>-<id>.log` in the container log directory.
    fn container_of_link(&self, id: &str, namespace: &str, pod: &str) -> Option<String> {
        let suffix = format!("-{id}.log");
        let prefix = format!("{pod}_{namespace}_");
        std::fs::read_dir(&self.flags.container_logs_dir).ok()?.flatten().find_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let container = name.strip_suffix(&suffix)?.strip_prefix(&prefix)?;
            (!container.is_empty()).then(|| container.to_owned())
        })
    }

    /// The names in the container's `config.v2.json` (root's, mode 0600): through the
    /// privileged helper where it runs, else read here.
    fn docker(&self, id: &str) -> Option<Workload> {
        if crate::helper::usable() {
            let [container_name, compose_service, compose_project] = crate::helper::docker_names(id)?;
            return Some(Workload { container_name, compose_service, compose_project, ..Default::default() });
        }
        let raw = std::fs::read(self.flags.docker_dir.join(id).join("config.v2.json")).ok()?;
        parse_docker_config(&raw)
    }
}

/// The names in a Docker container's `config.v2.json`: `Name` and the compose labels.
pub fn parse_docker_config(raw: &[u8]) -> Option<Workload> {
    #[derive(serde::Deserialize)]
    struct Config {
        #[serde(rename = "Name")]
        name: String,
        #[serde(rename = "Config")]
        config: Option<Inner>,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        #[serde(rename = "Labels")]
        labels: Option<HashMap<String, String>>,
    }
    let c: Config = serde_json::from_slice(raw).ok()?;
    let labels = c.config.and_then(|i| i.labels).unwrap_or_default();
    let label = |k: &str| labels.get(k).cloned().unwrap_or_default();
    Some(Workload {
        container_name: c.name.trim_start_matches('/').to_owned(),
        compose_service: label("com.docker.compose.service"),
        compose_project: label("com.docker.compose.project"),
        ..Default::default()
    })
}

/// What a process declares of itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Declared {
    pub service_name: String,
    pub service_namespace: String,
}

/// The declaration in a process environment (`/proc/<pid>/environ`, NUL-separated):
/// `OTEL_SERVICE_NAME` wins over `service.name` in `OTEL_RESOURCE_ATTRIBUTES` (as the
/// OpenTelemetry SDKs do); `service.namespace` comes from the latter. Values there are
/// percent-encoded (W3C Baggage octets).
pub fn parse_environ(raw: &[u8]) -> Option<Declared> {
    let mut d = Declared::default();
    let mut attrs_name = String::new();
    for var in raw.split(|b| *b == 0) {
        let var = String::from_utf8_lossy(var);
        if let Some(v) = var.strip_prefix("OTEL_SERVICE_NAME=") {
            d.service_name = v.trim().to_owned();
        } else if let Some(v) = var.strip_prefix("OTEL_RESOURCE_ATTRIBUTES=") {
            for pair in v.split(',') {
                let Some((k, v)) = pair.split_once('=') else { continue };
                let v = percent_decode(v.trim());
                match k.trim() {
                    "service.name" => attrs_name = v,
                    "service.namespace" => d.service_namespace = v,
                    _ => {}
                }
            }
        }
    }
    if d.service_name.is_empty() {
        d.service_name = attrs_name;
    }
    (!d.service_name.is_empty() || !d.service_namespace.is_empty()).then_some(d)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A process as the HTTP programs key it: its cgroup id and its name (NUL-padded, as the
/// kernel records it).
pub type ProcessKey = (u64, [u8; 16]);

/// Declared names of processes, by [`ProcessKey`], found by walking `/proc` when a key not
/// seen before shows up (at most once per [`SCAN_EVERY`]); each process's environment is read
/// once. Processes of one cgroup and name that declare different names: the first found wins.
pub struct Processes {
    procfs: PathBuf,
    state: Mutex<ProcessState>,
}

const SCAN_EVERY: Duration = Duration::from_secs(1);

#[derive(Default)]
struct ProcessState {
    /// Processes already read, with the name they had (an exec changes it).
    read: HashMap<u32, [u8; 16]>,
    declared: HashMap<ProcessKey, Declared>,
    /// Keys a scan has covered.
    covered: HashSet<ProcessKey>,
    last_scan: Option<Instant>,
}

impl Processes {
    pub fn new(procfs: &Path) -> Self {
        Self { procfs: procfs.to_path_buf(), state: Mutex::new(ProcessState::default()) }
    }

    /// The declarations of `keys` (the keys in the map now; others are forgotten). `cgroup_of`
    /// turns a `/proc/<pid>/cgroup` v2 path into the cgroup's id.
    pub fn declared(
        &self,
        keys: &HashSet<ProcessKey>,
        cgroup_of: impl Fn(&str) -> Option<u64>,
    ) -> HashMap<ProcessKey, Declared> {
        let mut st = self.state.lock().unwrap();
        let st = &mut *st;
        if keys.iter().any(|k| !st.covered.contains(k)) && st.last_scan.is_none_or(|t| t.elapsed() >= SCAN_EVERY) {
            st.last_scan = Some(Instant::now());
            self.scan(st, &cgroup_of);
            st.covered.extend(keys.iter().copied());
        }
        st.covered.retain(|k| keys.contains(k));
        st.declared.retain(|k, _| keys.contains(k));
        st.declared.clone()
    }

    fn scan(&self, st: &mut ProcessState, cgroup_of: &impl Fn(&str) -> Option<u64>) {
        let Ok(dir) = std::fs::read_dir(&self.procfs) else { return };
        let mut alive = HashMap::new();
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            let Ok(comm) = std::fs::read(e.path().join("comm")) else { continue };
            let comm = comm_key(&comm);
            alive.insert(pid, comm);
            if st.read.get(&pid) == Some(&comm) {
                continue;
            }
            // Through the privileged helper where it runs (its OTEL_* variables only), else
            // read here. Unreadable (another user's process without CAP_DAC_READ_SEARCH and
            // CAP_SYS_PTRACE, or gone): nothing declared.
            let raw = if crate::helper::usable() {
                crate::helper::environ(pid)
            } else {
                std::fs::read(e.path().join("environ")).ok()
            };
            let Some(d) = raw.and_then(|raw| parse_environ(&raw)) else {
                continue;
            };
            let Some(id) = std::fs::read_to_string(e.path().join("cgroup"))
                .ok()
                .and_then(|s| s.lines().find_map(|l| l.strip_prefix("0::").map(str::to_owned)))
                .and_then(|p| cgroup_of(&p))
            else {
                continue;
            };
            st.declared.entry((id, comm)).or_insert(d);
        }
        st.read = alive;
    }
}

/// `/proc/<pid>/comm` as the kernel records it: at most 15 bytes, NUL-padded.
pub fn comm_key(comm: &[u8]) -> [u8; 16] {
    let comm = comm.strip_suffix(b"\n").unwrap_or(comm);
    let mut raw = [0u8; 16];
    let len = comm.len().min(15);
    raw[..len].copy_from_slice(&comm[..len]);
    raw
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_uids() {
        let uid = "0f4d6f3c-5b0c-4ad4-9d7b-2f8b3c1d9e01";
        let sd = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-ab.scope",
            uid.replace('-', "_")
        );
        assert_eq!(pod_uid(&sd).as_deref(), Some(uid));
        assert_eq!(
            pod_uid(&format!("/kubepods.slice/kubepods-pod{}.slice", uid.replace('-', "_"))).as_deref(),
            Some(uid)
        );
        assert_eq!(pod_uid(&format!("/kubepods/besteffort/pod{uid}/0123")).as_deref(), Some(uid));
        assert_eq!(pod_uid(&format!("/kubepods/pod{uid}/0123")).as_deref(), Some(uid));
        let static_uid = "6f1e2c0b9d8a7f6e5d4c3b2a19081726";
        assert_eq!(pod_uid(&format!("/kubepods/burstable/pod{static_uid}")).as_deref(), Some(static_uid));
        assert_eq!(pod_uid("/system.slice/pod1.service"), None);
        assert_eq!(pod_uid(&format!("/system.slice/pod{uid}")), None);
    }

    #[test]
    fn owners() {
        assert_eq!(owner_of_pod("checkout-7d4b9c8f6d-x2k9p"), Some("checkout"));
        assert_eq!(owner_of_pod("my-web-app-5f6b7c8d9-abcde"), None);
        assert_eq!(owner_of_pod("my-web-app-5f6b7c8d9-bcdfg"), Some("my-web-app"));
        assert_eq!(owner_of_pod("kube-proxy-x7k2p"), Some("kube-proxy"));
        assert_eq!(owner_of_pod("backup-28945920-j4q5w"), Some("backup"));
        assert_eq!(owner_of_pod("index-job-2-x7k2p"), Some("index-job"));
        assert_eq!(owner_of_pod("postgres-0"), Some("postgres"));
        assert_eq!(owner_of_pod("postgres-12"), Some("postgres"));
        assert_eq!(owner_of_pod("postgres-01"), None);
        assert_eq!(owner_of_pod("kube-apiserver-node1"), None);
        assert_eq!(owner_of_pod("etcd-control-plane"), None);
        assert_eq!(owner_of_pod("single"), None);
    }

    #[test]
    fn environments() {
        let env = |vars: &[&str]| parse_environ(vars.join("\0").as_bytes());
        assert_eq!(env(&["PATH=/bin", "HOME=/"]), None);
        let d = env(&["OTEL_SERVICE_NAME=checkout"]).unwrap();
        assert_eq!((d.service_name.as_str(), d.service_namespace.as_str()), ("checkout", ""));
        let d = env(&[
            "OTEL_RESOURCE_ATTRIBUTES=deployment.environment=prod,service.name=cart%20svc, service.namespace=shop",
        ])
        .unwrap();
        assert_eq!((d.service_name.as_str(), d.service_namespace.as_str()), ("cart svc", "shop"));
        let d =
            env(&["OTEL_RESOURCE_ATTRIBUTES=service.name=a,service.namespace=shop", "OTEL_SERVICE_NAME=b"]).unwrap();
        assert_eq!((d.service_name.as_str(), d.service_namespace.as_str()), ("b", "shop"));
        assert_eq!(percent_decode("a%2Cb%zz%4"), "a,b%zz%4");
    }

    #[test]
    fn docker_configs() {
        let raw = br#"{"ID":"x","Name":"/shop-web-1","Config":{"Labels":{"com.docker.compose.service":"web","com.docker.compose.project":"shop"}}}"#;
        let w = parse_docker_config(raw).unwrap();
        assert_eq!(
            (w.container_name.as_str(), w.compose_service.as_str(), w.compose_project.as_str()),
            ("shop-web-1", "web", "shop")
        );
        assert_eq!(w.service(), Some("web"));
        assert_eq!(w.namespace(), Some("shop"));
        let w = parse_docker_config(br#"{"Name":"/plain","Config":{"Labels":null}}"#).unwrap();
        assert_eq!((w.container_name.as_str(), w.service()), ("plain", None));
        assert!(parse_docker_config(b"{").is_none());
    }

    #[test]
    fn kubernetes_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let (pods, links) = (dir.path().join("pods"), dir.path().join("containers"));
        let uid = "0f4d6f3c-5b0c-4ad4-9d7b-2f8b3c1d9e01";
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        std::fs::create_dir_all(pods.join(format!("shop_checkout-7d4b9c8f6d-x2k9p_{uid}/app"))).unwrap();
        std::fs::create_dir_all(pods.join(format!("shop_checkout-7d4b9c8f6d-x2k9p_{uid}/sidecar"))).unwrap();
        std::fs::create_dir_all(&links).unwrap();
        std::fs::write(links.join(format!("checkout-7d4b9c8f6d-x2k9p_shop_sidecar-{b}.log")), "").unwrap();
        let c = Containers::new(IdentityFlags {
            pod_logs_dir: pods,
            container_logs_dir: links,
            docker_dir: dir.path().join("docker"),
            ..Default::default()
        });
        let w = c.lookup(&b, Some(uid)).unwrap();
        assert_eq!(
            (w.k8s_namespace.as_str(), w.k8s_pod.as_str(), w.k8s_container.as_str(), w.k8s_owner.as_str()),
            ("shop", "checkout-7d4b9c8f6d-x2k9p", "sidecar", "checkout")
        );
        // Two containers and no link: the pod is known, the container is not.
        let w = c.lookup(&a, Some(uid)).unwrap();
        assert_eq!((w.k8s_pod.as_str(), w.k8s_container.as_str()), ("checkout-7d4b9c8f6d-x2k9p", ""));
        assert_eq!(w.service(), Some("checkout"));
        // No pod directory: unresolved, counted while the container exists.
        let cid = "c".repeat(64);
        assert!(c.lookup(&cid, Some("11111111-2222-3333-4444-555555555555")).is_none());
        assert_eq!(c.unresolved(), 1);
        c.retain(&HashSet::from([a.as_str(), b.as_str()]));
        assert_eq!(c.unresolved(), 0);
    }
}
