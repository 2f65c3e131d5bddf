//! The dialog states of every call's dialogs, through one shared channel.
//!
//! rsipstack reports a dialog's states on a sender it is given, and a channel
//! keeps room for 32 of its messages from the start: with a dialog state of
//! about 300 bytes that is nearly 10 KB a call kept for the call's life. So
//! every dialog a call creates is given the one shared sender, under the
//! dialog's Call-ID, and a task hands each state, boxed, to the call that
//! registered that Call-ID. States of one dialog keep their order; a state
//! of a dialog no live call registered is dropped, as it was when a call's
//! own channel was gone.

use std::sync::{Arc, Mutex, OnceLock};

use dashmap::DashMap;
use rsipstack::dialog::dialog::{DialogState, DialogStateSender};
use tokio::sync::mpsc;

type CallSender = mpsc::UnboundedSender<Box<DialogState>>;

/// The calls' dialogs by Call-ID, and the sender they all share.
#[derive(Default)]
pub struct DialogEvents {
    shared: OnceLock<DialogStateSender>,
    calls: Arc<DashMap<String, CallSender>>,
}

impl DialogEvents {
    /// The shared sender; its task starts with the first call.
    fn shared(&self) -> DialogStateSender {
        self.shared
            .get_or_init(|| {
                let (shared, mut states) = mpsc::unbounded_channel::<DialogState>();
                let calls = self.calls.clone();
                tokio::spawn(async move {
                    while let Some(state) = states.recv().await {
                        let call = calls
                            .get(super::dialog_of(&state).call_id.as_str())
                            .map(|call| call.value().clone());
                        if let Some(call) = call {
                            let _ = call.send(Box::new(state));
                        }
                    }
                });
                shared
            })
            .clone()
    }

    /// A new call's end: the registrar of its dialogs and their states.
    pub fn open(&self) -> (CallDialogs, CallDialogStates) {
        let (call, states) = mpsc::unbounded_channel();
        let dialogs = CallDialogs(Arc::new(Registered {
            shared: self.shared(),
            calls: self.calls.clone(),
            call,
            call_ids: Mutex::default(),
        }));
        (dialogs, CallDialogStates(states))
    }

    /// How many dialogs live calls have registered.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }
}

/// One call's dialogs: the sender to create each with. The registrations
/// go when the last clone goes (with the call).
#[derive(Clone)]
pub struct CallDialogs(Arc<Registered>);

struct Registered {
    shared: DialogStateSender,
    calls: Arc<DashMap<String, CallSender>>,
    call: CallSender,
    call_ids: Mutex<Vec<String>>,
}

impl CallDialogs {
    /// The sender for the dialog whose Call-ID is `sip_call_id`: its states
    /// reach this call from now on.
    pub fn sender_for(&self, sip_call_id: &str) -> DialogStateSender {
        let registered = &self.0;
        registered
            .calls
            .insert(sip_call_id.to_string(), registered.call.clone());
        if let Ok(mut ids) = registered.call_ids.lock() {
            ids.push(sip_call_id.to_string());
        }
        registered.shared.clone()
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let ids = match self.call_ids.get_mut() {
            Ok(ids) => std::mem::take(ids),
            Err(poisoned) => std::mem::take(poisoned.into_inner()),
        };
        for id in ids {
            // Only this call's own registration: a Call-ID taken over by
            // another call since stays with it.
            self.calls
                .remove_if(&id, |_, call| call.same_channel(&self.call));
        }
    }
}

/// The states of one call's dialogs, in the order each dialog sent them.
pub struct CallDialogStates(mpsc::UnboundedReceiver<Box<DialogState>>);

impl CallDialogStates {
    /// The next state; `None` once the call's registrar is gone.
    pub async fn recv(&mut self) -> Option<DialogState> {
        self.0.recv().await.map(|state| *state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsipstack::dialog::DialogId;
    use rsipstack::dialog::dialog::TerminatedReason;

    fn terminated(call_id: &str) -> DialogState {
        DialogState::Terminated(
            DialogId {
                call_id: call_id.to_string(),
                local_tag: "l".into(),
                remote_tag: "r".into(),
            },
            TerminatedReason::UacBye,
        )
    }

    #[tokio::test]
    async fn states_reach_the_call_that_registered_their_dialog() {
        let events = DialogEvents::default();
        let (a, mut a_states) = events.open();
        let (b, mut b_states) = events.open();
        let to_a = a.sender_for("dialog-a");
        let to_b = b.sender_for("dialog-b");
        to_b.send(terminated("dialog-b")).unwrap();
        to_a.send(terminated("dialog-a")).unwrap();
        let got = a_states.recv().await.unwrap();
        assert_eq!(super::super::dialog_of(&got).call_id, "dialog-a");
        let got = b_states.recv().await.unwrap();
        assert_eq!(super::super::dialog_of(&got).call_id, "dialog-b");
        assert_eq!(events.len(), 2);
    }

    #[tokio::test]
    async fn a_call_gone_takes_its_dialogs_with_it() {
        let events = DialogEvents::default();
        let (a, mut a_states) = events.open();
        let sender = a.sender_for("dialog-a");
        let again = a.clone();
        drop(a);
        assert_eq!(events.len(), 1, "a clone keeps the registration");
        drop(again);
        assert!(events.is_empty());
        // A late state of the dialog is dropped, and the call's end sees none.
        sender.send(terminated("dialog-a")).unwrap();
        assert!(a_states.recv().await.is_none());
    }
}
