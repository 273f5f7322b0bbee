//! The `http2` part: what the HTTP/2 and gRPC capture costs. Two loads, each in rounds that
//! alternate no collector and the collector, the order flipped each round:
//! - nghttpd serving 25 bytes over cleartext HTTP/2 to `h2load -c 4 -m 100` (100 concurrent
//!   streams per connection);
//! - gRPC unary calls: the tests' grpcio server (collector/tests/grpc_peer.py) and 8 clients
//!   making calls one after the other.
//!
//! Per side: throughput, and the CPU of the processes taking part (server, load generator, the
//! collector; exact scheduler times) per request; the collector's own CPU per request (the
//! daemon's decoding of the frames). Then, with BPF statistics on, the run time of every
//! program of the collector per request.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, ensure};
use serde_json::{Value, json};

use super::{
    peer::{settle, with_cpu},
    util::{self, Killed, free_port, median, program_deltas, program_ids, programs_since, wait_port},
};
use crate::root_dir;

/// One h2load run of `secs` seconds: requests completed, requests per second.
fn h2load(url: &str, secs: u64) -> anyhow::Result<(f64, f64)> {
    let out = Command::new("h2load")
        .args(["-c", "4", "-m", "100", "-t", "1", "-D", &secs.to_string(), url])
        .output()
        .context("h2load (Debian nghttp2-client)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.success(), "h2load failed: {text}");
    // "requests: 500000 total, 500000 started, 500000 done, 500000 succeeded, 0 failed, ..."
    let line = text.lines().find(|l| l.starts_with("requests:")).context("no requests line from h2load")?;
    let succeeded: f64 = line
        .split(',')
        .find(|p| p.trim().ends_with("succeeded"))
        .and_then(|p| p.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .context("h2load's succeeded count")?;
    Ok((succeeded, succeeded / secs as f64))
}

/// The Python with grpcio (the test tools' venv, which `cargo xtask test` makes).
fn python() -> PathBuf {
    let venv = root_dir().join("target/deploy-tools/bin/python");
    if venv.exists() { venv } else { PathBuf::from("python3") }
}

/// `clients` gRPC clients making unary calls for `secs` seconds: calls completed, per second.
fn grpc_load(port: u16, secs: u64, clients: usize) -> anyhow::Result<(f64, f64)> {
    let peer = root_dir().join("collector/tests/grpc_peer.py");
    let start = Instant::now();
    let mut children = Vec::new();
    for _ in 0..clients {
        children.push(
            Command::new(python())
                .arg(&peer)
                .args(["for", &port.to_string(), &secs.to_string()])
                .stdout(Stdio::piped())
                .spawn()
                .context("starting a gRPC client")?,
        );
    }
    let mut calls = 0.0;
    for c in children {
        let out = c.wait_with_output()?;
        ensure!(out.status.success(), "a gRPC client failed");
        calls += String::from_utf8_lossy(&out.stdout).trim().parse::<f64>().context("gRPC client's count")?;
    }
    Ok((calls, calls / start.elapsed().as_secs_f64()))
}

/// One load: (requests completed, requests per second).
type Load<'a> = dyn Fn(u64) -> anyhow::Result<(f64, f64)> + 'a;

/// Rounds of `load` without and with the collector, then the programs' run time per request.
fn measure(collector: &Path, server: u32, load: &Load<'_>, rounds: usize, secs: u64) -> anyhow::Result<Value> {
    let start = || -> anyhow::Result<Killed> {
        let (child, _) =
            util::start_collector_full(collector, &[], &["--no-collector.diskbpf", "--no-collector.netbpf"])?;
        settle(child.0.id());
        Ok(child)
    };
    load(2)?;
    let (mut rps, mut cpu, mut own) = ([vec![], vec![]], [vec![], vec![]], vec![]);
    for round in 0..rounds {
        let order = if round % 2 == 0 { [false, true] } else { [true, false] };
        for on in order {
            let child = if on { Some(start()?) } else { None };
            let pids: Vec<u32> = std::iter::once(server).chain(child.iter().map(|c| c.0.id())).collect();
            let c0 = child.as_ref().map_or(0, |c| super::peer::process_cpu_ns(c.0.id()));
            let (_, procs, (n, r)) = with_cpu(&pids, || load(secs))?;
            if let Some(mut c) = child {
                own.push((super::peer::process_cpu_ns(c.0.id()) - c0) as f64 / n);
                ensure!(c.0.try_wait()?.is_none(), "the collector exited during the benchmark");
            }
            rps[on as usize].push(r);
            cpu[on as usize].push(procs / n * 1e9);
        }
        eprintln!(
            "xtask bench: http2 round {}: {:.0} req/s without, {:.0} with; {:.1} / {:.1} µs CPU per request",
            round + 1,
            rps[0][round],
            rps[1][round],
            cpu[0][round] / 1e3,
            cpu[1][round] / 1e3
        );
    }
    let stats_path = "/proc/sys/kernel/bpf_stats_enabled";
    let stats_before = std::fs::read_to_string(stats_path).unwrap_or_default();
    std::fs::write(stats_path, "1")?;
    let bpf = (|| -> anyhow::Result<(f64, serde_json::Map<String, Value>)> {
        let before = program_ids()?;
        let child = start()?;
        let s0 = programs_since(&before)?;
        let (n, _) = load(secs)?;
        let s1 = programs_since(&before)?;
        drop(child);
        let mut per_request = serde_json::Map::new();
        let mut total = 0.0;
        for (name, dt, _) in program_deltas(&s0, &s1) {
            if dt > 0 {
                per_request.insert(name, json!(dt as f64 / n));
                total += dt as f64 / n;
            }
        }
        Ok((total, per_request))
    })();
    let _ = std::fs::write(stats_path, stats_before.trim());
    let (bpf_ns, per_program) = bpf?;
    let added: Vec<f64> = cpu[1].iter().zip(&cpu[0]).map(|(on, off)| on - off).collect();
    Ok(json!({
        "rounds": rounds,
        "seconds_per_run": secs,
        "rps_without": median(rps[0].clone()),
        "rps_with": median(rps[1].clone()),
        "throughput_ratio": median(rps[1].iter().zip(&rps[0]).map(|(a, b)| a / b).collect()),
        "throughput_ratio_range": [
            rps[1].iter().zip(&rps[0]).map(|(a, b)| a / b).fold(f64::INFINITY, f64::min),
            rps[1].iter().zip(&rps[0]).map(|(a, b)| a / b).fold(f64::NEG_INFINITY, f64::max)
        ],
        "cpu_ns_per_request_without": median(cpu[0].clone()),
        "cpu_ns_per_request_with": median(cpu[1].clone()),
        "added_cpu_ns_per_request": median(added.clone()),
        "added_cpu_ns_per_request_range": [
            added.iter().cloned().fold(f64::INFINITY, f64::min),
            added.iter().cloned().fold(f64::NEG_INFINITY, f64::max)
        ],
        "collector_cpu_ns_per_request": median(own),
        "bpf_ns_per_request": bpf_ns,
        "bpf_ns_per_request_by_program": per_program,
    }))
}

pub(super) fn http2_overhead(collector: &Path, rounds: usize, secs: u64) -> anyhow::Result<Value> {
    let dir = root_dir().join("target/bench/http2");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("small"), "hello from nghttpd, h2c\n\n")?;
    let port = free_port()?;
    let nghttpd = Killed(
        Command::new("nghttpd")
            .args(["--no-tls", "-d"])
            .arg(&dir)
            .arg(port.to_string())
            .stdout(Stdio::null())
            .spawn()
            .context("nghttpd (Debian nghttp2-server)")?,
    );
    wait_port(port, "nghttpd")?;
    let url = format!("http://127.0.0.1:{port}/small");
    eprintln!("xtask bench: http2: h2load -c 4 -m 100 against nghttpd");
    let h2 = measure(collector, nghttpd.0.id(), &|s| h2load(&url, s), rounds, secs)?;
    drop(nghttpd);

    let port = free_port()?;
    let server = Killed(
        Command::new(python())
            .arg(root_dir().join("collector/tests/grpc_peer.py"))
            .args(["serve", &port.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .context("the gRPC server (grpcio: run cargo xtask test once for its venv)")?,
    );
    wait_port(port, "the gRPC server")?;
    eprintln!("xtask bench: http2: gRPC unary calls, 8 clients");
    let grpc = measure(collector, server.0.id(), &|s| grpc_load(port, s, 8), rounds, secs)?;
    Ok(json!({ "h2load": h2, "grpc_unary": grpc }))
}
