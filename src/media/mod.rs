//! The media engine: RTP sessions and their port pool, G.711, the prompt cache and
//! paced playback, DTMF detection, relay between legs.
//!
//! It knows nothing of SIP dialogs: the call actor hands it negotiated media
//! parameters and receives DTMF and playback events back.

pub mod dtmf;
pub mod g711;
pub mod prompt;
pub mod rtp;
pub mod sdp;
