//! Audio mixing for a supervised or three-way call: short per-party queues of
//! decoded linear PCM, saturating addition, and the RTP stream hotline sends
//! a party when it hears a mix rather than one other party.
//!
//! Mixing happens on 20 ms frames. A party's audio waits at most a few frames
//! in its queue: when one side sends faster than the mix is taken (clock
//! drift, a burst after jitter), the oldest samples are dropped so the delay
//! never grows. Nothing here allocates after construction.

use super::g711::Codec;
use super::rtp::HEADER_LEN;

/// Samples in one 20 ms frame at 8 kHz.
pub const FRAME: usize = 160;

/// How much audio a party's queue holds before the oldest is dropped: three
/// frames absorb ordinary network jitter without an audible delay.
pub const QUEUE_SAMPLES: usize = 3 * FRAME;

/// A bounded FIFO of one party's decoded audio, for one listener.
pub struct PcmQueue {
    samples: [i16; QUEUE_SAMPLES],
    head: usize,
    len: usize,
}

impl Default for PcmQueue {
    fn default() -> Self {
        PcmQueue {
            samples: [0; QUEUE_SAMPLES],
            head: 0,
            len: 0,
        }
    }
}

impl PcmQueue {
    /// Appends `pcm`; when full, the oldest samples make room.
    pub fn push(&mut self, pcm: &[i16]) {
        let pcm = &pcm[pcm.len().saturating_sub(QUEUE_SAMPLES)..];
        let overflow = (self.len + pcm.len()).saturating_sub(QUEUE_SAMPLES);
        self.head = (self.head + overflow) % QUEUE_SAMPLES;
        self.len -= overflow;
        // The free space is at most two runs: up to the end, then from 0.
        let tail = (self.head + self.len) % QUEUE_SAMPLES;
        let first = pcm.len().min(QUEUE_SAMPLES - tail);
        self.samples[tail..tail + first].copy_from_slice(&pcm[..first]);
        self.samples[..pcm.len() - first].copy_from_slice(&pcm[first..]);
        self.len += pcm.len();
    }

    /// Adds the oldest `out.len()` samples into `out` (saturating) and removes
    /// them; missing samples count as silence. Returns how many were there.
    pub fn mix_into(&mut self, out: &mut [i16]) -> usize {
        let n = out.len().min(self.len);
        let first = n.min(QUEUE_SAMPLES - self.head);
        mix_into(
            &mut out[..first],
            &self.samples[self.head..self.head + first],
        );
        mix_into(&mut out[first..n], &self.samples[..n - first]);
        self.head = (self.head + n) % QUEUE_SAMPLES;
        self.len -= n;
        n
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
    }
}

/// Adds `add` into `acc`, sample by sample, clipping at the i16 range.
pub fn mix_into(acc: &mut [i16], add: &[i16]) {
    for (a, b) in acc.iter_mut().zip(add) {
        *a = a.saturating_add(*b);
    }
}

/// An RTP stream of hotline's own (mixed audio): its SSRC, sequence number
/// and timestamp, so the receiver sees one continuous stream.
pub struct MixStream {
    ssrc: u32,
    seq: u16,
    timestamp: u32,
}

impl MixStream {
    pub fn new(ssrc: u32) -> MixStream {
        MixStream {
            ssrc,
            seq: (ssrc >> 16) as u16,
            timestamp: ssrc.rotate_left(7),
        }
    }

    /// Writes one RTP packet carrying `pcm` encoded with `codec` into `out`;
    /// its length, or `None` when it does not fit.
    pub fn packet(
        &mut self,
        codec: Codec,
        payload_type: u8,
        pcm: &[i16],
        out: &mut [u8],
    ) -> Option<usize> {
        let len = HEADER_LEN + pcm.len();
        if out.len() < len {
            return None;
        }
        out[0] = 0x80;
        out[1] = payload_type & 0x7f;
        out[2..4].copy_from_slice(&self.seq.to_be_bytes());
        out[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        out[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        codec.encode(pcm, &mut out[HEADER_LEN..len]);
        self.seq = self.seq.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(pcm.len() as u32);
        Some(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_gives_back_what_it_took_in_order() {
        let mut q = PcmQueue::default();
        q.push(&[1, 2, 3]);
        q.push(&[4]);
        let mut out = [10i16; 3];
        assert_eq!(q.mix_into(&mut out), 3);
        assert_eq!(out, [11, 12, 13]);
        let mut out = [0i16; 3];
        assert_eq!(q.mix_into(&mut out), 1);
        assert_eq!(out, [4, 0, 0]);
        assert!(q.is_empty());
    }

    #[test]
    fn a_full_queue_drops_the_oldest_so_delay_stays_bounded() {
        let mut q = PcmQueue::default();
        let first: Vec<i16> = (0..QUEUE_SAMPLES as i16).collect();
        q.push(&first);
        q.push(&[-1, -2]);
        assert_eq!(q.len(), QUEUE_SAMPLES);
        let mut out = vec![0i16; QUEUE_SAMPLES];
        q.mix_into(&mut out);
        assert_eq!(out[0], 2);
        assert_eq!(&out[QUEUE_SAMPLES - 2..], &[-1, -2]);
        // A push larger than the queue keeps its newest part.
        let huge: Vec<i16> = (0..(QUEUE_SAMPLES as i16 * 2)).collect();
        q.push(&huge);
        let mut out = vec![0i16; QUEUE_SAMPLES];
        q.mix_into(&mut out);
        assert_eq!(out[0], QUEUE_SAMPLES as i16);
    }

    #[test]
    fn a_queue_wraps_around_its_end_in_order() {
        let mut q = PcmQueue::default();
        let mut out = vec![0i16; QUEUE_SAMPLES - 10];
        q.push(&vec![1; QUEUE_SAMPLES - 10]);
        q.mix_into(&mut out);
        // Head and tail are now 10 samples before the end.
        let run: Vec<i16> = (0..50).collect();
        q.push(&run);
        let mut out = vec![0i16; 50];
        assert_eq!(q.mix_into(&mut out), 50);
        assert_eq!(out, run);
        assert!(q.is_empty());
    }

    #[test]
    fn mixing_saturates_instead_of_wrapping() {
        let mut acc = [30_000i16, -30_000, 5];
        mix_into(&mut acc, &[10_000, -10_000, -7]);
        assert_eq!(acc, [i16::MAX, i16::MIN, -2]);
        let mut q = PcmQueue::default();
        q.push(&[20_000]);
        let mut out = [20_000i16];
        q.mix_into(&mut out);
        assert_eq!(out, [i16::MAX]);
    }

    #[test]
    fn a_mix_stream_numbers_its_packets_continuously() {
        let mut stream = MixStream::new(0x1234_5678);
        let pcm = [0i16; FRAME];
        let mut out = [0u8; 400];
        let n = stream.packet(Codec::Pcma, 8, &pcm, &mut out).unwrap();
        assert_eq!(n, HEADER_LEN + FRAME);
        let first = rtp_rs::RtpReader::new(&out[..n]).unwrap();
        let (seq, ts) = (u16::from(first.sequence_number()), first.timestamp());
        assert_eq!(first.payload_type(), 8);
        assert_eq!(first.ssrc(), 0x1234_5678);
        let n = stream.packet(Codec::Pcma, 8, &pcm, &mut out).unwrap();
        let second = rtp_rs::RtpReader::new(&out[..n]).unwrap();
        assert_eq!(u16::from(second.sequence_number()), seq.wrapping_add(1));
        assert_eq!(second.timestamp(), ts.wrapping_add(FRAME as u32));
        let mut small = [0u8; 20];
        assert_eq!(stream.packet(Codec::Pcmu, 0, &pcm, &mut small), None);
    }
}
