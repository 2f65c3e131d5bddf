//! The CTI API against the real server with a real HTTP client: the auth
//! matrix, agent state changes (idempotent, validated, handover refusal),
//! queues, the OpenAPI document, and the WebSocket event stream (an agent's
//! screen pop before its phone is answered, nothing of other agents' calls,
//! resume after reconnecting).

use std::time::Duration;

use crate::support::*;

const ADMIN: &str = "test-admin-token";
const SUPPORT_SUPERVISOR: &str = "test-support-supervisor";
const SALES_SUPERVISOR: &str = "test-sales-supervisor";
const AGENT_1001: &str = "test-agent-1001";

fn sha256(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

fn api_config(extra: &str) -> TestConfig {
    let tokens = format!(
        "[api.tokens.admin]\nrole = \"admin\"\nsha256 = \"{}\"\n\
         [api.tokens.support]\nrole = \"supervisor\"\nqueues = [\"support\"]\nsha256 = \"{}\"\n\
         [api.tokens.sales]\nrole = \"supervisor\"\nqueues = [\"sales\"]\nsha256 = \"{}\"\n\
         [api.tokens.agent1001]\nrole = \"agent\"\nagent = \"1001\"\nsha256 = \"{}\"\n",
        sha256(ADMIN),
        sha256(SUPPORT_SUPERVISOR),
        sha256(SALES_SUPERVISOR),
        sha256(AGENT_1001),
    );
    // Tokens name queue `sales`: keep it when the test configures queues.
    let sales = if extra.contains("[queues.") && !extra.contains("[queues.sales]") {
        "\n[queues.sales]\n"
    } else {
        ""
    };
    acd_config(&format!("{tokens}\n{extra}{sales}"))
        .agent_queues("1003", &["sales"])
        .http(true)
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[test]
fn the_auth_matrix_holds() {
    let server = Server::start(api_config(""));
    let port = server.http_port.unwrap();
    let get = |path: &str, token: Option<&str>| http_request(port, "GET", path, token, None);

    let (status, body) = get("/api/v1/agents", None);
    assert_eq!(status, 401, "{body}");
    assert_eq!(json(&body)["code"], "unauthorized");
    let (status, body) = get("/api/v1/agents", Some("not-a-token"));
    assert_eq!(status, 401, "{body}");

    // The admin sees every agent; an agent sees itself only.
    let (status, body) = get("/api/v1/agents", Some(ADMIN));
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body).as_array().unwrap().len(), 4);
    let (status, body) = get("/api/v1/agents", Some(AGENT_1001));
    assert_eq!(status, 200);
    let ids: Vec<String> = json(&body)
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, vec!["1001"]);
    let (status, body) = get("/api/v1/agents/1002", Some(AGENT_1001));
    assert_eq!(status, 403, "{body}");
    assert_eq!(json(&body)["code"], "forbidden");
    let (status, _) = http_request(
        port,
        "POST",
        "/api/v1/agents/1002/ready",
        Some(AGENT_1001),
        None,
    );
    assert_eq!(status, 403);

    // A supervisor sees the agents of its queues, not the others.
    let (status, _) = get("/api/v1/agents/1001", Some(SUPPORT_SUPERVISOR));
    assert_eq!(status, 200);
    let (status, _) = get("/api/v1/agents/1003", Some(SUPPORT_SUPERVISOR));
    assert_eq!(status, 403);
    let (status, _) = get("/api/v1/agents/1003", Some(SALES_SUPERVISOR));
    assert_eq!(status, 200);
    let (status, _) = get("/api/v1/queues/sales", Some(SUPPORT_SUPERVISOR));
    assert_eq!(status, 403);
    let (status, body) = get("/api/v1/queues", Some(AGENT_1001));
    assert_eq!((status, json(&body)), (200, serde_json::json!([])));
    let (status, _) = get("/api/v1/agents/9999", Some(ADMIN));
    assert_eq!(status, 404);
}

#[test]
fn agent_state_changes_are_idempotent_validated_and_honour_min_staffed() {
    let server = Server::start(api_config("[queues.support]\nmin_staffed = 1\n"));
    let port = server.http_port.unwrap();
    let post = |path: &str, token: &str, body: Option<&str>| {
        http_request(port, "POST", path, Some(token), body)
    };
    let (status, body) = post("/api/v1/agents/1001/login", AGENT_1001, None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["state"], "ready");
    // Again: no change, no error.
    let (status, body) = post("/api/v1/agents/1001/login", AGENT_1001, None);
    assert_eq!(
        (status, json(&body)["state"].clone()),
        (200, "ready".into())
    );

    let lunch = Some(r#"{"reason":"lunch"}"#);
    let (status, body) = post("/api/v1/agents/1001/not-ready", AGENT_1001, lunch);
    assert_eq!(status, 200, "{body}");
    let agent = json(&body);
    assert_eq!(
        (agent["state"].as_str(), agent["reason"].as_str()),
        (Some("not-ready"), Some("lunch"))
    );
    let (status, _) = post("/api/v1/agents/1001/not-ready", AGENT_1001, lunch);
    assert_eq!(status, 200);
    let (status, body) = post(
        "/api/v1/agents/1001/not-ready",
        AGENT_1001,
        Some(r#"{"reason":"nap"}"#),
    );
    assert_eq!(status, 422, "{body}");
    assert!(
        json(&body)["message"].as_str().unwrap().contains("lunch"),
        "{body}"
    );
    let (status, body) = post("/api/v1/agents/1001/not-ready", AGENT_1001, Some("{"));
    assert_eq!(status, 422, "{body}");
    assert_eq!(json(&body)["code"], "invalid");

    let (status, body) = post("/api/v1/agents/1001/ready", AGENT_1001, None);
    assert_eq!(
        (status, json(&body)["state"].clone()),
        (200, "ready".into())
    );

    // 1001 is support's only agent logged in: its own logout is refused...
    let (status, body) = post("/api/v1/agents/1001/logout", AGENT_1001, None);
    assert_eq!(status, 409, "{body}");
    let message = json(&body)["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("support") && message.contains("at least 1"),
        "{message}"
    );
    // ...an agent cannot force it, a supervisor can.
    let (status, _) = post("/api/v1/agents/1001/logout?force=true", AGENT_1001, None);
    assert_eq!(status, 403);
    let (status, body) = post(
        "/api/v1/agents/1001/logout?force=true",
        SUPPORT_SUPERVISOR,
        None,
    );
    assert_eq!(
        (status, json(&body)["state"].clone()),
        (200, "logged-out".into())
    );
    server.wait_event(
        &[
            "\"type\":\"staffing_below_minimum\"",
            "\"queue\":\"support\"",
        ],
        Duration::from_secs(2),
    );
    // With relief logged in, the voluntary logout goes through.
    for agent in ["1001", "1002"] {
        let (status, body) = post(&format!("/api/v1/agents/{agent}/login"), ADMIN, None);
        assert_eq!(
            (status, json(&body)["state"].clone()),
            (200, "ready".into()),
            "{agent}: {body}"
        );
    }
    let (status, body) = post("/api/v1/agents/1001/logout", AGENT_1001, None);
    assert_eq!(
        (status, json(&body)["state"].clone()),
        (200, "logged-out".into())
    );

    let (status, body) = http_request(
        port,
        "GET",
        "/api/v1/queues/support",
        Some(SUPPORT_SUPERVISOR),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let queue = json(&body);
    assert_eq!(queue["staffed"], 1);
    assert_eq!(queue["min_staffed"], 1);
    assert_eq!(queue["service_level_target_s"], 20);
}

#[test]
fn the_openapi_document_describes_every_route() {
    let server = Server::start(api_config(""));
    let port = server.http_port.unwrap();
    let (status, body) = http_request(port, "GET", "/api/v1/openapi.json", None, None);
    assert_eq!(status, 200);
    let doc = json(&body);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    let paths = doc["paths"].as_object().unwrap();
    for (path, methods) in paths {
        for (method, op) in methods.as_object().unwrap() {
            assert!(
                op["security"].is_array(),
                "{method} {path} has no security requirement"
            );
            // Every documented route is served: with the admin token a GET
            // answers (the WebSocket wants an upgrade), a POST without a body
            // is refused by validation, never 404 or 405.
            let concrete = path.replace("{id}", "support");
            let (status, body) =
                http_request(port, &method.to_uppercase(), &concrete, Some(ADMIN), None);
            assert!(
                status != 404 || body.contains("\"not_found\""),
                "{method} {path}: {status} {body}"
            );
            assert_ne!(status, 405, "{method} {path}");
        }
    }
    assert!(paths.contains_key("/api/v1/events"));
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());

    // The document is valid OpenAPI (openapi-spec-validator, from PyPI).
    let file = server.dir.path().join("openapi.json");
    std::fs::write(&file, &body).unwrap();
    let out = output_within(
        std::process::Command::new("python3")
            .args([
                "-c",
                "import json, sys\nfrom openapi_spec_validator import validate\nvalidate(json.load(open(sys.argv[1])))",
            ])
            .arg(&file),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "openapi-spec-validator refused the document (pip install openapi-spec-validator):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn open_event_streams_hold_their_places_among_the_http_connections() {
    let server = Server::start(api_config(""));
    let port = server.http_port.unwrap();
    let _streams: Vec<WsClient> = (0..3)
        .map(|_| {
            WsClient::connect(port, &format!("/api/v1/events?token={ADMIN}"))
                .expect("the stream connects")
        })
        .collect();
    let page = http_get(port, "/metrics");
    let open: usize = page
        .lines()
        .find_map(|line| line.strip_prefix("hotline_http_connections "))
        .and_then(|value| value.trim().parse().ok())
        .expect("the open connections gauge is on the page");
    // The three streams and the request reading the page.
    assert!(open >= 4, "{open} HTTP connections counted open");
}

#[test]
fn an_agent_desktop_gets_its_screen_pop_before_the_phone_answers_and_resumes_after_reconnecting() {
    let server = Server::start(api_config("[queues.support]\nannounce_agent = false\n"));
    let port = server.http_port.unwrap();
    let agent_port = free_port();
    register_agent(&server, "1001", agent_port);
    let mut desktop = WsClient::connect(port, &format!("/api/v1/events?token={AGENT_1001}"))
        .expect("the desktop connects");
    assert!(WsClient::connect(port, "/api/v1/events?token=wrong").is_err());
    let mut witness = WsClient::connect(port, &format!("/api/v1/events?token={ADMIN}"))
        .expect("the admin's stream connects");
    // While the desktop listens, another agent's phone registers and its agent
    // takes a break (so the call below is 1001's): the admin sees it all, the
    // desktop none of it.
    register_agent(&server, "1002", free_port());
    let (status, body) = http_request(
        port,
        "POST",
        "/api/v1/agents/1002/not-ready",
        Some(ADMIN),
        Some(r#"{"reason":"training"}"#),
    );
    assert_eq!(status, 200, "{body}");
    std::thread::scope(|s| {
        let server = &server;
        let phone = s.spawn(move || answering_agent(agent_port, 1000, (0, "PCMU")).run(server));
        caller("402", 3000).run_ok(server);
        phone.join().unwrap().assert_ok(server);
    });
    let seen = desktop.wait_for(&["\"type\":\"call_released\""], Duration::from_secs(5));
    let offered = seen
        .iter()
        .position(|m| m.contains("\"type\":\"call_offered\""))
        .unwrap_or_else(|| panic!("no screen pop:\n{}", seen.join("\n")));
    let connected = seen
        .iter()
        .position(|m| m.contains("\"type\":\"call_connected\""))
        .expect("connected");
    assert!(
        offered < connected,
        "the screen pop comes before the answer"
    );
    let pop = json(&seen[offered]);
    assert_eq!(pop["caller"], "402");
    assert_eq!(pop["number"], "402");
    assert_eq!(pop["queue"], "support");
    let witnessed = witness.wait_for(&["\"type\":\"call_released\""], Duration::from_secs(5));
    for part in ["\"agent\":\"1002\"", "registration_added"] {
        assert!(
            witnessed.iter().any(|m| m.contains(part)),
            "the admin's stream has no {part}:\n{}",
            witnessed.join("\n")
        );
    }
    for m in &seen {
        assert!(
            !m.contains("\"agent\":\"1002\""),
            "another agent's event: {m}"
        );
        assert!(
            !m.contains("registration_added"),
            "not the agent's business: {m}"
        );
    }
    let last_cursor = json(seen.last().unwrap())["cursor"].as_u64().unwrap();
    drop(desktop);

    // While the desktop is away, its agent goes to lunch; on reconnecting
    // with the last cursor it gets what it missed.
    let (status, _) = http_request(
        port,
        "POST",
        "/api/v1/agents/1001/not-ready",
        Some(AGENT_1001),
        Some(r#"{"reason":"lunch"}"#),
    );
    assert_eq!(status, 200);
    let mut desktop = WsClient::connect(
        port,
        &format!("/api/v1/events?token={AGENT_1001}&since={last_cursor}"),
    )
    .expect("reconnect");
    let missed = desktop.wait_for(&["\"reason\":\"lunch\""], Duration::from_secs(3));
    for m in &missed {
        assert!(json(m)["cursor"].as_u64().unwrap() > last_cursor, "{m}");
    }
}

#[test]
fn screen_pop_carries_the_ivr_variables() {
    let mut config = api_config(
        "[queues.support]\nannounce_agent = false\n\
         [ivr.pop]\nstart = \"tag\"\n\
         [ivr.pop.nodes.tag]\ntype = \"set\"\nvars = { account = \"4242\" }\nnext = \"queue\"\n\
         [ivr.pop.nodes.queue]\ntype = \"queue\"\nqueue = \"support\"\n",
    );
    config.numbers.push(Number {
        number: "405".into(),
        ivr: Some("pop".into()),
        queue: None,
        greeting: None,
        answer_after: None,
    });
    let server = Server::start(config);
    let port = server.http_port.unwrap();
    let agent_port = free_port();
    register_agent(&server, "1001", agent_port);
    let mut desktop =
        WsClient::connect(port, &format!("/api/v1/events?token={AGENT_1001}")).unwrap();
    std::thread::scope(|s| {
        let server = &server;
        let phone = s.spawn(move || answering_agent(agent_port, 500, (0, "PCMU")).run(server));
        caller("405", 2000).run_ok(server);
        phone.join().unwrap().assert_ok(server);
    });
    let seen = desktop.wait_for(&["\"type\":\"call_offered\""], Duration::from_secs(5));
    let pop = json(seen.last().unwrap());
    assert_eq!(pop["vars"]["account"], "4242", "{pop}");
}

#[test]
fn a_desktop_holds_files_and_transfers_its_call_within_the_transfer_limit() {
    let server = Server::start(api_config(
        "[acd]\nmax_transfers = 1\n\n\
         [queues.support]\nannounce_agent = false\n\n\
         [queues.sales]\nannounce_agent = false\n",
    ));
    let port = server.http_port.unwrap();
    let (port1, port3) = (free_port(), free_port());
    register_agent(&server, "1001", port1);
    register_agent(&server, "1003", port3);
    std::thread::scope(|s| {
        let server = &server;
        let first = s.spawn(move || answering_agent(port1, 300, (0, "PCMU")).run(server));
        let second = s.spawn(move || answering_agent(port3, 300, (0, "PCMU")).run(server));
        let call = s.spawn(move || caller("402", 8000).run(server));
        server.wait_event(
            &["\"type\":\"call_connected\"", "\"agent\":\"1001\""],
            Duration::from_secs(5),
        );
        let (status, body) = http_request(port, "GET", "/api/v1/calls", Some(AGENT_1001), None);
        assert_eq!(status, 200, "{body}");
        let calls = json(&body);
        assert_eq!(calls.as_array().unwrap().len(), 1, "{calls}");
        let id = calls[0]["call_id"].as_str().unwrap().to_string();
        assert_eq!(calls[0]["agent"], "1001");
        let post = |action: &str, token: &str, body: Option<&str>| {
            http_request(
                port,
                "POST",
                &format!("/api/v1/calls/{id}/{action}"),
                Some(token),
                body,
            )
        };
        // Another agent's token may not touch it; a supervisor of sales neither.
        assert_eq!(post("hold", SALES_SUPERVISOR, None).0, 403);
        assert_eq!(post("hold", AGENT_1001, None).0, 200);
        server.wait_event(
            &["\"type\":\"hold_started\"", "\"by\":\"api\""],
            Duration::from_secs(2),
        );
        assert_eq!(post("unhold", AGENT_1001, None).0, 200);
        server.wait_event(&["\"type\":\"hold_ended\""], Duration::from_secs(2));
        let (status, body) = post(
            "disposition",
            AGENT_1001,
            Some(r#"{"category":"praise","notes":""}"#),
        );
        assert_eq!(status, 422, "{body}");
        let (status, _) = post(
            "disposition",
            AGENT_1001,
            Some(r#"{"category":"complaint","notes":"billing twice"}"#),
        );
        assert_eq!(status, 200);
        let (status, body) = post("transfer", AGENT_1001, Some(r#"{"queue":"sales"}"#));
        assert_eq!(status, 200, "{body}");
        server.wait_event(
            &[
                "\"type\":\"call_connected\"",
                "\"agent\":\"1003\"",
                "\"queue\":\"sales\"",
            ],
            Duration::from_secs(5),
        );
        // One transfer allowed: the next is refused, saying why.
        let (status, body) = post("transfer", ADMIN, Some(r#"{"queue":"support"}"#));
        assert_eq!(status, 409, "{body}");
        assert!(
            json(&body)["message"]
                .as_str()
                .unwrap()
                .contains("at most 1"),
            "{body}"
        );
        call.join().unwrap().assert_ok(server);
        first.join().unwrap().assert_ok(server);
        second.join().unwrap().assert_ok(server);
    });
    server.assert_event(&[
        "\"type\":\"call_transferred\"",
        "\"from_queue\":\"support\"",
        "\"to_queue\":\"sales\"",
        "\"count\":1",
    ]);
    server.assert_event(&[
        "\"type\":\"call_disposition_set\"",
        "\"category\":\"complaint\"",
    ]);
    // The record keeps the category, the notes and the transfer.
    server.sigterm();
    let mut server = server;
    server.wait_exit(Duration::from_secs(10));
    let db = record_summaries(&server.dir.path().join("hotline.db"));
    assert!(db.contains("complaint|billing twice|1"), "{db}");
}

/// `category|notes|transfers` of every record, through `hotline cdr export`.
fn record_summaries(path: &std::path::Path) -> String {
    let out = output_within(
        hotline_command()
            .args(["cdr", "export", "--format", "json", "--db"])
            .arg(path),
        Duration::from_secs(30),
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|r| {
            format!(
                "{}|{}|{}",
                r["category"].as_str().unwrap_or(""),
                r["notes"].as_str().unwrap_or(""),
                r["transfers"]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn repeated_bad_tokens_are_throttled_and_a_paused_queue_sends_callers_to_its_overflow() {
    let server = Server::start(api_config(
        "[queues.support]\noverflow = \"hangup\"\noverflow_prompt = \"busy\"\n",
    ));
    let port = server.http_port.unwrap();
    let (status, body) = http_request(
        port,
        "POST",
        "/api/v1/queues/support/pause",
        Some(SUPPORT_SUPERVISOR),
        Some(r#"{"paused":true}"#),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["paused"], true);
    caller_until_hung_up("402").run_ok(&server);
    server.assert_event(&[
        "\"type\":\"call_overflowed\"",
        "\"queue\":\"support\"",
        "\"reason\":\"paused\"",
    ]);
    let (status, _) = http_request(
        port,
        "POST",
        "/api/v1/queues/support/pause",
        Some(SALES_SUPERVISOR),
        Some(r#"{"paused":false}"#),
    );
    assert_eq!(status, 403);

    // auth.max_failures (5) wrong tokens from one address: then 429, even
    // for a good token, until the ban ends.
    for _ in 0..5 {
        let (status, _) = http_request(port, "GET", "/api/v1/agents", Some("guess"), None);
        assert_eq!(status, 401);
    }
    let (status, body) = http_request(port, "GET", "/api/v1/agents", Some(ADMIN), None);
    assert_eq!(status, 429, "{body}");
    assert_eq!(json(&body)["code"], "too_many_requests");
}

#[test]
fn a_call_is_transferred_to_a_named_ready_agent() {
    let server = Server::start(api_config("[queues.support]\nannounce_agent = false\n"));
    let port = server.http_port.unwrap();
    let (port1, port2) = (free_port(), free_port());
    register_agent(&server, "1001", port1);
    register_agent(&server, "1002", port2);
    std::thread::scope(|s| {
        let server = &server;
        let first = s.spawn(move || answering_agent(port1, 200, (0, "PCMU")).run(server));
        let second = s.spawn(move || answering_agent(port2, 200, (0, "PCMU")).run(server));
        let call = s.spawn(move || caller("402", 6000).run(server));
        let connected = server.wait_event(&["\"type\":\"call_connected\""], Duration::from_secs(5));
        let (from, to) = if connected.contains("\"agent\":\"1001\"") {
            ("1001", "1002")
        } else {
            ("1002", "1001")
        };
        let (_, body) = http_request(port, "GET", "/api/v1/calls", Some(ADMIN), None);
        let id = json(&body)[0]["call_id"].as_str().unwrap().to_string();
        let path = format!("/api/v1/calls/{id}/transfer");
        let (status, body) = http_request(
            port,
            "POST",
            &path,
            Some(ADMIN),
            Some(r#"{"queue":"sales","agent":"1003"}"#),
        );
        assert_eq!(status, 422, "{body}");
        let (status, body) = http_request(
            port,
            "POST",
            &path,
            Some(ADMIN),
            Some(r#"{"agent":"1003"}"#),
        );
        assert_eq!(status, 409, "1003 is logged out: {body}");
        let (status, body) = http_request(
            port,
            "POST",
            &path,
            Some(ADMIN),
            Some(&format!(r#"{{"agent":"{to}"}}"#)),
        );
        assert_eq!(status, 200, "{body}");
        server.wait_event(
            &[
                "\"type\":\"call_connected\"",
                &format!("\"agent\":\"{to}\""),
            ],
            Duration::from_secs(5),
        );
        server.assert_event(&[
            "\"type\":\"call_transferred\"",
            &format!("\"agent\":\"{from}\""),
            &format!("\"to_agent\":\"{to}\""),
        ]);
        call.join().unwrap().assert_ok(server);
        first.join().unwrap().assert_ok(server);
        second.join().unwrap().assert_ok(server);
    });
}

#[test]
fn a_supervisor_reads_a_live_call_and_hangs_it_up() {
    let server = Server::start(api_config("[queues.support]\nannounce_agent = false\n"));
    let port = server.http_port.unwrap();
    let agent_port = free_port();
    register_agent(&server, "1001", agent_port);
    std::thread::scope(|s| {
        let server = &server;
        let phone = s.spawn(move || answering_agent(agent_port, 200, (0, "PCMU")).run(server));
        let call = s.spawn(move || caller_until_hung_up("402").run(server));
        server.wait_event(&["\"type\":\"call_bridged\""], Duration::from_secs(5));
        let (_, body) = http_request(port, "GET", "/api/v1/calls", Some(SUPPORT_SUPERVISOR), None);
        let id = json(&body)[0]["call_id"].as_str().unwrap().to_string();
        let (status, body) = http_request(
            port,
            "GET",
            &format!("/api/v1/calls/{id}"),
            Some(SUPPORT_SUPERVISOR),
            None,
        );
        assert_eq!(status, 200, "{body}");
        let detail = json(&body);
        assert_eq!(detail["state"], "talking");
        assert_eq!(detail["agent"], "1001");
        assert!(
            detail["events"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["type"] == "call_connected"),
            "{detail}"
        );
        let (status, _) = http_request(
            port,
            "POST",
            &format!("/api/v1/calls/{id}/hangup"),
            Some(SALES_SUPERVISOR),
            None,
        );
        assert_eq!(status, 403);
        let (status, body) = http_request(
            port,
            "POST",
            &format!("/api/v1/calls/{id}/hangup"),
            Some(SUPPORT_SUPERVISOR),
            None,
        );
        assert_eq!(status, 200, "{body}");
        // Both phones get BYE from hotline.
        call.join().unwrap().assert_ok(server);
        phone.join().unwrap().assert_ok(server);
    });
    server.assert_event(&["\"type\":\"call_released\"", "\"released_by\":\"system\""]);
    let (status, _) = http_request(port, "GET", "/api/v1/calls/nope", Some(ADMIN), None);
    assert_eq!(status, 404);
}
