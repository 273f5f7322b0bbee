//! Start-up: builds the registry from the enabled collectors (loading and attaching the eBPF
//! programs they need), then serves it until SIGTERM/SIGINT.
use std::sync::Arc;

use anyhow::Context as _;

use crate::{
    bpf::ProgramStatus,
    caps, cgroup,
    cli::{self, Cli},
    collectors, disk,
    metrics::Registry,
    server, webconfig,
};

/// Starts the collectors of the table ([`collectors::start`]) with the paths and flags given.
fn setup(cli: &Cli) -> anyhow::Result<collectors::Started> {
    let v2_root = cgroup::find_v2_root(&cli.cgroupfs);
    let ctx = collectors::Context {
        flags: &cli.collectors,
        identity: &cli.identity,
        procfs: &cli.procfs,
        rootfs: &cli.rootfs,
        tracefs_flag: cli.tracefs.as_deref(),
        tracefs: Default::default(),
        cgroup_ttl: cli.cgroup_ttl,
        devices: Arc::new(disk::Devices::new(&cli.sysfs)),
        cgroups: Arc::new(
            cgroup::Resolver::new(v2_root.clone().ok())
                .with_containers(crate::identity::Containers::new(cli.identity.clone())),
        ),
        v2_root,
    };
    collectors::start(&ctx)
}

fn summary(
    registry: &Registry,
    programs: &[ProgramStatus],
    listen: &std::net::SocketAddr,
    path: &str,
    opts: &server::Options,
    kept: &[String],
) {
    let running: Vec<&str> = registry.collectors.iter().map(|c| c.name()).collect();
    let skipped: Vec<String> = registry.skipped.iter().map(|s| format!("{} ({})", s.name, s.reason)).collect();
    let programs: Vec<String> = programs
        .iter()
        .map(|p| format!("{} -> {} [{}]", p.program, p.hook, if p.attached { "attached" } else { "failed" }))
        .collect();
    tracing::info!(
        listen = %listen,
        path,
        running = running.join(","),
        disabled = registry.disabled.join(","),
        skipped = skipped.join("; "),
        programs = programs.join("; "),
        tls = opts.web.tls.is_some(),
        basic_auth = opts.web.basic_auth.is_some(),
        capabilities = if kept.is_empty() { "none".to_owned() } else { kept.join(",") },
        "collector started"
    );
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let listen = cli::parse_listen_address(&cli.listen_address).map_err(anyhow::Error::msg)?;
    anyhow::ensure!(cli.telemetry_path.starts_with('/'), "--web.telemetry-path must start with /");
    anyhow::ensure!(
        !["/", "/-/healthy", "/-/ready"].contains(&cli.telemetry_path.as_str()),
        "--web.telemetry-path {} clashes with a built-in page",
        cli.telemetry_path
    );
    let keep = caps::parse_keep(&cli.capabilities_keep).map_err(|e| anyhow::anyhow!("--capabilities.keep: {e}"))?;
    let runas = cli.runas_user.as_deref().map(|u| runas_checked(u).map(|ids| (u, ids))).transpose()?;
    // Everything that can be wrong with the configuration fails before any program is loaded.
    let web = match &cli.web_config_file {
        Some(path) => webconfig::load(path).context("--web.config.file")?,
        None => webconfig::WebConfig::default(),
    };
    let opts = server::Options {
        telemetry_path: cli.telemetry_path.clone(),
        web,
        max_requests: cli.max_requests,
        header_read_timeout: cli.header_read_timeout,
        request_timeout: cli.request_timeout,
    };
    let collectors::Started { mut registry, loader, map_reads_need } = setup(&cli)?;
    // Bound while still privileged (a port below 1024 needs CAP_NET_BIND_SERVICE), after the
    // programs are attached: the endpoint's own socket is then named after this process too.
    let listener = bind(listen)?;
    let programs = loader.as_ref().map(|l| l.programs.clone()).unwrap_or_default();
    let mut keep = keep;
    let cgroup_programs =
        programs.iter().any(|p| p.attached && (p.hook.starts_with("cgroup_skb/") || p.hook.starts_with("sock_ops:")));
    let links = aya::util::KernelVersion::current().is_ok_and(|v| v >= aya::util::KernelVersion::new(5, 7, 0));
    if cgroup_programs && !links {
        // Without BPF links (before 5.7) cgroup programs stay attached until detached
        // explicitly, which needs CAP_NET_ADMIN at exit.
        keep.insert(::caps::Capability::CAP_NET_ADMIN);
    }
    let http_running = registry.collectors.iter().any(|c| c.name() == collectors::Name::Http.as_str());
    let environment = http_running && !cli.identity.no_environment;
    let tls = crate::tls::CAPTURE.get().cloned();
    // What the HTTPS capture needs: attaching uprobes to libraries found after start-up
    // (perf_event_open of a uprobe needs CAP_PERFMON, or CAP_SYS_ADMIN before 5.8 and on kernels
    // that still ask for it), and reading the memory maps and files of every process, root's
    // included (CAP_SYS_PTRACE for /proc/<pid>/maps and /proc/<pid>/root, CAP_DAC_READ_SEARCH
    // for files of other users). The helper holds them where it runs; this process otherwise.
    let mut tls_caps = ::caps::CapsHashSet::new();
    if let Some(capture) = &tls {
        use ::caps::Capability::{CAP_DAC_READ_SEARCH, CAP_PERFMON, CAP_SYS_ADMIN, CAP_SYS_PTRACE};
        let permitted = ::caps::read(None, ::caps::CapSet::Permitted).unwrap_or_default();
        let admin = crate::caps::uprobes_need_sys_admin(|| capture.lock().unwrap().try_attach());
        let perf = if admin {
            Some(CAP_SYS_ADMIN)
        } else {
            [CAP_PERFMON, CAP_SYS_ADMIN].into_iter().find(|c| permitted.contains(c))
        };
        if admin {
            tracing::info!("http: this kernel attaches uprobes only with CAP_SYS_ADMIN: kept for the HTTPS capture");
        }
        tls_caps.extend(perf);
        tls_caps.extend([CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH].into_iter().filter(|c| permitted.contains(c)));
        if perf.is_none() || !permitted.contains(&CAP_SYS_PTRACE) {
            tracing::warn!(
                "http: without CAP_PERFMON (or CAP_SYS_ADMIN) and CAP_SYS_PTRACE the HTTPS capture attaches \
                 to no library found after start-up, and sees only this user's processes"
            );
        }
    }
    if let Some(cap) = map_reads_need {
        tracing::info!(
            capability = %cap,
            "this kernel checks capabilities on every bpf() call (kernel.unprivileged_bpf_disabled \
             is set): keeping the one the map reads need"
        );
        keep.insert(cap);
    }
    // Other users' processes' declared service names (`/proc/<pid>/environ`: the owner's,
    // mode 0400, behind a ptrace read check), Docker's container names (root's files) and the
    // HTTPS capture's privileged steps: run by the privileged helper, which keeps what they
    // need. This process keeps none of it.
    let mut tls_by_helper = false;
    if environment || cli.identity.docker_dir.is_dir() || tls.is_some() {
        tls_by_helper = start_helper(&cli, &mut registry, environment, tls.as_ref(), &tls_caps, map_reads_need);
    }
    // Without the helper the capture runs here, with what it needs; without the capability
    // for uprobes it attaches nothing after start-up, and nothing is kept for it.
    let perf = [::caps::Capability::CAP_PERFMON, ::caps::Capability::CAP_SYS_ADMIN];
    if tls.is_some() && !tls_by_helper && tls_caps.iter().any(|c| perf.contains(c)) {
        keep.extend(tls_caps);
    }
    if let Some((user, (uid, gid))) = runas {
        run_as(user, uid, gid)?;
    }
    // Programs are attached and maps open: no capability is needed from here on. Dropped
    // before the runtime starts any thread, so every thread runs without them.
    let kept = caps::drop_all_except(&keep).context("dropping capabilities")?;
    // SAFETY: prctl takes plain values. Nothing this process executes gains privileges.
    unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    let mut kept: Vec<String> = kept.iter().map(|c| c.to_string()).collect();
    kept.sort();
    release_startup_memory();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    if let Some(capture) = tls {
        // The probes, once this process has dropped its capabilities: the files are read and
        // the probes attached by the helper where it runs (or with those kept above).
        let attached = capture.lock().unwrap().begin(tls_by_helper);
        tracing::info!(
            files = attached.len(),
            by = if tls_by_helper { "the privileged helper" } else { "this process" },
            "http: HTTPS capture on: uprobes on OpenSSL's SSL_read/SSL_write in the files listed \
             above (and in any file that holds OpenSSL when a process opens or maps it later)"
        );
        // After the capabilities were dropped: the thread has only those kept above.
        std::thread::Builder::new()
            .name("tls-scan".into())
            .spawn(move || crate::tls::run(capture))
            .context("starting the TLS scan thread")?;
    }
    // The same for the reader of the kernel's HTTP/2 frames.
    crate::http2::events::spawn_reader()?;
    let registry = Arc::new(registry);
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::from_std(listener).context("listening")?;
        summary(&registry, &programs, &listener.local_addr()?, &cli.telemetry_path, &opts, &kept);
        let app = server::app(registry.clone(), &opts);
        server::serve(listener, app, &opts, shutdown_signal()).await;
        anyhow::Ok(())
    })?;
    tracing::info!("shutting down: detaching eBPF programs");
    crate::tls::shutdown();
    drop(loader);
    Ok(())
}

/// Forks the privileged helper ([`crate::helper`]) where this process can read other users'
/// processes; says what is read without it otherwise. With the HTTPS capture (`tls`, needing
/// `tls_caps` and, on kernels that check every `bpf()` call, `map_reads_need`), the helper also
/// keeps the uprobe programs and those capabilities. Whether the helper runs the capture.
fn start_helper(
    cli: &Cli,
    registry: &mut Registry,
    environment: bool,
    tls: Option<&Arc<std::sync::Mutex<crate::tls::Capture>>>,
    tls_caps: &::caps::CapsHashSet,
    map_reads_need: Option<::caps::Capability>,
) -> bool {
    let Some(mut keep) = crate::helper::capabilities() else {
        if environment {
            tracing::info!(
                "without CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH, service names declared in process \
                 environments (OTEL_SERVICE_NAME) are read from this user's processes only"
            );
        }
        return false;
    };
    // The capture goes to the helper where it can attach there.
    let perf = [::caps::Capability::CAP_PERFMON, ::caps::Capability::CAP_SYS_ADMIN];
    let tls = tls.filter(|_| tls_caps.iter().any(|c| perf.contains(c)));
    let tls_programs = match tls {
        Some(c) => {
            keep.extend(tls_caps.iter().copied());
            keep.extend(map_reads_need);
            c.lock().unwrap().program_fds()
        }
        None => Vec::new(),
    };
    let by_helper = !tls_programs.is_empty();
    let scope =
        crate::helper::Scope { procfs: cli.procfs.clone(), docker_dir: cli.identity.docker_dir.clone(), tls_programs };
    match crate::helper::spawn(scope, &keep) {
        Ok(pid) => {
            tracing::info!(
                pid,
                tls = by_helper,
                "helper: other users' declared service names and Docker container names are read by the privileged \
                 helper (and, with tls, the HTTPS capture's files read and probes attached)"
            );
            registry.sources.push(Box::new(crate::helper::Metrics));
            by_helper
        }
        Err(e) => {
            tracing::warn!(
                error = format!("{e:#}"),
                "helper: not started: declared service names and Docker container names are read from what \
                 this process can read, and the HTTPS capture runs in this process"
            );
            false
        }
    }
}

/// Switches to `user` (`name`, `uid` or `uid:gid`), keeping the permitted capabilities (the
/// caller drops those not needed next). The process stays dumpable, so that it reads its own
/// `/proc` entries (open file descriptors): other processes of that user cannot trace it while
/// it holds capabilities, and the user should be its own.
fn run_as(user: &str, uid: libc::uid_t, gid: libc::gid_t) -> anyhow::Result<()> {
    use ::caps::CapSet;
    // SAFETY: prctl, setgroups, setresgid and setresuid take plain values (setgroups an empty
    // list).
    let failed = unsafe {
        libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0
            || libc::setgroups(0, std::ptr::null()) != 0
            || libc::setresgid(gid, gid, gid) != 0
            || libc::setresuid(uid, uid, uid) != 0
    };
    if failed {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("--runas.user {user}"));
    }
    // SAFETY: as above.
    unsafe {
        libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0);
        libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0);
    }
    // The switch emptied the effective set: back to the permitted one, which the drop that
    // follows narrows (it needs CAP_SETPCAP effective for the bounding set).
    let permitted = ::caps::read(None, CapSet::Permitted).context("reading the permitted capabilities")?;
    ::caps::set(None, CapSet::Effective, &permitted).context("setting the effective capabilities")?;
    tracing::debug!(uid, gid, "running as {user}");
    Ok(())
}

/// `--runas.user`, checked before anything is loaded: the user exists, and this process may
/// switch to it.
fn runas_checked(user: &str) -> anyhow::Result<(libc::uid_t, libc::gid_t)> {
    let ids = resolve_user(user)?;
    use ::caps::{CapSet, Capability};
    let effective = ::caps::read(None, CapSet::Effective).context("reading the effective capabilities")?;
    anyhow::ensure!(
        effective.contains(&Capability::CAP_SETUID) && effective.contains(&Capability::CAP_SETGID),
        "--runas.user {user}: switching users needs CAP_SETUID and CAP_SETGID"
    );
    Ok(ids)
}

/// `name`, `uid` or `uid:gid` to (uid, gid): a name through the user database, a number's
/// group the same number unless given.
pub fn resolve_user(user: &str) -> anyhow::Result<(libc::uid_t, libc::gid_t)> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g.parse::<libc::gid_t>().with_context(|| format!("--runas.user {user}: group"))?)),
        None => (user, None),
    };
    if let Ok(uid) = u.parse::<libc::uid_t>() {
        return Ok((uid, g.unwrap_or(uid)));
    }
    let name = std::ffi::CString::new(u).context("--runas.user")?;
    // SAFETY: getpwnam reads the user database; the pointer it returns is used at once, on
    // this thread, before any other call that could reuse its buffer.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    anyhow::ensure!(!pw.is_null(), "--runas.user {user}: no such user");
    // SAFETY: not null: a record of the user database.
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Ok((uid, g.unwrap_or(gid)))
}

/// Binds the address; for the unspecified IPv6 address, falls back to IPv4 on hosts without
/// IPv6.
fn bind(addr: std::net::SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    let l = match std::net::TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) if addr.ip() == std::net::Ipv6Addr::UNSPECIFIED => {
            let v4: std::net::SocketAddr = (std::net::Ipv4Addr::UNSPECIFIED, addr.port()).into();
            std::net::TcpListener::bind(v4).with_context(|| format!("listening on {addr} ({e}) or {v4}"))?
        }
        Err(e) => return Err(e).with_context(|| format!("listening on {addr}")),
    };
    l.set_nonblocking(true).context("listening")?;
    Ok(l)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}

/// Gives back to the system the heap that start-up used and freed (parsing the eBPF object,
/// loading and attaching its programs, examining TLS libraries): glibc keeps freed memory in
/// its arena, and start-up's is several MiB more than what the daemon uses afterwards (5.5 MiB
/// of anonymous memory after start-up, 2.0 MiB after this; docs/performance.md). Once: a trim
/// after every scrape cost their page faults again on the next (see `main::tune_allocator`).
fn release_startup_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only returns free memory of glibc's arenas to the system; it takes
    // the allocator's lock like any allocation and touches no memory in use.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::resolve_user;

    #[test]
    fn users() {
        assert_eq!(resolve_user("root").unwrap(), (0, 0));
        assert_eq!(resolve_user("65532").unwrap(), (65532, 65532));
        assert_eq!(resolve_user("1000:100").unwrap(), (1000, 100));
        assert!(resolve_user("no-such-user-here").is_err());
        assert!(resolve_user("1000:staff").is_err());
        assert!(resolve_user("a\0b").is_err());
    }
}
