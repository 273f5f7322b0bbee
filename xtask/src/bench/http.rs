//! The `http` part: nginx serving wrk without and with the collector, the per-program cost
//! from the kernel's BPF statistics, and where the HTTP programs' time goes.
use std::{path::Path, process::Command, time::Instant};

use anyhow::{Context as _, ensure};
use serde_json::{Value, json};

use super::util::{
    self, Killed, bpf_programs, free_port, median, nginx_conf, process_cpu, program_deltas, program_ids,
    programs_since, wait_port, wrk,
};
use crate::root_dir;

/// 4 KiB O_DIRECT writes, then as many reads, for the block programs' cost.
const DISK_IOS: u64 = 8192;

/// nginx + wrk without and with the collector, interleaved; per-program cost with BPF
/// statistics on.
pub(super) fn http_overhead(collector: &Path, rounds: usize, secs: u64) -> anyhow::Result<Value> {
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
    (3, "after the connection's state is found in socket storage and claimed (spin lock)"),
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
