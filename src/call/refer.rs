//! Blind transfer from the agent's phone (RFC 3515): a REFER in the answered
//! agent's dialog names, in `Refer-To`, a hotline number, a queue or an
//! agent. hotline answers 202, hands the caller over as a CTI transfer does
//! (counted against `acd.max_transfers`, rulebook L6), and reports the
//! outcome with NOTIFYs (`message/sipfrag`) in that dialog. The phone hangs
//! up its dialog after the final NOTIFY; one that does not is hung up.
//!
//! A `Refer-To` with `Replaces` (RFC 3891) naming the agent's consultation
//! dialog completes an attended transfer: the consulted agent takes the
//! caller, and the replaced dialog is ended after the final NOTIFY.

use std::time::Duration;

use rsipstack::dialog::DialogId;
use rsipstack::dialog::dialog::TransactionHandle;
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::{Header, Request, StatusCode};
use tokio::sync::oneshot;
use tracing::{debug, info};

use super::core::consult::{BlindRefer, BlindReferRefusal};
use super::{Actor, TransferTarget};
use crate::config::NumberTarget;
use crate::sip::{EdgeContext, header_values};

/// How long the transferor's phone has to hang up after the final NOTIFY.
const TRANSFEROR_GRACE: Duration = Duration::from_secs(5);

/// How long the NOTIFYs wait for the REFER's 202 to leave: they must not
/// overtake it.
const ANSWER_WAIT: Duration = Duration::from_secs(2);

/// A REFER answered 202 whose NOTIFYs wait for that answer to be sent. The
/// dialog layer reports its dialog confirmed again once it is.
pub(super) struct Accepted {
    dialog: DialogId,
    sent: oneshot::Sender<()>,
}

/// Why a REFER's `Refer-To` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferToError {
    #[error("the REFER has no Refer-To header")]
    Missing,
    #[error("Refer-To `{0}` is not a SIP URI with a user part")]
    Unparsable(String),
    /// An attended transfer (RFC 3891 `Replaces`), naming the Call-ID of
    /// the dialog it replaces.
    #[error("an attended transfer replacing the dialog {0}")]
    Replaces(String),
}

/// The user part of the URI in a `Refer-To` value (`<sip:402@host>`,
/// `"Sales" <sip:sales@host;transport=udp>`, `sip:1002@host`, `tel:402`).
pub fn refer_to_user(value: &str) -> Result<String, ReferToError> {
    let bad = || ReferToError::Unparsable(value.trim().to_string());
    let uri = match (value.find('<'), value.rfind('>')) {
        (Some(open), Some(close)) if open < close => &value[open + 1..close],
        (None, None) => value.split(';').next().unwrap_or_default(),
        _ => return Err(bad()),
    }
    .trim();
    let lower = uri.to_ascii_lowercase();
    if let Some((_, headers)) = uri.split_once('?')
        && let Some(replaces) = headers
            .split('&')
            .find(|h| h.to_ascii_lowercase().starts_with("replaces="))
    {
        // `Replaces=CALL-ID;to-tag=..;from-tag=..`, escaped as a URI header.
        let value = percent_decode(&replaces["replaces=".len()..]);
        let call_id = value.split(';').next().unwrap_or_default().trim();
        if call_id.is_empty() {
            return Err(bad());
        }
        return Err(ReferToError::Replaces(call_id.to_string()));
    }
    let user = if let Some(rest) = lower.strip_prefix("tel:") {
        &uri[uri.len() - rest.len()..]
    } else {
        let rest = lower
            .strip_prefix("sip:")
            .or_else(|| lower.strip_prefix("sips:"))
            .ok_or_else(bad)?;
        let rest = &uri[uri.len() - rest.len()..];
        rest.split_once('@').ok_or_else(bad)?.0
    };
    // URI parameters and headers (`;user=phone`, `?Replaces=`) are not the user.
    let user = user
        .split([';', '?', ':'])
        .next()
        .unwrap_or_default()
        .trim();
    if user.is_empty() || user.chars().any(|c| c.is_whitespace() || c == '<') {
        return Err(bad());
    }
    Ok(user.to_string())
}

/// Decodes `%XX` escapes (a malformed escape is kept as written).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn warning(text: &str) -> Header {
    Header::Other(
        "Warning".into(),
        format!("399 hotline \"{}\"", text.replace('"', "'")),
    )
}

async fn refuse(handle: &TransactionHandle, status: StatusCode, why: &str) {
    info!(status = u16::from(status.clone()), why, "REFER refused");
    if let Err(e) = handle.respond(status, Some(vec![warning(why)]), None).await {
        debug!(error = %e, "could not refuse the REFER");
    }
}

impl Actor {
    /// An agent dialog is confirmed again after a request it received was
    /// answered: a REFER's NOTIFYs may go now.
    pub(super) fn refer_answered(&mut self, dialog: &DialogId) {
        if let Some(i) = self.referred.iter().position(|a| &a.dialog == dialog) {
            let _ = self.referred.swap_remove(i).sent.send(());
        }
    }

    /// Where `user` (a Refer-To user part) sends the caller: a hotline
    /// number first, then a queue, then an agent.
    fn refer_target(&self, user: &str) -> Option<TransferTarget> {
        let settings = &self.ctx.settings;
        if let Some(number) = settings.numbers.get(user) {
            return Some(match &number.target {
                NumberTarget::Queue { queue, .. } => TransferTarget::Queue(queue.clone()),
                NumberTarget::Ivr(flow) => TransferTarget::Ivr(flow.clone()),
            });
        }
        if settings.queues.contains_key(user) {
            return Some(TransferTarget::Queue(user.to_string()));
        }
        settings
            .agents
            .contains_key(user)
            .then(|| TransferTarget::Agent(user.to_string()))
    }

    /// A REFER in one of the call's agent dialogs.
    pub(super) async fn on_refer(&mut self, id: DialogId, req: Request, handle: TransactionHandle) {
        let dialog = self
            .acd
            .connected
            .as_ref()
            .and_then(|c| c.leg.answered())
            .filter(|d| d.id() == id)
            .cloned();
        let Some(dialog) = dialog else {
            return refuse(
                &handle,
                StatusCode::Forbidden,
                "this phone is not the one connected to the caller",
            )
            .await;
        };
        let values: Vec<&str> = ["Refer-To", "r"]
            .iter()
            .flat_map(|name| header_values(&req.headers, name))
            .collect();
        let user = match values.as_slice() {
            [] => Err(ReferToError::Missing),
            [one] => refer_to_user(one),
            [first, ..] => Err(ReferToError::Unparsable(first.to_string())),
        };
        if let Err(ReferToError::Replaces(replaced)) = &user {
            return self.attended_refer(dialog, id, replaced, handle).await;
        }
        let target = user.as_ref().ok().and_then(|u| self.refer_target(u));
        let survey = match &target {
            Some(TransferTarget::Survey) => true,
            Some(TransferTarget::Ivr(flow)) => self.survey_flow().is_some_and(|(s, ..)| &s == flow),
            _ => false,
        };
        let refer = BlindRefer {
            user: user.map_err(|e| e.to_string()),
            known: target.is_some(),
            survey,
        };
        let verdict = self.consult_blind_refer(&refer);
        let (Ok(()), Some(target)) = (&verdict, target) else {
            let Err(refusal) = verdict else {
                return;
            };
            let status = match refusal {
                BlindReferRefusal::BadReferTo(_) => StatusCode::BadRequest,
                BlindReferRefusal::UnknownTarget(_) => StatusCode::NotFound,
                BlindReferRefusal::NotConnected => StatusCode::Forbidden,
                BlindReferRefusal::TransferLimit(_) => {
                    StatusCode::Other(403, "Transfer Limit Reached".into())
                }
            };
            return refuse(&handle, status, &refusal.to_string()).await;
        };
        let user = refer.user.unwrap_or_default();
        info!(%user, ?target, "REFER accepted");
        if let Err(e) = handle.respond(StatusCode::Accepted, None, None).await {
            debug!(error = %e, "could not accept the REFER");
            return;
        }
        let (sent, answered) = oneshot::channel();
        self.referred.push(Accepted { dialog: id, sent });
        let outcome = self.transfer_from(target, false);
        if let Err(why) = &outcome {
            info!(%why, "the referred transfer failed");
        }
        report(&self.ctx, dialog, answered, outcome.is_ok(), None);
    }

    /// A REFER with Replaces in the agent's call dialog or in its
    /// consultation dialog, naming the other one: the consulted agent takes
    /// the caller (attended transfer).
    pub(super) async fn attended_refer(
        &mut self,
        dialog: InviteDialog,
        id: DialogId,
        replaced: &str,
        handle: TransactionHandle,
    ) {
        let (effects, replaced_dialog) = match self.consult_refer(&dialog, replaced) {
            Ok(taken) => taken,
            Err((status, why)) => {
                let status = match status {
                    481 => StatusCode::CallTransactionDoesNotExist,
                    403 => StatusCode::Other(403, "Transfer Limit Reached".into()),
                    _ => StatusCode::Other(491, "Request Pending".into()),
                };
                return refuse(&handle, status, &why).await;
            }
        };
        info!(%replaced, "REFER with Replaces accepted: attended transfer");
        let accepted = handle.respond(StatusCode::Accepted, None, None).await;
        // The machine has taken the transfer: it is carried out even when
        // the 202 could not be sent.
        self.consult_transfer_by_refer(effects);
        if let Err(e) = accepted {
            debug!(error = %e, "could not accept the REFER");
            return;
        }
        let (sent, answered) = oneshot::channel();
        self.referred.push(Accepted { dialog: id, sent });
        report(&self.ctx, dialog, answered, true, replaced_dialog);
    }
}

/// Sends the REFER's NOTIFYs — 100 Trying, then 200 OK or 503 — and, when
/// the transfer took effect, ends the transferor's dialog if its phone does
/// not.
fn report(
    ctx: &EdgeContext,
    dialog: InviteDialog,
    answered: oneshot::Receiver<()>,
    transferred: bool,
    replaced: Option<InviteDialog>,
) {
    let dialogs = ctx.dialogs.clone();
    tokio::spawn(async move {
        if tokio::time::timeout(ANSWER_WAIT, answered).await.is_err() {
            debug!("the REFER's 202 was not reported sent; NOTIFY anyway");
        }
        let last = if transferred {
            "SIP/2.0 200 OK"
        } else {
            "SIP/2.0 503 Service Unavailable"
        };
        for (state, frag) in [
            ("active;expires=60", "SIP/2.0 100 Trying"),
            ("terminated;reason=noresource", last),
        ] {
            let headers = vec![
                Header::Event("refer".into()),
                Header::SubscriptionState(state.into()),
                Header::ContentType("message/sipfrag;version=2.0".into()),
            ];
            if let Err(e) = dialog
                .notify(Some(headers), Some(frag.as_bytes().to_vec()))
                .await
            {
                debug!(error = %e, "NOTIFY to the transferor failed");
            }
        }
        if !transferred {
            return;
        }
        // The dialog an attended transfer replaced ends now (RFC 3891).
        if let Some(replaced) = replaced {
            if let Err(e) = replaced.bye().await {
                debug!(error = %e, "BYE to the replaced dialog failed");
            }
            dialogs.remove_dialog(&replaced.id());
        }
        tokio::time::sleep(TRANSFEROR_GRACE).await;
        if !dialog.state().is_terminated()
            && let Err(e) = dialog.bye().await
        {
            debug!(error = %e, "BYE to the transferor failed");
        }
        dialogs.remove_dialog(&dialog.id());
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_part_of_refer_to_is_the_target() {
        for (value, user) in [
            ("<sip:402@127.0.0.1:5060>", "402"),
            (
                "\"Sales\" <sip:sales@hotline.example;transport=udp>",
                "sales",
            ),
            ("sip:1002@127.0.0.1;user=phone", "1002"),
            ("<sips:409@h?Subject=x>", "409"),
            ("<SIP:401@h>", "401"),
            ("tel:402", "402"),
            ("<sip:402;isub=1@h>", "402"),
        ] {
            assert_eq!(refer_to_user(value).as_deref(), Ok(user), "{value}");
        }
    }

    #[test]
    fn an_attended_transfer_with_replaces_is_told_apart() {
        assert_eq!(
            refer_to_user("<sip:1002@h?Replaces=abc%40h%3Bto-tag%3D1%3Bfrom-tag%3D2>"),
            Err(ReferToError::Replaces("abc@h".into()))
        );
        assert_eq!(
            refer_to_user(
                "<sip:1002@h;transport=udp?replaces=x///y@h%3bto-tag%3d1&Require=replaces>"
            ),
            Err(ReferToError::Replaces("x///y@h".into()))
        );
        assert!(matches!(
            refer_to_user("<sip:1002@h?Replaces=%3Bto-tag%3D1>"),
            Err(ReferToError::Unparsable(_))
        ));
        assert_eq!(percent_decode("a%2Fb%zz%4"), "a/b%zz%4");
    }

    #[test]
    fn a_refer_to_without_a_sip_user_is_unparsable() {
        for value in [
            "",
            "<>",
            "<sip:h.example>",
            "http://x/y",
            "<sip:402@h",
            "sip:@h",
        ] {
            assert!(
                matches!(refer_to_user(value), Err(ReferToError::Unparsable(_))),
                "{value}"
            );
        }
    }
}
