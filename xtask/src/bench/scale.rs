//! The `scale` part: our collector at 1k, 10k and 100k live series made by real HTTP requests
//! through the real programs, and with 10k open keep-alive connections (see scrape.rs for how
//! scrape cost and memory are measured).
use std::{
    net::TcpStream,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use serde_json::{Value, json};

use super::{
    scrape::{Scraper, memory, perf_profile, request, status_server, wall_stats},
    util::{Killed, SCALE_TARGET_S, free_port, nginx_conf, process_cpu, start_collector, wait_port},
};
use crate::root_dir;

/// Methods × status codes: every pair is its own label set on the server and the client side.
/// `PROPFIND` counts as `_OTHER`.
fn label_sets() -> Vec<(&'static str, u16)> {
    const METHODS: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH", "PROPFIND"];
    (200..600).flat_map(|code| METHODS.map(|m| (m, code))).collect()
}

pub(super) struct ScaleOpts {
    pub(super) series: Vec<usize>,
    pub(super) min_scrapes: usize,
    pub(super) min_secs: u64,
    pub(super) connections: usize,
}

/// Scrapes until both `min_scrapes` and `min_secs` are reached.
fn measure(s: &Scraper, url: &str, pid: u32, opts: &ScaleOpts, gzip: bool) -> anyhow::Result<Value> {
    let cpu0 = process_cpu(pid)?;
    let t0 = Instant::now();
    let (mut walls, mut bytes) = (Vec::new(), 0);
    while walls.len() < opts.min_scrapes || t0.elapsed() < Duration::from_secs(opts.min_secs) {
        let (w, b) = s.scrape(url, gzip)?;
        walls.push(w);
        bytes = b;
    }
    Ok(wall_stats(&walls, process_cpu(pid)? - cpu0, bytes))
}

/// Raises this process's soft open-file limit to `n` (the connection test holds its client
/// sockets); the hard limit stays (raising it needs CAP_SYS_RESOURCE).
fn raise_nofile(n: u64) -> anyhow::Result<()> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain libc calls on a valid struct.
    unsafe {
        ensure!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0, "getrlimit");
        ensure!(lim.rlim_max >= n, "{n} open files are needed, the hard limit is {}", lim.rlim_max);
        if lim.rlim_cur < n {
            lim.rlim_cur = n;
            ensure!(
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0,
                "raising RLIMIT_NOFILE to {n}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// Scrape time and RSS at 1k, 10k and 100k series, and with many open connections.
pub(super) fn scale(bin: &Path, opts: &ScaleOpts) -> anyhow::Result<Value> {
    eprintln!("xtask bench: scale ({:?} series from real HTTP requests)", opts.series);
    let (col, url) = start_collector(bin)?;
    let pid = col.0.id();
    let s = Scraper::new();
    for _ in 0..3 {
        s.scrape(&url, true)?;
    }
    let port = status_server()?;
    let conn = TcpStream::connect(("127.0.0.1", port))?;
    conn.set_nodelay(true)?;
    let sets = label_sets();
    let base = s.series(&url)?;
    let (mut made, mut per_set, mut levels) = (0usize, 0.0f64, Vec::new());
    for &target in &opts.series {
        let series = loop {
            let n = s.series(&url)?;
            if made > 0 {
                per_set = n.saturating_sub(base) as f64 / made as f64;
            }
            if n >= target {
                break n;
            }
            let need = ((target - n) as f64 / if per_set > 0.0 { per_set } else { 100.0 }).ceil() as usize;
            ensure!(made + need <= sets.len(), "out of method × status label sets at {n} series");
            for (m, code) in &sets[made..made + need] {
                let got = request(&conn, m, &format!("/{code}"))?;
                ensure!(got == *code, "status server answered {got} for {code}");
            }
            made += need;
        };
        eprintln!("xtask bench: {series} series ({made} method × status pairs)");
        let gzip = measure(&s, &url, pid, opts, true)?;
        let plain = measure(&s, &url, pid, opts, false)?;
        levels.push(json!({
            "target": target,
            "series": series,
            "label_sets": made,
            "gzip": gzip,
            "plain": plain,
            "memory": memory(pid)?,
        }));
    }
    // Where the scrape time goes when the target is missed.
    let top = levels.last().context("levels")?;
    let profile = if top["gzip"]["wall_median_s"].as_f64().is_some_and(|t| t > SCALE_TARGET_S) {
        eprintln!("xtask bench: scrape time at 100k series above target: profiling the collector");
        perf_profile(pid, || {
            for _ in 0..opts.min_scrapes {
                s.scrape(&url, true)?;
            }
            Ok(())
        })?
    } else {
        None
    };
    drop(col);
    // Growth: time per added series between successive levels (gzip scrapes).
    let t = |i: usize, k: &str| levels[i]["gzip"][k].as_f64().unwrap_or(f64::NAN);
    let n = |i: usize| levels[i]["series"].as_f64().unwrap_or(f64::NAN);
    let marginal: Vec<f64> =
        (1..levels.len()).map(|i| (t(i, "wall_median_s") - t(i - 1, "wall_median_s")) / (n(i) - n(i - 1))).collect();
    let connections = connections(bin, opts)?;
    Ok(json!({
        "base_series": base,
        "series_per_label_set": per_set,
        "levels": levels,
        "marginal_s_per_series": marginal,
        "profile": profile,
        "connections": connections,
    }))
}

/// A fresh collector scraped without and then with `opts.connections` open keep-alive
/// connections to nginx (each has served one request).
fn connections(bin: &Path, opts: &ScaleOpts) -> anyhow::Result<Value> {
    let n = opts.connections;
    eprintln!("xtask bench: scrapes with {n} open connections");
    raise_nofile(n as u64 + 1024)?;
    let dir = root_dir().join("target/bench/conns");
    std::fs::create_dir_all(&dir)?;
    let port = free_port()?;
    // nginx closes idle keep-alive connections once fewer than 1/16 of its slots are free.
    let conf = nginx_conf(&dir, port, 2 * n + 1000)?;
    let nginx = Killed(Command::new("nginx").arg("-c").arg(&conf).spawn().context("starting nginx")?);
    wait_port(port, "nginx")?;
    let (col, url) = start_collector(bin)?;
    let pid = col.0.id();
    let s = Scraper::new();
    for _ in 0..3 {
        s.scrape(&url, true)?;
    }
    let without = measure(&s, &url, pid, opts, true)?;
    let memory_without = memory(pid)?;
    let t0 = Instant::now();
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        let c = TcpStream::connect(("127.0.0.1", port)).context("opening a connection")?;
        let code = request(&c, "GET", "/index.html").with_context(|| format!("connection {i}"))?;
        ensure!(code == 200, "nginx answered {code}");
        held.push(c);
    }
    let open_s = t0.elapsed().as_secs_f64();
    let with = measure(&s, &url, pid, opts, true)?;
    let memory_with = memory(pid)?;
    // Still open: one more request on the first and the last connection.
    for c in [&held[0], &held[n - 1]] {
        ensure!(request(c, "GET", "/index.html")? == 200, "a held connection was closed");
    }
    ensure!(nginx.0.id() > 0);
    drop(held);
    Ok(json!({
        "connections": n,
        "open_seconds": open_s,
        "without": without,
        "with": with,
        "memory_without": memory_without,
        "memory_with": memory_with,
    }))
}
