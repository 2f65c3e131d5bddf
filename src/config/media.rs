//! `[media]`: the prompt library and its language, the RTP port range, the
//! default music on hold, and the bounds of a leg's media (latching, silence).

use std::time::Duration;

use serde::Deserialize;

use super::{Problems, Section};

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
    /// `None`: one per core.
    pub workers: Option<usize>,
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
            workers: None,
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
    /// Threads that relay plain bridges (caller ↔ agent) off the calls'
    /// tasks; 0 = none, every call relays on its own task.
    pub workers: usize,
}

impl Section for RawMedia {
    type Checked = MediaSettings;

    fn check(&self, problems: &mut Problems) -> MediaSettings {
        if self.rtp_port_min < 1024
            || self.rtp_port_min % 2 != 0
            || self.rtp_port_max <= self.rtp_port_min
        {
            problems.add(
                "media.rtp_port_min",
                format!(
                    "RTP ports {}-{} must be an even first port of at least 1024 below the last port",
                    self.rtp_port_min, self.rtp_port_max
                ),
            );
        }
        if self.latch_window > Duration::from_secs(10) {
            problems.add(
                "media.latch_window",
                "must not exceed 10s: a longer window lets a stranger's stream take a NAT'd caller's audio",
            );
        }
        if !self.rtp_timeout.is_zero() && self.rtp_timeout < Duration::from_secs(1) {
            problems.add(
                "media.rtp_timeout",
                "must be at least 1s (or \"0s\": never)",
            );
        }
        if !matches!(self.language.as_str(), "en" | "zh") {
            problems.add(
                "media.language",
                format!(
                    "`{}` has no prompt set: expected \"en\" or \"zh\"",
                    self.language
                ),
            );
        }
        let workers = self.workers.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        if workers > 256 {
            problems.add(
                "media.workers",
                "must not exceed 256 (one per core is the point)",
            );
        }
        MediaSettings {
            workers,
            prompts: self.prompts.clone().into(),
            language: self.language.clone(),
            rtp_port_min: self.rtp_port_min,
            rtp_port_max: self.rtp_port_max,
            music_on_hold: self.music_on_hold.clone(),
            latch_window: self.latch_window,
            rtp_timeout: super::nonzero(self.rtp_timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;

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
}
