//! The dialog races telephony breaks on, end to end with real peers: a
//! caller who holds a bridged call, re-INVITEs crossing each other (glare),
//! a CANCEL crossing an agent's 200, peers that never ACK or never answer,
//! and a CTI event consumer that falls behind. Each test drives hotline with
//! SIPp phones (tests/sipp/) and raw peers, and checks what the other side
//! received, not only what hotline logged.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;
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

/// Audio over a short stretch of talk, measured after it settles.
fn talk(ms: u64) -> (Instant, Instant) {
    let from = settle();
    std::thread::sleep(Duration::from_millis(ms));
    (from, Instant::now())
}

#[test]
fn a_caller_who_holds_leaves_the_agent_with_music_and_the_hold_limit_alerts_the_agent() {
    let (server, port) = short_hold_server("alert");
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
        let ok = caller.reinvite(2, "sendonly");
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

        caller.reinvite(3, "sendrecv");
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

/// The time (seconds in the trace) of the first message after `after` that
/// `pick` accepts.
fn trace_time(run: &SippRun, after: f64, pick: impl Fn(&WireEvent) -> bool) -> f64 {
    run.timeline()
        .into_iter()
        .find(|e| e.at >= after && pick(e))
        .unwrap_or_else(|| panic!("no such message in the trace\n{}", run.report()))
        .at
}

#[test]
fn re_invites_crossing_on_the_agent_leg_get_491_and_hotline_retries_after_2_1_to_4_s() {
    let (server, port) = short_hold_server("resume");
    std::thread::scope(|s| {
        let server = &server;
        let agent = s.spawn(move || holding_agent("agent_hold_glare", port).run(server));
        caller("402", 14000).run_ok(server);
        let agent = agent.join().unwrap();
        agent.assert_ok(server);
        // hotline's own re-INVITE was pending when the phone's came: 491.
        let refused = trace_time(&agent, 0.0, |e| e.received && e.msg.status() == Some(491));
        let resume = trace_time(&agent, 0.0, |e| {
            e.received && e.msg.method() == Some("INVITE") && e.msg.body.contains("a=sendrecv")
        });
        assert!(resume <= refused, "491 came before hotline's re-INVITE");
        // The phone refused hotline's: hotline, the Call-ID's owner, waits
        // 2.1 to 4 s (RFC 3261 14.1) and tries again.
        let refusal = trace_time(&agent, refused, |e| {
            !e.received && e.msg.status() == Some(491)
        });
        let retry = trace_time(&agent, refusal, |e| {
            e.received && e.msg.method() == Some("INVITE")
        });
        let waited = retry - refusal;
        eprintln!("agent leg: hotline tried again {waited:.3} s after the phone's 491");
        assert!(
            (2.08..=4.3).contains(&waited),
            "hotline tried again {waited:.3} s after the phone's 491"
        );
    });
    server.assert_event(&[
        "\"type\":\"hold_limit_reached\"",
        "\"action\":\"resume\"",
        "\"count\":1",
    ]);
    let ended = server.wait_event(&["\"type\":\"hold_ended\""], Duration::from_secs(1));
    assert!(field_ms(&ended, "held_ms") >= 5_000, "{ended}");
    server.assert_event(&[
        "\"type\":\"call_released\"",
        "\"released_by\":\"caller\"",
        "\"holds\":1",
    ]);
}

/// The next request with `method` the raw caller receives within `limit`.
fn next_request(caller: &Caller, method: &str, limit: Duration) -> SipMsg {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .unwrap_or_else(|| panic!("no {method} within {limit:?}"));
        if let Some(m) = caller.sip.recv(left)
            && m.method() == Some(method)
        {
            return m;
        }
    }
}

/// A response to `request` with its Via, From, To, Call-ID and CSeq.
fn response_to(request: &SipMsg, status: &str, extra: &str, body: &str) -> String {
    let mut out = format!("SIP/2.0 {status}\r\n");
    for via in request.headers("Via") {
        out.push_str(&format!("Via: {via}\r\n"));
    }
    for name in ["From", "To", "Call-ID", "CSeq"] {
        let value = request.header(name).unwrap_or_default();
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(extra);
    out.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    out
}

/// The ACK of a non-2xx final response to `invite` (same branch and CSeq).
fn ack_of_refused(invite: &str) -> String {
    let head = invite.split("\r\n\r\n").next().unwrap_or_default();
    let mut out = String::new();
    for (i, line) in head.lines().enumerate() {
        let lower = line.to_ascii_lowercase();
        if i == 0 {
            out.push_str(&line.replacen("INVITE", "ACK", 1));
        } else if lower.starts_with("cseq:") {
            out.push_str(&line.replace("INVITE", "ACK"));
        } else if lower.starts_with("content-type:") || lower.starts_with("content-length:") {
            continue;
        } else {
            out.push_str(line);
        }
        out.push_str("\r\n");
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}

#[test]
fn re_invites_crossing_on_the_caller_leg_get_491_and_hotline_retries_within_2_s() {
    let (server, port) = short_hold_server("resume");
    let (agent_socket, agent_rtp) = rtp_socket();
    let _ear = Ear::start(agent_socket, AGENT_HZ);
    std::thread::scope(|s| {
        let server = &server;
        let agent = s.spawn(move || answering_phone(port, agent_rtp).run(server));
        let (mut caller, _party) = call_in(server, "402", CALLER_HZ);
        server.wait_event(&["\"type\":\"call_bridged\""], Duration::from_secs(10));
        caller.reinvite(2, "sendonly");
        server.wait_event(
            &["\"type\":\"hold_started\"", "\"by\":\"caller\""],
            Duration::from_secs(3),
        );

        // At the limit hotline takes the call off hold; the caller's own
        // re-INVITE crosses it.
        let resume = next_request(&caller, "INVITE", Duration::from_secs(8));
        assert!(resume.body.contains("a=sendrecv"), "{}", resume.raw);
        caller.sip.send(response_to(&resume, "100 Trying", "", ""));
        let offer = sdp_offer(
            caller.rtp_addr(),
            "0",
            "a=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n",
        )
        .replace("o=caller 1 1", "o=caller 1 3");
        let crossing = caller.in_dialog("INVITE", Some("application/sdp"), &offer);
        caller.sip.send(&crossing);
        let refused = caller
            .sip
            .final_response("INVITE", Duration::from_secs(5))
            .expect("a final response to the crossing re-INVITE");
        assert_eq!(
            refused.status(),
            Some(491),
            "hotline's own re-INVITE is pending: {}",
            refused.raw
        );
        caller.sip.send(ack_of_refused(&crossing));

        // The caller refuses hotline's: hotline, not the Call-ID's owner,
        // waits at most 2 s (RFC 3261 14.1) and tries again.
        caller
            .sip
            .send(response_to(&resume, "491 Request Pending", "", ""));
        let refusal = Instant::now();
        let retry = next_request(&caller, "INVITE", Duration::from_secs(6));
        let waited = refusal.elapsed();
        eprintln!("caller leg: hotline tried again {waited:?} after the caller's 491");
        assert_ne!(
            retry.header("CSeq"),
            resume.header("CSeq"),
            "a new re-INVITE, not a retransmission"
        );
        assert!(retry.body.contains("a=sendrecv"), "{}", retry.raw);
        let answer = sdp_offer(
            caller.rtp_addr(),
            "0",
            "a=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n",
        )
        .replace("o=caller 1 1", "o=caller 1 4");
        caller.sip.send(response_to(
            &retry,
            "200 OK",
            &format!(
                "Contact: <sip:caller@{}>\r\nContent-Type: application/sdp\r\n",
                caller.sip.local()
            ),
            &answer,
        ));
        next_request(&caller, "ACK", Duration::from_secs(3));
        assert!(
            waited <= Duration::from_millis(2_300),
            "hotline tried again {waited:?} after the caller's 491"
        );
        let ended = server.wait_event(&["\"type\":\"hold_ended\""], Duration::from_secs(3));
        assert!(field_ms(&ended, "held_ms") >= 3_000, "{ended}");
        assert!(
            server.events(&["\"type\":\"call_released\""]).is_empty(),
            "the call goes on after the glare"
        );
        caller.bye();
        agent.join().unwrap().assert_ok(server);
    });
    server.assert_event(&[
        "\"type\":\"call_released\"",
        "\"released_by\":\"caller\"",
        "\"holds\":1",
    ]);
}

#[test]
fn an_agent_answering_as_the_caller_leaves_is_acked_then_hung_up_and_offered_the_next_call() {
    let server = Server::start(acd_config("[queues.support]\nannounce_agent = false\n"));
    let port = free_port();
    register_agent(&server, "1001", port);
    std::thread::scope(|s| {
        let server = &server;
        let agent = s.spawn(move || {
            Sipp::new("agent_answers_as_cancelled")
                .port(port)
                .media()
                .run(server)
        });
        // The caller hangs up while the agent rings; the agent's 200 crosses
        // hotline's CANCEL.
        Sipp::new("caller_waits")
            .service("402")
            .media()
            .args(&["-d", "1500", "-key", "caller", "402"])
            .run_ok(server);
        let agent = agent.join().unwrap();
        agent.assert_ok(server);
        let timeline = agent.timeline();
        let at = |pick: &dyn Fn(&SipMsg) -> bool, received: bool| {
            timeline
                .iter()
                .position(|e| e.received == received && pick(&e.msg))
                .unwrap_or_else(|| panic!("missing message\n{}", agent.report()))
        };
        let answered = at(
            &|m| m.status() == Some(200) && m.cseq_method().as_deref() == Some("INVITE"),
            false,
        );
        let acked = at(&|m| m.method() == Some("ACK"), true);
        let hung_up = at(&|m| m.method() == Some("BYE"), true);
        assert!(answered < acked && acked < hung_up, "{}", agent.report());
    });
    server.assert_event(&["\"type\":\"call_abandoned\"", "\"queue\":\"support\""]);
    assert!(
        server.events(&["\"type\":\"call_connected\""]).is_empty(),
        "the caller was gone: nobody was connected"
    );
    // Ready at registration and again after the crossed answer.
    let ready = [
        "\"type\":\"agent_state_changed\"",
        "\"agent\":\"1001\"",
        "\"state\":\"ready\"",
    ];
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.events(&ready).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "agent 1001 was not made ready again:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Freed: the next caller is offered to the same agent, who answers.
    std::thread::scope(|s| {
        let server = &server;
        let agent = s.spawn(move || answering_agent(port, 200, (0, "PCMU")).run(server));
        caller("402", 1500).run_ok(server);
        agent.join().unwrap().assert_ok(server);
    });
    server.assert_event(&["\"type\":\"call_connected\"", "\"agent\":\"1001\""]);
}

/// Waits until the metrics page shows no call left: `hotline_calls_active 0`
/// and no trunk holding a place for one under its ceilings.
fn wait_no_calls(server: &Server, limit: Duration) {
    let port = server.http_port.expect("http enabled");
    let deadline = Instant::now() + limit;
    loop {
        let page = http_get(port, "/metrics");
        let calls_gone = page.lines().any(|l| l.trim() == "hotline_calls_active 0");
        let trunks_free = page
            .lines()
            .filter(|l| l.starts_with("hotline_trunk_calls_active{"))
            .all(|l| l.trim().ends_with(" 0"));
        if calls_gone && trunks_free {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "calls left on the metrics page after {limit:?}:\n{page}\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until agent `agent` has been made ready `times` times.
fn wait_ready(server: &Server, agent: &str, times: usize, limit: Duration) {
    let ready = [
        "\"type\":\"agent_state_changed\"",
        &format!("\"agent\":\"{agent}\""),
        "\"state\":\"ready\"",
    ];
    let deadline = Instant::now() + limit;
    while server.events(&ready).len() < times {
        assert!(
            Instant::now() < deadline,
            "agent {agent} was not made ready {times} times:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_caller_that_never_acks_is_released_at_64_t1_and_nothing_is_left_behind() {
    // T1 = 100 ms: timer H ends the unacknowledged answer after 6.4 s, before
    // the agent's 10 s ring limit.
    let server = Server::start(
        acd_config("[acd]\nring_cycle = \"5s\"\n\n[queues.support]\nannounce_agent = false\n")
            .sip("t1 = \"100ms\"")
            .http(true),
    );
    let port = free_port();
    register_agent(&server, "1001", port);
    std::thread::scope(|s| {
        let server = &server;
        let agent = s.spawn(move || Sipp::new("agent_no_answer").port(port).run(server));
        let mut caller = Caller::new(server);
        let offer = sdp_offer(caller.rtp_addr(), "0", "a=rtpmap:0 PCMU/8000\r\n");
        let ok = caller.invite("402", &offer);
        assert_eq!(ok.status(), Some(200), "{}", ok.raw);
        let answered = Instant::now();
        // Never ACKed: hotline repeats its 200 until timer H, then gives up.
        let mut repeats = Vec::new();
        let mut others = Vec::new();
        while answered.elapsed() < Duration::from_secs(12) {
            match caller.sip.recv(Duration::from_millis(200)) {
                Some(m) if m.status() == Some(200) => repeats.push(answered.elapsed()),
                Some(m) => others.push(m.start_line.clone()),
                None => {}
            }
        }
        let agent = agent.join().unwrap();
        agent.assert_ok(server);
        let rang = received_at(&agent, "CANCEL") - received_at(&agent, "INVITE");
        eprintln!("200 repeated at {repeats:?}; also received {others:?}; agent rang {rang:.3} s");
        assert!(repeats.len() >= 4, "the 200 was repeated: {repeats:?}");
        assert!(
            others.iter().any(|l| l.starts_with("BYE ")),
            "the confirmed but unacknowledged dialog is ended with BYE: {others:?}"
        );
        let last = *repeats.last().unwrap();
        assert!(
            last <= Duration::from_millis(6_500),
            "the 200 was repeated past 64*T1: {repeats:?}"
        );
        // The agent rang until the call was given up at 64*T1, not until
        // its own ring limit.
        assert!(
            (6.0..=8.5).contains(&rang),
            "the agent's offer was cancelled {rang:.3} s after the INVITE"
        );
    });
    server.assert_event(&["\"type\":\"call_abandoned\"", "\"queue\":\"support\""]);
    wait_ready(&server, "1001", 2, Duration::from_secs(3));
    wait_no_calls(&server, Duration::from_secs(3));
    assert_eq!(
        server.events(&["\"type\":\"call_abandoned\""]).len(),
        1,
        "the router heard of the abandon once"
    );
    assert_eq!(server.events(&["\"type\":\"call_ended\""]).len(), 1);
    assert!(
        server.events(&["\"type\":\"offer_failed\""]).is_empty(),
        "a caller who never came is not the agent's missed offer"
    );
}

/// The time (seconds in the trace) SIPp received the first `method` request.
fn received_at(run: &SippRun, method: &str) -> f64 {
    run.timeline()
        .into_iter()
        .find(|e| e.received && e.msg.method() == Some(method))
        .unwrap_or_else(|| panic!("SIPp received no {method}\n{}", run.report()))
        .at
}

/// A phone that registered from `port` and now answers nothing: every
/// request it gets is kept (first line, arrival) for `limit`, or until the
/// returned flag is set.
fn silent_phone(
    port: u16,
    limit: Duration,
) -> (
    Arc<AtomicBool>,
    std::thread::JoinHandle<Vec<(Instant, String)>>,
) {
    let socket = UdpSocket::bind(("127.0.0.1", port)).expect("the phone's port is free again");
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let halt = stop.clone();
    let thread = std::thread::spawn(move || {
        let until = Instant::now() + limit;
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        while !halt.load(Ordering::Relaxed) && Instant::now() < until {
            if let Ok((n, _)) = socket.recv_from(&mut buf)
                && let Some(m) = SipMsg::parse(&buf[..n])
            {
                got.push((Instant::now(), m.start_line));
            }
        }
        got
    });
    (stop, thread)
}

/// Agent 1001's phone never answers hotline's INVITE (lost on the way, or
/// a dead phone); 1002 answers. With `timer_b_first`, T1 is 100 ms so that
/// the INVITE transaction times out (64*T1 = 6.4 s) before the 10 s ring
/// limit; else the 6 s ring limit comes first and no CANCEL may be sent
/// without a provisional answer (RFC 3261 9.1). Either way the next agent is
/// offered the call, which goes on; returns when 1002 was offered the call,
/// counted from the first INVITE the silent phone got.
fn lost_agent_invite(timer_b_first: bool) -> Duration {
    let config = acd_config("[queues.support]\nannounce_agent = false\n");
    let config = if timer_b_first {
        config
            .extra("[acd]\nring_cycle = \"5s\"\n")
            .sip("t1 = \"100ms\"")
    } else {
        config
    };
    let server = Server::start(config);
    let (port1, port2) = (free_port(), free_port());
    // 1001 registers first, so it has been idle longest and is offered first.
    register_agents_in_order(&server, &[("1001", port1), ("1002", port2)]);
    let (stop, lost) = silent_phone(port1, Duration::from_secs(30));
    let offered_next = std::thread::scope(|s| {
        let server = &server;
        let answering = s.spawn(move || answering_agent(port2, 300, (0, "PCMU")).run(server));
        let calling = s.spawn(move || caller("402", 12_000).run(server));
        server.wait_event(
            &["\"type\":\"call_offered\"", "\"agent\":\"1002\""],
            Duration::from_secs(15),
        );
        let offered_next = Instant::now();
        calling.join().unwrap().assert_ok(server);
        answering.join().unwrap().assert_ok(server);
        offered_next
    });
    stop.store(true, Ordering::Relaxed);
    let lost = lost.join().unwrap();
    let first = lost
        .iter()
        .find(|(_, l)| l.starts_with("INVITE "))
        .map(|(at, _)| *at)
        .unwrap_or_else(|| panic!("the silent phone got no INVITE: {lost:?}"));
    let timeline: Vec<_> = lost
        .iter()
        .map(|(at, l)| (at.saturating_duration_since(first), l.as_str()))
        .collect();
    eprintln!("the silent phone got {timeline:?}");
    let invites = lost
        .iter()
        .filter(|(_, l)| l.starts_with("INVITE "))
        .count();
    assert!(
        invites >= 3,
        "hotline retransmitted the INVITE nobody answered: {timeline:?}"
    );
    assert!(
        lost.iter().all(|(_, l)| !l.starts_with("CANCEL ")),
        "no CANCEL before any provisional answer (RFC 3261 9.1): {timeline:?}"
    );
    server.assert_event(&["\"type\":\"offer_failed\"", "\"agent\":\"1001\""]);
    server.assert_event(&["\"type\":\"call_connected\"", "\"agent\":\"1002\""]);
    server.assert_event(&[
        "\"type\":\"call_released\"",
        "\"agent\":\"1002\"",
        "\"released_by\":\"caller\"",
    ]);
    if timer_b_first {
        let last = lost
            .last()
            .map(|(at, _)| at.saturating_duration_since(first));
        assert!(
            last <= Some(Duration::from_millis(6_500)),
            "the INVITE was retransmitted past 64*T1: {timeline:?}"
        );
    } else {
        server.assert_event(&[
            "\"type\":\"offer_failed\"",
            "\"agent\":\"1001\"",
            "\"outcome\":\"no_answer\"",
        ]);
    }
    offered_next.saturating_duration_since(first)
}

#[test]
fn an_agent_invite_that_is_lost_is_given_up_at_the_ring_limit_and_the_next_agent_answers() {
    let next = lost_agent_invite(false);
    assert!(
        (Duration::from_millis(5_900)..Duration::from_millis(8_000)).contains(&next),
        "the next agent was offered the call {next:?} after the lost INVITE"
    );
}

#[test]
fn an_agent_invite_that_times_out_with_timer_b_passes_the_call_to_the_next_agent() {
    let next = lost_agent_invite(true);
    assert!(
        (Duration::from_millis(6_200)..Duration::from_millis(8_500)).contains(&next),
        "the next agent was offered the call {next:?} after the lost INVITE"
    );
}

#[test]
fn a_bye_the_caller_never_answers_still_ends_and_releases_the_call_within_64_t1() {
    let server = Server::start(
        acd_config("[acd]\nwrap_up = \"1s\"\n\n[queues.support]\nannounce_agent = false\n")
            .sip("t1 = \"100ms\"")
            .http(true),
    );
    let port = free_port();
    register_agent(&server, "1001", port);
    std::thread::scope(|s| {
        let server = &server;
        // The agent hangs up 1.5 s after answering: hotline sends the caller
        // a BYE, which the caller never answers.
        let agent = s.spawn(move || {
            Sipp::new("agent_hangs_up")
                .port(port)
                .media()
                .args(&["-d", "1500"])
                .run(server)
        });
        let (caller, _party) = call_in(server, "402", CALLER_HZ);
        let listener = s.spawn(move || {
            let until = Instant::now() + Duration::from_secs(20);
            let mut byes: Vec<(Instant, SipMsg)> = Vec::new();
            while Instant::now() < until
                && byes
                    .first()
                    .is_none_or(|(at, _)| at.elapsed() < Duration::from_secs(10))
            {
                if let Some(m) = caller.sip.recv(Duration::from_millis(200))
                    && m.method() == Some("BYE")
                {
                    byes.push((Instant::now(), m));
                }
            }
            byes
        });
        agent.join().unwrap().assert_ok(server);
        // Released at once, while the BYE is still unanswered: not when its
        // transaction times out.
        let hung_up = Instant::now();
        server.wait_event(
            &[
                "\"type\":\"call_released\"",
                "\"agent\":\"1001\"",
                "\"released_by\":\"agent\"",
            ],
            Duration::from_secs(3),
        );
        server.wait_event(
            &["\"type\":\"call_ended\"", "\"released_by\":\"agent\""],
            Duration::from_secs(3),
        );
        wait_no_calls(server, Duration::from_secs(3));
        let released = hung_up.elapsed();
        let received = listener.join().unwrap();
        let first = received.first().expect("hotline's BYE to the caller").0;
        let byes: Vec<Duration> = received.iter().map(|(at, _)| *at - first).collect();
        let cseqs: std::collections::HashSet<_> =
            received.iter().map(|(_, m)| m.header("CSeq")).collect();
        assert_eq!(cseqs.len(), 1, "one BYE, retransmitted: {cseqs:?}");
        eprintln!(
            "BYE sent at {byes:?}; released within {released:?} of the agent's phone leaving"
        );
        assert!(
            first + Duration::from_millis(6_400) > hung_up + released,
            "released only after the BYE timed out"
        );
        assert!(byes.len() >= 4, "the BYE was retransmitted: {byes:?}");
        assert!(
            byes.last() <= Some(&Duration::from_millis(6_500)),
            "the BYE was retransmitted past 64*T1: {byes:?}"
        );
    });
    // The agent is free after its wrap-up; the call ended once.
    wait_ready(&server, "1001", 2, Duration::from_secs(5));
    assert_eq!(server.events(&["\"type\":\"call_released\""]).len(), 1);
    assert_eq!(server.events(&["\"type\":\"call_ended\""]).len(), 1);
}

const ADMIN: &str = "races-admin-token";

/// A config with an admin API token and `api` lines of the `[api]` section.
fn api_config(api: &str) -> TestConfig {
    use sha2::Digest;
    let admin = hex::encode(sha2::Sha256::digest(ADMIN.as_bytes()));
    acd_config(&format!(
        "[api]\n{api}\n[api.tokens.admin]\nrole = \"admin\"\nsha256 = \"{admin}\"\n"
    ))
    .http(true)
}

/// A live-event journal that holds only a few events (2 KiB).
fn small_journal_config() -> TestConfig {
    api_config("journal_max_bytes = 2048\njournal_entry_max_bytes = 512")
}

/// Puts agent 1001 not ready (for `reason`) and ready again over the API:
/// two events.
fn toggle_agent_for(port: u16, reason: &str) {
    let not_ready = format!(r#"{{"reason":"{reason}"}}"#);
    for (action, body) in [("not-ready", Some(not_ready.as_str())), ("ready", None)] {
        let (status, reply) = http_request(
            port,
            "POST",
            &format!("/api/v1/agents/1001/{action}"),
            Some(ADMIN),
            body,
        );
        assert_eq!(status, 200, "{action}: {reply}");
    }
}

fn toggle_agent(port: u16) {
    toggle_agent_for(port, "lunch");
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn a_cti_client_resuming_from_before_the_journal_is_told_the_gap_and_gets_what_is_left() {
    let server = Server::start(small_journal_config());
    let port = server.http_port.unwrap();
    register_agent(&server, "1001", free_port());
    let mut desk = WsClient::connect(port, &format!("/api/v1/events?token={ADMIN}"))
        .expect("the event stream");
    toggle_agent(port);
    let seen = desk.wait_for(&["\"state\":\"ready\""], Duration::from_secs(3));
    let last = json(seen.last().unwrap())["cursor"].as_u64().unwrap();
    drop(desk);

    // Away for longer than the journal reaches back.
    for _ in 0..15 {
        toggle_agent(port);
    }
    let newest = last + 30;
    let mut desk = WsClient::connect(port, &format!("/api/v1/events?token={ADMIN}&since={last}"))
        .expect("the event stream again");
    let gap = json(
        &desk
            .next_text(Duration::from_secs(3))
            .expect("a first message"),
    );
    assert_eq!(gap["type"], "gap", "{gap}");
    assert_eq!(gap["since"].as_u64(), Some(last), "{gap}");
    let resumes_at = gap["resumes_at"]
        .as_u64()
        .expect("where the stream resumes");
    assert!(
        resumes_at > last + 1 && resumes_at <= newest,
        "missed {} to {resumes_at} of {newest}: {gap}",
        last + 1
    );
    // Then every event the journal still held, in order and without holes,
    // up to the newest.
    let mut expected = resumes_at;
    while expected <= newest {
        let text = desk
            .next_text(Duration::from_secs(3))
            .unwrap_or_else(|| panic!("no event {expected} after the gap"));
        let cursor = json(&text)["cursor"].as_u64().unwrap();
        assert_eq!(cursor, expected, "{text}");
        expected += 1;
    }
}

/// The value of an unlabelled metric on the page (0 when absent).
fn metric(port: u16, name: &str) -> f64 {
    http_get(port, "/metrics")
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// What an event stream client that reads everything saw: the cursors in
/// order, and whether the server closed the stream on it.
fn keep_reading(mut client: WsClient, stop: &AtomicBool) -> (Vec<u64>, bool) {
    let mut cursors = Vec::new();
    // Bounded even if the test panics before it says stop (the scope it
    // runs in would otherwise wait for ever).
    let until = Instant::now() + Duration::from_secs(180);
    loop {
        if Instant::now() > until {
            return (cursors, false);
        }
        let asked = Instant::now();
        match client.next_text(Duration::from_millis(300)) {
            Some(text) => {
                if let Some(cursor) = json(&text)["cursor"].as_u64() {
                    cursors.push(cursor);
                }
            }
            // A read that fails at once is a closed stream, not a quiet one.
            None if asked.elapsed() < Duration::from_millis(250) => return (cursors, true),
            None if stop.load(Ordering::Relaxed) => return (cursors, false),
            None => {}
        }
    }
}

#[test]
fn a_cti_client_that_stops_reading_is_dropped_and_counted_while_one_that_reads_keeps_up() {
    // Big events (a long not-ready reason) fill the stuck client's socket
    // buffers with few requests.
    let reason = "x".repeat(6_000);
    let server = Server::start(api_config(&format!(
        "not_ready_reasons = [\"lunch\", \"{reason}\"]"
    )));
    let port = server.http_port.unwrap();
    register_agent(&server, "1001", free_port());
    let path = format!("/api/v1/events?token={ADMIN}");
    let mut stuck = WsClient::connect(port, &path).expect("the event stream");
    let reader = WsClient::connect(port, &path).expect("the event stream");
    let stop = AtomicBool::new(false);
    let dropped = "hotline_api_event_clients_dropped_total";
    let (read, closed, toggles, stuck_heard) = std::thread::scope(|s| {
        // A failed check below still lets the reader go before the scope
        // waits for it.
        let _stop = RaiseOnDrop(&stop);
        let reading = s.spawn(|| keep_reading(reader, &stop));
        let started = Instant::now();
        let mut toggles = 0;
        while metric(port, dropped) < 1.0 {
            // The server gives a client that takes nothing 5 s: the toggles
            // go on (however fast the machine makes them) until that ran out.
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "the client that stopped reading was never dropped ({toggles} toggles)"
            );
            for _ in 0..25 {
                toggle_agent_for(port, &reason);
                toggles += 1;
            }
        }
        // One more event after the drop, for the reader to see.
        toggle_agent(port);
        server.wait_event(&["\"reason\":\"lunch\""], Duration::from_secs(3));
        // The stuck client finds what was buffered for it, then the end of
        // the stream.
        let mut stuck_heard = Vec::new();
        let ended = loop {
            let asked = Instant::now();
            match stuck.next_text(Duration::from_secs(3)) {
                Some(text) => stuck_heard.push(json(&text)["cursor"].as_u64()),
                None => break asked.elapsed() < Duration::from_millis(2_900),
            }
        };
        assert!(ended, "the stuck client's stream was not closed");
        stop.store(true, Ordering::Relaxed);
        let (read, closed) = reading.join().unwrap();
        (read, closed, toggles, stuck_heard)
    });
    eprintln!(
        "dropped after {toggles} toggles; the stuck client had {} events buffered, the reader read {}",
        stuck_heard.len(),
        read.len()
    );
    assert_eq!(
        metric(port, dropped),
        1.0,
        "only the stuck client was dropped"
    );
    assert!(!closed, "the client that kept reading was dropped");
    assert!(
        read.windows(2).all(|w| w[1] == w[0] + 1),
        "the reader missed events"
    );
    assert!(
        read.len() >= 2 * toggles,
        "{} of {toggles} toggles",
        read.len()
    );
    assert!(
        stuck_heard.len() < read.len(),
        "the stuck client got everything: {} of {}",
        stuck_heard.len(),
        read.len()
    );
}

#[test]
fn an_agent_answering_as_the_ring_limit_cancels_is_acked_then_hung_up_and_the_next_agent_answers() {
    let server = Server::start(acd_config("[queues.support]\nannounce_agent = false\n"));
    let (port1, port2) = (free_port(), free_port());
    // 1001 registers first, so it has been idle longest and is offered first.
    register_agents_in_order(&server, &[("1001", port1), ("1002", port2)]);
    std::thread::scope(|s| {
        let server = &server;
        // 1001 picks up only as the 6 s ring limit takes the offer back.
        let late = s.spawn(move || {
            Sipp::new("agent_answers_as_cancelled")
                .port(port1)
                .media()
                .args(&["-timeout", "30s"])
                .run(server)
        });
        let next = s.spawn(move || answering_agent(port2, 300, (0, "PCMU")).run(server));
        caller("402", 10_000).run_ok(server);
        let late = late.join().unwrap();
        late.assert_ok(server);
        next.join().unwrap().assert_ok(server);
        let rang = received_at(&late, "CANCEL") - received_at(&late, "INVITE");
        assert!(
            (5.9..=6.5).contains(&rang),
            "CANCEL came {rang:.3} s after the INVITE, not at the 6 s ring limit"
        );
        let timeline = late.timeline();
        let answered = timeline
            .iter()
            .position(|e| {
                !e.received
                    && e.msg.status() == Some(200)
                    && e.msg.cseq_method().as_deref() == Some("INVITE")
            })
            .expect("the late 200");
        let acked = timeline
            .iter()
            .position(|e| e.received && e.msg.method() == Some("ACK"))
            .expect("hotline's ACK");
        let hung_up = timeline
            .iter()
            .position(|e| e.received && e.msg.method() == Some("BYE"))
            .expect("hotline's BYE");
        assert!(answered < acked && acked < hung_up, "{}", late.report());
    });
    server.assert_event(&[
        "\"type\":\"offer_failed\"",
        "\"agent\":\"1001\"",
        "\"outcome\":\"no_answer\"",
    ]);
    server.assert_event(&["\"type\":\"call_connected\"", "\"agent\":\"1002\""]);
    assert!(
        server
            .events(&["\"type\":\"call_connected\"", "\"agent\":\"1001\""])
            .is_empty(),
        "the late answer was not connected"
    );
    server.assert_event(&[
        "\"type\":\"call_released\"",
        "\"agent\":\"1002\"",
        "\"released_by\":\"caller\"",
    ]);
}
