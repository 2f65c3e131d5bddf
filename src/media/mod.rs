//! The media engine: RTP sessions and their port pool, G.711, the prompt cache and
//! paced playback, DTMF detection, relay between legs.
//!
//! It knows nothing of SIP dialogs: the call actor hands it negotiated media
//! parameters and receives DTMF and playback events back.

pub mod dtmf;
pub mod g711;
pub mod mixer;
pub mod pacer;
pub mod prompt;
pub mod rtp;
pub mod sdp;

use std::sync::Arc;

use crate::config::{ConfigIssue, NumberTarget, Settings};

use self::pacer::Pacer;
use self::prompt::{Prompt, PromptLibrary};
use self::rtp::PortPool;

/// The prompt directory of the default configuration.
pub const DEFAULT_PROMPTS: &str = "prompts";

/// Prompts the queues play to callers (the agent's number, position and
/// estimated wait, the callback offer, the overflow default), besides the
/// digit prompts `digit_0`..`digit_9`; they must exist when a queue is
/// configured.
pub const QUEUE_PROMPTS: &[&str] = &[
    "agent_number",
    "will_serve_you",
    "position",
    "estimated_wait",
    "minutes",
    "thank_you_for_waiting",
    "leave_number",
    "callback_recorded",
    "callback_confirm",
    "callback_confirm_keys",
    "callback_number_refused",
    "busy",
];

/// What every call shares of the media engine.
pub struct MediaRoom {
    pub pacer: Pacer,
    /// RTP in and relayed out, over all calls.
    pub rtp: Arc<rtp::RtpTotals>,
    pub ports: PortPool,
    pub prompts: Arc<PromptLibrary>,
    pub language: String,
    pub music_on_hold: String,
    /// `media.latch_window`.
    pub latch_window: std::time::Duration,
}

/// Loads the prompt library and checks that every prompt a flow, a number, a
/// queue or the music on hold names exists, and, when queues are configured,
/// the prompts they always play ([`QUEUE_PROMPTS`], the digits); each problem
/// names its config key.
pub fn load_prompts(settings: &Settings) -> Result<PromptLibrary, Vec<ConfigIssue>> {
    let dir = &settings.media.prompts;
    // The default directory falls back to the set compiled into the binary,
    // so `hotline serve` runs from anywhere; a directory you name must exist.
    let use_embedded = !dir.exists() && dir.as_path() == std::path::Path::new(DEFAULT_PROMPTS);
    let loaded = if use_embedded {
        tracing::info!("no prompts/ directory here: using the prompts built into hotline");
        PromptLibrary::embedded()
    } else {
        PromptLibrary::load_dir(dir)
    };
    let library = loaded.map_err(|errors| {
        errors
            .into_iter()
            .map(|e| ConfigIssue {
                key: "media.prompts".into(),
                message: e.to_string(),
            })
            .collect::<Vec<_>>()
    })?;
    let mut issues = Vec::new();
    let mut need = |key: String, language: &str, name: &str| {
        if library.localized(language, name).is_none() {
            issues.push(ConfigIssue {
                key,
                message: format!(
                    "prompt `{name}` is not in {} (for language {language})",
                    dir.display()
                ),
            });
        }
    };
    let default_language = settings.media.language.as_str();
    for (flow_name, flow) in &settings.ivr {
        let language = flow.language.as_deref().unwrap_or(default_language);
        for (node, prompt) in flow.prompt_names() {
            need(format!("ivr.{flow_name}.nodes.{node}"), language, prompt);
        }
        // `say` nodes read values with the digit prompts.
        for digit in crate::ivr::say_prompts("0123456789.") {
            need(format!("ivr.{flow_name}"), language, &digit);
        }
    }
    for (number, n) in &settings.numbers {
        if let NumberTarget::Queue {
            greeting: Some(greeting),
            ..
        } = &n.target
        {
            need(
                format!("numbers.{number}.greeting"),
                default_language,
                greeting,
            );
        }
    }
    if settings.block_action == crate::config::BlockAction::Prompt {
        need("blocklist.action".into(), default_language, "blocked");
    }
    for (name, queue) in &settings.queues {
        if let Some(prompt) = &queue.overflow_prompt {
            need(
                format!("queues.{name}.overflow_prompt"),
                default_language,
                prompt,
            );
        }
    }
    if !settings.queues.is_empty() {
        let missing: Vec<String> = QUEUE_PROMPTS
            .iter()
            .map(|name| name.to_string())
            .chain(crate::ivr::say_prompts("0123456789"))
            .filter(|name| library.localized(default_language, name).is_none())
            .collect();
        if !missing.is_empty() {
            issues.push(ConfigIssue {
                key: "media.prompts".into(),
                message: format!(
                    "{} lacks prompts the queues play to callers (for language {default_language}): {}",
                    dir.display(),
                    missing.join(", ")
                ),
            });
        }
    }
    for (name, queue) in &settings.queues {
        if library.get(&queue.music_on_hold).is_none() {
            issues.push(ConfigIssue {
                key: format!("queues.{name}.music_on_hold"),
                message: format!("`{}` is not in {}", queue.music_on_hold, dir.display()),
            });
        }
    }
    if library.get(&settings.media.music_on_hold).is_none() {
        issues.push(ConfigIssue {
            key: "media.music_on_hold".into(),
            message: format!(
                "`{}` is not in {}",
                settings.media.music_on_hold,
                dir.display()
            ),
        });
    }
    if issues.is_empty() {
        Ok(library)
    } else {
        Err(issues)
    }
}

impl MediaRoom {
    /// Starts the pacer on the current runtime.
    pub fn start(settings: &Settings, prompts: PromptLibrary) -> MediaRoom {
        MediaRoom {
            pacer: Pacer::start(),
            rtp: Arc::default(),
            ports: PortPool::new(settings.media.rtp_port_min, settings.media.rtp_port_max),
            prompts: Arc::new(prompts),
            language: settings.media.language.clone(),
            music_on_hold: settings.media.music_on_hold.clone(),
            latch_window: settings.media.latch_window,
        }
    }

    /// The prompts for `names` in `language` (falling back to English); names
    /// that do not exist are skipped (they were checked at load).
    pub fn playlist(&self, language: &str, names: &[String]) -> Vec<Arc<Prompt>> {
        names
            .iter()
            .filter_map(|n| self.prompts.localized(language, n))
            .collect()
    }

    /// The music on hold of `queue` (its own, else the default).
    pub fn music_on_hold(&self, queue: Option<&crate::config::Queue>) -> Vec<Arc<Prompt>> {
        let name = queue.map_or(self.music_on_hold.as_str(), |q| q.music_on_hold.as_str());
        self.prompts
            .get(name)
            .or_else(|| self.prompts.get(&self.music_on_hold))
            .into_iter()
            .collect()
    }
}
