//! Supervisor monitoring (rulebook Q2) with real audio: the caller, the agent
//! and the supervisor each send a tone of their own, and what each one
//! receives is checked by frequency in every mode: `listen` (the supervisor
//! hears both, nobody hears it), `whisper` (the agent hears it) and `barge`
//! (everyone hears everyone). The agent and supervisor phones are SIPp for
//! the signalling, with their audio on sockets of this test.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use hotline::media::g711::Codec;

const ADMIN: &str = "monitor-admin-token";
const CALLER_HZ: f64 = 400.0;
const AGENT_HZ: f64 = 1000.0;
const SUPERVISOR_HZ: f64 = 1700.0;

fn sha256(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// Agent 1001 serves support; 2001 is a supervisor's phone account.
fn monitor_config() -> TestConfig {
    let mut config = acd_config(&format!(
        "[acd]\nwrap_up = \"1s\"\n\
         [queues.support]\nannounce_agent = false\n[queues.sales]\n\
         [monitor]\nsupervisors = [\"2001\"]\n\
         [api.tokens.admin]\nrole = \"admin\"\nsha256 = \"{}\"\n",
        sha256(ADMIN)
    ));
    config.agents.push(("2001".into(), "demo2001".into()));
    config.http(true)
}

fn register(server: &Server, account: &str, port: u16) {
    Sipp::new("register_auth")
        .service(account)
        .auth(account, &format!("demo{account}"))
        .port(port)
        .run_ok(server);
}

/// Decoded audio packets with their arrival times.
type Heard = Arc<Mutex<Vec<(Instant, Vec<i16>)>>>;

/// One party's audio: sends its tone every 20 ms (to `peer`, or to whoever
/// sent it audio first) and keeps what it receives with arrival times.
struct Party {
    received: Heard,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Party {
    fn start(socket: UdpSocket, hz: f64, peer: Option<SocketAddr>) -> Party {
        let received: Heard = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (received.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            socket
                .set_read_timeout(Some(Duration::from_millis(5)))
                .unwrap();
            let mut peer = peer;
            let mut next = Instant::now();
            let (mut seq, mut t) = (0u16, 0usize);
            let ssrc: u32 = rand_ssrc(hz);
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::Relaxed) {
                if let Ok((n, from)) = socket.recv_from(&mut buf)
                    && n > 12
                    && buf[1] & 0x7f == 0
                {
                    peer.get_or_insert(from);
                    let mut pcm = vec![0i16; n - 12];
                    Codec::Pcmu.decode(&buf[12..n], &mut pcm);
                    r.lock().unwrap().push((Instant::now(), pcm));
                }
                if Instant::now() >= next {
                    next += Duration::from_millis(20);
                    if let Some(peer) = peer {
                        let pcm: Vec<i16> = (0..160)
                            .map(|i| {
                                let x = (t + i) as f64 / 8000.0;
                                (8000.0 * (2.0 * std::f64::consts::PI * hz * x).sin()) as i16
                            })
                            .collect();
                        t += 160;
                        let mut p = vec![0x80, 0];
                        p.extend_from_slice(&seq.to_be_bytes());
                        p.extend_from_slice(&((seq as u32) * 160).to_be_bytes());
                        p.extend_from_slice(&ssrc.to_be_bytes());
                        let mut payload = [0u8; 160];
                        Codec::Pcmu.encode(&pcm, &mut payload);
                        p.extend_from_slice(&payload);
                        let _ = socket.send_to(&p, peer);
                        seq = seq.wrapping_add(1);
                    }
                }
            }
        });
        Party {
            received,
            stop,
            thread: Some(thread),
        }
    }

    /// The share of the audio received in `from..to` that is at `hz`
    /// (about 1 for a pure tone, 0.5 for one of two equal tones, 0 absent).
    fn share(&self, hz: f64, from: Instant, to: Instant) -> f64 {
        let received = self.received.lock().unwrap();
        let blocks: Vec<&Vec<i16>> = received
            .iter()
            .filter(|(at, pcm)| *at >= from && *at < to && pcm.len() == 160)
            .map(|(_, pcm)| pcm)
            .collect();
        assert!(
            blocks.len() > 20,
            "too little audio received in the window: {} packets",
            blocks.len()
        );
        let (mut tone, mut energy) = (0.0, 0.0);
        for block in blocks {
            tone += goertzel(block, hz);
            energy += block.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() * 80.0;
        }
        if energy == 0.0 { 0.0 } else { tone / energy }
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

fn rand_ssrc(hz: f64) -> u32 {
    0x5000_0000 | hz as u32
}

/// Squared magnitude of `hz` in one block (Goertzel).
fn goertzel(block: &[i16], hz: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * hz / 8000.0;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in block {
        let s0 = f64::from(x) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - coeff * s1 * s2
}

fn rtp_socket() -> (UdpSocket, u16) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = socket.local_addr().unwrap().port();
    (socket, port)
}

fn answering_phone(port: u16, rtp_port: u16) -> Sipp {
    Sipp::new("phone_answer_rtp").port(port).args(&[
        "-key",
        "rtp_port",
        &rtp_port.to_string(),
        "-mi",
        "127.0.0.1",
        "-mp",
        &free_media_port().to_string(),
        "-timeout",
        "40s",
    ])
}

/// A caller to 402 whose audio is a tone; returns it with its audio party.
fn call_in(server: &Server) -> (Caller, Party) {
    let mut caller = Caller::new(server);
    let offer = sdp_offer(caller.rtp_addr(), "0", "a=rtpmap:0 PCMU/8000\r\n");
    let ok = caller.invite("402", &offer);
    assert_status(&Some(ok), 200, "INVITE to 402");
    caller.ack("");
    let party = Party::start(
        caller.rtp.try_clone().unwrap(),
        CALLER_HZ,
        caller.server_rtp,
    );
    (caller, party)
}

fn call_id_of(event: &str) -> String {
    let json = &event[event.find('{').expect("an event line carries JSON")..];
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    v["call_id"].as_str().unwrap().to_string()
}

fn settle() -> Instant {
    std::thread::sleep(Duration::from_millis(400));
    Instant::now()
}

/// What the three parties received, and the moments the mode changed.
struct Session {
    caller: Party,
    agent: Party,
    supervisor: Party,
    /// Each mode's window, from when it settled to just before the next
    /// change was asked for ("none": bridged, nobody monitoring yet).
    windows: Vec<(&'static str, Instant, Instant)>,
}

impl Session {
    /// Checks who hears whom in each window: (listener, tone, window start,
    /// window end, expected audible).
    fn check(&self) {
        let (c, a, s) = (&self.caller, &self.agent, &self.supervisor);
        assert_eq!(self.windows.len(), 4);
        for &(mode, from, to) in &self.windows {
            let expect = |party: &Party, who: &str, hz: f64, audible: bool| {
                let share = party.share(hz, from, to);
                if audible {
                    assert!(
                        share > 0.12,
                        "{who} should hear {hz} Hz in {mode}: share {share:.3}"
                    );
                } else {
                    assert!(
                        share < 0.02,
                        "{who} should not hear {hz} Hz in {mode}: share {share:.3}"
                    );
                }
            };
            expect(c, "the caller", AGENT_HZ, true);
            expect(c, "the caller", SUPERVISOR_HZ, mode == "barge");
            expect(a, "the agent", CALLER_HZ, true);
            expect(
                a,
                "the agent",
                SUPERVISOR_HZ,
                mode == "whisper" || mode == "barge",
            );
            if mode != "none" {
                expect(s, "the supervisor", CALLER_HZ, true);
                expect(s, "the supervisor", AGENT_HZ, true);
            }
        }
    }

    fn stop(self) {
        for party in [self.caller, self.agent, self.supervisor] {
            party.stop();
        }
    }
}

#[test]
fn a_supervisor_listens_whispers_and_barges_from_the_api() {
    let server = Server::start(monitor_config());
    let http = server.http_port.unwrap();
    let (agent_port, supervisor_port) = (free_port(), free_port());
    register_agent(&server, "1001", agent_port);
    register(&server, "2001", supervisor_port);
    let (agent_socket, agent_rtp) = rtp_socket();
    let (supervisor_socket, supervisor_rtp) = rtp_socket();
    let agent = Party::start(agent_socket, AGENT_HZ, None);
    let supervisor = Party::start(supervisor_socket, SUPERVISOR_HZ, None);

    let session = std::thread::scope(|s| {
        let agent_phone = s.spawn(|| answering_phone(agent_port, agent_rtp).run(&server));
        let supervisor_phone =
            s.spawn(|| answering_phone(supervisor_port, supervisor_rtp).run(&server));
        let (mut caller_sip, caller) = call_in(&server);
        let bridged = server.wait_event(&["\"type\":\"call_bridged\""], Duration::from_secs(10));
        let id = call_id_of(&bridged);
        let before = settle();
        std::thread::sleep(Duration::from_millis(1200));
        let mut windows = vec![("none", before, Instant::now())];

        let monitor = format!("/api/v1/calls/{id}/monitor");
        // Agents never monitor; a mode must be one of the three.
        let agent_token = http_request(
            http,
            "POST",
            &monitor,
            Some("not-a-token"),
            Some(r#"{"mode":"listen","phone":"2001"}"#),
        );
        assert_eq!(agent_token.0, 401);
        let (status, _) = http_request(
            http,
            "POST",
            &monitor,
            Some(ADMIN),
            Some(r#"{"mode":"shout","phone":"2001"}"#),
        );
        assert_eq!(status, 422);
        let (status, body) = http_request(
            http,
            "POST",
            &monitor,
            Some(ADMIN),
            Some(r#"{"mode":"listen","phone":"2001"}"#),
        );
        assert_eq!(status, 202, "{body}");
        server.wait_event(
            &[
                "\"type\":\"monitor_started\"",
                "\"mode\":\"listen\"",
                "\"via\":\"api\"",
                "\"supervisor\":\"2001\"",
            ],
            Duration::from_secs(5),
        );
        let listen = settle();
        std::thread::sleep(Duration::from_millis(1500));
        windows.push(("listen", listen, Instant::now()));

        let patch = |mode: &str| {
            let (status, body) = http_request(
                http,
                "PATCH",
                &monitor,
                Some(ADMIN),
                Some(&format!(r#"{{"mode":"{mode}"}}"#)),
            );
            assert_eq!(status, 200, "{body}");
            server.wait_event(
                &[
                    "\"type\":\"monitor_mode_changed\"",
                    &format!("\"mode\":\"{mode}\""),
                ],
                Duration::from_secs(3),
            );
            settle()
        };
        let whisper = patch("whisper");
        std::thread::sleep(Duration::from_millis(1500));
        windows.push(("whisper", whisper, Instant::now()));
        let barge = patch("barge");
        std::thread::sleep(Duration::from_millis(1500));
        windows.push(("barge", barge, Instant::now()));

        let (status, body) = http_request(http, "DELETE", &monitor, Some(ADMIN), None);
        assert_eq!(status, 200, "{body}");
        server.wait_event(
            &["\"type\":\"monitor_ended\"", "\"reason\":\"stopped\""],
            Duration::from_secs(3),
        );
        let (status, _) = http_request(http, "DELETE", &monitor, Some(ADMIN), None);
        assert_eq!(status, 409, "nothing left to stop");
        supervisor_phone.join().unwrap().assert_ok(&server);
        caller_sip.bye();
        agent_phone.join().unwrap().assert_ok(&server);
        Session {
            caller,
            agent,
            supervisor,
            windows,
        }
    });
    session.check();
    session.stop();
    let metrics = http_get(http, "/metrics");
    assert!(
        metrics.contains("hotline_monitor_sessions_total{mode=\"listen\",via=\"api\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("hotline_monitor_mode_changes_total{mode=\"barge\"} 1"));
    assert!(metrics.contains("hotline_monitor_sessions_active 0"));
}

#[test]
fn a_supervisor_phone_dials_a_feature_code_and_whispers_with_a_key() {
    let server = Server::start(monitor_config());
    let http = server.http_port.unwrap();
    let agent_port = free_port();
    register_agent(&server, "1001", agent_port);
    let (agent_socket, agent_rtp) = rtp_socket();
    let (supervisor_socket, supervisor_rtp) = rtp_socket();
    let agent = Party::start(agent_socket, AGENT_HZ, None);
    let supervisor = Party::start(supervisor_socket, SUPERVISOR_HZ, None);
    let dial = |account: &str, code: &str| {
        Sipp::new("supervisor_dials")
            .service(code)
            .auth(account, &format!("demo{account}"))
            .args(&[
                "-key",
                "user",
                account,
                "-key",
                "rtp_port",
                &supervisor_rtp.to_string(),
                "-d",
                "1500",
                "-mi",
                "127.0.0.1",
                "-mp",
                &free_media_port().to_string(),
            ])
    };

    // Nobody to monitor yet: the agent is on no call.
    let run = dial("2001", "*411001").run(&server);
    assert!(!run.success());
    assert!(run.messages.contains("404 Not Found"), "{}", run.messages);

    let windows = std::thread::scope(|s| {
        let agent_phone = s.spawn(|| answering_phone(agent_port, agent_rtp).run(&server));
        let (mut caller_sip, caller) = call_in(&server);
        server.wait_event(&["\"type\":\"call_bridged\""], Duration::from_secs(10));
        // An agent's account is not a supervisor's: 403 after the challenge.
        let run = dial("1002", "*411001").run(&server);
        assert!(run.messages.contains("403 Forbidden"), "{}", run.messages);
        let started = Instant::now();
        let supervisor_phone = s.spawn(|| dial("2001", "*411001").run(&server));
        server.wait_event(
            &[
                "\"type\":\"monitor_started\"",
                "\"via\":\"phone\"",
                "\"mode\":\"listen\"",
            ],
            Duration::from_secs(5),
        );
        let listen = settle();
        server.wait_event(
            &["\"type\":\"monitor_mode_changed\"", "\"mode\":\"whisper\""],
            Duration::from_secs(5),
        );
        let listen_end = Instant::now() - Duration::from_millis(100);
        let whisper = settle();
        server.wait_event(
            &[
                "\"type\":\"monitor_ended\"",
                "\"reason\":\"supervisor_hung_up\"",
            ],
            Duration::from_secs(5),
        );
        let whisper_end = Instant::now() - Duration::from_millis(100);
        supervisor_phone.join().unwrap().assert_ok(&server);
        assert!(started.elapsed() < Duration::from_secs(8));
        caller_sip.bye();
        agent_phone.join().unwrap().assert_ok(&server);
        (
            caller,
            vec![
                ("listen", listen, listen_end),
                ("whisper", whisper, whisper_end),
            ],
        )
    });
    let (caller, windows) = windows;
    for (mode, from, to) in windows {
        assert!(
            supervisor.share(CALLER_HZ, from, to) > 0.12,
            "{mode}: supervisor hears the caller"
        );
        assert!(
            supervisor.share(AGENT_HZ, from, to) > 0.12,
            "{mode}: supervisor hears the agent"
        );
        let heard = agent.share(SUPERVISOR_HZ, from, to);
        match mode {
            "listen" => assert!(
                heard < 0.02,
                "the agent hears nobody else in listen: {heard:.3}"
            ),
            _ => assert!(heard > 0.12, "the agent hears the whisper: {heard:.3}"),
        }
        let leaked = caller.share(SUPERVISOR_HZ, from, to);
        assert!(
            leaked < 0.02,
            "{mode}: the caller never hears a whisper: {leaked:.3}"
        );
    }
    for party in [caller, agent, supervisor] {
        party.stop();
    }
    let metrics = http_get(http, "/metrics");
    assert!(
        metrics.contains("hotline_monitor_sessions_total{mode=\"listen\",via=\"phone\"} 1"),
        "{metrics}"
    );
}
