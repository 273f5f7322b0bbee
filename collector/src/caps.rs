//! Privileges: what the eBPF collectors need before start-up ([`check_privileges`]), and least
//! privilege after it. Once the eBPF programs are loaded and attached, the collector needs no
//! capability. Map reads and deletes go through file descriptors it already holds (recent
//! kernels check capabilities when a map or program is created, not when an fd is used), links
//! are released by closing their fds, and everything else it reads (procfs, sysfs, cgroupfs) is
//! world-readable. So every capability is dropped, from every set, before the HTTP endpoint
//! starts (`--capabilities.keep` keeps named ones). Older kernels (5.10 among those tested)
//! refuse every `bpf()` call without CAP_BPF (or CAP_SYS_ADMIN) while
//! `kernel.unprivileged_bpf_disabled` is set, as distributions set it: [`map_reads_need`] tells,
//! and the caller keeps that one capability.
use anyhow::Context as _;
use caps::{CapSet, Capability, CapsHashSet};

/// Names of the capabilities the eBPF collectors need and `effective` lacks. Loading programs
/// needs CAP_BPF; tracepoints (diskbpf) and the pointer arithmetic of the HTTP parser (the
/// verifier allows it only to CAP_PERFMON) need CAP_PERFMON; attaching cgroup programs
/// (netbpf, http) needs CAP_NET_ADMIN. CAP_SYS_ADMIN stands in for the first two (and is
/// required on kernels before 5.8).
pub fn missing(effective: &CapsHashSet, need_perfmon: bool, need_net_admin: bool) -> Vec<&'static str> {
    let has = |c: Capability| effective.contains(&c);
    let admin = has(Capability::CAP_SYS_ADMIN);
    let mut out = Vec::new();
    if !has(Capability::CAP_BPF) && !admin {
        out.push("CAP_BPF");
    }
    if need_perfmon && !has(Capability::CAP_PERFMON) && !admin {
        out.push("CAP_PERFMON");
    }
    if need_net_admin && !has(Capability::CAP_NET_ADMIN) {
        out.push("CAP_NET_ADMIN");
    }
    out
}

/// Checks privileges before anything is loaded, for the enabled eBPF collectors and what they
/// need; the error is the one line a user sees.
pub fn check_privileges(ebpf_collectors: &[&str], need_perfmon: bool, need_net_admin: bool) -> anyhow::Result<()> {
    let effective = caps::read(None, CapSet::Effective).context("reading the effective capabilities")?;
    let missing = missing(&effective, need_perfmon, need_net_admin);
    if missing.is_empty() {
        return Ok(());
    }
    let disable: Vec<String> = ebpf_collectors.iter().map(|c| format!("--no-collector.{c}")).collect();
    anyhow::bail!(
        "missing capabilities {} needed by the eBPF collectors ({}): run as root or grant them \
         (e.g. setcap cap_bpf,cap_perfmon,cap_net_admin+ep), or disable those collectors with {}",
        missing.join(", "),
        ebpf_collectors.join(", "),
        disable.join(" ")
    )
}

/// Parses `--capabilities.keep`: `none`, or comma-separated names with or without the `cap_`
/// prefix, in any case (`cap_sys_admin`, `CAP_BPF`, `perfmon`).
pub fn parse_keep(s: &str) -> Result<CapsHashSet, String> {
    let mut out = CapsHashSet::new();
    for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if name.eq_ignore_ascii_case("none") {
            continue;
        }
        let upper = name.to_ascii_uppercase();
        let full = if upper.starts_with("CAP_") { upper } else { format!("CAP_{upper}") };
        let cap: Capability = full.parse().map_err(|_| format!("unknown capability {name:?}"))?;
        out.insert(cap);
    }
    Ok(out)
}

/// Drops every capability not in `keep` from this thread's effective, permitted, inheritable
/// and ambient sets (and from the bounding set when CAP_SETPCAP allows it). Threads started
/// afterwards inherit the reduced sets: call it before starting any. Returns what is kept.
pub fn drop_all_except(keep: &CapsHashSet) -> anyhow::Result<CapsHashSet> {
    let permitted = caps::read(None, CapSet::Permitted).context("reading the permitted capabilities")?;
    let kept: CapsHashSet = keep.intersection(&permitted).copied().collect();
    // The bounding set first: dropping from it needs CAP_SETPCAP, which is about to go.
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).unwrap_or(false) {
        for cap in caps::read(None, CapSet::Bounding).unwrap_or_default() {
            if !kept.contains(&cap) {
                let _ = caps::drop(None, CapSet::Bounding, cap);
            }
        }
    }
    caps::clear(None, CapSet::Ambient).context("clearing the ambient capabilities")?;
    caps::set(None, CapSet::Effective, &kept).context("setting the effective capabilities")?;
    caps::set(None, CapSet::Inheritable, &kept).context("setting the inheritable capabilities")?;
    caps::set(None, CapSet::Permitted, &kept).context("setting the permitted capabilities")?;
    Ok(kept)
}

/// The capability this process must keep to read its maps once the others are dropped, if
/// any: `read` (a read of one of its maps) is run on a thread of its own that first drops
/// CAP_BPF and CAP_SYS_ADMIN from its effective set (capabilities are per thread), and fails
/// with EPERM on kernels that check on every call. Then CAP_BPF is kept (CAP_SYS_ADMIN where
/// the process has no CAP_BPF: kernels before 5.8).
pub fn map_reads_need(read: impl FnOnce() -> std::io::Result<()> + Send) -> Option<Capability> {
    let refused = std::thread::scope(|s| {
        s.spawn(|| {
            for cap in [Capability::CAP_BPF, Capability::CAP_SYS_ADMIN] {
                let _ = caps::drop(None, CapSet::Effective, cap);
            }
            let refused = read().is_err_and(|e| e.raw_os_error() == Some(libc::EPERM));
            // The thread's exit can still be under way when `join` returns (the kernel wakes
            // the joiner before it unlists the thread), and such a thread must not be seen
            // holding privileges the process has dropped: it drops all of its own first.
            for set in [CapSet::Effective, CapSet::Inheritable, CapSet::Permitted] {
                let _ = caps::clear(None, set);
            }
            refused
        })
        .join()
        .unwrap_or(false)
    });
    if !refused {
        return None;
    }
    let permitted = caps::read(None, CapSet::Permitted).unwrap_or_default();
    [Capability::CAP_BPF, Capability::CAP_SYS_ADMIN].into_iter().find(|c| permitted.contains(c))
}

/// Whether `attach` (attaching a uprobe) fails without CAP_SYS_ADMIN, on a thread of its own
/// that drops it from its effective set first, keeping CAP_PERFMON. From 5.8 on CAP_PERFMON is
/// enough for the kernel's uprobe events; some kernels still ask for CAP_SYS_ADMIN. The TLS capture attaches uprobes after start-up, so it keeps what the
/// kernel asks for.
pub fn uprobes_need_sys_admin(attach: impl FnOnce() -> bool + Send) -> bool {
    let permitted = caps::read(None, CapSet::Permitted).unwrap_or_default();
    if !permitted.contains(&Capability::CAP_SYS_ADMIN) {
        return false;
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            let _ = caps::drop(None, CapSet::Effective, Capability::CAP_SYS_ADMIN);
            let ok = attach();
            // As in `map_reads_need`: an exiting thread holds no privilege.
            for set in [CapSet::Effective, CapSet::Inheritable, CapSet::Permitted] {
                let _ = caps::clear(None, set);
            }
            !ok
        })
        .join()
        .unwrap_or(true)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_flag() {
        assert!(parse_keep("none").unwrap().is_empty());
        assert!(parse_keep("").unwrap().is_empty());
        let k = parse_keep("cap_bpf, PERFMON,CAP_NET_ADMIN").unwrap();
        assert_eq!(k.len(), 3);
        assert!(k.contains(&Capability::CAP_PERFMON));
        assert!(parse_keep("cap_nope").is_err());
    }

    #[test]
    fn missing_capabilities() {
        use Capability::*;
        let set = |c: &[Capability]| c.iter().copied().collect::<CapsHashSet>();
        assert!(missing(&caps::all(), true, true).is_empty());
        assert_eq!(missing(&set(&[]), true, true), vec!["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"]);
        assert!(missing(&set(&[CAP_SYS_ADMIN]), true, false).is_empty());
        assert_eq!(missing(&set(&[CAP_BPF, CAP_PERFMON]), true, true), vec!["CAP_NET_ADMIN"]);
        // netbpf alone: CAP_BPF and CAP_NET_ADMIN.
        assert!(missing(&set(&[CAP_BPF, CAP_NET_ADMIN]), false, true).is_empty());
    }
}
