//! `p2psip sos`: run the Secure Opinion Server, or talk to one.

use anyhow::{Context, bail};
use sos::{
    Algorithm, KeyRegistry, Outcome, PeerId, RegistryEntry, ReportSigner, ServerConfig, SosClient,
    Synchronous,
};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Run the Secure Opinion Server (default), or one of its helper actions.
///
/// Without an action this serves the SOS HTTP API (see the `sos` crate docs):
/// `POST /v1/routes/rank`, `GET|PUT|DELETE /v1/opinions/{peer}`, `POST /v1/reports`,
/// `GET /healthz`, `GET /readyz`, `GET /metrics`. It prints `sos listening on https://ADDR` once bound.
///
/// Quick start:
///   p2psip sos check-paper                                   (the paper's example, offline)
///   p2psip enroll-server sos-cert --data ea --name 127.0.0.1 --out sos-tls
///   P2PSIP_SOS_ADMIN_TOKEN=t p2psip sos --listen 127.0.0.1:7070 --tls sos-tls --db sos.db &
///   P2PSIP_SOS_ADMIN_TOKEN=t p2psip sos check-paper --server https://127.0.0.1:7070 --ca sos-tls/ca.pem
///   p2psip sos rank --server https://127.0.0.1:7070 --ca sos-tls/ca.pem --route 1593,1609,1618 --route 1600,1618
#[derive(clap::Args, Debug)]
#[command(
    args_conflicts_with_subcommands = true,
    verbatim_doc_comment,
    after_help = "Quick start:\n  \
      p2psip sos check-paper                     # the paper's example, offline\n  \
      p2psip enroll-server sos-cert --data ea --name 127.0.0.1 --out sos-tls\n  \
      P2PSIP_SOS_ADMIN_TOKEN=t p2psip sos --listen 127.0.0.1:7070 --tls sos-tls --db sos.db &\n  \
      P2PSIP_SOS_ADMIN_TOKEN=t p2psip sos check-paper --server https://127.0.0.1:7070 --ca sos-tls/ca.pem\n  \
      p2psip sos rank --server https://127.0.0.1:7070 --ca sos-tls/ca.pem --route 1593,1609,1618 --route 1600,1618\n\n\
      API: POST /v1/routes/rank, GET|PUT|DELETE /v1/opinions/{peer}, POST /v1/reports,\n\
      GET /healthz, GET /readyz, GET /metrics. Prints `sos listening on https://ADDR` once bound."
)]
pub(crate) struct Args {
    #[command(subcommand)]
    action: Option<Box<Action>>,
    #[command(flatten)]
    serve: Box<ServeArgs>,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Check the paper's example: opinions 1593 (0.8,0.1,0.1), 1600 (0.82,0.08,0.10),
    /// 1609 (0.92,0.04,0.04), 1618 (0.9,0.05,0.05), a = 0.25. Route 1600→1618 must rank first
    /// with (0.738, 0.041, 0.221), E = 0.79325, and 1593→1609→1618 = (0.6624, 0.0368, 0.3008),
    /// E = 0.7376. Offline by default; with --server it sets those opinions through the admin
    /// API and ranks over HTTP. Exits non-zero if any number differs.
    CheckPaper(CheckPaperArgs),
    /// Ask a running SOS to rank candidate routes, best first.
    Rank(RankArgs),
    /// Show a running SOS's opinion of one peer.
    Opinion(OpinionArgs),
    /// Make a reporter signing key (PKCS#8) and add its public key to a registry file.
    Keygen(KeygenArgs),
    /// Sign and send one evidence report.
    Report(ReportArgs),
    /// Write keys, a registry and pre-signed reports for `scripts/bench-sos`.
    BenchFixtures(BenchFixturesArgs),
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Directory with the SOS's HTTPS certificate, written by `p2psip enroll-server
    /// sos-cert`: key.pem, chain.pem (certificate, then the E&A CA) and ca.pem. Required
    /// unless --insecure-http.
    #[arg(long, required_unless_present = "insecure_http")]
    tls: Option<PathBuf>,
    /// Serve plain HTTP instead of HTTPS: reports and rankings travel in cleartext and can
    /// be rewritten on the way. For loopback experiments only; logged as a warning.
    #[arg(long, conflicts_with = "tls")]
    insecure_http: bool,
    /// SQLite database file (created if missing; WAL mode), or `postgres://…` to share one
    /// PostgreSQL database with other SOS instances.
    #[arg(long, default_value = "sos.db")]
    db: PathBuf,
    /// PEM CA file for TLS to PostgreSQL (rustls); without it the connection is plain TCP.
    #[arg(long)]
    db_ca: Option<PathBuf>,
    /// File holding the admin bearer token (or set P2PSIP_SOS_ADMIN_TOKEN). Without either,
    /// the admin endpoints answer 403.
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
    /// Reporter key registry (JSON: {"reporters":[{"peer","algorithm","public_key"}],
    /// "infrastructure":["<peer>",…]}; `infrastructure`, optional, names the CSPs and CSPGs,
    /// whose reports count as proof). Without it (or --enroll-server) no report is accepted.
    #[arg(long, conflicts_with = "enroll_server")]
    key_registry: Option<PathBuf>,
    /// Take the reporter keys from the E&A server instead: the certificate keys of everyone
    /// it lists at `GET /v1/directory` (each chain checked against its CA; CSP and CSPG
    /// certificates make their reports proof), refreshed every --directory-refresh-s, so
    /// newly enrolled peers can report without a restart.
    #[arg(long)]
    enroll_server: Option<String>,
    /// The E&A CA certificate (PEM) to verify --enroll-server's HTTPS and the directory's
    /// chains with [default: ca.pem in --tls; with --insecure-http and an http:// E&A URL,
    /// fetched from it at start and trusted on first use].
    #[arg(long, requires = "enroll_server")]
    ca: Option<PathBuf>,
    /// How often the keys are re-read from --enroll-server, seconds.
    #[arg(long, default_value_t = 30)]
    directory_refresh_s: u64,
    /// Base rate a of evidence-derived and default opinions.
    #[arg(long, default_value_t = defaults().base_rate)]
    base_rate: f64,
    /// Evidence half-life in seconds (0 = evidence never fades).
    #[arg(long, default_value_t = defaults().half_life_ms.map_or(0, |ms| ms / 1000))]
    half_life_secs: u64,
    /// Accept report timestamps within this many seconds of the server clock.
    #[arg(long, default_value_t = defaults().timestamp_window_ms / 1000)]
    window_secs: u64,
    /// Sustained reports per second allowed per ordinary reporter.
    #[arg(long, default_value_t = defaults().report_rate_per_sec)]
    report_rate: f64,
    /// Burst of reports allowed per ordinary reporter.
    #[arg(long, default_value_t = defaults().report_burst)]
    report_burst: f64,
    /// Sustained reports per second allowed per CSP or CSPG (a CSP reports on every hop of
    /// every call it multicasts: ~10 reports per call).
    #[arg(long, default_value_t = defaults().infrastructure_report_rate_per_sec)]
    infrastructure_report_rate: f64,
    /// Burst of reports allowed per CSP or CSPG.
    #[arg(long, default_value_t = defaults().infrastructure_report_burst)]
    infrastructure_report_burst: f64,
    /// Count every report fully, whoever sent it. By default a CSP's or CSPG's report is
    /// proof, and an ordinary peer's is held against that proof and weighed by how often
    /// its reports agreed with it (so a peer that lies about others loses its voice, and a
    /// peer nobody could check yet says nothing).
    #[arg(long)]
    unchecked_reports: bool,
    /// SQLite synchronous mode: what an acknowledged report survives.
    #[arg(long, value_enum, default_value_t = defaults().synchronous)]
    sync: Synchronous,
}

#[derive(clap::Args, Debug)]
struct CheckPaperArgs {
    /// A running SOS to check instead of the in-process library (needs the admin token).
    #[arg(long)]
    server: Option<String>,
    /// File holding the admin token (or P2PSIP_SOS_ADMIN_TOKEN).
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
    /// The E&A CA certificate (PEM) the SOS's HTTPS certificate must chain to (a node
    /// directory's ca.pem).
    #[arg(long)]
    ca: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct RankArgs {
    /// SOS base URL.
    #[arg(long)]
    server: String,
    /// The E&A CA certificate (PEM) the SOS's HTTPS certificate must chain to (a node
    /// directory's ca.pem).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// One candidate route as comma-separated peer IDs, in path order; repeat per route.
    #[arg(long = "route", required = true)]
    routes: Vec<String>,
    /// Use Jøsang's probability-sensitive discounting instead of the classic operator.
    #[arg(long)]
    probability_sensitive: bool,
}

#[derive(clap::Args, Debug)]
struct OpinionArgs {
    /// SOS base URL.
    #[arg(long)]
    server: String,
    /// The E&A CA certificate (PEM) the SOS's HTTPS certificate must chain to (a node
    /// directory's ca.pem).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Peer ID (decimal).
    peer: String,
}

#[derive(clap::Args, Debug)]
struct KeygenArgs {
    /// The reporter's peer ID.
    #[arg(long)]
    peer: String,
    /// Where to write the PKCS#8 private key.
    #[arg(long)]
    out: PathBuf,
    /// Signature algorithm of the key.
    #[arg(long, value_enum, default_value_t = Algorithm::Ed25519)]
    algorithm: Algorithm,
    /// Registry file to add the public key to (created if missing).
    #[arg(long)]
    registry: PathBuf,
    /// The reporter is a CSP or CSPG: its reports count as proof.
    #[arg(long)]
    infrastructure: bool,
}

#[derive(clap::Args, Debug)]
struct ReportArgs {
    /// SOS base URL.
    #[arg(long)]
    server: String,
    /// The E&A CA certificate (PEM) the SOS's HTTPS certificate must chain to (a node
    /// directory's ca.pem).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// PKCS#8 key written by `keygen`.
    #[arg(long)]
    key: PathBuf,
    /// Signature algorithm of the key.
    #[arg(long, value_enum, default_value_t = Algorithm::Ed25519)]
    algorithm: Algorithm,
    /// The reporter's peer ID.
    #[arg(long)]
    peer: String,
    /// The peer the evidence is about.
    #[arg(long)]
    subject: String,
    /// delivered, dropped, modified, misrouted or replayed.
    #[arg(long)]
    outcome: String,
    /// The route, comma-separated.
    #[arg(long, default_value = "")]
    route: String,
}

#[derive(clap::Args, Debug)]
struct BenchFixturesArgs {
    /// Output directory.
    #[arg(long)]
    dir: PathBuf,
    /// Number of reporter keys.
    #[arg(long, default_value_t = 16)]
    reporters: u32,
    /// Every this many reporters, one is a CSP (its reports are proof; the others' are
    /// checked against it). 0: none.
    #[arg(long, default_value_t = 4)]
    csp_every: u32,
    /// Number of signed reports (each with a unique nonce, timestamped now).
    #[arg(long, default_value_t = 200_000)]
    reports: u32,
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    service::crypto::install_provider();
    match args.action.map(|a| *a) {
        None => runtime()?.block_on(serve(*args.serve)),
        Some(Action::CheckPaper(a)) => check_paper(a),
        Some(Action::Rank(a)) => runtime()?.block_on(rank(a)),
        Some(Action::Opinion(a)) => runtime()?.block_on(opinion(a)),
        Some(Action::Keygen(a)) => keygen(a),
        Some(Action::Report(a)) => runtime()?.block_on(report(a)),
        Some(Action::BenchFixtures(a)) => bench_fixtures(a),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")
}

fn admin_token(file: Option<&Path>) -> anyhow::Result<Option<String>> {
    if let Some(f) = file {
        let t = std::fs::read_to_string(f)
            .with_context(|| format!("reading admin token file {}", f.display()))?;
        let t = t.trim().to_string();
        if t.is_empty() {
            bail!("admin token file {} is empty", f.display());
        }
        return Ok(Some(t));
    }
    Ok(std::env::var("P2PSIP_SOS_ADMIN_TOKEN")
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty()))
}

/// What a client of the SOS at `url` believes: the E&A CA from `ca`. Without one only a
/// plain `http://` URL (an SOS run with `--insecure-http`) can be used.
fn client_trust(url: &str, ca: Option<&Path>) -> anyhow::Result<service::tls::Trust> {
    match ca {
        Some(p) => {
            service::tls::Trust::ca_file(p).with_context(|| format!("the E&A CA {}", p.display()))
        }
        None if url.split(',').all(|u| u.trim().starts_with("http://")) => {
            Ok(service::tls::Trust::Ca(Vec::new()))
        }
        None => bail!("{url}: HTTPS needs --ca FILE (the E&A CA, e.g. a node directory's ca.pem)"),
    }
}

fn peer(s: &str) -> anyhow::Result<PeerId> {
    s.trim()
        .parse()
        .with_context(|| format!("bad peer id {s:?}"))
}

/// The library's defaults the `serve` flags show (the database path and the reporter
/// keys play no part in them).
fn defaults() -> ServerConfig {
    ServerConfig::new(PathBuf::new(), Arc::new(KeyRegistry::default()))
}

/// The server's configuration from the `serve` flags, without the admin token (read from
/// a file or the environment).
fn server_config(a: &ServeArgs, verifier: Arc<dyn sos::ReporterVerifier>) -> ServerConfig {
    let mut cfg = ServerConfig::new(&a.db, verifier);
    let db = a.db.to_string_lossy();
    if let Some(mut pg) = service::postgres::PgOptions::from_url(&db) {
        pg.ca_file = a.db_ca.clone();
        cfg.postgres = Some(pg);
    }
    cfg.base_rate = a.base_rate;
    cfg.half_life_ms = match a.half_life_secs {
        0 => None,
        s => Some(s.saturating_mul(1000)),
    };
    cfg.timestamp_window_ms = a.window_secs.saturating_mul(1000);
    cfg.report_rate_per_sec = a.report_rate;
    cfg.report_burst = a.report_burst;
    cfg.infrastructure_report_rate_per_sec = a.infrastructure_report_rate;
    cfg.infrastructure_report_burst = a.infrastructure_report_burst;
    cfg.check_reports = !a.unchecked_reports;
    cfg.synchronous = a.sync;
    cfg
}

async fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let verifier: Arc<dyn sos::ReporterVerifier> = match (&a.key_registry, &a.enroll_server) {
        (Some(p), _) => {
            let bytes = std::fs::read(p)
                .with_context(|| format!("reading key registry {}", p.display()))?;
            Arc::new(
                KeyRegistry::from_json(&bytes)
                    .with_context(|| format!("parsing key registry {}", p.display()))?,
            )
        }
        (None, Some(url)) => {
            let ca_file =
                a.ca.clone()
                    .or_else(|| a.tls.as_ref().map(|d| d.join(enroll::client::CA_FILE)));
            let every = std::time::Duration::from_secs(a.directory_refresh_s.max(1));
            node::reporter_keys::follow(url, ca_file.as_deref(), every).await?
        }
        (None, None) => {
            tracing::warn!("no --key-registry or --enroll-server: every report will be refused");
            Arc::new(KeyRegistry::default())
        }
    };
    let mut cfg = server_config(&a, verifier);
    cfg.admin_token = admin_token(a.admin_token_file.as_deref())?;
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("binding {}", a.listen))?;
    let addr = listener.local_addr()?;
    let cfg_postgres = cfg.postgres.is_some();
    let transport = match &a.tls {
        Some(dir) if !a.insecure_http => {
            let (chain, key) = (
                dir.join(enroll::client::CHAIN_FILE),
                dir.join(enroll::client::KEY_FILE),
            );
            service::http::Transport::Https(
                service::tls::server_config_from_files(&chain, &key)
                    .with_context(|| format!("the SOS certificate in {}", dir.display()))?,
            )
        }
        _ => {
            eprintln!(
                "WARNING: --insecure-http: the SOS serves PLAIN HTTP on {addr}; reports and \
                 route rankings can be read and rewritten on the way"
            );
            service::http::Transport::InsecureHttp
        }
    };
    let scheme = transport.scheme();
    let app = sos::router(cfg).context("starting the opinion store")?;
    service::say!("sos listening on {scheme}://{addr}");
    let backend = if cfg_postgres { "PostgreSQL" } else { "SQLite" };
    let stop = super::stop_signal();
    service::notify::ready(&format!("SOS on {scheme}://{addr} ({backend})"));
    service::http::serve_with(listener, app, transport, async {
        stop.await;
        service::notify::stopping();
    })
    .await
    .context("serving")?;
    Ok(())
}

fn check_paper(a: CheckPaperArgs) -> anyhow::Result<()> {
    service::say!(
        "Paper check (Zheng & Oleshchuk), base rate a = {}",
        trust::paper::BASE_RATE
    );
    for (p, b, d, u) in trust::paper::OPINIONS {
        service::say!("  opinion of {p}: b={b} d={d} u={u}");
    }
    service::say!("  (the paper prints 1600 as (0.82, 0.08, 0.08), which sums to 0.98; its own");
    service::say!("   result u = 0.221 needs u = 1 - b - d = 0.10, used here)");
    let rows = match &a.server {
        None => {
            service::say!("Ranking in-process with the trust library:");
            trust::paper::rank()
        }
        Some(url) => {
            let token = admin_token(a.admin_token_file.as_deref())?.context(
                "--server needs the admin token (--admin-token-file or P2PSIP_SOS_ADMIN_TOKEN)",
            )?;
            service::say!("Setting the opinions on {url} and ranking over HTTP:");
            let client =
                SosClient::new(url, &client_trust(url, a.ca.as_deref())?)?.with_admin_token(token);
            runtime()?.block_on(client.rank_paper_example())?
        }
    };
    let mut ok = rows.len() == trust::paper::EXPECTED.len();
    service::say!("  rank  route                b        d        u        E        expected");
    for (i, r) in rows.iter().enumerate() {
        let (op, e) = (&r.opinion, r.expectation);
        let good = trust::paper::matches(i, &r.route, op, e);
        ok &= good;
        let route_s = route_text(&r.route);
        service::say!(
            "  {:<4}  {:<19}  {:<7.4}  {:<7.4}  {:<7.4}  {:<7.5}  {}",
            i + 1,
            route_s,
            op.belief(),
            op.disbelief(),
            op.uncertainty(),
            e,
            if good { "ok" } else { "MISMATCH" }
        );
    }
    service::say!(
        "  note: the paper prints E = {} for 1600->1618; with a = 0.25 it is 0.79325 \
         (0.764 would need a = 0.118): a typo in the paper. The ranking is unchanged.",
        trust::paper::PRINTED_EXPECTATION_1600_1618
    );
    if !ok {
        bail!("paper check FAILED");
    }
    service::say!("paper check passed: route 1600->1618 ranks first");
    Ok(())
}

async fn rank(a: RankArgs) -> anyhow::Result<()> {
    let routes = a
        .routes
        .iter()
        .map(|r| sos::parse_route(r))
        .collect::<Result<Vec<_>, _>>()?;
    let mode = if a.probability_sensitive {
        trust::Discounting::ProbabilitySensitive
    } else {
        trust::Discounting::Classic
    };
    let ranked = SosClient::new(&a.server, &client_trust(&a.server, a.ca.as_deref())?)?
        .rank_with(routes, mode)
        .await?
        .ranked;
    service::say!("rank  route                     b        d        u        E");
    for (i, r) in ranked.iter().enumerate() {
        let route_s = route_text(&r.route);
        service::say!(
            "{:<4}  {:<24}  {:<7.4}  {:<7.4}  {:<7.4}  {:.5}",
            i + 1,
            route_s,
            r.opinion.belief(),
            r.opinion.disbelief(),
            r.opinion.uncertainty(),
            r.expectation
        );
    }
    Ok(())
}

async fn opinion(a: OpinionArgs) -> anyhow::Result<()> {
    let view = SosClient::new(&a.server, &client_trust(&a.server, a.ca.as_deref())?)?
        .get_opinion(peer(&a.peer)?)
        .await?;
    service::say!("{}", serde_json::to_string_pretty(&view)?);
    Ok(())
}

/// Add `entries` to the registry file at `path` (created if missing): see
/// [`KeyRegistry::merge_json`].
fn add_to_registry(
    path: &Path,
    entries: Vec<RegistryEntry>,
    infrastructure: bool,
) -> anyhow::Result<()> {
    let existing = match std::fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let json = KeyRegistry::merge_json(existing.as_deref(), entries, infrastructure)
        .with_context(|| format!("updating the registry {}", path.display()))?;
    std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))
}

fn keygen(a: KeygenArgs) -> anyhow::Result<()> {
    let (signer, pkcs8) = ReportSigner::generate(peer(&a.peer)?, a.algorithm)?;
    std::fs::write(&a.out, pkcs8).with_context(|| format!("writing {}", a.out.display()))?;
    add_to_registry(&a.registry, vec![signer.registry_entry()], a.infrastructure)?;
    service::say!(
        "key for peer {} written to {}; public key added to {}",
        signer.peer(),
        a.out.display(),
        a.registry.display()
    );
    Ok(())
}

fn outcome(s: &str) -> anyhow::Result<Outcome> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .with_context(|| format!("unknown outcome {s:?}"))
}

async fn report(a: ReportArgs) -> anyhow::Result<()> {
    let pkcs8 = std::fs::read(&a.key).with_context(|| format!("reading {}", a.key.display()))?;
    let signer = ReportSigner::from_pkcs8(peer(&a.peer)?, a.algorithm, &pkcs8)?;
    let signed = signer.report(
        peer(&a.subject)?,
        outcome(&a.outcome)?,
        sos::parse_route(&a.route)?,
        service::time::unix_ms(),
    )?;
    let ack = SosClient::new(&a.server, &client_trust(&a.server, a.ca.as_deref())?)?
        .post_report(&signed)
        .await?;
    service::say!("{}", serde_json::to_string(&ack)?);
    Ok(())
}

fn bench_fixtures(a: BenchFixturesArgs) -> anyhow::Result<()> {
    let reporters = sos::fixtures::write_bench_fixtures(
        &a.dir,
        a.reporters,
        a.csp_every,
        a.reports,
        service::time::unix_ms(),
    )?;
    service::say!(
        "wrote {} reports from {reporters} reporters, registry.json and rank.json to {}",
        a.reports,
        a.dir.display()
    );
    Ok(())
}

/// A route as the tables print it: the peers' IDs joined by `->`.
fn route_text<T: std::fmt::Display>(route: &[T]) -> String {
    route
        .iter()
        .map(T::to_string)
        .collect::<Vec<_>>()
        .join("->")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An SOS served without options runs with the library's defaults: a flag whose
    /// default drifted from [`ServerConfig::new`] fails here.
    #[test]
    fn no_options_give_the_librarys_defaults() {
        let args: Args = match super::super::parse(&["sos", "--insecure-http"]) {
            Ok(args) => args,
            Err(e) => panic!("{e}"),
        };
        let verifier: Arc<dyn sos::ReporterVerifier> = Arc::new(KeyRegistry::default());
        let got = server_config(&args.serve, verifier.clone());
        let want = ServerConfig::new(&args.serve.db, verifier);
        // ServerConfig's Debug leaves most fields out: compare them one by one.
        let fields = |c: &ServerConfig| {
            format!(
                "{:?} {:?} {:?} {} {} {} {} {} {} {:?}",
                c.db_path,
                c.base_rate,
                c.half_life_ms,
                c.check_reports,
                c.timestamp_window_ms,
                c.report_rate_per_sec,
                c.report_burst,
                c.infrastructure_report_rate_per_sec,
                c.infrastructure_report_burst,
                c.synchronous,
            )
        };
        assert_eq!(fields(&got), fields(&want));
    }
}
