//! `cargo xtask bench`: benchmarks on this machine, measured side by side in one run.
//!
//! Parts (all by default, `--only` picks some; the others keep their figures from the last
//! `target/bench/results.json`):
//! - `micro`: the criterion micro-benchmarks of `benches/` (map contents → families, encoding).
//! - `scrape`: our collector and Debian's prometheus-node-exporter, both running, scraped
//!   alternately by one loop: CPU seconds and wall time per scrape, RSS (bench_scrape.rs).
//! - `scale`: scrape time and RSS with 1k, 10k and 100k series made by real HTTP requests, and
//!   with 10k open keep-alive connections (bench_scrape.rs).
//! - `http`: nginx serving a small file to wrk (keep-alive), alternating rounds without and
//!   with the collector running; throughput and p99 latency ratios, and the run time per event
//!   of every eBPF program from the kernel's BPF statistics (`kernel.bpf_stats_enabled`).
//!
//! Writes `target/bench/results.json` and the generated section of `docs/performance.md`.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use serde_json::{Value, json};

use crate::{apt_install, cargo, root_dir, status};

#[derive(clap::Args)]
pub struct Args {
    /// HTTP overhead: interleaved rounds (each: one run without, one with the collector).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// HTTP overhead: seconds per run.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Scrape comparison: scrapes of each exporter (alternating).
    #[arg(long, default_value_t = 200)]
    pub scrapes: usize,
    /// Scale: series levels (made by HTTP requests; the last one is checked against the 50 ms target).
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
    pub series: Vec<usize>,
    /// Scale: scrapes per measurement (at least; each measurement also lasts --scale-seconds).
    #[arg(long, default_value_t = 20)]
    pub scale_scrapes: usize,
    /// Scale: minimum seconds per measurement (CPU time is read in 10 ms ticks).
    #[arg(long, default_value_t = 3)]
    pub scale_seconds: u64,
    /// Scale: open keep-alive connections held during the connection measurement.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Only regenerate docs/performance.md from target/bench/results.json.
    #[arg(long)]
    pub docs_only: bool,
    /// Parts to run, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<Part>,
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum Part {
    Micro,
    Scrape,
    Scale,
    Http,
}

pub(crate) struct Killed(pub(crate) Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub(crate) fn wait_port(port: u16, what: &str) -> anyhow::Result<()> {
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
pub(crate) fn wait_ready(port: u16) -> anyhow::Result<()> {
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

/// One wrk run: requests per second and p99 latency in seconds.
fn wrk(url: &str, secs: u64, conns: u32) -> anyhow::Result<(f64, f64)> {
    let out = Command::new("wrk")
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
    Ok((rps, p99))
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
struct Prog {
    id: u64,
    name: String,
    run_time_ns: u64,
    run_cnt: u64,
    bytes_xlated: u64,
}

/// Every loaded BPF program.
fn bpf_programs() -> anyhow::Result<Vec<Prog>> {
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
fn program_ids() -> anyhow::Result<Vec<u64>> {
    Ok(bpf_programs()?.iter().map(|p| p.id).collect())
}

/// Name, run time (ns) and run count of every program loaded since `before` was taken.
fn programs_since(before: &[u64]) -> anyhow::Result<Vec<(String, u64, u64)>> {
    Ok(bpf_programs()?
        .into_iter()
        .filter(|p| !before.contains(&p.id))
        .map(|p| (p.name, p.run_time_ns, p.run_cnt))
        .collect())
}

/// Per program: run time (ns) and runs added between two [`programs_since`] snapshots.
fn program_deltas(start: &[(String, u64, u64)], end: &[(String, u64, u64)]) -> Vec<(String, u64, u64)> {
    end.iter()
        .filter_map(|(name, t1, c1)| {
            let (_, t0, c0) = start.iter().find(|s| &s.0 == name)?;
            Some((name.clone(), t1 - t0, c1 - c0))
        })
        .collect()
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() { f64::NAN } else { v[v.len() / 2] }
}

/// nginx serving a 25-byte file (`/index.html`) on 127.0.0.1:`port`, one worker taking up to
/// `connections` connections.
pub(crate) fn nginx_conf(dir: &Path, port: u16, connections: usize) -> anyhow::Result<PathBuf> {
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
               server {{ listen 127.0.0.1:{port}; root {root}; }} }}\n",
            d = dir.display(),
            root = root.display(),
            files = (connections as u64 + 100).min(crate::bench_scrape::nofile_hard_limit())
        ),
    )?;
    Ok(conf)
}

pub fn bench(args: Args) -> anyhow::Result<()> {
    if args.docs_only {
        let path = root_dir().join("target/bench/results.json");
        let results: Value = serde_json::from_slice(&std::fs::read(&path).context("no results yet")?)?;
        return write_docs(&markdown(&results));
    }
    ensure!(crate::is_root(), "the benchmarks load eBPF programs and enable BPF statistics: run as root");
    let run = |p: Part| args.only.is_empty() || args.only.contains(&p);
    let started = Instant::now();
    apt_install(&["nginx", "wrk", "bpftool", "prometheus-node-exporter", "linux-perf"].map(String::from))?;
    crate::build_ebpf()?;
    status(cargo().current_dir(root_dir()).args(["build", "--release", "-p", "collector"]))?;
    let collector = root_dir().join("target/release/collector");
    let out_dir = root_dir().join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    let results_path = out_dir.join("results.json");
    // Parts not run keep their last figures.
    let mut results: serde_json::Map<String, Value> =
        std::fs::read(&results_path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    let others = other_collectors()?;
    if others > 0 {
        eprintln!(
            "xtask bench: warning: {others} other HTTP program(s) are attached on this machine (another \
             collector running): they add their cost to the figures"
        );
    }
    let save = |key: &str, v: Value, results: &mut serde_json::Map<String, Value>| -> anyhow::Result<()> {
        results.insert(key.to_owned(), v);
        std::fs::write(&results_path, serde_json::to_string_pretty(&results)?)?;
        Ok(())
    };
    if run(Part::Micro) {
        save("micro", crate::bench_micro::run()?, &mut results)?;
    }
    if run(Part::Scrape) {
        save("scrape", crate::bench_scrape::vs_node_exporter(&collector, args.scrapes)?, &mut results)?;
    }
    if run(Part::Scale) {
        let opts = crate::bench_scrape::ScaleOpts {
            series: args.series.clone(),
            min_scrapes: args.scale_scrapes,
            min_secs: args.scale_seconds,
            connections: args.connections,
        };
        save("scale", crate::bench_scrape::scale(&collector, &opts)?, &mut results)?;
    }
    if run(Part::Http) {
        save("http", http_overhead(&collector, args.rounds, args.seconds)?, &mut results)?;
    }
    let mut machine = json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "other_http_programs_attached": others,
        "load_average_after": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        "bench_seconds": started.elapsed().as_secs(),
    });
    if let Some(old) = results.get("machine").and_then(|m| m.get("parts_run")) {
        machine["parts_run_before"] = old.clone();
    }
    let parts: Vec<String> = [Part::Micro, Part::Scrape, Part::Scale, Part::Http]
        .into_iter()
        .filter(|p| run(*p))
        .map(|p| format!("{p:?}").to_lowercase())
        .collect();
    machine["parts_run"] = json!(parts);
    save("machine", machine, &mut results)?;
    let result = Value::Object(results);
    let table = markdown(&result);
    println!("{table}");
    write_docs(&table)?;
    Ok(())
}

/// HTTP programs attached by other processes (another collector on this machine).
fn other_collectors() -> anyhow::Result<usize> {
    Ok(bpf_programs()?.iter().filter(|p| p.name == "http_ingress" || p.name == "http_egress").count() / 2)
}

/// 4 KiB O_DIRECT writes, then as many reads, for the block programs' cost.
const DISK_IOS: u64 = 8192;

/// nginx + wrk without and with the collector, interleaved; per-program cost with BPF
/// statistics on.
fn http_overhead(collector: &Path, rounds: usize, secs: u64) -> anyhow::Result<Value> {
    let dir = root_dir().join("target/bench/http");
    std::fs::create_dir_all(&dir)?;
    let port = free_port()?;
    let conf = nginx_conf(&dir, port, 1024)?;
    let _nginx = Killed(Command::new("nginx").arg("-c").arg(&conf).spawn().context("starting nginx")?);
    wait_port(port, "nginx")?;
    let url = format!("http://127.0.0.1:{port}/index.html");

    let stats_path = "/proc/sys/kernel/bpf_stats_enabled";
    let stats_before = std::fs::read_to_string(stats_path).unwrap_or_default();
    let set_stats =
        |on: bool| std::fs::write(stats_path, if on { "1" } else { "0" }).context("setting kernel.bpf_stats_enabled");
    let result = (|| -> anyhow::Result<serde_json::Value> {
        eprintln!("xtask bench: warming up");
        wrk(&url, 2, 50)?;
        let start_collector = || crate::bench_scrape::start_collector(collector).map(|(child, _)| child);
        // Throughput and latency with BPF statistics off, as in production.
        set_stats(false)?;
        let (mut base, mut with, mut base_p99, mut with_p99) = (vec![], vec![], vec![], vec![]);
        for round in 0..rounds {
            let (rps, p99) = wrk(&url, secs, 50)?;
            base.push(rps);
            base_p99.push(p99);
            let mut child = start_collector()?;
            let (rps, p99) = wrk(&url, secs, 50)?;
            ensure!(child.0.try_wait()?.is_none(), "the collector exited during the benchmark");
            drop(child);
            with.push(rps);
            with_p99.push(p99);
            eprintln!(
                "xtask bench: round {}: {:.0} req/s without, {:.0} with the collector ({:.1}%)",
                round + 1,
                base[round],
                rps,
                100.0 * rps / base[round]
            );
        }
        // Per-program cost with statistics on (they add two clock reads per program run).
        let mut per_prog: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
        let mut events_per_req: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
        let mut per_req_ns = Vec::new();
        set_stats(true)?;
        for _ in 0..rounds.min(3) {
            let before = program_ids()?;
            let child = start_collector()?;
            let start = programs_since(&before)?;
            let cpu0 = process_cpu(child.0.id())?;
            let t0 = Instant::now();
            let (rps, _) = wrk(&url, secs, 50)?;
            let elapsed = t0.elapsed().as_secs_f64();
            let cpu = process_cpu(child.0.id())? - cpu0;
            let end = programs_since(&before)?;
            drop(child);
            let requests = rps * elapsed;
            let mut bpf_ns = 0u64;
            for (name, dt, dc) in program_deltas(&start, &end) {
                bpf_ns += dt;
                if dc > 0 && !name.starts_with("block_") {
                    per_prog.entry(name.clone()).or_default().push(dt as f64 / dc as f64);
                    events_per_req.entry(name).or_default().push(dc as f64 / requests);
                }
            }
            per_req_ns.push((bpf_ns as f64 + cpu * 1e9) / requests);
        }
        // The block programs see next to no events under wrk: their cost is measured under
        // O_DIRECT 4 KiB writes and reads (dd), one run.
        let (disk_prog, disk_events) = {
            let before = program_ids()?;
            let child = start_collector()?;
            let start = programs_since(&before)?;
            let img = dir.join("disk.img");
            let status = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "dd if=/dev/zero of={f} bs=4k count={DISK_IOS} oflag=direct conv=fsync status=none && \
                     dd if={f} of=/dev/null bs=4k iflag=direct status=none",
                    f = img.display()
                ))
                .status()?;
            let end = programs_since(&before)?;
            drop(child);
            let _ = std::fs::remove_file(&img);
            ensure!(status.success(), "dd failed");
            let (mut ns, mut events) = (serde_json::Map::new(), serde_json::Map::new());
            for (name, dt, dc) in program_deltas(&start, &end) {
                if dc > 0 && name.starts_with("block_") {
                    ns.insert(name.clone(), serde_json::json!(dt as f64 / dc as f64));
                    events.insert(name, serde_json::json!(dc));
                }
            }
            (ns, events)
        };
        let stages = stage_breakdown(collector, &url, secs)?;
        let programs: serde_json::Map<String, serde_json::Value> =
            per_prog.into_iter().map(|(k, v)| (k, serde_json::json!(median(v)))).collect();
        let events: serde_json::Map<String, serde_json::Value> =
            events_per_req.into_iter().map(|(k, v)| (k, serde_json::json!(median(v)))).collect();
        Ok(serde_json::json!({
                "rounds": rounds,
                "seconds_per_run": secs,
                "connections": 50,
                "baseline_rps": median(base.clone()),
                "collector_rps": median(with.clone()),
                "throughput_ratio": median(with.iter().zip(&base).map(|(w, b)| w / b).collect()),
                "baseline_p99_s": median(base_p99.clone()),
                "collector_p99_s": median(with_p99.clone()),
                "p99_ratio": median(with_p99.iter().zip(&base_p99).map(|(w, b)| w / b).collect()),
                "cpu_ns_per_request": median(per_req_ns),
                "program_ns_per_event": programs,
                "program_events_per_request": events,
                "disk_ios": DISK_IOS,
                "disk_program_ns_per_event": disk_prog,
                "disk_program_events": disk_events,
                "stages": stages,
        }))
    })();
    let _ = std::fs::write(stats_path, stats_before.trim());
    result
}

/// Stages of the HTTP programs (`COLLECTOR_BENCH_HTTP_STAGE`; 0 is the whole program) and
/// where each returns.
const STAGES: [(u32, &str); 4] = [
    (1, "on entry (an empty program)"),
    (2, "after the per-cgroup packet count and the IP/TCP headers (pure ACKs end here)"),
    (3, "after the connection state (socket storage) and the sequence bookkeeping"),
    (0, "the whole program (the framer and the histograms)"),
];

/// Where the HTTP programs' run time goes: four collectors attached at once, three returning at
/// a stage boundary and one whole, so all see the same packets. Of several programs on one hook
/// the first pays for bringing the packet and the socket into the cache, so a fifth collector
/// (stopping after the connection state, not measured) is attached first, and wrk runs once
/// with the four attached in stage order after it and once in reverse; a stage's figure is the
/// mean of the two. BPF statistics must be on.
fn stage_breakdown(collector: &Path, url: &str, secs: u64) -> anyhow::Result<Value> {
    const WARM: u32 = 3;
    let mut runs: Vec<std::collections::BTreeMap<(u32, String), f64>> = vec![];
    // Loaded size of each stage's programs: the verifier drops the code a stage does not reach.
    let mut sizes: std::collections::BTreeMap<(u32, String), u64> = Default::default();
    for reverse in [false, true] {
        let mut order: Vec<Option<u32>> = STAGES.iter().map(|s| Some(s.0)).collect();
        if reverse {
            order.reverse();
        }
        order.insert(0, None);
        let mut children = vec![];
        let mut ids: Vec<(u64, u32)> = vec![];
        for stage in &order {
            let before = program_ids()?;
            let value = stage.unwrap_or(WARM).to_string();
            let (child, _) =
                crate::bench_scrape::start_collector_with(collector, &[("COLLECTOR_BENCH_HTTP_STAGE", &value)])?;
            children.push(child);
            let Some(stage) = *stage else { continue };
            for p in bpf_programs()? {
                if !before.contains(&p.id) && (p.name == "http_ingress" || p.name == "http_egress") {
                    ids.push((p.id, stage));
                    sizes.insert((stage, p.name), p.bytes_xlated);
                }
            }
        }
        let snapshot = || -> anyhow::Result<std::collections::BTreeMap<u64, (String, u64, u64)>> {
            Ok(bpf_programs()?.into_iter().map(|p| (p.id, (p.name, p.run_time_ns, p.run_cnt))).collect())
        };
        let start = snapshot()?;
        wrk(url, secs, 50)?;
        let end = snapshot()?;
        for c in &mut children {
            ensure!(c.0.try_wait()?.is_none(), "a collector exited during the stage breakdown");
        }
        drop(children);
        let mut ns = std::collections::BTreeMap::new();
        for (id, stage) in &ids {
            let (Some((name, t0, c0)), Some((_, t1, c1))) = (start.get(id), end.get(id)) else { continue };
            ensure!(c1 > c0, "{name} (stage {stage}) saw no packets");
            ns.insert((*stage, name.clone()), (t1 - t0) as f64 / (c1 - c0) as f64);
        }
        runs.push(ns);
    }
    let mut out = vec![];
    for (stage, what) in STAGES {
        let mut row = json!({ "stage": stage, "returns": what });
        for name in ["http_ingress", "http_egress"] {
            let key = (stage, name.to_owned());
            let v: Vec<f64> = runs.iter().filter_map(|r| r.get(&key).copied()).collect();
            ensure!(v.len() == runs.len(), "no figure for {name} at stage {stage}");
            row[name] = json!(v.iter().sum::<f64>() / v.len() as f64);
            row[format!("{name}_by_order")] = json!(v);
            row[format!("{name}_bytes_xlated")] = json!(sizes.get(&key));
        }
        out.push(row);
    }
    // Each stage runs more of the program than the one before: a collector that ignored the
    // stage variable would load the whole program.
    for name in ["http_ingress", "http_egress"] {
        let loaded: Vec<u64> =
            STAGES.iter().map(|s| sizes.get(&(s.0, name.to_owned())).copied().unwrap_or(0)).collect();
        ensure!(
            loaded.windows(2).all(|w| w[0] < w[1]),
            "{name}: loaded sizes by stage {loaded:?} do not grow with the stage (was the stage variable ignored?)"
        );
    }
    Ok(Value::Array(out))
}

/// User + system CPU seconds of a process, from /proc/<pid>/stat.
pub(crate) fn process_cpu(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = &stat[stat.rfind(')').context("stat")? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

fn met(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "not measured",
    }
}

/// The targets with their measured figures, then each part's tables.
fn markdown(r: &Value) -> String {
    let f = |v: &Value| v.as_f64();
    let mut t = String::from("### Targets\n\n| target | measured | status |\n|---|---|---|\n");
    let sc = &r["scrape"];
    let cpu = f(&sc["ratios"]["cpu"]);
    t += &format!(
        "| scrape CPU ≤ 1/3 of node_exporter's | {} ({:.2} ms vs {:.2} ms per scrape) | {} |\n",
        cpu.map_or("–".into(), |c| format!("{c:.3}")),
        f(&sc["collector"]["cpu_s_per_scrape"]).unwrap_or(f64::NAN) * 1e3,
        f(&sc["node_exporter"]["cpu_s_per_scrape"]).unwrap_or(f64::NAN) * 1e3,
        met(cpu.map(|c| c <= 1.0 / 3.0))
    );
    let (rss, hwm) = (f(&sc["ratios"]["rss"]), f(&sc["ratios"]["hwm"]));
    t += &format!(
        "| RSS ≤ node_exporter's | {} after the scrapes, {} at peak | {} |\n",
        rss.map_or("–".into(), |c| format!("{c:.3}")),
        hwm.map_or("–".into(), |c| format!("{c:.3}")),
        met(rss.zip(hwm).map(|(a, b)| a <= 1.0 && b <= 1.0))
    );
    let h = &r["http"];
    let tput = f(&h["throughput_ratio"]);
    t += &format!(
        "| HTTP throughput ≥ 98% of baseline | {} | {} |\n",
        tput.map_or("–".into(), |c| format!("{:.1}%", c * 100.0)),
        met(tput.map(|c| c >= 0.98))
    );
    let per_req = f(&h["cpu_ns_per_request"]);
    t += &format!(
        "| ≤ 1 µs of CPU per HTTP request | {} | {} |\n",
        per_req.map_or("–".into(), |c| format!("{c:.0} ns")),
        met(per_req.map(|c| c <= 1000.0))
    );
    let progs: Vec<(String, f64)> = ["program_ns_per_event", "disk_program_ns_per_event"]
        .iter()
        .filter_map(|k| h[*k].as_object())
        .flat_map(|o| o.iter().filter_map(|(k, v)| Some((k.clone(), v.as_f64()?))))
        .collect();
    let worst = progs.iter().max_by(|a, b| a.1.total_cmp(&b.1));
    t += &format!(
        "| ≤ 100 ns per program event | {} | {} |\n",
        worst.map_or("–".into(), |(n, v)| format!(
            "{} of {} programs within; worst {n} {v:.0} ns",
            progs.iter().filter(|p| p.1 <= 100.0).count(),
            progs.len()
        )),
        met(worst.map(|w| w.1 <= 100.0))
    );
    let levels = r["scale"]["levels"].as_array();
    let top = levels.and_then(|l| l.last());
    let top_t = top.and_then(|l| f(&l["gzip"]["wall_median_s"]));
    t += &format!(
        "| scrape time ≤ 50 ms at 100k series | {} | {} |\n",
        top.zip(top_t).map_or("–".into(), |(l, t)| format!(
            "{:.1} ms at {} series (gzip; plain {:.1} ms)",
            t * 1e3,
            l["series"],
            f(&l["plain"]["wall_median_s"]).unwrap_or(f64::NAN) * 1e3
        )),
        met(top
            .filter(|l| l["series"].as_u64().is_some_and(|n| n >= 100_000))
            .and(top_t)
            .map(|t| t <= crate::bench_scrape::SCALE_TARGET_S))
    );
    let marginal: Vec<f64> =
        r["scale"]["marginal_s_per_series"].as_array().map(|m| m.iter().filter_map(f).collect()).unwrap_or_default();
    let linear = match marginal.as_slice() {
        [a, b] if *a > 0.0 => Some(*b <= 1.5 * a),
        _ => None,
    };
    t += &format!(
        "| scrape time grows linearly | {} per added series (1k→10k, 10k→100k) | {} |\n\n",
        if marginal.is_empty() {
            "–".into()
        } else {
            marginal.iter().map(|m| format!("{:.2} µs", m * 1e6)).collect::<Vec<_>>().join(", ")
        },
        met(linear)
    );
    let m = &r["machine"];
    if m.is_object() {
        t += &format!(
            "Last run: {} CPUs, Linux {}, parts run: {}, {} s; load average after: {}; other collectors' HTTP \
             programs attached: {}.\n\n",
            m["cpus"],
            m["kernel"].as_str().unwrap_or(""),
            m["parts_run"].as_array().map_or(String::new(), |p| p
                .iter()
                .filter_map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join(", ")),
            m["bench_seconds"],
            m["load_average_after"].as_str().unwrap_or(""),
            m["other_http_programs_attached"],
        );
    }
    if r["scrape"].is_object() {
        t += &crate::bench_scrape::markdown_scrape(&r["scrape"]);
    }
    if r["scale"].is_object() {
        t += &crate::bench_scrape::markdown_scale(&r["scale"]);
    }
    if h.is_object() {
        t += &markdown_http(h);
    }
    if r["micro"].is_array() {
        t += &crate::bench_micro::markdown(&r["micro"]);
    }
    t
}

fn markdown_http(h: &Value) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "### HTTP overhead (nginx + wrk, keep-alive, 50 connections, {} rounds of {} s, interleaved)\n\n",
        h["rounds"], h["seconds_per_run"]
    ));
    s.push_str("| measure | value | goal |\n|---|---|---|\n");
    s.push_str(&format!("| baseline throughput | {:.0} req/s | |\n", h["baseline_rps"].as_f64().unwrap_or(0.0)));
    s.push_str(&format!("| with the collector | {:.0} req/s | |\n", h["collector_rps"].as_f64().unwrap_or(0.0)));
    s.push_str(&format!(
        "| throughput ratio (median of rounds) | {:.3} | ≥ 0.98 |\n",
        h["throughput_ratio"].as_f64().unwrap_or(0.0)
    ));
    if let (Some(b), Some(c)) = (h["baseline_p99_s"].as_f64(), h["collector_p99_s"].as_f64()) {
        s.push_str(&format!("| p99 latency without / with | {:.2} ms / {:.2} ms | |\n", b * 1e3, c * 1e3));
    }
    s.push_str(&format!(
        "| p99 latency ratio (median of rounds) | {:.3} | |\n",
        h["p99_ratio"].as_f64().unwrap_or(0.0)
    ));
    s.push_str(&format!(
        "| CPU per request (BPF run time with statistics on + daemon) | {:.0} ns | ≤ 1000 ns |\n\n",
        h["cpu_ns_per_request"].as_f64().unwrap_or(0.0)
    ));
    s.push_str("| program | run time per event (mean over the run, median of rounds) | events per request | goal |\n|---|---|---|---|\n");
    if let Some(p) = h["program_ns_per_event"].as_object() {
        for (name, ns) in p {
            let per_req = h["program_events_per_request"][name].as_f64().unwrap_or(0.0);
            s.push_str(&format!("| {name} | {:.0} ns | {per_req:.2} | ≤ 100 ns |\n", ns.as_f64().unwrap_or(0.0)));
        }
    }
    s.push('\n');
    if let Some(stages) = h["stages"].as_array() {
        s.push_str(
            "Where the HTTP programs' time goes (run time per event with BPF statistics on; four \
             collectors attached at once, three of them returning at a stage boundary, so all see the \
             same packets, after a fifth one that is not measured, since the first program on a hook \
             pays for bringing the packet and socket into the cache; mean of one run with the four in \
             stage order and one in reverse order):\n\n\
             | the program returns | http_ingress | http_egress | added by the stage (ingress / egress) |\n\
             |---|---|---|---|\n",
        );
        let mut prev: Option<(f64, f64)> = None;
        for st in stages {
            let (i, e) = (st["http_ingress"].as_f64().unwrap_or(0.0), st["http_egress"].as_f64().unwrap_or(0.0));
            let added = match prev {
                Some((pi, pe)) => format!("{:+.0} / {:+.0} ns", i - pi, e - pe),
                None => "(running any program, statistics included)".to_owned(),
            };
            s.push_str(&format!("| {} | {i:.0} ns | {e:.0} ns | {added} |\n", st["returns"].as_str().unwrap_or("")));
            prev = Some((i, e));
        }
        s.push('\n');
    }
    if let Some(p) = h["disk_program_ns_per_event"].as_object().filter(|p| !p.is_empty()) {
        s.push_str(&format!(
            "Block programs, with the collector attached, under {n} O_DIRECT 4 KiB writes then {n} reads (dd):\n\n\
             | program | run time per event (mean over the run) | events | goal |\n|---|---|---|---|\n",
            n = h["disk_ios"]
        ));
        for (name, ns) in p {
            let events = h["disk_program_events"][name].as_u64().unwrap_or(0);
            s.push_str(&format!("| {name} | {:.0} ns | {events} | ≤ 100 ns |\n", ns.as_f64().unwrap_or(0.0)));
        }
        s.push('\n');
    }
    s
}

/// Replaces the generated section of docs/performance.md.
fn write_docs(table: &str) -> anyhow::Result<()> {
    let path = root_dir().join("docs/performance.md");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let (begin, end) = ("<!-- bench:begin -->", "<!-- bench:end -->");
    let generated = format!("{begin}\n{table}{end}");
    let new = match (text.find(begin), text.find(end)) {
        (Some(a), Some(b)) => format!("{}{}{}", &text[..a], generated, &text[b + end.len()..]),
        _ => format!("{text}\n{generated}\n"),
    };
    std::fs::write(&path, new)?;
    eprintln!("xtask bench: wrote {} and target/bench/results.json", path.display());
    Ok(())
}
