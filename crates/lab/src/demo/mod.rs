//! `p2psip demo`: the paper's 512-peer prototype on real TLS, in one process.
//!
//! Starts the E&A server, the SOS and the STUN server in-process, issues every peer an E&A
//! certificate with an Ed25519 key (the paper's fixed layout: m = 11, three layers, the
//! paper's IDs for the CSPs, CSPGs and named peers, so E&A's CA issues them directly with
//! operator-assigned IDs), and runs every peer as a real mutual-TLS listener on 127.0.0.1
//! (one tokio runtime; every peer a [`node::Node`], started as `p2psip peer` starts). The layer rings converge, then:
//!
//! 1. the paper's scenario: peer 80 calls peer 1618 while 1617 drops what it forwards —
//!    over plain Chord (a flat ring of the same peers, started for this call) the INVITE
//!    dies at 1617; over the secure overlay the CSPs multicast PingRequests, the SOS ranks
//!    the routes and the call rings;
//! 2. `--calls N` random calls between ordinary peers, measuring the session request delay
//!    (INVITE sent → 180 Ringing received, RFC 6076 SRD), hops, call traffic, and RSS.
//!
//! `--simulated` runs the discrete-event simulator instead (the previous demo).

mod calls;
mod churn;
mod cluster;
mod host;
mod members;
mod scenario;
mod soak;

use crate::LabError;
use crate::progress::bar;
use cluster::{Cluster, Launch, chord_timing, converge, launch, membership, sum_stats};
use host::{MIN_PEER_LINKS, nofile_limit, process_cpu, raise_nofile, rss_bytes};
use members::{Enrolled, issue, paper_ids};
use net::{CrlStore, RevocationPolicy, SosCounters, Trust};
use overlay::secure::{FirstHops, LayerArcs, Routing, SecureConfig};
use overlay::{IdSpace, NodeId};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use scenario::Scenario;
use serde_json::json;
use sim::paper;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Options for `p2psip demo`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Run the discrete-event simulator instead of real TLS peers.
    #[arg(long)]
    simulated: bool,
    /// Peers (at least 24: the paper's CSPs, CSPGs and named peers; the paper has 512).
    #[arg(long, default_value_t = 512)]
    peers: usize,
    /// Random calls to place after the scenario.
    #[arg(long, default_value_t = 1000)]
    calls: u64,
    /// Calls in flight at once during the random calls.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Fraction of ordinary peers that are malicious (simulated demo only).
    #[arg(long, default_value_t = 0.0)]
    malicious: f64,
    /// Seed for every random choice (IDs, callers, callees).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// Skip the plain-Chord baseline (a second, flat ring of the same peers).
    #[arg(long)]
    no_baseline: bool,
    /// Keep the overlay running after the report until Ctrl-C, and print where every
    /// service listens.
    #[arg(long)]
    serve: bool,
    /// Seconds to wait for the rings to converge.
    #[arg(long, default_value_t = 120)]
    converge_timeout_s: u64,
    /// With --serve: run SIP front-ends (registrar + proxy on UDP and TCP) on this many
    /// ordinary peers of the secure overlay, so SIP phones or SIPp can register and call
    /// through it; prints `frontend <peer-id> udp+tcp <addr> domain <D>` for each.
    #[arg(long, default_value_t = 0, requires = "serve")]
    frontends: usize,
    /// With --frontends: print each front-end's tables and counters every SECS seconds
    /// (`stats frontend <peer-id>: transactions N ...`; 0: never), for soak runs.
    #[arg(long, value_name = "SECS", default_value_t = 0, requires = "frontends")]
    stats_every: u64,
    /// With --frontends: leave the phones' SDP untouched (no media relay), as a SIP proxy
    /// such as Kamailio without rtpengine does; by default each front-end anchors the
    /// phones' media at its peer, four UDP ports per stream.
    #[arg(long, requires = "frontends")]
    no_media_relay: bool,
    /// Seconds to leave the overlay alone after the random calls before measuring what it
    /// costs at rest (messages, TLS dials, CPU): right after the calls the peers' quiet
    /// maintenance is still backing off and links the calls opened are still idling out.
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    rest_after_s: u64,
    /// Seconds over which the at-rest cost is measured.
    #[arg(long, value_name = "SECS", default_value_t = 3)]
    rest_window_s: u64,
    /// An ordinary peer's share of the links (default: its share of this process's
    /// open-file limit less its listener and dials in flight; a size whose share would fall
    /// below 12 runs fewer peers, see --check-fit). Every peer runs in this one process here, so their
    /// links share its descriptors: a peer holding its share closes its least recently
    /// used link before it opens another only while the peers hold all their shares
    /// together, and never holds more than 96 (or the share, if larger).
    #[arg(long, value_name = "N")]
    peer_links: Option<usize>,
    /// Only say whether `--peers` real peers run in this process here (the paper's ID space,
    /// the open-file limit) and each one's link share, then exit: one line, JSON with
    /// `--json` (`peers`, `runs`, `reason`, `peer_links`, `nofile`).
    #[arg(long)]
    check_fit: bool,
    /// SIP domain the front-ends serve (AoRs are `sip:user@DOMAIN`).
    #[arg(long, default_value = "p2psip.test")]
    sip_domain: String,
    /// After the random calls: hard-stop this fraction of the ordinary peers at once under
    /// a call workload and report the recovery (0: no churn run).
    #[arg(long, default_value_t = 0.0)]
    kill_fraction: f64,
    /// With --kill-fraction: seconds of workload before the kill.
    #[arg(long, default_value_t = 5)]
    churn_before_s: u64,
    /// With --kill-fraction: seconds of workload after the kill.
    #[arg(long, default_value_t = 30)]
    churn_after_s: u64,
    /// With --kill-fraction: window (ms) over which the ring rate is computed.
    #[arg(long, default_value_t = 1000)]
    churn_window_ms: u64,
    /// With --kill-fraction: a call counts as ringing if it rings within this (ms).
    #[arg(long, default_value_t = 2000)]
    churn_ring_within_ms: u64,
    /// After everything else: keep calling with churn for this many minutes, sampling RSS,
    /// descriptors and call success (0: no soak; fractions allowed).
    #[arg(long, default_value_t = 0.0)]
    soak_minutes: f64,
    /// With --soak-minutes: seconds between samples.
    #[arg(long, default_value_t = 30)]
    soak_interval_s: u64,
    /// With --soak-minutes: write the samples here as CSV.
    #[arg(long)]
    soak_csv: Option<std::path::PathBuf>,
}

/// Run `p2psip demo`.
pub fn run(args: Args) -> Result<(), LabError> {
    if args.simulated {
        return run_simulated(args);
    }
    // Checked before the demo starts, not after minutes of it.
    if !(0.0..1.0).contains(&args.kill_fraction) {
        return Err(LabError::Args(format!(
            "--kill-fraction must be in [0, 1), got {}",
            args.kill_fraction
        )));
    }
    raise_nofile();
    let fit = Fit::of(&args);
    if args.check_fit {
        if args.json {
            say!("{}", fit.json());
        } else {
            say!("{}", fit.line());
        }
        return Ok(());
    }
    if let Some(why) = &fit.reason {
        if fit.peers < 24 {
            return Err(LabError::Args(why.clone()));
        }
        tracing::warn!("{why}; running {} peers", fit.peers);
    }
    let mut args = args;
    args.peers = fit.peers;
    args.peer_links = Some(fit.peer_links);
    service::crypto::install_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(LabError::Runtime)?;
    rt.block_on(real(args))
}

/// Whether and how `--peers` real peers run in this one process.
struct Fit {
    /// Peers asked for.
    asked: usize,
    /// Peers that run: `asked`, or fewer when the open-file limit holds fewer.
    peers: usize,
    /// An ordinary peer's share of the links.
    peer_links: usize,
    /// The open-file limit (after raising the soft limit to the hard one).
    nofile: u64,
    /// Why not all of `asked` run (`peers` < 24: none run).
    reason: Option<String>,
}

impl Fit {
    /// The most peers the paper's layout places: m = 11 gives 2 048 Node-IDs, of which
    /// 1537–1624 stay free for the paper's scenario, and random IDs are drawn until this
    /// many are distinct.
    const MAX_PEERS: usize = 1500;

    fn of(args: &Args) -> Fit {
        let nofile = nofile_limit();
        let asked = args.peers;
        let fail = |reason: String| Fit {
            asked,
            peers: 0,
            peer_links: 0,
            nofile,
            reason: Some(reason),
        };
        if !(24..=Self::MAX_PEERS).contains(&asked) {
            return fail(format!(
                "--peers must be between 24 and {} (the paper's layout: m = 11 gives 2048 \
                 Node-IDs, 1537-1624 kept free for its scenario)",
                Self::MAX_PEERS
            ));
        }
        let fits = host::max_peers(args.peer_links.unwrap_or(MIN_PEER_LINKS));
        let peers = asked.min(fits);
        let peer_links = args
            .peer_links
            .unwrap_or_else(|| host::peer_links(peers))
            .max(1);
        let reason = (peers < asked).then(|| {
            format!(
                "the open-file limit ({nofile}) holds {fits} peers in this one process, each \
                 with its listener and at least {} links (both ends of a link between two of \
                 its peers are its descriptors); raise the hard limit (`ulimit -Hn`, as root) \
                 to run {asked}",
                args.peer_links
                    .unwrap_or(MIN_PEER_LINKS)
                    .max(MIN_PEER_LINKS)
            )
        });
        if peers < 24 {
            return fail(reason.unwrap_or_default());
        }
        Fit {
            asked,
            peers,
            peer_links,
            nofile,
            reason,
        }
    }

    fn runs(&self) -> bool {
        self.reason.is_none()
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "peers": self.asked,
            "runs": self.runs(),
            "reason": self.reason,
            "peer_links": self.peer_links,
            "nofile": self.nofile,
        })
    }

    fn line(&self) -> String {
        match &self.reason {
            None => format!(
                "{} peers run here: {} links each at most (open-file limit {})",
                self.asked, self.peer_links, self.nofile
            ),
            Some(why) => format!("{} peers do not run here: {why}", self.asked),
        }
    }
}

/// What the converged overlay costs while nobody calls: measured over `window`.
struct AtRest {
    /// CPU used, in cores (1.0 = one core busy all the time).
    cores: f64,
    /// Overlay messages received per peer per second.
    messages_per_peer_per_s: f64,
    /// The most frequent kinds, most first, per peer per second.
    top_kinds: Vec<(&'static str, f64)>,
    /// TLS connections set up (dialled) during the window, per second.
    dials_per_s: f64,
    /// Links closed during the window for idleness or to make room, per second.
    closed_per_s: f64,
    /// Of those, closed to make room (at `max_links`), per second.
    evicted_per_s: f64,
    /// Links open per peer at the end of the window: mean and most.
    links_mean: f64,
    links_max: u64,
    /// Descriptors this process holds at the end of the window.
    fds: u64,
}

async fn measure_at_rest(c: &Cluster, peers: usize, window: Duration) -> AtRest {
    let log = &c.log;
    let (kinds0, cpu0, t0) = (log.totals_by_kind(), process_cpu(), Instant::now());
    let st0 = sum_stats(&c.handles);
    tokio::time::sleep(window).await;
    let (kinds1, cpu1, secs) = (
        log.totals_by_kind(),
        process_cpu(),
        t0.elapsed().as_secs_f64(),
    );
    let st1 = sum_stats(&c.handles);
    let links: Vec<u64> = c.handles.iter().map(|h| h.stats().links_open).collect();
    let per_s = |n: u64| n as f64 / secs.max(1e-9);
    let rate = |n: u64| per_s(n) / peers.max(1) as f64;
    let mut top: Vec<(&'static str, f64)> = kinds1
        .iter()
        .map(|(k, n)| (*k, rate(n - kinds0.get(k).copied().unwrap_or(0))))
        .filter(|(_, r)| *r > 0.0)
        .collect();
    top.sort_by(|a, b| b.1.total_cmp(&a.1));
    AtRest {
        cores: (cpu1 - cpu0).as_secs_f64() / secs.max(1e-9),
        messages_per_peer_per_s: top.iter().map(|(_, r)| r).sum(),
        top_kinds: top.into_iter().take(5).collect(),
        dials_per_s: per_s(st1.dials_ok.saturating_sub(st0.dials_ok)),
        closed_per_s: per_s(
            (st1.idle_closed + st1.links_evicted)
                .saturating_sub(st0.idle_closed + st0.links_evicted),
        ),
        evicted_per_s: per_s(st1.links_evicted.saturating_sub(st0.links_evicted)),
        links_mean: links.iter().sum::<u64>() as f64 / links.len().max(1) as f64,
        links_max: links.iter().copied().max().unwrap_or(0),
        fds: host::open_fds(),
    }
}

/// `part / whole`, 0 when there is no whole: the share of calls that rang, or a count per
/// call, of runs that may have placed no call at all.
fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Percentile of sorted samples (nearest rank).
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn real(args: Args) -> Result<(), LabError> {
    let quiet = args.json;
    // Through `service::say!`: a closed stdout (`p2psip demo | head`) must not end the demo.
    let note = |s: String| {
        if !quiet {
            say!("{s}");
        }
    };
    let wall = Instant::now();
    let tmp = tempfile::tempdir().map_err(LabError::setup(
        "creating a temporary directory for the E&A and SOS data",
    ))?;
    let space = IdSpace::new(11).map_err(LabError::setup("the paper's ID space (m = 11)"))?;
    let arcs =
        LayerArcs::new(space, paper::ARCS).map_err(LabError::setup("the paper's layer arcs"))?;

    // E&A, serving its CA and CRL over HTTP.
    let ea_dir = tmp.path().join("ea");
    let ea_cfg = enroll::ServerConfig {
        id_bits: 11,
        layer_bounds: Some([paper::ARCS[1], paper::ARCS[2]]),
        ..enroll::ServerConfig::default()
    };
    let ea = enroll::EnrollServer::open(&ea_dir, ea_cfg).map_err(LabError::server(format!(
        "opening the E&A server's data in {}",
        ea_dir.display()
    )))?;
    let ea_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(LabError::server("binding the E&A listener on 127.0.0.1"))?;
    let ea_addr = ea_listener
        .local_addr()
        .map_err(LabError::server("the E&A listener's address"))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut stop = stop_rx.clone();
    tokio::spawn(ea.serve(ea_listener, async move {
        let _ = stop.wait_for(|s| *s).await;
    }));
    let ca_data = enroll::DataDir::open(&ea_dir).map_err(LabError::server(format!(
        "opening the E&A CA in {}",
        ea_dir.display()
    )))?;
    let ca = ca_data.ca();
    note(format!(
        "p2psip demo — {} real TLS peers on 127.0.0.1 (paper layout: m = 11, layers [0,512) [512,1024) [1024,2048))",
        args.peers
    ));
    note(format!(
        "  E&A       https://{ea_addr}  (CA {})",
        &ca.fingerprint()[..16]
    ));

    // Certificates: Ed25519 keys, the paper's IDs, roles and layers.
    let ids = paper_ids(args.peers, args.seed);
    let pb = bar(ids.len() as u64, "enrolling", quiet);
    let mut members = Vec::with_capacity(ids.len());
    for id in &ids {
        members.push(issue(ca, &arcs, *id)?);
        pb.inc(1);
    }
    pb.finish_and_clear();
    let crl_url = format!("https://{ea_addr}/v1/crl");
    let crl = net::fetch_crl(&crl_url, ca.cert_der())
        .await
        .map_err(LabError::server(format!(
            "fetching the CRL from E&A at {crl_url}"
        )))?;
    let crls = CrlStore::new();
    crls.set(crl);
    let trust = Trust {
        ca: ca.cert_der().clone(),
        crls,
        policy: RevocationPolicy::RequireCrl,
    };
    let csp = members
        .iter()
        .filter(|m| m.role == enroll::Role::Csp)
        .count();
    let cspg = members
        .iter()
        .filter(|m| m.role == enroll::Role::Cspg)
        .count();
    note(format!(
        "  enrolled  {} peers: {} ordinary, {csp} CSPs, {cspg} CSPGs (Ed25519 keys, E&A certificates, CRL from E&A)",
        members.len(),
        members.len() - csp - cspg
    ));

    // SOS: checks evidence with the peers' certificate keys; the paper's four opinions set
    // by the operator.
    let secure_cfg = Arc::new(SecureConfig {
        fanout: 3,
        first_hops: FirstHops::Successors,
        ..SecureConfig::default()
    });
    let m0 = membership(&members, &trust, arcs)?;
    let peer_links = args
        .peer_links
        .unwrap_or_else(|| host::peer_links(members.len()))
        .max(1);
    let link_budget = Arc::new(net::LinkBudget::new(
        peer_links.saturating_mul(members.len()),
        peer_links,
    ));
    let launch_cfg = |routing, flat, sos| Launch {
        members: &members,
        trust: &trust,
        arcs,
        membership: &m0,
        secure: secure_cfg.clone(),
        chord: chord_timing(),
        routing,
        flat,
        malicious: NodeId(1617),
        sos,
        frontends: 0,
        media_relay: true,
        sip_domain: args.sip_domain.clone(),
        peer_links,
        link_budget: link_budget.clone(),
    };
    // CSPs and CSPGs hold the signed hand-overs: their reports are proof.
    let registry = sos::KeyRegistry::from_entries(m0.keys.registry_entries())
        .map_err(LabError::setup(
            "the SOS key registry of the peers' certificate keys",
        ))?
        .with_infrastructure(
            members
                .iter()
                .filter(|m| m.role != enroll::Role::Peer)
                .map(|m| sos::PeerId(m.id.0)),
        );
    let admin = format!(
        "{:032x}",
        Xoshiro256PlusPlus::seed_from_u64(args.seed ^ 0xAD).random::<u128>()
    );
    let mut sos_cfg = sos::ServerConfig::new(tmp.path().join("sos.sqlite3"), Arc::new(registry));
    sos_cfg.admin_token = Some(admin.clone());
    sos_cfg.synchronous = sos::Synchronous::Normal;
    // The SOS serves HTTPS with a certificate of its own role from the E&A CA, as deployed.
    let sos_names = ["127.0.0.1".to_string(), "localhost".to_string()];
    let sos_cert = ca_data
        .issue_service_cert(
            enroll::cert::ServiceRole::Sos,
            &sos_names,
            Duration::from_secs(86_400),
        )
        .map_err(LabError::setup("the SOS's certificate from the E&A CA"))?;
    let sos_tls = service::tls::server_config(&sos_cert.chain_pem, &sos_cert.key_pem)
        .map_err(LabError::setup("the SOS's TLS configuration"))?;
    let ca_trust = service::tls::Trust::ca_pem(ca.cert_pem())
        .map_err(LabError::setup("trusting the E&A CA"))?;
    let sos_srv = sos::RunningServer::start(
        sos_cfg,
        SocketAddr::from(([127, 0, 0, 1], 0)),
        service::http::Transport::Https(sos_tls),
    )
    .await
    .map_err(LabError::server("starting the SOS on 127.0.0.1"))?;
    let sos_client = sos::SosClient::new(&sos_srv.url(), &ca_trust)
        .map_err(LabError::server(format!(
            "an SOS client for {}",
            sos_srv.url()
        )))?
        .with_admin_token(admin);
    for (peer, b, d, u) in trust::paper::OPINIONS {
        let o = trust::Opinion::new(b, d, u, trust::paper::BASE_RATE).map_err(LabError::setup(
            format!("the paper's opinion of peer {peer}"),
        ))?;
        sos_client
            .put_opinion(sos::PeerId(peer), o)
            .await
            .map_err(LabError::server(format!(
                "setting the paper's opinion of peer {peer} at the SOS"
            )))?;
    }
    note(format!(
        "  SOS       {}  (paper opinions for 1593, 1600, 1609, 1618 set by the operator)",
        sos_srv.url()
    ));

    // STUN/TURN.
    let stun = nat::StunServer::bind(nat::ServerConfig::loopback(nat::CredentialStore::new()))
        .await
        .map_err(LabError::server("starting the STUN server on 127.0.0.1"))?;
    let stun_addr = stun.local_addr();
    let stun_handle = stun.spawn();
    note(format!("  STUN      udp://{stun_addr}"));
    // Every demo peer shares this host, so one Binding stands for all of them.
    let opts = nat::BindingOptions::quick(Duration::from_secs(2));
    match nat::discover_reflexive(&[stun_addr], &opts).await {
        Ok(r) => note(format!(
            "  reflexive {} from local {} ({})",
            r.reflexive,
            r.local,
            if r.behind_nat() {
                "behind NAT"
            } else {
                "no NAT"
            }
        )),
        Err(e) => note(format!("  reflexive address not learnt: {e}")),
    }

    // Taken before either overlay starts: the baseline's memory is reused by the secure
    // overlay after it shuts down, so the difference is the secure overlay's footprint.
    let rss0 = rss_bytes();
    // The paper's scenario, first on the plain-Chord baseline: a flat ring of the same
    // peers, run and shut down before the secure overlay starts (both at once would need
    // twice the descriptors).
    let mut sc = Scenario::default();
    if !args.no_baseline {
        let mut chord_secure = (*secure_cfg).clone();
        chord_secure.call_timeout = Duration::from_millis(800);
        let mut l = launch_cfg(Routing::Chord, true, None);
        l.secure = Arc::new(chord_secure);
        sc.plain_chord(l, &args, quiet).await?;
    }
    // The secure overlay.
    let counters = Arc::new(SosCounters::default());
    let t0 = Instant::now();
    let mut secure_launch = launch_cfg(
        Routing::Secure,
        false,
        Some((sos_client.clone(), counters.clone())),
    );
    secure_launch.frontends = args.frontends;
    secure_launch.media_relay = !args.no_media_relay;
    let secure = launch(secure_launch, quiet).await?;
    let fingers_round = 2 * 11 * chord_timing().fix_fingers;
    let converge_s = converge(
        &secure,
        t0,
        Duration::from_secs(args.converge_timeout_s),
        fingers_round,
        quiet,
    )
    .await?;
    let rss1 = rss_bytes();
    let rss_per_peer = rss1.saturating_sub(rss0) / members.len() as u64;
    let stats0 = sum_stats(&secure.handles);
    note(format!(
        "  overlay   converged in {converge_s:.1} s (listening {:.1} s, joining {:.1} s, then successors, predecessors and a fingers round): all {} peers have their true successor and predecessor in their layer ring; {} TLS connections, RSS {:.0} KiB per peer (fd limit {})",
        secure.started_s.0,
        secure.started_s.1,
        members.len(),
        stats0.dials_ok + stats0.accepts_ok,
        rss_per_peer as f64 / 1024.0,
        nofile_limit()
    ));
    sc.secure(&secure, &sos_client).await?;
    let paper_ok = sc.reproduced();
    if !quiet {
        sc.print(members.len());
    }

    // Random calls between ordinary, honest peers.
    let ordinary: Vec<NodeId> = members
        .iter()
        .filter(|m| honest_peer(m))
        .map(|m| m.id)
        .collect();
    let calls = calls::random(&secure, &ordinary, &args, quiet).await?;
    // Let the last evidence reach the SOS before counting it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // What the overlay costs while nobody calls, once the rings have settled.
    if args.rest_after_s > 0 {
        note(format!(
            "  (leaving the overlay alone for {} s before measuring it at rest)",
            args.rest_after_s
        ));
        tokio::time::sleep(Duration::from_secs(args.rest_after_s)).await;
    }
    let window = Duration::from_secs(args.rest_window_s.max(1));
    let rest = measure_at_rest(&secure, members.len(), window).await;
    note(format!(
        "  at rest   ({} s after the calls, over {} s) {:.2} cores busy, {:.1} TLS dials/s, {:.1} links closed/s ({:.1} to make room), links per peer {:.1} (at most {}, share {}; {} descriptors open), {:.1} overlay messages per peer per second ({})",
        args.rest_after_s,
        window.as_secs(),
        rest.cores,
        rest.dials_per_s,
        rest.closed_per_s,
        rest.evicted_per_s,
        rest.links_mean,
        rest.links_max,
        peer_links,
        rest.fds,
        rest.messages_per_peer_per_s,
        rest.top_kinds
            .iter()
            .map(|(k, r)| format!("{k} {r:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));

    let stats = sum_stats(&secure.handles);
    let parties = churn_parties(&secure, &members);
    let churn = if args.kill_fraction > 0.0 {
        Some(churn::run(&parties, &churn_plan(&args)).await?)
    } else {
        None
    };
    let soak = if args.soak_minutes > 0.0 {
        Some(soak::run(&parties, &soak_plan(&args)).await?)
    } else {
        None
    };
    let mut report = json!({
        "mode": "real",
        "peers": members.len(),
        "csp": csp,
        "cspg": cspg,
        "paper_scenario_ok": paper_ok,
        "paper": sc,
        "converge_s": converge_s,
        "at_rest_cores": rest.cores,
        "at_rest_messages_per_peer_per_s": rest.messages_per_peer_per_s,
        "at_rest_tls_dials_per_s": rest.dials_per_s,
        "at_rest_links_per_peer": rest.links_mean,
        "at_rest_links_max": rest.links_max,
        "at_rest_links_closed_per_s": rest.closed_per_s,
        "at_rest_links_evicted_per_s": rest.evicted_per_s,
        "at_rest_fds": rest.fds,
        "at_rest_after_s": args.rest_after_s,
        "at_rest_window_s": window.as_secs(),
        "peer_links": peer_links,
        "nofile": nofile_limit(),
        "rss_bytes_per_peer": rss_per_peer,
        "rss_bytes_total": rss1,
        "tls_connections": stats.dials_ok + stats.accepts_ok,
        "frames_dropped": stats.dropped_queue_full + stats.dropped_backoff + stats.dropped_no_addr,
        "sos_rankings": counters.rank_ok.load(Ordering::Relaxed),
        "sos_rankings_failed": counters.rank_failed.load(Ordering::Relaxed),
        "sos_reports": counters.reports_ok.load(Ordering::Relaxed),
        "sos_reports_failed": counters.reports_failed.load(Ordering::Relaxed),
        "sos_reports_dropped": counters.reports_dropped.load(Ordering::Relaxed),
        "wall_s": wall.elapsed().as_secs_f64(),
    });
    if let Some(o) = report.as_object_mut() {
        o.extend(calls.json());
    }
    if let Some(c) = &churn {
        report["churn"] = serde_json::to_value(c).map_err(LabError::json("the churn report"))?;
    }
    if let Some(c) = &soak {
        report["soak"] = serde_json::to_value(c).map_err(LabError::json("the soak report"))?;
    }
    if args.json {
        say!("{report}");
    } else {
        calls.print(args.concurrency);
        say!(
            "  SOS: {} rankings, {} signed reports accepted ({} failed, {} dropped)",
            counters.rank_ok.load(Ordering::Relaxed),
            counters.reports_ok.load(Ordering::Relaxed),
            counters.reports_failed.load(Ordering::Relaxed),
            counters.reports_dropped.load(Ordering::Relaxed)
        );
        say!(
            "  converge {converge_s:.1} s, RSS {:.0} KiB per peer ({:.1} MiB process), wall {:.1} s",
            rss_per_peer as f64 / 1024.0,
            rss1 as f64 / 1048576.0,
            wall.elapsed().as_secs_f64()
        );
        if let Some(c) = &churn {
            churn::print(c);
        }
        if let Some(c) = &soak {
            soak::print(c);
        }
    }

    if args.serve {
        say!();
        say!("Serving until Ctrl-C:");
        say!(
            "  E&A   https://{ea_addr}   (GET /v1/ca, /v1/crl; CA in the node directories' ca.pem)"
        );
        say!(
            "  SOS   {}   (GET /v1/opinions/PEER, POST /v1/routes/rank)",
            sos_srv.url()
        );
        say!("  STUN  udp://{stun_addr}");
        for (id, h) in secure.ids.iter().zip(&secure.handles) {
            if paper::CSPGS.contains(&id.0)
                || paper::CSPS.contains(&id.0)
                || paper::NAMED.contains(&id.0)
            {
                say!("  peer {:>4}  tls://{}", id, h.local_addr());
            }
        }
        let ports: Vec<u16> = secure
            .handles
            .iter()
            .map(|h| h.local_addr().port())
            .collect();
        say!(
            "  … {} peers in all, TLS ports {}–{}",
            ports.len(),
            ports.iter().min().copied().unwrap_or(0),
            ports.iter().max().copied().unwrap_or(0)
        );
        // The front-ends run inside their peers since the start; announced once the
        // overlay has converged, for the phones and SIPp scripts waiting for them.
        let fronts = secure.frontend_addrs();
        for (i, addr) in &fronts {
            say!(
                "frontend {} udp+tcp {addr} domain {}",
                secure.ids[*i].0,
                args.sip_domain
            );
        }
        if let [(_, a), rest @ ..] = fronts.as_slice() {
            let b = rest.first().map_or(*a, |(_, b)| *b);
            let d = &args.sip_domain;
            say!("two softphones, each on its own peer:");
            say!("  phone 1: account sip:alice@{d}, registrar and outbound proxy {a} (UDP or TCP)");
            say!("  phone 2: account sip:bob@{d}, registrar and outbound proxy {b} (UDP or TCP)");
            say!(
                "  then call sip:bob@{d} from phone 1; no password, STUN or ICE needed (Ctrl-C stops)"
            );
        }
        let stop = tokio::signal::ctrl_c();
        tokio::pin!(stop);
        if args.stats_every > 0 {
            let mut every = tokio::time::interval(Duration::from_secs(args.stats_every));
            every.tick().await;
            loop {
                tokio::select! {
                    _ = &mut stop => break,
                    _ = every.tick() => print_frontend_stats(&secure).await,
                }
            }
        } else {
            let _ = stop.await;
        }
        say!("shutting down");
    }
    secure.shutdown().await;
    let _ = stop_tx.send(true);
    let _ = sos_srv.shutdown().await;
    let _ = stun_handle.shutdown().await;
    if !paper_ok && members.len() >= 512 {
        return Err(LabError::ScenarioNotReproduced);
    }
    Ok(())
}

/// One `stats frontend` line per front-end of the overlay ([`sip::stats_line`]).
async fn print_frontend_stats(secure: &Cluster) {
    for i in &secure.frontends {
        let line = secure.handles[*i]
            .call(|c, _| {
                c.frontend()
                    .map(|fe| sip::stats_line(&fe.tables(), fe.stats()))
            })
            .await;
        if let Ok(Some(line)) = line {
            say!("stats frontend {}: {line}", secure.ids[*i].0);
        }
    }
    // Frames the overlay lost on the way, summed over its peers: a call that hangs or
    // times out under load shows here first.
    let s = sum_stats(&secure.handles);
    say!(
        "stats overlay: dropped_queue_full {} dropped_backoff {} dropped_no_addr {} dropped_events {} links_evicted {} idle_closed {}",
        s.dropped_queue_full,
        s.dropped_backoff,
        s.dropped_no_addr,
        s.dropped_events,
        s.links_evicted,
        s.idle_closed
    );
}

/// The simulated demo: the paper's scenario and random calls in the discrete-event simulator.
fn run_simulated(args: Args) -> Result<(), LabError> {
    let paper = sim::run_paper(args.seed)?;
    let paper_ok = !paper.chord.delivered
        && paper.secure.delivered
        && paper.secure.chosen_route == vec![1600, 1618];
    let mut run = sim::CallRun::new(512, args.calls, Routing::Secure);
    run.bits = 11;
    run.seed = args.seed;
    run.malicious = args.malicious;
    run.latency = sim::LatencyModel::Uniform {
        min: Duration::from_micros(100),
        max: Duration::from_millis(2),
    };
    let calls = crate::progress::run_calls(&run)?;
    if args.json {
        let out = json!({
            "mode": "simulated",
            "peers": 512,
            "csp": 13,
            "cspg": 3,
            "paper_scenario_ok": paper_ok,
            "paper": paper,
            "calls_attempted": calls.calls,
            "calls_ringing": calls.succeeded,
            "srd_ms_p50": calls.setup_ms_p50,
            "srd_ms_p99": calls.setup_ms_p99,
            "hops_mean": calls.hops_mean,
            "messages_per_call": calls.messages_per_call,
        });
        say!("{out}");
        return Ok(());
    }
    say!(
        "p2psip demo --simulated — the paper's 512-peer prototype (496 peers, 13 CSPs, 3 CSPGs, three layers)"
    );
    say!("  Runs in the discrete-event simulator (virtual time, loopback-like latency).");
    say!();
    say!("  Malicious-peer scenario: peer 80 calls peer 1618; peer 1617 drops what it forwards.");
    crate::sim::print_paper(&paper);
    say!("  scenario      {}", if paper_ok { "PASS" } else { "FAIL" });
    say!();
    say!(
        "  {} random calls: {} ringing ({:.2}%), setup delay p50 {:.1} ms, p99 {:.1} ms, {:.2} hops, {:.1} messages per call",
        calls.calls,
        calls.succeeded,
        100.0 * calls.success_rate,
        calls.setup_ms_p50,
        calls.setup_ms_p99,
        calls.hops_mean,
        calls.messages_per_call
    );
    if !paper_ok {
        return Err(LabError::ScenarioNotReproduced);
    }
    Ok(())
}

/// An ordinary peer other than the malicious 1617: who places and takes the random calls.
fn honest_peer(m: &Enrolled) -> bool {
    m.role == enroll::Role::Peer && m.id.0 != 1617
}

/// The parties of the churn and soak runs: who calls ([`honest_peer`]) and who may be
/// killed (those, less the peers that serve SIP front-ends).
fn churn_parties<'a>(secure: &'a Cluster, members: &[Enrolled]) -> calls::Parties<'a> {
    let callers: Vec<bool> = members.iter().map(honest_peer).collect();
    let mut killable = callers.clone();
    for i in &secure.frontends {
        killable[*i] = false;
    }
    calls::Parties {
        handles: &secure.handles,
        ids: &secure.ids,
        callers,
        killable,
    }
}

/// `--kill-fraction`: the churn run over the secure overlay (ordinary honest peers call each
/// other; the ones not serving a SIP front-end may be killed).
fn churn_plan(args: &Args) -> churn::ChurnPlan {
    churn::ChurnPlan {
        fraction: args.kill_fraction,
        before: Duration::from_secs(args.churn_before_s),
        after: Duration::from_secs(args.churn_after_s),
        window: Duration::from_millis(args.churn_window_ms.max(100)),
        concurrency: args.concurrency,
        seed: args.seed,
        ring_within: Duration::from_millis(args.churn_ring_within_ms),
    }
}

/// `--soak-minutes`: calls and churn over the secure overlay for a long time, sampled.
fn soak_plan(args: &Args) -> soak::SoakPlan {
    soak::SoakPlan {
        duration: Duration::from_secs_f64(args.soak_minutes * 60.0),
        interval: Duration::from_secs(args.soak_interval_s.max(1)),
        concurrency: args.concurrency,
        seed: args.seed,
        csv: args.soak_csv.clone(),
        max_kill_fraction: 0.2,
        print_samples: !args.json,
    }
}
