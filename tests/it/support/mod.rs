//! Test harness for hotline's integration tests.
//!
//! * [`free_port`] picks a port number free for both UDP and TCP on loopback.
//! * [`TestConfig`] writes a hotline TOML file with test defaults and knobs.
//! * [`Server`] starts `hotline serve` on free ports, waits until the SIP TCP
//!   port accepts connections, captures its output into a log file, and stops
//!   it (SIGTERM, then SIGKILL, by PID) when dropped. On a panic the server log
//!   is printed.
//! * [`Server::sipp`] runs a SIPp scenario from `tests/sipp/` against the
//!   server with hard time limits and returns its exit status and logs.
//! * [`SipMsg`], [`UdpClient`], [`TcpClient`] and [`digest_response`] are for
//!   the tests that SIPp cannot express (raw bytes, SHA-256 digest).
//!
//! `HOTLINE_TEST_BIN` may name another server binary (e.g. a release build);
//! by default the binary built by cargo for this test run is used.

pub mod acd;
pub mod audio;
pub mod caller;
pub mod catalogue;
pub mod pcap;
pub mod watchdog;
pub use acd::*;
pub use audio::*;
pub use caller::{Caller, sdp_offer};
pub use catalogue::*;

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a server gets to start accepting on its SIP TCP port.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Hard limit on one SIPp run (SIPp's own `-timeout` is 20 s).
pub const SIPP_HARD_TIMEOUT: Duration = Duration::from_secs(45);

// ---------------------------------------------------------------------------
// Ports

fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static USED: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    USED.get_or_init(|| Mutex::new(HashSet::new()))
}

/// The next block of 400 RTP ports in 10000-19999 for a server of this
/// process (25 blocks, then again from the first).
fn rtp_port_block() -> (u16, u16) {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let block = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 25;
    let min = 10000 + block * 400;
    (min, min + 399)
}

/// A port number that is free on 127.0.0.1 for both UDP and TCP at the time
/// of the call, and never handed out before by this process.
pub fn free_port() -> u16 {
    free_port_on("127.0.0.1")
}

/// A port for SIPp's `-mp`: SIPp binds audio RTP/RTCP on it and +1 and video
/// on +2 and +3, so all four must be free on 127.0.0.1 (UDP) and are kept
/// from being handed out again.
pub fn free_media_port() -> u16 {
    for _ in 0..200 {
        let base = free_port();
        let all_free = (1..4).all(|i| {
            base.checked_add(i)
                .is_some_and(|p| UdpSocket::bind(("127.0.0.1", p)).is_ok())
        });
        let mut used = handed_out().lock().unwrap();
        if all_free && (1..4).all(|i| !used.contains(&(base + i))) {
            for i in 1..4 {
                used.insert(base + i);
            }
            return base;
        }
    }
    panic!("no four consecutive free UDP ports on 127.0.0.1 after 200 attempts");
}

/// Like [`free_port`], for another loopback address (e.g. "127.0.0.2").
pub fn free_port_on(ip: &str) -> u16 {
    let ip: IpAddr = ip.parse().expect("an IP address");
    for _ in 0..200 {
        let Ok(udp) = UdpSocket::bind((ip, 0)) else {
            continue;
        };
        let port = udp.local_addr().unwrap().port();
        let Ok(tcp) = TcpListener::bind((ip, port)) else {
            continue;
        };
        let mut used = handed_out().lock().unwrap();
        if used.insert(port) {
            drop((udp, tcp));
            return port;
        }
    }
    panic!("no free UDP+TCP port on {ip} after 200 attempts");
}

// ---------------------------------------------------------------------------
// Configuration

#[derive(Clone, Debug)]
pub struct Trunk {
    pub name: String,
    pub sources: Vec<String>,
    pub username: String,
    pub password: String,
    pub numbers: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct Number {
    pub number: String,
    pub ivr: Option<String>,
    pub queue: Option<String>,
    pub greeting: Option<String>,
    pub answer_after: Option<String>,
}

/// A hotline configuration for a test. Defaults: UDP and TCP on one free
/// port, HTTP disabled, algorithms ["MD5"] (SIPp 3.6 answers MD5 digest only),
/// registrar and auth limits as in the default file, trunk `local` =
/// 127.0.0.0/8, numbers 400 (IVR) and 401 (queue), agents 1001..1004 with
/// passwords demo1001..demo1004.
#[derive(Clone, Debug)]
pub struct TestConfig {
    pub udp: bool,
    pub tcp: bool,
    pub realm: String,
    pub min_expires: String,
    pub max_expires: String,
    pub default_expires: String,
    pub max_contacts: u32,
    pub algorithms: Vec<String>,
    pub nonce_ttl: String,
    pub max_failures: u32,
    pub failure_window: String,
    pub ban_time: String,
    pub http: bool,
    pub log_level: String,
    pub trunks: Vec<Trunk>,
    pub numbers: Vec<Number>,
    pub agents: Vec<(String, String)>,
    /// Queues served by agents, by agent id (none unless set).
    pub agent_queues: Vec<(String, Vec<String>)>,
    /// Appended verbatim to the generated file.
    pub extra: String,
    /// Lines of the `[media]` section (e.g. "rtp_timeout = \"3s\"").
    pub media: String,
    /// Lines of the `[sip]` section (e.g. "min_se = \"2s\"").
    pub sip: String,
}

impl Default for TestConfig {
    fn default() -> Self {
        Self {
            udp: true,
            tcp: true,
            realm: "hotline".into(),
            min_expires: "60s".into(),
            max_expires: "1h".into(),
            default_expires: "1h".into(),
            max_contacts: 5,
            algorithms: vec!["MD5".into()],
            nonce_ttl: "5m".into(),
            max_failures: 5,
            failure_window: "1m".into(),
            ban_time: "5m".into(),
            http: false,
            log_level: "debug".into(),
            trunks: vec![Trunk {
                name: "local".into(),
                sources: vec!["127.0.0.0/8".into()],
                username: String::new(),
                password: String::new(),
                numbers: vec![],
            }],
            numbers: vec![
                Number {
                    number: "400".into(),
                    ivr: Some("main".into()),
                    queue: None,
                    greeting: None,
                    answer_after: None,
                },
                Number {
                    number: "401".into(),
                    ivr: None,
                    queue: Some("support".into()),
                    greeting: Some("greeting".into()),
                    answer_after: None,
                },
            ],
            agents: (1001..=1004)
                .map(|i| (i.to_string(), format!("demo{i}")))
                .collect(),
            agent_queues: Vec::new(),
            extra: String::new(),
            media: String::new(),
            sip: String::new(),
        }
    }
}

fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn toml_list(items: &[String]) -> String {
    let parts: Vec<String> = items.iter().map(|s| toml_str(s)).collect();
    format!("[{}]", parts.join(", "))
}

impl TestConfig {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn algorithms(mut self, algs: &[&str]) -> Self {
        self.algorithms = algs.iter().map(|s| s.to_string()).collect();
        self
    }
    pub fn min_expires(mut self, d: &str) -> Self {
        self.min_expires = d.into();
        self
    }
    pub fn max_expires(mut self, d: &str) -> Self {
        self.max_expires = d.into();
        self
    }
    pub fn default_expires(mut self, d: &str) -> Self {
        self.default_expires = d.into();
        self
    }
    pub fn nonce_ttl(mut self, d: &str) -> Self {
        self.nonce_ttl = d.into();
        self
    }
    pub fn max_failures(mut self, n: u32) -> Self {
        self.max_failures = n;
        self
    }
    pub fn ban_time(mut self, d: &str) -> Self {
        self.ban_time = d.into();
        self
    }
    pub fn http(mut self, on: bool) -> Self {
        self.http = on;
        self
    }
    pub fn log_level(mut self, level: &str) -> Self {
        self.log_level = level.into();
        self
    }
    /// Removes every trunk.
    pub fn no_trunks(mut self) -> Self {
        self.trunks.clear();
        self
    }
    /// Adds (or replaces) a trunk.
    pub fn trunk(
        mut self,
        name: &str,
        sources: &[&str],
        credentials: Option<(&str, &str)>,
        numbers: &[&str],
    ) -> Self {
        self.trunks.retain(|t| t.name != name);
        let (username, password) = credentials.unwrap_or(("", ""));
        self.trunks.push(Trunk {
            name: name.into(),
            sources: sources.iter().map(|s| s.to_string()).collect(),
            username: username.into(),
            password: password.into(),
            numbers: numbers.iter().map(|s| s.to_string()).collect(),
        });
        self
    }
    /// Sets `answer_after` of a configured number.
    pub fn answer_after(mut self, number: &str, d: &str) -> Self {
        let n = self
            .numbers
            .iter_mut()
            .find(|n| n.number == number)
            .expect("answer_after on a configured number");
        n.answer_after = Some(d.into());
        self
    }
    /// The queues `agent` serves.
    pub fn agent_queues(mut self, agent: &str, queues: &[&str]) -> Self {
        self.agent_queues.retain(|(a, _)| a != agent);
        self.agent_queues.push((
            agent.to_string(),
            queues.iter().map(|q| q.to_string()).collect(),
        ));
        self
    }
    pub fn extra(mut self, toml: &str) -> Self {
        self.extra.push_str(toml);
        self.extra.push('\n');
        self
    }

    /// The TOML text for SIP on `sip_port` and HTTP on `http_port`.
    /// Adds `lines` to the `[sip]` section.
    pub fn sip(mut self, lines: &str) -> Self {
        self.sip.push_str(lines);
        self.sip.push('\n');
        self
    }

    /// Adds `lines` to the `[media]` section.
    pub fn media(mut self, lines: &str) -> Self {
        self.media.push_str(lines);
        self.media.push('\n');
        self
    }

    pub fn render(&self, sip_port: u16, http_port: Option<u16>) -> String {
        let mut s = String::new();
        let addr = |on: bool| {
            if on {
                toml_str(&format!("127.0.0.1:{sip_port}"))
            } else {
                "\"\"".to_string()
            }
        };
        writeln!(s, "# written by the test harness").unwrap();
        writeln!(s, "[sip]").unwrap();
        writeln!(s, "udp = {}", addr(self.udp)).unwrap();
        writeln!(s, "tcp = {}", addr(self.tcp)).unwrap();
        writeln!(s, "realm = {}", toml_str(&self.realm)).unwrap();
        writeln!(s, "shutdown_grace = \"1s\"").unwrap();
        writeln!(s, "{}", self.sip).unwrap();
        writeln!(s, "[registrar]").unwrap();
        writeln!(s, "min_expires = {}", toml_str(&self.min_expires)).unwrap();
        writeln!(s, "max_expires = {}", toml_str(&self.max_expires)).unwrap();
        writeln!(s, "default_expires = {}", toml_str(&self.default_expires)).unwrap();
        writeln!(s, "max_contacts = {}\n", self.max_contacts).unwrap();
        writeln!(s, "[auth]").unwrap();
        writeln!(s, "algorithms = {}", toml_list(&self.algorithms)).unwrap();
        writeln!(s, "nonce_ttl = {}", toml_str(&self.nonce_ttl)).unwrap();
        writeln!(s, "max_failures = {}", self.max_failures).unwrap();
        writeln!(s, "failure_window = {}", toml_str(&self.failure_window)).unwrap();
        writeln!(s, "ban_time = {}\n", toml_str(&self.ban_time)).unwrap();
        writeln!(s, "[http]").unwrap();
        match (self.http, http_port) {
            (true, Some(p)) => writeln!(s, "listen = \"127.0.0.1:{p}\"\n").unwrap(),
            _ => writeln!(s, "listen = \"\"\n").unwrap(),
        }
        writeln!(s, "[log]").unwrap();
        writeln!(s, "level = {}\n", toml_str(&self.log_level)).unwrap();
        for t in &self.trunks {
            writeln!(s, "[trunks.{}]", toml_str(&t.name)).unwrap();
            writeln!(s, "sources = {}", toml_list(&t.sources)).unwrap();
            if !t.username.is_empty() {
                writeln!(s, "username = {}", toml_str(&t.username)).unwrap();
                writeln!(s, "password = {}", toml_str(&t.password)).unwrap();
            }
            if !t.numbers.is_empty() {
                writeln!(s, "numbers = {}", toml_list(&t.numbers)).unwrap();
            }
            s.push('\n');
        }
        for n in &self.numbers {
            writeln!(s, "[numbers.{}]", toml_str(&n.number)).unwrap();
            if let Some(v) = &n.ivr {
                writeln!(s, "ivr = {}", toml_str(v)).unwrap();
            }
            if let Some(v) = &n.queue {
                writeln!(s, "queue = {}", toml_str(v)).unwrap();
            }
            if let Some(v) = &n.greeting {
                writeln!(s, "greeting = {}", toml_str(v)).unwrap();
            }
            if let Some(v) = &n.answer_after {
                writeln!(s, "answer_after = {}", toml_str(v)).unwrap();
            }
            s.push('\n');
        }
        for (id, password) in &self.agents {
            writeln!(s, "[agents.{}]", toml_str(id)).unwrap();
            writeln!(s, "password = {}", toml_str(password)).unwrap();
            if let Some((_, queues)) = self.agent_queues.iter().find(|(a, _)| a == id) {
                writeln!(s, "queues = {}", toml_list(queues)).unwrap();
            }
            s.push('\n');
        }
        writeln!(s, "[media]").unwrap();
        // Each server of this process takes RTP ports of its own: a party of
        // one test still sending to a port its server released must not be
        // latched by another test's server that took the port next.
        if !self.extra.contains("rtp_port_min") && !self.media.contains("rtp_port_min") {
            let (min, max) = rtp_port_block();
            writeln!(s, "rtp_port_min = {min}\nrtp_port_max = {max}").unwrap();
        }
        s.push_str(&self.media);
        let prompts = Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts");
        writeln!(
            s,
            "prompts = {}\n",
            toml_str(&prompts.display().to_string())
        )
        .unwrap();
        if !self.extra.contains("[queues.") {
            s.push_str("[queues.support]\n\n[queues.sales]\n\n");
        }
        // A number's IVR flow that the test does not define itself sends the
        // caller straight to a queue.
        let mut flows: Vec<&String> = self.numbers.iter().filter_map(|n| n.ivr.as_ref()).collect();
        flows.dedup();
        for flow in flows {
            if !self.extra.contains(&format!("[ivr.{flow}]")) {
                writeln!(
                    s,
                    "[ivr.{flow}]\nstart = \"queue\"\n[ivr.{flow}.nodes.queue]\ntype = \"queue\"\nqueue = \"support\"\n"
                )
                .unwrap();
            }
        }
        let http = http_port.map(|p| p.to_string()).unwrap_or_default();
        s.push_str(&self.extra.replace("{http_port}", &http));
        s
    }
}

// ---------------------------------------------------------------------------
// The server process

/// The hotline binary under test.
pub fn hotline_bin() -> PathBuf {
    match std::env::var_os("HOTLINE_TEST_BIN") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_BIN_EXE_hotline")),
    }
}

/// A `Command` for the hotline binary with no HOTLINE__* overrides inherited
/// from the environment of the test run.
pub fn hotline_command() -> Command {
    let mut cmd = Command::new(hotline_bin());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("HOTLINE__") {
            cmd.env_remove(k);
        }
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// Raises its flag when dropped, also when a panic unwinds past it: a
/// helper thread told to stop by the flag is let go before a scope waits
/// for it, whichever way the test ends.
pub struct RaiseOnDrop<'a>(pub &'a std::sync::atomic::AtomicBool);

impl Drop for RaiseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }
}

/// Runs the hotline binary with `args` to completion (bounded to 30 s).
pub fn run_hotline(args: &[&str]) -> Output {
    let mut cmd = hotline_command();
    cmd.args(args);
    output_within(&mut cmd, Duration::from_secs(30))
}

/// Runs `cmd` to completion with its output captured, like
/// [`Command::output`], but killed (by PID) after `limit`: a tool that hangs
/// fails its test instead of stalling the suite.
pub fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let what = format!("{:?}", cmd.get_program());
    let _watch = watchdog::watch(&what);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    wait_output(child, limit, &what)
}

/// Reads `pipe` to its end on a thread of its own; the receiver gets the bytes.
fn drain(mut pipe: impl Read + Send + 'static) -> std::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = pipe.read_to_end(&mut v);
        let _ = tx.send(v);
    });
    rx
}

/// Waits for a child with piped stdout/stderr, killing it (by PID) after
/// `limit`. Output still held open by a process the child left behind is
/// waited for 5 s more, then given up.
fn wait_output(mut child: Child, limit: Duration, what: &str) -> Output {
    let out = drain(child.stdout.take().unwrap());
    let err = drain(child.stderr.take().unwrap());
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let st = child.wait().unwrap();
            eprintln!("{what} (pid {}) killed after {limit:?}", child.id());
            break st;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let rest = Instant::now() + Duration::from_secs(5);
    let collect = |rx: std::sync::mpsc::Receiver<Vec<u8>>| {
        rx.recv_timeout(rest.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| {
                eprintln!("{what}: its output was still held open by another process");
                Vec::new()
            })
    };
    Output {
        status,
        stdout: collect(out),
        stderr: collect(err),
    }
}

/// Sends SIGTERM to `pid` with the `kill` command.
pub fn sigterm(pid: u32) {
    let st = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(st.success(), "kill -TERM {pid} failed: {st}");
}

/// Whether `text` holds `part`. A part that ends in a digit (`"count":1`)
/// must not go on with another digit in the text (`"count":12`), so a number
/// matches only itself.
pub fn holds(text: &str, part: &str) -> bool {
    if !part.ends_with(|c: char| c.is_ascii_digit()) {
        return text.contains(part);
    }
    text.match_indices(part)
        .any(|(at, _)| !text[at + part.len()..].starts_with(|c: char| c.is_ascii_digit()))
}

/// Whether `text` has `line` as one of its lines, whole (a metrics sample
/// `name{labels} 1` is not `name{labels} 12`).
pub fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l.trim_end() == line)
}

/// Whether a server log line is an event holding every one of `parts`.
fn is_event_with(line: &str, parts: &[&str]) -> bool {
    line.contains("hotline::events") && parts.iter().all(|p| holds(line, p))
}

/// The JSON object of an event's log line (or of a WebSocket message).
pub fn event_json(line: &str) -> serde_json::Value {
    let json = &line[line.find('{').unwrap_or(0)..];
    serde_json::from_str(json.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

/// The number in field `name` of an event's log line.
pub fn event_number(line: &str, name: &str) -> u64 {
    event_json(line)[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no number `{name}` in {line}"))
}

/// A running `hotline serve`, stopped when dropped.
pub struct Server {
    child: Option<Child>,
    pub pid: u32,
    pub dir: tempfile::TempDir,
    pub sip_port: u16,
    pub http_port: Option<u16>,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    exit: Option<ExitStatus>,
    sipp_runs: Mutex<u32>,
    _watch: watchdog::Watch,
}

impl Server {
    /// Starts a server with `config` on free ports; panics (printing the
    /// server's output) if it does not become ready within 10 s. A start that
    /// fails because a port was taken meanwhile is retried on new ports.
    pub fn start(config: TestConfig) -> Server {
        let mut last_log = String::new();
        for _attempt in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("hotline-test-")
                .tempdir()
                .expect("tempdir");
            let sip_port = free_port();
            let http_port = if config.http { Some(free_port()) } else { None };
            let config_path = dir.path().join("hotline.toml");
            fs::write(&config_path, config.render(sip_port, http_port)).unwrap();
            let log_path = dir.path().join("server.log");
            let log = File::create(&log_path).unwrap();
            let child = hotline_command()
                .arg("serve")
                .arg("--config")
                .arg(&config_path)
                .current_dir(dir.path())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", hotline_bin().display()));
            let pid = child.id();
            let mut server = Server {
                child: Some(child),
                pid,
                dir,
                sip_port,
                http_port,
                config_path,
                log_path,
                exit: None,
                sipp_runs: Mutex::new(0),
                _watch: watchdog::watch("its server"),
            };
            match server.wait_ready() {
                Ok(()) => return server,
                Err(exited) => {
                    last_log = server.log();
                    let in_use = last_log.to_lowercase().contains("in use");
                    if !(exited && in_use) {
                        panic!(
                            "hotline did not become ready on 127.0.0.1:{sip_port} (tcp) within {READY_TIMEOUT:?}\n\
                             --- config ---\n{}\n--- server log ---\n{last_log}",
                            fs::read_to_string(&server.config_path).unwrap_or_default()
                        );
                    }
                    // port taken meanwhile: drop this one and retry
                }
            }
        }
        panic!("hotline failed to start 3 times (ports in use?)\n{last_log}");
    }

    /// Ok when the SIP TCP port and, when configured, the HTTP port accept
    /// a connection (hotline opens HTTP after SIP) and the server has logged
    /// that it is ready; Err(true) if the process exited, Err(false) on
    /// time-out.
    fn wait_ready(&mut self) -> Result<(), bool> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut addrs = vec![self.sip_addr()];
        addrs.extend(
            self.http_port
                .map(|p| SocketAddr::from(([127, 0, 0, 1], p))),
        );
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.exit = Some(st);
                return Err(true);
            }
            if addrs
                .iter()
                .all(|a| TcpStream::connect_timeout(a, Duration::from_millis(200)).is_ok())
                // Another process may listen on a port picked for this one
                // (taken between picking and binding): only the server's
                // own word says it is up.
                && self.log().contains("hotline ready")
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(false);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The first and last port of the server's RTP range, as its config
    /// file says.
    pub fn rtp_range(&self) -> (u16, u16) {
        let text = fs::read_to_string(&self.config_path).unwrap();
        let value = |key: &str| -> u16 {
            text.lines()
                .find_map(|l| l.trim().strip_prefix(key)?.trim().strip_prefix('='))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("{key} in the server's config"))
        };
        (value("rtp_port_min"), value("rtp_port_max"))
    }

    pub fn sip_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.sip_port))
    }

    /// "127.0.0.1:PORT"
    pub fn sip_target(&self) -> String {
        format!("127.0.0.1:{}", self.sip_port)
    }

    /// Everything the server printed so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.log_path).unwrap_or_default()).into_owned()
    }

    /// Waits up to 3 s for an event (logged as JSON at debug level under
    /// `hotline::events`) whose line holds every one of `parts`.
    pub fn assert_event(&self, parts: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let log = self.log();
            if log.lines().any(|l| is_event_with(l, parts)) {
                return;
            }
            if Instant::now() > deadline {
                panic!("no event with {parts:?} in the server log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits up to `limit` for an event line holding every one of `parts`.
    pub fn wait_event(&self, parts: &[&str], limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let log = self.log();
            if let Some(line) = log.lines().find(|l| is_event_with(l, parts)) {
                return line.to_string();
            }
            if Instant::now() > deadline {
                panic!("no event with {parts:?} within {limit:?} in the server log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits up to `limit` until `count` event lines hold every one of
    /// `parts`; returns them.
    pub fn wait_events(&self, parts: &[&str], count: usize, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        loop {
            let found = self.events(parts);
            if found.len() >= count {
                return found;
            }
            if Instant::now() > deadline {
                panic!(
                    "{} of {count} events with {parts:?} within {limit:?} in the server log:\n{}",
                    found.len(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The event lines holding every one of `parts`, so far.
    pub fn events(&self, parts: &[&str]) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| is_event_with(l, parts))
            .map(str::to_string)
            .collect()
    }

    /// Is the process still running?
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => match c.try_wait().unwrap() {
                Some(st) => {
                    self.exit = Some(st);
                    false
                }
                None => true,
            },
            None => false,
        }
    }

    pub fn sigterm(&self) {
        sigterm(self.pid);
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if !self.is_running() {
                return self.exit;
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Panics with the server log if the server is no longer running.
    pub fn assert_alive(&mut self) {
        if !self.is_running() {
            panic!(
                "hotline exited unexpectedly ({:?})\n--- server log ---\n{}",
                self.exit,
                self.log()
            );
        }
    }

    /// Runs a SIPp scenario (`tests/sipp/<scenario>.xml`) against this server.
    /// See [`Sipp`] for the options; `args` are extra SIPp arguments.
    pub fn sipp(&self, scenario: &str, args: &[&str]) -> SippRun {
        Sipp::new(scenario).args(args).run(self)
    }

    /// Runs a scenario and panics with every log if SIPp did not exit 0.
    pub fn sipp_ok(&self, scenario: &str, args: &[&str]) -> SippRun {
        let run = self.sipp(scenario, args);
        run.assert_ok(self);
        run
    }

    fn next_run_id(&self) -> u32 {
        let mut n = self.sipp_runs.lock().unwrap();
        *n += 1;
        *n
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if child.try_wait().ok().flatten().is_none() {
                let _ = Command::new("kill")
                    .args(["-TERM", &self.pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
                let deadline = Instant::now() + Duration::from_secs(5);
                while Instant::now() < deadline {
                    if child.try_wait().ok().flatten().is_some() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                if child.try_wait().ok().flatten().is_none() {
                    // Child::kill sends SIGKILL to this child's PID only.
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "--- hotline server log ({}) ---\n{}\n--- end of server log ---",
                self.log_path.display(),
                self.log()
            );
        }
    }
}

// ---------------------------------------------------------------------------
// SIPp

/// Path of a scenario file in tests/sipp.
pub fn scenario_path(name: &str) -> PathBuf {
    let file = if name.ends_with(".xml") {
        name.to_string()
    } else {
        format!("{name}.xml")
    };
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("sipp")
        .join(file)
}

/// Panics with a clear message if SIPp is not installed; returns its version line.
pub fn require_sipp() -> String {
    match Command::new("sipp").arg("-v").stdin(Stdio::null()).output() {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            text.lines()
                .find(|l| l.contains("SIPp"))
                .unwrap_or("")
                .trim()
                .to_string()
        }
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "`sipp` is not installed (or not on PATH): these tests need SIPp. \
             Install it with `apt-get install -y sip-tester` (Debian/Ubuntu package sip-tester)."
        ),
        Err(e) => panic!("cannot run `sipp -v`: {e}"),
    }
}

/// One SIPp run: a scenario with its options.
///
/// Always passed: `-sf <scenario> 127.0.0.1:<server port> -i <local ip>
/// -p <free local port> -m 1 -timeout 20s -timeout_error -recv_timeout 10s
/// -nostdin -trace_err -trace_msg -trace_logs` with the log files in the
/// server's temporary directory.
pub struct Sipp {
    scenario: String,
    local_ip: String,
    tcp: bool,
    calls: u32,
    port: Option<u16>,
    args: Vec<String>,
}

impl Sipp {
    pub fn new(scenario: &str) -> Sipp {
        Sipp {
            scenario: scenario.to_string(),
            local_ip: "127.0.0.1".into(),
            tcp: false,
            calls: 1,
            port: None,
            args: Vec::new(),
        }
    }
    /// Local SIP port (`-p`), e.g. the port a phone registered from.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }
    /// Source address SIPp binds to (`-i`).
    pub fn local_ip(mut self, ip: &str) -> Self {
        self.local_ip = ip.into();
        self
    }
    /// TCP, one connection (`-t t1`).
    pub fn tcp(mut self) -> Self {
        self.tcp = true;
        self
    }
    /// Number of calls (`-m`).
    pub fn calls(mut self, n: u32) -> Self {
        self.calls = n;
        self
    }
    /// `-s service` (the user part of the Request-URI / AOR).
    pub fn service(self, s: &str) -> Self {
        self.args(&["-s", s])
    }
    /// `-au user -ap password` for `[authentication]`.
    pub fn auth(self, user: &str, password: &str) -> Self {
        self.args(&["-au", user, "-ap", password])
    }
    /// `-key name value`: defines the keyword `[name]`.
    pub fn key(self, name: &str, value: &str) -> Self {
        self.args(&["-key", name, value])
    }

    /// SIPp's own RTP on loopback, on four ports of its own ([`free_media_port`]).
    pub fn media(self) -> Self {
        let port = free_media_port().to_string();
        self.args(&["-mi", "127.0.0.1", "-mp", &port])
    }
    /// Extra SIPp arguments; `-i X`, `-t t1` and `-m N` are understood.
    pub fn args(mut self, args: &[&str]) -> Self {
        let mut i = 0;
        while i < args.len() {
            match (args[i], args.get(i + 1)) {
                ("-i", Some(v)) => {
                    self.local_ip = v.to_string();
                    i += 2;
                }
                ("-m", Some(v)) => {
                    self.calls = v.parse().expect("-m N");
                    i += 2;
                }
                ("-t", Some(v)) => {
                    assert!(*v == "t1" || *v == "u1", "transport {v} not supported here");
                    self.tcp = *v == "t1";
                    i += 2;
                }
                (a, _) => {
                    self.args.push(a.to_string());
                    i += 1;
                }
            }
        }
        self
    }

    /// Runs SIPp against `server` and returns its status and logs.
    pub fn run(&self, server: &Server) -> SippRun {
        require_sipp();
        let path = scenario_path(&self.scenario);
        assert!(path.exists(), "no scenario file {}", path.display());
        let id = server.next_run_id();
        let stem = Path::new(&self.scenario)
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let base = server.dir.path().join(format!("sipp-{id:02}-{stem}"));
        let errors = base.with_extension("errors.log");
        let messages = base.with_extension("messages.log");
        let logs = base.with_extension("logs.log");
        let local_port = self.port.unwrap_or_else(|| free_port_on(&self.local_ip));
        let mut cmd = Command::new("sipp");
        cmd.arg("-sf")
            .arg(&path)
            .arg(server.sip_target())
            .args(["-i", &self.local_ip])
            .args(["-p", &local_port.to_string()])
            .args(["-m", &self.calls.to_string()])
            .args(["-timeout", "20s", "-timeout_error"])
            .args(["-recv_timeout", "10s"])
            .arg("-nostdin")
            .arg("-trace_err")
            .arg("-error_file")
            .arg(&errors)
            .arg("-trace_msg")
            .arg("-message_file")
            .arg(&messages)
            .arg("-trace_logs")
            .arg("-log_file")
            .arg(&logs);
        if self.tcp {
            cmd.args(["-t", "t1"]);
        }
        cmd.args(&self.args);
        cmd.current_dir(server.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let command_line = format!("{cmd:?}");
        let child = cmd.spawn().expect("spawn sipp");
        let started = Instant::now();
        let out = wait_output(child, SIPP_HARD_TIMEOUT, "sipp");
        let read =
            |p: &Path| String::from_utf8_lossy(&fs::read(p).unwrap_or_default()).into_owned();
        SippRun {
            scenario: self.scenario.clone(),
            command_line,
            status: out.status,
            elapsed: started.elapsed(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            errors: read(&errors),
            messages: read(&messages),
            logs: read(&logs),
            local_ip: self.local_ip.clone(),
            local_port,
        }
    }

    /// Runs and panics with every log if SIPp did not exit 0.
    pub fn run_ok(&self, server: &Server) -> SippRun {
        let run = self.run(server);
        run.assert_ok(server);
        run
    }
}

/// What one SIPp run did.
pub struct SippRun {
    pub scenario: String,
    pub command_line: String,
    pub status: ExitStatus,
    pub elapsed: Duration,
    pub stdout: String,
    pub stderr: String,
    /// `-trace_err` file: unexpected messages, failed checks.
    pub errors: String,
    /// `-trace_msg` file: every message sent and received.
    pub messages: String,
    /// `-trace_logs` file: `<log>` actions.
    pub logs: String,
    pub local_ip: String,
    pub local_port: u16,
}

impl SippRun {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Everything about this run, for a failure message.
    pub fn report(&self) -> String {
        let tail = |s: &str, n: usize| {
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        };
        format!(
            "=== SIPp scenario {} exited with {} after {:?}\n$ {}\n\
             --- sipp errors log ---\n{}\n--- sipp stderr ---\n{}\n--- sipp stdout (tail) ---\n{}\n\
             --- sipp <log> actions ---\n{}\n--- messages on the wire ---\n{}\n=== end of SIPp report",
            self.scenario,
            self.status,
            self.elapsed,
            self.command_line,
            self.errors.trim(),
            self.stderr.trim(),
            tail(&self.stdout, 25),
            self.logs.trim(),
            self.messages.trim(),
        )
    }

    /// Panics with this run's report and the server log unless SIPp exited 0.
    pub fn assert_ok(&self, server: &Server) {
        if !self.success() {
            panic!(
                "SIPp scenario `{}` failed (exit status {})\n{}\n--- hotline server log ---\n{}",
                self.scenario,
                self.status,
                self.report(),
                server.log()
            );
        }
    }

    /// Messages SIPp received, in order.
    pub fn received(&self) -> Vec<SipMsg> {
        self.wire(" message received")
    }

    /// Messages SIPp sent, in order.
    pub fn sent(&self) -> Vec<SipMsg> {
        self.wire(" message sent")
    }

    /// Responses received, in order.
    pub fn responses(&self) -> Vec<SipMsg> {
        self.received()
            .into_iter()
            .filter(|m| m.is_response())
            .collect()
    }

    /// The status codes received, in order.
    pub fn codes(&self) -> Vec<u16> {
        self.responses().iter().filter_map(|m| m.status()).collect()
    }

    fn wire(&self, kind: &str) -> Vec<SipMsg> {
        self.timeline()
            .into_iter()
            .filter(|e| e.received == (kind == " message received"))
            .map(|e| e.msg)
            .collect()
    }

    /// Every message sent or received, in order, with its time.
    pub fn timeline(&self) -> Vec<WireEvent> {
        // Entries of the -trace_msg file look like:
        // ----------------------------------------------- 2026-11-23 09:22:03.280334
        // UDP message received [N] bytes :
        // <blank>
        // <message>
        let mut out = Vec::new();
        for entry in self
            .messages
            .split("-----------------------------------------------")
        {
            let mut lines = entry.splitn(3, '\n');
            let stamp = lines.next().unwrap_or("").trim();
            let Some(title) = lines.next() else { continue };
            let received = title.contains(" message received");
            if !received && !title.contains(" message sent") {
                continue;
            }
            // Seconds since the epoch, so a run across midnight still
            // counts forward.
            let mut parts = stamp.split_whitespace();
            let day = parts.next().and_then(days_since_epoch).unwrap_or(0);
            let at = parts
                .next()
                .and_then(|t| {
                    let mut it = t.split(':');
                    let h: f64 = it.next()?.parse().ok()?;
                    let m: f64 = it.next()?.parse().ok()?;
                    let s: f64 = it.next()?.parse().ok()?;
                    Some(h * 3600.0 + m * 60.0 + s)
                })
                .map_or(0.0, |t| day as f64 * 86400.0 + t);
            let text = lines.next().unwrap_or("").trim_start_matches(['\r', '\n']);
            if let Some(msg) = SipMsg::parse(text.as_bytes()) {
                out.push(WireEvent { at, received, msg });
            }
        }
        out
    }
}

/// Days from 1970-01-01 to a `YYYY-MM-DD` date (proleptic Gregorian).
fn days_since_epoch(date: &str) -> Option<i64> {
    let mut it = date.split('-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: i64 = it.next()?.parse().ok()?;
    let d: i64 = it.next()?.parse().ok()?;
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    Some(era * 146_097 + day_of_era - 719_468)
}

#[test]
fn trace_dates_count_days_across_midnight_and_month_ends() {
    assert_eq!(days_since_epoch("1970-01-01"), Some(0));
    assert_eq!(days_since_epoch("2000-03-01"), Some(11_017));
    assert_eq!(
        days_since_epoch("2026-12-08").map(|d| d - days_since_epoch("2026-12-07").unwrap()),
        Some(1)
    );
    assert_eq!(
        days_since_epoch("2027-01-01").map(|d| d - days_since_epoch("2026-12-31").unwrap()),
        Some(1)
    );
    assert_eq!(
        days_since_epoch("2028-03-01").map(|d| d - days_since_epoch("2028-02-28").unwrap()),
        Some(2)
    );
}

/// One message in a SIPp message log.
#[derive(Clone, Debug)]
pub struct WireEvent {
    /// Seconds since midnight (local time of the log).
    pub at: f64,
    /// Received by SIPp (else sent by SIPp).
    pub received: bool,
    pub msg: SipMsg,
}

// ---------------------------------------------------------------------------
// SIP messages

/// A parsed SIP message (loose: enough for assertions).
#[derive(Clone, Debug)]
pub struct SipMsg {
    pub start_line: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub raw: String,
}

fn long_name(name: &str) -> String {
    let n = name.trim().to_ascii_lowercase();
    let full = match n.as_str() {
        "v" => "via",
        "f" => "from",
        "t" => "to",
        "i" => "call-id",
        "m" => "contact",
        "l" => "content-length",
        "c" => "content-type",
        "k" => "supported",
        "s" => "subject",
        "e" => "content-encoding",
        other => other,
    };
    full.to_string()
}

impl SipMsg {
    /// Parses one message (headers up to the first blank line, then the body).
    pub fn parse(bytes: &[u8]) -> Option<SipMsg> {
        let text = String::from_utf8_lossy(bytes).into_owned();
        let (head, body) = match text.find("\r\n\r\n") {
            Some(i) => (&text[..i], &text[i + 4..]),
            None => match text.find("\n\n") {
                Some(i) => (&text[..i], &text[i + 2..]),
                None => (text.as_str(), ""),
            },
        };
        let mut lines = head.lines();
        let start_line = lines.next()?.trim_end().to_string();
        if start_line.is_empty() {
            return None;
        }
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in lines {
            let line = line.trim_end_matches('\r');
            if line.starts_with([' ', '\t']) {
                if let Some(last) = headers.last_mut() {
                    last.1.push(' ');
                    last.1.push_str(line.trim());
                }
                continue;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.push((name.trim().to_string(), value.trim().to_string()));
            }
        }
        Some(SipMsg {
            start_line,
            headers,
            body: body.to_string(),
            raw: text,
        })
    }

    pub fn is_response(&self) -> bool {
        self.start_line.starts_with("SIP/2.0 ")
    }

    /// The status code of a response.
    pub fn status(&self) -> Option<u16> {
        if !self.is_response() {
            return None;
        }
        self.start_line.split(' ').nth(1)?.parse().ok()
    }

    /// The reason phrase of a response.
    pub fn reason(&self) -> String {
        self.start_line
            .splitn(3, ' ')
            .nth(2)
            .unwrap_or("")
            .to_string()
    }

    /// The method of a request.
    pub fn method(&self) -> Option<&str> {
        if self.is_response() {
            None
        } else {
            self.start_line.split(' ').next()
        }
    }

    /// The CSeq method.
    pub fn cseq_method(&self) -> Option<String> {
        self.header("CSeq")
            .and_then(|v| v.split_whitespace().nth(1).map(|s| s.to_string()))
    }

    /// All values of a header (compact forms included, case-insensitive).
    pub fn headers(&self, name: &str) -> Vec<&str> {
        let want = long_name(name);
        self.headers
            .iter()
            .filter(|(n, _)| long_name(n) == want)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers(name).into_iter().next()
    }

    /// Values of a comma-separated header, split (quotes respected) over all
    /// its occurrences.
    pub fn header_list(&self, name: &str) -> Vec<String> {
        self.headers(name)
            .into_iter()
            .flat_map(split_commas)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// (URI, expires) of each Contact.
    pub fn contacts(&self) -> Vec<(String, Option<u64>)> {
        self.header_list("Contact")
            .into_iter()
            .map(|c| {
                let (uri, params) = match (c.find('<'), c.find('>')) {
                    (Some(a), Some(b)) if a < b => {
                        (c[a + 1..b].to_string(), c[b + 1..].to_string())
                    }
                    _ => match c.split_once(';') {
                        Some((u, p)) => (u.trim().to_string(), format!(";{p}")),
                        None => (c.trim().to_string(), String::new()),
                    },
                };
                let expires = params.split(';').find_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    if k.trim().eq_ignore_ascii_case("expires") {
                        v.trim().trim_matches('"').parse().ok()
                    } else {
                        None
                    }
                });
                (uri, expires)
            })
            .collect()
    }
}

/// Splits on commas outside double quotes and angle brackets.
pub fn split_commas(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut angle) = (false, false);
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted => {
                cur.push(c);
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                continue;
            }
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out
}

// ---------------------------------------------------------------------------
// Digest

/// The parameters of one challenge (`Digest realm="x", nonce="y", ...`),
/// names lower-cased, quotes removed.
pub fn parse_challenge(value: &str) -> HashMap<String, String> {
    let v = value.trim();
    let rest = match v.split_once(char::is_whitespace) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("digest") => rest,
        _ => v,
    };
    let mut map = HashMap::new();
    for part in split_commas(rest) {
        if let Some((k, val)) = part.split_once('=') {
            map.insert(
                k.trim().to_ascii_lowercase(),
                val.trim().trim_matches('"').to_string(),
            );
        }
    }
    map
}

fn hash_hex(algorithm: &str, data: &str) -> String {
    use md5::Digest as _;
    match algorithm.to_ascii_uppercase().as_str() {
        "MD5" => hex::encode(md5::Md5::digest(data.as_bytes())),
        "SHA-256" => hex::encode(sha2::Sha256::digest(data.as_bytes())),
        other => panic!("unsupported digest algorithm {other}"),
    }
}

/// The RFC 7616 / RFC 3261 digest `response` for qop=auth.
#[allow(clippy::too_many_arguments)]
pub fn digest_response(
    algorithm: &str,
    username: &str,
    realm: &str,
    password: &str,
    method: &str,
    uri: &str,
    nonce: &str,
    nc: &str,
    cnonce: &str,
    qop: &str,
) -> String {
    let ha1 = hash_hex(algorithm, &format!("{username}:{realm}:{password}"));
    let ha2 = hash_hex(algorithm, &format!("{method}:{uri}"));
    if qop.is_empty() {
        hash_hex(algorithm, &format!("{ha1}:{nonce}:{ha2}"))
    } else {
        hash_hex(
            algorithm,
            &format!("{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}"),
        )
    }
}

/// A complete `Authorization`/`Proxy-Authorization` value answering
/// `challenge` (a WWW-Authenticate / Proxy-Authenticate value).
pub fn authorization(
    challenge: &str,
    username: &str,
    password: &str,
    method: &str,
    uri: &str,
) -> String {
    let c = parse_challenge(challenge);
    let algorithm = c.get("algorithm").cloned().unwrap_or_else(|| "MD5".into());
    let realm = c.get("realm").cloned().unwrap_or_default();
    let nonce = c.get("nonce").cloned().unwrap_or_default();
    let qop = match c.get("qop") {
        Some(q) if q.split(',').any(|x| x.trim() == "auth") => "auth",
        _ => "",
    };
    let cnonce = format!("{:016x}", rand_u64());
    let nc = "00000001";
    let response = digest_response(
        &algorithm, username, &realm, password, method, uri, &nonce, nc, &cnonce, qop,
    );
    let mut v = format!(
        "Digest username=\"{username}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", \
         response=\"{response}\", algorithm={algorithm}"
    );
    if !qop.is_empty() {
        write!(v, ", qop={qop}, nc={nc}, cnonce=\"{cnonce}\"").unwrap();
    }
    if let Some(o) = c.get("opaque") {
        write!(v, ", opaque=\"{o}\"").unwrap();
    }
    v
}

/// A random-enough number for tags, branches and Call-IDs.
pub fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish()
}

// ---------------------------------------------------------------------------
// Raw SIP clients

/// Builds requests with fresh Call-ID / tag / branch.
pub struct Dialog {
    pub transport: &'static str,
    pub local: SocketAddr,
    pub server: SocketAddr,
    pub call_id: String,
    pub from_tag: String,
    pub cseq: u32,
}

impl Dialog {
    pub fn new(transport: &'static str, local: SocketAddr, server: SocketAddr) -> Dialog {
        Dialog {
            transport,
            local,
            server,
            call_id: format!("{:x}@hotline-tests", rand_u64()),
            from_tag: format!("{:x}", rand_u64() as u32),
            cseq: 0,
        }
    }

    pub fn branch() -> String {
        format!("z9hG4bK{:x}", rand_u64())
    }

    /// A request with the usual headers (Via, Max-Forwards, From, To,
    /// Call-ID, CSeq, Content-Length) plus `extra` lines.
    pub fn request(
        &mut self,
        method: &str,
        uri: &str,
        user: &str,
        extra: &[String],
        body: &str,
    ) -> String {
        self.cseq += 1;
        let mut s = format!("{method} {uri} SIP/2.0\r\n");
        write!(
            s,
            "Via: SIP/2.0/{} {};branch={};rport\r\n",
            self.transport,
            self.local,
            Dialog::branch()
        )
        .unwrap();
        s.push_str("Max-Forwards: 70\r\n");
        write!(
            s,
            "From: <sip:{user}@{}>;tag={}\r\n",
            self.server.ip(),
            self.from_tag
        )
        .unwrap();
        write!(s, "To: <sip:{user}@{}>\r\n", self.server.ip()).unwrap();
        write!(s, "Call-ID: {}\r\n", self.call_id).unwrap();
        write!(s, "CSeq: {} {method}\r\n", self.cseq).unwrap();
        s.push_str("User-Agent: hotline-tests\r\n");
        for line in extra {
            s.push_str(line);
            s.push_str("\r\n");
        }
        write!(s, "Content-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        s
    }

    /// A REGISTER for AOR sip:<user>@<server ip> with our address as Contact.
    pub fn register(&mut self, user: &str, expires: Option<u32>, extra: &[String]) -> String {
        let mut lines = vec![format!("Contact: <sip:{user}@{}>", self.local)];
        if let Some(e) = expires {
            lines.push(format!("Expires: {e}"));
        }
        lines.extend(extra.iter().cloned());
        let uri = format!("sip:{}", self.server);
        self.request("REGISTER", &uri, user, &lines, "")
    }

    pub fn options(&mut self) -> String {
        let uri = format!("sip:{}", self.server);
        self.request("OPTIONS", &uri, "probe", &[], "")
    }
}

/// A UDP socket talking to the server.
pub struct UdpClient {
    pub sock: UdpSocket,
    pub server: SocketAddr,
}

impl UdpClient {
    pub fn new(server: &Server) -> UdpClient {
        Self::bind("127.0.0.1", server)
    }

    /// Bound to `ip` (any loopback address) on an ephemeral port.
    pub fn bind(ip: &str, server: &Server) -> UdpClient {
        let sock = UdpSocket::bind((ip.parse::<IpAddr>().unwrap(), 0)).expect("bind udp");
        UdpClient {
            sock,
            server: server.sip_addr(),
        }
    }

    pub fn local(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }

    pub fn dialog(&self) -> Dialog {
        Dialog::new("UDP", self.local(), self.server)
    }

    pub fn send(&self, data: impl AsRef<[u8]>) {
        self.sock
            .send_to(data.as_ref(), self.server)
            .expect("send_to");
    }

    /// The next datagram (parsed), or None after `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<SipMsg> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65536];
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            self.sock
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            match self.sock.recv_from(&mut buf) {
                Ok((n, _from)) => return SipMsg::parse(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return None;
                }
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                    // ICMP from an earlier datagram: keep waiting
                    continue;
                }
                // A signal (a child of the test process exiting) cut the wait short.
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => panic!("recv_from: {e}"),
            }
        }
    }

    /// The next final (>= 200) response whose CSeq matches `cseq_method`,
    /// skipping provisional ones and strays.
    pub fn final_response(&self, cseq_method: &str, timeout: Duration) -> Option<SipMsg> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let m = self.recv(left)?;
            if m.status().is_some_and(|s| s >= 200)
                && m.cseq_method()
                    .is_some_and(|c| c.eq_ignore_ascii_case(cseq_method))
            {
                return Some(m);
            }
        }
    }

    /// Sends a request and returns its final response (2 s limit).
    pub fn transact(&self, request: &str) -> Option<SipMsg> {
        let method = request.split(' ').next().unwrap().to_string();
        self.send(request);
        self.final_response(&method, Duration::from_secs(2))
    }

    /// Sends OPTIONS and asserts a 200. Retransmitted as a UA does over
    /// UDP (RFC 3261 timer E): after a burst, the kernel may have dropped
    /// the first copy from a full receive buffer.
    pub fn assert_options_ok(&self, context: &str) {
        let mut d = self.dialog();
        let request = d.options();
        let mut r = None;
        for wait in [500, 1000, 2000, 4000] {
            self.send(&request);
            r = self.final_response("OPTIONS", Duration::from_millis(wait));
            if r.is_some() {
                break;
            }
        }
        match r {
            Some(m) if m.status() == Some(200) => {}
            other => panic!(
                "{context}: OPTIONS over UDP did not get 200 OK, got {:?}",
                other.map(|m| m.start_line)
            ),
        }
    }
}

/// A TCP connection to the server.
pub struct TcpClient {
    pub stream: TcpStream,
    pub server: SocketAddr,
    buf: Vec<u8>,
}

impl TcpClient {
    pub fn connect(server: &Server) -> TcpClient {
        let stream = TcpStream::connect_timeout(&server.sip_addr(), Duration::from_secs(2))
            .expect("connect tcp");
        stream.set_nodelay(true).ok();
        TcpClient {
            stream,
            server: server.sip_addr(),
            buf: Vec::new(),
        }
    }

    pub fn local(&self) -> SocketAddr {
        self.stream.local_addr().unwrap()
    }

    pub fn dialog(&self) -> Dialog {
        Dialog::new("TCP", self.local(), self.server)
    }

    pub fn send(&mut self, data: impl AsRef<[u8]>) {
        self.stream.write_all(data.as_ref()).expect("tcp write");
    }

    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// The next complete message from the stream (framed by Content-Length),
    /// or None on time-out or EOF.
    pub fn recv(&mut self, timeout: Duration) -> Option<SipMsg> {
        let deadline = Instant::now() + timeout;
        loop {
            // skip keep-alive CRLFs
            while self.buf.starts_with(b"\r\n") {
                self.buf.drain(..2);
            }
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                let len = head
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(n, _)| long_name(n) == "content-length")
                    .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if self.buf.len() >= end + 4 + len {
                    let msg: Vec<u8> = self.buf.drain(..end + 4 + len).collect();
                    return SipMsg::parse(&msg);
                }
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return None;
                }
                Err(_) => return None,
            }
        }
    }

    pub fn final_response(&mut self, cseq_method: &str, timeout: Duration) -> Option<SipMsg> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let m = self.recv(left)?;
            if m.status().is_some_and(|s| s >= 200)
                && m.cseq_method()
                    .is_some_and(|c| c.eq_ignore_ascii_case(cseq_method))
            {
                return Some(m);
            }
        }
    }

    pub fn transact(&mut self, request: &str) -> Option<SipMsg> {
        let method = request.split(' ').next().unwrap().to_string();
        self.send(request);
        self.final_response(&method, Duration::from_secs(2))
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Asserts that `m` is a response with status `code`, printing it otherwise.
#[track_caller]
pub fn assert_status(m: &Option<SipMsg>, code: u16, context: &str) {
    match m {
        Some(m) if m.status() == Some(code) => {}
        Some(m) => panic!(
            "{context}: expected {code}, got `{}`\n{}",
            m.start_line, m.raw
        ),
        None => panic!("{context}: expected {code}, got no response"),
    }
}

/// One `GET` over a plain TCP connection; returns the body.
pub fn http_get(port: u16, path: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the HTTP listener");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

/// One HTTP request over a plain TCP connection: (status, body).
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the HTTP listener");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || method == "POST" {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A minimal WebSocket client for the event stream: the handshake, then
/// text frames (the server does not mask its frames).
pub struct WsClient {
    stream: TcpStream,
}

impl WsClient {
    pub fn connect(port: u16, path: &str) -> Result<WsClient, String> {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .map_err(|e| e.to_string())?;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).map_err(|e| e.to_string())?;
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        if !head.starts_with("HTTP/1.1 101") {
            return Err(head);
        }
        Ok(WsClient { stream })
    }

    /// The next text message, or None after `timeout` or when closed.
    pub fn next_text(&mut self, timeout: Duration) -> Option<String> {
        self.stream.set_read_timeout(Some(timeout)).ok()?;
        loop {
            let mut head = [0u8; 2];
            self.stream.read_exact(&mut head).ok()?;
            let opcode = head[0] & 0x0f;
            let mut len = u64::from(head[1] & 0x7f);
            if len == 126 {
                let mut ext = [0u8; 2];
                self.stream.read_exact(&mut ext).ok()?;
                len = u64::from(u16::from_be_bytes(ext));
            } else if len == 127 {
                let mut ext = [0u8; 8];
                self.stream.read_exact(&mut ext).ok()?;
                len = u64::from_be_bytes(ext);
            }
            let mut payload = vec![0u8; len as usize];
            self.stream.read_exact(&mut payload).ok()?;
            match opcode {
                1 => return String::from_utf8(payload).ok(),
                8 => return None,
                _ => continue,
            }
        }
    }

    /// Messages until one holds every part of `parts`, within `timeout`.
    pub fn wait_for(&mut self, parts: &[&str], timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.next_text(left) {
                Some(text) => {
                    let done = parts.iter().all(|p| holds(&text, p));
                    seen.push(text);
                    if done {
                        return seen;
                    }
                }
                None => break,
            }
        }
        panic!(
            "no message with {parts:?} within {timeout:?}; got:\n{}",
            seen.join("\n")
        );
    }
}
