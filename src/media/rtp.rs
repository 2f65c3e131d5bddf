//! RTP endpoints of calls: the port pool, the outgoing stream's numbering, and
//! the inbound side's source latching.
//!
//! Each call gets an even RTP port and the odd RTCP port above it from a
//! configured range. Outgoing packets keep one SSRC per stream, sequence numbers
//! that grow by one per packet and timestamps that follow the 8 kHz clock, also
//! across prompt boundaries and silent gaps. Inbound packets latch the peer's
//! real address (symmetric RTP, for callers behind NAT); packets from anywhere
//! else are dropped and counted.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

/// Errors of the media transport.
#[derive(Debug, thiserror::Error)]
pub enum RtpError {
    #[error("no free RTP port pair in {min}-{max} on {ip}")]
    NoFreePorts { ip: IpAddr, min: u16, max: u16 },
}

/// Hands out RTP/RTCP port pairs from an even-numbered range at random, so
/// the next call's ports cannot be guessed from the last one's and a port
/// just released is rarely reused at once (late packets of the old call).
#[derive(Debug)]
pub struct PortPool {
    min: u16,
    max: u16,
}

/// A call's RTP and RTCP sockets.
#[derive(Debug)]
pub struct RtpPorts {
    pub rtp: UdpSocket,
    pub rtcp: UdpSocket,
}

/// Random picks before the pool walks the range from a random pair (a
/// nearly full range).
const RANDOM_TRIES: u16 = 16;

impl PortPool {
    /// `min` is rounded up to even; the last pair is the one whose RTCP port fits below `max`.
    pub fn new(min: u16, max: u16) -> PortPool {
        let min = min.saturating_add(min % 2);
        PortPool { min, max }
    }

    fn pairs(&self) -> u16 {
        (self.max.saturating_sub(self.min).saturating_add(1)) / 2
    }

    /// Binds a free pair on `ip`, chosen at random.
    pub async fn allocate(&self, ip: IpAddr) -> Result<RtpPorts, RtpError> {
        let pairs = self.pairs();
        if pairs > 0 {
            let start = rand::random_range(0..pairs);
            let random = (0..RANDOM_TRIES.min(pairs)).map(|_| rand::random_range(0..pairs));
            let walk = (0..pairs).map(|i| (start + i) % pairs);
            for index in random.chain(walk) {
                let port = self.min + index * 2;
                let Ok(rtp) = UdpSocket::bind((ip, port)).await else {
                    continue;
                };
                let Ok(rtcp) = UdpSocket::bind((ip, port + 1)).await else {
                    continue;
                };
                return Ok(RtpPorts { rtp, rtcp });
            }
        }
        Err(RtpError::NoFreePorts {
            ip,
            min: self.min,
            max: self.max,
        })
    }
}

/// Numbering of one outgoing stream.
#[derive(Debug, Clone)]
pub struct OutgoingStream {
    pub ssrc: u32,
    seq: u16,
    timestamp: u32,
    /// The next packet starts a talkspurt (RFC 3551 §4.1: set the marker bit).
    marker: bool,
}

/// RTP header length without CSRCs or extensions.
pub const HEADER_LEN: usize = 12;

/// Sends one datagram now, whatever tokio's readiness cache says. A socket
/// bound a moment ago is writable before the I/O driver has polled its
/// registration, and `try_send_to` would drop the packet meanwhile; a UDP
/// send never waits, so the plain system call is the right one.
pub fn send_now(socket: &UdpSocket, packet: &[u8], to: SocketAddr) -> std::io::Result<usize> {
    socket2::SockRef::from(socket).send_to(packet, &to.into())
}

impl OutgoingStream {
    /// A stream with a random SSRC, sequence number and timestamp (RFC 3550 §5.1).
    pub fn new() -> OutgoingStream {
        OutgoingStream {
            ssrc: rand::random(),
            seq: rand::random(),
            timestamp: rand::random(),
            marker: true,
        }
    }

    /// Writes one packet (header + payload) into `out` and advances the numbering by
    /// one packet of `samples` samples. Returns the packet length.
    pub fn write_packet(
        &mut self,
        payload_type: u8,
        payload: &[u8],
        samples: u32,
        out: &mut [u8],
    ) -> usize {
        let len = HEADER_LEN + payload.len();
        if out.len() < len {
            return 0;
        }
        out[0] = 0x80;
        out[1] = (payload_type & 0x7f) | if self.marker { 0x80 } else { 0 };
        out[2..4].copy_from_slice(&self.seq.to_be_bytes());
        out[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        out[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        out[HEADER_LEN..len].copy_from_slice(payload);
        self.seq = self.seq.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(samples);
        self.marker = false;
        len
    }

    /// Time passes without a packet (silence, hold): the clock still runs, and
    /// the next packet is marked as the start of a talkspurt.
    pub fn skip(&mut self, samples: u32) {
        self.timestamp = self.timestamp.wrapping_add(samples);
        self.marker = true;
    }

    pub fn sequence(&self) -> u16 {
        self.seq
    }

    pub fn timestamp(&self) -> u32 {
        self.timestamp
    }
}

impl Default for OutgoingStream {
    fn default() -> Self {
        Self::new()
    }
}

/// RTP counted over every call since start: what arrived (accepted or
/// dropped) and what the bridge relayed out (the pacer counts its own frames).
#[derive(Debug, Default)]
pub struct RtpTotals {
    pub packets_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub dropped: AtomicU64,
    /// `dropped`, by [`DropReason`].
    pub dropped_foreign: AtomicU64,
    pub dropped_malformed: AtomicU64,
    pub dropped_unconfirmed: AtomicU64,
    pub relayed_packets: AtomicU64,
    pub relayed_bytes: AtomicU64,
}

impl RtpTotals {
    pub fn received(&self, bytes: usize) {
        self.packets_in.fetch_add(1, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn dropped(&self, reason: DropReason) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        let counter = match reason {
            DropReason::ForeignSource => &self.dropped_foreign,
            DropReason::Malformed => &self.dropped_malformed,
            DropReason::Unconfirmed => &self.dropped_unconfirmed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn relayed(&self, bytes: usize) {
        self.relayed_packets.fetch_add(1, Ordering::Relaxed);
        self.relayed_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// Counters of one call's inbound media.
#[derive(Debug, Default)]
pub struct InboundStats {
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    /// From a source other than the latched peer (or, before the latch, one
    /// that may not take it).
    pub dropped_source: AtomicU64,
    pub dropped_malformed: AtomicU64,
    /// From a NAT'd peer's candidate source before its SSRC was confirmed.
    pub dropped_unconfirmed: AtomicU64,
    pub rtcp_packets: AtomicU64,
}

impl InboundStats {
    /// Adds these counts into `shared` and starts them again from zero
    /// (a media loop counts each packet in a leg of its own and publishes
    /// now and then, rather than touching the shared counters per packet).
    pub fn move_into(&self, shared: &InboundStats) {
        let pairs = [
            (&self.packets, &shared.packets),
            (&self.bytes, &shared.bytes),
            (&self.dropped_source, &shared.dropped_source),
            (&self.dropped_malformed, &shared.dropped_malformed),
            (&self.dropped_unconfirmed, &shared.dropped_unconfirmed),
            (&self.rtcp_packets, &shared.rtcp_packets),
        ];
        for (local, shared) in pairs {
            if local.load(Ordering::Relaxed) > 0 {
                shared.fetch_add(local.swap(0, Ordering::Relaxed), Ordering::Relaxed);
            }
        }
    }
}

/// Why an inbound datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Not from the peer: another source after the latch, or one that may
    /// not take it (outside the window, not behind the peer's NAT).
    ForeignSource,
    /// Not RTP version 2.
    Malformed,
    /// A candidate for a NAT'd peer's source whose SSRC is not yet confirmed.
    Unconfirmed,
}

impl DropReason {
    /// The `reason` label of the drop counter.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::ForeignSource => "foreign_source",
            DropReason::Malformed => "malformed",
            DropReason::Unconfirmed => "unconfirmed_source",
        }
    }
}

/// What to do with an inbound datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// From the peer: use it. `latched` is true for the packet that fixed the peer's address.
    Accept { latched: bool },
    /// From somewhere else, or not RTP.
    Drop(DropReason),
}

/// Packets in a row, from one source with one SSRC, that make a NAT'd
/// peer's real address.
pub const CONFIRM_PACKETS: u32 = 3;

/// Whether an address is one a peer behind NAT would write into its SDP:
/// private, shared (carrier-grade NAT), link-local or unspecified.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_unspecified() || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
        }
    }
}

/// Where a leg's RTP may come from. The address of the peer's SDP always
/// takes the latch. Another source takes it only when the peer looks
/// NAT'd (its SDP address is private and is not where its SIP came from),
/// only from the IP its SIP came from, only within a window after the
/// offer/answer, and only after [`CONFIRM_PACKETS`] packets in a row with
/// one SSRC. Once latched, every other source is dropped: whoever sprays
/// the RTP ports neither hijacks the stream nor gets its audio.
#[derive(Debug, Clone, Default)]
pub struct Latch {
    peer: Option<SocketAddr>,
    /// The address the peer's SDP gave.
    expected: Option<SocketAddr>,
    /// Set when the peer looks NAT'd: the IP its packets may come from
    /// instead (where its SIP came from), and until when.
    nat: Option<(IpAddr, Instant)>,
    /// A NAT'd peer's candidate source, its SSRC, and packets seen in a row.
    candidate: Option<(SocketAddr, u32, u32)>,
}

impl Latch {
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// Where the peer's SDP says its media is.
    pub fn expected(&self) -> Option<SocketAddr> {
        self.expected
    }

    /// Whether the peer looks NAT'd (its packets may come from elsewhere).
    pub fn behind_nat(&self) -> bool {
        self.nat.is_some()
    }

    /// A new offer/answer says the peer's media is at `remote`; its SIP came
    /// from `signalling` (if known). A changed address forgets the latch;
    /// a NAT'd peer may latch another source until `now + window`.
    pub fn expect(
        &mut self,
        remote: Option<SocketAddr>,
        signalling: Option<IpAddr>,
        now: Instant,
        window: Duration,
    ) {
        if remote != self.expected {
            self.peer = None;
            self.candidate = None;
        }
        self.expected = remote;
        self.nat = match (remote, signalling) {
            (Some(remote), Some(signalling))
                if self.peer.is_none() && is_private(remote.ip()) && remote.ip() != signalling =>
            {
                Some((signalling, now + window))
            }
            _ => None,
        };
    }

    /// Judges a datagram from `source`; `packet` must look like RTP version 2.
    /// `now` is asked only for a candidate source of a NAT'd peer.
    #[inline]
    pub fn judge(
        &mut self,
        source: SocketAddr,
        packet: &[u8],
        stats: &InboundStats,
        now: impl FnOnce() -> Instant,
    ) -> Verdict {
        if packet.len() < HEADER_LEN || packet[0] >> 6 != 2 {
            stats.dropped_malformed.fetch_add(1, Ordering::Relaxed);
            return Verdict::Drop(DropReason::Malformed);
        }
        // Every packet of a live call takes one of the first two arms.
        let latched = match self.peer {
            Some(peer) if peer == source => false,
            Some(_) if self.expected.is_none_or(|e| e != source) => {
                stats.dropped_source.fetch_add(1, Ordering::Relaxed);
                return Verdict::Drop(DropReason::ForeignSource);
            }
            _ => match self.latch_new_source(source, packet, now) {
                Ok(()) => true,
                Err(reason) => {
                    let counter = match reason {
                        DropReason::Unconfirmed => &stats.dropped_unconfirmed,
                        _ => &stats.dropped_source,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    return Verdict::Drop(reason);
                }
            },
        };
        stats.packets.fetch_add(1, Ordering::Relaxed);
        stats
            .bytes
            .fetch_add(packet.len() as u64, Ordering::Relaxed);
        Verdict::Accept { latched }
    }

    /// A source that is not the latched peer, where the latch may move:
    /// the SDP address takes it at once, a NAT'd peer's real source once
    /// confirmed; Ok when `source` latched.
    #[cold]
    fn latch_new_source(
        &mut self,
        source: SocketAddr,
        packet: &[u8],
        now: impl FnOnce() -> Instant,
    ) -> Result<(), DropReason> {
        if self.expected == Some(source) {
            self.peer = Some(source);
            self.nat = None;
            self.candidate = None;
            return Ok(());
        }
        self.nat_candidate(source, packet, now)
    }

    /// A packet from elsewhere than the SDP address, before any latch: Ok
    /// when it confirms a NAT'd peer's source (and latched it).
    fn nat_candidate(
        &mut self,
        source: SocketAddr,
        packet: &[u8],
        now: impl FnOnce() -> Instant,
    ) -> Result<(), DropReason> {
        let Some((signalling, until)) = self.nat else {
            return Err(DropReason::ForeignSource);
        };
        if source.ip() != signalling || now() > until {
            return Err(DropReason::ForeignSource);
        }
        let ssrc = u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]);
        let seen = match self.candidate {
            Some((at, same, seen)) if at == source && same == ssrc => seen + 1,
            _ => 1,
        };
        if seen < CONFIRM_PACKETS {
            self.candidate = Some((source, ssrc, seen));
            return Err(DropReason::Unconfirmed);
        }
        self.candidate = None;
        self.nat = None;
        self.peer = Some(source);
        Ok(())
    }

    /// Forget the peer (the media went away).
    pub fn reset(&mut self) {
        self.peer = None;
        self.candidate = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_moved_into_the_shared_counters_start_again_from_zero() {
        let (local, shared) = (InboundStats::default(), InboundStats::default());
        shared.packets.store(10, Ordering::Relaxed);
        local.packets.store(3, Ordering::Relaxed);
        local.bytes.store(516, Ordering::Relaxed);
        local.dropped_unconfirmed.store(2, Ordering::Relaxed);
        local.move_into(&shared);
        local.packets.store(1, Ordering::Relaxed);
        local.move_into(&shared);
        assert_eq!(shared.packets.load(Ordering::Relaxed), 14);
        assert_eq!(shared.bytes.load(Ordering::Relaxed), 516);
        assert_eq!(shared.dropped_unconfirmed.load(Ordering::Relaxed), 2);
        assert_eq!(shared.dropped_source.load(Ordering::Relaxed), 0);
        assert_eq!(local.packets.load(Ordering::Relaxed), 0);
        assert_eq!(local.bytes.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn pool_hands_out_even_rtp_with_rtcp_above_and_skips_busy_ports() {
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let base = probe.local_addr().unwrap().port() & !1;
        drop(probe);
        let pool = PortPool::new(base, base + 5);
        let ip = IpAddr::from([127, 0, 0, 1]);
        let a = pool.allocate(ip).await.unwrap();
        let pa = a.rtp.local_addr().unwrap().port();
        assert_eq!(pa % 2, 0);
        assert_eq!(a.rtcp.local_addr().unwrap().port(), pa + 1);
        let b = pool.allocate(ip).await.unwrap();
        let c = pool.allocate(ip).await.unwrap();
        let ports = [
            pa,
            b.rtp.local_addr().unwrap().port(),
            c.rtp.local_addr().unwrap().port(),
        ];
        assert!(ports.iter().all(|p| (base..=base + 4).contains(p)));
        assert_ne!(ports[0], ports[1]);
        assert_ne!(ports[1], ports[2]);
        // the range holds three pairs, all busy now
        assert!(matches!(
            pool.allocate(ip).await,
            Err(RtpError::NoFreePorts { .. })
        ));
        drop(b);
        assert!(pool.allocate(ip).await.is_ok());
    }

    #[tokio::test]
    async fn ports_are_picked_at_random_not_in_sequence() {
        let pool = PortPool::new(40000, 40399);
        let ip = IpAddr::from([127, 0, 0, 1]);
        let mut ports = Vec::new();
        for _ in 0..12 {
            let pair = pool.allocate(ip).await.unwrap();
            ports.push(pair.rtp.local_addr().unwrap().port());
            // released at once: a sequential pool would hand out the next
        }
        assert!(
            ports
                .iter()
                .all(|p| p % 2 == 0 && (40000..40400).contains(p))
        );
        let steps_of_two = ports.windows(2).filter(|w| w[1] == w[0] + 2).count();
        assert!(steps_of_two < 3, "ports follow each other: {ports:?}");
        let distinct: std::collections::HashSet<_> = ports.iter().collect();
        assert!(distinct.len() > 8, "ports repeat: {ports:?}");
    }

    #[test]
    fn packets_carry_continuous_numbering_and_mark_talkspurts() {
        let mut s = OutgoingStream::new();
        let (seq0, ts0) = (s.sequence(), s.timestamp());
        let mut buf = [0u8; 200];
        let n = s.write_packet(0, &[0xff; 160], 160, &mut buf);
        assert_eq!(n, 172);
        let r = rtp_rs::RtpReader::new(&buf[..n]).unwrap();
        assert_eq!(r.version(), 2);
        assert!(r.mark());
        assert_eq!(r.payload_type(), 0);
        assert_eq!(u16::from(r.sequence_number()), seq0);
        assert_eq!(r.timestamp(), ts0);
        assert_eq!(r.ssrc(), s.ssrc);
        assert_eq!(r.payload(), &[0xff; 160][..]);
        let n = s.write_packet(8, &[0xd5; 160], 160, &mut buf);
        let r = rtp_rs::RtpReader::new(&buf[..n]).unwrap();
        assert!(!r.mark());
        assert_eq!(u16::from(r.sequence_number()), seq0.wrapping_add(1));
        assert_eq!(r.timestamp(), ts0.wrapping_add(160));
        s.skip(160 * 50);
        let n = s.write_packet(0, &[0xff; 160], 160, &mut buf);
        let r = rtp_rs::RtpReader::new(&buf[..n]).unwrap();
        assert!(r.mark(), "first packet after a gap is marked");
        assert_eq!(
            u16::from(r.sequence_number()),
            seq0.wrapping_add(2),
            "no gap in sequence"
        );
        assert_eq!(
            r.timestamp(),
            ts0.wrapping_add(160 * 52),
            "the clock ran on"
        );
    }

    fn rtp_packet(ssrc: u32) -> Vec<u8> {
        let mut s = OutgoingStream::new();
        s.ssrc = ssrc;
        let mut buf = [0u8; 200];
        let n = s.write_packet(0, &[0; 160], 160, &mut buf);
        buf[..n].to_vec()
    }

    const WINDOW: Duration = Duration::from_secs(2);

    #[test]
    fn only_the_sdp_address_latches_a_peer_that_is_not_behind_nat() {
        let stats = InboundStats::default();
        let mut latch = Latch::default();
        let sdp: SocketAddr = "203.0.113.5:40000".parse().unwrap();
        let sprayer: SocketAddr = "198.51.100.9:5004".parse().unwrap();
        let t0 = Instant::now();
        latch.expect(Some(sdp), Some(sdp.ip()), t0, WINDOW);
        let p = rtp_packet(7);
        // A sprayer that gets there first latches nothing, however steady.
        for _ in 0..10 {
            assert_eq!(
                latch.judge(sprayer, &p, &stats, || t0),
                Verdict::Drop(DropReason::ForeignSource)
            );
        }
        assert_eq!(latch.peer(), None);
        assert_eq!(
            latch.judge(sdp, &p, &stats, || t0),
            Verdict::Accept { latched: true }
        );
        assert_eq!(
            latch.judge(sdp, &p, &stats, || t0),
            Verdict::Accept { latched: false }
        );
        assert_eq!(
            latch.judge(sprayer, &p, &stats, || t0),
            Verdict::Drop(DropReason::ForeignSource)
        );
        assert_eq!(
            latch.judge(sdp, b"junk", &stats, || t0),
            Verdict::Drop(DropReason::Malformed)
        );
        assert_eq!(latch.peer(), Some(sdp));
        assert_eq!(stats.packets.load(Ordering::Relaxed), 2);
        assert_eq!(stats.dropped_source.load(Ordering::Relaxed), 11);
        assert_eq!(stats.dropped_malformed.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_natd_peer_latches_its_real_source_once_its_ssrc_holds_within_the_window() {
        let stats = InboundStats::default();
        let mut latch = Latch::default();
        let sdp: SocketAddr = "192.168.1.20:4000".parse().unwrap();
        let public: IpAddr = "203.0.113.5".parse().unwrap();
        let real = SocketAddr::new(public, 61000);
        let t0 = Instant::now();
        latch.expect(Some(sdp), Some(public), t0, WINDOW);
        assert!(latch.behind_nat());
        // Another host may not take it, nor a changing SSRC.
        let elsewhere: SocketAddr = "198.51.100.9:61000".parse().unwrap();
        for _ in 0..5 {
            assert_eq!(
                latch.judge(elsewhere, &rtp_packet(1), &stats, || t0),
                Verdict::Drop(DropReason::ForeignSource)
            );
        }
        for ssrc in [1, 2, 1, 2] {
            assert_eq!(
                latch.judge(real, &rtp_packet(ssrc), &stats, || t0),
                Verdict::Drop(DropReason::Unconfirmed)
            );
        }
        assert_eq!(latch.peer(), None);
        let p = rtp_packet(9);
        assert_eq!(
            latch.judge(real, &p, &stats, || t0),
            Verdict::Drop(DropReason::Unconfirmed)
        );
        assert_eq!(
            latch.judge(real, &p, &stats, || t0),
            Verdict::Drop(DropReason::Unconfirmed)
        );
        assert_eq!(
            latch.judge(real, &p, &stats, || t0),
            Verdict::Accept { latched: true }
        );
        assert_eq!(latch.peer(), Some(real));
        let other_port = SocketAddr::new(public, 61002);
        assert_eq!(
            latch.judge(other_port, &p, &stats, || t0),
            Verdict::Drop(DropReason::ForeignSource)
        );
    }

    #[test]
    fn after_the_window_a_natd_peer_latches_only_its_sdp_address() {
        let stats = InboundStats::default();
        let mut latch = Latch::default();
        let sdp: SocketAddr = "10.0.0.1:4000".parse().unwrap();
        let real: SocketAddr = "203.0.113.5:61000".parse().unwrap();
        let t0 = Instant::now();
        latch.expect(Some(sdp), Some(real.ip()), t0, WINDOW);
        let late = t0 + WINDOW + Duration::from_millis(1);
        let p = rtp_packet(9);
        for _ in 0..5 {
            assert_eq!(
                latch.judge(real, &p, &stats, || late),
                Verdict::Drop(DropReason::ForeignSource)
            );
        }
        assert_eq!(latch.peer(), None);
    }

    #[test]
    fn a_new_address_in_the_sdp_forgets_the_latch_and_the_same_one_keeps_it() {
        let stats = InboundStats::default();
        let mut latch = Latch::default();
        let first: SocketAddr = "203.0.113.5:40000".parse().unwrap();
        let moved: SocketAddr = "203.0.113.5:40100".parse().unwrap();
        let t0 = Instant::now();
        latch.expect(Some(first), None, t0, WINDOW);
        latch.judge(first, &rtp_packet(1), &stats, || t0);
        latch.expect(Some(first), None, t0, WINDOW);
        assert_eq!(latch.peer(), Some(first));
        latch.expect(Some(moved), None, t0, WINDOW);
        assert_eq!(latch.peer(), None);
        assert_eq!(
            latch.judge(first, &rtp_packet(1), &stats, || t0),
            Verdict::Drop(DropReason::ForeignSource)
        );
    }

    #[test]
    fn private_ranges_are_recognised() {
        for ip in [
            "10.0.0.1",
            "172.16.3.4",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.1.1",
            "0.0.0.0",
            "fd00::1",
            "fe80::1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["127.0.0.1", "203.0.113.5", "100.128.0.1", "2001:db8::1"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    proptest::proptest! {
        /// Whatever a sprayer sends, from wherever, the latch never moves
        /// away from a peer that is not behind NAT once it spoke.
        #[test]
        fn no_foreign_packet_moves_a_latched_peer(
            sources in proptest::collection::vec((proptest::prelude::any::<[u8; 4]>(), 1u16.., proptest::prelude::any::<u32>()), 1..50)
        ) {
            let stats = InboundStats::default();
            let mut latch = Latch::default();
            let peer: SocketAddr = "203.0.113.5:40000".parse().unwrap();
            let t0 = Instant::now();
            latch.expect(Some(peer), Some(peer.ip()), t0, WINDOW);
            latch.judge(peer, &rtp_packet(1), &stats, || t0);
            for (ip, port, ssrc) in sources {
                let source = SocketAddr::from((ip, port));
                let verdict = latch.judge(source, &rtp_packet(ssrc), &stats, || t0);
                proptest::prop_assert_eq!(verdict == Verdict::Drop(DropReason::ForeignSource), source != peer);
                proptest::prop_assert_eq!(latch.peer(), Some(peer));
            }
        }
    }
}
