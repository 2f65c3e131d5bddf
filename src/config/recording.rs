//! `[recording]` (rulebook Q1): where and how bridged calls are recorded.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{Problems, Section};

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
    /// The settings as written, unchecked.
    fn resolve(&self) -> RecordingSettings {
        RecordingSettings {
            enabled: self.enabled,
            dir: PathBuf::from(self.dir.trim()),
            format: self.format,
            flush_interval: self.flush_interval,
        }
    }
}

impl Section for RawRecording {
    type Checked = RecordingSettings;

    fn check(&self, problems: &mut Problems) -> RecordingSettings {
        if self.enabled && self.dir.trim().is_empty() {
            problems.add("recording.dir", "must name the directory of the recordings, e.g. \"recordings\" (set recording.enabled = false to record nothing)");
        }
        let interval = self.flush_interval;
        if interval < Duration::from_millis(100) || interval > Duration::from_secs(10) {
            problems.add(
                "recording.flush_interval",
                format!(
                    "{} is out of range: expected between 100ms and 10s",
                    humantime::format_duration(interval)
                ),
            );
        }
        self.resolve()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;

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
}
