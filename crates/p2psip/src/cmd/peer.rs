//! `p2psip peer`: a peer of the secure overlay on mutual TLS, run from the node directory
//! `p2psip enroll` wrote. The peer itself is the `node` library; this module turns the
//! command line into a [`node::Config`] and stops the peer on SIGINT/SIGTERM. Every default
//! the flags show is read from [`node::Config::new`] (and the library types it holds), so
//! the command line, a config file and a program that embeds the peer start from the same
//! values.

use nat::{Credentials, PortRange};
use node::parse_contact;
use overlay::Contact;
use sip::media::RelayBounds;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// The library's defaults the flags show and fall back to (the node directory plays no
/// part in them).
fn defaults() -> node::Config {
    node::Config::new(PathBuf::new())
}

/// The library's control endpoint (it has one unless a program that embeds the peer
/// turns it off, which the command line cannot).
fn default_control() -> SocketAddr {
    defaults()
        .control
        .unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
}

/// `d` in whole milliseconds, as the `*_ms` flags take it.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The media relay's port range unless `--media-ports` says otherwise.
fn default_media_ports() -> PortRange {
    let b = RelayBounds::default();
    PortRange {
        first: b.first_port,
        last: b.last_port,
    }
}

/// Options for `p2psip peer`.
///
/// Membership: the peer builds its CSP/CSPG directory and the key book it checks
/// PingRequest signatures with from the E&A directory (`GET /v1/directory` of the server in
/// node.json; every chain is checked against the CA and the CRL), refreshed every
/// `--directory-refresh-s`. `--directory FILE|URL` reads it elsewhere (same JSON:
/// `{"members":[{"addr":"IP:PORT"|null,"chain":"PEM"}]}`). CSPs and CSPGs are reached at the
/// address they gave at enrollment (`p2psip enroll --listen`), so start them listening there.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Node directory written by `p2psip enroll` (key.pem, chain.pem, ca.pem, node.json).
    #[arg(long)]
    dir: PathBuf,
    /// TLS listen address [default: `listen` from node.json, else 127.0.0.1:0].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Address announced to other peers [default: the bound address].
    #[arg(long)]
    advertise: Option<SocketAddr>,
    /// Peer to join through, as NODE-ID@ADDR (repeatable) [default: the bootstrap list in
    /// node.json].
    #[arg(long, value_parser = parse_contact)]
    bootstrap: Vec<Contact>,
    /// Start a new ring instead of joining one.
    #[arg(long)]
    create: bool,
    /// Local control HTTP endpoint (status, lookups). Unauthenticated, so loopback only.
    #[arg(long, default_value_t = default_control())]
    control: SocketAddr,
    /// Revocation policy when no CRL can be loaded.
    #[arg(long, value_enum, default_value_t = defaults().crl_policy)]
    crl_policy: node::CrlPolicy,
    /// CRL source, URL or file [default: crl_url from node.json].
    #[arg(long)]
    crl: Option<String>,
    /// CRL refresh interval, seconds (keep well below the CRL validity, 1 h by default).
    #[arg(long, default_value_t = defaults().crl_refresh.as_secs())]
    crl_refresh_s: u64,
    /// Chord stabilize interval, ms.
    #[arg(long, default_value_t = millis(defaults().chord.stabilize))]
    stabilize_ms: u64,
    /// Chord fix-fingers interval, ms.
    #[arg(long, default_value_t = millis(defaults().chord.fix_fingers))]
    fix_fingers_ms: u64,
    /// While the ring around this peer is quiet, stabilize and fix-fingers slow down,
    /// doubling per quiet round up to this interval (ms); any change near the peer brings
    /// them back to --stabilize-ms / --fix-fingers-ms at once. 0: never slow down.
    #[arg(long, default_value_t = defaults().chord.quiet_maintenance_max.map_or(0, millis))]
    quiet_maintenance_max_ms: u64,
    /// Chord check-predecessor interval, ms.
    #[arg(long, default_value_t = millis(defaults().chord.check_predecessor))]
    check_pred_ms: u64,
    /// Chord ring-check (partition healing) interval, ms.
    #[arg(long, default_value_t = millis(defaults().chord.ring_check))]
    ring_check_ms: u64,
    /// Chord RPC / hop-acknowledgement timeout, ms.
    #[arg(long, default_value_t = millis(defaults().chord.rpc_timeout))]
    rpc_timeout_ms: u64,
    /// Chord lookup timeout per attempt, ms.
    #[arg(long, default_value_t = millis(defaults().chord.lookup_timeout))]
    lookup_timeout_ms: u64,
    /// Successor-list length when this peer is enrolled as a CSP: it keeps extending its
    /// list to this many peers of its arc, so an eclipse of the peers right after it does
    /// not cut it off from the callees behind them. At most the ordinary list length (8):
    /// off.
    #[arg(long, default_value_t = defaults().chord.csp_successors)]
    csp_successors: usize,
    /// Close connections idle for this long, seconds.
    #[arg(long, default_value_t = defaults().limits.idle_timeout.as_secs())]
    idle_timeout_s: u64,
    /// Cap on concurrent inbound connections.
    #[arg(long, default_value_t = defaults().limits.max_inbound)]
    max_inbound: usize,
    /// STUN server to learn the server-reflexive address from at start, IP:PORT (repeatable)
    /// [default: stun_urls from node.json]. Behind a NAT (reflexive ≠ local) and without
    /// --advertise, the peer runs outbound-only through the first bootstrap peer.
    #[arg(long)]
    stun: Vec<SocketAddr>,
    /// Run outbound-only (behind NAT: accept no connections) with this public peer as the
    /// relay others reach us through, NODE-ID@ADDR.
    #[arg(long, value_parser = parse_contact)]
    relay: Option<Contact>,
    /// Run outbound-only with the first bootstrap peer as the relay.
    #[arg(long)]
    outbound_only: bool,
    /// Outbound-only: keepalive interval on the link to the relay, seconds (holds the NAT
    /// binding and the link's idle timer).
    #[arg(long, default_value_t = defaults().keepalive.as_secs())]
    keepalive_s: u64,
    /// Run ICE for every call placed or answered here (candidates in the SDP of the INVITE
    /// and the 200 OK; host and, with a STUN server, server-reflexive); the chosen pair is
    /// logged and reported.
    #[arg(long)]
    ice: bool,
    /// Membership directory, URL or file [default: GET /v1/directory of the E&A server in
    /// node.json].
    #[arg(long)]
    directory: Option<String>,
    /// Directory refresh interval, seconds (new members, new CSP addresses).
    #[arg(long, default_value_t = defaults().directory_refresh.as_secs())]
    directory_refresh_s: u64,
    /// SOS base URL for route ranking and reports [default: sos_url in node.json]. Without
    /// one the callee takes the shortest route and evidence is dropped.
    #[arg(long)]
    sos: Option<String>,
    /// Run without an SOS even if node.json names one.
    #[arg(long, conflicts_with = "sos")]
    no_sos: bool,
    /// Caller's wait for Ringing before one retry, then failure, ms.
    #[arg(long, default_value_t = millis(defaults().secure.call_timeout))]
    call_timeout_ms: u64,
    /// Callee's wait for the SOS ranking before taking the shortest route, ms.
    #[arg(long, default_value_t = millis(defaults().secure.sos_timeout))]
    sos_timeout_ms: u64,
    /// PingRequest copies the CSP sends per call.
    #[arg(long, default_value_t = defaults().secure.fanout)]
    fanout: usize,
    /// Run the SIP front-end (registrar + proxy, UDP and TCP on the same port) for local SIP
    /// phones on this address: REGISTER stores a signed AoR registration in the overlay,
    /// INVITE to `sip:user@DOMAIN` finds it and takes the secure call flow.
    #[arg(long)]
    sip_listen: Option<SocketAddr>,
    /// SIP domain of the AoRs the front-end serves.
    #[arg(long, default_value = "p2psip.test", requires = "sip_listen")]
    sip_domain: String,
    #[command(flatten)]
    sip_auth: super::sip_auth::SipAuthArgs,
    /// Leave the phones' SDP untouched (no media relay): for phones that do their own ICE,
    /// or a LAN where every phone reaches every other. By default the front-end points each
    /// phone at this peer's media relay, which carries RTP/RTCP to the other end's peer, so
    /// phones behind two NATs hear each other.
    #[arg(long, requires = "sip_listen")]
    no_media_relay: bool,
    /// UDP ports the media relay takes its ports from, FIRST-LAST (four per stream: RTP and
    /// RTCP toward the phone and toward the far end). Open them on a firewall in front of
    /// the peer.
    #[arg(long, value_name = "FIRST-LAST", default_value_t = default_media_ports(), value_parser = |s: &str| PortRange::parse(s, 4))]
    media_ports: PortRange,
    /// Address the phones send media to [default: the --sip-listen address].
    #[arg(long, value_name = "IP")]
    media_lan: Option<std::net::IpAddr>,
    /// Address the other peer sends media to [default: --advertise, else the
    /// server-reflexive address learnt with --stun, else the overlay listen address].
    #[arg(long, value_name = "IP")]
    media_public: Option<std::net::IpAddr>,
    /// Most media streams relayed at once (an audio call takes one, audio + video two).
    #[arg(long, default_value_t = RelayBounds::default().max_streams)]
    media_max_streams: usize,
    /// Seconds without a media packet after which a relayed stream is freed.
    #[arg(long, default_value_t = RelayBounds::default().idle.as_secs())]
    media_idle_s: u64,
    /// TURN server (IP:PORT, UDP) the media relay's far legs go through when this peer's
    /// NAT gives each destination its own mapping (a "symmetric" NAT, which the far end
    /// cannot reach at the STUN-learnt address). The test at start sends Bindings from one
    /// socket to this server and each --stun server: give at least one --stun server other
    /// than this one.
    #[arg(long, value_name = "IP:PORT", requires = "sip_listen")]
    media_turn: Option<SocketAddr>,
    /// Long-term credentials on --media-turn.
    #[arg(long, value_name = "USER:PASSWORD", requires = "media_turn", value_parser = |s: &str| Credentials::parse_user_pass(s).ok_or("want USER:PASSWORD"))]
    media_turn_user: Option<Credentials>,
    /// Send the far legs through --media-turn whatever the NAT.
    #[arg(long, requires = "media_turn")]
    media_turn_always: bool,
    /// TURN allocations kept ready for new calls' far legs (a stream takes two: RTP and
    /// RTCP). Mind the server's allocation quota per user (4 by default on `p2psip
    /// stun-server`): ready and in-use allocations both count.
    #[arg(long, default_value_t = 2, requires = "media_turn")]
    media_turn_pool: usize,
    /// Hand the phones' media to the rtpengine whose ng control port (`--listen-ng`) is
    /// IP:PORT instead of this peer's own relay: the front-end's SDP rewrite becomes ng
    /// offer/answer/delete, for operators who already run one.
    #[arg(long, value_name = "IP:PORT", requires = "sip_listen", conflicts_with_all = ["no_media_relay", "media_turn"])]
    media_rtpengine: Option<SocketAddr>,
    /// How often the node's state (contact cache, records, a CSP's held requests) is written
    /// to the peer database (`peer.db` in the node directory), ms.
    #[arg(long, default_value_t = millis(defaults().db_sync))]
    db_sync_ms: u64,
    /// How long `p2psip call` waits for each answer of the callee in the dialog, ms.
    #[arg(long, default_value_t = millis(defaults().dialog_timeout))]
    dialog_timeout_ms: u64,
}

pub(crate) fn run(a: Args) -> anyhow::Result<()> {
    service::crypto::install_provider();
    if a.sip_listen.is_none() && a.sip_auth.sip_credentials.is_some() {
        anyhow::bail!("--sip-credentials needs --sip-listen: there is no front-end to protect");
    }
    let config = a.into_config();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        node::run(config, super::stop_signal()).await?;
        Ok(())
    })
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

impl Args {
    fn into_config(self) -> node::Config {
        let a = self;
        let defaults = node::Config::new(a.dir);
        node::Config {
            listen: a.listen,
            advertise: a.advertise,
            bootstrap: a.bootstrap,
            create: a.create,
            control: Some(a.control),
            crl_policy: a.crl_policy,
            crl: a.crl,
            crl_refresh: Duration::from_secs(a.crl_refresh_s.max(1)),
            chord: node::ChordTiming {
                stabilize: ms(a.stabilize_ms),
                fix_fingers: ms(a.fix_fingers_ms),
                quiet_maintenance_max: (a.quiet_maintenance_max_ms > 0)
                    .then(|| ms(a.quiet_maintenance_max_ms)),
                check_predecessor: ms(a.check_pred_ms),
                ring_check: ms(a.ring_check_ms),
                rpc_timeout: ms(a.rpc_timeout_ms),
                lookup_timeout: ms(a.lookup_timeout_ms),
                csp_successors: a.csp_successors,
                ..defaults.chord.clone()
            },
            limits: net::Limits {
                idle_timeout: Duration::from_secs(a.idle_timeout_s),
                max_inbound: a.max_inbound,
                ..defaults.limits.clone()
            },
            stun: a.stun.clone(),
            relay: a.relay,
            outbound_only: a.outbound_only,
            keepalive: Duration::from_secs(a.keepalive_s.max(1)),
            ice: a.ice,
            directory: a.directory,
            directory_refresh: Duration::from_secs(a.directory_refresh_s.max(1)),
            sos: match (a.no_sos, a.sos) {
                (true, _) => node::SosChoice::Off,
                (false, Some(url)) => node::SosChoice::Url(url),
                (false, None) => node::SosChoice::FromNodeDir,
            },
            secure: overlay::secure::SecureConfig {
                call_timeout: ms(a.call_timeout_ms),
                sos_timeout: ms(a.sos_timeout_ms),
                fanout: a.fanout,
                ..defaults.secure.clone()
            },
            sip: a.sip_listen.map(|listen| node::SipConfig {
                listen,
                domain: a.sip_domain,
                credentials: a.sip_auth.sip_credentials,
                digest: a.sip_auth.sip_digest,
                media: (!a.no_media_relay).then(|| node::MediaConfig {
                    bounds: sip::media::RelayBounds {
                        first_port: a.media_ports.first,
                        last_port: a.media_ports.last,
                        max_streams: a.media_max_streams,
                        idle: Duration::from_secs(a.media_idle_s.max(1)),
                        ..Default::default()
                    },
                    lan: a.media_lan,
                    public: a.media_public,
                    turn: a.media_turn.map(|server| {
                        let (username, password) = (a.media_turn_user.clone())
                            .map(|c| (c.username, c.password))
                            .unwrap_or_default();
                        node::MediaTurn {
                            server,
                            username,
                            password,
                            mode: if a.media_turn_always {
                                node::TurnMode::Always
                            } else {
                                node::TurnMode::Auto
                            },
                            stun: a.stun.clone(),
                            pool: a.media_turn_pool,
                        }
                    }),
                    rtpengine: a.media_rtpengine,
                }),
            }),
            db_sync: ms(a.db_sync_ms),
            dialog_timeout: ms(a.dialog_timeout_ms),
            ..defaults
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Args as _;

    fn config(extra: &[&str]) -> node::Config {
        let argv: Vec<&str> = ["peer", "--dir", "node"]
            .into_iter()
            .chain(extra.iter().copied())
            .collect();
        match super::super::parse::<Args>(&argv) {
            Ok(args) => args.into_config(),
            Err(e) => panic!("{e}"),
        }
    }

    /// A peer started without options runs with the library's defaults, every one of them:
    /// a flag whose default drifted from [`node::Config::new`] fails here.
    #[test]
    fn no_options_give_the_librarys_defaults() {
        assert_eq!(
            format!("{:#?}", config(&[])),
            format!("{:#?}", node::Config::new("node"))
        );
    }

    /// The same for the SIP front-end and its media relay, whose options only count with
    /// `--sip-listen`.
    #[test]
    fn a_front_end_without_options_has_the_librarys_defaults() {
        let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 5060));
        let sip = config(&["--sip-listen", "127.0.0.1:5060"]).sip;
        assert_eq!(
            format!("{sip:#?}"),
            format!("{:#?}", Some(node::SipConfig::new(listen, "p2psip.test")))
        );
    }

    /// `--help` shows the operator each default the library holds.
    #[test]
    fn help_shows_the_defaults() {
        let help = Args::augment_args(clap::Command::new("peer"))
            .render_long_help()
            .to_string();
        let d = defaults();
        for shown in [
            format!("[default: {}]", millis(d.chord.stabilize)),
            format!("[default: {}]", d.chord.csp_successors),
            format!("[default: {}]", d.crl_refresh.as_secs()),
            format!("[default: {}]", default_media_ports()),
            "[default: require]".to_owned(),
            format!("[default: {}]", default_control()),
        ] {
            assert!(help.contains(&shown), "{shown} missing from\n{help}");
        }
    }
}
