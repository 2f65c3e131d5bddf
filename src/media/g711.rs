//! G.711 companding: µ-law (PCMU, RTP payload type 0) and A-law (PCMA, payload
//! type 8) between 16-bit linear PCM and 8-bit code words, plus direct
//! law-to-law transcoding.
//!
//! Pure and allocation-free: decoding and transcoding are 256-entry tables built
//! at compile time; encoding runs the ITU-T G.711 segment algorithm on the
//! sample's magnitude. Linear samples are full-scale 16-bit (the 14-bit µ-law
//! and 13-bit A-law domains scaled up by 4 and 8).

/// The two G.711 laws as negotiated in SDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// µ-law, static RTP payload type 0.
    Pcmu,
    /// A-law, static RTP payload type 8.
    Pcma,
}

impl Codec {
    /// The static RTP payload type (RFC 3551): 0 for PCMU, 8 for PCMA.
    pub fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }

    /// The encoding name used in `a=rtpmap`.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }

    /// The codec of a static payload type, if it is one of the two.
    pub fn from_payload_type(pt: u8) -> Option<Codec> {
        match pt {
            0 => Some(Codec::Pcmu),
            8 => Some(Codec::Pcma),
            _ => None,
        }
    }

    /// The code word of linear 0: 0xFF for µ-law, 0xD5 for A-law.
    pub fn silence(self) -> u8 {
        match self {
            Codec::Pcmu => ULAW_SILENCE,
            Codec::Pcma => ALAW_SILENCE,
        }
    }

    /// Encodes `pcm` into `out`, one byte per sample. `out` should be at least
    /// `pcm.len()` long; only `min(pcm.len(), out.len())` samples are written.
    pub fn encode(self, pcm: &[i16], out: &mut [u8]) {
        let f = match self {
            Codec::Pcmu => ulaw_encode,
            Codec::Pcma => alaw_encode,
        };
        for (o, &s) in out.iter_mut().zip(pcm) {
            *o = f(s);
        }
    }

    /// Decodes `data` into `out`, one sample per byte. `out` should be at least
    /// `data.len()` long; only `min(data.len(), out.len())` samples are written.
    pub fn decode(self, data: &[u8], out: &mut [i16]) {
        let table = match self {
            Codec::Pcmu => &ULAW_DECODE,
            Codec::Pcma => &ALAW_DECODE,
        };
        for (o, &c) in out.iter_mut().zip(data) {
            *o = table[usize::from(c)];
        }
    }
}

const ULAW_SILENCE: u8 = 0xFF;
const ALAW_SILENCE: u8 = 0xD5;

/// µ-law bias, 33 in the 14-bit domain.
const ULAW_BIAS: i32 = 0x84;
/// Largest magnitude µ-law can represent once biased (32635 + 0x84 = 0x7FFF).
const ULAW_CLIP: i32 = 32635;
/// A-law inverts the even bits of the code word.
const ALAW_XOR: u8 = 0x55;

/// Encodes one linear sample as µ-law. Magnitudes above 32635 clip. Small
/// negative samples (-1..=-3) map to 0x7F, the "negative zero" that decodes to 0.
pub const fn ulaw_encode(sample: i16) -> u8 {
    let s = sample as i32;
    let (sign, mag) = if s < 0 { (0x80u8, -s) } else { (0u8, s) };
    let mag = if mag > ULAW_CLIP { ULAW_CLIP } else { mag };
    let biased = (mag + ULAW_BIAS) as u32; // 0x84..=0x7FFF: top bit in 7..=14
    let exponent = (31 - biased.leading_zeros()) - 7; // 0..=7
    let mantissa = (biased >> (exponent + 3)) & 0x0F;
    !(sign | (exponent << 4) as u8 | mantissa as u8)
}

/// Decodes one µ-law code word (the midpoint of its quantisation interval).
pub const fn ulaw_decode(code: u8) -> i16 {
    let c = !code;
    let exponent = (c >> 4) & 0x07;
    let mantissa = (c & 0x0F) as i32;
    let mag = (((mantissa << 3) + ULAW_BIAS) << exponent) - ULAW_BIAS;
    if c & 0x80 != 0 {
        (-mag) as i16
    } else {
        mag as i16
    }
}

/// Encodes one linear sample as A-law. Uses the top 13 bits; negative samples
/// are folded by one's complement so that `x` and `!x` differ only in the sign
/// bit, and the full i16 range fits without clipping.
pub const fn alaw_encode(sample: i16) -> u8 {
    let (mask, mag) = if sample >= 0 {
        (ALAW_XOR | 0x80, sample as u16)
    } else {
        (ALAW_XOR, !sample as u16)
    }; // mag: 0..=0x7FFF
    let code = if mag < 0x100 {
        // Segment 0: 16 steps of 16, same step as segment 1.
        (mag >> 4) as u8
    } else {
        let segment = (15 - mag.leading_zeros()) - 7; // 1..=7
        ((segment as u8) << 4) | ((mag >> (segment + 3)) & 0x0F) as u8
    };
    code ^ mask
}

/// Decodes one A-law code word (the midpoint of its quantisation interval).
pub const fn alaw_decode(code: u8) -> i16 {
    let a = code ^ ALAW_XOR;
    let segment = (a >> 4) & 0x07;
    let mantissa = ((a & 0x0F) as i32) << 4;
    let mag = if segment == 0 {
        mantissa + 8
    } else {
        (mantissa + 0x108) << (segment - 1)
    };
    if a & 0x80 != 0 {
        mag as i16
    } else {
        (-mag) as i16
    }
}

const fn build_decode(ulaw: bool) -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if ulaw {
            ulaw_decode(i as u8)
        } else {
            alaw_decode(i as u8)
        };
        i += 1;
    }
    t
}

/// µ-law code → linear sample.
static ULAW_DECODE: [i16; 256] = build_decode(true);
/// A-law code → linear sample.
static ALAW_DECODE: [i16; 256] = build_decode(false);

const fn build_transcode(ulaw_to_alaw: bool) -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if ulaw_to_alaw {
            alaw_encode(ulaw_decode(i as u8))
        } else {
            ulaw_encode(alaw_decode(i as u8))
        };
        i += 1;
    }
    t
}

/// PCMU code → PCMA code, through the linear value.
static ULAW_TO_ALAW: [u8; 256] = build_transcode(true);
/// PCMA code → PCMU code, through the linear value.
static ALAW_TO_ULAW: [u8; 256] = build_transcode(false);

/// Re-encodes a frame from one law to the other without going through i16
/// buffers in the caller: one table lookup per byte, equal to encoding the
/// decoded value. With `from == to` it copies. Writes `min(data.len(), out.len())` bytes.
pub fn transcode(from: Codec, to: Codec, data: &[u8], out: &mut [u8]) {
    let table = match (from, to) {
        (Codec::Pcmu, Codec::Pcma) => &ULAW_TO_ALAW,
        (Codec::Pcma, Codec::Pcmu) => &ALAW_TO_ULAW,
        _ => {
            let n = data.len().min(out.len());
            out[..n].copy_from_slice(&data[..n]);
            return;
        }
    };
    for (o, &c) in out.iter_mut().zip(data) {
        *o = table[usize::from(c)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Codes of one law in increasing decoded-value order (most negative first).
    fn ulaw_order() -> Vec<u8> {
        // Negative codes 0x00 (largest magnitude) .. 0x7F (-0), then positive 0xFF (0) .. 0x80.
        (0x00..=0x7F).chain((0x80..=0xFF).rev()).collect()
    }

    fn alaw_order() -> Vec<u8> {
        // After the 0x55 inversion: sign bit set = positive, low 7 bits = magnitude index.
        (0x00..=0x7Fu8)
            .rev()
            .chain(0x80..=0xFF)
            .map(|a| a ^ ALAW_XOR)
            .collect()
    }

    /// µ-law segment (0..=7) of a linear value, from the definition: the
    /// position of the top bit of the biased, clipped magnitude.
    fn ulaw_segment(x: i16) -> u32 {
        let mag = i32::from(x).abs().min(ULAW_CLIP) + ULAW_BIAS;
        (31 - mag.leading_zeros()) - 7
    }

    /// A-law segment (0..=7) of a linear value, using the same folding as the encoder.
    fn alaw_segment(x: i16) -> u32 {
        let mag = if x >= 0 { x as u16 } else { !x as u16 };
        if mag < 0x100 {
            0
        } else {
            (15 - mag.leading_zeros()) - 7
        }
    }

    #[test]
    fn codec_metadata() {
        assert_eq!(Codec::Pcmu.payload_type(), 0);
        assert_eq!(Codec::Pcma.payload_type(), 8);
        assert_eq!(Codec::Pcmu.name(), "PCMU");
        assert_eq!(Codec::Pcma.name(), "PCMA");
        assert_eq!(Codec::from_payload_type(0), Some(Codec::Pcmu));
        assert_eq!(Codec::from_payload_type(8), Some(Codec::Pcma));
        assert_eq!(Codec::from_payload_type(101), None);
        assert_eq!(Codec::from_payload_type(3), None);
        assert_eq!(Codec::Pcmu.silence(), 0xFF);
        assert_eq!(Codec::Pcma.silence(), 0xD5);
        for codec in [Codec::Pcmu, Codec::Pcma] {
            let mut out = [0u8; 1];
            codec.encode(&[0], &mut out);
            assert_eq!(out[0], codec.silence());
        }
    }

    #[test]
    fn ulaw_reference_values() {
        // Decoder: mag = ((mantissa << 3) + 0x84) << exponent - 0x84, on the inverted code.
        assert_eq!(ulaw_decode(0x00), -32124); // exp 7, mant 15: 252 << 7 - 132
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(ulaw_decode(0xFF), 0);
        assert_eq!(ulaw_decode(0x7F), 0);
        assert_eq!(ulaw_decode(0x7E), -8); // exp 0, mant 1: 140 - 132
        assert_eq!(ulaw_decode(0xFE), 8);
        assert_eq!(ulaw_decode(0xF0), 120); // exp 0, mant 15: 252 - 132
        assert_eq!(ulaw_decode(0xEF), 132); // exp 1, mant 0: 132 << 1 - 132
        assert_eq!(ulaw_decode(0x8F), 16764); // exp 7, mant 0: 132 << 7 - 132
        assert_eq!(ulaw_encode(0), 0xFF);
        assert_eq!(ulaw_encode(-1), 0x7F);
        assert_eq!(ulaw_encode(8), 0xFE);
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
        assert_eq!(ulaw_encode(32124), 0x80);
        assert_eq!(ulaw_encode(-32124), 0x00);
        // Segment boundary: biased 255 is exp 0 / mant 15, biased 256 is exp 1 / mant 0.
        assert_eq!(ulaw_encode(255 - 0x84), 0xF0);
        assert_eq!(ulaw_encode(256 - 0x84), 0xEF);
    }

    #[test]
    fn alaw_reference_values() {
        assert_eq!(alaw_decode(0xD5), 8);
        assert_eq!(alaw_decode(0x55), -8);
        assert_eq!(alaw_decode(0x2A), -32256); // 0x2A^0x55 = 0x7F: seg 7, mant 15: (240+264) << 6
        assert_eq!(alaw_decode(0xAA), 32256);
        assert_eq!(alaw_decode(0xD4), 24); // seg 0, mant 1
        assert_eq!(alaw_decode(0xC5), 264); // 0xC5^0x55 = 0x90: seg 1, mant 0
        assert_eq!(alaw_decode(0xE5), 1056); // 0xE5^0x55 = 0xB0: seg 3, mant 0: 264 << 2
        assert_eq!(alaw_encode(0), 0xD5);
        assert_eq!(alaw_encode(7), 0xD5);
        assert_eq!(alaw_encode(-1), 0x55);
        assert_eq!(alaw_encode(-8), 0x55);
        assert_eq!(alaw_encode(i16::MAX), 0xAA);
        assert_eq!(alaw_encode(i16::MIN), 0x2A);
        assert_eq!(alaw_encode(255), 0xDA); // seg 0, mant 15: 0x8F ^ 0x55
        assert_eq!(alaw_encode(256), 0xC5); // seg 1, mant 0: 0x90 ^ 0x55
    }

    #[test]
    fn every_code_round_trips() {
        for c in 0..=255u8 {
            let want = if c == 0x7F { 0xFF } else { c }; // µ-law -0 re-encodes as +0
            assert_eq!(ulaw_encode(ulaw_decode(c)), want, "µ-law {c:#04x}");
            assert_eq!(alaw_encode(alaw_decode(c)), c, "A-law {c:#04x}");
        }
    }

    #[test]
    fn tables_match_functions() {
        for c in 0..=255u8 {
            let mut out = [0i16; 1];
            Codec::Pcmu.decode(&[c], &mut out);
            assert_eq!(out[0], ulaw_decode(c));
            Codec::Pcma.decode(&[c], &mut out);
            assert_eq!(out[0], alaw_decode(c));
        }
    }

    #[test]
    fn decode_is_monotonic_in_segment_order() {
        let u: Vec<i16> = ulaw_order().into_iter().map(ulaw_decode).collect();
        for (i, w) in u.windows(2).enumerate() {
            // The only tie is -0 (0x7F) next to +0 (0xFF), at the middle.
            if i == 127 {
                assert_eq!(w[0], w[1]);
            } else {
                assert!(w[0] < w[1], "µ-law not increasing at {i}: {w:?}");
            }
        }
        assert_eq!((u[0], u[255]), (-32124, 32124));
        let a: Vec<i16> = alaw_order().into_iter().map(alaw_decode).collect();
        for (i, w) in a.windows(2).enumerate() {
            assert!(w[0] < w[1], "A-law not increasing at {i}: {w:?}");
        }
        assert_eq!((a[0], a[255]), (-32256, 32256));
        // Both laws are odd-symmetric apart from µ-law's double zero.
        for c in 0..=255u8 {
            assert_eq!(alaw_decode(c ^ 0x80), -alaw_decode(c));
            assert_eq!(ulaw_decode(c ^ 0x80), -ulaw_decode(c));
        }
    }

    #[test]
    fn encode_is_monotonic_for_every_sample() {
        let mut urank = [0usize; 256];
        let mut arank = [0usize; 256];
        for (i, c) in ulaw_order().into_iter().enumerate() {
            urank[usize::from(c)] = i;
        }
        for (i, c) in alaw_order().into_iter().enumerate() {
            arank[usize::from(c)] = i;
        }
        // µ-law -0 and +0 share a value: rank them equal.
        urank[0x7F] = urank[0xFF];
        let rank = |x: i16| {
            (
                urank[usize::from(ulaw_encode(x))],
                arank[usize::from(alaw_encode(x))],
            )
        };
        let mut last = rank(i16::MIN);
        for x in i16::MIN + 1..=i16::MAX {
            let r = rank(x);
            assert!(
                r.0 >= last.0 && r.1 >= last.1,
                "encode not monotonic at {x}"
            );
            last = r;
        }
    }

    #[test]
    fn encode_error_within_half_step_for_every_sample() {
        for x in i16::MIN..=i16::MAX {
            let xi = i32::from(x);
            // µ-law: step 8 << segment; the decoder returns the interval midpoint,
            // so the error is at most half a step, except beyond the clip level.
            let seg = ulaw_segment(x);
            let err = (i32::from(ulaw_decode(ulaw_encode(x))) - xi).abs();
            let bound = if xi.abs() > ULAW_CLIP {
                8 << seg
            } else {
                4 << seg
            };
            assert!(err <= bound, "µ-law {x}: error {err} > {bound}");
            // A-law: step 16 in segments 0 and 1, then doubling; no clipping.
            let seg = alaw_segment(x);
            let half = if seg == 0 { 8 } else { 8 << (seg - 1) };
            let err = (i32::from(alaw_decode(alaw_encode(x))) - xi).abs();
            assert!(err <= half, "A-law {x}: error {err} > {half}");
        }
    }

    #[test]
    fn alaw_sign_folding_is_ones_complement() {
        for x in i16::MIN..=i16::MAX {
            assert_eq!(alaw_encode(x) ^ 0x80, alaw_encode(!x), "{x}");
        }
    }

    #[test]
    fn transcode_matches_linear_path() {
        let all: Vec<u8> = (0..=255).collect();
        let mut out = [0u8; 256];
        transcode(Codec::Pcmu, Codec::Pcma, &all, &mut out);
        for (&c, &o) in all.iter().zip(&out) {
            assert_eq!(o, alaw_encode(ulaw_decode(c)));
        }
        transcode(Codec::Pcma, Codec::Pcmu, &all, &mut out);
        for (&c, &o) in all.iter().zip(&out) {
            assert_eq!(o, ulaw_encode(alaw_decode(c)));
        }
        transcode(Codec::Pcma, Codec::Pcma, &all, &mut out);
        assert_eq!(&out[..], &all[..]);
    }

    #[test]
    fn transcode_round_trip_within_one_step() {
        let all: Vec<u8> = (0..=255).collect();
        let mut a = [0u8; 256];
        let mut back = [0u8; 256];
        transcode(Codec::Pcmu, Codec::Pcma, &all, &mut a);
        transcode(Codec::Pcma, Codec::Pcmu, &a, &mut back);
        for (&c, &b) in all.iter().zip(&back) {
            let v = ulaw_decode(c);
            let step = 8 << ulaw_segment(v);
            let err = (i32::from(ulaw_decode(b)) - i32::from(v)).abs();
            assert!(err <= step, "{c:#04x} -> {b:#04x}: error {err} > {step}");
        }
        // And the other way round. Near 8 k, where µ-law's segment 6 starts
        // below A-law's, the µ-law step (twice A-law's) is the bound.
        transcode(Codec::Pcma, Codec::Pcmu, &all, &mut a);
        transcode(Codec::Pcmu, Codec::Pcma, &a, &mut back);
        for (&c, &b) in all.iter().zip(&back) {
            let v = alaw_decode(c);
            let seg = alaw_segment(v);
            let step = if seg == 0 { 16 } else { 16 << (seg - 1) };
            let step = step.max(8 << ulaw_segment(v));
            let err = (i32::from(alaw_decode(b)) - i32::from(v)).abs();
            assert!(err <= step, "{c:#04x} -> {b:#04x}: error {err} > {step}");
        }
    }

    #[test]
    fn short_output_is_not_overrun() {
        let pcm = [1000i16; 8];
        let mut out = [0u8; 4];
        Codec::Pcmu.encode(&pcm, &mut out);
        assert_eq!(out, [ulaw_encode(1000); 4]);
        let mut lin = [0i16; 2];
        Codec::Pcma.decode(&[0xD5; 5], &mut lin);
        assert_eq!(lin, [8, 8]);
        let mut t = [0u8; 3];
        transcode(Codec::Pcmu, Codec::Pcmu, &[1, 2, 3, 4, 5], &mut t);
        assert_eq!(t, [1, 2, 3]);
    }
}
