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
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};

use tokio::net::UdpSocket;

/// Errors of the media transport.
#[derive(Debug, thiserror::Error)]
pub enum RtpError {
    #[error("no free RTP port pair in {min}-{max} on {ip}")]
    NoFreePorts { ip: IpAddr, min: u16, max: u16 },
}

/// Hands out RTP/RTCP port pairs from an even-numbered range, round robin so a
/// port just released is not reused at once (late packets of the old call).
#[derive(Debug)]
pub struct PortPool {
    min: u16,
    max: u16,
    next: AtomicU16,
}

/// A call's RTP and RTCP sockets.
#[derive(Debug)]
pub struct RtpPorts {
    pub rtp: UdpSocket,
    pub rtcp: UdpSocket,
}

impl PortPool {
    /// `min` is rounded up to even; the last pair is the one whose RTCP port fits below `max`.
    pub fn new(min: u16, max: u16) -> PortPool {
        let min = min + (min % 2);
        PortPool {
            min,
            max,
            next: AtomicU16::new(min),
        }
    }

    fn pairs(&self) -> u16 {
        (self.max.saturating_sub(self.min).saturating_add(1)) / 2
    }

    /// Binds the next free pair on `ip`.
    pub async fn allocate(&self, ip: IpAddr) -> Result<RtpPorts, RtpError> {
        let pairs = self.pairs();
        for _ in 0..pairs {
            let port = self.next_port();
            let Ok(rtp) = UdpSocket::bind((ip, port)).await else {
                continue;
            };
            let Ok(rtcp) = UdpSocket::bind((ip, port + 1)).await else {
                continue;
            };
            return Ok(RtpPorts { rtp, rtcp });
        }
        Err(RtpError::NoFreePorts {
            ip,
            min: self.min,
            max: self.max,
        })
    }

    fn next_port(&self) -> u16 {
        let pairs = self.pairs().max(1);
        let mut current = self.next.load(Ordering::Relaxed);
        loop {
            let index = (current.wrapping_sub(self.min) / 2 + 1) % pairs;
            let following = self.min + index * 2;
            match self.next.compare_exchange_weak(
                current,
                following,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return current,
                Err(seen) => current = seen,
            }
        }
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
    pub relayed_packets: AtomicU64,
    pub relayed_bytes: AtomicU64,
}

impl RtpTotals {
    pub fn received(&self, bytes: usize) {
        self.packets_in.fetch_add(1, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
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
    pub dropped_source: AtomicU64,
    pub dropped_malformed: AtomicU64,
    pub rtcp_packets: AtomicU64,
}

/// What to do with an inbound datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// From the peer: use it. `latched` is true for the packet that fixed the peer's address.
    Accept { latched: bool },
    /// From somewhere else, or not RTP.
    Drop,
}

/// Symmetric RTP: the first valid packet fixes where the peer really is; later
/// packets from other sources are dropped (media injection, stray streams).
#[derive(Debug, Clone, Default)]
pub struct Latch {
    peer: Option<SocketAddr>,
}

impl Latch {
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// Judges a datagram from `source`; `packet` must look like RTP version 2.
    pub fn judge(&mut self, source: SocketAddr, packet: &[u8], stats: &InboundStats) -> Verdict {
        if packet.len() < HEADER_LEN || packet[0] >> 6 != 2 {
            stats.dropped_malformed.fetch_add(1, Ordering::Relaxed);
            return Verdict::Drop;
        }
        match self.peer {
            Some(peer) if peer == source => {}
            Some(_) => {
                stats.dropped_source.fetch_add(1, Ordering::Relaxed);
                return Verdict::Drop;
            }
            None => {
                self.peer = Some(source);
                stats.packets.fetch_add(1, Ordering::Relaxed);
                stats
                    .bytes
                    .fetch_add(packet.len() as u64, Ordering::Relaxed);
                return Verdict::Accept { latched: true };
            }
        }
        stats.packets.fetch_add(1, Ordering::Relaxed);
        stats
            .bytes
            .fetch_add(packet.len() as u64, Ordering::Relaxed);
        Verdict::Accept { latched: false }
    }

    /// Forget the peer (after a re-INVITE moved the media).
    pub fn reset(&mut self) {
        self.peer = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn latch_fixes_the_first_source_and_drops_the_rest() {
        let stats = InboundStats::default();
        let mut latch = Latch::default();
        let mut s = OutgoingStream::new();
        let mut buf = [0u8; 200];
        let n = s.write_packet(0, &[0; 160], 160, &mut buf);
        let nat: SocketAddr = "203.0.113.5:40000".parse().unwrap();
        let other: SocketAddr = "198.51.100.9:5004".parse().unwrap();
        assert_eq!(
            latch.judge(nat, &buf[..n], &stats),
            Verdict::Accept { latched: true }
        );
        assert_eq!(
            latch.judge(nat, &buf[..n], &stats),
            Verdict::Accept { latched: false }
        );
        assert_eq!(latch.judge(other, &buf[..n], &stats), Verdict::Drop);
        assert_eq!(latch.judge(nat, b"junk", &stats), Verdict::Drop);
        assert_eq!(latch.peer(), Some(nat));
        assert_eq!(stats.packets.load(Ordering::Relaxed), 2);
        assert_eq!(stats.dropped_source.load(Ordering::Relaxed), 1);
        assert_eq!(stats.dropped_malformed.load(Ordering::Relaxed), 1);
    }
}
