//! `p2psip ice`: run one ICE session (RFC 8445) against another `p2psip ice` and report the
//! pair it chose, then echo datagrams over it. The two sides swap their descriptions over a
//! plain TCP signalling connection (one JSON line each way); in a call the same descriptions
//! ride in the SIP offer/answer. For operators checking a NAT, and for the real-NAT test.

use anyhow::{Context, bail};
use nat::{Credentials, IceDescription, IceOptions, IceSession};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Longest signalling line accepted (a description is a few hundred bytes).
const MAX_SIGNAL_LINE: usize = 16 * 1024;

/// Options for `p2psip ice`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Wait for the other side's signalling connection on this TCP address (the answerer).
    #[arg(long, conflicts_with = "signal")]
    signal_listen: Option<SocketAddr>,
    /// Connect to the other side's signalling address (the offerer; controlling, like a caller).
    #[arg(long)]
    signal: Option<SocketAddr>,
    /// STUN server for the server-reflexive candidate.
    #[arg(long)]
    stun: Option<SocketAddr>,
    /// TURN server for the relayed candidate (with --user).
    #[arg(long, requires = "user")]
    turn: Option<SocketAddr>,
    /// TURN long-term credentials `name:password`.
    #[arg(long, value_name = "U:P")]
    user: Option<String>,
    /// Offer only the relayed candidate (forces the relay path).
    #[arg(long, requires = "turn")]
    relay_only: bool,
    /// Datagrams to echo over the chosen pair (the offerer sends, the answerer echoes).
    #[arg(long, default_value_t = 10)]
    count: u32,
    /// Give up each step (gathering, signalling, checks, each echo) after this many ms.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
}

pub(crate) fn run(a: Args) -> anyhow::Result<()> {
    if a.signal.is_none() == a.signal_listen.is_none() {
        bail!("give exactly one of --signal ADDR (offerer) or --signal-listen ADDR (answerer)");
    }
    let timeout = Duration::from_millis(a.timeout_ms);
    let turn = match (a.turn, &a.user) {
        (Some(addr), Some(u)) => Some((
            addr,
            Credentials::parse_user_pass(u).context("bad --user, want name:password")?,
        )),
        _ => None,
    };
    let offerer = a.signal.is_some();
    let opts = IceOptions {
        stun: a.stun,
        turn,
        controlling: offerer,
        relay_only: a.relay_only,
        gather_timeout: timeout,
        connect_timeout: timeout,
        ..IceOptions::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        // Listen before gathering so the offerer can connect as soon as it is ready.
        let listener = match a.signal_listen {
            Some(addr) => {
                let l = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("bind signalling {addr}"))?;
                service::say!("signalling listening {}", l.local_addr()?);
                Some(l)
            }
            None => None,
        };
        let t0 = Instant::now();
        let mut session = IceSession::gather(opts).await.context("ICE gathering")?;
        service::say!(
            "gathered {} candidates in {:.1} ms",
            session.local_description().candidates.len(),
            t0.elapsed().as_secs_f64() * 1e3
        );
        for c in &session.local_description().candidates {
            service::say!("  {c}");
        }
        let stream = match (listener, a.signal) {
            (Some(l), _) => {
                let (s, from) = tokio::time::timeout(timeout, l.accept())
                    .await
                    .context("no signalling connection in time")??;
                service::say!("signalling from {from}");
                s
            }
            (None, Some(addr)) => tokio::time::timeout(timeout, TcpStream::connect(addr))
                .await
                .context("signalling connect timed out")?
                .with_context(|| format!("signalling connect {addr}"))?,
            (None, None) => bail!("no signalling"),
        };
        let remote = tokio::time::timeout(
            timeout,
            swap_descriptions(stream, session.local_description()),
        )
        .await
        .context("signalling timed out")??;
        let pair = session.connect(&remote).await.context("ICE checks")?;
        service::say!("selected {pair}");
        if offerer {
            let tally = nat::probe_ice(&mut session, a.count, timeout).await?;
            for why in &tally.failures {
                eprintln!("{why}");
            }
            let (ok, avg) = (tally.ok(), tally.avg_ms());
            service::say!("echo {ok}/{} over the pair, rtt avg {avg:.3} ms", a.count);
            if tally.lost() > 0 {
                bail!("{} of {} echoes lost", tally.lost(), a.count);
            }
        } else {
            nat::answer_ice(&mut session, a.count, timeout)
                .await
                .context("waiting for echo requests")?;
            service::say!("echoed {}", a.count);
            // Let the last answer leave before the sockets close.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    })
}

/// Send our description as one JSON line, read theirs.
async fn swap_descriptions(
    stream: TcpStream,
    ours: &IceDescription,
) -> anyhow::Result<IceDescription> {
    let (r, mut w) = stream.into_split();
    let mut line = serde_json::to_string(ours)?;
    line.push('\n');
    w.write_all(line.as_bytes()).await?;
    let mut r = BufReader::new(r.take(MAX_SIGNAL_LINE as u64));
    let mut theirs = String::new();
    r.read_line(&mut theirs).await?;
    if !theirs.ends_with('\n') {
        bail!("signalling line missing or longer than {MAX_SIGNAL_LINE} bytes");
    }
    serde_json::from_str(&theirs).context("bad ICE description from the other side")
}
