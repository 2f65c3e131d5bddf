//! `[log]`: the log filter and output format.

use serde::Deserialize;

use super::{Problems, Section};

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

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub level: String,
    pub format: LogFormat,
}

impl Section for RawLog {
    type Checked = LogSettings;

    fn check(&self, problems: &mut Problems) -> LogSettings {
        if self.level.trim().is_empty()
            || tracing_subscriber::EnvFilter::try_new(&self.level).is_err()
        {
            problems.add(
                "log.level",
                format!(
                    "`{}` is not a log filter: expected error, warn, info, debug, trace or a directive like \"hotline=debug\"",
                    self.level
                ),
            );
        }
        LogSettings {
            level: self.level.clone(),
            format: self.format,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::check_section;

    #[test]
    fn the_level_is_a_log_filter() {
        for level in ["info", "warn,hotline=debug"] {
            let (log, keys) = check_section(&RawLog {
                level: level.into(),
                format: LogFormat::Json,
            });
            assert!(keys.is_empty(), "{level}: {keys:?}");
            assert_eq!(log.level, level);
        }
        for level in ["", "hotline=loud"] {
            let (_, keys) = check_section(&RawLog {
                level: level.into(),
                ..RawLog::default()
            });
            assert_eq!(keys, ["log.level"], "{level}");
        }
    }
}
