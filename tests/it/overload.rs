//! Overload at the door: a burst of real SIPp calls pushes the store's
//! backlog past a deliberately low `limits.overload_store_backlog`; the
//! excess INVITEs get 503 (overloaded) with Retry-After, the call already
//! up keeps its audio, the door opens again once the store has caught up,
//! and every accepted call has its complete record in the SQLite file.
//! Calls refused at `limits.max_calls` are counted as shed too.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::support::*;

/// The value of one series on the metrics page (0 when absent).
fn metric(port: u16, series: &str) -> f64 {
    http_get(port, "/metrics")
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Polls `series` until it equals `value`, for at most `limit`.
fn wait_metric(port: u16, series: &str, value: f64, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if metric(port, series) == value {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn call_ids(path: &Path, sql: &str) -> BTreeSet<String> {
    let conn = Connection::open(path).unwrap();
    let mut stmt = conn.prepare(sql).unwrap();
    stmt.query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

const BURST: usize = 40;

#[test]
fn past_its_capacity_the_server_sheds_new_calls_and_keeps_every_record() {
    // Only the store's backlog is watched (late ticks of a loaded test
    // machine must not close the door); rows are committed every 4 s, so a
    // handful of calls' events pass the mark of 40 before the next write.
    let server = Server::start(TestConfig::new().http(true).extra(
        "[limits]\ninvite_rate = 0\noverload_min_calls = 0\noverload_store_backlog = 40\n\
         overload_pacer_late_ticks = 0\noverload_bus_lag = 0\noverload_cooldown = \"1s\"\n\
         [store]\nbatch_interval = \"4s\"\n",
    ));
    let http = server.http_port.unwrap();
    let active = "hotline_overload_active";

    // A call up before the burst: it hears the greeting, then the queue.
    let mut up = Caller::new(&server);
    let offer = sdp_offer(up.rtp_addr(), "0", "a=rtpmap:0 PCMU/8000\r\n");
    let ok = up.invite("401", &offer);
    assert_status(&Some(ok), 200, "the call up before the burst");
    up.ack("");
    assert_eq!(up.receive(10).len(), 10);
    assert_eq!(metric(http, active), 0.0, "{}", server.log());

    let (run, heard_while_shedding) = std::thread::scope(|scope| {
        let burst = scope.spawn(|| {
            Sipp::new("uac_call_or_shed")
                .service("401")
                .calls(BURST as u32)
                .args(&["-r", "20", "-l", "60", "-d", "2000"])
                .run(&server)
        });
        assert!(
            wait_metric(http, active, 1.0, Duration::from_secs(10)),
            "the burst did not close the door\n{}",
            server.log()
        );
        // A second of audio for the call up, while new calls are refused.
        let heard = up.receive(50).len();
        (burst.join().unwrap(), heard)
    });
    assert_eq!(heard_while_shedding, 50);

    let finals: Vec<SipMsg> = run
        .responses()
        .into_iter()
        .filter(|m| m.cseq_method().as_deref() == Some("INVITE"))
        .filter(|m| m.status().is_some_and(|s| s >= 200))
        .collect();
    assert_eq!(finals.len(), BURST, "{}", run.report());
    let taken: BTreeSet<String> = finals
        .iter()
        .filter(|m| m.status() == Some(200))
        .filter_map(|m| m.header("Call-ID").map(str::to_string))
        .collect();
    let shed: Vec<&SipMsg> = finals.iter().filter(|m| m.status() == Some(503)).collect();
    assert_eq!(taken.len() + shed.len(), BURST, "only 200 or 503");
    assert!(!taken.is_empty(), "the first calls are taken");
    assert!(!shed.is_empty(), "the excess is shed");
    for m in &shed {
        assert!(m.reason().contains("overloaded"), "{}", m.raw);
        let retry = m.header("Retry-After");
        assert!(
            retry.is_some_and(|v| v.trim().parse::<u32>().is_ok_and(|s| s >= 1)),
            "Retry-After: {retry:?}"
        );
    }
    assert!(run.success(), "every call ended cleanly\n{}", run.report());
    assert_eq!(
        metric(http, "hotline_calls_shed_total{reason=\"store_backlog\"}"),
        shed.len() as f64,
        "the shed counter matches the 503s"
    );

    // Once the store has written its batch the door opens again.
    assert!(
        wait_metric(http, active, 0.0, Duration::from_secs(15)),
        "the door stayed closed\n{}",
        server.log()
    );
    let mut after = Caller::new(&server);
    let offer = sdp_offer(after.rtp_addr(), "0", "a=rtpmap:0 PCMU/8000\r\n");
    assert_status(
        &Some(after.invite("401", &offer)),
        200,
        "a call after the overload",
    );
    after.ack("");
    after.bye();
    up.bye();
    assert_eq!(
        metric(http, "hotline_events_lost_total{follower=\"store\"}"),
        0.0
    );
    assert_eq!(
        metric(http, "hotline_events_lost_total{follower=\"metrics\"}"),
        0.0
    );
    assert!(metric(http, "hotline_events_queued_high_water{follower=\"store\"}") >= 1.0);

    server.sigterm();
    let mut server = server;
    let status = server.wait_exit(Duration::from_secs(15));
    assert!(status.is_some_and(|s| s.success()), "exit {status:?}");
    let db = server.dir.path().join("hotline.db");
    // Every accepted call, and no shed one, has a complete record: its row
    // (not `interrupted`) and its whole life in the event log.
    let recorded = call_ids(
        &db,
        "SELECT call_id FROM cdr WHERE disposition != 'interrupted' AND disposition != 'rejected'",
    );
    let admitted = call_ids(
        &db,
        "SELECT call_id FROM events WHERE type = 'call_admitted'",
    );
    let ended = call_ids(&db, "SELECT call_id FROM events WHERE type = 'call_ended'");
    assert_eq!(
        recorded.len(),
        taken.len() + 2,
        "the burst's and the two others"
    );
    assert!(taken.is_subset(&recorded), "{taken:?} vs {recorded:?}");
    assert_eq!(admitted, recorded);
    assert_eq!(ended, recorded);
}

#[test]
fn calls_refused_at_max_calls_are_counted_as_shed_without_closing_the_door() {
    let server = Server::start(
        TestConfig::new()
            .http(true)
            .extra("[limits]\nmax_calls = 1\n"),
    );
    let http = server.http_port.unwrap();
    let mut first = Caller::new(&server);
    let offer = sdp_offer(first.rtp_addr(), "0", "a=rtpmap:0 PCMU/8000\r\n");
    assert_status(&Some(first.invite("401", &offer)), 200, "the first call");
    first.ack("");
    let mut second = Caller::new(&server);
    let offer = sdp_offer(second.rtp_addr(), "0", "a=rtpmap:0 PCMU/8000\r\n");
    let refused = second.invite("401", &offer);
    assert_status(
        &Some(refused.clone()),
        503,
        "a second call over max_calls = 1",
    );
    assert!(
        refused.reason().contains("too many calls"),
        "{}",
        refused.raw
    );
    first.bye();
    assert_eq!(
        metric(http, "hotline_calls_shed_total{reason=\"max_calls\"}"),
        1.0
    );
    assert_eq!(metric(http, "hotline_overload_active"), 0.0);
    assert_eq!(
        metric(http, "hotline_calls_shed_total{reason=\"store_backlog\"}"),
        0.0
    );
}
