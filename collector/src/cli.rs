//! Command-line flags, in node_exporter's conventions.
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use crate::collectors;

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

    /// Once the eBPF programs are attached, run as this user (a name, or a numeric uid, with
    /// `:gid` optionally; the group is the user's or the same number) instead of the one that
    /// started it (which needs CAP_SETUID and CAP_SETGID for it). The capabilities kept after
    /// start-up stay; the privileged helper keeps its user.
    #[arg(long = "runas.user")]
    pub runas_user: Option<String>,

    /// Series of a cgroup that no longer exists are kept this long after its last new data,
    /// then removed (with their kernel map entries). 0s keeps them forever.
    #[arg(long = "collector.cgroup.ttl", default_value = "5m", value_parser = humantime::parse_duration)]
    pub cgroup_ttl: std::time::Duration,

    /// procfs mountpoint (the host's /proc when running in a container, e.g. /host/proc).
    #[arg(long = "path.procfs", default_value = "/proc")]
    pub procfs: PathBuf,

    /// The host's root filesystem (where the filesystem collector measures the mount points of
    /// `<path.procfs>/1/mountinfo`; e.g. /host/root in a container).
    #[arg(long = "path.rootfs", default_value = "/")]
    pub rootfs: PathBuf,

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

    /// Only level and above are logged.
    #[arg(long = "log.level", value_enum, default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,

    /// Log line format.
    #[arg(long = "log.format", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// `--[no-]collector.<name>` and each collector's own flags.
    #[command(flatten)]
    pub collectors: collectors::Flags,

    /// Where workload names come from (`--identity.*`).
    #[command(flatten)]
    pub identity: crate::identity::IdentityFlags,
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
        use collectors::{Name, TABLE};
        let all: Vec<Name> = TABLE.iter().map(|c| c.name).collect();
        assert_eq!(parse(&[]).collectors.enabled.0, all);
        let c = parse(&["--no-collector.netbpf", "--no-collector.cpu"]).collectors;
        assert!(!c.is_enabled(Name::Netbpf) && !c.is_enabled(Name::Cpu) && c.is_enabled(Name::Meminfo));
        let c = parse(&["--no-collector.cpu", "--collector.cpu"]).collectors;
        assert!(c.is_enabled(Name::Cpu));
        let c = parse(&["--collector.cpu", "--no-collector.cpu"]).collectors;
        assert!(!c.is_enabled(Name::Cpu));
        assert!(Cli::try_parse_from(["collector", "--collector.nope"]).is_err());
    }

    #[test]
    fn close_hook_flag_last_wins() {
        let off = |args: &[&str]| parse(args).collectors.http.no_close_hook;
        assert!(!off(&[]));
        assert!(off(&["--no-collector.http.close-hook"]));
        assert!(!off(&["--no-collector.http.close-hook", "--collector.http.close-hook"]));
        assert!(off(&["--collector.http.close-hook", "--no-collector.http.close-hook"]));
    }

    #[test]
    fn collector_value_flags() {
        let c = parse(&["--collector.http.duration-buckets", "0.001,0.01", "--collector.diskstats.device-exclude", ""]);
        assert_eq!(c.collectors.http.duration_buckets.0, vec![0.001, 0.01]);
        assert!(c.collectors.diskstats.device_exclude.0.is_none());
        assert!(parse(&[]).collectors.diskstats.device_exclude.0.unwrap().is_match("loop0"));
        assert!(Cli::try_parse_from(["collector", "--collector.http.duration-buckets", "0.1,0.01"]).is_err());
        assert!(Cli::try_parse_from(["collector", "--collector.diskstats.device-exclude", "("]).is_err());
    }

    #[test]
    fn identity_flags() {
        let i = parse(&[]).identity;
        assert!(!i.no_environment);
        assert_eq!(i.pod_logs_dir, std::path::Path::new("/var/log/pods"));
        let i = parse(&["--no-identity.environment", "--identity.pod-logs-dir", "/x"]).identity;
        assert!(i.no_environment);
        assert_eq!(i.pod_logs_dir, std::path::Path::new("/x"));
        assert!(!parse(&["--no-identity.environment", "--identity.environment"]).identity.no_environment);
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
