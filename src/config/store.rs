//! `[store]` and `[store.retention]`: the embedded database of call detail
//! records and events, how often it is written and how long rows are kept.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{Problems, Section};

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
    /// The settings as written, unchecked.
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
}

impl Section for RawStore {
    type Checked = StoreSettings;

    fn check(&self, problems: &mut Problems) -> StoreSettings {
        if self.enabled && self.path.trim().is_empty() {
            problems.add("store.path", "must name the database file, e.g. \"hotline.db\" (set store.enabled = false to keep no records)");
        }
        let interval = self.batch_interval;
        if interval < Duration::from_millis(100) || interval > Duration::from_secs(60) {
            problems.add(
                "store.batch_interval",
                format!(
                    "{} is out of range: expected between 100ms and 60s",
                    humantime::format_duration(interval)
                ),
            );
        }
        if self.max_pending < 1_000 {
            problems.add(
                "store.max_pending",
                format!("{} is too small: at least 1000 rows", self.max_pending),
            );
        }
        for (key, text) in [
            ("store.retention.events", &self.retention.events),
            ("store.retention.cdrs", &self.retention.cdrs),
        ] {
            if let Err(message) = parse_retention(text) {
                problems.add(key, message);
            }
        }
        let sweep = self.retention.sweep_interval;
        if sweep < Duration::from_secs(60) || sweep > Duration::from_secs(24 * 3600) {
            problems.add(
                "store.retention.sweep_interval",
                format!(
                    "{} is out of range: expected between 1m and 1d",
                    humantime::format_duration(sweep)
                ),
            );
        }
        self.resolve()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;
    use crate::config::*;

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
}
