//! The text exposition format 0.0.4, written by hand: a family's `# HELP`/`# TYPE` header
//! and its samples.

use std::fmt::Write as _;

pub(super) fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn labels(out: &mut String, name: &str, labels: &[(&str, &str)]) {
    out.push_str(name);
    if labels.is_empty() {
        return;
    }
    out.push('{');
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // Label values here are method names, numbers and bucket bounds: nothing to escape.
        let _ = write!(out, "{k}=\"{v}\"");
    }
    out.push('}');
}

pub(super) fn sample(out: &mut String, name: &str, l: &[(&str, &str)], value: u64) {
    labels(out, name, l);
    let _ = writeln!(out, " {value}");
}

pub(super) fn sample_f64(out: &mut String, name: &str, l: &[(&str, &str)], value: f64) {
    labels(out, name, l);
    // Rust prints infinities as `inf`; the format wants `+Inf`/`-Inf`. Display never uses an
    // exponent, which the format accepts either way.
    if value.is_nan() {
        out.push_str(" NaN\n");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { " +Inf\n" } else { " -Inf\n" });
    } else {
        let _ = writeln!(out, " {value}");
    }
}
