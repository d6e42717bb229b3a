//! A strict parser of the Prometheus text exposition format (version 0.0.4), so tests
//! can check that a scrape is valid, not only that it contains a substring.
//!
//! It refuses what Prometheus would refuse and a little more: a malformed line, a name
//! or label name outside the allowed characters, a bad escape, a value that is not a
//! float, a `TYPE` after its samples or given twice, a family whose lines are not
//! together, the same series twice, and text that does not end in a newline.
//!
//! It also holds every family to the conventions a well-behaved exporter keeps (and
//! tether's do), checked once the format is: a `HELP` and a `TYPE` for every family with
//! samples; a counter's name ends in
//! `_total`, its samples carry exactly that name and are finite and not negative; a
//! gauge's samples carry the family's name; a histogram has only `_bucket` (with a
//! numeric `le`), `_sum` and `_count` samples, and per series its buckets do not
//! decrease, end at `le="+Inf"` and agree with `_count`; a summary's plain samples carry
//! a `quantile`.

use std::collections::{BTreeMap, HashSet};

/// Why a scrape is not valid exposition text: the line (1-based) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The line number, from 1.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for ParseError {}

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The sample's name (a histogram's `_bucket`, `_sum`, `_count` included).
    pub name: String,
    /// Its labels, by name.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
    /// The line it was on, from 1.
    pub line: usize,
}

/// A metric family: its `HELP`, `TYPE` and samples.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Family {
    /// The `HELP` text, unescaped, if there was one.
    pub help: Option<String>,
    /// The `TYPE`, if there was one (`untyped` otherwise).
    pub kind: Option<String>,
    /// The samples, in order.
    pub samples: Vec<Sample>,
}

/// A parsed scrape: families by name.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Scrape {
    /// Every family, by name.
    pub families: BTreeMap<String, Family>,
}

impl Scrape {
    /// The value of the sample `name` whose labels include every one of `labels`; `None`
    /// if there is none, and the first if several match.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples(name)
            .find(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }

    /// The sum of every sample `name` whose labels include every one of `labels`
    /// (0 when there is none).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples(name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }

    /// Every sample named `name`, in any family.
    pub fn samples<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.families
            .values()
            .flat_map(|f| f.samples.iter())
            .filter(move |s| s.name == name)
    }
}

const KINDS: [&str; 5] = ["counter", "gauge", "histogram", "summary", "untyped"];

/// Parses a whole scrape.
///
/// # Errors
/// The first line that is not valid, with why.
pub fn parse(text: &str) -> Result<Scrape, ParseError> {
    let mut scrape = Scrape::default();
    let mut groups = Groups::default();
    let mut series: HashSet<(String, Vec<(String, String)>)> = HashSet::new();
    if !text.is_empty() && !text.ends_with('\n') {
        return Err(ParseError {
            line: text.lines().count(),
            reason: "the text does not end with a newline".into(),
        });
    }
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let err = |reason: String| ParseError { line: n, reason };
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let rest = rest.trim_start_matches([' ', '\t']);
            let (keyword, rest) = split_word(rest);
            match keyword {
                "HELP" => {
                    let (name, help) = split_word(rest);
                    check_metric_name(name).map_err(err)?;
                    groups.enter(name).map_err(err)?;
                    let family = scrape.families.entry(name.into()).or_default();
                    if family.help.is_some() {
                        return Err(err(format!("a second HELP for {name}")));
                    }
                    family.help = Some(unescape(help, false).map_err(err)?);
                }
                "TYPE" => {
                    let (name, kind) = split_word(rest);
                    check_metric_name(name).map_err(err)?;
                    let kind = kind.trim_end_matches([' ', '\t']);
                    if !KINDS.contains(&kind) {
                        return Err(err(format!("unknown TYPE {kind:?} for {name}")));
                    }
                    groups.enter(name).map_err(err)?;
                    let family = scrape.families.entry(name.into()).or_default();
                    if family.kind.is_some() {
                        return Err(err(format!("a second TYPE for {name}")));
                    }
                    if !family.samples.is_empty() {
                        return Err(err(format!("the TYPE of {name} comes after its samples")));
                    }
                    family.kind = Some(kind.into());
                }
                // Any other comment is allowed and means nothing.
                _ => {}
            }
            continue;
        }
        let mut sample = parse_sample(line).map_err(err)?;
        sample.line = n;
        let family = family_of(&scrape, groups.current.as_deref(), &sample.name);
        groups.enter(&family).map_err(err)?;
        let key = (
            sample.name.clone(),
            sample
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        );
        if !series.insert(key) {
            return Err(err(format!("the series {line:?} appears twice")));
        }
        scrape
            .families
            .entry(family)
            .or_default()
            .samples
            .push(sample);
    }
    // The conventions after the format, so a malformed text is reported as that.
    let mut in_order: Vec<(&str, &Family, &Sample)> = scrape
        .families
        .iter()
        .flat_map(|(name, f)| f.samples.iter().map(move |s| (name.as_str(), f, s)))
        .collect();
    in_order.sort_by_key(|(_, _, s)| s.line);
    for (name, family, sample) in in_order {
        check_convention(name, family, sample).map_err(|reason| ParseError {
            line: sample.line,
            reason,
        })?;
    }
    for (name, family) in &scrape.families {
        if family.kind.as_deref() == Some("histogram") {
            check_histogram(name, family).map_err(|reason| ParseError {
                line: text.lines().count(),
                reason,
            })?;
        }
    }
    Ok(scrape)
}

/// The rules of one sample of `family` (`declared`: its HELP, TYPE and samples).
fn check_convention(family: &str, declared: &Family, s: &Sample) -> Result<(), String> {
    if declared.help.is_none() {
        return Err(format!("{family} has no HELP"));
    }
    let Some(kind) = declared.kind.as_deref() else {
        return Err(format!("{family} has no TYPE"));
    };
    match kind {
        "counter" => {
            if !family.ends_with("_total") {
                return Err(format!("the counter {family} does not end in _total"));
            }
            if s.name != family {
                return Err(format!(
                    "{} is not the name of the counter {family}",
                    s.name
                ));
            }
            if !(s.value.is_finite() && s.value >= 0.0) {
                return Err(format!("the counter {family} has the value {}", s.value));
            }
        }
        "gauge" | "untyped" if s.name != family => {
            return Err(format!("{} is not the name of the {kind} {family}", s.name));
        }
        "histogram" => {
            if s.name == format!("{family}_bucket") {
                let le = s
                    .labels
                    .get("le")
                    .ok_or_else(|| format!("a bucket of {family} has no le label"))?;
                parse_value(le).map_err(|e| format!("the le of a bucket of {family}: {e}"))?;
            } else if s.labels.contains_key("le") {
                return Err(format!("{} has an le label", s.name));
            }
        }
        "summary" if s.name == family && !s.labels.contains_key("quantile") => {
            return Err(format!(
                "a sample of the summary {family} has no quantile label"
            ));
        }
        _ => {}
    }
    Ok(())
}

/// Per series of a histogram: buckets in increasing `le` whose counts do not decrease,
/// the last at `+Inf`, equal to `_count`.
fn check_histogram(name: &str, family: &Family) -> Result<(), String> {
    let series_of = |s: &Sample| {
        s.labels
            .iter()
            .filter(|(k, _)| k.as_str() != "le")
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let bucket = format!("{name}_bucket");
    let count = format!("{name}_count");
    let mut buckets: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let mut counts: BTreeMap<String, f64> = BTreeMap::new();
    for s in &family.samples {
        if s.name == bucket {
            let le = s
                .labels
                .get("le")
                .and_then(|v| parse_value(v).ok())
                .unwrap_or(f64::NAN);
            buckets.entry(series_of(s)).or_default().push((le, s.value));
        } else if s.name == count {
            counts.insert(series_of(s), s.value);
        }
    }
    for (series, bs) in &buckets {
        for w in bs.windows(2) {
            if w[0].0.partial_cmp(&w[1].0) != Some(std::cmp::Ordering::Less) {
                return Err(format!(
                    "the buckets of {name}{{{series}}} are not in increasing le"
                ));
            }
            if w[1].1 < w[0].1 {
                return Err(format!("the bucket counts of {name}{{{series}}} decrease"));
            }
        }
        let Some(&(le, last)) = bs.last() else {
            continue;
        };
        if le != f64::INFINITY {
            return Err(format!("{name}{{{series}}} has no le=\"+Inf\" bucket"));
        }
        if counts.get(series) != Some(&last) {
            return Err(format!(
                "the _count of {name}{{{series}}} is not its +Inf bucket"
            ));
        }
    }
    for series in counts.keys() {
        if !buckets.contains_key(series) {
            return Err(format!("{name}{{{series}}} has a _count and no buckets"));
        }
    }
    Ok(())
}

/// Which family the lines are in, and which are over: a family's lines come together.
#[derive(Default)]
struct Groups {
    current: Option<String>,
    closed: HashSet<String>,
}

impl Groups {
    /// Moves to `family`; switching to another family closes the current one for good.
    fn enter(&mut self, family: &str) -> Result<(), String> {
        if self.current.as_deref() == Some(family) {
            return Ok(());
        }
        if self.closed.contains(family) {
            return Err(format!("the lines of {family} are not together"));
        }
        if let Some(prev) = self.current.replace(family.to_string()) {
            self.closed.insert(prev);
        }
        Ok(())
    }
}

/// The family a sample belongs to: the current histogram or summary for its suffixed
/// names, else the sample's own name.
fn family_of(scrape: &Scrape, current: Option<&str>, name: &str) -> String {
    if let Some(cur) = current
        && let Some(kind) = scrape.families.get(cur).and_then(|f| f.kind.as_deref())
    {
        let suffixes: &[&str] = match kind {
            "histogram" => &["_bucket", "_sum", "_count"],
            "summary" => &["", "_sum", "_count"],
            _ => &[],
        };
        if suffixes.iter().any(|s| name.strip_suffix(s) == Some(cur)) {
            return cur.to_string();
        }
    }
    name.to_string()
}

fn split_word(s: &str) -> (&str, &str) {
    match s.find([' ', '\t']) {
        Some(i) => (&s[..i], s[i + 1..].trim_start_matches([' ', '\t'])),
        None => (s, ""),
    }
}

fn check_metric_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?} is not a valid metric name"))
    }
}

fn check_label_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?} is not a valid label name"))
    }
}

/// Undoes `\\` and `\n` (and `\"` in label values); any other escape is an error.
fn unescape(s: &str, quotes: bool) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') if quotes => out.push('"'),
            other => return Err(format!("bad escape \\{}", other.unwrap_or(' '))),
        }
    }
    Ok(out)
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
    let name = &line[..name_end];
    check_metric_name(name)?;
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = parse_labels(after, &mut labels)?;
    }
    let mut fields = rest.split([' ', '\t']).filter(|f| !f.is_empty());
    let value = fields
        .next()
        .ok_or_else(|| format!("no value in {line:?}"))?;
    let value = parse_value(value)?;
    if let Some(ts) = fields.next() {
        ts.parse::<i64>()
            .map_err(|_| format!("timestamp {ts:?} is not an integer"))?;
    }
    if let Some(extra) = fields.next() {
        return Err(format!("unexpected {extra:?} after the value"));
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
        line: 0,
    })
}

/// Parses `name="value",...}` and returns what follows the `}`.
fn parse_labels<'a>(
    mut s: &'a str,
    labels: &mut BTreeMap<String, String>,
) -> Result<&'a str, String> {
    loop {
        s = s.trim_start_matches([' ', '\t']);
        if let Some(after) = s.strip_prefix('}') {
            if !after.is_empty() && !after.starts_with([' ', '\t']) {
                return Err("no space between the labels and the value".into());
            }
            return Ok(after);
        }
        let eq = s.find('=').ok_or("a label without '='")?;
        let key = s[..eq].trim_end_matches([' ', '\t']);
        check_label_name(key)?;
        s = s[eq + 1..].trim_start_matches([' ', '\t']);
        s = s
            .strip_prefix('"')
            .ok_or_else(|| format!("the value of label {key} is not quoted"))?;
        let mut end = None;
        let mut escaped = false;
        for (i, c) in s.char_indices() {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let end = end.ok_or_else(|| format!("the value of label {key} is not closed"))?;
        let value = unescape(&s[..end], true)?;
        if labels.insert(key.to_string(), value).is_some() {
            return Err(format!("label {key} given twice"));
        }
        s = s[end + 1..].trim_start_matches([' ', '\t']);
        if let Some(after) = s.strip_prefix(',') {
            s = after;
        } else if !s.starts_with('}') {
            return Err("labels must be separated by ','".into());
        }
    }
}

fn parse_value(v: &str) -> Result<f64, String> {
    match v {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => {
            let ok = v
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'));
            match v.parse::<f64>() {
                Ok(x) if ok => Ok(x),
                _ => Err(format!("{v:?} is not a number")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_valid_scrape_parses_into_families() {
        let text = "\
# HELP a_total Things, with a \\\\ and a \\n.
# TYPE a_total counter
a_total{x=\"1\",y=\"q\\\"uote\"} 3
a_total{x=\"2\",} 4 1700000000000
# HELP h Times.
# TYPE h histogram
h_bucket{le=\"0.1\"} 1
h_bucket{le=\"+Inf\"} 2
h_sum 0.3
h_count 2
# a comment
# HELP g A gauge.
# TYPE g gauge
g -1.5e3
# HELP u Untyped.
# TYPE u untyped
u NaN
";
        let s = parse(text).unwrap();
        let a = &s.families["a_total"];
        assert_eq!(a.help.as_deref(), Some("Things, with a \\ and a \n."));
        assert_eq!(a.kind.as_deref(), Some("counter"));
        assert_eq!(s.value("a_total", &[("y", "q\"uote")]), Some(3.0));
        assert_eq!(s.sum("a_total", &[]), 7.0);
        assert_eq!(s.families["h"].samples.len(), 4);
        assert_eq!(s.value("g", &[]), Some(-1500.0));
        assert!(s.value("u", &[]).unwrap().is_nan());
        assert_eq!(s.value("missing", &[]), None);
    }

    #[test]
    fn malformed_text_is_refused_with_its_line() {
        let bad = [
            ("a 1", 1, "newline"),
            ("1a 1\n", 1, "metric name"),
            ("a{1x=\"v\"} 1\n", 1, "label name"),
            ("a{x=v} 1\n", 1, "not quoted"),
            ("a{x=\"v} 1\n", 1, "not closed"),
            ("a{x=\"v\" y=\"w\"} 1\n", 1, "separated"),
            ("a{x=\"\\t\"} 1\n", 1, "escape"),
            ("a{x=\"v\",x=\"w\"} 1\n", 1, "twice"),
            ("a{x=\"v\"}1\n", 1, "no space"),
            ("a\n", 1, "no value"),
            ("a one\n", 1, "not a number"),
            ("a 0x10\n", 1, "not a number"),
            ("a 1 2.5\n", 1, "timestamp"),
            ("a 1 2 3\n", 1, "unexpected"),
            ("# TYPE a countr\n", 1, "unknown TYPE"),
            ("# TYPE a counter\n# TYPE a gauge\n", 2, "second TYPE"),
            ("# HELP a x\n# HELP a y\n", 2, "second HELP"),
            ("a 1\n# TYPE a gauge\n", 2, "after its samples"),
            ("a 1\nb 1\na{x=\"1\"} 2\n", 3, "not together"),
            ("a 1\na 2\n", 2, "twice"),
        ];
        for (text, line, why) in bad {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.reason.contains(why), "{text:?}: {e}");
        }
    }

    #[test]
    fn families_that_break_the_conventions_are_refused() {
        let head = |name: &str, kind: &str| format!("# HELP {name} x\n# TYPE {name} {kind}\n");
        let hist = head("h", "histogram");
        let bad = [
            ("a 1\n".to_string(), 1, "no HELP"),
            ("# HELP a x\na 1\n".to_string(), 2, "no TYPE"),
            ("# TYPE a gauge\na 1\n".to_string(), 2, "no HELP"),
            (
                format!("{}a 1\n", head("a", "counter")),
                3,
                "does not end in _total",
            ),
            (
                format!("{}a_total -1\n", head("a_total", "counter")),
                3,
                "value -1",
            ),
            (
                format!("{}a_total NaN\n", head("a_total", "counter")),
                3,
                "value NaN",
            ),
            (
                format!("{}a_total +Inf\n", head("a_total", "counter")),
                3,
                "value inf",
            ),
            (
                format!("{}a_total 1\na 2\n", head("a_total", "counter")),
                4,
                "no HELP",
            ),
            (format!("{}h_bucket 1\n", hist), 3, "no le label"),
            (
                format!("{}h_bucket{{le=\"x\"}} 1\n", hist),
                3,
                "not a number",
            ),
            (
                format!("{}h_sum{{le=\"1\"}} 1\n", hist),
                3,
                "has an le label",
            ),
            (
                format!("{}h_bucket{{le=\"1\"}} 1\nh_count 1\n", hist),
                4,
                "no le=\"+Inf\"",
            ),
            (
                format!(
                    "{}h_bucket{{le=\"1\"}} 2\nh_bucket{{le=\"+Inf\"}} 1\nh_count 1\n",
                    hist
                ),
                5,
                "decrease",
            ),
            (
                format!(
                    "{}h_bucket{{le=\"+Inf\"}} 1\nh_bucket{{le=\"1\"}} 1\nh_count 1\n",
                    hist
                ),
                5,
                "increasing le",
            ),
            (
                format!("{}h_bucket{{le=\"+Inf\"}} 2\nh_count 1\n", hist),
                4,
                "not its +Inf bucket",
            ),
            (format!("{}h_count 1\n", hist), 3, "no buckets"),
            (format!("{}s 1\n", head("s", "summary")), 3, "no quantile"),
        ];
        for (text, line, why) in bad {
            let e = parse(&text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.reason.contains(why), "{text:?}: {e}");
        }
        let good = format!(
            "{}a_total{{x=\"1\"}} 0\n{}h_bucket{{le=\"1\"}} 1\nh_bucket{{le=\"+Inf\"}} 1\nh_sum 0.5\nh_count 1\n{}s{{quantile=\"0.5\"}} 1\ns_sum 1\ns_count 1\n",
            head("a_total", "counter"),
            hist,
            head("s", "summary")
        );
        parse(&good).unwrap();
    }
}
