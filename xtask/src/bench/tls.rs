//! The `tls` part: what the HTTPS capture costs. nginx with `ssl` serves a small file to wrk
//! over TLS (both link Debian's libssl3, so the server's and the client's calls are probed), in
//! rounds that alternate the collector with the capture off (`--no-collector.http.tls`) and on,
//! the order flipped each round. Per side: throughput, p99, and the CPU of the processes taking
//! part (nginx, wrk, the collector; exact scheduler times) per request. Then, with BPF
//! statistics on, the run time per call of each TLS program and the calls per request; the
//! added CPU per request divided by the probe hits per request is the cost of one probe hit,
//! trap into the kernel included (which BPF statistics do not see).
use std::{path::Path, process::Command};

use anyhow::{Context as _, ensure};
use serde_json::{Value, json};

use super::{
    peer::{settle, with_cpu},
    util::{
        self, Killed, free_port, median, nginx_conf_listen, program_deltas, program_ids, programs_since, wait_port,
        wrk_run,
    },
};
use crate::root_dir;

pub(super) fn tls_overhead(collector: &Path, rounds: usize, secs: u64) -> anyhow::Result<Value> {
    let dir = root_dir().join("target/bench/tls");
    std::fs::create_dir_all(&dir)?;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-days", "2", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .context("openssl")?;
    ensure!(made.status.success(), "openssl req failed: {}", String::from_utf8_lossy(&made.stderr));
    let port = free_port()?;
    let extra = format!("ssl_certificate {}; ssl_certificate_key {};", cert.display(), key.display());
    let conf = nginx_conf_listen(&dir, &format!("127.0.0.1:{port} ssl"), &extra, 1024)?;
    let nginx = Killed(Command::new("nginx").arg("-c").arg(&conf).spawn().context("starting nginx")?);
    wait_port(port, "nginx")?;
    let url = format!("https://127.0.0.1:{port}/index.html");
    eprintln!("xtask bench: tls: warming up");
    wrk_run(&url, 2, 50)?;
    let start = |tls: bool| -> anyhow::Result<Killed> {
        let args: &[&str] = if tls { &[] } else { &["--no-collector.http.tls"] };
        let (child, _) = util::start_collector_full(collector, &[], args)?;
        settle(child.0.id());
        Ok(child)
    };
    let stats_path = "/proc/sys/kernel/bpf_stats_enabled";
    let stats_before = std::fs::read_to_string(stats_path).unwrap_or_default();
    let result = (|| -> anyhow::Result<Value> {
        std::fs::write(stats_path, "0")?;
        let (mut rps, mut p99, mut cpu) = ([vec![], vec![]], [vec![], vec![]], [vec![], vec![]]);
        for round in 0..rounds {
            let order = if round % 2 == 0 { [false, true] } else { [true, false] };
            for tls in order {
                let mut child = start(tls)?;
                let (_, procs, (n, r, p)) = with_cpu(&[nginx.0.id(), child.0.id()], || wrk_run(&url, secs, 50))?;
                ensure!(child.0.try_wait()?.is_none(), "the collector exited during the benchmark");
                drop(child);
                let i = tls as usize;
                rps[i].push(r);
                p99[i].push(p);
                cpu[i].push(procs / n * 1e9);
            }
            eprintln!(
                "xtask bench: tls round {}: {:.0} req/s capture off, {:.0} on; {:.1} / {:.1} µs CPU per request",
                round + 1,
                rps[0][round],
                rps[1][round],
                cpu[0][round] / 1e3,
                cpu[1][round] / 1e3
            );
        }
        // Per-call cost from BPF statistics, and the probe hits per request.
        std::fs::write(stats_path, "1")?;
        let before = program_ids()?;
        let child = start(true)?;
        let s0 = programs_since(&before)?;
        let (n, _, _) = wrk_run(&url, secs, 50)?;
        let s1 = programs_since(&before)?;
        drop(child);
        let mut per_call = serde_json::Map::new();
        let mut calls = serde_json::Map::new();
        let mut hits = 0.0;
        for (name, dt, dc) in program_deltas(&s0, &s1) {
            if dc > 0 && (name.starts_with("tls_") || name.starts_with("go_tls")) {
                per_call.insert(name.clone(), json!(dt as f64 / dc as f64));
                calls.insert(name.clone(), json!(dc as f64 / n));
                // Every uprobe hit runs one program (the tracepoint is not a probe hit).
                if name != "tls_recv" {
                    hits += dc as f64 / n;
                }
            }
        }
        let added: Vec<f64> = cpu[1].iter().zip(&cpu[0]).map(|(on, off)| on - off).collect();
        let added_med = median(added.clone());
        Ok(json!({
            "rounds": rounds,
            "seconds_per_run": secs,
            "connections": 50,
            "rps_off": median(rps[0].clone()),
            "rps_on": median(rps[1].clone()),
            "throughput_ratio": median(rps[1].iter().zip(&rps[0]).map(|(a, b)| a / b).collect()),
            "p99_ratio": median(p99[1].iter().zip(&p99[0]).map(|(a, b)| a / b).collect()),
            "cpu_ns_per_request_off": median(cpu[0].clone()),
            "cpu_ns_per_request_on": median(cpu[1].clone()),
            "added_cpu_ns_per_request": added_med,
            "added_cpu_ns_per_request_range": [
                added.iter().cloned().fold(f64::INFINITY, f64::min),
                added.iter().cloned().fold(f64::NEG_INFINITY, f64::max)
            ],
            "program_ns_per_call": per_call,
            "program_calls_per_request": calls,
            "probe_hits_per_request": hits,
            "added_cpu_ns_per_probe_hit": if hits > 0.0 { added_med / hits } else { 0.0 },
        }))
    })();
    let _ = std::fs::write(stats_path, stats_before.trim());
    result
}
