//! `p2psip enroll-server`: run the E&A server, or operate on its data directory
//! (`token create`, `revoke`), or print the locality measurement (`locality-report`).

use anyhow::{Context, bail};
use enroll::ratelimit::RateLimitConfig;
use enroll::token::format_duration;
use enroll::{DataDir, EnrollServer, IdScheme, Layer, LayerRule, Role, ServerConfig, ServiceUrls};
use overlay::NodeId;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Options for `p2psip enroll-server`.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct Args {
    #[command(subcommand)]
    cmd: Option<Sub>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(clap::Subcommand, Debug)]
enum Sub {
    /// Enrollment tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Revoke every certificate of a node (it then shows in the CRL).
    Revoke {
        /// Data directory of the server.
        #[arg(long)]
        data: PathBuf,
        /// The server's PostgreSQL URL, when it runs on one (`--db` of the server).
        #[arg(long)]
        db: Option<String>,
        /// Node-ID (decimal).
        #[arg(long)]
        node: NodeId,
    },
    /// Write the SOS's reporter key registry (`p2psip sos --key-registry FILE`): the
    /// certificate key of every enrolled node that is not revoked, so the SOS accepts the
    /// evidence peers sign with their certificate keys. Run again after enrolling more.
    SosRegistry {
        /// Data directory of the server.
        #[arg(long)]
        data: PathBuf,
        /// The server's PostgreSQL URL, when it runs on one (`--db` of the server).
        #[arg(long)]
        db: Option<String>,
        /// Output file [default: stdout].
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Issue the SOS's HTTPS server certificate from this E&A's CA: writes `key.pem`
    /// (mode 0600), `chain.pem` (certificate, then CA) and `ca.pem` into --out, for `p2psip
    /// sos --tls DIR`. Run it where the CA key is; copy --out to the SOS host.
    SosCert {
        /// Data directory of the server.
        #[arg(long)]
        data: PathBuf,
        /// The server's PostgreSQL URL, when it runs on one (`--db` of the server).
        #[arg(long)]
        db: Option<String>,
        /// A name peers reach the SOS by: DNS name or IP address (repeatable; the SOS URL's
        /// host must be one of them).
        #[arg(long = "name", required = true)]
        names: Vec<String>,
        /// Output directory (created; an existing key.pem is refused).
        #[arg(long)]
        out: PathBuf,
        /// Validity, e.g. 90d, 365d.
        #[arg(long, default_value = "365d")]
        valid: String,
    },
    /// Measure locality of location-aware vs SHA-1 Node-IDs at real city coordinates.
    LocalityReport {
        /// RNG seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Number of peers.
        #[arg(long, default_value_t = 5000)]
        peers: usize,
        /// ID width m.
        #[arg(long, default_value_t = 128)]
        bits: u32,
        /// Jitter around each city, degrees.
        #[arg(long, default_value_t = 0.5)]
        jitter: f64,
        /// Also simulate this many lookups over the geographic latency model with both ID
        /// schemes (mostly local calls) and report lookup latency p50/p99.
        #[arg(long, value_name = "LOOKUPS")]
        simulate: Option<usize>,
        /// Fraction of simulated lookups whose callee is in the caller's city.
        #[arg(long, default_value_t = 0.8)]
        local_fraction: f64,
        /// Geographically nearest peers compared.
        #[arg(long, default_value_t = 5)]
        neighbours: usize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Subcommand, Debug)]
enum TokenCmd {
    /// Create a token; prints it once on stdout (only its hash is stored).
    Create {
        /// Data directory of the server.
        #[arg(long)]
        data: PathBuf,
        /// The server's PostgreSQL URL, when it runs on one (`--db` of the server).
        #[arg(long)]
        db: Option<String>,
        /// Role the token enrolls.
        #[arg(long, default_value = "peer")]
        role: Role,
        /// Pin the layer (for CSP/CSPG placed in a given layer).
        #[arg(long)]
        layer: Option<u8>,
        /// Number of enrollments allowed.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// Lifetime, e.g. 30m, 24h, 7d.
        #[arg(long, default_value = "24h")]
        expires: String,
    },
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Address to listen on (port 0 picks one; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:7400")]
    listen: SocketAddr,
    /// A name clients reach this server by (DNS name or IP address; repeatable). The HTTPS
    /// certificate the server issues itself at start holds these names, the --listen
    /// address unless it is 0.0.0.0/::, and `localhost` on loopback.
    #[arg(long)]
    public_name: Vec<String>,
    /// Serve plain HTTP instead of HTTPS: enrollment tokens cross the network in
    /// cleartext. For loopback experiments only; logged as a warning.
    #[arg(long)]
    insecure_http: bool,
    /// Data directory (CA key and certificate, database); created on first start.
    #[arg(long)]
    data: Option<PathBuf>,
    /// `postgres://…`: keep the database there, shared with other E&A instances that use
    /// the same CA files, instead of in the data directory.
    #[arg(long)]
    db: Option<String>,
    /// PEM CA file for TLS to PostgreSQL (rustls); without it the connection is plain TCP.
    #[arg(long)]
    db_ca: Option<PathBuf>,
    /// ID width m (128 in production, 11 for the paper's scenario).
    #[arg(long, default_value_t = ServerConfig::default().id_bits)]
    id_bits: u32,
    /// Layer boundaries "B1,B2": layer 1 = [0,B1), 2 = [B1,B2), 3 = [B2,2^m). Default thirds.
    #[arg(long)]
    layer_bounds: Option<String>,
    /// Node-ID scheme: `location` (a Hilbert curve over the coordinates the peer enrolls
    /// with, else its network prefix: peers close together get close IDs) or `sha1` (SHA-1
    /// of the peer's key, spread evenly over the layer: the classic scheme, to compare).
    #[arg(long, default_value = "location")]
    id_scheme: IdScheme,
    /// Certificate validity.
    #[arg(long, default_value_t = format_duration(ServerConfig::default().cert_validity))]
    cert_validity: String,
    /// Renewal accepted up to this long after expiry.
    #[arg(long, default_value_t = format_duration(ServerConfig::default().renew_grace))]
    renew_grace: String,
    /// CRL validity.
    #[arg(long, default_value_t = format_duration(ServerConfig::default().crl_validity))]
    crl_validity: String,
    /// SOS URL handed to peers.
    #[arg(long)]
    sos_url: Option<String>,
    /// STUN URL handed to peers (repeatable).
    #[arg(long)]
    stun_url: Vec<String>,
    /// TURN URL handed to peers (repeatable).
    #[arg(long)]
    turn_url: Vec<String>,
    /// Configured bootstrap peer "ID,LAYER,ROLE,ADDR" (repeatable).
    #[arg(long)]
    bootstrap: Vec<String>,
    /// Layer rule: minimum expected uptime (h) to be stable.
    #[arg(long, default_value_t = ServerConfig::default().layer_rule.stable_uptime_h)]
    stable_uptime_h: f64,
    /// Layer rule: minimum CPU cores for layer 1.
    #[arg(long, default_value_t = ServerConfig::default().layer_rule.strong_cpu_cores)]
    strong_cpu_cores: u32,
    /// Layer rule: minimum upstream kbit/s for layer 1.
    #[arg(long, default_value_t = ServerConfig::default().layer_rule.strong_bandwidth_kbps)]
    strong_bandwidth_kbps: u64,
    /// Per-source sustained POST rate (requests/s; 0 = no limit).
    #[arg(long, default_value_t = ServerConfig::default().rate_limit.per_sec)]
    rate_per_sec: f64,
    /// Per-source burst.
    #[arg(long, default_value_t = ServerConfig::default().rate_limit.burst)]
    rate_burst: f64,
    /// Per-token sustained enrollment rate: identities per second one token may enroll
    /// after its burst, from any address (0 = no limit). With the default burst, a rollout
    /// of up to 512 peers on one token never waits, and a leaked multi-use token mints at
    /// most 572 identities in its first minute and 60 a minute after that, until revoked.
    #[arg(long, default_value_t = ServerConfig::default().token_rate_limit.per_sec)]
    token_rate_per_sec: f64,
    /// Per-token burst: enrollments one token may make at once.
    #[arg(long, default_value_t = ServerConfig::default().token_rate_limit.burst)]
    token_rate_burst: f64,
    /// Maximum request body in bytes.
    #[arg(long, default_value_t = ServerConfig::default().body_limit)]
    body_limit: usize,
}

fn config(a: &ServeArgs) -> anyhow::Result<ServerConfig> {
    let layer_bounds = (a.layer_bounds.as_deref())
        .map(|s| enroll::parse_layer_bounds(s).with_context(|| format!("--layer-bounds {s:?}")))
        .transpose()?;
    let defaults = ServerConfig::default();
    Ok(ServerConfig {
        id_bits: a.id_bits,
        layer_bounds,
        id_scheme: a.id_scheme,
        layer_rule: LayerRule {
            stable_uptime_h: a.stable_uptime_h,
            strong_cpu_cores: a.strong_cpu_cores,
            strong_bandwidth_kbps: a.strong_bandwidth_kbps,
        },
        cert_validity: enroll::token::parse_duration(&a.cert_validity)?,
        renew_grace: enroll::token::parse_duration(&a.renew_grace)?,
        crl_validity: enroll::token::parse_duration(&a.crl_validity)?,
        services: ServiceUrls {
            sos_url: a.sos_url.clone(),
            stun_urls: a.stun_url.clone(),
            turn_urls: a.turn_url.clone(),
        },
        bootstrap: a
            .bootstrap
            .iter()
            .map(|s| s.parse())
            .collect::<Result<_, _>>()?,
        body_limit: a.body_limit,
        rate_limit: RateLimitConfig {
            per_sec: a.rate_per_sec,
            burst: a.rate_burst,
            ..defaults.rate_limit
        },
        token_rate_limit: RateLimitConfig {
            per_sec: a.token_rate_per_sec,
            burst: a.token_rate_burst,
            ..defaults.token_rate_limit
        },
    })
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    match args.cmd {
        None => serve(args.serve),
        Some(Sub::Token(TokenCmd::Create {
            data,
            db,
            role,
            layer,
            uses,
            expires,
        })) => {
            let layer = layer.map(Layer::new).transpose()?;
            let ttl = enroll::token::parse_duration(&expires)?;
            let dir = DataDir::open_with(&data, postgres(db)?)
                .with_context(|| format!("data dir {}", data.display()))?;
            let token = dir.create_token(role, layer, uses, ttl)?;
            service::say!("{token}");
            eprintln!(
                "token for role {role}, {uses} use(s), expires in {expires}; CA fingerprint {}",
                dir.ca().fingerprint()
            );
            Ok(())
        }
        Some(Sub::SosRegistry { data, db, out }) => {
            let dir = DataDir::open_with(&data, postgres(db)?)
                .with_context(|| format!("data dir {}", data.display()))?;
            let rows = dir.directory()?;
            let reg =
                net::CertRegistry::from_certs(rows.iter().map(|(id, _, der)| (*id, &der[..])));
            for (id, e) in &reg.skipped {
                eprintln!("node {id} skipped: {e}");
            }
            let json = reg.to_json();
            match out {
                Some(p) => {
                    std::fs::write(&p, json).with_context(|| format!("writing {}", p.display()))?;
                    eprintln!(
                        "{} reporter keys written to {}",
                        reg.entries.len(),
                        p.display()
                    );
                }
                None => service::say!("{json}"),
            }
            Ok(())
        }
        Some(Sub::SosCert {
            data,
            db,
            names,
            out,
            valid,
        }) => {
            let validity = enroll::token::parse_duration(&valid)?;
            let dir = DataDir::open_with(&data, postgres(db)?)
                .with_context(|| format!("data dir {}", data.display()))?;
            dir.write_service_cert(enroll::cert::ServiceRole::Sos, &names, validity, &out)?;
            service::say!(
                "SOS certificate for {} written to {} (CA fingerprint {})",
                names.join(", "),
                out.display(),
                dir.ca().fingerprint()
            );
            Ok(())
        }
        Some(Sub::Revoke { data, db, node }) => {
            let mut dir = DataDir::open_with(&data, postgres(db)?)
                .with_context(|| format!("data dir {}", data.display()))?;
            match dir.revoke(node)? {
                Some(n) => {
                    service::say!("revoked node {node}: {n} certificate(s) newly revoked");
                    Ok(())
                }
                None => bail!("no node {node} enrolled"),
            }
        }
        Some(Sub::LocalityReport {
            seed,
            peers,
            bits,
            jitter,
            neighbours,
            json,
            simulate,
            local_fraction,
        }) => {
            if let Some(lookups) = simulate {
                let r = lab::locality::run(peers, lookups, local_fraction, seed)?;
                if json {
                    service::say!("{}", serde_json::to_string_pretty(&r)?);
                } else {
                    service::say!("{r}");
                }
                return Ok(());
            }
            let report = enroll::locality::report(&enroll::locality::LocalityConfig {
                seed,
                peers,
                bits,
                jitter_deg: jitter,
                neighbours,
            });
            if json {
                service::say!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                service::say!("{report}");
            }
            Ok(())
        }
    }
}

/// The PostgreSQL options of `--db`, if given.
fn postgres(db: Option<String>) -> anyhow::Result<Option<service::postgres::PgOptions>> {
    db.map(|url| {
        service::postgres::PgOptions::from_url(&url)
            .with_context(|| format!("--db {url:?}: expected a postgres:// URL"))
    })
    .transpose()
}

fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let Some(data) = a.data.clone() else {
        bail!("enroll-server needs --data DIR");
    };
    service::crypto::install_provider();
    let cfg = config(&a)?;
    let pg = postgres(a.db.clone())?.map(|mut pg| {
        pg.ca_file = a.db_ca.clone();
        pg
    });
    let server = EnrollServer::open_with(&data, pg, cfg)
        .with_context(|| format!("opening data dir {}", data.display()))?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(a.listen)
            .await
            .with_context(|| format!("binding {}", a.listen))?;
        let addr = listener.local_addr()?;
        let fingerprint = server.ca_fingerprint();
        let transport = if a.insecure_http {
            service::http::Transport::InsecureHttp
        } else {
            let names = enroll::service_names(addr, &a.public_name);
            if names.is_empty() {
                bail!(
                    "--listen {addr} names no address clients can verify: give --public-name \
                     (the host name or address peers use in the E&A URL)"
                );
            }
            server.https(&names)?
        };
        let scheme = transport.scheme();
        if a.insecure_http {
            eprintln!(
                "WARNING: --insecure-http: the E&A serves PLAIN HTTP on {addr}; enrollment \
                 tokens cross the network in cleartext"
            );
        }
        service::output::say(format_args!(
            "listening on {scheme}://{addr}\nca-fingerprint {fingerprint}"
        ));
        let stop = super::stop_signal();
        service::notify::ready(&format!("E&A on {scheme}://{addr}, CA {fingerprint}"));
        server
            .serve_with(listener, transport, async {
                stop.await;
                service::notify::stopping();
            })
            .await?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(extra: &[&str]) -> Result<ServerConfig, String> {
        let argv: Vec<&str> = std::iter::once("enroll-server")
            .chain(extra.iter().copied())
            .collect();
        let args: Args = super::super::parse(&argv)?;
        config(&args.serve).map_err(|e| e.to_string())
    }

    #[test]
    fn id_scheme_switch() {
        assert_eq!(serve(&[]).unwrap().id_scheme, IdScheme::Location);
        assert_eq!(
            serve(&["--id-scheme", "location"]).unwrap().id_scheme,
            IdScheme::Location
        );
        assert_eq!(
            serve(&["--id-scheme", "sha1"]).unwrap().id_scheme,
            IdScheme::Sha1
        );
        let bad = serve(&["--id-scheme", "md5"]).unwrap_err();
        assert!(bad.contains("location, sha1"), "{bad}");
    }

    /// A server started without options runs with the library's defaults: a flag whose
    /// default drifted from [`ServerConfig::default`] fails here.
    #[test]
    fn no_options_give_the_librarys_defaults() {
        assert_eq!(
            format!("{:#?}", serve(&[]).unwrap()),
            format!("{:#?}", ServerConfig::default())
        );
    }
}
