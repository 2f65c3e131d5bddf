//! The SIP edge against a hostile network: lockouts that spoofed datagrams
//! cannot trigger, a real brute force (sipvicious svcrack) stopped, the
//! digest uri bound to the Request-URI, a live call's Call-ID not reusable,
//! and the ceilings (calls, INVITE rate, TCP and HTTP connections) holding
//! while a legitimate caller still gets through.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::*;

const ADMIN: &str = "edge-admin-token";

fn sha256(text: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

fn admin_token() -> String {
    format!(
        "[api.tokens.admin]\nrole = \"admin\"\nsha256 = \"{}\"\n",
        sha256(ADMIN)
    )
}

/// The value of one series on the metrics page (0 when absent).
fn metric(port: u16, series: &str) -> f64 {
    http_get(port, "/metrics")
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The final response to the INVITE in a SIPp run.
fn invite_finals(run: &SippRun) -> Vec<u16> {
    run.responses()
        .iter()
        .filter(|m| m.cseq_method().as_deref() == Some("INVITE"))
        .filter_map(|m| m.status())
        .filter(|c| *c >= 200)
        .collect()
}

#[test]
fn spoofed_failures_lock_out_neither_the_trunk_nor_the_office() {
    let server = Server::start(TestConfig::new().max_failures(3));
    // An attacker elsewhere fetches a real challenge (a nonce for its own
    // address)...
    let attacker = UdpClient::bind("127.0.0.9", &server);
    let r = attacker.transact(&attacker.dialog().register("1001", Some(600), &[]));
    assert_status(&r, 401, "REGISTER from the attacker");
    let challenge = r
        .as_ref()
        .and_then(|m| m.header("WWW-Authenticate"))
        .expect("a challenge")
        .to_string();
    // ...then sends 100 junk REGISTERs "from" the trunk's address 127.0.0.1,
    // which the trunk ACL admits: answers to that foreign nonce, made-up
    // nonces, unknown users.
    let spoofed = UdpClient::bind("127.0.0.1", &server);
    let uri = format!("sip:{}", server.sip_addr());
    for i in 0..100 {
        let mut d = spoofed.dialog();
        let user = if i % 2 == 0 {
            "1001".to_string()
        } else {
            format!("junk{i}")
        };
        let credentials = if i % 4 < 2 {
            authorization(&challenge, &user, "guess", "REGISTER", &uri)
        } else {
            format!(
                "Digest username=\"{user}\", realm=\"hotline\", nonce=\"made-up-{i}\", \
                 uri=\"{uri}\", response=\"0123456789abcdef0123456789abcdef\", \
                 algorithm=MD5, qop=auth, nc=00000001, cnonce=\"c{i}\""
            )
        };
        let r = spoofed.transact(&d.register(
            &user,
            Some(600),
            &[format!("Authorization: {credentials}")],
        ));
        assert_status(&r, 401, &format!("junk REGISTER {i}: challenged again"));
    }
    // The carrier's next call is answered...
    let run = Sipp::new("uac_call")
        .service("401")
        .local_ip("127.0.0.1")
        .run_ok(&server);
    assert_eq!(invite_finals(&run), [200], "{}", run.report());
    // ...a phone behind the same address still registers...
    let run = Sipp::new("register_auth")
        .service("1001")
        .auth("1001", "demo1001")
        .local_ip("127.0.0.1")
        .run_ok(&server);
    assert_eq!(run.codes(), [401, 200], "{}", run.report());
    // ...and even a colleague's real wrong password there locks out only the
    // colleague.
    let office = UdpClient::bind("127.0.0.1", &server);
    let mut codes = Vec::new();
    for _ in 0..4 {
        let mut d = office.dialog();
        let r = office.transact(&d.register("1002", Some(600), &[]));
        let challenge = r
            .as_ref()
            .and_then(|m| m.header("WWW-Authenticate"))
            .map(str::to_string);
        let Some(challenge) = challenge else {
            codes.push(r.and_then(|m| m.status()).unwrap_or(0));
            continue;
        };
        let credentials = authorization(&challenge, "1002", "wrong", "REGISTER", &uri);
        let r = office.transact(&d.register(
            "1002",
            Some(600),
            &[format!("Authorization: {credentials}")],
        ));
        codes.push(r.and_then(|m| m.status()).unwrap_or(0));
    }
    assert_eq!(codes, [401, 401, 403, 403], "1002's wrong password");
    server.assert_event(&["\"type\":\"source_banned\"", "\"source\":\"127.0.0.1\""]);
    let run = Sipp::new("register_auth")
        .service("1001")
        .auth("1001", "demo1001")
        .local_ip("127.0.0.1")
        .run_ok(&server);
    assert_eq!(run.codes(), [401, 200], "1001 after 1002's lockout");
}

#[test]
fn svcrack_is_stopped_within_the_configured_number_of_tries() {
    let server = Server::start(
        TestConfig::new()
            .http(true)
            .max_failures(5)
            .extra(&admin_token()),
    );
    let dir = tempfile::tempdir().unwrap();
    let words = dir.path().join("words.txt");
    let list: Vec<String> = (0..50).map(|i| format!("guess{i:02}")).collect();
    assert!(!list.iter().any(|w| w == "demo1001"));
    std::fs::write(&words, list.join("\n") + "\n").unwrap();
    let mut svcrack = std::process::Command::new("timeout");
    svcrack
        .args(["-s", "KILL", "60", "svcrack", "-u", "1001", "-d"])
        .arg(&words)
        .args(["-p", &server.sip_port.to_string()])
        .args(["-P", &free_port().to_string()])
        .args(["--maximumtime", "5", "127.0.0.1"]);
    let out = output_within(&mut svcrack, Duration::from_secs(70));
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !report.contains("demo1001") && report.contains("found nothing"),
        "svcrack's verdict: {report}"
    );
    let failures = server.events(&[
        "\"type\":\"auth_failed\"",
        "\"username\":\"1001\"",
        "\"source\":\"127.0.0.1:",
    ]);
    assert_eq!(
        failures.len(),
        5,
        "exactly max_failures tries were judged, then refused unchecked\n{report}"
    );
    let port = server.http_port.unwrap();
    let refused = metric(
        port,
        "hotline_sip_refused_total{reason=\"auth_locked_out\"}",
    );
    assert!(
        refused >= 1.0,
        "svcrack's further tries were refused: {refused}\n{report}"
    );
    assert_eq!(
        metric(port, "hotline_sip_auth_lockouts_total{scope=\"user\"}"),
        1.0
    );
    let (status, body) = http_request(port, "GET", "/api/v1/bans", Some(ADMIN), None);
    assert_eq!(status, 200, "{body}");
    let bans: serde_json::Value = serde_json::from_str(&body).unwrap();
    let ban = &bans[0];
    assert_eq!(ban["source"], "127.0.0.1", "{body}");
    assert_eq!(ban["scope"], "user", "{body}");
    assert_eq!(ban["username"], "1001", "{body}");
    assert!(
        ban["reason"].as_str().unwrap_or("").contains("failed"),
        "{body}"
    );
    // The same user from another address is not locked out.
    let run = Sipp::new("register_auth")
        .service("1001")
        .auth("1001", "demo1001")
        .local_ip("127.0.0.2")
        .run_ok(&server);
    assert_eq!(run.codes(), [401, 200], "{}", run.report());
    // Only admins see the bans.
    let (status, _) = http_request(port, "GET", "/api/v1/bans", None, None);
    assert_eq!(status, 401);
}

#[test]
fn a_digest_uri_other_than_the_request_uri_is_a_bad_request() {
    let server = Server::start(TestConfig::new());
    let client = UdpClient::new(&server);
    let mut d = client.dialog();
    let r = client.transact(&d.register("1001", Some(600), &[]));
    let challenge = r
        .as_ref()
        .and_then(|m| m.header("WWW-Authenticate"))
        .expect("a challenge")
        .to_string();
    // Right password, but the digest was computed for another target.
    let credentials = authorization(
        &challenge,
        "1001",
        "demo1001",
        "REGISTER",
        "sip:elsewhere.example.com",
    );
    let r = client.transact(&d.register(
        "1001",
        Some(600),
        &[format!("Authorization: {credentials}")],
    ));
    assert_status(&r, 400, "REGISTER with a digest uri for another target");
    let reason = r.map(|m| m.reason()).unwrap_or_default();
    assert!(reason.contains("digest uri"), "{reason}");
    // The same answer for the Request-URI is accepted.
    let r = client.transact(&d.register("1001", Some(600), &[]));
    let challenge = r
        .as_ref()
        .and_then(|m| m.header("WWW-Authenticate"))
        .expect("a challenge")
        .to_string();
    let uri = format!("sip:{}", server.sip_addr());
    let credentials = authorization(&challenge, "1001", "demo1001", "REGISTER", &uri);
    let r = client.transact(&d.register(
        "1001",
        Some(600),
        &[format!("Authorization: {credentials}")],
    ));
    assert_status(&r, 200, "REGISTER with the right digest uri");
}

#[test]
fn a_new_invite_with_a_live_calls_call_id_is_refused_and_the_call_goes_on() {
    let server = Server::start(TestConfig::new());
    let mut caller = Caller::new(&server);
    let offer = sdp_offer(caller.rtp_addr(), "0", "a=rtpmap:0 PCMU/8000\r\n");
    let ok = caller.invite("401", &offer);
    assert_status(&Some(ok), 200, "INVITE to 401");
    caller.ack("");
    server.wait_event(&["\"type\":\"call_admitted\""], Duration::from_secs(3));

    // Another party sends a new INVITE (no To tag) with the same Call-ID.
    let intruder = UdpClient::bind("127.0.0.5", &server);
    let mut d = intruder.dialog();
    d.call_id = caller.dialog.call_id.clone();
    let uri = format!("sip:400@{}", server.sip_addr());
    let invite = d.request(
        "INVITE",
        &uri,
        "400",
        &[
            format!("Contact: <sip:x@{}>", intruder.local()),
            "Content-Type: application/sdp".into(),
        ],
        &offer,
    );
    intruder.send(&invite);
    let r = intruder.final_response("INVITE", Duration::from_secs(5));
    assert_status(&r, 482, "a new INVITE reusing a live Call-ID");
    assert_eq!(server.events(&["\"type\":\"call_admitted\""]).len(), 1);

    // The first call is untouched: its BYE is answered and it ends normally.
    caller.bye();
    server.wait_event(
        &["\"type\":\"call_ended\"", "\"released_by\":\"caller\""],
        Duration::from_secs(5),
    );
}

/// Reads from `stream` until it is closed by the peer; false if it stays
/// open for `limit`.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn silent_and_trickling_connections_are_closed_after_their_timeouts() {
    let server = Server::start(
        TestConfig::new()
            .http(true)
            .extra("[limits]\ntcp_first_message_timeout = \"1s\"\nhttp_header_timeout = \"1s\"\n"),
    );
    let sip = server.sip_addr();
    let http = server.http_port.unwrap();
    let mut silent_sip = TcpStream::connect(sip).unwrap();
    let mut trickle_sip = TcpStream::connect(sip).unwrap();
    trickle_sip
        .write_all(b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: ")
        .unwrap();
    let mut silent_http = TcpStream::connect(("127.0.0.1", http)).unwrap();
    let mut trickle_http = TcpStream::connect(("127.0.0.1", http)).unwrap();
    trickle_http
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    for (name, stream) in [
        ("silent SIP/TCP", &mut silent_sip),
        ("trickling SIP/TCP", &mut trickle_sip),
        ("silent HTTP", &mut silent_http),
        ("trickling HTTP", &mut trickle_http),
    ] {
        assert!(
            closed_within(stream, Duration::from_secs(8)),
            "{name} connection still open"
        );
    }
    assert!(
        metric(
            http,
            "hotline_sip_refused_total{reason=\"tcp_first_message_timeout\"}"
        ) >= 2.0
    );
    assert!(
        metric(
            http,
            "hotline_http_refused_total{reason=\"header_timeout\"}"
        ) >= 1.0
    );
    // A real client on a new connection is served.
    let mut client = TcpClient::connect(&server);
    let mut d = client.dialog();
    let r = client.transact(&d.options());
    assert_status(&r, 200, "OPTIONS over a new TCP connection");
}

/// Opens `per_source` SIP/TCP connections from each of `sources` and keeps
/// them; returns how many the kernel connected.
fn open_idle_connections(
    server: std::net::SocketAddr,
    sources: &[std::net::IpAddr],
    per_source: usize,
) -> Vec<std::net::TcpStream> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut open = Vec::new();
        for ip in sources {
            for _ in 0..per_source {
                let Ok(socket) = tokio::net::TcpSocket::new_v4() else {
                    continue;
                };
                if socket.bind(std::net::SocketAddr::new(*ip, 0)).is_err() {
                    continue;
                }
                let connect = socket.connect(server);
                if let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(2), connect).await
                    && let Ok(stream) = stream.into_std()
                {
                    open.push(stream);
                }
            }
        }
        open
    })
}

/// How long `/metrics` takes to answer.
fn metrics_latency(port: u16) -> Duration {
    let started = Instant::now();
    let page = http_get(port, "/metrics");
    assert!(page.contains("hotline_sip_refused_total"), "{page}");
    started.elapsed()
}

#[test]
fn floods_are_held_at_their_ceilings_while_a_real_caller_reaches_an_agent() {
    let mut config = acd_config(
        "[trunks.flood]\nsources = [\"127.0.0.2/32\"]\nmax_calls = 5\n\
         [limits]\ninvite_rate = 5\ninvite_burst = 5\n\
         tcp_max_connections = 300\ntcp_max_connections_per_source = 100\n\
         tcp_first_message_timeout = \"30s\"\n\
         http_max_connections = 50\nhttp_header_timeout = \"2s\"\n",
    )
    .http(true);
    // The flood waits in `sales`, which no agent serves.
    config.numbers.push(Number {
        number: "403".into(),
        ivr: None,
        queue: Some("sales".into()),
        greeting: None,
        answer_after: None,
    });
    let server = Server::start(config);
    let http = server.http_port.unwrap();
    let agent_port = free_port();
    register_agent(&server, "1001", agent_port);
    let started = Instant::now();
    let done = std::sync::atomic::AtomicBool::new(false);

    std::thread::scope(|s| {
        // A failed check below still lets the TCP holder go before the
        // scope waits for it.
        let _done = RaiseOnDrop(&done);
        let agent = s.spawn(|| answering_agent(agent_port, 200, (0, "PCMU")).run(&server));
        // 50 INVITEs a second from one trunk address: 10x its rate, and
        // more than twice its 5 concurrent calls once admitted.
        let flood = s.spawn(|| {
            Sipp::new("uac_call")
                .service("403")
                .local_ip("127.0.0.2")
                .args(&["-r", "50", "-m", "200"])
                .run(&server)
        });
        // 2,000 idle SIP/TCP connections from ten addresses.
        let tcp = s.spawn(|| {
            let sources: Vec<std::net::IpAddr> = (10..20)
                .map(|i| std::net::IpAddr::from([127, 0, 0, i]))
                .collect();
            let open = open_idle_connections(server.sip_addr(), &sources, 200);
            let connected = open.len();
            // Held until the checks are done, or bounded if one of them
            // panics first (the scope would otherwise wait for ever).
            let until = Instant::now() + Duration::from_secs(90);
            while !done.load(std::sync::atomic::Ordering::Acquire) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(50));
            }
            connected
        });
        // Slowloris: request heads trickling in a byte at a time.
        let slowloris = s.spawn(|| {
            let mut streams: Vec<TcpStream> = (0..20)
                .filter_map(|_| TcpStream::connect(("127.0.0.1", http)).ok())
                .collect();
            let head = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
            let mut cut = 0;
            for (i, byte) in head.iter().cycle().take(60).enumerate() {
                for stream in &mut streams {
                    if stream.write_all(&[*byte]).is_err() {
                        cut += 1;
                    }
                }
                if i % 10 == 0 && done.load(std::sync::atomic::Ordering::Acquire) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            cut
        });

        std::thread::sleep(Duration::from_secs(1));
        let mut slowest = metrics_latency(http);
        // A caller from another address reaches the agent meanwhile.
        let caller = Sipp::new("uac_call")
            .service("402")
            .local_ip("127.0.0.3")
            .run_ok(&server);
        assert_eq!(invite_finals(&caller), [200], "{}", caller.report());
        server.wait_event(
            &["\"type\":\"call_connected\"", "\"agent\":\"1001\""],
            Duration::from_secs(10),
        );
        for _ in 0..5 {
            slowest = slowest.max(metrics_latency(http));
            let flood_calls = metric(http, "hotline_trunk_calls_active{trunk=\"flood\"}");
            assert!(flood_calls <= 5.0, "{flood_calls} flood calls at once");
            let tcp_open = metric(http, "hotline_sip_tcp_connections");
            assert!(tcp_open <= 300.0, "{tcp_open} SIP/TCP connections open");
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(
            slowest < Duration::from_secs(1),
            "/metrics took {slowest:?} during the flood"
        );

        let flood = flood.join().unwrap();
        let agent = agent.join().unwrap();
        assert!(agent.success(), "{}", agent.report());
        done.store(true, std::sync::atomic::Ordering::Release);
        let connected = tcp.join().unwrap();
        let cut = slowloris.join().unwrap();

        let refused = |reason: &str| {
            metric(
                http,
                &format!("hotline_sip_refused_total{{reason=\"{reason}\"}}"),
            )
        };
        let flood_finals = invite_finals(&flood);
        eprintln!(
            "flood finals {}, 503s {}, refused: rate {} trunk {} tcp {}+{} first-message {}, tcp connected {connected}, slowest /metrics {slowest:?}, slowloris cut {cut}",
            flood_finals.len(),
            flood_finals.iter().filter(|c| **c == 503).count(),
            refused("invite_rate"),
            refused("trunk_max_calls"),
            refused("tcp_connections"),
            refused("tcp_connections_per_source"),
            refused("tcp_first_message_timeout"),
        );
        let unavailable = flood_finals.iter().filter(|c| **c == 503).count();
        assert!(
            unavailable >= 100,
            "most of the flood gets 503: {unavailable} of {}",
            flood_finals.len()
        );
        assert!(
            refused("invite_rate") >= 100.0,
            "{}",
            refused("invite_rate")
        );
        let busy = flood
            .responses()
            .into_iter()
            .find(|m| m.status() == Some(503))
            .expect("a 503 to the flood");
        assert!(
            busy.header("Retry-After")
                .is_some_and(|v| v.trim().parse::<u32>().is_ok_and(|s| s > 0)),
            "503 without Retry-After:\n{}",
            busy.raw
        );
        assert!(refused("trunk_max_calls") >= 1.0);
        assert!(connected >= 1500, "only {connected} TCP connections made");
        let tcp_refused = refused("tcp_connections") + refused("tcp_connections_per_source");
        assert!(
            tcp_refused >= (connected - 300) as f64,
            "{tcp_refused} of {connected} TCP connections refused"
        );
        assert!(refused("tcp_connections_per_source") >= 1.0);
        assert!(
            metric(
                http,
                "hotline_http_refused_total{reason=\"header_timeout\"}"
            ) >= 1.0,
            "slowloris connections were cut ({cut} writes failed)"
        );
    });
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn calls_beyond_the_ceiling_get_503_with_retry_after() {
    let server = Server::start(TestConfig::new().extra("[limits]\nmax_calls = 1\n"));
    let mut first = Caller::new(&server);
    let offer = sdp_offer(first.rtp_addr(), "0", "a=rtpmap:0 PCMU/8000\r\n");
    let ok = first.invite("401", &offer);
    assert_status(&Some(ok), 200, "the first call");
    first.ack("");

    let second = UdpClient::bind("127.0.0.6", &server);
    let mut d = second.dialog();
    let uri = format!("sip:401@{}", server.sip_addr());
    let invite = d.request(
        "INVITE",
        &uri,
        "401",
        &[
            format!("Contact: <sip:y@{}>", second.local()),
            "Content-Type: application/sdp".into(),
        ],
        &offer,
    );
    second.send(&invite);
    let r = second.final_response("INVITE", Duration::from_secs(5));
    assert_status(&r, 503, "a second call over max_calls = 1");
    let retry = r.as_ref().and_then(|m| m.header("Retry-After"));
    assert!(
        retry.is_some_and(|v| v.trim().parse::<u32>().is_ok_and(|s| s > 0)),
        "Retry-After: {retry:?}"
    );
    first.bye();
    // Its place is free again once the first call has ended.
    server.wait_event(&["\"type\":\"call_ended\""], Duration::from_secs(5));
    let mut third = Caller::new(&server);
    let offer = sdp_offer(third.rtp_addr(), "0", "a=rtpmap:0 PCMU/8000\r\n");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = third.invite("401", &offer);
        if r.status() == Some(200) {
            third.ack("");
            third.bye();
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no place after the first call ended"
        );
        std::thread::sleep(Duration::from_millis(200));
        third = Caller::new(&server);
    }
}

#[test]
fn a_carrier_with_its_own_invite_rate_is_not_held_to_a_phones() {
    let server = Server::start(TestConfig::new().no_trunks().http(true).extra(
        "[trunks.carrier]\nsources = [\"127.0.0.4/32\"]\ninvite_rate = 100\n\
                 [trunks.pbx]\nsources = [\"127.0.0.5/32\"]\n\
                 [limits]\ninvite_rate = 2\ninvite_burst = 2\n",
    ));
    let http = server.http_port.unwrap();
    let refused = "hotline_sip_refused_total{reason=\"invite_rate\"}";
    // 40 INVITEs at 20 a second from the carrier: ten times the per-address
    // rate, well within its own. Each reaches admission (404: no such number).
    let run = Sipp::new("uac_unknown_number")
        .service("499")
        .local_ip("127.0.0.4")
        .args(&["-r", "20", "-m", "40", "-l", "40"])
        .run(&server);
    let finals = invite_finals(&run);
    assert_eq!(finals.len(), 40, "{}", run.messages);
    assert!(finals.iter().all(|&c| c == 404), "{finals:?}");
    assert_eq!(metric(http, refused), 0.0);
    // The same from a trunk without a rate of its own: the per-address rate.
    let run = Sipp::new("uac_unknown_number")
        .service("499")
        .local_ip("127.0.0.5")
        .args(&["-r", "20", "-m", "20", "-l", "20"])
        .run(&server);
    assert!(invite_finals(&run).contains(&503), "{}", run.messages);
    // Two at once and two a second let about 4 of the 20 through in the
    // second the run takes (a few more if a loaded machine slows SIPp).
    let limited = metric(http, refused);
    assert!((12.0..=18.0).contains(&limited), "{limited} refused");
}
