//! Supervisor monitoring (rulebook Q2) with real audio: the caller, the agent
//! and the supervisor each send a tone of their own, and what each one
//! receives is checked by frequency in every mode: `listen` (the supervisor
//! hears both, nobody hears it), `whisper` (the agent hears it) and `barge`
//! (everyone hears everyone). The agent and supervisor phones are SIPp for
//! the signalling, with their audio on sockets of this test.

use std::time::{Duration, Instant};

use crate::support::*;

const ADMIN: &str = "monitor-admin-token";
const SUPPORT_SUPERVISOR: &str = "monitor-support-supervisor";
const CALLER_HZ: f64 = 400.0;
const AGENT_HZ: f64 = 1000.0;
const SUPERVISOR_HZ: f64 = 1700.0;

fn sha256(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// Agent 1001 serves support; 2001 is the phone of the support supervisor
/// (token SUPPORT_SUPERVISOR), 2002 the phone of the sales supervisor.
fn monitor_config() -> TestConfig {
    let mut config = acd_config(&format!(
        "[acd]\nwrap_up = \"1s\"\n\
         [queues.support]\nannounce_agent = false\n[queues.sales]\n\
         [monitor]\nsupervisors = [\"2001\", \"2002\"]\n\
         queues = {{ \"2001\" = [\"support\"], \"2002\" = [\"sales\"] }}\n\
         [api.tokens.admin]\nrole = \"admin\"\nsha256 = \"{}\"\n\
         [api.tokens.support]\nrole = \"supervisor\"\nqueues = [\"support\"]\nphones = [\"2001\"]\nsha256 = \"{}\"\n",
        sha256(ADMIN),
        sha256(SUPPORT_SUPERVISOR)
    ));
    config.agents.push(("2001".into(), "demo2001".into()));
    config.agents.push(("2002".into(), "demo2002".into()));
    config.http(true)
}

fn register(server: &Server, account: &str, port: u16) {
    Sipp::new("register_auth")
        .service(account)
        .auth(account, &format!("demo{account}"))
        .port(port)
        .run_ok(server);
}

/// What the three parties received, and the moments the mode changed.
struct Session {
    caller: Party,
    agent: Party,
    supervisor: Party,
    /// Each mode's window, from when it settled to just before the next
    /// change was asked for ("none": bridged, nobody monitoring yet).
    windows: Vec<(&'static str, Instant, Instant)>,
}

impl Session {
    /// Checks who hears whom in each window: (listener, tone, window start,
    /// window end, expected audible).
    fn check(&self) {
        let (c, a, s) = (&self.caller, &self.agent, &self.supervisor);
        assert_eq!(self.windows.len(), 5);
        for &(mode, from, to) in &self.windows {
            let expect = |party: &Party, who: &str, hz: f64, audible: bool| {
                let share = party.share(hz, from, to);
                if audible {
                    assert!(
                        share > 0.12,
                        "{who} should hear {hz} Hz in {mode}: share {share:.3}"
                    );
                } else {
                    assert!(
                        share < 0.02,
                        "{who} should not hear {hz} Hz in {mode}: share {share:.3}"
                    );
                }
            };
            let caller_silent = mode == "whisper, caller silent";
            expect(c, "the caller", AGENT_HZ, true);
            expect(c, "the caller", SUPERVISOR_HZ, mode == "barge");
            expect(a, "the agent", CALLER_HZ, !caller_silent);
            expect(
                a,
                "the agent",
                SUPERVISOR_HZ,
                mode.starts_with("whisper") || mode == "barge",
            );
            if mode != "none" {
                expect(s, "the supervisor", CALLER_HZ, !caller_silent);
                expect(s, "the supervisor", AGENT_HZ, true);
            }
        }
    }

    fn stop(self) {
        for party in [self.caller, self.agent, self.supervisor] {
            party.stop();
        }
    }
}

#[test]
fn a_supervisor_listens_whispers_and_barges_from_the_api() {
    let server = Server::start(monitor_config());
    let http = server.http_port.unwrap();
    let (agent_port, supervisor_port) = (free_port(), free_port());
    register_agent(&server, "1001", agent_port);
    register(&server, "2001", supervisor_port);
    let (agent_socket, agent_rtp) = rtp_socket();
    let (supervisor_socket, supervisor_rtp) = rtp_socket();
    let agent = Party::start(agent_socket, AGENT_HZ, None);
    let supervisor = Party::start(supervisor_socket, SUPERVISOR_HZ, None);

    let session = std::thread::scope(|s| {
        let agent_phone = s.spawn(|| answering_phone(agent_port, agent_rtp).run(&server));
        let supervisor_phone =
            s.spawn(|| answering_phone(supervisor_port, supervisor_rtp).run(&server));
        let (mut caller_sip, caller) = call_in(&server, "402", CALLER_HZ);
        let bridged = server.wait_event(&["\"type\":\"call_bridged\""], Duration::from_secs(10));
        let id = call_id_of(&bridged);
        let before = settle();
        std::thread::sleep(Duration::from_millis(1200));
        let mut windows = vec![("none", before, Instant::now())];

        let monitor = format!("/api/v1/calls/{id}/monitor");
        // Agents never monitor; a mode must be one of the three.
        let agent_token = http_request(
            http,
            "POST",
            &monitor,
            Some("not-a-token"),
            Some(r#"{"mode":"listen","phone":"2001"}"#),
        );
        assert_eq!(agent_token.0, 401);
        let (status, _) = http_request(
            http,
            "POST",
            &monitor,
            Some(ADMIN),
            Some(r#"{"mode":"shout","phone":"2001"}"#),
        );
        assert_eq!(status, 422);
        let (status, body) = http_request(
            http,
            "POST",
            &monitor,
            Some(ADMIN),
            Some(r#"{"mode":"listen","phone":"2001"}"#),
        );
        assert_eq!(status, 202, "{body}");
        server.wait_event(
            &[
                "\"type\":\"monitor_started\"",
                "\"mode\":\"listen\"",
                "\"via\":\"api\"",
                "\"supervisor\":\"2001\"",
            ],
            Duration::from_secs(5),
        );
        let listen = settle();
        std::thread::sleep(Duration::from_millis(1500));
        windows.push(("listen", listen, Instant::now()));

        let patch = |mode: &str| {
            let (status, body) = http_request(
                http,
                "PATCH",
                &monitor,
                Some(ADMIN),
                Some(&format!(r#"{{"mode":"{mode}"}}"#)),
            );
            assert_eq!(status, 200, "{body}");
            server.wait_event(
                &[
                    "\"type\":\"monitor_mode_changed\"",
                    &format!("\"mode\":\"{mode}\""),
                ],
                Duration::from_secs(3),
            );
            settle()
        };
        let whisper = patch("whisper");
        std::thread::sleep(Duration::from_millis(1500));
        windows.push(("whisper", whisper, Instant::now()));
        // A caller that sends nothing (silence suppression) does not stop
        // the whisper: it travels on a stream of its own.
        caller.mute(true);
        let silent = settle();
        std::thread::sleep(Duration::from_millis(1200));
        windows.push(("whisper, caller silent", silent, Instant::now()));
        caller.mute(false);
        let barge = patch("barge");
        std::thread::sleep(Duration::from_millis(1500));
        windows.push(("barge", barge, Instant::now()));

        let (status, body) = http_request(http, "DELETE", &monitor, Some(ADMIN), None);
        assert_eq!(status, 200, "{body}");
        server.wait_event(
            &["\"type\":\"monitor_ended\"", "\"reason\":\"stopped\""],
            Duration::from_secs(3),
        );
        let (status, _) = http_request(http, "DELETE", &monitor, Some(ADMIN), None);
        assert_eq!(status, 409, "nothing left to stop");
        supervisor_phone.join().unwrap().assert_ok(&server);
        caller_sip.bye();
        agent_phone.join().unwrap().assert_ok(&server);
        Session {
            caller,
            agent,
            supervisor,
            windows,
        }
    });
    session.check();
    session.stop();
    let metrics = http_get(http, "/metrics");
    assert!(
        has_line(
            &metrics,
            "hotline_monitor_sessions_total{mode=\"listen\",via=\"api\"} 1"
        ),
        "{metrics}"
    );
    assert!(has_line(
        &metrics,
        "hotline_monitor_mode_changes_total{mode=\"barge\"} 1"
    ));
    assert!(metrics.contains("hotline_monitor_sessions_active 0"));
}

#[test]
fn a_supervisor_phone_dials_a_feature_code_and_whispers_with_a_key() {
    let server = Server::start(monitor_config());
    let http = server.http_port.unwrap();
    let agent_port = free_port();
    register_agent(&server, "1001", agent_port);
    let (agent_socket, agent_rtp) = rtp_socket();
    let (supervisor_socket, supervisor_rtp) = rtp_socket();
    let agent = Party::start(agent_socket, AGENT_HZ, None);
    let supervisor = Party::start(supervisor_socket, SUPERVISOR_HZ, None);
    let dial = |account: &str, code: &str| {
        Sipp::new("supervisor_dials")
            .service(code)
            .auth(account, &format!("demo{account}"))
            .args(&["-auth_uri", &format!("{code}@{}", server.sip_addr())])
            .media()
            .args(&[
                "-key",
                "user",
                account,
                "-key",
                "rtp_port",
                &supervisor_rtp.to_string(),
                "-d",
                "1500",
            ])
    };

    // Nobody to monitor yet: the agent is on no call.
    let run = dial("2001", "*411001").run(&server);
    assert!(!run.success());
    assert!(run.messages.contains("404 Not Found"), "{}", run.messages);

    let windows = std::thread::scope(|s| {
        let agent_phone = s.spawn(|| answering_phone(agent_port, agent_rtp).run(&server));
        let (mut caller_sip, caller) = call_in(&server, "402", CALLER_HZ);
        server.wait_event(&["\"type\":\"call_bridged\""], Duration::from_secs(10));
        // An agent's account is not a supervisor's: 403 after the challenge.
        let run = dial("1002", "*411001").run(&server);
        assert!(run.messages.contains("403 Forbidden"), "{}", run.messages);
        let started = Instant::now();
        let supervisor_phone = s.spawn(|| dial("2001", "*411001").run(&server));
        server.wait_event(
            &[
                "\"type\":\"monitor_started\"",
                "\"via\":\"phone\"",
                "\"mode\":\"listen\"",
            ],
            Duration::from_secs(5),
        );
        let listen = settle();
        server.wait_event(
            &["\"type\":\"monitor_mode_changed\"", "\"mode\":\"whisper\""],
            Duration::from_secs(5),
        );
        let listen_end = Instant::now() - Duration::from_millis(100);
        let whisper = settle();
        server.wait_event(
            &[
                "\"type\":\"monitor_ended\"",
                "\"reason\":\"supervisor_hung_up\"",
            ],
            Duration::from_secs(5),
        );
        let whisper_end = Instant::now() - Duration::from_millis(100);
        supervisor_phone.join().unwrap().assert_ok(&server);
        assert!(started.elapsed() < Duration::from_secs(8));
        caller_sip.bye();
        agent_phone.join().unwrap().assert_ok(&server);
        (
            caller,
            vec![
                ("listen", listen, listen_end),
                ("whisper", whisper, whisper_end),
            ],
        )
    });
    let (caller, windows) = windows;
    for (mode, from, to) in windows {
        assert!(
            supervisor.share(CALLER_HZ, from, to) > 0.12,
            "{mode}: supervisor hears the caller"
        );
        assert!(
            supervisor.share(AGENT_HZ, from, to) > 0.12,
            "{mode}: supervisor hears the agent"
        );
        let heard = agent.share(SUPERVISOR_HZ, from, to);
        match mode {
            "listen" => assert!(
                heard < 0.02,
                "the agent hears nobody else in listen: {heard:.3}"
            ),
            _ => assert!(heard > 0.12, "the agent hears the whisper: {heard:.3}"),
        }
        let leaked = caller.share(SUPERVISOR_HZ, from, to);
        assert!(
            leaked < 0.02,
            "{mode}: the caller never hears a whisper: {leaked:.3}"
        );
    }
    for party in [caller, agent, supervisor] {
        party.stop();
    }
    let metrics = http_get(http, "/metrics");
    assert!(
        has_line(
            &metrics,
            "hotline_monitor_sessions_total{mode=\"listen\",via=\"phone\"} 1"
        ),
        "{metrics}"
    );
}

#[test]
fn a_supervisor_reaches_only_agents_of_its_queues_and_rings_only_its_own_phone() {
    let server = Server::start(monitor_config());
    let http = server.http_port.unwrap();
    let agent_port = free_port();
    register_agent(&server, "1001", agent_port);
    let (_agent_socket, agent_rtp) = rtp_socket();
    let (_supervisor_socket, supervisor_rtp) = rtp_socket();
    let dial = |account: &str, code: &str| {
        Sipp::new("supervisor_dials")
            .service(code)
            .auth(account, &format!("demo{account}"))
            .media()
            .args(&["-auth_uri", &format!("{code}@{}", server.sip_addr())])
            .args(&[
                "-key",
                "user",
                account,
                "-key",
                "rtp_port",
                &supervisor_rtp.to_string(),
                "-d",
                "500",
            ])
    };
    std::thread::scope(|s| {
        let server = &server;
        let agent_phone = s.spawn(move || answering_phone(agent_port, agent_rtp).run(server));
        let (mut caller_sip, caller) = call_in(server, "402", CALLER_HZ);
        server.wait_event(&["\"type\":\"call_bridged\""], Duration::from_secs(10));
        // The sales supervisor's phone: agent 1001 serves support only.
        let run = dial("2002", "*411001").run(server);
        assert!(!run.success());
        assert!(run.messages.contains("403 Forbidden"), "{}", run.messages);
        server.assert_event(&[
            "\"type\":\"monitor_refused\"",
            "\"supervisor\":\"2002\"",
            "\"reason\":\"out_of_scope\"",
        ]);
        assert!(server.events(&["\"type\":\"monitor_started\""]).is_empty());

        // The API: the support supervisor may not make another phone listen.
        let (_, body) = http_request(http, "GET", "/api/v1/calls", Some(ADMIN), None);
        let calls: serde_json::Value = serde_json::from_str(&body).unwrap();
        let id = calls[0]["call_id"].as_str().unwrap().to_string();
        let path = format!("/api/v1/calls/{id}/monitor");
        for phone in ["1002", "2002"] {
            let (status, body) = http_request(
                http,
                "POST",
                &path,
                Some(SUPPORT_SUPERVISOR),
                Some(&format!(r#"{{"mode":"listen","phone":"{phone}"}}"#)),
            );
            assert_eq!(status, 403, "{phone}: {body}");
        }
        server.assert_event(&[
            "\"type\":\"monitor_refused\"",
            "\"via\":\"api\"",
            "\"reason\":\"foreign_phone\"",
        ]);
        // Its own phone passes (not registered here, so 409 from the call).
        let (status, body) = http_request(
            http,
            "POST",
            &path,
            Some(SUPPORT_SUPERVISOR),
            Some(r#"{"mode":"listen"}"#),
        );
        assert_eq!(status, 409, "{body}");
        assert!(server.events(&["\"type\":\"monitor_started\""]).is_empty());
        caller_sip.bye();
        agent_phone.join().unwrap().assert_ok(server);
        caller.stop();
    });
    let metrics = http_get(http, "/metrics");
    for series in [
        "hotline_monitor_refused_total{reason=\"out_of_scope\",via=\"phone\"} 1",
        "hotline_monitor_refused_total{reason=\"foreign_phone\",via=\"api\"} 2",
    ] {
        assert!(has_line(&metrics, series), "{series}\n{metrics}");
    }
}
