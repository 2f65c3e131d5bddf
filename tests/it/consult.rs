//! Consultation, attended transfer and three-way calls (rulebook L6) with
//! real audio: the caller, the call's agent (1001) and the consulted agent
//! (1002) each send a tone of their own, and who hears whom is checked by
//! frequency at every step. The agents' phones are SIPp for the signalling,
//! with their audio on sockets of this test.

use std::time::{Duration, Instant};

use crate::support::*;

const ADMIN: &str = "consult-admin-token";
const CALLER_HZ: f64 = 400.0;
const AGENT_HZ: f64 = 1000.0;
const EXPERT_HZ: f64 = 1700.0;

fn sha256(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// 1001 serves support (the caller's queue); 1002 serves sales only, so the
/// call is 1001's and 1002 is free to be consulted.
fn consult_config(acd: &str) -> TestConfig {
    acd_config(&format!(
        "[acd]\nwrap_up = \"1s\"\n{acd}\n\
         [queues.support]\nannounce_agent = false\n[queues.sales]\n\
         [api.tokens.admin]\nrole = \"admin\"\nsha256 = \"{}\"\n",
        sha256(ADMIN)
    ))
    .agent_queues("1002", &["sales"])
    .http(true)
}

struct Floor {
    server: Server,
    http: u16,
    ports: (u16, u16),
    agent: (Party, u16),
    expert: (Party, u16),
}

fn floor(acd: &str) -> Floor {
    let server = Server::start(consult_config(acd));
    let http = server.http_port.unwrap();
    let ports = (free_port(), free_port());
    register_agent(&server, "1001", ports.0);
    register_agent(&server, "1002", ports.1);
    let (agent_socket, agent_rtp) = rtp_socket();
    let (expert_socket, expert_rtp) = rtp_socket();
    Floor {
        server,
        http,
        ports,
        agent: (Party::start(agent_socket, AGENT_HZ, None), agent_rtp),
        expert: (Party::start(expert_socket, EXPERT_HZ, None), expert_rtp),
    }
}

impl Floor {
    fn post(&self, path: &str, body: Option<&str>) -> (u16, String) {
        http_request(self.http, "POST", path, Some(ADMIN), body)
    }

    /// Asserts who hears which tone in a window.
    fn hears(
        &self,
        caller: &Party,
        window: (&str, Instant, Instant),
        expected: &[(&str, f64, bool)],
    ) {
        let (name, from, to) = window;
        eprintln!(
            "{name}: caller {}; agent {} (port {}); expert {} (port {})",
            caller.stats(),
            self.agent.0.stats(),
            self.agent.1,
            self.expert.0.stats(),
            self.expert.1
        );
        for &(who, hz, audible) in expected {
            let party = match who {
                "caller" => caller,
                "agent" => &self.agent.0,
                _ => &self.expert.0,
            };
            let share = party.share(hz, from, to);
            if audible {
                assert!(
                    share > 0.12,
                    "{name}: the {who} should hear {hz} Hz (share {share:.3})"
                );
            } else {
                assert!(
                    share < 0.02,
                    "{name}: the {who} should not hear {hz} Hz (share {share:.3})"
                );
            }
        }
    }
}

fn talk(ms: u64) -> (Instant, Instant) {
    let from = settle();
    std::thread::sleep(Duration::from_millis(ms));
    (from, Instant::now())
}

#[test]
fn a_consultation_becomes_a_three_way_call_and_the_agent_leaves_it() {
    let f = floor("");
    let server = &f.server;
    std::thread::scope(|s| {
        // 1001 hangs up on its own after 11 s: by then it is a three-way call.
        let agent_phone = s.spawn(|| {
            Sipp::new("phone_answer_rtp_hangs_up")
                .port(f.ports.0)
                .media()
                .args(&["-d", "11000", "-key", "rtp_port", &f.agent.1.to_string()])
                .run(server)
        });
        let expert_phone = s.spawn(|| answering_phone(f.ports.1, f.expert.1).run(server));
        let (mut caller_sip, caller) = call_in(server, "402", CALLER_HZ);
        let bridged = server.wait_event(&["\"type\":\"call_bridged\""], Duration::from_secs(10));
        let started = Instant::now();
        let id = call_id_of(&bridged);
        let (from, to) = talk(1200);
        let talking = ("talking", from, to);

        let (status, body) = f.post(
            &format!("/api/v1/calls/{id}/consult"),
            Some(r#"{"agent":"1002"}"#),
        );
        assert_eq!(status, 202, "{body}");
        server.wait_event(
            &["\"type\":\"hold_started\"", "\"by\":\"consult\""],
            Duration::from_secs(3),
        );
        server.wait_event(
            &["\"type\":\"consult_answered\"", "\"consultant\":\"1002\""],
            Duration::from_secs(5),
        );
        let (from, to) = talk(1200);
        let consulting = ("consulting", from, to);

        let (status, body) = f.post(&format!("/api/v1/calls/{id}/consult/conference"), None);
        assert_eq!(status, 200, "{body}");
        server.wait_event(&["\"type\":\"conference_started\""], Duration::from_secs(3));
        let (from, to) = talk(1500);
        let three_way = ("three-way", from, to);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the three-way call must be measured before the agent leaves"
        );

        // The agent hangs up: the consulted agent stays with the caller.
        server.wait_event(
            &["\"type\":\"conference_ended\"", "\"consultant\":\"1002\""],
            Duration::from_secs(10),
        );
        server.wait_event(
            &[
                "\"type\":\"call_transferred\"",
                "\"to_agent\":\"1002\"",
                "\"count\":1",
            ],
            Duration::from_secs(3),
        );
        let (from, to) = talk(1200);
        let handed_over = ("handed over", from, to);
        agent_phone.join().unwrap().assert_ok(server);
        caller_sip.bye();
        expert_phone.join().unwrap().assert_ok(server);

        f.hears(
            &caller,
            talking,
            &[
                ("caller", AGENT_HZ, true),
                ("caller", EXPERT_HZ, false),
                ("agent", CALLER_HZ, true),
            ],
        );
        f.hears(
            &caller,
            consulting,
            &[
                ("caller", EXPERT_HZ, false),
                ("agent", EXPERT_HZ, true),
                ("agent", CALLER_HZ, false),
                ("expert", AGENT_HZ, true),
                ("expert", CALLER_HZ, false),
            ],
        );
        f.hears(
            &caller,
            three_way,
            &[
                ("caller", AGENT_HZ, true),
                ("caller", EXPERT_HZ, true),
                ("agent", CALLER_HZ, true),
                ("agent", EXPERT_HZ, true),
                ("expert", CALLER_HZ, true),
                ("expert", AGENT_HZ, true),
            ],
        );
        f.hears(
            &caller,
            handed_over,
            &[
                ("caller", EXPERT_HZ, true),
                ("caller", AGENT_HZ, false),
                ("expert", CALLER_HZ, true),
            ],
        );
        caller.stop();
    });
    server.wait_event(
        &["\"type\":\"call_released\"", "\"agent\":\"1002\""],
        Duration::from_secs(3),
    );
    let metrics = http_get(f.http, "/metrics");
    assert!(
        has_line(
            &metrics,
            "hotline_consultations_total{outcome=\"conference\",queue=\"support\"} 1"
        ),
        "{metrics}"
    );
    assert!(has_line(
        &metrics,
        "hotline_transfers_total{queue=\"support\"} 1"
    ));
}

#[test]
fn an_attended_transfer_hands_the_caller_over_and_counts_on_the_record() {
    let f = floor("");
    let server = &f.server;
    std::thread::scope(|s| {
        let agent_phone = s.spawn(|| answering_phone(f.ports.0, f.agent.1).run(server));
        let expert_phone = s.spawn(|| answering_phone(f.ports.1, f.expert.1).run(server));
        let (mut caller_sip, caller) = call_in(server, "402", CALLER_HZ);
        let bridged = server.wait_event(&["\"type\":\"call_bridged\""], Duration::from_secs(10));
        let id = call_id_of(&bridged);
        // Nothing to hand over before someone was consulted.
        let (status, _) = f.post(&format!("/api/v1/calls/{id}/consult/transfer"), None);
        assert_eq!(status, 409);
        let (status, _) = f.post(
            &format!("/api/v1/calls/{id}/consult"),
            Some(r#"{"agent":"1003"}"#),
        );
        assert_eq!(status, 409, "1003 is not logged in");
        let (status, body) = f.post(
            &format!("/api/v1/calls/{id}/consult"),
            Some(r#"{"agent":"1002"}"#),
        );
        assert_eq!(status, 202, "{body}");
        server.wait_event(&["\"type\":\"consult_answered\""], Duration::from_secs(5));
        let (status, body) = f.post(&format!("/api/v1/calls/{id}/consult/transfer"), None);
        assert_eq!(status, 200, "{body}");
        server.wait_event(
            &["\"type\":\"consult_ended\"", "\"outcome\":\"transferred\""],
            Duration::from_secs(3),
        );
        // 1001 is let go (BYE) and wraps up; 1002 talks to the caller.
        agent_phone.join().unwrap().assert_ok(server);
        server.wait_event(
            &[
                "\"type\":\"agent_state_changed\"",
                "\"agent\":\"1001\"",
                "\"state\":\"wrap-up\"",
            ],
            Duration::from_secs(3),
        );
        let (from, to) = talk(1200);
        f.hears(
            &caller,
            ("transferred", from, to),
            &[
                ("caller", EXPERT_HZ, true),
                ("caller", AGENT_HZ, false),
                ("expert", CALLER_HZ, true),
            ],
        );
        caller_sip.bye();
        expert_phone.join().unwrap().assert_ok(server);
        caller.stop();
    });
    server.wait_event(
        &["\"type\":\"call_released\"", "\"agent\":\"1002\""],
        Duration::from_secs(3),
    );
    let mut server = f.server;
    server.sigterm();
    server.wait_exit(Duration::from_secs(10));
    let out = output_within(
        hotline_command()
            .args(["cdr", "export", "--format", "json", "--db"])
            .arg(server.dir.path().join("hotline.db")),
        Duration::from_secs(30),
    );
    let records = String::from_utf8_lossy(&out.stdout);
    let record: serde_json::Value = records
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("a record: {records}"));
    assert_eq!(record["transfers"], 1, "{record}");
    assert_eq!(
        record["agent"], "1002",
        "the record names who finished the call: {record}"
    );
}

#[test]
fn past_the_transfer_limit_a_consultation_only_goes_back_to_the_caller() {
    let f = floor("max_transfers = 0");
    let server = &f.server;
    std::thread::scope(|s| {
        let agent_phone = s.spawn(|| answering_phone(f.ports.0, f.agent.1).run(server));
        let expert_phone = s.spawn(|| answering_phone(f.ports.1, f.expert.1).run(server));
        let (mut caller_sip, caller) = call_in(server, "402", CALLER_HZ);
        let bridged = server.wait_event(&["\"type\":\"call_bridged\""], Duration::from_secs(10));
        let id = call_id_of(&bridged);
        let (status, body) = f.post(
            &format!("/api/v1/calls/{id}/consult"),
            Some(r#"{"agent":"1002"}"#),
        );
        assert_eq!(status, 202, "{body}");
        server.wait_event(&["\"type\":\"consult_answered\""], Duration::from_secs(5));
        let (status, body) = f.post(&format!("/api/v1/calls/{id}/consult/transfer"), None);
        assert_eq!(status, 409, "{body}");
        assert!(body.contains("rulebook L6"), "{body}");
        let (status, body) = http_request(
            f.http,
            "DELETE",
            &format!("/api/v1/calls/{id}/consult"),
            Some(ADMIN),
            None,
        );
        assert_eq!(status, 200, "{body}");
        server.wait_event(
            &["\"type\":\"consult_ended\"", "\"outcome\":\"cancelled\""],
            Duration::from_secs(3),
        );
        // The consulted agent is let go; the caller talks to 1001 again.
        expert_phone.join().unwrap().assert_ok(server);
        server.wait_event(&["\"type\":\"hold_ended\""], Duration::from_secs(3));
        let (from, to) = talk(1200);
        f.hears(
            &caller,
            ("back", from, to),
            &[
                ("caller", AGENT_HZ, true),
                ("caller", EXPERT_HZ, false),
                ("agent", CALLER_HZ, true),
            ],
        );
        caller_sip.bye();
        agent_phone.join().unwrap().assert_ok(server);
        caller.stop();
    });
}

/// 1001's phone dials `target`, 1002 answers the consultation, and the
/// phone completes an attended transfer with REFER and Replaces.
fn attended_transfer_from_the_phone(target: &str, consult_target: &str) {
    let f = floor("");
    let server = &f.server;
    // Where hotline sends the consulted agent's voice for 1001's second dialog.
    let (_consult_audio, consult_rtp) = rtp_socket();
    std::thread::scope(|s| {
        let agent_phone = s.spawn(|| {
            Sipp::new("agent_attended_transfer")
                .port(f.ports.0)
                .auth("1001", "demo1001")
                .args(&["-auth_uri", &format!("{target}@{}", server.sip_addr())])
                .media()
                .args(&[
                    "-d",
                    "1500",
                    "-key",
                    "target",
                    target,
                    "-key",
                    "rtp_port",
                    &f.agent.1.to_string(),
                    "-key",
                    "consult_rtp_port",
                    &consult_rtp.to_string(),
                ])
                .run(server)
        });
        let expert_phone = s.spawn(|| answering_phone(f.ports.1, f.expert.1).run(server));
        let (mut caller_sip, caller) = call_in(server, "402", CALLER_HZ);
        server.wait_event(&["\"type\":\"call_bridged\""], Duration::from_secs(10));
        server.wait_event(
            &[
                "\"type\":\"consult_started\"",
                "\"agent\":\"1001\"",
                &format!("\"target\":\"{consult_target}\""),
            ],
            Duration::from_secs(10),
        );
        server.wait_event(
            &["\"type\":\"consult_answered\"", "\"consultant\":\"1002\""],
            Duration::from_secs(5),
        );
        server.wait_event(
            &["\"type\":\"consult_ended\"", "\"outcome\":\"transferred\""],
            Duration::from_secs(10),
        );
        server.wait_event(
            &[
                "\"type\":\"call_transferred\"",
                "\"agent\":\"1001\"",
                "\"to_agent\":\"1002\"",
                "\"count\":1",
            ],
            Duration::from_secs(3),
        );
        // The phone saw 202, both NOTIFYs, the replaced dialog's BYE, and
        // hung up the call's dialog.
        agent_phone.join().unwrap().assert_ok(server);
        let (from, to) = talk(1200);
        f.hears(
            &caller,
            ("transferred", from, to),
            &[
                ("caller", EXPERT_HZ, true),
                ("caller", AGENT_HZ, false),
                ("expert", CALLER_HZ, true),
            ],
        );
        caller_sip.bye();
        expert_phone.join().unwrap().assert_ok(server);
        caller.stop();
    });
    server.wait_event(
        &["\"type\":\"call_released\"", "\"agent\":\"1002\""],
        Duration::from_secs(3),
    );
}

#[test]
fn the_agents_phone_consults_by_dialling_and_completes_an_attended_transfer_with_replaces() {
    attended_transfer_from_the_phone("1002", "agent:1002");
}

#[test]
fn the_agents_phone_consults_a_queue_by_its_name_and_hands_the_caller_over() {
    attended_transfer_from_the_phone("sales", "queue:sales");
}
