//! Bounded fuzzing of every parser that reads network input: the SIP screen and
//! the SIP parser behind it, SDP offers and answers, RTP headers, RFC 4733
//! events and SIP INFO DTMF, digest credentials, and the CTI API's JSON bodies
//! (the last through the real server, every write route its OpenAPI document
//! lists).
//!
//! Inputs are well-formed seeds mutated at random (bytes flipped, inserted,
//! deleted, duplicated, replaced by delimiters), plus plain random bytes, so the
//! cases reach past the first line. A few thousand cases per parser keep the
//! whole module at seconds; `HOTLINE_FUZZ_CASES` raises the count for a long run
//! (see README, Security). Every run is held to a deadline, so a hang fails
//! instead of blocking the suite.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use crate::support::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use hotline::media::dtmf::{self, EventDetector, TelephoneEvent};
use hotline::media::g711::Codec;
use hotline::media::sdp::{self, Direction, Local};
use hotline::sip::digest;
use hotline::sip::screen::{self, DatagramVerdict};

/// Cases per parser; `HOTLINE_FUZZ_CASES` overrides it.
fn cases() -> u32 {
    std::env::var("HOTLINE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000)
}

/// Runs `body` on its own thread and fails when it does not end within the
/// deadline: a parser that loops forever is a failure, not a stuck suite.
fn within_deadline(what: &str, body: impl FnOnce() + Send + 'static) {
    let limit = Duration::from_secs(120).max(Duration::from_millis(u64::from(cases()) * 40));
    let (done, finished) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        body();
        let _ = done.send(());
    });
    match finished.recv_timeout(limit) {
        Ok(()) => worker.join().expect("the fuzz run panicked"),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // The body panicked: re-raise its panic with proptest's minimal case.
            if let Err(panic) = worker.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: no answer within {limit:?} (a parser hangs)")
        }
    }
}

/// The mutations must leave enough inputs valid to reach past the parser into
/// the code behind it; otherwise the run only tests the first check.
fn enough_reached(what: &str, reached: u32) {
    let floor = cases() / 20;
    assert!(
        reached >= floor,
        "only {reached} {what} parsed of {} cases",
        cases()
    );
    eprintln!("{what}: {reached} of {} cases parsed", cases());
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    })
}

// ---------------------------------------------------------------------------
// Mutations

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, bit: u8 },
    Set { at: usize, byte: u8 },
    Insert { at: usize, bytes: Vec<u8> },
    Delete { at: usize, len: usize },
    Duplicate { at: usize, len: usize },
    Truncate { at: usize },
}

/// Bytes that matter to text protocols: delimiters, line ends, quotes, high bytes.
const SPECIAL: &[u8] = b"\r\n :;,=\"<>@/\\\t\0\x7f\xff\xc3%.-0123456789";

fn mutation() -> impl Strategy<Value = Mutation> {
    let special = prop::sample::select(SPECIAL);
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (any::<usize>(), special.clone()).prop_map(|(at, byte)| Mutation::Set { at, byte }),
        (
            any::<usize>(),
            prop::collection::vec(prop_oneof![special, any::<u8>()], 1..64)
        )
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1usize..200).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), 1usize..400).prop_map(|(at, len)| Mutation::Duplicate { at, len }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
    ]
}

fn apply(seed: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut data = seed.to_vec();
    for m in mutations {
        let len = data.len().max(1);
        match m {
            Mutation::Flip { at, bit } => {
                if let Some(b) = data.get_mut(at % len) {
                    *b ^= 1 << bit;
                }
            }
            Mutation::Set { at, byte } => {
                if let Some(b) = data.get_mut(at % len) {
                    *b = *byte;
                }
            }
            Mutation::Insert { at, bytes } => {
                let at = at % (data.len() + 1);
                data.splice(at..at, bytes.iter().copied());
            }
            Mutation::Delete { at, len: n } => {
                let at = at % len;
                let end = (at + n).min(data.len());
                if at < end {
                    data.drain(at..end);
                }
            }
            Mutation::Duplicate { at, len: n } => {
                let at = at % len;
                let end = (at + n).min(data.len());
                if at < end {
                    let copy = data[at..end].to_vec();
                    data.splice(end..end, copy);
                }
            }
            Mutation::Truncate { at } => data.truncate(at % len),
        }
    }
    data
}

/// Seeds mutated 1 to 8 times, or (one case in eight) random bytes.
fn mutated(seeds: &[&[u8]]) -> impl Strategy<Value = Vec<u8>> {
    let seeds: Vec<Vec<u8>> = seeds.iter().map(|s| s.to_vec()).collect();
    prop_oneof![
        7 => (
            prop::sample::select(seeds),
            prop::collection::vec(mutation(), 1..8)
        )
            .prop_map(|(seed, ms)| apply(&seed, &ms)),
        1 => prop::collection::vec(any::<u8>(), 0..1500),
    ]
}

// ---------------------------------------------------------------------------
// SIP

const SIP_SEEDS: &[&[u8]] = &[
    b"INVITE sip:400@127.0.0.1:5060 SIP/2.0\r\n\
      Via: SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bK-1;rport\r\n\
      Max-Forwards: 70\r\n\
      From: \"Caller\" <sip:+4915112345678@127.0.0.2>;tag=a1\r\n\
      To: <sip:400@127.0.0.1>\r\n\
      Call-ID: fuzz-1@127.0.0.2\r\n\
      CSeq: 1 INVITE\r\n\
      Contact: <sip:caller@127.0.0.2:5070>\r\n\
      Session-Expires: 1800;refresher=uac\r\n\
      Supported: timer, replaces\r\n\
      Content-Type: application/sdp\r\n\
      Content-Length: 129\r\n\r\n\
      v=0\r\no=- 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n\
      m=audio 6000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n",
    b"REGISTER sip:127.0.0.1 SIP/2.0\r\n\
      v: SIP/2.0/UDP 127.0.0.3:5080;branch=z9hG4bK-2\r\n\
      f: <sip:1001@127.0.0.1>;tag=r1\r\n\
      t: <sip:1001@127.0.0.1>\r\n\
      i: reg-1\r\n\
      CSeq: 2 REGISTER\r\n\
      m: <sip:1001@127.0.0.3:5080;transport=udp>;expires=3600\r\n\
      Authorization: Digest username=\"1001\", realm=\"hotline\", nonce=\"abc\", \
      uri=\"sip:127.0.0.1\", response=\"0123456789abcdef0123456789abcdef\", algorithm=MD5, \
      qop=auth, nc=00000001, cnonce=\"x\"\r\n\
      l: 0\r\n\r\n",
    b"SIP/2.0 200 OK\r\n\
      Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-3\r\n\
      From: <sip:hotline@127.0.0.1>;tag=h1\r\n\
      To: <sip:1001@127.0.0.3>;tag=p1\r\n\
      Call-ID: leg-1\r\n\
      CSeq: 1 INVITE\r\n\
      Contact: <sip:1001@127.0.0.3:5080>\r\n\
      Content-Length: 0\r\n\r\n",
    b"INFO sip:hotline@127.0.0.1 SIP/2.0\r\n\
      Via: SIP/2.0/TCP 127.0.0.2:5070;branch=z9hG4bK-4\r\n\
      From: <sip:a@127.0.0.2>;tag=a1\r\nTo: <sip:400@127.0.0.1>;tag=b2\r\n\
      Call-ID: fuzz-1@127.0.0.2\r\nCSeq: 3 INFO\r\n\
      Content-Type: application/dtmf-relay\r\nContent-Length: 24\r\n\r\n\
      Signal=5\r\nDuration=160\r\n",
];

#[test]
fn the_sip_screen_and_parser_survive_hostile_datagrams() {
    within_deadline("SIP screen", || {
        let parsed = AtomicU32::new(0);
        runner()
            .run(&mutated(SIP_SEEDS), |packet| {
                let verdict = screen::screen_datagram(&packet, "hotline");
                if let DatagramVerdict::Answer(bytes) = &verdict {
                    // An answer to garbage is a short, parseable response.
                    prop_assert!(bytes.starts_with(b"SIP/2.0 "));
                    prop_assert!(bytes.len() <= packet.len() + 512);
                }
                if verdict == DatagramVerdict::Pass {
                    // What the screen passes goes to the stack's parser and, for
                    // a request, the request checks.
                    if let Ok(rsipstack::sip::SipMessage::Request(req)) =
                        rsipstack::sip::SipMessage::try_from(packet.as_slice())
                    {
                        parsed.fetch_add(1, Ordering::Relaxed);
                        for datagram in [true, false] {
                            if let Err(rejection) = screen::check_request(&req, datagram) {
                                let _ = screen::rejection_response(&req, &rejection, "hotline");
                            }
                        }
                    }
                }
                Ok(())
            })
            .unwrap();
        enough_reached("SIP requests", parsed.into_inner());
    });
}

// ---------------------------------------------------------------------------
// SDP

const SDP_SEEDS: &[&[u8]] = &[
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n\
      m=audio 6000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n\
      a=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n",
    b"v=0\r\no=Zoiper 0 1 IN IP4 192.168.1.20\r\ns=Z\r\nc=IN IP4 192.168.1.20\r\nt=0 0\r\n\
      m=audio 8000 RTP/AVP 8 0 3 98 101\r\na=rtpmap:98 iLBC/8000\r\na=fmtp:98 mode=30\r\n\
      a=rtpmap:101 telephone-event/8000\r\na=sendonly\r\n\
      m=video 9000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n",
    b"v=0\r\no=- 2 2 IN IP6 ::1\r\ns=-\r\nt=0 0\r\nm=audio 0 RTP/SAVP 0\r\nc=IN IP6 ::1\r\n\
      m=audio 7000 RTP/AVP 0\r\nc=IN IP4 0.0.0.0\r\na=inactive\r\n",
];

#[test]
fn sdp_offers_and_answers_survive_hostile_bodies() {
    within_deadline("SDP", || {
        let local = Local {
            addr: "127.0.0.1".parse().unwrap(),
            port: 20000,
            session_id: 1,
            version: 1,
        };
        let parsed = AtomicU32::new(0);
        runner()
            .run(&mutated(SDP_SEEDS), |body| {
                if let Ok(description) = sdp::parse(&body) {
                    parsed.fetch_add(1, Ordering::Relaxed);
                    for codecs in [&[Codec::Pcmu, Codec::Pcma][..], &[Codec::Pcma], &[]] {
                        if let Ok((negotiated, answer)) = sdp::answer(&description, &local, codecs)
                        {
                            prop_assert!(codecs.contains(&negotiated.codec));
                            // Our answer is itself valid SDP.
                            prop_assert!(sdp::parse(answer.as_bytes()).is_ok(), "{answer}");
                        }
                    }
                    let _ = sdp::accept_answer(&description);
                    if let Some(media) = description.audio() {
                        let _ = description.remote_of(media);
                        let _ = description
                            .direction_of(media)
                            .intersect(Direction::SendRecv);
                    }
                }
                Ok(())
            })
            .unwrap();
        enough_reached("SDP bodies", parsed.into_inner());
    });
}

// ---------------------------------------------------------------------------
// RTP and RFC 4733

#[test]
fn rtp_headers_and_telephone_events_survive_hostile_packets() {
    within_deadline("RTP", || {
        let packet = prop::collection::vec(any::<u8>(), 0..400).prop_map(|mut p| {
            // Half the cases look like RTP version 2, so the header walk runs.
            if let Some(first) = p.first_mut() {
                if first.count_ones() % 2 == 0 {
                    *first = (*first & 0x3f) | 0x80;
                }
            }
            p
        });
        runner()
            .run(&packet, |p| {
                if let Ok(reader) = rtp_rs::RtpReader::new(&p) {
                    let _ = (reader.payload_type(), reader.sequence_number());
                    let _ = (reader.timestamp(), reader.ssrc(), reader.mark());
                    let _ = reader.csrc().count();
                    let _ = reader.extension();
                    prop_assert!(reader.payload().len() <= p.len());
                }
                let _ = TelephoneEvent::parse(&p);
                Ok(())
            })
            .unwrap();
    });
}

#[test]
fn the_event_detector_reports_only_dtmf_keys_whatever_arrives() {
    within_deadline("RFC 4733 detector", || {
        let packets = prop::collection::vec(
            (
                any::<u32>(),
                any::<bool>(),
                prop::collection::vec(any::<u8>(), 0..12),
            ),
            1..60,
        );
        runner()
            .run(&packets, |packets| {
                let mut detector = EventDetector::new();
                let mut keys = Vec::new();
                for (ts, marker, payload) in &packets {
                    keys.extend(detector.on_packet(*ts, *marker, payload));
                }
                keys.extend(detector.flush());
                for key in &keys {
                    prop_assert!("0123456789*#ABCD".contains(*key), "{key:?}");
                }
                // One key per event at most: never more keys than packets.
                prop_assert!(keys.len() <= packets.len() + 1);
                Ok(())
            })
            .unwrap();
    });
}

const INFO_SEEDS: &[&[u8]] = &[
    b"Signal=5\r\nDuration=160\r\n",
    b"signal = #\nduration=250",
    b"11",
];

#[test]
fn sip_info_dtmf_bodies_yield_a_key_or_an_error() {
    within_deadline("SIP INFO DTMF", || {
        let content_type = prop::sample::select(
            &[
                "application/dtmf-relay",
                "application/dtmf",
                "Application/DTMF-Relay; charset=x",
                "text/plain",
            ][..],
        );
        runner()
            .run(&(content_type, mutated(INFO_SEEDS)), |(ct, body)| {
                if let Ok(key) = dtmf::parse_info(ct, &body) {
                    prop_assert!("0123456789*#ABCD".contains(key), "{key:?}");
                }
                Ok(())
            })
            .unwrap();
    });
}

// ---------------------------------------------------------------------------
// Digest

const DIGEST_SEEDS: &[&[u8]] = &[
    b"Digest username=\"1001\", realm=\"hotline\", nonce=\"MTcwMDAwMDAwMA.abcdef\", \
      uri=\"sip:127.0.0.1\", response=\"0123456789abcdef0123456789abcdef\", algorithm=MD5, \
      qop=auth, nc=00000001, cnonce=\"0a4f113b\", opaque=\"5ccc069c\"",
    b"Digest username=\"a\\\"b\",realm=\"r\",nonce=\"n\",uri=\"sip:x\",response=\"r\",\
      algorithm=SHA-256",
    b"digest   USERNAME = \"1002\" , realm=hotline, nonce=n, uri=\"sip:h;transport=tcp\", \
      response=\"\"",
];

/// Well-formed digest credentials whose values are hostile: quotes and
/// backslashes (escaped), separators, odd algorithms and qop values, so most
/// cases get past the parser into the response check.
fn structured_credentials() -> impl Strategy<Value = Vec<u8>> {
    let value = || prop::string::string_regex("[ -~]{0,40}").unwrap();
    let quoted = |v: &str| format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""));
    (
        (value(), value(), value(), value(), value()),
        prop::sample::select(&["MD5", "SHA-256", "MD5-sess", "md5", "XYZ"][..]),
        prop::option::of((value(), "[0-9a-fA-F]{0,10}", value())),
    )
        .prop_map(move |((user, realm, nonce, uri, response), algorithm, qop)| {
            let mut text = format!(
                "Digest username={}, realm={}, nonce={}, uri={}, response={}, algorithm={algorithm}",
                quoted(&user),
                quoted(&realm),
                quoted(&nonce),
                quoted(&uri),
                quoted(&response),
            );
            if let Some((qop, nc, cnonce)) = qop {
                text.push_str(&format!(", qop={}, nc={nc}, cnonce={}", quoted(&qop), quoted(&cnonce)));
            }
            text.into_bytes()
        })
}

#[test]
fn digest_credentials_parse_or_fail_cleanly() {
    within_deadline("digest", || {
        let parsed = AtomicU32::new(0);
        runner()
            .run(
                &prop_oneof![mutated(DIGEST_SEEDS), structured_credentials()],
                |value| {
                    let text = String::from_utf8_lossy(&value);
                    if let Ok(creds) = digest::parse_credentials(&text) {
                        parsed.fetch_add(1, Ordering::Relaxed);
                        // Checking a response never panics, whatever the fields hold.
                        let _ = digest::verify(&creds, "REGISTER", "demo100x");
                        let ha1 = digest::ha1(creds.algorithm, &creds.username, &creds.realm, "pw");
                        let _ = digest::verify_ha1(&creds, "INVITE", &ha1);
                    }
                    Ok(())
                },
            )
            .unwrap();
        enough_reached("digest credentials", parsed.into_inner());
    });
}

#[test]
fn nonces_from_outside_are_never_taken_for_ours() {
    within_deadline("nonces", || {
        let nonces = digest::NonceIssuer::with_secret([7; 32], Duration::from_secs(300));
        let genuine = nonces.issue(1_700_000_000);
        runner()
            .run(&mutated(&[genuine.as_bytes()]), |forged| {
                let forged = String::from_utf8_lossy(&forged).into_owned();
                let check = nonces.check(&forged, 1_700_000_010);
                if forged != genuine {
                    prop_assert!(
                        !matches!(check, digest::NonceCheck::Valid),
                        "forged nonce accepted: {forged:?}"
                    );
                }
                Ok(())
            })
            .unwrap();
    });
}

// ---------------------------------------------------------------------------
// The CTI API's JSON bodies, through the real server

/// JSON-ish bodies: valid JSON of every shape, the names the API reads, and
/// broken text.
fn json_body() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null)),
        "\\PC{0,40}".prop_map(serde_json::Value::from),
        prop::sample::select(
            &[
                "1001", "support", "sales", "lunch", "listen", "whisper", "barge", ""
            ][..]
        )
        .prop_map(serde_json::Value::from),
    ];
    let names = prop::sample::select(
        &[
            "reason",
            "target",
            "agent",
            "queue",
            "mode",
            "phone",
            "disposition",
            "note",
            "paused",
            "number",
            "to",
            "x",
        ][..],
    );
    let value = leaf.prop_recursive(3, 24, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(names.clone(), inner, 0..5).prop_map(|m| {
                serde_json::Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            }),
        ]
    });
    prop_oneof![
        4 => value.prop_map(|v| v.to_string()),
        1 => "\\PC{0,80}",
        1 => Just("{\"reason\":".to_owned()),
        1 => Just("[".repeat(2000)),
    ]
}

#[test]
fn the_api_answers_hostile_json_bodies_with_4xx() {
    let admin = "fuzz-admin-token";
    let token_hash = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(admin.as_bytes()))
    };
    let server = Server::start(TestConfig::new().http(true).extra(&format!(
        "[api.tokens.fuzz]\nrole = \"admin\"\nsha256 = \"{token_hash}\"\n"
    )));
    let port = server.http_port.expect("the HTTP listener");
    let (status, document) = http_request(port, "GET", "/api/v1/openapi.json", None, None);
    assert_eq!(status, 200, "{document}");
    let document: serde_json::Value = serde_json::from_str(&document).expect("OpenAPI JSON");
    // Every route that reads a body, with its path parameters filled in.
    let mut routes = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in ["post", "put", "patch"] {
            if item.get(method).is_some() {
                let concrete = path
                    .replace("{id}", "1001")
                    .replace("{agent_id}", "1001")
                    .replace("{name}", "support")
                    .replace("{call_id}", "no-such-call");
                routes.push((method.to_uppercase(), concrete));
            }
        }
    }
    assert!(routes.len() >= 5, "too few write routes found: {routes:?}");
    let per_route = (cases() / routes.len() as u32).clamp(20, 400);
    let mut runner = TestRunner::new(Config {
        cases: per_route,
        failure_persistence: None,
        ..Config::default()
    });
    for (method, path) in &routes {
        runner
            .run(&json_body(), |body| {
                let (status, answer) = http_request(port, method, path, Some(admin), Some(&body));
                prop_assert!(
                    status != 0 && status < 500,
                    "{method} {path} with {body:?} answered {status}: {answer}"
                );
                Ok(())
            })
            .unwrap();
    }
    let (status, _) = http_request(port, "GET", "/api/v1/agents", Some(admin), None);
    assert_eq!(status, 200, "the API still answers after the fuzzing");
}
