//! The deployment stack against a real Prometheus (no Docker engine or Grafana binary exists on
//! these machines): a real Prometheus with the shipped configuration and rules scrapes a real
//! collector while HTTP and disk traffic runs, and every dashboard query and alert rule is
//! evaluated through its HTTP API. The only changes to the shipped configuration: the scrape
//! target addresses, the rule file paths, and scrape/evaluation intervals of 1 s instead of
//! 15 s so that the test gets enough samples in about half a minute (`$__rate_interval` is then
//! 4 s). The files themselves: deploy.rs.
mod common;

#[path = "common/deploy.rs"]
mod deploy_util;

#[path = "common/http.rs"]
mod http_util;

use std::{
    collections::BTreeMap,
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
    process::{KillOnDrop, free_port, wait_port},
};
use http_util::{Client, TestServer};
use serde_json::{Value, json};

use deploy_util::*;

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

/// Metrics with series only while something is wrong: alert selectors on them are not
/// expected to find series in a healthy run.
const ONLY_ON_FAILURE: &[&str] = &["collector_collector_skipped_info"];

fn result(v: Value) -> Result<Vec<Value>, String> {
    if v["status"] != "success" {
        return Err(format!("{}: {}", v["errorType"], v["error"]));
    }
    Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
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
            // The data source variable picks Grafana's data source: here the one Prometheus.
            if v["type"] == "datasource" {
                continue;
            }
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
                        // As for the alerts: series that exist only while something is wrong.
                        if ONLY_ON_FAILURE.iter().any(|m| sel.starts_with(m)) {
                            continue;
                        }
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
    // The pod also serves and makes gRPC calls (OK, NOT_FOUND, INTERNAL; unary and streaming):
    // the gRPC dashboard and alert rule's series.
    let python = std::env::var_os("DEPLOY_TOOLS")
        .map(|d| std::path::Path::new(&d).join("bin/python").display().to_string())
        .unwrap_or_else(|| "python3".into());
    let peer = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/grpc_peer.py");
    let grpc_port = free_port();
    let _grpc_server = KillOnDrop(
        in_cgroup(&procs, &format!("exec {python} {} serve {grpc_port}", peer.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_port(grpc_port);
    let call =
        |kind: &str, status: &str| format!("{python} {} call {grpc_port} {kind} 1 {status} 64 3", peer.display());
    let _grpc_traffic = KillOnDrop(
        in_cgroup(
            &procs,
            &format!(
                "while :; do {} && {} && {} && {}; sleep 0.2; done",
                call("Unary", "OK"),
                call("Unary", "NOT_FOUND"),
                call("Unary", "INTERNAL"),
                call("ServerStream", "OK")
            ),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
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
                // The pod's Kubernetes namespace (workloads) and its service namespace (HTTP,
                // gRPC: service.namespace, else the Kubernetes namespace), the same here.
                "k8s_namespace" | "service_namespace" => "shop",
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
            // A series that exists only while something is wrong (a skipped collector) has
            // none here, where every collector runs; its expression is evaluated above.
            if ONLY_ON_FAILURE.iter().any(|m| sel.starts_with(m)) {
                continue;
            }
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
