//! `cargo xtask bench`: benchmarks on this machine, measured side by side in one run.
//!
//! Parts (all by default, `--only` picks some; the others keep their figures from the last
//! `target/bench/results.json`, or where it has none, their sections of `docs/performance.md`):
//! - `micro`: the criterion micro-benchmarks of `benches/` (map contents → families, encoding).
//! - `scrape`: our collector and Debian's prometheus-node-exporter, both running, scraped
//!   alternately by one loop: CPU seconds and wall time per scrape, RSS (scrape.rs).
//! - `scale`: scrape time and RSS with 1k, 10k and 100k series made by real HTTP requests, and
//!   with 10k open keep-alive connections (scale.rs).
//! - `http`: nginx serving a small file to wrk (keep-alive), alternating rounds without and
//!   with the collector running; throughput and p99 latency ratios, and the run time per event
//!   of every eBPF program from the kernel's BPF statistics (`kernel.bpf_stats_enabled`).
//! - `tls`: what the HTTPS capture costs: nginx with `ssl` and wrk over TLS, the collector with
//!   the capture off and on in alternating rounds; CPU per request and per probe hit (tls.rs).
//! - `http2`: what the HTTP/2 and gRPC capture costs: h2load with 100 streams per connection
//!   against nghttpd, and gRPC unary calls, without and with the collector (http2.rs).
//! - `peer`: this collector side by side with a real peer (`--peer coroot=PATH`), worst case
//!   (nginx + wrk) and realistic case (1 ms handler, 4 KiB, fixed rate) (peer.rs, load.rs);
//!   skipped with one line without `--peer`.
//!
//! Writes `target/bench/results.json` and the generated section of `docs/performance.md`.
use std::time::Instant;

use anyhow::{Context as _, ensure};
use serde_json::{Value, json};

use crate::{apt_install, cargo, root_dir, status};

mod http;
mod http2;
pub mod load;
mod micro;
mod peer;
mod report;
mod scale;
mod scrape;
mod tls;
mod util;

use http::http_overhead;
use report::{markdown, write_docs};
use util::other_collectors;

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
    /// A peer to compare with side by side: coroot=PATH (the Coroot tracer harness of
    /// ../shared/peers/coroot/). Without it the peer part is skipped.
    #[arg(long, value_parser = peer::parse_peer)]
    pub peer: Option<peer::Peer>,
    /// Peer comparison: interleaved rounds (each: without, this collector, the peer).
    #[arg(long, default_value_t = 5)]
    pub peer_rounds: usize,
    /// Peer comparison: seconds per load and side.
    #[arg(long, default_value_t = 6)]
    pub peer_seconds: u64,
    /// Peer comparison: requests per second of the realistic case.
    #[arg(long, default_value_t = 2000)]
    pub peer_rate: u64,
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
    Tls,
    Http2,
    Peer,
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
    apt_install(
        &["nginx", "wrk", "bpftool", "prometheus-node-exporter", "linux-perf", "nghttp2-server", "nghttp2-client"]
            .map(String::from),
    )?;
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
        save("micro", micro::run()?, &mut results)?;
    }
    if run(Part::Scrape) {
        save("scrape", scrape::vs_node_exporter(&collector, args.scrapes)?, &mut results)?;
    }
    if run(Part::Scale) {
        let opts = scale::ScaleOpts {
            series: args.series.clone(),
            min_scrapes: args.scale_scrapes,
            min_secs: args.scale_seconds,
            connections: args.connections,
        };
        save("scale", scale::scale(&collector, &opts)?, &mut results)?;
    }
    if run(Part::Http) {
        save("http", http_overhead(&collector, args.rounds, args.seconds)?, &mut results)?;
    }
    if run(Part::Tls) {
        save("tls", tls::tls_overhead(&collector, args.rounds, args.seconds)?, &mut results)?;
    }
    if run(Part::Http2) {
        save("http2", http2::http2_overhead(&collector, args.rounds, args.seconds)?, &mut results)?;
    }
    if run(Part::Peer) {
        match &args.peer {
            None => eprintln!(
                "xtask bench: peer comparison skipped (give --peer coroot=PATH, e.g. ../shared/peers/coroot/coroot-l7-harness)"
            ),
            Some(p) => {
                peer::check(p)?;
                let opts = peer::PeerOpts { rounds: args.peer_rounds, secs: args.peer_seconds, rate: args.peer_rate };
                let mut v = peer::compare(&collector, p, &opts)?;
                v["loss"] = peer::under_loss(p)?;
                save("peer", v, &mut results)?;
            }
        }
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
    let parts: Vec<String> = [Part::Micro, Part::Scrape, Part::Scale, Part::Http, Part::Tls, Part::Http2, Part::Peer]
        .into_iter()
        .filter(|p| run(*p) && (*p != Part::Peer || args.peer.is_some()))
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
