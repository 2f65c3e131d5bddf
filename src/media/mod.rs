//! The media engine: RTP sessions and their port pool, G.711, the prompt cache and
//! paced playback, DTMF detection, relay between legs.
//!
//! It knows nothing of SIP dialogs: the call actor hands it negotiated media
//! parameters and receives DTMF and playback events back.

pub mod dtmf;
pub mod engine;
pub mod g711;
pub mod mixer;
pub mod pacer;
pub mod prompt;
pub mod rtp;
pub mod sdp;

use std::sync::Arc;

use crate::config::{ConfigIssue, Settings};

use self::pacer::Pacer;
use self::prompt::{Prompt, PromptLibrary};
use self::rtp::PortPool;

/// The prompt directory of the default configuration.
pub const DEFAULT_PROMPTS: &str = "prompts";

pub use crate::config::QUEUE_PROMPTS;

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
    /// The loops that relay plain bridges (`media.workers`); `None` when
    /// they are off or could not start: calls relay on their own tasks.
    pub engine: Option<engine::MediaEngine>,
}

/// Loads the prompt library and checks that every prompt the configuration
/// names or the queues always play is in it (see
/// [`crate::config::check_prompts`]); each problem names its config key.
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
    let issues = crate::config::check_prompts(settings, &library);
    if issues.is_empty() {
        Ok(library)
    } else {
        Err(issues)
    }
}

impl crate::config::PromptCatalog for PromptLibrary {
    fn has_localized(&self, language: &str, name: &str) -> bool {
        self.localized(language, name).is_some()
    }

    fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

impl MediaRoom {
    /// Starts the pacer on the current runtime.
    pub fn start(settings: &Settings, prompts: PromptLibrary) -> MediaRoom {
        let rtp = Arc::<rtp::RtpTotals>::default();
        let workers = settings.media.workers;
        let engine = (workers > 0)
            .then(|| engine::MediaEngine::start(workers, rtp.clone()))
            .and_then(|started| {
                started
                    .map_err(|e| {
                        tracing::warn!(error = %e, "media loops did not start: calls relay on their own tasks");
                    })
                    .ok()
            });
        MediaRoom {
            pacer: Pacer::start(),
            rtp,
            engine,
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
