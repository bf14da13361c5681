//! Enrollment & Authentication (E&A) for p2psip: the trust anchor of the overlay.
//!
//! A peer joins by sending the E&A server an enrollment token (from the operator), a CSR
//! (it keeps its private key), its capabilities and its location. The server puts it in a
//! layer ([`LayerRule`]: public + stable + strong → 1, stable behind NAT → 2, unstable or
//! mobile → 3), gives it a Node-ID inside that layer's arc of the one m-bit ID space —
//! location-aware by default ([`assign_location_id`]: a Hilbert curve over latitude and
//! longitude picks the high bits, the low bits are random) or classic SHA-1
//! ([`assign_sha1_id`]) for comparison — and issues a short-lived X.509 certificate from its
//! own CA binding Node-ID, layer and role as subjectAltName URIs (`p2psip:node/<id>`,
//! `p2psip:layer/<n>`, `p2psip:role/<r>`). Certificates are renewed by proving possession
//! of the key and revoked through a signed CRL.
//!
//! Layout: pure logic without I/O — [`layer`], [`hilbert`], [`ids`], [`cert`] (CA,
//! CSR checks, binding, [`verify_peer_chain`] for the TLS runtime), [`token`],
//! [`ratelimit`], [`locality`], [`cities`] — and a thin shell: [`store`] (SQLite, WAL,
//! every certificate committed before it is returned; or PostgreSQL shared by several E&A
//! instances that hold the same CA files), [`server`] (axum, with `/metrics`, `/healthz`
//! and `/readyz`) and [`client`]
//! (reqwest, node directory writer). Wire types are in [`api`].
#![warn(missing_docs, unreachable_pub)]

pub mod api;
pub mod cert;
pub mod cities;
pub mod client;
pub mod hilbert;
pub mod ids;
pub mod layer;
pub mod locality;
mod metrics;
pub mod ratelimit;
pub mod server;
pub mod store;
pub mod token;

pub use api::{EnrollRequest, EnrollResponse, Location, NodeConfig, RenewRequest, ServiceUrls};
pub use cert::{
    PeerIdentity, VerifyError, identity_from_cert, rustls_client_verifier, verify_peer_chain,
};
pub use client::{EnrollClient, write_node_dir};
pub use ids::{IdScheme, assign_location_id, assign_prefix_id, assign_sha1_id};
pub use layer::{Capabilities, Layer, LayerArc, LayerArcs, LayerRule, Role};
pub use server::{
    DataDir, EnrollServer, LayerBoundsError, ServerConfig, parse_layer_bounds, service_names,
};
