//! `[blocklist]`: caller numbers refused before any IVR runs, and how.

use std::collections::BTreeSet;

use serde::Deserialize;

use super::{Problems, Section};

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

/// `[blocklist]`, checked (the server reads it as `Settings::blocklist` and
/// `Settings::block_action`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BlocklistSettings {
    pub numbers: BTreeSet<String>,
    pub action: BlockAction,
}

impl Section for RawBlocklist {
    type Checked = BlocklistSettings;

    fn check(&self, _problems: &mut Problems) -> BlocklistSettings {
        BlocklistSettings {
            numbers: self.numbers.iter().map(|n| n.trim().to_string()).collect(),
            action: self.action,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::{keys, load};

    #[test]
    fn blocked_numbers_are_trimmed_and_the_action_named() {
        let s = load("[blocklist]\nnumbers = [\" 555 \", \"666\"]\naction = \"prompt\"\n").unwrap();
        assert_eq!(s.blocklist, BTreeSet::from(["555".into(), "666".into()]));
        assert_eq!(s.block_action, BlockAction::Prompt);
        assert_eq!(load("").unwrap().block_action, BlockAction::Reject);
        let err = load("[blocklist]\naction = \"drop\"\n").unwrap_err();
        assert_eq!(keys(err), ["blocklist.action"]);
    }
}
