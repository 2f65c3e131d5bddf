//! The dialog races telephony breaks on, end to end with real peers: a
//! caller who holds a bridged call, re-INVITEs crossing each other (glare),
//! a CANCEL crossing an agent's 200, peers that never ACK or never answer,
//! and a CTI event consumer that falls behind. Each test drives hotline with
//! SIPp phones (tests/sipp/) and raw peers, and checks what the other side
//! received, not only what hotline logged.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use hotline::media::g711::Codec;
use hotline::media::prompt::Prompt;

const CALLER_HZ: f64 = 400.0;
const AGENT_HZ: f64 = 1000.0;

/// Payloads with their arrival times.
type Payloads = Arc<Mutex<Vec<(Instant, Vec<u8>)>>>;

/// An agent's RTP endpoint that keeps every PCMU payload it receives as it
/// came (to compare with a prompt's frames) and answers with a tone of its
/// own to whoever sent it audio first. Stops when dropped, or after a minute.
struct Ear {
    heard: Payloads,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Ear {
    fn start(socket: UdpSocket, hz: f64) -> Ear {
        let heard: Payloads = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (keep, halt) = (heard.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            socket
                .set_read_timeout(Some(Duration::from_millis(5)))
                .unwrap();
            let until = Instant::now() + Duration::from_secs(60);
            let mut peer: Option<SocketAddr> = None;
            let mut next = Instant::now();
            let (mut seq, mut t) = (0u16, 0usize);
            let mut buf = [0u8; 2048];
            while !halt.load(Ordering::Relaxed) && Instant::now() < until {
                if let Ok((n, from)) = socket.recv_from(&mut buf)
                    && n > 12
                    && buf[1] & 0x7f == 0
                {
                    peer.get_or_insert(from);
                    keep.lock()
                        .unwrap()
                        .push((Instant::now(), buf[12..n].to_vec()));
                }
                if let Some(peer) = peer
                    && Instant::now() >= next
                {
                    next += Duration::from_millis(20);
                    let pcm: Vec<i16> = (0..160)
                        .map(|i| {
                            let x = (t + i) as f64 / 8000.0;
                            (8000.0 * (2.0 * std::f64::consts::PI * hz * x).sin()) as i16
                        })
                        .collect();
                    t += 160;
                    let mut p = vec![0x80, 0];
                    p.extend_from_slice(&seq.to_be_bytes());
                    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
                    p.extend_from_slice(&rand_ssrc(hz).to_be_bytes());
                    let mut payload = [0u8; 160];
                    Codec::Pcmu.encode(&pcm, &mut payload);
                    p.extend_from_slice(&payload);
                    let _ = socket.send_to(&p, peer);
                    seq = seq.wrapping_add(1);
                }
            }
        });
        Ear {
            heard,
            stop,
            thread: Some(thread),
        }
    }

    /// The payloads received in `from..to`, in arrival order.
    fn between(&self, from: Instant, to: Instant) -> Vec<Vec<u8>> {
        self.heard
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, _)| *at >= from && *at < to)
            .map(|(_, p)| p.clone())
            .collect()
    }
}

impl Drop for Ear {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The share of `payloads` (PCMU) that is a tone at `hz`: about 1 for that
/// tone alone, 0 when it is absent.
fn tone_share(payloads: &[Vec<u8>], hz: f64) -> f64 {
    assert!(
        payloads.len() > 20,
        "too little audio to judge: {} packets",
        payloads.len()
    );
    let (mut tone, mut energy) = (0.0, 0.0);
    for payload in payloads.iter().filter(|p| p.len() == 160) {
        let mut pcm = [0i16; 160];
        Codec::Pcmu.decode(payload, &mut pcm);
        tone += goertzel(&pcm, hz);
        energy += pcm.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() * 80.0;
    }
    if energy == 0.0 { 0.0 } else { tone / energy }
}

fn prompt(name: &str) -> Prompt {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("prompts")
        .join(format!("{name}.wav"));
    Prompt::load(name, &path).unwrap()
}

/// Asserts `payloads` are consecutive frames of the music on hold (PCMU),
/// from wherever the music was when the first of them was sent.
fn assert_music_on_hold(payloads: &[Vec<u8>]) {
    let moh = prompt("moh/default");
    let frames = moh.frames();
    assert!(payloads.len() > 20, "{} packets of music", payloads.len());
    let first = (0..frames)
        .find(|&i| moh.frame(Codec::Pcmu, i) == Some(payloads[0].as_slice()))
        .expect("the first packet on hold is a frame of the music on hold");
    for (n, payload) in payloads.iter().enumerate() {
        assert_eq!(
            Some(payload.as_slice()),
            moh.frame(Codec::Pcmu, (first + n) % frames),
            "packet {n} on hold is not the music's next frame"
        );
    }
}

/// The number in the `"key":N` field of an event line.
fn field_ms(line: &str, key: &str) -> u64 {
    let tag = format!("\"{key}\":");
    let at = line.find(&tag).unwrap_or_else(|| panic!("{key} in {line}")) + tag.len();
    line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

/// Sends an in-dialog re-INVITE with `direction` from the raw caller and
/// ACKs its 200; returns the 200.
fn caller_reinvite(caller: &mut Caller, version: u32, direction: &str) -> SipMsg {
    let offer = sdp_offer(
        caller.rtp_addr(),
        "0",
        &format!("a=rtpmap:0 PCMU/8000\r\na={direction}\r\n"),
    )
    .replace("o=caller 1 1", &format!("o=caller 1 {version}"));
    let reinvite = caller.in_dialog("INVITE", Some("application/sdp"), &offer);
    caller.sip.send(&reinvite);
    let ok = caller
        .sip
        .final_response("INVITE", Duration::from_secs(5))
        .expect("a final response to the re-INVITE");
    assert_eq!(ok.status(), Some(200), "{}", ok.raw);
    let cseq = caller.cseq;
    let ack = caller
        .in_dialog("ACK", None, "")
        .replace("CSeq: 1 ACK", &format!("CSeq: {cseq} ACK"));
    caller.sip.send(&ack);
    ok
}

/// Audio over a short stretch of talk, measured after it settles.
fn talk(ms: u64) -> (Instant, Instant) {
    let from = settle();
    std::thread::sleep(Duration::from_millis(ms));
    (from, Instant::now())
}

#[test]
fn a_caller_who_holds_leaves_the_agent_with_music_and_the_hold_limit_alerts_the_agent() {
    let server = Server::start(acd_config(
        "[acd]\nhold_limit = \"3s\"\nhold_warning_before = \"1s\"\nhold_action = \"alert\"\n\n\
         [queues.support]\nannounce_agent = false\n",
    ));
    let port = free_port();
    register_agent(&server, "1001", port);
    let (agent_socket, agent_rtp) = rtp_socket();
    let ear = Ear::start(agent_socket, AGENT_HZ);
    std::thread::scope(|s| {
        let server = &server;
        let agent = s.spawn(move || {
            Sipp::new("agent_alerted_on_hold")
                .port(port)
                .media()
                .args(&[
                    "-key",
                    "rtp_port",
                    &agent_rtp.to_string(),
                    "-timeout",
                    "40s",
                ])
                .run(server)
        });
        let (mut caller, _party) = call_in(server, "402", CALLER_HZ);
        server.wait_event(&["\"type\":\"call_bridged\""], Duration::from_secs(10));
        let (from, to) = talk(1000);
        let talking = ear.between(from, to);

        let hold_sent = Instant::now();
        let ok = caller_reinvite(&mut caller, 2, "sendonly");
        assert!(
            ok.body.contains("a=recvonly") || ok.body.contains("a=inactive"),
            "the caller's hold is answered recvonly: {}",
            ok.body
        );
        server.wait_event(
            &["\"type\":\"hold_started\"", "\"by\":\"caller\""],
            Duration::from_secs(3),
        );
        let music_from = settle();
        let limit = server.wait_event(
            &[
                "\"type\":\"hold_limit_reached\"",
                "\"action\":\"alert\"",
                "\"count\":1",
            ],
            Duration::from_secs(8),
        );
        let observed = hold_sent.elapsed();
        let on_hold = ear.between(music_from, Instant::now());

        caller_reinvite(&mut caller, 3, "sendrecv");
        let ended = server.wait_event(&["\"type\":\"hold_ended\""], Duration::from_secs(3));
        let (from, to) = talk(1000);
        let resumed = ear.between(from, to);
        caller.bye();
        let agent = agent.join().unwrap();
        agent.assert_ok(server);

        assert!(
            tone_share(&talking, CALLER_HZ) > 0.5,
            "before the hold the agent hears the caller"
        );
        assert_music_on_hold(&on_hold);
        assert!(
            tone_share(&resumed, CALLER_HZ) > 0.5,
            "off hold the agent hears the caller again"
        );
        // The limit is the rule: 3 s of hold, measured by the server and seen
        // no earlier by this peer.
        let held = field_ms(&limit, "held_ms");
        assert!((2_950..=3_500).contains(&held), "{limit}");
        assert!(observed >= Duration::from_millis(2_950), "{observed:?}");
        let warning = server.wait_event(&["\"type\":\"hold_warning\""], Duration::from_secs(1));
        assert!(
            (1_950..=2_500).contains(&field_ms(&warning, "held_ms")),
            "{warning}"
        );
        assert!(field_ms(&ended, "held_ms") >= 3_000, "{ended}");
        let message = agent
            .received()
            .into_iter()
            .find(|m| m.method() == Some("MESSAGE"))
            .expect("the agent's phone got the hold-limit MESSAGE");
        assert!(message.body.contains("on hold"), "{}", message.raw);
    });
    server.assert_event(&[
        "\"type\":\"call_released\"",
        "\"released_by\":\"caller\"",
        "\"holds\":1",
    ]);
}
