//! The store against real database files in temporary directories.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::Connection;

use super::*;
use crate::events::{Event, ReleasedBy};

fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// The events of one answered call `id`, starting at `t0` (unix ms).
fn answered_call(id: &str, t0: u64) -> Vec<Stamped> {
    let call_id = id.to_string();
    vec![
        Stamped {
            at: at(t0),
            event: Event::CallAdmitted {
                call_id: call_id.clone(),
                trunk: "local".into(),
                caller: "5551234".into(),
                number: "401".into(),
                source: "127.0.0.1:5070".parse().unwrap(),
            },
        },
        Stamped {
            at: at(t0 + 10),
            event: Event::CallQueued {
                call_id: call_id.clone(),
                queue: "support".into(),
                waited_ms: 0,
            },
        },
        Stamped {
            at: at(t0 + 20),
            event: Event::CallOffered {
                call_id: call_id.clone(),
                agent: "1001".into(),
                queue: "support".into(),
                caller: "5551234".into(),
                number: "401".into(),
                contacts: 1,
                vars: Default::default(),
            },
        },
        Stamped {
            at: at(t0 + 1_020),
            event: Event::CallConnected {
                call_id: call_id.clone(),
                agent: "1001".into(),
                queue: "support".into(),
                waited_ms: 1_010,
                ring_ms: 1_000,
                late: false,
            },
        },
        Stamped {
            at: at(t0 + 5_020),
            event: Event::CallReleased {
                call_id: call_id.clone(),
                agent: "1001".into(),
                queue: "support".into(),
                released_by: ReleasedBy::Caller,
                talk_ms: 4_000,
                holds: 0,
                hold_ms: 0,
            },
        },
        Stamped {
            at: at(t0 + 5_021),
            event: Event::CallEnded {
                call_id,
                released_by: ReleasedBy::Caller,
                answered: true,
            },
        },
    ]
}

fn quick() -> WriterOptions {
    WriterOptions {
        batch_interval: Duration::from_millis(100),
        ..WriterOptions::default()
    }
}

fn count(path: &Path, table: &str) -> i64 {
    let conn = Connection::open(path).unwrap();
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

/// Waits up to `limit` for `check`.
fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    check()
}

/// Waits (bounded) until `counter` passes `done`.
fn counter_reaches(counter: &AtomicU64, done: impl Fn(u64) -> bool) -> bool {
    eventually(Duration::from_secs(3), || {
        done(counter.load(Ordering::Relaxed))
    })
}

#[tokio::test]
async fn records_and_events_round_trip_through_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hotline.db");
    let store = Store::open(&path, quick()).unwrap();
    for e in answered_call("call-1", 1_800_000_000_000) {
        store.record(e);
    }
    store.record(Stamped {
        at: at(1_800_000_000_100),
        event: Event::AgentStateChanged {
            agent: "1001".into(),
            state: "ready",
            reason: None,
        },
    });
    let stats = store.stats();
    // Written by the interval, before any close.
    assert!(
        counter_reaches(&stats.rows_written, |n| n == 8),
        "rows written: {stats:?}"
    );
    assert_eq!(stats.pending.load(Ordering::Relaxed), 0);
    store.close().await;
    assert_eq!(stats.errors.load(Ordering::Relaxed), 0);

    let conn = Connection::open(&path).unwrap();
    let row: (
        String,
        String,
        String,
        i64,
        i64,
        i64,
        i64,
        String,
        String,
        bool,
    ) = conn
        .query_row(
            "SELECT call_id, agent, queue, arrived_at, ended_at, waited_ms, talk_ms,
                    released_by, disposition, late_answer FROM cdr",
            [],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                ))
            },
        )
        .unwrap();
    assert_eq!(
        row,
        (
            "call-1".into(),
            "1001".into(),
            "support".into(),
            1_800_000_000_000,
            1_800_000_005_021,
            1_010,
            4_000,
            "caller".into(),
            "answered".into(),
            false
        )
    );
    let events: Vec<(i64, Option<String>, String, String)> = conn
        .prepare("SELECT at, call_id, type, json FROM events ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(events.len(), 7);
    assert_eq!(events[0].0, 1_800_000_000_000);
    assert_eq!(events[0].1.as_deref(), Some("call-1"));
    assert_eq!(events[0].2, "call_admitted");
    let json: serde_json::Value = serde_json::from_str(&events[0].3).unwrap();
    assert_eq!(json["type"], "call_admitted");
    assert_eq!(json["at"], 1_800_000_000_000u64);
    assert_eq!(json["caller"], "5551234");
    assert_eq!(events[5].2, "call_ended");
    assert_eq!(events[6].1, None, "an agent event belongs to no call");
    assert_eq!(events[6].2, "agent_state_changed");
}

#[tokio::test]
async fn close_writes_what_the_interval_has_not_yet_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hotline.db");
    let store = Store::open(
        &path,
        WriterOptions {
            batch_interval: Duration::from_secs(60),
            ..WriterOptions::default()
        },
    )
    .unwrap();
    for e in answered_call("call-1", 1_800_000_000_000) {
        store.record(e);
    }
    store.close().await;
    assert_eq!(count(&path, "cdr"), 1);
    assert_eq!(count(&path, "events"), 6);
}

#[tokio::test]
async fn a_full_batch_is_written_before_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hotline.db");
    let store = Store::open(
        &path,
        WriterOptions {
            batch_interval: Duration::from_secs(60),
            batch_rows: 10,
            ..WriterOptions::default()
        },
    )
    .unwrap();
    for e in answered_call("a", 1_800_000_000_000)
        .into_iter()
        .chain(answered_call("b", 1_800_000_001_000))
    {
        store.record(e);
    }
    let stats = store.stats();
    assert!(counter_reaches(&stats.rows_written, |n| n >= 10));
    store.close().await;
    assert_eq!(count(&path, "cdr"), 2);
}

#[tokio::test]
async fn the_store_follows_the_bus_and_close_takes_the_last_events() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hotline.db");
    let bus = EventBus::default();
    let settings = StoreSettings {
        enabled: true,
        path: path.clone(),
        batch_interval: Duration::from_secs(60),
        ..StoreSettings::default()
    };
    let store = Store::start(&settings, &bus).unwrap();
    for e in answered_call("call-1", 1_800_000_000_000) {
        bus.publish(e.event);
    }
    // Closed at once: the drain still hands over everything published.
    store.close().await;
    assert_eq!(count(&path, "cdr"), 1);
    assert_eq!(count(&path, "events"), 6);
}

#[tokio::test]
async fn the_store_loses_no_event_however_far_it_runs_behind_the_bus() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hotline.db");
    // A ring of 4: any subscriber would lose nearly everything below.
    let bus = EventBus::new(4);
    let settings = StoreSettings {
        enabled: true,
        path: path.clone(),
        batch_interval: Duration::from_secs(60),
        ..StoreSettings::default()
    };
    let store = Store::start(&settings, &bus).unwrap();
    let stats = store.stats();
    for n in 0..1_000u64 {
        for e in answered_call(&format!("call-{n}"), 1_800_000_000_000 + n * 100) {
            bus.publish(e.event);
        }
    }
    assert!(stats.queue.high_water() > 4, "it did run behind");
    store.close().await;
    assert_eq!(stats.queue.lost(), 0);
    assert_eq!(stats.queue.queued(), 0);
    assert_eq!(stats.errors.load(Ordering::Relaxed), 0);
    assert_eq!(count(&path, "cdr"), 1_000);
    assert_eq!(count(&path, "events"), 6_000);
}

#[test]
fn an_unwritable_path_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, b"x").unwrap();
    let path = file.join("hotline.db");
    let err = Store::open(&path, WriterOptions::default())
        .err()
        .expect("a database under a file cannot be opened");
    let text = err.to_string();
    assert!(matches!(err, StoreError::Open { .. }), "{text}");
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("unable to open"), "{text}");
}

#[test]
fn a_newer_schema_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hotline.db");
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", schema::SCHEMA_VERSION + 1)
        .unwrap();
    let err = Store::open(&path, WriterOptions::default())
        .err()
        .expect("refused");
    assert!(matches!(err, StoreError::TooNew { .. }), "{err}");
}

/// Another connection holds the write lock: every write fails with
/// "database is locked", is counted, and the batch is kept; once the lock
/// goes, the next interval writes it.
#[tokio::test]
async fn a_locked_database_counts_errors_and_the_batch_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hotline.db");
    let store = Store::open(
        &path,
        WriterOptions {
            batch_interval: Duration::from_millis(100),
            busy_timeout: Duration::from_millis(20),
            ..WriterOptions::default()
        },
    )
    .unwrap();
    let stats = store.stats();
    let locker = Connection::open(&path).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    for e in answered_call("call-1", 1_800_000_000_000) {
        store.record(e);
    }
    assert!(
        counter_reaches(&stats.errors, |n| n >= 2),
        "no write error counted: {stats:?}"
    );
    assert_eq!(stats.rows_written.load(Ordering::Relaxed), 0);
    assert_eq!(
        stats.pending.load(Ordering::Relaxed),
        7,
        "6 events and a CDR"
    );
    // The alarm is up while the rows wait.
    assert!(stats.failing.load(Ordering::Relaxed));
    assert!(stats.write_failures.load(Ordering::Relaxed) >= 2);
    locker.execute_batch("ROLLBACK").unwrap();
    assert!(
        counter_reaches(&stats.rows_written, |n| n == 7),
        "the kept batch was not written: {stats:?}"
    );
    assert_eq!(stats.pending.load(Ordering::Relaxed), 0);
    assert!(!stats.failing.load(Ordering::Relaxed), "the alarm clears");
    assert_eq!(stats.rows_dropped.load(Ordering::Relaxed), 0);
    store.close().await;
    assert_eq!(count(&path, "cdr"), 1);
}

/// While the database cannot be written, rows beyond the cap are dropped
/// (oldest events first, records kept) and counted.
#[tokio::test]
async fn pending_rows_are_capped_while_the_database_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hotline.db");
    let store = Store::open(
        &path,
        WriterOptions {
            batch_interval: Duration::from_millis(100),
            busy_timeout: Duration::from_millis(20),
            max_pending: 10,
            ..WriterOptions::default()
        },
    )
    .unwrap();
    let stats = store.stats();
    let locker = Connection::open(&path).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    // 3 calls: 18 events and 3 records, 21 rows for a cap of 10.
    for (n, id) in ["a", "b", "c"].iter().enumerate() {
        for e in answered_call(id, 1_800_000_000_000 + n as u64 * 10_000) {
            store.record(e);
        }
    }
    // 11 rows dropped, and at least one failed write.
    let dropped_and_failed = 12;
    assert!(counter_reaches(&stats.errors, |n| n >= dropped_and_failed));
    assert_eq!(stats.pending.load(Ordering::Relaxed), 10);
    locker.execute_batch("ROLLBACK").unwrap();
    store.close().await;
    assert_eq!(count(&path, "cdr"), 3, "records outlive events");
    assert_eq!(count(&path, "events"), 7);
}

/// Writer throughput, printed rather than asserted: 5,000 answered calls
/// (30,000 events, 5,000 records) through one store.
#[tokio::test]
async fn writer_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hotline.db");
    let store = Store::open(&path, quick()).unwrap();
    let calls: Vec<Stamped> = (0..5_000u64)
        .flat_map(|n| answered_call(&format!("call-{n}"), 1_800_000_000_000 + n * 100))
        .collect();
    let rows = calls.len() + 5_000;
    let started = Instant::now();
    for e in calls {
        store.record(e);
    }
    store.close().await;
    let elapsed = started.elapsed();
    println!(
        "store writer: {rows} rows in {elapsed:?}, {:.0} rows/s",
        rows as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(count(&path, "cdr"), 5_000);
}

/// The events of `answered_call` up to the answer, then the recording's
/// start: a call live when the process died.
fn live_recorded_call(id: &str, t0: u64, recording: &Path) -> Vec<Stamped> {
    let mut events: Vec<Stamped> = answered_call(id, t0).into_iter().take(4).collect();
    events.push(Stamped {
        at: at(t0 + 1_030),
        event: Event::RecordingStarted {
            call_id: id.into(),
            path: recording.display().to_string(),
        },
    });
    events
}

/// call_id, disposition, arrived_at, ended_at, recording, its SHA-256 and
/// length.
type RecoveredRow = (
    String,
    String,
    i64,
    i64,
    Option<String>,
    Option<String>,
    Option<i64>,
);

#[tokio::test]
async fn calls_live_when_the_process_died_get_interrupted_records_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hotline.db");
    let wav_path = dir.path().join("live.wav");
    let mut wav = crate::recording::wav::WavFile::create(&wav_path, 2).unwrap();
    // Two seconds of stereo, the header brought up to date.
    wav.append(&[0; 64_000], 0).unwrap();
    drop(wav);
    let t0 = 1_800_000_000_000;
    let store = Store::open(&path, quick()).unwrap();
    for e in live_recorded_call("live", t0, &wav_path) {
        store.record(e);
    }
    for e in answered_call("ended", t0) {
        store.record(e);
    }
    // A call in the queue, no recording.
    for e in answered_call("queued", t0).into_iter().take(2) {
        store.record(e);
    }
    store.close().await;
    assert_eq!(count(&path, "cdr"), 1, "only the ended call has a record");
    // A call whose end was logged but whose record was lost.
    let conn = Connection::open(&path).unwrap();
    conn.execute("DELETE FROM cdr WHERE call_id = 'ended'", [])
        .unwrap();
    drop(conn);

    let store = Store::open(&path, quick()).unwrap();
    assert_eq!(store.stats().recovered.load(Ordering::Relaxed), 3);
    store.close().await;
    let conn = Connection::open(&path).unwrap();
    let rows: Vec<RecoveredRow> = conn
        .prepare(
            "SELECT call_id, disposition, arrived_at, ended_at, recording, recording_sha256,
                    recording_ms FROM cdr ORDER BY call_id",
        )
        .unwrap()
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}");
    let (ended, live, queued) = (&rows[0], &rows[1], &rows[2]);
    assert_eq!((ended.0.as_str(), ended.1.as_str()), ("ended", "answered"));
    assert_eq!(ended.3, t0 as i64 + 5_021);
    assert_eq!((live.0.as_str(), live.1.as_str()), ("live", "interrupted"));
    assert_eq!(live.2, t0 as i64);
    assert_eq!(live.4.as_deref(), Some(wav_path.to_str().unwrap()));
    let (sha, _) = crate::recording::writer::sha256_of(&wav_path).unwrap();
    assert_eq!(live.5.as_deref(), Some(sha.as_str()));
    assert_eq!(live.6, Some(2_000));
    // It ends where its recording does, not at its last event.
    assert_eq!(live.3, t0 as i64 + 1_030 + 2_000, "{live:?}");
    assert_eq!(
        (queued.0.as_str(), queued.1.as_str()),
        ("queued", "interrupted")
    );
    assert_eq!(queued.3, t0 as i64 + 10);
    assert_eq!(queued.4, None);

    // Recovered once: the next start finds nothing more.
    let store = Store::open(&path, quick()).unwrap();
    assert_eq!(store.stats().recovered.load(Ordering::Relaxed), 0);
    store.close().await;
    assert_eq!(count(&path, "cdr"), 3);
}

fn refused(n: usize) -> Stamped {
    Stamped {
        at: SystemTime::now(),
        event: Event::CallRejected {
            call_id: format!("flood-{n}"),
            number: "999".into(),
            source: "127.0.0.2:5060".parse().unwrap(),
            status: 404,
            reason: crate::events::RejectReason::UnknownNumber,
        },
    }
}

#[tokio::test]
async fn refusals_are_stored_at_a_bounded_rate_and_the_rest_counted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hotline.db");
    let store = Store::open(
        &path,
        WriterOptions {
            refusals_per_second: 5,
            ..quick()
        },
    )
    .unwrap();
    for n in 0..2_000 {
        store.record(refused(n));
    }
    store.record(Stamped {
        at: SystemTime::now(),
        event: Event::AuthFailed {
            source: "127.0.0.3:5060".parse().unwrap(),
            username: Some("x".repeat(10)),
            method: "REGISTER".into(),
            reason: "wrong password".into(),
        },
    });
    // Calls that were admitted are never sampled away.
    for e in answered_call("real", 1_800_000_000_000) {
        store.record(e);
    }
    let stats = store.stats();
    store.close().await;
    let rejected_rows = count(&path, "cdr") - 1;
    let refusal_events = count(&path, "events") - 6;
    // The flood took less than a few seconds: at most 5 in each.
    assert!(
        (5..=20).contains(&refusal_events),
        "{refusal_events} refusals stored"
    );
    assert!(rejected_rows <= refusal_events && rejected_rows >= refusal_events - 1);
    let unsampled = stats.refusals_unsampled.load(Ordering::Relaxed) as i64;
    assert_eq!(refusal_events + unsampled, 2_001, "every refusal counted");
    assert_eq!(stats.errors.load(Ordering::Relaxed), 0);
    let real: String = Connection::open(&path)
        .unwrap()
        .query_row(
            "SELECT disposition FROM cdr WHERE call_id = 'real'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(real, "answered");
}

#[tokio::test]
async fn rows_past_their_retention_are_deleted_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hotline.db");
    let day: i64 = 24 * 3600 * 1000;
    let now = super::cdr::unix_ms(SystemTime::now());
    {
        let conn = schema::open_for_writing(&path, schema::DEFAULT_BUSY_TIMEOUT).unwrap();
        for (n, age_days) in [(0, 100), (1, 91), (2, 89), (3, 1)] {
            let at = now - age_days * day;
            conn.execute(
                "INSERT INTO events (at, call_id, type, json) VALUES (?1, ?2, 'call_ended', '{}')",
                rusqlite::params![at, format!("c{n}")],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO cdr (call_id, arrived_at, ended_at, disposition) VALUES (?1, ?2, ?2, 'ivr')",
                rusqlite::params![format!("c{n}"), at],
            )
            .unwrap();
        }
    }
    let store = Store::open(
        &path,
        WriterOptions {
            retention: Retention {
                events: Some(Duration::from_secs(90 * 24 * 3600)),
                cdrs: Some(Duration::from_secs(95 * 24 * 3600)),
                sweep_every: Duration::from_secs(3600),
            },
            ..quick()
        },
    )
    .unwrap();
    let stats = store.stats();
    assert!(
        counter_reaches(&stats.events_expired, |n| n == 2),
        "{stats:?}"
    );
    assert_eq!(stats.cdrs_expired.load(Ordering::Relaxed), 1);
    store.close().await;
    let conn = Connection::open(&path).unwrap();
    let ids = |table: &str| -> Vec<String> {
        conn.prepare(&format!("SELECT call_id FROM {table} ORDER BY call_id"))
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert_eq!(ids("events"), ["c2", "c3"]);
    assert_eq!(ids("cdr"), ["c1", "c2", "c3"]);
}
