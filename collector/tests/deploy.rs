//! The deployment stack under deploy/, checked with the real tools (no Docker engine or Grafana
//! binary exists on these machines):
//! - promtool checks the Prometheus configuration and rules and runs the rule unit tests;
//! - docker-compose validates the compose file; the Kubernetes manifests are validated against
//!   the Kubernetes and Prometheus Operator schemas offline;
//! - the dashboards are checked for what Grafana needs;
//! - the collector starts with exactly the flags the image, compose file and DaemonSet pass, in
//!   a mount namespace laid out like the container (host /proc and /sys under /host only);
//! - a real Prometheus with the shipped configuration and rules scrapes a real collector while
//!   HTTP and disk traffic runs, and every dashboard query and alert rule is evaluated through
//!   its HTTP API. The only changes to the shipped configuration: the scrape target addresses,
//!   the rule file paths, and scrape/evaluation intervals of 1 s instead of 15 s so that the
//!   test gets enough samples in about half a minute (`$__rate_interval` is then 4 s).
//!
//! Tools: promtool and prometheus (Debian `prometheus`), docker-compose (Debian), and a
//! Python venv with kubernetes-validate and the Prometheus Operator models, found through
//! $DEPLOY_TOOLS or at target/deploy-tools; `cargo xtask test` installs all of them. A missing
//! tool fails the test with the command that installs it.
mod common;

#[path = "common/http.rs"]
mod http_util;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use common::{
    CgroupTree, Collector, in_cgroup,
    process::{KillOnDrop, free_port, run, run_ok, wait_port},
};
use http_util::{Client, TestServer};
use serde_json::{Value, json};

const INSTALL: &str = "run `cargo xtask test`, which installs it";
/// Scrape and rule evaluation interval of the test's Prometheus, seconds (15 in the stack).
const SCRAPE: u64 = 1;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn deploy(p: &str) -> PathBuf {
    repo().join("deploy").join(p)
}

/// A tool on PATH, or a failure naming how to install it.
fn tool(name: &str, how: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not found on PATH: {how}"))
}

/// The Python of the deployment tools venv (kubernetes-validate, PyYAML, Operator models).
fn tools_python() -> PathBuf {
    let dir =
        std::env::var_os("DEPLOY_TOOLS").map(|d| repo().join(d)).unwrap_or_else(|| repo().join("target/deploy-tools"));
    let py = dir.join("bin/python");
    assert!(
        py.is_file(),
        "{} missing: {INSTALL} (or: python3 -m venv {d} && {d}/bin/pip install kubernetes-validate \
         cloudcoil.models.prometheus_operator)",
        py.display(),
        d = dir.display()
    );
    py
}

/// Every YAML document of a file, as JSON (PyYAML of the tools venv: no YAML crate needed).
fn yaml(path: &Path) -> Vec<Value> {
    let out = run_ok(Command::new(tools_python()).args([
        "-c",
        "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]))",
        path.to_str().unwrap(),
    ]));
    serde_json::from_str::<Vec<Value>>(&out).unwrap()
}

fn files(dir: &str, ext: &[&str]) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(deploy(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| ext.iter().any(|x| e == *x)))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no {ext:?} files in deploy/{dir}");
    v
}

// ------------------------------------------------------------------------------------------
// Static checks

#[test]
fn promtool_checks_config_rules_and_rule_unit_tests() {
    let promtool = tool("promtool", &format!("{INSTALL} (apt-get install prometheus)"));
    let out = run_ok(Command::new(&promtool).args(["check", "config"]).arg(deploy("prometheus/prometheus.yml")));
    eprintln!("{out}");
    assert!(out.contains("rules found"), "the config loads no rules:\n{out}");
    let rules = files("prometheus/rules", &["yml", "yaml"]);
    eprintln!("{}", run_ok(Command::new(&promtool).args(["check", "rules"]).args(&rules)));
    let tests = files("prometheus/tests", &["yml", "yaml"]);
    let out = run_ok(Command::new(&promtool).args(["test", "rules"]).args(&tests).current_dir(deploy("prometheus")));
    eprintln!("{out}");
    assert!(out.contains("SUCCESS"), "{out}");
    // Every alert has a unit test.
    let tested: String = tests.iter().map(|t| std::fs::read_to_string(t).unwrap()).collect();
    for alert in alert_rules() {
        let name = alert["alert"].as_str().unwrap();
        assert!(tested.contains(&format!("alertname: {name}")), "alert {name} has no promtool unit test");
    }

    // The Kubernetes scrape configuration. Debian's Prometheus is built without Kubernetes
    // service discovery: when promtool says exactly that, the rest of the file (relabelling
    // included) is checked with the discovery block replaced by a static target.
    let k8s = deploy("kubernetes/prometheus-scrape-config.yml");
    let (ok, out) = run(Command::new(&promtool).args(["check", "config"]).arg(&k8s));
    if !ok {
        assert!(out.contains("field kubernetes_sd_configs not found"), "{}:\n{out}", k8s.display());
        eprintln!("promtool here has no Kubernetes discovery; checking the rest of {}", k8s.display());
        let mut cfg = yaml(&k8s).remove(0);
        for job in cfg["scrape_configs"].as_array_mut().unwrap() {
            let job = job.as_object_mut().unwrap();
            assert!(job.remove("kubernetes_sd_configs").is_some());
            job.insert("static_configs".into(), json!([{"targets": ["pod.example:9810"]}]));
        }
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k8s.yml");
        std::fs::write(&f, cfg.to_string()).unwrap();
        eprintln!("{}", run_ok(Command::new(&promtool).args(["check", "config"]).arg(&f)));
    }
}

/// No Docker engine here to build the image: check what can be checked without one. The
/// builder runs the toolchain script CI runs and the build commands CI's tests build with,
/// COPY sources exist, base images are pinned, and the runtime stage gets only the binary.
#[test]
fn dockerfile_builds_with_the_ci_toolchain_script() {
    let text = std::fs::read_to_string(deploy("Dockerfile")).unwrap();
    let ci = std::fs::read_to_string(repo().join(".ci/run")).unwrap();
    let script = ".ci/install-toolchain.sh";
    assert!(ci.lines().any(|l| l.trim() == script), ".ci/run does not run {script}");
    assert!(text.lines().any(|l| l.trim() == format!("RUN {script}")), "the builder does not run {script}");
    run_ok(Command::new("sh").arg("-n").arg(repo().join(script)));
    assert!(text.contains("cargo xtask build-ebpf") && text.contains("cargo build --release --locked -p collector"));
    let froms: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("FROM ")).collect();
    assert_eq!(froms.len(), 2, "builder and runtime stages: {froms:?}");
    for f in &froms {
        let image = f.split_whitespace().next().unwrap();
        assert!(image.contains(':') && !image.ends_with(":latest"), "unpinned base image {image}");
    }
    for l in text.lines().filter_map(|l| l.strip_prefix("COPY ")) {
        if l.starts_with("--from=") {
            continue;
        }
        let parts: Vec<&str> = l.split_whitespace().collect();
        for src in &parts[..parts.len() - 1] {
            assert!(repo().join(src).exists(), "COPY source {src} missing");
        }
    }
    // The runtime stage copies the binary the builder installed, and nothing else.
    let runtime = &text[text.rfind("FROM ").unwrap()..];
    let copies: Vec<&str> = runtime.lines().filter(|l| l.starts_with("COPY ")).collect();
    assert_eq!(copies, ["COPY --from=builder /out/collector /usr/local/bin/collector"]);
    assert!(text.contains("install -D -m 0755 target/release/collector /out/collector"));
}

#[test]
fn compose_file_validates() {
    let dc = tool("docker-compose", &format!("{INSTALL} (apt-get install docker-compose)"));
    run_ok(Command::new(dc).args(["-f"]).arg(deploy("docker-compose.yml")).args(["config", "-q"]));
    let compose = yaml(&deploy("docker-compose.yml")).remove(0);
    let services = compose["services"].as_object().unwrap();
    for s in ["collector", "prometheus", "grafana"] {
        let svc = &services[s];
        assert_eq!(svc["restart"], "unless-stopped", "{s}");
        assert!(svc["healthcheck"]["test"].is_array(), "{s} has no healthcheck");
    }
    for s in ["prometheus", "grafana"] {
        assert_eq!(services[s]["networks"], json!(["monitoring"]), "{s}");
    }
    assert_eq!(compose["networks"]["monitoring"]["driver"], "bridge");
    // The collector: host namespaces, privileges and the host mounts its flags point into.
    let c = &services["collector"];
    assert_eq!(c["pid"], "host");
    assert_eq!(c["network_mode"], "host");
    assert_eq!(c["privileged"], true);
    // The same host mounts as the DaemonSet, all read-only.
    let mounts = container_mounts();
    assert!(mounts.iter().all(|(_, _, ro)| *ro), "{mounts:?}");
    assert!(mounts.iter().any(|(src, dst, _)| src == "/proc" && dst == "/host/proc"), "{mounts:?}");
    // Prometheus reaches the host-network collector through the host gateway.
    assert!(services["prometheus"]["extra_hosts"].to_string().contains("host.docker.internal:host-gateway"));
    let prom = yaml(&deploy("prometheus/prometheus.yml")).remove(0);
    assert!(prom.to_string().contains("host.docker.internal:9810"));
    // Grafana: provisioning and dashboards mounted where the provider looks.
    let g = services["grafana"]["volumes"].to_string();
    assert!(g.contains("./grafana/provisioning:/etc/grafana/provisioning"), "{g}");
    let provider = yaml(&deploy("grafana/provisioning/dashboards/collector.yml")).remove(0);
    let path = provider["providers"][0]["options"]["path"].as_str().unwrap();
    assert!(g.contains(&format!("./grafana/dashboards:{path}")), "{g} does not mount the dashboards at {path}");
}

#[test]
fn kubernetes_manifests_validate_offline() {
    let py = tools_python();
    let script = repo().join("collector/tests/common/validate_k8s.py");
    let manifests = files("kubernetes", &["yaml"]);
    let out = run_ok(Command::new(&py).arg(&script).args(&manifests));
    eprintln!("{out}");
    for kind in ["DaemonSet", "Service", "PodMonitor", "ServiceMonitor"] {
        let ok = out.lines().any(|l| l.starts_with("valid ") && l.contains(&format!(": {kind}/")));
        assert!(ok, "no {kind} validated:\n{out}");
    }
    // The validator rejects what is wrong: an unknown field in the pod spec.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    let ds = std::fs::read_to_string(deploy("kubernetes/daemonset.yaml")).unwrap();
    std::fs::write(&bad, ds.replace("hostPID: true", "hostPID: true\n      hostPIDs: true")).unwrap();
    let (ok, out) = run(Command::new(&py).arg(&script).arg(&bad));
    assert!(!ok && out.contains("hostPIDs"), "a DaemonSet with an unknown field passed:\n{out}");
    let pm = std::fs::read_to_string(deploy("kubernetes/podmonitor.yaml")).unwrap();
    std::fs::write(&bad, pm.replace("      path: /metrics", "      path: /metrics\n      scrapeEvery: 15s")).unwrap();
    let (ok, out) = run(Command::new(&py).arg(&script).arg(&bad));
    assert!(!ok && out.contains("scrapeEvery"), "a PodMonitor with an unknown field passed:\n{out}");
    // The DaemonSet: host namespaces and the mounts the flags point into.
    let ds = yaml(&deploy("kubernetes/daemonset.yaml")).remove(0);
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true);
    assert_eq!(pod["hostNetwork"], true);
    let mounts = pod["containers"][0]["volumeMounts"].to_string();
    assert!(mounts.contains("/host/proc") && mounts.contains("/host/sys"), "{mounts}");
    assert_eq!(ds["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"], "9810");
}

/// The datasource uid Grafana provisions.
fn datasource_uid() -> String {
    let ds = yaml(&deploy("grafana/provisioning/datasources/prometheus.yml")).remove(0);
    let list = ds["datasources"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["type"], "prometheus");
    list[0]["uid"].as_str().unwrap().to_owned()
}

fn dashboards() -> Vec<(String, Value)> {
    files("grafana/dashboards", &["json"])
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p.file_name().unwrap().to_string_lossy().into_owned(), v)
        })
        .collect()
}

/// Every panel, rows' nested panels included.
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner);
        }
    }
    out
}

/// Every "datasource" object anywhere in a JSON tree.
fn datasource_refs<'a>(v: &'a Value, path: String, out: &mut Vec<(String, &'a Value)>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "datasource" {
                    out.push((format!("{path}.{k}"), x));
                }
                datasource_refs(x, format!("{path}.{k}"), out);
            }
        }
        Value::Array(a) => a.iter().enumerate().for_each(|(i, x)| datasource_refs(x, format!("{path}[{i}]"), out)),
        _ => {}
    }
}

#[test]
fn dashboards_are_what_grafana_provisions() {
    let uid = datasource_uid();
    let ds = dashboards();
    assert_eq!(ds.len(), 3, "the HTTP, host and containers dashboards");
    let mut uids = BTreeSet::new();
    for (name, d) in &ds {
        let duid = d["uid"].as_str().unwrap_or_else(|| panic!("{name}: no uid"));
        assert!(!duid.is_empty() && duid.len() <= 40, "{name}: uid {duid:?}");
        assert!(uids.insert(duid.to_owned()), "{name}: uid {duid} used twice");
        assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()), "{name}: no title");
        assert!(d["schemaVersion"].as_u64().unwrap_or(0) >= 39, "{name}: schemaVersion {}", d["schemaVersion"]);
        assert!(d.get("id").is_none_or(Value::is_null), "{name}: a provisioned dashboard has no fixed id");
        let mut refs = Vec::new();
        datasource_refs(d, String::new(), &mut refs);
        assert!(refs.len() > 10, "{name}: only {} datasource references", refs.len());
        for (path, r) in refs {
            assert_eq!(r["uid"], uid, "{name}{path}: datasource {r} is not the provisioned one ({uid})");
            assert_eq!(r["type"], "prometheus", "{name}{path}");
        }
        let vars: Vec<&str> =
            d["templating"]["list"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
        for v in ["job", "instance"] {
            assert!(vars.contains(&v), "{name}: no ${v} variable");
        }
        let mut ids = BTreeSet::new();
        for p in panels(d) {
            let id = p["id"].as_u64().unwrap_or_else(|| panic!("{name}: panel {} has no id", p["title"]));
            assert!(ids.insert(id), "{name}: panel id {id} used twice");
            let g = &p["gridPos"];
            for k in ["h", "w", "x", "y"] {
                assert!(g[k].is_u64(), "{name}: panel {id} gridPos.{k}");
            }
            assert!(
                g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24,
                "{name}: panel {id} wider than the grid"
            );
            if p["type"] == "row" {
                continue;
            }
            assert!(p["title"].as_str().is_some_and(|t| !t.is_empty()), "{name}: panel {id} has no title");
            let targets = p["targets"].as_array().unwrap_or_else(|| panic!("{name}: panel {id} has no targets"));
            assert!(!targets.is_empty(), "{name}: panel {id} has no queries");
            let mut refids = BTreeSet::new();
            for t in targets {
                assert!(t["expr"].as_str().is_some_and(|e| !e.is_empty()), "{name}: panel {id} has an empty query");
                assert!(refids.insert(t["refId"].as_str().unwrap()), "{name}: panel {id} repeats a refId");
            }
            if p["type"] == "heatmap" {
                for t in targets {
                    assert_eq!(t["format"], "heatmap", "{name}: heatmap {id} query not in heatmap format");
                    assert!(
                        t["expr"].as_str().unwrap().contains("_bucket"),
                        "{name}: heatmap {id} not on _bucket series"
                    );
                }
            }
            if let Some(r) = p["repeat"].as_str() {
                assert!(vars.contains(&r), "{name}: panel {id} repeats over unknown variable {r}");
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// The container's flags

/// The collector's flags in the image (CMD), the compose file and the DaemonSet: one set.
fn container_flags() -> Vec<String> {
    let dockerfile = std::fs::read_to_string(deploy("Dockerfile")).unwrap();
    let cmd = dockerfile.lines().find_map(|l| l.strip_prefix("CMD ")).expect("Dockerfile has a CMD");
    let image: Vec<String> = serde_json::from_str(cmd).expect("CMD in exec (JSON) form");
    let compose = yaml(&deploy("docker-compose.yml")).remove(0);
    let compose: Vec<String> = serde_json::from_value(compose["services"]["collector"]["command"].clone()).unwrap();
    let ds = yaml(&deploy("kubernetes/daemonset.yaml")).remove(0);
    let k8s: Vec<String> =
        serde_json::from_value(ds["spec"]["template"]["spec"]["containers"][0]["args"].clone()).unwrap();
    assert_eq!(image, compose, "Dockerfile CMD and compose command differ");
    assert_eq!(image, k8s, "Dockerfile CMD and DaemonSet args differ");
    assert!(image.iter().any(|f| f == "--path.procfs=/host/proc"), "{image:?}");
    image
}

/// The collector's host mounts (source, target, read-only) in the compose file and the
/// DaemonSet: one set, but for where each platform keeps the names of its containers
/// (identity labels: Docker's container store; the kubelet's log directories), which are
/// checked here and left out of the set returned.
fn container_mounts() -> Vec<(String, String, bool)> {
    let compose = yaml(&deploy("docker-compose.yml")).remove(0);
    let mut from_compose: Vec<(String, String, bool)> = compose["services"]["collector"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let f: Vec<&str> = v.as_str().unwrap().split(':').collect();
            (f[0].to_owned(), f[1].to_owned(), f.get(2) == Some(&"ro"))
        })
        .collect();
    let ds = yaml(&deploy("kubernetes/daemonset.yaml")).remove(0);
    let pod = &ds["spec"]["template"]["spec"];
    let host_path = |name: &Value| {
        let v = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == *name).unwrap();
        v["hostPath"]["path"].as_str().unwrap().to_owned()
    };
    let mut from_k8s: Vec<(String, String, bool)> = pod["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (host_path(&m["name"]), m["mountPath"].as_str().unwrap().to_owned(), m["readOnly"] == true))
        .collect();
    from_compose.sort();
    from_k8s.sort();
    let same = |dir: &str| (dir.to_owned(), dir.to_owned(), true);
    for (mounts, platform, own) in [
        (&mut from_compose, "compose", vec![same("/var/lib/docker/containers")]),
        (&mut from_k8s, "DaemonSet", vec![same("/var/log/containers"), same("/var/log/pods")]),
    ] {
        for m in own {
            let at = mounts.iter().position(|x| *x == m);
            assert!(at.is_some(), "the {platform} does not mount {m:?} (identity labels)");
            mounts.remove(at.unwrap());
        }
    }
    assert_eq!(from_compose, from_k8s, "compose volumes and DaemonSet mounts differ");
    from_compose
}

/// The collector with the container's flags, in a new mount namespace laid out like the
/// container: a fresh root holding only /usr (for the loader and libc), its own procfs and
/// sysfs (as a privileged container with the host's PID and network namespaces gets them),
/// and the host mounts of the compose file and DaemonSet (recursive binds, read-only). The
/// default paths (/sys/fs/cgroup, /sys/kernel/tracing) are empty there unless a mount fills
/// them: only the flags and mounts lead to the host's files.
#[test]
fn container_flags_start_every_collector_in_a_container_layout() {
    let flags: Vec<String> = container_flags()
        .into_iter()
        .filter(|f| !f.starts_with("--web.listen-address"))
        .chain(["--web.listen-address=127.0.0.1:0".into(), "--log.format=json".into()])
        .collect();
    let root = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let r = root.path().display().to_string();
    let script = format!(
        r#"set -e
mount -t tmpfs root {r}
mkdir -p {r}/usr {r}/proc {r}/sys {r}/dev {r}/tmp {r}/host/proc {r}/host/sys
for l in bin lib lib64 sbin; do [ -L /$l ] && ln -s usr/$l {r}/$l || mkdir -p {r}/$l; done
mount --rbind /usr {r}/usr
for l in lib lib64; do [ -L /$l ] || mount --rbind /$l {r}/$l; done
mount -t proc proc {r}/proc
mount -t sysfs sysfs {r}/sys
mount --rbind /dev {r}/dev
{binds}touch {r}/collector && mount --bind {bin} {r}/collector
exec chroot {r} /collector "$@""#,
        bin = common::BIN,
        binds = container_mounts()
            .iter()
            .map(|(src, dst, ro)| {
                let ro = if *ro { format!(" && mount -o remount,bind,ro {r}{dst}") } else { String::new() };
                format!("mkdir -p {r}{dst} && mount --rbind {src} {r}{dst}{ro}\n")
            })
            .collect::<String>()
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c", &script, "sh"]).args(&flags);
    let c = Collector::spawn(cmd);
    // The start line reaches the log just after spawn() returns.
    let _ = c.log_appears("collector started", Duration::from_secs(5));
    let log = c.log_text();
    assert!(log.contains(r#""skipped":"""#), "a collector was skipped with the container's flags:\n{log}");
    // Two scrapes (the CPU ratio needs two samples); every collector succeeds.
    c.scrape();
    thread::sleep(Duration::from_millis(1100));
    let m = c.scrape();
    let enabled = m.find("collector_collector_enabled", &[]);
    assert_eq!(enabled.len(), 9, "{enabled:?}");
    for s in enabled {
        let name = &s.labels["collector"];
        assert_eq!(s.value, 1.0, "collector {name} not running");
        assert_eq!(m.get("collector_scrape_collector_success", &[("collector", name)]), 1.0, "{name} failed:\n{log}");
    }
    let attached = m.find("collector_bpf_program_attached", &[]);
    // Three block tracepoints, the HTTP pair (which also counts netbpf's packets) and the HTTP
    // close hook (sock_ops), all on the host's cgroup root and tracefs.
    assert!(attached.len() >= 6 && attached.iter().all(|s| s.value == 1.0), "{attached:?}");
    for p in ["block_rq_issue", "http_ingress", "http_egress", "http_sock_close"] {
        assert_eq!(m.get("collector_bpf_program_attached", &[("program", p)]), 1.0, "{p}");
    }
    // The host's values, read through /host: CPUs of the host's /proc/stat, the cgroup root.
    let cpus = std::fs::read_to_string("/proc/stat")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .count();
    assert_eq!(m.get("system_cpus", &[]), cpus as f64);
    assert!(attached.iter().any(|s| s.labels["hook"].contains("/host/sys/fs/cgroup")), "{attached:?}");
    assert!(!m.find("cgroup_network_bytes_total", &[("cgroup", "/")]).is_empty(), "no root cgroup traffic");
    assert!(!m.find("system_network_bytes_total", &[("device", "lo")]).is_empty(), "no host interfaces");
}

// ------------------------------------------------------------------------------------------
// A live Prometheus with the shipped configuration

/// A Prometheus server, killed on drop before its directory goes (fields drop in order).
struct Prometheus {
    _child: KillOnDrop,
    url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// deploy/prometheus/prometheus.yml with the collector at `collector`, Prometheus itself at
    /// its test port, the rule files by absolute path, and 1 s intervals.
    fn start(collector: &str) -> Prometheus {
        let bin = tool("prometheus", &format!("{INSTALL} (apt-get install prometheus)"));
        let mut cfg = yaml(&deploy("prometheus/prometheus.yml")).remove(0);
        cfg["global"]["scrape_interval"] = json!(format!("{SCRAPE}s"));
        cfg["global"]["evaluation_interval"] = json!(format!("{SCRAPE}s"));
        let rules: Vec<Value> = cfg["rule_files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| json!(deploy("prometheus").join(f.as_str().unwrap()).display().to_string()))
            .collect();
        cfg["rule_files"] = json!(rules);
        let port = free_port();
        let mut replaced = 0;
        for job in cfg["scrape_configs"].as_array_mut().unwrap() {
            for sc in job["static_configs"].as_array_mut().unwrap() {
                for t in sc["targets"].as_array_mut().unwrap() {
                    match t.as_str().unwrap() {
                        "host.docker.internal:9810" => *t = json!(collector),
                        "localhost:9090" => *t = json!(format!("127.0.0.1:{port}")),
                        other => panic!("unexpected scrape target {other}"),
                    }
                    replaced += 1;
                }
            }
        }
        assert_eq!(replaced, 2);
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let file = dir.path().join("prometheus.yml");
        std::fs::write(&file, cfg.to_string()).unwrap(); // JSON is YAML
        let child = Command::new(bin)
            .arg(format!("--config.file={}", file.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .unwrap();
        let p = Prometheus { _child: KillOnDrop(child), url: format!("http://127.0.0.1:{port}"), _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while ureq::get(&format!("{}/-/ready", p.url)).call().is_err() {
            assert!(Instant::now() < deadline, "prometheus not ready:\n{}", p.log());
            thread::sleep(Duration::from_millis(200));
        }
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// GET an API path; the JSON body, whatever the status (errors come back as JSON too).
    fn api(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let mut req = ureq::get(&format!("{}{path}", self.url));
        for (k, v) in params {
            req = req.query(k, v);
        }
        let resp = match req.call() {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{path}: {e}"),
        };
        serde_json::from_str(&resp.into_string().unwrap()).unwrap()
    }

    /// An instant query: Ok(result array) or Err(error text).
    fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        result(self.api("/api/v1/query", &[("query", expr)]))
    }

    /// A range query over the last 30 s at 1 s steps, as a Grafana panel asks.
    fn query_range(&self, expr: &str) -> Result<Vec<Value>, String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let (start, end) = ((now - 30).to_string(), now.to_string());
        result(self.api("/api/v1/query_range", &[("query", expr), ("start", &start), ("end", &end), ("step", "1")]))
    }
}

fn result(v: Value) -> Result<Vec<Value>, String> {
    if v["status"] != "success" {
        return Err(format!("{}: {}", v["errorType"], v["error"]));
    }
    Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
}

fn alert_rules() -> Vec<Value> {
    let mut out = Vec::new();
    for f in files("prometheus/rules", &["yml", "yaml"]) {
        for doc in yaml(&f) {
            for g in doc["groups"].as_array().unwrap() {
                out.extend(g["rules"].as_array().unwrap().iter().filter(|r| r.get("alert").is_some()).cloned());
            }
        }
    }
    out
}

/// The vector selectors of a PromQL expression (metric name with its matchers, or a bare
/// `{...}`): what must have series for the expression to mean anything.
fn selectors(expr: &str) -> Vec<String> {
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "inf",
        "nan",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "atan2",
    ];
    let c: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    // Index just past the bracketed group opening at `i` (strings inside skipped).
    let close = |mut i: usize, open: char, shut: char| {
        let mut depth = 0;
        while i < c.len() {
            match c[i] {
                '"' | '\'' | '`' => {
                    let q = c[i];
                    i += 1;
                    while i < c.len() && c[i] != q {
                        i += if c[i] == '\\' { 2 } else { 1 };
                    }
                }
                x if x == open => depth += 1,
                x if x == shut => {
                    depth -= 1;
                    if depth == 0 {
                        return i + 1;
                    }
                }
                _ => {}
            }
            i += 1;
        }
        panic!("unbalanced {open} in {expr}");
    };
    let next_non_space = |mut i: usize| {
        while i < c.len() && c[i].is_whitespace() {
            i += 1;
        }
        i
    };
    while i < c.len() {
        let ch = c[i];
        if ch == '{' {
            let end = close(i, '{', '}');
            out.push(c[i..end].iter().collect());
            i = end;
        } else if ch == '[' {
            i = close(i, '[', ']');
        } else if ch == '"' || ch == '\'' || ch == '`' {
            let q = ch;
            i += 1;
            while i < c.len() && c[i] != q {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if ch.is_ascii_digit() || (ch == '.' && c.get(i + 1).is_some_and(char::is_ascii_digit)) {
            while i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '.') {
                i += 1;
            }
        } else if ch.is_ascii_alphabetic() || ch == '_' || ch == ':' {
            let start = i;
            while i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '_' || c[i] == ':') {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let j = next_non_space(i);
            let kw = KEYWORDS.contains(&word.to_ascii_lowercase().as_str());
            if c.get(j) == Some(&'(') {
                if ["by", "without", "on", "ignoring", "group_left", "group_right"].contains(&word.as_str()) {
                    i = close(j, '(', ')');
                }
                // else a function or aggregation: its arguments are scanned next.
            } else if !kw {
                if c.get(j) == Some(&'{') {
                    let end = close(j, '{', '}');
                    out.push(format!("{word}{}", c[j..end].iter().collect::<String>()));
                    i = end;
                } else {
                    out.push(word);
                }
            }
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn selectors_are_found_in_promql() {
    let e = r#"(sum by (a, b) (rate(x_count{s=~"5..", t="{]"}[5m])) or 0 * sum(rate(y[1m] offset 5m))) / on (a) group_left max by (a) (z) > 0.5 and topk(10, {__name__="w"}) + 2^20"#;
    assert_eq!(selectors(e), [r#"x_count{s=~"5..", t="{]"}"#, "y", "z", r#"{__name__="w"}"#]);
}

/// Grafana's escaping of a variable value inside a Prometheus regex matcher.
fn regex_escape(v: &str) -> String {
    let mut s = String::new();
    for ch in v.chars() {
        if "\\^$*+?.()|[]{}'".contains(ch) {
            s.push_str("\\\\");
        }
        s.push(ch);
    }
    s
}

/// A Grafana variable's values: label_values(selector, label) through the labels API, as
/// Grafana's Prometheus datasource asks.
fn variable_values(p: &Prometheus, query: &str) -> Result<Vec<String>, String> {
    let inner = query.strip_prefix("label_values(").and_then(|q| q.strip_suffix(')')).ok_or("not label_values()")?;
    let (selector, label) = inner.rsplit_once(',').ok_or("label_values() without a selector")?;
    let v = p.api(&format!("/api/v1/label/{}/values", label.trim()), &[("match[]", selector.trim())]);
    if v["status"] != "success" {
        return Err(format!("{}", v["error"]));
    }
    Ok(v["data"].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_owned()).collect())
}

/// Replaces `$name` variables (longest names first, so $instance is not taken for $in...).
fn substitute(expr: &str, vars: &BTreeMap<String, String>) -> String {
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    let mut e = expr.to_owned();
    for n in names {
        e = e.replace(&format!("${{{n}}}"), &vars[n]).replace(&format!("${n}"), &vars[n]);
    }
    e
}

/// Traffic while Prometheus scrapes: HTTP requests answered 200, 404 and 500 (server and
/// client side, this process), and direct disk I/O. Stops on drop.
struct Traffic {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(server: &TestServer) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let (s, addr) = (stop.clone(), server.addr.clone());
        threads.push(thread::spawn(move || {
            let mut c = Client::connect(&addr);
            while !s.load(Ordering::Relaxed) {
                for path in ["/?size=1000", "/?status=404", "/?status=500&delay_ms=2", "/?size=10&delay_ms=1"] {
                    let x = c.exchange("GET", path, b"", 0);
                    assert!(x.status >= 200);
                }
                let x = c.exchange("POST", "/?size=100", &[b'x'; 2000], 0);
                assert_eq!(x.status, 200);
                thread::sleep(Duration::from_millis(20));
            }
        }));
        let s = stop.clone();
        threads.push(thread::spawn(move || {
            let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
            let f = dir.path().join("io.bin");
            while !s.load(Ordering::Relaxed) {
                let script = format!(
                    "dd if=/dev/zero of={f} bs=256k count=16 oflag=direct conv=fsync status=none && \
                     dd if={f} of=/dev/null bs=256k iflag=direct status=none",
                    f = f.display()
                );
                assert!(Command::new("sh").arg("-c").arg(&script).status().unwrap().success());
                thread::sleep(Duration::from_millis(500));
            }
        }));
        Traffic { stop, threads }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Picks a variable's values from what its query returned; None = Grafana's "All".
type Choose<'a> = dyn Fn(&str, &[String]) -> Option<Vec<String>> + 'a;

/// A query's answer, asked again after the next scrapes (up to 3 s) while it errs or is empty:
/// when one scrape of a collector fails (the collector logs a warning, and the test prints
/// them), its series go stale until the next one. An empty answer that lasts is a problem.
fn settled(q: impl Fn() -> Result<Vec<Value>, String>) -> Result<Vec<Value>, String> {
    let mut r = q();
    for _ in 0..3 {
        if matches!(&r, Ok(v) if !v.is_empty()) {
            break;
        }
        thread::sleep(Duration::from_secs(SCRAPE));
        r = q();
    }
    r
}

/// Evaluates every query of every dashboard with the given variable values; returns the
/// problems found and the number of queries run. `choose` picks a variable's values from what
/// its query returned: None = Grafana's "All".
fn check_dashboards(p: &Prometheus, choose: &Choose<'_>, problems: &mut Vec<String>) -> usize {
    let mut n = 0;
    for (name, d) in dashboards() {
        // Variables in order: each query may use the ones before it.
        let mut vars = BTreeMap::from([
            ("__rate_interval".to_owned(), format!("{}s", 4 * SCRAPE)),
            ("__interval".to_owned(), format!("{SCRAPE}s")),
            ("__range".to_owned(), "30s".to_owned()),
        ]);
        let mut values: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for v in d["templating"]["list"].as_array().unwrap() {
            let var = v["name"].as_str().unwrap().to_owned();
            let q = v["query"]["query"].as_str().or(v["query"].as_str()).unwrap();
            let q = substitute(q, &vars);
            n += 1;
            let found = match variable_values(p, &q) {
                Ok(f) if !f.is_empty() => f,
                Ok(_) => {
                    problems.push(format!("{name}: variable ${var}: {q} has no values"));
                    continue;
                }
                Err(e) => {
                    problems.push(format!("{name}: variable ${var}: {q}: {e}"));
                    continue;
                }
            };
            let value = match choose(&var, &found) {
                Some(one) => format!("({})", one.iter().map(|x| regex_escape(x)).collect::<Vec<_>>().join("|")),
                None => match v["allValue"].as_str() {
                    Some(all) => all.to_owned(),
                    None => format!("({})", found.iter().map(|x| regex_escape(x)).collect::<Vec<_>>().join("|")),
                },
            };
            values.insert(var.clone(), found);
            vars.insert(var, value);
        }
        for panel in panels(&d) {
            let Some(targets) = panel["targets"].as_array() else { continue };
            // A repeated panel is one copy per value of its variable.
            let copies: Vec<BTreeMap<String, String>> = match panel["repeat"].as_str() {
                Some(r) => values
                    .get(r)
                    .into_iter()
                    .flatten()
                    .map(|one| {
                        let mut v = vars.clone();
                        v.insert(r.to_owned(), regex_escape(one));
                        v
                    })
                    .collect(),
                None => vec![vars.clone()],
            };
            for vars in copies {
                for t in targets {
                    let expr = substitute(t["expr"].as_str().unwrap(), &vars);
                    let what =
                        format!("{name}: panel {:?} query {}: {expr}", panel["title"].as_str().unwrap(), t["refId"]);
                    assert!(!expr.contains('$'), "unsubstituted variable in {what}");
                    n += 1;
                    let res = settled(|| if t["instant"] == true { p.query(&expr) } else { p.query_range(&expr) });
                    match res {
                        Err(e) => problems.push(format!("{what}\n    error: {e}")),
                        Ok(r) if r.is_empty() => problems.push(format!("{what}\n    no data")),
                        Ok(_) => {}
                    }
                    for sel in selectors(&expr) {
                        n += 1;
                        match settled(|| p.query(&format!("count({sel})"))) {
                            Ok(r) if !r.is_empty() => {}
                            other => problems.push(format!("{what}\n    selector {sel} has no series ({other:?})")),
                        }
                    }
                }
            }
        }
    }
    n
}

/// The pod's server: 404 for /missing, 500 for /fail, 200 otherwise, keep-alive.
const POD_SERVER: &str = r#"
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response({"/missing": 404, "/fail": 500}.get(self.path, 200))
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

#[test]
fn prometheus_evaluates_every_dashboard_query_and_alert_rule() {
    // A Kubernetes-like pod (kubelet cgroup and log directory naming) serving HTTP, so the
    // dashboards' namespace and pod selectors have values.
    let pod_logs = tempfile::tempdir().unwrap();
    let uid = format!("{:08x}-0000-4000-8000-000000000001", std::process::id());
    let cid = format!("{:064x}", std::process::id());
    std::fs::create_dir_all(pod_logs.path().join(format!("shop_checkout-7d4b9c8f6d-x2k9p_{uid}/app"))).unwrap();
    let mut tree = CgroupTree::new("deploy");
    let procs = tree.make(&format!("kubepods/burstable/pod{uid}/{cid}"));
    let collector = Collector::start(&["--identity.pod-logs-dir", pod_logs.path().to_str().unwrap()]);
    let pod_port = free_port();
    let www = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let _pod = KillOnDrop(
        in_cgroup(&procs, &format!("exec python3 -c '{POD_SERVER}' {pod_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_port(pod_port);
    // The pod calls itself (200, 404 and 500) and writes to disk: HTTP client and server,
    // network and disk series.
    let url = format!("http://127.0.0.1:{pod_port}");
    let _pod_traffic = KillOnDrop(
        in_cgroup(
            &procs,
            &format!(
                "while :; do curl -s -o /dev/null -o /dev/null -o /dev/null {url}/ {url}/missing {url}/fail; \
                 dd if=/dev/zero of={}/io.bin bs=64k count=4 oflag=direct status=none; sleep 0.2; done",
                www.path().display()
            ),
        )
        .spawn()
        .unwrap(),
    );
    let server = TestServer::start("127.0.0.1");
    let traffic = Traffic::start(&server);
    let prom = Prometheus::start(&collector.addr);

    // Enough scrapes and rule evaluations for rates and percentiles: 20 s at 1 s intervals.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let n = prom
            .query(r#"count_over_time(up{job="collector"}[1m])"#)
            .ok()
            .and_then(|r| r.first().and_then(|s| s["value"][1].as_str().and_then(|v| v.parse::<f64>().ok())))
            .unwrap_or(0.0);
        if n >= 20.0 {
            break;
        }
        assert!(Instant::now() < deadline, "Prometheus scraped the collector {n} times in 90 s:\n{}", prom.log());
        thread::sleep(Duration::from_secs(1));
    }
    for q in [
        r#"max_over_time(scrape_duration_seconds{job="collector"}[1m])"#,
        r#"count_over_time(up{job="collector"}[1m])"#,
        r#"sum_over_time(up{job="collector"}[1m])"#,
    ] {
        eprintln!("{q} = {:?}", prom.query(q).unwrap().first().map(|s| s["value"][1].clone()));
    }
    // The latest scrape succeeded (one may time out on a loaded machine: the next must not).
    let up = settled(|| prom.query(r#"up{job="collector"} == 1"#));
    let up = if up.as_ref().is_ok_and(|u| u.len() == 1) {
        up.unwrap()
    } else {
        prom.query(r#"up{job="collector"}"#).unwrap()
    };
    assert_eq!(up.len(), 1);
    assert_eq!(
        up[0]["value"][1],
        "1",
        "collector target down: {}\ncollector log:\n{}",
        prom.api("/api/v1/targets", &[]),
        collector.log_text()
    );

    let mut problems = Vec::new();
    // 1. Every dashboard with every variable at "All" (the default).
    let n_all = check_dashboards(&prom, &|_, _| None, &mut problems);
    // 2. With the service variable on this test's server, found by its port.
    let ours = settled(|| {
        prom.query(&format!(r#"http_server_request_duration_seconds_count{{server_port="{}"}}"#, server.port))
    })
    .unwrap();
    assert!(!ours.is_empty(), "no HTTP series for the test server's port {}", server.port);
    let service = ours[0]["metric"]["service_name"].as_str().unwrap().to_owned();
    let n_one = check_dashboards(
        &prom,
        &|var, found| {
            (var == "service").then(|| {
                assert!(found.contains(&service), "$service values {found:?} lack {service}");
                vec![service.clone()]
            })
        },
        &mut problems,
    );
    // 3. With the namespace and pod variables on the pod.
    let n_pod = check_dashboards(
        &prom,
        &|var, found| {
            let want = match var {
                "namespace" => "shop",
                "pod" => "checkout-7d4b9c8f6d-x2k9p",
                _ => return None,
            };
            assert!(found.iter().any(|f| f == want), "${var} values {found:?} lack {want}");
            Some(vec![want.to_owned()])
        },
        &mut problems,
    );

    // 4. Alert rules: loaded, evaluated by Prometheus without error, each expression valid
    //    through the API and every series it reads present.
    let rules = alert_rules();
    let loaded = prom.api("/api/v1/rules", &[("type", "alert")]);
    let loaded: Vec<&Value> =
        loaded["data"]["groups"].as_array().unwrap().iter().flat_map(|g| g["rules"].as_array().unwrap()).collect();
    assert_eq!(
        loaded.len(),
        rules.len(),
        "Prometheus loaded {} alert rules, the files have {}",
        loaded.len(),
        rules.len()
    );
    for r in &loaded {
        assert_eq!(r["health"], "ok", "rule {} failed to evaluate: {}", r["name"], r["lastError"]);
    }
    for r in &rules {
        let name = r["alert"].as_str().unwrap();
        let expr = r["expr"].as_str().unwrap();
        match prom.query(expr) {
            Err(e) => problems.push(format!("alert {name}: {expr}\n    error: {e}")),
            Ok(res) => eprintln!("alert {name}: {} series match now", res.len()),
        }
        for sel in selectors(expr) {
            match settled(|| prom.query(&format!("count({sel})"))) {
                Ok(r) if !r.is_empty() => {}
                other => problems.push(format!("alert {name}: selector {sel} has no series ({other:?})")),
            }
        }
    }
    // The collector is up: CollectorDown is quiet. The test server answers a fifth of its
    // requests with 500, well over 5% at several per second: HTTPHighErrorRate's condition
    // holds for it on the real data (the alert is pending for its `for:` duration).
    assert_eq!(prom.query(r#"ALERTS{alertname="CollectorDown"}"#).unwrap().len(), 0);
    let errors = prom.query(r#"ALERTS{alertname="HTTPHighErrorRate"}"#).unwrap();
    assert!(
        errors.iter().any(|a| a["metric"]["server_port"] == server.port.to_string().as_str()),
        "HTTPHighErrorRate not pending for the test server (port {}): {errors:?}",
        server.port
    );
    drop(traffic);
    // Scrapes on which a collector failed (its series were missing from that scrape).
    for l in
        collector.log_text().lines().filter(|l| l.contains(r#""level":"WARN""#) || l.contains(r#""level":"ERROR""#))
    {
        eprintln!("collector: {l}");
    }

    eprintln!("{n_all} + {n_one} + {n_pod} dashboard queries and selectors, {} alert rules evaluated", rules.len());
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
}
