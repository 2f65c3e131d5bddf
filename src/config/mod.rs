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
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAcd {
    /// Registering a phone logs its agent in as ready; losing the last
    /// registration logs it out.
    pub login_on_register: bool,
}

impl Default for RawAcd {
    fn default() -> Self {
        Self {
            login_on_register: true,
        }
    }
}

/// A queue callers wait in (the router's options arrive with the ACD).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawQueue {
    /// Looped while callers wait; empty means `media.music_on_hold`.
    pub music_on_hold: String,
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
}

impl Default for RawMedia {
    fn default() -> Self {
        Self {
            prompts: "prompts".into(),
            language: "en".into(),
            rtp_port_min: 10000,
            rtp_port_max: 20000,
            music_on_hold: "moh/default".into(),
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
            failure_window: Duration::from_secs(60),
            ban_time: Duration::from_secs(300),
        }
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

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTrunk {
    pub sources: Vec<String>,
    pub username: String,
    pub password: String,
    pub numbers: Vec<String>,
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
    pub login_on_register: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    pub name: String,
    /// Prompt name of the queue's music on hold.
    pub music_on_hold: String,
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
                "must be at least 1 (a source is banned after this many failures)".into(),
            );
        }
        if a.failure_window.is_zero() {
            issue("auth.failure_window".into(), "must be at least 1s".into());
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
            trunks.push(Trunk {
                name: name.clone(),
                sources,
                credentials,
                numbers: raw.numbers.clone(),
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
                failure_window: self.auth.failure_window,
                ban_time: self.auth.ban_time,
            },
            http_listen,
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
            },
            queues: self
                .queues
                .iter()
                .map(|(name, q)| {
                    let moh = if q.music_on_hold.trim().is_empty() {
                        self.media.music_on_hold.clone()
                    } else {
                        q.music_on_hold.trim().to_string()
                    };
                    (
                        name.clone(),
                        Queue {
                            name: name.clone(),
                            music_on_hold: moh,
                        },
                    )
                })
                .collect(),
            login_on_register: self.acd.login_on_register,
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
    fn trunk_with_half_credentials_is_refused() {
        let err = load("[trunks.t]\nusername = \"u\"\n").unwrap_err();
        assert_eq!(keys(err), vec!["trunks.t.password".to_string()]);
    }

    #[test]
    fn summary_line_counts_what_was_loaded() {
        let s = Settings::from_toml(EMBEDDED_DEFAULT, "hotline.toml", &BTreeMap::new()).unwrap();
        let line = s.to_string();
        assert!(
            line.contains("1 trunk(s), 2 number(s), 4 agent(s)"),
            "{line}"
        );
        assert!(!line.contains('\n'));
    }
}
