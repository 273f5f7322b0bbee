//! Embeds the eBPF objects built by `cargo xtask build-ebpf` and records build information.
use std::{path::PathBuf, process::Command};

fn main() -> anyhow::Result<()> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    // The two objects `cargo xtask build-ebpf` builds (collector/src/bpf.rs loads one by the
    // kernel's version); each can be replaced by another build's (side-by-side benchmarks).
    for (var, name) in [("COLLECTOR_EBPF_OBJECT", "collector"), ("COLLECTOR_EBPF_OBJECT_5_12", "collector-5.12")] {
        let object = match std::env::var_os(var) {
            Some(p) => PathBuf::from(p),
            None => manifest.join("../collector-ebpf/target/bpfel-unknown-none/release").join(name),
        };
        println!("cargo:rerun-if-env-changed={var}");
        println!("cargo:rerun-if-changed={}", object.display());
        if !object.exists() {
            anyhow::bail!(
                "eBPF object not found at {}: build it first with `cargo xtask build-ebpf` \
                 (or build everything with `cargo xtask run` / `cargo xtask test`)",
                object.display()
            );
        }
        println!("cargo:rustc-env={var}={}", object.canonicalize()?.display());
    }

    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(&manifest)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let revision = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=COLLECTOR_GIT_REVISION={revision}");
    if let Some(head) = git(&["rev-parse", "--git-path", "HEAD"]) {
        println!("cargo:rerun-if-changed={}", manifest.join(head).display());
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let version = version.split_whitespace().nth(1).unwrap_or("unknown").to_owned();
    println!("cargo:rustc-env=COLLECTOR_RUSTC_VERSION={version}");
    Ok(())
}
