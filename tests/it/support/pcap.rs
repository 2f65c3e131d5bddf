//! Writes pcap files of RTP for SIPp's `play_pcap_audio`: Ethernet, IPv4,
//! UDP and RTP (PCMU, payload type 0), one packet every 20 ms.

use std::path::Path;

use hotline::media::g711::Codec;

/// `frames` 20 ms frames of a pure tone at `hz` in PCMU.
pub fn tone_pcmu(hz: f64, frames: usize) -> Vec<[u8; 160]> {
    (0..frames)
        .map(|n| {
            let mut pcm = [0i16; 160];
            for (i, s) in pcm.iter_mut().enumerate() {
                let t = (n * 160 + i) as f64 / 8000.0;
                *s = (8000.0 * (2.0 * std::f64::consts::PI * hz * t).sin()) as i16;
            }
            let mut out = [0u8; 160];
            Codec::Pcmu.encode(&pcm, &mut out);
            out
        })
        .collect()
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Writes `frames` as an RTP stream (PCMU) to a pcap file at `path`.
pub fn write_rtp_pcap(path: &Path, frames: &[[u8; 160]]) {
    let mut out = Vec::new();
    // Global header: magic, version 2.4, zone, sigfigs, snaplen, Ethernet.
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65_535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    for (n, payload) in frames.iter().enumerate() {
        let mut rtp = vec![0x80, if n == 0 { 0x80 } else { 0 }];
        rtp.extend_from_slice(&(n as u16).to_be_bytes());
        rtp.extend_from_slice(&(n as u32 * 160).to_be_bytes());
        rtp.extend_from_slice(&0x7e57_0001u32.to_be_bytes());
        rtp.extend_from_slice(payload);
        let udp_len = 8 + rtp.len();
        let mut udp = Vec::with_capacity(udp_len);
        udp.extend_from_slice(&6000u16.to_be_bytes());
        udp.extend_from_slice(&6002u16.to_be_bytes());
        udp.extend_from_slice(&(udp_len as u16).to_be_bytes());
        udp.extend_from_slice(&0u16.to_be_bytes());
        udp.extend_from_slice(&rtp);
        let mut ip = vec![0x45, 0];
        ip.extend_from_slice(&((20 + udp_len) as u16).to_be_bytes());
        ip.extend_from_slice(&(n as u16).to_be_bytes());
        ip.extend_from_slice(&[0, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1]);
        let sum = ipv4_checksum(&ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&0x0800u16.to_be_bytes());
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&udp);
        let micros = n as u64 * 20_000;
        out.extend_from_slice(&((micros / 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&((micros % 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&frame);
    }
    std::fs::write(path, out).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}
