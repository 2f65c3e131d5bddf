//! The typed configuration of hotline.
//!
//! Owns loading (TOML file, or the embedded default, plus `HOTLINE__SECTION__KEY`
//! environment overrides through the `config` crate), the serde types that mirror
//! `config/hotline.toml` (unknown keys are errors), and validation into [`Settings`],
//! the checked form the rest of the server runs on. Every problem found is reported
//! with the key and the file it came from; validation collects all of them at once.

pub mod ivr;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

/// The default configuration, compiled into the binary so `hotline serve` runs anywhere.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../config/hotline.toml");

/// Where `serve` and `check-config` look when no `--config` is given.
pub const DEFAULT_PATH: &str = "config/hotline.toml";

/// Prefix of environment overrides: `HOTLINE__SIP__UDP=0.0.0.0:5060`.
pub const ENV_PREFIX: &str = "HOTLINE";

/// One problem in a configuration: which key, in which source, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub key: String,
    pub message: String,
}

/// Everything wrong with one configuration source.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", render_issues(origin, issues))]
    Invalid {
        origin: String,
        issues: Vec<ConfigIssue>,
    },
}

impl ConfigError {
    /// The individual problems (empty for a file that could not be read).
    pub fn issues(&self) -> &[ConfigIssue] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid { issues, .. } => issues,
        }
    }
}

fn render_issues(origin: &str, issues: &[ConfigIssue]) -> String {
    let mut out = String::new();
    for (i, issue) in issues.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("{origin}: key `{}`: {}", issue.key, issue.message));
    }
    out
}

/// The raw configuration, exactly as written in TOML.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub sip: RawSip,
    pub registrar: RawRegistrar,
    pub auth: RawAuth,
    pub http: RawHttp,
    pub log: RawLog,
    pub trunks: BTreeMap<String, RawTrunk>,
    pub numbers: BTreeMap<String, RawNumber>,
    pub agents: BTreeMap<String, RawAgent>,
    pub media: RawMedia,
    pub ivr: BTreeMap<String, ivr::Flow>,
    pub blocklist: RawBlocklist,
    pub queues: BTreeMap<String, RawQueue>,
    pub acd: RawAcd,
    pub store: RawStore,
    pub metrics: RawMetrics,
    pub api: RawApi,
    pub recording: RawRecording,
    pub monitor: RawMonitor,
    pub limits: RawLimits,
    pub demo: RawDemo,
}

/// `[demo]`: the demo's own services, and whether its secrets may face a
/// network.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDemo {
    /// Serve the demo account service `GET /demo/balance`.
    pub balance_service: bool,
    /// Start even though a listener is off loopback while a password or API
    /// token of the demo configuration is configured.
    pub allow_demo_credentials: bool,
}

/// `[demo]`, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DemoSettings {
    pub balance_service: bool,
    pub allow_demo_credentials: bool,
}

/// Why `serve` refuses a configuration that exposes demo secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{origin}: refusing to start: {listeners} not on loopback while these keys hold the demo configuration's public secrets: {keys}. \
Set your own (mount your configuration, or set e.g. HOTLINE__AGENTS__1001__PASSWORD in the environment), \
or set [demo] allow_demo_credentials = true to run the demo anyway",
    keys = keys.join(", "),
    listeners = listeners.join(", ")
)]
pub struct DemoExposure {
    pub origin: String,
    /// The listeners off loopback, as "key (address)".
    pub listeners: Vec<String>,
    /// Every key holding a demo secret.
    pub keys: Vec<String>,
}

/// `[monitor]`: supervisors joining live calls from their phones.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMonitor {
    pub supervisors: Vec<String>,
    pub listen_code: String,
    pub whisper_code: String,
    pub barge_code: String,
    /// Per supervisor phone, the queues whose agents it may monitor.
    pub queues: BTreeMap<String, Vec<String>>,
}

impl Default for RawMonitor {
    fn default() -> Self {
        Self {
            supervisors: Vec::new(),
            listen_code: "*41".into(),
            whisper_code: "*42".into(),
            barge_code: "*43".into(),
            queues: BTreeMap::new(),
        }
    }
}

impl RawMonitor {
    fn check(
        &self,
        agents: &BTreeMap<String, Agent>,
        queues: &BTreeMap<String, Queue>,
        issues: &mut Vec<ConfigIssue>,
    ) -> MonitorSettings {
        for (phone, scope) in &self.queues {
            if !self.supervisors.iter().any(|s| s.trim() == phone) {
                issues.push(ConfigIssue {
                    key: format!("monitor.queues.{phone}"),
                    message: format!("{phone:?} is not listed in monitor.supervisors"),
                });
            }
            for (i, queue) in scope.iter().enumerate() {
                if !queues.contains_key(queue) {
                    issues.push(ConfigIssue {
                        key: format!("monitor.queues.{phone}[{i}]"),
                        message: format!("`{queue}` is not a queue (not under [queues])"),
                    });
                }
            }
        }
        for (i, account) in self.supervisors.iter().enumerate() {
            if !agents.contains_key(account.trim()) {
                issues.push(ConfigIssue {
                    key: format!("monitor.supervisors[{i}]"),
                    message: format!(
                        "{account:?} is not a phone account: add it under [agents.\"{account}\"]"
                    ),
                });
            }
        }
        let codes = [
            ("monitor.listen_code", &self.listen_code),
            ("monitor.whisper_code", &self.whisper_code),
            ("monitor.barge_code", &self.barge_code),
        ];
        for (key, code) in codes {
            let valid = !code.is_empty()
                && code
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == '*' || c == '#');
            if !valid {
                issues.push(ConfigIssue {
                    key: key.into(),
                    message: format!(
                        "{code:?} must be keypad characters (0-9, * and #), e.g. \"*41\""
                    ),
                });
            }
        }
        for (i, (key, code)) in codes.iter().enumerate() {
            if let Some((other, _)) = codes[..i]
                .iter()
                .find(|(_, c)| c.starts_with(code.as_str()) || code.starts_with(c.as_str()))
            {
                issues.push(ConfigIssue {
                    key: (*key).into(),
                    message: format!(
                        "{code:?} overlaps {other}: each code must be told apart from the others"
                    ),
                });
            }
        }
        let supervisors: std::collections::BTreeSet<String> = self
            .supervisors
            .iter()
            .map(|s| s.trim().to_string())
            .collect();
        let scopes = supervisors
            .iter()
            .map(|phone| {
                let scope = self.queues.get(phone).cloned().unwrap_or_else(|| {
                    agents
                        .get(phone)
                        .map(|a| a.queues.clone())
                        .unwrap_or_default()
                });
                (phone.clone(), scope)
            })
            .collect();
        MonitorSettings {
            supervisors,
            scopes,
            listen_code: self.listen_code.clone(),
            whisper_code: self.whisper_code.clone(),
            barge_code: self.barge_code.clone(),
        }
    }
}

/// `[monitor]`: who may monitor live calls from a phone, and the feature codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorSettings {
    /// Phone accounts allowed to dial the feature codes.
    pub supervisors: std::collections::BTreeSet<String>,
    /// Per supervisor phone, the queues whose agents its feature codes
    /// reach (`monitor.queues`, else the phone account's own `queues`).
    pub scopes: BTreeMap<String, Vec<String>>,
    pub listen_code: String,
    pub whisper_code: String,
    pub barge_code: String,
}

impl Default for MonitorSettings {
    /// The documented defaults.
    fn default() -> Self {
        let mut issues = Vec::new();
        RawMonitor::default().check(&BTreeMap::new(), &BTreeMap::new(), &mut issues)
    }
}

impl MonitorSettings {
    /// Whether `supervisor`'s phone may monitor an agent serving
    /// `agent_queues`: one of them must be in the supervisor's scope.
    pub fn may_monitor(&self, supervisor: &str, agent_queues: &[String]) -> bool {
        self.supervisors.contains(supervisor)
            && self
                .scopes
                .get(supervisor)
                .is_some_and(|scope| agent_queues.iter().any(|q| scope.contains(q)))
    }
}

/// `[api]`: the CTI API's tokens and not-ready reasons.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawApi {
    pub not_ready_reasons: Vec<String>,
    pub tokens: BTreeMap<String, RawApiToken>,
    pub max_failed_sources: usize,
    pub journal_max_bytes: usize,
    pub journal_entry_max_bytes: usize,
}

impl Default for RawApi {
    fn default() -> Self {
        let limits = ApiLimits::default();
        Self {
            not_ready_reasons: ["break", "lunch", "training", "meeting", "after-call-work"]
                .map(String::from)
                .to_vec(),
            tokens: BTreeMap::new(),
            max_failed_sources: limits.max_failed_sources,
            journal_max_bytes: limits.journal_max_bytes,
            journal_entry_max_bytes: limits.journal_entry_max_bytes,
        }
    }
}

/// The API's memory bounds (`api.max_failed_sources`, `api.journal_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiLimits {
    /// Source addresses the failed-authentication table holds at most.
    pub max_failed_sources: usize,
    /// Bytes of event JSON the live-event journal holds at most.
    pub journal_max_bytes: usize,
    /// Largest journal entry; a larger event is kept with its long texts
    /// cut short.
    pub journal_entry_max_bytes: usize,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            max_failed_sources: 10_000,
            journal_max_bytes: 16 * 1024 * 1024,
            journal_entry_max_bytes: 8 * 1024,
        }
    }
}

/// `[api.tokens.NAME]`: one bearer token, stored as its SHA-256.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawApiToken {
    pub role: String,
    pub agent: String,
    pub queues: Vec<String>,
    pub sha256: String,
    /// Supervisor tokens: the phone accounts the API may ring for them.
    pub phones: Vec<String>,
}

/// Who a CTI token speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiRole {
    /// One agent: itself and its own calls.
    Agent,
    /// The agents and calls of some queues.
    Supervisor,
    /// Everything.
    Admin,
}

impl ApiRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ApiRole::Agent => "agent",
            ApiRole::Supervisor => "supervisor",
            ApiRole::Admin => "admin",
        }
    }
}

/// One configured token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    pub name: String,
    pub role: ApiRole,
    /// The agent an `agent` token is bound to.
    pub agent: Option<String>,
    /// The queues a `supervisor` token supervises.
    pub queues: Vec<String>,
    /// SHA-256 of the token.
    pub sha256: [u8; 32],
    /// The phones of a `supervisor` token: the only ones the API rings to
    /// monitor a call for it.
    pub phones: Vec<String>,
}

/// `[api]`, checked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApiSettings {
    pub not_ready_reasons: Vec<String>,
    pub tokens: Vec<ApiToken>,
    pub limits: ApiLimits,
}

/// `[metrics]`: what the metrics page shows beyond the defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMetrics {
    /// Series per agent (answered calls, talk time, state): one label value
    /// per agent, so off by default.
    pub per_agent: bool,
}

/// An enum of unit variants written in the config as fixed names: `ALL`, `as_str`,
/// `Display`, and a `Deserialize` whose error lists every accepted name.
macro_rules! named_values {
    ($ty:ident, $what:literal, [$($name:literal => $variant:ident),+ $(,)?]) => {
        impl $ty {
            /// Every value with its name in the config.
            pub const ALL: &'static [(&'static str, $ty)] = &[$(($name, $ty::$variant)),+];

            /// The name written in the config.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                $ty::ALL
                    .iter()
                    .find(|(name, _)| *name == text.trim())
                    .map(|(_, value)| *value)
                    .ok_or_else(|| {
                        let names: Vec<String> =
                            $ty::ALL.iter().map(|(n, _)| format!("\"{n}\"")).collect();
                        serde::de::Error::custom(format!(
                            "`{text}` is not {}: expected {}",
                            $what,
                            names.join(", ")
                        ))
                    })
            }
        }
    };
}

/// `[acd]`: how calls are offered to agents and how agents are paced.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAcd {
    /// Registering a phone logs its agent in as ready; losing the last
    /// registration logs it out.
    pub login_on_register: bool,
    pub answer_within_rings: u32,
    #[serde(with = "humantime_serde")]
    pub ring_cycle: Duration,
    pub max_no_answer: u32,
    #[serde(with = "humantime_serde")]
    pub cooldown_busy: Duration,
    #[serde(with = "humantime_serde")]
    pub cooldown_declined: Duration,
    #[serde(with = "humantime_serde")]
    pub cooldown_unreachable: Duration,
    #[serde(with = "humantime_serde")]
    pub wrap_up: Duration,
    #[serde(with = "humantime_serde")]
    pub break_limit: Duration,
    #[serde(with = "humantime_serde")]
    pub hold_limit: Duration,
    #[serde(with = "humantime_serde")]
    pub hold_warning_before: Duration,
    pub hold_action: HoldAction,
    pub queue_header: String,
    pub max_transfers: u32,
}

impl Default for RawAcd {
    fn default() -> Self {
        Self {
            login_on_register: true,
            answer_within_rings: 2,
            ring_cycle: Duration::from_secs(3),
            max_no_answer: 1,
            cooldown_busy: Duration::from_secs(10),
            cooldown_declined: Duration::from_secs(10),
            cooldown_unreachable: Duration::from_secs(30),
            wrap_up: Duration::from_secs(60),
            break_limit: Duration::from_secs(5 * 60),
            hold_limit: Duration::from_secs(30),
            hold_warning_before: Duration::from_secs(5),
            hold_action: HoldAction::Alert,
            queue_header: "X-Hotline-Queue".into(),
            max_transfers: 2,
        }
    }
}

impl RawAcd {
    /// The settings as written, unchecked (see [`RawConfig::validate`]).
    fn resolve(&self) -> AcdSettings {
        AcdSettings {
            login_on_register: self.login_on_register,
            answer_within_rings: self.answer_within_rings,
            ring_cycle: self.ring_cycle,
            max_no_answer: self.max_no_answer,
            cooldown_busy: self.cooldown_busy,
            cooldown_declined: self.cooldown_declined,
            cooldown_unreachable: self.cooldown_unreachable,
            wrap_up: self.wrap_up,
            break_limit: self.break_limit,
            hold_limit: self.hold_limit,
            hold_warning_before: self.hold_warning_before,
            hold_action: self.hold_action,
            queue_header: self.queue_header.trim().to_string(),
            max_transfers: self.max_transfers,
        }
    }

    fn check(&self, issues: &mut Vec<ConfigIssue>) {
        let mut issue = |key: &str, message: String| {
            issues.push(ConfigIssue {
                key: format!("acd.{key}"),
                message,
            })
        };
        let show = |d: Duration| humantime::format_duration(d).to_string();
        if !(1..=10).contains(&self.answer_within_rings) {
            issue(
                "answer_within_rings",
                format!(
                    "{} is out of range: expected 1 to 10 rings",
                    self.answer_within_rings
                ),
            );
        }
        if self.ring_cycle < Duration::from_secs(1) || self.ring_cycle > Duration::from_secs(30) {
            issue(
                "ring_cycle",
                format!(
                    "{} is out of range: expected between 1s and 30s",
                    show(self.ring_cycle)
                ),
            );
        }
        if self.max_no_answer == 0 {
            issue(
                "max_no_answer",
                "must be at least 1 (missed offers in a row before the agent is made not-ready)"
                    .into(),
            );
        }
        if self.hold_limit < Duration::from_secs(1) {
            issue("hold_limit", "must be at least 1s".into());
        } else if self.hold_warning_before >= self.hold_limit {
            issue(
                "hold_warning_before",
                format!(
                    "{} must be shorter than acd.hold_limit ({}); \"0s\" gives no warning",
                    show(self.hold_warning_before),
                    show(self.hold_limit)
                ),
            );
        }
        let header = self.queue_header.trim();
        if header.is_empty() || header.len() > 64 || !header.chars().all(is_sip_token_char) {
            issue(
                "queue_header",
                format!(
                    "`{}` is not a SIP header name: 1-64 letters, digits and - . ! % * _ + ` ' ~",
                    self.queue_header
                ),
            );
        }
    }
}

/// `[store]`: where call detail records and the event log are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStore {
    pub enabled: bool,
    pub path: String,
    #[serde(with = "humantime_serde")]
    pub batch_interval: Duration,
    pub max_pending: usize,
    pub refusals_per_second: u32,
    pub retention: RawRetention,
}

impl Default for RawStore {
    fn default() -> Self {
        Self {
            enabled: true,
            path: "hotline.db".into(),
            batch_interval: Duration::from_secs(1),
            max_pending: 100_000,
            refusals_per_second: 10,
            retention: RawRetention::default(),
        }
    }
}

/// `[store.retention]`: how long events and call records are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRetention {
    /// A duration ("90d") or "forever".
    pub events: String,
    pub cdrs: String,
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
}

impl Default for RawRetention {
    fn default() -> Self {
        Self {
            events: "90d".into(),
            cdrs: "forever".into(),
            sweep_interval: Duration::from_secs(3600),
        }
    }
}

/// Shortest retention: a call live at a crash is recovered from the events
/// of its last day, and its record must not be swept meanwhile.
const MIN_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// A retention as written: "forever" (`None`) or a duration of a day or
/// more.
fn parse_retention(text: &str) -> Result<Option<Duration>, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("forever") {
        return Ok(None);
    }
    let keep = humantime::parse_duration(text).map_err(|e| {
        format!("`{text}` is not a duration (\"90d\", \"1y\") nor \"forever\": {e}")
    })?;
    if keep < MIN_RETENTION {
        return Err(format!(
            "{} is too short: at least 1 day, or \"forever\"",
            humantime::format_duration(keep)
        ));
    }
    Ok(Some(keep))
}

impl RawStore {
    /// The settings as written, unchecked (see [`RawStore::check`]).
    fn resolve(&self) -> StoreSettings {
        let defaults = RawRetention::default();
        let keep = |text: &str, default: &str| {
            parse_retention(text).unwrap_or_else(|_| parse_retention(default).unwrap_or(None))
        };
        StoreSettings {
            enabled: self.enabled,
            path: PathBuf::from(self.path.trim()),
            batch_interval: self.batch_interval,
            max_pending: self.max_pending,
            refusals_per_second: self.refusals_per_second,
            retention_events: keep(&self.retention.events, &defaults.events),
            retention_cdrs: keep(&self.retention.cdrs, &defaults.cdrs),
            retention_sweep_interval: self.retention.sweep_interval,
        }
    }

    fn check(&self, issues: &mut Vec<ConfigIssue>) {
        if self.enabled && self.path.trim().is_empty() {
            issues.push(ConfigIssue {
                key: "store.path".into(),
                message: "must name the database file, e.g. \"hotline.db\" (set store.enabled = false to keep no records)".into(),
            });
        }
        let interval = self.batch_interval;
        if interval < Duration::from_millis(100) || interval > Duration::from_secs(60) {
            issues.push(ConfigIssue {
                key: "store.batch_interval".into(),
                message: format!(
                    "{} is out of range: expected between 100ms and 60s",
                    humantime::format_duration(interval)
                ),
            });
        }
        if self.max_pending < 1_000 {
            issues.push(ConfigIssue {
                key: "store.max_pending".into(),
                message: format!("{} is too small: at least 1000 rows", self.max_pending),
            });
        }
        for (key, text) in [
            ("store.retention.events", &self.retention.events),
            ("store.retention.cdrs", &self.retention.cdrs),
        ] {
            if let Err(message) = parse_retention(text) {
                issues.push(ConfigIssue {
                    key: key.into(),
                    message,
                });
            }
        }
        let sweep = self.retention.sweep_interval;
        if sweep < Duration::from_secs(60) || sweep > Duration::from_secs(24 * 3600) {
            issues.push(ConfigIssue {
                key: "store.retention.sweep_interval".into(),
                message: format!(
                    "{} is out of range: expected between 1m and 1d",
                    humantime::format_duration(sweep)
                ),
            });
        }
    }
}

/// `[store]`: the embedded database of call detail records and events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// Whether records are kept at all.
    pub enabled: bool,
    /// The SQLite file; a relative path is taken from the working directory.
    pub path: PathBuf,
    /// How often accepted records are written (100ms-60s): after a crash,
    /// calls that ended longer ago than this are on disk.
    pub batch_interval: Duration,
    /// Rows kept in memory while the database cannot be written.
    pub max_pending: usize,
    /// Refusals (rejected INVITEs, failed authentications) stored per
    /// second at most; the rest are only counted.
    pub refusals_per_second: u32,
    /// How long events and call records are kept (`None`: forever).
    pub retention_events: Option<Duration>,
    pub retention_cdrs: Option<Duration>,
    /// How often rows past their retention are deleted.
    pub retention_sweep_interval: Duration,
}

impl Default for StoreSettings {
    /// The documented defaults.
    fn default() -> Self {
        RawStore::default().resolve()
    }
}

// --- Recording (rulebook Q1) ---------------------------------------------

/// How a bridged call's two parties are laid out in its WAV file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RecordingFormat {
    /// Two channels: the caller left, the agent right.
    #[default]
    Stereo,
    /// One channel: both parties mixed (saturating).
    Mono,
}

named_values! {
    RecordingFormat, "a recording format", [
        "stereo" => Stereo,
        "mono" => Mono,
    ]
}

/// `[recording]`: where and how bridged calls are recorded.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRecording {
    pub enabled: bool,
    pub dir: String,
    pub format: RecordingFormat,
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
}

impl Default for RawRecording {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: "recordings".into(),
            format: RecordingFormat::Stereo,
            flush_interval: Duration::from_secs(1),
        }
    }
}

impl RawRecording {
    /// The settings as written, unchecked (see [`RawRecording::check`]).
    fn resolve(&self) -> RecordingSettings {
        RecordingSettings {
            enabled: self.enabled,
            dir: PathBuf::from(self.dir.trim()),
            format: self.format,
            flush_interval: self.flush_interval,
        }
    }

    fn check(&self, issues: &mut Vec<ConfigIssue>) {
        if self.enabled && self.dir.trim().is_empty() {
            issues.push(ConfigIssue {
                key: "recording.dir".into(),
                message: "must name the directory of the recordings, e.g. \"recordings\" (set recording.enabled = false to record nothing)".into(),
            });
        }
        let interval = self.flush_interval;
        if interval < Duration::from_millis(100) || interval > Duration::from_secs(10) {
            issues.push(ConfigIssue {
                key: "recording.flush_interval".into(),
                message: format!(
                    "{} is out of range: expected between 100ms and 10s",
                    humantime::format_duration(interval)
                ),
            });
        }
    }
}

/// `[recording]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingSettings {
    /// Whether bridged calls are recorded at all (queues opt out with
    /// `record = false`).
    pub enabled: bool,
    /// Root of the recordings (`DIR/YYYY-MM-DD/CALL_ID.wav`); a relative
    /// path is taken from the working directory.
    pub dir: PathBuf,
    pub format: RecordingFormat,
    /// Longest time recorded audio waits before it reaches the file
    /// (100ms-10s): a crash loses at most this much.
    pub flush_interval: Duration,
}

impl Default for RecordingSettings {
    /// The documented defaults.
    fn default() -> Self {
        RawRecording::default().resolve()
    }
}

/// A character of an RFC 3261 `token` (header names are tokens).
fn is_sip_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '-' | '.' | '!' | '%' | '*' | '_' | '+' | '`' | '\'' | '~'
        )
}

/// What happens when a caller has been on hold for `acd.hold_limit` (rulebook L2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HoldAction {
    /// The agent is alerted; the caller stays on hold.
    #[default]
    Alert,
    /// The caller is taken off hold and reconnected to the agent.
    Resume,
    /// The caller goes back to the queue.
    Requeue,
}

named_values! {
    HoldAction, "a hold action", [
        "alert" => Alert,
        "resume" => Resume,
        "requeue" => Requeue,
    ]
}

/// How a queue chooses among the agents free to take its next caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum QueueStrategy {
    /// The agent ready (idle) the longest.
    #[default]
    LongestIdle,
    /// Agents in turn, starting after the one offered last.
    RoundRobin,
    /// The agent who has answered the fewest calls.
    FewestCalls,
    /// The agent with the least talk time.
    LeastTalkTime,
    /// Always the first free agent, in order of agent id.
    TopDown,
    /// Any free agent, at random.
    Random,
    /// Every free agent at once; the first to answer takes the call.
    RingAll,
}

named_values! {
    QueueStrategy, "a queue strategy", [
        "longest-idle" => LongestIdle,
        "round-robin" => RoundRobin,
        "fewest-calls" => FewestCalls,
        "least-talk-time" => LeastTalkTime,
        "top-down" => TopDown,
        "random" => Random,
        "ring-all" => RingAll,
    ]
}

/// Where a caller goes when its queue gives up on it (`max_wait`, a full
/// queue, no agents).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Overflow {
    /// `"hangup"`: the caller hears `overflow_prompt` (if any) and is hung up on.
    #[default]
    Hangup,
    /// `"queue:NAME"`: the caller joins another queue, keeping the time waited.
    Queue(String),
    /// `"ivr:FLOW"` or `"ivr:FLOW:NODE"`: the caller enters an IVR flow, at
    /// its start or at `node`.
    Ivr { flow: String, node: Option<String> },
}

impl Overflow {
    /// Parses the config form; the error says what is expected.
    pub fn parse(text: &str) -> Result<Overflow, String> {
        let text = text.trim();
        let bad = || {
            format!(
                "`{text}` is not an overflow target: expected \"hangup\", \"queue:NAME\", \"ivr:FLOW\" or \"ivr:FLOW:NODE\""
            )
        };
        if text == "hangup" {
            return Ok(Overflow::Hangup);
        }
        let Some((kind, rest)) = text.split_once(':') else {
            return Err(bad());
        };
        let parts: Vec<&str> = rest.split(':').map(str::trim).collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        match (kind.trim(), parts.as_slice()) {
            ("queue", [queue]) => Ok(Overflow::Queue(queue.to_string())),
            ("ivr", [flow]) => Ok(Overflow::Ivr {
                flow: flow.to_string(),
                node: None,
            }),
            ("ivr", [flow, node]) => Ok(Overflow::Ivr {
                flow: flow.to_string(),
                node: Some(node.to_string()),
            }),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Overflow {
    /// The config form: "hangup", "queue:NAME", "ivr:FLOW[:NODE]".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Overflow::Hangup => f.write_str("hangup"),
            Overflow::Queue(queue) => write!(f, "queue:{queue}"),
            Overflow::Ivr { flow, node: None } => write!(f, "ivr:{flow}"),
            Overflow::Ivr {
                flow,
                node: Some(node),
            } => write!(f, "ivr:{flow}:{node}"),
        }
    }
}

/// What a caller does on arrival when no agent serving the queue is logged in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WhenNoAgents {
    /// Waits anyway (an agent may log in).
    #[default]
    Join,
    /// Goes to the queue's `overflow` at once.
    Overflow,
}

named_values! {
    WhenNoAgents, "a choice", [
        "join" => Join,
        "overflow" => Overflow,
    ]
}

/// A queue callers wait in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawQueue {
    /// Looped while callers wait; empty means `media.music_on_hold`.
    pub music_on_hold: String,
    pub strategy: QueueStrategy,
    pub priority: u32,
    pub required_skills: BTreeMap<String, u8>,
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
    pub overflow: String,
    pub overflow_prompt: String,
    pub max_len: usize,
    pub when_no_agents: WhenNoAgents,
    pub escalation: Vec<RawEscalationStep>,
    #[serde(with = "humantime_serde")]
    pub announce_position_every: Duration,
    pub announce_agent: bool,
    #[serde(with = "humantime_serde")]
    pub callback_after: Duration,
    /// A string ("1", "#"); a bare number is accepted too.
    pub callback_key: String,
    pub min_staffed: u32,
    pub service_level_seconds: u32,
    pub record: bool,
    /// The post-call survey's IVR flow (rulebook Q3); empty: none.
    pub survey: String,
    pub survey_target: f64,
    /// Longest talk with an agent of this queue; zero: no limit.
    #[serde(with = "humantime_serde")]
    pub max_duration: Duration,
}

impl Default for RawQueue {
    fn default() -> Self {
        Self {
            music_on_hold: String::new(),
            strategy: QueueStrategy::LongestIdle,
            priority: 0,
            required_skills: BTreeMap::new(),
            max_wait: Duration::ZERO,
            overflow: "hangup".into(),
            overflow_prompt: "busy".into(),
            max_len: 0,
            when_no_agents: WhenNoAgents::Join,
            escalation: Vec::new(),
            announce_position_every: Duration::from_secs(60),
            announce_agent: true,
            callback_after: Duration::from_secs(60),
            callback_key: "1".into(),
            min_staffed: 0,
            service_level_seconds: 20,
            record: true,
            survey: String::new(),
            survey_target: 0.96,
            max_duration: Duration::ZERO,
        }
    }
}

/// `[[queues.NAME.escalation]]`: how the skill requirement relaxes with the wait.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEscalationStep {
    #[serde(with = "humantime_serde")]
    pub after: Duration,
    #[serde(default)]
    pub min_proficiency: Option<u8>,
    #[serde(default)]
    pub add_skills: Vec<String>,
}

/// What happens to a blocked caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockAction {
    /// 403 Forbidden, nothing answered.
    #[default]
    Reject,
    /// Answer, play the `blocked` prompt, hang up.
    Prompt,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawBlocklist {
    pub numbers: Vec<String>,
    pub action: BlockAction,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMedia {
    pub prompts: String,
    pub language: String,
    pub rtp_port_min: u16,
    pub rtp_port_max: u16,
    pub music_on_hold: String,
    #[serde(with = "humantime_serde")]
    pub latch_window: Duration,
    #[serde(with = "humantime_serde")]
    pub rtp_timeout: Duration,
}

impl Default for RawMedia {
    fn default() -> Self {
        Self {
            prompts: "prompts".into(),
            language: "en".into(),
            rtp_port_min: 10000,
            rtp_port_max: 20000,
            music_on_hold: "moh/default".into(),
            latch_window: Duration::from_secs(2),
            rtp_timeout: Duration::from_secs(60),
        }
    }
}

/// Media settings: where prompts live and which ports RTP may use.
#[derive(Debug, Clone)]
pub struct MediaSettings {
    /// Directory of the prompt library (relative paths are taken from the
    /// working directory).
    pub prompts: std::path::PathBuf,
    pub language: String,
    /// Even first port and last port of the RTP range (RTCP uses port + 1).
    pub rtp_port_min: u16,
    pub rtp_port_max: u16,
    pub music_on_hold: String,
    /// How long after an offer/answer a NAT'd peer's packets may latch a
    /// source other than its SDP address (0-10s).
    pub latch_window: Duration,
    /// A leg that sends no RTP this long while due to (not on hold, not
    /// muted by its SDP) ends the call; `None` = never.
    pub rtp_timeout: Option<Duration>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSip {
    pub udp: String,
    pub tcp: String,
    pub external: String,
    pub realm: String,
    pub user_agent: String,
    #[serde(with = "humantime_serde")]
    pub t1: Duration,
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    #[serde(with = "humantime_serde")]
    pub session_expires: Duration,
    #[serde(with = "humantime_serde")]
    pub min_se: Duration,
}

impl Default for RawSip {
    fn default() -> Self {
        Self {
            udp: "127.0.0.1:5060".into(),
            tcp: "127.0.0.1:5060".into(),
            external: String::new(),
            realm: "hotline".into(),
            user_agent: format!("hotline/{}", env!("CARGO_PKG_VERSION")),
            t1: Duration::from_millis(500),
            shutdown_grace: Duration::from_secs(2),
            session_expires: Duration::from_secs(1800),
            min_se: Duration::from_secs(90),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRegistrar {
    #[serde(with = "humantime_serde")]
    pub min_expires: Duration,
    #[serde(with = "humantime_serde")]
    pub max_expires: Duration,
    #[serde(with = "humantime_serde")]
    pub default_expires: Duration,
    pub max_contacts: usize,
}

impl Default for RawRegistrar {
    fn default() -> Self {
        Self {
            min_expires: Duration::from_secs(60),
            max_expires: Duration::from_secs(3600),
            default_expires: Duration::from_secs(3600),
            max_contacts: 5,
        }
    }
}

/// Digest algorithms hotline can challenge with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum DigestAlgorithm {
    #[serde(rename = "SHA-256")]
    Sha256,
    #[serde(rename = "MD5")]
    Md5,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAuth {
    pub algorithms: Vec<DigestAlgorithm>,
    #[serde(with = "humantime_serde")]
    pub nonce_ttl: Duration,
    pub max_failures: u32,
    /// Unset: 100, or max_failures when that is higher.
    pub max_failures_per_source: Option<u32>,
    #[serde(with = "humantime_serde")]
    pub failure_window: Duration,
    #[serde(with = "humantime_serde")]
    pub ban_time: Duration,
}

impl Default for RawAuth {
    fn default() -> Self {
        Self {
            algorithms: vec![DigestAlgorithm::Md5],
            nonce_ttl: Duration::from_secs(300),
            max_failures: 5,
            max_failures_per_source: None,
            failure_window: Duration::from_secs(60),
            ban_time: Duration::from_secs(300),
        }
    }
}

/// `[limits]`: ceilings that keep a flood from one place from taking the
/// service from everyone else.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    pub max_calls: usize,
    pub invite_rate: f64,
    pub invite_burst: u32,
    pub tcp_max_connections: usize,
    pub tcp_max_connections_per_source: usize,
    #[serde(with = "humantime_serde")]
    pub tcp_first_message_timeout: Duration,
    pub http_max_connections: usize,
    #[serde(with = "humantime_serde")]
    pub http_header_timeout: Duration,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_calls: 1000,
            invite_rate: 20.0,
            invite_burst: 40,
            tcp_max_connections: 1000,
            tcp_max_connections_per_source: 100,
            tcp_first_message_timeout: Duration::from_secs(10),
            http_max_connections: 256,
            http_header_timeout: Duration::from_secs(10),
        }
    }
}

/// The validated `[limits]`, with each trunk's own `max_calls`.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitsSettings {
    /// Calls up at once in total; 0: no ceiling.
    pub max_calls: usize,
    /// Per trunk name, where one is set.
    pub trunk_max_calls: BTreeMap<String, usize>,
    /// INVITEs a second from each address of a trunk's `sources`, per trunk
    /// name, where one is set (instead of `invite_rate`).
    pub trunk_invite_rate: BTreeMap<String, f64>,
    /// New INVITEs a second per source address; 0: no limit.
    pub invite_rate: f64,
    pub invite_burst: u32,
    pub tcp_max_connections: usize,
    pub tcp_max_connections_per_source: usize,
    pub tcp_first_message_timeout: Duration,
    pub http_max_connections: usize,
    pub http_header_timeout: Duration,
}

impl Default for LimitsSettings {
    fn default() -> Self {
        RawLimits::default().resolve(BTreeMap::new(), BTreeMap::new())
    }
}

impl RawLimits {
    fn resolve(
        &self,
        trunk_max_calls: BTreeMap<String, usize>,
        trunk_invite_rate: BTreeMap<String, f64>,
    ) -> LimitsSettings {
        LimitsSettings {
            max_calls: self.max_calls,
            trunk_max_calls,
            trunk_invite_rate,
            invite_rate: self.invite_rate,
            invite_burst: self.invite_burst,
            tcp_max_connections: self.tcp_max_connections,
            tcp_max_connections_per_source: self.tcp_max_connections_per_source,
            tcp_first_message_timeout: self.tcp_first_message_timeout,
            http_max_connections: self.http_max_connections,
            http_header_timeout: self.http_header_timeout,
        }
    }

    fn check(
        &self,
        trunks: &BTreeMap<String, RawTrunk>,
        issues: &mut Vec<ConfigIssue>,
    ) -> LimitsSettings {
        let mut issue = |key: &str, message: &str| {
            issues.push(ConfigIssue {
                key: key.into(),
                message: message.into(),
            })
        };
        if !self.invite_rate.is_finite() || self.invite_rate < 0.0 {
            issue(
                "limits.invite_rate",
                "must be a number of INVITEs a second, 0 or more (0: no limit)",
            );
        }
        if self.invite_burst == 0 {
            issue("limits.invite_burst", "must be at least 1");
        }
        if self.tcp_max_connections == 0 {
            issue("limits.tcp_max_connections", "must be at least 1");
        }
        if self.tcp_max_connections_per_source == 0
            || self.tcp_max_connections_per_source > self.tcp_max_connections
        {
            issue(
                "limits.tcp_max_connections_per_source",
                "must be between 1 and limits.tcp_max_connections",
            );
        }
        if self.tcp_first_message_timeout < Duration::from_millis(100) {
            issue(
                "limits.tcp_first_message_timeout",
                "must be at least 100ms (a connection that sends no complete message within it is closed)",
            );
        }
        if self.http_max_connections == 0 {
            issue("limits.http_max_connections", "must be at least 1");
        }
        if self.http_header_timeout < Duration::from_millis(100) {
            issue(
                "limits.http_header_timeout",
                "must be at least 100ms (a client that sends no complete request head within it is disconnected)",
            );
        }
        let trunk_max_calls = trunks
            .iter()
            .filter(|(_, t)| t.max_calls > 0)
            .map(|(name, t)| (name.clone(), t.max_calls))
            .collect();
        for (name, t) in trunks {
            if !t.invite_rate.is_finite() || t.invite_rate < 0.0 {
                issue(
                    &format!("trunks.{name}.invite_rate"),
                    "must be a number of INVITEs a second, 0 or more (0: limits.invite_rate applies)",
                );
            }
        }
        let trunk_invite_rate = trunks
            .iter()
            .filter(|(_, t)| t.invite_rate.is_finite() && t.invite_rate > 0.0)
            .map(|(name, t)| (name.clone(), t.invite_rate))
            .collect();
        self.resolve(trunk_max_calls, trunk_invite_rate)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHttp {
    pub listen: String,
}

impl Default for RawHttp {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    pub level: String,
    pub format: LogFormat,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTrunk {
    pub sources: Vec<String>,
    pub username: String,
    pub password: String,
    pub numbers: Vec<String>,
    pub outbound: String,
    /// The outbound dial plan and ceilings (see `crate::sip::dialplan`).
    pub country_code: String,
    pub national_prefix: String,
    pub international_prefix: String,
    pub outbound_min_digits: usize,
    pub outbound_max_digits: usize,
    pub outbound_allow: Vec<String>,
    pub max_outbound_calls: u32,
    pub max_outbound_per_hour: u32,
    /// Calls from this trunk up at once; 0: only `limits.max_calls`.
    pub max_calls: usize,
    /// New INVITEs a second from each of this trunk's `sources`; 0: the
    /// per-source `limits.invite_rate` applies.
    pub invite_rate: f64,
}

impl Default for RawTrunk {
    fn default() -> Self {
        let limits = crate::sip::dialplan::OutboundLimits::default();
        Self {
            sources: Vec::new(),
            username: String::new(),
            password: String::new(),
            numbers: Vec::new(),
            outbound: String::new(),
            country_code: "86".into(),
            national_prefix: "0".into(),
            international_prefix: "00".into(),
            outbound_min_digits: 8,
            outbound_max_digits: crate::sip::dialplan::E164_MAX_DIGITS,
            outbound_allow: crate::sip::dialplan::DEFAULT_ALLOW
                .iter()
                .map(|p| p.to_string())
                .collect(),
            max_outbound_calls: limits.max_concurrent,
            max_outbound_per_hour: limits.max_per_hour,
            max_calls: 0,
            invite_rate: 0.0,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawNumber {
    pub description: String,
    pub ivr: String,
    pub queue: String,
    pub greeting: String,
    #[serde(with = "humantime_serde")]
    pub answer_after: Duration,
    #[serde(with = "humantime_serde")]
    pub max_duration: Duration,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAgent {
    pub name: String,
    pub password: String,
    /// Queues the agent serves, in the agent's order of preference.
    pub queues: Vec<String>,
    /// Skills with proficiency 1-10, e.g. { billing = 7, english = 9 }.
    pub skills: BTreeMap<String, u8>,
}

/// The validated configuration the server runs on.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the configuration came from (a path, or "embedded default").
    pub origin: String,
    pub sip: SipSettings,
    pub registrar: RegistrarSettings,
    pub auth: AuthSettings,
    pub http_listen: Option<SocketAddr>,
    /// Series per agent on the metrics page.
    pub metrics_per_agent: bool,
    pub log: LogSettings,
    pub trunks: Vec<Trunk>,
    pub numbers: BTreeMap<String, HotlineNumber>,
    pub agents: BTreeMap<String, Agent>,
    pub media: MediaSettings,
    pub ivr: BTreeMap<String, std::sync::Arc<ivr::Flow>>,
    /// Caller numbers refused before any IVR runs (malicious or harassing callers).
    pub blocklist: std::collections::BTreeSet<String>,
    pub block_action: BlockAction,
    pub queues: BTreeMap<String, Queue>,
    /// Same as `acd.login_on_register`.
    pub login_on_register: bool,
    pub acd: AcdSettings,
    pub store: StoreSettings,
    pub api: ApiSettings,
    pub recording: RecordingSettings,
    pub monitor: MonitorSettings,
    pub limits: LimitsSettings,
    pub demo: DemoSettings,
}

impl Settings {
    /// The keys holding a password or API token shipped with the demo
    /// configuration (the embedded default): public, so never fit for a
    /// network.
    pub fn demo_secret_keys(&self) -> Vec<String> {
        let Ok(demo) = Settings::from_toml(EMBEDDED_DEFAULT, "demo", &BTreeMap::new()) else {
            return Vec::new();
        };
        let passwords: std::collections::BTreeSet<&str> = demo
            .agents
            .values()
            .map(|a| a.password.as_str())
            .chain(
                demo.trunks
                    .iter()
                    .filter_map(|t| t.credentials.as_ref().map(|c| c.password.as_str())),
            )
            .collect();
        let mut keys = Vec::new();
        for (id, agent) in &self.agents {
            if passwords.contains(agent.password.as_str()) {
                keys.push(format!("agents.{id}.password"));
            }
        }
        for trunk in &self.trunks {
            if let Some(c) = &trunk.credentials
                && passwords.contains(c.password.as_str())
            {
                keys.push(format!("trunks.{}.password", trunk.name));
            }
        }
        for token in &self.api.tokens {
            if demo.api.tokens.iter().any(|d| d.sha256 == token.sha256) {
                keys.push(format!("api.tokens.{}.sha256", token.name));
            }
        }
        keys
    }

    /// The listeners reachable from beyond this machine, as "key (address)".
    pub fn listeners_off_loopback(&self) -> Vec<String> {
        [
            ("sip.udp", self.sip.udp),
            ("sip.tcp", self.sip.tcp),
            ("http.listen", self.http_listen),
        ]
        .into_iter()
        .filter_map(|(key, addr)| {
            addr.filter(|a| !a.ip().is_loopback())
                .map(|a| format!("{key} ({a})"))
        })
        .collect()
    }

    /// Refuses demo secrets on a listener off loopback, unless
    /// `demo.allow_demo_credentials`.
    pub fn check_demo_exposure(&self) -> Result<(), DemoExposure> {
        if self.demo.allow_demo_credentials {
            return Ok(());
        }
        let listeners = self.listeners_off_loopback();
        if listeners.is_empty() {
            return Ok(());
        }
        let keys = self.demo_secret_keys();
        if keys.is_empty() {
            return Ok(());
        }
        Err(DemoExposure {
            origin: self.origin.clone(),
            listeners,
            keys,
        })
    }
}

/// `[acd]`: how calls are offered to agents and how agents are paced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcdSettings {
    /// Registering a phone logs its agent in as ready; losing the last
    /// registration logs it out.
    pub login_on_register: bool,
    /// Rings an agent has to answer an offer (rulebook L1), 1-10.
    pub answer_within_rings: u32,
    /// Length of one ring, 1s-30s; an offer lasts rings × cycle
    /// ([`AcdSettings::offer_timeout`]).
    pub ring_cycle: Duration,
    /// Offers missed in a row before the agent goes not-ready (no-answer); ≥ 1.
    pub max_no_answer: u32,
    /// How long an agent is skipped after answering an offer with busy.
    pub cooldown_busy: Duration,
    /// … after declining an offer.
    pub cooldown_declined: Duration,
    /// … after its phone could not be reached.
    pub cooldown_unreachable: Duration,
    /// After-call work before the agent is ready again (rulebook L4).
    pub wrap_up: Duration,
    /// Longest break (rulebook L7); zero = no limit.
    pub break_limit: Duration,
    /// Longest hold (rulebook L2); at least 1s.
    pub hold_limit: Duration,
    /// The agent is warned this long before `hold_limit`; zero = no
    /// warning. Always shorter than `hold_limit`.
    pub hold_warning_before: Duration,
    /// What happens at `hold_limit`.
    pub hold_action: HoldAction,
    /// Header carrying the queue name on an INVITE offering a call to an
    /// agent (a valid SIP header name).
    pub queue_header: String,
    /// Transfers a call may have (rulebook L6); a further one is refused.
    pub max_transfers: u32,
}

impl AcdSettings {
    /// How long one offer rings: `answer_within_rings` × `ring_cycle`.
    pub fn offer_timeout(&self) -> Duration {
        self.ring_cycle.saturating_mul(self.answer_within_rings)
    }
}

impl Default for AcdSettings {
    /// The documented defaults.
    fn default() -> Self {
        RawAcd::default().resolve()
    }
}

/// A queue callers wait in, with every option resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    pub name: String,
    /// Prompt name of the queue's music on hold.
    pub music_on_hold: String,
    /// How the next agent is chosen.
    pub strategy: QueueStrategy,
    /// Between queues, for callers of equal caller priority: higher first.
    pub priority: u32,
    /// Skill → minimum proficiency (1-10) an agent needs; every skill is held
    /// by at least one agent.
    pub required_skills: BTreeMap<String, u8>,
    /// Longest wait before `overflow`; `None` = no limit.
    pub max_wait: Option<Duration>,
    /// Where a caller goes after `max_wait`, from a full queue, or (with
    /// `when_no_agents = Overflow`) when no agent is logged in. A queue
    /// target exists, differs from this queue, and no chain of queue
    /// overflows loops; an IVR target's flow and node exist.
    pub overflow: Overflow,
    /// Played before a hang-up overflow and to a caller turned away from a
    /// full queue; `None` = nothing. Checked against the prompt library.
    pub overflow_prompt: Option<String>,
    /// Most callers waiting at once; `None` = unlimited.
    pub max_len: Option<usize>,
    /// What a caller does when no agent serving the queue is logged in.
    pub when_no_agents: WhenNoAgents,
    /// Skill escalation, sorted by `after`.
    pub escalation: Vec<EscalationStep>,
    /// Period of the position / estimated-wait announcement; `None` = off.
    pub announce_position_every: Option<Duration>,
    /// The caller hears "agent number N will serve you" when an agent answers.
    pub announce_agent: bool,
    /// Wait after which the caller is offered a callback (rulebook C3);
    /// `None` = never offered.
    pub callback_after: Option<Duration>,
    /// Key that accepts the callback offer: 0-9, * or #.
    pub callback_key: char,
    /// Agents the queue keeps logged in at a shift handover (rulebook C2);
    /// 0 = off. Never more than the agents serving the queue.
    pub min_staffed: u32,
    /// Answered within this wait counts toward the service level.
    pub service_level: Duration,
    /// Its bridged calls are recorded (when `recording.enabled`).
    pub record: bool,
    /// IVR flow the caller runs when the agent hangs up first (rulebook
    /// Q3); `None` = no survey. The flow exists.
    pub survey: Option<String>,
    /// Share of survey scores of 4 or 5 the queue aims at.
    pub survey_target: Ratio,
    /// Longest talk from an agent's answer: then the call ends (reason
    /// `max_duration`); `None` = no limit.
    pub max_duration: Option<Duration>,
}

/// A share between 0 and 1, checked finite at load (so it compares as a
/// total order).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Ratio(pub f64);

impl Eq for Ratio {}

impl Queue {
    /// A queue with every option at its documented default.
    pub fn new(name: &str, music_on_hold: &str) -> Queue {
        let raw = RawQueue::default();
        Queue {
            name: name.to_string(),
            music_on_hold: music_on_hold.to_string(),
            strategy: raw.strategy,
            priority: raw.priority,
            required_skills: raw.required_skills,
            max_wait: nonzero(raw.max_wait),
            overflow: Overflow::Hangup,
            overflow_prompt: Some(raw.overflow_prompt),
            max_len: (raw.max_len > 0).then_some(raw.max_len),
            when_no_agents: raw.when_no_agents,
            escalation: Vec::new(),
            announce_position_every: nonzero(raw.announce_position_every),
            announce_agent: raw.announce_agent,
            callback_after: nonzero(raw.callback_after),
            callback_key: '1',
            min_staffed: raw.min_staffed,
            service_level: Duration::from_secs(u64::from(raw.service_level_seconds)),
            record: raw.record,
            survey: None,
            survey_target: Ratio(raw.survey_target),
            max_duration: nonzero(raw.max_duration),
        }
    }
}

/// One step of a queue's skill escalation: from `after` of waiting on, the
/// requirement relaxes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscalationStep {
    /// Time the caller has waited; > 0.
    pub after: Duration,
    /// Every required skill is then satisfied at this proficiency (1-10).
    pub min_proficiency: Option<u8>,
    /// Agents holding any of these skills (at any proficiency) may take the
    /// call too. Each is held by at least one agent.
    pub add_skills: Vec<String>,
}

/// `None` for zero, the config's way of writing "off".
fn nonzero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

#[derive(Debug, Clone)]
pub struct SipSettings {
    pub udp: Option<SocketAddr>,
    pub tcp: Option<SocketAddr>,
    pub external: Option<SocketAddr>,
    pub realm: String,
    pub user_agent: String,
    pub t1: Duration,
    pub shutdown_grace: Duration,
    /// RFC 4028 session interval hotline asks for and accepts at most;
    /// `None` = no session timers.
    pub session_expires: Option<Duration>,
    /// The shortest session interval hotline accepts (`Min-SE`), ≥ 1s.
    pub min_se: Duration,
}

#[derive(Debug, Clone)]
pub struct RegistrarSettings {
    pub min_expires: Duration,
    pub max_expires: Duration,
    pub default_expires: Duration,
    pub max_contacts: usize,
}

#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub algorithms: Vec<DigestAlgorithm>,
    pub nonce_ttl: Duration,
    pub max_failures: u32,
    pub max_failures_per_source: u32,
    pub failure_window: Duration,
    pub ban_time: Duration,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub level: String,
    pub format: LogFormat,
}

/// A PBX or carrier allowed to send calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trunk {
    pub name: String,
    pub sources: Vec<IpNet>,
    pub credentials: Option<TrunkCredentials>,
    /// Numbers this trunk may dial; empty means every hotline number.
    pub numbers: Vec<String>,
    /// Where hotline sends its own calls over this trunk (callbacks); none:
    /// callers from this trunk are not offered a callback.
    pub outbound: Option<SocketAddr>,
    /// Which numbers hotline may dial over this trunk.
    pub dialplan: crate::sip::dialplan::DialPlan,
    /// Ceilings on hotline's own calls over this trunk.
    pub outbound_limits: crate::sip::dialplan::OutboundLimits,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkCredentials {
    pub username: String,
    pub password: String,
}

/// Where a hotline number sends its callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NumberTarget {
    Ivr(String),
    Queue {
        queue: String,
        greeting: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HotlineNumber {
    pub number: String,
    pub description: String,
    pub target: NumberTarget,
    pub answer_after: Duration,
    /// Longest call from hotline's answer: then it ends (reason
    /// `max_duration`); `None` = no limit.
    pub max_duration: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    pub id: String,
    pub name: String,
    pub password: String,
    pub queues: Vec<String>,
    pub skills: BTreeMap<String, u8>,
}

impl Settings {
    /// Loads from `path`, or from the embedded default when `path` is `None` and
    /// [`DEFAULT_PATH`] does not exist; environment overrides apply either way.
    pub fn load(path: Option<&Path>) -> Result<Settings, ConfigError> {
        let env = std::env::vars().collect();
        match path {
            Some(path) => Self::load_file(path, &env),
            None if Path::new(DEFAULT_PATH).exists() => {
                Self::load_file(Path::new(DEFAULT_PATH), &env)
            }
            None => Self::from_toml(EMBEDDED_DEFAULT, "embedded default config", &env),
        }
    }

    fn load_file(path: &Path, env: &BTreeMap<String, String>) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text, &path.display().to_string(), env)
    }

    /// Parses and validates TOML text; `origin` names the source in errors, `env`
    /// holds the environment variables to apply as overrides.
    pub fn from_toml(
        text: &str,
        origin: &str,
        env: &BTreeMap<String, String>,
    ) -> Result<Settings, ConfigError> {
        let invalid = |issues| ConfigError::Invalid {
            origin: origin.to_string(),
            issues,
        };
        let overrides: config::Map<String, String> = env
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let built = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix(ENV_PREFIX)
                    .prefix_separator("__")
                    .separator("__")
                    .list_separator(",")
                    .with_list_parse_key("auth.algorithms")
                    .try_parsing(true)
                    .source(Some(overrides)),
            )
            .build()
            .map_err(|e| {
                invalid(vec![ConfigIssue {
                    key: "(file)".into(),
                    message: format!("not valid TOML: {e}"),
                }])
            })?;
        let mut tree = config::Value::new(
            None,
            config::ValueKind::Table(built.try_deserialize().map_err(|e| {
                invalid(vec![ConfigIssue {
                    key: "(file)".into(),
                    message: format!("not a table of settings: {e}"),
                }])
            })?),
        );
        // serde stops at the first bad key: note it, drop it (its default
        // applies) and go on, so one run reports every problem.
        let mut issues = Vec::new();
        let raw = loop {
            match serde_path_to_error::deserialize::<_, RawConfig>(tree.clone()) {
                Ok(raw) => break Some(raw),
                Err(e) => {
                    let key = describe_path(&e.path().to_string(), e.inner());
                    let mut message = e.inner().to_string();
                    if let Some(var) = env_var_for(&key, env) {
                        message.push_str(&format!(" (set by environment variable {var})"));
                    }
                    issues.push(ConfigIssue { key, message });
                    let keys: Vec<&str> = e
                        .path()
                        .iter()
                        .map_while(|segment| match segment {
                            serde_path_to_error::Segment::Map { key } => Some(key.as_str()),
                            _ => None,
                        })
                        .collect();
                    if issues.len() > 100 || !remove_key(&mut tree, &keys) {
                        break None;
                    }
                }
            }
        };
        match raw.map(|raw| raw.validate(origin)) {
            Some(Ok(settings)) if issues.is_empty() => Ok(settings),
            Some(Err(more)) => {
                issues.extend(more);
                Err(invalid(issues))
            }
            _ => Err(invalid(issues)),
        }
    }
}

/// Removes the setting at `keys` from a config tree; false when there is none.
fn remove_key(tree: &mut config::Value, keys: &[&str]) -> bool {
    let Some((last, parents)) = keys.split_last() else {
        return false;
    };
    let mut node = tree;
    for key in parents {
        let config::ValueKind::Table(table) = &mut node.kind else {
            return false;
        };
        match table.get_mut(*key) {
            Some(child) => node = child,
            None => return false,
        }
    }
    match &mut node.kind {
        config::ValueKind::Table(table) => table.remove(*last).is_some(),
        _ => false,
    }
}

/// The environment variable that set `key`, if one did.
fn env_var_for(key: &str, env: &BTreeMap<String, String>) -> Option<String> {
    let base = key.split('[').next().unwrap_or(key);
    let var = format!("{ENV_PREFIX}__{}", base.replace('.', "__").to_uppercase());
    env.contains_key(&var).then_some(var)
}

/// serde_path_to_error reports an unknown field at its parent; name the field itself.
fn describe_path(path: &str, err: &config::ConfigError) -> String {
    let text = err.to_string();
    let unknown = text
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next());
    match (unknown, path) {
        (Some(field), "." | "") => field.to_string(),
        (Some(field), parent) if !parent.ends_with(field) => format!("{parent}.{field}"),
        (None, "." | "") => "(top level)".to_string(),
        (_, path) => path.to_string(),
    }
}

fn parse_listen(key: &str, value: &str, issues: &mut Vec<ConfigIssue>) -> Option<SocketAddr> {
    if value.trim().is_empty() {
        return None;
    }
    match value.trim().parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            issues.push(ConfigIssue {
                key: key.into(),
                message: format!(
                    "`{value}` is not an address:port such as \"127.0.0.1:5060\" or \"[::1]:5060\" (empty disables)"
                ),
            });
            None
        }
    }
}

fn is_dial_string(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '*' | '#' | '-' | '_' | '.'))
}

impl RawConfig {
    /// `[api]`: roles, the agent or queues each token is bound to, hashes.
    fn check_api(
        &self,
        agents: &BTreeMap<String, Agent>,
        queues: &BTreeMap<String, Queue>,
        issues: &mut Vec<ConfigIssue>,
    ) -> ApiSettings {
        let mut issue = |key: String, message: String| issues.push(ConfigIssue { key, message });
        let mut tokens = Vec::new();
        for (i, reason) in self.api.not_ready_reasons.iter().enumerate() {
            if reason.trim().is_empty() || reason == "no-answer" || reason == "cooldown" {
                issue(
                    format!("api.not_ready_reasons[{i}]"),
                    format!("`{reason}` cannot be chosen: empty, or kept for the router's own use"),
                );
            }
        }
        for (name, raw) in &self.api.tokens {
            let key = format!("api.tokens.{name}");
            let role = match raw.role.as_str() {
                "agent" => ApiRole::Agent,
                "supervisor" => ApiRole::Supervisor,
                "admin" => ApiRole::Admin,
                other => {
                    issue(
                        format!("{key}.role"),
                        format!(
                            "`{other}` is not a role: expected \"agent\", \"supervisor\" or \"admin\""
                        ),
                    );
                    continue;
                }
            };
            let agent = (!raw.agent.is_empty()).then(|| raw.agent.clone());
            match (role, &agent) {
                (ApiRole::Agent, None) => issue(
                    format!("{key}.agent"),
                    "an agent token names the agent it speaks for".into(),
                ),
                (ApiRole::Agent, Some(a)) if !agents.contains_key(a) => issue(
                    format!("{key}.agent"),
                    format!("`{a}` is not an agent (not under [agents])"),
                ),
                (ApiRole::Supervisor | ApiRole::Admin, Some(_)) => issue(
                    format!("{key}.agent"),
                    "only agent tokens are bound to an agent".into(),
                ),
                _ => {}
            }
            if role == ApiRole::Supervisor && raw.queues.is_empty() {
                issue(
                    format!("{key}.queues"),
                    "a supervisor token names the queues it supervises".into(),
                );
            }
            for (i, q) in raw.queues.iter().enumerate() {
                if !queues.contains_key(q) {
                    issue(
                        format!("{key}.queues[{i}]"),
                        format!("`{q}` is not a queue (not under [queues])"),
                    );
                }
            }
            if role != ApiRole::Supervisor && !raw.phones.is_empty() {
                issue(
                    format!("{key}.phones"),
                    "only supervisor tokens have phones (an admin may name any phone)".into(),
                );
            }
            for (i, phone) in raw.phones.iter().enumerate() {
                if !agents.contains_key(phone) {
                    issue(
                        format!("{key}.phones[{i}]"),
                        format!("`{phone}` is not a phone account (not under [agents])"),
                    );
                }
            }
            let mut sha256 = [0u8; 32];
            if hex::decode_to_slice(raw.sha256.trim(), &mut sha256).is_err() {
                issue(
                    format!("{key}.sha256"),
                    "must be the SHA-256 of the token, 64 hex digits (e.g. `printf %s \"$TOKEN\" | sha256sum`)".into(),
                );
                continue;
            }
            tokens.push(ApiToken {
                name: name.clone(),
                role,
                agent,
                queues: raw.queues.clone(),
                sha256,
                phones: raw.phones.clone(),
            });
        }
        let api = &self.api;
        if api.max_failed_sources == 0 {
            issue("api.max_failed_sources".into(), "must be at least 1".into());
        }
        if api.journal_entry_max_bytes < 512 {
            issue(
                "api.journal_entry_max_bytes".into(),
                format!("{} is too small: at least 512", api.journal_entry_max_bytes),
            );
        }
        if api.journal_max_bytes < api.journal_entry_max_bytes {
            issue(
                "api.journal_max_bytes".into(),
                format!(
                    "{} is smaller than one entry (api.journal_entry_max_bytes = {})",
                    api.journal_max_bytes, api.journal_entry_max_bytes
                ),
            );
        }
        ApiSettings {
            not_ready_reasons: self.api.not_ready_reasons.clone(),
            tokens,
            limits: ApiLimits {
                max_failed_sources: api.max_failed_sources,
                journal_max_bytes: api.journal_max_bytes,
                journal_entry_max_bytes: api.journal_entry_max_bytes,
            },
        }
    }

    /// Checks every value and cross-reference, collecting all problems.
    pub fn validate(self, origin: &str) -> Result<Settings, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        let mut issues_of_flows = Vec::new();
        let mut issue = |key: String, message: String| issues.push(ConfigIssue { key, message });

        let mut listen_issues = Vec::new();
        let udp = parse_listen("sip.udp", &self.sip.udp, &mut listen_issues);
        let tcp = parse_listen("sip.tcp", &self.sip.tcp, &mut listen_issues);
        let external = parse_listen("sip.external", &self.sip.external, &mut listen_issues);
        let http_listen = parse_listen("http.listen", &self.http.listen, &mut listen_issues);
        for i in listen_issues {
            issue(i.key, i.message);
        }
        if self.sip.udp.trim().is_empty() && self.sip.tcp.trim().is_empty() {
            issue(
                "sip.udp".into(),
                "both sip.udp and sip.tcp are empty: hotline needs at least one SIP listener"
                    .into(),
            );
        }
        if self.sip.realm.trim().is_empty() || self.sip.realm.contains('"') {
            issue(
                "sip.realm".into(),
                "must be a non-empty name without double quotes".into(),
            );
        }
        if self.sip.t1 < Duration::from_millis(50) || self.sip.t1 > Duration::from_secs(10) {
            issue(
                "sip.t1".into(),
                format!(
                    "{} is out of range: expected between 50ms and 10s (RFC 3261 recommends 500ms)",
                    humantime::format_duration(self.sip.t1)
                ),
            );
        }

        let r = &self.registrar;
        if r.min_expires.is_zero() {
            issue("registrar.min_expires".into(), "must be at least 1s".into());
        }
        if r.max_expires < r.min_expires {
            issue(
                "registrar.max_expires".into(),
                "must not be shorter than registrar.min_expires".into(),
            );
        }
        if r.default_expires < r.min_expires || r.default_expires > r.max_expires {
            issue(
                "registrar.default_expires".into(),
                "must lie between registrar.min_expires and registrar.max_expires".into(),
            );
        }
        if r.max_contacts == 0 || r.max_contacts > 20 {
            issue(
                "registrar.max_contacts".into(),
                "must be between 1 and 20: the 200 OK to a REGISTER lists every contact and must fit in one UDP datagram".into(),
            );
        }

        let a = &self.auth;
        if a.algorithms.is_empty() {
            issue(
                "auth.algorithms".into(),
                "must list at least one of \"SHA-256\", \"MD5\"".into(),
            );
        }
        if a.nonce_ttl < Duration::from_secs(1) {
            issue("auth.nonce_ttl".into(), "must be at least 1s".into());
        }
        if a.max_failures == 0 {
            issue(
                "auth.max_failures".into(),
                "must be at least 1 (a user is locked out from an address after this many failures)".into(),
            );
        }
        if a.failure_window.is_zero() {
            issue("auth.failure_window".into(), "must be at least 1s".into());
        }
        if a.max_failures_per_source
            .is_some_and(|n| n < a.max_failures)
        {
            issue(
                "auth.max_failures_per_source".into(),
                "must be at least auth.max_failures (it counts every user's failures from one address together)".into(),
            );
        }

        if self.log.level.trim().is_empty()
            || tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err()
        {
            issue(
                "log.level".into(),
                format!(
                    "`{}` is not a log filter: expected error, warn, info, debug, trace or a directive like \"hotline=debug\"",
                    self.log.level
                ),
            );
        }

        let mut numbers = BTreeMap::new();
        for (number, raw) in &self.numbers {
            let key = format!("numbers.{number}");
            if !is_dial_string(number) {
                issue(
                    key.clone(),
                    "a hotline number is 1-32 characters of digits, letters, + * # - _ .".into(),
                );
            }
            let target = match (raw.ivr.trim(), raw.queue.trim()) {
                (ivr, "") if !ivr.is_empty() => {
                    if !raw.greeting.is_empty() {
                        issue(
                            format!("{key}.greeting"),
                            "a greeting belongs to a number with `queue`; an IVR flow plays its own prompts".into(),
                        );
                    }
                    if !self.ivr.contains_key(ivr) {
                        issue(
                            format!("{key}.ivr"),
                            format!("`{ivr}` is not an IVR flow (not under [ivr])"),
                        );
                    }
                    Some(NumberTarget::Ivr(ivr.to_string()))
                }
                ("", queue) if !queue.is_empty() => Some(NumberTarget::Queue {
                    queue: {
                        if !self.queues.contains_key(queue) {
                            issue(
                                format!("{key}.queue"),
                                format!("`{queue}` is not a queue (not under [queues])"),
                            );
                        }
                        queue.to_string()
                    },
                    greeting: (!raw.greeting.trim().is_empty())
                        .then(|| raw.greeting.trim().to_string()),
                }),
                ("", "") => {
                    issue(
                        key.clone(),
                        "needs a target: set `ivr` (an IVR flow) or `queue` (a queue)".into(),
                    );
                    None
                }
                _ => {
                    issue(key.clone(), "set either `ivr` or `queue`, not both".into());
                    None
                }
            };
            if raw.answer_after > Duration::from_secs(120) {
                issue(
                    format!("{key}.answer_after"),
                    "must not exceed 2m (callers and carriers give up long before)".into(),
                );
            }
            if let Some(target) = target {
                numbers.insert(
                    number.clone(),
                    HotlineNumber {
                        number: number.clone(),
                        description: raw.description.clone(),
                        target,
                        answer_after: raw.answer_after,
                        max_duration: nonzero(raw.max_duration),
                    },
                );
            }
        }

        let mut trunks = Vec::new();
        for (name, raw) in &self.trunks {
            let key = format!("trunks.{name}");
            let mut sources = Vec::new();
            for (i, cidr) in raw.sources.iter().enumerate() {
                match parse_cidr(cidr) {
                    Some(net) => sources.push(net),
                    None => issue(
                        format!("{key}.sources[{i}]"),
                        format!(
                            "`{cidr}` is not an address or CIDR such as \"192.0.2.0/24\" or \"2001:db8::/32\""
                        ),
                    ),
                }
            }
            let credentials = match (raw.username.is_empty(), raw.password.is_empty()) {
                (true, true) => None,
                (false, false) => Some(TrunkCredentials {
                    username: raw.username.clone(),
                    password: raw.password.clone(),
                }),
                (true, false) => {
                    issue(
                        format!("{key}.username"),
                        "a trunk with a password needs a username".into(),
                    );
                    None
                }
                (false, true) => {
                    issue(
                        format!("{key}.password"),
                        "a trunk with a username needs a password".into(),
                    );
                    None
                }
            };
            if raw.sources.is_empty() && raw.username.is_empty() && raw.password.is_empty() {
                issue(
                    key.clone(),
                    "admits nobody: give it `sources` (CIDRs) or `username`/`password`".into(),
                );
            }
            for (i, n) in raw.numbers.iter().enumerate() {
                if !self.numbers.contains_key(n) {
                    issue(
                        format!("{key}.numbers[{i}]"),
                        format!("`{n}` is not a hotline number (not under [numbers])"),
                    );
                }
            }
            let outbound = match raw.outbound.trim() {
                "" => None,
                text => match text.parse::<SocketAddr>() {
                    Ok(addr) => Some(addr),
                    Err(_) => {
                        issue(
                            format!("{key}.outbound"),
                            format!(
                                "`{text}` is not an address and port such as \"192.0.2.7:5060\""
                            ),
                        );
                        None
                    }
                },
            };
            let dialplan = match crate::sip::dialplan::DialPlan::new(
                raw.country_code.trim(),
                raw.national_prefix.trim(),
                raw.international_prefix.trim(),
                raw.outbound_min_digits,
                raw.outbound_max_digits,
                &raw.outbound_allow,
            ) {
                Ok(plan) => plan,
                Err(e) => {
                    let field = match e {
                        crate::sip::dialplan::DialPlanError::CountryCode(_) => "country_code",
                        crate::sip::dialplan::DialPlanError::NationalPrefix(_) => "national_prefix",
                        crate::sip::dialplan::DialPlanError::InternationalPrefix(_) => {
                            "international_prefix"
                        }
                        crate::sip::dialplan::DialPlanError::Pattern { .. } => "outbound_allow",
                        crate::sip::dialplan::DialPlanError::Lengths { .. } => {
                            "outbound_min_digits"
                        }
                    };
                    issue(format!("{key}.{field}"), e.to_string());
                    crate::sip::dialplan::DialPlan::default()
                }
            };
            for (field, value) in [
                ("max_outbound_calls", raw.max_outbound_calls),
                ("max_outbound_per_hour", raw.max_outbound_per_hour),
            ] {
                if value == 0 {
                    issue(
                        format!("{key}.{field}"),
                        "must be at least 1 (leave `outbound` empty for no outbound calls)".into(),
                    );
                }
            }
            trunks.push(Trunk {
                name: name.clone(),
                sources,
                credentials,
                numbers: raw.numbers.clone(),
                outbound,
                dialplan,
                outbound_limits: crate::sip::dialplan::OutboundLimits {
                    max_concurrent: raw.max_outbound_calls,
                    max_per_hour: raw.max_outbound_per_hour,
                },
            });
        }

        let m = &self.media;
        if m.rtp_port_min < 1024 || m.rtp_port_min % 2 != 0 || m.rtp_port_max <= m.rtp_port_min {
            issue(
                "media.rtp_port_min".into(),
                format!(
                    "RTP ports {}-{} must be an even first port of at least 1024 below the last port",
                    m.rtp_port_min, m.rtp_port_max
                ),
            );
        }
        if self.sip.min_se < Duration::from_secs(1) {
            issue("sip.min_se".into(), "must be at least 1s".into());
        }
        if !self.sip.session_expires.is_zero() && self.sip.session_expires < self.sip.min_se {
            issue(
                "sip.session_expires".into(),
                format!(
                    "{} is below sip.min_se ({}); \"0s\" turns session timers off",
                    humantime::format_duration(self.sip.session_expires),
                    humantime::format_duration(self.sip.min_se)
                ),
            );
        }
        if m.latch_window > Duration::from_secs(10) {
            issue(
                "media.latch_window".into(),
                "must not exceed 10s: a longer window lets a stranger's stream take a NAT'd caller's audio".into(),
            );
        }
        if !m.rtp_timeout.is_zero() && m.rtp_timeout < Duration::from_secs(1) {
            issue(
                "media.rtp_timeout".into(),
                "must be at least 1s (or \"0s\": never)".into(),
            );
        }
        if !matches!(m.language.as_str(), "en" | "zh") {
            issue(
                "media.language".into(),
                format!(
                    "`{}` has no prompt set: expected \"en\" or \"zh\"",
                    m.language
                ),
            );
        }
        for (name, flow) in &self.ivr {
            flow.check(&format!("ivr.{name}"), &mut issues_of_flows);
            for (node, queue) in flow.queues() {
                if !self.queues.contains_key(queue) {
                    issues_of_flows.push(ConfigIssue {
                        key: format!("ivr.{name}.nodes.{node}.queue"),
                        message: format!("`{queue}` is not a queue (not under [queues])"),
                    });
                }
            }
        }

        let mut agents = BTreeMap::new();
        for (id, raw) in &self.agents {
            let key = format!("agents.{id}");
            if !is_dial_string(id) {
                issue(
                    key.clone(),
                    "an agent id is 1-32 characters of digits, letters, + * # - _ .".into(),
                );
            }
            if raw.password.is_empty() {
                issue(
                    format!("{key}.password"),
                    "is required (the digest password of the agent's phone)".into(),
                );
            }
            if self.numbers.contains_key(id) {
                issue(
                    key.clone(),
                    format!("`{id}` is also a hotline number; agent ids and numbers must differ"),
                );
            }
            for (i, queue) in raw.queues.iter().enumerate() {
                if !self.queues.contains_key(queue) {
                    issue(
                        format!("{key}.queues[{i}]"),
                        format!("`{queue}` is not a queue (not under [queues])"),
                    );
                }
            }
            for (skill, level) in &raw.skills {
                if !(1..=10).contains(level) {
                    issue(
                        format!("{key}.skills.{skill}"),
                        format!("proficiency {level} is out of range: expected 1 to 10"),
                    );
                }
            }
            let name = if raw.name.trim().is_empty() {
                format!("Agent {id}")
            } else {
                raw.name.clone()
            };
            agents.insert(
                id.clone(),
                Agent {
                    id: id.clone(),
                    name,
                    password: raw.password.clone(),
                    queues: raw.queues.clone(),
                    skills: raw.skills.clone(),
                },
            );
        }

        issues.extend(issues_of_flows);
        self.acd.check(&mut issues);
        self.store.check(&mut issues);
        self.recording.check(&mut issues);
        let queues = self.check_queues(&mut issues);
        let api = self.check_api(&agents, &queues, &mut issues);
        let monitor = self.monitor.check(&agents, &queues, &mut issues);
        let limits = self.limits.check(&self.trunks, &mut issues);
        let demo = DemoSettings {
            balance_service: self.demo.balance_service,
            allow_demo_credentials: self.demo.allow_demo_credentials,
        };
        if !issues.is_empty() {
            return Err(issues);
        }
        Ok(Settings {
            origin: origin.to_string(),
            sip: SipSettings {
                udp,
                tcp,
                external,
                realm: self.sip.realm,
                user_agent: self.sip.user_agent,
                t1: self.sip.t1,
                shutdown_grace: self.sip.shutdown_grace,
                session_expires: nonzero(self.sip.session_expires),
                min_se: self.sip.min_se,
            },
            registrar: RegistrarSettings {
                min_expires: self.registrar.min_expires,
                max_expires: self.registrar.max_expires,
                default_expires: self.registrar.default_expires,
                max_contacts: self.registrar.max_contacts,
            },
            auth: AuthSettings {
                algorithms: self.auth.algorithms,
                nonce_ttl: self.auth.nonce_ttl,
                max_failures: self.auth.max_failures,
                max_failures_per_source: self
                    .auth
                    .max_failures_per_source
                    .unwrap_or(self.auth.max_failures.max(100)),
                failure_window: self.auth.failure_window,
                ban_time: self.auth.ban_time,
            },
            http_listen,
            metrics_per_agent: self.metrics.per_agent,
            log: LogSettings {
                level: self.log.level,
                format: self.log.format,
            },
            trunks,
            numbers,
            agents,
            media: MediaSettings {
                prompts: self.media.prompts.clone().into(),
                language: self.media.language.clone(),
                rtp_port_min: self.media.rtp_port_min,
                rtp_port_max: self.media.rtp_port_max,
                music_on_hold: self.media.music_on_hold.clone(),
                latch_window: self.media.latch_window,
                rtp_timeout: nonzero(self.media.rtp_timeout),
            },
            queues,
            login_on_register: self.acd.login_on_register,
            acd: self.acd.resolve(),
            store: self.store.resolve(),
            api,
            recording: self.recording.resolve(),
            monitor,
            limits,
            demo,
            blocklist: self
                .blocklist
                .numbers
                .iter()
                .map(|n| n.trim().to_string())
                .collect(),
            block_action: self.blocklist.action,
            ivr: self
                .ivr
                .iter()
                .map(|(k, v)| (k.clone(), std::sync::Arc::new(v.clone())))
                .collect(),
        })
    }
}

impl RawConfig {
    /// Resolves every `[queues.NAME]`, checking values and cross-references.
    fn check_queues(&self, issues: &mut Vec<ConfigIssue>) -> BTreeMap<String, Queue> {
        let mut issue = |key: String, message: String| issues.push(ConfigIssue { key, message });
        let held: std::collections::BTreeSet<&str> = self
            .agents
            .values()
            .flat_map(|a| a.skills.keys().map(String::as_str))
            .collect();
        let held_by_nobody = |skill: &str| {
            format!(
                "skill `{skill}` is held by no agent (in no [agents.*] skills), so no agent could take these calls"
            )
        };
        let mut queues = BTreeMap::new();
        for (name, raw) in &self.queues {
            let key = format!("queues.{name}");
            for (skill, level) in &raw.required_skills {
                if !(1..=10).contains(level) {
                    issue(
                        format!("{key}.required_skills.{skill}"),
                        format!("proficiency {level} is out of range: expected 1 to 10"),
                    );
                }
                if !held.contains(skill.as_str()) {
                    issue(
                        format!("{key}.required_skills.{skill}"),
                        held_by_nobody(skill),
                    );
                }
            }
            let overflow = match Overflow::parse(&raw.overflow) {
                Ok(overflow) => overflow,
                Err(message) => {
                    issue(format!("{key}.overflow"), message);
                    Overflow::Hangup
                }
            };
            match &overflow {
                Overflow::Hangup => {}
                Overflow::Queue(target) if target == name => issue(
                    format!("{key}.overflow"),
                    format!("`queue:{target}` is this queue: overflow to a different queue"),
                ),
                Overflow::Queue(target) => {
                    if !self.queues.contains_key(target) {
                        issue(
                            format!("{key}.overflow"),
                            format!("`{target}` is not a queue (not under [queues])"),
                        );
                    }
                }
                Overflow::Ivr { flow, node } => match self.ivr.get(flow) {
                    None => issue(
                        format!("{key}.overflow"),
                        format!("`{flow}` is not an IVR flow (not under [ivr])"),
                    ),
                    Some(f) => {
                        if let Some(node) = node.as_ref().filter(|n| !f.nodes.contains_key(*n)) {
                            issue(
                                format!("{key}.overflow"),
                                format!("node `{node}` does not exist in IVR flow `{flow}`"),
                            );
                        }
                    }
                },
            }
            let mut escalation = Vec::new();
            for (i, step) in raw.escalation.iter().enumerate() {
                let step_key = format!("{key}.escalation[{i}]");
                if step.after.is_zero() {
                    issue(
                        format!("{step_key}.after"),
                        "must be more than 0s (the wait after which the step applies)".into(),
                    );
                }
                if let Some(level) = step.min_proficiency {
                    if !(1..=10).contains(&level) {
                        issue(
                            format!("{step_key}.min_proficiency"),
                            format!("proficiency {level} is out of range: expected 1 to 10"),
                        );
                    }
                }
                if step.min_proficiency.is_none() && step.add_skills.is_empty() {
                    issue(
                        step_key.clone(),
                        "changes nothing: give it `min_proficiency`, `add_skills` or both".into(),
                    );
                }
                for (j, skill) in step.add_skills.iter().enumerate() {
                    if !held.contains(skill.as_str()) {
                        issue(format!("{step_key}.add_skills[{j}]"), held_by_nobody(skill));
                    }
                }
                escalation.push(EscalationStep {
                    after: step.after,
                    min_proficiency: step.min_proficiency,
                    add_skills: step.add_skills.clone(),
                });
            }
            escalation.sort_by_key(|step| step.after);
            let callback_key = raw.callback_key.trim();
            let mut keys = callback_key.chars();
            let callback_key = match (keys.next(), keys.next()) {
                (Some(c), None) if c.is_ascii_digit() || matches!(c, '*' | '#') => c,
                _ => {
                    issue(
                        format!("{key}.callback_key"),
                        format!(
                            "`{}` is not one key: expected 0-9, * or #",
                            raw.callback_key
                        ),
                    );
                    '1'
                }
            };
            let serving = self
                .agents
                .values()
                .filter(|a| a.queues.iter().any(|q| q == name))
                .count();
            if !(1..=3600).contains(&raw.service_level_seconds) {
                issue(
                    format!("{key}.service_level_seconds"),
                    format!(
                        "{} is out of range: a service-level target is 1 to 3600 seconds",
                        raw.service_level_seconds
                    ),
                );
            }
            if raw.min_staffed as usize > serving {
                issue(
                    format!("{key}.min_staffed"),
                    format!(
                        "{} is more than the {serving} agent(s) serving this queue (agents list it in `queues`)",
                        raw.min_staffed
                    ),
                );
            }
            let survey = raw.survey.trim();
            if !survey.is_empty() && !self.ivr.contains_key(survey) {
                issue(
                    format!("{key}.survey"),
                    format!("`{survey}` is not an IVR flow (not under [ivr])"),
                );
            }
            if !(0.0..=1.0).contains(&raw.survey_target) {
                issue(
                    format!("{key}.survey_target"),
                    format!(
                        "{} is out of range: a share of satisfied callers is 0 to 1 (0.96 = 96 %)",
                        raw.survey_target
                    ),
                );
            }
            let music_on_hold = if raw.music_on_hold.trim().is_empty() {
                self.media.music_on_hold.clone()
            } else {
                raw.music_on_hold.trim().to_string()
            };
            let overflow_prompt = raw.overflow_prompt.trim();
            queues.insert(
                name.clone(),
                Queue {
                    name: name.clone(),
                    music_on_hold,
                    strategy: raw.strategy,
                    priority: raw.priority,
                    required_skills: raw.required_skills.clone(),
                    max_wait: nonzero(raw.max_wait),
                    overflow,
                    overflow_prompt: (!overflow_prompt.is_empty())
                        .then(|| overflow_prompt.to_string()),
                    max_len: (raw.max_len > 0).then_some(raw.max_len),
                    when_no_agents: raw.when_no_agents,
                    escalation,
                    announce_position_every: nonzero(raw.announce_position_every),
                    announce_agent: raw.announce_agent,
                    callback_after: nonzero(raw.callback_after),
                    callback_key,
                    min_staffed: raw.min_staffed,
                    service_level: Duration::from_secs(u64::from(raw.service_level_seconds)),
                    record: raw.record,
                    survey: (!survey.is_empty()).then(|| survey.to_string()),
                    survey_target: Ratio(raw.survey_target),
                    max_duration: nonzero(raw.max_duration),
                },
            );
        }
        for chain in overflow_loops(&queues) {
            let first = &chain[0];
            issue(
                format!("queues.{first}.overflow"),
                format!(
                    "the overflow chain {} loops: its callers would be passed round forever",
                    chain.join(" → ")
                ),
            );
        }
        queues
    }
}

/// Every loop of queue-to-queue overflows, each once, as the chain of queue
/// names from its first member back to it (`a → b → a`).
fn overflow_loops(queues: &BTreeMap<String, Queue>) -> Vec<Vec<String>> {
    let next = |name: &str| match queues.get(name).map(|q| &q.overflow) {
        Some(Overflow::Queue(target)) if target != name && queues.contains_key(target) => {
            Some(target.as_str())
        }
        _ => None,
    };
    let mut done = std::collections::BTreeSet::new();
    let mut loops = Vec::new();
    for start in queues.keys() {
        let mut path: Vec<&str> = Vec::new();
        let mut at = Some(start.as_str());
        while let Some(name) = at {
            if done.contains(name) {
                break;
            }
            if let Some(pos) = path.iter().position(|p| *p == name) {
                let mut chain: Vec<String> = path[pos..].iter().map(|s| s.to_string()).collect();
                chain.push(name.to_string());
                loops.push(chain);
                break;
            }
            path.push(name);
            at = next(name);
        }
        done.extend(path);
    }
    loops
}

/// Accepts "192.0.2.0/24", "2001:db8::/32" or a bare address (a /32 or /128).
fn parse_cidr(s: &str) -> Option<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

impl fmt::Display for Settings {
    /// The one-line summary printed by `check-config`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |a: Option<SocketAddr>| a.map_or("off".to_string(), |a| a.to_string());
        write!(
            f,
            "{}: ok — sip udp {} tcp {}, http {}, {} trunk(s), {} number(s), {} agent(s)",
            self.origin,
            show(self.sip.udp),
            show(self.sip.tcp),
            show(self.http_listen),
            self.trunks.len(),
            self.numbers.len(),
            self.agents.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Settings, ConfigError> {
        Settings::from_toml(text, "test.toml", &BTreeMap::new())
    }

    fn keys(err: ConfigError) -> Vec<String> {
        issue_keys(&err)
    }

    fn issue_keys(err: &ConfigError) -> Vec<String> {
        err.issues().iter().map(|i| i.key.clone()).collect()
    }

    #[test]
    fn embedded_default_is_valid_and_holds_the_demo_call_center() {
        let s = Settings::from_toml(EMBEDDED_DEFAULT, "default", &BTreeMap::new()).unwrap();
        assert_eq!(s.sip.udp, Some("127.0.0.1:5060".parse().unwrap()));
        assert_eq!(s.sip.tcp, Some("127.0.0.1:5060".parse().unwrap()));
        assert_eq!(s.http_listen, Some("127.0.0.1:8080".parse().unwrap()));
        let local = s.trunks.iter().find(|t| t.name == "local").unwrap();
        assert_eq!(local.sources, vec!["127.0.0.0/8".parse::<IpNet>().unwrap()]);
        assert!(local.credentials.is_none());
        assert_eq!(s.numbers["400"].target, NumberTarget::Ivr("main".into()));
        assert_eq!(
            s.numbers["401"].target,
            NumberTarget::Queue {
                queue: "support".into(),
                greeting: Some("greeting".into())
            }
        );
        for id in ["1001", "1002", "1003", "1004"] {
            assert_eq!(s.agents[id].password, format!("demo{id}"));
            assert!(s.agents[id].queues.contains(&"support".to_string()), "{id}");
        }
        for id in ["1001", "1002"] {
            assert!(s.agents[id].queues.contains(&"sales".to_string()), "{id}");
        }
    }

    #[test]
    fn empty_file_takes_documented_defaults() {
        let s = load("").unwrap();
        assert_eq!(s.sip.t1, Duration::from_millis(500));
        assert_eq!(s.registrar.min_expires, Duration::from_secs(60));
        assert_eq!(s.registrar.max_expires, Duration::from_secs(3600));
        assert_eq!(s.auth.algorithms, vec![DigestAlgorithm::Md5]);
        assert_eq!(s.auth.nonce_ttl, Duration::from_secs(300));
        assert!(s.trunks.is_empty());
    }

    #[test]
    fn misspelled_key_is_named_with_its_section_and_the_file() {
        let err = load("[http]\nlisen = \"127.0.0.1:1\"\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("http.lisen"), "{text}");
        assert!(text.contains("test.toml"), "{text}");
        assert!(text.contains("listen"), "expected keys listed: {text}");
    }

    #[test]
    fn misspelled_top_level_section_is_named() {
        let err = load("[sipp]\nudp = \"\"\n").unwrap_err();
        assert_eq!(keys(err), vec!["sipp".to_string()]);
    }

    #[test]
    fn wrong_type_names_the_key() {
        let err = load("[registrar]\nmax_contacts = \"many\"\n").unwrap_err();
        assert_eq!(keys(err), vec!["registrar.max_contacts".to_string()]);
    }

    #[test]
    fn bad_duration_names_the_key() {
        let err = load("[auth]\nnonce_ttl = \"five minutes\"\n").unwrap_err();
        assert_eq!(keys(err), vec!["auth.nonce_ttl".to_string()]);
    }

    #[test]
    fn unknown_digest_algorithm_is_refused() {
        let err = load("[auth]\nalgorithms = [\"SHA-1\"]\n").unwrap_err();
        assert!(keys(err)[0].starts_with("auth.algorithms"));
    }

    #[test]
    fn every_semantic_error_is_reported_at_once() {
        let err = load(
            r#"
[sip]
udp = "nonsense"
[registrar]
min_expires = "10m"
max_expires = "1m"
[trunks.bad]
sources = ["10.0.0.0/33", "192.0.2.1"]
numbers = ["999"]
[trunks.nobody]
[numbers."500"]
[agents."2001"]
"#,
        )
        .unwrap_err();
        let keys = keys(err);
        for expected in [
            "sip.udp",
            "registrar.max_expires",
            "registrar.default_expires",
            "trunks.bad.sources[0]",
            "trunks.bad.numbers[0]",
            "trunks.nobody",
            "numbers.500",
            "agents.2001.password",
        ] {
            assert!(
                keys.iter().any(|k| k == expected),
                "{expected} missing in {keys:?}"
            );
        }
        assert!(
            !keys.iter().any(|k| k == "trunks.bad.sources[1]"),
            "{keys:?}"
        );
    }

    #[test]
    fn every_structural_error_is_reported_with_the_semantic_ones() {
        let err = load(
            r#"
[http]
lisen = "127.0.0.1:1"
[registrar]
max_contacts = "many"
[sipp]
x = 1
[trunks.t]
sources = ["300.0.0.0/8"]
"#,
        )
        .unwrap_err();
        let keys = keys(err);
        for expected in [
            "http.lisen",
            "registrar.max_contacts",
            "sipp",
            "trunks.t.sources[0]",
        ] {
            assert!(
                keys.iter().any(|k| k == expected),
                "{expected} missing in {keys:?}"
            );
        }
    }

    #[test]
    fn environment_overrides_the_file() {
        let env = BTreeMap::from([
            (
                "HOTLINE__SIP__UDP".to_string(),
                "127.0.0.9:5099".to_string(),
            ),
            (
                "HOTLINE__REGISTRAR__MAX_CONTACTS".to_string(),
                "2".to_string(),
            ),
            ("UNRELATED".to_string(), "x".to_string()),
        ]);
        let s = Settings::from_toml(EMBEDDED_DEFAULT, "default", &env).unwrap();
        assert_eq!(s.sip.udp, Some("127.0.0.9:5099".parse().unwrap()));
        assert_eq!(s.registrar.max_contacts, 2);
    }

    #[test]
    fn environment_typo_is_an_error_too() {
        let env = BTreeMap::from([("HOTLINE__SIP__UPD".to_string(), "x".to_string())]);
        let err = Settings::from_toml("", "test.toml", &env).unwrap_err();
        assert!(err.to_string().contains("HOTLINE__SIP__UPD"), "{err}");
        assert_eq!(keys(err), vec!["sip.upd".to_string()]);
    }

    #[test]
    fn a_number_needs_an_existing_flow_and_flows_are_checked() {
        let err = load(
            "[numbers.\"7\"]\nivr = \"nope\"\n[ivr.x]\nstart = \"a\"\n[ivr.x.nodes.a]\ntype = \"play\"\nprompts = []\nnext = \"ghost\"\n",
        )
        .unwrap_err();
        let keys = keys(err);
        assert!(keys.contains(&"numbers.7.ivr".to_string()), "{keys:?}");
        assert!(keys.contains(&"ivr.x.nodes.a.next".to_string()), "{keys:?}");
    }

    #[test]
    fn queues_named_by_numbers_and_flows_must_exist() {
        let err = load(
            "[numbers.\"7\"]\nqueue = \"nope\"\n[numbers.\"8\"]\nivr = \"x\"\n[ivr.x]\nstart = \"q\"\n[ivr.x.nodes.q]\ntype = \"queue\"\nqueue = \"ghost\"\n",
        )
        .unwrap_err();
        let keys = keys(err);
        assert!(keys.contains(&"numbers.7.queue".to_string()), "{keys:?}");
        assert!(
            keys.contains(&"ivr.x.nodes.q.queue".to_string()),
            "{keys:?}"
        );
        let s = load("[media]\nmusic_on_hold = \"moh/a\"\n[queues.s]\n[queues.t]\nmusic_on_hold = \"moh/b\"\n").unwrap();
        assert_eq!(s.queues["s"].music_on_hold, "moh/a");
        assert_eq!(s.queues["t"].music_on_hold, "moh/b");
    }

    #[test]
    fn agent_queues_and_skills_are_checked() {
        let err = load(
            "[queues.q]\n[agents.\"9\"]\npassword = \"p\"\nqueues = [\"q\", \"nope\"]\nskills = { billing = 11 }\n",
        )
        .unwrap_err();
        let keys = keys(err);
        assert!(keys.contains(&"agents.9.queues[1]".to_string()), "{keys:?}");
        assert!(
            keys.contains(&"agents.9.skills.billing".to_string()),
            "{keys:?}"
        );
    }

    #[test]
    fn both_ivr_and_queue_is_ambiguous() {
        let err = load("[numbers.\"7\"]\nivr = \"a\"\nqueue = \"b\"\n").unwrap_err();
        assert_eq!(keys(err), vec!["numbers.7".to_string()]);
    }

    #[test]
    fn limits_have_defaults_and_name_the_bad_key() {
        let s = load("").unwrap();
        assert_eq!(s.limits, LimitsSettings::default());
        assert_eq!(s.limits.max_calls, 1000);
        assert_eq!(s.auth.max_failures_per_source, 100);
        let s = load("[auth]\nmax_failures = 1000\n").unwrap();
        assert_eq!(s.auth.max_failures_per_source, 1000);
        let s = load(
            "[limits]\nmax_calls = 2\ninvite_rate = 0.5\n[trunks.t]\nsources = [\"10.0.0.0/8\"]\nmax_calls = 1\n",
        )
        .unwrap();
        assert_eq!(s.limits.max_calls, 2);
        assert_eq!(s.limits.invite_rate, 0.5);
        assert_eq!(s.limits.trunk_max_calls.get("t"), Some(&1));
        let err = load(
            "[limits]\ninvite_burst = 0\ntcp_max_connections_per_source = 5000\nhttp_header_timeout = \"0s\"\n[auth]\nmax_failures = 10\nmax_failures_per_source = 3\n",
        )
        .unwrap_err();
        let keys = keys(err);
        for key in [
            "limits.invite_burst",
            "limits.tcp_max_connections_per_source",
            "limits.http_header_timeout",
            "auth.max_failures_per_source",
        ] {
            assert!(keys.contains(&key.to_string()), "{key} not in {keys:?}");
        }
    }

    #[test]
    fn trunk_with_half_credentials_is_refused() {
        let err = load("[trunks.t]\nusername = \"u\"\n").unwrap_err();
        assert_eq!(keys(err), vec!["trunks.t.password".to_string()]);
    }

    #[test]
    fn summary_line_counts_what_was_loaded() {
        let s = Settings::from_toml(EMBEDDED_DEFAULT, "hotline.toml", &BTreeMap::new()).unwrap();
        let line = s.to_string();
        assert!(
            line.contains("1 trunk(s), 3 number(s), 4 agent(s)"),
            "{line}"
        );
        assert!(!line.contains('\n'));
    }

    // --- [acd] and queue options -------------------------------------------

    /// The text of `err` has an issue for exactly `key`, naming the file.
    fn assert_issue(err: &ConfigError, key: &str) {
        let text = err.to_string();
        assert!(
            text.contains(&format!("test.toml: key `{key}`:")),
            "no issue for `{key}` in:\n{text}"
        );
    }

    /// One agent holding `general` and `sales`, serving queues `q` and `r`.
    const AGENT: &str = "[agents.\"9\"]\npassword = \"p\"\nqueues = [\"q\", \"r\"]\nskills = { general = 5, sales = 8 }\n";

    fn load_queues(text: &str) -> Result<Settings, ConfigError> {
        let q = if text.contains("[queues.q]") {
            ""
        } else {
            "[queues.q]\n"
        };
        load(&format!("{AGENT}[queues.r]\n{q}{text}"))
    }

    #[test]
    fn acd_options_take_their_documented_defaults() {
        let s = load("").unwrap();
        let a = &s.acd;
        assert!(a.login_on_register);
        assert!(s.login_on_register);
        assert_eq!(a.answer_within_rings, 2);
        assert_eq!(a.ring_cycle, Duration::from_secs(3));
        assert_eq!(a.offer_timeout(), Duration::from_secs(6));
        assert_eq!(a.max_no_answer, 1);
        assert_eq!(a.cooldown_busy, Duration::from_secs(10));
        assert_eq!(a.cooldown_declined, Duration::from_secs(10));
        assert_eq!(a.cooldown_unreachable, Duration::from_secs(30));
        assert_eq!(a.wrap_up, Duration::from_secs(60));
        assert_eq!(a.break_limit, Duration::from_secs(300));
        assert_eq!(a.hold_limit, Duration::from_secs(30));
        assert_eq!(a.hold_warning_before, Duration::from_secs(5));
        assert_eq!(a.hold_action, HoldAction::Alert);
        assert_eq!(a.queue_header, "X-Hotline-Queue");
        assert_eq!(*a, AcdSettings::default());
    }

    #[test]
    fn acd_options_accept_other_valid_values() {
        let s = load(
            r#"
[acd]
login_on_register = false
answer_within_rings = 4
ring_cycle = "5s"
max_no_answer = 3
cooldown_busy = "0s"
cooldown_declined = "1m"
cooldown_unreachable = "2m"
wrap_up = "0s"
break_limit = "0s"
hold_limit = "2m"
hold_warning_before = "0s"
hold_action = "requeue"
queue_header = "X-Queue"
"#,
        )
        .unwrap();
        let a = &s.acd;
        assert!(!a.login_on_register);
        assert!(!s.login_on_register, "the old field mirrors acd's");
        assert_eq!(a.answer_within_rings, 4);
        assert_eq!(a.ring_cycle, Duration::from_secs(5));
        assert_eq!(a.offer_timeout(), Duration::from_secs(20));
        assert_eq!(a.max_no_answer, 3);
        assert_eq!(a.cooldown_busy, Duration::ZERO);
        assert_eq!(a.cooldown_declined, Duration::from_secs(60));
        assert_eq!(a.cooldown_unreachable, Duration::from_secs(120));
        assert_eq!(a.wrap_up, Duration::ZERO);
        assert_eq!(a.break_limit, Duration::ZERO);
        assert_eq!(a.hold_limit, Duration::from_secs(120));
        assert_eq!(a.hold_warning_before, Duration::ZERO);
        assert_eq!(a.hold_action, HoldAction::Requeue);
        assert_eq!(a.queue_header, "X-Queue");
        let s = load("[acd]\nhold_action = \"resume\"\n").unwrap();
        assert_eq!(s.acd.hold_action, HoldAction::Resume);
    }

    #[test]
    fn acd_values_out_of_range_are_each_named() {
        let err = load(
            r#"
[acd]
answer_within_rings = 0
ring_cycle = "500ms"
max_no_answer = 0
hold_limit = "0s"
queue_header = "X Queue"
"#,
        )
        .unwrap_err();
        for key in [
            "acd.answer_within_rings",
            "acd.ring_cycle",
            "acd.max_no_answer",
            "acd.hold_limit",
            "acd.queue_header",
        ] {
            assert_issue(&err, key);
        }
        assert_eq!(err.issues().len(), 5, "{err}");
        let err =
            load("[acd]\nanswer_within_rings = 11\nring_cycle = \"31s\"\nqueue_header = \"\"\n")
                .unwrap_err();
        assert_eq!(
            keys(err),
            vec![
                "acd.answer_within_rings",
                "acd.ring_cycle",
                "acd.queue_header"
            ]
        );
        for header in ["X-Queue:", "X-Qüeue", "X/Queue"] {
            let err = load(&format!("[acd]\nqueue_header = \"{header}\"\n")).unwrap_err();
            assert_eq!(keys(err), vec!["acd.queue_header"], "{header}");
        }
    }

    #[test]
    fn hold_warning_must_come_before_the_limit() {
        for warning in ["30s", "1m"] {
            let err = load(&format!("[acd]\nhold_warning_before = \"{warning}\"\n")).unwrap_err();
            assert_issue(&err, "acd.hold_warning_before");
            assert!(err.to_string().contains("acd.hold_limit"), "{err}");
        }
        let s = load("[acd]\nhold_limit = \"10s\"\nhold_warning_before = \"9s\"\n").unwrap();
        assert_eq!(s.acd.hold_warning_before, Duration::from_secs(9));
    }

    #[test]
    fn a_wrong_hold_action_or_duration_in_acd_is_named() {
        let err = load("[acd]\nhold_action = \"panic\"\nwrap_up = \"a minute\"\n").unwrap_err();
        assert_issue(&err, "acd.hold_action");
        assert_issue(&err, "acd.wrap_up");
        assert!(err.to_string().contains("requeue"), "{err}");
    }

    #[test]
    fn queue_options_take_their_documented_defaults() {
        let s = load("[queues.q]\n").unwrap();
        let q = &s.queues["q"];
        assert_eq!(q.name, "q");
        assert_eq!(q.music_on_hold, "moh/default");
        assert_eq!(q.strategy, QueueStrategy::LongestIdle);
        assert_eq!(q.priority, 0);
        assert!(q.required_skills.is_empty());
        assert_eq!(q.max_wait, None);
        assert_eq!(q.overflow, Overflow::Hangup);
        assert_eq!(q.overflow_prompt.as_deref(), Some("busy"));
        assert_eq!(q.max_len, None);
        assert_eq!(q.when_no_agents, WhenNoAgents::Join);
        assert!(q.escalation.is_empty());
        assert_eq!(q.announce_position_every, Some(Duration::from_secs(60)));
        assert!(q.announce_agent);
        assert_eq!(q.callback_after, Some(Duration::from_secs(60)));
        assert_eq!(q.callback_key, '1');
        assert_eq!(q.min_staffed, 0);
        assert_eq!(*q, Queue::new("q", "moh/default"));
    }

    #[test]
    fn queue_options_accept_other_valid_values() {
        let s = load_queues(
            r##"
[queues.q]
music_on_hold = "moh/q"
strategy = "least-talk-time"
priority = 5
required_skills = { general = 3, sales = 10 }
max_wait = "2m"
overflow = "ivr:main:menu"
overflow_prompt = ""
max_len = 20
when_no_agents = "overflow"
announce_position_every = "0s"
announce_agent = false
callback_after = "0s"
callback_key = "#"
min_staffed = 1

[[queues.q.escalation]]
after = "2m"
add_skills = ["sales"]

[[queues.q.escalation]]
after = "30s"
min_proficiency = 1

[ivr.main]
start = "menu"
[ivr.main.nodes.menu]
type = "hangup"
"##,
        )
        .unwrap();
        let q = &s.queues["q"];
        assert_eq!(q.music_on_hold, "moh/q");
        assert_eq!(q.strategy, QueueStrategy::LeastTalkTime);
        assert_eq!(q.priority, 5);
        assert_eq!(
            q.required_skills,
            BTreeMap::from([("general".to_string(), 3), ("sales".to_string(), 10)])
        );
        assert_eq!(q.max_wait, Some(Duration::from_secs(120)));
        assert_eq!(
            q.overflow,
            Overflow::Ivr {
                flow: "main".into(),
                node: Some("menu".into())
            }
        );
        assert_eq!(q.overflow_prompt, None);
        assert_eq!(q.max_len, Some(20));
        assert_eq!(q.when_no_agents, WhenNoAgents::Overflow);
        assert_eq!(
            q.escalation,
            vec![
                EscalationStep {
                    after: Duration::from_secs(30),
                    min_proficiency: Some(1),
                    add_skills: vec![],
                },
                EscalationStep {
                    after: Duration::from_secs(120),
                    min_proficiency: None,
                    add_skills: vec!["sales".into()],
                },
            ],
            "steps are sorted by `after`"
        );
        assert_eq!(q.announce_position_every, None);
        assert!(!q.announce_agent);
        assert_eq!(q.callback_after, None);
        assert_eq!(q.callback_key, '#');
        assert_eq!(q.min_staffed, 1);
    }

    #[test]
    fn every_strategy_and_overflow_form_is_read() {
        for (text, strategy) in [
            ("longest-idle", QueueStrategy::LongestIdle),
            ("round-robin", QueueStrategy::RoundRobin),
            ("fewest-calls", QueueStrategy::FewestCalls),
            ("least-talk-time", QueueStrategy::LeastTalkTime),
            ("top-down", QueueStrategy::TopDown),
            ("random", QueueStrategy::Random),
            ("ring-all", QueueStrategy::RingAll),
        ] {
            let s = load(&format!("[queues.q]\nstrategy = \"{text}\"\n")).unwrap();
            assert_eq!(s.queues["q"].strategy, strategy);
            assert_eq!(strategy.to_string(), text);
        }
        let s = load_queues(
            r#"
[queues.a]
overflow = "hangup"
[queues.b]
overflow = "queue:a"
[queues.c]
overflow = "ivr:main"
[ivr.main]
start = "bye"
[ivr.main.nodes.bye]
type = "hangup"
"#,
        )
        .unwrap();
        assert_eq!(s.queues["a"].overflow, Overflow::Hangup);
        assert_eq!(s.queues["b"].overflow, Overflow::Queue("a".into()));
        assert_eq!(
            s.queues["c"].overflow,
            Overflow::Ivr {
                flow: "main".into(),
                node: None
            }
        );
        for text in ["hangup", "queue:a", "ivr:main", "ivr:main:bye"] {
            assert_eq!(Overflow::parse(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn a_wrong_strategy_is_named_with_the_file() {
        let err = load("[queues.support]\nstrategy = \"fastest\"\n").unwrap_err();
        assert_issue(&err, "queues.support.strategy");
        assert!(err.to_string().contains("longest-idle"), "{err}");
        assert_eq!(err.issues().len(), 1);
    }

    #[test]
    fn bad_queue_durations_and_numbers_are_named() {
        let err = load(
            "[queues.q]\nmax_wait = \"forever\"\ncallback_after = \"5\"\nmax_len = -1\npriority = \"high\"\nwhen_no_agents = \"wait\"\n",
        )
        .unwrap_err();
        let keys = keys(err);
        for key in [
            "queues.q.max_wait",
            "queues.q.callback_after",
            "queues.q.max_len",
            "queues.q.priority",
            "queues.q.when_no_agents",
        ] {
            assert!(keys.iter().any(|k| k == key), "{key} missing in {keys:?}");
        }
        assert_eq!(keys.len(), 5, "{keys:?}");
    }

    #[test]
    fn overflow_targets_are_checked() {
        for (overflow, expect) in [
            ("voicemail", "not an overflow target"),
            ("queue:", "not an overflow target"),
            ("ivr:main:bye:again", "not an overflow target"),
            ("queue:nowhere", "`nowhere` is not a queue"),
            ("queue:support", "is this queue"),
            ("ivr:nope", "`nope` is not an IVR flow"),
            (
                "ivr:main:ghost",
                "node `ghost` does not exist in IVR flow `main`",
            ),
        ] {
            let err = load(&format!(
                "[queues.support]\noverflow = \"{overflow}\"\n[ivr.main]\nstart = \"bye\"\n[ivr.main.nodes.bye]\ntype = \"hangup\"\n"
            ))
            .unwrap_err();
            assert_eq!(err.issues().len(), 1, "{overflow}: {err}");
            assert_issue(&err, "queues.support.overflow");
            assert!(err.to_string().contains(expect), "{overflow}: {err}");
        }
    }

    #[test]
    fn a_loop_of_queue_overflows_is_named_once() {
        let err = load("[queues.a]\noverflow = \"queue:b\"\n[queues.b]\noverflow = \"queue:a\"\n")
            .unwrap_err();
        assert_eq!(issue_keys(&err), vec!["queues.a.overflow"]);
        assert!(err.to_string().contains("a → b → a"), "{err}");

        // A queue leading into a loop is not part of it.
        let err = load(
            "[queues.d]\noverflow = \"queue:b\"\n[queues.b]\noverflow = \"queue:c\"\n[queues.c]\noverflow = \"queue:e\"\n[queues.e]\noverflow = \"queue:b\"\n",
        )
        .unwrap_err();
        assert_eq!(err.issues().len(), 1, "{err}");
        assert_issue(&err, "queues.b.overflow");
        assert!(err.to_string().contains("b → c → e → b"), "{err}");

        // A chain that ends is fine, however long.
        let s = load(
            "[queues.a]\noverflow = \"queue:b\"\n[queues.b]\noverflow = \"queue:c\"\n[queues.c]\n",
        )
        .unwrap();
        assert_eq!(s.queues["a"].overflow, Overflow::Queue("b".into()));
    }

    #[test]
    fn required_skills_are_checked() {
        let err =
            load_queues("[queues.q]\nrequired_skills = { general = 0, sales = 11, french = 5 }\n")
                .unwrap_err();
        assert_eq!(
            issue_keys(&err),
            vec![
                "queues.q.required_skills.french",
                "queues.q.required_skills.general",
                "queues.q.required_skills.sales",
            ]
        );
        assert!(err.to_string().contains("held by no agent"), "{err}");
    }

    #[test]
    fn escalation_steps_are_checked() {
        let err = load_queues(
            r#"
[queues.q]
[[queues.q.escalation]]
after = "0s"
min_proficiency = 2
[[queues.q.escalation]]
after = "1m"
min_proficiency = 11
[[queues.q.escalation]]
after = "2m"
[[queues.q.escalation]]
after = "3m"
add_skills = ["general", "french"]
"#,
        )
        .unwrap_err();
        assert_eq!(
            keys(err),
            vec![
                "queues.q.escalation[0].after",
                "queues.q.escalation[1].min_proficiency",
                "queues.q.escalation[2]",
                "queues.q.escalation[3].add_skills[1]",
            ]
        );
        let err =
            load_queues("[queues.q]\n[[queues.q.escalation]]\nmin_proficiency = 2\n").unwrap_err();
        assert!(keys(err)[0].starts_with("queues.q.escalation"));
        let err = load_queues(
            "[queues.q]\n[[queues.q.escalation]]\nafter = \"1m\"\nadd_skill = [\"sales\"]\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("add_skill"), "{err}");
    }

    #[test]
    fn callback_key_is_one_key() {
        for key in ["\"12\"", "\"A\"", "\"\"", "10"] {
            let err = load(&format!("[queues.q]\ncallback_key = {key}\n")).unwrap_err();
            assert_eq!(keys(err), vec!["queues.q.callback_key"], "{key}");
        }
        for (key, c) in [("\"*\"", '*'), ("\"0\"", '0'), ("5", '5')] {
            let s = load(&format!("[queues.q]\ncallback_key = {key}\n")).unwrap();
            assert_eq!(s.queues["q"].callback_key, c, "{key}");
        }
    }

    #[test]
    fn min_staffed_cannot_exceed_the_agents_of_the_queue() {
        let err = load_queues("[queues.q]\nmin_staffed = 2\n").unwrap_err();
        assert_issue(&err, "queues.q.min_staffed");
        assert_eq!(err.issues().len(), 1);
        assert_eq!(
            load_queues("[queues.q]\nmin_staffed = 1\n").unwrap().queues["q"].min_staffed,
            1
        );
    }

    #[test]
    fn new_keys_are_overridden_from_the_environment() {
        let env = BTreeMap::from([
            ("HOTLINE__ACD__HOLD_LIMIT".to_string(), "45s".to_string()),
            (
                "HOTLINE__QUEUES__SUPPORT__STRATEGY".to_string(),
                "ring-all".to_string(),
            ),
            (
                "HOTLINE__QUEUES__SUPPORT__MAX_LEN".to_string(),
                "7".to_string(),
            ),
            (
                "HOTLINE__QUEUES__SUPPORT__CALLBACK_KEY".to_string(),
                "9".to_string(),
            ),
        ]);
        let s = Settings::from_toml(EMBEDDED_DEFAULT, "default", &env).unwrap();
        assert_eq!(s.acd.hold_limit, Duration::from_secs(45));
        assert_eq!(s.queues["support"].strategy, QueueStrategy::RingAll);
        assert_eq!(s.queues["support"].max_len, Some(7));
        assert_eq!(s.queues["support"].callback_key, '9');
        assert_eq!(s.queues["sales"].max_len, None);
    }

    #[test]
    fn the_trunk_dial_plan_defaults_to_national_numbers_and_bad_values_name_their_key() {
        let s = load("[trunks.t]\nsources = [\"192.0.2.0/24\"]\noutbound = \"192.0.2.1:5060\"\n")
            .unwrap();
        let t = s.trunks.iter().find(|t| t.name == "t").unwrap();
        assert_eq!(t.dialplan, crate::sip::dialplan::DialPlan::default());
        assert_eq!(t.dialplan.check("13800138000"), Ok("8613800138000".into()));
        assert!(t.dialplan.check("+441632960000").is_err());
        assert_eq!(
            t.outbound_limits,
            crate::sip::dialplan::OutboundLimits::default()
        );
        let s = load(
            "[trunks.t]\nsources = [\"192.0.2.0/24\"]\ncountry_code = \"44\"\noutbound_allow = [\"447[0-9]{9}\"]\nmax_outbound_calls = 2\nmax_outbound_per_hour = 5\n",
        )
        .unwrap();
        let t = s.trunks.iter().find(|t| t.name == "t").unwrap();
        assert_eq!(t.dialplan.check("07700900123"), Ok("447700900123".into()));
        assert_eq!(t.outbound_limits.max_concurrent, 2);
        assert_eq!(t.outbound_limits.max_per_hour, 5);
        for (text, key) in [
            ("country_code = \"+86\"", "trunks.t.country_code"),
            ("national_prefix = \"o\"", "trunks.t.national_prefix"),
            (
                "international_prefix = \"+\"",
                "trunks.t.international_prefix",
            ),
            ("outbound_allow = [\"(\"]", "trunks.t.outbound_allow"),
            ("outbound_max_digits = 16", "trunks.t.outbound_min_digits"),
            ("max_outbound_calls = 0", "trunks.t.max_outbound_calls"),
            (
                "max_outbound_per_hour = 0",
                "trunks.t.max_outbound_per_hour",
            ),
        ] {
            let err = load(&format!(
                "[trunks.t]\nsources = [\"192.0.2.0/24\"]\n{text}\n"
            ))
            .unwrap_err();
            assert_eq!(keys(err), vec![key.to_string()], "{text}");
        }
    }

    #[test]
    fn supervision_scopes_and_phones_are_checked() {
        let base = "[queues.support]\n[queues.sales]\n\
            [agents.\"2001\"]\npassword = \"x\"\nqueues = [\"sales\"]\n\
            [agents.\"2002\"]\npassword = \"y\"\n";
        let s = load(&format!(
            "{base}[monitor]\nsupervisors = [\"2001\", \"2002\"]\nqueues = {{ \"2002\" = [\"support\"] }}\n"
        ))
        .unwrap();
        let queues = |q: &[&str]| q.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(
            s.monitor.may_monitor("2001", &queues(&["sales"])),
            "its own queues"
        );
        assert!(!s.monitor.may_monitor("2001", &queues(&["support"])));
        assert!(s.monitor.may_monitor("2002", &queues(&["support", "x"])));
        assert!(!s.monitor.may_monitor("2002", &queues(&["sales"])));
        assert!(
            !s.monitor.may_monitor("1001", &queues(&["sales"])),
            "no supervisor"
        );
        let err = load(&format!(
            "{base}[monitor]\nsupervisors = [\"2001\"]\nqueues = {{ \"2002\" = [\"nope\"] }}\n"
        ))
        .unwrap_err();
        assert_eq!(
            keys(err),
            vec!["monitor.queues.2002", "monitor.queues.2002[0]"]
        );
        let token = "sha256 = \"fc08215c254a6e44742d4ed0717935f6fa3e854b7f896d7171b0c476071b3c53\"";
        let err = load(&format!(
            "{base}[api.tokens.a]\nrole = \"admin\"\nphones = [\"2001\"]\n{token}\n\
             [api.tokens.s]\nrole = \"supervisor\"\nqueues = [\"sales\"]\nphones = [\"9\"]\n{token}\n"
        ))
        .unwrap_err();
        assert_eq!(
            keys(err),
            vec!["api.tokens.a.phones", "api.tokens.s.phones[0]"]
        );
    }

    #[test]
    fn a_bad_environment_value_names_the_variable() {
        let env = BTreeMap::from([("HOTLINE__ACD__HOLD_ACTION".to_string(), "drop".to_string())]);
        let err = Settings::from_toml("", "test.toml", &env).unwrap_err();
        assert_issue(&err, "acd.hold_action");
        assert!(
            err.to_string().contains("HOTLINE__ACD__HOLD_ACTION"),
            "{err}"
        );
    }

    /// The commented `# key = value  # default ...` lines of the embedded
    /// default between the lines `from` and `to`, uncommented.
    fn documented(from: &str, to: &str) -> Vec<String> {
        EMBEDDED_DEFAULT
            .lines()
            .skip_while(|l| *l != from)
            .skip(1)
            .take_while(|l| !l.starts_with(to))
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| {
                l.split_once(" = ").is_some_and(|(key, _)| {
                    !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                })
            })
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn the_documented_defaults_are_the_defaults() {
        let acd = documented("[acd]", "# --- Queues");
        let queue = documented("# [queues.NAME]", "[queues.support]");
        assert_eq!(acd.len(), 14, "{acd:#?}");
        assert_eq!(queue.len(), 20, "{queue:#?}");
        let text = format!(
            "[acd]\n{}\n[queues.q]\n{}\n",
            acd.join("\n"),
            queue.join("\n")
        );
        let s = load(&text).unwrap_or_else(|e| panic!("{e}\n--- documented ---\n{text}"));
        assert_eq!(s.acd, AcdSettings::default());
        assert_eq!(s.queues["q"], Queue::new("q", "moh/default"));
    }

    #[test]
    fn media_call_bounds_take_their_documented_defaults_and_are_checked() {
        let documented = documented("[media]", "[log]");
        assert!(documented.iter().any(|l| l.starts_with("rtp_timeout")));
        let s = load(&format!("[media]\n{}\n", documented.join("\n"))).unwrap();
        assert_eq!(s.media.latch_window, Duration::from_secs(2));
        assert_eq!(s.media.rtp_timeout, Some(Duration::from_secs(60)));
        let defaults = load("").unwrap();
        assert_eq!(defaults.media.latch_window, s.media.latch_window);
        assert_eq!(defaults.media.rtp_timeout, s.media.rtp_timeout);
        assert_eq!(
            load("[media]\nrtp_timeout = \"0s\"\n")
                .unwrap()
                .media
                .rtp_timeout,
            None
        );
        let err = load("[media]\nrtp_timeout = \"200ms\"\nlatch_window = \"30s\"\n").unwrap_err();
        let keys = issue_keys(&err);
        assert!(keys.contains(&"media.rtp_timeout".to_string()), "{err}");
        assert!(keys.contains(&"media.latch_window".to_string()), "{err}");
        let s = load("[numbers.\"500\"]\nqueue = \"q\"\nmax_duration = \"2h\"\n[queues.q]\nmax_duration = \"1h\"\n").unwrap();
        assert_eq!(
            s.numbers["500"].max_duration,
            Some(Duration::from_secs(7200))
        );
        assert_eq!(s.queues["q"].max_duration, Some(Duration::from_secs(3600)));
    }

    #[test]
    fn monitor_options_take_their_documented_defaults_and_are_checked() {
        let documented = documented("[monitor]", "[metrics]");
        assert_eq!(documented.len(), 5, "{documented:#?}");
        let s = load(&format!("[monitor]\n{}\n", documented.join("\n"))).unwrap();
        assert_eq!(s.monitor, MonitorSettings::default());
        assert_eq!(s.monitor.listen_code, "*41");
        let err =
            load("[monitor]\nsupervisors = [\"9\"]\nlisten_code = \"*4a\"\nbarge_code = \"*4\"\n")
                .unwrap_err();
        let keys = issue_keys(&err);
        for key in [
            "monitor.supervisors[0]",
            "monitor.listen_code",
            "monitor.barge_code",
        ] {
            assert!(keys.contains(&key.to_string()), "{key}: {err}");
        }
    }

    #[test]
    fn store_options_take_their_documented_defaults() {
        let retention = documented("# [store.retention]", "# --- Recording");
        let documented = documented("[store]", "# [store.retention]");
        assert_eq!(documented.len(), 5, "{documented:#?}");
        assert_eq!(retention.len(), 3, "{retention:#?}");
        let s = load(&format!(
            "[store]\n{}\n[store.retention]\n{}\n",
            documented.join("\n"),
            retention.join("\n")
        ))
        .unwrap();
        assert_eq!(s.store, StoreSettings::default());
        assert_eq!(load("").unwrap().store, StoreSettings::default());
        assert!(s.store.enabled);
        assert_eq!(s.store.path, PathBuf::from("hotline.db"));
        assert_eq!(s.store.batch_interval, Duration::from_secs(1));
        assert_eq!(s.store.max_pending, 100_000);
        assert_eq!(s.store.refusals_per_second, 10);
        assert_eq!(
            s.store.retention_events,
            Some(Duration::from_secs(90 * 24 * 3600))
        );
        assert_eq!(s.store.retention_cdrs, None, "records are kept forever");
        assert_eq!(s.store.retention_sweep_interval, Duration::from_secs(3600));
    }

    #[test]
    fn store_bounds_and_retention_are_read_and_checked() {
        let s = load(
            "[store]\nmax_pending = 5000\nrefusals_per_second = 0\n\
             [store.retention]\nevents = \"30d\"\ncdrs = \"2y\"\nsweep_interval = \"10m\"\n",
        )
        .unwrap();
        assert_eq!(s.store.max_pending, 5_000);
        assert_eq!(s.store.refusals_per_second, 0);
        assert_eq!(
            s.store.retention_events,
            Some(Duration::from_secs(30 * 86_400))
        );
        assert!(s.store.retention_cdrs.is_some());
        assert_eq!(s.store.retention_sweep_interval, Duration::from_secs(600));
        let s = load("[store.retention]\nevents = \"forever\"\n").unwrap();
        assert_eq!(s.store.retention_events, None);
        for (text, key) in [
            ("[store]\nmax_pending = 10\n", "store.max_pending"),
            (
                "[store.retention]\nevents = \"1h\"\n",
                "store.retention.events",
            ),
            (
                "[store.retention]\ncdrs = \"never\"\n",
                "store.retention.cdrs",
            ),
            (
                "[store.retention]\nsweep_interval = \"1s\"\n",
                "store.retention.sweep_interval",
            ),
            ("[api]\nmax_failed_sources = 0\n", "api.max_failed_sources"),
            (
                "[api]\njournal_entry_max_bytes = 10\n",
                "api.journal_entry_max_bytes",
            ),
            ("[api]\njournal_max_bytes = 1000\n", "api.journal_max_bytes"),
        ] {
            let err = load(text).unwrap_err();
            assert_eq!(keys(err), vec![key], "{text}");
        }
        let api = load("").unwrap().api.limits;
        assert_eq!(api, ApiLimits::default());
        assert_eq!(api.max_failed_sources, 10_000);
        assert_eq!(api.journal_max_bytes, 16 * 1024 * 1024);
        assert_eq!(api.journal_entry_max_bytes, 8 * 1024);
    }

    #[test]
    fn store_options_are_read_and_checked() {
        let s = load("[store]\nenabled = false\npath = \"/var/lib/hotline/cdr.db\"\nbatch_interval = \"250ms\"\n")
            .unwrap();
        assert!(!s.store.enabled);
        assert_eq!(s.store.path, PathBuf::from("/var/lib/hotline/cdr.db"));
        assert_eq!(s.store.batch_interval, Duration::from_millis(250));
        for bad in ["50ms", "61s"] {
            let err = load(&format!("[store]\nbatch_interval = \"{bad}\"\n")).unwrap_err();
            assert_eq!(keys(err), vec!["store.batch_interval"], "{bad}");
        }
        let err = load("[store]\npath = \" \"\nbatch_interval = \"1d\"\npth = 1\n").unwrap_err();
        let text = err.to_string();
        for key in ["store.path", "store.batch_interval", "store.pth"] {
            assert!(issue_keys(&err).contains(&key.to_string()), "{key}: {text}");
        }
        assert!(text.contains("test.toml"), "{text}");
        // A disabled store needs no path.
        assert!(load("[store]\nenabled = false\npath = \"\"\n").is_ok());
    }

    #[test]
    fn store_options_are_overridden_from_the_environment() {
        let env = BTreeMap::from([
            ("HOTLINE__STORE__PATH".to_string(), "other.db".to_string()),
            ("HOTLINE__STORE__ENABLED".to_string(), "false".to_string()),
        ]);
        let s = Settings::from_toml(EMBEDDED_DEFAULT, "default", &env).unwrap();
        assert_eq!(s.store.path, PathBuf::from("other.db"));
        assert!(!s.store.enabled);
    }

    #[test]
    fn recording_options_take_their_documented_defaults() {
        let documented = documented("[recording]", "# --- Trunks");
        assert_eq!(documented.len(), 4, "{documented:#?}");
        let s = load(&format!("[recording]\n{}\n", documented.join("\n"))).unwrap();
        assert_eq!(s.recording, RecordingSettings::default());
        assert_eq!(load("").unwrap().recording, RecordingSettings::default());
        assert!(s.recording.enabled);
        assert_eq!(s.recording.dir, PathBuf::from("recordings"));
        assert_eq!(s.recording.format, RecordingFormat::Stereo);
        assert_eq!(s.recording.flush_interval, Duration::from_secs(1));
    }

    #[test]
    fn recording_options_are_read_and_checked() {
        let s = load(
            "[recording]\nformat = \"mono\"\ndir = \"/srv/rec\"\nflush_interval = \"250ms\"\n\
             [queues.support]\nrecord = false\n",
        )
        .unwrap();
        assert_eq!(s.recording.format, RecordingFormat::Mono);
        assert_eq!(s.recording.dir, PathBuf::from("/srv/rec"));
        assert_eq!(s.recording.flush_interval, Duration::from_millis(250));
        assert!(!s.queues["support"].record);
        for bad in ["50ms", "11s"] {
            let err = load(&format!("[recording]\nflush_interval = \"{bad}\"\n")).unwrap_err();
            assert_eq!(keys(err), vec!["recording.flush_interval"], "{bad}");
        }
        let err = load("[recording]\ndir = \" \"\nformat = \"surround\"\n").unwrap_err();
        let found = issue_keys(&err);
        for key in ["recording.dir", "recording.format"] {
            assert!(found.contains(&key.to_string()), "{key}: {err}");
        }
        assert!(load("[recording]\nenabled = false\ndir = \"\"\n").is_ok());
    }

    #[test]
    fn the_demo_queues_run_on_the_defaults() {
        let s = Settings::from_toml(EMBEDDED_DEFAULT, "default", &BTreeMap::new()).unwrap();
        let support = Queue {
            survey: Some("survey".into()),
            ..Queue::new("support", "moh/default")
        };
        assert_eq!(s.queues["support"], support);
        assert_eq!(s.queues["sales"], Queue::new("sales", "moh/default"));
        assert_eq!(s.acd, AcdSettings::default());
    }

    // --- Post-call survey (rulebook Q3) ---

    const SURVEY_FLOW: &str = "[ivr.rate]\nstart = \"rate\"\n[ivr.rate.nodes.rate]\n\
        type = \"collect\"\nprompts = [\"survey\"]\nvar = \"survey_score\"\n\
        max_digits = 1\npattern = \"[1-5]\"\nnext = \"bye\"\nfailure = \"bye\"\n\
        [ivr.rate.nodes.bye]\ntype = \"hangup\"\n";

    #[test]
    fn a_queue_survey_names_a_flow_and_its_target() {
        let s = load(&format!(
            "[queues.q]\nsurvey = \"rate\"\nsurvey_target = 0.9\n{SURVEY_FLOW}"
        ))
        .unwrap();
        assert_eq!(s.queues["q"].survey.as_deref(), Some("rate"));
        assert_eq!(s.queues["q"].survey_target, Ratio(0.9));
        let s = load("[queues.q]\n").unwrap();
        assert_eq!(s.queues["q"].survey, None);
        assert_eq!(s.queues["q"].survey_target, Ratio(0.96));
    }

    #[test]
    fn a_survey_flow_that_does_not_exist_is_refused_naming_the_key() {
        let err = load("[queues.q]\nsurvey = \"nope\"\n").unwrap_err();
        assert_eq!(keys(err), vec!["queues.q.survey"]);
    }

    #[test]
    fn a_survey_target_outside_zero_to_one_is_refused_naming_the_key() {
        for bad in ["1.5", "-0.1", "nan"] {
            let err = load(&format!(
                "[queues.q]\nsurvey = \"rate\"\nsurvey_target = {bad}\n{SURVEY_FLOW}"
            ))
            .unwrap_err();
            assert_eq!(keys(err), vec!["queues.q.survey_target"], "{bad}");
        }
        for good in ["0", "1", "0.5"] {
            load(&format!("[queues.q]\nsurvey_target = {good}\n")).unwrap();
        }
    }
}
