//! Every event kind moves exactly the series it should.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::Encoder;

use super::*;
use crate::events::{RejectReason, UnregisterReason};

fn settings(per_agent: bool) -> Settings {
    let text = format!(
        "[trunks.local]\nsources = [\"127.0.0.0/8\"]\n\
         [numbers.\"402\"]\nqueue = \"support\"\n\
         [agents.\"1001\"]\npassword = \"x\"\nqueues = [\"support\"]\n\
         [queues.support]\nservice_level_seconds = 15\n\
         [queues.sales]\n\
         [metrics]\nper_agent = {per_agent}\n"
    );
    Settings::from_toml(&text, "test.toml", &BTreeMap::new()).unwrap()
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

fn feed(m: &mut Metrics, secs: u64, event: Event) {
    m.observe(&Stamped {
        at: at(secs),
        event,
    });
}

/// The page's value of a series, e.g. `hotline_queue_answered_total{queue="support"}`.
fn value(m: &Metrics, series: &str) -> f64 {
    let mut text = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&m.registry.gather(), &mut text)
        .unwrap();
    let text = String::from_utf8(text).unwrap();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
        .parse()
        .unwrap()
}

fn call(id: &str) -> String {
    id.to_string()
}

#[test]
fn configured_queues_start_at_zero() {
    let m = Metrics::new(&settings(false)).unwrap();
    for queue in ["support", "sales"] {
        assert_eq!(
            value(
                &m,
                &format!("hotline_queue_answered_total{{queue=\"{queue}\"}}")
            ),
            0.0
        );
        assert_eq!(
            value(
                &m,
                &format!("hotline_offers_failed_total{{outcome=\"no_answer\",queue=\"{queue}\"}}")
            ),
            0.0
        );
    }
}

#[test]
fn an_answered_call_counts_its_wait_ring_talk_hold_and_service_level() {
    let mut m = Metrics::new(&settings(false)).unwrap();
    feed(
        &mut m,
        0,
        Event::CallAdmitted {
            call_id: call("c1"),
            trunk: "local".into(),
            caller: "5550100".into(),
            number: "402".into(),
            source: "127.0.0.1:5070".parse().unwrap(),
        },
    );
    feed(
        &mut m,
        0,
        Event::CallQueued {
            call_id: call("c1"),
            queue: "support".into(),
            waited_ms: 0,
        },
    );
    feed(
        &mut m,
        6,
        Event::OfferFailed {
            call_id: call("c1"),
            agent: "1002".into(),
            queue: "support".into(),
            outcome: "no_answer",
            ring_ms: 6000,
        },
    );
    feed(
        &mut m,
        10,
        Event::CallConnected {
            call_id: call("c1"),
            agent: "1001".into(),
            queue: "support".into(),
            waited_ms: 10_000,
            ring_ms: 4000,
            late: false,
        },
    );
    feed(
        &mut m,
        40,
        Event::HoldWarning {
            call_id: call("c1"),
            agent: "1001".into(),
            held_ms: 25_000,
        },
    );
    feed(
        &mut m,
        45,
        Event::HoldLimitReached {
            call_id: call("c1"),
            agent: "1001".into(),
            held_ms: 30_000,
            action: "alert",
            count: 1,
        },
    );
    feed(
        &mut m,
        50,
        Event::HoldEnded {
            call_id: call("c1"),
            agent: "1001".into(),
            held_ms: 35_000,
        },
    );
    feed(
        &mut m,
        100,
        Event::CallReleased {
            call_id: call("c1"),
            agent: "1001".into(),
            queue: "support".into(),
            released_by: ReleasedBy::Caller,
            talk_ms: 90_000,
            holds: 1,
            hold_ms: 35_000,
        },
    );
    feed(
        &mut m,
        100,
        Event::CallEnded {
            call_id: call("c1"),
            released_by: ReleasedBy::Caller,
            answered: true,
        },
    );
    let s = "{queue=\"support\"}";
    assert_eq!(value(&m, "hotline_calls_total"), 1.0);
    assert_eq!(value(&m, &format!("hotline_queue_entered_total{s}")), 1.0);
    assert_eq!(value(&m, &format!("hotline_queue_answered_total{s}")), 1.0);
    // 10 s against a 15 s target.
    assert_eq!(
        value(&m, &format!("hotline_queue_answered_within_sl_total{s}")),
        1.0
    );
    assert_eq!(
        value(&m, &format!("hotline_queue_wait_seconds_sum{s}")),
        10.0
    );
    assert_eq!(
        value(
            &m,
            "hotline_queue_wait_seconds_bucket{queue=\"support\",le=\"5\"}"
        ),
        0.0
    );
    assert_eq!(
        value(
            &m,
            "hotline_queue_wait_seconds_bucket{queue=\"support\",le=\"10\"}"
        ),
        1.0
    );
    assert_eq!(
        value(&m, &format!("hotline_offer_ring_seconds_count{s}")),
        2.0
    );
    assert_eq!(
        value(&m, &format!("hotline_offer_ring_seconds_sum{s}")),
        10.0
    );
    assert_eq!(
        value(
            &m,
            "hotline_offers_failed_total{outcome=\"no_answer\",queue=\"support\"}"
        ),
        1.0
    );
    assert_eq!(value(&m, &format!("hotline_hold_warnings_total{s}")), 1.0);
    assert_eq!(
        value(
            &m,
            "hotline_hold_limit_reached_total{action=\"alert\",queue=\"support\"}"
        ),
        1.0
    );
    assert_eq!(value(&m, &format!("hotline_hold_seconds_sum{s}")), 35.0);
    assert_eq!(value(&m, &format!("hotline_talk_seconds_sum{s}")), 90.0);
    assert_eq!(
        value(
            &m,
            "hotline_calls_released_total{queue=\"support\",released_by=\"caller\"}"
        ),
        1.0
    );
    assert!(m.calls.is_empty(), "the call's tracking ends with it");
}

#[test]
fn a_slow_answer_misses_the_service_level_and_abandons_count_their_wait() {
    let mut m = Metrics::new(&settings(false)).unwrap();
    feed(
        &mut m,
        30,
        Event::CallConnected {
            call_id: call("c2"),
            agent: "1001".into(),
            queue: "support".into(),
            waited_ms: 15_001,
            ring_ms: 1000,
            late: false,
        },
    );
    feed(
        &mut m,
        40,
        Event::CallAbandoned {
            call_id: call("c3"),
            queue: "support".into(),
            waited_ms: 42_000,
        },
    );
    feed(
        &mut m,
        41,
        Event::CallOverflowed {
            call_id: call("c4"),
            queue: "sales".into(),
            reason: "max_wait",
            target: "hangup".into(),
            waited_ms: 60_000,
        },
    );
    let s = "{queue=\"support\"}";
    assert_eq!(value(&m, &format!("hotline_queue_answered_total{s}")), 1.0);
    assert_eq!(
        value(&m, &format!("hotline_queue_answered_within_sl_total{s}")),
        0.0
    );
    assert_eq!(value(&m, &format!("hotline_queue_abandoned_total{s}")), 1.0);
    assert_eq!(
        value(&m, &format!("hotline_queue_abandon_wait_seconds_sum{s}")),
        42.0
    );
    assert_eq!(
        value(
            &m,
            "hotline_queue_overflowed_total{queue=\"sales\",reason=\"max_wait\"}"
        ),
        1.0
    );
}

#[test]
fn agent_states_give_wrap_up_and_not_ready_times_and_rule_breaches_count() {
    let mut m = Metrics::new(&settings(true)).unwrap();
    let state = |m: &mut Metrics, secs, state, reason: Option<&str>| {
        feed(
            m,
            secs,
            Event::AgentStateChanged {
                agent: "1001".into(),
                state,
                reason: reason.map(str::to_string),
            },
        )
    };
    state(&mut m, 0, "talking", None);
    state(&mut m, 100, "wrap-up", None);
    state(&mut m, 160, "ready", None);
    state(&mut m, 200, "not-ready", Some("lunch"));
    state(&mut m, 500, "ready", None);
    feed(
        &mut m,
        500,
        Event::BreakOverLimit {
            agent: "1001".into(),
            reason: "lunch".into(),
            not_ready_secs: 300,
            count: 1,
        },
    );
    feed(
        &mut m,
        501,
        Event::StaffingBelowMinimum {
            queue: "support".into(),
            staffed: 0,
            min: 1,
        },
    );
    feed(
        &mut m,
        502,
        Event::AuthFailed {
            source: "127.0.0.1:5070".parse().unwrap(),
            username: Some("1001".into()),
            method: "REGISTER".into(),
            reason: "wrong password".into(),
        },
    );
    feed(
        &mut m,
        503,
        Event::SourceBanned {
            source: "127.0.0.1".parse().unwrap(),
            ban_secs: 300,
        },
    );
    feed(
        &mut m,
        504,
        Event::CallRejected {
            call_id: call("c9"),
            number: "999".into(),
            source: "127.0.0.1:5070".parse().unwrap(),
            status: 404,
            reason: RejectReason::UnknownNumber,
        },
    );
    feed(
        &mut m,
        505,
        Event::RegistrationRemoved {
            aor: "1001".into(),
            contact: "sip:1001@127.0.0.1".into(),
            reason: UnregisterReason::Expired,
        },
    );
    assert_eq!(value(&m, "hotline_wrap_up_seconds_sum"), 60.0);
    assert_eq!(value(&m, "hotline_wrap_up_seconds_count"), 1.0);
    assert_eq!(
        value(&m, "hotline_not_ready_seconds_sum{reason=\"lunch\"}"),
        300.0
    );
    assert_eq!(
        value(&m, "hotline_breaks_over_limit_total{reason=\"lunch\"}"),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "hotline_staffing_below_minimum_total{queue=\"support\"}"
        ),
        1.0
    );
    assert_eq!(value(&m, "hotline_auth_failures_total"), 1.0);
    assert_eq!(value(&m, "hotline_bans_total"), 1.0);
    assert_eq!(
        value(
            &m,
            "hotline_calls_rejected_total{reason=\"unknown_number\"}"
        ),
        1.0
    );
    // Per-agent series, switched on here.
    assert_eq!(
        value(&m, "hotline_agent_state{agent=\"1001\",state=\"ready\"}"),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "hotline_agent_state{agent=\"1001\",state=\"not-ready\"}"
        ),
        0.0
    );
}

#[test]
fn per_agent_series_stay_off_by_default() {
    let mut m = Metrics::new(&settings(false)).unwrap();
    feed(
        &mut m,
        0,
        Event::AgentStateChanged {
            agent: "1001".into(),
            state: "ready",
            reason: None,
        },
    );
    feed(
        &mut m,
        1,
        Event::CallConnected {
            call_id: call("c1"),
            agent: "1001".into(),
            queue: "support".into(),
            waited_ms: 1000,
            ring_ms: 1000,
            late: false,
        },
    );
    let mut text = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&m.registry.gather(), &mut text)
        .unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(!text.contains("agent=\"1001\""), "{text}");
}

#[test]
fn callbacks_and_ivr_exits_are_counted_by_queue_and_flow() {
    let mut m = Metrics::new(&settings(false)).unwrap();
    feed(
        &mut m,
        0,
        Event::IvrExited {
            call_id: call("c1"),
            flow: "main".into(),
            exit: "queue:support".into(),
        },
    );
    feed(
        &mut m,
        0,
        Event::CallQueued {
            call_id: call("c1"),
            queue: "support".into(),
            waited_ms: 0,
        },
    );
    feed(
        &mut m,
        61,
        Event::CallbackRequested {
            call_id: call("c1"),
            queue: "support".into(),
            number: "5550100".into(),
        },
    );
    feed(
        &mut m,
        300,
        Event::CallbackCompleted {
            call_id: call("c1"),
            agent: "1001".into(),
            number: "5550100".into(),
        },
    );
    assert_eq!(
        value(
            &m,
            "hotline_ivr_exits_total{exit=\"queue:support\",flow=\"main\"}"
        ),
        1.0
    );
    assert_eq!(
        value(&m, "hotline_callbacks_requested_total{queue=\"support\"}"),
        1.0
    );
    assert_eq!(
        value(&m, "hotline_callbacks_completed_total{queue=\"support\"}"),
        1.0
    );
}

#[test]
fn recordings_are_counted_and_a_failure_raises_its_counter() {
    let mut m = Metrics::new(&settings(false)).unwrap();
    assert_eq!(value(&m, "hotline_recording_failures_total"), 0.0);
    let path = "/rec/2026-12-06/c1.wav".to_string();
    feed(
        &mut m,
        1,
        Event::RecordingStarted {
            call_id: call("c1"),
            path: path.clone(),
        },
    );
    feed(
        &mut m,
        9,
        Event::RecordingFinished {
            call_id: call("c1"),
            path: path.clone(),
            sha256: "00".repeat(32),
            duration_ms: 8_000,
            bytes: 256_044,
            hold_periods: String::new(),
        },
    );
    feed(
        &mut m,
        10,
        Event::RecordingStarted {
            call_id: call("c2"),
            path: path.clone(),
        },
    );
    feed(
        &mut m,
        11,
        Event::RecordingFailed {
            call_id: call("c2"),
            path,
            error: "No space left on device (os error 28)".into(),
        },
    );
    assert_eq!(value(&m, "hotline_recordings_started_total"), 2.0);
    assert_eq!(value(&m, "hotline_recordings_finished_total"), 1.0);
    assert_eq!(value(&m, "hotline_recording_failures_total"), 1.0);
    assert_eq!(value(&m, "hotline_recording_bytes_total"), 256_044.0);
}

// --- Post-call survey (rulebook Q3) ---

#[test]
fn survey_answers_count_by_score_and_set_the_satisfaction_ratio_beside_its_target() {
    let text = "[trunks.local]\nsources = [\"127.0.0.0/8\"]\n\
        [queues.support]\nsurvey = \"rate\"\nsurvey_target = 0.9\n[queues.sales]\n\
        [ivr.rate]\nstart = \"rate\"\n[ivr.rate.nodes.rate]\ntype = \"collect\"\n\
        prompts = [\"survey\"]\nvar = \"survey_score\"\nmax_digits = 1\nnext = \"bye\"\n\
        failure = \"bye\"\n[ivr.rate.nodes.bye]\ntype = \"hangup\"\n";
    let settings = Settings::from_toml(text, "test.toml", &BTreeMap::new()).unwrap();
    let mut m = Metrics::new(&settings).unwrap();
    let responses = |score: &str| {
        format!("hotline_survey_responses_total{{queue=\"support\",score=\"{score}\"}}")
    };
    let ratio = "hotline_survey_satisfaction_ratio{queue=\"support\"}";
    assert_eq!(value(&m, &responses("1")), 0.0);
    assert!(value(&m, ratio).is_nan(), "no response yet");
    assert_eq!(
        value(
            &m,
            "hotline_survey_satisfaction_target_ratio{queue=\"support\"}"
        ),
        0.9
    );
    for (n, score) in [4u8, 2, 5, 5].into_iter().enumerate() {
        feed(
            &mut m,
            n as u64,
            Event::SurveyAnswered {
                call_id: call(&format!("c{n}")),
                queue: "support".into(),
                agent: "1001".into(),
                score,
            },
        );
    }
    assert_eq!(value(&m, &responses("5")), 2.0);
    assert_eq!(value(&m, &responses("2")), 1.0);
    assert_eq!(value(&m, ratio), 0.75);
    // A queue without a survey has none of its series.
    let mut page = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&m.registry.gather(), &mut page)
        .unwrap();
    let page = String::from_utf8(page).unwrap();
    assert!(
        !page.contains("survey_satisfaction_target_ratio{queue=\"sales\"}"),
        "{page}"
    );
}
