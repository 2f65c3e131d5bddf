//! The wiring above the SIP edge and the call room: it builds the services a
//! call needs (the registry of live calls, the router's handle, the media
//! engine) and takes what the edge hands upward ([`CallHandoff`]), so the edge
//! never names the call room and the call room never builds its own services.

use std::net::SocketAddr;
use std::sync::Arc;

use rsipstack::transaction::Transaction;

use crate::acd::RouterHandle;
use crate::call::context::CallContext;
use crate::call::{Calls, features};
use crate::media::MediaRoom;
use crate::sip::handoff::{CallHandoff, Handoff};
use crate::sip::{Admitted, EdgeContext};

/// The call room's services, handed to the edge as its [`CallHandoff`].
pub struct Wiring {
    calls: Arc<Calls>,
    router: RouterHandle,
    media: Arc<MediaRoom>,
}

impl Wiring {
    pub fn new(router: RouterHandle, media: Arc<MediaRoom>) -> Arc<Wiring> {
        Arc::new(Wiring {
            calls: Arc::default(),
            router,
            media,
        })
    }

    /// The context of the calls that come in on `edge`.
    pub fn call_context(&self, edge: Arc<EdgeContext>) -> Arc<CallContext> {
        Arc::new(CallContext {
            edge,
            calls: self.calls.clone(),
            router: self.router.clone(),
            media: self.media.clone(),
        })
    }
}

impl CallHandoff for Wiring {
    fn inbound(&self, edge: Arc<EdgeContext>, tx: Transaction, admitted: Admitted) -> Handoff<()> {
        Box::pin(crate::call::run_inbound(
            self.call_context(edge),
            tx,
            admitted,
        ))
    }

    fn phone_invite(
        &self,
        edge: Arc<EdgeContext>,
        tx: Transaction,
        source: SocketAddr,
        dialled: &str,
    ) -> Handoff<Option<Transaction>> {
        let Some(feature) = features::feature(&edge.settings, dialled) else {
            return Box::pin(std::future::ready(Some(tx)));
        };
        let ctx = self.call_context(edge);
        Box::pin(async move {
            features::serve(ctx, tx, source, feature).await;
            None
        })
    }

    fn live_calls(&self) -> usize {
        self.calls.len()
    }

    fn hang_up_all(&self) {
        self.calls.hang_up_all();
    }
}
