//! Helpers for the integration tests: start the real collector binary, scrape it, parse the
//! exposition, and make cgroups and traffic. The tests need root and a kernel with the hooks.
#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

pub mod process;

use process::KillOnDrop;

pub const BIN: &str = env!("CARGO_BIN_EXE_collector");

/// Flags for a fast start: without the disk and network eBPF collectors (HTTP stays on).
pub const FAST: &[&str] = &["--no-collector.diskbpf", "--no-collector.netbpf"];

/// A running collector; killed on drop.
pub struct Collector {
    pub child: KillOnDrop,
    pub addr: String,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Collector {
    /// Starts the collector on a free loopback port with JSON logs and waits until it serves.
    pub fn start(args: &[&str]) -> Collector {
        Self::start_wrapped(&[], args)
    }

    /// Like [`Collector::start`], run through a wrapper command (`wrapper[0] wrapper[1..] BIN
    /// args`), e.g. setpriv to start it with fewer privileges.
    pub fn start_wrapped(wrapper: &[&str], args: &[&str]) -> Collector {
        let mut cmd = match wrapper.split_first() {
            None => Command::new(BIN),
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(BIN);
                c
            }
        };
        let listen = format!("127.0.0.1:{}", process::free_port());
        cmd.args(["--web.listen-address", &listen, "--log.format", "json"]).args(args);
        Collector::spawn(cmd)
    }

    /// Runs `cmd`, which must end in the collector started with `--log.format json` (through a
    /// wrapper that execs it, so that killing the child kills the collector), and waits until it
    /// serves.
    pub fn spawn(mut cmd: Command) -> Collector {
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("starting the collector");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("collector started") {
                    let v: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
                    let _ = tx.send(v["fields"]["listen"].as_str().unwrap().to_owned());
                }
                log2.lock().unwrap().push(line);
            }
        });
        // Loading takes about a second here; the kernel matrix (software emulation, where the
        // verifier runs tens of times slower) allows more through COLLECTOR_TEST_START_SECS.
        let secs = std::env::var("COLLECTOR_TEST_START_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(30);
        let addr = match rx.recv_timeout(Duration::from_secs(secs)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait();
                panic!("collector did not start ({status:?}); log:\n{}", log.lock().unwrap().join("\n"));
            }
        };
        Collector { child: KillOnDrop(child), addr, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Scrapes /metrics and parses it.
    pub fn scrape(&self) -> Metrics {
        Metrics::parse(&self.scrape_text())
    }

    pub fn scrape_text(&self) -> String {
        let resp = ureq::get(&self.url("/metrics")).call().expect("scrape");
        assert_eq!(resp.status(), 200);
        resp.into_string().unwrap()
    }

    /// The collector's process id (the wrapper's, which execs it, when there is one).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The collector's resident memory (VmRSS) in kB.
    pub fn rss_kb(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .unwrap()
            .trim()
            .trim_end_matches(" kB")
            .parse()
            .unwrap()
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits up to `limit` for `needle` in the log (the log reader runs on its own thread),
    /// looking every 20 ms; whether it came.
    pub fn log_appears(&self, needle: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.log_text().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// One sample of the exposition.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The parsed exposition (text format 0.0.4).
#[derive(Debug, Default)]
pub struct Metrics {
    pub samples: Vec<Sample>,
    /// `# TYPE` of each family.
    pub types: BTreeMap<String, String>,
    pub help: BTreeMap<String, String>,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let mut m = Metrics::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (n, t) = rest.split_once(' ').unwrap();
                m.types.insert(n.into(), t.into());
                continue;
            }
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (n, h) = rest.split_once(' ').unwrap_or((rest, ""));
                m.help.insert(n.into(), h.into());
                continue;
            }
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name_labels, value) = line.rsplit_once(' ').unwrap();
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")),
            };
            let (name, labels) = match name_labels.split_once('{') {
                None => (name_labels.to_owned(), BTreeMap::new()),
                Some((n, rest)) => (n.to_owned(), parse_labels(rest.strip_suffix('}').unwrap())),
            };
            m.samples.push(Sample { name, labels, value });
        }
        m
    }

    /// Samples of `name` whose labels include every pair in `want`.
    pub fn find(&self, name: &str, want: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| s.name == name && want.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
            .collect()
    }

    /// The single sample of `name` with labels `want`; panics when absent or ambiguous.
    pub fn get(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        let found = self.find(name, want);
        assert_eq!(found.len(), 1, "expected one {name}{want:?}, found {found:?}");
        found[0].value
    }

    /// Like [`Metrics::get`], 0 when the series does not exist yet.
    pub fn get_or_zero(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        let found = self.find(name, want);
        assert!(found.len() <= 1, "ambiguous {name}{want:?}: {found:?}");
        found.first().map_or(0.0, |s| s.value)
    }
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        assert_eq!(chars.next(), Some('"'));
        let mut val = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => val.push('\n'),
                    Some(o) => val.push(o),
                    None => break,
                },
                '"' => break,
                o => val.push(o),
            }
        }
        out.insert(key.trim_start_matches(',').to_owned(), val);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    out
}

/// The cgroup v2 mount on this machine (pure v2 or hybrid).
pub fn cgroup_v2_root() -> PathBuf {
    for p in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        if Path::new(p).join("cgroup.procs").exists() && Path::new(p).join("cgroup.controllers").exists() {
            return PathBuf::from(p);
        }
    }
    panic!("no cgroup v2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified");
}

/// A cgroup created for one test, removed on drop (after its processes exit).
pub struct TestCgroup {
    pub dir: PathBuf,
    /// Path relative to the v2 root, as the collector labels it.
    pub rel: String,
}

impl TestCgroup {
    pub fn new(tag: &str) -> TestCgroup {
        let name = format!("collector-test-{tag}-{}", std::process::id());
        let dir = cgroup_v2_root().join(&name);
        std::fs::create_dir(&dir).expect("creating a test cgroup (needs root)");
        TestCgroup { dir, rel: format!("/{name}") }
    }

    /// Runs `script` with bash inside the cgroup and waits for it.
    pub fn run_bash(&self, script: &str) {
        let procs = self.dir.join("cgroup.procs");
        let full = format!("echo $$ > {} && {script}", procs.display());
        let out = Command::new("bash").arg("-c").arg(&full).output().expect("bash");
        assert!(out.status.success(), "{full} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::remove_dir(&self.dir).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A tree of cgroups made for one test below the v2 root, removed deepest first on drop
/// (after the processes in it exit).
pub struct CgroupTree {
    top: std::path::PathBuf,
    made: Vec<std::path::PathBuf>,
}

impl CgroupTree {
    pub fn new(tag: &str) -> CgroupTree {
        let top = cgroup_v2_root().join(format!("collector-test-{tag}-{}", std::process::id()));
        CgroupTree { top, made: Vec::new() }
    }

    /// Creates `rel` (and its parents) below the top; its `cgroup.procs`.
    pub fn make(&mut self, rel: &str) -> String {
        let mut dir = self.top.clone();
        for comp in std::iter::once("").chain(rel.split('/')) {
            dir = if comp.is_empty() { dir } else { dir.join(comp) };
            if !dir.exists() {
                std::fs::create_dir(&dir).expect("creating a test cgroup (needs root)");
                self.made.push(dir.clone());
            }
        }
        dir.join("cgroup.procs").display().to_string()
    }
}

impl Drop for CgroupTree {
    fn drop(&mut self) {
        for dir in self.made.iter().rev() {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while std::fs::remove_dir(dir).is_err() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }
}

/// Runs `script` with bash inside the cgroup whose `cgroup.procs` is `procs`.
pub fn in_cgroup(procs: &str, script: &str) -> Command {
    let mut c = Command::new("bash");
    c.arg("-c").arg(format!("echo $$ > {procs} && {script}"));
    c
}

/// Runs promtool's linter on an exposition; returns its complaints (empty when clean).
pub fn promtool_check(text: &str) -> String {
    use std::io::Write as _;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) must be installed: cargo xtask test installs it");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    if out.status.success() { String::new() } else { s }
}

/// The noise model of every timing comparison in the tests: a histogram's mean against the
/// mean a client measured around the same exchanges agrees when
/// `|histogram - client| <= REL * client + slack`.
///
/// - `slack` is what the client's own clock holds beyond the hooks, measured in the same run:
///   the client's mean for null exchanges (answered at once) with the same client, server and
///   connection. The client's clock holds its own send and receive path (system calls,
///   encryption, the language runtime's streams) and the server's reading and writing, which a
///   histogram holds only in part; a null exchange holds all of that and nothing else, so its
///   mean bounds it, on whatever machine the test runs.
/// - [`REL`] bounds how much that part varies between the null and the measured exchanges
///   (scheduling, wake-ups after a server's sleep), relative to the measured mean.
pub const REL: f64 = 0.05;

/// Count and sum of the samples of histogram `name` (`_count`, `_sum`) with labels `want`.
pub fn histogram_totals(m: &Metrics, name: &str, want: &[(&str, &str)]) -> (f64, f64) {
    let total = |suffix: &str| m.find(&format!("{name}_{suffix}"), want).iter().map(|s| s.value).sum::<f64>();
    (total("count"), total("sum"))
}

/// The mean of the `n` exchanges a histogram gained between two scrapes (`before`, `after`).
pub fn mean_between(before: &Metrics, after: &Metrics, name: &str, want: &[(&str, &str)], n: usize) -> f64 {
    let (c0, s0) = histogram_totals(before, name, want);
    let (c1, s1) = histogram_totals(after, name, want);
    assert_eq!(c1 - c0, n as f64, "{name}{want:?}: exchanges counted between the two scrapes");
    (s1 - s0) / n as f64
}

/// Asserts that `mean` (a histogram's) agrees with `client` (the client's own mean) under the
/// noise model ([`REL`]), `null` being the client's mean for null exchanges; prints the figures.
pub fn assert_agrees(what: &str, mean: f64, client: f64, null: f64) {
    let bound = REL * client + null;
    eprintln!(
        "{what}: histogram mean {:.3} ms, client {:.3} ms, apart {:.3} ms ({:.2}%); bound {:.3} ms \
         ({:.0}% + the client's null exchange, {:.3} ms)",
        mean * 1e3,
        client * 1e3,
        (mean - client).abs() * 1e3,
        (mean - client).abs() / client * 100.0,
        bound * 1e3,
        REL * 100.0,
        null * 1e3
    );
    assert!(
        (mean - client).abs() <= bound,
        "{what}: histogram mean {mean} s vs the client's {client} s (null {null} s)"
    );
}
