//! `cargo xtask bench`: macro benchmarks on this machine, measured side by side in one run.
//!
//! HTTP overhead: nginx serving a small file to wrk (keep-alive), alternating rounds without
//! and with the collector running; throughput and p99 latency ratios, and the run time per
//! event of every eBPF program from the kernel's BPF statistics (`kernel.bpf_stats_enabled`).
//! Writes `target/bench/results.json` and the tables in `docs/performance.md`.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};

use crate::{apt_install, cargo, root_dir, status};

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_port(port: u16, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what} did not start listening on {port}")
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

/// (id, name, run_time_ns, run_cnt) of every loaded BPF program.
fn bpf_programs() -> anyhow::Result<Vec<(u64, String, u64, u64)>> {
    let out = Command::new("bpftool").args(["prog", "show", "--json"]).output().context("running bpftool")?;
    ensure!(out.status.success(), "bpftool prog show failed");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(v.as_array()
        .context("bpftool output")?
        .iter()
        .map(|p| {
            (
                p["id"].as_u64().unwrap_or(0),
                p["name"].as_str().unwrap_or("").to_owned(),
                p["run_time_ns"].as_u64().unwrap_or(0),
                p["run_cnt"].as_u64().unwrap_or(0),
            )
        })
        .collect())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() { f64::NAN } else { v[v.len() / 2] }
}

fn nginx_conf(dir: &Path, port: u16) -> anyhow::Result<PathBuf> {
    let root = dir.join("www");
    std::fs::create_dir_all(&root)?;
    std::fs::write(root.join("index.html"), "hello from the benchmark\n")?;
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off; master_process off; worker_processes 1; user root; pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{ access_log off; sendfile on; keepalive_timeout 60; keepalive_requests 1000000;\n\
               client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n\
               server {{ listen 127.0.0.1:{port}; root {root}; }} }}\n",
            d = dir.display(),
            root = root.display()
        ),
    )?;
    Ok(conf)
}

pub fn bench(rounds: usize, secs: u64) -> anyhow::Result<()> {
    ensure!(crate::is_root(), "the benchmarks load eBPF programs and enable BPF statistics: run as root");
    apt_install(&["nginx".to_owned(), "wrk".to_owned(), "bpftool".to_owned()])?;
    crate::build_ebpf()?;
    status(cargo().current_dir(root_dir()).args(["build", "--release", "-p", "collector"]))?;
    let collector = root_dir().join("target/release/collector");

    let dir = root_dir().join("target/bench/http");
    std::fs::create_dir_all(&dir)?;
    let port = free_port()?;
    let conf = nginx_conf(&dir, port)?;
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
        let start_collector = || -> anyhow::Result<Killed> {
            let mport = free_port()?;
            let child = Killed(
                Command::new(&collector)
                    .args(["--web.listen-address", &format!("127.0.0.1:{mport}")])
                    .stderr(Stdio::null())
                    .spawn()?,
            );
            wait_port(mport, "collector")?;
            Ok(child)
        };
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
            let before: Vec<u64> = bpf_programs()?.iter().map(|p| p.0).collect();
            let child = start_collector()?;
            let ours = |progs: &[(u64, String, u64, u64)]| -> Vec<(String, u64, u64)> {
                progs.iter().filter(|p| !before.contains(&p.0)).map(|p| (p.1.clone(), p.2, p.3)).collect()
            };
            let start = ours(&bpf_programs()?);
            let cpu0 = process_cpu(child.0.id())?;
            let t0 = Instant::now();
            let (rps, _) = wrk(&url, secs, 50)?;
            let elapsed = t0.elapsed().as_secs_f64();
            let cpu = process_cpu(child.0.id())? - cpu0;
            let end = ours(&bpf_programs()?);
            drop(child);
            let requests = rps * elapsed;
            let mut bpf_ns = 0u64;
            for (name, t1, c1) in &end {
                if let Some((_, t0, c0)) = start.iter().find(|s| &s.0 == name) {
                    let (dt, dc) = (t1 - t0, c1 - c0);
                    bpf_ns += dt;
                    if dc > 0 {
                        per_prog.entry(name.clone()).or_default().push(dt as f64 / dc as f64);
                        events_per_req.entry(name.clone()).or_default().push(dc as f64 / requests);
                    }
                }
            }
            per_req_ns.push((bpf_ns as f64 + cpu * 1e9) / requests);
        }
        let programs: serde_json::Map<String, serde_json::Value> =
            per_prog.into_iter().map(|(k, v)| (k, serde_json::json!(median(v)))).collect();
        let events: serde_json::Map<String, serde_json::Value> =
            events_per_req.into_iter().map(|(k, v)| (k, serde_json::json!(median(v)))).collect();
        Ok(serde_json::json!({
            "http": {
                "rounds": rounds,
                "seconds_per_run": secs,
                "connections": 50,
                "baseline_rps": median(base.clone()),
                "collector_rps": median(with.clone()),
                "throughput_ratio": median(with.iter().zip(&base).map(|(w, b)| w / b).collect()),
                "p99_ratio": median(with_p99.iter().zip(&base_p99).map(|(w, b)| w / b).collect()),
                "cpu_ns_per_request": median(per_req_ns),
                "program_ns_per_event": programs,
                "program_events_per_request": events,
            }
        }))
    })();
    let _ = std::fs::write(stats_path, stats_before.trim());
    let result = result?;
    let out_dir = root_dir().join("target/bench");
    std::fs::write(out_dir.join("results.json"), serde_json::to_string_pretty(&result)?)?;
    let table = markdown(&result);
    println!("{table}");
    write_docs(&table)?;
    Ok(())
}

/// User + system CPU seconds of a process, from /proc/<pid>/stat.
fn process_cpu(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = &stat[stat.rfind(')').context("stat")? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

fn markdown(r: &serde_json::Value) -> String {
    let h = &r["http"];
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
    s.push_str(&format!("| p99 latency ratio | {:.3} | |\n", h["p99_ratio"].as_f64().unwrap_or(0.0)));
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
