//! The SIP front-end's digest-authentication options, shared by every command that runs
//! a front-end (`p2psip peer --sip-listen`, `p2psip sip-frontends`).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

/// Digest authentication of the phones at a SIP front-end.
#[derive(clap::Args, Debug)]
pub(crate) struct SipAuthArgs {
    /// Require SIP digest authentication (RFC 3261 §22, MD5 and SHA-256) of REGISTER and
    /// new INVITEs at the front-end. FILE has one `user:password` or `user:HA1` per line
    /// (HA1 = H(user:DOMAIN:password) in hex: 32 digits for MD5, 64 for SHA-256; `#`
    /// comments). Without it anyone who reaches the front-end may register and call.
    #[arg(long, value_name = "FILE")]
    pub(crate) sip_credentials: Option<PathBuf>,
    /// Digest algorithms offered with `--sip-credentials`, most preferred first (one
    /// WWW-Authenticate each). Old UAs that read only the first challenge and know only MD5
    /// (SIPp 3.6) need `MD5,SHA-256`.
    #[arg(
        long,
        value_name = "ALGS",
        default_value_t = default_digest(),
        requires = "sip_credentials"
    )]
    pub(crate) sip_digest: String,
}

/// The digest algorithms a peer's front-end offers unless told otherwise
/// ([`node::SipConfig::new`]); `p2psip sip-frontends` offers the same.
fn default_digest() -> String {
    node::SipConfig::new(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), "").digest
}
