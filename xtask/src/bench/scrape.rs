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

use super::util::{Killed, free_port, median, process_cpu, start_collector, wait_port};
use crate::root_dir;

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        return f64::NAN;
    }
    v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1]
}

/// Memory of a process in kB: VmRSS, VmHWM (peak RSS), RssAnon, RssFile.
pub(super) fn memory(pid: u32) -> anyhow::Result<Value> {
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
pub(super) struct Scraper {
    agent: ureq::Agent,
}

impl Scraper {
    pub(super) fn new() -> Self {
        Self { agent: ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build() }
    }

    /// One scrape: wall time in seconds and body bytes as sent.
    pub(super) fn scrape(&self, url: &str, gzip: bool) -> anyhow::Result<(f64, usize)> {
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
    pub(super) fn series(&self, url: &str) -> anyhow::Result<usize> {
        let mut body = String::new();
        self.agent.get(url).call()?.into_reader().read_to_string(&mut body)?;
        Ok(body.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).count())
    }
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

pub(super) fn wall_stats(walls: &[f64], cpu_s: f64, bytes: usize) -> Value {
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
pub(super) fn perf_profile(pid: u32, load: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<Option<Vec<String>>> {
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
pub(super) fn vs_node_exporter(bin: &Path, scrapes: usize) -> anyhow::Result<Value> {
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
pub(super) fn status_server() -> anyhow::Result<u16> {
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
pub(super) fn request(conn: &TcpStream, method: &str, path: &str) -> anyhow::Result<u16> {
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
