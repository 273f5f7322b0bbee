//! The probes themselves: attaching a file's (one link per program and file), detaching them
//! off the caller's thread, and the check of which capability the kernel wants for a uprobe.
use std::path::Path;

use anyhow::Context as _;
use aya::programs::{UProbe, uprobe::UProbeAttachLocation, uprobe::UProbeLinkId, uprobe::UProbeScope};
use collector_common::names::program;

use super::{Capture, elf};

impl Capture {
    /// Whether a uprobe attaches on this thread, detached at once; for
    /// [`crate::caps::uprobes_need_sys_admin`]. It goes on this executable, at the start of
    /// its writable segment in the file: the kernel installs breakpoints only in mappings that
    /// may execute and are not writable, so this one is installed nowhere (a probe on the ELF
    /// header would write a breakpoint into this process's read-only mapping of it).
    pub fn try_attach(&self) -> bool {
        let Some(off) = elf::writable_segment_offset(Path::new("/proc/self/exe")) else { return false };
        let prog = self.prog(program::TLS_FREE);
        let mut ebpf = self.ebpf.lock().unwrap();
        let Some(Ok(p)) = ebpf.program_mut(prog).map(<&mut UProbe>::try_from) else { return false };
        match p.attach([UProbeAttachLocation::AbsoluteOffset(off)], "/proc/self/exe", UProbeScope::AllProcesses) {
            Ok(link) => {
                let _ = p.detach(link);
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "tls: a uprobe without CAP_SYS_ADMIN");
                false
            }
        }
    }

    /// Attaches each program to its offsets in `file` (one link per program: a uprobe_multi
    /// link, or a probe per offset), and with `returns` the return probe on OpenSSL's read and
    /// write functions.
    pub(super) fn attach(
        &mut self,
        file: &Path,
        offsets: &[(&'static str, u64)],
        returns: bool,
    ) -> anyhow::Result<Vec<(&'static str, UProbeLinkId)>> {
        let mut by_prog: Vec<(&'static str, Vec<u64>)> = Vec::new();
        let mut add = |prog: &'static str, off: u64| match by_prog.iter_mut().find(|(p, _)| *p == prog) {
            Some((_, offs)) => offs.push(off),
            None => by_prog.push((prog, vec![off])),
        };
        for (prog, off) in offsets {
            add(self.prog(prog), *off);
            if returns && ![program::TLS_FREE, program::TLS_HANDSHAKE].contains(prog) {
                add(self.prog(program::TLS_RET), *off);
            }
        }
        let mut ebpf = self.ebpf.lock().unwrap();
        let mut links = Vec::new();
        let mut result = Ok(());
        for (prog, offs) in by_prog {
            let r = (|| -> anyhow::Result<()> {
                let p: &mut UProbe = ebpf.program_mut(prog).context("program missing")?.try_into()?;
                let at = offs.iter().map(|o| UProbeAttachLocation::AbsoluteOffset(*o));
                links.push((prog, p.attach(at, file, UProbeScope::AllProcesses).with_context(|| prog.to_string())?));
                Ok(())
            })();
            if r.is_err() {
                result = r;
                break;
            }
        }
        drop(ebpf);
        if let Err(e) = result {
            self.detach(links);
            return Err(e);
        }
        Ok(links)
    }

    /// Detaches probes, without waiting: the kernel waits for a grace period per link (or,
    /// before uprobe_multi links, per probe) it removes, so the links are closed on a thread of
    /// their own (see [`release`]), and no scrape waits for it.
    pub(super) fn detach(&mut self, links: Vec<(&'static str, UProbeLinkId)>) {
        let owned = self.take_links(links);
        let _ = std::thread::Builder::new().name("tls-detach".into()).spawn(move || release(owned));
    }

    /// Takes the links out of their programs, to close them outside the lock.
    pub(super) fn take_links(
        &mut self,
        links: Vec<(&'static str, UProbeLinkId)>,
    ) -> Vec<aya::programs::uprobe::UProbeLink> {
        let mut ebpf = self.ebpf.lock().unwrap();
        let mut out = Vec::new();
        for (prog, link) in links {
            if let Some(Ok(p)) = ebpf.program_mut(prog).map(<&mut UProbe>::try_from)
                && let Ok(l) = p.take_link(link)
            {
                out.push(l);
            }
        }
        out
    }
}

/// Closes uprobe links all at once, one thread each, and returns when all are closed: the
/// kernel's wait for a grace period after removing a probe is then shared by all of them where
/// it can be (uprobe_multi links; the kernel removes perf-event probes one after the other).
pub(super) fn release(links: Vec<aya::programs::uprobe::UProbeLink>) {
    std::thread::scope(|s| {
        for l in links {
            s.spawn(move || drop(l));
        }
    });
}
