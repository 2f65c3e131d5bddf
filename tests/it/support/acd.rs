//! Agents and callers for ACD scenarios: SIPp phones that register as demo
//! agents and answer (or hold, or refuse) offers, SIPp callers through the
//! trunk, and a config where agents 1001 and 1002 serve `support`.

use std::time::Duration;

use super::*;

/// Agents 1001 and 1002 serve `support`; number 402 queues there without a
/// greeting. Wrap-up is short so an agent can take the next call in a test.
pub fn acd_config(extra: &str) -> TestConfig {
    let mut config = TestConfig::new()
        .agent_queues("1001", &["support"])
        .agent_queues("1002", &["support"]);
    config.numbers.push(Number {
        number: "402".into(),
        ivr: None,
        queue: Some("support".into()),
        greeting: None,
        answer_after: None,
    });
    config.extra(extra)
}

/// Registers `agent` (password demoNNNN) from `port` and waits until the
/// router has it ready.
/// A server whose holds are limited to 3 s (warned 1 s before) with
/// `hold_action`, no agent announcement, and agent 1001 registered from the
/// port returned beside it.
pub fn short_hold_server(hold_action: &str) -> (Server, u16) {
    let server = Server::start(acd_config(&format!(
        "[acd]\nhold_limit = \"3s\"\nhold_warning_before = \"1s\"\nhold_action = \"{hold_action}\"\n\n\
         [queues.support]\nannounce_agent = false\n"
    )));
    let port = free_port();
    register_agent(&server, "1001", port);
    (server, port)
}

pub fn register_agent(server: &Server, agent: &str, port: u16) {
    Sipp::new("register_auth")
        .service(agent)
        .auth(agent, &format!("demo{agent}"))
        .port(port)
        .run_ok(server);
    server.wait_event(
        &[
            "\"type\":\"agent_state_changed\"",
            &format!("\"agent\":\"{agent}\""),
            "\"state\":\"ready\"",
        ],
        Duration::from_secs(3),
    );
}

/// Registers `agents` one after another, so that each has been idle longer
/// than the next and is offered a call first. The pause between them keeps
/// their idle-since times apart.
pub fn register_agents_in_order(server: &Server, agents: &[(&str, u16)]) {
    for (i, &(agent, port)) in agents.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(50));
        }
        register_agent(server, agent, port);
    }
}

/// An agent phone on `port` that answers after `answer_ms` with `codec`
/// (payload type, name) and echoes the RTP it receives.
pub fn answering_agent(port: u16, answer_ms: u32, codec: (u8, &str)) -> Sipp {
    Sipp::new("agent_answer")
        .port(port)
        .media()
        .key("pt", &codec.0.to_string())
        .key("codec", codec.1)
        .args(&["-d", &answer_ms.to_string(), "-rtp_echo", "-timeout", "40s"])
}

/// A SIPp caller to `number` that hangs up `stay_ms` after hotline answers.
pub fn caller(number: &str, stay_ms: u32) -> Sipp {
    Sipp::new("caller_waits")
        .service(number)
        .media()
        .key("caller", number)
        .args(&["-d", &stay_ms.to_string(), "-timeout", "40s"])
}

/// A SIPp caller to `number` that stays until hotline hangs up.
pub fn caller_until_hung_up(number: &str) -> Sipp {
    Sipp::new("caller_hung_up")
        .service(number)
        .media()
        .key("caller", number)
        .args(&["-timeout", "30s", "-recv_timeout", "20s"])
}

pub fn holding_agent(scenario: &str, port: u16) -> Sipp {
    Sipp::new(scenario)
        .port(port)
        .media()
        .args(&["-timeout", "30s"])
}
