//! Call recording end to end (rulebook Q1): a raw caller speaking a 440 Hz
//! tone and a SIPp agent playing a 1000 Hz tone from a pcap the test
//! writes; the WAV file's channels are told apart by frequency, its
//! checksum is on the call record, `hotline recordings verify` finds a
//! changed or missing file, a `kill -9` leaves a well-formed file, and the
//! CTI API lists and streams recordings to whom it may and deletes nothing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::pcap::{tone_pcmu, write_rtp_pcap};
use crate::support::*;

const CALLER_HZ: f64 = 440.0;
const AGENT_HZ: f64 = 1000.0;

const ADMIN: &str = "rec-admin";
const SUPPORT_SUPERVISOR: &str = "rec-support-supervisor";
const SALES_SUPERVISOR: &str = "rec-sales-supervisor";
const AGENT_1001: &str = "rec-agent-1001";
const AGENT_1002: &str = "rec-agent-1002";

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Agents 1001 and 1002 serve `support`; 402 reaches it; the agent is not
/// announced, so the bridge (and the recording) starts at the answer.
fn recording_config(extra: &str) -> TestConfig {
    acd_config(&format!(
        "[queues.support]\nannounce_agent = false\n[queues.sales]\n{extra}"
    ))
}

fn api_config() -> TestConfig {
    let token = |name: &str, role: &str, extra: &str, secret: &str| {
        format!(
            "[api.tokens.{name}]\nrole = \"{role}\"\n{extra}sha256 = \"{}\"\n",
            sha256_hex(secret.as_bytes())
        )
    };
    let tokens = [
        token("admin", "admin", "", ADMIN),
        token(
            "support",
            "supervisor",
            "queues = [\"support\"]\n",
            SUPPORT_SUPERVISOR,
        ),
        token(
            "sales",
            "supervisor",
            "queues = [\"sales\"]\n",
            SALES_SUPERVISOR,
        ),
        token("a1001", "agent", "agent = \"1001\"\n", AGENT_1001),
        token("a1002", "agent", "agent = \"1002\"\n", AGENT_1002),
    ]
    .concat();
    recording_config(&tokens)
        .agent_queues("1003", &["sales"])
        .http(true)
}

/// An agent phone on `port` that answers after 300 ms and plays the 1000 Hz
/// tone (`seconds` long) from a pcap written into the server's directory.
fn tone_agent(server: &Server, port: u16, seconds: usize, recv_timeout: &str) -> Sipp {
    write_rtp_pcap(
        &server.dir.path().join("agent_tone.pcap"),
        &tone_pcmu(AGENT_HZ, seconds * 50),
    );
    Sipp::new("agent_answer_pcap").port(port).media().args(&[
        "-d",
        "300",
        "-key",
        "pt",
        "0",
        "-key",
        "codec",
        "PCMU",
        "-recv_timeout",
        recv_timeout,
        "-timeout",
        "40s",
    ])
}

/// Calls 402 from a raw caller and waits for the bridge.
fn call_until_bridged(server: &Server) -> Caller {
    let mut caller = Caller::new(server);
    let offer = sdp_offer(
        caller.rtp_addr(),
        "0 101",
        "a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n",
    );
    let ok = caller.invite("402", &offer);
    assert_status(&Some(ok), 200, "INVITE to 402");
    caller.ack("");
    server.wait_event(&["\"type\":\"call_bridged\""], Duration::from_secs(8));
    caller
}

/// Sends `frames` 20 ms frames of the caller's tone, paced in real time;
/// send errors (a server that is gone) are ignored.
fn speak(caller: &Caller, frames: usize) {
    let target = caller.server_rtp.expect("hotline's RTP address");
    let start = Instant::now();
    for (n, frame) in tone_pcmu(CALLER_HZ, frames).iter().enumerate() {
        let mut p = vec![0x80, if n == 0 { 0x80 } else { 0 }];
        p.extend_from_slice(&(2000 + n as u16).to_be_bytes());
        p.extend_from_slice(&(n as u32 * 160).to_be_bytes());
        p.extend_from_slice(&0x0ca1_1e40u32.to_be_bytes());
        p.extend_from_slice(frame);
        let _ = caller.rtp.send_to(&p, target);
        let next = start + Duration::from_millis(20 * (n as u64 + 1));
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}

/// The value of a string or number field in an event's JSON line.
fn field(line: &str, name: &str) -> serde_json::Value {
    let json = &line[line.find('{').unwrap_or(0)..];
    let v: serde_json::Value =
        serde_json::from_str(json).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    v[name].clone()
}

/// A parsed WAV file: channels, data size in the header, samples present.
struct Wav {
    channels: u16,
    riff_size: u32,
    data_size: u32,
    file_len: usize,
    samples: Vec<i16>,
}

fn read_wav(path: &Path) -> Wav {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        bytes.len() >= 44,
        "{} is {} bytes",
        path.display(),
        bytes.len()
    );
    assert_eq!(&bytes[0..4], b"RIFF");
    assert_eq!(&bytes[8..16], b"WAVEfmt ");
    assert_eq!(&bytes[36..40], b"data");
    let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
    let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap());
    assert_eq!(u16_at(20), 1, "PCM");
    assert_eq!(u32_at(24), 8000, "8 kHz");
    assert_eq!(u16_at(34), 16, "16-bit");
    Wav {
        channels: u16_at(22),
        riff_size: u32_at(4),
        data_size: u32_at(40),
        file_len: bytes.len(),
        samples: bytes[44..]
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect(),
    }
}

impl Wav {
    fn channel(&self, c: usize) -> Vec<f64> {
        self.samples
            .chunks_exact(usize::from(self.channels))
            .map(|f| f64::from(f[c]))
            .collect()
    }

    fn duration_ms(&self) -> u64 {
        (self.samples.len() / usize::from(self.channels)) as u64 / 8
    }
}

/// Goertzel: the power of `hz` in `x` (8 kHz).
fn power(x: &[f64], hz: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * hz / 8000.0;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &v in x {
        let s = v + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    s1 * s1 + s2 * s2 - coeff * s1 * s2
}

/// Asserts `x` carries `hz` and not `other`, clearly.
fn assert_tone(what: &str, x: &[f64], hz: f64, other: f64) {
    let (p, q) = (power(x, hz), power(x, other));
    assert!(
        p > 100.0 * q.max(1.0),
        "{what}: power at {hz} Hz {p:.3e}, at {other} Hz {q:.3e} ({} samples)",
        x.len()
    );
}

/// The call records as JSON rows (`hotline cdr export --format json`).
fn cdr_rows(db: &Path) -> Vec<serde_json::Value> {
    let out = run_hotline(&[
        "cdr",
        "export",
        "--db",
        db.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Waits for the call record of the call with a recording.
fn recorded_row(db: &Path) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        if db.exists()
            && let Some(row) = cdr_rows(db).into_iter().find(|r| !r["recording"].is_null())
        {
            return row;
        }
        assert!(Instant::now() < deadline, "no call record with a recording");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn verify(db: &Path) -> std::process::Output {
    run_hotline(&["recordings", "verify", "--db", db.to_str().unwrap()])
}

/// Makes one recorded call: the caller speaks `seconds` of its tone while
/// the agent plays its own, then hangs up. Returns the
/// `recording_finished` event.
fn recorded_call(server: &Server, seconds: usize) -> String {
    let agent_port = free_port();
    register_agent(server, "1001", agent_port);
    std::thread::scope(|s| {
        let agent = s.spawn(|| tone_agent(server, agent_port, seconds + 2, "15s").run(server));
        let mut caller = call_until_bridged(server);
        speak(&caller, seconds * 50);
        caller.bye();
        agent.join().unwrap().assert_ok(server);
    });
    server.wait_event(&["\"type\":\"recording_finished\""], Duration::from_secs(5))
}

#[test]
fn a_bridged_call_is_recorded_caller_left_agent_right_with_its_checksum_on_the_record() {
    let server = Server::start(recording_config(
        "[recording]\nflush_interval = \"500ms\"\n",
    ));
    let finished = recorded_call(&server, 3);
    let started = server.wait_event(&["\"type\":\"recording_started\""], Duration::from_secs(1));
    let path = PathBuf::from(field(&finished, "path").as_str().unwrap());
    assert_eq!(field(&started, "path"), field(&finished, "path"));
    let dir = server.dir.path().join("recordings");
    assert!(
        path.starts_with(&dir) && path.extension().is_some_and(|e| e == "wav"),
        "{}",
        path.display()
    );
    let day = path
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        day.len() == 10 && day.as_bytes()[4] == b'-' && day.as_bytes()[7] == b'-',
        "a YYYY-MM-DD directory: {day}"
    );

    // A well-formed stereo file: caller left, agent right.
    let wav = read_wav(&path);
    assert_eq!(wav.channels, 2);
    assert_eq!(wav.data_size as usize, wav.file_len - 44);
    assert_eq!(wav.riff_size as usize, wav.file_len - 8);
    let (left, right) = (wav.channel(0), wav.channel(1));
    let both = 4000..20_000; // 0.5 s to 2.5 s: both parties talk
    assert_tone("left (caller)", &left[both.clone()], CALLER_HZ, AGENT_HZ);
    assert_tone("right (agent)", &right[both], AGENT_HZ, CALLER_HZ);

    // The record holds the file, its checksum, its length.
    let bytes = std::fs::read(&path).unwrap();
    let sha = sha256_hex(&bytes);
    assert_eq!(field(&finished, "sha256"), sha.as_str());
    assert_eq!(field(&finished, "bytes"), bytes.len() as u64);
    let db = server.dir.path().join("hotline.db");
    let row = recorded_row(&db);
    assert_eq!(row["recording"], path.display().to_string());
    assert_eq!(row["recording_sha256"], sha.as_str());
    assert_eq!(row["hold_periods"], "");
    let duration = row["recording_ms"].as_i64().unwrap();
    assert_eq!(duration as u64, wav.duration_ms());
    let talk = row["talk_ms"].as_i64().unwrap();
    eprintln!("recorded {duration} ms of a call that talked {talk} ms");
    assert!(
        (duration - talk).abs() < 400 && duration > 2_800,
        "recorded {duration} ms, talked {talk} ms"
    );
    assert!(row["recording_started_at"].is_string(), "{row}");

    // verify: all good, then one flipped byte, then a missing file.
    let out = verify(&db);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 recording(s) verified"), "{stdout}");
    let mut changed = bytes.clone();
    changed[10_000] ^= 0x01;
    std::fs::write(&path, &changed).unwrap();
    let out = verify(&db);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success(), "a changed file passed: {stdout}");
    assert!(
        stdout.contains("MODIFIED") && stdout.contains(&path.display().to_string()),
        "{stdout}"
    );
    std::fs::remove_file(&path).unwrap();
    let out = verify(&db);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success(), "a missing file passed: {stdout}");
    assert!(
        stdout.contains("MISSING") && stdout.contains(&path.display().to_string()),
        "{stdout}"
    );
}

#[test]
fn after_kill_9_the_file_is_well_formed_and_holds_the_audio_up_to_a_flush_before() {
    let server = Server::start(recording_config(""));
    let agent_port = free_port();
    register_agent(&server, "1001", agent_port);
    let agent = tone_agent(&server, agent_port, 8, "4s");
    let (wav_path, bridged_for) = std::thread::scope(|s| {
        let agent = s.spawn(|| agent.run(&server));
        let caller = call_until_bridged(&server);
        let bridged = Instant::now();
        let started =
            server.wait_event(&["\"type\":\"recording_started\""], Duration::from_secs(2));
        let path = PathBuf::from(field(&started, "path").as_str().unwrap());
        s.spawn(move || speak(&caller, 250));
        std::thread::sleep(Duration::from_millis(3_000));
        let st = std::process::Command::new("kill")
            .args(["-KILL", &server.pid.to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        let bridged_for = bridged.elapsed();
        // The agent's phone gives up waiting for a BYE: not the point.
        let _ = agent.join();
        (path, bridged_for)
    });
    let wav = read_wav(&wav_path);
    let present = (wav.file_len - 44) as u64;
    let one_flush = 8000 * 2 * 2;
    assert!(
        u64::from(wav.data_size) <= present && present - u64::from(wav.data_size) <= one_flush,
        "header says {} data bytes, {present} present",
        wav.data_size
    );
    assert_eq!(wav.riff_size, wav.data_size + 36);
    // The test sees the bridge a little after it happened.
    let recorded_ms = u64::from(wav.data_size) / 32;
    eprintln!(
        "kill -9 after {} ms bridged: {recorded_ms} ms in the header, {present} data bytes on disk",
        bridged_for.as_millis()
    );
    let lost = (bridged_for.as_millis() as u64).saturating_sub(recorded_ms);
    assert!(
        lost <= 1_300 && recorded_ms <= bridged_for.as_millis() as u64 + 500,
        "{} ms recorded of {} ms bridged",
        wav.data_size / 32,
        bridged_for.as_millis()
    );
    let left = wav.channel(0);
    let frames = (wav.data_size / 4) as usize;
    assert!(frames > 8000, "more than a second of audio");
    assert_tone(
        "left (caller)",
        &left[frames - 8000..frames],
        CALLER_HZ,
        AGENT_HZ,
    );
}

/// One HTTP request; the raw body bytes.
fn http_bytes(port: u16, method: &str, path: &str, token: Option<&str>) -> (u16, String, Vec<u8>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut body = response[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, head, body)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..line_end]).unwrap().trim(), 16)
                .unwrap();
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[test]
fn the_api_lists_and_streams_recordings_to_whom_it_may_and_deletes_nothing() {
    let server = Server::start(api_config());
    let port = server.http_port.unwrap();
    let finished = recorded_call(&server, 1);
    let call_id = field(&finished, "call_id").as_str().unwrap().to_string();
    let path = PathBuf::from(field(&finished, "path").as_str().unwrap());
    let file = std::fs::read(&path).unwrap();
    let list = |token: &str, query: &str| -> Vec<serde_json::Value> {
        let (status, body) = http_request(
            port,
            "GET",
            &format!("/api/v1/recordings{query}"),
            Some(token),
            None,
        );
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Vec<serde_json::Value>>(&body).unwrap()
    };
    // The record reaches the database within a batch interval.
    let deadline = Instant::now() + Duration::from_secs(6);
    while list(ADMIN, "").is_empty() {
        assert!(Instant::now() < deadline, "the recording never appeared");
        std::thread::sleep(Duration::from_millis(200));
    }
    let all = list(ADMIN, "");
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["call_id"], call_id.as_str());
    assert_eq!(all[0]["queue"], "support");
    assert_eq!(all[0]["agent"], "1001");
    assert_eq!(all[0]["sha256"], sha256_hex(&file).as_str());
    assert!(all[0]["duration_ms"].as_i64().unwrap() > 500);
    assert!(all[0]["started"].as_str().unwrap().ends_with('Z'));

    assert_eq!(list(AGENT_1001, "").len(), 1, "an agent sees its own calls");
    assert!(list(AGENT_1002, "").is_empty(), "and nobody else's");
    assert_eq!(list(SUPPORT_SUPERVISOR, "").len(), 1);
    assert!(list(SALES_SUPERVISOR, "").is_empty());
    assert!(list(ADMIN, "?queue=sales").is_empty());
    assert_eq!(list(ADMIN, "?queue=support&agent=1001").len(), 1);
    assert!(list(ADMIN, "?agent=1002").is_empty());
    assert!(list(ADMIN, "?since=2999-01-01").is_empty());
    assert_eq!(list(ADMIN, "?until=2999-01-01").len(), 1);
    let (status, _) = http_request(
        port,
        "GET",
        "/api/v1/recordings?since=soon",
        Some(ADMIN),
        None,
    );
    assert_eq!(status, 422);

    let one = format!("/api/v1/recordings/{call_id}");
    for token in [ADMIN, AGENT_1001, SUPPORT_SUPERVISOR] {
        let (status, head, body) = http_bytes(port, "GET", &one, Some(token));
        assert_eq!(status, 200, "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: audio/wav"),
            "{head}"
        );
        assert_eq!(
            sha256_hex(&body),
            sha256_hex(&file),
            "the whole file, unchanged"
        );
    }
    for token in [AGENT_1002, SALES_SUPERVISOR] {
        let (status, head, _) = http_bytes(port, "GET", &one, Some(token));
        assert_eq!(status, 403, "{head}");
    }
    let (status, _, _) = http_bytes(port, "GET", &one, None);
    assert_eq!(status, 401);
    let (status, _, _) = http_bytes(port, "GET", "/api/v1/recordings/no-such-call", Some(ADMIN));
    assert_eq!(status, 404);

    // No delete, for anyone.
    let (status, head, _) = http_bytes(port, "DELETE", &one, Some(ADMIN));
    assert_eq!(status, 405, "{head}");
    let (status, _, _) = http_bytes(port, "DELETE", "/api/v1/recordings", Some(ADMIN));
    assert_eq!(status, 405);
    assert_eq!(std::fs::read(&path).unwrap(), file, "the file is untouched");
    let (status, openapi) = http_request(port, "GET", "/api/v1/openapi.json", Some(ADMIN), None);
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_str(&openapi).unwrap();
    let item = &doc["paths"]["/api/v1/recordings/{call_id}"];
    assert!(
        item["get"].is_object() && item["delete"].is_null(),
        "{item}"
    );
}

#[test]
fn a_recording_that_cannot_be_written_raises_the_alarm_and_the_call_goes_on() {
    // The recordings' directory would lie under a regular file: every
    // write fails, as on a full or read-only disk.
    let server =
        Server::start(recording_config("[recording]\ndir = \"blocked/recordings\"\n").http(true));
    std::fs::write(server.dir.path().join("blocked"), b"not a directory").unwrap();
    let agent_port = free_port();
    register_agent(&server, "1001", agent_port);
    std::thread::scope(|s| {
        let agent = s.spawn(|| tone_agent(&server, agent_port, 3, "15s").run(&server));
        let mut caller = call_until_bridged(&server);
        let failed = server.wait_event(&["\"type\":\"recording_failed\""], Duration::from_secs(3));
        assert!(
            field(&failed, "error")
                .as_str()
                .is_some_and(|e| !e.is_empty()),
            "{failed}"
        );
        // The call is unharmed: audio still reaches the agent and back.
        speak(&caller, 50);
        caller.bye();
        agent.join().unwrap().assert_ok(&server);
    });
    let released = server.wait_event(
        &["\"type\":\"call_released\"", "\"released_by\":\"caller\""],
        Duration::from_secs(3),
    );
    assert!(
        field(&released, "talk_ms").as_u64().unwrap() >= 900,
        "{released}"
    );
    assert!(
        server
            .events(&["\"type\":\"recording_finished\""])
            .is_empty()
    );
    let page = http_get(server.http_port.unwrap(), "/metrics");
    assert!(
        page.lines()
            .any(|l| l == "hotline_recording_failures_total 1"),
        "{page}"
    );
    let db = server.dir.path().join("hotline.db");
    let row = recorded_row(&db);
    assert!(row["recording_sha256"].is_null(), "{row}");
    assert_eq!(row["disposition"], "answered");
}
