//! `cargo xtask test-kernels`: the kernel-facing tests on the kernels users run. Each Debian
//! release's newest kernel package (bullseye 5.10, bookworm 6.1, trixie 6.12) is fetched through
//! apt with a sources list of its own (nothing of the host's apt configuration changes),
//! extracted, and booted under QEMU with a small initramfs (busybox and the modules the tests
//! need); the guest mounts this machine's root read-only over 9p, so it runs the very test
//! binaries `cargo test` built here, with real servers and clients (nginx, curl, python) on the
//! guest's kernel. KVM is used when it boots, else software emulation (TCG).
//!
//! Per kernel the guest first starts the collector, makes a few real HTTP requests and keeps
//! the exposition and the start-up summary (programs attached, collectors skipped, counts),
//! then runs the integration test binaries; the host prints one table and fails when a program
//! did not attach, a collector was skipped or a test failed, with the guest's logs.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};

use crate::{apt_install, build_ebpf, cargo, fetch_tls_libs, root_dir, status};

/// The kernels of the matrix: label, Debian release.
const KERNELS: [(&str, &str); 3] = [("5.10", "bullseye"), ("6.1", "bookworm"), ("6.12", "trixie")];

/// Modules the guest loads (with what they depend on): 9p for the shared root, a virtio disk
/// with ext4 for the tests that need a block device, veth and tc for the network tests.
/// ext4 looks its checksum up at mount time (crc32c), by name: loaded here, as modprobe would.
const MODULES: [&str; 11] = [
    "virtio_pci",
    "9pnet_virtio",
    "9p",
    "virtio_blk",
    "crc32c_generic",
    "ext4",
    "veth",
    "sch_ingress",
    "cls_bpf",
    "sch_tbf",
    "overlay",
];

/// Test binaries run in the guest, with what each skips there.
const TESTS: [(&str, &[&str]); 14] = [
    // On the host kernel only: the timing comparison (software emulation distorts it), and
    // message framing variants that the pure framer's host tests cover and that exercise
    // nothing of the kernel the other tests here do not (each test starts a collector, about
    // 20 s under emulation; the matrix is kept well inside CI's time).
    (
        "http",
        &[
            "durations_agree_with_client_measurements",
            "a_first_request_with_an_unknown_method_counts_on_both_sides",
            "http10_head_204_304_and_interim_responses",
            "garbage_tls_and_http2_make_no_series",
            "python_http_server",
            "connection_close_and_many_short_connections",
        ],
    ),
    // Loss and reordering at every 20th segment: the 0.5% and duplicate variants and the
    // timing comparison run on the host kernel (emulation makes them long, or distorts them).
    (
        "loss",
        &[
            "drop_every_200th_segment",
            "swap_every_200th_segment",
            "duplicate_every_200th_segment",
            "duplicate_every_20th_segment",
            "durations_under_loss",
        ],
    ),
    ("identity", &[]),
    // HTTPS: what depends on the kernel (the programs verify and run, uprobes in a shared
    // library, in a static binary and on Go's return instructions, the receive tracepoint,
    // discovery of a process started later); on the host kernel only: what depends on the
    // library or the server rather than the kernel (OpenSSL 1.1 and BoringSSL, nginx, payloads,
    // the flag, non-HTTP TLS), the timing comparisons (tls_timing, not in the matrix), what the
    // daemon does with exited processes' entries and with files (probes that stay, files
    // deleted, replaced and evicted, first opens timed, the exit with many files), and the mount
    // namespace test (the guest runs the tests chrooted, and a process in a mount namespace of
    // its own then shows its files in /proc/<pid>/maps by paths that are not under the chroot:
    // a test artefact, as containers pivot their root). Each test starts a collector, which
    // takes about 20 s under emulation.
    (
        "tls",
        &[
            "a_server_in_its_own_mount_namespace",
            "openssl_1_1_and_boringssl_through_their_libssl",
            "nginx_and_curl_over_tls",
            "https_payloads_never_reach_the_metrics",
            "no_tls_flag_turns_the_capture_off",
            "tls_that_is_not_http_makes_no_series",
            "an_exited_process_leaves_no_entries",
        ],
    ),
    (
        "tls_files",
        &[
            "short_lived_clients_are_counted_from_their_first_request",
            "attached_files_leave_when_deleted_replaced_or_evicted",
            "first_opens_of_libraries_never_seen_are_attached_within_two_scans",
            "sigterm_with_many_attached_files_exits_promptly",
        ],
    ),
    // HTTP/2: the programs verify and follow frames from segments (h2load, 100 streams per
    // connection), from TLS plaintext (the host's libssl) and after an h2c upgrade (the switch
    // from the HTTP/1 framer); on the host kernel only: what the daemon does with the frames
    // the same way on every kernel (curl, gRPC calls, header values dropped, the method label's
    // flag) and the peers whose uprobes the tls binary already runs in the matrix (Node.js, Go,
    // nginx). Traffic that is not HTTP/2 adding nothing is the kernel's detection, and the loss
    // harness the HTTP/2 framer on the reorder stash in the kernel: in the matrix.
    (
        "http2",
        &[
            "curl_prior_knowledge_methods_bodies_and_durations",
            "grpc_calls_every_kind_and_status_on_both_sides",
            "http2_header_values_never_reach_the_metrics_or_the_log",
            "the_grpc_method_label_can_be_turned_off",
            "node_http2_server_and_client_tls_and_cleartext",
            "go_net_http_h2_over_tls",
            "nginx_http2_over_tls",
        ],
    ),
    // Connections joined from their middle (segments and TLS calls: kernel-facing); small HPACK
    // tables are the daemon's decoding, on the host kernel only.
    ("http2_tables", &["hpack_table_size_updates_and_evictions"]),
    // A request before its socket exists (a full accept queue, TCP Fast Open): the listening
    // socket's path through the hooks, kernel-facing.
    ("overload", &[]),
    ("network", &[]),
    ("disk", &[]),
    // Filesystems, file handles, conntrack and the clock: procfs, statvfs and adjtimex, the same
    // on every kernel (host kernel only; the guest has no loop devices or mkfs).
    ("host", &["filesystem_file_handles_conntrack_and_clock"]),
    ("security", &[]),
    // Faults of procfs files and of label values: the daemon's side, the same on every kernel
    // (host kernel only; so are the metrics endpoint's tests, endpoint.rs).
    (
        "faults",
        &[
            "corrupt_procfs_files_fail_only_their_collector",
            "a_flood_of_methods_and_status_codes_stays_bounded_and_counted",
        ],
    ),
    (
        "degrade",
        &[
            "broken_procfs_fails_those_collectors_and_keeps_serving",
            "missing_pressure_files_skip_the_pressure_collector",
        ],
    ),
];

#[derive(clap::Args)]
pub struct Args {
    /// Kernels to test (labels: 5.10, 6.1, 6.12).
    #[arg(long, value_delimiter = ',', default_values_t = KERNELS.iter().map(|k| k.0.to_owned()).collect::<Vec<_>>())]
    kernels: Vec<String>,
    /// Test binaries to run in the guest (default: all of the matrix).
    #[arg(long, value_delimiter = ',')]
    tests: Vec<String>,
    /// `kvm`, `tcg`, or `auto` (KVM when a guest boots with it, else TCG).
    #[arg(long, default_value = "auto")]
    accel: String,
    /// Minutes a guest may run.
    #[arg(long, default_value_t = 45)]
    timeout_min: u64,
    /// Guests run side by side (default: one per CPU of this machine, as many as its available
    /// memory holds at 3.5 GiB each, at most one per kernel).
    /// Each guest has one virtual CPU, so on a 2-CPU machine two guests take about the time of
    /// one; more guests than CPUs only slow each other.
    #[arg(long)]
    jobs: Option<usize>,
}

fn dir() -> PathBuf {
    root_dir().join("target/kernels")
}

/// apt with a sources list, state and cache of its own under target/kernels/apt.
fn apt(program: &str) -> Command {
    apt_at(&dir().join("apt"), program)
}

/// apt with a sources list, state and cache of its own under `base` (see `apt_update_at`).
pub(crate) fn apt_at(base: &Path, program: &str) -> Command {
    let mut c = Command::new(program);
    c.arg("-o").arg(format!("Dir::Etc::sourcelist={}", base.join("sources.list").display()));
    c.args(["-o", "Dir::Etc::sourceparts=-"]);
    c.arg("-o").arg(format!("Dir::State::Lists={}", base.join("lists").display()));
    c.arg("-o").arg(format!("Dir::Cache={}", base.join("cache").display()));
    c.args(["-o", "Debug::NoLocking=1", "-o", "APT::Sandbox::User=root", "-q"]);
    c
}

fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("starting {shown}"))?;
    ensure!(out.status.success(), "{shown} failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The package lists of every release of the matrix (with its security suite).
fn apt_update(releases: &[&str]) -> anyhow::Result<()> {
    apt_update_at(&dir().join("apt"), releases)
}

/// The package lists of Debian `releases` (with their security suites) for `apt_at(base, ..)`.
pub(crate) fn apt_update_at(base: &Path, releases: &[&str]) -> anyhow::Result<()> {
    for d in ["lists/partial", "cache/archives/partial"] {
        std::fs::create_dir_all(base.join(d))?;
    }
    let keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
    ensure!(Path::new(keyring).exists(), "{keyring} is missing (package debian-archive-keyring)");
    let mut list = String::new();
    for r in releases {
        writeln!(list, "deb [signed-by={keyring}] http://deb.debian.org/debian {r} main")?;
        writeln!(list, "deb [signed-by={keyring}] http://deb.debian.org/debian-security {r}-security main")?;
    }
    std::fs::write(base.join("sources.list"), list)?;
    status(apt_at(base, "apt-get").arg("update"))
}

/// The newest `linux-image-amd64` of a release (security updates included): (image package,
/// version).
fn newest_image(release: &str) -> anyhow::Result<(String, String)> {
    let madison = output(apt("apt-cache").args(["madison", "linux-image-amd64"]))?;
    let mut versions: Vec<String> = madison
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('|').map(str::trim).collect();
            let suite = f.get(2)?.split_whitespace().nth(1)?.split('/').next()?;
            (suite == release || suite == format!("{release}-security")).then(|| f[1].to_owned())
        })
        .collect();
    ensure!(!versions.is_empty(), "no linux-image-amd64 for {release} in the package lists");
    versions.sort_by(|a, b| {
        let newer = Command::new("dpkg").args(["--compare-versions", a, "gt", b]).status().is_ok_and(|s| s.success());
        if newer { std::cmp::Ordering::Greater } else { std::cmp::Ordering::Less }
    });
    let version = versions.pop().unwrap();
    let show = output(apt("apt-cache").args(["show", &format!("linux-image-amd64={version}")]))?;
    let depends = show.lines().find_map(|l| l.strip_prefix("Depends:")).context("linux-image-amd64 has no Depends")?;
    let image = depends
        .split(',')
        .map(|d| d.split_whitespace().next().unwrap_or(""))
        .find(|d| d.starts_with("linux-image-") && d.ends_with("-amd64"))
        .context("no linux-image package among the dependencies")?
        .to_owned();
    Ok((image, version))
}

/// A kernel package extracted: its root, the kernel image and the modules directory.
struct Kernel {
    label: String,
    package: String,
    version: String,
    vmlinuz: PathBuf,
    modules: PathBuf,
}

fn fetch(label: &str, release: &str) -> anyhow::Result<Kernel> {
    let (package, version) = newest_image(release)?;
    let root = dir().join(format!("{package}_{version}"));
    if !root.join(".extracted").exists() {
        let debs = dir().join("debs");
        std::fs::create_dir_all(&debs)?;
        eprintln!("test-kernels: downloading {package} {version} ({release})");
        status(apt("apt-get").current_dir(&debs).args(["download", &format!("{package}={version}")]))?;
        let deb = std::fs::read_dir(&debs)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&format!("{package}_"))))
            .context("the downloaded package is missing")?;
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root)?;
        status(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
        std::fs::remove_file(&deb)?;
        std::fs::write(root.join(".extracted"), "")?;
    }
    let find = |parent: &Path, prefix: &str| -> Option<PathBuf> {
        std::fs::read_dir(parent)
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(prefix)))
    };
    let vmlinuz = find(&root.join("boot"), "vmlinuz-").context("no boot/vmlinuz-* in the package")?;
    let modules = ["lib/modules", "usr/lib/modules"]
        .iter()
        .find_map(|m| find(&root.join(m), ""))
        .context("no lib/modules/<version> in the package")?;
    Ok(Kernel { label: label.to_owned(), package, version, vmlinuz, modules })
}

/// The bytes of a module file, decompressed (Debian compresses them with xz from 6.x).
fn module_bytes(path: &Path) -> anyhow::Result<Vec<u8>> {
    let name = path.to_string_lossy();
    if name.ends_with(".xz") || name.ends_with(".zst") {
        let tool = if name.ends_with(".xz") { "xz" } else { "zstd" };
        let out = Command::new(tool).arg("-dc").arg(path).output().with_context(|| format!("{tool} -dc"))?;
        ensure!(out.status.success(), "{tool} -dc {name} failed");
        return Ok(out.stdout);
    }
    Ok(std::fs::read(path)?)
}

/// The module files of `want` and everything they depend on, dependencies first. Dependencies
/// come from each module's `depends=` field (no modules.dep: the package ships none).
fn module_closure(modules: &Path, want: &[&str]) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut index: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut stack = vec![modules.join("kernel")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)?.filter_map(Result::ok) {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(n) = p.file_name().map(|n| n.to_string_lossy().into_owned())
                && let Some(stem) = n.split(".ko").next().filter(|_| n.contains(".ko"))
            {
                index.insert(stem.replace('-', "_"), p);
            }
        }
    }
    let mut order = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    fn visit(
        name: &str,
        index: &BTreeMap<String, PathBuf>,
        seen: &mut std::collections::BTreeSet<String>,
        order: &mut Vec<(String, Vec<u8>)>,
    ) -> anyhow::Result<()> {
        let key = name.replace('-', "_");
        if !seen.insert(key.clone()) {
            return Ok(());
        }
        // Not a module file: built into this kernel.
        let Some(path) = index.get(&key) else { return Ok(()) };
        let bytes = module_bytes(path)?;
        let info = bytes.split(|b| *b == 0).find_map(|f| f.strip_prefix(b"depends=")).unwrap_or(b"");
        for dep in String::from_utf8_lossy(info).split(',').filter(|d| !d.is_empty()) {
            visit(dep, index, seen, order)?;
        }
        order.push((format!("{key}.ko"), bytes));
        Ok(())
    }
    for m in want {
        visit(m, &index, &mut seen, &mut order)?;
    }
    Ok(order)
}

/// The guest's /init: mounts the host's root (read-only, 9p) and the results share, gives the
/// tests writable directories (tmpfs, and an ext4 virtio disk where they need a block device),
/// runs the guest script from the kernel command line in a chroot, and powers off.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /modules.order); do insmod /lib/modules/$m || echo "guest: insmod $m failed"; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /host || { echo "guest: no 9p root"; poweroff -f; }
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 results /host/mnt || echo "guest: no results share"
mount -t proc proc /host/proc; mount -t sysfs sys /host/sys; mount -t devtmpfs dev /host/dev
mkdir -p /host/dev/pts; mount -t devpts devpts /host/dev/pts
for d in /tmp /run /var/log /var/lib/nginx /root; do mount -t tmpfs tmpfs /host$d; done
script=$(sed -n 's/.*guest=\([^ ]*\).*/\1/p' /proc/cmdline)
chroot /host /bin/sh -c "$script; echo guest-exit=\$?" 2>&1
sync; poweroff -f
"#;

fn initramfs(k: &Kernel, out: &Path) -> anyhow::Result<()> {
    let work = out.with_extension("d");
    let _ = std::fs::remove_dir_all(&work);
    for d in ["bin", "lib/modules", "proc", "sys", "dev", "host"] {
        std::fs::create_dir_all(work.join(d))?;
    }
    std::fs::copy("/bin/busybox", work.join("bin/busybox")).context("copying /bin/busybox (busybox-static)")?;
    let mut order = String::new();
    for (name, bytes) in module_closure(&k.modules, &MODULES)? {
        std::fs::write(work.join("lib/modules").join(&name), bytes)?;
        order.push_str(&name);
        order.push('\n');
    }
    std::fs::write(work.join("modules.order"), order)?;
    std::fs::write(work.join("init"), INIT)?;
    std::fs::set_permissions(work.join("init"), std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    // busybox cpio writes the newc archive the kernel unpacks (no cpio package needed).
    let list = output(Command::new("find").arg(".").current_dir(&work))?;
    let mut child = Command::new("/bin/busybox")
        .args(["cpio", "-o", "-H", "newc"])
        .current_dir(&work)
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(out)?)
        .stderr(Stdio::null())
        .spawn()
        .context("busybox cpio")?;
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), list.as_bytes())?;
    drop(child.stdin.take());
    ensure!(child.wait()?.success(), "busybox cpio failed");
    std::fs::remove_dir_all(&work)?;
    Ok(())
}

/// Guests side by side by default: one per CPU, as many as the available memory holds (each
/// has 3 GiB; counted as 3.5 with QEMU's own).
fn default_jobs() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let available_kib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines().find_map(|l| l.strip_prefix("MemAvailable:")?.split_whitespace().next()?.parse::<u64>().ok())
    });
    let by_memory = available_kib.map_or(1, |kib| (kib / (3584 * 1024)) as usize);
    cpus.min(by_memory).max(1)
}

/// Boots `kernel` with `initrd`, running `script` in the guest with `results` shared; returns
/// the console output, which it also keeps there (`console.log`, with QEMU's own messages in
/// `qemu-stderr.log`) however the guest ended.
fn boot(
    k: &Kernel,
    initrd: &Path,
    script: &Path,
    results: &Path,
    accel: &str,
    timeout: Duration,
) -> anyhow::Result<String> {
    let disk = results.join("disk.img");
    std::fs::File::create(&disk)?.set_len(1 << 30)?;
    let mut cmd = Command::new("qemu-system-x86_64");
    // One vCPU: with two, the host deschedules a vCPU thread for milliseconds while its CPU
    // holds a connection's claim, the other CPU's program gives up waiting (http_busy) and an
    // exchange is lost (seen in 2 of 12 guest runs). Cross-CPU claims are tested on the host.
    cmd.args(["-accel", accel, "-m", "3072", "-smp", "1", "-nographic", "-no-reboot"]);
    if accel == "kvm" {
        cmd.args(["-cpu", "host"]);
    }
    cmd.arg("-kernel").arg(&k.vmlinuz).arg("-initrd").arg(initrd);
    cmd.arg("-append").arg(format!("console=ttyS0 panic=-1 quiet guest={}", script.display()));
    cmd.arg("-drive").arg(format!("file={},format=raw,if=virtio", disk.display()));
    cmd.args(["-fsdev", "local,id=root,path=/,security_model=none,readonly=on,multidevs=remap"]);
    cmd.args(["-device", "virtio-9p-pci,fsdev=root,mount_tag=hostroot"]);
    cmd.arg("-fsdev").arg(format!("local,id=res,path={},security_model=none,multidevs=remap", results.display()));
    cmd.args(["-device", "virtio-9p-pci,fsdev=res,mount_tag=results"]);
    // QEMU's own messages to a file (a pipe nobody read could fill and stall the guest).
    let (stderr_log, console_log) = (results.join("qemu-stderr.log"), results.join("console.log"));
    let stderr = std::fs::File::create(&stderr_log)?;
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(stderr).spawn().context("qemu")?;
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut { stdout }, &mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            let console = reader.join().unwrap_or_default();
            let _ = std::fs::write(&console_log, &console);
            bail!("the {} guest ran longer than {timeout:?}; console:\n{}", k.label, tail(&console, 60));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = std::fs::remove_file(&disk);
    let console = reader.join().unwrap_or_default();
    let _ = std::fs::write(&console_log, &console);
    if !status.success() {
        let qemu = std::fs::read_to_string(&stderr_log).unwrap_or_default();
        bail!(
            "qemu for the {} guest exited with {status}; its messages:\n{}\nconsole:\n{}",
            k.label,
            tail(&qemu, 20),
            tail(&console, 30)
        );
    }
    Ok(console)
}

fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// KVM when /dev/kvm exists and a guest boots with it within a short time, else TCG.
fn pick_accel(want: &str, k: &Kernel, initrd: &Path, results: &Path) -> anyhow::Result<String> {
    if want != "auto" {
        return Ok(want.to_owned());
    }
    if !Path::new("/dev/kvm").exists() {
        return Ok("tcg".into());
    }
    let script = results.join("probe.sh");
    std::fs::write(&script, "#!/bin/sh\necho kvm-works\n")?;
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let ok = boot(k, initrd, &script, results, "kvm", Duration::from_secs(30)).is_ok_and(|c| c.contains("kvm-works"));
    let _ = std::fs::remove_file(&script);
    eprintln!("test-kernels: KVM {}", if ok { "works: using it" } else { "does not boot a guest here: using TCG" });
    Ok(if ok { "kvm" } else { "tcg" }.into())
}

/// The test binaries `cargo test` builds for the collector: name → path.
fn test_binaries() -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let out = output(cargo().current_dir(root_dir()).args([
        "test",
        "-p",
        "collector",
        "--tests",
        "--no-run",
        "--message-format=json",
    ]))?;
    let mut bins = BTreeMap::new();
    for line in out.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if v["reason"] == "compiler-artifact"
            && let Some(exe) = v["executable"].as_str()
            && v["target"]["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "test"))
        {
            bins.insert(v["target"]["name"].as_str().unwrap_or("").to_owned(), PathBuf::from(exe));
        }
    }
    Ok(bins)
}

/// The script the guest runs (in the chroot of the host's root): kernel facilities the tests
/// use, the collector's start-up report, then the test binaries; everything is written to the
/// results share (/mnt in the guest).
fn guest_script(bins: &[(String, PathBuf, Vec<String>)]) -> String {
    let collector = root_dir().join("target/debug/collector");
    let target_tmp = root_dir().join("target/tmp");
    let mut s = format!(
        r#"#!/bin/sh
exec > /mnt/guest.log 2>&1
echo "kernel $(uname -r)"
mount -t cgroup2 none /sys/fs/cgroup
mount -t tracefs none /sys/kernel/tracing
mount -t debugfs none /sys/kernel/debug
mount -t bpf none /sys/fs/bpf
ip link set lo up
ulimit -Hn 65536; ulimit -n 65536
export HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# The verifier runs tens of times slower under emulation, more so while a test loads the guest.
export COLLECTOR_TEST_START_SECS=300
# A real block device (virtio, ext4) where the tests write with O_DIRECT.
mkfs.ext4 -q -F /dev/vda && mkdir -p /run/disk && mount /dev/vda /run/disk
mkdir -p /run/disk/var-tmp /run/disk/target-tmp && mount --bind /run/disk/var-tmp /var/tmp
# The Go test program the host's TLS tests built (mtime kept, so the tests find it current):
# building it under emulation takes minutes.
cp -p {target_tmp}/tls_go /run/disk/target-tmp/ 2>/dev/null || true
mount --bind /run/disk/target-tmp {target_tmp}
# The report: the collector's start-up summary and an exposition after real requests.
# Debug level: each program's load time and verified instructions. The wait allows for the
# verifier under software emulation. Debian's kernels build connection tracking as a module,
# which nothing loads in the guest: the conntrack collector would be skipped (the report counts
# any skip as a failure); it reads procfs only, tested on the host.
t0=$(date +%s)
{collector} --web.listen-address 127.0.0.1:9899 --log.format json --log.level debug --no-collector.conntrack > /mnt/report-log.json 2>&1 &
pid=$!
mkdir -p /tmp/www && echo hello > /tmp/www/index.html
python3 -m http.server 9898 --bind 127.0.0.1 --directory /tmp/www > /dev/null 2>&1 &
web=$!
for i in $(seq 900); do curl -s -o /dev/null 127.0.0.1:9899/metrics && break; sleep 1; done
echo "collector-ready $(( $(date +%s) - t0 ))" >> /mnt/tests.txt
for i in $(seq 30); do curl -s -o /dev/null 127.0.0.1:9898/ && break; sleep 1; done
for i in $(seq 10); do curl -s -o /dev/null 127.0.0.1:9898/index.html; curl -s -o /dev/null 127.0.0.1:9898/missing; done
sleep 1
curl -s 127.0.0.1:9899/metrics > /mnt/report-metrics.txt
kill $web $pid; wait
cd {crate}
"#,
        collector = collector.display(),
        target_tmp = target_tmp.display(),
        crate = root_dir().join("collector").display(),
    );
    for (name, path, skip) in bins {
        let skips: String = skip.iter().map(|t| format!(" --skip {t}")).collect();
        let _ = writeln!(
            s,
            "start=$(date +%s); {} --test-threads=1{skips} > /mnt/test-{name}.log 2>&1; \
             echo \"{name} $? $(( $(date +%s) - start ))\" >> /mnt/tests.txt",
            path.display()
        );
    }
    s
}

/// One kernel's outcome.
struct Outcome {
    kernel: String,
    programs: Vec<(String, bool)>,
    skipped: Vec<String>,
    counts: (f64, f64),
    /// Seconds from starting the collector to its first exposition (the verifier's time).
    ready: Option<u64>,
    tests: Vec<(String, u64, u64, u64)>,
    failures: Vec<String>,
}

fn parse_results(label: &str, results: &Path, k: &Kernel) -> Outcome {
    let mut o = Outcome {
        kernel: format!("{label} ({} {})", k.package, k.version),
        programs: Vec::new(),
        skipped: Vec::new(),
        counts: (0.0, 0.0),
        ready: None,
        tests: Vec::new(),
        failures: Vec::new(),
    };
    let metrics = std::fs::read_to_string(results.join("report-metrics.txt")).unwrap_or_default();
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let value: f64 = value.parse().unwrap_or(0.0);
        let label_of = |key: &str| {
            series.split(&format!("{key}=\"")).nth(1).and_then(|r| r.split('"').next()).unwrap_or("").to_owned()
        };
        if series.starts_with("collector_bpf_program_attached{") {
            o.programs.push((label_of("program"), value == 1.0));
        } else if series.starts_with("collector_collector_skipped_info{") {
            o.skipped.push(format!("{}: {}", label_of("collector"), label_of("reason")));
        } else if series.starts_with("http_server_request_duration_seconds_count{") && series.contains("\"9898\"") {
            o.counts.0 += value;
        } else if series.starts_with("http_client_request_duration_seconds_count{") && series.contains("\"9898\"") {
            o.counts.1 += value;
        }
    }
    if o.programs.is_empty() {
        o.failures.push("no exposition from the collector in the guest (report-log.json)".into());
    }
    for (p, ok) in &o.programs {
        if !ok {
            o.failures.push(format!("program {p} did not attach"));
        }
    }
    for s in &o.skipped {
        o.failures.push(format!("collector skipped: {s}"));
    }
    // The readiness check, then 10 requests for a page and 10 for a missing one, seen by the
    // server and by curl.
    if o.counts != (21.0, 21.0) {
        o.failures.push(format!("report: {} server and {} client requests counted, 21 made", o.counts.0, o.counts.1));
    }
    let ran = std::fs::read_to_string(results.join("tests.txt")).unwrap_or_default();
    for line in ran.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let ["collector-ready", secs] = f[..] {
            o.ready = secs.parse().ok();
            continue;
        }
        if f.len() < 3 {
            continue;
        }
        let log = std::fs::read_to_string(results.join(format!("test-{}.log", f[0]))).unwrap_or_default();
        let (mut passed, mut failed) = (0, 0);
        for l in log.lines().filter_map(|l| l.strip_prefix("test result: ")) {
            for part in l.split(['.', ';']).map(str::trim) {
                let mut w = part.split_whitespace();
                match (w.next().and_then(|n| n.parse::<u64>().ok()), w.next()) {
                    (Some(n), Some("passed")) => passed += n,
                    (Some(n), Some("failed")) => failed += n,
                    _ => {}
                }
            }
        }
        o.tests.push((f[0].to_owned(), passed, failed, f[2].parse().unwrap_or(0)));
        if f[1] != "0" || failed > 0 || passed == 0 {
            o.failures.push(format!("test binary {} failed (exit {}):\n{}", f[0], f[1], tail(&log, 40)));
        }
    }
    o
}

pub fn test_kernels(args: Args) -> anyhow::Result<()> {
    ensure!(
        crate::is_root(),
        "test-kernels extracts kernel packages and runs tests as root in the guests: run it as root"
    );
    // The guest sees this machine's root read-only, with fresh tmpfs over /tmp, /run, /var/log,
    // /var/lib/nginx and /root (INIT): a checkout under one of them is not there for it.
    let root = root_dir();
    ensure!(
        !["/tmp", "/run", "/var/log", "/var/lib/nginx", "/root"].iter().any(|d| root.starts_with(d)),
        "test-kernels: the guests mount an empty tmpfs over /tmp, /run, /var/log, /var/lib/nginx and /root, \
         so they cannot see this checkout at {}: run it from a checkout elsewhere",
        root.display()
    );
    apt_install(&["qemu-system-x86".into(), "busybox-static".into(), "xz-utils".into(), "e2fsprogs".into()])?;
    // The binaries the guest runs: the collector and its integration tests, as `cargo xtask
    // test` builds them (the guest also needs what that installs: promtool, nginx).
    build_ebpf()?;
    apt_install(&[
        "prometheus".into(),
        "nginx".into(),
        "bpftool".into(),
        "curl".into(),
        "ethtool".into(),
        "nghttp2-server".into(),
        "nghttp2-client".into(),
    ])?;
    fetch_tls_libs()?;
    status(cargo().current_dir(root_dir()).args(["build", "-p", "collector"]))?;
    let all = test_binaries()?;
    let mut bins = Vec::new();
    for (name, skip) in TESTS {
        if !args.tests.is_empty() && !args.tests.iter().any(|t| t == name) {
            continue;
        }
        let path = all.get(name).with_context(|| format!("no test binary {name}"))?;
        bins.push((name.to_owned(), path.clone(), skip.iter().map(|s| s.to_string()).collect::<Vec<_>>()));
    }
    let chosen: Vec<(&str, &str)> = KERNELS.into_iter().filter(|(l, _)| args.kernels.iter().any(|k| k == l)).collect();
    ensure!(!chosen.is_empty(), "no kernel of the matrix selected (labels: 5.10, 6.1, 6.12)");
    apt_update(&chosen.iter().map(|k| k.1).collect::<Vec<_>>())?;
    std::fs::create_dir_all(root_dir().join("target/tmp"))?;
    let script = dir().join("guest.sh");
    std::fs::write(&script, guest_script(&bins))?;
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    // Fetch and prepare every kernel first (apt and the initramfs are quick, and share files),
    // then boot the guests, `jobs` at a time.
    let mut prepared = Vec::new();
    for (label, release) in &chosen {
        let k = fetch(label, release)?;
        let initrd = dir().join(format!("initrd-{label}.cpio"));
        initramfs(&k, &initrd)?;
        let results = dir().join(format!("results-{label}"));
        let _ = std::fs::remove_dir_all(&results);
        std::fs::create_dir_all(&results)?;
        prepared.push((k, initrd, results));
    }
    let accel = pick_accel(&args.accel, &prepared[0].0, &prepared[0].1, &prepared[0].2)?;
    let jobs = args.jobs.unwrap_or_else(default_jobs).clamp(1, prepared.len());
    let timeout = Duration::from_secs(args.timeout_min * 60);
    eprintln!("test-kernels: {} guest(s), {jobs} at a time ({accel})", prepared.len());
    // Newest kernel first: the newer kernels' guests ran longest (6.12 about 20% longer than
    // 5.10), so the last guest to start is a shorter one.
    let queue = std::sync::Mutex::new(prepared.into_iter().enumerate().rev().collect::<Vec<_>>().into_iter());
    let outcomes = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    let Some((i, (k, initrd, results))) = queue.lock().unwrap().next() else { break };
                    eprintln!("test-kernels: {}: booting {} ({accel})", k.label, k.package);
                    let start = Instant::now();
                    let booted = boot(&k, &initrd, &script, &results, &accel, timeout);
                    let mut o = parse_results(&k.label, &results, &k);
                    match booted {
                        Ok(console) if !console.contains("guest-exit=0") => o
                            .failures
                            .push(format!("the guest script did not finish; console:\n{}", tail(&console, 30))),
                        Err(e) => o.failures.push(format!("{e:#}")),
                        Ok(_) => {}
                    }
                    eprintln!(
                        "test-kernels: {}: {} s, {} failure(s)",
                        k.label,
                        start.elapsed().as_secs(),
                        o.failures.len()
                    );
                    outcomes.lock().unwrap().push((i, o));
                }
            });
        }
    });
    let mut outcomes = outcomes.into_inner().unwrap();
    outcomes.sort_by_key(|o| o.0);
    let outcomes: Vec<Outcome> = outcomes.into_iter().map(|o| o.1).collect();
    println!("\nkernel matrix ({accel}):");
    println!(
        "| kernel | programs attached | skipped | collector ready | HTTP report (server/client) | tests passed/failed |"
    );
    println!("|---|---|---|---|---|---|");
    for o in &outcomes {
        let attached = o.programs.iter().filter(|p| p.1).count();
        let tests: String =
            o.tests.iter().map(|t| format!("{} {}/{} ({} s)", t.0, t.1, t.2, t.3)).collect::<Vec<_>>().join(", ");
        println!(
            "| {} | {attached}/{} | {} | {} | {}/{} | {tests} |",
            o.kernel,
            o.programs.len(),
            if o.skipped.is_empty() { "none".to_owned() } else { o.skipped.join("; ") },
            o.ready.map_or("-".to_owned(), |s| format!("{s} s")),
            o.counts.0,
            o.counts.1
        );
    }
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| !o.failures.is_empty()).collect();
    for o in &failed {
        eprintln!("\n{}:\n{}", o.kernel, o.failures.join("\n"));
    }
    ensure!(failed.is_empty(), "the kernel matrix failed on {} kernel(s); logs in {}", failed.len(), dir().display());
    Ok(())
}
