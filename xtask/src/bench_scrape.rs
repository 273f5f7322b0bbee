//! Scrape cost: our collector side by side with Debian's prometheus-node-exporter, and our
//! collector at scale (1k, 10k, 100k live series made by real HTTP requests through the real
//! programs; 10k open keep-alive connections).
//!
//! CPU per scrape is the process's user + system time (`/proc/<pid>/stat`, 10 ms ticks) over
//! many scrapes divided by their number; wall time is the scraping client's, from sending the
//! request to the last body byte; memory is `VmRSS` / `VmHWM` from `/proc/<pid>/status`.
use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use serde_json::{Value, json};

use crate::{
    bench::{Killed, free_port, median, nginx_conf, process_cpu, wait_port, wait_ready},
    root_dir,
};

/// Scrape time target at 100k series (seconds).
pub const SCALE_TARGET_S: f64 = 0.050;

pub(crate) fn percentile(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        return f64::NAN;
    }
    v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1]
}

/// Memory of a process in kB: VmRSS, VmHWM (peak RSS), RssAnon, RssFile.
fn memory(pid: u32) -> anyhow::Result<Value> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().strip_suffix("kB")?.trim().parse().ok())
    };
    Ok(json!({
        "rss_kb": field("VmRSS"),
        "hwm_kb": field("VmHWM"),
        "rss_anon_kb": field("RssAnon"),
        "rss_file_kb": field("RssFile"),
    }))
}

/// A scraping client like Prometheus's: keep-alive connections, gzip accepted.
struct Scraper {
    agent: ureq::Agent,
}

impl Scraper {
    fn new() -> Self {
        Self { agent: ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build() }
    }

    /// One scrape: wall time in seconds and body bytes as sent.
    fn scrape(&self, url: &str, gzip: bool) -> anyhow::Result<(f64, usize)> {
        let t0 = Instant::now();
        let mut req = self.agent.get(url);
        if gzip {
            req = req.set("Accept-Encoding", "gzip");
        }
        let resp = req.call().with_context(|| format!("scraping {url}"))?;
        let mut body = Vec::new();
        resp.into_reader().read_to_end(&mut body)?;
        Ok((t0.elapsed().as_secs_f64(), body.len()))
    }

    /// Samples exposed (lines that are neither comments nor empty).
    fn series(&self, url: &str) -> anyhow::Result<usize> {
        let mut body = String::new();
        self.agent.get(url).call()?.into_reader().read_to_string(&mut body)?;
        Ok(body.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).count())
    }
}

/// Starts the release collector (all default collectors) on a free port; returns its metrics URL.
pub(crate) fn start_collector(bin: &Path) -> anyhow::Result<(Killed, String)> {
    start_collector_with(bin, &[])
}

/// [`start_collector`] with extra environment variables.
pub(crate) fn start_collector_with(bin: &Path, env: &[(&str, &str)]) -> anyhow::Result<(Killed, String)> {
    let port = free_port()?;
    let child = Killed(
        Command::new(bin)
            .args(["--web.listen-address", &format!("127.0.0.1:{port}")])
            .envs(env.iter().copied())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the collector")?,
    );
    wait_ready(port)?;
    Ok((child, format!("http://127.0.0.1:{port}/metrics")))
}

fn start_node_exporter() -> anyhow::Result<(Killed, String)> {
    let port = free_port()?;
    let child = Killed(
        Command::new("prometheus-node-exporter")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting prometheus-node-exporter (Debian package prometheus-node-exporter)")?,
    );
    wait_port(port, "prometheus-node-exporter")?;
    Ok((child, format!("http://127.0.0.1:{port}/metrics")))
}

fn node_exporter_version() -> String {
    Command::new("prometheus-node-exporter")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
            text.lines().next().map(|l| l.trim().to_owned())
        })
        .unwrap_or_default()
}

fn wall_stats(walls: &[f64], cpu_s: f64, bytes: usize) -> Value {
    json!({
        "scrapes": walls.len(),
        "cpu_s_per_scrape": cpu_s / walls.len() as f64,
        "wall_median_s": median(walls.to_vec()),
        "wall_p99_s": percentile(walls, 0.99),
        "bytes": bytes,
    })
}

/// Flat profile of a process while `load` runs: `perf record` at 1999 Hz, then the symbols
/// with at least 1% of the samples. `None` when perf is not usable here.
fn perf_profile(pid: u32, load: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<Option<Vec<String>>> {
    let data = root_dir().join("target/bench/perf.data");
    let Ok(mut rec) = Command::new("perf")
        .args(["record", "-F", "1999", "-p", &pid.to_string(), "-o"])
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return Ok(None);
    };
    std::thread::sleep(Duration::from_millis(500));
    let loaded = load();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(rec.id() as i32, libc::SIGINT) };
    let _ = rec.wait();
    loaded?;
    let out = Command::new("perf")
        .args(["report", "--stdio", "--no-children", "-q", "--sort", "dso,symbol", "--percent-limit", "1", "-i"])
        .arg(&data)
        .stderr(Stdio::null())
        .output()?;
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .take(25)
        .collect();
    Ok((out.status.success() && !lines.is_empty()).then_some(lines))
}

/// Our collector and node_exporter, both running, scraped alternately (gzip, as Prometheus
/// does) by one loop.
pub fn vs_node_exporter(bin: &Path, scrapes: usize) -> anyhow::Result<Value> {
    eprintln!("xtask bench: scrape cost, collector vs prometheus-node-exporter ({scrapes} scrapes each)");
    let (ours, ours_url) = start_collector(bin)?;
    let (theirs, theirs_url) = start_node_exporter()?;
    let urls = [ours_url.as_str(), theirs_url.as_str()];
    let pids = [ours.0.id(), theirs.0.id()];
    let s = Scraper::new();
    // First scrapes pay one-off costs (cgroup scan, device names, Go runtime warm-up).
    for _ in 0..5 {
        for u in urls {
            s.scrape(u, true)?;
        }
    }
    let cpu0 = [process_cpu(pids[0])?, process_cpu(pids[1])?];
    let (mut walls, mut bytes) = ([vec![], vec![]], [0, 0]);
    for i in 0..scrapes {
        for k in if i % 2 == 0 { [0, 1] } else { [1, 0] } {
            let (w, b) = s.scrape(urls[k], true)?;
            walls[k].push(w);
            bytes[k] = b;
        }
    }
    let cpu = [process_cpu(pids[0])? - cpu0[0], process_cpu(pids[1])? - cpu0[1]];
    let side = |k: usize| -> anyhow::Result<Value> {
        let mut v = wall_stats(&walls[k], cpu[k], bytes[k]);
        v["memory"] = memory(pids[k])?;
        v["series"] = json!(s.series(urls[k])?);
        Ok(v)
    };
    let (a, b) = (side(0)?, side(1)?);
    let ratio = |f: &dyn Fn(&Value) -> Option<f64>| -> Value {
        match (f(&a), f(&b)) {
            (Some(x), Some(y)) if y > 0.0 => json!(x / y),
            _ => Value::Null,
        }
    };
    let ratios = json!({
        "cpu": ratio(&|v| v["cpu_s_per_scrape"].as_f64()),
        "wall_median": ratio(&|v| v["wall_median_s"].as_f64()),
        "wall_p99": ratio(&|v| v["wall_p99_s"].as_f64()),
        "rss": ratio(&|v| v["memory"]["rss_kb"].as_f64()),
        "hwm": ratio(&|v| v["memory"]["hwm_kb"].as_f64()),
    });
    // Where our scrape time goes when the CPU target is missed.
    let profile = if ratios["cpu"].as_f64().is_some_and(|r| r > 1.0 / 3.0) {
        eprintln!("xtask bench: scrape CPU above 1/3 of node_exporter's: profiling the collector");
        perf_profile(pids[0], || {
            for _ in 0..scrapes.max(100) {
                s.scrape(urls[0], true)?;
            }
            Ok(())
        })?
    } else {
        None
    };
    Ok(json!({
        "scrapes": scrapes,
        "node_exporter_version": node_exporter_version(),
        "collector": a,
        "node_exporter": b,
        "ratios": ratios,
        "profile": profile,
    }))
}

/// HTTP/1.1 server answering `<METHOD> /<code>` with status `<code>` and an empty body,
/// keep-alive; one thread per connection. Returns its port.
fn status_server() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || serve_status(conn));
        }
    });
    Ok(port)
}

fn serve_status(conn: TcpStream) -> std::io::Result<()> {
    let mut r = BufReader::new(&conn);
    let mut w = &conn;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let code: u16 = line.split(' ').nth(1).and_then(|p| p.strip_prefix('/')?.parse().ok()).unwrap_or(200);
        let len = read_headers(&mut r)?;
        std::io::copy(&mut (&mut r).take(len), &mut std::io::sink())?;
        w.write_all(format!("HTTP/1.1 {code} Status\r\nContent-Length: 0\r\n\r\n").as_bytes())?;
    }
}

/// Reads header lines up to the empty one; returns Content-Length (0 when absent).
fn read_headers(r: &mut impl std::io::BufRead) -> std::io::Result<u64> {
    let mut len = 0;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if h.trim_end().is_empty() {
            return Ok(len);
        }
        if let Some((name, value)) = h.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            len = value.trim().parse().unwrap_or(0);
        }
    }
}

/// One request on a keep-alive connection; returns the response status.
fn request(conn: &TcpStream, method: &str, path: &str) -> anyhow::Result<u16> {
    let mut w = conn;
    w.write_all(format!("{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Length: 0\r\n\r\n").as_bytes())?;
    let mut r = BufReader::new(conn);
    let mut status = String::new();
    r.read_line(&mut status)?;
    let code =
        status.split(' ').nth(1).and_then(|c| c.parse().ok()).with_context(|| format!("response status {status:?}"))?;
    let len = read_headers(&mut r)?;
    if method != "HEAD" {
        std::io::copy(&mut (&mut r).take(len), &mut std::io::sink())?;
    }
    ensure!(r.buffer().is_empty(), "unexpected bytes after the response");
    Ok(code)
}

/// Methods × status codes: every pair is its own label set on the server and the client side.
/// `PROPFIND` counts as `_OTHER`.
fn label_sets() -> Vec<(&'static str, u16)> {
    const METHODS: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH", "PROPFIND"];
    (200..600).flat_map(|code| METHODS.map(|m| (m, code))).collect()
}

pub struct ScaleOpts {
    pub series: Vec<usize>,
    pub min_scrapes: usize,
    pub min_secs: u64,
    pub connections: usize,
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

/// The hard limit on open files.
pub(crate) fn nofile_hard_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain libc call on a valid struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 { lim.rlim_max } else { 1024 }
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
pub fn scale(bin: &Path, opts: &ScaleOpts) -> anyhow::Result<Value> {
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

fn ms(v: &Value) -> String {
    v.as_f64().map_or("–".into(), |s| format!("{:.2} ms", s * 1e3))
}

fn mib(kb: &Value) -> String {
    kb.as_f64().map_or("–".into(), |k| format!("{:.1} MiB", k / 1024.0))
}

fn ratio(v: &Value) -> String {
    v.as_f64().map_or("–".into(), |r| format!("{r:.3}"))
}

pub fn markdown_scrape(r: &Value) -> String {
    let (a, b) = (&r["collector"], &r["node_exporter"]);
    let mut s = format!(
        "### Scrape cost vs node_exporter ({} scrapes each, alternating, gzip)\n\n\
         node_exporter: `{}`, default collectors. The collector: release build, default collectors (eBPF included).\n\n\
         | measure | collector | node_exporter | ratio |\n|---|---|---|---|\n",
        r["scrapes"],
        r["node_exporter_version"].as_str().unwrap_or("")
    );
    s += &format!(
        "| CPU per scrape | {:.2} ms | {:.2} ms | {} |\n",
        a["cpu_s_per_scrape"].as_f64().unwrap_or(f64::NAN) * 1e3,
        b["cpu_s_per_scrape"].as_f64().unwrap_or(f64::NAN) * 1e3,
        ratio(&r["ratios"]["cpu"])
    );
    s += &format!(
        "| wall time per scrape, median | {} | {} | {} |\n",
        ms(&a["wall_median_s"]),
        ms(&b["wall_median_s"]),
        ratio(&r["ratios"]["wall_median"])
    );
    s += &format!(
        "| wall time per scrape, p99 | {} | {} | {} |\n",
        ms(&a["wall_p99_s"]),
        ms(&b["wall_p99_s"]),
        ratio(&r["ratios"]["wall_p99"])
    );
    s += &format!(
        "| RSS after the scrapes (VmRSS) | {} | {} | {} |\n",
        mib(&a["memory"]["rss_kb"]),
        mib(&b["memory"]["rss_kb"]),
        ratio(&r["ratios"]["rss"])
    );
    s += &format!(
        "| peak RSS (VmHWM) | {} | {} | {} |\n",
        mib(&a["memory"]["hwm_kb"]),
        mib(&b["memory"]["hwm_kb"]),
        ratio(&r["ratios"]["hwm"])
    );
    s += &format!(
        "| of which anonymous / file-backed | {} / {} | {} / {} | |\n",
        mib(&a["memory"]["rss_anon_kb"]),
        mib(&a["memory"]["rss_file_kb"]),
        mib(&b["memory"]["rss_anon_kb"]),
        mib(&b["memory"]["rss_file_kb"])
    );
    s += &format!("| series exposed | {} | {} | |\n", a["series"], b["series"]);
    s += &format!("| response size (gzip) | {} B | {} B | |\n\n", a["bytes"], b["bytes"]);
    if let Some(p) = r["profile"].as_array() {
        s += "Profile of the collector during scrapes (`perf record -F 1999`, self time, symbols ≥ 1%):\n\n```\n";
        for l in p {
            s += l.as_str().unwrap_or("");
            s += "\n";
        }
        s += "```\n\n";
    }
    s
}

pub fn markdown_scale(r: &Value) -> String {
    let mut s = String::from(
        "### Scale (series made by real HTTP requests: methods × status codes, server and client side)\n\n\
         | series | HTTP label sets | scrape wall (gzip) median / p99 | CPU per scrape (gzip) | scrape wall (plain) median | CPU per scrape (plain) | response gzip / plain | RSS (peak) |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    if let Some(levels) = r["levels"].as_array() {
        for l in levels {
            s += &format!(
                "| {} | {} | {} / {} | {} | {} | {} | {:.0} kB / {:.0} kB | {} ({}) |\n",
                l["series"],
                l["label_sets"],
                ms(&l["gzip"]["wall_median_s"]),
                ms(&l["gzip"]["wall_p99_s"]),
                ms(&l["gzip"]["cpu_s_per_scrape"]),
                ms(&l["plain"]["wall_median_s"]),
                ms(&l["plain"]["cpu_s_per_scrape"]),
                l["gzip"]["bytes"].as_f64().unwrap_or(0.0) / 1e3,
                l["plain"]["bytes"].as_f64().unwrap_or(0.0) / 1e3,
                mib(&l["memory"]["rss_kb"]),
                mib(&l["memory"]["hwm_kb"]),
            );
        }
    }
    if let Some(m) = r["marginal_s_per_series"].as_array() {
        let per: Vec<String> =
            m.iter().map(|v| v.as_f64().map_or("–".into(), |x| format!("{:.2} µs", x * 1e6))).collect();
        s += &format!("\nScrape time added per series between successive levels (gzip): {}.\n", per.join(" → "));
    }
    let c = &r["connections"];
    if c.is_object() {
        s += &format!(
            "\nWith {} open keep-alive connections to nginx (each served one request; opened in {:.1} s), a fresh \
             collector:\n\n| | scrape wall median / p99 | CPU per scrape | RSS (peak) |\n|---|---|---|---|\n",
            c["connections"],
            c["open_seconds"].as_f64().unwrap_or(0.0)
        );
        for (name, m, mem) in
            [("without", &c["without"], &c["memory_without"]), ("with the connections", &c["with"], &c["memory_with"])]
        {
            s += &format!(
                "| {name} | {} / {} | {} | {} ({}) |\n",
                ms(&m["wall_median_s"]),
                ms(&m["wall_p99_s"]),
                ms(&m["cpu_s_per_scrape"]),
                mib(&mem["rss_kb"]),
                mib(&mem["hwm_kb"])
            );
        }
    }
    if let Some(p) = r["profile"].as_array() {
        s += "\nProfile of the collector during gzip scrapes at the top level (`perf record -F 1999`, self time, \
              symbols ≥ 1%):\n\n```\n";
        for l in p {
            s += l.as_str().unwrap_or("");
            s += "\n";
        }
        s += "```\n";
    }
    s + "\n"
}
