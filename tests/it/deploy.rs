//! deploy/: every file is checked by its own tool and against the server.
//!
//! * Prometheus: `promtool check config`, `promtool check rules`, and
//!   `promtool test rules` (each alert fires on synthetic series); the rules
//!   use only metric names of the catalogue below.
//! * Grafana: the dashboard is a Grafana JSON model whose every query is valid
//!   PromQL (checked by promtool) over catalogue metrics and recording rules.
//! * systemd: `systemd-analyze verify` and `systemd-analyze security` on the
//!   unit, with ExecStart pointed at the binary under test.
//! * Kamailio: `kamailio -c` on the configuration, and a real Kamailio that
//!   moves a call past a node answering 503 and a silent one to a running
//!   hotline, with the dialog's BYE following the recorded route.
//! * Kubernetes: the manifests parse (python3-yaml), reference each other
//!   correctly, and the ConfigMap passes `hotline check-config` with the
//!   StatefulSet's environment.
//! * Docker: the Dockerfile's structure, its environment against
//!   `hotline check-config`, and its HEALTHCHECK against a running server.
//!
//! A missing checker fails its test with the Debian package to install.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::*;
use regex::Regex;
use serde_json::Value;

/// The alerts deploy/README.md documents.
const ALERTS: &[&str] = &[
    "HotlineDown",
    "HotlineServiceLevelLow",
    "HotlineCallersWaitingWithoutAgents",
    "HotlineHoldLimitReached",
    "HotlineRingNoAnswerSpike",
    "HotlineAuthFailureBurst",
    "HotlineStoreErrors",
    "HotlineStoreWriteFailing",
    "HotlineRecordingFailures",
    "HotlineSatisfactionBelowTarget",
    "HotlineSipFlood",
    "HotlineAuthLockouts",
    "HotlineTollFraudAttempts",
    "HotlineZombieCalls",
    "HotlineOverloaded",
    "HotlineEventsLost",
];

const SERVICE_LEVEL_RULE: &str = "hotline:queue_service_level:ratio_rate15m";

// ---------------------------------------------------------------------------
// Helpers

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deploy(path: &str) -> PathBuf {
    repo().join("deploy").join(path)
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The path of a checker, or a failed test naming the Debian package that
/// provides it. Never a silent skip: CI installs these (`.ci/run`).
fn require(tool: &str, package: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from));
    for dir in dirs {
        let candidate = dir.join(tool);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "`{tool}` is not installed: install the Debian package `{package}` \
         (apt-get install -y {package}); .ci/run installs it when missing"
    );
}

/// A Python interpreter that can `import yaml`.
fn python_with_yaml() -> PathBuf {
    for candidate in ["python3", "/usr/bin/python3"] {
        let ok = Command::new(candidate)
            .args(["-c", "import yaml"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return PathBuf::from(candidate);
        }
    }
    panic!(
        "no python3 with the yaml module: install the Debian package `python3-yaml` \
         (apt-get install -y python3-yaml); .ci/run installs it when missing"
    );
}

fn run(cmd: &mut Command) -> Output {
    output_within(cmd, Duration::from_secs(120))
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({})\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

fn promtool(args: &[&str]) -> Output {
    let tool = require("promtool", "prometheus");
    run(Command::new(tool)
        .args(args)
        .current_dir(deploy("prometheus")))
}

/// Every metric name a query may use: the catalogue, the histograms'
/// series, and the standard process metrics.
fn allowed_metrics() -> BTreeSet<String> {
    let mut names: BTreeSet<String> = CATALOGUE.iter().map(|s| s.to_string()).collect();
    for h in HISTOGRAMS {
        for suffix in ["_bucket", "_sum", "_count"] {
            names.insert(format!("{h}{suffix}"));
        }
    }
    names
}

fn metric_tokens(text: &str) -> BTreeSet<String> {
    let re = Regex::new(r"\bhotline_[a-z0-9_]+").unwrap();
    re.find_iter(text).map(|m| m.as_str().to_string()).collect()
}

fn rule_tokens(text: &str) -> BTreeSet<String> {
    let re = Regex::new(r"\bhotline:[a-z0-9_:]+").unwrap();
    re.find_iter(text).map(|m| m.as_str().to_string()).collect()
}

fn process_tokens(text: &str) -> BTreeSet<String> {
    let re = Regex::new(r"\bprocess_[a-z0-9_]+").unwrap();
    re.find_iter(text).map(|m| m.as_str().to_string()).collect()
}

/// Recording rules of rules.yml: name → expression text.
fn recording_rules() -> BTreeMap<String, String> {
    let yaml = read(&deploy("prometheus/rules.yml"));
    let mut rules = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in yaml.lines() {
        let trimmed = line.trim_start().trim_start_matches("- ");
        if let Some(name) = trimmed.strip_prefix("record:") {
            current = Some(name.trim().to_string());
            rules.insert(name.trim().to_string(), String::new());
        } else if trimmed.starts_with("alert:") {
            current = None;
        } else if let Some(name) = &current {
            rules.get_mut(name).unwrap().push_str(line);
            rules.get_mut(name).unwrap().push('\n');
        }
    }
    rules
}

/// YAML documents of a file, as JSON values (python3-yaml parses them).
fn yaml_documents(path: &Path) -> Vec<Value> {
    let python = python_with_yaml();
    let out = run(Command::new(python)
        .arg("-c")
        .arg(
            "import json, sys, yaml\n\
         with open(sys.argv[1]) as f:\n    \
             docs = [d for d in yaml.safe_load_all(f) if d is not None]\n\
         print(json.dumps(docs))",
        )
        .arg(path));
    assert_ok(&out, &format!("parsing {} as YAML", path.display()));
    match serde_json::from_slice(&out.stdout).expect("JSON from python") {
        Value::Array(docs) => docs,
        other => panic!("expected a list of documents, got {other}"),
    }
}

/// A temporary directory that does not clash with the other tests.
fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("hotline-deploy-")
        .tempdir()
        .unwrap()
}

/// `hotline check-config --config FILE` with `env` as the only HOTLINE__
/// variables.
fn check_config(config: &Path, env: &BTreeMap<String, String>) -> Output {
    let mut cmd = hotline_command();
    cmd.arg("check-config")
        .arg("--config")
        .arg(config)
        .current_dir(repo());
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(&mut cmd)
}

// ---------------------------------------------------------------------------
// Prometheus

#[test]
fn prometheus_config_is_valid() {
    let out = promtool(&["check", "config", "prometheus.yml"]);
    assert_ok(
        &out,
        "promtool check config deploy/prometheus/prometheus.yml",
    );
    let config = read(&deploy("prometheus/prometheus.yml"));
    assert!(config.contains("job_name: hotline"), "{config}");
    assert!(config.contains("- rules.yml"), "{config}");
}

#[test]
fn prometheus_rules_are_valid() {
    let out = promtool(&["check", "rules", "rules.yml"]);
    assert_ok(&out, "promtool check rules deploy/prometheus/rules.yml");
}

#[test]
fn prometheus_rules_unit_tests_pass() {
    let out = promtool(&["test", "rules", "rules_test.yml"]);
    assert_ok(&out, "promtool test rules deploy/prometheus/rules_test.yml");
    assert!(
        text(&out.stdout).contains("SUCCESS"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn rules_use_catalogue_metrics_and_every_alert_is_tested() {
    let allowed = allowed_metrics();
    for file in ["prometheus/rules.yml", "prometheus/rules_test.yml"] {
        let body = read(&deploy(file));
        let unknown: Vec<_> = metric_tokens(&body)
            .into_iter()
            .filter(|t| !allowed.contains(t))
            .collect();
        assert!(
            unknown.is_empty(),
            "{file} names metrics hotline does not expose: {unknown:?}"
        );
    }

    let rules = read(&deploy("prometheus/rules.yml"));
    let tests = read(&deploy("prometheus/rules_test.yml"));
    let alert_re = Regex::new(r"(?m)^\s*- alert:\s*(\w+)").unwrap();
    let alerts: BTreeSet<String> = alert_re
        .captures_iter(&rules)
        .map(|c| c[1].to_string())
        .collect();
    let expected: BTreeSet<String> = ALERTS.iter().map(|s| s.to_string()).collect();
    assert_eq!(alerts, expected, "the alerts of rules.yml");
    for alert in &alerts {
        assert!(
            tests.contains(&format!("alertname: {alert}")),
            "rules_test.yml has no test for {alert}"
        );
    }

    let recorded = recording_rules();
    assert!(recorded.contains_key(SERVICE_LEVEL_RULE), "{recorded:?}");
    assert!(
        tests.contains(&format!("expr: {SERVICE_LEVEL_RULE}")),
        "rules_test.yml checks the service-level values"
    );
    // Recording rules build only on catalogue metrics and on each other.
    for (name, expr) in &recorded {
        for token in rule_tokens(expr) {
            assert!(recorded.contains_key(&token), "{name} uses unknown {token}");
        }
    }
}

// ---------------------------------------------------------------------------
// Grafana

/// Every panel of the dashboard, rows' nested panels included.
fn all_panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        out.push(panel);
        if let Some(nested) = panel["panels"].as_array() {
            out.extend(nested.iter());
        }
    }
    out
}

fn dashboard() -> Value {
    let path = deploy("grafana/hotline-dashboard.json");
    serde_json::from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every PromQL query of the dashboard: panel targets and variable queries.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for panel in all_panels(dashboard) {
        let title = panel["title"].as_str().unwrap_or("?").to_string();
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("panel {title}: a target without expr"));
            queries.push((title.clone(), expr.to_string()));
        }
    }
    for var in dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
    {
        if var["type"] == "query" {
            let query = var["query"]["query"]
                .as_str()
                .or(var["query"].as_str())
                .expect("variable query");
            queries.push((format!("variable {}", var["name"]), query.to_string()));
        }
    }
    queries
}

#[test]
fn dashboard_queries_use_only_catalogue_metrics_and_recorded_rules() {
    let dashboard = dashboard();
    let allowed = allowed_metrics();
    let recorded = recording_rules();
    let mut used: BTreeSet<String> = BTreeSet::new();
    for (title, expr) in dashboard_queries(&dashboard) {
        for token in metric_tokens(&expr) {
            assert!(
                allowed.contains(&token),
                "panel `{title}` uses `{token}`, not a hotline metric: {expr}"
            );
            used.insert(token);
        }
        let mut rules: Vec<String> = rule_tokens(&expr).into_iter().collect();
        while let Some(token) = rules.pop() {
            let rule = recorded.get(&token).unwrap_or_else(|| {
                panic!("panel `{title}` uses `{token}`, not a rule of rules.yml: {expr}")
            });
            used.extend(metric_tokens(rule));
            rules.extend(rule_tokens(rule).into_iter().filter(|r| *r != token));
        }
        for token in process_tokens(&expr) {
            assert!(
                PROCESS_METRICS.contains(&token.as_str()),
                "panel `{title}` uses `{token}`: {expr}"
            );
        }
    }
    // Every hotline metric is on the dashboard, directly or through a rule.
    let mut missing: Vec<String> = CATALOGUE.iter().map(|s| s.to_string()).collect();
    missing.extend(HISTOGRAMS.iter().map(|h| format!("{h}_bucket")));
    missing.retain(|m| !used.contains(m));
    assert!(missing.is_empty(), "not on the dashboard: {missing:?}");
}

#[test]
fn dashboard_queries_are_valid_promql() {
    // promtool parses each query as a recording rule; Grafana's variables
    // get plain values first.
    let dashboard = dashboard();
    let queries = dashboard_queries(&dashboard);
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (_, expr)) in queries.iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "5m")
            .replace("$__interval", "1m")
            .replace("$__range", "1h")
            .replace("$instance", ".*")
            .replace("$queue", ".*");
        if expr.starts_with("label_values(") {
            continue;
        }
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {}\n",
            serde_json::to_string(&expr).unwrap()
        ));
    }
    let dir = tempdir();
    let path = dir.path().join("dashboard_rules.yml");
    fs::write(&path, &rules).unwrap();
    let out = promtool(&["check", "rules", path.to_str().unwrap()]);
    assert_ok(
        &out,
        &format!("the dashboard's queries as PromQL:\n{rules}"),
    );
}

#[test]
fn dashboard_is_a_grafana_model_with_a_datasource_variable() {
    let dashboard = dashboard();
    assert!(dashboard["title"].is_string() && dashboard["uid"].is_string());
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 36);
    let vars = dashboard["templating"]["list"].as_array().unwrap();
    let ds = vars
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(ds["query"], "prometheus");
    let ds_uid = format!("${{{}}}", ds["name"].as_str().unwrap());

    let mut ids = BTreeSet::new();
    let mut boxes: Vec<(String, [i64; 4])> = Vec::new();
    let mut rows = Vec::new();
    for panel in all_panels(&dashboard) {
        let title = panel["title"].as_str().expect("a title").to_string();
        let id = panel["id"].as_u64().expect("an id");
        assert!(ids.insert(id), "panel id {id} twice");
        let g = &panel["gridPos"];
        let rect = ["x", "y", "w", "h"].map(|k| g[k].as_i64().expect("gridPos"));
        assert!(
            rect[0] + rect[2] <= 24,
            "panel `{title}` is wider than the grid"
        );
        for (other, r) in &boxes {
            let overlap = rect[0] < r[0] + r[2]
                && r[0] < rect[0] + rect[2]
                && rect[1] < r[1] + r[3]
                && r[1] < rect[1] + rect[3];
            assert!(!overlap, "panels `{title}` and `{other}` overlap");
        }
        boxes.push((title.clone(), rect));
        if panel["type"] == "row" {
            rows.push(title);
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"],
            ds_uid.as_str(),
            "panel `{title}`"
        );
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel `{title}` has no query");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], ds_uid.as_str(), "panel `{title}`");
        }
    }
    for row in [
        "Queues",
        "Service level",
        "Call times",
        "Agents",
        "Rule breaches",
        "SIP",
        "Media (RTP)",
        "Store and process",
        "Security",
    ] {
        assert!(rows.iter().any(|r| r == row), "no row `{row}` in {rows:?}");
    }
    let queries: String = dashboard_queries(&dashboard)
        .into_iter()
        .map(|(_, q)| q + "\n")
        .collect();
    for histogram in [
        "hotline_queue_wait_seconds",
        "hotline_offer_ring_seconds",
        "hotline_talk_seconds",
        "hotline_hold_seconds",
    ] {
        for q in ["0.5", "0.9"] {
            let needle =
                format!("histogram_quantile({q}, sum by (queue, le) (rate({histogram}_bucket");
            assert!(queries.contains(&needle), "no p{q} of {histogram}");
        }
    }
    assert!(queries.contains(SERVICE_LEVEL_RULE));
}

// ---------------------------------------------------------------------------
// systemd

/// The shipped unit with ExecStart/ExecStartPre pointed at the binary under
/// test (verify wants the binary to exist); nothing else changes.
fn unit_for_verify(dir: &Path) -> PathBuf {
    let unit = read(&deploy("hotline.service"));
    assert!(
        unit.contains("ExecStart=/usr/local/bin/hotline serve"),
        "{unit}"
    );
    let bin = dir.join("hotline");
    std::os::unix::fs::symlink(hotline_bin(), &bin).unwrap();
    let path = dir.join("hotline.service");
    fs::write(
        &path,
        unit.replace("/usr/local/bin/hotline", bin.to_str().unwrap()),
    )
    .unwrap();
    path
}

#[test]
fn systemd_unit_verifies() {
    let tool = require("systemd-analyze", "systemd");
    let dir = tempdir();
    let unit = unit_for_verify(dir.path());
    let out = run(Command::new(&tool).arg("verify").arg(&unit));
    assert_ok(&out, "systemd-analyze verify deploy/hotline.service");
    // verify reports unknown keys and bad values as warnings with status 0.
    let complaints: Vec<String> = text(&out.stderr)
        .lines()
        .chain(text(&out.stdout).lines())
        .filter(|l| l.contains("hotline.service"))
        .map(str::to_string)
        .collect();
    assert!(complaints.is_empty(), "{complaints:#?}");
}

#[test]
fn systemd_unit_is_sandboxed() {
    let tool = require("systemd-analyze", "systemd");
    let dir = tempdir();
    let unit = unit_for_verify(dir.path());
    // The threshold counts tenths: 20 is an overall exposure of 2.0 ("OK").
    let out = run(Command::new(&tool)
        .args(["security", "--offline=yes", "--threshold=20"])
        .arg(&unit)
        .env("SYSTEMD_COLORS", "0"));
    assert_ok(&out, "systemd-analyze security (exposure at most 2.0)");

    let shipped = read(&deploy("hotline.service"));
    for directive in [
        "ProtectSystem=strict",
        "StateDirectory=hotline",
        "WorkingDirectory=/var/lib/hotline",
        "ReadWritePaths=/var/lib/hotline",
        "PrivateDevices=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
        "MemoryDenyWriteExecute=yes",
        "LockPersonality=yes",
        "RestrictNamespaces=yes",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
    ] {
        assert!(
            shipped.lines().any(|l| l == directive),
            "deploy/hotline.service lost `{directive}`"
        );
    }
}

#[test]
fn systemd_exec_lines_run_against_the_credential() {
    // ExecStartPre and ExecStart name the configuration as %d/hotline.toml,
    // systemd's credentials directory: run the check exactly as systemd
    // would, with %d pointing at a directory holding the default config.
    let unit = read(&deploy("hotline.service"));
    let dir = tempdir();
    fs::copy(
        repo().join("config/hotline.toml"),
        dir.path().join("hotline.toml"),
    )
    .unwrap();
    let pre = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStartPre="))
        .expect("ExecStartPre");
    let load = unit
        .lines()
        .find_map(|l| l.strip_prefix("LoadCredential="))
        .expect("LoadCredential");
    assert_eq!(load, "hotline.toml:/etc/hotline/hotline.toml");
    let args: Vec<String> = pre
        .split_whitespace()
        .skip(1)
        .map(|a| a.replace("%d", dir.path().to_str().unwrap()))
        .collect();
    let out = run(hotline_command().args(&args).current_dir(dir.path()));
    assert_ok(&out, &format!("ExecStartPre: hotline {}", args.join(" ")));
}

// ---------------------------------------------------------------------------
// Kamailio

fn kamailio_defines(list: &Path) -> Vec<String> {
    vec![
        "-A".into(),
        format!("DISPATCHER_LIST=\"{}\"", list.display()),
    ]
}

#[test]
fn kamailio_config_checks() {
    let tool = require("kamailio", "kamailio");
    let cfg = deploy("kamailio/kamailio.cfg");
    let list = deploy("kamailio/dispatcher.list");
    for extra in [&[][..], &["-A", "PRIVATE_ADDR=127.0.0.2"][..]] {
        let out = run(Command::new(&tool)
            .arg("-c")
            .arg("-f")
            .arg(&cfg)
            .args(kamailio_defines(&list))
            .args(extra));
        assert_ok(
            &out,
            &format!("kamailio -c -f deploy/kamailio/kamailio.cfg {extra:?}"),
        );
        let all = text(&out.stdout) + &text(&out.stderr);
        assert!(all.contains("config file ok"), "{all}");
    }
}

#[test]
fn dispatcher_list_names_hotline_nodes() {
    let list = read(&deploy("kamailio/dispatcher.list"));
    let cfg = read(&deploy("kamailio/kamailio.cfg"));
    let set_re = Regex::new(r"(?m)^#!define HOTLINE_SET (\d+)$").unwrap();
    let set = set_re.captures(&cfg).expect("HOTLINE_SET")[1].to_string();
    let mut nodes = 0;
    for line in list.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert!((2..=5).contains(&fields.len()), "`{line}`");
        fields[0].parse::<u32>().expect("set id");
        let uri = fields[1]
            .strip_prefix("sip:")
            .unwrap_or_else(|| panic!("`{line}`: not a sip: URI"));
        uri.parse::<SocketAddr>()
            .unwrap_or_else(|e| panic!("`{line}`: {uri}: {e}"));
        for number in &fields[2..fields.len().min(4)] {
            number
                .parse::<i32>()
                .expect("flags and priority are numbers");
        }
        if fields[0] == set {
            nodes += 1;
        }
    }
    assert!(nodes >= 1, "no node in set {set}");
}

/// A fake node: answers OPTIONS with 200, and INVITEs with `invite_status`
/// (None: never answers). Counts the INVITEs it sees.
struct FakeNode {
    addr: SocketAddr,
    invites: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeNode {
    fn start(invite_status: Option<&'static str>) -> FakeNode {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let invites = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, done) = (invites.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !done.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let Some(msg) = SipMsg::parse(&buf[..n]) else {
                    continue;
                };
                let status = match msg.method() {
                    Some("OPTIONS") => Some("200 OK"),
                    Some("INVITE") => {
                        seen.fetch_add(1, Ordering::Relaxed);
                        invite_status
                    }
                    _ => None,
                };
                if let Some(status) = status {
                    let mut reply = format!("SIP/2.0 {status}\r\n");
                    for via in msg.headers("Via") {
                        reply.push_str(&format!("Via: {via}\r\n"));
                    }
                    for name in ["From", "Call-ID", "CSeq"] {
                        reply.push_str(&format!("{name}: {}\r\n", msg.header(name).unwrap()));
                    }
                    reply.push_str(&format!("To: {};tag=fake\r\n", msg.header("To").unwrap()));
                    reply.push_str("Content-Length: 0\r\n\r\n");
                    let _ = sock.send_to(reply.as_bytes(), from);
                }
            }
        });
        FakeNode {
            addr,
            invites,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A Kamailio process, stopped (SIGTERM to its main process, which ends its
/// workers) when dropped.
struct Kamailio {
    child: Child,
    log: PathBuf,
}

impl Kamailio {
    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            sigterm(self.child.id());
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn kamailio_moves_a_call_past_failed_nodes_to_hotline() {
    let tool = require("kamailio", "kamailio");
    let mut server = Server::start(TestConfig::new());
    // Tried in priority order: one refuses (503), one never answers, then
    // the real hotline.
    let refusing = FakeNode::start(Some("503 Service Unavailable"));
    let silent = FakeNode::start(None);
    let dir = tempdir();
    let list = dir.path().join("dispatcher.list");
    fs::write(
        &list,
        format!(
            "1 sip:{} 0 30\n1 sip:{} 0 20\n1 sip:{} 0 10\n",
            refusing.addr,
            silent.addr,
            server.sip_addr()
        ),
    )
    .unwrap();
    let port = free_port();
    let log = dir.path().join("kamailio.log");
    let child = Command::new(&tool)
        .arg("-f")
        .arg(deploy("kamailio/kamailio.cfg"))
        .args(["-DD", "-E", "-m", "32", "-M", "8", "-Y"])
        .arg(dir.path())
        .args(["-A", &format!("SIP_PORT={port}")])
        .args(["-A", "NODE_TIMEOUT_MS=1000"])
        .args(kamailio_defines(&list))
        .stdin(Stdio::null())
        .stdout(fs::File::create(&log).unwrap())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .expect("start kamailio");
    let mut kamailio = Kamailio { child, log };
    let edge: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    // Kamailio answers OPTIONS to itself once it is up.
    let client = UdpClient {
        sock: UdpSocket::bind("127.0.0.1:0").unwrap(),
        server: edge,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(st)) = kamailio.child.try_wait() {
            panic!("kamailio exited ({st}):\n{}", kamailio.log());
        }
        let mut probe = client.dialog();
        if client
            .transact(&probe.options())
            .is_some_and(|r| r.status() == Some(200))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "kamailio not up:\n{}",
            kamailio.log()
        );
    }

    let mut dialog = client.dialog();
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let invite = dialog.request(
        "INVITE",
        &format!("sip:401@{edge}"),
        "401",
        &[
            format!("Contact: <sip:caller@{}>", client.local()),
            "Content-Type: application/sdp".into(),
        ],
        &sdp_offer(rtp.local_addr().unwrap(), "0", ""),
    );
    client.send(&invite);
    let ok = client
        .final_response("INVITE", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no final answer to the INVITE\n{}", kamailio.log()));
    assert_eq!(ok.status(), Some(200), "{}\n{}", ok.raw, kamailio.log());
    assert_eq!(
        refusing.invites.load(Ordering::Relaxed),
        1,
        "the 503 node was tried first"
    );
    assert!(
        silent.invites.load(Ordering::Relaxed) >= 1,
        "the silent node was tried next"
    );
    let contact = ok.contacts().first().expect("a Contact").0.clone();
    assert!(
        contact.contains(&server.sip_addr().to_string()),
        "hotline answered: {contact}"
    );
    let record_route = ok.header_list("Record-Route");
    assert!(
        record_route.iter().any(|r| r.contains(&edge.to_string())),
        "Kamailio record-routes: {record_route:?}"
    );

    // ACK and BYE go to Kamailio with the recorded route, and on to hotline.
    let to = ok.header("To").unwrap().to_string();
    let routes: String = record_route
        .iter()
        .rev()
        .map(|r| format!("Route: {r}\r\n"))
        .collect();
    let in_dialog = |method: &str, cseq: u32| {
        format!(
            "{method} {contact} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch={};rport\r\nMax-Forwards: 70\r\n{routes}From: <sip:401@{}>;tag={}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
            client.local(),
            Dialog::branch(),
            edge.ip(),
            dialog.from_tag,
            dialog.call_id,
        )
    };
    client.send(in_dialog("ACK", dialog.cseq));
    server.wait_event(
        &[
            "\"type\":\"call_answered\"",
            &format!("\"call_id\":\"{}\"", dialog.call_id),
        ],
        Duration::from_secs(5),
    );

    // A forged in-dialog request: a To-tag and a Route naming Kamailio, but
    // no dialog it set up, its Request-URI a number behind another node.
    // Kamailio must refuse it, not relay it.
    let target = FakeNode::start(Some("200 OK"));
    let forged = |route: &str| {
        format!(
            "INVITE sip:+19005550100@{} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch={};rport\r\nMax-Forwards: 70\r\nRoute: {route}\r\nFrom: <sip:401@{}>;tag=forged\r\nTo: <sip:+19005550100@{}>;tag=forged-to\r\nCall-ID: forged-{}\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@{}>\r\nContent-Length: 0\r\n\r\n",
            target.addr,
            client.local(),
            Dialog::branch(),
            edge.ip(),
            edge.ip(),
            Dialog::branch(),
            client.local(),
        )
    };
    // With a bare Route, and with the real call's Record-Route copied.
    let copied = record_route.first().cloned().unwrap_or_default();
    for route in [format!("<sip:{edge};lr>"), copied] {
        let refused = client.transact(&forged(&route));
        assert_status(
            &refused,
            403,
            &format!("forged in-dialog INVITE via {route}"),
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        target.invites.load(Ordering::Relaxed),
        0,
        "Kamailio relayed a request of no dialog it knows:\n{}",
        kamailio.log()
    );

    let bye = client.transact(&in_dialog("BYE", dialog.cseq + 1));
    assert_status(&bye, 200, "BYE through Kamailio");
    server.assert_alive();
}

// ---------------------------------------------------------------------------
// Kubernetes

fn k8s_documents() -> Vec<(String, Value)> {
    let dir = deploy("kubernetes");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in deploy/kubernetes");
    let mut docs = Vec::new();
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        for doc in yaml_documents(&file) {
            docs.push((name.clone(), doc));
        }
    }
    docs
}

fn find<'a>(docs: &'a [(String, Value)], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .map(|(_, d)| d)
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn labels_match(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| labels[k] == *v))
}

#[test]
fn kubernetes_manifests_parse_and_fit_together() {
    let docs = k8s_documents();
    for (file, doc) in &docs {
        for key in ["apiVersion", "kind"] {
            assert!(
                doc[key].as_str().is_some_and(|s| !s.is_empty()),
                "{file}: no {key}"
            );
        }
        assert!(
            doc["metadata"]["name"].is_string(),
            "{file}: no metadata.name"
        );
        assert!(
            doc["metadata"]["namespace"].is_null(),
            "{file}: the manifests leave the namespace to kubectl -n"
        );
    }
    let set = docs
        .iter()
        .map(|(_, d)| d)
        .find(|d| d["kind"] == "StatefulSet")
        .expect("a StatefulSet");
    let spec = &set["spec"];
    let pod = &spec["template"]["spec"];
    let pod_labels = &spec["template"]["metadata"]["labels"];
    assert!(labels_match(&spec["selector"]["matchLabels"], pod_labels));
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");

    // The governing Service is headless.
    let governing = find(&docs, "Service", spec["serviceName"].as_str().unwrap());
    assert_eq!(governing["spec"]["clusterIP"], "None");

    let container = &pod["containers"][0];
    let ports = container["ports"].as_array().unwrap();
    let port_names: BTreeSet<&str> = ports.iter().filter_map(|p| p["name"].as_str()).collect();
    let has = |n: u64, proto: &str| {
        ports
            .iter()
            .any(|p| p["containerPort"] == n && p["protocol"] == proto)
    };
    assert!(
        has(5060, "UDP") && has(5060, "TCP") && has(8080, "TCP"),
        "{ports:?}"
    );
    for probe in ["readinessProbe", "livenessProbe"] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], "/healthz", "{probe}");
        assert!(
            port_names.contains(get["port"].as_str().unwrap()),
            "{probe} port"
        );
    }

    // The call-record database lives on a claimed volume, in the working
    // directory.
    assert_eq!(container["workingDir"], "/var/lib/hotline");
    let claims: Vec<&str> = spec["volumeClaimTemplates"]
        .as_array()
        .expect("volumeClaimTemplates")
        .iter()
        .map(|c| c["metadata"]["name"].as_str().unwrap())
        .collect();
    let mounts = container["volumeMounts"].as_array().unwrap();
    let data = mounts
        .iter()
        .find(|m| m["mountPath"] == "/var/lib/hotline")
        .expect("a volume at /var/lib/hotline");
    assert!(
        claims.contains(&data["name"].as_str().unwrap()),
        "{claims:?}"
    );
    let config_mount = mounts
        .iter()
        .find(|m| m["mountPath"] == "/etc/hotline")
        .expect("the config at /etc/hotline");
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == config_mount["name"])
        .expect("the config volume");
    find(
        &docs,
        "ConfigMap",
        volume["configMap"]["name"].as_str().unwrap(),
    );
    assert_eq!(
        container["args"],
        serde_json::json!(["serve", "--config", "/etc/hotline/hotline.toml"])
    );

    // Services select the pod and name its ports.
    for (file, svc) in docs.iter().filter(|(_, d)| d["kind"] == "Service") {
        assert!(labels_match(&svc["spec"]["selector"], pod_labels), "{file}");
        for p in svc["spec"]["ports"].as_array().unwrap() {
            let target = p["targetPort"].as_str().expect("named targetPort");
            assert!(port_names.contains(target), "{file}: {target}");
        }
    }
}

#[test]
fn kubernetes_config_passes_check_config_with_the_pod_environment() {
    let docs = k8s_documents();
    let set = docs
        .iter()
        .map(|(_, d)| d)
        .find(|d| d["kind"] == "StatefulSet")
        .unwrap();
    let container = &set["spec"]["template"]["spec"]["containers"][0];
    let volume = set["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["configMap"].is_object())
        .unwrap();
    let map = find(
        &docs,
        "ConfigMap",
        volume["configMap"]["name"].as_str().unwrap(),
    );
    let toml = map["data"]["hotline.toml"]
        .as_str()
        .expect("data hotline.toml");

    // The container's environment as the kubelet builds it: fieldRefs (the
    // pod's address) become 127.0.0.1, $(VAR) refers to earlier variables.
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for var in container["env"].as_array().unwrap() {
        let name = var["name"].as_str().unwrap().to_string();
        let value = match var["value"].as_str() {
            Some(v) => {
                let mut v = v.to_string();
                for (k, val) in &env {
                    v = v.replace(&format!("$({k})"), val);
                }
                v
            }
            None => "127.0.0.1".to_string(),
        };
        env.insert(name, value);
    }
    env.retain(|k, _| k.starts_with("HOTLINE__"));
    // The agents' passwords come from the Secret.
    let agent_re = Regex::new(r#"(?m)^\[agents\."([^"]+)"\]"#).unwrap();
    for agent in agent_re.captures_iter(toml) {
        env.insert(
            format!("HOTLINE__AGENTS__{}__PASSWORD", &agent[1]),
            "from-the-secret".into(),
        );
    }
    let dir = tempdir();
    let path = dir.path().join("hotline.toml");
    fs::write(&path, toml).unwrap();
    let out = check_config(&path, &env);
    assert_ok(
        &out,
        &format!("hotline check-config on the ConfigMap with {env:?}"),
    );
    let summary = text(&out.stdout);
    assert!(
        summary.contains("udp 0.0.0.0:5060 tcp 0.0.0.0:5060"),
        "{summary}"
    );
    assert!(summary.contains("http 127.0.0.1:8080"), "{summary}");
    // Trunks are admitted by source address alone: each one names specific
    // addresses, never a whole private range of the cluster.
    let settings = hotline::config::Settings::from_toml(toml, "configmap", &env)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!settings.trunks.is_empty());
    for trunk in &settings.trunks {
        for net in &trunk.sources {
            let narrowest = if net.addr().is_ipv4() { 24 } else { 64 };
            assert!(
                net.prefix_len() >= narrowest,
                "trunk {} trusts all of {net} as a carrier",
                trunk.name
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Docker

/// Dockerfile instructions (continuation lines joined, comments dropped).
fn dockerfile() -> Vec<(String, String)> {
    let body = read(&deploy("Dockerfile"));
    let mut out = Vec::new();
    let mut current = String::new();
    for line in body.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (op, rest) = current.split_once(' ').unwrap_or((&current, ""));
        out.push((op.to_ascii_uppercase(), rest.trim().to_string()));
        current.clear();
    }
    out
}

fn docker_env() -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for (op, args) in dockerfile() {
        if op == "ENV" {
            for pair in args.split_whitespace() {
                let (k, v) = pair.split_once('=').expect("ENV key=value");
                env.insert(k.to_string(), v.trim_matches('"').to_string());
            }
        }
    }
    env
}

#[test]
fn dockerfile_builds_from_the_repository_and_runs_unprivileged() {
    let steps = dockerfile();
    let args_of = |op: &str| -> Vec<String> {
        steps
            .iter()
            .filter(|(o, _)| o == op)
            .map(|(_, a)| a.clone())
            .collect()
    };
    let froms = args_of("FROM");
    assert_eq!(
        froms.first().map(String::as_str),
        Some("rust:1-bookworm AS build")
    );
    assert_eq!(
        froms.last().map(String::as_str),
        Some("debian:bookworm-slim")
    );
    assert!(
        args_of("RUN")
            .iter()
            .any(|r| r.contains("cargo build --release --locked")),
        "the build stage runs cargo build --release --locked"
    );
    // Everything copied from the build context exists in the repository.
    for copy in args_of("COPY") {
        let parts: Vec<&str> = copy.split_whitespace().collect();
        if parts[0].starts_with("--from=") {
            continue;
        }
        for source in &parts[..parts.len() - 1] {
            assert!(
                repo().join(source).exists(),
                "COPY {source}: not in the repository"
            );
        }
    }
    assert!(args_of("COPY").contains(&"config/hotline.toml /etc/hotline/hotline.toml".to_string()));
    let user = args_of("USER").pop().expect("a USER");
    let uid = user.split(':').next().unwrap();
    assert!(
        uid.parse::<u32>().is_ok_and(|u| u != 0),
        "USER {user}: numeric, not root"
    );
    let exposed: BTreeSet<String> = args_of("EXPOSE")
        .iter()
        .flat_map(|e| e.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .collect();
    let want: BTreeSet<String> = ["5060/udp", "5060/tcp", "8080/tcp", "10000-20000/udp"]
        .map(String::from)
        .into();
    assert_eq!(exposed, want);
    assert!(
        args_of("VOLUME")
            .iter()
            .any(|v| v.contains("\"/var/lib/hotline\""))
    );
    assert_eq!(
        args_of("WORKDIR").pop().as_deref(),
        Some("/var/lib/hotline")
    );
    let env = docker_env();
    for (k, v) in [
        ("HOTLINE__SIP__UDP", "0.0.0.0:5060"),
        ("HOTLINE__SIP__TCP", "0.0.0.0:5060"),
        ("HOTLINE__HTTP__LISTEN", "0.0.0.0:8080"),
    ] {
        assert_eq!(env.get(k).map(String::as_str), Some(v), "ENV {k}");
    }
    let ignore = read(&repo().join(".dockerignore"));
    assert!(
        ignore
            .lines()
            .any(|l| l.trim() == "target/" || l.trim() == "target"),
        ".dockerignore must leave target/ out of the build context"
    );
}

#[test]
fn dockerfile_environment_passes_check_config() {
    let mut env = docker_env();
    env.insert("HOTLINE__SIP__EXTERNAL".into(), "192.0.2.10:5060".into());
    // The image's own (demo) configuration holds public secrets: refused on
    // the image's 0.0.0.0 listeners, every key named.
    let out = check_config(&repo().join("config/hotline.toml"), &env);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    for key in ["agents.1001.password", "api.tokens.demo-admin.sha256"] {
        assert!(text(&out.stderr).contains(key), "{}", text(&out.stderr));
    }
    // Every secret given in the environment: it starts.
    for id in 1001..=1004 {
        env.insert(
            format!("HOTLINE__AGENTS__{id}__PASSWORD"),
            format!("own-secret-{id}"),
        );
    }
    for token in ["DEMO-ADMIN", "DEMO-SUPERVISOR", "DEMO-AGENT-1001"] {
        env.insert(
            format!("HOTLINE__API__TOKENS__{token}__SHA256"),
            "ab".repeat(32),
        );
    }
    let out = check_config(&repo().join("config/hotline.toml"), &env);
    assert_ok(&out, "check-config with the image's environment");
    assert!(
        text(&out.stdout).contains("udp 0.0.0.0:5060"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn dockerfile_healthcheck_reports_the_server_state() {
    let check = dockerfile()
        .into_iter()
        .find(|(op, _)| op == "HEALTHCHECK")
        .map(|(_, args)| args)
        .expect("a HEALTHCHECK");
    let command = check
        .split_once("CMD ")
        .expect("HEALTHCHECK ... CMD command")
        .1
        .to_string();
    let server = Server::start(TestConfig::new().http(true));
    let port = server.http_port.unwrap();
    let healthy = |listen: String| {
        Command::new("sh")
            .args(["-c", &command])
            .env("HOTLINE__HTTP__LISTEN", listen)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    assert!(
        healthy(format!("0.0.0.0:{port}")),
        "healthy server: `{command}`"
    );
    let nobody = free_port();
    assert!(
        !healthy(format!("0.0.0.0:{nobody}")),
        "no server on {nobody}"
    );
}

// ---------------------------------------------------------------------------
// The operator's guide

#[test]
fn readme_documents_ports_alerts_and_the_service_level() {
    let readme = read(&deploy("README.md"));
    for needle in ALERTS.iter().copied().chain([
        SERVICE_LEVEL_RULE,
        "5060",
        "8080",
        "10000",
        "20000",
        "hostNetwork",
        "HOTLINE__SIP__EXTERNAL",
        "/var/lib/hotline",
    ]) {
        assert!(
            readme.contains(needle),
            "deploy/README.md does not mention {needle}"
        );
    }
    for file in [
        "hotline.service",
        "Dockerfile",
        "kubernetes/",
        "prometheus/prometheus.yml",
        "prometheus/rules.yml",
        "prometheus/rules_test.yml",
        "grafana/hotline-dashboard.json",
        "kamailio/kamailio.cfg",
        "kamailio/dispatcher.list",
    ] {
        assert!(deploy(file).exists(), "deploy/{file} is missing");
        assert!(
            readme.contains(file),
            "deploy/README.md does not explain {file}"
        );
    }
}
