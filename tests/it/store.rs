//! Call records end to end: the real server with SIPp callers and agents
//! writes one `cdr` row per call into its SQLite file; `hotline cdr export`
//! prints them; a server killed with SIGKILL keeps every call that ended
//! more than one batch interval before, and starts again on the same file,
//! where the calls that were live get `interrupted` records with their
//! recordings; a flood of refusals is counted, not stored row by row; rows
//! past their retention are deleted.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::*;
use rusqlite::Connection;

/// Agents 1001 and 1002 serve `support`, offered in order of id
/// (top-down); number 402 queues there without a greeting.
fn store_config(extra: &str) -> TestConfig {
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
    config.extra(&format!(
        "[queues.support]\nstrategy = \"top-down\"\nannounce_agent = false\n\n\
         [queues.sales]\n\n{extra}"
    ))
}

/// Registers `agent` (password demoNNNN) from `port` and waits until the
/// router has it ready.
fn register_agent(server: &Server, agent: &str, port: u16) {
    Sipp::new("register_auth")
        .service(agent)
        .auth(agent, &format!("demo{agent}"))
        .port(port)
        .run_ok(server);
    wait_events(server, &ready(agent), 1);
}

fn ready(agent: &str) -> [String; 3] {
    [
        "\"type\":\"agent_state_changed\"".to_string(),
        format!("\"agent\":\"{agent}\""),
        "\"state\":\"ready\"".to_string(),
    ]
}

/// Waits up to 10 s until `count` event lines hold every one of `parts`.
fn wait_events(server: &Server, parts: &[String], count: usize) {
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while server.events(&parts).len() < count {
        assert!(
            std::time::Instant::now() < deadline,
            "fewer than {count} events with {parts:?}:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An agent phone on `port` that answers after `answer_ms`.
fn answering_agent(port: u16, answer_ms: u32) -> Sipp {
    Sipp::new("agent_answer").port(port).media().args(&[
        "-d",
        &answer_ms.to_string(),
        "-key",
        "pt",
        "0",
        "-key",
        "codec",
        "PCMU",
        "-rtp_echo",
        "-timeout",
        "40s",
    ])
}

/// A trunk caller `from` dialling `number`, on the line for `stay_ms`
/// after hotline answers.
fn caller(number: &str, from: &str, stay_ms: u32) -> Sipp {
    Sipp::new("caller_waits").service(number).media().args(&[
        "-d",
        &stay_ms.to_string(),
        "-key",
        "caller",
        from,
        "-timeout",
        "40s",
    ])
}

/// The Call-ID of the INVITE a SIPp caller sent.
fn call_id(run: &SippRun) -> String {
    run.sent()
        .into_iter()
        .find(|m| m.method() == Some("INVITE"))
        .and_then(|m| m.header("Call-ID").map(str::to_string))
        .unwrap_or_else(|| panic!("no INVITE sent\n{}", run.report()))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[derive(Debug)]
struct Row {
    trunk: Option<String>,
    caller: Option<String>,
    dialed: Option<String>,
    queue: Option<String>,
    agent: Option<String>,
    arrived_at: i64,
    queued_at: Option<i64>,
    offered_at: Option<i64>,
    answered_at: Option<i64>,
    ended_at: i64,
    waited_ms: i64,
    ring_attempts: i64,
    talk_ms: i64,
    released_by: Option<String>,
    disposition: String,
    late_answer: bool,
}

/// Every row of the `cdr` table, by call id.
fn cdr_rows(path: &Path) -> HashMap<String, Row> {
    let conn = Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT call_id, trunk, caller, dialed, queue, agent, arrived_at, queued_at,
                    offered_at, answered_at, ended_at, waited_ms, ring_attempts, talk_ms,
                    released_by, disposition, late_answer FROM cdr",
        )
        .unwrap();
    stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            Row {
                trunk: r.get(1)?,
                caller: r.get(2)?,
                dialed: r.get(3)?,
                queue: r.get(4)?,
                agent: r.get(5)?,
                arrived_at: r.get(6)?,
                queued_at: r.get(7)?,
                offered_at: r.get(8)?,
                answered_at: r.get(9)?,
                ended_at: r.get(10)?,
                waited_ms: r.get(11)?,
                ring_attempts: r.get(12)?,
                talk_ms: r.get(13)?,
                released_by: r.get(14)?,
                disposition: r.get(15)?,
                late_answer: r.get(16)?,
            },
        ))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

fn integrity(path: &Path) -> String {
    Connection::open(path)
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

fn assert_near(what: &str, value: i64, expected: i64, tolerance: i64) {
    assert!(
        (value - expected).abs() <= tolerance,
        "{what} = {value}, expected {expected} ± {tolerance}"
    );
}

fn export(db: &Path, args: &[&str]) -> String {
    let mut all = vec!["cdr", "export", "--db", db.to_str().unwrap()];
    all.extend(args);
    let out = run_hotline(&all);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "cdr export {args:?}: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn each_call_leaves_one_record_with_its_disposition_agent_and_times() {
    let started = now_ms();
    let mut server = Server::start(store_config(
        "[acd]\nwrap_up = \"1s\"\nring_cycle = \"1s\"\n",
    ));
    // 1. Nobody is logged in: the caller waits 1.5 s and hangs up.
    let abandoned = caller("402", "5550001", 1500).run_ok(&server);
    let abandoned = call_id(&abandoned);

    let (port1, port2) = (free_port(), free_port());
    register_agent(&server, "1001", port1);
    register_agent(&server, "1002", port2);

    // 2. 1001 answers after 0.5 s; the caller hangs up 5 s after hotline
    //    answered it.
    let answered = std::thread::scope(|s| {
        let agent = s.spawn(|| answering_agent(port1, 500).run(&server));
        let run = caller("402", "5550002", 5000).run_ok(&server);
        agent.join().unwrap().assert_ok(&server);
        call_id(&run)
    });
    // 1001 is ready again after its 1 s wrap-up.
    wait_events(&server, &ready("1001"), 2);

    // 3. 1001 lets it ring (2 rings of 1 s), 1002 answers after 0.5 s; the
    //    caller stays 8 s.
    let rang_twice = std::thread::scope(|s| {
        let silent = s.spawn(|| {
            Sipp::new("agent_no_answer")
                .port(port1)
                .args(&["-timeout", "30s"])
                .run(&server)
        });
        let agent = s.spawn(|| answering_agent(port2, 500).run(&server));
        let run = caller("402", "5550003", 8000).run_ok(&server);
        silent.join().unwrap().assert_ok(&server);
        agent.join().unwrap().assert_ok(&server);
        call_id(&run)
    });

    server.sigterm();
    let status = server.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?}\n{}",
        server.log()
    );
    let finished = now_ms();
    let db = server.dir.path().join("hotline.db");
    assert_eq!(integrity(&db), "ok");
    let rows = cdr_rows(&db);
    assert_eq!(rows.len(), 3, "one row per call: {rows:#?}");

    for (id, row) in &rows {
        assert_eq!(row.trunk.as_deref(), Some("local"), "{id}");
        assert_eq!(row.dialed.as_deref(), Some("402"), "{id}");
        assert_eq!(row.queue.as_deref(), Some("support"), "{id}");
        assert_eq!(row.released_by.as_deref(), Some("caller"), "{id}");
        assert!(!row.late_answer, "{id}");
        assert!(
            started <= row.arrived_at && row.ended_at <= finished,
            "{id}: {row:?}"
        );
        let queued = row.queued_at.expect("queued");
        assert!(
            row.arrived_at <= queued && queued <= row.ended_at,
            "{id}: {row:?}"
        );
    }

    let row = &rows[&abandoned];
    assert_eq!(row.disposition, "abandoned");
    assert_eq!(row.caller.as_deref(), Some("5550001"));
    assert_eq!(row.agent, None);
    assert_eq!((row.ring_attempts, row.talk_ms), (0, 0));
    assert_eq!((row.offered_at, row.answered_at), (None, None));
    assert_near("abandoned waited_ms", row.waited_ms, 1500, 500);

    let row = &rows[&answered];
    assert_eq!(row.disposition, "answered");
    assert_eq!(row.caller.as_deref(), Some("5550002"));
    assert_eq!(row.agent.as_deref(), Some("1001"));
    assert_eq!(row.ring_attempts, 1);
    let (offered, connected) = (row.offered_at.unwrap(), row.answered_at.unwrap());
    assert_near("answered ring time", connected - offered, 500, 300);
    assert_near("answered waited_ms", row.waited_ms, 500, 400);
    assert_near("answered talk_ms", row.talk_ms, 4500, 500);
    assert_near(
        "answered talk vs end",
        row.ended_at - connected,
        row.talk_ms,
        100,
    );

    let row = &rows[&rang_twice];
    assert_eq!(row.disposition, "answered");
    assert_eq!(row.caller.as_deref(), Some("5550003"));
    assert_eq!(row.agent.as_deref(), Some("1002"), "1001 let it ring");
    assert_eq!(row.ring_attempts, 2);
    let (offered, connected) = (row.offered_at.unwrap(), row.answered_at.unwrap());
    assert_near(
        "ring-no-answer time to answer",
        connected - offered,
        2500,
        500,
    );
    assert_near("ring-no-answer talk_ms", row.talk_ms, 5500, 500);

    // Every event of the three calls is in the log table too.
    let conn = Connection::open(&db).unwrap();
    for id in [&abandoned, &answered, &rang_twice] {
        let types: Vec<String> = conn
            .prepare("SELECT type FROM events WHERE call_id = ?1 ORDER BY id")
            .unwrap()
            .query_map([id], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            types.first().map(String::as_str),
            Some("call_admitted"),
            "{id}"
        );
        assert_eq!(types.last().map(String::as_str), Some("call_ended"), "{id}");
    }

    // The export prints the same rows, oldest first.
    let csv = export(&db, &["--format", "csv"]);
    let lines: Vec<&str> = csv.split_terminator("\r\n").collect();
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(lines[0].starts_with("call_id,"), "{csv}");
    let order: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(order, [&abandoned, &answered, &rang_twice], "{csv}");
    assert!(lines[1].contains(",abandoned,"), "{}", lines[1]);
    assert!(lines[3].contains(",1002,"), "{}", lines[3]);

    let json = export(&db, &["--format", "json"]);
    let objects: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(objects.len(), 3, "{json}");
    for (object, (id, disposition, agent, attempts)) in objects.iter().zip([
        (&abandoned, "abandoned", serde_json::Value::Null, 0),
        (&answered, "answered", "1001".into(), 1),
        (&rang_twice, "answered", "1002".into(), 2),
    ]) {
        assert_eq!(object["call_id"], id.as_str());
        assert_eq!(object["disposition"], disposition);
        assert_eq!(object["agent"], agent);
        assert_eq!(object["ring_attempts"], attempts);
        assert_eq!(object["late_answer"], false);
    }
    // --since on the last call's end keeps only it.
    let last_end = rows[&rang_twice].ended_at;
    let since = format!("{}", last_end / 1000);
    let json = export(&db, &["--format", "json", "--since", &since]);
    assert_eq!(json.lines().count(), 1, "{json}");
}

#[test]
fn after_kill_9_every_call_that_ended_a_batch_interval_before_is_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("calls.db");
    let config = store_config(&format!(
        "[store]\npath = {:?}\nbatch_interval = \"1s\"\n",
        db.display().to_string()
    ));
    let mut server = Server::start(config.clone());
    // A refused call, an answered one, one abandoned while the only agent
    // is in wrap-up.
    let rejected = Sipp::new("uac_unknown_number")
        .service("499")
        .run_ok(&server);
    let rejected = call_id(&rejected);
    let port = free_port();
    register_agent(&server, "1001", port);
    let answered = std::thread::scope(|s| {
        let agent = s.spawn(|| answering_agent(port, 300).run(&server));
        let run = caller("402", "5550002", 1500).run_ok(&server);
        agent.join().unwrap().assert_ok(&server);
        call_id(&run)
    });
    let abandoned = caller("402", "5550003", 1000).run_ok(&server);
    let abandoned = call_id(&abandoned);
    server.wait_event(
        &[
            "\"type\":\"call_ended\"",
            &format!("\"call_id\":\"{abandoned}\""),
        ],
        Duration::from_secs(3),
    );
    // Past one batch interval (1 s) after the last end.
    std::thread::sleep(Duration::from_millis(2500));
    // The export reads beside the running writer.
    let live = export(&db, &["--format", "json"]);
    assert_eq!(live.lines().count(), 3, "{live}");
    server.assert_alive();
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &server.pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = server.wait_exit(Duration::from_secs(5));
    assert!(status.is_some_and(|s| !s.success()), "{status:?}");

    assert_eq!(integrity(&db), "ok");
    let rows = cdr_rows(&db);
    assert_eq!(rows.len(), 3, "{rows:#?}");
    assert_eq!(rows[&rejected].disposition, "rejected");
    assert_eq!(rows[&rejected].arrived_at, rows[&rejected].ended_at);
    assert_eq!(rows[&rejected].dialed.as_deref(), Some("499"));
    assert_eq!(rows[&answered].disposition, "answered");
    assert_eq!(rows[&answered].agent.as_deref(), Some("1001"));
    assert_eq!(rows[&abandoned].disposition, "abandoned");

    // A server started on the same file adds to it.
    let mut again = Server::start(config);
    let later = caller("402", "5550004", 500).run_ok(&again);
    let later = call_id(&later);
    again.sigterm();
    let status = again.wait_exit(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert_eq!(integrity(&db), "ok");
    let rows = cdr_rows(&db);
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[&later].disposition, "abandoned");
}

/// A call's recording: the file, its SHA-256, its length.
type RecordingColumns = (Option<String>, Option<String>, Option<i64>);

/// The recording columns of every call, by call id.
fn recordings(path: &Path) -> HashMap<String, RecordingColumns> {
    let conn = Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT call_id, recording, recording_sha256, recording_ms FROM cdr")
        .unwrap();
    stmt.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, (r.get(1)?, r.get(2)?, r.get(3)?)))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// The value of a string field in an event's log line.
fn event_field(line: &str, name: &str) -> String {
    let json = &line[line.find('{').unwrap_or(0)..];
    let v: serde_json::Value =
        serde_json::from_str(json).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    v[name].as_str().unwrap_or_default().to_string()
}

#[test]
fn after_kill_9_the_calls_that_were_live_get_interrupted_records_with_their_recordings() {
    // Every agent bridged and recorded, and a few callers still queued.
    const AGENTS: u32 = 50;
    const CALLS: usize = 55;
    let data = tempfile::tempdir().unwrap();
    let db = data.path().join("calls.db");
    let recordings_dir = data.path().join("recordings");
    let config = store_config(&format!(
        "[store]\npath = {:?}\nbatch_interval = \"1s\"\n\n[recording]\ndir = {:?}\nflush_interval = \"1s\"\n",
        db.display().to_string(),
        recordings_dir.display().to_string()
    ));
    // The API lists the recordings of the interrupted calls too.
    let admin = "store-admin-token";
    let token_sha256 = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(admin.as_bytes()))
    };
    let mut config = config
        .extra(&format!(
            "[api.tokens.admin]\nrole = \"admin\"\nsha256 = \"{token_sha256}\"\n"
        ))
        .http(true);
    let agents: Vec<String> = (1001..1001 + AGENTS).map(|a| a.to_string()).collect();
    for agent in &agents {
        if !config.agents.iter().any(|(id, _)| id == agent) {
            config.agents.push((agent.clone(), format!("demo{agent}")));
        }
        config = config.agent_queues(agent, &["support"]);
    }
    let server = Server::start(config.clone());
    // Every agent's phone is the one SIPp phone on `port`.
    let port = free_port();
    for agent in &agents {
        register_agent(&server, agent, port);
    }
    let calls = CALLS.to_string();
    let callers = Sipp::new("caller_waits").service("402").media().args(&[
        "-d", "60000", "-key", "caller", "5550100", "-m", &calls, "-l", &calls, "-r", "25",
        "-timeout", "25s",
    ]);
    let phones = Sipp::new("agent_answer").port(port).media().args(&[
        "-d",
        "200",
        "-key",
        "pt",
        "0",
        "-key",
        "codec",
        "PCMU",
        "-rtp_echo",
        "-m",
        "50",
        "-timeout",
        "25s",
    ]);
    let mut server = server;
    let (live, recorded) = std::thread::scope(|s| {
        let server = &server;
        let phones = s.spawn(|| phones.run(server));
        let callers = s.spawn(|| callers.run(server));
        wait_events(server, &["\"type\":\"call_queued\"".to_string()], CALLS);
        wait_events(
            server,
            &["\"type\":\"recording_started\"".to_string()],
            AGENTS as usize,
        );
        // Past a batch interval, and a flush of every recording.
        std::thread::sleep(Duration::from_millis(2_500));
        let live: Vec<String> = server
            .events(&["\"type\":\"call_admitted\""])
            .iter()
            .map(|l| event_field(l, "call_id"))
            .collect();
        let recorded: HashMap<String, String> = server
            .events(&["\"type\":\"recording_started\""])
            .iter()
            .map(|l| (event_field(l, "call_id"), event_field(l, "path")))
            .collect();
        assert!(server.events(&["\"type\":\"call_ended\""]).is_empty());
        let killed = std::process::Command::new("kill")
            .args(["-KILL", &server.pid.to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        // The phones and callers give up on the dead server: not the point.
        let _ = phones.join();
        let _ = callers.join();
        (live, recorded)
    });
    let status = server.wait_exit(Duration::from_secs(5));
    assert!(status.is_some_and(|s| !s.success()), "{status:?}");
    assert_eq!(live.len(), CALLS);
    assert_eq!(recorded.len(), AGENTS as usize);
    assert!(cdr_rows(&db).is_empty(), "no call had ended");

    // The next start on the same file and directory writes their records.
    let again = Server::start(config);
    assert!(
        again.log().contains("got their records, as interrupted"),
        "{}",
        again.log()
    );
    let rows = cdr_rows(&db);
    let files = recordings(&db);
    assert_eq!(rows.len(), CALLS, "{rows:#?}");
    for call_id in &live {
        let row = &rows[call_id];
        assert_eq!(row.disposition, "interrupted", "{call_id}: {row:?}");
        assert_eq!(row.dialed.as_deref(), Some("402"));
        assert_eq!(row.caller.as_deref(), Some("5550100"));
        assert_eq!(row.queue.as_deref(), Some("support"));
        assert!(
            row.queued_at.is_some() && row.ended_at >= row.arrived_at,
            "{row:?}"
        );
        let (path, sha, ms) = &files[call_id];
        match recorded.get(call_id) {
            Some(started) => {
                assert_eq!(path.as_deref(), Some(started.as_str()));
                assert!(row.answered_at.is_some() && row.agent.is_some(), "{row:?}");
                // The file as it was left: its checksum, a WAV that parses,
                // as long as the record says, up to a flush before the kill.
                let bytes = std::fs::read(started).unwrap();
                use sha2::Digest;
                assert_eq!(
                    sha.as_deref(),
                    Some(hex::encode(sha2::Sha256::digest(&bytes)).as_str())
                );
                let wav = hound::WavReader::open(started).unwrap();
                assert_eq!(wav.spec().channels, 2);
                let wav_ms = i64::from(wav.duration()) * 1000 / 8000;
                assert_eq!(Some(wav_ms), *ms, "{call_id}");
                assert!(wav_ms >= 1_000, "{call_id}: {wav_ms} ms recorded");
                let answered = row.answered_at.unwrap();
                assert!(
                    row.ended_at >= answered + wav_ms - 100,
                    "{call_id} ends before its recording: {row:?}, {wav_ms} ms"
                );
                assert!(row.talk_ms >= wav_ms - 100, "{row:?}");
            }
            None => assert_eq!(path, &None, "{call_id}"),
        }
    }
    let out = run_hotline(&["recordings", "verify", "--db", db.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("{AGENTS} recording(s) verified")),
        "{stdout}"
    );
    let (status, body) = http_request(
        again.http_port.unwrap(),
        "GET",
        "/api/v1/recordings",
        Some(admin),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    let listed = listed
        .as_array()
        .or_else(|| listed["recordings"].as_array())
        .unwrap_or_else(|| panic!("{body}"));
    assert_eq!(listed.len(), AGENTS as usize, "{body}");
    for r in listed {
        let call_id = r["call_id"].as_str().unwrap();
        assert_eq!(r["sha256"], files[call_id].1.as_deref().unwrap(), "{r}");
    }
}

/// The value of one series on a metrics page (0 when absent).
fn metric(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Waits up to 10 s for `text` in the server's log.
fn wait_log(server: &Server, text: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !server.log().contains(text) {
        assert!(
            std::time::Instant::now() < deadline,
            "no `{text}` in the log:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn count_rows(db: &Path, table: &str) -> i64 {
    Connection::open(db)
        .unwrap()
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_flood_of_refused_invites_is_counted_in_full_and_stored_at_a_bounded_rate() {
    const FLOOD: u32 = 2_000;
    let data = tempfile::tempdir().unwrap();
    let db = data.path().join("calls.db");
    let config = store_config(&format!(
        "[store]\npath = {:?}\nrefusals_per_second = 10\n\
         # The flood comes from one address: past the edge's per-source rate,\n\
         # so that every INVITE reaches admission and its refusal.\n\
         [limits]\ninvite_rate = 0\n",
        db.display().to_string()
    ))
    .http(true)
    .log_level("info");
    let server = Server::start(config);
    let started = std::time::Instant::now();
    let run = Sipp::new("uac_unknown_number").service("499").args(&[
        "-m",
        &FLOOD.to_string(),
        "-r",
        "500",
        "-l",
        "200",
        "-timeout",
        "60s",
    ]);
    let run = run.run(&server);
    let flood_secs = started.elapsed().as_secs_f64();
    // Every refusal is written or counted as unsampled once the writer has
    // committed its last batch: wait for that (a few batch intervals at most).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (rejected, unsampled, rows) = loop {
        let page = http_get(server.http_port.unwrap(), "/metrics");
        let rejected = metric(
            &page,
            "hotline_calls_rejected_total{reason=\"unknown_number\"}",
        );
        let unsampled = metric(&page, "hotline_store_refusals_unsampled_total");
        let rows = count_rows(&db, "cdr");
        if rows as f64 + unsampled == rejected || std::time::Instant::now() > deadline {
            break (rejected, unsampled, rows);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let events = count_rows(&db, "events");
    eprintln!(
        "{rejected} INVITEs refused in {flood_secs:.1} s: {rows} records, {events} events stored, {unsampled} only counted"
    );
    assert!(
        rejected >= f64::from(FLOOD) * 0.95,
        "{rejected} refusals counted\n{}",
        run.report()
    );
    // At most 10 a second over the flood (and the second it started in).
    let bound = 10 * (flood_secs.ceil() as i64 + 2);
    assert!(rows <= bound, "{rows} records for {flood_secs:.1} s");
    assert!(events <= bound, "{events} events for {flood_secs:.1} s");
    assert!(rows >= 10, "refusals are still sampled: {rows}");
    assert_eq!(
        rows as f64 + unsampled,
        rejected,
        "every refusal is either stored or counted as unsampled"
    );
}

#[test]
fn events_and_records_past_their_retention_are_deleted_at_start() {
    let data = tempfile::tempdir().unwrap();
    let db = data.path().join("calls.db");
    let day: i64 = 24 * 3600 * 1000;
    let now = now_ms();
    {
        let conn = hotline::store::schema::open_for_writing(
            &db,
            hotline::store::schema::DEFAULT_BUSY_TIMEOUT,
        )
        .unwrap();
        for (id, age_days) in [("ancient", 400), ("old", 91), ("recent", 89), ("today", 0)] {
            let at = now - age_days * day;
            conn.execute(
                "INSERT INTO events (at, call_id, type, json) VALUES (?1, ?2, 'call_ended', '{}')",
                rusqlite::params![at, id],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO cdr (call_id, arrived_at, ended_at, disposition) VALUES (?1, ?2, ?2, 'ivr')",
                rusqlite::params![id, at],
            )
            .unwrap();
        }
    }
    let ids = |table: &str| -> Vec<String> {
        Connection::open(&db)
            .unwrap()
            .prepare(&format!("SELECT call_id FROM {table} ORDER BY call_id"))
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    // The defaults: events for 90 days, records forever.
    let config = store_config(&format!("[store]\npath = {:?}\n", db.display().to_string()));
    let mut server = Server::start(config);
    wait_log(&server, "rows past their retention deleted");
    assert_eq!(ids("events"), ["recent", "today"]);
    assert_eq!(ids("cdr"), ["ancient", "old", "recent", "today"]);
    server.sigterm();
    assert!(server.wait_exit(Duration::from_secs(10)).is_some());

    // Records kept for a year.
    let config = store_config(&format!(
        "[store]\npath = {:?}\n[store.retention]\ncdrs = \"365d\"\n",
        db.display().to_string()
    ));
    let server = Server::start(config);
    wait_log(&server, "rows past their retention deleted");
    assert_eq!(ids("cdr"), ["old", "recent", "today"]);
    assert_eq!(ids("events"), ["recent", "today"]);
}
