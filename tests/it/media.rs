//! Media and IVR against real peers: SIPp callers pressing keys (RFC 4733 from
//! a pcap, SIP INFO), and a raw UA in this test that checks the RTP hotline
//! sends is really the prompt, paced every 20 ms, and drives the balance
//! self-service with its own RTP telephone-events.

use std::path::Path;
use std::time::Duration;

use crate::support::caller::media_of;
use crate::support::*;
use hotline::media::g711::Codec;
use hotline::media::prompt::Prompt;

/// The default config's `main` flow, with its lookup pointed at the test's HTTP port.
fn main_flow() -> String {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/hotline.toml"))
            .unwrap();
    let start = text
        .find("[ivr.main]")
        .expect("default config has [ivr.main]");
    let end = text[start..]
        .find("# --- Agents")
        .map(|i| start + i)
        .unwrap_or(text.len());
    text[start..end].replace("127.0.0.1:8080", "127.0.0.1:{http_port}")
}

fn ivr_server() -> Server {
    Server::start(TestConfig::new().http(true).extra(&main_flow()))
}

fn prompt(name: &str) -> Prompt {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("prompts")
        .join(format!("{name}.wav"));
    Prompt::load(name, &path).unwrap()
}

/// Runs a SIPp caller scenario against 400 (the main flow) and returns the server.
fn sipp_calls_the_ivr(scenario: &str) -> Server {
    let server = ivr_server();
    Sipp::new(scenario).service("400").media().run_ok(&server);
    server
}

#[test]
fn sipp_caller_presses_2_as_rfc4733_from_a_pcap_and_reaches_support() {
    let pcap = Path::new("/usr/share/sip-tester/dtmf_2833_2.pcap");
    assert!(pcap.exists(), "{} is shipped by sip-tester", pcap.display());
    let server = sipp_calls_the_ivr("ivr_dtmf_pcap");
    server.assert_event(&[
        "\"type\":\"dtmf_received\"",
        "\"digit\":\"2\"",
        "\"via\":\"rfc4733\"",
    ]);
    server.assert_event(&["\"type\":\"ivr_node_entered\"", "\"node\":\"support\""]);
    server.assert_event(&["\"type\":\"ivr_exited\"", "\"exit\":\"queue:support\""]);
}

#[test]
fn sipp_caller_presses_2_with_sip_info_and_reaches_support() {
    let server = sipp_calls_the_ivr("ivr_dtmf_info");
    server.assert_event(&[
        "\"type\":\"dtmf_received\"",
        "\"digit\":\"2\"",
        "\"via\":\"info\"",
    ]);
    server.assert_event(&["\"type\":\"ivr_node_entered\"", "\"node\":\"support\""]);
}

#[test]
fn sipp_caller_gets_the_balance_the_lookup_returned_and_hotline_hangs_up() {
    let server = sipp_calls_the_ivr("ivr_balance_info");
    server.assert_event(&[
        "\"type\":\"prompt_started\"",
        "\"prompts\":[\"balance_is\",\"digit_2\",\"digit_5\",\"digit_0\",\"point\",\"digit_7\",\"digit_5\"]",
    ]);
    server.assert_event(&["\"type\":\"ivr_exited\"", "\"exit\":\"hangup\""]);
    server.assert_event(&["\"type\":\"call_ended\"", "\"released_by\":\"system\""]);
}

#[test]
fn the_greeting_really_arrives_over_rtp_paced_and_followed_by_music_without_a_gap() {
    let server = Server::start(TestConfig::new());
    let mut caller = Caller::new(&server);
    let offer = sdp_offer(
        caller.rtp_addr(),
        "0 101",
        "a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n",
    );
    let ok = caller.invite("401", &offer);
    assert_eq!(ok.status(), Some(200), "{}", ok.raw);
    assert!(
        caller.server_rtp.is_some(),
        "200 OK without media: {}",
        ok.body
    );
    caller.ack("");
    // Symmetric RTP: hotline latches onto where our packets come from.
    let greeting = prompt("en/greeting");
    let moh = prompt("moh/default");
    let frames = greeting.frames();
    let packets = caller.receive(frames + 25);
    caller.bye();

    for (i, (_, pt, _, _, payload)) in packets.iter().enumerate().take(frames) {
        assert_eq!(*pt, 0, "PCMU payload type");
        assert_eq!(
            payload.as_slice(),
            greeting.frame(Codec::Pcmu, i).unwrap(),
            "frame {i} of {frames} is not the greeting's"
        );
    }
    for (i, (_, _, _, _, payload)) in packets[frames..].iter().enumerate() {
        assert_eq!(
            payload.as_slice(),
            moh.frame(Codec::Pcmu, i).unwrap(),
            "music on hold frame {i} does not follow the greeting at once"
        );
    }
    for w in packets.windows(2) {
        assert_eq!(w[1].2, w[0].2.wrapping_add(1), "sequence numbers");
        assert_eq!(w[1].3, w[0].3.wrapping_add(160), "timestamps");
    }
    let span = packets.last().unwrap().0 - packets[0].0;
    let expected = Duration::from_millis(20 * (packets.len() as u64 - 1));
    // Arrival times are taken by this test's reader: on a loaded machine it
    // may start reading late and find the first packets queued, so the span
    // can look shorter; a pacer that bursts would be shorter by far more.
    assert!(
        span + Duration::from_millis(400) >= expected
            && span <= expected + Duration::from_millis(200),
        "{} packets took {span:?}, expected about {expected:?}",
        packets.len()
    );
    // real audio, not silence
    let mut pcm = vec![0i16; 160];
    let energy: f64 = packets[..frames]
        .iter()
        .map(|p| {
            Codec::Pcmu.decode(&p.4, &mut pcm);
            pcm.iter()
                .map(|&s| f64::from(s) * f64::from(s))
                .sum::<f64>()
                / 160.0
        })
        .sum::<f64>()
        / frames as f64;
    assert!(
        energy.sqrt() > 500.0,
        "greeting RMS {} is near silence",
        energy.sqrt()
    );
    server.assert_event(&[
        "\"type\":\"media_started\"",
        "\"codec\":\"PCMU\"",
        "\"telephone_event\":101",
    ]);
}

#[test]
fn balance_self_service_with_rtp_dtmf_reads_out_what_the_lookup_returned() {
    let server = ivr_server();
    let mut caller = Caller::new(&server);
    let offer = sdp_offer(
        caller.rtp_addr(),
        "0 101",
        "a=rtpmap:101 telephone-event/8000\r\n",
    );
    assert_eq!(caller.invite("400", &offer).status(), Some(200));
    caller.ack("");
    caller.receive(5); // the greeting is playing
    for key in "9".chars() {
        caller.press(key);
    }
    server.assert_event(&["\"type\":\"ivr_node_entered\"", "\"node\":\"account\""]);
    for key in "1001#".chars() {
        caller.press(key);
    }
    server.assert_event(&["\"type\":\"ivr_node_entered\"", "\"node\":\"pin\""]);
    for key in "1234#".chars() {
        caller.press(key);
    }
    server.assert_event(&[
        "\"type\":\"prompt_started\"",
        "\"prompts\":[\"balance_is\",\"digit_2\",\"digit_5\",\"digit_0\",\"point\",\"digit_7\",\"digit_5\"]",
    ]);
    caller.bye();
}

#[test]
fn a_wrong_pin_goes_to_the_pin_wrong_branch() {
    let server = ivr_server();
    let mut caller = Caller::new(&server);
    let offer = sdp_offer(caller.rtp_addr(), "0", "");
    assert_eq!(caller.invite("400", &offer).status(), Some(200));
    caller.ack("");
    caller.receive(3); // answered and confirmed
    for key in ['9', '1', '0', '0', '1', '#', '9', '9', '9', '9', '#'] {
        caller.info(key);
    }
    server.assert_event(&["\"type\":\"ivr_node_entered\"", "\"node\":\"pin_wrong\""]);
    caller.bye();
}

#[test]
fn no_common_codec_is_488_with_a_warning() {
    let server = Server::start(TestConfig::new());
    let mut caller = Caller::new(&server);
    let offer = sdp_offer(
        caller.rtp_addr(),
        "18 9",
        "a=rtpmap:18 G729/8000\r\na=rtpmap:9 G722/8000\r\n",
    );
    let r = caller.invite("401", &offer);
    assert_eq!(r.status(), Some(488), "{}", r.raw);
    let warning = r.header("Warning").expect("488 carries a Warning");
    assert!(warning.starts_with("305 "), "{warning}");
}

#[test]
fn delayed_offer_is_answered_with_an_offer_and_the_ack_carries_the_answer() {
    let server = Server::start(TestConfig::new());
    let mut caller = Caller::new(&server);
    let ok = caller.invite("401", "");
    assert_eq!(ok.status(), Some(200), "{}", ok.raw);
    assert!(
        ok.body.contains("m=audio "),
        "200 OK must carry our offer: {}",
        ok.body
    );
    assert!(ok.body.contains("a=rtpmap:8 PCMA/8000"), "{}", ok.body);
    // answer with PCMA only
    let answer = sdp_offer(caller.rtp_addr(), "8", "a=rtpmap:8 PCMA/8000\r\n");
    caller.ack(&answer);
    let packets = caller.receive(10);
    assert!(packets.iter().all(|p| p.1 == 8), "PCMA as answered");
    let greeting = prompt("en/greeting");
    assert_eq!(
        packets[0].4.as_slice(),
        greeting.frame(Codec::Pcma, 0).unwrap()
    );
    caller.bye();
}

#[test]
fn re_invite_to_hold_stops_our_media_and_resuming_continues_the_stream() {
    let server = Server::start(TestConfig::new());
    let mut caller = Caller::new(&server);
    let offer = sdp_offer(caller.rtp_addr(), "0", "a=sendrecv\r\n");
    assert_eq!(caller.invite("401", &offer).status(), Some(200));
    caller.ack("");
    let before = caller.receive(3);

    let ok = caller.reinvite(2, "sendonly");
    assert!(
        ok.body.contains("a=recvonly"),
        "hold answered recvonly: {}",
        ok.body
    );
    // drain what was in flight, then silence
    std::thread::sleep(Duration::from_millis(100));
    caller.rtp.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 2048];
    while caller.rtp.recv_from(&mut buf).is_ok() {}
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        caller.rtp.recv_from(&mut buf).is_err(),
        "hotline sent RTP to a caller on hold"
    );
    caller.rtp.set_nonblocking(false).unwrap();

    let ok = caller.reinvite(3, "sendrecv");
    assert!(ok.body.contains("a=sendrecv"), "{}", ok.body);
    let after = caller.receive(3);
    let last_before = before.last().unwrap();
    assert!(
        after[0].2.wrapping_sub(last_before.2) < 100,
        "sequence continues without a jump"
    );
    assert!(
        after[0].3.wrapping_sub(last_before.3) >= 160 * 15,
        "the clock ran during the hold"
    );
    caller.bye();
}

#[test]
fn a_blocked_caller_is_refused_before_any_ivr() {
    // The raw caller's From user is the number it dials.
    let server = Server::start(TestConfig::new().extra("[blocklist]\nnumbers = [\"401\"]\n"));
    let mut caller = Caller::new(&server);
    let offer = sdp_offer(caller.rtp_addr(), "0", "");
    let r = caller.invite("401", &offer);
    assert_eq!(r.status(), Some(403), "{}", r.raw);
    assert!(r.reason().contains("blocked"), "{}", r.reason());
    server.assert_event(&["\"type\":\"call_rejected\"", "\"reason\":\"blocked\""]);
}

#[test]
fn a_blocked_caller_can_hear_a_refusal_prompt_instead() {
    let server = Server::start(
        TestConfig::new().extra("[blocklist]\nnumbers = [\"401\"]\naction = \"prompt\"\n"),
    );
    let mut caller = Caller::new(&server);
    let offer = sdp_offer(caller.rtp_addr(), "0", "");
    assert_eq!(caller.invite("401", &offer).status(), Some(200));
    caller.ack("");
    let blocked = prompt("en/blocked");
    let packets = caller.receive(blocked.frames());
    for (i, p) in packets.iter().enumerate() {
        assert_eq!(
            p.4.as_slice(),
            blocked.frame(Codec::Pcmu, i).unwrap(),
            "frame {i}"
        );
    }
    // then hotline hangs up
    let bye = caller
        .sip
        .recv(Duration::from_secs(3))
        .expect("a BYE from hotline");
    assert_eq!(bye.method(), Some("BYE"), "{}", bye.raw);
    server.assert_event(&["\"type\":\"call_ended\"", "\"released_by\":\"system\""]);
}

#[test]
fn in_band_dtmf_is_heard_when_no_telephone_event_was_negotiated() {
    let server = ivr_server();
    let mut caller = Caller::new(&server);
    let offer = sdp_offer(caller.rtp_addr(), "0", "a=rtpmap:0 PCMU/8000\r\n");
    assert_eq!(caller.invite("400", &offer).status(), Some(200));
    caller.ack("");
    caller.receive(3);
    caller.press_inband(697.0, 1336.0); // "2"
    server.assert_event(&[
        "\"type\":\"dtmf_received\"",
        "\"digit\":\"2\"",
        "\"via\":\"inband\"",
    ]);
    server.assert_event(&["\"type\":\"ivr_node_entered\"", "\"node\":\"support\""]);
    caller.bye();
}

#[test]
fn a_stray_stream_that_arrives_first_does_not_keep_the_callers_audio() {
    let server = Server::start(TestConfig::new());
    let mut caller = Caller::new(&server);
    let offer = sdp_offer(caller.rtp_addr(), "0", "a=rtpmap:0 PCMU/8000\r\n");
    assert_eq!(caller.invite("401", &offer).status(), Some(200));
    caller.ack("");
    let hotline_rtp = caller.server_rtp.expect("server RTP address");
    caller.receive(3);
    // An old call's sender still aiming at this port gets there first.
    let stray = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    stray
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let packet = |seq: u16| {
        let mut p = vec![0x80, 0];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        p.extend_from_slice(&0x0bad_cafeu32.to_be_bytes());
        p.extend_from_slice(&[0xff; 160]);
        p
    };
    for seq in 0..3 {
        stray.send_to(&packet(seq), hotline_rtp).unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    // The caller's own packets, from the address of its SDP, win it back.
    for seq in 100..105 {
        caller.rtp.send_to(&packet(seq), hotline_rtp).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    // Whatever was on its way settles; then, for half a second, everything
    // hotline sends reaches the caller and nothing the stray.
    let mut buf = [0u8; 2048];
    let drain = |socket: &std::net::UdpSocket, buf: &mut [u8]| {
        socket
            .set_read_timeout(Some(Duration::from_millis(5)))
            .unwrap();
        let until = std::time::Instant::now() + Duration::from_millis(100);
        while std::time::Instant::now() < until {
            let _ = socket.recv_from(buf);
        }
    };
    drain(&stray, &mut buf);
    drain(&caller.rtp, &mut buf);
    let (mut to_caller, mut to_stray) = (0, 0);
    let until = std::time::Instant::now() + Duration::from_millis(500);
    while std::time::Instant::now() < until {
        if caller.rtp.recv_from(&mut buf).is_ok() {
            to_caller += 1;
        }
        if stray.recv_from(&mut buf).is_ok() {
            to_stray += 1;
        }
    }
    assert!(
        to_caller >= 15,
        "the caller hears hotline again: {to_caller} packets"
    );
    assert_eq!(
        to_stray, 0,
        "nothing goes to the stray sender once the caller spoke"
    );
    caller
        .rtp
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    caller.bye();
}

/// A media-loop gauge (`bridges`, `listeners`) over all loops, from the
/// metrics page.
fn on_loops(server: &Server, what: &str) -> f64 {
    let port = server.http_port.expect("http enabled");
    let family = format!("hotline_media_loop_{what}{{");
    http_get(port, "/metrics")
        .lines()
        .filter(|l| l.starts_with(&family))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn wait_on_loops(server: &Server, what: &str, want: f64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let got = on_loops(server, what);
        if got == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{got} {what} on the media loops, expected {want}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_bridges_on_loops(server: &Server, want: f64) {
    wait_on_loops(server, "bridges", want);
}

#[test]
fn a_caller_on_music_is_read_by_a_media_loop_once_datagrams_come_and_the_music_follows_its_natd_source()
 {
    let server = Server::start(acd_config("").media("workers = 2").http(true));
    let mut caller = Caller::new(&server);
    // The phone writes its LAN address; its packets come from its real
    // socket on 127.0.0.1, where its SIP comes from too.
    let offer = sdp_offer(
        caller.rtp_addr(),
        "0 101",
        "a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n",
    )
    .replace("c=IN IP4 127.0.0.1", "c=IN IP4 192.168.77.20");
    let answer = caller.invite("402", &offer);
    assert_eq!(answer.status(), Some(200));
    caller.ack("");
    let hotline_rtp = media_of(&answer.body).expect("SDP answer");
    // No agent is logged in: the caller waits on music. Quiet, it stays
    // with its call (nothing to read).
    server.wait_event(&["\"type\":\"call_queued\""], Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(on_loops(&server, "listeners"), 0.0);
    // Behind NAT, nothing is sent before the caller's packets show where
    // it is.
    caller
        .rtp
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 2048];
    assert!(
        caller.rtp.recv_from(&mut buf).is_err(),
        "music sent before the NAT'd caller's source was known"
    );
    let packet = |seq: u16, ssrc: u32| {
        let mut p = vec![0x80, 0];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&[0xff; 160]);
        p
    };
    // A stranger on another host sprays the port: once datagrams come, a
    // media loop reads them instead of the call, and drops the stranger's.
    let stranger = std::net::UdpSocket::bind("127.0.0.2:0").unwrap();
    for seq in 0..30u16 {
        stranger
            .send_to(&packet(seq, 0x0bad_5eed), hotline_rtp)
            .unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    wait_on_loops(&server, "listeners", 1.0);
    assert_eq!(on_loops(&server, "bridges"), 0.0);
    // The caller speaks; the loop latches its source and the music goes
    // there.
    for seq in 0..10u16 {
        caller
            .rtp
            .send_to(&packet(seq, 0x0c0f_fee0), hotline_rtp)
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    caller
        .rtp
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let music = caller.receive(25);
    assert!(
        music.iter().all(|(_, pt, ..)| *pt == 0),
        "the music comes in the caller's codec"
    );
    // Its keys reach the call from the loop.
    caller.press('4');
    server.assert_event(&[
        "\"type\":\"dtmf_received\"",
        "\"digit\":\"4\"",
        "\"via\":\"rfc4733\"",
    ]);
    assert_eq!(on_loops(&server, "listeners"), 1.0, "still on the loop");
    stranger
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    assert!(
        stranger.recv_from(&mut buf).is_err(),
        "the stranger got RTP from hotline"
    );
    caller.bye();
    wait_on_loops(&server, "listeners", 0.0);
    let page = http_get(server.http_port.expect("http enabled"), "/metrics");
    assert!(
        page.contains("hotline_rtp_packets_rejected_total{reason=\"foreign_source\"} 30"),
        "every one of the stranger's packets, and only those, dropped: {page}"
    );
}

#[test]
fn a_bridge_leaves_its_media_loop_for_a_hold_and_after_it_audio_flows_both_ways_again() {
    const CALLER_HZ: f64 = 400.0;
    const AGENT_HZ: f64 = 1000.0;
    let server = Server::start(
        acd_config("[queues.support]\nannounce_agent = false\n")
            .media("workers = 2")
            .http(true),
    );
    let port = free_port();
    register_agent(&server, "1001", port);
    let (agent_socket, agent_rtp) = rtp_socket();
    let agent_ear = Party::start(agent_socket, AGENT_HZ, None);
    std::thread::scope(|s| {
        let server = &server;
        let agent = s.spawn(move || answering_phone(port, agent_rtp).run(server));
        let (mut caller, caller_ear) = call_in(server, "402", CALLER_HZ);
        server.wait_event(&["\"type\":\"call_bridged\""], Duration::from_secs(10));
        wait_bridges_on_loops(server, 1.0);
        let both_ways = |when: &str| {
            let from = settle();
            std::thread::sleep(Duration::from_millis(1000));
            let to = std::time::Instant::now();
            let agent_hears = agent_ear.share(CALLER_HZ, from, to);
            let caller_hears = caller_ear.share(AGENT_HZ, from, to);
            assert!(agent_hears > 0.5, "{when}: the agent hears {agent_hears}");
            assert!(
                caller_hears > 0.5,
                "{when}: the caller hears {caller_hears}"
            );
        };
        both_ways("bridged on a loop");

        caller.reinvite(2, "sendonly");
        server.wait_event(
            &["\"type\":\"hold_started\"", "\"by\":\"caller\""],
            Duration::from_secs(3),
        );
        // Held, the call relays (and plays the music) itself.
        wait_bridges_on_loops(server, 0.0);

        caller.reinvite(3, "sendrecv");
        server.wait_event(&["\"type\":\"hold_ended\""], Duration::from_secs(3));
        wait_bridges_on_loops(server, 1.0);
        both_ways("back on a loop after the hold");

        caller.bye();
        agent.join().unwrap().assert_ok(server);
        wait_bridges_on_loops(server, 0.0);
    });
    // Nothing the loops relayed was a stranger's.
    let page = http_get(server.http_port.expect("http enabled"), "/metrics");
    assert!(
        page.contains("hotline_rtp_packets_rejected_total{reason=\"foreign_source\"} 0"),
        "{page}"
    );
}
