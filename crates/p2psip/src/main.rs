//! `p2psip`: the one binary. Each deployment subcommand lives in its own module under `cmd/`
//! (its arguments, configuration and output over the library crates); the lab subcommands
//! (`demo`, `sim`, `eval`) are the `lab` crate's, called like any other user of it.

mod cmd;
mod config_file;
mod manpages;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// mimalloc instead of the system allocator: the simulator allocates and frees small
/// buffers for every simulated message, and with mimalloc `p2psip sim` at 10^5 peers needs
/// about a quarter less CPU time (measured side by side in the issue 3 notes). The
/// `system-alloc` feature keeps the system allocator, for heap profilers that hook malloc
/// (`scripts/heap-breakdown`).
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Secure and efficient P2PSIP: Chord overlay in three layers, Chord Secure Proxies (CSP),
/// CSP Gateways (CSPG), Enrollment & Authentication (E&A), Secure Opinion Server (SOS) and
/// STUN/TURN/ICE, after Zheng & Oleshchuk.
#[derive(Parser, Debug)]
#[command(name = "p2psip", version, about, long_about = None)]
struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. `info`, `overlay=debug`. Also RUST_LOG.
    #[arg(long, global = true, env = "RUST_LOG", default_value = "warn")]
    log: String,
    /// Read the subcommand's options from the section of this TOML file named after it
    /// (`[peer]`, `[sos]`, `[enroll-server]`, `[stun-server]`; keys are the long options, e.g.
    /// `stabilize_ms = 1000`). Flags win over `P2PSIP_<OPTION>` environment variables,
    /// which win over the file. `p2psip config check FILE` shows the outcome.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The paper's 512-peer prototype on real TLS peers in one process, its malicious-peer
    /// scenario and random calls (`--simulated`: in the discrete-event simulator).
    Demo(lab::demo::Args),
    /// Discrete-event simulator: Chord lookups at scale, call set-up under attack (secure vs
    /// plain Chord), or the paper's scenario (`--scenario paper`).
    Sim(lab::sim::Args),
    /// Reproduce every result as figures: runs seeded experiments and writes DIR/report.html
    /// (self-contained), DIR/results.json and each figure as SVG and PNG.
    Eval(lab::eval::Args),
    /// Run the Enrollment & Authentication server, or manage its tokens and revocations.
    EnrollServer(cmd::enroll_server::Args),
    /// Enroll with an E&A server and write key, certificate chain and node config.
    Enroll(cmd::enroll::Args),
    /// Secure Opinion Server: serve the trust API, or check the paper / rank / report.
    Sos(cmd::sos::Args),
    /// Run a peer of the secure overlay (peer, CSP or CSPG as its certificate says) on mutual
    /// TLS from a node directory (`p2psip enroll --out DIR`).
    ///
    /// Membership: the peer builds its CSP/CSPG directory and the key book it checks
    /// PingRequest signatures with from the E&A directory (`GET /v1/directory` of the server
    /// in node.json; every chain is checked against the CA and the CRL), refreshed every
    /// `--directory-refresh-s`. `--directory FILE|URL` reads it elsewhere (same JSON:
    /// `{"members":[{"addr":"IP:PORT"|null,"chain":"PEM"}]}`). CSPs and CSPGs are reached at
    /// the address they gave at enrollment (`p2psip enroll --listen`), so start them
    /// listening there. The SOS comes from node.json (`enroll-server --sos-url`) or `--sos`;
    /// run the SOS with `--enroll-server URL` (or give it `enroll-server sos-registry`) so it
    /// accepts the peers' signed reports. `peer.db` in the node directory keeps the contact cache,
    /// records, a CSP's held requests and the call history across restarts.
    Peer(cmd::peer::Args),
    /// Place a call from a running peer to another peer (INVITE, 180, 200, ACK, BYE over the
    /// secure overlay) and print the result.
    Call(cmd::call::Args),
    /// Ask a running peer who owns a key (through its local control endpoint).
    Lookup(cmd::ctl::LookupArgs),
    /// Show a running peer's ring state and counters (through its local control endpoint).
    Status(cmd::ctl::StatusArgs),
    /// Run the STUN/TURN server for peers behind NAT.
    StunServer(cmd::stun_server::Args),
    /// Probe a STUN/TURN server: reflexive address, and with credentials a relay echo.
    StunClient(cmd::stun_client::Args),
    /// Run one ICE session against another `p2psip ice` and report the chosen pair.
    Ice(cmd::ice::Args),
    /// Local SIP front-ends (registrar + proxy on UDP and TCP) for SIP phones and SIPp,
    /// joined by an in-process overlay.
    SipFrontends(cmd::sip_frontends::Args),
    /// Config files: check one and show the configuration each of its sections gives.
    Config(cmd::config::Args),
    /// Write the man pages (one per subcommand) into a directory, for the Debian package.
    #[command(hide = true)]
    Man(cmd::man::Args),
}

fn main() -> std::process::ExitCode {
    // Options from --config FILE and P2PSIP_* variables join the command line first.
    let root = Cli::command();
    let argv = match config_file::apply(&root, std::env::args_os().collect()) {
        Ok((argv, _)) => argv,
        Err(err) => {
            eprintln!("error: {err:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let cli = match root
        .clone()
        .try_get_matches_from(argv)
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let mut log = cli.log.clone();
    if !log.contains("stun_proto") {
        // stun-proto logs every routine 401 nonce challenge at ERROR; keep it for explicit asks.
        log.push_str(",stun_proto::auth=off");
    }
    if !log.contains("rice_proto") {
        // The ICE agent traces every check at INFO: a peer's log at `info` would be mostly that.
        log.push_str(",rice_proto=warn");
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&log)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Demo(args) => lab::demo::run(args).map_err(anyhow::Error::from),
        Command::Sim(args) => lab::sim::run(args).map_err(anyhow::Error::from),
        Command::Eval(args) => lab::eval::run(args).map_err(anyhow::Error::from),
        Command::EnrollServer(args) => cmd::enroll_server::run(args),
        Command::Enroll(args) => cmd::enroll::run(args),
        Command::Sos(args) => cmd::sos::run(args),
        Command::Peer(args) => cmd::peer::run(args),
        Command::Call(args) => cmd::call::run(args),
        Command::Lookup(args) => cmd::ctl::lookup(args),
        Command::Status(args) => cmd::ctl::status(args),
        Command::StunServer(args) => cmd::stun_server::run(args),
        Command::StunClient(args) => cmd::stun_client::run(args),
        Command::Ice(args) => cmd::ice::run(args),
        Command::SipFrontends(args) => cmd::sip_frontends::run(args),
        Command::Config(args) => cmd::config::run(args, root),
        Command::Man(args) => cmd::man::run(args, root),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
