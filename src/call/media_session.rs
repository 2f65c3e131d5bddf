//! A call's media as its actor sees it: the RTP/RTCP ports, the negotiated
//! codec, the paced outgoing stream, and the inbound side (latching, DTMF).
//!
//! SDP text comes and goes through here so the session version grows with each
//! answer or offer hotline sends in the dialog (RFC 3264 §8).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::media::MediaRoom;
use crate::media::dtmf::{EventDetector, InbandDetector};
use crate::media::g711::Codec;
use crate::media::pacer::{MediaEvent, StreamHandle};
use crate::media::rtp::{InboundStats, Latch, RtpError, RtpTotals, Verdict};
use crate::media::sdp::{self, Direction, Negotiated, SdpError, SessionDescription};

/// Samples of one decoded frame the in-band detector reads at most.
const PCM_BUF_LEN: usize = 2048;

/// How a digit reached hotline.
pub type DigitSource = &'static str;

/// A leg's RTP socket: watched by the runtime while the call reads it, or
/// parked (handed to a media loop, out of the runtime's readiness set, so a
/// packet the loop reads wakes nothing here).
pub struct RtpSocket {
    watched: Option<Arc<UdpSocket>>,
    local: Option<SocketAddr>,
}

impl RtpSocket {
    /// The socket to read from, while the call reads it.
    pub fn watched(&self) -> Option<Arc<UdpSocket>> {
        self.watched.clone()
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.local
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::AddrNotAvailable))
    }

    /// The next datagram; never, while parked.
    pub async fn recv_from(&self, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
        match &self.watched {
            Some(socket) => socket.recv_from(buf).await,
            None => std::future::pending().await,
        }
    }

    pub fn try_send_to(&self, buf: &[u8], target: SocketAddr) -> std::io::Result<usize> {
        match &self.watched {
            Some(socket) => socket.try_send_to(buf, target),
            None => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    /// The socket for a media loop: the socket itself, taken out of the
    /// runtime's readiness set, when nothing else holds it; else a clone
    /// (the same port; the runtime still sees its readiness).
    fn park(&mut self) -> std::io::Result<std::net::UdpSocket> {
        let Some(socket) = self.watched.take() else {
            return Err(std::io::ErrorKind::NotConnected.into());
        };
        match Arc::try_unwrap(socket) {
            Ok(socket) => socket.into_std(),
            Err(shared) => {
                use std::os::fd::AsFd;
                let clone = shared.as_fd().try_clone_to_owned();
                self.watched = Some(shared);
                Ok(std::net::UdpSocket::from(clone?))
            }
        }
    }

    /// The socket back from a media loop: watched again when it was parked
    /// (a clone is just closed).
    fn unpark(&mut self, socket: std::net::UdpSocket) -> std::io::Result<()> {
        if self.watched.is_none() {
            self.watched = Some(Arc::new(UdpSocket::from_std(socket)?));
        }
        Ok(())
    }
}

pub struct MediaSession {
    pub rtp: RtpSocket,
    pub rtcp: UdpSocket,
    /// The address written into our SDP.
    pub advertised: SocketAddr,
    pub stream: StreamHandle,
    pub events: mpsc::UnboundedReceiver<MediaEvent>,
    negotiated: Option<Negotiated>,
    latch: Latch,
    /// How long after an offer/answer a NAT'd peer's real source may latch.
    latch_window: Duration,
    /// Where the peer's SIP comes from, when known.
    signalling: Option<IpAddr>,
    /// Inbound packets when the silence clock last looked, and since when
    /// no packet came while one was due.
    heard: (u64, Instant),
    pub stats: Arc<InboundStats>,
    totals: Arc<RtpTotals>,
    rfc4733: EventDetector,
    inband: InbandDetector,
    /// The call is collecting keys (IVR, a callback number, the callback
    /// key): only then are in-band tones looked for.
    digits_wanted: bool,
    /// The decoded frame the in-band detector reads: room is made at the
    /// first frame looked at, and given back when keys stop mattering.
    pcm: Vec<i16>,
    session_id: u64,
    version: u64,
}

impl MediaSession {
    /// Takes a port pair from the pool; `advertise` replaces the local IP in SDP
    /// (behind NAT).
    pub async fn open(
        room: &MediaRoom,
        ip: IpAddr,
        advertise: Option<IpAddr>,
    ) -> Result<MediaSession, RtpError> {
        let ports = room.ports.allocate(ip).await?;
        let local = ports
            .rtp
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::new(ip, 0));
        let socket = Arc::new(ports.rtp);
        let (events_tx, events) = mpsc::unbounded_channel();
        let stream = room
            .pacer
            .add_stream(socket.clone(), Codec::Pcmu, 0, events_tx);
        let rtp = RtpSocket {
            local: socket.local_addr().ok(),
            watched: Some(socket),
        };
        Ok(MediaSession {
            rtp,
            rtcp: ports.rtcp,
            advertised: SocketAddr::new(advertise.unwrap_or(ip), local.port()),
            stream,
            events,
            negotiated: None,
            latch: Latch::default(),
            latch_window: room.latch_window,
            signalling: None,
            heard: (0, Instant::now()),
            stats: Arc::default(),
            totals: room.rtp.clone(),
            rfc4733: EventDetector::default(),
            inband: InbandDetector::new(),
            digits_wanted: true,
            pcm: Vec::new(),
            session_id: u64::from(rand::random::<u32>()),
            version: 0,
        })
    }

    /// The peer's SIP comes from `ip`: a NAT'd peer's media may too.
    pub fn set_signalling(&mut self, ip: Option<IpAddr>) {
        self.signalling = ip;
    }

    fn next_local(&mut self) -> sdp::Local {
        self.version += 1;
        sdp::Local {
            addr: self.advertised.ip(),
            port: self.advertised.port(),
            session_id: self.session_id,
            version: self.session_id + self.version,
        }
    }

    /// Answers an offer and starts using what was agreed.
    pub fn answer(&mut self, offer: &SessionDescription) -> Result<String, SdpError> {
        let local = self.next_local();
        let (negotiated, text) = sdp::answer(offer, &local, &[Codec::Pcmu, Codec::Pcma])?;
        self.apply(negotiated);
        Ok(text)
    }

    /// Our own offer (delayed-offer INVITE), sendrecv.
    pub fn offer(&mut self) -> String {
        let local = self.next_local();
        sdp::offer(&local, Direction::SendRecv)
    }

    /// An offer that repeats what was agreed (a session refresh by
    /// re-INVITE): the same direction, so a held call stays held.
    pub fn refresh_offer(&mut self) -> String {
        let direction = self
            .negotiated
            .as_ref()
            .map_or(Direction::SendRecv, |n| n.direction);
        let local = self.next_local();
        sdp::offer(&local, direction)
    }

    /// The peer's answer to our offer.
    pub fn accept_answer(&mut self, answer: &SessionDescription) -> Result<(), SdpError> {
        let negotiated = sdp::accept_answer(answer)?;
        self.apply(negotiated);
        Ok(())
    }

    fn apply(&mut self, negotiated: Negotiated) {
        self.stream
            .set_codec(negotiated.codec, negotiated.payload_type);
        self.latch.expect(
            negotiated.remote,
            self.signalling,
            Instant::now(),
            self.latch_window,
        );
        self.negotiated = Some(negotiated);
        // Whether a packet is due changed: the silence clock starts again.
        self.heard = (self.packets_in(), Instant::now());
        self.stream.set_remote(self.remote());
    }

    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// Whether the call is on hold (we must not send).
    pub fn on_hold(&self) -> bool {
        self.negotiated.as_ref().is_none_or(|n| {
            n.remote.is_none() || matches!(n.direction, Direction::RecvOnly | Direction::Inactive)
        })
    }

    /// Where our RTP goes now: the latched source, else the SDP's address
    /// (unless the peer is behind NAT: it is not reachable there, so
    /// nothing goes out before its packets show where it is); `None` while
    /// the peer holds.
    pub fn remote(&self) -> Option<SocketAddr> {
        if self.on_hold() {
            return None;
        }
        self.latch
            .peer()
            .or_else(|| self.latch.expected().filter(|_| !self.latch.behind_nat()))
    }

    /// Whether the peer is due to send us media: both directions are on
    /// (no hold, no sendonly/recvonly/inactive) and it has an address.
    pub fn expects_media(&self) -> bool {
        self.negotiated
            .as_ref()
            .is_some_and(|n| n.direction == Direction::SendRecv && n.remote.is_some())
    }

    /// The silence clock starts again at `now` (the call is on hold: the
    /// peer owes us nothing meanwhile).
    pub fn excuse_silence(&mut self, now: Instant) {
        self.heard = (self.packets_in(), now);
    }

    /// How long the peer has sent nothing while it was due to; zero when
    /// it is not due to send. Cheap: compares the packet counter with the
    /// one seen at the last look, so looking every few seconds is enough.
    pub fn silent_for(&mut self, now: Instant) -> Duration {
        let packets = self.packets_in();
        if !self.expects_media() || packets != self.heard.0 {
            self.heard = (packets, now);
        }
        now.saturating_duration_since(self.heard.1)
    }

    /// Takes one inbound RTP datagram: whether it was accepted (from the
    /// peer, well formed), and a digit when one completes.
    pub fn on_rtp(
        &mut self,
        source: SocketAddr,
        packet: &[u8],
    ) -> (bool, Option<(char, DigitSource)>) {
        if !self.accept(source, packet) {
            return (false, None);
        }
        (true, self.detect_digit(packet))
    }

    /// Latches and counts one inbound RTP datagram without looking for
    /// digits (an agent's keys are not hotline's business); whether it was
    /// accepted.
    pub fn accept(&mut self, source: SocketAddr, packet: &[u8]) -> bool {
        match self.latch.judge(source, packet, &self.stats, Instant::now) {
            Verdict::Drop(reason) => {
                self.totals.dropped(reason);
                return false;
            }
            Verdict::Accept { latched: true } if !self.on_hold() => {
                self.stream.set_remote(Some(source));
            }
            Verdict::Accept { .. } => {}
        }
        self.totals.received(packet.len());
        true
    }

    /// Whether the call now collects keys. RFC 4733 events are always read
    /// (they cost nothing when none come); the in-band detector, which
    /// decodes and filters every audio frame, runs only while keys matter.
    pub fn want_digits(&mut self, wanted: bool) {
        if wanted && !self.digits_wanted {
            // A tone from before does not complete a key now.
            self.inband = InbandDetector::new();
        } else if !wanted && self.digits_wanted {
            // Decoded audio is only needed while keys are looked for.
            self.pcm = Vec::new();
        }
        self.digits_wanted = wanted;
    }

    fn detect_digit(&mut self, packet: &[u8]) -> Option<(char, DigitSource)> {
        let reader = rtp_rs::RtpReader::new(packet).ok()?;
        let negotiated = self.negotiated.as_ref()?;
        let pt = reader.payload_type();
        if Some(pt) == negotiated.telephone_event {
            return self
                .rfc4733
                .on_packet(reader.timestamp(), reader.mark(), reader.payload())
                .map(|d| (d, "rfc4733"));
        }
        if self.digits_wanted
            && negotiated.telephone_event.is_none()
            && pt == negotiated.payload_type
        {
            let payload = reader.payload();
            if self.pcm.is_empty() {
                self.pcm = vec![0; PCM_BUF_LEN];
            }
            let n = payload.len().min(self.pcm.len());
            negotiated.codec.decode(&payload[..n], &mut self.pcm[..n]);
            return self.inband.push(&self.pcm[..n]).map(|d| (d, "inband"));
        }
        None
    }

    /// The RTP socket for a media loop (see [`RtpSocket`]); the call reads
    /// nothing from it until [`MediaSession::unpark_rtp`].
    pub fn park_rtp(&mut self) -> std::io::Result<std::net::UdpSocket> {
        self.rtp.park()
    }

    /// The RTP socket back from a media loop.
    pub fn unpark_rtp(&mut self, socket: std::net::UdpSocket) -> std::io::Result<()> {
        self.rtp.unpark(socket)
    }

    /// The inbound latch, as a media loop starts from it.
    pub fn latch(&self) -> &Latch {
        &self.latch
    }

    /// The latch a media loop hands back (the peer's source may have
    /// latched meanwhile): our own stream follows it.
    pub fn restore_latch(&mut self, latch: Latch) {
        let before = self.remote();
        self.latch = latch;
        if self.remote() != before {
            self.stream.set_remote(self.remote());
        }
    }

    /// The RFC 4733 detector, lent to a media loop with the bridge.
    pub fn take_key_detector(&mut self) -> EventDetector {
        std::mem::take(&mut self.rfc4733)
    }

    /// The detector back from a media loop (a key may be half pressed).
    pub fn restore_key_detector(&mut self, detector: EventDetector) {
        self.rfc4733 = detector;
    }

    /// Counts a packet the bridge relayed out of this session's socket.
    pub fn relayed(&self, bytes: usize) {
        self.totals.relayed(bytes);
    }

    pub fn on_rtcp(&self) {
        self.stats.rtcp_packets.fetch_add(1, Ordering::Relaxed);
    }

    pub fn packets_in(&self) -> u64 {
        self.stats.packets.load(Ordering::Relaxed)
    }

    pub fn dropped(&self) -> u64 {
        self.stats.dropped_source.load(Ordering::Relaxed)
            + self.stats.dropped_malformed.load(Ordering::Relaxed)
            + self.stats.dropped_unconfirmed.load(Ordering::Relaxed)
    }
}
