//! The typed configuration of hotline.
//!
//! Owns loading (TOML file, or the embedded default, plus `HOTLINE__SECTION__KEY`
//! environment overrides through the `config` crate) and the driver of
//! validation into [`Settings`], the checked form the rest of the server runs
//! on. Each section lives in a file of its own holding its serde type (which
//! mirrors `config/hotline.toml`; unknown keys are errors), its checked type,
//! its checks and their tests; what one section says about another (a queue
//! named by a number, a prompt named by a flow) is checked in `cross`. Every
//! problem is reported with the key and the file it came from, all of them in
//! one run.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

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

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
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

mod acd;
mod agents;
mod api;
mod auth;
mod blocklist;
mod cross;
mod demo;
mod http;
pub mod ivr;
mod limits;
mod log;
mod media;
mod metrics;
mod monitor;
mod numbers;
mod problems;
mod queues;
mod recording;
mod registrar;
mod sip;
mod store;
#[cfg(test)]
mod test_support;
mod trunks;

pub use self::acd::{AcdSettings, HoldAction, RawAcd};
pub use self::agents::{Agent, RawAgent};
pub use self::api::{ApiLimits, ApiRole, ApiSettings, ApiToken, RawApi, RawApiToken};
pub use self::auth::{AuthSettings, DigestAlgorithm, RawAuth};
pub use self::blocklist::{BlockAction, BlocklistSettings, RawBlocklist};
pub use self::cross::{PromptCatalog, QUEUE_PROMPTS, check_prompts};
pub use self::demo::{DemoExposure, DemoSettings, RawDemo};
pub use self::http::RawHttp;
pub use self::limits::{LimitsSettings, RawLimits};
pub use self::log::{LogFormat, LogSettings, RawLog};
pub use self::media::{MediaSettings, RawMedia};
pub use self::metrics::{MetricsSettings, RawMetrics};
pub use self::monitor::{MonitorSettings, RawMonitor};
pub use self::numbers::{HotlineNumber, NumberTarget, RawNumber};
pub use self::problems::{ConfigError, ConfigIssue};
pub use self::queues::{
    EscalationStep, Overflow, Queue, QueueStrategy, Ratio, RawEscalationStep, RawQueue,
    WhenNoAgents,
};
pub use self::recording::{RawRecording, RecordingFormat, RecordingSettings};
pub use self::registrar::{RawRegistrar, RegistrarSettings};
pub use self::sip::{RawSip, SipSettings};
pub use self::store::{RawRetention, RawStore, StoreSettings};
pub use self::trunks::{RawTrunk, Trunk, TrunkCredentials};

use self::problems::Problems;

/// The default configuration, compiled into the binary so `hotline serve` runs anywhere.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../config/hotline.toml");

/// Where `serve` and `check-config` look when no `--config` is given.
pub const DEFAULT_PATH: &str = "config/hotline.toml";

/// Prefix of environment overrides: `HOTLINE__SIP__UDP=0.0.0.0:5060`.
pub const ENV_PREFIX: &str = "HOTLINE";

/// A section as written, checked into the form the server runs on: the one
/// way every section is validated.
trait Section {
    /// The checked form.
    type Checked;

    /// Checks the section's own values and builds its checked form. Each
    /// problem is added with its full key; the checked form is built anyway
    /// (a default standing in for a bad value), so that the checks across
    /// sections still run and one run reports everything. What the section
    /// says of other sections is checked in `cross`.
    fn check(&self, problems: &mut Problems) -> Self::Checked;
}

/// The sections, in the order they are checked (and written in
/// `config/hotline.toml`): the order their problems are reported in.
const SECTIONS: &[&str] = &[
    "sip",
    "registrar",
    "auth",
    "http",
    "log",
    "trunks",
    "numbers",
    "agents",
    "media",
    "ivr",
    "blocklist",
    "queues",
    "acd",
    "store",
    "metrics",
    "api",
    "recording",
    "monitor",
    "limits",
    "demo",
];

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

impl RawConfig {
    /// Checks every section, then what the sections say of each other,
    /// collecting all problems.
    pub fn validate(self, origin: &str) -> Result<Settings, Vec<ConfigIssue>> {
        let mut problems = Problems::default();
        let p = &mut problems;
        let sip = self.sip.check(p);
        let registrar = self.registrar.check(p);
        let auth = self.auth.check(p);
        let http_listen = self.http.check(p);
        let log = self.log.check(p);
        let trunks = self.trunks.check(p);
        let numbers = self.numbers.check(p);
        let agents = self.agents.check(p);
        let media = self.media.check(p);
        let ivr = self.ivr.check(p);
        let blocklist = self.blocklist.check(p);
        let queues = self.queues.check(p);
        let acd = self.acd.check(p);
        let store = self.store.check(p);
        let metrics = self.metrics.check(p);
        let api = self.api.check(p);
        let recording = self.recording.check(p);
        let monitor = self.monitor.check(p);
        let limits = self.limits.check(p);
        let demo = self.demo.check(p);
        let mut settings = Settings {
            origin: origin.to_string(),
            sip,
            registrar,
            auth,
            http_listen,
            metrics_per_agent: metrics.per_agent,
            log,
            trunks,
            numbers,
            agents,
            media,
            ivr,
            blocklist: blocklist.numbers,
            block_action: blocklist.action,
            queues,
            login_on_register: acd.login_on_register,
            acd,
            store,
            api,
            recording,
            monitor,
            limits,
            demo,
        };
        let crossed = cross::check(&self, &mut settings);
        problems.merge(crossed, SECTIONS);
        if problems.is_empty() {
            Ok(settings)
        } else {
            Err(problems.into_issues())
        }
    }
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

/// `None` for zero, the config's way of writing "off".
fn nonzero(d: std::time::Duration) -> Option<std::time::Duration> {
    (!d.is_zero()).then_some(d)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ipnet::IpNet;

    use super::test_support::*;
    use super::*;

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
    fn a_bad_environment_value_names_the_variable() {
        let env = BTreeMap::from([("HOTLINE__ACD__HOLD_ACTION".to_string(), "drop".to_string())]);
        let err = Settings::from_toml("", "test.toml", &env).unwrap_err();
        assert_issue(&err, "acd.hold_action");
        assert!(
            err.to_string().contains("HOTLINE__ACD__HOLD_ACTION"),
            "{err}"
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
    fn summary_line_counts_what_was_loaded() {
        let s = Settings::from_toml(EMBEDDED_DEFAULT, "hotline.toml", &BTreeMap::new()).unwrap();
        let line = s.to_string();
        assert!(
            line.contains("1 trunk(s), 3 number(s), 4 agent(s)"),
            "{line}"
        );
        assert!(!line.contains('\n'));
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
    fn every_section_is_listed_in_the_order_of_its_problems() {
        for section in SECTIONS {
            load(&format!("[{section}]\n")).unwrap_or_else(|e| panic!("{section}: {e}"));
        }
        let tables: Vec<&str> = EMBEDDED_DEFAULT
            .lines()
            .filter_map(|l| l.strip_prefix('['))
            .filter_map(|l| l.split([']', '.']).next())
            .filter(|name| !name.starts_with('['))
            .collect();
        for table in &tables {
            assert!(SECTIONS.contains(table), "{table} is not in SECTIONS");
        }
        assert_eq!(SECTIONS.len(), 20, "one entry per field of RawConfig");
    }
}
