//! Start-up: builds the registry from the enabled collectors (loading and attaching the eBPF
//! programs they need), then serves it until SIGTERM/SIGINT.
use std::sync::Arc;

use anyhow::Context as _;

use crate::{
    bpf, caps, cgroup,
    cli::{self, COLLECTORS, Cli},
    disk, host, http,
    metrics::{Registry, Skipped},
    network, server, webconfig,
};

const EBPF_COLLECTORS: [&str; 3] = ["diskbpf", "netbpf", "http"];

/// Everything that must live as long as the endpoint: the registry and the loaded programs
/// (dropping the loader detaches them).
struct Setup {
    registry: Registry,
    _loader: Option<bpf::Loader>,
}

fn setup(cli: &Cli) -> anyhow::Result<Setup> {
    let on = |name: &str| cli.collectors.is_enabled(name);
    let mut registry = Registry::new();
    registry.disabled = COLLECTORS.iter().map(|c| c.0).filter(|n| !on(n)).collect();
    let skip = |registry: &mut Registry, name: &'static str, reason: String| {
        tracing::warn!(collector = name, reason = %reason, "collector skipped");
        registry.skipped.push(Skipped { name, reason });
    };

    let ebpf_wanted: Vec<&str> = EBPF_COLLECTORS.into_iter().filter(|c| on(c)).collect();
    if !ebpf_wanted.is_empty() {
        bpf::check_privileges(&ebpf_wanted, on("netbpf") || on("http"))?;
    }

    let procfs = cli.procfs.as_path();
    if on("cpu") {
        registry.collectors.push(Box::new(host::Cpu::new(procfs)));
    }
    if on("meminfo") {
        registry.collectors.push(Box::new(host::Memory::new(procfs)));
    }
    if on("loadavg") {
        registry.collectors.push(Box::new(host::Load::new(procfs)));
    }
    if on("pressure") {
        match host::Pressure::new(procfs) {
            Ok(c) => registry.collectors.push(Box::new(c)),
            Err(reason) => skip(&mut registry, "pressure", reason),
        }
    }
    let devices = Arc::new(disk::Devices::new(&cli.sysfs));
    if on("diskstats") {
        let exclude = match cli.diskstats_device_exclude.as_str() {
            "" => None,
            re => Some(regex::Regex::new(re).context("--collector.diskstats.device-exclude")?),
        };
        registry.collectors.push(Box::new(disk::Diskstats::new(
            procfs,
            devices.clone(),
            cli.diskstats_include_partitions,
            exclude,
        )));
    }
    if on("netdev") {
        registry.collectors.push(Box::new(network::Netdev::new(procfs)));
    }

    let mut loader = None;
    if !ebpf_wanted.is_empty() {
        let v2_root = cgroup::find_v2_root(&cli.cgroupfs);
        let resolver = Arc::new(cgroup::Resolver::new(v2_root.clone().ok()));
        let mut disk_ok = on("diskbpf");
        let mut globals = Vec::new();
        if disk_ok {
            match disk::globals(&bpf::find_tracefs(cli.tracefs.as_deref())) {
                Ok(g) => globals = g,
                Err(reason) => {
                    skip(&mut registry, "diskbpf", reason);
                    disk_ok = false;
                }
            }
        }
        let mut net_ok = on("netbpf");
        if net_ok && let Err(reason) = &v2_root {
            skip(&mut registry, "netbpf", reason.clone());
            net_ok = false;
        }
        let mut http_ok = on("http");
        let http_buckets = http::parse_buckets(&cli.http_duration_buckets)
            .map_err(|e| anyhow::anyhow!("--collector.http.duration-buckets: {e}"))?;
        if http_ok {
            if let Err(reason) = &v2_root {
                skip(&mut registry, "http", reason.clone());
                http_ok = false;
            } else {
                globals.push(("DURATION_BOUNDS_NS", http::bounds_global(&http_buckets)));
                if let Some(stage) = http::bench_stage()? {
                    tracing::warn!(
                        stage,
                        "COLLECTOR_BENCH_HTTP_STAGE is set: the HTTP programs return early (a benchmark \
                         of their cost per stage) and record no HTTP metrics (at stage 1 no netbpf \
                         packet counts either)"
                    );
                    globals.push(("HTTP_BENCH_STAGE", stage.to_ne_bytes().to_vec()));
                }
            }
        }
        if net_ok && http_ok {
            // The HTTP programs count packets for netbpf too: one program run per packet
            // instead of two.
            globals.push(("NET_IN_HTTP", vec![1]));
        }
        if disk_ok || net_ok || http_ok {
            match bpf::Loader::load(&globals) {
                Err(e) => {
                    let reason = format!("{e:#}");
                    for (name, ok) in [("diskbpf", disk_ok), ("netbpf", net_ok), ("http", http_ok)] {
                        if ok {
                            skip(&mut registry, name, reason.clone());
                        }
                    }
                }
                Ok(mut l) => {
                    if disk_ok {
                        match disk::DiskBpf::start(&mut l, devices.clone(), resolver.clone(), cli.cgroup_ttl) {
                            Ok(c) => registry.collectors.push(Box::new(c)),
                            Err(reason) => skip(&mut registry, "diskbpf", reason),
                        }
                    }
                    let mut http_attached = false;
                    let mut http_collector = None;
                    if http_ok {
                        match http::Http::start(
                            &mut l,
                            resolver.clone(),
                            http_buckets,
                            cli.cgroup_ttl,
                            !cli.no_http_close_hook,
                        ) {
                            Ok(c) => {
                                http_attached = true;
                                http_collector = Some(c);
                            }
                            Err(reason) => {
                                http_attached = l.programs.iter().any(|p| p.program == "http_ingress" && p.attached);
                                skip(&mut registry, "http", reason);
                            }
                        }
                    }
                    if net_ok {
                        // Counted by the HTTP programs when they run (NET_IN_HTTP), else by
                        // its own pair.
                        match network::NetBpf::start(&mut l, resolver.clone(), http_attached, cli.cgroup_ttl) {
                            Ok(c) => registry.collectors.push(Box::new(c)),
                            Err(reason) => skip(&mut registry, "netbpf", reason),
                        }
                    }
                    if let Some(c) = http_collector {
                        registry.collectors.push(Box::new(c));
                    }
                    registry.drops = Some(bpf::Drops::new(&mut l)?);
                    registry.programs = l.programs.clone();
                    loader = Some(l);
                }
            }
        }
    }
    Ok(Setup { registry, _loader: loader })
}

fn summary(registry: &Registry, listen: &std::net::SocketAddr, path: &str, opts: &server::Options, kept: &[String]) {
    let running: Vec<&str> = registry.collectors.iter().map(|c| c.name()).collect();
    let skipped: Vec<String> = registry.skipped.iter().map(|s| format!("{} ({})", s.name, s.reason)).collect();
    let programs: Vec<String> = registry
        .programs
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
    // Bound while still privileged (a port below 1024 needs CAP_NET_BIND_SERVICE).
    let listener = bind(listen)?;
    let Setup { registry, _loader } = setup(&cli)?;
    let mut keep = keep;
    let cgroup_programs = registry
        .programs
        .iter()
        .any(|p| p.attached && (p.hook.starts_with("cgroup_skb/") || p.hook.starts_with("sock_ops:")));
    let links = aya::util::KernelVersion::current().is_ok_and(|v| v >= aya::util::KernelVersion::new(5, 7, 0));
    if cgroup_programs && !links {
        // Without BPF links (before 5.7) cgroup programs stay attached until detached
        // explicitly, which needs CAP_NET_ADMIN at exit.
        keep.insert(::caps::Capability::CAP_NET_ADMIN);
    }
    if let Some(drops) = &registry.drops
        && let Some(cap) = caps::map_reads_need(|| drops.probe_read())
    {
        tracing::info!(
            capability = %cap,
            "this kernel checks capabilities on every bpf() call (kernel.unprivileged_bpf_disabled \
             is set): keeping the one the map reads need"
        );
        keep.insert(cap);
    }
    // Programs are attached and maps open: no capability is needed from here on. Dropped
    // before the runtime starts any thread, so every thread runs without them.
    let kept = caps::drop_all_except(&keep).context("dropping capabilities")?;
    let mut kept: Vec<String> = kept.iter().map(|c| c.to_string()).collect();
    kept.sort();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let registry = Arc::new(registry);
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::from_std(listener).context("listening")?;
        summary(&registry, &listener.local_addr()?, &cli.telemetry_path, &opts, &kept);
        let app = server::app(registry.clone(), &opts);
        server::serve(listener, app, &opts, shutdown_signal()).await;
        anyhow::Ok(())
    })?;
    tracing::info!("shutting down: detaching eBPF programs");
    drop(_loader);
    Ok(())
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
