//! `p2psip sip-frontends`: local SIP front-ends (registrar + proxy, UDP and TCP) for SIP
//! phones and SIPp, joined by the in-process overlay until `p2psip peer` carries
//! registrations and in-dialog SIP over TLS (then `--sip-listen` moves to `p2psip peer`).

use anyhow::Context;
use overlay::NodeId;
use overlay::secure::{Ed25519Registry, Ed25519Signer};
use sip::driver::{self, DriverLimits};
use sip::{FrontEnd, FrontEndConfig, LoopbackNet};
use std::net::SocketAddr;
use std::sync::Arc;

/// Options for `p2psip sip-frontends`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// UDP+TCP address of one front-end (repeatable: one peer each; port 0 picks a free port).
    #[arg(
        long = "sip-listen",
        value_name = "ADDR",
        default_value = "127.0.0.1:5060"
    )]
    sip_listen: Vec<SocketAddr>,
    /// SIP domain of the AoRs served.
    #[arg(long, default_value = "p2psip.test")]
    domain: String,
    /// Most transactions in flight per front-end (503 beyond); default: what 64 MiB holds.
    #[arg(long)]
    max_transactions: Option<usize>,
    /// Most calls per front-end (503 beyond); default: what 64 MiB holds.
    #[arg(long)]
    max_calls: Option<usize>,
    /// Print each front-end's table sizes and counters every SECS seconds (0: only at exit),
    /// one `stats` line per front-end: what `scripts/soak-sip` samples.
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    stats_every: u64,
    #[command(flatten)]
    sip_auth: super::sip_auth::SipAuthArgs,
}

pub(crate) fn run(a: Args) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let auth = node::load_sip_auth(
        a.sip_auth.sip_credentials.as_deref(),
        &a.domain,
        &a.sip_auth.sip_digest,
    )?;
    rt.block_on(async move {
        let mut keys = Ed25519Registry::default();
        let mut signers = Vec::new();
        for i in 0..a.sip_listen.len() {
            let (s, _) =
                Ed25519Signer::generate().map_err(|_| anyhow::anyhow!("key generation failed"))?;
            keys.insert(NodeId(i as u128 + 1), s.public_key());
            signers.push(s);
        }
        let keys = Arc::new(keys);
        let unix_ms = service::time::unix_ms();
        let net = LoopbackNet::new(keys.clone(), unix_ms);
        let mut tasks = Vec::new();
        for (i, (listen, s)) in a.sip_listen.iter().zip(signers).enumerate() {
            let id = NodeId(i as u128 + 1);
            let k = keys.clone();
            let domain = a.domain.clone();
            let (max_tx, max_calls) = (a.max_transactions, a.max_calls);
            let auth = auth.clone();
            let t = driver::start(
                *listen,
                DriverLimits::default(),
                move |local| {
                    let mut cfg = FrontEndConfig::new(&domain, local);
                    cfg.unix_offset_ms = unix_ms;
                    cfg.max_transactions = max_tx.unwrap_or(cfg.max_transactions);
                    cfg.max_calls = max_calls.unwrap_or(cfg.max_calls);
                    cfg.auth = auth;
                    FrontEnd::new(cfg, id, Box::new(s), k)
                },
                net.join(id),
            )
            .await
            .with_context(|| format!("binding SIP front-end on {listen}"))?;
            service::output::say(format_args!(
                "frontend {} udp+tcp {} domain {}",
                id.0, t.local, a.domain
            ));
            tasks.push(t);
        }
        service::output::say(format_args!(
            "overlay: in-process (no TLS, no secure routing); Ctrl-C or SIGTERM stops"
        ));
        let stop = super::stop_signal();
        tokio::pin!(stop);
        if a.stats_every > 0 {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(a.stats_every));
            every.tick().await;
            loop {
                tokio::select! {
                    _ = &mut stop => break,
                    _ = every.tick() => {
                        for (i, t) in tasks.iter().enumerate() {
                            say_stats(i + 1, &t.stats());
                        }
                    }
                }
            }
        } else {
            stop.await;
        }
        for t in tasks {
            eprintln!("frontend {}: {}", t.local, t.stats().summary());
            t.shutdown().await;
        }
        Ok(())
    })
}

/// One `stats` line for front-end `n`: its tables (what must stay flat under steady load),
/// its counters and what its sockets dropped.
fn say_stats(n: usize, s: &driver::DriverStats) {
    service::output::say(format_args!(
        "stats frontend {n}: {} dropped {}",
        sip::stats_line(&s.tables, &s.frontend),
        s.dropped_out
    ));
}
