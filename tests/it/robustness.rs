//! OPTIONS, unsupported methods, Max-Forwards, malformed input. The server
//! must answer what it can and keep serving after anything it receives.

use std::time::Duration;

use crate::support::*;

const QUIET: Duration = Duration::from_millis(1500);

#[test]
fn options_lists_capabilities() {
    let server = Server::start(TestConfig::new());
    let run = server.sipp_ok("options", &[]);
    let ok = &run.responses()[0];
    let allow = ok.header_list("Allow");
    for m in ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER"] {
        assert!(allow.iter().any(|a| a == m), "Allow lacks {m}: {allow:?}");
    }
    assert!(
        ok.header_list("Accept")
            .iter()
            .any(|a| a == "application/sdp"),
        "{}",
        ok.raw
    );
    assert!(
        !ok.headers("Supported").is_empty(),
        "no Supported header:\n{}",
        ok.raw
    );
}

#[test]
fn options_over_tcp() {
    let server = Server::start(TestConfig::new());
    let mut client = TcpClient::connect(&server);
    let mut d = client.dialog();
    let r = client.transact(&d.options());
    assert_status(&r, 200, "OPTIONS over TCP");
}

#[test]
fn unknown_method_501_and_unserved_methods_405() {
    let server = Server::start(TestConfig::new());
    let run = server.sipp_ok("unknown_method", &[]);
    assert_eq!(run.codes(), [501, 405, 405, 200]);
}

#[test]
fn max_forwards_zero_is_483() {
    let server = Server::start(TestConfig::new());
    let run = Sipp::new("max_forwards").service("401").run_ok(&server);
    let finals: Vec<u16> = run.codes().into_iter().filter(|c| *c >= 200).collect();
    assert_eq!(finals, [483, 483, 200]);
}

#[test]
fn malformed_requests_get_400_with_a_reason() {
    let server = Server::start(TestConfig::new());
    let run = server.sipp_ok("malformed", &[]);
    let responses = run.responses();
    assert_eq!(run.codes(), [400, 400, 200]);
    for r in &responses[..2] {
        let reason = r.reason();
        assert!(
            !reason.is_empty() && reason != "Bad Request",
            "the reason phrase should say what is wrong, not just `{reason}`"
        );
    }
}

// ---------------------------------------------------------------------------
// Raw UDP

/// A request with `drop` header lines removed.
fn without(request: &str, drop: &[&str]) -> String {
    request
        .split("\r\n")
        .filter(|l| {
            !drop
                .iter()
                .any(|d| l.to_ascii_lowercase().starts_with(&d.to_ascii_lowercase()))
        })
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// Sends `bytes`, then asserts the server still answers OPTIONS with 200.
/// Returns what came back for `bytes` within 1.5 s.
fn send_then_probe(server: &Server, bytes: &[u8]) -> Option<SipMsg> {
    let client = UdpClient::new(server);
    client.send(bytes);
    let answer = client.recv(QUIET);
    client.assert_options_ok("after a malformed datagram");
    answer
}

#[test]
fn garbage_datagrams_are_ignored() {
    let server = Server::start(TestConfig::new());
    let mut junk: Vec<u8> = (0..1400u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    junk[0] = 0xff;
    let answer = send_then_probe(&server, &junk);
    assert!(
        answer.is_none(),
        "answered pure garbage: {:?}",
        answer.map(|m| m.raw)
    );
    let answer = send_then_probe(&server, b"\x00\x01\x02 hello there \r\n\r\n");
    assert!(
        answer.is_none(),
        "answered garbage: {:?}",
        answer.map(|m| m.raw)
    );
    // a burst of junk of every size
    let client = UdpClient::new(&server);
    for n in 1..200usize {
        client.send(&junk[..n * 7 % junk.len()]);
    }
    client.assert_options_ok("after 200 garbage datagrams");
}

#[test]
fn truncated_datagram_is_400_or_ignored() {
    let server = Server::start(TestConfig::new());
    let probe = UdpClient::new(&server);
    let full = probe.dialog().options();
    let cut = &full[..full.find("Call-ID").unwrap() + 5];
    let answer = send_then_probe(&server, cut.as_bytes());
    if let Some(m) = answer {
        assert_eq!(
            m.status(),
            Some(400),
            "truncated datagram answered with `{}`",
            m.start_line
        );
    }
}

#[test]
fn missing_via_is_ignored() {
    let server = Server::start(TestConfig::new());
    let client = UdpClient::new(&server);
    let req = without(&client.dialog().options(), &["Via:"]);
    let answer = send_then_probe(&server, req.as_bytes());
    assert!(
        answer.is_none(),
        "a request without Via was answered: {:?}",
        answer.map(|m| m.raw)
    );
}

#[test]
fn missing_call_id_is_400() {
    // Via is there, so an answer is possible.
    let server = Server::start(TestConfig::new());
    let client = UdpClient::new(&server);
    let req = without(&client.dialog().options(), &["Call-ID:"]);
    let m = send_then_probe(&server, req.as_bytes());
    assert_status(&m, 400, "OPTIONS without Call-ID");
    let reason = m.unwrap().reason();
    assert!(
        reason.to_ascii_lowercase().contains("call-id"),
        "reason `{reason}` does not name Call-ID"
    );
}

#[test]
fn missing_cseq_is_400() {
    let server = Server::start(TestConfig::new());
    let client = UdpClient::new(&server);
    let req = without(&client.dialog().options(), &["CSeq:"]);
    let m = send_then_probe(&server, req.as_bytes());
    assert_status(&m, 400, "OPTIONS without CSeq");
    let reason = m.unwrap().reason();
    assert!(
        reason.to_ascii_lowercase().contains("cseq"),
        "reason `{reason}` does not name CSeq"
    );
}

#[test]
fn non_numeric_cseq_is_400() {
    let server = Server::start(TestConfig::new());
    let client = UdpClient::new(&server);
    let req = client.dialog().options();
    let cseq = req.lines().find(|l| l.starts_with("CSeq:")).unwrap();
    let req = req.replacen(cseq, "CSeq: abc OPTIONS", 1);
    let m = send_then_probe(&server, req.as_bytes());
    assert_status(&m, 400, "OPTIONS with `CSeq: abc OPTIONS`");
    let reason = m.unwrap().reason();
    assert!(
        reason.to_ascii_lowercase().contains("cseq"),
        "reason `{reason}` does not name CSeq"
    );
}

#[test]
fn missing_from_and_to_are_400() {
    let server = Server::start(TestConfig::new());
    let client = UdpClient::new(&server);
    for (header, word) in [("From:", "from"), ("To:", "to")] {
        let req = without(&client.dialog().options(), &[header]);
        let m = send_then_probe(&server, req.as_bytes());
        assert_status(&m, 400, &format!("OPTIONS without {header}"));
        let reason = m.unwrap().reason().to_ascii_lowercase();
        let words: Vec<&str> = reason
            .split(|c: char| !c.is_ascii_alphanumeric() && c != '-')
            .collect();
        assert!(
            words.contains(&word),
            "reason `{reason}` does not name {header}"
        );
    }
}

#[test]
fn content_length_beyond_datagram_is_400() {
    let server = Server::start(TestConfig::new());
    let client = UdpClient::new(&server);
    let mut d = client.dialog();
    let req = d
        .request(
            "OPTIONS",
            &format!("sip:{}", server.sip_addr()),
            "probe",
            &["Content-Type: text/plain".into()],
            "0123456789",
        )
        .replace("Content-Length: 10", "Content-Length: 400");
    let m = send_then_probe(&server, req.as_bytes());
    assert_status(&m, 400, "Content-Length 400 with a 10-byte body");
}

#[test]
fn bad_request_line_and_version() {
    let server = Server::start(TestConfig::new());
    let client = UdpClient::new(&server);
    // SIP/3.0 is 505 Version Not Supported or 400; either way answered and alive.
    let req = client
        .dialog()
        .options()
        .replacen("SIP/2.0\r\n", "SIP/3.0\r\n", 1);
    if let Some(m) = send_then_probe(&server, req.as_bytes()) {
        assert!(
            matches!(m.status(), Some(400) | Some(505)),
            "{}",
            m.start_line
        );
    }
    // A request line with a missing URI.
    let req = client
        .dialog()
        .options()
        .replacen(&format!("sip:{}", server.sip_addr()), "", 1);
    if let Some(m) = send_then_probe(&server, req.as_bytes()) {
        assert_eq!(m.status(), Some(400), "{}", m.start_line);
    }
}

// ---------------------------------------------------------------------------
// Raw TCP

#[test]
fn tcp_garbage_then_new_connection_works() {
    let mut server = Server::start(TestConfig::new());
    {
        let mut c = TcpClient::connect(&server);
        c.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 this is not SIP\r\n\r\n");
        // Whatever the server does with it (close, 400, nothing), it must not hang or die.
        let _ = c.recv(Duration::from_millis(500));
    }
    server.assert_alive();
    let mut c = TcpClient::connect(&server);
    let mut d = c.dialog();
    assert_status(
        &c.transact(&d.options()),
        200,
        "OPTIONS on a new TCP connection",
    );
    UdpClient::new(&server).assert_options_ok("UDP after TCP garbage");
}

#[test]
fn tcp_malformed_request_then_valid_one() {
    let server = Server::start(TestConfig::new());
    let mut c = TcpClient::connect(&server);
    let req = without(&c.dialog().options(), &["CSeq:"]);
    c.send(req.as_bytes());
    let m = c.recv(QUIET);
    assert_status(&m, 400, "OPTIONS without CSeq over TCP");
    // The framing was intact: the same connection still works (or, if the
    // server chose to close it, a new one does).
    let mut d = c.dialog();
    let r = c.transact(&d.options());
    let r = match r {
        Some(r) => Some(r),
        None => {
            let mut c2 = TcpClient::connect(&server);
            let mut d2 = c2.dialog();
            c2.transact(&d2.options())
        }
    };
    assert_status(&r, 200, "OPTIONS after a malformed request over TCP");
}

#[test]
fn tcp_half_sent_message_and_disconnect() {
    let server = Server::start(TestConfig::new());
    {
        let mut c = TcpClient::connect(&server);
        let full = c.dialog().options();
        c.send(&full.as_bytes()[..full.len() / 2]);
        c.shutdown_write();
        let _ = c.recv(Duration::from_millis(300));
    }
    let mut c = TcpClient::connect(&server);
    let mut d = c.dialog();
    assert_status(
        &c.transact(&d.options()),
        200,
        "OPTIONS after a half-sent message",
    );
}
