//! The deployment stack under deploy/, checked with the real tools (no Docker engine or Grafana
//! binary exists on these machines):
//! - promtool checks the Prometheus configuration and rules and runs the rule unit tests;
//! - docker-compose validates the compose file; the Kubernetes manifests are validated against
//!   the Kubernetes and Prometheus Operator schemas offline;
//! - the dashboards are checked for what Grafana needs;
//! - the collector starts with exactly the flags the image, compose file and DaemonSet pass, in
//!   a mount namespace laid out like the container (host /proc and /sys under /host only).
//!
//! A real Prometheus evaluating every dashboard query and alert rule: deploy_live.rs.
//!
//! Tools: promtool and prometheus (Debian `prometheus`), docker-compose (Debian), and a
//! Python venv with kubernetes-validate and the Prometheus Operator models, found through
//! $DEPLOY_TOOLS or at target/deploy-tools; `cargo xtask test` installs all of them. A missing
//! tool fails the test with the command that installs it.
mod common;

#[path = "common/deploy.rs"]
mod deploy_util;

#[path = "common/http.rs"]
mod http_util;

use std::{collections::BTreeSet, process::Command, thread, time::Duration};

use common::{
    Collector,
    process::{run, run_ok},
};
use serde_json::{Value, json};

use deploy_util::*;

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
    // Capabilities, not privileged (the set: `manifest_capabilities`), no new privileges, a
    // read-only root.
    assert_eq!(c["privileged"], false);
    assert_eq!(c["read_only"], true);
    let opts = c["security_opt"].to_string();
    assert!(opts.contains("no-new-privileges=true") && !opts.contains("seccomp"), "{opts}");
    let _ = manifest_capabilities();
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

#[test]
fn dashboards_are_what_grafana_provisions() {
    let uid = datasource_uid();
    let ds = dashboards();
    assert_eq!(ds.len(), 4, "the HTTP, gRPC, host and containers dashboards");
    let mut uids = BTreeSet::new();
    let mut links = Vec::new();
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
        // Every panel, query and variable asks the $datasource variable (a dashboard imported
        // into a Grafana whose Prometheus has another uid works); the variable lists the
        // Prometheus data sources and starts on the provisioned one.
        for (path, r) in refs {
            assert_eq!(r["uid"], "${datasource}", "{name}{path}: datasource {r} is not the $datasource variable");
            assert_eq!(r["type"], "prometheus", "{name}{path}");
        }
        let list = d["templating"]["list"].as_array().unwrap();
        let var = list.iter().find(|v| v["name"] == "datasource").unwrap_or_else(|| panic!("{name}: no $datasource"));
        assert_eq!((&var["type"], &var["query"]), (&json!("datasource"), &json!("prometheus")), "{name}");
        assert_eq!(var["current"]["value"], uid, "{name}: $datasource does not start on the provisioned one");
        let vars: Vec<&str> = list.iter().map(|v| v["name"].as_str().unwrap()).collect();
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
            for l in p["fieldConfig"]["defaults"]["links"].as_array().into_iter().flatten() {
                links.push((name.clone(), id, l["url"].as_str().unwrap().to_owned()));
            }
        }
    }
    // Data links go to one of the dashboards and set only variables it has.
    assert!(!links.is_empty(), "no data links between the dashboards");
    for (name, id, url) in links {
        let (path, query) = url.split_once('?').unwrap_or((&url, ""));
        let uid = path.strip_prefix("/d/").unwrap_or_else(|| panic!("{name}: panel {id} links outside: {url}"));
        let target =
            ds.iter().find(|(_, d)| d["uid"] == uid).unwrap_or_else(|| panic!("{name}: panel {id} links {uid}"));
        let vars: Vec<&str> =
            target.1["templating"]["list"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
        for param in query.split('&') {
            let var = param
                .strip_prefix("var-")
                .map(|p| p.split('=').next().unwrap())
                .or_else(|| param.strip_prefix("${").and_then(|p| p.strip_suffix(":queryparam}")));
            if let Some(var) = var {
                assert!(vars.contains(&var), "{name}: panel {id} sets ${var}, which {uid} does not have");
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// The container's capabilities and flags

/// The capabilities the compose file and the DaemonSet give the collector (one set: every other
/// is dropped, nothing runs privileged), as setpriv names them (`bpf`, `net_admin`).
fn manifest_capabilities() -> Vec<String> {
    let compose = yaml(&deploy("docker-compose.yml")).remove(0);
    let c = &compose["services"]["collector"];
    assert_eq!(c["cap_drop"], json!(["ALL"]), "the compose file keeps Docker's default capabilities");
    let ds = yaml(&deploy("kubernetes/daemonset.yaml")).remove(0);
    let sc = &ds["spec"]["template"]["spec"]["containers"][0]["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "the DaemonSet keeps the runtime's default capabilities");
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    let names = |v: &Value| -> BTreeSet<String> {
        v.as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_ascii_lowercase()).collect()
    };
    let (from_compose, from_k8s) = (names(&c["cap_add"]), names(&sc["capabilities"]["add"]));
    assert_eq!(from_compose, from_k8s, "compose cap_add and DaemonSet capabilities.add differ");
    from_compose.into_iter().collect()
}

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
            (f[0].to_owned(), f[1].to_owned(), f.get(2).is_some_and(|o| o.split(',').any(|o| o == "ro")))
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

/// The collector with the container's flags and capabilities, in a new mount namespace laid
/// out like the container: a fresh root holding only /usr (for the loader and libc), its own
/// procfs and sysfs (as a container with the host's PID and network namespaces gets them), and
/// the host mounts of the compose file and DaemonSet (recursive binds, read-only). The default
/// paths (/sys/fs/cgroup, /sys/kernel/tracing) are empty there unless a mount fills them: only
/// the flags and mounts lead to the host's files. It runs as uid 0 with exactly the
/// capabilities the manifests add (setpriv, as the runtime sets them: bounding, permitted and
/// effective; no ambient ones), and every collector runs and every program attaches.
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
exec chroot {r} setpriv --bounding-set=-all,{caps} --inh-caps=-all /collector "$@""#,
        caps = manifest_capabilities().iter().map(|c| format!("+{c}")).collect::<Vec<_>>().join(","),
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
    // Its bounding set is the manifests' set, and nothing it holds is outside it.
    let bit = |name: &str| match name {
        "dac_read_search" => 2,
        "setgid" => 6,
        "setuid" => 7,
        "net_admin" => 12,
        "sys_ptrace" => 19,
        "sys_admin" => 21,
        "perfmon" => 38,
        "bpf" => 39,
        other => panic!("a capability the test does not know: {other}"),
    };
    let want: u64 = manifest_capabilities().iter().map(|c| 1u64 << bit(c)).sum();
    let status = std::fs::read_to_string(format!("/proc/{}/status", c.pid())).unwrap();
    let set = |key: &str| {
        let line = status.lines().find(|l| l.starts_with(key)).unwrap();
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    assert_eq!(set("CapBnd:"), want, "{status}");
    assert_eq!(set("CapPrm:") & !want, 0, "{status}");
    // The start line reaches the log just after spawn() returns.
    let _ = c.log_appears("collector started", Duration::from_secs(5));
    let log = c.log_text();
    assert!(log.contains(r#""skipped":"""#), "a collector was skipped with the container's flags:\n{log}");
    // Two scrapes (the CPU ratio needs two samples); every collector succeeds.
    c.scrape();
    thread::sleep(Duration::from_millis(1100));
    let m = c.scrape();
    // The process serving it runs as the user the flags name, with no capability to switch
    // back or to change its own.
    let status = std::fs::read_to_string(format!("/proc/{}/status", c.pid())).unwrap();
    let line = |key: &str| status.lines().find(|l| l.starts_with(key)).unwrap().split_whitespace().nth(1).unwrap();
    let user = flags.iter().find_map(|f| f.strip_prefix("--runas.user=")).expect("the flags name no user");
    assert_eq!(line("Uid:"), user, "{status}");
    let held = u64::from_str_radix(line("CapPrm:"), 16).unwrap();
    assert_eq!(held & ((1 << 6) | (1 << 7) | (1 << 8)), 0, "CAP_SETGID, CAP_SETUID or CAP_SETPCAP held: {status}");
    let enabled = m.find("collector_collector_enabled", &[]);
    assert_eq!(enabled.len(), 13, "{enabled:?}");
    for s in enabled {
        let name = &s.labels["collector"];
        assert_eq!(s.value, 1.0, "collector {name} not running");
        assert_eq!(m.get("collector_scrape_collector_success", &[("collector", name)]), 1.0, "{name} failed:\n{log}");
    }
    let attached = m.find("collector_bpf_program_attached", &[]);
    // Every program: the block tracepoints, the HTTP pair (which also counts netbpf's packets),
    // the HTTP close hook (sock_ops) and the process-name hooks, on the host's cgroup root and
    // tracefs, and the HTTPS capture's uprobes and receive tracepoint (faults.rs counts them).
    assert!(attached.len() == 21 && attached.iter().all(|s| s.value == 1.0), "{attached:?}");
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
    // The host's root filesystem, measured through /host/root.
    let size = m.get("system_filesystem_size_bytes", &[("mountpoint", "/")]);
    assert!(size > 0.0 && m.get("system_filesystem_device_error", &[("mountpoint", "/")]) == 0.0, "{size}");
}

// ------------------------------------------------------------------------------------------
// What the mixin generates

const GENERATED: &str = "# Generated from deploy/collector-mixin (the monitoring mixin: edit its .libsonnet files and\n\
# config.libsonnet, not this file). Write the generated files again with\n\
# COLLECTOR_WRITE_DEPLOY=1 cargo test -p collector --test deploy generated.\n";

/// Every file the mixin makes, by path under deploy/, with the text that is to be checked in:
/// the rules as YAML and the dashboards as JSON, as deploy/collector-mixin/generate.jsonnet makes them
/// with the default configuration, and the Kubernetes objects made of those: the
/// PrometheusRule (kube-prometheus-stack's Prometheus selects rules by its `release` label: set
/// yours) and one ConfigMap per dashboard (labelled for the Grafana sidecar).
fn generated_files() -> Vec<(String, String)> {
    let jsonnet = tool("jsonnet", "apt-get install jsonnet (cargo xtask test installs it)");
    let out = run_ok(
        Command::new(jsonnet).arg("-J").arg(deploy("collector-mixin")).arg(deploy("collector-mixin/generate.jsonnet")),
    );
    let made: serde_json::Map<String, Value> = serde_json::from_str(&out).unwrap();
    let mut files = Vec::new();
    let mut maps = Vec::new();
    let mut rules = None;
    for (path, v) in &made {
        if path.ends_with(".yml") {
            files.push((path.clone(), format!("{GENERATED}{}", serde_yaml_ng::to_string(v).unwrap())));
            if path == "prometheus/rules/collector.yml" {
                rules = Some(v["groups"].clone());
            }
        } else {
            let text = serde_json::to_string_pretty(v).unwrap();
            let name = path.rsplit('/').next().unwrap();
            let uid = v["uid"].as_str().unwrap();
            maps.push(json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": format!("{uid}-dashboard"),
                    "namespace": "monitoring",
                    "labels": {"app.kubernetes.io/name": "collector", "grafana_dashboard": "1"},
                },
                "data": {name: text},
            }));
            files.push((path.clone(), format!("{text}\n")));
        }
    }
    let labels = json!({"app.kubernetes.io/name": "collector", "release": "kube-prometheus-stack"});
    let rule = json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "collector", "namespace": "monitoring", "labels": labels},
        "spec": {"groups": rules.expect("the mixin makes no prometheus/rules/collector.yml")},
    });
    let objects = |about: &str, docs: Vec<Value>| {
        let body: Vec<String> = docs.iter().map(|d| serde_yaml_ng::to_string(d).unwrap()).collect();
        format!("{GENERATED}{about}{}", body.join("---\n"))
    };
    files.push((
        "kubernetes/prometheusrule.yaml".into(),
        objects(
            "# The alert and recording rules for the Prometheus Operator (kube-prometheus-stack selects\n\
             # PrometheusRules by its release label: `release: <your release>`, here kube-prometheus-stack's\n\
             # default name).\n",
            vec![rule],
        ),
    ));
    files.push((
        "kubernetes/dashboards.yaml".into(),
        objects(
            "# The dashboards as ConfigMaps for Grafana's dashboard sidecar (kube-prometheus-stack's looks for\n\
             # the label grafana_dashboard: \"1\" in every namespace by default).\n",
            maps,
        ),
    ));
    files
}

/// The checked-in rules, dashboards and Kubernetes objects are, byte for byte, what the mixin
/// makes (COLLECTOR_WRITE_DEPLOY=1 writes them); no other file sits beside them.
#[test]
fn generated_files_are_what_the_mixin_makes() {
    let made = generated_files();
    for (file, text) in &made {
        let path = deploy(file);
        if std::env::var_os("COLLECTOR_WRITE_DEPLOY").is_some() {
            std::fs::write(&path, text).unwrap();
        }
        assert!(path.exists(), "deploy/{file} is missing: COLLECTOR_WRITE_DEPLOY=1 writes it");
        assert!(
            std::fs::read_to_string(&path).unwrap() == *text,
            "deploy/{file} is not what deploy/collector-mixin makes: edit the mixin, then COLLECTOR_WRITE_DEPLOY=1 \
             cargo test -p collector --test deploy generated writes it"
        );
    }
    // A rule file or dashboard added by hand beside the generated ones would be provisioned
    // without being generated.
    for (dir, ext) in [("prometheus/rules", "yml"), ("grafana/dashboards", "json")] {
        for f in files(dir, &[ext]) {
            let rel = f.strip_prefix(deploy("")).unwrap().to_string_lossy().into_owned();
            assert!(made.iter().any(|(m, _)| *m == rel), "deploy/{rel} is not made by deploy/collector-mixin");
        }
    }
}

/// Every alert links its own section of docs/runbooks.md, and every section is an alert's.
#[test]
fn every_alert_links_its_runbook_section() {
    let runbooks = std::fs::read_to_string(repo().join("docs/runbooks.md")).unwrap();
    let sections: BTreeSet<String> =
        runbooks.lines().filter_map(|l| l.strip_prefix("### ")).map(|h| h.trim().to_lowercase()).collect();
    let mut alerts = BTreeSet::new();
    for r in alert_rules() {
        let name = r["alert"].as_str().unwrap();
        let url = r["annotations"]["runbook_url"].as_str().unwrap_or_else(|| panic!("{name} has no runbook_url"));
        let anchor = url.rsplit_once('#').map(|(_, a)| a).unwrap_or_else(|| panic!("{name}: {url} has no anchor"));
        assert_eq!(anchor, name.to_lowercase(), "{name}: runbook_url {url}");
        assert!(sections.contains(anchor), "{name}: docs/runbooks.md has no section `### {name}`");
        alerts.insert(anchor.to_owned());
    }
    let orphans: Vec<_> = sections.difference(&alerts).collect();
    assert!(orphans.is_empty(), "docs/runbooks.md sections of no alert: {orphans:?}");
}

/// The mixin's configuration reaches every rule and dashboard: another job selector, runbook
/// location, data source, threshold and severity.
#[test]
fn a_configured_mixin_uses_its_configuration() {
    let jsonnet = tool("jsonnet", "apt-get install jsonnet (cargo xtask test installs it)");
    let code = r#"
        local m = (import 'mixin.libsonnet') + { _config+:: {
          collectorSelector: 'job="ebpf", cluster="eu"',
          collectorJobLabels: 'cluster, job',
          collectorRunbookURLPattern: 'https://wiki.example/runbooks#%s',
          datasourceUid: 'mimir',
          dashboardTag: 'ebpf',
          collectorAlerts+: { HTTPHighLatency+: { threshold: 2.5, 'for': '20m' }, HostFileDescriptorLimit+: { critical: null } },
        } };
        { rules: m.prometheusRules.groups + m.prometheusAlerts.groups, dashboards: m.grafanaDashboards }"#;
    let out = run_ok(Command::new(jsonnet).arg("-J").arg(deploy("collector-mixin")).args(["-e", code]));
    let made: Value = serde_json::from_str(&out).unwrap();
    let rules: Vec<&Value> =
        made["rules"].as_array().unwrap().iter().flat_map(|g| g["rules"].as_array().unwrap()).collect();
    assert!(rules.len() > 30, "{}", rules.len());
    // Every rule selects the configured collectors, or reads only recorded series (made from
    // them, with every label but the per-request ones).
    let recorded: Vec<&str> = rules.iter().filter_map(|r| r["record"].as_str()).collect();
    for r in &rules {
        let expr = r["expr"].as_str().unwrap();
        let reads_recorded = recorded.iter().any(|rec| expr.contains(rec));
        assert!(
            (expr.contains(r#"job="ebpf", cluster="eu""#) || reads_recorded) && !expr.contains(r#"job="collector""#),
            "{expr}"
        );
        assert!(!expr.contains("by (job") && !expr.contains("on (job"), "not per cluster: {expr}");
        if let Some(name) = r["alert"].as_str() {
            assert_eq!(
                r["annotations"]["runbook_url"],
                format!("https://wiki.example/runbooks#{}", name.to_lowercase())
            );
        }
    }
    let latency = rules.iter().find(|r| r["alert"] == "HTTPHighLatency").unwrap();
    assert!(latency["expr"].as_str().unwrap().contains(") > 2.5\n"), "{latency}");
    assert_eq!(latency["for"], "20m");
    assert!(latency["annotations"]["description"].as_str().unwrap().contains("over 2.5 s for 20 minutes"), "{latency}");
    let fd: Vec<_> = rules.iter().filter(|r| r["alert"] == "HostFileDescriptorLimit").collect();
    assert_eq!(fd.len(), 1, "the critical one is left out");
    assert_eq!(fd[0]["labels"]["severity"], "warning");
    let dashboards = made["dashboards"].as_object().unwrap();
    assert_eq!(dashboards.len(), 4);
    for (name, d) in dashboards {
        let vars = d["templating"]["list"].as_array().unwrap();
        let ds = vars.iter().find(|v| v["name"] == "datasource").unwrap();
        assert_eq!(ds["current"]["value"], "mimir", "{name}");
        let job = vars.iter().find(|v| v["name"] == "job").unwrap();
        assert_eq!(
            job["query"]["query"], r#"label_values(collector_build_info{job="ebpf", cluster="eu"}, job)"#,
            "{name}"
        );
        assert!(!d.to_string().contains(r#"job=\"collector\""#), "{name} still selects job=\"collector\"");
        assert_eq!(d["tags"][0], "ebpf", "{name}");
        assert_eq!(d["links"][0]["tags"], json!(["ebpf"]), "{name}");
    }
    let http = &dashboards["http.json"];
    let thresholds = http.to_string();
    assert!(thresholds.contains(r#"{"color":"red","value":2.5}"#), "the HTTP dashboard's latency line is not at 2.5 s");
}
