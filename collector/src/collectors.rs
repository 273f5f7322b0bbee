//! The collector table: every collector with its name, default, help, the privileges and kernel
//! programs it needs and how it starts; [`start`] walks it. Adding a collector is its own
//! module (the poller, and its kernel half in collector-ebpf under the same name), its flags
//! in [`Flags`] if it has any, and one entry in [`TABLE`] (README, "Adding a collector").
//!
//! Start-up in table order: the privilege check for the enabled eBPF collectors, the collectors
//! that only read files, then every eBPF collector's `prepare` (host checks and the globals its
//! programs need), one load of the embedded object, and every eBPF collector's `start`
//! (attach and take maps). A collector that cannot run is skipped with its reason; the others
//! go on.
use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use clap::{ArgAction, ArgMatches, Args, Command, FromArgMatches};
use collector_common::names;

use crate::{
    bpf::{self, Globals, Loader},
    caps, cgroup, disk, filesystem, host, http,
    metrics::{Collector, Registry, Skipped},
    network,
};

/// A collector's name, as in `--collector.<name>` and the `collector` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Name {
    Cpu,
    Meminfo,
    Loadavg,
    Pressure,
    Diskstats,
    Netdev,
    Filesystem,
    Filefd,
    Conntrack,
    Time,
    Diskbpf,
    Http,
    Netbpf,
}

impl Name {
    pub const fn as_str(self) -> &'static str {
        match self {
            Name::Cpu => "cpu",
            Name::Meminfo => "meminfo",
            Name::Loadavg => "loadavg",
            Name::Pressure => "pressure",
            Name::Diskstats => "diskstats",
            Name::Netdev => "netdev",
            Name::Filesystem => "filesystem",
            Name::Filefd => "filefd",
            Name::Conntrack => "conntrack",
            Name::Time => "time",
            Name::Diskbpf => "diskbpf",
            Name::Http => "http",
            Name::Netbpf => "netbpf",
        }
    }
}

/// A started collector, or why it cannot run.
pub type Outcome = Result<Box<dyn Collector>, String>;

/// What a collector starts from.
pub enum Start {
    /// Files only (procfs, sysfs): builds the collector, or says why it cannot run.
    Files(fn(&Context) -> Outcome),
    /// Programs of the embedded eBPF object.
    Ebpf(Ebpf),
}

/// An eBPF collector's needs and its two start-up steps.
pub struct Ebpf {
    /// Needs CAP_PERFMON (tracepoints, or the verifier's pointer arithmetic rules).
    pub perfmon: bool,
    /// Needs CAP_NET_ADMIN (programs attached to the cgroup v2 root).
    pub net_admin: bool,
    /// Before the object is loaded: checks what the host offers and returns the globals its
    /// programs need, or why it cannot run.
    pub prepare: fn(&Context) -> Result<Globals, String>,
    /// After the load: attaches its programs (nothing of them stays attached on failure) and
    /// takes its maps.
    pub start: fn(&Context, &mut Loader) -> Outcome,
}

/// One entry of the table.
pub struct Spec {
    pub name: Name,
    /// Enabled unless `--no-collector.<name>`.
    pub default: bool,
    /// What it exports (for `--help`).
    pub help: &'static str,
    pub start: Start,
}

/// Every collector, in start-up order: `http` before `netbpf`, which counts packets in the
/// HTTP programs when they are attached (one program run per packet instead of two).
pub const TABLE: [Spec; 13] = [
    Spec {
        name: Name::Cpu,
        default: true,
        help: "CPU time per mode and busy ratio (/proc/stat)",
        start: Start::Files(|c| Ok(Box::new(host::Cpu::new(c.procfs)))),
    },
    Spec {
        name: Name::Meminfo,
        default: true,
        help: "memory and swap (/proc/meminfo)",
        start: Start::Files(|c| Ok(Box::new(host::Memory::new(c.procfs)))),
    },
    Spec {
        name: Name::Loadavg,
        default: true,
        help: "load averages (/proc/loadavg)",
        start: Start::Files(|c| Ok(Box::new(host::Load::new(c.procfs)))),
    },
    Spec {
        name: Name::Pressure,
        default: true,
        help: "pressure stall information (/proc/pressure)",
        start: Start::Files(|c| Ok(Box::new(host::Pressure::new(c.procfs)?))),
    },
    Spec {
        name: Name::Diskstats,
        default: true,
        help: "per-device I/O counters (/proc/diskstats)",
        start: Start::Files(|c| Ok(Box::new(disk::Diskstats::new(c.procfs, c.devices.clone(), &c.flags.diskstats)))),
    },
    Spec {
        name: Name::Netdev,
        default: true,
        help: "per-interface network counters (/proc/net/dev)",
        start: Start::Files(|c| Ok(Box::new(network::Netdev::new(c.procfs)))),
    },
    Spec {
        name: Name::Filesystem,
        default: true,
        help: "filesystem space and inodes per mount (statvfs of the mounts in <path.procfs>/1/mountinfo)",
        start: Start::Files(|c| Ok(Box::new(filesystem::Filesystem::new(c.procfs, c.rootfs, &c.flags.filesystem)?))),
    },
    Spec {
        name: Name::Filefd,
        default: true,
        help: "file handles allocated and maximum (/proc/sys/fs/file-nr)",
        start: Start::Files(|c| Ok(Box::new(host::FileFd::new(c.procfs)?))),
    },
    Spec {
        name: Name::Conntrack,
        default: true,
        help: "connection tracking entries and limit (/proc/sys/net/netfilter, once nf_conntrack is loaded)",
        start: Start::Files(|c| Ok(Box::new(host::Conntrack::new(c.procfs)?))),
    },
    Spec {
        name: Name::Time,
        default: true,
        help: "boot time, the clock and its synchronisation (/proc/stat btime, adjtimex)",
        start: Start::Files(|c| Ok(Box::new(host::Clock::new(c.procfs)?))),
    },
    Spec {
        name: Name::Diskbpf,
        default: true,
        help: "eBPF: disk I/O latency histograms and per-cgroup I/O bytes (block tracepoints)",
        start: Start::Ebpf(Ebpf {
            perfmon: true,
            net_admin: false,
            prepare: |c| disk::globals(c.tracefs()),
            start: |c, l| Ok(Box::new(disk::DiskBpf::start(l, c.devices.clone(), c.cgroups.clone(), c.cgroup_ttl)?)),
        }),
    },
    Spec {
        name: Name::Http,
        default: true,
        help: "eBPF: HTTP/1.x request duration, body sizes and active requests (cgroup_skb on the cgroup v2 root)",
        start: Start::Ebpf(Ebpf {
            perfmon: true,
            net_admin: true,
            prepare: |c| {
                c.v2_root.as_ref().map_err(Clone::clone)?;
                let mut globals = http::globals(&c.flags.http, c.tracefs()).map_err(|e| format!("{e:#}"))?;
                if c.enabled(Name::Netbpf) {
                    globals.push((names::global::NET_IN_HTTP, vec![1]));
                }
                Ok(globals)
            },
            start: |c, l| {
                let environment = !c.identity.no_environment;
                Ok(Box::new(http::Http::start(
                    l,
                    c.cgroups.clone(),
                    &c.flags.http,
                    c.procfs,
                    c.cgroup_ttl,
                    environment,
                    c.tracefs().is_ok(),
                )?))
            },
        }),
    },
    Spec {
        name: Name::Netbpf,
        default: true,
        help: "eBPF: per-cgroup network bytes and packets (cgroup_skb on the cgroup v2 root)",
        start: Start::Ebpf(Ebpf {
            perfmon: false,
            net_admin: true,
            prepare: |c| c.v2_root.as_ref().map(|_| Vec::new()).map_err(Clone::clone),
            start: |c, l| {
                // Counted by the HTTP programs when they run (NET_IN_HTTP), else by its own pair.
                let by_http = l.is_attached(names::program::HTTP_INGRESS);
                Ok(Box::new(network::NetBpf::start(l, c.cgroups.clone(), by_http, c.cgroup_ttl)?))
            },
        }),
    },
];

/// The collectors' flags: `--[no-]collector.<name>` for each, and each collector's own.
#[derive(Args, Debug, Clone)]
pub struct Flags {
    #[command(flatten)]
    pub enabled: Enabled,
    #[command(flatten)]
    pub diskstats: disk::DiskstatsFlags,
    #[command(flatten)]
    pub filesystem: filesystem::FilesystemFlags,
    #[command(flatten)]
    pub http: http::HttpFlags,
}

impl Flags {
    pub fn is_enabled(&self, name: Name) -> bool {
        self.enabled.0.contains(&name)
    }
}

/// What the start-up steps read.
pub struct Context<'a> {
    pub flags: &'a Flags,
    pub identity: &'a crate::identity::IdentityFlags,
    pub procfs: &'a Path,
    /// `--path.rootfs`.
    pub rootfs: &'a Path,
    /// `--path.tracefs`, when given.
    pub tracefs_flag: Option<&'a Path>,
    /// Where tracefs was found (or mounted), looked for once, by the first collector asking.
    pub tracefs: std::sync::OnceLock<Result<PathBuf, String>>,
    pub cgroup_ttl: Duration,
    pub devices: Arc<disk::Devices>,
    pub cgroups: Arc<cgroup::Resolver>,
    /// The cgroup v2 hierarchy, or why there is none.
    pub v2_root: Result<PathBuf, String>,
}

impl Context<'_> {
    pub fn enabled(&self, name: Name) -> bool {
        self.flags.is_enabled(name)
    }

    /// tracefs ([`bpf::find_tracefs`], which mounts it when absent), or why it is not there.
    pub fn tracefs(&self) -> &Result<PathBuf, String> {
        self.tracefs.get_or_init(|| bpf::find_tracefs(self.tracefs_flag))
    }
}

/// The running collectors and, when eBPF collectors run, the loaded object (dropping it
/// detaches the programs).
pub struct Started {
    pub registry: Registry,
    pub loader: Option<Loader>,
    /// The capability map reads need on this kernel once the others are dropped
    /// ([`caps::map_reads_need`]), if any.
    pub map_reads_need: Option<::caps::Capability>,
}

/// Starts every enabled collector of [`TABLE`].
pub fn start(ctx: &Context) -> anyhow::Result<Started> {
    let mut registry = Registry::new();
    registry.sources.push(Box::new(cgroup::IdentityMetrics(ctx.cgroups.clone())));
    registry.disabled = TABLE.iter().map(|s| s.name).filter(|n| !ctx.enabled(*n)).map(Name::as_str).collect();
    let skip = |registry: &mut Registry, name: Name, reason: String| {
        tracing::warn!(collector = name.as_str(), reason = %reason, "collector skipped");
        registry.skipped.push(Skipped { name: name.as_str(), reason });
    };
    let ebpf: Vec<(Name, &Ebpf)> = TABLE
        .iter()
        .filter(|s| ctx.enabled(s.name))
        .filter_map(|s| match &s.start {
            Start::Ebpf(e) => Some((s.name, e)),
            Start::Files(_) => None,
        })
        .collect();
    if !ebpf.is_empty() {
        let names: Vec<&str> = ebpf.iter().map(|(n, _)| n.as_str()).collect();
        caps::check_privileges(&names, ebpf.iter().any(|(_, e)| e.perfmon), ebpf.iter().any(|(_, e)| e.net_admin))?;
    }
    for spec in TABLE.iter().filter(|s| ctx.enabled(s.name)) {
        if let Start::Files(start) = spec.start {
            match start(ctx) {
                Ok(c) => registry.collectors.push(c),
                Err(reason) => skip(&mut registry, spec.name, reason),
            }
        }
    }
    let mut globals = Vec::new();
    let mut ready = Vec::new();
    for (name, e) in ebpf {
        match (e.prepare)(ctx) {
            Ok(g) => {
                globals.extend(g);
                ready.push((name, e));
            }
            Err(reason) => skip(&mut registry, name, reason),
        }
    }
    if ready.is_empty() {
        return Ok(Started { registry, loader: None, map_reads_need: None });
    }
    let mut loader = match Loader::load(&globals) {
        Ok(l) => l,
        Err(e) => {
            let reason = format!("{e:#}");
            for (name, _) in ready {
                skip(&mut registry, name, reason.clone());
            }
            return Ok(Started { registry, loader: None, map_reads_need: None });
        }
    };
    for (name, e) in ready {
        match (e.start)(ctx, &mut loader) {
            Ok(c) => registry.collectors.push(c),
            Err(reason) => skip(&mut registry, name, reason),
        }
    }
    if let Some(capture) = crate::tls::CAPTURE.get() {
        registry.sources.push(Box::new(crate::tls::Tls(capture.clone())));
    }
    let own = bpf::SelfMetrics::new(&mut loader).context("the loader's own metrics")?;
    let map_reads_need = caps::map_reads_need(|| own.probe_read());
    registry.sources.push(Box::new(own));
    Ok(Started { registry, loader: Some(loader), map_reads_need })
}

/// `--collector.<name>` / `--no-collector.<name>` for every collector of [`TABLE`]; the last
/// one given wins.
#[derive(Debug, Clone, Default)]
pub struct Enabled(pub Vec<Name>);

fn on_id(name: Name) -> String {
    format!("collector.{}", name.as_str())
}
fn off_id(name: Name) -> String {
    format!("no-collector.{}", name.as_str())
}

impl Args for Enabled {
    fn augment_args(mut cmd: Command) -> Command {
        for s in &TABLE {
            let state = if s.default { "enabled" } else { "disabled" };
            cmd = cmd
                .arg(
                    clap::Arg::new(on_id(s.name))
                        .long(on_id(s.name))
                        .action(ArgAction::SetTrue)
                        .overrides_with(off_id(s.name))
                        .help(format!("Enable the {} collector: {} [default: {state}]", s.name.as_str(), s.help)),
                )
                .arg(
                    clap::Arg::new(off_id(s.name))
                        .long(off_id(s.name))
                        .action(ArgAction::SetTrue)
                        .overrides_with(on_id(s.name))
                        .help(format!("Disable the {} collector", s.name.as_str())),
                );
        }
        cmd
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for Enabled {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut enabled = Vec::new();
        for s in &TABLE {
            if m.get_flag(&on_id(s.name)) || (s.default && !m.get_flag(&off_id(s.name))) {
                enabled.push(s.name);
            }
        }
        Ok(Self(enabled))
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}
