//! The realistic load of the peer comparison: a keep-alive HTTP/1.1 server whose handler takes
//! 1 ms and answers 4 KiB, driven at a fixed request rate well under saturation (no packaged
//! generator does a fixed rate: wrk drives as fast as it can). Latency is measured from each
//! request's scheduled time, so a stall delays every request behind it (no coordinated
//! omission).
use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};

/// Response body size.
pub(super) const BODY: usize = 4096;
/// Handler time.
pub(super) const HANDLER: Duration = Duration::from_millis(1);

/// The server's main: a thread per connection (keep-alive); each request's handler sleeps
/// [`HANDLER`] and answers [`BODY`] bytes. Runs until killed.
pub fn serve_forever(port: u16) -> anyhow::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port))?;
    for c in listener.incoming() {
        let c = c?;
        thread::spawn(move || serve(c));
    }
    Ok(())
}

/// One connection through one file descriptor: the peer pairs requests with responses by
/// descriptor and counts nothing of a `try_clone`d pair.
fn serve(c: TcpStream) {
    let _ = c.set_nodelay(true);
    let mut w = &c;
    let mut r = BufReader::new(&c);
    let mut response =
        format!("HTTP/1.1 200 OK\r\nContent-Length: {BODY}\r\nContent-Type: text/plain\r\n\r\n").into_bytes();
    response.extend(std::iter::repeat_n(b'x', BODY));
    let mut line = String::new();
    loop {
        // The request head (GET, no body).
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" => break,
                Ok(_) => {}
            }
        }
        thread::sleep(HANDLER);
        if w.write_all(&response).is_err() {
            return;
        }
    }
}

/// Starts the server as a process of its own (`xtask bench-load server`), as applications
/// run; its CPU is read from its `/proc/<pid>/stat`.
pub(super) fn delay_server() -> anyhow::Result<(super::util::Killed, u16)> {
    let port = super::util::free_port()?;
    let child = std::process::Command::new(std::env::current_exe()?)
        .args(["bench-load", "server", "--port", &port.to_string()])
        .spawn()
        .context("starting the delay server")?;
    let child = super::util::Killed(child);
    super::util::wait_port(port, "the delay server")?;
    Ok((child, port))
}

/// Runs [`fixed_rate`] as a process of its own (`xtask bench-load client`); its CPU time comes
/// with the bench's reaped children (`getrusage`).
pub(super) fn fixed_rate_process(port: u16, rate: u64, secs: u64, conns: u64) -> anyhow::Result<Run> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(["bench-load", "client", "--port", &port.to_string(), "--rate", &rate.to_string()])
        .args(["--seconds", &secs.to_string(), "--connections", &conns.to_string()])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running the fixed-rate client")?;
    ensure!(out.status.success(), "the fixed-rate client failed");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let num = |k: &str| v[k].as_f64().context("client output");
    Ok(Run { completed: num("completed")? as u64, p99_s: num("p99_s")?, wall_s: num("wall_s")? })
}

/// `xtask bench-load server|client`: the realistic load's two processes.
#[derive(clap::Args)]
pub struct LoadArgs {
    /// server or client.
    role: String,
    #[arg(long)]
    port: u16,
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    #[arg(long, default_value_t = 6)]
    seconds: u64,
    #[arg(long, default_value_t = 16)]
    connections: u64,
}

pub fn load_main(a: LoadArgs) -> anyhow::Result<()> {
    match a.role.as_str() {
        "server" => serve_forever(a.port),
        "client" => {
            let r = fixed_rate(a.port, a.rate, a.seconds, a.connections)?;
            println!("{}", serde_json::json!({ "completed": r.completed, "p99_s": r.p99_s, "wall_s": r.wall_s }));
            Ok(())
        }
        other => anyhow::bail!("bench-load: unknown role {other:?} (server or client)"),
    }
}

/// What a fixed-rate run did.
pub(super) struct Run {
    pub(super) completed: u64,
    pub(super) p99_s: f64,
    pub(super) wall_s: f64,
}

/// `rate` requests per second for `secs` over `conns` keep-alive connections, each sending on
/// its own schedule (evenly offset).
fn fixed_rate(port: u16, rate: u64, secs: u64, conns: u64) -> anyhow::Result<Run> {
    let interval = Duration::from_secs_f64(conns as f64 / rate as f64);
    let per_conn = rate * secs / conns;
    let start = Instant::now() + Duration::from_millis(50);
    let mut threads = Vec::new();
    for i in 0..conns {
        let offset = interval.mul_f64(i as f64 / conns as f64);
        threads.push(thread::spawn(move || -> anyhow::Result<Vec<Duration>> {
            let c = TcpStream::connect(("127.0.0.1", port))?;
            c.set_nodelay(true)?;
            // One descriptor for both directions (see `serve`).
            let mut w = &c;
            let mut r = BufReader::new(&c);
            let mut lat = Vec::with_capacity(per_conn as usize);
            let mut body = vec![0u8; BODY];
            let mut line = String::new();
            for n in 0..per_conn {
                let due = start + offset + interval.mul_f64(n as f64);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    thread::sleep(wait);
                }
                w.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")?;
                let mut len = None;
                loop {
                    line.clear();
                    ensure!(r.read_line(&mut line)? > 0, "the server closed the connection");
                    if line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length: ") {
                        len = Some(v.trim().parse::<usize>()?);
                    }
                }
                ensure!(len == Some(BODY), "unexpected response length {len:?}");
                r.read_exact(&mut body)?;
                lat.push(Instant::now().saturating_duration_since(due));
            }
            Ok(lat)
        }));
    }
    let mut all = Vec::new();
    for t in threads {
        all.extend(t.join().map_err(|_| anyhow::anyhow!("a load thread panicked"))?.context("fixed-rate load")?);
    }
    let wall_s = start.elapsed().as_secs_f64();
    all.sort();
    let p99 = all.get(all.len() * 99 / 100).copied().unwrap_or_default();
    Ok(Run { completed: all.len() as u64, p99_s: p99.as_secs_f64(), wall_s })
}
