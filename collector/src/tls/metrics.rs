//! The capture's self metrics: the files attached and the processes mapping each, the files
//! detached (by reason) or not attached (over the limit), skipped libraries, the watches.
use std::collections::HashMap;

use super::{Gone, Tls};
use crate::metrics::{Collector, Family, Out};

impl Collector for Tls {
    fn name(&self) -> &'static str {
        "tls"
    }

    fn collect(&self, out: &mut Out) -> anyhow::Result<()> {
        let c = self.0.lock().unwrap();
        let mut attached = Family::gauge(
            "collector_tls_attached",
            "Files (TLS libraries, binaries with OpenSSL linked in) the TLS uprobes are attached to, one \
             series per file, with the processes mapping it at the last scan in collector_tls_processes.",
        );
        let mut procs = Family::gauge(
            "collector_tls_processes",
            "Processes mapping a file the TLS uprobes are attached to, at the last scan.",
        );
        // A file that lost its name shows as maps show it: `PATH (deleted)`; files with the same
        // name (two deleted versions of a library, both still in use) add up.
        let mut by_path: std::collections::BTreeMap<(&str, String), (f64, f64)> = Default::default();
        for t in c.targets.values() {
            let path = if t.unlinked.is_some() { format!("{} (deleted)", t.path) } else { t.path.clone() };
            let e = by_path.entry((t.library, path)).or_default();
            e.0 += 1.0;
            e.1 += t.pids as f64;
        }
        for ((library, path), (n, pids)) in &by_path {
            attached.add(&[("library", library), ("path", path)], *n);
            procs.add(&[("library", library), ("path", path)], *pids);
        }
        out.push(attached);
        out.push(procs);
        let mut detached = Family::counter(
            "collector_tls_detached_files_total",
            "Files the TLS uprobes left: deleted or replaced (once no process maps them any more), or evicted \
             (the least recently used file no process maps, past --collector.http.tls-max-files).",
        );
        for (g, n) in Gone::ALL.iter().zip(c.detached) {
            detached.add(&[("reason", g.label())], n as f64);
        }
        out.push(detached);
        let mut full = Family::counter(
            "collector_tls_files_over_limit_total",
            "TLS libraries not attached because --collector.http.tls-max-files files were attached and all in use.",
        );
        full.add(&[], c.full as f64);
        out.push(full);
        let mut skipped = Family::gauge(
            "collector_tls_skipped_files",
            "Files holding a TLS implementation the capture does not follow, by reason (each logged once).",
        );
        let mut by_reason: HashMap<&str, usize> = HashMap::new();
        for (_, reason) in c.skipped.values() {
            *by_reason.entry(reason).or_default() += 1;
        }
        let mut reasons: Vec<_> = by_reason.into_iter().collect();
        reasons.sort();
        for (reason, n) in reasons {
            skipped.add(&[("reason", reason)], n as f64);
        }
        out.push(skipped);
        let mut watched = Family::gauge(
            "collector_tls_watched_files",
            "Files and directories watched (inotify): the files attached since start-up, for opens and \
             changes; the directories of OpenSSL libraries, for libraries written into them.",
        );
        watched.add(&[], c.opens.as_ref().map_or(0, |o| o.count()) as f64);
        out.push(watched);
        Ok(())
    }
}
