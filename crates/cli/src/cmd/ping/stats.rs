//! The summary `tether ping` ends with, as ping(8) does: pings sent, pongs received, the
//! loss, round-trip min/avg/max and the paths the pongs took.

use std::time::Duration;

use tether_proto::derpmap::DerpMap;
use tether_tailnet::{PathKind, Pong};

use super::region_name;

/// What the pings so far add up to.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Stats {
    sent: u32,
    rtts: Vec<Duration>,
    /// Each path pongs came over, in the order first seen, with its count.
    paths: Vec<(PathKind, u32)>,
}

impl Stats {
    /// A ping that got `pong`.
    pub fn answered(&mut self, pong: &Pong) {
        self.sent += 1;
        self.rtts.push(pong.latency);
        match self.paths.iter_mut().find(|(p, _)| *p == pong.via) {
            Some((_, n)) => *n += 1,
            None => self.paths.push((pong.via, 1)),
        }
    }

    /// How many pongs came back.
    pub fn received(&self) -> usize {
        self.rtts.len()
    }

    /// A ping that timed out.
    pub fn lost(&mut self) {
        self.sent += 1;
    }

    /// The summary block: a header, counts and loss, round trips, paths.
    pub fn lines(&self, ws: &str, map: &DerpMap) -> Vec<String> {
        let received = self.rtts.len();
        let mut out = vec![
            format!("--- {ws} ping statistics ---"),
            format!(
                "{} {} sent, {received} {} received, {} loss",
                self.sent,
                plural(self.sent as usize, "ping"),
                plural(received, "pong"),
                loss(self.sent, received)
            ),
        ];
        if let (Some(min), Some(max)) = (self.rtts.iter().min(), self.rtts.iter().max()) {
            let avg = self.rtts.iter().sum::<Duration>() / u32::try_from(received).unwrap_or(1);
            out.push(format!(
                "round-trip min/avg/max = {:.3}/{:.3}/{:.3} ms",
                ms(*min),
                ms(avg),
                ms(*max)
            ));
        }
        let paths = if self.paths.is_empty() {
            "none (no pong came back)".to_string()
        } else {
            self.paths
                .iter()
                .map(|(p, n)| format!("{} ({n} {})", describe(p, map), plural(*n as usize, "pong")))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push(format!("path: {paths}"));
        out
    }
}

/// `p2p via 127.0.0.1:41641` or `DERP(tether embedded relay)`.
fn describe(p: &PathKind, map: &DerpMap) -> String {
    match p {
        PathKind::Direct { addr } => format!("p2p via {addr}"),
        PathKind::Derp { region } => format!("DERP({})", region_name(map, *region)),
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        word.to_string()
    } else {
        format!("{word}s")
    }
}

/// `0%`, `20%`, `33.3%`; `0%` when nothing was sent.
fn loss(sent: u32, received: usize) -> String {
    if sent == 0 {
        return "0%".into();
    }
    let lost = f64::from(sent) - received as f64;
    let pct = lost * 100.0 / f64::from(sent);
    if (pct - pct.round()).abs() < 1e-9 {
        format!("{pct:.0}%")
    } else {
        format!("{pct:.1}%")
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> DerpMap {
        serde_json::from_str(
            r#"{"Regions":{"999":{"RegionID":999,"RegionCode":"tether","RegionName":"tether embedded relay","Nodes":[]}}}"#,
        )
        .expect("DERP map")
    }

    fn pong(us: u64, via: PathKind) -> Pong {
        Pong {
            latency: Duration::from_micros(us),
            via,
        }
    }

    #[test]
    fn counts_loss_round_trips_and_paths() {
        let derp = PathKind::Derp { region: 999 };
        let direct = PathKind::Direct {
            addr: "127.0.0.1:41641".parse().expect("addr"),
        };
        let mut s = Stats::default();
        s.answered(&pong(30_000, derp));
        s.lost();
        s.answered(&pong(400, direct));
        s.answered(&pong(1_100, direct));
        assert_eq!(
            s.lines("dev", &map()),
            [
                "--- dev ping statistics ---",
                "4 pings sent, 3 pongs received, 25% loss",
                "round-trip min/avg/max = 0.400/10.500/30.000 ms",
                "path: DERP(tether embedded relay) (1 pong), p2p via 127.0.0.1:41641 (2 pongs)",
            ]
        );
        let mut s = Stats::default();
        s.lost();
        s.lost();
        s.lost();
        assert_eq!(
            s.lines("dev", &map()),
            [
                "--- dev ping statistics ---",
                "3 pings sent, 0 pongs received, 100% loss",
                "path: none (no pong came back)",
            ]
        );
        s.answered(&pong(2_000, PathKind::Derp { region: 7 }));
        s.lost();
        s.lost();
        let lines = s.lines("dev", &map());
        assert_eq!(lines[1], "6 pings sent, 1 pong received, 83.3% loss");
        assert_eq!(lines[3], "path: DERP(region 7) (1 pong)");
        assert_eq!(
            Stats::default().lines("dev", &map())[1],
            "0 pings sent, 0 pongs received, 0% loss"
        );
    }
}
