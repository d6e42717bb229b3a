//! The DERP map: which relay regions exist and how to reach their nodes, in
//! Tailscale's JSON format (`tailcfg.DERPMap`), so Tailscale's published map and
//! Coder-style custom maps parse unchanged.
//!
//! Go decodes JSON keys case-insensitively; serde does not, so each field also
//! accepts its lowercase and camelCase spellings.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Default STUN port when a node says 0.
pub const DEFAULT_STUN_PORT: u16 = 3478;
/// Default DERP (HTTPS) port when a node says 0.
pub const DEFAULT_DERP_PORT: u16 = 443;
/// The HTTP path a DERP node serves its relay at (upgrade or WebSocket).
pub const DERP_PATH: &str = "/derp";

/// A set of DERP regions keyed by region ID.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DerpMap {
    /// Regions keyed by their ID (as a JSON string key).
    #[serde(
        rename = "Regions",
        alias = "regions",
        default,
        deserialize_with = "region_keys"
    )]
    pub regions: BTreeMap<u32, DerpRegion>,
    /// Optional tuning of home-region selection.
    #[serde(
        rename = "HomeParams",
        alias = "homeParams",
        alias = "homeparams",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub home_params: Option<HomeParams>,
    /// Tailscale clients: do not merge in the default regions.
    #[serde(
        rename = "omitDefaultRegions",
        alias = "OmitDefaultRegions",
        alias = "omitdefaultregions",
        default,
        skip_serializing_if = "is_false"
    )]
    pub omit_default_regions: bool,
}

/// Multipliers applied to measured region latency when picking a home region.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HomeParams {
    /// Region ID → score; below 1 favours the region, above 1 penalises it.
    #[serde(
        rename = "RegionScore",
        alias = "regionScore",
        alias = "regionscore",
        default,
        deserialize_with = "region_keys"
    )]
    pub region_score: BTreeMap<u32, f64>,
}

/// One relay region: a group of DERP nodes that mesh with one another.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DerpRegion {
    /// Region ID, > 0; 900–999 are reserved for self-hosted regions.
    #[serde(
        rename = "RegionID",
        alias = "regionID",
        alias = "regionId",
        alias = "regionid"
    )]
    pub region_id: u32,
    /// Short code such as `nyc`.
    #[serde(
        rename = "RegionCode",
        alias = "regionCode",
        alias = "regioncode",
        default
    )]
    pub region_code: String,
    /// Human name such as "New York City".
    #[serde(
        rename = "RegionName",
        alias = "regionName",
        alias = "regionname",
        default
    )]
    pub region_name: String,
    /// Latitude, for display.
    #[serde(
        rename = "Latitude",
        alias = "latitude",
        default,
        skip_serializing_if = "is_zero_f64"
    )]
    pub latitude: f64,
    /// Longitude, for display.
    #[serde(
        rename = "Longitude",
        alias = "longitude",
        default,
        skip_serializing_if = "is_zero_f64"
    )]
    pub longitude: f64,
    /// Deprecated: avoid as a home region.
    #[serde(
        rename = "Avoid",
        alias = "avoid",
        default,
        skip_serializing_if = "is_false"
    )]
    pub avoid: bool,
    /// Never measure and never pick as home; usable to reach peers homed here.
    #[serde(
        rename = "NoMeasureNoHome",
        alias = "noMeasureNoHome",
        alias = "nomeasurenohome",
        default,
        skip_serializing_if = "is_false"
    )]
    pub no_measure_no_home: bool,
    /// Nodes in priority order.
    #[serde(rename = "Nodes", alias = "nodes", default)]
    pub nodes: Vec<DerpNode>,
}

/// One DERP (and/or STUN) server.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DerpNode {
    /// Unique node name such as `1f` or `999b`.
    #[serde(rename = "Name", alias = "name", default)]
    pub name: String,
    /// The region this node belongs to.
    #[serde(
        rename = "RegionID",
        alias = "regionID",
        alias = "regionId",
        alias = "regionid",
        default
    )]
    pub region_id: u32,
    /// DNS name (and TLS name unless `CertName` says otherwise).
    #[serde(rename = "HostName", alias = "hostName", alias = "hostname")]
    pub host_name: String,
    /// `sha256-raw:<hex>` pins a self-signed certificate; otherwise the TLS name.
    #[serde(
        rename = "CertName",
        alias = "certName",
        alias = "certname",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub cert_name: String,
    /// Forced IPv4 address, or `none` to disable IPv4.
    #[serde(
        rename = "IPv4",
        alias = "ipv4",
        alias = "IPV4",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub ipv4: String,
    /// Forced IPv6 address, or `none` to disable IPv6.
    #[serde(
        rename = "IPv6",
        alias = "ipv6",
        alias = "IPV6",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub ipv6: String,
    /// STUN port: 0 means 3478, -1 disables STUN on this node.
    #[serde(
        rename = "STUNPort",
        alias = "stunPort",
        alias = "stunport",
        default,
        skip_serializing_if = "is_zero_i32"
    )]
    pub stun_port: i32,
    /// This node only does STUN, no DERP.
    #[serde(
        rename = "STUNOnly",
        alias = "stunOnly",
        alias = "stunonly",
        default,
        skip_serializing_if = "is_false"
    )]
    pub stun_only: bool,
    /// DERP port: 0 means 443 (or 80 with `ForceHTTP`).
    #[serde(
        rename = "DERPPort",
        alias = "derpPort",
        alias = "derpport",
        default,
        skip_serializing_if = "is_zero_i32"
    )]
    pub derp_port: i32,
    /// Skip TLS verification (tests only).
    #[serde(
        rename = "InsecureForTests",
        alias = "insecureForTests",
        alias = "insecurefortests",
        default,
        skip_serializing_if = "is_false"
    )]
    pub insecure_for_tests: bool,
    /// Forced STUN destination for tests.
    #[serde(
        rename = "STUNTestIP",
        alias = "stunTestIP",
        alias = "stuntestip",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub stun_test_ip: String,
    /// The node also serves plain HTTP on port 80 (captive-portal checks).
    #[serde(
        rename = "CanPort80",
        alias = "canPort80",
        alias = "canport80",
        default,
        skip_serializing_if = "is_false"
    )]
    pub can_port_80: bool,
    /// Coder's extension: speak plain HTTP (not TLS) to this node.
    #[serde(
        rename = "ForceHTTP",
        alias = "forceHTTP",
        alias = "forcehttp",
        default,
        skip_serializing_if = "is_false"
    )]
    pub force_http: bool,
}

/// Region IDs are JSON object keys, so strings. serde_json turns them into integers on
/// its own, but not when the map is nested in a buffered (internally tagged) enum, so
/// parse them explicitly.
fn region_keys<'de, D: serde::Deserializer<'de>, V: Deserialize<'de>>(
    d: D,
) -> Result<BTreeMap<u32, V>, D::Error> {
    let raw = BTreeMap::<String, V>::deserialize(d)?;
    raw.into_iter()
        .map(|(k, v)| {
            k.parse::<u32>().map(|id| (id, v)).map_err(|_| {
                serde::de::Error::custom(format!("region key {k:?} is not a region ID"))
            })
        })
        .collect()
}

fn is_false(b: &bool) -> bool {
    !*b
}
fn is_zero_i32(v: &i32) -> bool {
    *v == 0
}
fn is_zero_f64(v: &f64) -> bool {
    *v == 0.0
}

impl DerpMap {
    /// Parses Tailscale-format JSON.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Region IDs whose nodes include at least one DERP (not STUN-only) node.
    pub fn derp_region_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.regions
            .values()
            .filter(|r| r.nodes.iter().any(|n| !n.stun_only))
            .map(|r| r.region_id)
    }
}

impl DerpNode {
    /// The STUN port to use, or `None` when STUN is disabled on this node.
    pub fn stun_port(&self) -> Option<u16> {
        match self.stun_port {
            0 => Some(DEFAULT_STUN_PORT),
            p if p > 0 && p <= i32::from(u16::MAX) => u16::try_from(p).ok(),
            _ => None,
        }
    }

    /// Whether to use plain HTTP rather than TLS for DERP.
    pub fn uses_http(&self) -> bool {
        self.force_http || self.insecure_for_tests && self.derp_port == 80
    }

    /// The DERP TCP port to dial.
    pub fn derp_port(&self) -> u16 {
        match u16::try_from(self.derp_port) {
            Ok(p) if p > 0 => p,
            _ if self.force_http => 80,
            _ => DEFAULT_DERP_PORT,
        }
    }

    /// The `http(s)://host:port/derp` URL of this node.
    pub fn derp_url(&self) -> String {
        let scheme = if self.uses_http() { "http" } else { "https" };
        let host = if self.host_name.contains(':') && !self.host_name.starts_with('[') {
            format!("[{}]", self.host_name)
        } else {
            self.host_name.clone()
        };
        format!("{scheme}://{host}:{}{DERP_PATH}", self.derp_port())
    }
}

#[cfg(test)]
pub(crate) mod tests;
