//! The media bridge between a caller and an agent: one RTP packet in from one
//! leg, one packet out to the other, rewritten for the receiving leg's payload
//! types and transcoded PCMU↔PCMA when the legs agreed on different laws.
//!
//! The sender's SSRC, sequence number, timestamp and marker pass through, so
//! the receiver's jitter buffer and loss statistics see the real stream. No
//! allocation: the caller owns the output buffer.

use crate::media::g711::{self, Codec};
use crate::media::rtp::HEADER_LEN;
use crate::media::sdp::Negotiated;

/// Room for the longest packet a leg relays.
pub const RELAY_BUF_LEN: usize = 2048;

/// What one leg agreed to receive and send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegFormat {
    pub codec: Codec,
    pub payload_type: u8,
    pub telephone_event: Option<u8>,
}

#[cfg(test)]
impl LegFormat {
    /// µ-law on payload type 0 with telephone-event 101, as most phones offer.
    pub(crate) const PCMU: LegFormat = LegFormat {
        codec: crate::media::g711::Codec::Pcmu,
        payload_type: 0,
        telephone_event: Some(101),
    };
}

impl From<&Negotiated> for LegFormat {
    fn from(n: &Negotiated) -> Self {
        LegFormat {
            codec: n.codec,
            payload_type: n.payload_type,
            telephone_event: n.telephone_event,
        }
    }
}

/// What a relayed packet carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relayed {
    /// Audio, `len` bytes written to the output.
    Audio(usize),
    /// An RFC 4733 telephone event, `len` bytes written.
    Event(usize),
}

impl Relayed {
    pub fn len(self) -> usize {
        match self {
            Relayed::Audio(n) | Relayed::Event(n) => n,
        }
    }

    pub fn is_empty(self) -> bool {
        self.len() == 0
    }
}

/// Rewrites `packet`, received on the leg described by `from`, for the leg
/// described by `to`, into `out`. `None` when the packet is not RTP, carries a
/// payload type the receiving leg did not agree to (comfort noise, an event
/// the other side cannot take), or does not fit `out`.
pub fn relay(packet: &[u8], from: &LegFormat, to: &LegFormat, out: &mut [u8]) -> Option<Relayed> {
    let reader = rtp_rs::RtpReader::new(packet).ok()?;
    let pt = reader.payload_type();
    let payload = reader.payload();
    let (out_pt, audio) = if pt == from.payload_type {
        (to.payload_type, true)
    } else if from.telephone_event == Some(pt) {
        (to.telephone_event?, false)
    } else {
        return None;
    };
    let len = HEADER_LEN + payload.len();
    if out.len() < len {
        return None;
    }
    out[0] = 0x80;
    out[1] = (out_pt & 0x7f) | if reader.mark() { 0x80 } else { 0 };
    out[2..4].copy_from_slice(&u16::from(reader.sequence_number()).to_be_bytes());
    out[4..8].copy_from_slice(&reader.timestamp().to_be_bytes());
    out[8..12].copy_from_slice(&reader.ssrc().to_be_bytes());
    if audio {
        g711::transcode(from.codec, to.codec, payload, &mut out[HEADER_LEN..len]);
        Some(Relayed::Audio(len))
    } else {
        out[HEADER_LEN..len].copy_from_slice(payload);
        Some(Relayed::Event(len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(pt: u8, marker: bool, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, pt | if marker { 0x80 } else { 0 }];
        p.extend_from_slice(&4711u16.to_be_bytes());
        p.extend_from_slice(&160_000u32.to_be_bytes());
        p.extend_from_slice(&0xdead_beefu32.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    const PCMU: LegFormat = LegFormat::PCMU;
    const PCMA: LegFormat = LegFormat {
        codec: Codec::Pcma,
        payload_type: 8,
        telephone_event: Some(96),
    };

    #[test]
    fn same_codec_passes_payload_and_numbering_through() {
        let payload: Vec<u8> = (0..160).map(|i| i as u8).collect();
        let mut out = [0u8; 1500];
        let n = relay(&packet(0, true, &payload), &PCMU, &PCMU, &mut out).unwrap();
        assert_eq!(n, Relayed::Audio(172));
        assert_eq!(&out[..172], &packet(0, true, &payload)[..]);
    }

    #[test]
    fn differing_laws_are_transcoded_and_the_payload_type_rewritten() {
        let pcm: Vec<i16> = (0..160).map(|i| ((i * 97) % 8000 - 4000) as i16).collect();
        let mut ulaw = vec![0u8; 160];
        Codec::Pcmu.encode(&pcm, &mut ulaw);
        let mut expected = vec![0u8; 160];
        g711::transcode(Codec::Pcmu, Codec::Pcma, &ulaw, &mut expected);
        let mut out = [0u8; 1500];
        let n = relay(&packet(0, false, &ulaw), &PCMU, &PCMA, &mut out)
            .unwrap()
            .len();
        let reader = rtp_rs::RtpReader::new(&out[..n]).unwrap();
        assert_eq!(reader.payload_type(), 8);
        assert_eq!(reader.sequence_number(), 4711.into());
        assert_eq!(reader.timestamp(), 160_000);
        assert_eq!(reader.ssrc(), 0xdead_beef);
        assert!(!reader.mark());
        assert_eq!(reader.payload(), &expected[..]);
    }

    #[test]
    fn telephone_events_take_the_receivers_payload_type_unchanged() {
        let event = [5u8, 0x0a, 0x00, 0xa0];
        let mut out = [0u8; 64];
        let n = relay(&packet(101, true, &event), &PCMU, &PCMA, &mut out).unwrap();
        assert_eq!(n, Relayed::Event(16));
        let reader = rtp_rs::RtpReader::new(&out[..16]).unwrap();
        assert_eq!(reader.payload_type(), 96);
        assert!(reader.mark());
        assert_eq!(reader.payload(), &event);
    }

    #[test]
    fn unknown_payloads_and_events_the_receiver_lacks_are_dropped() {
        let mut out = [0u8; 1500];
        assert_eq!(
            relay(&packet(13, false, &[0]), &PCMU, &PCMA, &mut out),
            None
        );
        let no_events = LegFormat {
            telephone_event: None,
            ..PCMA
        };
        assert_eq!(
            relay(
                &packet(101, true, &[1, 0, 0, 0]),
                &PCMU,
                &no_events,
                &mut out
            ),
            None
        );
        assert_eq!(relay(&[0x80, 0], &PCMU, &PCMA, &mut out), None);
        let mut small = [0u8; 20];
        assert_eq!(
            relay(&packet(0, false, &[0; 160]), &PCMU, &PCMU, &mut small),
            None
        );
    }
}
