//! Media and IVR against real peers: SIPp callers pressing keys (RFC 4733 from
//! a pcap, SIP INFO), and a raw UA in this test that checks the RTP hotline
//! sends is really the prompt, paced every 20 ms, and drives the balance
//! self-service with its own RTP telephone-events.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
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
    let media_port = free_port().to_string();
    Sipp::new(scenario)
        .service("400")
        .args(&["-mi", "127.0.0.1", "-mp", &media_port])
        .run_ok(&server);
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

/// A minimal caller: SIP over UDP, RTP on its own socket.
struct Caller {
    sip: UdpClient,
    rtp: UdpSocket,
    dialog: Dialog,
    to: String,
    server_rtp: Option<SocketAddr>,
    cseq: u32,
    seq: u16,
}

fn sdp_offer(rtp: SocketAddr, formats: &str, extra: &str) -> String {
    format!(
        "v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {} RTP/AVP {formats}\r\n{extra}",
        rtp.port()
    )
}

fn media_of(body: &str) -> Option<SocketAddr> {
    let ip = body
        .lines()
        .find_map(|l| l.trim().strip_prefix("c=IN IP4 "))?
        .trim()
        .to_string();
    let port = body
        .lines()
        .find_map(|l| l.trim().strip_prefix("m=audio "))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(SocketAddr::new(ip.parse().ok()?, port))
}

impl Caller {
    fn new(server: &Server) -> Caller {
        let sip = UdpClient::new(server);
        let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
        rtp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let dialog = sip.dialog();
        Caller {
            sip,
            rtp,
            dialog,
            to: String::new(),
            server_rtp: None,
            cseq: 1,
            seq: 1000,
        }
    }

    fn rtp_addr(&self) -> SocketAddr {
        self.rtp.local_addr().unwrap()
    }

    /// INVITE with `body` (an SDP offer, or empty); returns the final response.
    fn invite(&mut self, number: &str, body: &str) -> SipMsg {
        let uri = format!("sip:{number}@{}", self.dialog.server);
        let mut extra = vec![format!("Contact: <sip:caller@{}>", self.sip.local())];
        if !body.is_empty() {
            extra.push("Content-Type: application/sdp".into());
        }
        let invite = self.dialog.request("INVITE", &uri, number, &extra, body);
        self.sip.send(&invite);
        let ok = self
            .sip
            .final_response("INVITE", Duration::from_secs(5))
            .expect("a final response to the INVITE");
        if ok.status() == Some(200) {
            self.to = ok.header("To").unwrap().to_string();
            self.server_rtp = media_of(&ok.body);
        }
        ok
    }

    fn in_dialog(&mut self, method: &str, content_type: Option<&str>, body: &str) -> String {
        let cseq = if method == "ACK" {
            1
        } else {
            self.cseq += 1;
            self.cseq
        };
        let d = &self.dialog;
        let mut s = format!(
            "{method} sip:400@{} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch={};rport\r\nMax-Forwards: 70\r\nFrom: <sip:caller@{}>;tag={}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\n",
            d.server,
            d.local,
            Dialog::branch(),
            d.server.ip(),
            d.from_tag,
            self.to,
            d.call_id
        );
        if let Some(ct) = content_type {
            s.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        s.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        s
    }

    fn ack(&mut self, body: &str) {
        let ack = self.in_dialog("ACK", (!body.is_empty()).then_some("application/sdp"), body);
        self.sip.send(&ack);
    }

    fn info(&mut self, digit: char) {
        let info = self.in_dialog(
            "INFO",
            Some("application/dtmf-relay"),
            &format!("Signal={digit}\r\nDuration=160\r\n"),
        );
        self.sip.send(&info);
        let r = self.sip.final_response("INFO", Duration::from_secs(3));
        assert_status(&r, 200, "INFO with a digit");
    }

    fn bye(&mut self) {
        let bye = self.in_dialog("BYE", None, "");
        self.sip.send(&bye);
        let r = self.sip.final_response("BYE", Duration::from_secs(3));
        assert_status(&r, 200, "BYE");
    }

    /// One key as RFC 4733 events (PT 101): start, interim, three end packets.
    fn press(&mut self, digit: char) {
        let event: u8 = match digit {
            '0'..='9' => digit as u8 - b'0',
            '*' => 10,
            '#' => 11,
            _ => panic!("not a key"),
        };
        let target = self.server_rtp.expect("server RTP address");
        let timestamp: u32 = u32::from(self.seq) * 1000;
        for (i, (end, duration)) in [
            (false, 160u16),
            (false, 320),
            (false, 480),
            (true, 640),
            (true, 640),
            (true, 640),
        ]
        .into_iter()
        .enumerate()
        {
            let mut p = vec![0x80, 101 | if i == 0 { 0x80 } else { 0 }];
            p.extend_from_slice(&self.seq.to_be_bytes());
            p.extend_from_slice(&timestamp.to_be_bytes());
            p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
            p.extend_from_slice(&[event, if end { 0x80 | 10 } else { 10 }]);
            p.extend_from_slice(&duration.to_be_bytes());
            self.rtp.send_to(&p, target).unwrap();
            self.seq = self.seq.wrapping_add(1);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// One key as in-band tones in PCMU (for a peer without telephone-event):
    /// 100 ms of the key's two frequencies, then 100 ms of silence.
    fn press_inband(&mut self, row: f64, column: f64) {
        let target = self.server_rtp.expect("server RTP address");
        let mut t = 0usize;
        for frame in 0..10 {
            let mut pcm = [0i16; 160];
            if frame < 5 {
                for s in pcm.iter_mut() {
                    let x = t as f64 / 8000.0;
                    *s = (6000.0 * (2.0 * std::f64::consts::PI * row * x).sin()
                        + 6000.0 * (2.0 * std::f64::consts::PI * column * x).sin())
                        as i16;
                    t += 1;
                }
            }
            let mut payload = [0u8; 160];
            Codec::Pcmu.encode(&pcm, &mut payload);
            let mut p = vec![0x80, 0];
            p.extend_from_slice(&self.seq.to_be_bytes());
            p.extend_from_slice(&(u32::from(self.seq) * 160).to_be_bytes());
            p.extend_from_slice(&0x2345_6789u32.to_be_bytes());
            p.extend_from_slice(&payload);
            self.rtp.send_to(&p, target).unwrap();
            self.seq = self.seq.wrapping_add(1);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Receives `n` RTP packets: (arrival, payload type, seq, timestamp, payload).
    fn receive(&self, n: usize) -> Vec<(Instant, u8, u16, u32, Vec<u8>)> {
        let mut out = Vec::with_capacity(n);
        let mut buf = [0u8; 2048];
        while out.len() < n {
            let (len, _) = self.rtp.recv_from(&mut buf).expect("RTP from hotline");
            let p = &buf[..len];
            assert!(len >= 12 && p[0] >> 6 == 2, "not RTP: {p:?}");
            out.push((
                Instant::now(),
                p[1] & 0x7f,
                u16::from_be_bytes([p[2], p[3]]),
                u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
                p[12..].to_vec(),
            ));
        }
        out
    }
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
    assert!(
        span + Duration::from_millis(60) >= expected
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

    let hold =
        sdp_offer(caller.rtp_addr(), "0", "a=sendonly\r\n").replace("o=caller 1 1", "o=caller 1 2");
    let reinvite = caller.in_dialog("INVITE", Some("application/sdp"), &hold);
    caller.sip.send(&reinvite);
    let ok = caller
        .sip
        .final_response("INVITE", Duration::from_secs(3))
        .expect("200 to the re-INVITE");
    assert_eq!(ok.status(), Some(200));
    assert!(
        ok.body.contains("a=recvonly"),
        "hold answered recvonly: {}",
        ok.body
    );
    caller.ack("");
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

    let resume =
        sdp_offer(caller.rtp_addr(), "0", "a=sendrecv\r\n").replace("o=caller 1 1", "o=caller 1 3");
    let reinvite = caller.in_dialog("INVITE", Some("application/sdp"), &resume);
    caller.sip.send(&reinvite);
    let ok = caller
        .sip
        .final_response("INVITE", Duration::from_secs(3))
        .expect("200 to the re-INVITE");
    assert!(ok.body.contains("a=sendrecv"), "{}", ok.body);
    caller.ack("");
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
