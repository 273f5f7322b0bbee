//! `cargo xtask fuzz`: runs every cargo-fuzz target in `fuzz/` for a fixed time each (the
//! hardening bench: ≥ 600 s per target finds nothing). Installs cargo-fuzz when missing; the
//! sanitizer flags need nightly features, enabled on the pinned toolchain with
//! RUSTC_BOOTSTRAP=1 for these builds only. Corpora start from live files of this machine
//! (procfs, a cgroup tree) plus a few hand-written seeds, and are kept in fuzz/corpus.
use std::{path::Path, process::Command, time::Instant};

use anyhow::{Context as _, ensure};

use crate::{build_ebpf, cargo, root_dir, status};

fn cargo_fuzz() -> Command {
    let mut c = cargo();
    c.current_dir(root_dir()).arg("fuzz").env("RUSTC_BOOTSTRAP", "1");
    c
}

fn targets() -> anyhow::Result<Vec<String>> {
    let out = cargo_fuzz().arg("list").output().context("cargo fuzz list")?;
    ensure!(out.status.success(), "cargo fuzz list: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).filter(|l| !l.is_empty()).collect())
}

/// Seeds: real inputs of each parser, so the fuzzer starts from valid structure.
fn seed(target: &str, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let write = |name: &str, bytes: &[u8]| std::fs::write(dir.join(name), bytes);
    match target {
        "procfs_files" => {
            let files = ["stat", "meminfo", "loadavg", "pressure/cpu", "diskstats", "net/dev"];
            for (i, f) in files.iter().enumerate() {
                if let Ok(mut bytes) = std::fs::read(Path::new("/proc").join(f)) {
                    bytes.insert(0, i as u8);
                    write(&format!("seed-{}", f.replace('/', "-")), &bytes)?;
                }
            }
        }
        "cgroup_identity" => {
            let id = "4f1c4d8bd1c1e2f3a4b5c6d7e8f90123456789abcdef0123456789abcdef0123";
            write("seed-service", b"/system.slice/nginx.service")?;
            write("seed-docker", format!("/system.slice/docker-{id}.scope").as_bytes())?;
            write("seed-kubepods", format!("/kubepods/besteffort/pod1/{id}").as_bytes())?;
        }
        "web_config" => {
            write(
                "seed-full",
                b"tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  \
                  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n  min_version: TLS13\n\
                  http_server_config:\n  headers:\n    X-Frame-Options: deny\n\
                  basic_auth_users:\n  alice: $2y$10$X0h1gDsPszWURQaxFh.zoubFi6DXncSjhoQNJgRrnGs7EsimhC7zG\n",
            )?;
            write("seed-auth", b"Basic YWxpY2U6c2VjcmV0")?;
        }
        "flags" => {
            write("seed-listen", b"[::1]:9810")?;
            write("seed-buckets", b"0.001,0.01,0.1,1")?;
            write("seed-caps", b"cap_bpf,perfmon")?;
        }
        "helper_requests" => {
            write("seed-environ-self", &[&[1u8][..], &std::process::id().to_le_bytes()].concat())?;
            write("seed-environ-init", &[1, 1, 0, 0, 0])?;
            write("seed-docker", &[&[2u8][..], "0123456789abcdef".repeat(4).as_bytes()].concat())?;
        }
        "tracepoint_format" => {
            for tp in ["block_rq_issue", "block_rq_complete", "block_bio_queue"] {
                if let Ok(bytes) = std::fs::read(format!("/sys/kernel/tracing/events/block/{tp}/format")) {
                    write(&format!("seed-{tp}"), &bytes)?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

pub fn fuzz(seconds: u64, only: &[String]) -> anyhow::Result<()> {
    build_ebpf()?; // the collector crate embeds the object
    if !cargo_fuzz().arg("--version").output().is_ok_and(|o| o.status.success()) {
        eprintln!("xtask: installing cargo-fuzz");
        status(cargo().args(["install", "cargo-fuzz", "--locked"]))?;
    }
    let all = targets()?;
    let run: Vec<&String> = all.iter().filter(|t| only.is_empty() || only.contains(t)).collect();
    ensure!(!run.is_empty(), "no fuzz target matches {only:?} (targets: {all:?})");
    let mut results = Vec::new();
    for t in run {
        let corpus = root_dir().join("fuzz/corpus").join(t);
        seed(t, &corpus)?;
        eprintln!("xtask: fuzzing {t} for {seconds} s");
        let start = Instant::now();
        let st = cargo_fuzz()
            .args(["run", t, corpus.to_str().unwrap(), "--"])
            .arg(format!("-max_total_time={seconds}"))
            .arg("-print_final_stats=1")
            .status()
            .with_context(|| format!("cargo fuzz run {t}"))?;
        results.push((t.clone(), st.success(), start.elapsed().as_secs()));
    }
    println!("fuzz results ({seconds} s per target):");
    for (t, ok, secs) in &results {
        println!(
            "  {t:20} {} ({secs} s with the build)",
            if *ok { "no crash" } else { "CRASHED (see fuzz/artifacts)" }
        );
    }
    ensure!(results.iter().all(|r| r.1), "a fuzz target crashed");
    Ok(())
}
