//! Calls whose end never comes are ended by hotline: a caller gone silent
//! (no BYE, no RTP) at the RTP inactivity timeout, a call at its queue's
//! longest length. Both legs get BYE, the agent goes to wrap-up, and the
//! reason is published and stored with the call's events.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::acd::*;
use crate::support::*;
use rusqlite::Connection;

const WRAP_UP_1001: [&str; 3] = [
    "\"type\":\"agent_state_changed\"",
    "\"agent\":\"1001\"",
    "\"state\":\"wrap-up\"",
];

/// The event types stored for each call, in order, after the server stopped.
fn stored_events(db: &Path) -> Vec<(String, String, String)> {
    let conn = Connection::open(db).unwrap();
    conn.prepare("SELECT coalesce(call_id, ''), type, json FROM events ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Stops the server (its store writes what it holds); the database stays
/// in the server's directory while `server` lives.
fn stop(server: &mut Server) -> std::path::PathBuf {
    server.sigterm();
    let status = server.wait_exit(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "exit {status:?}");
    server.dir.path().join("hotline.db")
}

/// Waits for the call to end at its longest length and checks the session
/// timer never ended it: the refreshes kept the session alive.
fn assert_ended_by_max_duration_not_session_expiry(server: &Server, why: &str) {
    server.wait_event(
        &["\"type\":\"call_expired\"", "\"reason\":\"max_duration\""],
        Duration::from_secs(3),
    );
    assert!(
        server
            .events(&[
                "\"type\":\"call_expired\"",
                "\"reason\":\"session_expired\""
            ])
            .is_empty(),
        "{why}"
    );
}

/// A SIPp caller scenario dialling `number`, asserted to succeed, and how
/// long it took.
fn caller_run(server: &Server, scenario: &str, number: &str) -> (SippRun, Duration) {
    let started = Instant::now();
    let run = Sipp::new(scenario)
        .service(number)
        .media()
        .args(&["-timeout", "20s"])
        .run(server);
    let lasted = started.elapsed();
    run.assert_ok(server);
    (run, lasted)
}

/// Runs one call to 402 answered by agent 1001 whose caller sends no RTP
/// and never hangs up; returns the caller's and the agent's SIPp runs and
/// how long the call lasted after the agent answered.
fn silent_call(server: &Server) -> (SippRun, SippRun, Duration) {
    let agent_port = free_port();
    register_agent(server, "1001", agent_port);
    std::thread::scope(|s| {
        let agent = s.spawn(|| answering_agent(agent_port, 200, (0, "PCMU")).run(server));
        let caller = s.spawn(|| caller_until_hung_up("402").run(server));
        server.wait_event(&["\"type\":\"call_connected\""], Duration::from_secs(10));
        let connected = Instant::now();
        let caller = caller.join().unwrap();
        let agent = agent.join().unwrap();
        (caller, agent, connected.elapsed())
    })
}

#[test]
fn a_caller_that_vanishes_after_the_agent_answers_is_released_at_the_rtp_timeout() {
    let mut server = Server::start(
        acd_config("[acd]\nwrap_up = \"2s\"\n")
            .media("rtp_timeout = \"3s\"")
            .http(true),
    );
    let (caller, agent, lasted) = silent_call(&server);
    caller.assert_ok(&server);
    agent.assert_ok(&server);
    assert!(
        caller.received().iter().any(|m| m.method() == Some("BYE")),
        "the caller got BYE"
    );
    assert!(
        agent.received().iter().any(|m| m.method() == Some("BYE")),
        "the agent got BYE"
    );
    assert!(
        lasted >= Duration::from_millis(2500) && lasted < Duration::from_secs(15),
        "released after about the 3 s timeout: {lasted:?}"
    );
    server.wait_event(
        &["\"type\":\"call_expired\"", "\"reason\":\"rtp_timeout\""],
        Duration::from_secs(3),
    );
    server.wait_event(&WRAP_UP_1001, Duration::from_secs(3));
    let page = http_get(server.http_port.unwrap(), "/metrics");
    assert!(
        has_line(
            &page,
            "hotline_calls_expired_total{reason=\"rtp_timeout\"} 1"
        ),
        "{page}"
    );
    let db = stop(&mut server);
    let events = stored_events(&db);
    let expired: Vec<_> = events
        .iter()
        .filter(|(_, kind, _)| kind == "call_expired")
        .collect();
    assert_eq!(expired.len(), 1, "{events:?}");
    assert!(expired[0].2.contains("rtp_timeout"));
    let conn = Connection::open(&db).unwrap();
    let (released_by, disposition, end_reason): (String, String, String) = conn
        .query_row(
            "SELECT released_by, disposition, end_reason FROM cdr WHERE call_id = ?1",
            [&expired[0].0],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        (
            released_by.as_str(),
            disposition.as_str(),
            end_reason.as_str()
        ),
        ("system", "answered", "rtp_timeout")
    );
}

#[test]
fn a_call_is_ended_at_its_queues_longest_length() {
    // The silence clock is off: only the length ends the call.
    let server = Server::start(
        acd_config("[acd]\nwrap_up = \"2s\"\n[queues.support]\nmax_duration = \"3s\"\n")
            .media("rtp_timeout = \"0s\""),
    );
    let (caller, agent, lasted) = silent_call(&server);
    caller.assert_ok(&server);
    agent.assert_ok(&server);
    assert!(
        lasted >= Duration::from_millis(2500) && lasted < Duration::from_secs(10),
        "ended after about 3 s of talk: {lasted:?}"
    );
    server.wait_event(
        &["\"type\":\"call_expired\"", "\"reason\":\"max_duration\""],
        Duration::from_secs(3),
    );
    server.wait_event(&WRAP_UP_1001, Duration::from_secs(3));
    server.assert_event(&["\"type\":\"call_ended\"", "\"released_by\":\"system\""]);
}

#[test]
fn a_session_refresh_that_gets_no_answer_ends_the_call_and_a_short_interval_gets_422() {
    // Session timers as a test can afford them: 3 s at least, 4 s asked.
    let server = Server::start(
        acd_config("")
            .sip("session_expires = \"4s\"\nmin_se = \"3s\"")
            .media("rtp_timeout = \"0s\"")
            .http(true),
    );
    let (run, lasted) = caller_run(&server, "caller_session_timer", "402");
    let codes = run.codes();
    assert!(
        codes.contains(&422),
        "the 1 s interval was refused: {codes:?}"
    );
    let too_small = run
        .responses()
        .into_iter()
        .find(|m| m.status() == Some(422))
        .unwrap();
    assert_eq!(too_small.header("Min-SE").map(str::trim), Some("3"));
    let update = run
        .received()
        .into_iter()
        .find(|m| m.method() == Some("UPDATE"))
        .expect("hotline refreshed the session");
    assert!(
        update
            .header("Session-Expires")
            .is_some_and(|v| v.starts_with('3')),
        "{:?}",
        update.header("Session-Expires")
    );
    assert!(
        lasted < Duration::from_secs(12),
        "the call ended when the session ran out: {lasted:?}"
    );
    server.wait_event(
        &[
            "\"type\":\"call_expired\"",
            "\"reason\":\"session_expired\"",
        ],
        Duration::from_secs(3),
    );
    let page = http_get(server.http_port.unwrap(), "/metrics");
    for line in [
        "hotline_calls_expired_total{reason=\"session_expired\"} 1",
        "hotline_session_refreshes_total{result=\"sent_failed\"} 1",
        "hotline_session_interval_too_small_total{direction=\"sent\"} 1",
    ] {
        assert!(has_line(&page, line), "{line} on the page:\n{page}");
    }
}

#[test]
fn an_agent_phone_that_asks_for_a_longer_interval_is_invited_again_and_its_silence_ends_the_call() {
    // hotline asks the agent's phone for 3 s; the phone wants at least 5 s
    // (422), gets it, refreshes itself and never does.
    let server = Server::start(
        acd_config("[acd]\nwrap_up = \"2s\"\n")
            .sip("session_expires = \"3s\"\nmin_se = \"2s\"")
            .media("rtp_timeout = \"0s\"")
            .http(true),
    );
    let agent_port = free_port();
    register_agent(&server, "1001", agent_port);
    std::thread::scope(|s| {
        let agent = s.spawn(|| {
            Sipp::new("agent_session_timer")
                .port(agent_port)
                .media()
                .args(&["-key", "min_se", "5", "-timeout", "30s"])
                .run(&server)
        });
        // The caller answers the refreshes hotline sends it (every 1.5 s).
        let caller = s.spawn(|| {
            Sipp::new("caller_refreshed")
                .service("402")
                .media()
                .args(&["-timeout", "30s"])
                .run(&server)
        });
        server.wait_event(&["\"type\":\"call_connected\""], Duration::from_secs(10));
        let connected = Instant::now();
        let agent = agent.join().unwrap();
        let lasted = connected.elapsed();
        agent.assert_ok(&server);
        let asked: Vec<String> = agent
            .received()
            .iter()
            .filter(|m| m.method() == Some("INVITE"))
            .map(|m| m.header("Session-Expires").unwrap_or("").trim().to_string())
            .collect();
        assert_eq!(
            asked,
            ["3", "5"],
            "asked for 3 s, then for the phone's Min-SE"
        );
        let call_ids: Vec<_> = agent
            .received()
            .iter()
            .filter(|m| m.method() == Some("INVITE"))
            .map(|m| m.header("Call-ID").map(str::to_string))
            .collect();
        assert_eq!(call_ids[0], call_ids[1], "the retry keeps the Call-ID");
        let caller = caller.join().unwrap();
        caller.assert_ok(&server);
        assert!(
            caller.received().iter().any(|m| m.method() == Some("BYE")),
            "the caller got BYE too"
        );
        assert!(
            lasted < Duration::from_secs(9),
            "ended when the 5 s session ran out: {lasted:?}"
        );
    });
    server.wait_event(
        &[
            "\"type\":\"call_expired\"",
            "\"reason\":\"session_expired\"",
        ],
        Duration::from_secs(3),
    );
    server.wait_event(&WRAP_UP_1001, Duration::from_secs(3));
    let page = http_get(server.http_port.unwrap(), "/metrics");
    assert!(
        has_line(
            &page,
            "hotline_session_interval_too_small_total{direction=\"received\"} 1"
        ),
        "{page}"
    );
    let ok = page
        .lines()
        .find_map(|l| l.strip_prefix("hotline_session_refreshes_total{result=\"sent_ok\"} "))
        .and_then(|v| v.trim().parse::<u64>().ok());
    assert!(
        ok.is_some_and(|n| n >= 1),
        "the caller's refreshes were answered: {ok:?}"
    );
}

#[test]
fn a_caller_without_update_is_refreshed_by_re_invite_until_its_numbers_longest_call_ends_it() {
    let server = Server::start(
        acd_config("[numbers.\"403\"]\nqueue = \"support\"\nmax_duration = \"5s\"\n")
            .sip("session_expires = \"2s\"\nmin_se = \"1s\"")
            .http(true),
    );
    let (run, lasted) = caller_run(&server, "caller_refreshed_reinvite", "403");
    let refreshes = run
        .received()
        .iter()
        .filter(|m| m.method() == Some("INVITE"))
        .count();
    assert!(
        refreshes >= 2,
        "refreshed every second by re-INVITE: {refreshes}"
    );
    assert!(
        lasted >= Duration::from_millis(4500) && lasted < Duration::from_secs(12),
        "ended at the number's 5 s: {lasted:?}"
    );
    assert_ended_by_max_duration_not_session_expiry(
        &server,
        "the answered refreshes kept the session",
    );
    let page = http_get(server.http_port.unwrap(), "/metrics");
    let sent_ok = page
        .lines()
        .find_map(|l| l.strip_prefix("hotline_session_refreshes_total{result=\"sent_ok\"} "))
        .and_then(|v| v.trim().parse::<u64>().ok());
    assert!(sent_ok.is_some_and(|n| n >= 2), "{sent_ok:?}");
}

#[test]
fn a_refused_refresh_is_tried_again_by_re_invite_and_the_call_lives_on() {
    let server = Server::start(
        acd_config("[numbers.\"404\"]\nqueue = \"support\"\nmax_duration = \"4s\"\n")
            .sip("session_expires = \"2s\"\nmin_se = \"1s\"")
            .http(true),
    );
    let (run, _) = caller_run(&server, "caller_refuses_update", "404");
    let count = |method: &str| {
        run.received()
            .iter()
            .filter(|m| m.method() == Some(method))
            .count()
    };
    assert_eq!(count("UPDATE"), 1, "UPDATE once, refused");
    assert!(count("INVITE") >= 1, "then re-INVITEs");
    assert_ended_by_max_duration_not_session_expiry(
        &server,
        "a refused refresh does not end the session",
    );
}
