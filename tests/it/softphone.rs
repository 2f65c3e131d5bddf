//! A real agent softphone against hotline: baresip registers as a demo agent
//! with digest auth, places a call to a hotline number, and unregisters when it
//! quits. What hotline saw is read back over HTTP from `/metrics`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Server, Sipp, TestConfig, free_port, http_get};

/// Where Debian's baresip keeps its modules.
fn baresip_modules() -> PathBuf {
    let candidates = [
        "/usr/lib/baresip/modules",
        "/usr/lib/x86_64-linux-gnu/baresip/modules",
        "/usr/lib/aarch64-linux-gnu/baresip/modules",
        "/usr/local/lib/baresip/modules",
    ];
    let found = candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("g711.so").exists());
    match (Command::new("baresip").arg("-h").output(), found) {
        (Ok(_), Some(dir)) => dir,
        _ => panic!("baresip with its g711 module is required: apt-get install -y baresip-core"),
    }
}

fn gauge(server: &Server, name: &str) -> Option<f64> {
    let port = server.http_port.expect("http enabled");
    http_get(port, "/metrics")
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

fn wait_for_gauge(server: &Server, name: &str, want: f64, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let got = gauge(server, name);
        if got == Some(want) {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "{name} is {got:?}, expected {want} within {limit:?}\n--- server log ---\n{}",
                server.log()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Baresip {
    child: Child,
    log: PathBuf,
}

impl Baresip {
    /// Starts baresip registered as `agent`/`password`, quitting after `seconds`,
    /// optionally dialling `dial` once it is up.
    fn start(
        dir: &Path,
        server: &Server,
        agent: &str,
        password: &str,
        seconds: u32,
        dial: Option<&str>,
    ) -> Baresip {
        Self::start_with(dir, server, agent, password, seconds, dial, "")
    }

    /// Like [`Baresip::start`], with extra account parameters: `URI|ACCOUNT`
    /// (`;transport=tcp|;answermode=auto`), or just the account's.
    fn start_with(
        dir: &Path,
        server: &Server,
        agent: &str,
        password: &str,
        seconds: u32,
        dial: Option<&str>,
        account_params: &str,
    ) -> Baresip {
        let (uri_params, account_params) = account_params
            .split_once('|')
            .unwrap_or(("", account_params));
        let modules = baresip_modules();
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(
            dir.join("config"),
            format!(
                "sip_listen 127.0.0.1:{}\nmodule_path {}\nmodule g711.so\nmodule_app account.so\nmodule_app menu.so\naudio_player nothing\naudio_source nothing\n",
                free_port(),
                modules.display()
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("accounts"),
            format!(
                "<sip:{agent}@127.0.0.1:{}{uri_params}>;auth_pass={password};regint=60{account_params}\n",
                server.sip_port
            ),
        )
        .unwrap();
        let log = dir.join("baresip.log");
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new("baresip");
        cmd.arg("-4")
            .arg("-f")
            .arg(dir)
            .arg("-t")
            .arg(seconds.to_string())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        if let Some(uri) = dial {
            cmd.arg("-e").arg(format!("/dial {uri}"));
        }
        Baresip {
            child: cmd.spawn().expect("start baresip"),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait(mut self, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        while self.child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("baresip did not quit in time\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.log()
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn baresip_registers_as_an_agent_and_unregisters_when_it_quits() {
    let server = Server::start(TestConfig::new().http(true));
    assert_eq!(gauge(&server, "hotline_registrations_active"), Some(0.0));
    let phone = Baresip::start(
        &server.dir.path().join("baresip"),
        &server,
        "1001",
        "demo1001",
        4,
        None,
    );
    wait_for_gauge(
        &server,
        "hotline_registrations_active",
        1.0,
        Duration::from_secs(3),
    );
    // Registering logged the agent in as ready (login_on_register).
    let ready = "hotline_agents{state=\"ready\"}";
    wait_for_gauge(&server, ready, 1.0, Duration::from_secs(3));
    server.assert_event(&[
        "\"type\":\"agent_state_changed\"",
        "\"agent\":\"1001\"",
        "\"state\":\"ready\"",
    ]);
    let log = phone.wait(Duration::from_secs(10));
    assert!(
        log.contains("200 OK"),
        "baresip did not see its 200 OK:\n{log}"
    );
    wait_for_gauge(
        &server,
        "hotline_registrations_active",
        0.0,
        Duration::from_secs(3),
    );
    // Unregistering logged it out again.
    wait_for_gauge(&server, ready, 0.0, Duration::from_secs(3));
    wait_for_gauge(
        &server,
        "hotline_agents{state=\"logged-out\"}",
        4.0,
        Duration::from_secs(3),
    );
}

#[test]
fn baresip_with_a_wrong_password_is_not_registered() {
    let server = Server::start(TestConfig::new().http(true));
    let phone = Baresip::start(
        &server.dir.path().join("baresip"),
        &server,
        "1002",
        "not-the-password",
        3,
        None,
    );
    let log = phone.wait(Duration::from_secs(10));
    assert_eq!(
        gauge(&server, "hotline_registrations_active"),
        Some(0.0),
        "{log}"
    );
    assert!(!log.contains("200 OK"), "{log}");
}

#[test]
fn baresip_call_to_a_hotline_number_is_answered_and_ended_by_the_caller() {
    let server = Server::start(TestConfig::new().http(true));
    let target = format!("sip:401@127.0.0.1:{}", server.sip_port);
    let phone = Baresip::start(
        &server.dir.path().join("baresip"),
        &server,
        "1003",
        "demo1003",
        8,
        Some(&target),
    );
    // baresip registers, then dials; on a loaded machine that takes a while.
    wait_for_gauge(&server, "hotline_calls_active", 1.0, Duration::from_secs(6));
    let log = phone.wait(Duration::from_secs(15));
    assert!(log.contains("Call established"), "{log}");
    assert!(
        log.contains("PCMU"),
        "the answer must negotiate PCMU:\n{log}"
    );
    wait_for_gauge(&server, "hotline_calls_active", 0.0, Duration::from_secs(3));
    let server_log = server.log();
    assert!(server_log.contains("call answered"), "{server_log}");
    assert!(
        server_log.contains("UacBye"),
        "caller hung up:\n{server_log}"
    );
}

/// baresip registers as `agent` of queue `support` with `params` and answers
/// by itself; a SIPp caller (number 5551234) dials 401, waits in the queue
/// and talks. Returns the server and baresip's log.
fn queued_call_to_baresip(agent: &str, params: &str) -> (Server, String) {
    let server = Server::start(
        TestConfig::new()
            .http(true)
            .agent_queues(agent, &["support"])
            .extra("[queues.support]\nannounce_agent = false\n"),
    );
    let phone = Baresip::start_with(
        &server.dir.path().join("baresip"),
        &server,
        agent,
        &format!("demo{agent}"),
        14,
        None,
        params,
    );
    wait_for_gauge(
        &server,
        "hotline_agents{state=\"ready\"}",
        1.0,
        Duration::from_secs(6),
    );
    // 401 plays the greeting, queues the caller, and the phone answers by itself.
    Sipp::new("caller_waits")
        .service("401")
        .media()
        .args(&["-d", "7000", "-key", "caller", "5551234"])
        .run_ok(&server);
    let agent_field = format!("\"agent\":\"{agent}\"");
    server.assert_event(&["\"type\":\"call_connected\"", &agent_field]);
    server.assert_event(&["\"type\":\"call_bridged\"", "\"agent_codec\":\"PCMU\""]);
    server.assert_event(&[
        "\"type\":\"call_released\"",
        &agent_field,
        "\"released_by\":\"caller\"",
    ]);
    let log = phone.wait(Duration::from_secs(20));
    assert!(log.contains("Call established"), "{log}");
    (server, log)
}

#[test]
fn a_queued_caller_is_connected_to_baresip_answering_as_agent_1001() {
    let (_server, log) = queued_call_to_baresip("1001", ";answermode=auto");
    assert!(
        log.contains("5551234"),
        "the phone shows the caller's number:\n{log}"
    );
}

#[test]
fn a_queued_caller_reaches_baresip_registered_over_tcp() {
    let (server, _log) = queued_call_to_baresip("1002", ";transport=tcp|;answermode=auto");
    server.assert_event(&[
        "\"type\":\"registration_added\"",
        "\"aor\":\"1002\"",
        "transport=TCP",
    ]);
}
