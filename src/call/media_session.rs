//! A call's media as its actor sees it: the RTP/RTCP ports, the negotiated
//! codec, the paced outgoing stream, and the inbound side (latching, DTMF).
//!
//! SDP text comes and goes through here so the session version grows with each
//! answer or offer hotline sends in the dialog (RFC 3264 §8).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::media::MediaRoom;
use crate::media::dtmf::{EventDetector, InbandDetector};
use crate::media::g711::Codec;
use crate::media::pacer::{MediaEvent, StreamHandle};
use crate::media::rtp::{InboundStats, Latch, RtpError, RtpTotals, Verdict};
use crate::media::sdp::{self, Direction, Negotiated, SdpError, SessionDescription};

/// How a digit reached hotline.
pub type DigitSource = &'static str;

pub struct MediaSession {
    pub rtp: Arc<UdpSocket>,
    pub rtcp: UdpSocket,
    /// The address written into our SDP.
    pub advertised: SocketAddr,
    pub stream: StreamHandle,
    pub events: mpsc::UnboundedReceiver<MediaEvent>,
    negotiated: Option<Negotiated>,
    latch: Latch,
    pub stats: InboundStats,
    totals: Arc<RtpTotals>,
    rfc4733: EventDetector,
    inband: InbandDetector,
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
        let rtp = Arc::new(ports.rtp);
        let (events_tx, events) = mpsc::unbounded_channel();
        let stream = room
            .pacer
            .add_stream(rtp.clone(), Codec::Pcmu, 0, events_tx);
        Ok(MediaSession {
            rtp,
            rtcp: ports.rtcp,
            advertised: SocketAddr::new(advertise.unwrap_or(ip), local.port()),
            stream,
            events,
            negotiated: None,
            latch: Latch::default(),
            stats: InboundStats::default(),
            totals: room.rtp.clone(),
            rfc4733: EventDetector::default(),
            inband: InbandDetector::new(),
            pcm: vec![0; 2048],
            session_id: u64::from(rand::random::<u32>()),
            version: 0,
        })
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

    /// The peer's answer to our offer.
    pub fn accept_answer(&mut self, answer: &SessionDescription) -> Result<(), SdpError> {
        let negotiated = sdp::accept_answer(answer)?;
        self.apply(negotiated);
        Ok(())
    }

    fn apply(&mut self, negotiated: Negotiated) {
        self.stream
            .set_codec(negotiated.codec, negotiated.payload_type);
        let may_send = matches!(
            negotiated.direction,
            Direction::SendRecv | Direction::SendOnly
        );
        let remote = if may_send {
            // Once the peer's packets arrived, their real source wins (NAT).
            self.latch.peer().or(negotiated.remote)
        } else {
            None
        };
        if negotiated.remote.is_none() {
            self.latch.reset();
        }
        self.stream.set_remote(remote);
        self.negotiated = Some(negotiated);
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

    /// Where our RTP goes now: the latched source, else the SDP's address;
    /// `None` while the peer holds.
    pub fn remote(&self) -> Option<SocketAddr> {
        if self.on_hold() {
            return None;
        }
        self.latch
            .peer()
            .or(self.negotiated.as_ref().and_then(|n| n.remote))
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
        // The address the peer's SDP gave always wins the latch: a stray
        // stream (an old call's sender still aiming at a reused port) that
        // arrived first must not hold it.
        if self.negotiated.as_ref().and_then(|n| n.remote) == Some(source)
            && self.latch.peer().is_some_and(|peer| peer != source)
        {
            self.latch.reset();
        }
        match self.latch.judge(source, packet, &self.stats) {
            Verdict::Drop => {
                self.totals.dropped.fetch_add(1, Ordering::Relaxed);
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
        if negotiated.telephone_event.is_none() && pt == negotiated.payload_type {
            let payload = reader.payload();
            let n = payload.len().min(self.pcm.len());
            negotiated.codec.decode(&payload[..n], &mut self.pcm[..n]);
            return self.inband.push(&self.pcm[..n]).map(|d| (d, "inband"));
        }
        None
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
    }
}
