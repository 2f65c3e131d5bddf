//! What a call works with: the SIP edge it came in on, and the services the
//! wiring hands every call (the registry of live calls, the router, the media
//! engine). It reads as the edge's context, so `ctx.settings` and
//! `ctx.dialogs` are the edge's own.

use std::ops::Deref;
use std::sync::Arc;

use super::Calls;
use crate::acd::RouterHandle;
use crate::media::MediaRoom;
use crate::sip::EdgeContext;

/// The edge plus the services of the call room.
pub struct CallContext {
    pub edge: Arc<EdgeContext>,
    /// The live calls.
    pub calls: Arc<Calls>,
    /// The ACD router queued callers are handed to.
    pub router: RouterHandle,
    /// The media engine every call uses.
    pub media: Arc<MediaRoom>,
}

impl Deref for CallContext {
    type Target = EdgeContext;

    fn deref(&self) -> &EdgeContext {
        &self.edge
    }
}
