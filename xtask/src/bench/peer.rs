//! The `peer` part: this collector side by side with a real peer on the same work in the same
//! run. The peer is Coroot node-agent's eBPF tracer (`../shared/peers/coroot/`, given with
//! `--peer coroot=PATH`). Each round runs every side in turn — nothing, this collector, the
//! peer; the order rotates from round to round — on two loads:
//! - worst case: nginx serving a 25-byte file to `wrk -t1 -c50` (keep-alive), as fast as it
//!   goes;
//! - realistic case: a server (Python's http.server) whose handler takes 1 ms and answers 4 KiB,
//!   at a fixed request rate well under saturation (load.rs), where the added CPU per request is
//!   the stable figure.
//!
//! Per side: throughput and p99 latency against the side without either; CPU per request minus
//! the same figure without either (added CPU per request), two ways: of the processes taking
//! part (the load generators, the server, the agent: exact per-thread times, in which the
//! kernel programs' and the loopback softirq work run in those processes' context is included;
//! not disturbed by other work on the machine) and of the whole machine (all cores,
//! `/proc/stat`: everything, other tenants' work included, in 10 ms ticks); the agent's own CPU
//! per request and its RSS. Medians and ranges over the rounds.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail, ensure};
use serde_json::{Value, json};

use super::{
    load,
    util::{self, Killed, free_port, median, nginx_conf, process_cpu, wait_port, wrk_run},
};
use crate::root_dir;

/// `--peer NAME=PATH`.
#[derive(Clone, Debug)]
pub struct Peer {
    pub name: String,
    pub path: PathBuf,
}

pub fn parse_peer(s: &str) -> Result<Peer, String> {
    let (name, path) =
        s.split_once('=').ok_or("expected NAME=PATH, e.g. coroot=../shared/peers/coroot/coroot-l7-harness")?;
    if name != "coroot" {
        return Err(format!("unknown peer {name:?} (known: coroot)"));
    }
    let path = PathBuf::from(path);
    if !path.is_file() {
        return Err(format!("{}: no such file", path.display()));
    }
    Ok(Peer { name: name.to_owned(), path: std::fs::canonicalize(path).map_err(|e| e.to_string())? })
}

/// Busy jiffies of all CPUs (`/proc/stat`).
fn machine_cpu() -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("/proc/stat")?;
    let f: Vec<u64> = line.split_whitespace().skip(1).map(|v| v.parse().unwrap_or(0)).collect();
    ensure!(f.len() >= 8, "short cpu line in /proc/stat");
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let total: u64 = f[..8].iter().sum();
    Ok(total - f[3] - f[4])
}

/// Nanoseconds on CPU of every thread of a process (`/proc/<pid>/task/*/schedstat`, first
/// field): exact, unlike the 10 ms ticks of `/proc/<pid>/stat`. Without
/// CONFIG_IRQ_TIME_ACCOUNTING (Debian's kernels) softirq work done in a task's context (the
/// loopback receive path, cgroup_skb programs) is in its time.
fn task_cpu_ns(pid: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    dir.flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// A process's CPU time, its exited threads included (`/proc/<pid>/stat` utime + stime: the
/// scheduler's exact run time, rounded to 10 ms ticks), or the sum over its live threads'
/// exact times when that is larger (it is, up to the rounding, unless threads exited).
pub(super) fn process_cpu_ns(pid: u32) -> u64 {
    let stat = (process_cpu(pid).unwrap_or(0.0) * 1e9) as u64;
    stat.max(task_cpu_ns(pid))
}

/// This process's CPU time, its exited threads and reaped children (wrk) included
/// (getrusage), in nanoseconds.
fn own_cpu_ns() -> u64 {
    let usage = |who| {
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: getrusage writes the struct it is given.
        unsafe { libc::getrusage(who, &mut ru) };
        let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
        (us(ru.ru_utime) + us(ru.ru_stime)) * 1000
    };
    usage(libc::RUSAGE_SELF) + usage(libc::RUSAGE_CHILDREN)
}

/// CPU spent while `f` ran: the machine's (all cores, `/proc/stat`, seconds), and that of the
/// processes taking part (`pids`, and this process with its reaped children: the load
/// generators; seconds), and `f`'s result.
pub(super) fn with_cpu<T>(pids: &[u32], f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<(f64, f64, T)> {
    let procs = || own_cpu_ns() + pids.iter().map(|p| process_cpu_ns(*p)).sum::<u64>();
    let (b0, p0) = (machine_cpu()?, procs());
    let r = f()?;
    let (b1, p1) = (machine_cpu()?, procs());
    Ok(((b1 - b0) as f64 / 100.0, (p1 - p0) as f64 / 1e9, r))
}

/// Waits until a freshly started agent is idle (less than 5% of a CPU over half a second, at
/// most 20 s): the peer goes on loading after it listens.
pub(super) fn settle(pid: u32) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        let t0 = task_cpu_ns(pid);
        std::thread::sleep(std::time::Duration::from_millis(500));
        if task_cpu_ns(pid) - t0 < 25_000_000 {
            return;
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    Without,
    Ours,
    Peer,
}

impl Side {
    fn key(self) -> &'static str {
        match self {
            Side::Without => "without",
            Side::Ours => "collector",
            Side::Peer => "peer",
        }
    }
}

/// A running agent: its process and where it serves metrics.
struct Agent {
    child: Killed,
    metrics: String,
}

/// Starts the peer and waits for its endpoint; the tracer sets `nf_conntrack_events`, which
/// the caller restores.
fn start_peer(peer: &Peer) -> anyhow::Result<Agent> {
    let port = free_port()?;
    let child = Killed(
        Command::new(&peer.path)
            .env("HARNESS_LISTEN", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting the peer {}", peer.path.display()))?,
    );
    wait_port(port, "the peer")?;
    Ok(Agent { child, metrics: format!("http://127.0.0.1:{port}/metrics") })
}

fn start(side: Side, collector: &Path, peer: &Peer) -> anyhow::Result<Option<Agent>> {
    Ok(match side {
        Side::Without => None,
        Side::Ours => {
            let (child, metrics) = util::start_collector(collector)?;
            Some(Agent { child, metrics })
        }
        Side::Peer => Some(start_peer(peer)?),
    })
}

/// Sum of the samples of `family` in an exposition whose labels contain every `want`.
fn sum_samples(text: &str, family: &str, want: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(family) && l[family.len()..].starts_with(['{', ' ']))
        .filter(|l| want.iter().all(|w| l.contains(w)))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

fn rss_kb(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |k: &str| {
        status.lines().find_map(|l| l.strip_prefix(k)?.trim().strip_suffix("kB")?.trim().parse().ok()).unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// One round of one side on both loads.
#[derive(Default, Clone)]
struct Measure {
    worst_requests: f64,
    worst_rps: f64,
    worst_p99: f64,
    worst_cpu_s: f64,
    worst_proc_cpu_s: f64,
    worst_agent_cpu_s: f64,
    worst_counted: Option<f64>,
    real_requests: f64,
    real_p99: f64,
    real_cpu_s: f64,
    real_proc_cpu_s: f64,
    real_agent_cpu_s: f64,
    real_counted: Option<f64>,
    rss_kb: u64,
    hwm_kb: u64,
}

pub(super) struct PeerOpts {
    pub(super) rounds: usize,
    pub(super) secs: u64,
    pub(super) rate: u64,
}

pub(super) fn compare(collector: &Path, peer: &Peer, opts: &PeerOpts) -> anyhow::Result<Value> {
    ensure!(opts.rounds >= 1 && opts.secs >= 1 && opts.rate >= 16, "peer: rounds, seconds and rate too small");
    let dir = root_dir().join("target/bench/peer");
    std::fs::create_dir_all(&dir)?;
    let nginx_port = free_port()?;
    let conf = nginx_conf(&dir, nginx_port, 1024)?;
    let nginx = Killed(Command::new("nginx").arg("-c").arg(&conf).spawn().context("starting nginx")?);
    wait_port(nginx_port, "nginx")?;
    let nginx_pid = nginx.0.id();
    let url = format!("http://127.0.0.1:{nginx_port}/index.html");
    let (delay_server, delay_port) = load::delay_server()?;
    let delay_pid = delay_server.0.id();
    const CONNS: u64 = 16;
    let conntrack = "/proc/sys/net/netfilter/nf_conntrack_events";
    let saved = std::fs::read_to_string(conntrack).ok();
    let result = (|| -> anyhow::Result<Value> {
        eprintln!("xtask bench: peer: warming up");
        wrk_run(&url, 2, 50)?;
        load::fixed_rate_process(delay_port, opts.rate, 1, CONNS)?;
        let sides = [Side::Without, Side::Ours, Side::Peer];
        let mut rounds: Vec<[Measure; 3]> = Vec::new();
        for round in 0..opts.rounds {
            let mut m: [Measure; 3] = Default::default();
            for k in 0..3 {
                let side = sides[(round + k) % 3];
                let agent = start(side, collector, peer)?;
                let pid = agent.as_ref().map(|a| a.child.0.id());
                if let Some(pid) = pid {
                    settle(pid);
                }
                let agent_cpu = || pid.map_or(Ok(0.0), process_cpu);
                let involved: Vec<u32> = [Some(nginx_pid), pid].into_iter().flatten().collect();
                let scrape = || -> Option<String> {
                    let a = agent.as_ref()?;
                    ureq::get(&a.metrics).call().ok()?.into_string().ok()
                };
                let counted = |text: Option<String>, port: u16| -> Option<f64> {
                    let text = text?;
                    Some(match side {
                        Side::Ours => sum_samples(
                            &text,
                            "http_server_request_duration_seconds_count",
                            &[&format!("server_port=\"{port}\"")],
                        ),
                        // The peer has no port label: its inbound requests of the server's
                        // process name (nginx, or xtask for the delay server).
                        _ => sum_samples(
                            &text,
                            "coroot_harness_http_requests_total",
                            &[
                                "direction=\"inbound\"",
                                if port == nginx_port { "comm=\"nginx" } else { "comm=\"xtask" },
                            ],
                        ),
                    })
                };
                let s = &mut m[sides.iter().position(|x| *x == side).unwrap()];
                let before = counted(scrape(), nginx_port).unwrap_or(0.0);
                let c0 = agent_cpu()?;
                let (cpu, proc_cpu, (requests, rps, p99)) = with_cpu(&involved, || wrk_run(&url, opts.secs, 50))?;
                s.worst_agent_cpu_s = agent_cpu()? - c0;
                (s.worst_requests, s.worst_rps, s.worst_p99, s.worst_cpu_s) = (requests, rps, p99, cpu);
                s.worst_proc_cpu_s = proc_cpu;
                // The peer reads its perf buffers on its own schedule: a moment for both.
                std::thread::sleep(std::time::Duration::from_secs(1));
                s.worst_counted = counted(scrape(), nginx_port).map(|n| n - before);
                let before = counted(scrape(), delay_port).unwrap_or(0.0);
                let c0 = agent_cpu()?;
                let involved: Vec<u32> = [Some(delay_pid), pid].into_iter().flatten().collect();
                let (cpu, proc_cpu, run) =
                    with_cpu(&involved, || load::fixed_rate_process(delay_port, opts.rate, opts.secs, CONNS))?;
                s.real_agent_cpu_s = agent_cpu()? - c0;
                (s.real_requests, s.real_p99, s.real_cpu_s) = (run.completed as f64, run.p99_s, cpu);
                s.real_proc_cpu_s = proc_cpu;
                std::thread::sleep(std::time::Duration::from_secs(1));
                s.real_counted = counted(scrape(), delay_port).map(|n| n - before);
                if let Some(pid) = pid {
                    (s.rss_kb, s.hwm_kb) = rss_kb(pid);
                }
                if let Some(mut a) = agent {
                    ensure!(a.child.0.try_wait()?.is_none(), "{} exited during the benchmark", side.key());
                }
                eprintln!(
                    "xtask bench: peer: round {} {:>9}: worst {:>6.0} req/s, CPU/req {:.1} µs machine, {:.1} µs processes; \
                     realistic {:.0} req in {:.1} s, p99 {:.2} ms, CPU/req {:.1} µs machine, {:.1} µs processes",
                    round + 1,
                    side.key(),
                    rps,
                    1e6 * s.worst_cpu_s / s.worst_requests,
                    1e6 * s.worst_proc_cpu_s / s.worst_requests,
                    s.real_requests,
                    run.wall_s,
                    s.real_p99 * 1e3,
                    1e6 * s.real_cpu_s / s.real_requests,
                    1e6 * s.real_proc_cpu_s / s.real_requests,
                );
            }
            rounds.push(m);
        }
        let mut v = summarize(&rounds, opts);
        v["peer"] = json!(format!("{} ({})", peer.name, peer.path.display()));
        Ok(v)
    })();
    if let Some(v) = saved {
        let _ = std::fs::write(conntrack, v.trim());
    }
    result
}

/// Median and range of a figure over the rounds.
fn stat(v: Vec<f64>) -> Value {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    json!({ "median": median(v.clone()), "min": lo, "max": hi, "rounds": v })
}

fn summarize(rounds: &[[Measure; 3]], opts: &PeerOpts) -> Value {
    let per = |i: usize, f: &dyn Fn(&Measure, &Measure) -> f64| stat(rounds.iter().map(|r| f(&r[i], &r[0])).collect());
    let mut sides = serde_json::Map::new();
    for (i, key) in [(1, "collector"), (2, "peer")] {
        let counted = |f: &dyn Fn(&Measure) -> Option<f64>, sent: &dyn Fn(&Measure) -> f64| {
            json!({
                "counted": rounds.iter().map(|r| f(&r[i])).collect::<Vec<_>>(),
                "sent": rounds.iter().map(|r| sent(&r[i])).collect::<Vec<_>>(),
            })
        };
        sides.insert(
            key.to_owned(),
            json!({
                "worst": {
                    "throughput_ratio": per(i, &|s, b| s.worst_rps / b.worst_rps),
                    "p99_ratio": per(i, &|s, b| s.worst_p99 / b.worst_p99),
                    "added_machine_cpu_us_per_request": per(i, &|s, b| 1e6 * (s.worst_cpu_s / s.worst_requests - b.worst_cpu_s / b.worst_requests)),
                    "added_cpu_us_per_request": per(i, &|s, b| 1e6 * (s.worst_proc_cpu_s / s.worst_requests - b.worst_proc_cpu_s / b.worst_requests)),
                    "agent_cpu_us_per_request": per(i, &|s, _| 1e6 * s.worst_agent_cpu_s / s.worst_requests),
                    "counts": counted(&|s| s.worst_counted, &|s| s.worst_requests),
                },
                "realistic": {
                    "p99_ratio": per(i, &|s, b| s.real_p99 / b.real_p99),
                    "added_machine_cpu_us_per_request": per(i, &|s, b| 1e6 * (s.real_cpu_s / s.real_requests - b.real_cpu_s / b.real_requests)),
                    "added_cpu_us_per_request": per(i, &|s, b| 1e6 * (s.real_proc_cpu_s / s.real_requests - b.real_proc_cpu_s / b.real_requests)),
                    "agent_cpu_us_per_request": per(i, &|s, _| 1e6 * s.real_agent_cpu_s / s.real_requests),
                    "counts": counted(&|s| s.real_counted, &|s| s.real_requests),
                },
                "rss_mib": stat(rounds.iter().map(|r| r[i].rss_kb as f64 / 1024.0).collect()),
                "peak_rss_mib": stat(rounds.iter().map(|r| r[i].hwm_kb as f64 / 1024.0).collect()),
            }),
        );
    }
    // Ours over the peer's added CPU per request, round by round.
    let ratio = |f: &dyn Fn(&Measure) -> f64| {
        stat(rounds.iter().map(|r| (f(&r[1]) - f(&r[0])) / (f(&r[2]) - f(&r[0]))).collect())
    };
    json!({
        "rounds": rounds.len(),
        "seconds_per_run": opts.secs,
        "realistic_rate": opts.rate,
        "realistic_handler_ms": load::HANDLER.as_secs_f64() * 1e3,
        "realistic_body_bytes": load::BODY,
        "baseline_worst_rps": stat(rounds.iter().map(|r| r[0].worst_rps).collect()),
        "sides": sides,
        "added_cpu_ratio_worst": ratio(&|m| m.worst_proc_cpu_s / m.worst_requests),
        "added_cpu_ratio_realistic": ratio(&|m| m.real_proc_cpu_s / m.real_requests),
        "added_machine_cpu_ratio_worst": ratio(&|m| m.worst_cpu_s / m.worst_requests),
        "added_machine_cpu_ratio_realistic": ratio(&|m| m.real_cpu_s / m.real_requests),
    })
}

/// The loss scenarios (collector/tests/loss.rs) with the peer beside the collector: the test
/// `side_by_side_with_the_peer_under_loss` prints both's counts per scenario and fails unless
/// the collector's are exact. Returns its `side by side:` lines.
pub(super) fn under_loss(peer: &Peer) -> anyhow::Result<Value> {
    eprintln!("xtask bench: peer: loss scenarios side by side (collector/tests/loss.rs)");
    let out = crate::cargo()
        .current_dir(root_dir())
        .args(["test", "-p", "collector", "--test", "loss", "--", "--ignored", "--exact"])
        .args(["side_by_side_with_the_peer_under_loss", "--nocapture", "--test-threads=1"])
        .env("COLLECTOR_PEER_COROOT", &peer.path)
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .output()
        .context("running the loss scenarios side by side")?;
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().filter_map(|l| l.strip_prefix("side by side: ")).collect();
    for l in &lines {
        eprintln!("xtask bench: peer: {l}");
    }
    ensure!(out.status.success(), "the loss scenarios side by side failed:\n{err}");
    ensure!(!lines.is_empty(), "the loss scenarios printed no counts:\n{err}");
    Ok(json!(lines))
}

/// Fails early with the reason when the peer cannot run here.
pub(super) fn check(peer: &Peer) -> anyhow::Result<()> {
    if !Path::new("/sys/kernel/tracing/events").exists() {
        bail!("the peer needs tracefs at /sys/kernel/tracing");
    }
    ensure!(peer.path.is_file(), "{}: no such file", peer.path.display());
    Ok(())
}
