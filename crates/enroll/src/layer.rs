//! Roles, capabilities and the layer rule; the three layer arcs of the ID space.
//!
//! The layer rule (paper §2.2), with thresholds in [`LayerRule`]:
//!
//! 1. A peer is **unstable** when its device class is `mobile`, it is on a wireless link, or
//!    its expected uptime is below `stable_uptime_h`. Unstable peers go to **layer 3**.
//! 2. A stable peer with a public IP address (`nat = none`), at least `strong_cpu_cores`
//!    cores and at least `strong_bandwidth_kbps` of upstream bandwidth goes to **layer 1**.
//! 3. Every other stable peer (behind NAT, or public but not strong) goes to **layer 2**.
//!
//! CSP and CSPG certificates are given only to stable peers; an enrollment token may pin
//! the layer of the CSP/CSPG it enrolls (every layer, layer 3 included, needs a few CSPs
//! and a CSPG, which are stable peers placed there by the operator).

use overlay::{IdSpace, NodeId};
use serde::{Deserialize, Serialize};
use std::fmt;

/// What a peer is allowed to be in the overlay; bound into its certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// An ordinary P2PSIP peer.
    Peer,
    /// A Chord Secure Proxy.
    Csp,
    /// A CSP Gateway (cross-layer forwarder).
    Cspg,
}

impl Role {
    /// The lowercase name used in JSON, the CLI and certificates.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Peer => "peer",
            Role::Csp => "csp",
            Role::Cspg => "cspg",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = CapabilityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "peer" => Ok(Role::Peer),
            "csp" => Ok(Role::Csp),
            "cspg" => Ok(Role::Cspg),
            other => Err(CapabilityError::UnknownRole(other.to_string())),
        }
    }
}

/// A layer number, 1 (top) to 3 (bottom).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct Layer(u8);

impl Layer {
    /// Layer 1: stable, strong peers with public IPs.
    pub const ONE: Layer = Layer(1);
    /// Layer 2: stable peers behind NAT.
    pub const TWO: Layer = Layer(2);
    /// Layer 3: unstable / mobile peers.
    pub const THREE: Layer = Layer(3);

    /// Checked constructor (1..=3).
    pub fn new(n: u8) -> Result<Self, CapabilityError> {
        if (1..=3).contains(&n) {
            Ok(Layer(n))
        } else {
            Err(CapabilityError::BadLayer(n))
        }
    }

    /// The layer number.
    pub fn get(self) -> u8 {
        self.0
    }

    /// Zero-based index (0..3).
    pub fn index(self) -> usize {
        usize::from(self.0 - 1)
    }
}

impl TryFrom<u8> for Layer {
    type Error = CapabilityError;
    fn try_from(n: u8) -> Result<Self, Self::Error> {
        Layer::new(n)
    }
}

impl From<Layer> for u8 {
    fn from(l: Layer) -> u8 {
        l.0
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// NAT situation of a peer as it reports it (`none` = public IP address).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum NatType {
    /// Public IP address, no NAT.
    None,
    /// Full-cone NAT.
    FullCone,
    /// Address-restricted cone NAT.
    Restricted,
    /// Port-restricted cone NAT.
    PortRestricted,
    /// Symmetric NAT (needs TURN).
    Symmetric,
    /// Behind NAT of an unknown kind.
    #[default]
    Unknown,
}

/// Device class as the peer reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DeviceClass {
    /// A server in a data centre.
    Server,
    /// A desktop PC.
    #[default]
    Desktop,
    /// A laptop.
    Laptop,
    /// A phone, PDA or other mobile device.
    Mobile,
}

/// Capabilities a peer reports at enrollment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// NAT type; `none` means the peer has a public IP address.
    #[serde(default)]
    pub nat: NatType,
    /// Number of CPU cores.
    pub cpu_cores: u32,
    /// Upstream bandwidth in kbit/s.
    pub bandwidth_kbps: u64,
    /// Expected uptime per session, in hours.
    pub uptime_hours: f64,
    /// Device class.
    #[serde(default)]
    pub device: DeviceClass,
    /// On a wireless link (Wi-Fi, cellular).
    #[serde(default)]
    pub wireless: bool,
}

impl Default for Capabilities {
    /// A desktop behind an unknown NAT, 4 cores, 20 Mbit/s, up 24 h: layer 2.
    fn default() -> Self {
        Self {
            nat: NatType::Unknown,
            cpu_cores: 4,
            bandwidth_kbps: 20_000,
            uptime_hours: 24.0,
            device: DeviceClass::Desktop,
            wireless: false,
        }
    }
}

/// Why capabilities, a role or a location were refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum CapabilityError {
    /// CPU core count outside 1..=4096.
    #[error("cpu_cores {0} is out of range (1..=4096)")]
    CpuCores(u32),
    /// Bandwidth outside 1 kbit/s ..= 1 Tbit/s.
    #[error("bandwidth_kbps {0} is out of range (1..=1000000000)")]
    Bandwidth(u64),
    /// Uptime not a finite number in 0..=87600 h (10 years).
    #[error("uptime_hours {0} is out of range (0..=87600)")]
    Uptime(f64),
    /// Latitude/longitude not finite or out of range.
    #[error("location ({0}, {1}) is not a valid latitude/longitude")]
    Location(f64, f64),
    /// A CSP or CSPG must be a stable peer.
    #[error("a {0} must be a stable peer (not mobile, not wireless, long uptime)")]
    UnstableInfrastructure(Role),
    /// Unknown role name.
    #[error("unknown role {0:?} (peer, csp, cspg)")]
    UnknownRole(String),
    /// Layer number outside 1..=3.
    #[error("layer {0} does not exist (1..=3)")]
    BadLayer(u8),
}

impl Capabilities {
    /// Reject absurd values (the request is then refused with 422).
    pub fn validate(&self) -> Result<(), CapabilityError> {
        if !(1..=4096).contains(&self.cpu_cores) {
            return Err(CapabilityError::CpuCores(self.cpu_cores));
        }
        if !(1..=1_000_000_000).contains(&self.bandwidth_kbps) {
            return Err(CapabilityError::Bandwidth(self.bandwidth_kbps));
        }
        if !self.uptime_hours.is_finite() || !(0.0..=87_600.0).contains(&self.uptime_hours) {
            return Err(CapabilityError::Uptime(self.uptime_hours));
        }
        Ok(())
    }
}

/// Check a latitude/longitude pair.
pub fn validate_location(lat: f64, lon: f64) -> Result<(), CapabilityError> {
    if lat.is_finite()
        && lon.is_finite()
        && (-90.0..=90.0).contains(&lat)
        && (-180.0..=180.0).contains(&lon)
    {
        Ok(())
    } else {
        Err(CapabilityError::Location(lat, lon))
    }
}

/// Thresholds of the layer rule (see the module doc).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerRule {
    /// Minimum expected uptime (hours) to count as stable.
    pub stable_uptime_h: f64,
    /// Minimum CPU cores for layer 1.
    pub strong_cpu_cores: u32,
    /// Minimum upstream bandwidth (kbit/s) for layer 1.
    pub strong_bandwidth_kbps: u64,
}

impl Default for LayerRule {
    fn default() -> Self {
        Self {
            stable_uptime_h: 8.0,
            strong_cpu_cores: 2,
            strong_bandwidth_kbps: 10_000,
        }
    }
}

impl LayerRule {
    /// Is a peer with these capabilities stable?
    pub fn is_stable(&self, c: &Capabilities) -> bool {
        c.device != DeviceClass::Mobile && !c.wireless && c.uptime_hours >= self.stable_uptime_h
    }

    /// The layer for these capabilities (module doc, rules 1–3).
    pub fn layer_for(&self, c: &Capabilities) -> Layer {
        if !self.is_stable(c) {
            Layer::THREE
        } else if c.nat == NatType::None
            && c.cpu_cores >= self.strong_cpu_cores
            && c.bandwidth_kbps >= self.strong_bandwidth_kbps
        {
            Layer::ONE
        } else {
            Layer::TWO
        }
    }

    /// Layer for a role: validates capabilities, refuses unstable CSP/CSPG, and applies a
    /// layer pinned by the enrollment token.
    pub fn assign(
        &self,
        c: &Capabilities,
        role: Role,
        pinned: Option<Layer>,
    ) -> Result<Layer, CapabilityError> {
        c.validate()?;
        if role != Role::Peer && !self.is_stable(c) {
            return Err(CapabilityError::UnstableInfrastructure(role));
        }
        Ok(pinned.unwrap_or_else(|| self.layer_for(c)))
    }
}

/// A clockwise arc `[start, start + len)` of the ID space (`len ≥ 1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arc {
    /// First ID of the arc.
    pub start: NodeId,
    /// Number of IDs in the arc.
    pub len: u128,
}

impl Arc {
    /// Does the arc contain `id`?
    pub fn contains(&self, space: IdSpace, id: NodeId) -> bool {
        space.distance(self.start, id) < self.len
    }

    /// The ID at `offset` (< len) from the start.
    pub fn at(&self, space: IdSpace, offset: u128) -> NodeId {
        space.add(self.start, offset)
    }
}

/// Errors in the overlay parameters (local misconfiguration).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ArcError {
    /// Boundaries must satisfy 0 < b1 < b2 ≤ 2^m − 1.
    #[error("layer boundaries {0}, {1} must satisfy 0 < b1 < b2 <= 2^m - 1 = {2}")]
    Bounds(u128, u128, u128),
}

/// The three layers as contiguous arcs of one m-bit space: layer 1 is `[0, b1)`, layer 2
/// `[b1, b2)`, layer 3 `[b2, 2^m)`. Default: equal thirds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerArcs {
    space: IdSpace,
    bounds: [u128; 2],
}

impl LayerArcs {
    /// Arcs with explicit boundaries.
    pub fn new(space: IdSpace, b1: u128, b2: u128) -> Result<Self, ArcError> {
        if b1 == 0 || b1 >= b2 || b2 > space.max() {
            return Err(ArcError::Bounds(b1, b2, space.max()));
        }
        Ok(Self {
            space,
            bounds: [b1, b2],
        })
    }

    /// Equal thirds (m ≥ 2).
    pub fn thirds(space: IdSpace) -> Result<Self, ArcError> {
        let third = space.max() / 3 + 1;
        Self::new(space, third, third.saturating_mul(2).min(space.max()))
    }

    /// The ID space.
    pub fn space(&self) -> IdSpace {
        self.space
    }

    /// The boundaries `[b1, b2]`.
    pub fn bounds(&self) -> [u128; 2] {
        self.bounds
    }

    /// The arc of a layer.
    pub fn arc(&self, layer: Layer) -> Arc {
        let [b1, b2] = self.bounds;
        match layer.get() {
            1 => Arc {
                start: NodeId(0),
                len: b1,
            },
            2 => Arc {
                start: NodeId(b1),
                len: b2 - b1,
            },
            _ => Arc {
                start: NodeId(b2),
                len: self.space.max() - b2 + 1,
            },
        }
    }

    /// Which layer's arc holds `id`.
    pub fn layer_of(&self, id: NodeId) -> Layer {
        if id.0 < self.bounds[0] {
            Layer::ONE
        } else if id.0 < self.bounds[1] {
            Layer::TWO
        } else {
            Layer::THREE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn caps(nat: NatType, cores: u32, bw: u64, up: f64, device: DeviceClass) -> Capabilities {
        Capabilities {
            nat,
            cpu_cores: cores,
            bandwidth_kbps: bw,
            uptime_hours: up,
            device,
            wireless: false,
        }
    }

    #[test]
    fn layer_rule_examples() {
        let r = LayerRule::default();
        let server = caps(NatType::None, 8, 100_000, 720.0, DeviceClass::Server);
        assert_eq!(r.layer_for(&server), Layer::ONE);
        let pc = caps(
            NatType::PortRestricted,
            4,
            20_000,
            24.0,
            DeviceClass::Desktop,
        );
        assert_eq!(r.layer_for(&pc), Layer::TWO);
        let weak_public = caps(NatType::None, 1, 1_000, 24.0, DeviceClass::Desktop);
        assert_eq!(r.layer_for(&weak_public), Layer::TWO);
        let phone = caps(NatType::Symmetric, 8, 50_000, 24.0, DeviceClass::Mobile);
        assert_eq!(r.layer_for(&phone), Layer::THREE);
        let short = caps(NatType::None, 8, 100_000, 1.0, DeviceClass::Server);
        assert_eq!(r.layer_for(&short), Layer::THREE);
        let mut wifi = server.clone();
        wifi.wireless = true;
        assert_eq!(r.layer_for(&wifi), Layer::THREE);
    }

    #[test]
    fn infrastructure_must_be_stable() {
        let r = LayerRule::default();
        let phone = caps(NatType::Symmetric, 8, 50_000, 24.0, DeviceClass::Mobile);
        assert!(r.assign(&phone, Role::Csp, None).is_err());
        assert_eq!(r.assign(&phone, Role::Peer, None), Ok(Layer::THREE));
        let pc = caps(NatType::Unknown, 4, 20_000, 24.0, DeviceClass::Desktop);
        assert_eq!(
            r.assign(&pc, Role::Csp, Some(Layer::THREE)),
            Ok(Layer::THREE)
        );
    }

    #[test]
    fn absurd_capabilities_rejected() {
        for c in [
            Capabilities {
                cpu_cores: 0,
                ..Capabilities::default()
            },
            Capabilities {
                uptime_hours: f64::NAN,
                ..Capabilities::default()
            },
            Capabilities {
                bandwidth_kbps: u64::MAX,
                ..Capabilities::default()
            },
        ] {
            assert!(c.validate().is_err(), "{c:?}");
        }
        assert!(validate_location(91.0, 0.0).is_err());
        assert!(validate_location(0.0, f64::INFINITY).is_err());
        assert!(validate_location(-33.9, 151.2).is_ok());
    }

    #[test]
    fn paper_space_thirds() {
        let s = IdSpace::new(11).unwrap();
        let a = LayerArcs::thirds(s).unwrap();
        assert_eq!(a.bounds(), [683, 1366]);
        assert_eq!(a.arc(Layer::THREE).len, 2048 - 1366);
        assert_eq!(a.layer_of(NodeId(80)), Layer::ONE);
        assert_eq!(a.layer_of(NodeId(1618)), Layer::THREE);
        assert!(LayerArcs::new(s, 0, 5).is_err());
        assert!(LayerArcs::new(s, 5, 5).is_err());
        assert!(LayerArcs::new(s, 5, 2048).is_err());
    }

    proptest! {
        #[test]
        fn arcs_partition_the_space(bits in 2u32..=128, x: u128) {
            let s = IdSpace::new(bits).unwrap();
            let arcs = LayerArcs::thirds(s).unwrap();
            let id = s.wrap(x);
            let hits: Vec<u8> = (1..=3)
                .filter(|&l| arcs.arc(Layer::new(l).unwrap()).contains(s, id))
                .collect();
            prop_assert_eq!(hits, vec![arcs.layer_of(id).get()]);
            let total = (1..=3).fold(0u128, |t, l| t.wrapping_add(arcs.arc(Layer::new(l).unwrap()).len));
            prop_assert_eq!(total, s.max().wrapping_add(1));
        }
    }
}
