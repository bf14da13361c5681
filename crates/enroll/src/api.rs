//! JSON wire types of the E&A HTTP API and the node config file written by the client.
//!
//! Node-IDs and other 128-bit numbers are decimal strings. Requests refuse unknown fields.
//!
//! | endpoint | body | answer |
//! |---|---|---|
//! | `POST /v1/enroll` | [`EnrollRequest`] | [`EnrollResponse`] |
//! | `POST /v1/renew` | [`RenewRequest`] | [`EnrollResponse`] |
//! | `GET /v1/crl` | – | DER CRL signed by the CA (`application/pkix-crl`) |
//! | `GET /v1/ca` | – | CA certificate PEM |
//! | `GET /v1/directory` | – | [`DirectoryResponse`]: enrolled members' chains and addresses |
//!
//! Errors are 4xx/5xx with an [`ErrorBody`].

use crate::layer::{Capabilities, Layer, Role};
use overlay::NodeId;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Serde helpers writing numbers too wide for JSON numbers (`NodeId`, `u128`) as decimal
/// strings.
pub mod dec {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::fmt::Display;
    use std::str::FromStr;

    /// Serialize `v` as its decimal string.
    pub fn serialize<T: Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    /// Deserialize a value from its decimal string.
    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr<Err: Display>,
        D: Deserializer<'de>,
    {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A geographic location in degrees.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Location {
    /// Latitude, −90..=90.
    pub lat: f64,
    /// Longitude, −180..=180.
    pub lon: f64,
}

/// Why an operator's text (a command-line value) is not the value it should name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {text:?}: {why}")]
pub struct TextError {
    /// What the text should name (`location`, `bootstrap peer`).
    pub what: &'static str,
    /// The text given.
    pub text: String,
    /// What is wrong with it.
    pub why: String,
}

impl TextError {
    fn new(what: &'static str, text: &str, why: String) -> Self {
        TextError {
            what,
            text: text.to_owned(),
            why,
        }
    }
}

impl std::str::FromStr for Location {
    type Err = TextError;

    /// `LAT,LON` in degrees, as `p2psip enroll --location` takes it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why: String| TextError::new("location", s, why);
        let (lat, lon) = s
            .split_once(',')
            .ok_or_else(|| err("expected LAT,LON".into()))?;
        let deg = |what: &str, v: &str| {
            v.trim()
                .parse::<f64>()
                .map_err(|e| err(format!("{what} {v:?}: {e}")))
        };
        Ok(Location {
            lat: deg("latitude", lat)?,
            lon: deg("longitude", lon)?,
        })
    }
}

/// `POST /v1/enroll`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The enrollment token from the operator.
    pub token: String,
    /// PKCS#10 CSR, PEM; the peer keeps the private key.
    pub csr: String,
    /// Requested role; must equal the token's role. Default: the token's role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// Reported capabilities (layer rule input).
    pub capabilities: Capabilities,
    /// Location; without it the source address's network prefix is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// Where the peer will accept overlay connections (offered to others as bootstrap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
}

/// `POST /v1/renew`: proves possession of the current key with a CSR signed by it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    /// The current certificate, PEM (a chain is fine; the first block is used).
    pub certificate: String,
    /// A fresh CSR signed by the same key as the current certificate.
    pub csr: String,
}

/// One layer's arc, as in the overlay parameters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArcInfo {
    /// The layer.
    pub layer: Layer,
    /// First ID (decimal).
    #[serde(with = "dec")]
    pub start: NodeId,
    /// Number of IDs (decimal).
    #[serde(with = "dec")]
    pub len: u128,
}

/// Overlay parameters handed to every peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayParams {
    /// ID width m.
    pub id_bits: u32,
    /// The three layer arcs.
    pub layers: Vec<ArcInfo>,
    /// How IDs are assigned (`location` or `sha1`).
    pub id_scheme: crate::ids::IdScheme,
}

impl OverlayParams {
    /// The parameters of an overlay laid out in `arcs`, IDs assigned by `id_scheme`.
    pub fn new(arcs: &overlay::secure::LayerArcs, id_scheme: crate::ids::IdScheme) -> Self {
        OverlayParams {
            id_bits: arcs.space().bits(),
            layers: [Layer::ONE, Layer::TWO, Layer::THREE]
                .into_iter()
                .map(|l| {
                    let a = arcs.arc(l);
                    ArcInfo {
                        layer: l,
                        start: a.start,
                        len: a.len,
                    }
                })
                .collect(),
            id_scheme,
        }
    }
}

/// A peer to join through.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapPeer {
    /// Its Node-ID.
    #[serde(with = "dec")]
    pub node_id: NodeId,
    /// Its layer.
    pub layer: Layer,
    /// Its role.
    pub role: Role,
    /// Its overlay address.
    pub addr: SocketAddr,
}

impl std::str::FromStr for BootstrapPeer {
    type Err = TextError;

    /// `ID,LAYER,ROLE,ADDR`, as `p2psip enroll-server --bootstrap` takes it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why: String| TextError::new("bootstrap peer", s, why);
        let parts: Vec<&str> = s.split(',').collect();
        let [id, layer, role, addr] = parts.as_slice() else {
            return Err(err("expected ID,LAYER,ROLE,ADDR".into()));
        };
        let layer: u8 = layer.parse().map_err(|e| err(format!("layer: {e}")))?;
        Ok(BootstrapPeer {
            node_id: id.parse().map_err(|e| err(format!("node ID: {e}")))?,
            layer: Layer::new(layer).map_err(|e| err(e.to_string()))?,
            role: role.parse().map_err(|e| err(format!("{e}")))?,
            addr: addr.parse().map_err(|e| err(format!("address: {e}")))?,
        })
    }
}

/// The servers the E&A names to its peers: the SOS, STUN and TURN. Configured on the
/// server, handed out at enrollment, kept in `node.json`: one struct, so that the three
/// travel together.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceUrls {
    /// Secure Opinion Server URL.
    pub sos_url: Option<String>,
    /// STUN server URLs.
    pub stun_urls: Vec<String>,
    /// TURN server URLs.
    pub turn_urls: Vec<String>,
}

/// Answer to enroll and renew.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnrollResponse {
    /// The assigned Node-ID.
    #[serde(with = "dec")]
    pub node_id: NodeId,
    /// The assigned layer.
    pub layer: Layer,
    /// The role.
    pub role: Role,
    /// Certificate chain, PEM: the peer's certificate, then the CA's.
    pub chain: String,
    /// The CA certificate, PEM.
    pub ca: String,
    /// End of the certificate's validity, unix seconds.
    pub not_after: i64,
    /// Overlay parameters.
    pub overlay: OverlayParams,
    /// Peers to join through (same layer first, then other layers' CSPGs).
    pub bootstrap: Vec<BootstrapPeer>,
    /// The SOS, STUN and TURN servers (JSON: their fields inline).
    #[serde(flatten)]
    pub services: ServiceUrls,
}

/// One enrolled member as `GET /v1/directory` publishes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryEntry {
    /// Overlay address given at enrollment (`listen`), if any.
    pub addr: Option<SocketAddr>,
    /// Certificate chain, PEM: the member's newest valid certificate, then the CA's.
    pub chain: String,
}

/// `GET /v1/directory`: who is enrolled, so that peers can build the CSP/CSPG directory and
/// learn the certificate keys that sign PingRequest hops. Peers check every chain against
/// the CA and the CRL themselves; the list is only a convenience. Same JSON shape as the
/// runtime's `DirectoryFile`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryResponse {
    /// CSPGs, then CSPs, then peers.
    pub members: Vec<DirectoryEntry>,
}

/// Body of every error answer (the one all p2psip services use).
pub use service::http::ErrorBody;

/// `node.json`, written by `p2psip enroll` next to the key and chain; what a peer starts
/// from. Paths are relative to the file's directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeConfig {
    /// The Node-ID.
    #[serde(with = "dec")]
    pub node_id: NodeId,
    /// The layer.
    pub layer: Layer,
    /// The role.
    pub role: Role,
    /// Overlay parameters (m, layer arcs, ID scheme).
    pub overlay: OverlayParams,
    /// Peers to join through.
    pub bootstrap: Vec<BootstrapPeer>,
    /// The SOS, STUN and TURN servers (JSON: their fields inline).
    #[serde(flatten)]
    pub services: ServiceUrls,
    /// Address the peer said it listens on.
    pub listen: Option<SocketAddr>,
    /// Base URL of the E&A server (renewal, CRL).
    pub enroll_server: String,
    /// CRL URL.
    pub crl_url: String,
    /// Private key file (PKCS#8 PEM, mode 0600).
    pub key_file: String,
    /// Certificate chain file (PEM: own certificate, then CA).
    pub chain_file: String,
    /// CA certificate file (PEM).
    pub ca_file: String,
    /// End of the certificate's validity, unix seconds (renew before).
    pub not_after: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bootstrap_peer_parses_from_its_flag_text() {
        let p: BootstrapPeer = "1593,1,csp,127.0.0.1:4000".parse().expect("parses");
        assert_eq!(p.node_id, NodeId(1593));
        assert_eq!((p.layer.get(), p.role), (1, Role::Csp));
        assert_eq!(
            p.addr,
            "127.0.0.1:4000".parse::<SocketAddr>().expect("addr")
        );
        for bad in [
            "1593,1,csp",
            "x,1,csp,127.0.0.1:4000",
            "1593,4,csp,127.0.0.1:4000",
            "1593,1,king,127.0.0.1:4000",
            "1593,1,csp,nowhere",
        ] {
            let e = bad.parse::<BootstrapPeer>().expect_err(bad);
            assert_eq!(e.text, bad);
        }
    }

    #[test]
    fn node_json_keeps_the_service_urls_at_its_top_level() {
        let cfg = NodeConfig {
            node_id: NodeId(1593),
            layer: Layer::ONE,
            role: Role::Peer,
            overlay: OverlayParams {
                id_bits: 11,
                layers: Vec::new(),
                id_scheme: crate::ids::IdScheme::Sha1,
            },
            bootstrap: Vec::new(),
            services: ServiceUrls {
                sos_url: Some("https://127.0.0.1:7500".into()),
                stun_urls: vec!["stun:127.0.0.1:3478".into()],
                turn_urls: vec!["turn:127.0.0.1:3478".into()],
            },
            listen: None,
            enroll_server: "https://127.0.0.1:7000".into(),
            crl_url: "https://127.0.0.1:7000/v1/crl".into(),
            key_file: "key.pem".into(),
            chain_file: "chain.pem".into(),
            ca_file: "ca.pem".into(),
            not_after: 0,
        };
        let json = serde_json::to_value(&cfg).expect("serializes");
        assert_eq!(json["sos_url"], "https://127.0.0.1:7500");
        assert_eq!(json["stun_urls"][0], "stun:127.0.0.1:3478");
        assert_eq!(json["turn_urls"][0], "turn:127.0.0.1:3478");
        assert!(json.get("services").is_none());
        let back: NodeConfig = serde_json::from_value(json).expect("parses");
        assert_eq!(back, cfg);
    }

    #[test]
    fn a_location_parses_from_lat_comma_lon() {
        let l: Location = " 59.91, 10.75".parse().expect("parses");
        assert_eq!((l.lat, l.lon), (59.91, 10.75));
        for bad in ["59.91", "north,10", "59.91,east"] {
            assert!(bad.parse::<Location>().is_err(), "{bad}");
        }
    }
}
