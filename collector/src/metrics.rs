//! Building Prometheus metric families from collected values, and the collector framework:
//! every poller implements [`Collector`]; the [`Registry`] runs them on each scrape, records
//! their success and duration, and adds the collector's own metrics.
use std::time::Instant;

use prometheus::proto::{Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType};

/// One metric family under construction.
pub struct Family {
    mf: MetricFamily,
}

impl Family {
    fn new(name: &str, help: &str, t: MetricType) -> Self {
        let mut mf = MetricFamily::default();
        mf.set_name(name.to_owned());
        mf.set_help(help.to_owned());
        mf.set_field_type(t);
        Self { mf }
    }

    pub fn counter(name: &str, help: &str) -> Self {
        Self::new(name, help, MetricType::COUNTER)
    }

    pub fn gauge(name: &str, help: &str) -> Self {
        Self::new(name, help, MetricType::GAUGE)
    }

    pub fn histogram(name: &str, help: &str) -> Self {
        Self::new(name, help, MetricType::HISTOGRAM)
    }

    fn metric(labels: &[(&str, &str)]) -> Metric {
        let label = labels
            .iter()
            .map(|(k, v)| {
                let mut l = LabelPair::default();
                l.set_name((*k).to_owned());
                l.set_value((*v).to_owned());
                l
            })
            .collect();
        Metric::from_label(label)
    }

    /// Adds one sample; the family's type decides whether it is a counter or a gauge.
    pub fn add(&mut self, labels: &[(&str, &str)], value: f64) -> &mut Self {
        let mut m = Self::metric(labels);
        if self.mf.get_field_type() == MetricType::COUNTER {
            let mut c = Counter::default();
            c.set_value(value);
            m.set_counter(c);
        } else {
            let mut g = Gauge::default();
            g.set_value(value);
            m.set_gauge(g);
        }
        self.mf.mut_metric().push(m);
        self
    }

    /// Adds one histogram from per-bucket (non-cumulative) counts; `upper` gives each bucket's
    /// upper bound, `None` for the +Inf bucket (which the exposition adds itself).
    pub fn add_histogram(
        &mut self,
        labels: &[(&str, &str)],
        counts: &[u64],
        upper: impl Fn(usize) -> Option<f64>,
        sum: f64,
    ) -> &mut Self {
        let mut m = Self::metric(labels);
        let mut h = Histogram::default();
        let mut cumulative = 0u64;
        let mut buckets = Vec::with_capacity(counts.len());
        for (i, c) in counts.iter().enumerate() {
            cumulative += c;
            if let Some(ub) = upper(i) {
                let mut b = Bucket::default();
                b.set_upper_bound(ub);
                b.set_cumulative_count(cumulative);
                buckets.push(b);
            }
        }
        h.set_bucket(buckets);
        h.set_sample_count(cumulative);
        h.set_sample_sum(sum);
        m.set_histogram(h);
        self.mf.mut_metric().push(m);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.mf.get_metric().is_empty()
    }

    pub fn build(self) -> MetricFamily {
        self.mf
    }
}

/// Output of one collector run.
#[derive(Default)]
pub struct Out {
    pub families: Vec<MetricFamily>,
}

impl Out {
    /// Adds a family; families without samples are left out (the format forbids nothing, but
    /// an empty family is noise).
    pub fn push(&mut self, f: Family) {
        if !f.is_empty() {
            self.families.push(f.build());
        }
    }
}

/// A source of metrics polled on every scrape.
pub trait Collector: Send + Sync {
    /// The name used in `--collector.<name>` and in the `collector` label.
    fn name(&self) -> &'static str;
    fn collect(&self, out: &mut Out) -> anyhow::Result<()>;
}

/// A collector that is not running, and why.
#[derive(Clone, Debug)]
pub struct Skipped {
    pub name: &'static str,
    pub reason: String,
}

/// An eBPF program and the hook it was meant for.
#[derive(Clone, Debug)]
pub struct ProgramStatus {
    pub program: &'static str,
    pub hook: String,
    pub attached: bool,
}

/// Everything one scrape reports.
pub struct Registry {
    pub collectors: Vec<Box<dyn Collector>>,
    pub skipped: Vec<Skipped>,
    pub disabled: Vec<&'static str>,
    pub programs: Vec<ProgramStatus>,
    pub drops: Option<crate::bpf::Drops>,
    process: prometheus::process_collector::ProcessCollector,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    pub fn new() -> Self {
        Self {
            collectors: Vec::new(),
            skipped: Vec::new(),
            disabled: Vec::new(),
            programs: Vec::new(),
            drops: None,
            process: prometheus::process_collector::ProcessCollector::for_self(),
        }
    }

    /// Runs every collector and returns the families sorted by name, self metrics included.
    pub fn gather(&self) -> Vec<MetricFamily> {
        use prometheus::core::Collector as _;
        let mut families = Vec::new();
        let mut success = Family::gauge(
            "collector_scrape_collector_success",
            "Whether the collector succeeded on this scrape (1) or failed (0).",
        );
        let mut duration = Family::gauge(
            "collector_scrape_collector_duration_seconds",
            "How long the collector took on this scrape, in seconds.",
        );
        for c in &self.collectors {
            let start = Instant::now();
            let mut out = Out::default();
            // A parser that panics on bad input (procfs-core's meminfo does on some non-ASCII
            // bytes) fails its collector only, not the scrape.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.collect(&mut out)))
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the collector panicked")));
            let ok = match result {
                Ok(()) => {
                    families.append(&mut out.families);
                    true
                }
                Err(e) => {
                    tracing::warn!(collector = c.name(), error = format!("{e:#}"), "collector failed");
                    false
                }
            };
            success.add(&[("collector", c.name())], if ok { 1.0 } else { 0.0 });
            duration.add(&[("collector", c.name())], start.elapsed().as_secs_f64());
        }
        let mut out = Out::default();
        out.push(success);
        out.push(duration);
        self.self_metrics(&mut out);
        families.append(&mut out.families);
        families.extend(self.process.collect());
        families.sort_by(|a, b| a.name().cmp(b.name()));
        families
    }

    fn self_metrics(&self, out: &mut Out) {
        let mut enabled = Family::gauge(
            "collector_collector_enabled",
            "Whether a collector is running (1), or disabled by flag or skipped at start (0).",
        );
        for c in &self.collectors {
            enabled.add(&[("collector", c.name())], 1.0);
        }
        for name in self.disabled.iter().copied().chain(self.skipped.iter().map(|s| s.name)) {
            enabled.add(&[("collector", name)], 0.0);
        }
        out.push(enabled);
        let mut skipped = Family::gauge(
            "collector_collector_skipped_info",
            "A collector that was enabled but could not start, with the reason (always 1).",
        );
        for s in &self.skipped {
            skipped.add(&[("collector", s.name), ("reason", &s.reason)], 1.0);
        }
        out.push(skipped);
        let mut attached = Family::gauge(
            "collector_bpf_program_attached",
            "Whether an eBPF program is attached to its hook (1) or not (0).",
        );
        for p in &self.programs {
            attached.add(&[("program", p.program), ("hook", &p.hook)], if p.attached { 1.0 } else { 0.0 });
        }
        out.push(attached);
        if let Some(drops) = &self.drops {
            let mut f = Family::counter(
                "collector_bpf_events_dropped_total",
                "Kernel events not recorded: a bounded map was full, or a completion had no matching start.",
            );
            match drops.read() {
                Ok(counts) => {
                    for (reason, n) in counts {
                        f.add(&[("reason", reason)], n as f64);
                    }
                }
                Err(e) => tracing::warn!(error = format!("{e:#}"), "reading the DROPS map failed"),
            }
            out.push(f);
        }
        let mut info = Family::gauge("collector_build_info", "Build information of the collector (always 1).");
        info.add(
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("revision", env!("COLLECTOR_GIT_REVISION")),
                ("rustc", env!("COLLECTOR_RUSTC_VERSION")),
            ],
            1.0,
        );
        out.push(info);
    }

    /// Prometheus text exposition of [`Registry::gather`].
    pub fn encode(&self) -> anyhow::Result<Vec<u8>> {
        use prometheus::Encoder as _;
        let families = self.gather();
        let mut buf = Vec::with_capacity(64 * 1024);
        prometheus::TextEncoder::new().encode(&families, &mut buf)?;
        Ok(buf)
    }
}
