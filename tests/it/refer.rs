//! Blind transfer from the agent's phone (RFC 3515) end to end: a SIPp agent
//! REFERs the caller to a hotline number, checks hotline's 202 and NOTIFYs
//! (tests/sipp/agent_refer.xml) and hangs up; the caller is offered to the
//! agent of the other queue, whose REFER is refused past
//! `acd.max_transfers` (tests/sipp/agent_refer_refused.xml).

use crate::support::*;

/// 1001 serves `support` (number 402), 1002 `sales` (number 403); one
/// transfer per call.
fn config() -> TestConfig {
    let mut config = acd_config(
        "[acd]\nwrap_up = \"0s\"\nmax_transfers = 1\n\n\
         [queues.support]\nannounce_agent = false\nannounce_position_every = \"0s\"\n\n\
         [queues.sales]\nannounce_agent = false\nannounce_position_every = \"0s\"\n",
    )
    .agent_queues("1002", &["sales"]);
    config.numbers.push(Number {
        number: "403".into(),
        ivr: None,
        queue: Some("sales".into()),
        greeting: None,
        answer_after: None,
    });
    config
}

/// An agent's phone on `port` that answers at once and, `talk_ms` later,
/// REFERs the call to `refer_to` (a Refer-To value), expecting success
/// (`agent_refer`) or a refusal (`agent_refer_refused`).
fn referring_agent(scenario: &str, port: u16, talk_ms: u32, refer_to: &str) -> Sipp {
    Sipp::new(scenario).port(port).media().args(&[
        "-d",
        &talk_ms.to_string(),
        "-key",
        "refer_to",
        refer_to,
        "-timeout",
        "30s",
    ])
}

/// The status, reason phrase and Warning of the final response to the
/// REFER a SIPp run sent.
fn refer_answer(run: &SippRun) -> (u16, String, String) {
    let answer = run
        .responses()
        .into_iter()
        .find(|m| m.cseq_method().as_deref() == Some("REFER"))
        .unwrap_or_else(|| panic!("no answer to the REFER\n{}", run.report()));
    let warning = answer.header("Warning").unwrap_or_default().to_string();
    (answer.status().unwrap_or(0), answer.reason(), warning)
}

#[test]
fn a_refer_to_another_queues_number_reroutes_the_caller_and_a_second_one_is_refused_at_the_limit() {
    let server = Server::start(config());
    let (port1, port2) = (free_port(), free_port());
    register_agent(&server, "1001", port1);
    register_agent(&server, "1002", port2);
    let target = format!("<sip:403@{}>", server.sip_target());
    let back = format!("<sip:402@{}>", server.sip_target());
    std::thread::scope(|s| {
        let server = &server;
        let first = s.spawn(|| referring_agent("agent_refer", port1, 1000, &target).run(server));
        let second =
            s.spawn(|| referring_agent("agent_refer_refused", port2, 1000, &back).run(server));
        let caller = caller("402", 6000).run(server);
        caller.assert_ok(server);
        first.join().unwrap().assert_ok(server);
        let second = second.join().unwrap();
        second.assert_ok(server);
        let (code, reason, warning) = refer_answer(&second);
        assert_eq!(code, 403, "{}", second.report());
        assert_eq!(reason, "Transfer Limit Reached");
        assert!(warning.contains("at most 1"), "Warning: {warning}");
    });
    server.assert_event(&[
        "\"type\":\"call_transferred\"",
        "\"agent\":\"1001\"",
        "\"from_queue\":\"support\"",
        "\"to_queue\":\"sales\"",
        "\"count\":1",
    ]);
    server.assert_event(&[
        "\"type\":\"call_connected\"",
        "\"agent\":\"1002\"",
        "\"queue\":\"sales\"",
    ]);
    // The first agent was released by the transfer, the second by the caller.
    server.assert_event(&[
        "\"type\":\"call_released\"",
        "\"agent\":\"1002\"",
        "\"released_by\":\"caller\"",
    ]);
    assert_eq!(server.events(&["\"type\":\"call_transferred\""]).len(), 1);
    assert_eq!(server.events(&["\"type\":\"call_ended\""]).len(), 1);
}

#[test]
fn a_refer_to_an_unknown_target_an_unusable_refer_to_or_a_foreign_replaces_is_refused_and_the_call_goes_on()
 {
    let server = Server::start(config());
    let port = free_port();
    register_agent(&server, "1001", port);
    let unknown = format!("<sip:499@{}>", server.sip_target());
    // Replaces naming a dialog that is not this call's consultation.
    let attended = format!("<sip:1002@{}?Replaces=abc%40h>", server.sip_target());
    for (refer_to, code) in [
        (unknown.as_str(), 404),
        ("not a uri", 400),
        (attended.as_str(), 481),
    ] {
        std::thread::scope(|s| {
            let server = &server;
            let agent =
                s.spawn(|| referring_agent("agent_refer_refused", port, 500, refer_to).run(server));
            caller("402", 3000).run_ok(server);
            let agent = agent.join().unwrap();
            agent.assert_ok(server);
            let (status, _, warning) = refer_answer(&agent);
            assert_eq!(status, code, "{refer_to}: {}", agent.report());
            assert!(!warning.is_empty(), "{refer_to}: a Warning says why");
        });
    }
    assert!(server.events(&["\"type\":\"call_transferred\""]).is_empty());
}

#[test]
fn a_refer_from_the_callers_side_is_not_allowed_and_the_agent_stays_on_the_call() {
    let server = Server::start(config());
    let port = free_port();
    register_agent(&server, "1001", port);
    std::thread::scope(|s| {
        let server = &server;
        let agent = s.spawn(|| answering_agent(port, 0, (0, "PCMU")).run(server));
        // The caller REFERs 1.5 s after the answer, once connected to 1001.
        Sipp::new("caller_refers")
            .service("402")
            .media()
            .args(&["-d", "1500", "-key", "caller", "5550005", "-timeout", "30s"])
            .run_ok(server);
        agent.join().unwrap().assert_ok(server);
    });
    server.assert_event(&[
        "\"type\":\"call_released\"",
        "\"agent\":\"1001\"",
        "\"released_by\":\"caller\"",
    ]);
    assert!(server.events(&["\"type\":\"call_transferred\""]).is_empty());
}

#[test]
fn a_refer_to_an_agent_id_offers_the_caller_to_that_agent() {
    // 1001 and 1002 both serve `support`; 1001 passes the caller to 1002.
    let server = Server::start(acd_config(
        "[queues.support]\nannounce_agent = false\nannounce_position_every = \"0s\"\n",
    ));
    let (port1, port2) = (free_port(), free_port());
    register_agents_in_order(&server, &[("1001", port1), ("1002", port2)]);
    let refer_to = format!("<sip:1002@{}>", server.sip_target());
    std::thread::scope(|s| {
        let server = &server;
        // The call goes first to the longest idle agent, 1001.
        let first = s.spawn(|| referring_agent("agent_refer", port1, 1000, &refer_to).run(server));
        let second = s.spawn(|| answering_agent(port2, 200, (0, "PCMU")).run(server));
        caller("402", 5000).run_ok(server);
        first.join().unwrap().assert_ok(server);
        second.join().unwrap().assert_ok(server);
    });
    server.assert_event(&[
        "\"type\":\"call_transferred\"",
        "\"agent\":\"1001\"",
        "\"to_queue\":\"support\"",
        "\"to_agent\":\"1002\"",
    ]);
    server.assert_event(&["\"type\":\"call_connected\"", "\"agent\":\"1002\""]);
}
