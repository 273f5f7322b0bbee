//! Metric families built from collected values, written as the Prometheus text exposition
//! (format 0.0.4), and the collector framework: every poller implements [`Collector`]; the
//! [`Registry`] runs them on each scrape, records their success and duration, and adds the
//! collector's own metrics.
//!
//! Families keep each sample's labels already escaped and rendered (`name="value",…`) and write
//! the text themselves, the same bytes prometheus's `TextEncoder` writes for the same data (a
//! test below checks this). At 100k series the scrape was dominated by building one protobuf
//! message per series (one allocation per label name and value, per bucket) and by the
//! encoder formatting every label, bucket bound and count anew on each line; here a histogram's
//! label text is rendered once per label set, its `le` values once per family, and counts go
//! through `itoa`.
use std::{io::Write as _, time::Instant};

use prometheus::proto::{MetricFamily, MetricType};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

enum Value {
    Number(f64),
    /// Cumulative counts per finite upper bound; the +Inf bucket is `count`.
    Histogram {
        buckets: Vec<(f64, u64)>,
        count: u64,
        sum: f64,
    },
}

struct Sample {
    /// The label pairs as written between the braces (`a="x",b="y"`), empty without labels.
    labels: String,
    value: Value,
}

/// One metric family under construction.
pub struct Family {
    name: String,
    help: String,
    kind: Kind,
    samples: Vec<Sample>,
}

/// Appends `v` escaped as the text format wants it: `\` and newline always, `"` in label values.
fn escape_into(out: &mut Vec<u8>, v: &str, quote: bool) {
    if !v.bytes().any(|b| b == b'\\' || b == b'\n' || (quote && b == b'"')) {
        out.extend_from_slice(v.as_bytes());
        return;
    }
    let mut start = 0;
    for (i, b) in v.bytes().enumerate() {
        let esc: &[u8] = match b {
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'"' if quote => b"\\\"",
            _ => continue,
        };
        out.extend_from_slice(&v.as_bytes()[start..i]);
        out.extend_from_slice(esc);
        start = i + 1;
    }
    out.extend_from_slice(&v.as_bytes()[start..]);
}

fn render_labels<'a>(labels: impl IntoIterator<Item = (&'a str, &'a str)> + Clone) -> String {
    // `k="v",` per label, plus room for a few escapes.
    let len: usize = labels.clone().into_iter().map(|(k, v)| k.len() + v.len() + 4).sum();
    let mut out = Vec::with_capacity(len + 8);
    for (i, (k, v)) in labels.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b"=\"");
        escape_into(&mut out, v, true);
        out.push(b'"');
    }
    // Only UTF-8 input, and escapes are ASCII.
    String::from_utf8(out).expect("label text is UTF-8")
}

/// 2^53: below it, every integral f64 is an exact integer and prints like one.
const EXACT_INTEGER: f64 = 9_007_199_254_740_992.0;

/// Writes a sample value as Rust's `Display` for f64 does (what `TextEncoder` uses): integral
/// values through `itoa`, the rest through `Display`.
fn write_f64(out: &mut Vec<u8>, v: f64, num: &mut itoa::Buffer) {
    if v.fract() == 0.0 && v.abs() < EXACT_INTEGER && !(v == 0.0 && v.is_sign_negative()) {
        out.extend_from_slice(num.format(v as i64).as_bytes());
    } else {
        write!(out, "{v}").expect("writing to a Vec cannot fail");
    }
}

impl Family {
    fn new(name: &str, help: &str, kind: Kind) -> Self {
        Self { name: name.to_owned(), help: help.to_owned(), kind, samples: Vec::new() }
    }

    pub fn counter(name: &str, help: &str) -> Self {
        Self::new(name, help, Kind::Counter)
    }

    pub fn gauge(name: &str, help: &str) -> Self {
        Self::new(name, help, Kind::Gauge)
    }

    pub fn histogram(name: &str, help: &str) -> Self {
        Self::new(name, help, Kind::Histogram)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds one sample; the family's type decides whether it is a counter or a gauge.
    pub fn add(&mut self, labels: &[(&str, &str)], value: f64) -> &mut Self {
        debug_assert!(self.kind != Kind::Histogram, "{}: add on a histogram", self.name);
        self.samples.push(Sample { labels: render_labels(labels.iter().copied()), value: Value::Number(value) });
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
        debug_assert!(self.kind == Kind::Histogram, "{}: add_histogram on a {:?}", self.name, self.kind);
        let mut cumulative = 0u64;
        let mut buckets = Vec::with_capacity(counts.len());
        for (i, c) in counts.iter().enumerate() {
            cumulative += c;
            // An infinite bound is the +Inf bucket, written with the count below.
            if let Some(ub) = upper(i).filter(|ub| *ub != f64::INFINITY) {
                buckets.push((ub, cumulative));
            }
        }
        self.samples.push(Sample {
            labels: render_labels(labels.iter().copied()),
            value: Value::Histogram { buckets, count: cumulative, sum },
        });
        self
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// A family gathered from the prometheus crate (the process collector): counters, gauges
    /// and histograms; `None` for other types, which no collector here produces.
    pub fn from_proto(mf: &MetricFamily) -> Option<Self> {
        let kind = match mf.get_field_type() {
            MetricType::COUNTER => Kind::Counter,
            MetricType::GAUGE => Kind::Gauge,
            MetricType::HISTOGRAM => Kind::Histogram,
            _ => return None,
        };
        let mut f = Self::new(mf.name(), mf.help(), kind);
        for m in mf.get_metric() {
            let labels = render_labels(m.get_label().iter().map(|l| (l.name(), l.value())));
            let value = match kind {
                Kind::Counter => Value::Number(m.get_counter().value()),
                Kind::Gauge => Value::Number(m.get_gauge().value()),
                Kind::Histogram => {
                    let h = m.get_histogram();
                    Value::Histogram {
                        buckets: h
                            .get_bucket()
                            .iter()
                            .filter(|b| b.upper_bound() != f64::INFINITY)
                            .map(|b| (b.upper_bound(), b.cumulative_count()))
                            .collect(),
                        count: h.get_sample_count(),
                        sum: h.get_sample_sum(),
                    }
                }
            };
            f.samples.push(Sample { labels, value });
        }
        Some(f)
    }

    /// About the number of bytes [`Family::write`] appends (at least that many for the
    /// collectors here), so the exposition is allocated once.
    pub fn size_hint(&self) -> usize {
        const VALUE: usize = 24;
        let header = 2 * self.name.len() + self.help.len() + 32;
        let line = |labels: &String| self.name.len() + labels.len() + 12 + VALUE;
        header
            + self
                .samples
                .iter()
                .map(|s| match &s.value {
                    Value::Number(_) => line(&s.labels),
                    Value::Histogram { buckets, .. } => (buckets.len() + 3) * (line(&s.labels) + 16),
                })
                .sum::<usize>()
    }

    /// Appends the family in the text exposition format 0.0.4: `# HELP`, `# TYPE`, samples
    /// in the order they were added.
    pub fn write(&self, out: &mut Vec<u8>) {
        let name = self.name.as_bytes();
        if !self.help.is_empty() {
            out.extend_from_slice(b"# HELP ");
            out.extend_from_slice(name);
            out.push(b' ');
            escape_into(out, &self.help, false);
            out.push(b'\n');
        }
        out.extend_from_slice(b"# TYPE ");
        out.extend_from_slice(name);
        out.push(b' ');
        out.extend_from_slice(self.kind.as_str().as_bytes());
        out.push(b'\n');

        let mut num = itoa::Buffer::new();
        // `le` values of the last bounds seen: every histogram of a family has the same ones.
        let mut le: Vec<(u64, String)> = Vec::new();
        // `name{labels}` or `name` followed by a suffix.
        let labelled = |out: &mut Vec<u8>, suffix: &[u8], labels: &str| {
            out.extend_from_slice(name);
            out.extend_from_slice(suffix);
            if !labels.is_empty() {
                out.push(b'{');
                out.extend_from_slice(labels.as_bytes());
                out.push(b'}');
            }
            out.push(b' ');
        };
        for s in &self.samples {
            match &s.value {
                Value::Number(v) => {
                    labelled(out, b"", &s.labels);
                    write_f64(out, *v, &mut num);
                    out.push(b'\n');
                }
                Value::Histogram { buckets, count, sum } => {
                    let bucket = |out: &mut Vec<u8>, bound: &[u8], n: u64, num: &mut itoa::Buffer| {
                        out.extend_from_slice(name);
                        out.extend_from_slice(b"_bucket{");
                        if !s.labels.is_empty() {
                            out.extend_from_slice(s.labels.as_bytes());
                            out.push(b',');
                        }
                        out.extend_from_slice(b"le=\"");
                        out.extend_from_slice(bound);
                        out.extend_from_slice(b"\"} ");
                        out.extend_from_slice(num.format(n).as_bytes());
                        out.push(b'\n');
                    };
                    for (i, (ub, n)) in buckets.iter().enumerate() {
                        if le.get(i).is_none_or(|(bits, _)| *bits != ub.to_bits()) {
                            le.truncate(i);
                            le.push((ub.to_bits(), ub.to_string()));
                        }
                        bucket(out, le[i].1.as_bytes(), *n, &mut num);
                    }
                    bucket(out, b"+Inf", *count, &mut num);
                    labelled(out, b"_sum", &s.labels);
                    write_f64(out, *sum, &mut num);
                    out.push(b'\n');
                    labelled(out, b"_count", &s.labels);
                    out.extend_from_slice(num.format(*count).as_bytes());
                    out.push(b'\n');
                }
            }
        }
    }
}

/// Output of one collector run.
#[derive(Default)]
pub struct Out {
    pub families: Vec<Family>,
}

impl Out {
    /// Adds a family; families without samples are left out (the format forbids nothing, but
    /// an empty family is noise).
    pub fn push(&mut self, f: Family) {
        if !f.is_empty() {
            self.families.push(f);
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

/// Everything one scrape reports.
pub struct Registry {
    pub collectors: Vec<Box<dyn Collector>>,
    pub skipped: Vec<Skipped>,
    pub disabled: Vec<&'static str>,
    /// Metrics about the collector itself (the eBPF loader's): gathered with the scrape, but
    /// not collectors (no `collector` label series of their own).
    pub sources: Vec<Box<dyn Collector>>,
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
            sources: Vec::new(),
            process: prometheus::process_collector::ProcessCollector::for_self(),
        }
    }

    /// Runs every collector and returns the families sorted by name, self metrics included.
    pub fn gather(&self) -> Vec<Family> {
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
        families.extend(self.process.collect().iter().filter_map(Family::from_proto));
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
        for s in &self.sources {
            if let Err(e) = s.collect(out) {
                tracing::warn!(source = s.name(), error = format!("{e:#}"), "self metrics failed");
            }
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
        let families = self.gather();
        let mut buf = Vec::with_capacity(families.iter().map(Family::size_hint).sum());
        for f in &families {
            f.write(&mut buf);
        }
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    //! The exposition written by [`Family`] against prometheus's `TextEncoder` on the same data
    //! (the families built as protobuf messages, as this module did before writing text itself).
    use prometheus::{
        TextEncoder,
        proto::{Bucket, Counter, Gauge, Histogram, LabelPair, Metric},
    };

    use super::*;

    /// Builds the same family as protobuf messages.
    struct Reference(MetricFamily);

    impl Reference {
        fn new(name: &str, help: &str, t: MetricType) -> Self {
            let mut mf = MetricFamily::default();
            mf.set_name(name.to_owned());
            mf.set_help(help.to_owned());
            mf.set_field_type(t);
            Self(mf)
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

        fn add(&mut self, labels: &[(&str, &str)], value: f64) {
            let mut m = Self::metric(labels);
            if self.0.get_field_type() == MetricType::COUNTER {
                let mut c = Counter::default();
                c.set_value(value);
                m.set_counter(c);
            } else {
                let mut g = Gauge::default();
                g.set_value(value);
                m.set_gauge(g);
            }
            self.0.mut_metric().push(m);
        }

        fn add_histogram(
            &mut self,
            labels: &[(&str, &str)],
            counts: &[u64],
            upper: impl Fn(usize) -> Option<f64>,
            sum: f64,
        ) {
            let mut m = Self::metric(labels);
            let mut h = Histogram::default();
            let mut cumulative = 0u64;
            let mut buckets = Vec::new();
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
            self.0.mut_metric().push(m);
        }
    }

    fn ours(families: &[Family]) -> String {
        let mut out = Vec::new();
        for f in families {
            f.write(&mut out);
        }
        String::from_utf8(out).unwrap()
    }

    fn theirs(families: &[Reference]) -> String {
        let protos: Vec<MetricFamily> = families.iter().map(|r| r.0.clone()).collect();
        TextEncoder::new().encode_to_string(&protos).unwrap()
    }

    /// (series name with labels, value) of every sample line, and the comment lines.
    fn parse(text: &str) -> (Vec<(String, f64)>, Vec<&str>) {
        let mut samples = Vec::new();
        let mut comments = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') {
                comments.push(line);
            } else {
                let (series, value) = line.rsplit_once(' ').unwrap();
                let v = match value {
                    "+Inf" | "inf" => f64::INFINITY,
                    "-Inf" | "-inf" => f64::NEG_INFINITY,
                    v => v.parse().unwrap(),
                };
                samples.push((series.to_owned(), v));
            }
        }
        (samples, comments)
    }

    fn assert_same(ours_text: &str, theirs_text: &str) {
        let (a, b) = (parse(ours_text), parse(theirs_text));
        assert_eq!(a.1, b.1, "HELP/TYPE lines differ");
        assert_eq!(a.0.len(), b.0.len(), "number of samples differs");
        for (x, y) in a.0.iter().zip(&b.0) {
            assert_eq!(x.0, y.0);
            assert!(x.1 == y.1 || (x.1.is_nan() && y.1.is_nan()), "{}: {} vs {}", x.0, x.1, y.1);
        }
        // Beyond the same series and values: the same bytes.
        assert_eq!(ours_text, theirs_text);
    }

    const VALUES: [f64; 20] = [
        0.0,
        -0.0,
        1.0,
        -3.0,
        42.5,
        0.001,
        1e-7,
        123_456_789.0,
        1e15 + 0.5,
        9_007_199_254_740_991.0,
        9_007_199_254_740_992.0,
        1e20,
        -1e300,
        f64::MAX,
        f64::MIN_POSITIVE,
        1.0 / 3.0,
        6.02214076e23,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
    ];

    #[test]
    fn counters_and_gauges_match_text_encoder() {
        let mut f = [Family::counter("a_total", "Some counter."), Family::gauge("b", "")];
        let mut r = [
            Reference::new("a_total", "Some counter.", MetricType::COUNTER),
            Reference::new("b", "", MetricType::GAUGE),
        ];
        for (i, v) in VALUES.iter().enumerate() {
            let i = i.to_string();
            let labels = [("index", i.as_str()), ("kind", "x")];
            for (f, r) in f.iter_mut().zip(r.iter_mut()) {
                f.add(&labels, *v);
                r.add(&labels, *v);
                f.add(&[], *v);
                r.add(&[], *v);
            }
        }
        assert_same(&ours(&f), &theirs(&r));
    }

    #[test]
    fn escaping_matches_text_encoder() {
        let help = "Help with a \\ backslash,\na newline and \"quotes\" (not escaped in help).";
        let mut f = Family::gauge("escapes", help);
        let mut r = Reference::new("escapes", help, MetricType::GAUGE);
        for v in ["plain", "back\\slash", "new\nline", "\"quoted\"", "all \\\"\n\\n", "", "ünïcødé ✓", "\\"] {
            f.add(&[("v", v), ("w", "ok")], 1.0);
            r.add(&[("v", v), ("w", "ok")], 1.0);
        }
        let mut h = Family::histogram("escapes_hist", "");
        let mut rh = Reference::new("escapes_hist", "", MetricType::HISTOGRAM);
        h.add_histogram(&[("path", "C:\\x\n\"y\"")], &[1, 2, 3], |i| [0.5, 1.0].get(i).copied(), 2.5);
        rh.add_histogram(&[("path", "C:\\x\n\"y\"")], &[1, 2, 3], |i| [0.5, 1.0].get(i).copied(), 2.5);
        assert_same(&ours(&[f, h]), &theirs(&[r, rh]));
    }

    #[test]
    fn histograms_match_text_encoder() {
        use collector_common::{disk::bucket_upper_seconds, http::SIZE_BOUNDS};
        // The HTTP collector's default duration buckets, and unusual ones.
        let duration =
            [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
        let custom = [0.000001, 0.3, 7.0, 1e9];
        let dur_upper = |i: usize| duration.get(i).copied();
        let custom_upper = |i: usize| custom.get(i).copied();
        let size_upper = |i: usize| SIZE_BOUNDS.get(i).map(|b| *b as f64);
        let uppers: [&dyn Fn(usize) -> Option<f64>; 4] =
            [&dur_upper, &custom_upper, &size_upper, &bucket_upper_seconds];
        let lens =
            [duration.len() + 1, custom.len() + 1, SIZE_BOUNDS.len() + 1, collector_common::disk::LATENCY_BUCKETS];
        let mut ours_families = Vec::new();
        let mut theirs_families = Vec::new();
        for (n, (upper, len)) in uppers.iter().zip(lens).enumerate() {
            let name = format!("h{n}_seconds");
            let mut f = Family::histogram(&name, "A histogram.");
            let mut r = Reference::new(&name, "A histogram.", MetricType::HISTOGRAM);
            for (j, sum) in [0.0, 0.123456789, 17.0, 1e-9, 3e12].iter().enumerate() {
                let counts: Vec<u64> = (0..len as u64).map(|b| (b * 7 + j as u64 * 13) % 5 * 1_000_003).collect();
                let status = (200 + j).to_string();
                let labels = [
                    ("http_request_method", "GET"),
                    ("http_response_status_code", status.as_str()),
                    ("server_port", "8080"),
                    ("service_name", "nginx"),
                ];
                f.add_histogram(&labels, &counts, upper, *sum);
                r.add_histogram(&labels, &counts, upper, *sum);
                f.add_histogram(&[], &counts, upper, *sum);
                r.add_histogram(&[], &counts, upper, *sum);
            }
            ours_families.push(f);
            theirs_families.push(r);
        }
        assert_same(&ours(&ours_families), &theirs(&theirs_families));
    }

    #[test]
    fn process_families_match_text_encoder() {
        use prometheus::core::Collector as _;
        let protos = prometheus::process_collector::ProcessCollector::for_self().collect();
        assert!(!protos.is_empty());
        let families: Vec<Family> = protos.iter().map(|mf| Family::from_proto(mf).unwrap()).collect();
        let theirs = TextEncoder::new().encode_to_string(&protos).unwrap();
        assert_same(&ours(&families), &theirs);
    }

    #[test]
    fn registry_sorts_families_and_sizes_the_buffer() {
        struct Two;
        impl Collector for Two {
            fn name(&self) -> &'static str {
                "two"
            }
            fn collect(&self, out: &mut Out) -> anyhow::Result<()> {
                let mut z = Family::histogram("zz_seconds", "Last.");
                z.add_histogram(&[("a", "b")], &[1, 2, 3], |i| [0.1, 0.2].get(i).copied(), 0.5);
                out.push(z);
                out.push(Family::gauge("aa_empty", "Left out."));
                let mut a = Family::counter("aa_total", "First.");
                a.add(&[], 3.0);
                out.push(a);
                Ok(())
            }
        }
        let mut registry = Registry::new();
        registry.collectors.push(Box::new(Two));
        let families = registry.gather();
        let names: Vec<&str> = families.iter().map(Family::name).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert!(names.contains(&"aa_total") && names.contains(&"zz_seconds") && !names.contains(&"aa_empty"));
        for f in &families {
            let mut out = Vec::new();
            f.write(&mut out);
            assert!(out.len() <= f.size_hint(), "{}: {} bytes, hint {}", f.name(), out.len(), f.size_hint());
        }
        let text = String::from_utf8(registry.encode().unwrap()).unwrap();
        assert!(text.contains("zz_seconds_bucket{a=\"b\",le=\"0.2\"} 3\nzz_seconds_bucket{a=\"b\",le=\"+Inf\"} 6\n"));
        assert!(text.contains("# TYPE aa_total counter\naa_total 3\n"));
    }
}
