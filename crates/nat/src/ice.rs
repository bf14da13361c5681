//! ICE (RFC 8445) for a call's media path: after the overlay has set a call up, caller and
//! callee gather host, server-reflexive (STUN) and relayed (TURN) candidates, swap them as an
//! [`IceDescription`] and run connectivity checks; the best working pair wins, the relay is the
//! fallback.
//!
//! The protocol is `rice-proto`'s sans-IO agent; [`IceSession`] is the tokio shell around it:
//! one UDP socket for host and server-reflexive candidates, one more per TURN server (the agent
//! wants a distinct local address for each), one reader task per socket feeding a bounded queue,
//! and a loop that hands the agent datagrams and the time and sends what it asks to send.

use rice_proto::agent::{Agent, AgentPoll};
use rice_proto::candidate::{Candidate, CandidateType, TransportType};
use rice_proto::component::ComponentConnectionState;
use rice_proto::stream::Credentials as IceCredentials;
use rice_proto::turn::{TurnConfig, TurnCredentials};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use stun_proto::Instant;
use stun_proto::agent::Transmit;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::Credentials;

/// Datagrams queued from the sockets to the agent before further ones are dropped.
const RECV_QUEUE: usize = 1024;
/// At most this many remote candidates are taken from a description (an outsider writes it).
pub const MAX_REMOTE_CANDIDATES: usize = 32;
/// Longest candidate line accepted from a description.
const MAX_CANDIDATE_LINE: usize = 512;
/// Longest application datagram [`IceSession::send`] carries.
pub const MAX_DATAGRAM: usize = 1400;

/// What went wrong in an ICE session.
#[derive(Debug, thiserror::Error)]
pub enum IceError {
    /// A socket could not be bound or used.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// The agent refused an operation.
    #[error("ICE agent: {0}")]
    Agent(String),
    /// Gathering did not finish in time.
    #[error("candidate gathering did not finish within {0:?}")]
    GatherTimeout(Duration),
    /// No candidate pair worked.
    #[error("no candidate pair worked (connectivity checks failed)")]
    Failed,
    /// Checks did not finish in time.
    #[error("no pair selected within {0:?}")]
    ConnectTimeout(Duration),
    /// The remote description is unusable.
    #[error("bad remote description: {0}")]
    BadDescription(String),
    /// No application data arrived in time.
    #[error("no data within {0:?}")]
    RecvTimeout(Duration),
    /// [`IceSession::send`] before a pair was selected, or data too large.
    #[error("cannot send: {0}")]
    Send(&'static str),
    /// The session's task has stopped.
    #[error("the ICE session has stopped")]
    Stopped,
}

/// What one side tells the other: ICE credentials and candidates as SDP `a=candidate` lines.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IceDescription {
    /// ICE username fragment.
    pub ufrag: String,
    /// ICE password.
    pub pwd: String,
    /// Candidates, one SDP attribute line each (`a=candidate:…`).
    pub candidates: Vec<String>,
}

impl IceDescription {
    /// SDP attribute lines for a media section (RFC 8839): `a=ice-ufrag`, `a=ice-pwd`,
    /// then one `a=candidate` per candidate, each ending in CRLF.
    pub fn to_sdp(&self) -> String {
        let mut out = format!("a=ice-ufrag:{}\r\na=ice-pwd:{}\r\n", self.ufrag, self.pwd);
        for c in &self.candidates {
            if !c.starts_with("a=") {
                out.push_str("a=");
            }
            out.push_str(c);
            out.push_str("\r\n");
        }
        out
    }

    /// The ICE attributes of an SDP body (from a peer: candidates beyond
    /// [`MAX_REMOTE_CANDIDATES`] are left out, [`IceSession::connect`] checks the rest).
    /// `None` when the body has no `a=ice-ufrag` and `a=ice-pwd`.
    pub fn from_sdp(sdp: &str) -> Option<Self> {
        let (mut ufrag, mut pwd, mut candidates) = (None, None, Vec::new());
        for line in sdp.lines().map(str::trim_end) {
            if let Some(v) = line.strip_prefix("a=ice-ufrag:") {
                ufrag = Some(v.to_owned());
            } else if let Some(v) = line.strip_prefix("a=ice-pwd:") {
                pwd = Some(v.to_owned());
            } else if line.starts_with("a=candidate:") && candidates.len() < MAX_REMOTE_CANDIDATES {
                candidates.push(line.to_owned());
            }
        }
        Some(IceDescription {
            ufrag: ufrag?,
            pwd: pwd?,
            candidates,
        })
    }
}

/// How a session gathers and checks.
#[derive(Clone, Debug)]
pub struct IceOptions {
    /// Local IP for the host candidate; `None` picks the interface that routes to the STUN
    /// server (or to the TURN server, else loopback).
    pub bind_ip: Option<IpAddr>,
    /// STUN server for the server-reflexive candidate.
    pub stun: Option<SocketAddr>,
    /// TURN server and long-term credentials for the relayed candidate.
    pub turn: Option<(SocketAddr, Credentials)>,
    /// The controlling agent (the caller) nominates the pair.
    pub controlling: bool,
    /// Offer only relayed candidates (policy "relay only", and tests of the fallback).
    pub relay_only: bool,
    /// Give up gathering after this long (candidates found so far are kept).
    pub gather_timeout: Duration,
    /// Give up the connectivity checks after this long.
    pub connect_timeout: Duration,
}

impl Default for IceOptions {
    fn default() -> Self {
        Self {
            bind_ip: None,
            stun: None,
            turn: None,
            controlling: false,
            relay_only: false,
            gather_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// One end of the chosen pair.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Endpoint {
    /// `host`, `srflx`, `prflx` or `relay`.
    pub kind: String,
    /// The candidate's transport address.
    pub addr: SocketAddr,
}

/// The pair ICE chose for the session.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct IcePair {
    /// Our side.
    pub local: Endpoint,
    /// The other side.
    pub remote: Endpoint,
    /// From the start of the checks to the selection.
    pub elapsed_ms: u64,
}

impl std::fmt::Display for IcePair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "local {} {} -> remote {} {} in {} ms",
            self.local.kind, self.local.addr, self.remote.kind, self.remote.addr, self.elapsed_ms
        )
    }
}

/// The local IP the kernel would use to reach `to`.
async fn route_ip(to: SocketAddr) -> std::io::Result<IpAddr> {
    Ok(crate::client::connected_socket(to)
        .await?
        .local_addr()?
        .ip())
}

/// A datagram from one of our sockets: (local address, sender, bytes).
type Inbound = (SocketAddr, SocketAddr, Vec<u8>);

/// What the session handle asks of its agent task.
enum Command {
    Connect(IceDescription, oneshot::Sender<Result<IcePair, IceError>>),
    Send(Vec<u8>, oneshot::Sender<Result<(), IceError>>),
}

/// One ICE session with one UDP component. The agent lives in a background task for the
/// session's whole life, because it must keep answering the other side's checks (and
/// keepalives) after it has chosen its own pair; dropping the session stops it.
pub struct IceSession {
    commands: mpsc::Sender<Command>,
    data: mpsc::Receiver<Vec<u8>>,
    local: IceDescription,
    selected: Option<IcePair>,
    dropped: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for IceSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceSession")
            .field("local", &self.local)
            .field("selected", &self.selected)
            .finish()
    }
}

impl Drop for IceSession {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl IceSession {
    /// Bind the sockets and gather candidates (host, server-reflexive, relayed as configured).
    pub async fn gather(opts: IceOptions) -> Result<Self, IceError> {
        let target = opts.stun.or(opts.turn.as_ref().map(|t| t.0));
        let ip = match (opts.bind_ip, target) {
            (Some(ip), _) => ip,
            (None, Some(t)) => route_ip(t).await?,
            (None, None) => IpAddr::from([127, 0, 0, 1]),
        };
        let dropped = Arc::new(AtomicU64::new(0));
        let mut driver = Driver::new(&opts, ip, dropped.clone()).await?;
        let local = driver.gather(&opts).await?;
        let (commands, command_rx) = mpsc::channel(64);
        let (data_tx, data) = mpsc::channel(RECV_QUEUE);
        let task = tokio::spawn(driver.run(command_rx, data_tx, opts.connect_timeout));
        Ok(Self {
            commands,
            data,
            local,
            selected: None,
            dropped,
            task,
        })
    }

    /// What to send to the other side.
    pub fn local_description(&self) -> &IceDescription {
        &self.local
    }

    /// The pair chosen by [`IceSession::connect`], once it has been.
    pub fn selected(&self) -> Option<&IcePair> {
        self.selected.as_ref()
    }

    /// Datagrams dropped because the application or the agent fell behind (bounded queues).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Take the other side's description and run the checks until a pair is selected.
    pub async fn connect(&mut self, remote: &IceDescription) -> Result<IcePair, IceError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Connect(remote.clone(), tx))
            .await
            .map_err(|_| IceError::Stopped)?;
        let pair = rx.await.map_err(|_| IceError::Stopped)??;
        self.selected = Some(pair.clone());
        Ok(pair)
    }

    /// Send one datagram over the selected pair (through the relay if that is the pair).
    pub async fn send(&self, data: &[u8]) -> Result<(), IceError> {
        if data.len() > MAX_DATAGRAM {
            return Err(IceError::Send("datagram too large"));
        }
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Send(data.to_vec(), tx))
            .await
            .map_err(|_| IceError::Stopped)?;
        rx.await.map_err(|_| IceError::Stopped)?
    }

    /// Wait for one datagram from the other side.
    pub async fn recv(&mut self, timeout: Duration) -> Result<Vec<u8>, IceError> {
        match tokio::time::timeout(timeout, self.data.recv()).await {
            Ok(Some(d)) => Ok(d),
            Ok(None) => Err(IceError::Stopped),
            Err(_) => Err(IceError::RecvTimeout(timeout)),
        }
    }
}

/// Parse and bound a remote description.
fn parse_remote(remote: &IceDescription, component: usize) -> Result<Vec<Candidate>, IceError> {
    let bad = |c: &str| c.is_empty() || c.len() > 256;
    if bad(&remote.ufrag) || bad(&remote.pwd) {
        return Err(IceError::BadDescription(
            "missing or oversized credentials".into(),
        ));
    }
    if remote.candidates.len() > MAX_REMOTE_CANDIDATES {
        return Err(IceError::BadDescription(format!(
            "{} candidates (at most {MAX_REMOTE_CANDIDATES})",
            remote.candidates.len()
        )));
    }
    let mut parsed = Vec::new();
    for line in &remote.candidates {
        if line.len() > MAX_CANDIDATE_LINE {
            return Err(IceError::BadDescription("oversized candidate line".into()));
        }
        let c: Candidate = line
            .trim()
            .parse()
            .map_err(|e| IceError::BadDescription(format!("{line:?}: {e:?}")))?;
        if c.transport_type == TransportType::Udp && c.component_id == component {
            parsed.push(c);
        }
    }
    if parsed.is_empty() {
        return Err(IceError::BadDescription("no usable UDP candidate".into()));
    }
    Ok(parsed)
}

/// Something the agent produced that the driver acts on.
enum Step {
    Gathered(Candidate),
    GatherDone,
    Selected(IcePair),
    Failed,
}

/// The agent and its sockets, owned by the session's task.
struct Driver {
    agent: Agent,
    stream: usize,
    component: usize,
    /// Each socket with its local address, read once at bind (every transmit picks its
    /// socket by address).
    sockets: Vec<(SocketAddr, Arc<UdpSocket>)>,
    inbound: mpsc::Receiver<Inbound>,
    readers: Vec<tokio::task::JoinHandle<()>>,
    base: std::time::Instant,
    relay_only: bool,
    dropped: Arc<AtomicU64>,
}

impl Drop for Driver {
    fn drop(&mut self) {
        for r in &self.readers {
            r.abort();
        }
    }
}

impl Driver {
    async fn new(opts: &IceOptions, ip: IpAddr, dropped: Arc<AtomicU64>) -> Result<Self, IceError> {
        let mut sockets = vec![bind(ip).await?];
        if opts.turn.is_some() {
            sockets.push(bind(ip).await?);
        }
        let (tx, inbound) = mpsc::channel(RECV_QUEUE);
        let readers = sockets
            .iter()
            .map(|(local, s)| spawn_reader(*local, s.clone(), tx.clone(), dropped.clone()))
            .collect();
        let mut agent = Agent::builder()
            .controlling(opts.controlling)
            .trickle_ice(false)
            .build();
        let stream = agent.add_stream();
        let component = agent
            .mut_stream(stream)
            .ok_or_else(|| IceError::Agent("stream vanished".into()))?
            .add_component()
            .map_err(|e| IceError::Agent(e.to_string()))?;
        Ok(Self {
            agent,
            stream,
            component,
            sockets,
            inbound,
            readers,
            base: std::time::Instant::now(),
            relay_only: opts.relay_only,
            dropped,
        })
    }

    fn now(&self) -> Instant {
        Instant::from_std(self.base)
    }

    /// Gather until complete or the gather timeout; returns the local description.
    async fn gather(&mut self, opts: &IceOptions) -> Result<IceDescription, IceError> {
        let host_addr = self.sockets[0].0;
        let turn_local = self.sockets.get(1).map(|s| s.0);
        let mut local = IceDescription {
            ufrag: rice_proto::random_string(8),
            pwd: rice_proto::random_string(24),
            candidates: Vec::new(),
        };
        let turn_cfg = opts.turn.as_ref().map(|(addr, c)| {
            TurnConfig::new(
                TransportType::Udp,
                *addr,
                TurnCredentials::new(&c.username, &c.password),
            )
        });
        let component = self.component;
        {
            let mut s = self
                .agent
                .mut_stream(self.stream)
                .ok_or_else(|| IceError::Agent("stream vanished".into()))?;
            s.set_local_credentials(IceCredentials::new(local.ufrag.clone(), local.pwd.clone()));
            let stun: Vec<_> = opts.stun.iter().map(|a| (TransportType::Udp, *a)).collect();
            let turn: Vec<_> = match (&turn_cfg, turn_local) {
                (Some(cfg), Some(local)) => vec![(local, cfg)],
                _ => Vec::new(),
            };
            s.mut_component(component)
                .ok_or_else(|| IceError::Agent("component vanished".into()))?
                .gather_candidates(&[(TransportType::Udp, host_addr)], &stun, &turn)
                .map_err(|e| IceError::Agent(e.to_string()))?;
            if host_addr.ip().is_loopback() && !self.relay_only {
                // rice-proto's gatherer skips loopback addresses; on a loopback-only set-up
                // (one machine, tests) the host candidate is still the right one.
                let priority = Candidate::calculate_priority(
                    CandidateType::Host,
                    TransportType::Udp,
                    None,
                    0,
                    component,
                );
                let c = Candidate::builder(
                    component,
                    CandidateType::Host,
                    TransportType::Udp,
                    "lo",
                    host_addr,
                )
                .priority(priority)
                .base_address(host_addr)
                .build();
                local.candidates.push(c.to_sdp_string());
                s.add_local_candidate(c);
            }
        }
        let deadline = tokio::time::Instant::now() + opts.gather_timeout;
        loop {
            match self.step(deadline, None).await? {
                Some(Step::Gathered(c)) => {
                    let wanted = !self.relay_only || c.candidate_type == CandidateType::Relayed;
                    debug!(candidate = %c.to_sdp_string(), wanted, "ICE candidate gathered");
                    if wanted {
                        local.candidates.push(c.to_sdp_string());
                    }
                }
                Some(Step::GatherDone) => break,
                Some(_) => {}
                None => {
                    if local.candidates.is_empty() {
                        return Err(IceError::GatherTimeout(opts.gather_timeout));
                    }
                    warn!(
                        kept = local.candidates.len(),
                        "ICE gathering timed out; using the candidates found so far"
                    );
                    break;
                }
            }
        }
        if let Some(mut s) = self.agent.mut_stream(self.stream) {
            s.end_of_local_candidates();
        }
        if local.candidates.is_empty() {
            return Err(IceError::Agent("no candidate gathered".into()));
        }
        info!(candidates = local.candidates.len(), "ICE gathering done");
        Ok(local)
    }

    /// Serve the session until the handle is dropped.
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        data: mpsc::Sender<Vec<u8>>,
        connect_timeout: Duration,
    ) {
        let mut waiting: Option<(
            oneshot::Sender<Result<IcePair, IceError>>,
            std::time::Instant,
        )> = None;
        let mut connect_deadline: Option<tokio::time::Instant> = None;
        let mut data_tx = Some(data);
        loop {
            let deadline = connect_deadline
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            let step = tokio::select! {
                s = self.step(deadline, data_tx.as_ref()) => s,
                cmd = commands.recv() => {
                    match cmd {
                        None => break,
                        Some(Command::Connect(remote, reply)) => {
                            match self.start_checks(&remote) {
                                Ok(()) => {
                                    waiting = Some((reply, std::time::Instant::now()));
                                    connect_deadline =
                                        Some(tokio::time::Instant::now() + connect_timeout);
                                }
                                Err(e) => {
                                    let _ = reply.send(Err(e));
                                }
                            }
                        }
                        Some(Command::Send(bytes, reply)) => {
                            let _ = reply.send(self.send(&bytes).await);
                        }
                    }
                    continue;
                }
            };
            match step {
                Ok(Some(Step::Selected(mut pair))) => {
                    if let Some((reply, started)) = waiting.take() {
                        pair.elapsed_ms = started.elapsed().as_millis() as u64;
                        info!(%pair, "ICE selected a pair");
                        let _ = reply.send(Ok(pair));
                    }
                    connect_deadline = None;
                }
                Ok(Some(Step::Failed)) => {
                    if let Some((reply, _)) = waiting.take() {
                        let _ = reply.send(Err(IceError::Failed));
                    }
                    connect_deadline = None;
                }
                Ok(Some(_)) => {}
                Ok(None) => {
                    if let Some((reply, _)) = waiting.take() {
                        let _ = reply.send(Err(IceError::ConnectTimeout(connect_timeout)));
                    }
                    connect_deadline = None;
                }
                Err(e) => {
                    warn!(error = %e, "ICE session stopped");
                    if let Some((reply, _)) = waiting.take() {
                        let _ = reply.send(Err(e));
                    }
                    break;
                }
            }
            if data_tx.as_ref().is_some_and(|d| d.is_closed()) {
                data_tx = None;
            }
        }
        let now = self.now();
        self.agent.close(now);
        while let Some(t) = self.agent.poll_transmit(now) {
            self.transmit(t.transmit.from, t.transmit.to, &t.transmit.data)
                .await;
        }
    }

    fn start_checks(&mut self, remote: &IceDescription) -> Result<(), IceError> {
        let parsed = parse_remote(remote, self.component)?;
        let mut s = self
            .agent
            .mut_stream(self.stream)
            .ok_or_else(|| IceError::Agent("stream vanished".into()))?;
        if s.remote_credentials().is_some() {
            return Err(IceError::Agent("connect called twice".into()));
        }
        s.set_remote_credentials(IceCredentials::new(
            remote.ufrag.clone(),
            remote.pwd.clone(),
        ));
        for c in parsed {
            s.add_remote_candidate(c);
        }
        s.end_of_remote_candidates();
        Ok(())
    }

    async fn send(&mut self, data: &[u8]) -> Result<(), IceError> {
        let now = self.now();
        let t = {
            let mut s = self
                .agent
                .mut_stream(self.stream)
                .ok_or(IceError::Send("no stream"))?;
            let mut c = s
                .mut_component(self.component)
                .ok_or(IceError::Send("no component"))?;
            c.send(data, now)
                .map_err(|_| IceError::Send("no selected pair yet"))?
        };
        self.transmit(t.from, t.to, &t.data).await;
        Ok(())
    }

    async fn transmit(&self, from: SocketAddr, to: SocketAddr, data: &[u8]) {
        let Some((_, sock)) = self.sockets.iter().find(|(local, _)| *local == from) else {
            warn!(%from, %to, "ICE agent asked to send from an address we do not own");
            return;
        };
        if let Err(e) = sock.send_to(data, to).await {
            debug!(%from, %to, error = %e, "ICE send failed");
        }
    }

    /// Run the agent until it produces something worth returning, or `deadline` (→ `None`).
    /// Application data goes to `data` (dropped and counted when that queue is full).
    async fn step(
        &mut self,
        deadline: tokio::time::Instant,
        data: Option<&mpsc::Sender<Vec<u8>>>,
    ) -> Result<Option<Step>, IceError> {
        loop {
            let now = self.now();
            while let Some(t) = self.agent.poll_transmit(now) {
                self.transmit(t.transmit.from, t.transmit.to, &t.transmit.data)
                    .await;
            }
            let wait = match self.agent.poll(now) {
                AgentPoll::Closed => return Ok(Some(Step::Failed)),
                AgentPoll::WaitUntil(at) => at,
                AgentPoll::AllocateSocket(s) => {
                    ice_agent::refuse_socket(&mut self.agent, &s, now);
                    continue;
                }
                AgentPoll::RemoveSocket(_) => continue,
                AgentPoll::GatheredCandidate(g) => {
                    let c = g.gathered.candidate.clone();
                    // Under "relay only" the agent must not even check from other candidates.
                    let keep = !self.relay_only || c.candidate_type == CandidateType::Relayed;
                    if keep && let Some(mut st) = self.agent.mut_stream(g.stream_id) {
                        st.add_local_gathered_candidate(g.gathered);
                    }
                    return Ok(Some(Step::Gathered(c)));
                }
                AgentPoll::GatheringComplete(_) => return Ok(Some(Step::GatherDone)),
                AgentPoll::SelectedPair(p) => {
                    let pair = ice_agent::keep_selected_pair(&mut self.agent, &p);
                    return Ok(Some(Step::Selected(IcePair {
                        local: Endpoint {
                            // A check answered with a new mapped address yields a local
                            // peer-reflexive candidate; rice-proto keeps the host type on it.
                            kind: if pair.local.candidate_type == CandidateType::Host
                                && pair.local.address != pair.local.base_address
                            {
                                CandidateType::PeerReflexive.to_string()
                            } else {
                                pair.local.candidate_type.to_string()
                            },
                            addr: pair.local.address,
                        },
                        remote: Endpoint {
                            kind: pair.remote.candidate_type.to_string(),
                            addr: pair.remote.address,
                        },
                        elapsed_ms: 0,
                    })));
                }
                AgentPoll::ComponentStateChange(c) => {
                    debug!(state = ?c.state, "ICE component state");
                    if c.state == ComponentConnectionState::Failed {
                        return Ok(Some(Step::Failed));
                    }
                    continue;
                }
            };
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            let wake = tokio::time::Instant::now() + wait.saturating_duration_since(now);
            tokio::select! {
                got = self.inbound.recv() => {
                    let Some((local, from, bytes)) = got else {
                        return Err(IceError::Agent("socket readers stopped".into()));
                    };
                    for d in self.incoming(local, from, bytes) {
                        match data {
                            Some(tx) if tx.try_send(d).is_ok() => {}
                            _ => {
                                self.dropped.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
                _ = tokio::time::sleep_until(wake.min(deadline)) => {}
            }
        }
    }

    /// Hand one datagram to the agent; returns the application data it carried.
    fn incoming(&mut self, local: SocketAddr, from: SocketAddr, bytes: Vec<u8>) -> Vec<Vec<u8>> {
        let now = self.now();
        let component = self.component;
        let Some(mut s) = self.agent.mut_stream(self.stream) else {
            return Vec::new();
        };
        let reply = s.handle_incoming_data(
            component,
            Transmit::new(bytes, TransportType::Udp, from, local),
            now,
        );
        let mut out: Vec<Vec<u8>> = reply
            .data
            .map(|d| d.as_ref().to_vec())
            .into_iter()
            .collect();
        if reply.have_more_data {
            while let Some(more) = s.poll_recv() {
                if out.len() < 64 {
                    out.push(more.data);
                } else {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        out
    }
}

/// A UDP socket on `ip` (any port) and its local address.
async fn bind(ip: IpAddr) -> std::io::Result<(SocketAddr, Arc<UdpSocket>)> {
    let sock = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
    Ok((sock.local_addr()?, Arc::new(sock)))
}

fn spawn_reader(
    local: SocketAddr,
    sock: Arc<UdpSocket>,
    tx: mpsc::Sender<Inbound>,
    dropped: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        loop {
            match sock.recv_from(&mut buf).await {
                Ok((n, from)) => {
                    if tx.try_send((local, from, buf[..n].to_vec())).is_err() {
                        if tx.is_closed() {
                            return;
                        }
                        dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                // ICMP port unreachable from an earlier send shows up here on Linux.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                Err(e) => {
                    debug!(%local, error = %e, "ICE socket reader stopped");
                    return;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdp_without_ice_or_with_too_many_candidates() {
        assert_eq!(IceDescription::from_sdp("v=0\r\na=ice-pwd:x\r\n"), None);
        let many =
            "a=candidate:1 1 UDP 1 10.0.0.1 9 typ host\r\n".repeat(MAX_REMOTE_CANDIDATES + 5);
        let d =
            IceDescription::from_sdp(&format!("a=ice-ufrag:u\r\na=ice-pwd:p\r\n{many}")).unwrap();
        assert_eq!((d.ufrag.as_str(), d.pwd.as_str()), ("u", "p"));
        assert_eq!(d.candidates.len(), MAX_REMOTE_CANDIDATES);
        assert_eq!(IceDescription::from_sdp(&d.to_sdp()), Some(d));
    }

    #[tokio::test]
    async fn bad_descriptions_are_refused_clearly() {
        let mut s = IceSession::gather(IceOptions::default()).await.unwrap();
        let good = s.local_description().clone();
        let mut d = good.clone();
        d.candidates = vec!["a=candidate:garbage".into()];
        assert!(matches!(
            s.connect(&d).await,
            Err(IceError::BadDescription(_))
        ));
        d.candidates = vec![good.candidates[0].clone(); MAX_REMOTE_CANDIDATES + 1];
        assert!(matches!(
            s.connect(&d).await,
            Err(IceError::BadDescription(_))
        ));
        d = good.clone();
        d.pwd.clear();
        assert!(matches!(
            s.connect(&d).await,
            Err(IceError::BadDescription(_))
        ));
        d = good.clone();
        d.candidates.clear();
        assert!(matches!(
            s.connect(&d).await,
            Err(IceError::BadDescription(_))
        ));
        assert!(matches!(s.send(b"x").await, Err(IceError::Send(_))));
    }

    #[tokio::test]
    async fn two_hosts_on_loopback_select_a_host_pair_and_exchange_data() {
        let mut a = IceSession::gather(IceOptions {
            controlling: true,
            ..Default::default()
        })
        .await
        .unwrap();
        let mut b = IceSession::gather(IceOptions::default()).await.unwrap();
        let (da, db) = (a.local_description().clone(), b.local_description().clone());
        assert_eq!(da.candidates.len(), 1, "{da:?}");
        // As the call carries them: inside an SDP body.
        let sdp = |d: &IceDescription| format!("v=0\r\nm=audio 9 RTP/AVP 0\r\n{}", d.to_sdp());
        let (da, db) = (
            IceDescription::from_sdp(&sdp(&da)).unwrap(),
            IceDescription::from_sdp(&sdp(&db)).unwrap(),
        );
        assert_eq!(da, a.local_description().clone());
        let (pa, pb) = tokio::join!(a.connect(&db), b.connect(&da));
        let (pa, pb) = (pa.unwrap(), pb.unwrap());
        assert_eq!(pa.local.kind, "host");
        assert_eq!(pa.remote.addr, pb.local.addr);
        assert_eq!(pb.remote.addr, pa.local.addr);
        a.send(b"hello").await.unwrap();
        assert_eq!(b.recv(Duration::from_secs(5)).await.unwrap(), b"hello");
        b.send(b"back").await.unwrap();
        assert_eq!(a.recv(Duration::from_secs(5)).await.unwrap(), b"back");
    }

    #[tokio::test]
    async fn a_silent_remote_times_out() {
        let mut a = IceSession::gather(IceOptions {
            controlling: true,
            connect_timeout: Duration::from_millis(800),
            ..Default::default()
        })
        .await
        .unwrap();
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap();
        let d = IceDescription {
            ufrag: "abcd".into(),
            pwd: "abcdefghijklmnopqrstuvwx".into(),
            candidates: vec![format!(
                "a=candidate:1 1 UDP 2130706431 {} {} typ host",
                addr.ip(),
                addr.port()
            )],
        };
        let r = a.connect(&d).await;
        assert!(
            matches!(r, Err(IceError::Failed | IceError::ConnectTimeout(_))),
            "{r:?}"
        );
    }
}
