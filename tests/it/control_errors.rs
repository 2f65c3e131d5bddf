//! Call-control refusals over the CTI API: each carries the call's own code
//! beside its message, under the status of what stands against the request
//! (409 the call's state, 404 a target that does not exist, 422 a request
//! that contradicts itself, 503 a resource the call cannot get).

use std::net::UdpSocket;
use std::time::Duration;

use crate::support::*;

const ADMIN: &str = "control-errors-admin-token";

fn sha256(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// 1001 serves support (number 402, no survey) and is rung for up to 10 s;
/// 2001 is a supervisor's phone.
fn control_config() -> TestConfig {
    let mut config = acd_config(&format!(
        "[acd]\nwrap_up = \"1s\"\nring_cycle = \"10s\"\n\
         [queues.support]\nannounce_agent = false\n[queues.sales]\n\
         [monitor]\nsupervisors = [\"2001\"]\n\
         [api.tokens.admin]\nrole = \"admin\"\nsha256 = \"{}\"\n",
        sha256(ADMIN)
    ));
    config.agents.push(("2001".into(), "demo2001".into()));
    config.http(true)
}

/// The status, `code` and `message` of an API answer.
fn refusal(http: u16, method: &str, path: &str, body: Option<&str>) -> (u16, String, String) {
    let (status, text) = http_request(http, method, path, Some(ADMIN), body);
    let json: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let field = |name: &str| json[name].as_str().unwrap_or_default().to_string();
    (status, field("code"), field("message"))
}

#[test]
fn refusals_of_a_call_carry_its_code_under_the_status_of_their_kind() {
    let server = Server::start(control_config());
    let http = server.http_port.unwrap();
    let port = free_port();
    register_agent(&server, "1001", port);
    std::thread::scope(|s| {
        // The phone answers after 4 s: time to ask for a transfer while it rings.
        let agent = s.spawn(|| answering_agent(port, 4000, (0, "PCMU")).run(&server));
        let (mut caller, party) = call_in(&server, "402", 400.0);
        let offered = server.wait_event(&["\"type\":\"call_offered\""], Duration::from_secs(10));
        let id = call_id_of(&offered);
        let calls = format!("/api/v1/calls/{id}");

        // 409: the call is not bridged yet.
        let (status, code, message) = refusal(
            http,
            "POST",
            &format!("{calls}/transfer"),
            Some(r#"{"queue":"sales"}"#),
        );
        assert_eq!((status, code.as_str()), (409, "not_bridged"), "{message}");
        assert_eq!(
            message,
            "only a call connected to an agent can be transferred"
        );

        server.wait_event(&["\"type\":\"call_bridged\""], Duration::from_secs(15));

        // 422: the agent on the call names itself.
        let (status, code, message) = refusal(
            http,
            "POST",
            &format!("{calls}/consult"),
            Some(r#"{"agent":"1001"}"#),
        );
        assert_eq!((status, code.as_str()), (422, "self_consult"), "{message}");

        // 409: nobody consulted to hand over to, no consultation to end,
        // nobody monitoring to stop.
        let (status, code, message) =
            refusal(http, "POST", &format!("{calls}/consult/transfer"), None);
        assert_eq!(
            (status, code.as_str()),
            (409, "consult_not_answered"),
            "{message}"
        );
        let (status, code, message) = refusal(http, "DELETE", &format!("{calls}/consult"), None);
        assert_eq!(
            (status, code.as_str()),
            (409, "not_consulting"),
            "{message}"
        );
        assert_eq!(message, "no consultation is going on");
        let (status, code, message) = refusal(http, "DELETE", &format!("{calls}/monitor"), None);
        assert_eq!((status, code.as_str()), (409, "not_monitored"), "{message}");

        // 404: support has no survey to send the caller to.
        let (status, code, message) = refusal(
            http,
            "POST",
            &format!("{calls}/transfer"),
            Some(r#"{"survey":true}"#),
        );
        assert_eq!((status, code.as_str()), (404, "no_survey"), "{message}");
        assert_eq!(message, "queue support has no survey");

        // None of the refusals touched the call: the caller leaves it.
        assert!(server.events(&["\"type\":\"call_released\""]).is_empty());
        party.stop();
        caller.bye();
        agent.join().unwrap().assert_ok(&server);
    });
}

/// An even port starting four free UDP ports on 127.0.0.1, out of the
/// harness's blocks and the kernel's ephemeral range.
fn four_free_ports() -> u16 {
    for _ in 0..200 {
        let min = 20000 + 2 * rand::random_range(0..4000u16);
        let bound: Vec<_> = (min..min + 4)
            .map_while(|p| UdpSocket::bind(("127.0.0.1", p)).ok())
            .collect();
        if bound.len() == 4 {
            return min;
        }
    }
    panic!("no four free UDP ports in 20000-27999");
}

#[test]
fn a_monitoring_leg_without_rtp_ports_is_refused_as_unavailable() {
    // Two RTP pairs: the caller's and the agent's; the supervisor's leg finds none.
    let min = four_free_ports();
    let config =
        control_config().media(&format!("rtp_port_min = {min}\nrtp_port_max = {}", min + 3));
    let server = Server::start(config);
    let http = server.http_port.unwrap();
    let port = free_port();
    register_agent(&server, "1001", port);
    Sipp::new("register_auth")
        .service("2001")
        .auth("2001", "demo2001")
        .port(free_port())
        .run_ok(&server);
    std::thread::scope(|s| {
        let agent = s.spawn(|| answering_agent(port, 200, (0, "PCMU")).run(&server));
        let (mut caller, party) = call_in(&server, "402", 400.0);
        let bridged = server.wait_event(&["\"type\":\"call_bridged\""], Duration::from_secs(10));
        let id = call_id_of(&bridged);
        let (status, code, message) = refusal(
            http,
            "POST",
            &format!("/api/v1/calls/{id}/monitor"),
            Some(r#"{"mode":"listen","phone":"2001"}"#),
        );
        assert_eq!((status, code.as_str()), (503, "leg_failed"), "{message}");
        assert!(message.contains("no RTP ports"), "{message}");
        assert!(server.events(&["\"type\":\"monitor_started\""]).is_empty());
        party.stop();
        caller.bye();
        agent.join().unwrap().assert_ok(&server);
    });
}
