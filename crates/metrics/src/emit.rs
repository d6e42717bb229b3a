//! Writing numbers that are read at scrape time: a [`Collector`] gets a
//! [`DescriptorEncoder`] and calls these once per metric.
//!
//! Names are given without the `_total` of counters (the encoder appends it) and
//! without the registry's prefix.
//!
//! [`Collector`]: prometheus_client::collector::Collector

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// One counter without labels.
pub fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> std::fmt::Result {
    let c = ConstCounter::new(value);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

/// One counter with a series per label set.
pub fn counters<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(L, u64)],
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in series {
        ConstCounter::new(*value).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

/// One gauge without labels.
pub fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> std::fmt::Result {
    let g = ConstGauge::new(value);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

/// One gauge of a fractional value (seconds, ratios) without labels.
pub fn gauge_f64(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: f64,
) -> std::fmt::Result {
    let g = ConstGauge::new(value);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

/// One gauge with a series per label set.
pub fn gauges<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(L, i64)],
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in series {
        ConstGauge::new(*value).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

/// A count as a gauge value (counts beyond `i64::MAX` do not happen; they saturate).
pub fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use prometheus_client::collector::Collector;
    use prometheus_client::registry::Registry;

    use super::*;

    #[derive(Debug)]
    struct Fixed;

    impl Collector for Fixed {
        fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
            counter(&mut enc, "hits", "Hits seen.", 3)?;
            counters(
                &mut enc,
                "drops",
                "Drops by reason.",
                &[([("reason", "full")], 1), ([("reason", "gone")], 2)],
            )?;
            gauge(&mut enc, "open", "Open now.", -1)?;
            gauge_f64(&mut enc, "seconds", "Seconds.", 1.5)?;
            gauges(
                &mut enc,
                "peers",
                "Peers by path.",
                &[([("path", "derp")], 4)],
            )
        }
    }

    #[test]
    fn collected_values_are_written_with_prefix_suffix_and_labels() {
        let mut registry = Registry::with_prefix("t");
        registry.register_collector(Box::new(Fixed));
        let text = crate::encode(&registry);
        let expected = "\
# HELP t_hits_total Hits seen.
# TYPE t_hits_total counter
t_hits_total 3
# HELP t_drops_total Drops by reason.
# TYPE t_drops_total counter
t_drops_total{reason=\"full\"} 1
t_drops_total{reason=\"gone\"} 2
# HELP t_open Open now.
# TYPE t_open gauge
t_open -1
# HELP t_seconds Seconds.
# TYPE t_seconds gauge
t_seconds 1.5
# HELP t_peers Peers by path.
# TYPE t_peers gauge
t_peers{path=\"derp\"} 4
";
        assert_eq!(text, expected);
        crate::text::parse(&text).unwrap();
    }
}
