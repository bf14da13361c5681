//! Everything a peer is started with: the node directory `p2psip enroll` wrote and the
//! operator's choices. Plain data with the defaults `p2psip peer` documents, so a command
//! line, a config file or a test builds the same [`Config`].

use overlay::Contact;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// What to do while no CRL could be loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrlPolicy {
    /// Refuse to start, and refuse every peer, without a CRL (fail closed).
    Require,
    /// Start and accept peers without revocation checks until a CRL loads (logged).
    AllowMissing,
}

/// Chord maintenance and lookup timing.
#[derive(Clone, Debug)]
pub struct ChordTiming {
    /// Stabilize interval.
    pub stabilize: Duration,
    /// Fix-fingers interval.
    pub fix_fingers: Duration,
    /// While the ring around the peer is quiet, stabilize and fix-fingers slow down,
    /// doubling per quiet round up to this interval; `None`: never slow down.
    pub quiet_maintenance_max: Option<Duration>,
    /// Check-predecessor interval.
    pub check_predecessor: Duration,
    /// Ring-check (partition healing) interval.
    pub ring_check: Duration,
    /// RPC / hop-acknowledgement timeout.
    pub rpc_timeout: Duration,
    /// Lookup timeout per attempt.
    pub lookup_timeout: Duration,
}

impl Default for ChordTiming {
    fn default() -> Self {
        ChordTiming {
            stabilize: Duration::from_millis(2000),
            fix_fingers: Duration::from_millis(4000),
            quiet_maintenance_max: Some(Duration::from_millis(16_000)),
            check_predecessor: Duration::from_millis(5000),
            ring_check: Duration::from_millis(30_000),
            rpc_timeout: Duration::from_millis(500),
            lookup_timeout: Duration::from_millis(5000),
        }
    }
}

/// The SIP front-end (registrar + proxy) for local phones.
#[derive(Clone, Debug)]
pub struct SipConfig {
    /// UDP and TCP listen address (same port).
    pub listen: SocketAddr,
    /// SIP domain of the AoRs the front-end serves.
    pub domain: String,
    /// Digest credentials file (`user:password` or `user:HA1` per line); `None`: anyone
    /// who reaches `listen` may register and call.
    pub credentials: Option<PathBuf>,
    /// Digest algorithms offered with `credentials`, most preferred first
    /// (e.g. `SHA-256,MD5`).
    pub digest: String,
}

impl SipConfig {
    /// A front-end on `listen` for `domain`, without authentication.
    pub fn new(listen: SocketAddr, domain: impl Into<String>) -> Self {
        SipConfig {
            listen,
            domain: domain.into(),
            credentials: None,
            digest: "SHA-256,MD5".into(),
        }
    }
}

/// Where the SOS is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SosChoice {
    /// The SOS named in node.json, if any.
    FromNodeDir,
    /// This SOS base URL.
    Url(String),
    /// No SOS even if node.json names one: callees take the shortest route, evidence is
    /// dropped.
    Off,
}

/// Everything a peer runs with. [`Config::new`] gives `p2psip peer`'s defaults.
#[derive(Clone, Debug)]
pub struct Config {
    /// Node directory written by `p2psip enroll` (key.pem, chain.pem, ca.pem, node.json);
    /// the peer also keeps `peer.db` and `control.addr` there.
    pub dir: PathBuf,
    /// TLS listen address; `None`: `listen` from node.json, else 127.0.0.1:0.
    pub listen: Option<SocketAddr>,
    /// Address announced to other peers; `None`: the bound address.
    pub advertise: Option<SocketAddr>,
    /// Peers to join through; empty: the bootstrap list in node.json.
    pub bootstrap: Vec<Contact>,
    /// Start a new ring instead of joining one.
    pub create: bool,
    /// Local control HTTP endpoint (status, lookups, calls); must be loopback.
    pub control: SocketAddr,
    /// Revocation policy when no CRL can be loaded.
    pub crl_policy: CrlPolicy,
    /// CRL source, URL or file; `None`: crl_url from node.json.
    pub crl: Option<String>,
    /// CRL refresh interval.
    pub crl_refresh: Duration,
    /// Chord timing.
    pub chord: ChordTiming,
    /// Close connections idle for this long.
    pub idle_timeout: Duration,
    /// Cap on concurrent inbound connections.
    pub max_inbound: usize,
    /// STUN servers to learn the server-reflexive address from at start; empty:
    /// stun_urls from node.json.
    pub stun: Vec<SocketAddr>,
    /// Run outbound-only with this public peer as the relay.
    pub relay: Option<Contact>,
    /// Run outbound-only with the first bootstrap peer as the relay.
    pub outbound_only: bool,
    /// Outbound-only: keepalive interval on the link to the relay.
    pub keepalive: Duration,
    /// Run ICE for every call placed or answered here.
    pub ice: bool,
    /// Membership directory, URL or file; `None`: the E&A server's `/v1/directory`.
    pub directory: Option<String>,
    /// Directory refresh interval.
    pub directory_refresh: Duration,
    /// The SOS.
    pub sos: SosChoice,
    /// Caller's wait for Ringing before one retry, then failure.
    pub call_timeout: Duration,
    /// Callee's wait for the SOS ranking before taking the shortest route.
    pub sos_timeout: Duration,
    /// PingRequest copies the CSP sends per call (1..=16).
    pub fanout: usize,
    /// The SIP front-end, if any.
    pub sip: Option<SipConfig>,
    /// How often the node's state is written to `peer.db`.
    pub db_sync: Duration,
    /// How long a call placed through the control endpoint waits for each answer of the
    /// callee in the dialog.
    pub dialog_timeout: Duration,
}

impl Config {
    /// `p2psip peer`'s defaults for the node directory `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Config {
            dir: dir.into(),
            listen: None,
            advertise: None,
            bootstrap: Vec::new(),
            create: false,
            control: SocketAddr::from(([127, 0, 0, 1], 0)),
            crl_policy: CrlPolicy::Require,
            crl: None,
            crl_refresh: Duration::from_secs(300),
            chord: ChordTiming::default(),
            idle_timeout: Duration::from_secs(60),
            max_inbound: 1024,
            stun: Vec::new(),
            relay: None,
            outbound_only: false,
            keepalive: Duration::from_secs(15),
            ice: false,
            directory: None,
            directory_refresh: Duration::from_secs(30),
            sos: SosChoice::FromNodeDir,
            call_timeout: Duration::from_millis(3000),
            sos_timeout: Duration::from_millis(500),
            fanout: 4,
            sip: None,
            db_sync: Duration::from_millis(2000),
            dialog_timeout: Duration::from_millis(5000),
        }
    }
}

/// Parse `NODE-ID@ADDR`, the form peers are named in on command lines and in config files.
pub fn parse_contact(s: &str) -> Result<Contact, String> {
    let (id, addr) = s
        .split_once('@')
        .ok_or_else(|| format!("expected NODE-ID@ADDR, got {s:?}"))?;
    let id: overlay::NodeId = id.parse().map_err(|e| format!("bad node ID {id:?}: {e}"))?;
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| format!("bad address {addr:?}: {e}"))?;
    Ok(Contact::new(id, addr))
}
