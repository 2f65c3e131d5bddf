//! Registrar: REGISTER with digest authentication, bindings, expiry, limits,
//! brute-force protection. Mostly SIPp scenarios (tests/sipp/register_*.xml);
//! SHA-256 digest from raw UDP, since SIPp 3.6 answers MD5 challenges only.

use std::time::Duration;

use crate::support::*;

const AGENT: &str = "1001";
const PASSWORD: &str = "demo1001";

fn agent_sipp(scenario: &str) -> Sipp {
    Sipp::new(scenario).service(AGENT).auth(AGENT, PASSWORD)
}

/// The final 200 OK to a REGISTER in a SIPp run.
fn last_register_ok(run: &SippRun) -> SipMsg {
    run.responses()
        .into_iter()
        .rev()
        .find(|m| m.status() == Some(200) && m.cseq_method().as_deref() == Some("REGISTER"))
        .unwrap_or_else(|| panic!("no 200 OK to a REGISTER\n{}", run.report()))
}

fn assert_register_auth(run: &SippRun) {
    assert_eq!(run.codes(), vec![401, 200], "responses\n{}", run.report());
    let challenge = &run.responses()[0];
    let www = challenge.headers("WWW-Authenticate");
    assert_eq!(
        www.len(),
        1,
        "one challenge per configured algorithm (MD5 only): {www:?}"
    );
    let c = parse_challenge(www[0]);
    assert_eq!(
        c.get("realm").map(String::as_str),
        Some("hotline"),
        "{www:?}"
    );
    assert_eq!(
        c.get("algorithm").map(String::as_str),
        Some("MD5"),
        "{www:?}"
    );
    assert_eq!(c.get("qop").map(String::as_str), Some("auth"), "{www:?}");
    assert!(c.get("nonce").is_some_and(|n| !n.is_empty()), "{www:?}");
    assert!(c.contains_key("opaque"), "{www:?}");

    let ok = last_register_ok(run);
    let ours = format!("sip:{AGENT}@{}:{}", run.local_ip, run.local_port);
    let contacts = ok.contacts();
    assert_eq!(contacts.len(), 1, "exactly our binding: {contacts:?}");
    assert_eq!(contacts[0].0, ours, "{contacts:?}");
    let expires = contacts[0].1.expect("Contact with ;expires");
    assert!((590..=600).contains(&expires), "expires={expires}");
    assert!(
        ok.header("Date").is_some(),
        "200 OK to REGISTER without Date:\n{}",
        ok.raw
    );
}

#[test]
fn register_with_digest_md5_over_udp() {
    let server = Server::start(TestConfig::new());
    let run = agent_sipp("register_auth").run_ok(&server);
    assert_register_auth(&run);
    server.assert_event(&["\"type\":\"registration_added\"", "\"aor\":\"1001\""]);
}

#[test]
fn register_with_digest_md5_over_tcp() {
    let server = Server::start(TestConfig::new());
    let run = agent_sipp("register_auth").tcp().run_ok(&server);
    assert_register_auth(&run);
    assert!(
        run.sent()[0].header("Via").unwrap().contains("SIP/2.0/TCP"),
        "SIPp did not use TCP"
    );
}

#[test]
fn register_with_wrong_password_is_challenged_then_locked_out() {
    let server = Server::start(TestConfig::new().max_failures(3).ban_time("5m"));
    let run = Sipp::new("register_wrong_password")
        .service(AGENT)
        .auth(AGENT, "wrong-password")
        .run_ok(&server);
    let codes = run.codes();
    assert_eq!(&codes[..3], &[401, 401, 401], "{codes:?}");
    assert_eq!(&codes[codes.len() - 3..], &[403, 403, 200], "{codes:?}");
    // Every 401 carries a fresh challenge: no nonce is offered twice.
    let nonces: Vec<String> = run
        .responses()
        .iter()
        .filter(|m| m.status() == Some(401))
        .map(|m| {
            parse_challenge(
                m.header("WWW-Authenticate")
                    .expect("401 without WWW-Authenticate"),
            )
            .get("nonce")
            .cloned()
            .unwrap_or_default()
        })
        .collect();
    let mut unique = nonces.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        nonces.len(),
        "a nonce was re-used: {nonces:?}"
    );

    // The lockout is of authentication only: other requests from the same
    // address are served.
    UdpClient::bind("127.0.0.1", &server).assert_options_ok("OPTIONS from 127.0.0.1");
    server.assert_event(&[
        "\"type\":\"auth_failed\"",
        "\"username\":\"1001\"",
        "wrong password",
    ]);
    server.assert_event(&[
        "\"type\":\"source_banned\"",
        "\"source\":\"127.0.0.1\"",
        "\"ban_secs\":300",
    ]);
}

#[test]
fn register_unknown_user_is_challenged_again() {
    let server = Server::start(TestConfig::new());
    let client = UdpClient::new(&server);
    let mut d = client.dialog();
    let r = client.transact(&d.register("9999", Some(600), &[]));
    assert_status(&r, 401, "REGISTER for unknown user 9999");
    let challenge = r.unwrap().header("WWW-Authenticate").unwrap().to_string();
    let uri = format!("sip:{}", server.sip_addr());
    let auth = authorization(&challenge, "9999", "whatever", "REGISTER", &uri);
    let r = client.transact(&d.register("9999", Some(600), &[format!("Authorization: {auth}")]));
    assert_status(&r, 401, "REGISTER for unknown user 9999 with credentials");
    assert!(
        r.unwrap().header("WWW-Authenticate").is_some(),
        "401 without a challenge"
    );
}

#[test]
fn register_refresh_keeps_one_binding() {
    let server = Server::start(TestConfig::new());
    let run = agent_sipp("register_refresh").run_ok(&server);
    let contacts = last_register_ok(&run).contacts();
    assert_eq!(contacts.len(), 1, "{contacts:?}");
    assert!(
        contacts[0].1.is_some_and(|e| (290..=300).contains(&e)),
        "refreshed expiry: {contacts:?}"
    );
}

#[test]
fn register_several_contacts() {
    let server = Server::start(TestConfig::new());
    let run = agent_sipp("register_multi_contact").run_ok(&server);
    let mut contacts = last_register_ok(&run).contacts();
    contacts.sort();
    let at = format!("{}:{}", run.local_ip, run.local_port);
    let uris: Vec<String> = contacts.iter().map(|c| c.0.clone()).collect();
    assert_eq!(
        uris,
        vec![
            format!("sip:{AGENT}-a@{at}"),
            format!("sip:{AGENT}-b@{at}"),
            format!("sip:{AGENT}-c@{at}")
        ]
    );
    let e: Vec<u64> = contacts.iter().map(|c| c.1.expect("expires")).collect();
    assert!(
        (580..=600).contains(&e[0]) && (880..=900).contains(&e[1]) && (1180..=1200).contains(&e[2]),
        "{e:?}"
    );
}

#[test]
fn unregister_one_contact_and_all() {
    let server = Server::start(TestConfig::new());
    let run = agent_sipp("register_unregister").run_ok(&server);
    // Every REGISTER was first refused for lack of credentials, including
    // `Contact: *` (an unauthenticated request must not unregister anyone).
    let codes = run.codes();
    assert_eq!(codes, [401, 200].repeat(8), "{codes:?}");
    assert!(last_register_ok(&run).contacts().is_empty());
    server.assert_event(&[
        "\"type\":\"registration_removed\"",
        "\"reason\":\"unregistered\"",
    ]);
    server.assert_event(&[
        "\"type\":\"registration_removed\"",
        "\"reason\":\"unregistered_all\"",
    ]);
}

#[test]
fn bindings_expire() {
    let server = Server::start(TestConfig::new().min_expires("1s"));
    agent_sipp("register_expiry").run_ok(&server);
    server.assert_event(&[
        "\"type\":\"registration_removed\"",
        "\"reason\":\"expired\"",
    ]);
}

#[test]
fn too_brief_expiry_gets_423() {
    let server = Server::start(TestConfig::new().min_expires("60s"));
    let run = agent_sipp("register_min_expires").run_ok(&server);
    let briefs: Vec<SipMsg> = run
        .responses()
        .into_iter()
        .filter(|m| m.status() == Some(423))
        .collect();
    assert_eq!(briefs.len(), 3, "{:?}", run.codes());
    for m in briefs {
        assert_eq!(
            m.header("Min-Expires").map(str::trim),
            Some("60"),
            "{}",
            m.raw
        );
    }
}

#[test]
fn too_long_expiry_is_lowered_and_default_applies() {
    let server = Server::start(TestConfig::new().max_expires("1h").default_expires("30m"));
    agent_sipp("register_max_expires").run_ok(&server);
}

#[test]
fn stale_nonce_gets_stale_true() {
    let server = Server::start(TestConfig::new().nonce_ttl("2s"));
    let run = agent_sipp("register_stale_nonce").run_ok(&server);
    assert_eq!(run.codes(), vec![401, 401, 200], "{}", run.report());
}

// ---------------------------------------------------------------------------
// SHA-256 (raw UDP: SIPp 3.6 cannot answer it)

/// REGISTER -> 401 with one challenge per algorithm, in the configured order.
fn challenges(client: &UdpClient, d: &mut Dialog) -> Vec<String> {
    let r = client.transact(&d.register(AGENT, Some(600), &[]));
    assert_status(&r, 401, "REGISTER without credentials");
    r.unwrap()
        .headers("WWW-Authenticate")
        .into_iter()
        .map(str::to_string)
        .collect()
}

fn register_with(
    client: &UdpClient,
    d: &mut Dialog,
    challenge: &str,
    password: &str,
) -> Option<SipMsg> {
    let uri = format!("sip:{}", client.server);
    let auth = authorization(challenge, AGENT, password, "REGISTER", &uri);
    client.transact(&d.register(AGENT, Some(600), &[format!("Authorization: {auth}")]))
}

/// The `algorithm` of each challenge, in order.
fn algorithms_of(www: &[String]) -> Vec<String> {
    www.iter()
        .map(|w| {
            parse_challenge(w)
                .get("algorithm")
                .cloned()
                .unwrap_or_default()
        })
        .collect()
}

#[test]
fn register_with_digest_sha256() {
    let server = Server::start(TestConfig::new().algorithms(&["SHA-256", "MD5"]));
    let client = UdpClient::new(&server);
    let mut d = client.dialog();
    let www = challenges(&client, &mut d);
    assert_eq!(www.len(), 2, "one WWW-Authenticate per algorithm: {www:?}");
    let algs = algorithms_of(&www);
    assert_eq!(
        algs,
        ["SHA-256", "MD5"],
        "order of the configured algorithms"
    );
    for w in &www {
        assert!(w.trim_start().starts_with("Digest "), "{w}");
        let c = parse_challenge(w);
        assert_eq!(c.get("qop").map(String::as_str), Some("auth"), "{w}");
        assert_eq!(c.get("realm").map(String::as_str), Some("hotline"), "{w}");
        assert!(c.get("nonce").is_some_and(|n| !n.is_empty()), "{w}");
        assert!(c.contains_key("opaque"), "{w}");
    }

    let r = register_with(&client, &mut d, &www[0], PASSWORD);
    assert_status(&r, 200, "REGISTER answering the SHA-256 challenge");
    let contacts = r.unwrap().contacts();
    let ours = format!("sip:{AGENT}@{}", client.local());
    assert!(
        contacts
            .iter()
            .any(|(u, e)| *u == ours && e.is_some_and(|e| (590..=600).contains(&e))),
        "{contacts:?}"
    );

    // A wrong password with SHA-256 is refused with a new challenge.
    let www = challenges(&client, &mut d);
    let r = register_with(&client, &mut d, &www[0], "not-the-password");
    assert_status(&r, 401, "SHA-256 with a wrong password");

    // The MD5 challenge of the same 401 is answerable too.
    let www = challenges(&client, &mut d);
    let r = register_with(&client, &mut d, &www[1], PASSWORD);
    assert_status(&r, 200, "REGISTER answering the MD5 challenge");
}

#[test]
fn challenge_order_follows_config() {
    let server = Server::start(TestConfig::new().algorithms(&["MD5", "SHA-256"]));
    let client = UdpClient::new(&server);
    let mut d = client.dialog();
    let www = challenges(&client, &mut d);
    let algs = algorithms_of(&www);
    assert_eq!(algs, ["MD5", "SHA-256"]);
    let r = register_with(&client, &mut d, &www[1], PASSWORD);
    assert_status(&r, 200, "REGISTER answering the SHA-256 challenge");
}

#[test]
fn sha256_stale_nonce_over_tcp() {
    let server = Server::start(TestConfig::new().algorithms(&["SHA-256"]).nonce_ttl("2s"));
    let mut client = TcpClient::connect(&server);
    let mut d = client.dialog();
    let r = client.transact(&d.register(AGENT, Some(600), &[]));
    assert_status(&r, 401, "REGISTER over TCP");
    let www = r.unwrap().header("WWW-Authenticate").unwrap().to_string();
    assert_eq!(
        parse_challenge(&www).get("algorithm").map(String::as_str),
        Some("SHA-256")
    );
    std::thread::sleep(Duration::from_millis(3000));
    let uri = format!("sip:{}", server.sip_addr());
    let auth = authorization(&www, AGENT, PASSWORD, "REGISTER", &uri);
    let r = client.transact(&d.register(AGENT, Some(600), &[format!("Authorization: {auth}")]));
    assert_status(&r, 401, "credentials with an expired nonce");
    let www = r.unwrap().header("WWW-Authenticate").unwrap().to_string();
    assert_eq!(
        parse_challenge(&www)
            .get("stale")
            .map(|s| s.to_ascii_lowercase()),
        Some("true".to_string()),
        "{www}"
    );
    let auth = authorization(&www, AGENT, PASSWORD, "REGISTER", &uri);
    let r = client.transact(&d.register(AGENT, Some(600), &[format!("Authorization: {auth}")]));
    assert_status(&r, 200, "credentials with the new nonce");
}
