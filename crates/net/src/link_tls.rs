//! TLS on a link's TCP stream through rustls's unbuffered API, so that a link holds no TLS
//! buffers of its own between records.
//!
//! rustls's buffered connection keeps a 4 KiB record buffer for as long as a read is
//! pending, that is for a link's whole life; with dozens of link ends per peer that was the
//! largest single part of a peer's memory. [`TlsLink`] reads through a scratch buffer on the
//! stack (alive only while a read is polled) and decrypts the records in it at once. Between
//! records a link keeps heap bytes only for what is unfinished: a record that has not all
//! arrived, plaintext the reader has not taken yet, ciphertext the socket has not taken yet;
//! each is freed once empty, and the first is bounded ([`MAX_PENDING`]).
//!
//! The handshake and the record protection are rustls's own, with the same configurations
//! (and so the same certificate verification) as before: only the buffering moved here.

use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use rustls::{ClientConfig, ServerConfig};
use std::io::{self, ErrorKind};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// Bytes one read takes from the socket at most (into the stack scratch buffer).
const READ_CHUNK: usize = 16 * 1024;
/// Most bytes kept for unfinished input: a handshake message may span records up to 64 KiB
/// (rustls's own limit for its buffered connections), plus one record of the largest size.
/// A peer that sends more without finishing a record or message is refused.
const MAX_PENDING: usize = 0xffff + 16 * 1024 + 2048 + 5;

/// The connection's side.
enum Side {
    Client(Box<UnbufferedClientConnection>),
    Server(Box<UnbufferedServerConnection>),
}

/// What one turn of the TLS state machine came to.
enum Step {
    /// Progress was made (records read, or handshake data queued): turn again.
    Again,
    /// More bytes from the peer are needed.
    NeedInput,
    /// Application data may be sent, and nothing else is pending.
    Ready,
    /// The peer sent close_notify: nothing more will be read.
    PeerClosed,
}

/// What a turn that reaches the sending state sends.
#[derive(Clone, Copy)]
enum Emit<'a> {
    Nothing,
    Data(&'a [u8]),
    CloseNotify,
}

/// A link's TCP stream with mutual TLS on it: [`AsyncRead`] and [`AsyncWrite`] of plaintext,
/// after [`TlsLink::connect`] or [`TlsLink::accept`] has finished the handshake.
pub(crate) struct TlsLink {
    tcp: TcpStream,
    side: Side,
    /// The start of a record (or of a handshake message) that has not all arrived.
    pending: Vec<u8>,
    /// Decrypted bytes the reader has not taken yet, from `plain_off`.
    plain: Vec<u8>,
    plain_off: usize,
    /// Protected bytes the socket has not taken yet, from `out_off`.
    out: Vec<u8>,
    out_off: usize,
    /// The peer closed its side (close_notify, or the stream ended).
    eof: bool,
    /// Our close_notify is queued.
    close_sent: bool,
}

/// A rustls error as the I/O error tokio-rustls gave for it (callers look into it for the
/// refusal reason).
fn tls_err(e: rustls::Error) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, e)
}

/// Append the output of `f` (which says how much room it needs when it has too little) to
/// `out`.
fn append_with<E>(
    out: &mut Vec<u8>,
    mut f: impl FnMut(&mut [u8]) -> Result<usize, E>,
    needs: impl Fn(&E) -> Option<usize>,
) -> Result<(), E> {
    let start = out.len();
    let mut room = 512;
    loop {
        out.resize(start + room, 0);
        match f(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(e) => {
                out.truncate(start);
                match needs(&e) {
                    Some(n) if n > room => room = n,
                    _ => return Err(e),
                }
            }
        }
    }
}

/// One turn of either side's state machine over `input` (the connection types share no
/// trait for it). Returns the bytes of `input` that are done with.
macro_rules! turn {
    ($conn:expr, $input:expr, $plain:expr, $out:expr, $write:expr) => {{
        let UnbufferedStatus { mut discard, state } = $conn.process_tls_records($input);
        let step = match state.map_err(tls_err)? {
            ConnectionState::ReadTraffic(mut r) => {
                while let Some(rec) = r.next_record() {
                    let rec = rec.map_err(tls_err)?;
                    discard += rec.discard;
                    $plain.extend_from_slice(rec.payload);
                }
                Step::Again
            }
            ConnectionState::EncodeTlsData(mut e) => {
                match append_with(
                    $out,
                    |b| e.encode(b),
                    |e| match e {
                        EncodeError::InsufficientSize(s) => Some(s.required_size),
                        EncodeError::AlreadyEncoded => None,
                    },
                ) {
                    Ok(()) | Err(EncodeError::AlreadyEncoded) => {}
                    Err(e) => return Err(io::Error::other(e.to_string())),
                }
                Step::Again
            }
            // The bytes are in `out`, which goes to the socket before anything queued after
            // it.
            ConnectionState::TransmitTlsData(t) => {
                t.done();
                Step::Again
            }
            ConnectionState::BlockedHandshake => Step::NeedInput,
            ConnectionState::WriteTraffic(mut w) => {
                let room = |e: &EncryptError| match e {
                    EncryptError::InsufficientSize(s) => Some(s.required_size),
                    EncryptError::EncryptExhausted => None,
                };
                match $write {
                    Emit::Nothing => Ok(()),
                    Emit::Data(data) => append_with($out, |b| w.encrypt(data, b), room),
                    Emit::CloseNotify => append_with($out, |b| w.queue_close_notify(b), room),
                }
                .map_err(|e| io::Error::other(e.to_string()))?;
                Step::Ready
            }
            ConnectionState::PeerClosed => Step::PeerClosed,
            ConnectionState::Closed => {
                return Err(io::Error::new(
                    ErrorKind::BrokenPipe,
                    "TLS connection closed",
                ));
            }
            _ => return Err(io::Error::other("unexpected TLS state (early data)")),
        };
        (discard, step)
    }};
}

impl Side {
    /// One turn over `input`: plaintext read goes to `plain`, protected bytes to `out`; the
    /// turn that reaches the sending state ([`Step::Ready`]) protects `write` into `out`.
    fn turn(
        &mut self,
        input: &mut [u8],
        plain: &mut Vec<u8>,
        out: &mut Vec<u8>,
        write: Emit<'_>,
    ) -> io::Result<(usize, Step)> {
        Ok(match self {
            Side::Client(c) => turn!(c, input, plain, out, write),
            Side::Server(c) => turn!(c, input, plain, out, write),
        })
    }

    fn is_handshaking(&self) -> bool {
        match self {
            Side::Client(c) => c.is_handshaking(),
            Side::Server(c) => c.is_handshaking(),
        }
    }

    fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        match self {
            Side::Client(c) => c.peer_certificates(),
            Side::Server(c) => c.peer_certificates(),
        }
    }
}

impl TlsLink {
    /// Run the client side of the handshake on `tcp` towards `name`.
    pub(crate) async fn connect(
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
        tcp: TcpStream,
    ) -> io::Result<Self> {
        let conn = UnbufferedClientConnection::new(config, name).map_err(tls_err)?;
        Self::handshake(tcp, Side::Client(Box::new(conn))).await
    }

    /// Run the server side of the handshake on `tcp`.
    pub(crate) async fn accept(config: Arc<ServerConfig>, tcp: TcpStream) -> io::Result<Self> {
        let conn = UnbufferedServerConnection::new(config).map_err(tls_err)?;
        Self::handshake(tcp, Side::Server(Box::new(conn))).await
    }

    /// The peer's certificate chain (after the handshake).
    pub(crate) fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.side.peer_certificates()
    }

    async fn handshake(tcp: TcpStream, side: Side) -> io::Result<Self> {
        let mut link = TlsLink {
            tcp,
            side,
            pending: Vec::new(),
            plain: Vec::new(),
            plain_off: 0,
            out: Vec::new(),
            out_off: 0,
            eof: false,
            close_sent: false,
        };
        loop {
            match link.turn_pending(Emit::Nothing) {
                Ok(Step::Again) => continue,
                Ok(Step::Ready) if !link.side.is_handshaking() => {
                    link.write_out().await?;
                    return Ok(link);
                }
                Ok(Step::NeedInput | Step::Ready) => {
                    link.write_out().await?;
                    let n = std::future::poll_fn(|cx| link.poll_fill(cx)).await?;
                    if n == 0 {
                        return Err(ErrorKind::UnexpectedEof.into());
                    }
                }
                Ok(Step::PeerClosed) => return Err(ErrorKind::UnexpectedEof.into()),
                Err(e) => {
                    // Tell the peer why (the alert rustls queued), as far as the socket takes
                    // it at once.
                    let _ = link.turn_pending(Emit::Nothing);
                    let _ = link.tcp.try_write(&link.out[link.out_off..]);
                    return Err(e);
                }
            }
        }
    }

    /// One turn over the pending input, which loses the bytes that are done with.
    fn turn_pending(&mut self, write: Emit<'_>) -> io::Result<Step> {
        let (done, step) =
            self.side
                .turn(&mut self.pending, &mut self.plain, &mut self.out, write)?;
        self.consume_pending(done);
        Ok(step)
    }

    fn consume_pending(&mut self, done: usize) {
        if done >= self.pending.len() {
            self.pending = Vec::new();
        } else if done > 0 {
            self.pending.drain(..done);
        }
    }

    /// Write all of `out` (the handshake's way; afterwards the writer's polls do it).
    async fn write_out(&mut self) -> io::Result<()> {
        self.tcp.write_all(&self.out[self.out_off..]).await?;
        self.out = Vec::new();
        self.out_off = 0;
        Ok(())
    }

    /// Read what has arrived and run the records in it through the state machine (turning
    /// until it needs more input). Returns the bytes read (0: the stream ended).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut scratch = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut rb = ReadBuf::uninit(&mut scratch);
        ready!(Pin::new(&mut self.tcp).poll_read(cx, &mut rb))?;
        let n = rb.filled().len();
        if n == 0 {
            return Poll::Ready(Ok(0));
        }
        if self.pending.is_empty() {
            // The usual case: whole records in the scratch buffer, decrypted from there; only
            // a record cut off at its end is kept.
            let input = rb.filled_mut();
            let mut off = 0;
            let r = loop {
                match self.side.turn(
                    &mut input[off..],
                    &mut self.plain,
                    &mut self.out,
                    Emit::Nothing,
                ) {
                    Ok((done, step)) => {
                        off += done;
                        match step {
                            Step::Again => {}
                            Step::PeerClosed => {
                                self.eof = true;
                                break Ok(());
                            }
                            Step::NeedInput | Step::Ready => break Ok(()),
                        }
                    }
                    Err(e) => break Err(e),
                }
            };
            if off < n {
                self.pending.extend_from_slice(&input[off..]);
            }
            r?;
        } else {
            if self.pending.len() + n > MAX_PENDING {
                return Poll::Ready(Err(io::Error::new(
                    ErrorKind::InvalidData,
                    "TLS record or handshake message too large",
                )));
            }
            self.pending.extend_from_slice(rb.filled());
            loop {
                match self.turn_pending(Emit::Nothing)? {
                    Step::Again => {}
                    Step::PeerClosed => {
                        self.eof = true;
                        break;
                    }
                    Step::NeedInput | Step::Ready => break,
                }
            }
        }
        Poll::Ready(Ok(n))
    }

    /// Write `out` to the socket until it is all gone (then freed).
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_off < self.out.len() {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.out[self.out_off..]))?;
            if n == 0 {
                return Poll::Ready(Err(ErrorKind::WriteZero.into()));
            }
            self.out_off += n;
        }
        self.out = Vec::new();
        self.out_off = 0;
        Poll::Ready(Ok(()))
    }

    /// Hand the socket what it takes of `out` now, without waiting and without taking the
    /// writer's place as the one woken when the socket has room (the reader sends rustls's
    /// own replies, a key update's answer, this way; the writer sends the rest before its
    /// next frame).
    fn try_write_out(&mut self) -> io::Result<()> {
        while self.out_off < self.out.len() {
            match self.tcp.try_write(&self.out[self.out_off..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => self.out_off += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        self.out = Vec::new();
        self.out_off = 0;
        Ok(())
    }
}

impl AsyncRead for TlsLink {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.plain_off < this.plain.len() {
                let n = buf.remaining().min(this.plain.len() - this.plain_off);
                buf.put_slice(&this.plain[this.plain_off..this.plain_off + n]);
                this.plain_off += n;
                if this.plain_off == this.plain.len() {
                    this.plain = Vec::new();
                    this.plain_off = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let n = ready!(this.poll_fill(cx))?;
            if !this.out.is_empty() {
                this.try_write_out()?;
            }
            if n == 0 {
                // The stream ended without close_notify: the data may have been cut short.
                this.eof = true;
                return Poll::Ready(Err(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "peer closed the connection without sending TLS close_notify",
                )));
            }
        }
    }
}

impl AsyncWrite for TlsLink {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // What was queued before goes first (and holds the writer back while the peer does
        // not read).
        ready!(this.poll_write_out(cx))?;
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        loop {
            match this.turn_pending(Emit::Data(data))? {
                Step::Ready => break,
                Step::Again | Step::PeerClosed => {}
                Step::NeedInput => {
                    return Poll::Ready(Err(io::Error::new(
                        ErrorKind::NotConnected,
                        "TLS handshake not finished",
                    )));
                }
            }
        }
        // Sent as far as the socket takes it now; `poll_flush` (or the next write) the rest.
        let _ = this.poll_write_out(cx)?;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_sent {
            this.close_sent = true;
            // Best effort: a connection rustls already counts as closed sends nothing more.
            for _ in 0..4 {
                match this.turn_pending(Emit::CloseNotify) {
                    Ok(Step::Again | Step::PeerClosed) => {}
                    Ok(_) | Err(_) => break,
                }
            }
        }
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}
