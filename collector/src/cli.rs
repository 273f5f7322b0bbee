//! Command-line flags, in node_exporter's conventions.
use std::path::PathBuf;

use clap::{ArgAction, ArgMatches, Args, Command, FromArgMatches, Parser, ValueEnum};

/// Every collector, whether it is on by default, and what it does (for `--help`).
pub const COLLECTORS: &[(&str, bool, &str)] = &[
    ("cpu", true, "CPU time per mode and busy ratio (/proc/stat)"),
    ("meminfo", true, "memory and swap (/proc/meminfo)"),
    ("loadavg", true, "load averages (/proc/loadavg)"),
    ("pressure", true, "pressure stall information (/proc/pressure)"),
    ("diskstats", true, "per-device I/O counters (/proc/diskstats)"),
    ("netdev", true, "per-interface network counters (/proc/net/dev)"),
    ("diskbpf", true, "eBPF: disk I/O latency histograms and per-cgroup I/O bytes (block tracepoints)"),
    ("netbpf", true, "eBPF: per-cgroup network bytes and packets (cgroup_skb on the cgroup v2 root)"),
    (
        "http",
        true,
        "eBPF: HTTP/1.x request duration, body sizes and active requests (cgroup_skb on the cgroup v2 root)",
    ),
];

/// Default listen port: clear of node_exporter (9100) and Prometheus (9090).
pub const DEFAULT_PORT: u16 = 9810;

#[derive(Parser, Debug)]
#[command(name = "collector", version, about = "eBPF-based host and HTTP latency collector for Prometheus")]
pub struct Cli {
    /// Address to listen on for the web interface and telemetry ([host]:port; an empty host
    /// means every interface).
    #[arg(long = "web.listen-address", default_value_t = format!(":{DEFAULT_PORT}"))]
    pub listen_address: String,

    /// Path under which to expose metrics.
    #[arg(long = "web.telemetry-path", default_value = "/metrics")]
    pub telemetry_path: String,

    /// Path to a web configuration file (Prometheus exporter-toolkit format): TLS, client
    /// certificates, basic auth, response headers. Read once at start-up; an invalid file stops
    /// start-up.
    #[arg(long = "web.config.file")]
    pub web_config_file: Option<PathBuf>,

    /// Maximum number of concurrent scrapes of the telemetry path; more get 503. 0 disables
    /// the limit.
    #[arg(long = "web.max-requests", default_value_t = 40)]
    pub max_requests: usize,

    /// Time a client has to complete the TLS handshake and send a request's headers; idle
    /// keep-alive connections are closed after it too.
    #[arg(long = "web.header-read-timeout", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_read_timeout: std::time::Duration,

    /// Time within which a request must be answered; a slower one gets 503.
    #[arg(long = "web.request-timeout", default_value = "30s", value_parser = humantime::parse_duration)]
    pub request_timeout: std::time::Duration,

    /// Capabilities kept after the eBPF programs are loaded and attached (comma-separated, e.g.
    /// cap_sys_admin), or "none". Every other capability is dropped from all sets.
    #[arg(long = "capabilities.keep", default_value = "none")]
    pub capabilities_keep: String,

    /// Series of a cgroup that no longer exists are kept this long after its last new data,
    /// then removed (with their kernel map entries). 0s keeps them forever.
    #[arg(long = "collector.cgroup.ttl", default_value = "5m", value_parser = humantime::parse_duration)]
    pub cgroup_ttl: std::time::Duration,

    /// procfs mountpoint (the host's /proc when running in a container, e.g. /host/proc).
    #[arg(long = "path.procfs", default_value = "/proc")]
    pub procfs: PathBuf,

    /// sysfs mountpoint.
    #[arg(long = "path.sysfs", default_value = "/sys")]
    pub sysfs: PathBuf,

    /// cgroupfs mountpoint: cgroup v2 is looked for here and, on hybrid hosts, at <path>/unified.
    #[arg(long = "path.cgroupfs", default_value = "/sys/fs/cgroup")]
    pub cgroupfs: PathBuf,

    /// tracefs mountpoint [default: /sys/kernel/tracing, then /sys/kernel/debug/tracing;
    /// mounted at /sys/kernel/tracing when absent].
    #[arg(long = "path.tracefs")]
    pub tracefs: Option<PathBuf>,

    /// Also report partitions in the diskstats collector (whole devices only by default).
    #[arg(long = "collector.diskstats.include-partitions")]
    pub diskstats_include_partitions: bool,

    /// Regular expression of device names the diskstats collector leaves out.
    #[arg(long = "collector.diskstats.device-exclude", default_value = "^(ram|loop|fd|zram)\\d+$")]
    pub diskstats_device_exclude: String,

    /// Upper bounds (seconds) of the HTTP duration histogram buckets, increasing, at most 32.
    #[arg(long = "collector.http.duration-buckets", default_value = crate::http::DEFAULT_BUCKETS)]
    pub http_duration_buckets: String,

    /// Attach the HTTP close hook (a sock_ops program on the cgroup v2 root that settles requests
    /// on sockets closed by a timeout) [default: enabled].
    #[arg(long = "collector.http.close-hook", overrides_with = "no_http_close_hook")]
    pub http_close_hook: bool,

    /// Do not attach the HTTP close hook (requests waiting on a socket that a timeout closes then
    /// stay in http_server_active_requests), e.g. where another tool's sock_ops program must be
    /// the only one on the cgroup v2 root.
    #[arg(long = "no-collector.http.close-hook", overrides_with = "http_close_hook")]
    pub no_http_close_hook: bool,

    /// Only level and above are logged.
    #[arg(long = "log.level", value_enum, default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,

    /// Log line format.
    #[arg(long = "log.format", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(flatten)]
    pub collectors: CollectorFlags,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum LogFormat {
    Text,
    Json,
}

/// `--collector.<name>` / `--no-collector.<name>` for every collector; the last one given wins.
#[derive(Debug, Clone, Default)]
pub struct CollectorFlags {
    /// Enabled collector names, in [`COLLECTORS`] order.
    pub enabled: Vec<&'static str>,
}

impl CollectorFlags {
    pub fn is_enabled(&self, name: &str) -> bool {
        self.enabled.contains(&name)
    }
}

fn on_id(name: &str) -> String {
    format!("collector.{name}")
}
fn off_id(name: &str) -> String {
    format!("no-collector.{name}")
}

impl Args for CollectorFlags {
    fn augment_args(mut cmd: Command) -> Command {
        for (name, default, help) in COLLECTORS {
            let state = if *default { "enabled" } else { "disabled" };
            cmd = cmd
                .arg(
                    clap::Arg::new(on_id(name))
                        .long(on_id(name))
                        .action(ArgAction::SetTrue)
                        .overrides_with(off_id(name))
                        .help(format!("Enable the {name} collector: {help} [default: {state}]")),
                )
                .arg(
                    clap::Arg::new(off_id(name))
                        .long(off_id(name))
                        .action(ArgAction::SetTrue)
                        .overrides_with(on_id(name))
                        .help(format!("Disable the {name} collector")),
                );
        }
        cmd
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for CollectorFlags {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut enabled = Vec::new();
        for (name, default, _) in COLLECTORS {
            let on = m.get_flag(&on_id(name));
            let off = m.get_flag(&off_id(name));
            if on || (*default && !off) {
                enabled.push(*name);
            }
        }
        Ok(Self { enabled })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

/// Parses `[host]:port` (an empty host means every interface; IPv6 hosts in brackets).
pub fn parse_listen_address(s: &str) -> Result<std::net::SocketAddr, String> {
    let (host, port) = s.rsplit_once(':').ok_or_else(|| format!("{s:?}: expected [host]:port"))?;
    let port: u16 = port.parse().map_err(|_| format!("{s:?}: bad port {port:?}"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: std::net::IpAddr = match host {
        "" => std::net::Ipv6Addr::UNSPECIFIED.into(),
        "localhost" => std::net::Ipv4Addr::LOCALHOST.into(),
        h => h.parse().map_err(|_| format!("{s:?}: bad host {h:?} (use an IP address)"))?,
    };
    Ok((ip, port).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("collector").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn collector_flags_last_wins() {
        let all: Vec<&str> = COLLECTORS.iter().map(|c| c.0).collect();
        assert_eq!(parse(&[]).collectors.enabled, all);
        let c = parse(&["--no-collector.netbpf", "--no-collector.cpu"]).collectors;
        assert!(!c.is_enabled("netbpf") && !c.is_enabled("cpu") && c.is_enabled("meminfo"));
        let c = parse(&["--no-collector.cpu", "--collector.cpu"]).collectors;
        assert!(c.is_enabled("cpu"));
        let c = parse(&["--collector.cpu", "--no-collector.cpu"]).collectors;
        assert!(!c.is_enabled("cpu"));
        assert!(Cli::try_parse_from(["collector", "--collector.nope"]).is_err());
    }

    #[test]
    fn close_hook_flag_last_wins() {
        assert!(!parse(&[]).no_http_close_hook);
        assert!(parse(&["--no-collector.http.close-hook"]).no_http_close_hook);
        assert!(!parse(&["--no-collector.http.close-hook", "--collector.http.close-hook"]).no_http_close_hook);
        assert!(parse(&["--collector.http.close-hook", "--no-collector.http.close-hook"]).no_http_close_hook);
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(parse_listen_address(":9810").unwrap(), "[::]:9810".parse().unwrap());
        assert_eq!(parse_listen_address("127.0.0.1:1").unwrap(), "127.0.0.1:1".parse().unwrap());
        assert_eq!(parse_listen_address("[::1]:80").unwrap(), "[::1]:80".parse().unwrap());
        assert!(parse_listen_address("9810").is_err());
        assert!(parse_listen_address("example.com:80").is_err());
        assert!(parse_listen_address(":99999").is_err());
    }
}
