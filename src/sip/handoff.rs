//! What the SIP edge hands upward: the calls it admits and the INVITEs of
//! phones that dial something other than a hotline number. The edge answers
//! everything else itself; whoever takes these (the call room, as wired at
//! start) is behind this trait, so the edge depends on nothing above it.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use rsipstack::transaction::Transaction;

use super::{Admitted, EdgeContext};

/// A future the edge awaits, boxed so the trait stays dyn-compatible.
pub type Handoff<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The taker of the calls the edge admits.
pub trait CallHandoff: Send + Sync {
    /// Takes an admitted inbound call; resolves when the call has ended.
    fn inbound(&self, edge: Arc<EdgeContext>, tx: Transaction, admitted: Admitted) -> Handoff<()>;

    /// Offers a new INVITE for `dialled` before trunk admission (a phone's
    /// feature code, or a consultation). Resolves to the transaction, untouched,
    /// when `dialled` means nothing to the taker, so the edge goes on with it;
    /// to `None` when the request was taken and answered.
    fn phone_invite(
        &self,
        edge: Arc<EdgeContext>,
        tx: Transaction,
        source: SocketAddr,
        dialled: &str,
    ) -> Handoff<Option<Transaction>>;

    /// How many calls are live.
    fn live_calls(&self) -> usize;

    /// Ends every live call without waiting for the far ends' answers.
    fn hang_up_all(&self);
}

#[cfg(test)]
mod tests {
    /// The edge stands below the rooms that take its calls: none of its
    /// files names them.
    #[test]
    fn the_edge_imports_nothing_above_it() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/sip");
        let mut read = 0;
        for entry in std::fs::read_dir(&dir).expect("src/sip is readable") {
            let path = entry.expect("a directory entry").path();
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("a source file");
            read += 1;
            for above in ["call", "acd", "media", "ivr", "api", "wiring"] {
                for form in [format!("crate::{above}::"), format!("crate::{above};")] {
                    assert!(!text.contains(&form), "{} names {form}", path.display());
                }
            }
        }
        assert!(read > 5, "only {read} files read in {}", dir.display());
    }
}
