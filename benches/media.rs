//! Per-frame media work: G.711 encode, decode and law-to-law transcode of one
//! 20 ms frame (160 samples), relaying one bridged RTP packet from a caller
//! to an agent (as it is, or with a supervisor's voice mixed in), and
//! in-band DTMF detection over one frame, and the source check every
//! inbound RTP packet passes.
//! Run with `cargo bench --bench media`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use hotline::call::monitor::relay_mixed;
use hotline::call::relay::{LegFormat, relay};
use hotline::media::dtmf::InbandDetector;
use hotline::media::g711::{Codec, transcode};
use hotline::media::mixer::PcmQueue;

const FRAME: usize = 160;

/// One frame of a 440 Hz + 1320 Hz mix at moderate level.
fn pcm_frame() -> [i16; FRAME] {
    std::array::from_fn(|n| {
        let t = n as f64 / 8000.0;
        let v = 6000.0 * (std::f64::consts::TAU * 440.0 * t).sin()
            + 3000.0 * (std::f64::consts::TAU * 1320.0 * t).sin();
        v as i16
    })
}

fn g711(c: &mut Criterion) {
    let pcm = pcm_frame();
    let mut coded = [0u8; FRAME];
    let mut out = [0i16; FRAME];

    let mut group = c.benchmark_group("g711_encode");
    for (name, codec) in [("pcmu_160", Codec::Pcmu), ("pcma_160", Codec::Pcma)] {
        group.bench_function(name, |b| {
            b.iter(|| codec.encode(black_box(&pcm), black_box(&mut coded)))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("g711_decode");
    for (name, codec) in [("pcmu_160", Codec::Pcmu), ("pcma_160", Codec::Pcma)] {
        codec.encode(&pcm, &mut coded);
        group.bench_function(name, |b| {
            b.iter(|| codec.decode(black_box(&coded), black_box(&mut out)))
        });
    }
    group.finish();

    Codec::Pcmu.encode(&pcm, &mut coded);
    let mut alaw = [0u8; FRAME];
    c.bench_function("transcode/pcmu_to_pcma_160", |b| {
        b.iter(|| {
            transcode(
                Codec::Pcmu,
                Codec::Pcma,
                black_box(&coded),
                black_box(&mut alaw),
            )
        })
    });
}

/// One bridged packet, caller (PCMU) to agent: same law (header rewrite and
/// copy) and PCMU to PCMA (header rewrite and transcode).
fn bridge(c: &mut Criterion) {
    let mut payload = [0u8; FRAME];
    Codec::Pcmu.encode(&pcm_frame(), &mut payload);
    let mut packet = vec![0x80, 0, 0x12, 0x34, 0, 0, 0x10, 0, 0xde, 0xad, 0xbe, 0xef];
    packet.extend_from_slice(&payload);
    let caller = LegFormat {
        codec: Codec::Pcmu,
        payload_type: 0,
        telephone_event: Some(101),
    };
    let mut out = [0u8; 2048];
    let mut group = c.benchmark_group("bridge_relay");
    for (name, agent) in [
        ("pcmu_to_pcmu_160", caller),
        (
            "pcmu_to_pcma_160",
            LegFormat {
                codec: Codec::Pcma,
                payload_type: 8,
                telephone_event: Some(96),
            },
        ),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| relay(black_box(&packet), &caller, &agent, black_box(&mut out)))
        });
    }
    // Whisper or barge: the supervisor's queued 20 ms is added into the
    // packet on its way (decode, saturating add, encode).
    let mut pcm = [0i16; 960];
    let supervisor = pcm_frame();
    let mut queue = PcmQueue::default();
    group.bench_function("pcmu_to_pcmu_160_mixed", |b| {
        b.iter(|| {
            queue.push(black_box(&supervisor));
            relay_mixed(
                black_box(&packet),
                &caller,
                &caller,
                &mut queue,
                &mut pcm,
                black_box(&mut out),
            )
        })
    });
    group.finish();
}

fn dtmf(c: &mut Criterion) {
    let pcm = pcm_frame();
    let mut det = InbandDetector::new();
    c.bench_function("dtmf_inband/frame_160", |b| {
        b.iter(|| det.push(black_box(&pcm)))
    });
}

/// The pacing loop's work per tick without the socket: for each of 1,000
/// music-on-hold streams, take the next frame and write its RTP packet.
fn pacing(c: &mut Criterion) {
    use hotline::media::prompt::{Playback, PromptLibrary};
    use hotline::media::rtp::OutgoingStream;
    let Ok(library) = PromptLibrary::embedded() else {
        return;
    };
    let Some(moh) = library.get("moh/default") else {
        return;
    };
    let mut streams: Vec<(Playback, OutgoingStream)> = (0..1000)
        .map(|_| {
            (
                Playback::new(vec![moh.clone()], true),
                OutgoingStream::new(),
            )
        })
        .collect();
    let mut buf = [0u8; 512];
    c.bench_function("pacing/tick_1000_streams", |b| {
        b.iter(|| {
            let mut bytes = 0;
            for (playback, numbering) in streams.iter_mut() {
                if let Some(frame) = playback.next_frame(Codec::Pcmu) {
                    bytes += numbering.write_packet(0, frame, 160, &mut buf);
                }
            }
            black_box(bytes)
        })
    });
}

/// The inbound check every received RTP packet passes: from the latched
/// peer (the common case) and from a foreign source (dropped).
fn latch(c: &mut Criterion) {
    use hotline::media::rtp::{InboundStats, Latch};
    use std::time::{Duration, Instant};
    let mut packet = vec![0x80, 0, 0x12, 0x34, 0, 0, 0x10, 0, 0xde, 0xad, 0xbe, 0xef];
    packet.extend_from_slice(&[0xff; FRAME]);
    let Ok(peer) = "198.51.100.7:40000".parse::<std::net::SocketAddr>() else {
        return;
    };
    let Ok(foreign) = "203.0.113.9:40002".parse::<std::net::SocketAddr>() else {
        return;
    };
    let stats = InboundStats::default();
    let mut latch = Latch::default();
    latch.expect(
        Some(peer),
        Some(peer.ip()),
        Instant::now(),
        Duration::from_secs(2),
    );
    latch.judge(peer, &packet, &stats, Instant::now);
    let mut group = c.benchmark_group("latch");
    group.bench_function("judge_from_peer", |b| {
        b.iter(|| latch.judge(black_box(peer), black_box(&packet), &stats, Instant::now))
    });
    group.bench_function("judge_foreign", |b| {
        b.iter(|| latch.judge(black_box(foreign), black_box(&packet), &stats, Instant::now))
    });
    group.finish();
}

criterion_group!(benches, g711, bridge, dtmf, pacing, latch);
criterion_main!(benches);
