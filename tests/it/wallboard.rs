//! The wallboard in a real browser: headless Chromium driven over the W3C
//! WebDriver protocol (chromedriver on a free loopback port, JSON over the
//! small HTTP client below). The page signs in from the address's fragment,
//! follows queue `support` and its agents while SIPp phones register, ring
//! without answer, hold and hang up — without reloading —, flags the
//! breaches, picks the stream up again after its WebSocket drops, and fits
//! 1280×720 without scrolling sideways.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;
use serde_json::{Value, json};

const SUPERVISOR: &str = "test-wallboard-supervisor";
const INSTALL: &str = "apt-get install -y chromium chromium-driver";

fn sha256(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// A supervisor of `support`, where 1001 and 1002 serve and one agent is the
/// minimum; short ring, break and hold limits so every breach comes quickly.
fn wallboard_config() -> TestConfig {
    acd_config(&format!(
        "[api.tokens.wall]\nrole = \"supervisor\"\nqueues = [\"support\"]\nsha256 = \"{}\"\n\n\
         [acd]\nanswer_within_rings = 1\nring_cycle = \"1s\"\nbreak_limit = \"2s\"\n\
         hold_limit = \"4s\"\nhold_warning_before = \"1s\"\n\n\
         [queues.support]\nmin_staffed = 1\nannounce_agent = false\n",
        sha256(SUPERVISOR)
    ))
    .http(true)
}

/// Where `name` is on PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Chromium and chromedriver, or a failure that says how to install them.
fn require_browser() -> (PathBuf, PathBuf) {
    match (on_path("chromium"), on_path("chromedriver")) {
        (Some(chromium), Some(driver)) => (chromium, driver),
        (chromium, driver) => panic!(
            "the wallboard test drives a headless Chromium through chromedriver \
             (found chromium: {}, chromedriver: {}); install them with `{INSTALL}`",
            chromium.is_some(),
            driver.is_some()
        ),
    }
}

/// One read from `stream`, again when a signal interrupted it (the tests share
/// one process, whose children's exits deliver signals).
fn read_some(stream: &mut impl Read, chunk: &mut [u8]) -> Result<usize, String> {
    loop {
        match stream.read(chunk) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other.map_err(|e| e.to_string()),
        }
    }
}

/// One HTTP/1.1 exchange (with chromedriver, or the server): status, head
/// and body.
fn exchange(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
    limit: Duration,
) -> Result<(u16, String, String), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(limit))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(limit))
        .map_err(|e| e.to_string())?;
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut data = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let (head_len, wanted) = loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..at]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            break (at + 4, length);
        }
        let n = read_some(&mut stream, &mut chunk)?;
        if n == 0 {
            return Err(format!(
                "connection closed in the header: {}",
                String::from_utf8_lossy(&data)
            ));
        }
        data.extend_from_slice(&chunk[..n]);
    };
    loop {
        if wanted.is_some_and(|w| data.len() >= head_len + w) {
            break;
        }
        let n = read_some(&mut stream, &mut chunk)?;
        if n == 0 {
            break;
        }
        data.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&data[..head_len]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let end = wanted.map_or(data.len(), |w| (head_len + w).min(data.len()));
    Ok((
        status,
        head,
        String::from_utf8_lossy(&data[head_len..end]).into_owned(),
    ))
}

fn base64_decode(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\r' | b'\n' => continue,
            _ => panic!("not base64: byte {c}"),
        };
        acc = (acc << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Whether process `pid` is still running (a zombie is not).
fn running(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
            Some(state != 'Z' && state != 'X')
        })
        .unwrap_or(false)
}

/// Small helpers every page script gets.
const HELPERS: &str = r#"
const field = (queue, name) => {
  const cell = document.querySelector(`[data-queue="${queue}"] [data-field="${name}"]`);
  return cell ? cell.textContent : null;
};
const tile = (agent) => document.querySelector(`[data-agent="${agent}"]`);
const state = (agent) => {
  const t = tile(agent);
  return t ? Array.from(t.classList).find((c) => c.startsWith("state-")) : null;
};
const alert = (kind, subject) =>
  document.querySelector(`#alerts li[data-kind="${kind}"][data-subject="${subject}"]`);
const connection = () => document.getElementById("conn").dataset.state;
"#;

/// Records every WebSocket the page opens in `window.wallboardSockets`, so
/// the test can drop the live one.
const RECORD_SOCKETS: &str = r#"
(() => {
  const Native = window.WebSocket;
  window.wallboardSockets = [];
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      window.wallboardSockets.push(this);
    }
  };
})();
"#;

/// chromedriver and the browser session it runs; both stopped when dropped.
struct Browser {
    driver: Child,
    port: u16,
    session: String,
    /// The browser's own process, as chromedriver reports it.
    browser_pid: Option<u32>,
    log: PathBuf,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a headless
    /// session whose profile and logs live in `dir`.
    fn start(chromium: &Path, chromedriver: &Path, dir: &Path) -> Browser {
        let log = dir.join("chromedriver.log");
        let port = free_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
        let mut browser = Browser {
            driver,
            port,
            session: String::new(),
            browser_pid: None,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ready = exchange(port, "GET", "/status", None, Duration::from_secs(2))
                .ok()
                .and_then(|(_, _, body)| serde_json::from_str::<Value>(&body).ok())
                .is_some_and(|status| status["value"]["ready"] == json!(true));
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not get ready within 10 s:\n{}",
                browser.driver_log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = dir.join("chromium-profile");
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "timeouts": {"pageLoad": 20_000, "script": 10_000, "implicit": 0},
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-dev-shm-usage",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        let session = browser
            .call(
                "POST",
                "/session",
                Some(&capabilities),
                Duration::from_secs(60),
            )
            .unwrap_or_else(|e| panic!("no browser session: {e}\n{}", browser.driver_log()));
        browser.session = session["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {session}"))
            .to_string();
        browser.browser_pid = session["capabilities"]["goog:processID"]
            .as_u64()
            .and_then(|pid| u32::try_from(pid).ok());
        browser
    }

    fn driver_log(&self) -> String {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// One WebDriver command; its `value`, or the error it answered.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        limit: Duration,
    ) -> Result<Value, String> {
        let text = body.map(Value::to_string);
        let (status, _, reply) = exchange(self.port, method, path, text.as_deref(), limit)?;
        let reply: Value = serde_json::from_str(&reply)
            .map_err(|e| format!("{status}, not JSON ({e}): {reply}"))?;
        if status != 200 {
            return Err(format!("{method} {path}: {status} {reply}"));
        }
        Ok(reply["value"].clone())
    }

    /// A command of this session; panics on an error.
    fn command(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.call(method, &path, body, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("WebDriver: {e}\n{}", self.driver_log()))
    }

    /// A Chrome DevTools command through chromedriver.
    fn devtools(&self, command: &str, params: Value) -> Value {
        self.command(
            "POST",
            "/goog/cdp/execute",
            Some(&json!({"cmd": command, "params": params})),
        )
    }

    /// The page's viewport, exactly `width`×`height` CSS pixels.
    fn viewport(&self, width: u32, height: u32) {
        self.devtools(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        );
    }

    fn open(&self, url: &str) {
        self.command("POST", "/url", Some(&json!({"url": url})));
    }

    /// Runs `body` (a function body using [`HELPERS`]) in the page.
    fn script(&self, body: &str) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            Some(&json!({"script": format!("{HELPERS}\n{body}"), "args": []})),
        )
    }

    /// Polls `body` until it returns true, for at most `limit`; fails with
    /// what the page shows.
    fn wait(&self, what: &str, body: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if self.script(body) == json!(true) {
                return;
            }
            if Instant::now() > deadline {
                let page = self.script("return document.body.innerText.slice(0, 4000);");
                panic!(
                    "the wallboard did not show {what} within {limit:?}; it shows:\n{}",
                    page.as_str().unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The viewport as a PNG.
    fn screenshot(&self) -> Vec<u8> {
        let encoded = self.command("GET", "/screenshot", None);
        base64_decode(encoded.as_str().expect("a base64 screenshot"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let path = format!("/session/{}", self.session);
            let _ = self.call("DELETE", &path, None, Duration::from_secs(10));
        }
        if let Some(pid) = self.browser_pid {
            let deadline = Instant::now() + Duration::from_secs(5);
            while running(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if running(pid) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
        }
        // chromedriver quits when asked; if it does not, Child::kill signals
        // its own PID only.
        let _ = exchange(self.port, "GET", "/shutdown", None, Duration::from_secs(2));
        let deadline = Instant::now() + Duration::from_secs(3);
        while matches!(self.driver.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if matches!(self.driver.try_wait(), Ok(None)) {
            let _ = self.driver.kill();
        }
        let _ = self.driver.wait();
        if std::thread::panicking() {
            eprintln!("--- chromedriver log (tail) ---\n{}", self.driver_log());
        }
    }
}

/// Writes a screenshot into the server's directory, and into
/// `$HOTLINE_TEST_SCREENSHOTS` too when set (to look at it after the run).
fn keep_screenshot(server: &Server, name: &str, png: &[u8]) {
    fs::write(server.dir.path().join(name), png).expect("write the screenshot");
    if let Some(dir) = std::env::var_os("HOTLINE_TEST_SCREENSHOTS") {
        let dir = PathBuf::from(dir);
        fs::create_dir_all(&dir).expect("create the screenshot directory");
        fs::write(dir.join(name), png).expect("keep the screenshot");
    }
}

/// The size of a PNG from its header.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(
        png.len() > 24 && png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "not a PNG"
    );
    let word = |at: usize| u32::from_be_bytes([png[at], png[at + 1], png[at + 2], png[at + 3]]);
    (word(16), word(20))
}

/// A plain `GET` without a token: (status, lower-cased head, body).
fn fetch(port: u16, path: &str) -> (u16, String, String) {
    let (status, head, body) = exchange(port, "GET", path, None, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    (status, head.to_ascii_lowercase(), body)
}

#[test]
fn the_page_and_its_assets_are_served_without_a_token_under_a_strict_policy() {
    let server = Server::start(wallboard_config());
    let port = server.http_port.expect("the HTTP listener is on");
    let (status, head, page) = fetch(port, "/");
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(
        head.contains("content-security-policy: default-src 'none'; script-src 'self'"),
        "{head}"
    );
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    assert!(page.contains("<title>hotline wallboard</title>"), "{page}");
    for (path, kind) in [
        ("/wallboard/wallboard.js", "text/javascript"),
        ("/wallboard/wallboard.css", "text/css"),
    ] {
        let (status, head, body) = fetch(port, path);
        assert_eq!(status, 200, "{path}: {head}");
        assert!(
            head.contains(&format!("content-type: {kind}")),
            "{path}: {head}"
        );
        assert!(page.contains(path), "the page does not load {path}");
        assert!(!body.is_empty());
    }
    // The data stays behind the token.
    let (status, _, _) = fetch(port, "/api/v1/queues");
    assert_eq!(status, 401);
}

#[test]
fn the_wallboard_follows_queue_agents_and_breaches_live_in_a_browser() {
    let (chromium, chromedriver) = require_browser();
    require_sipp();
    let server = Server::start(wallboard_config());
    let port = server.http_port.expect("the HTTP listener is on");
    let browser = Browser::start(&chromium, &chromedriver, server.dir.path());
    browser.devtools(
        "Page.addScriptToEvaluateOnNewDocument",
        json!({"source": RECORD_SOCKETS}),
    );
    browser.viewport(1920, 1080);
    browser.open(&format!("http://127.0.0.1:{port}/#token={SUPERVISOR}"));

    // Signed in from the fragment, which leaves the address bar for the tab's
    // session storage; nobody waits and nobody is logged in yet.
    browser.wait(
        "queue support with nobody waiting, live",
        "return field('support', 'waiting') === '0' && connection() === 'live';",
        Duration::from_secs(10),
    );
    assert_eq!(
        browser
            .script("return [location.hash, sessionStorage.getItem('hotline.wallboard.token')];"),
        json!(["", SUPERVISOR])
    );
    assert_eq!(
        browser.script(
            "return Array.from(document.querySelectorAll('[data-queue]'), (q) => q.dataset.queue);"
        ),
        json!(["support"]),
        "a supervisor of support sees support only"
    );
    browser.wait(
        "both agents logged out and support below its minimum",
        "return state('1001') === 'state-logged-out' && state('1002') === 'state-logged-out' \
         && field('support', 'staffed') === '0 / 1' && alert('staffing', 'support') !== null;",
        Duration::from_secs(5),
    );
    let logged_out = browser.script("return getComputedStyle(tile('1001')).backgroundColor;");
    browser.script("window.wallboardMark = 'same page'; return true;");

    // 1001's phone registers: its tile turns ready (green) and support is
    // staffed again.
    let phone_1001 = free_port();
    register_agent(&server, "1001", phone_1001);
    browser.wait(
        "1001 ready, support staffed",
        "return state('1001') === 'state-ready' && field('support', 'staffed') === '1 / 1' \
         && alert('staffing', 'support') === null;",
        Duration::from_secs(5),
    );
    let ready = browser.script("return getComputedStyle(tile('1001')).backgroundColor;");
    assert_ne!(ready, logged_out, "a ready tile is coloured differently");

    std::thread::scope(|s| {
        let server = &server;
        // 1001's phone rings once and nobody answers: 1001 goes not-ready, the
        // caller waits again, and 1001's break soon runs over its limit.
        let ringing = s.spawn(move || {
            Sipp::new("agent_no_answer")
                .port(phone_1001)
                .args(&["-timeout", "30s"])
                .run(server)
        });
        let waiting = s.spawn(|| caller("402", 15_000).run(server));
        browser.wait(
            "one caller waiting",
            "return field('support', 'waiting') === '1';",
            Duration::from_secs(10),
        );
        browser.wait(
            "1001's missed ring, its tile flashing and not ready",
            "return alert('no-answer', '1001') !== null && tile('1001').classList.contains('flash') \
             && state('1001') === 'state-not-ready' \
             && tile('1001').querySelector('.tile-state').textContent.includes('no-answer');",
            Duration::from_secs(5),
        );
        browser.wait(
            "1001's break over its limit",
            "return alert('break', '1001') !== null && tile('1001').classList.contains('breach');",
            Duration::from_secs(6),
        );

        // The event stream drops: the page comes back with the last cursor.
        let sockets = browser.script("return window.wallboardSockets.length;");
        assert_eq!(sockets, json!(1), "one WebSocket so far");
        browser.script(
            "window.wallboardSockets[window.wallboardSockets.length - 1].close(); return true;",
        );
        browser.wait(
            "a new WebSocket resuming after the last cursor",
            "const all = window.wallboardSockets; \
             return all.length === 2 && /[?&]since=[1-9][0-9]*$/.test(all[1].url) \
             && connection() === 'live';",
            Duration::from_secs(8),
        );

        // The caller gives up: the page hears it over the new connection.
        browser.wait(
            "the abandoned call",
            "return field('support', 'abandoned') === '1' && field('support', 'waiting') === '0';",
            Duration::from_secs(20),
        );
        ringing.join().expect("ringing phone").assert_ok(server);
        waiting.join().expect("waiting caller").assert_ok(server);
    });

    // 1002 answers the next call and holds it past the (4 s) hold limit.
    let phone_1002 = free_port();
    register_agent(&server, "1002", phone_1002);
    browser.wait(
        "1002 ready",
        "return state('1002') === 'state-ready' && field('support', 'staffed') === '2 / 1';",
        Duration::from_secs(5),
    );
    std::thread::scope(|s| {
        let server = &server;
        let holding = s.spawn(move || {
            Sipp::new("agent_hold")
                .port(phone_1002)
                // Resumes 2 s after the limit's alert, before the next one.
                .media()
                .args(&["-d", "2000", "-recv_timeout", "30s", "-timeout", "40s"])
                .run(server)
        });
        let talking = s.spawn(|| caller("402", 12_000).run(server));
        browser.wait(
            "1002 holding a call past the hold limit",
            "return state('1002') === 'state-on-hold' && alert('hold', '1002') !== null \
             && tile('1002').classList.contains('breach');",
            Duration::from_secs(10),
        );
        let png = browser.screenshot();
        assert_eq!(png_size(&png), (1920, 1080));
        assert!(
            png.len() > 30_000,
            "a 1920×1080 wallboard is more than {} bytes of PNG",
            png.len()
        );
        keep_screenshot(server, "wallboard-1920x1080.png", &png);
        browser.wait(
            "1002 talking again after the hold, the alert gone",
            "return state('1002') === 'state-talking' && alert('hold', '1002') === null;",
            Duration::from_secs(10),
        );
        browser.wait(
            "1002 in wrap-up after the caller hung up",
            "return state('1002') === 'state-wrap-up';",
            Duration::from_secs(15),
        );
        holding.join().expect("holding phone").assert_ok(server);
        talking.join().expect("caller").assert_ok(server);
    });
    // One answered within target and one abandoned: 50 %, below the goal.
    browser.wait(
        "the service level in red",
        "const cell = document.querySelector('[data-queue=\"support\"] [data-field=\"sl-15m\"]'); \
         return field('support', 'answered') === '1' && cell.textContent === '50%' \
         && cell.classList.contains('bad');",
        Duration::from_secs(5),
    );
    assert_eq!(
        browser.script("return window.wallboardMark;"),
        json!("same page"),
        "everything above came without a reload"
    );

    // 1280×720, opened again without the fragment: the tab's session storage
    // signs in, and nothing needs sideways scrolling.
    browser.viewport(1280, 720);
    browser.open(&format!("http://127.0.0.1:{port}/"));
    browser.wait(
        "the board again",
        "return field('support', 'waiting') === '0' && state('1002') === 'state-wrap-up';",
        Duration::from_secs(10),
    );
    let fit = browser.script(
        "const root = document.documentElement; \
         return [root.scrollWidth, window.innerWidth, window.innerHeight];",
    );
    let (scroll_width, inner_width) = (fit[0].as_u64(), fit[1].as_u64());
    assert_eq!(inner_width, Some(1280), "{fit}");
    assert!(
        scroll_width <= inner_width,
        "the page scrolls sideways at 1280×720: {fit}"
    );
    let png = browser.screenshot();
    assert_eq!(png_size(&png), (1280, 720));
    keep_screenshot(&server, "wallboard-1280x720.png", &png);

    // Signing out forgets the token; a wrong one is refused; the right one
    // typed into the form shows the board.
    browser.script("document.getElementById('signout').click(); return true;");
    browser.wait(
        "the sign-in form",
        "return !document.getElementById('login').hidden && document.getElementById('board').hidden \
         && sessionStorage.getItem('hotline.wallboard.token') === null;",
        Duration::from_secs(5),
    );
    browser.script(
        "document.getElementById('token').value = 'not-a-token'; \
         document.getElementById('login').requestSubmit(); return true;",
    );
    browser.wait(
        "the refusal",
        "return document.getElementById('login-error').textContent.includes('refused') \
         && !document.getElementById('login').hidden;",
        Duration::from_secs(5),
    );
    browser.script(&format!(
        "document.getElementById('token').value = '{SUPERVISOR}'; \
         document.getElementById('login').requestSubmit(); return true;"
    ));
    browser.wait(
        "the board after signing in by hand",
        "return field('support', 'waiting') === '0' && connection() === 'live';",
        Duration::from_secs(10),
    );
}
