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
//!
//! [`Role`], [`Layer`] and the layer arcs ([`LayerArcs`], [`LayerArc`]) are the overlay's
//! own types: what E&A binds into a certificate is what the secure layer acts on.

pub use overlay::secure::{Layer, LayerArc, LayerArcs, LayerArcsError, LayerError, Role};
use serde::{Deserialize, Serialize};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
