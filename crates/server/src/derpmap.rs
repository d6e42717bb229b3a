//! Builds the effective DERP map: the built-in region (from the access URL and the
//! built-in STUN port), STUN-only regions from `--derp-server-stun-addresses`, and a
//! Tailscale-format map from `--derp-config-path` / `--derp-config-url`.

use std::path::Path;
use std::time::Duration;

use tether_proto::derpmap::{DerpMap, DerpNode, DerpRegion};
use url::Url;

/// First region ID used for STUN-only regions, as Coder numbers them.
pub const STUN_REGION_BASE: u32 = 1000;

/// Why a DERP map could not be built.
#[derive(Debug, thiserror::Error)]
pub enum DerpMapError {
    /// The map file could not be read.
    #[error("could not read --derp-config-path {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The URL could not be fetched.
    #[error("could not fetch --derp-config-url {url}: {reason}")]
    Fetch {
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The JSON did not parse as a DERP map.
    #[error("{origin} is not a valid DERP map: {source}")]
    Parse {
        /// Where it came from.
        origin: String,
        /// The parse error.
        source: serde_json::Error,
    },
    /// The configuration leaves clients with no relay at all.
    #[error(
        "the built-in DERP relay is disabled (--derp-server-enable=false) and no other DERP map is configured (--derp-config-path or --derp-config-url), so no connection could ever be made"
    )]
    NoRelay,
    /// Two regions share an ID.
    #[error(
        "region {0} in the DERP map clashes with the built-in relay's region ID (change --derp-server-region-id)"
    )]
    Clash(u32),
    /// A STUN address was not host:port.
    #[error("--derp-server-stun-addresses entry {0:?} is not host:port")]
    BadStun(String),
}

/// The parts the effective map is built from.
#[derive(Debug, Clone)]
pub struct MapInputs {
    /// The built-in region, when the built-in relay is on.
    pub builtin: Option<DerpRegion>,
    /// Extra STUN-only regions.
    pub stun_regions: Vec<DerpRegion>,
}

/// The built-in relay's region: one node reached at the access URL.
pub fn builtin_region(
    id: u32,
    code: &str,
    name: &str,
    access_url: &Url,
    stun_port: Option<u16>,
) -> DerpRegion {
    let host = access_url
        .host_str()
        .unwrap_or("127.0.0.1")
        .trim_matches(['[', ']'])
        .to_string();
    let http = access_url.scheme() == "http";
    let port = access_url
        .port_or_known_default()
        .unwrap_or(if http { 80 } else { 443 });
    let mut node = DerpNode {
        name: format!("{id}b"),
        region_id: id,
        host_name: host.clone(),
        derp_port: i32::from(port),
        force_http: http,
        stun_port: stun_port.map_or(-1, i32::from),
        ..DerpNode::default()
    };
    // An IP host needs no DNS; pin it so clients never try to resolve it.
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(v4)) => {
            node.ipv4 = v4.to_string();
            node.ipv6 = "none".into();
        }
        Ok(std::net::IpAddr::V6(v6)) => {
            node.ipv6 = v6.to_string();
            node.ipv4 = "none".into();
        }
        Err(_) => {}
    }
    DerpRegion {
        region_id: id,
        region_code: code.to_string(),
        region_name: name.to_string(),
        nodes: vec![node],
        ..DerpRegion::default()
    }
}

/// STUN-only regions for `--derp-server-stun-addresses` entries (`disable` excluded).
pub fn stun_regions(addrs: &[String]) -> Result<Vec<DerpRegion>, DerpMapError> {
    let mut out = Vec::new();
    for (i, a) in addrs
        .iter()
        .filter(|a| a.as_str() != "disable" && !a.is_empty())
        .enumerate()
    {
        let (host, port) = a
            .rsplit_once(':')
            .ok_or_else(|| DerpMapError::BadStun(a.clone()))?;
        let port: u16 = port.parse().map_err(|_| DerpMapError::BadStun(a.clone()))?;
        let host = host.trim_matches(['[', ']']).to_string();
        let id = STUN_REGION_BASE + u32::try_from(i).unwrap_or(0);
        out.push(DerpRegion {
            region_id: id,
            region_code: format!("tether_stun_{id}"),
            region_name: format!("STUN {a}"),
            // STUN-only regions are for endpoint discovery, never a home relay.
            no_measure_no_home: true,
            nodes: vec![DerpNode {
                name: format!("{id}s"),
                region_id: id,
                host_name: host,
                stun_port: i32::from(port),
                stun_only: true,
                ..DerpNode::default()
            }],
            ..DerpRegion::default()
        });
    }
    Ok(out)
}

/// Merges the built-in and STUN regions with an external map.
pub fn merge(inputs: &MapInputs, external: Option<&DerpMap>) -> Result<DerpMap, DerpMapError> {
    let mut map = external.cloned().unwrap_or_default();
    let has_relay = inputs.builtin.is_some() || map.derp_region_ids().next().is_some();
    if !has_relay {
        return Err(DerpMapError::NoRelay);
    }
    if let Some(b) = &inputs.builtin {
        if map.regions.contains_key(&b.region_id) {
            return Err(DerpMapError::Clash(b.region_id));
        }
        map.regions.insert(b.region_id, b.clone());
    }
    for r in &inputs.stun_regions {
        // STUN regions yield to any region the external map already numbered the same.
        map.regions.entry(r.region_id).or_insert_with(|| r.clone());
    }
    Ok(map)
}

/// Reads a map file.
pub fn read_path(path: &Path) -> Result<DerpMap, DerpMapError> {
    let bytes = std::fs::read(path).map_err(|source| DerpMapError::Read {
        path: path.display().to_string(),
        source,
    })?;
    DerpMap::from_json(&bytes).map_err(|source| DerpMapError::Parse {
        origin: path.display().to_string(),
        source,
    })
}

/// Fetches a map URL (10 s cap).
pub async fn fetch_url(client: &reqwest::Client, url: &Url) -> Result<DerpMap, DerpMapError> {
    let fetch_err = |reason: String| DerpMapError::Fetch {
        url: url.to_string(),
        reason,
    };
    let resp = client
        .get(url.clone())
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| fetch_err(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(fetch_err(format!("HTTP {}", resp.status())));
    }
    let bytes = resp.bytes().await.map_err(|e| fetch_err(e.to_string()))?;
    DerpMap::from_json(&bytes).map_err(|source| DerpMapError::Parse {
        origin: url.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).expect("url")
    }

    #[test]
    fn builtin_follows_access_url() {
        let r = builtin_region(
            999,
            "tether",
            "tether embedded relay",
            &url("http://127.0.0.1:3000"),
            Some(3478),
        );
        let n = &r.nodes[0];
        assert_eq!(n.name, "999b");
        assert_eq!(n.derp_url(), "http://127.0.0.1:3000/derp");
        assert_eq!(n.stun_port(), Some(3478));
        assert_eq!(n.ipv4, "127.0.0.1");
        let r = builtin_region(999, "t", "t", &url("https://tether.example.com"), None);
        assert_eq!(r.nodes[0].derp_url(), "https://tether.example.com:443/derp");
        assert_eq!(r.nodes[0].stun_port(), None);
        assert!(r.nodes[0].ipv4.is_empty());
    }

    #[test]
    fn refuses_no_relay_and_clashes() {
        let none = MapInputs {
            builtin: None,
            stun_regions: vec![],
        };
        assert!(matches!(merge(&none, None), Err(DerpMapError::NoRelay)));
        let stun_only = MapInputs {
            builtin: None,
            stun_regions: stun_regions(&["127.0.0.1:3478".into()]).expect("stun"),
        };
        assert!(matches!(
            merge(&stun_only, None),
            Err(DerpMapError::NoRelay)
        ));
        let b = builtin_region(1, "a", "a", &url("http://127.0.0.1:1"), None);
        let ext = DerpMap {
            regions: [(1, b.clone())].into(),
            ..DerpMap::default()
        };
        let with = MapInputs {
            builtin: Some(b),
            stun_regions: vec![],
        };
        assert!(matches!(
            merge(&with, Some(&ext)),
            Err(DerpMapError::Clash(1))
        ));
    }

    #[test]
    fn merges_external_and_stun() {
        let ext: DerpMap = serde_json::from_str(
            r#"{"Regions":{"1":{"RegionID":1,"RegionCode":"nyc","RegionName":"NYC","Nodes":[{"Name":"1a","RegionID":1,"HostName":"derp.example.net"}]}}}"#,
        )
        .expect("parse");
        let inputs = MapInputs {
            builtin: Some(builtin_region(
                999,
                "tether",
                "x",
                &url("http://127.0.0.1:3000"),
                None,
            )),
            stun_regions: stun_regions(&["stun.example.net:19302".into(), "disable".into()])
                .expect("stun"),
        };
        let m = merge(&inputs, Some(&ext)).expect("merge");
        assert_eq!(
            m.regions.keys().copied().collect::<Vec<_>>(),
            vec![1, 999, 1000]
        );
        assert!(m.regions[&1000].nodes[0].stun_only);
        assert_eq!(m.regions[&1000].nodes[0].stun_port(), Some(19302));
        assert!(stun_regions(&["nope".into()]).is_err());
    }
}
