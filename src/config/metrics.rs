//! `[metrics]`: what the metrics page shows beyond the defaults.

use serde::Deserialize;

use super::{Problems, Section};

/// `[metrics]`: what the metrics page shows beyond the defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMetrics {
    /// Series per agent (answered calls, talk time, state): one label value
    /// per agent, so off by default.
    pub per_agent: bool,
}

/// `[metrics]`, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MetricsSettings {
    pub per_agent: bool,
}

impl Section for RawMetrics {
    type Checked = MetricsSettings;

    fn check(&self, _problems: &mut Problems) -> MetricsSettings {
        MetricsSettings {
            per_agent: self.per_agent,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::load;

    #[test]
    fn series_per_agent_are_off_unless_asked_for() {
        assert!(!load("").unwrap().metrics_per_agent);
        assert!(
            load("[metrics]\nper_agent = true\n")
                .unwrap()
                .metrics_per_agent
        );
    }
}
