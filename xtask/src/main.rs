//! Project tasks: `cargo xtask build-ebpf | run | test | test-kernels | bench | fuzz`.
//!
//! `build-ebpf` makes sure bpf-linker exists and matches rustc's LLVM major (installing it on
//! Debian/Ubuntu as root, or printing the exact commands), then builds `collector-ebpf` for
//! `bpfel-unknown-none` with BTF. The collector embeds the object it produces.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail, ensure};
use clap::{Parser, Subcommand};

mod bench;
mod fuzz;
mod kernels;
mod stack;

/// bpf-linker release known to work with the pinned toolchain.
const BPF_LINKER_VERSION: &str = "0.13.0";

#[derive(Parser)]
#[command(about = "Build, run and test the collector")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the eBPF programs (installs bpf-linker when missing or built for another LLVM).
    BuildEbpf,
    /// Build everything (release) and run the collector; arguments after `--` go to it.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the benchmarks side by side on this machine and regenerate docs/performance.md.
    Bench(bench::Args),
    /// The bench's realistic load (server or fixed-rate client), run by `bench` as processes.
    #[command(hide = true)]
    BenchLoad(bench::load::LoadArgs),
    /// Run every cargo-fuzz target (fuzz/) for the given time each; fails on a crash.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 600)]
        seconds: u64,
        /// Only these targets (default: all).
        targets: Vec<String>,
    },
    /// Run the kernel-facing tests on Debian's 5.10, 6.1 and 6.12 kernels under QEMU.
    TestKernels(kernels::Args),
    /// Build everything and run the whole test suite (needs root: the tests load programs).
    Test {
        /// Extra arguments for `cargo test` (after `--`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::BuildEbpf => build_ebpf(),
        Cmd::Run { args } => run(&args),
        Cmd::Test { args } => test(&args),
        Cmd::Bench(args) => bench::bench(args),
        Cmd::BenchLoad(args) => bench::load::load_main(args),
        Cmd::Fuzz { seconds, targets } => fuzz::fuzz(seconds, &targets),
        Cmd::TestKernels(args) => kernels::test_kernels(args),
    }
}

pub(crate) fn root_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

pub(crate) fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

pub(crate) fn status(cmd: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{cmd:?}");
    let st = cmd.status().with_context(|| format!("starting {shown}"))?;
    ensure!(st.success(), "{shown} failed ({st})");
    Ok(())
}

fn output(cmd: &mut Command) -> Option<String> {
    cmd.output().ok().filter(|o| o.status.success()).map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
}

pub(crate) fn is_root() -> bool {
    output(Command::new("id").arg("-u")).is_some_and(|s| s.trim() == "0")
}

/// LLVM major version of the active rustc.
fn rustc_llvm_major() -> anyhow::Result<u32> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let v = output(Command::new(&rustc).arg("-vV")).with_context(|| format!("running {rustc} -vV"))?;
    let line = v.lines().find_map(|l| l.strip_prefix("LLVM version:")).context("rustc -vV shows no LLVM version")?;
    line.trim().split('.').next().unwrap_or("").parse().context("parsing rustc's LLVM version")
}

/// The LLVM feature bpf-linker was installed with, from cargo's install record; `None` when
/// bpf-linker is not installed. `Some(None)` when it is but the record says nothing.
fn bpf_linker_llvm() -> Option<Option<u32>> {
    output(Command::new("bpf-linker").arg("--version"))?;
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    let text = std::fs::read_to_string(cargo_home.join(".crates2.json")).ok();
    let json: Option<serde_json::Value> = text.and_then(|t| serde_json::from_str(&t).ok());
    let major = json.and_then(|j| {
        let installs = j.get("installs")?.as_object()?;
        let (_, v) = installs.iter().find(|(k, _)| k.starts_with("bpf-linker "))?;
        v.get("features")?.as_array()?.iter().filter_map(|f| f.as_str()?.strip_prefix("llvm-")?.parse().ok()).next()
    });
    Some(major)
}

fn install_commands(major: u32) -> String {
    format!(
        "  apt-get update && apt-get install -y llvm-{major}-dev libclang-{major}-dev zlib1g-dev libzstd-dev\n  \
         PATH=/usr/lib/llvm-{major}/bin:$PATH cargo install bpf-linker --version {BPF_LINKER_VERSION} --force \
         --no-default-features --features llvm-{major}"
    )
}

/// Installs bpf-linker for LLVM `major`, or fails with the commands a user must run.
fn install_bpf_linker(major: u32, why: &str) -> anyhow::Result<()> {
    let apt = Path::new("/usr/bin/apt-get").exists();
    if !(apt && is_root()) {
        bail!(
            "bpf-linker {why}; it must be built against LLVM {major} like rustc. \
             This needs root on Debian/Ubuntu; run:\n{}",
            install_commands(major)
        );
    }
    eprintln!("xtask: bpf-linker {why}: installing it for LLVM {major}");
    let pkgs =
        [format!("llvm-{major}-dev"), format!("libclang-{major}-dev"), "zlib1g-dev".into(), "libzstd-dev".into()];
    apt_install(&pkgs)?;
    let path = format!("/usr/lib/llvm-{major}/bin:{}", std::env::var("PATH").unwrap_or_default());
    status(
        cargo()
            .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION, "--force", "--no-default-features"])
            .args(["--features", &format!("llvm-{major}")])
            .env("PATH", path),
    )
    .with_context(|| format!("installing bpf-linker; to do it by hand:\n{}", install_commands(major)))
}

/// Installs Debian packages that are missing (runs `apt-get update` once if needed).
pub(crate) fn apt_install(pkgs: &[String]) -> anyhow::Result<()> {
    let missing: Vec<&String> = pkgs
        .iter()
        .filter(|p| {
            !output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p.as_str()]))
                .is_some_and(|s| s.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    ensure!(
        is_root() && Path::new("/usr/bin/apt-get").exists(),
        "missing packages {missing:?}: install them (apt-get install -y ...) as root"
    );
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        status(Command::new("apt-get").args(["update", "-q"]))?;
        ensure!(install(), "apt-get install {missing:?} failed");
    }
    Ok(())
}

pub(crate) fn build_ebpf() -> anyhow::Result<()> {
    let major = rustc_llvm_major()?;
    match bpf_linker_llvm() {
        None => install_bpf_linker(major, "is not installed")?,
        Some(Some(m)) if m != major => {
            install_bpf_linker(major, &format!("is built against LLVM {m}, rustc uses {major}"))?
        }
        Some(_) => {}
    }
    let dir = root_dir().join("collector-ebpf");
    let release = dir.join("target/bpfel-unknown-none/release");
    // Two objects from the same source (the daemon loads one by the running kernel's version):
    // `collector-5.12`, built with the feature `kernel-5-12` (global functions that take the
    // connection by pointer), then `collector`, what 5.10 loads. Cargo keeps both builds' artifacts, so the second build of an unchanged tree only
    // relinks.
    for (features, name) in [(Some("kernel-5-12"), "collector-5.12"), (None, "collector")] {
        // build-std on the pinned stable toolchain needs RUSTC_BOOTSTRAP, scoped to this build.
        let mut cmd = cargo();
        cmd.current_dir(&dir)
            .args(["build", "--release", "--target", "bpfel-unknown-none", "-Z", "build-std=core"])
            .env("RUSTC_BOOTSTRAP", "1")
            .env("RUSTFLAGS", "-C debuginfo=2 -C link-arg=--btf")
            .env_remove("RUSTC")
            .env_remove("RUSTC_WORKSPACE_WRAPPER");
        if let Some(f) = features {
            cmd.args(["--features", f]);
        }
        status(&mut cmd).map_err(|e| {
            e.context(format!(
                "building the eBPF programs; if the linker reports \"Invalid record\", bpf-linker and \
                 rustc use different LLVM versions: reinstall it with\n{}",
                install_commands(major)
            ))
        })?;
        let object = release.join(name);
        if name != "collector" {
            std::fs::copy(release.join("collector"), &object)
                .with_context(|| format!("copying the eBPF object to {}", object.display()))?;
        }
        stack::check(major, &object)?;
        strip_debug(major, &object)?;
    }
    Ok(())
}

/// Removes the DWARF sections from the eBPF object, which the collector embeds: bpf-linker
/// needs them to write BTF (`--btf`), the kernel needs only BTF (`.BTF`, `.BTF.ext`, kept, with
/// the line information `bpftool prog dump xlated linum` and `benches/bpf-line-profile.py`
/// show). Three quarters of the object (1.28 MB → 0.34 MB), and as much of the collector's
/// binary. `llvm-objcopy` comes with the LLVM bpf-linker is built against; without it the
/// object is embedded as it is.
fn strip_debug(major: u32, object: &Path) -> anyhow::Result<()> {
    let objcopy = [format!("/usr/lib/llvm-{major}/bin/llvm-objcopy"), "llvm-objcopy".into()]
        .into_iter()
        .find(|c| Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()));
    match objcopy {
        Some(c) => status(Command::new(c).arg("--strip-debug").arg(object)),
        None => {
            eprintln!("xtask: llvm-objcopy not found: the eBPF object keeps its DWARF sections");
            Ok(())
        }
    }
}

fn run(args: &[String]) -> anyhow::Result<()> {
    build_ebpf()?;
    status(cargo().current_dir(root_dir()).args(["build", "--release", "-p", "collector"]))?;
    if !is_root() {
        eprintln!(
            "xtask: warning: not running as root; the eBPF collectors need CAP_BPF, CAP_PERFMON and \
             CAP_NET_ADMIN. Run `sudo -E cargo xtask run`, or pass --no-collector.diskbpf --no-collector.netbpf --no-collector.http"
        );
    }
    let bin = root_dir().join("target/release/collector");
    status(Command::new(bin).args(args))
}

fn test(args: &[String]) -> anyhow::Result<()> {
    ensure!(
        is_root(),
        "the test suite loads eBPF programs and creates cgroups: run it as root (sudo -E cargo xtask test)"
    );
    build_ebpf()?;
    // promtool checks the exposition; nginx is a real server for the HTTP tests; prometheus and
    // docker-compose check the deployment stack (collector/tests/deploy*.rs); bpftool looks into
    // the kernel's maps for the fault tests; ethtool turns segmentation offloads off on the loss
    // tests' veth pairs; curl, openssl and golang-go are HTTPS clients, certificates and a Go
    // crypto/tls server and client for the TLS tests (Node.js comes with the machine); nghttpd
    // and h2load are an HTTP/2 server and load generator for the HTTP/2 tests; jsonnet makes the
    // rules and dashboards from deploy/collector-mixin, which the deploy test compares with deploy/.
    apt_install(&[
        "prometheus".to_owned(),
        "nginx".to_owned(),
        "curl".to_owned(),
        "openssl".to_owned(),
        "golang-go".to_owned(),
        "docker-compose".to_owned(),
        "python3-venv".to_owned(),
        "bpftool".to_owned(),
        "ethtool".to_owned(),
        "nghttp2-server".to_owned(),
        "nghttp2-client".to_owned(),
        "jsonnet".to_owned(),
    ])?;
    let deploy_tools = install_deploy_tools()?;
    let tls_libs = fetch_tls_libs()?;
    // Integration tests compare live kernel counters: one at a time, so they do not disturb
    // each other's traffic.
    let mut child = cargo()
        .current_dir(root_dir())
        .args(["test", "--workspace", "--no-fail-fast", "--", "--test-threads=1"])
        .args(args)
        .env("DEPLOY_TOOLS", &deploy_tools)
        .env("TLS_LIBS", &tls_libs)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting cargo test")?;
    // Pass the output through and total the per-binary results into one closing line.
    let (mut passed, mut failed) = (0u64, 0u64);
    for line in std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap())) {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            for part in rest.split(['.', ';']).map(str::trim) {
                let mut w = part.split_whitespace();
                match (w.next().and_then(|n| n.parse::<u64>().ok()), w.next()) {
                    (Some(n), Some("passed")) => passed += n,
                    (Some(n), Some("failed")) => failed += n,
                    _ => {}
                }
            }
        }
    }
    let st = child.wait()?;
    println!("tests: {passed} passed, {failed} failed");
    ensure!(st.success() && passed > 0, "cargo test failed ({st})");
    Ok(())
}

/// TLS libraries other than the system's OpenSSL 3 for the HTTPS tests (collector/tests/tls*.rs),
/// extracted from Debian's packages into target/tls-libs/NAME: OpenSSL 1.1 (Debian 11's
/// `libssl1.1`) and BoringSSL (`android-libboringssl`), each directory with its libssl and the
/// libcrypto it needs. Fetched once, through an apt of its own (the system's sources stay as
/// they are).
pub(crate) fn fetch_tls_libs() -> anyhow::Result<PathBuf> {
    let base = root_dir().join("target/tls-libs");
    // (directory, package, directory of the libraries in the package, files)
    let libs = [
        ("openssl-1.1", "libssl1.1", "usr/lib/x86_64-linux-gnu", ["libssl.so.1.1", "libcrypto.so.1.1"]),
        ("boringssl", "android-libboringssl", "usr/lib/x86_64-linux-gnu/android", ["libssl.so.0", "libcrypto.so.0"]),
    ];
    if libs.iter().all(|(name, _, _, files)| files.iter().all(|f| base.join(name).join(f).exists())) {
        return Ok(base);
    }
    let apt = base.join("apt");
    kernels::apt_update_at(&apt, &["bullseye", "bookworm"])?;
    for (name, package, from, files) in libs {
        let debs = base.join("debs").join(name);
        let _ = std::fs::remove_dir_all(&debs);
        std::fs::create_dir_all(&debs)?;
        status(kernels::apt_at(&apt, "apt-get").current_dir(&debs).args(["download", package]))?;
        let deb = std::fs::read_dir(&debs)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .with_context(|| format!("apt-get download {package} left no .deb"))?;
        let tree = debs.join("tree");
        status(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree))?;
        let dir = base.join(name);
        std::fs::create_dir_all(&dir)?;
        for f in files {
            std::fs::copy(tree.join(from).join(f), dir.join(f)).with_context(|| format!("{f} in {package}"))?;
        }
    }
    Ok(base)
}

/// Python tools of the tests, from PyPI into a venv under target/ (idempotent): offline
/// Kubernetes manifest validators for collector/tests/deploy.rs (kubernetes-validate bundles
/// the Kubernetes JSON schemas, the cloudcoil models hold the Prometheus Operator's:
/// PodMonitor, ServiceMonitor), grpcio, a real gRPC server and client, and h2, the HTTP/2
/// library of the h2c upgrade server, for collector/tests/http2.rs. Returns the venv.
fn install_deploy_tools() -> anyhow::Result<PathBuf> {
    const PACKAGES: &[&str] = &[
        "kubernetes-validate==1.37.0",
        "cloudcoil.models.prometheus_operator==0.80.1.0",
        "grpcio==1.85.3",
        "h2==4.4.1",
    ];
    let venv = root_dir().join("target/deploy-tools");
    let python = venv.join("bin/python");
    let stamp = venv.join("installed.txt");
    let want = PACKAGES.join("\n");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == want) && python.exists() {
        return Ok(venv);
    }
    if !python.exists() {
        status(Command::new("/usr/bin/python3").arg("-m").arg("venv").arg(&venv))?;
    }
    status(Command::new(venv.join("bin/pip")).args(["install", "-q", "--disable-pip-version-check"]).args(PACKAGES))?;
    std::fs::write(&stamp, want)?;
    Ok(venv)
}
