//! The agent side of a queued call: the INVITEs that ring an agent's phones,
//! the ring limit, and what each phone's final answer means for the router.
//!
//! One [`AgentLeg`] rings every registered contact of one agent (forks); the
//! first 2xx wins and the other forks are cancelled. The call actor drives it:
//! this module builds requests and classifies outcomes, it owns no task.

use std::net::IpAddr;
use std::sync::Arc;

use rsipstack::dialog::invitation::InviteOption;
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::{Header, Response};
use rsipstack::transport::SipAddr;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::debug;

use super::context::CallContext;
use super::media_session::MediaSession;
use crate::acd::{AgentId, Outcome};
use crate::sip::registrar::Binding;

/// The final answer of one fork's INVITE, sent to the call actor by the task
/// that waits for it.
#[derive(Debug)]
pub struct ForkFinal {
    /// The Call-ID of the fork's INVITE.
    pub fork: String,
    /// The final response, or `None` when the transaction failed (timeout,
    /// transport error) or ended without one.
    pub response: Option<Response>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForkStatus {
    Ringing,
    /// We sent CANCEL (ring limit, another fork or agent won, caller left).
    Cancelled,
    Answered,
    /// A final non-2xx answer (or none), with its status code when there was one.
    Failed(Option<u16>),
}

pub struct Fork {
    pub call_id: String,
    pub dialog: InviteDialog,
    pub status: ForkStatus,
    /// Where the phone's SIP comes from (its media may come from there too,
    /// behind NAT).
    pub peer: Option<std::net::SocketAddr>,
    /// How to send the INVITE again (a 422 asking for a longer session
    /// interval).
    pub again: Option<Again>,
}

/// What an INVITE to one phone went with, to send it again.
#[derive(Debug, Clone)]
pub struct Again {
    pub uri: String,
    pub address: std::net::SocketAddr,
    pub tcp: bool,
    pub offer: String,
}

/// One agent being rung for a call, then talking on it.
pub struct AgentLeg {
    pub agent: AgentId,
    pub queue: String,
    pub media: MediaSession,
    pub forks: Vec<Fork>,
    pub offered_at: Instant,
    /// When the ring limit (answer_within_rings × ring_cycle) runs out.
    pub ring_deadline: Instant,
}

impl AgentLeg {
    pub fn fork_mut(&mut self, call_id: &str) -> Option<&mut Fork> {
        self.forks.iter_mut().find(|f| f.call_id == call_id)
    }

    pub fn owns(&self, call_id: &str) -> bool {
        self.forks.iter().any(|f| f.call_id == call_id)
    }

    /// Whether some fork still rings.
    pub fn ringing(&self) -> bool {
        self.forks.iter().any(|f| f.status == ForkStatus::Ringing)
    }

    /// The answered fork's dialog.
    pub fn answered(&self) -> Option<&InviteDialog> {
        self.forks
            .iter()
            .find(|f| f.status == ForkStatus::Answered)
            .map(|f| &f.dialog)
    }

    /// Cancels every fork still ringing except `keep`. The CANCELs leave in
    /// the background: a 2xx that crosses one is ACKed and ended with BYE by
    /// the dialog layer.
    pub fn cancel_ringing(&mut self, keep: Option<&str>) {
        for fork in &mut self.forks {
            if fork.status != ForkStatus::Ringing || Some(fork.call_id.as_str()) == keep {
                continue;
            }
            fork.status = ForkStatus::Cancelled;
            let dialog = fork.dialog.clone();
            tokio::spawn(async move {
                if let Err(e) = dialog.cancel().await {
                    debug!(error = %e, "CANCEL to an agent phone failed");
                }
            });
        }
    }

    /// How the offer failed, once no fork rings any more: any busy phone makes
    /// the agent busy, then any decline, else the agent could not be reached.
    pub fn failure(&self) -> Outcome {
        let codes = || {
            self.forks.iter().filter_map(|f| match f.status {
                ForkStatus::Failed(code) => code,
                _ => None,
            })
        };
        if codes().any(|c| c == 486 || c == 600) {
            Outcome::Busy
        } else if codes().any(|c| c == 603) {
            Outcome::Declined
        } else {
            Outcome::Unreachable
        }
    }
}

/// Who an outgoing INVITE is from and what it carries besides the offer.
pub struct Dial<'a> {
    /// User part of From: the caller's number to an agent, the hotline
    /// number to a called-back customer.
    pub from_user: &'a str,
    /// Display name of From (the queue, so any phone shows it).
    pub display: Option<&'a str>,
    /// An extra header (name, value), e.g. the queue header.
    pub header: Option<(&'a str, &'a str)>,
    /// Session timer headers (RFC 4028) the INVITE carries.
    pub session_timer: Vec<Header>,
}

/// Where an outgoing INVITE goes: a registered phone, or a trunk.
pub struct Target<'a> {
    pub uri: &'a str,
    /// The address to send to (a phone behind NAT: where it registered from).
    pub address: std::net::SocketAddr,
    pub tcp: bool,
}

impl<'a> From<&'a Binding> for Target<'a> {
    fn from(binding: &'a Binding) -> Self {
        Target {
            uri: &binding.uri,
            address: binding.source,
            tcp: binding.transport.eq_ignore_ascii_case("tcp"),
        }
    }
}

/// Sends an INVITE with `offer` to `target`: one phone of an agent, or the
/// customer of a callback. The final answer is reported on `finals`; dialog
/// states go to `states`.
pub fn ring(
    ctx: &Arc<CallContext>,
    target: Target<'_>,
    dial: &Dial<'_>,
    offer: String,
    states: super::dialog_events::CallDialogs,
    finals: mpsc::UnboundedSender<Box<ForkFinal>>,
) -> Result<Fork, String> {
    let call_id = format!("{:032x}@hotline", rand::random::<u128>());
    ring_as(ctx, target, dial, offer, states, finals, call_id)
}

/// [`ring`] with the Call-ID of an INVITE sent before (a retry keeps it,
/// RFC 3261 §8.1.3.5).
#[allow(clippy::too_many_arguments)]
pub fn ring_as(
    ctx: &Arc<CallContext>,
    target: Target<'_>,
    dial: &Dial<'_>,
    offer: String,
    states: super::dialog_events::CallDialogs,
    finals: mpsc::UnboundedSender<Box<ForkFinal>>,
    call_id: String,
) -> Result<Fork, String> {
    let again = Some(Again {
        uri: target.uri.to_string(),
        address: target.address,
        tcp: target.tcp,
        offer: offer.clone(),
    });
    let tcp = target.tcp;
    let peer = Some(target.address);
    let local = if tcp { ctx.tcp_addr } else { ctx.udp_addr }.ok_or_else(|| {
        format!(
            "no {} listener to reach {}",
            if tcp { "TCP" } else { "UDP" },
            target.uri
        )
    })?;
    let local = ctx.settings.sip.external.unwrap_or(local);
    let host = match local.ip() {
        IpAddr::V6(ip) => format!("[{ip}]"),
        IpAddr::V4(ip) => ip.to_string(),
    };
    let transport = if tcp { ";transport=tcp" } else { "" };
    let parse = |text: &str| {
        rsipstack::sip::uri::parse_uri(text).map_err(|e| format!("bad URI {text}: {e}"))
    };
    let user = caller_user(dial.from_user);
    let option = InviteOption {
        caller_display_name: dial.display.map(str::to_string),
        caller: parse(&format!("sip:{user}@{host}:{}", local.port()))?,
        callee: parse(target.uri)?,
        destination: Some(SipAddr {
            r#type: Some(if tcp {
                rsipstack::sip::Transport::Tcp
            } else {
                rsipstack::sip::Transport::Udp
            }),
            addr: target.address.into(),
        }),
        content_type: Some("application/sdp".into()),
        offer: Some(offer.into_bytes()),
        contact: parse(&format!("sip:hotline@{host}:{}{transport}", local.port()))?,
        headers: {
            let mut headers: Vec<Header> = dial
                .header
                .map(|(name, value)| Header::Other(name.to_string(), value.to_string()))
                .into_iter()
                .collect();
            headers.extend(dial.session_timer.iter().cloned());
            (!headers.is_empty()).then_some(headers)
        },
        call_id: Some(call_id.clone()),
        ..Default::default()
    };
    let (dialog, handle) = ctx
        .dialogs
        .do_invite_async(option, states.sender_for(&call_id))
        .map_err(|e| format!("cannot send INVITE to {}: {e}", target.uri))?;
    let fork = call_id.clone();
    tokio::spawn(async move {
        let response = match handle.await {
            Ok(Ok((_, response))) => response,
            Ok(Err(e)) => {
                debug!(error = %e, "outgoing INVITE failed");
                None
            }
            Err(_) => None,
        };
        let _ = finals.send(Box::new(ForkFinal { fork, response }));
    });
    Ok(Fork {
        call_id,
        dialog,
        status: ForkStatus::Ringing,
        peer,
        again,
    })
}

/// The caller's number as a SIP URI user part: characters outside the
/// unreserved set and the telephone-subscriber extras are dropped.
pub fn caller_user(caller: &str) -> String {
    let user: String = caller
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "+-_.!~*'()&=$,/".contains(*c))
        .collect();
    if user.is_empty() {
        "anonymous".into()
    } else {
        user
    }
}

/// Whether a final answer is a success.
pub fn is_success(response: &Response) -> bool {
    response.status_code.kind() == rsipstack::sip::StatusCodeKind::Successful
}

/// The status code of a final answer.
pub fn code(response: &Response) -> u16 {
    u16::from(response.status_code.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_numbers_become_safe_user_parts() {
        assert_eq!(caller_user("+86 10 5555-1234"), "+86105555-1234");
        assert_eq!(caller_user("sip:evil@x>"), "sipevilx");
        assert_eq!(caller_user(""), "anonymous");
        assert_eq!(caller_user("#;?"), "anonymous");
    }
}
