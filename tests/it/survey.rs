//! The post-call survey (rulebook Q3) end to end: a SIPp agent hangs up
//! first, the SIPp caller stays on the line, hears the queue's survey and
//! presses a key by SIP INFO; the score is an event, a column of the call's
//! record in the SQLite file, and the satisfaction series of the metrics page.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::*;
use rusqlite::Connection;

/// Queue `support` runs flow `rate` after the agent hangs up: the survey
/// prompt, one key 1-5, goodbye. No announcement, no wrap-up: the agent
/// takes the next call at once.
const SURVEY: &str = "[acd]\nwrap_up = \"0s\"\n\n\
    [queues.support]\nannounce_agent = false\nannounce_position_every = \"0s\"\n\
    survey = \"rate\"\nsurvey_target = 0.9\n\n\
    [ivr.rate]\nstart = \"rate\"\n\
    [ivr.rate.nodes.rate]\ntype = \"collect\"\nprompts = [\"survey\"]\nvar = \"survey_score\"\n\
    max_digits = 1\npattern = \"[1-5]\"\ntimeout = \"8s\"\nnext = \"bye\"\nfailure = \"bye\"\n\
    [ivr.rate.nodes.bye]\ntype = \"hangup\"\nprompts = [\"goodbye\"]\n";

/// An agent's phone on `port` that answers at once and hangs up `talk_ms`
/// later.
fn agent_hanging_up(port: u16, talk_ms: u32) -> Sipp {
    Sipp::new("agent_hangs_up").port(port).media().args(&[
        "-d",
        &talk_ms.to_string(),
        "-timeout",
        "30s",
    ])
}

/// A caller from `number` to 402 that presses `digit` `after_ms` after
/// hotline answered, then stays until hotline hangs up.
fn caller_rating(number: &str, after_ms: u32, digit: &str) -> Sipp {
    Sipp::new("caller_rates_call")
        .service("402")
        .media()
        .args(&[
            "-d",
            &after_ms.to_string(),
            "-key",
            "caller",
            number,
            "-key",
            "digit",
            digit,
            "-timeout",
            "30s",
        ])
}

/// One call: the agent talks 1.5 s and hangs up; the caller presses
/// `digit` 4 s after the answer, 2.5 s into the survey prompt.
fn rated_call(server: &Server, agent_port: u16, number: &str, digit: &str) {
    std::thread::scope(|s| {
        let agent = s.spawn(|| agent_hanging_up(agent_port, 1500).run(server));
        let caller = caller_rating(number, 4000, digit).run(server);
        agent.join().unwrap().assert_ok(server);
        caller.assert_ok(server);
    });
}

/// survey_score, disposition, agent, ivr_path of a call record.
type Record = (Option<i64>, String, Option<String>, Option<String>);

/// The value of one series of the metrics page.
fn value(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no series {series} on the page:\n{page}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{series}: {e}"))
}

#[test]
fn the_caller_rates_the_call_after_the_agent_hangs_up_and_the_score_is_recorded_and_measured() {
    let mut server = Server::start(acd_config(SURVEY).http(true));
    let http = server.http_port.expect("http enabled");
    let agent_port = free_port();
    register_agent(&server, "1001", agent_port);

    rated_call(&server, agent_port, "5550001", "4");
    // The agent was released when it hung up, before the survey started.
    let released = server.wait_event(
        &[
            "\"type\":\"call_released\"",
            "\"agent\":\"1001\"",
            "\"released_by\":\"agent\"",
        ],
        Duration::from_secs(3),
    );
    let survey = server.wait_event(
        &["\"type\":\"prompt_started\"", "\"prompts\":[\"survey\"]"],
        Duration::from_secs(3),
    );
    let answered = server.wait_event(
        &[
            "\"type\":\"survey_answered\"",
            "\"queue\":\"support\"",
            "\"agent\":\"1001\"",
            "\"score\":4",
        ],
        Duration::from_secs(3),
    );
    let log = server.log();
    let at = |line: &str| log.find(line).expect("logged");
    assert!(at(&released) < at(&survey), "released before the survey");
    assert!(at(&survey) < at(&answered));
    let page = http_get(http, "/metrics");
    let responses = |score: &str| {
        format!("hotline_survey_responses_total{{queue=\"support\",score=\"{score}\"}}")
    };
    assert_eq!(value(&page, &responses("4")), 1.0);
    assert_eq!(value(&page, &responses("2")), 0.0);
    assert_eq!(
        value(
            &page,
            "hotline_survey_satisfaction_ratio{queue=\"support\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &page,
            "hotline_survey_satisfaction_target_ratio{queue=\"support\"}"
        ),
        0.9
    );

    // A second caller is less happy: one of two scores is 4 or better.
    server.wait_event(
        &[
            "\"type\":\"agent_state_changed\"",
            "\"agent\":\"1001\"",
            "\"state\":\"ready\"",
        ],
        Duration::from_secs(3),
    );
    rated_call(&server, agent_port, "5550002", "2");
    server.wait_event(
        &["\"type\":\"survey_answered\"", "\"score\":2"],
        Duration::from_secs(3),
    );
    let page = http_get(http, "/metrics");
    assert_eq!(value(&page, &responses("2")), 1.0);
    assert_eq!(value(&page, &responses("4")), 1.0);
    assert_eq!(
        value(
            &page,
            "hotline_survey_satisfaction_ratio{queue=\"support\"}"
        ),
        0.5
    );

    server.sigterm();
    let status = server.wait_exit(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "exit {status:?}");
    let conn = Connection::open(server.dir.path().join("hotline.db")).unwrap();
    let rows: HashMap<String, Record> = conn
        .prepare("SELECT caller, survey_score, disposition, agent, ivr_path FROM cdr")
        .unwrap()
        .query_map([], |r| {
            Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    for (caller, score) in [("5550001", 4), ("5550002", 2)] {
        let (survey_score, disposition, agent, path) = &rows[caller];
        assert_eq!(*survey_score, Some(score), "{caller}");
        assert_eq!(disposition, "answered", "{caller}");
        assert_eq!(agent.as_deref(), Some("1001"), "{caller}");
        assert_eq!(path.as_deref(), Some("rate:rate>bye"), "{caller}");
    }
}

/// The survey config with hotline number 409 leading to the survey flow.
fn survey_number_config() -> TestConfig {
    let mut config = acd_config(SURVEY).http(true);
    config.numbers.push(Number {
        number: "409".into(),
        ivr: Some("rate".into()),
        queue: None,
        greeting: None,
        answer_after: None,
    });
    config
}

#[test]
fn an_agent_refers_the_caller_to_the_survey_number_which_is_not_counted_as_a_transfer() {
    let server = Server::start(survey_number_config());
    let agent_port = free_port();
    register_agent(&server, "1001", agent_port);
    let refer_to = format!("<sip:409@{}>", server.sip_target());
    std::thread::scope(|s| {
        let server = &server;
        // The agent REFERs 1 s after answering; the caller presses 5 at 3.5 s.
        let agent = s.spawn(|| {
            Sipp::new("agent_refer")
                .port(agent_port)
                .media()
                .args(&[
                    "-d", "1000", "-key", "refer_to", &refer_to, "-timeout", "30s",
                ])
                .run(server)
        });
        let caller = caller_rating("5550003", 3500, "5").run(server);
        agent.join().unwrap().assert_ok(server);
        caller.assert_ok(server);
    });
    server.wait_event(
        &[
            "\"type\":\"survey_answered\"",
            "\"agent\":\"1001\"",
            "\"score\":5",
        ],
        Duration::from_secs(3),
    );
    server.assert_event(&[
        "\"type\":\"call_released\"",
        "\"agent\":\"1001\"",
        "\"released_by\":\"system\"",
    ]);
    assert!(server.events(&["\"type\":\"call_transferred\""]).is_empty());
}

#[test]
fn a_desktop_sends_the_caller_to_the_survey_over_the_cti_api() {
    use sha2::Digest;
    let token = "test-survey-admin";
    let config = survey_number_config().extra(&format!(
        "[api.tokens.admin]\nrole = \"admin\"\nsha256 = \"{}\"\n",
        hex::encode(sha2::Sha256::digest(token.as_bytes()))
    ));
    let server = Server::start(config);
    let http = server.http_port.expect("http enabled");
    let agent_port = free_port();
    register_agent(&server, "1001", agent_port);
    std::thread::scope(|s| {
        let server = &server;
        // The agent's phone talks until hotline hangs it up.
        let agent = s.spawn(|| answering_agent(agent_port, 0, (0, "PCMU")).run(server));
        let caller = s.spawn(|| caller_rating("5550004", 4000, "3").run(server));
        let bridged = server.wait_event(&["\"type\":\"call_bridged\""], Duration::from_secs(5));
        let id = bridged
            .split("\"call_id\":\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("call_id")
            .to_string();
        let path = format!("/api/v1/calls/{id}/transfer");
        let (status, body) = http_request(
            http,
            "POST",
            &path,
            Some(token),
            Some(r#"{"queue":"support","survey":true}"#),
        );
        assert_eq!(status, 422, "{body}");
        let (status, body) =
            http_request(http, "POST", &path, Some(token), Some(r#"{"survey":true}"#));
        assert_eq!(status, 200, "{body}");
        agent.join().unwrap().assert_ok(server);
        caller.join().unwrap().assert_ok(server);
    });
    server.wait_event(
        &["\"type\":\"survey_answered\"", "\"score\":3"],
        Duration::from_secs(3),
    );
    assert!(server.events(&["\"type\":\"call_transferred\""]).is_empty());
}
