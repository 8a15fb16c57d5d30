//! The exposition: the render functions collect each family's samples here at scrape time,
//! and prometheus-client's Prometheus text encoder (format 0.0.4) writes the text. What the
//! request path counts stays in our shards; only the writer is the crate's.
//!
//! A counter is named here as users see its samples (`…_total`); the crate takes the name
//! without the suffix and appends it again to the `# HELP`/`# TYPE` lines and the samples.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// The `Content-Type` of what [`Exposition::into_text`] returns.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// A sample's value: integers are written as integers, floats as the crate formats them
/// (`NaN`, `+Inf`, `-Inf` for the odd ones).
#[derive(Debug, Clone, Copy)]
pub enum Value {
    Int(u64),
    Float(f64),
}

#[derive(Debug)]
enum Samples {
    Plain(Vec<(Vec<(String, String)>, Value)>),
    /// Per-bucket (not cumulative) counts by upper bound, the sum and the count.
    Histogram {
        buckets: Vec<(f64, u64)>,
        sum: f64,
        count: u64,
    },
}

#[derive(Debug)]
struct Family {
    /// Without a counter's `_total`.
    name: String,
    help: String,
    kind: MetricType,
    samples: Samples,
}

/// Every family of one scrape, in the order they were added.
#[derive(Debug, Default)]
pub struct Exposition {
    families: Vec<Family>,
}

impl Exposition {
    /// Starts family `name` of `kind` (`"counter"` or `"gauge"`); [`sample`] adds to it.
    pub(super) fn family(&mut self, name: &str, kind: &str, help: &str) {
        let kind = if kind == "counter" {
            MetricType::Counter
        } else {
            MetricType::Gauge
        };
        let name = match kind {
            MetricType::Counter => name.strip_suffix("_total").unwrap_or(name),
            _ => name,
        };
        self.families.push(Family {
            name: name.to_owned(),
            help: help.to_owned(),
            kind,
            samples: Samples::Plain(Vec::new()),
        });
    }

    /// A histogram family from pre-aggregated buckets: `(upper bound, count in that bucket)`,
    /// the last bound `+Inf`.
    pub(super) fn histogram(&mut self, name: &str, help: &str, buckets: Vec<(f64, u64)>, sum: f64) {
        let count = buckets.iter().map(|(_, n)| n).sum();
        self.families.push(Family {
            name: name.to_owned(),
            help: help.to_owned(),
            kind: MetricType::Histogram,
            samples: Samples::Histogram {
                buckets,
                sum,
                count,
            },
        });
    }

    fn push(&mut self, name: &str, labels: &[(&str, &str)], value: Value) {
        let labels = labels
            .iter()
            .map(|&(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        // The render functions always start a family before its samples.
        let Some(Family {
            name: family,
            samples: Samples::Plain(samples),
            ..
        }) = self.families.last_mut()
        else {
            debug_assert!(false, "a sample of {name} before any family");
            return;
        };
        debug_assert!(name.starts_with(family.as_str()), "{name} in {family}");
        samples.push((labels, value));
    }

    /// The text exposition format 0.0.4, as [`CONTENT_TYPE`] says.
    pub fn into_text(self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut out = String::with_capacity(8192);
        // Encoding into a String fails only if a collector fails, and ours does not.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
        out
    }
}

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        for f in &self.families {
            let mut metric = encoder.encode_descriptor(&f.name, &f.help, None, f.kind)?;
            match &f.samples {
                Samples::Histogram {
                    buckets,
                    sum,
                    count,
                } => metric.encode_histogram::<NoLabelSet>(*sum, *count, buckets, None)?,
                Samples::Plain(samples) => {
                    for (labels, value) in samples {
                        let mut m = metric.encode_family(labels)?;
                        match (f.kind, *value) {
                            (MetricType::Counter, Value::Int(v)) => {
                                m.encode_counter::<NoLabelSet, _, u64>(&v, None)?;
                            }
                            (MetricType::Counter, Value::Float(v)) => {
                                m.encode_counter::<NoLabelSet, _, u64>(&v, None)?;
                            }
                            (_, Value::Int(v)) => m.encode_gauge(&v)?,
                            (_, Value::Float(v)) => m.encode_gauge(&v)?,
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

pub(super) fn family(out: &mut Exposition, name: &str, kind: &str, help: &str) {
    out.family(name, kind, help);
}

/// A sample of family `name`, the one just started.
pub(super) fn sample(out: &mut Exposition, name: &str, l: &[(&str, &str)], value: u64) {
    out.push(name, l, Value::Int(value));
}

pub(super) fn sample_f64(out: &mut Exposition, name: &str, l: &[(&str, &str)], value: f64) {
    out.push(name, l, Value::Float(value));
}
