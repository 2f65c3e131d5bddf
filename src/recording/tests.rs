use super::*;

fn pcmu(value: i16, n: usize) -> Vec<u8> {
    let pcm = vec![value; n];
    let mut out = vec![0u8; n];
    Codec::Pcmu.encode(&pcm, &mut out);
    out
}

fn decoded(value: i16) -> i16 {
    let mut out = [0i16; 1];
    Codec::Pcmu.decode(&pcmu(value, 1), &mut out);
    out[0]
}

fn frames(bytes: &[u8], stereo: bool) -> Vec<Vec<i16>> {
    let samples: Vec<i16> = bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    samples
        .chunks(if stereo { 2 } else { 1 })
        .map(<[i16]>::to_vec)
        .collect()
}

#[test]
fn stereo_puts_the_caller_left_and_the_agent_right() {
    let mut t = Timeline::new(true, 8000);
    t.put(CALLER, 0, Codec::Pcmu, &pcmu(1000, 160));
    t.put(AGENT, 0, Codec::Pcmu, &pcmu(-3000, 160));
    let mut out = Vec::new();
    assert_eq!(t.take(160, &mut out), 0);
    let f = frames(&out, true);
    assert_eq!(f.len(), 160);
    assert!(f.iter().all(|s| s == &[decoded(1000), decoded(-3000)]));
}

#[test]
fn mono_mixes_both_parties_without_wrapping() {
    let mut t = Timeline::new(false, 8000);
    t.put(CALLER, 0, Codec::Pcmu, &pcmu(30_000, 160));
    t.put(AGENT, 0, Codec::Pcmu, &pcmu(30_000, 160));
    t.put(CALLER, 160, Codec::Pcmu, &pcmu(-30_000, 160));
    t.put(AGENT, 160, Codec::Pcmu, &pcmu(-30_000, 160));
    t.put(CALLER, 320, Codec::Pcmu, &pcmu(1000, 160));
    t.put(AGENT, 320, Codec::Pcmu, &pcmu(-500, 160));
    let mut out = Vec::new();
    t.take(480, &mut out);
    let f = frames(&out, false);
    assert_eq!(f.len(), 480);
    assert_eq!(f[0][0], i16::MAX, "saturated, not wrapped");
    assert_eq!(f[200][0], i16::MIN, "saturated, not wrapped");
    assert_eq!(f[400][0], decoded(1000) + decoded(-500));
}

#[test]
fn a_leg_that_sends_nothing_is_silence_and_the_other_keeps_its_place() {
    let mut t = Timeline::new(true, 8000);
    // The caller talks in frames 0-159, then nothing until frame 4000 (a
    // gap); the agent only from frame 2000. Jitter of a few ms follows on.
    t.put(CALLER, 0, Codec::Pcmu, &pcmu(1000, 160));
    t.put(CALLER, 190, Codec::Pcmu, &pcmu(1000, 160));
    t.put(AGENT, 2000, Codec::Pcmu, &pcmu(2000, 160));
    t.put(CALLER, 4000, Codec::Pcmu, &pcmu(1000, 160));
    let mut out = Vec::new();
    assert_eq!(t.take(4160, &mut out), 0);
    let f = frames(&out, true);
    assert_eq!(f.len(), 4160);
    let c = decoded(1000);
    assert!(f[..320].iter().all(|s| s[0] == c), "jitter follows on");
    assert!(f[320..4000].iter().all(|s| s[0] == 0), "the gap is silence");
    assert!(f[4000..].iter().all(|s| s[0] == c));
    assert!(f[..2000].iter().all(|s| s[1] == 0));
    assert!(f[2000..2160].iter().all(|s| s[1] == decoded(2000)));
    assert!(f[2160..].iter().all(|s| s[1] == 0));
}

#[test]
fn samples_ahead_of_a_flush_wait_for_the_next_and_long_silence_is_counted() {
    let mut t = Timeline::new(true, 1000);
    t.put(CALLER, 0, Codec::Pcmu, &pcmu(1000, 160));
    let mut out = Vec::new();
    assert_eq!(t.take(100, &mut out), 0);
    assert_eq!(out.len(), 100 * 4);
    assert_eq!(t.take(160, &mut out), 0);
    let f = frames(&out, true);
    assert_eq!(f.len(), 60);
    assert!(
        f.iter().all(|s| s[0] == decoded(1000)),
        "the rest came next"
    );
    // Nothing arrives for 5000 frames: more than the timeline holds.
    assert_eq!(t.take(5160, &mut out), (5000 - 1000) * 4);
    assert_eq!(out.len(), 1000 * 4);
    assert!(out.iter().all(|&b| b == 0));
    // A packet late for a flushed stretch starts at the flush.
    t.put(AGENT, 5100, Codec::Pcmu, &pcmu(500, 160));
    t.take(5320, &mut out);
    let f = frames(&out, true);
    assert!(f[..160].iter().all(|s| s[1] == decoded(500)));
}

#[test]
fn file_names_are_safe_and_dated_by_the_call_start() {
    assert_eq!(
        file_stem("a84b4c76e66710@pc33.example.com"),
        "a84b4c76e66710@pc33.example.com"
    );
    assert_eq!(file_stem("../../etc/passwd"), "_._.._etc_passwd");
    assert_eq!(file_stem(".."), "_.");
    assert_eq!(file_stem(".hidden"), "_hidden");
    assert_eq!(file_stem(""), "_");
    assert_eq!(file_stem("x y/z\\w"), "x_y_z_w");
    assert_eq!(file_stem(&"a".repeat(300)).len(), 128);
    let t = std::time::UNIX_EPOCH + Duration::from_secs(1_795_428_000);
    let path = path_for(Path::new("/rec"), "abc/1", t);
    assert_eq!(path, PathBuf::from("/rec/2026-11-23/abc_1.wav"));
    assert!(path_for(Path::new("rel"), "x", t).is_absolute());
    assert_eq!(
        format_holds(&[(12_000, 20_500), (31_000, 33_000)]),
        "12000-20500,31000-33000"
    );
    assert_eq!(format_holds(&[]), "");
}

fn rtp(payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 1, 0, 0, 0, 160, 0, 0, 0, 7];
    p.extend_from_slice(payload);
    p
}

#[test]
fn a_hold_is_kept_as_a_period_and_the_agent_is_silent_during_it() {
    let dir = tempfile::tempdir().unwrap();
    let settings = RecordingSettings {
        enabled: true,
        dir: dir.path().to_path_buf(),
        format: RecordingFormat::Stereo,
        flush_interval: Duration::from_millis(100),
    };
    let bus = EventBus::new(64);
    let mut events = bus.subscribe();
    let mut rec = CallRecording::new();
    rec.start(&settings, "hold-test", &bus);
    assert!(rec.is_active());
    let pcmu = Some((Codec::Pcmu, 0));
    let (caller, agent) = (rtp(&pcmu_bytes(1000)), rtp(&pcmu_bytes(2000)));
    let start = Instant::now();
    for i in 0..30u64 {
        let hold = (10..20).contains(&i);
        rec.caller(&caller, pcmu, hold);
        rec.agent(&agent, pcmu, hold);
        // A telephone event is not audio.
        rec.agent(&rtp(&[1, 0, 0, 160])[..], Some((Codec::Pcmu, 8)), hold);
        let next = start + Duration::from_millis(20 * (i + 1));
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    rec.finish().unwrap().blocking_recv().unwrap();
    assert!(!rec.is_active());
    let mut holds = None;
    let mut path = None;
    while let Ok(stamped) = events.try_recv() {
        if let crate::events::Event::RecordingFinished {
            hold_periods,
            path: p,
            ..
        } = stamped.event
        {
            holds = Some(hold_periods);
            path = Some(p);
        }
    }
    let holds = holds.expect("recording_finished");
    let (a, b) = holds.split_once('-').unwrap();
    let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
    assert!(
        (180..=260).contains(&a) && (380..=460).contains(&b),
        "{holds}"
    );
    let bytes = std::fs::read(path.unwrap()).unwrap();
    let f = frames(&bytes[44..], true);
    let held = (a as usize * 8 + 200)..(b as usize * 8 - 200);
    assert!(
        f[held.clone()].iter().all(|s| s[1] == 0),
        "the agent is silent on hold"
    );
    assert!(
        f[held].iter().all(|s| s[0] == decoded(1000)),
        "the caller is not"
    );
    let bad: Vec<usize> = (40..1500).filter(|&i| f[i][1] != decoded(2000)).collect();
    assert!(
        bad.is_empty(),
        "{} {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
}

fn pcmu_bytes(value: i16) -> Vec<u8> {
    pcmu(value, 160)
}
