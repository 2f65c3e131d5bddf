//! Calls from trunks: admission by source or digest (407), numbers, answer,
//! ringing and CANCEL, hang-up. SIPp scenarios tests/sipp/uac_*.xml.

use crate::support::*;

/// The 200 OK to the INVITE in a SIPp run.
fn invite_ok(run: &SippRun) -> SipMsg {
    run.responses()
        .into_iter()
        .find(|m| m.status() == Some(200) && m.cseq_method().as_deref() == Some("INVITE"))
        .unwrap_or_else(|| panic!("no 200 OK to the INVITE\n{}", run.report()))
}

/// Asserts the SDP answer: PCMU (payload 0) first, a real port, an address.
fn assert_pcmu_answer(ok: &SipMsg) {
    let body = &ok.body;
    let m = body
        .lines()
        .find(|l| l.starts_with("m=audio "))
        .unwrap_or_else(|| panic!("SDP answer without m=audio:\n{}", ok.raw));
    let fields: Vec<&str> = m.split_whitespace().collect();
    let port: u32 = fields[1].parse().expect("m= port");
    assert!(port > 0 && port < 65536, "{m}");
    assert_eq!(fields.get(2), Some(&"RTP/AVP"), "{m}");
    assert_eq!(
        fields.get(3),
        Some(&"0"),
        "PCMU (payload 0) must be the answered codec: {m}"
    );
    assert!(body.lines().any(|l| l.starts_with("c=IN IP4 ")), "{body}");
    assert!(body.starts_with("v=0"), "{body}");
    assert!(
        ok.header("Contact").is_some(),
        "200 OK without Contact:\n{}",
        ok.raw
    );
}

/// The responses to the INVITE: provisional ones (100 Trying optional), then
/// one 200; nothing provisional after the final response.
fn assert_invite_responses(run: &SippRun) {
    let invite: Vec<u16> = run
        .responses()
        .iter()
        .filter(|m| m.cseq_method().as_deref() == Some("INVITE"))
        .filter_map(|m| m.status())
        .collect();
    let first_final = invite
        .iter()
        .position(|c| *c >= 200)
        .unwrap_or_else(|| panic!("no final response to the INVITE: {invite:?}"));
    assert!(
        invite[first_final..].iter().all(|c| *c >= 200),
        "a provisional response after the final one: {invite:?}"
    );
    if let Some(p) = invite.iter().position(|c| *c == 100) {
        assert_eq!(p, 0, "100 Trying after another response: {invite:?}");
    }
}

fn assert_call(run: &SippRun) {
    let codes = run.codes();
    assert_invite_responses(run);
    assert_pcmu_answer(&invite_ok(run));
    assert!(
        run.responses()
            .iter()
            .any(|m| m.status() == Some(200) && m.cseq_method().as_deref() == Some("BYE")),
        "no 200 OK to BYE: {codes:?}"
    );
}

#[test]
fn call_over_udp_is_answered_and_hung_up() {
    let server = Server::start(TestConfig::new());
    let run = Sipp::new("uac_call").service("401").run_ok(&server);
    assert_call(&run);
    server.assert_event(&[
        "\"type\":\"call_admitted\"",
        "\"trunk\":\"local\"",
        "\"number\":\"401\"",
    ]);
    server.assert_event(&["\"type\":\"call_answered\""]);
    server.assert_event(&[
        "\"type\":\"call_ended\"",
        "\"released_by\":\"caller\"",
        "\"answered\":true",
    ]);
}

#[test]
fn call_over_tcp_is_answered_and_hung_up() {
    let server = Server::start(TestConfig::new());
    let run = Sipp::new("uac_call").service("401").tcp().run_ok(&server);
    assert_call(&run);
}

#[test]
fn call_to_ivr_number() {
    let server = Server::start(TestConfig::new());
    let run = Sipp::new("uac_call").service("400").run_ok(&server);
    assert_call(&run);
}

/// A server whose only trunk admits 127.0.0.2, without credentials.
fn pbx_only_server() -> Server {
    Server::start(
        TestConfig::new()
            .no_trunks()
            .trunk("pbx", &["127.0.0.2/32"], None, &[]),
    )
}

#[test]
fn call_from_unknown_source_is_forbidden() {
    let server = pbx_only_server();
    let run = Sipp::new("uac_call_forbidden")
        .service("401")
        .local_ip("127.0.0.1")
        .run_ok(&server);
    assert_eq!(run.codes().last(), Some(&403), "{:?}", run.codes());
    server.assert_event(&[
        "\"type\":\"call_rejected\"",
        "\"reason\":\"not_a_trunk\"",
        "\"status\":403",
    ]);
}

#[test]
fn call_admitted_by_trunk_source() {
    // Only 127.0.0.2 is a trunk source: a call from there is answered.
    let server = pbx_only_server();
    let run = Sipp::new("uac_call")
        .service("401")
        .local_ip("127.0.0.2")
        .run_ok(&server);
    assert_call(&run);
}

#[test]
fn call_to_unknown_number_is_404() {
    let server = Server::start(TestConfig::new());
    let run = Sipp::new("uac_unknown_number")
        .service("499")
        .run_ok(&server);
    assert_eq!(run.codes().last(), Some(&404), "{:?}", run.codes());
    server.assert_event(&[
        "\"type\":\"call_rejected\"",
        "\"reason\":\"unknown_number\"",
        "\"number\":\"499\"",
    ]);
}

#[test]
fn ringing_call_is_cancelled() {
    let server = Server::start(TestConfig::new().answer_after("401", "3s"));
    let run = Sipp::new("uac_cancel").service("401").run_ok(&server);
    let responses = run.responses();
    let has = |code: u16, method: &str| {
        responses
            .iter()
            .any(|m| m.status() == Some(code) && m.cseq_method().as_deref() == Some(method))
    };
    assert!(has(180, "INVITE"), "no 180 Ringing: {:?}", run.codes());
    assert!(has(200, "CANCEL"), "no 200 OK to CANCEL: {:?}", run.codes());
    assert!(
        has(487, "INVITE"),
        "no 487 to the INVITE: {:?}",
        run.codes()
    );
    assert!(
        !has(200, "INVITE"),
        "a cancelled call was answered: {:?}",
        run.codes()
    );
    assert_invite_responses(&run);
}

#[test]
fn answer_after_rings_before_answering() {
    let server = Server::start(TestConfig::new().answer_after("401", "2s"));
    let run = Sipp::new("uac_call").service("401").run_ok(&server);
    assert_call(&run);
    let timeline = run.timeline();
    let invite_at = timeline
        .iter()
        .find(|e| !e.received && e.msg.method() == Some("INVITE"))
        .expect("INVITE sent")
        .at;
    let at = |code: u16| {
        timeline
            .iter()
            .find(|e| {
                e.received
                    && e.msg.status() == Some(code)
                    && e.msg.cseq_method().as_deref() == Some("INVITE")
            })
            .unwrap_or_else(|| panic!("no {code} to the INVITE: {:?}", run.codes()))
            .at
    };
    let ringing = at(180) - invite_at;
    let answered = at(200) - invite_at;
    assert!(ringing < 1.0, "180 Ringing after {ringing:.3} s");
    assert!(
        (1.8..4.0).contains(&answered),
        "answer_after = 2s but answered after {answered:.3} s"
    );
}

// ---------------------------------------------------------------------------
// Trunks with credentials (407)

fn carrier_config() -> TestConfig {
    TestConfig::new().no_trunks().trunk(
        "carrier",
        &["127.0.0.2/32"],
        Some(("carrier", "secret")),
        &[],
    )
}

#[test]
fn trunk_authenticates_with_407() {
    let server = Server::start(carrier_config());
    let run = Sipp::new("uac_trunk_auth")
        .service("401")
        .auth("carrier", "secret")
        .args(&["-auth_uri", &format!("401@{}", server.sip_addr())])
        .local_ip("127.0.0.1")
        .run_ok(&server);
    let codes: Vec<u16> = run.codes().into_iter().filter(|c| *c >= 200).collect();
    assert_eq!(codes, [407, 200, 200], "final responses: {:?}", run.codes());
    let challenge = run
        .responses()
        .into_iter()
        .find(|m| m.status() == Some(407))
        .unwrap();
    assert!(
        challenge.header("WWW-Authenticate").is_none(),
        "407 carries Proxy-Authenticate only"
    );
    let c = parse_challenge(
        challenge
            .header("Proxy-Authenticate")
            .expect("Proxy-Authenticate"),
    );
    assert_eq!(c.get("realm").map(String::as_str), Some("hotline"));
    // The 200 answers the authenticated INVITE (CSeq 2).
    assert!(invite_ok(&run).header("CSeq").unwrap().starts_with('2'));
    assert_pcmu_answer(&invite_ok(&run));
}

#[test]
fn trunk_without_sources_authenticates_with_407() {
    // A trunk with credentials and no sources: any address may authenticate.
    let server = Server::start(TestConfig::new().no_trunks().trunk(
        "carrier",
        &[],
        Some(("carrier", "secret")),
        &[],
    ));
    let run = Sipp::new("uac_trunk_auth")
        .service("401")
        .auth("carrier", "secret")
        .args(&["-auth_uri", &format!("401@{}", server.sip_addr())])
        .local_ip("127.0.0.1")
        .run_ok(&server);
    let codes: Vec<u16> = run.codes().into_iter().filter(|c| *c >= 200).collect();
    assert_eq!(codes, [407, 200, 200], "final responses: {:?}", run.codes());
}

#[test]
fn trunk_with_wrong_password_is_challenged_then_banned() {
    // No sources: the trunk may authenticate from anywhere (both readings of
    // the trunk rules agree on that), so this tests the challenge and the ban.
    let server = Server::start(
        TestConfig::new()
            .no_trunks()
            .trunk("carrier", &[], Some(("carrier", "secret")), &[])
            .max_failures(2),
    );
    let run = Sipp::new("uac_trunk_auth_wrong")
        .service("401")
        .auth("carrier", "wrong")
        .args(&["-auth_uri", &format!("401@{}", server.sip_addr())])
        .local_ip("127.0.0.1")
        .run_ok(&server);
    let finals: Vec<u16> = run.codes().into_iter().filter(|c| *c >= 200).collect();
    assert_eq!(&finals[..2], &[407, 407], "{finals:?}");
    assert_eq!(finals.last(), Some(&403), "{finals:?}");
    // Another source address is not banned.
    UdpClient::bind("127.0.0.3", &server).assert_options_ok("OPTIONS from 127.0.0.3");
}

#[test]
fn trunk_with_credentials_admits_its_sources_without_challenge() {
    let server = Server::start(carrier_config());
    let run = Sipp::new("uac_call")
        .service("401")
        .local_ip("127.0.0.2")
        .run_ok(&server);
    assert!(!run.codes().contains(&407), "{:?}", run.codes());
    assert_call(&run);
}
