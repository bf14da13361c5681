//! Everything a peer is started with: the node directory `p2psip enroll` wrote and the
//! operator's choices. Plain data whose defaults ([`Config::new`], [`ChordTiming::default`])
//! are the only copy: `p2psip peer` shows them in `--help` and falls back to them, so a
//! command line, a config file or a test builds the same [`Config`].

use net::{KindLog, Limits, Membership, NodeDir, SosCounters};
use overlay::Contact;
use overlay::secure::{Routing, SecureConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Where a peer's enrollment (key, certificate chain, CA, `node.json`) comes from.
#[derive(Clone, Debug)]
pub enum NodeSource {
    /// A node directory written by `p2psip enroll`; the peer also keeps `peer.db` and
    /// `control.addr` there.
    Dir(PathBuf),
    /// Already in memory, for a program that enrolled its peers itself (the lab's demo
    /// runs hundreds in one process): no `peer.db`, no `control.addr` file.
    Loaded(Box<NodeDir>),
}

/// What to do while no CRL could be loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
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
    /// While the ring check keeps confirming the successor, it slows down up to this
    /// interval; a change near the peer or an unanswered check (a possible partition)
    /// brings it back to `ring_check`. `None`: never slow down.
    pub quiet_ring_check_max: Option<Duration>,
    /// RPC / hop-acknowledgement timeout.
    pub rpc_timeout: Duration,
    /// Lookup timeout per attempt.
    pub lookup_timeout: Duration,
    /// Successor-list length (fault tolerance against consecutive failures).
    pub successors: usize,
    /// Successor-list length of a peer enrolled as a CSP. Longer than `successors`, it
    /// turns on Chord's successor-list extension for that peer (`extend_successors`: the
    /// CSP asks the end of its list for more until it is this long), so the CSP knows the
    /// peers of its own arc directly and an eclipse of the few peers right after it does
    /// not cut it off from the callees behind them — the simulator's CSPs run the same
    /// way. At most `successors`: a CSP keeps the same list as everyone.
    pub csp_successors: usize,
    /// Answer a lookup from the successor list when the key falls inside it (one hop
    /// fewer near the owner).
    pub successor_shortcut: bool,
}

impl Default for ChordTiming {
    fn default() -> Self {
        ChordTiming {
            stabilize: Duration::from_millis(2000),
            fix_fingers: Duration::from_millis(4000),
            quiet_maintenance_max: Some(Duration::from_millis(16_000)),
            check_predecessor: Duration::from_millis(5000),
            ring_check: Duration::from_millis(30_000),
            quiet_ring_check_max: Some(Duration::from_secs(240)),
            rpc_timeout: Duration::from_millis(500),
            lookup_timeout: Duration::from_millis(5000),
            successors: 8,
            csp_successors: 32,
            successor_shortcut: false,
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
    /// The media relay for the phones' calls (their SDP names this peer, which carries
    /// the media to the other peer); `None`: SDP passes untouched.
    pub media: Option<crate::MediaConfig>,
}

impl SipConfig {
    /// A front-end on `listen` for `domain`, without authentication.
    pub fn new(listen: SocketAddr, domain: impl Into<String>) -> Self {
        SipConfig {
            listen,
            domain: domain.into(),
            credentials: None,
            digest: "SHA-256,MD5".into(),
            media: Some(crate::MediaConfig::default()),
        }
    }
}

/// Where the SOS is.
#[derive(Clone, Debug)]
pub enum SosChoice {
    /// The SOS named in node.json, if any.
    FromNodeDir,
    /// This SOS base URL.
    Url(String),
    /// No SOS even if node.json names one: callees take the shortest route, evidence is
    /// dropped.
    Off,
    /// This client, counting its rankings and reports into these counters (the peers of
    /// one process sharing one client and one count).
    Client(sos::SosClient, Arc<SosCounters>),
}

/// How the peer gets onto its layer's ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JoinMode {
    /// At start: create the ring with `create`, else join through the first bootstrap
    /// peer (and again through the next after a failed join).
    AtStart,
    /// The embedding program creates or joins through [`crate::Node::handle`] (the lab's
    /// demo forms its rings itself to measure them).
    Manual,
}

/// Everything a peer runs with. [`Config::new`] gives `p2psip peer`'s defaults.
#[derive(Clone, Debug)]
pub struct Config {
    /// The enrollment: a node directory written by `p2psip enroll` (key.pem, chain.pem,
    /// ca.pem, node.json), or the same already in memory.
    pub node: NodeSource,
    /// TLS listen address; `None`: `listen` from node.json, else 127.0.0.1:0.
    pub listen: Option<SocketAddr>,
    /// Address announced to other peers; `None`: the bound address.
    pub advertise: Option<SocketAddr>,
    /// Peers to join through; empty: the bootstrap list in node.json.
    pub bootstrap: Vec<Contact>,
    /// Start a new ring instead of joining one.
    pub create: bool,
    /// When and how the peer joins its ring.
    pub join: JoinMode,
    /// Local control HTTP endpoint (status, lookups, calls); must be loopback. `None`: no
    /// control endpoint (a program that holds the [`crate::Node`] asks it directly).
    pub control: Option<SocketAddr>,
    /// Revocation policy when no CRL can be loaded.
    pub crl_policy: CrlPolicy,
    /// CRL source, URL or file; `None`: crl_url from node.json.
    pub crl: Option<String>,
    /// CRL refresh interval.
    pub crl_refresh: Duration,
    /// Chord timing.
    pub chord: ChordTiming,
    /// The runtime's bounds: queues, links, connection set-up, idle timeout.
    pub limits: Limits,
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
    /// A membership checked already (chains against the CA and CRL) instead of the
    /// directory: neither fetched nor refreshed.
    pub membership: Option<Membership>,
    /// Directory refresh interval.
    pub directory_refresh: Duration,
    /// The SOS.
    pub sos: SosChoice,
    /// The secure layer: PingRequest copies per call (`fanout`, 1..=16), first hops, the
    /// caller's wait for Ringing (`call_timeout`), the callee's wait for the SOS ranking
    /// (`sos_timeout`).
    pub secure: SecureConfig,
    /// The paper's secure routing, or plain Chord (the baseline the paper compares with).
    pub routing: Routing,
    /// Answer incoming calls from the peer's own user agent. Off: the overlay reports
    /// Ringing and the call is left to the application (the paper's prototype measures
    /// Ringing and hangs up at the overlay level).
    pub answer_calls: bool,
    /// Seed of the peer's randomness (Chord, secure layer, user agent); `None`: fresh
    /// system randomness at every start. Fixed only for reproducible experiments.
    pub seed: Option<[u8; 32]>,
    /// Where received message kinds are counted; `None`: a log of its own. Peers of one
    /// process may share one.
    pub kind_log: Option<Arc<KindLog>>,
    /// Misbehave as the paper's malicious peer: drop every PingRequest and INVITE this
    /// peer should forward. For experiments on secure routing only.
    pub drop_forwarded: bool,
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
        Config::with_node(NodeSource::Dir(dir.into()))
    }

    /// `p2psip peer`'s defaults for an enrollment already in memory.
    pub fn loaded(node: NodeDir) -> Self {
        Config::with_node(NodeSource::Loaded(Box::new(node)))
    }

    fn with_node(node: NodeSource) -> Self {
        Config {
            node,
            listen: None,
            advertise: None,
            bootstrap: Vec::new(),
            create: false,
            join: JoinMode::AtStart,
            control: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            crl_policy: CrlPolicy::Require,
            crl: None,
            crl_refresh: Duration::from_secs(300),
            chord: ChordTiming::default(),
            limits: Limits::default(),
            stun: Vec::new(),
            relay: None,
            outbound_only: false,
            keepalive: Duration::from_secs(15),
            ice: false,
            directory: None,
            membership: None,
            directory_refresh: Duration::from_secs(30),
            sos: SosChoice::FromNodeDir,
            secure: SecureConfig::default(),
            routing: Routing::Secure,
            answer_calls: true,
            seed: None,
            kind_log: None,
            drop_forwarded: false,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every call a peer's SIP front-end holds has its other end in the overlay's dialog
    /// table: a smaller dialog table forgets calls still in progress (their 200, ACK and
    /// BYE are then refused) before the front-end refuses new ones.
    #[test]
    fn the_dialog_table_holds_every_call_a_front_end_may_hold() {
        let local: SocketAddr = ([127, 0, 0, 1], 5060).into();
        let fe = sip::FrontEndConfig::new("example.test", local);
        assert!(
            SecureConfig::default().max_dialogs >= fe.max_calls,
            "dialogs {} < front-end calls {}",
            SecureConfig::default().max_dialogs,
            fe.max_calls
        );
    }
}
