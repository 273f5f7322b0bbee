//! Shared by the benchmark parts: child processes and ports, the collector under test, wrk,
//! the kernel's BPF program statistics (bpftool), nginx, process CPU time.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use serde_json::Value;

/// Scrape time target at 100k series (seconds).
pub(super) const SCALE_TARGET_S: f64 = 0.050;

pub(super) struct Killed(pub(super) Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(super) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub(super) fn wait_port(port: u16, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what} did not start listening on {port}")
}

/// Waits until the collector on `port` answers `/-/ready`. The collector binds its port before
/// it loads and attaches its programs (a port below 1024 needs the privileges it drops), so an
/// accepted connection does not mean the programs are running; it serves only once they are.
fn wait_ready(port: u16) -> anyhow::Result<()> {
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(5)).build();
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if agent.get(&format!("http://127.0.0.1:{port}/-/ready")).call().is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("the collector did not become ready on {port}")
}

/// Starts the release collector (all default collectors) on a free port; returns its metrics URL.
pub(super) fn start_collector(bin: &Path) -> anyhow::Result<(Killed, String)> {
    start_collector_with(bin, &[])
}

/// [`start_collector`] with extra environment variables.
pub(super) fn start_collector_with(bin: &Path, env: &[(&str, &str)]) -> anyhow::Result<(Killed, String)> {
    start_collector_full(bin, env, &[])
}

/// [`start_collector`] with extra environment variables and flags.
pub(super) fn start_collector_full(
    bin: &Path,
    env: &[(&str, &str)],
    args: &[&str],
) -> anyhow::Result<(Killed, String)> {
    let port = free_port()?;
    let child = Killed(
        Command::new(bin)
            .args(["--web.listen-address", &format!("127.0.0.1:{port}")])
            .args(args)
            .envs(env.iter().copied())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the collector")?,
    );
    wait_ready(port)?;
    Ok((child, format!("http://127.0.0.1:{port}/metrics")))
}

/// One wrk run: requests per second and p99 latency in seconds.
pub(super) fn wrk(url: &str, secs: u64, conns: u32) -> anyhow::Result<(f64, f64)> {
    wrk_run(url, secs, conns).map(|(_, rps, p99)| (rps, p99))
}

/// One wrk run: requests completed, requests per second and p99 latency in seconds.
pub(super) fn wrk_run(url: &str, secs: u64, conns: u32) -> anyhow::Result<(f64, f64, f64)> {
    wrk_on(url, secs, conns, None)
}

/// [`wrk_run`] on the CPUs `cpus` (a `taskset` list) when given.
pub(super) fn wrk_on(url: &str, secs: u64, conns: u32, cpus: Option<&str>) -> anyhow::Result<(f64, f64, f64)> {
    let mut cmd = match cpus {
        Some(c) => {
            let mut t = Command::new("taskset");
            t.args(["-c", c, "wrk"]);
            t
        }
        None => Command::new("wrk"),
    };
    let out = cmd
        .args(["-t1", &format!("-c{conns}"), &format!("-d{secs}s"), "--latency", url])
        .output()
        .context("running wrk (Debian package wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.success(), "wrk failed: {text}");
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .context("no Requests/sec in wrk output")?
        .trim()
        .parse()?;
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .map(|v| parse_wrk_duration(v.trim()))
        .transpose()?
        .context("no 99% latency in wrk output")?;
    let errors = text.lines().any(|l| l.contains("Non-2xx") || l.contains("Socket errors"));
    ensure!(!errors, "wrk reported errors: {text}");
    // "  123456 requests in 5.00s, 28.01MB read"
    let requests = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in ").map(|(n, _)| n.trim().to_owned()))
        .context("no request count in wrk output")?
        .parse()?;
    Ok((requests, rps, p99))
}

fn parse_wrk_duration(s: &str) -> anyhow::Result<f64> {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).context("duration unit")?);
    let v: f64 = num.parse()?;
    Ok(match unit {
        "us" => v * 1e-6,
        "ms" => v * 1e-3,
        "s" => v,
        "m" => v * 60.0,
        u => bail!("unknown wrk unit {u}"),
    })
}

/// A loaded BPF program, from `bpftool prog show --json`.
pub(super) struct Prog {
    pub(super) id: u64,
    pub(super) name: String,
    pub(super) run_time_ns: u64,
    pub(super) run_cnt: u64,
    pub(super) bytes_xlated: u64,
}

/// Every loaded BPF program.
pub(super) fn bpf_programs() -> anyhow::Result<Vec<Prog>> {
    let out = Command::new("bpftool").args(["prog", "show", "--json"]).output().context("running bpftool")?;
    ensure!(out.status.success(), "bpftool prog show failed");
    let v: Value = serde_json::from_slice(&out.stdout)?;
    let num = |p: &Value, k: &str| p[k].as_u64().unwrap_or(0);
    Ok(v.as_array()
        .context("bpftool output")?
        .iter()
        .map(|p| Prog {
            id: num(p, "id"),
            name: p["name"].as_str().unwrap_or("").to_owned(),
            run_time_ns: num(p, "run_time_ns"),
            run_cnt: num(p, "run_cnt"),
            bytes_xlated: num(p, "bytes_xlated"),
        })
        .collect())
}

/// Ids of the programs loaded now.
pub(super) fn program_ids() -> anyhow::Result<Vec<u64>> {
    Ok(bpf_programs()?.iter().map(|p| p.id).collect())
}

/// Name, run time (ns) and run count of every program loaded since `before` was taken.
pub(super) fn programs_since(before: &[u64]) -> anyhow::Result<Vec<(String, u64, u64)>> {
    Ok(bpf_programs()?
        .into_iter()
        .filter(|p| !before.contains(&p.id))
        .map(|p| (p.name, p.run_time_ns, p.run_cnt))
        .collect())
}

/// Per program: run time (ns) and runs added between two [`programs_since`] snapshots.
pub(super) fn program_deltas(start: &[(String, u64, u64)], end: &[(String, u64, u64)]) -> Vec<(String, u64, u64)> {
    end.iter()
        .filter_map(|(name, t1, c1)| {
            let (_, t0, c0) = start.iter().find(|s| &s.0 == name)?;
            Some((name.clone(), t1 - t0, c1 - c0))
        })
        .collect()
}

/// HTTP programs attached by other processes (another collector on this machine).
pub(super) fn other_collectors() -> anyhow::Result<usize> {
    Ok(bpf_programs()?.iter().filter(|p| p.name == "http_ingress" || p.name == "http_egress").count() / 2)
}

pub(super) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() { f64::NAN } else { v[v.len() / 2] }
}

/// User + system CPU seconds of a process, from /proc/<pid>/stat.
pub(super) fn process_cpu(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = &stat[stat.rfind(')').context("stat")? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

/// nginx serving a 25-byte file (`/index.html`) on 127.0.0.1:`port`, one worker taking up to
/// `connections` connections.
pub(super) fn nginx_conf(dir: &Path, port: u16, connections: usize) -> anyhow::Result<PathBuf> {
    nginx_conf_listen(dir, &format!("127.0.0.1:{port}"), "", connections)
}

/// [`nginx_conf`] with a `listen` of its own and more server directives (TLS).
pub(super) fn nginx_conf_listen(dir: &Path, listen: &str, extra: &str, connections: usize) -> anyhow::Result<PathBuf> {
    let root = dir.join("www");
    std::fs::create_dir_all(&root)?;
    std::fs::write(root.join("index.html"), "hello from the benchmark\n")?;
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off; master_process off; worker_processes 1; user root; pid {d}/nginx.pid; error_log {d}/error.log;\n\
             worker_rlimit_nofile {files};\n\
             events {{ worker_connections {connections}; }}\n\
             http {{ access_log off; sendfile on; keepalive_timeout 60; keepalive_requests 1000000;\n\
               client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n\
               server {{ listen {listen}; root {root}; {extra} }} }}\n",
            d = dir.display(),
            root = root.display(),
            files = (connections as u64 + 100).min(nofile_hard_limit())
        ),
    )?;
    Ok(conf)
}

/// The hard limit on open files.
fn nofile_hard_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain libc call on a valid struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 { lim.rlim_max } else { 1024 }
}
