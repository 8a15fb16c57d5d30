//! Test-only: a checker for the text exposition format 0.0.4 that `/metrics` renders
//! (names, HELP/TYPE before samples, contiguous families, label escapes, cumulative
//! histograms ending at `+Inf == _count`), so the render tests assert on what a scraper
//! would accept.

use std::collections::{HashMap, HashSet};

#[derive(Debug)]
pub(super) struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

fn is_metric_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_' || ch == ':')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse::<f64>().map_err(|_| format!("bad value {s:?}")),
    }
}

/// `name{a="b",c="d"} value`, with the format's label value escapes.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        rest = r;
        loop {
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            let eq = rest.find('=').ok_or("label without =")?;
            let key = &rest[..eq];
            if !is_label_name(key) {
                return Err(format!("bad label name {key:?}"));
            }
            let r = rest[eq + 1..]
                .strip_prefix('"')
                .ok_or("label value not quoted")?;
            let mut value = String::new();
            let mut chars = r.char_indices();
            let end = loop {
                match chars.next().ok_or("unterminated label value")? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        c => return Err(format!("bad escape \\{c}")),
                    },
                    (_, '\n') => return Err("newline in label value".into()),
                    (_, c) => value.push(c),
                }
            };
            labels.push((key.to_string(), value));
            rest = &r[end + 1..];
            if let Some(r) = rest.strip_prefix(',') {
                rest = r;
            }
        }
    }
    let rest = rest.strip_prefix(' ').ok_or("no space before the value")?;
    let mut fields = rest.split(' ');
    let value = parse_value(fields.next().ok_or("no value")?)?;
    if let Some(ts) = fields.next() {
        ts.parse::<i64>()
            .map_err(|_| format!("bad timestamp {ts:?}"))?;
    }
    if fields.next().is_some() {
        return Err("trailing fields".into());
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Checks the whole exposition and returns its samples. Panics with the offending line.
pub(super) fn check_exposition(text: &str) -> Vec<Sample> {
    assert!(text.ends_with('\n'), "exposition must end with a newline");
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helps: HashSet<String> = HashSet::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    let mut samples = Vec::new();
    for line in text.lines() {
        assert!(!line.is_empty(), "empty line in exposition");
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kw, name) = (parts.next().unwrap(), parts.next().unwrap_or(""));
            assert!(is_metric_name(name), "bad family name in {line:?}");
            match kw {
                "HELP" => assert!(helps.insert(name.into()), "second HELP for {name}"),
                "TYPE" => {
                    let t = parts.next().unwrap_or("");
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                        "bad type in {line:?}"
                    );
                    assert!(
                        types.insert(name.into(), t.into()).is_none(),
                        "second TYPE for {name}"
                    );
                }
                _ => {}
            }
            continue;
        }
        assert!(!line.starts_with('#'), "comment without a space: {line:?}");
        let s = parse_sample(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|suffix| s.name.strip_suffix(suffix))
            .find(|base| types.get(*base).is_some_and(|t| t == "histogram"))
            .unwrap_or(&s.name)
            .to_string();
        assert!(
            types.contains_key(&family),
            "sample before/without # TYPE: {line:?}"
        );
        assert!(helps.contains(&family), "sample without # HELP: {line:?}");
        if current.as_deref() != Some(family.as_str()) {
            if let Some(prev) = current.take() {
                finished.insert(prev);
            }
            assert!(
                !finished.contains(&family),
                "family {family} is not contiguous"
            );
            current = Some(family);
        }
        samples.push(s);
    }
    // Histograms: buckets in increasing le, cumulative, ending at +Inf == _count.
    for (name, t) in &types {
        if t != "histogram" {
            continue;
        }
        let bucket_name = format!("{name}_bucket");
        let buckets: Vec<(f64, f64)> = samples
            .iter()
            .filter(|s| s.name == bucket_name)
            .map(|s| {
                let le = &s
                    .labels
                    .iter()
                    .find(|(k, _)| k == "le")
                    .expect("bucket without le")
                    .1;
                (parse_value(le).unwrap(), s.value)
            })
            .collect();
        assert!(!buckets.is_empty(), "{name} has no buckets");
        for w in buckets.windows(2) {
            assert!(w[0].0 < w[1].0, "{name}: le not increasing");
            assert!(w[0].1 <= w[1].1, "{name}: buckets not cumulative");
        }
        let (last_le, inf) = *buckets.last().unwrap();
        assert_eq!(last_le, f64::INFINITY, "{name}: last bucket is not +Inf");
        let count = samples
            .iter()
            .find(|s| s.name == format!("{name}_count"))
            .unwrap();
        assert_eq!(inf, count.value, "{name}: +Inf bucket != _count");
        assert!(
            samples.iter().any(|s| s.name == format!("{name}_sum")),
            "{name}: no _sum"
        );
    }
    samples
}

pub(super) fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && s.labels.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(a, b)| a == k && b == v))
        })
        .map(|s| s.value)
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checker_rejects_what_it_should() {
        for bad in [
            "x 1\n",                                          // no HELP/TYPE
            "# HELP x h\n# TYPE x gauge\nx{a=\"1} 1\n",       // unterminated label value
            "# HELP x h\n# TYPE x gauge\nx one\n",            // bad value
            "# HELP x h\n# TYPE x gauge\n# HELP y h\n# TYPE y gauge\nx 1\ny 1\nx 2\n", // split family
            "# HELP h h\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
            "# HELP h h\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 1\n",
        ] {
            let r = std::panic::catch_unwind(|| check_exposition(bad));
            assert!(r.is_err(), "accepted {bad:?}");
        }
    }
}
