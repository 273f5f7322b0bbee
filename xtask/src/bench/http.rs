//! The `http` part: nginx serving wrk without and with the collector, the per-program cost
//! from the kernel's BPF statistics, and where the HTTP programs' time goes.
use std::{collections::BTreeMap, path::Path, process::Command, time::Instant};

use anyhow::{Context as _, ensure};
use serde_json::{Value, json};

use super::util::{
    self, Killed, bpf_programs, free_port, median, nginx_conf, nginx_conf_listen, process_cpu, program_deltas,
    program_ids, programs_since, wait_port, wrk,
};
use crate::root_dir;

/// The smallest of `v`.
fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

/// The largest of `v`.
fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

/// 4 KiB O_DIRECT writes, then as many reads, for the block programs' cost.
const DISK_IOS: u64 = 8192;

/// nginx + wrk without and with the collector, interleaved; per-program cost with BPF
/// statistics on.
pub(super) fn http_overhead(collector: &Path, rounds: usize, secs: u64) -> anyhow::Result<Value> {
    let dir = root_dir().join("target/bench/http");
    std::fs::create_dir_all(&dir)?;
    let port = free_port()?;
    let conf = nginx_conf(&dir, port, 1024)?;
    let nginx = Killed(Command::new("nginx").arg("-c").arg(&conf).spawn().context("starting nginx")?);
    wait_port(port, "nginx")?;
    let url = format!("http://127.0.0.1:{port}/index.html");
    // The same file from an nginx that sends the response head and body in one segment
    // (`sendfile off`): with `sendfile on` (the configuration above, Debian's default) nginx
    // writes the head, then sends the body from the file, two segments the client acknowledges,
    // so a request is 4 segments, each passing both hooks; here it is 2 (the request and the
    // response, each acknowledged by the next), the request the BPF per-request goal counts.
    let one_dir = dir.join("one-segment");
    std::fs::create_dir_all(&one_dir)?;
    let one_port = free_port()?;
    let one_conf = nginx_conf_listen(&one_dir, &format!("127.0.0.1:{one_port}"), "sendfile off;", 1024)?;
    let _one_nginx =
        Killed(Command::new("nginx").arg("-c").arg(&one_conf).spawn().context("starting nginx (sendfile off)")?);
    wait_port(one_port, "nginx (sendfile off)")?;
    let one_url = format!("http://127.0.0.1:{one_port}/index.html");

    let stats_path = "/proc/sys/kernel/bpf_stats_enabled";
    let stats_before = std::fs::read_to_string(stats_path).unwrap_or_default();
    let set_stats =
        |on: bool| std::fs::write(stats_path, if on { "1" } else { "0" }).context("setting kernel.bpf_stats_enabled");
    let result = (|| -> anyhow::Result<serde_json::Value> {
        eprintln!("xtask bench: warming up");
        wrk(&url, 2, 50)?;
        let start_collector = || util::start_collector(collector).map(|(child, _)| child);
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
        let (mut per_req_ns, mut bpf_per_req, mut bpf_per_req_1cpu) = (Vec::new(), Vec::new(), Vec::new());
        let (mut bpf_per_req_one, mut runs_per_req_one) = (Vec::new(), Vec::new());
        set_stats(true)?;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        for round in 0..rounds.min(3) {
            let before = program_ids()?;
            let child = start_collector()?;
            // The BPF run time per request on all CPUs and with nginx and wrk on one CPU (every
            // program then runs there: what sharing cache lines between CPUs costs is the
            // difference), alternating which comes first.
            let mut pair = [0.0; 2];
            for k in 0..2 {
                let one = (k + round) % 2 == 1;
                let pin = |list: &str| -> anyhow::Result<()> {
                    crate::status(
                        Command::new("taskset")
                            .args(["-apc", list, &nginx.0.id().to_string()])
                            .stdout(std::process::Stdio::null()),
                    )
                };
                if one {
                    pin("0")?;
                }
                let start = programs_since(&before)?;
                let cpu0 = process_cpu(child.0.id())?;
                let t0 = Instant::now();
                let (_, rps, _) = util::wrk_on(&url, secs, 50, one.then_some("0"))?;
                let elapsed = t0.elapsed().as_secs_f64();
                let cpu = process_cpu(child.0.id())? - cpu0;
                let end = programs_since(&before)?;
                if one {
                    pin(&format!("0-{}", cpus - 1))?;
                }
                let requests = rps * elapsed;
                let mut bpf_ns = 0u64;
                for (name, dt, dc) in program_deltas(&start, &end) {
                    bpf_ns += dt;
                    if !one && dc > 0 && !name.starts_with("block_") {
                        per_prog.entry(name.clone()).or_default().push(dt as f64 / dc as f64);
                        events_per_req.entry(name).or_default().push(dc as f64 / requests);
                    }
                }
                if !one {
                    per_req_ns.push((bpf_ns as f64 + cpu * 1e9) / requests);
                }
                pair[one as usize] = bpf_ns as f64 / requests;
            }
            // The response in one segment (`sendfile off`), on all CPUs.
            let start = programs_since(&before)?;
            let (requests, _, _) = util::wrk_on(&one_url, secs, 50, None)?;
            let end = programs_since(&before)?;
            let deltas = program_deltas(&start, &end);
            let bpf_ns: u64 = deltas.iter().map(|(_, dt, _)| dt).sum();
            let skb_runs: u64 = deltas
                .iter()
                .filter(|(name, _, _)| name == "http_ingress" || name == "http_egress")
                .map(|d| d.2)
                .sum();
            bpf_per_req_one.push(bpf_ns as f64 / requests);
            runs_per_req_one.push(skb_runs as f64 / requests);
            drop(child);
            bpf_per_req.push(pair[0]);
            bpf_per_req_1cpu.push(pair[1]);
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
        let non_http = non_http_cost(collector, secs)?;
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
                "bpf_ns_per_request": median(bpf_per_req.clone()),
                "bpf_ns_per_request_range": [min(&bpf_per_req), max(&bpf_per_req)],
                "bpf_ns_per_request_1cpu": median(bpf_per_req_1cpu.clone()),
                "bpf_ns_per_request_1cpu_range": [min(&bpf_per_req_1cpu), max(&bpf_per_req_1cpu)],
                "bpf_ns_per_request_one_segment": median(bpf_per_req_one.clone()),
                "bpf_ns_per_request_one_segment_range": [min(&bpf_per_req_one), max(&bpf_per_req_one)],
                "skb_runs_per_request_one_segment": median(runs_per_req_one),
                "program_ns_per_event": programs,
                "program_events_per_request": events,
                "disk_ios": DISK_IOS,
                "disk_program_ns_per_event": disk_prog,
                "disk_program_events": disk_events,
                "stages": stages,
                "non_http": non_http,
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
    (3, "after the connection's state is found in socket storage and claimed (spin lock)"),
    (0, "the whole program (the framer and the histograms)"),
];

/// Where the HTTP programs' run time goes: four collectors attached at once, three returning at
/// a stage boundary and one whole, so all see the same packets ([`side_by_side`] under wrk).
fn stage_breakdown(collector: &Path, url: &str, secs: u64) -> anyhow::Result<Value> {
    let stages: Vec<u32> = STAGES.iter().map(|s| s.0).collect();
    let (runs, sizes) = side_by_side(collector, &stages, &|| wrk(url, secs, 50).map(|_| ()))?;
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

/// A figure per (stage, program).
type ByStage<T> = BTreeMap<(u32, String), T>;

/// Run time per event of the HTTP programs of collectors stopping at `stages`
/// (`COLLECTOR_BENCH_HTTP_STAGE`, 0 the whole program), all attached at once so all see the
/// same packets, under `load`. Of several programs on one hook the first pays for bringing the
/// packet and the socket into the cache, so a collector that is not measured (stopping after
/// the connection state) is attached first, and the load runs once with the others attached in
/// the order given and once in reverse. Returns the figures of each run by (stage, program)
/// and the loaded size of each stage's programs. BPF statistics must be on.
fn side_by_side(
    collector: &Path,
    stages: &[u32],
    load: &dyn Fn() -> anyhow::Result<()>,
) -> anyhow::Result<(Vec<ByStage<f64>>, ByStage<u64>)> {
    const WARM: u32 = 3;
    let mut runs = vec![];
    // Loaded size of each stage's programs: the verifier drops the code a stage does not reach.
    let mut sizes = BTreeMap::new();
    for reverse in [false, true] {
        let mut order: Vec<Option<u32>> = stages.iter().map(|s| Some(*s)).collect();
        if reverse {
            order.reverse();
        }
        order.insert(0, None);
        let mut children = vec![];
        let mut ids: Vec<(u64, u32)> = vec![];
        for stage in &order {
            let before = program_ids()?;
            let value = stage.unwrap_or(WARM).to_string();
            let (child, _) = util::start_collector_with(collector, &[("COLLECTOR_BENCH_HTTP_STAGE", &value)])?;
            children.push(child);
            let Some(stage) = *stage else { continue };
            for p in bpf_programs()? {
                if !before.contains(&p.id) && (p.name == "http_ingress" || p.name == "http_egress") {
                    ids.push((p.id, stage));
                    sizes.insert((stage, p.name), p.bytes_xlated);
                }
            }
        }
        let snapshot = || -> anyhow::Result<BTreeMap<u64, (String, u64, u64)>> {
            Ok(bpf_programs()?.into_iter().map(|p| (p.id, (p.name, p.run_time_ns, p.run_cnt))).collect())
        };
        let start = snapshot()?;
        load()?;
        let end = snapshot()?;
        for c in &mut children {
            ensure!(c.0.try_wait()?.is_none(), "a collector exited during a side-by-side run");
        }
        drop(children);
        let mut ns = BTreeMap::new();
        for (id, stage) in &ids {
            let (Some((name, t0, c0)), Some((_, t1, c1))) = (start.get(id), end.get(id)) else { continue };
            ensure!(c1 > c0, "{name} (stage {stage}) saw no packets");
            ns.insert((*stage, name.clone()), (t1 - t0) as f64 / (c1 - c0) as f64);
        }
        runs.push(ns);
    }
    Ok((runs, sizes))
}

/// What a connection that is not HTTP costs per segment: an echo load of Redis-protocol
/// commands (64 bytes each way, 8 keep-alive connections, a server in this process) under a
/// collector whose programs return on entry (an empty program), one that returns after the
/// per-cgroup packet count and the IP/TCP headers (what every packet pays), and a whole one,
/// side by side ([`side_by_side`]); the ratio whole / empty per hook.
pub(super) fn non_http_cost(collector: &Path, secs: u64) -> anyhow::Result<Value> {
    let exchanges = std::sync::atomic::AtomicU64::new(0);
    let (runs, _) = side_by_side(collector, &[1, 2, 0], &|| {
        exchanges.fetch_add(echo_load(secs)?, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    })?;
    let mut out = json!({ "connections": ECHO_CONNECTIONS, "message_bytes": ECHO_MESSAGE.len(),
        "exchanges": exchanges.into_inner() });
    let mut worst: f64 = 0.0;
    for name in ["http_ingress", "http_egress"] {
        let mean = |stage: u32| -> anyhow::Result<f64> {
            let v: Vec<f64> = runs.iter().filter_map(|r| r.get(&(stage, name.to_owned())).copied()).collect();
            ensure!(v.len() == runs.len(), "no figure for {name} at stage {stage} under the non-HTTP load");
            Ok(v.iter().sum::<f64>() / v.len() as f64)
        };
        let (empty, headers, whole) = (mean(1)?, mean(2)?, mean(0)?);
        out[name] = json!({ "empty_ns": empty, "headers_ns": headers, "whole_ns": whole, "ratio": whole / empty });
        worst = worst.max(whole / empty);
    }
    out["ratio"] = json!(worst);
    Ok(out)
}

const ECHO_CONNECTIONS: usize = 8;
/// A Redis `SET` command, 64 bytes: a real protocol whose first byte is no HTTP method's.
const ECHO_MESSAGE: &[u8; 64] = b"*3\r\n$3\r\nSET\r\n$8\r\nbench:k1\r\n$30\r\n012345678901234567890123456789\r\n";

/// [`ECHO_CONNECTIONS`] clients sending [`ECHO_MESSAGE`] and reading it back from an echo server
/// on loopback, one message in flight per connection, for `secs`; returns the exchanges.
fn echo_load(secs: u64) -> anyhow::Result<u64> {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let server = std::thread::spawn(move || {
        for conn in listener.incoming().take(ECHO_CONNECTIONS) {
            let Ok(mut conn) = conn else { break };
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                while conn.read_exact(&mut buf).is_ok() && conn.write_all(&buf).is_ok() {}
            });
        }
    });
    let until = Instant::now() + std::time::Duration::from_secs(secs);
    let clients: Vec<_> = (0..ECHO_CONNECTIONS)
        .map(|_| {
            std::thread::spawn(move || -> anyhow::Result<u64> {
                let mut conn = std::net::TcpStream::connect(addr)?;
                conn.set_nodelay(true)?;
                let (mut buf, mut n) = ([0u8; 64], 0u64);
                while Instant::now() < until {
                    conn.write_all(ECHO_MESSAGE)?;
                    conn.read_exact(&mut buf)?;
                    ensure!(&buf == ECHO_MESSAGE, "the echo server answered other bytes");
                    n += 1;
                }
                Ok(n)
            })
        })
        .collect();
    let mut total = 0;
    for c in clients {
        total += c.join().map_err(|_| anyhow::anyhow!("an echo client panicked"))??;
    }
    let _ = server.join();
    ensure!(total > 0, "the echo load made no exchanges");
    Ok(total)
}
