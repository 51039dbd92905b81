//! The Prometheus registry behind every daemon's `/metrics` (`prometheus-client`):
//! labelled counters, histograms and gauges, label values bounded and cleaned,
//! `deploykit_build_info` and the `process_*` series read from `/proc/self`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};

/// A series' labels: `(name, value)` pairs in a fixed order.
type Labels = Vec<(&'static str, String)>;

/// The value a label takes for anything outside its allowed set.
pub const OTHER: &str = "other";

/// The longest label value kept (longer ones are cut).
const MAX_LABEL: usize = 100;

/// Durations' histogram buckets, in seconds (a fetch or a hook: 50 ms to 10 min).
pub const DURATION_BUCKETS: [f64; 12] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 600.0];

/// Why `/metrics` could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The text encoder failed.
    #[error("encoding the metrics: {0}")]
    Encode(#[from] std::fmt::Error),
}

/// A label value safe for the text format: characters outside `[A-Za-z0-9._:/@+-]`
/// become `_`, and it is cut to 100 characters (never empty).
pub fn clean(value: &str) -> String {
    let v: String = value.chars().take(MAX_LABEL).map(|c| if c.is_ascii_alphanumeric() || "._:/@+-".contains(c) { c } else { '_' }).collect();
    if v.is_empty() {
        "_".into()
    } else {
        v
    }
}

/// The values a label may take (configured names); anything else is [`OTHER`].
/// Clones share the set, so a reload can add the names it configures.
#[derive(Debug, Clone, Default)]
pub struct Allowed(Arc<RwLock<HashSet<String>>>);

impl Allowed {
    /// These names, as configured.
    pub fn new<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> Allowed {
        let a = Allowed::default();
        a.add(names);
        a
    }

    /// Allows these names too (a reload's; names are never removed, so the series stay bounded
    /// by every name ever configured in this process).
    pub fn add<S: AsRef<str>>(&self, names: impl IntoIterator<Item = S>) {
        self.0.write().unwrap_or_else(|p| p.into_inner()).extend(names.into_iter().map(|s| s.as_ref().to_owned()));
    }

    /// `value` (cleaned) when allowed, else `other`.
    pub fn label(&self, value: &str) -> String {
        if self.0.read().unwrap_or_else(|p| p.into_inner()).contains(value) {
            clean(value)
        } else {
            OTHER.into()
        }
    }
}

/// A counter family with fixed label names.
#[derive(Debug, Clone)]
pub struct CounterVec {
    family: Family<Labels, Counter>,
    names: &'static [&'static str],
}

impl CounterVec {
    /// Adds one to the series with these label values (in the names' order; cleaned).
    pub fn inc(&self, values: &[&str]) {
        self.family.get_or_create(&labels(self.names, values)).inc();
    }

    /// The current value of a series (0 if never counted).
    pub fn get(&self, values: &[&str]) -> u64 {
        self.family.get(&labels(self.names, values)).map_or(0, |c| c.get())
    }
}

/// Builds histograms with [`DURATION_BUCKETS`].
#[derive(Debug, Clone, Copy, Default)]
struct Buckets;

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(DURATION_BUCKETS)
    }
}

/// A histogram family (seconds) with fixed label names.
#[derive(Debug, Clone)]
pub struct HistogramVec {
    family: Family<Labels, Histogram, Buckets>,
    names: &'static [&'static str],
}

impl HistogramVec {
    /// Records `seconds` in the series with these label values.
    pub fn observe(&self, values: &[&str], seconds: f64) {
        self.family.get_or_create(&labels(self.names, values)).observe(seconds);
    }
}

/// An integer gauge family with fixed label names.
#[derive(Debug, Clone)]
pub struct GaugeVec {
    family: Family<Labels, Gauge>,
    names: &'static [&'static str],
}

impl GaugeVec {
    /// Sets the series with these label values.
    pub fn set(&self, values: &[&str], value: i64) {
        self.family.get_or_create(&labels(self.names, values)).set(value);
    }
}

/// A gauge (a float value that goes up and down) without labels of its own.
pub type FloatGauge = Gauge<f64, AtomicU64>;

fn labels(names: &'static [&'static str], values: &[&str]) -> Labels {
    names.iter().zip(values.iter().chain(std::iter::repeat(&"_"))).map(|(n, v)| (*n, clean(v))).collect()
}

/// Code run before each scrape (to refresh gauges).
type Refresh = Box<dyn Fn() + Send + Sync>;

/// One daemon's metrics: every series carries `daemon="NAME"`.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    refresh: Arc<Mutex<Vec<Refresh>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// An empty registry for `daemon`, with `deploykit_build_info` and the `process_*` series.
    pub fn new(daemon: &str) -> Metrics {
        let registry = Registry::with_labels(std::iter::once((Cow::Borrowed("daemon"), Cow::Owned(clean(daemon)))));
        let m = Metrics { registry: Arc::new(Mutex::new(registry)), refresh: Arc::default() };
        let info = Family::<Labels, Gauge>::default();
        info.get_or_create(&vec![("version", clean(env!("CARGO_PKG_VERSION")))]).set(1);
        m.register("deploykit_build_info", "deploykit's version (always 1).", info);
        crate::health::process::register(&m);
        m
    }

    /// Registers any `prometheus-client` metric under `name`.
    pub fn register(&self, name: &str, help: &str, metric: impl prometheus_client::registry::Metric) {
        // The encoder ends the help text with a period of its own.
        self.registry.lock().unwrap_or_else(|p| p.into_inner()).register(name, help.trim_end_matches('.'), metric);
    }

    /// A new counter family `NAME_total` labelled by `names`.
    pub fn counter(&self, name: &str, help: &str, names: &'static [&'static str]) -> CounterVec {
        let family = Family::default();
        self.register(name, help, family.clone());
        CounterVec { family, names }
    }

    /// A new histogram family (seconds, [`DURATION_BUCKETS`]) labelled by `names`.
    pub fn histogram(&self, name: &str, help: &str, names: &'static [&'static str]) -> HistogramVec {
        let family = Family::new_with_constructor(Buckets);
        self.register(name, help, family.clone());
        HistogramVec { family, names }
    }

    /// A new integer gauge family labelled by `names`.
    pub fn gauges(&self, name: &str, help: &str, names: &'static [&'static str]) -> GaugeVec {
        let family = Family::default();
        self.register(name, help, family.clone());
        GaugeVec { family, names }
    }

    /// A new unlabelled gauge.
    pub fn gauge(&self, name: &str, help: &str) -> FloatGauge {
        let g = FloatGauge::default();
        self.register(name, help, g.clone());
        g
    }

    /// An integer gauge set by `value` at every scrape (a spool's depth, a state).
    pub fn gauge_fn(&self, name: &str, help: &str, value: impl Fn() -> i64 + Send + Sync + 'static) {
        let g = Gauge::<i64>::default();
        self.register(name, help, g.clone());
        self.on_scrape(move || {
            g.set(value());
        });
    }

    /// A float gauge set by `value` at every scrape (a timestamp).
    pub fn float_gauge_fn(&self, name: &str, help: &str, value: impl Fn() -> f64 + Send + Sync + 'static) {
        let g = self.gauge(name, help);
        self.on_scrape(move || {
            g.set(value());
        });
    }

    /// Runs `f` before every scrape.
    pub fn on_scrape(&self, f: impl Fn() + Send + Sync + 'static) {
        self.refresh.lock().unwrap_or_else(|p| p.into_inner()).push(Box::new(f));
    }

    /// The text exposition (OpenMetrics text, which Prometheus' text parsers read).
    pub fn encode(&self) -> Result<String, MetricsError> {
        for f in self.refresh.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            f();
        }
        let mut out = String::new();
        encode(&mut out, &self.registry.lock().unwrap_or_else(|p| p.into_inner()))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_cleaned_and_bounded() {
        assert_eq!(clean("www"), "www");
        assert_eq!(clean("a\"b\\c\nd e"), "a_b_c_d_e");
        assert_eq!(clean(""), "_");
        assert_eq!(clean(&"x".repeat(500)).len(), 100);
        let allowed = Allowed::new(["www", "api"]);
        assert_eq!((allowed.label("www").as_str(), allowed.label("evil\"}").as_str()), ("www", OTHER));
        allowed.clone().add(["blog"]);
        assert_eq!(allowed.label("blog"), "blog");
    }

    #[test]
    fn encodes_families_with_the_daemon_label() {
        let m = Metrics::new("dk-test");
        let c = m.counter("deploykit_fetches", "Fetches.", &["repo", "result"]);
        c.inc(&["www", "ok"]);
        c.inc(&["www", "ok"]);
        c.inc(&["a\"b", "failed"]);
        let h = m.histogram("deploykit_fetch_duration_seconds", "Fetch time.", &["repo"]);
        h.observe(&["www"], 0.3);
        m.gauge_fn("deploykit_spool_depth", "Spooled.", || 4);
        let text = m.encode().unwrap();
        assert!(text.contains("# TYPE deploykit_fetches counter\n"), "{text}");
        assert!(text.contains("deploykit_fetches_total{daemon=\"dk-test\",repo=\"www\",result=\"ok\"} 2\n"), "{text}");
        assert!(text.contains("deploykit_fetches_total{daemon=\"dk-test\",repo=\"a_b\",result=\"failed\"} 1\n"), "{text}");
        assert!(
            text.contains(
                "deploykit_fetch_duration_seconds_bucket{daemon=\"dk-test\",le=\"0.5\",repo=\"www\"} 1
"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "# HELP deploykit_fetches Fetches.
"
            ),
            "{text}"
        );
        assert!(text.contains("deploykit_spool_depth{daemon=\"dk-test\"} 4\n"), "{text}");
        assert!(text.contains("deploykit_build_info{daemon=\"dk-test\",version=\""), "{text}");
        assert!(text.contains("process_start_time_seconds{daemon=\"dk-test\"} "), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(c.get(&["www", "ok"]), 2);
    }
}
