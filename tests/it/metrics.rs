//! The metrics page after scripted calls with real SIP peers: exact counter
//! values for an answered call, a ring-no-answer then answered call, an
//! abandoned caller and a hold over the limit; and `promtool check metrics`
//! accepts the page.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

fn metrics_page(server: &Server) -> String {
    http_get(server.http_port.expect("http enabled"), "/metrics")
}

/// The value of one series on the page (labels in the page's order).
fn value(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no series {series} on the page:\n{page}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{series}: {e}"))
}

#[test]
fn scripted_calls_move_the_counters_by_exactly_what_happened() {
    let server = Server::start(
        acd_config(
            "[acd]\nwrap_up = \"0s\"\nhold_limit = \"3s\"\nhold_warning_before = \"1s\"\n\n\
             [queues.support]\nannounce_agent = false\nannounce_position_every = \"0s\"\n\n\
             [queues.sales]\nsurvey = \"rate\"\n\n\
             [ivr.rate]\nstart = \"rate\"\n[ivr.rate.nodes.rate]\ntype = \"collect\"\n\
             prompts = [\"survey\"]\nvar = \"survey_score\"\nmax_digits = 1\n\
             next = \"bye\"\nfailure = \"bye\"\n[ivr.rate.nodes.bye]\ntype = \"hangup\"\n\n\
             [trunks.carrier]\nsources = [\"192.0.2.1/32\"]\noutbound = \"127.0.0.1:9\"\n",
        )
        .http(true),
    );
    let (port1, port2) = (free_port(), free_port());
    register_agents_in_order(&server, &[("1001", port1), ("1002", port2)]);
    std::thread::scope(|s| {
        let server = &server;
        // B: 1001 lets it ring out (6 s), 1002 answers.
        let silent = s.spawn(move || Sipp::new("agent_no_answer").port(port1).run(server));
        let answering = s.spawn(move || answering_agent(port2, 300, (0, "PCMU")).run(server));
        let b = s.spawn(move || caller("402", 9000).run(server));
        // C: arrives while nobody is free, gives up after 1.5 s.
        server.wait_event(
            &["\"type\":\"call_connected\"", "\"agent\":\"1002\""],
            Duration::from_secs(10),
        );
        caller("402", 1500).run_ok(server);
        silent.join().unwrap().assert_ok(server);
        answering.join().unwrap().assert_ok(server);
        b.join().unwrap().assert_ok(server);
    });
    // A: 1002 is free again; it answers and holds past the 3 s limit.
    std::thread::scope(|s| {
        let server = &server;
        let holding = s.spawn(move || {
            Sipp::new("agent_hold")
                .port(port2)
                .media()
                .args(&["-d", "1000"])
                .run(server)
        });
        caller("402", 8000).run_ok(server);
        holding.join().unwrap().assert_ok(server);
    });
    server.wait_event(
        &["\"type\":\"call_released\"", "\"holds\":1"],
        Duration::from_secs(2),
    );
    // The call actor counts on as it ends, after its last event.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let page = loop {
        let page = metrics_page(&server);
        if value(&page, "hotline_calls_active") == 0.0 || std::time::Instant::now() > deadline {
            break page;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let support = |name: &str| value(&page, &format!("{name}{{queue=\"support\"}}"));
    assert_eq!(value(&page, "hotline_calls_total"), 3.0);
    assert_eq!(support("hotline_queue_entered_total"), 3.0);
    assert_eq!(support("hotline_queue_answered_total"), 2.0);
    assert_eq!(support("hotline_queue_answered_within_sl_total"), 2.0);
    assert_eq!(support("hotline_queue_abandoned_total"), 1.0);
    assert_eq!(support("hotline_queue_abandon_wait_seconds_count"), 1.0);
    assert_eq!(
        value(
            &page,
            "hotline_offers_failed_total{outcome=\"no_answer\",queue=\"support\"}"
        ),
        1.0
    );
    assert_eq!(support("hotline_offer_ring_seconds_count"), 3.0);
    assert_eq!(support("hotline_hold_warnings_total"), 1.0);
    assert_eq!(
        value(
            &page,
            "hotline_hold_limit_reached_total{action=\"alert\",queue=\"support\"}"
        ),
        1.0
    );
    assert_eq!(support("hotline_hold_seconds_count"), 1.0);
    assert_eq!(support("hotline_talk_seconds_count"), 2.0);
    assert_eq!(
        value(
            &page,
            "hotline_calls_released_total{queue=\"support\",released_by=\"caller\"}"
        ),
        2.0
    );
    assert_eq!(
        value(&page, "hotline_queue_waiting{queue=\"support\"}"),
        0.0
    );
    assert_eq!(
        value(&page, "hotline_queue_staffed{queue=\"support\"}"),
        2.0
    );
    assert_eq!(
        value(
            &page,
            "hotline_queue_agents{queue=\"support\",state=\"not-ready\"}"
        ),
        1.0
    );
    assert_eq!(value(&page, "hotline_calls_active"), 0.0);
    // Two agents, each challenged once: 4 REGISTERs, 2 × 401 and 2 × 200.
    assert_eq!(
        value(&page, "hotline_sip_requests_total{method=\"REGISTER\"}"),
        4.0
    );
    assert_eq!(
        value(
            &page,
            "hotline_sip_responses_total{method=\"REGISTER\",code=\"401\"}"
        ),
        2.0
    );
    assert!(value(&page, "hotline_rtp_packets_sent_total") > 0.0);
    // Every metric the deploy files rely on is on the live page (the
    // survey's, for queue `sales`, which has a survey).
    let missing: Vec<&&str> = CATALOGUE
        .iter()
        .chain(HISTOGRAMS)
        .chain(PROCESS_METRICS)
        .filter(|name| !page.contains(&format!("# TYPE {name} ")))
        .collect();
    assert!(missing.is_empty(), "not on the page: {missing:?}");
    // ... and every hotline metric on the page is in the catalogue, so a new
    // one cannot go unseen by the deploy files.
    let uncatalogued: Vec<&str> = page
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .filter(|name| name.starts_with("hotline_"))
        .filter(|name| {
            !CATALOGUE
                .iter()
                .chain(HISTOGRAMS)
                .chain(PER_AGENT)
                .any(|known| known == name)
        })
        .collect();
    assert!(
        uncatalogued.is_empty(),
        "on the page but not in tests/it/support/catalogue.rs: {uncatalogued:?}"
    );
    // The trunk with an outbound address has its refusal series from the start.
    assert_eq!(
        value(
            &page,
            "hotline_outbound_refused_total{reason=\"not_allowed\",trunk=\"carrier\"}"
        ),
        0.0
    );
    assert!(value(&page, "hotline_store_rows_written_total") > 0.0);
    assert_eq!(value(&page, "hotline_store_errors_total"), 0.0);
    assert!(value(&page, "process_resident_memory_bytes") > 0.0);

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("promtool is needed (apt-get install -y prometheus): {e}"));
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}\n--- page ---\n{page}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
