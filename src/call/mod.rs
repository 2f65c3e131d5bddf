//! One actor (tokio task) per inbound call: answers it and follows its dialog
//! until it ends.
//!
//! The actor owns its call's state and reads its own dialog events; nothing
//! about one call is shared with another except the registry of live calls used
//! to hang everything up at shutdown. Until the media room lands, an admitted
//! call is answered with a PCMU SDP answer on a real (silent) RTP port and held
//! until either side hangs up.

pub mod lookup;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use rsipstack::dialog::DialogId;
use rsipstack::dialog::dialog::{DialogState, TerminatedReason};
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::{Header, HeadersExt, Method, StatusCode};
use rsipstack::transaction::Transaction;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::events::{Event, ReleasedBy};
use crate::sip::{Admitted, EdgeContext, local_contact};

/// The live calls, by Call-ID, so shutdown can end them.
#[derive(Default)]
pub struct Calls {
    dialogs: DashMap<String, InviteDialog>,
}

impl Calls {
    pub fn len(&self) -> usize {
        self.dialogs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dialogs.is_empty()
    }

    /// Ends every live call: BYE when answered, 503 when still ringing. Does not
    /// wait for the BYEs' answers: a silent peer must not hold the shutdown for
    /// the 32 s of BYE retransmissions.
    pub fn hang_up_all(&self) {
        for dialog in self.dialogs.iter().map(|e| e.value().clone()) {
            if matches!(
                dialog.state(),
                DialogState::Confirmed(..) | DialogState::WaitAck(..)
            ) {
                tokio::spawn(async move {
                    if let Err(e) = dialog.bye().await {
                        debug!(error = %e, "BYE at shutdown failed");
                    }
                });
            } else {
                let _ = dialog.reject(
                    Some(StatusCode::ServiceUnavailable),
                    Some("SIP;cause=503;text=\"shutting down\"".into()),
                );
            }
        }
    }
}

/// What the caller offered, as far as this first cut needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offer {
    /// No SDP in the INVITE: we offer in the 200, the answer comes in the ACK.
    Delayed,
    /// An audio offer that includes PCMU.
    Pcmu,
    /// An offer we cannot answer (no audio, or no PCMU).
    Unacceptable(&'static str),
}

/// Reads an SDP offer just far enough to know whether PCMU (payload 0) is on offer.
pub fn classify_offer(body: &[u8]) -> Offer {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Offer::Delayed;
    }
    let Ok(text) = std::str::from_utf8(body) else {
        return Offer::Unacceptable("SDP is not valid UTF-8");
    };
    let mut audio = false;
    for line in text.lines() {
        if let Some(media) = line.trim_end().strip_prefix("m=audio ") {
            audio = true;
            let mut fields = media.split_whitespace();
            let (_port, _proto) = (fields.next(), fields.next());
            if fields.any(|pt| pt == "0") {
                return Offer::Pcmu;
            }
        }
    }
    if audio {
        Offer::Unacceptable("Incompatible media format: PCMU (payload 0) required")
    } else {
        Offer::Unacceptable("No audio stream in the offer")
    }
}

/// hotline's SDP (answer or offer): PCMU on `rtp`, 20 ms packets.
pub fn pcmu_sdp(session_id: u64, rtp: SocketAddr) -> String {
    let (family, ip) = match rtp.ip() {
        IpAddr::V4(ip) => ("IP4", ip.to_string()),
        IpAddr::V6(ip) => ("IP6", ip.to_string()),
    };
    format!(
        "v=0\r\n\
         o=hotline {session_id} {session_id} IN {family} {ip}\r\n\
         s=hotline\r\n\
         c=IN {family} {ip}\r\n\
         t=0 0\r\n\
         m=audio {port} RTP/AVP 0\r\n\
         a=rtpmap:0 PCMU/8000\r\n\
         a=ptime:20\r\n\
         a=sendrecv\r\n",
        port = rtp.port()
    )
}

fn released_by(reason: &TerminatedReason) -> ReleasedBy {
    match reason {
        TerminatedReason::UacBye | TerminatedReason::UacCancel | TerminatedReason::UacBusy => {
            ReleasedBy::Caller
        }
        _ => ReleasedBy::System,
    }
}

/// Runs one inbound call from its admitted INVITE to its end.
pub async fn run_inbound(ctx: Arc<EdgeContext>, tx: Transaction, admitted: Admitted) {
    let call_id = tx
        .original
        .call_id_header()
        .map(|c| c.value().to_string())
        .unwrap_or_default();
    let span = info_span!(
        "call",
        call_id = %call_id,
        number = %admitted.number.number,
        trunk = %admitted.trunk.name
    );
    call_actor(ctx, tx, admitted, call_id)
        .instrument(span)
        .await;
}

async fn call_actor(
    ctx: Arc<EdgeContext>,
    mut tx: Transaction,
    admitted: Admitted,
    call_id: String,
) {
    let offer = classify_offer(&tx.original.body);
    if let Offer::Unacceptable(why) = offer {
        info!(reason = why, "offer refused");
        let warning = Header::Other("Warning".into(), format!("305 hotline \"{why}\""));
        if let Err(e) = tx
            .reply_with(StatusCode::NotAcceptableHere, vec![warning], None)
            .await
        {
            debug!(error = %e, "could not send 488");
        }
        return;
    }
    // The RTP port is real so the caller's packets are absorbed, not bounced
    // with ICMP; the media room will make it speak.
    let media_ip = ctx
        .udp_addr
        .or(ctx.tcp_addr)
        .map(|a| a.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let rtp = match tokio::net::UdpSocket::bind((media_ip, 0)).await {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "no RTP port available");
            let _ = tx.reply(StatusCode::ServiceUnavailable).await;
            return;
        }
    };
    let rtp_addr = match (ctx.settings.sip.external, rtp.local_addr()) {
        (Some(ext), Ok(local)) => SocketAddr::new(ext.ip(), local.port()),
        (None, Ok(local)) => local,
        (_, Err(e)) => {
            warn!(error = %e, "RTP socket has no address");
            let _ = tx.reply(StatusCode::ServiceUnavailable).await;
            return;
        }
    };
    let session_id = rand::random::<u32>() as u64;
    let sdp = pcmu_sdp(session_id, rtp_addr);

    let contact = local_contact(&ctx, &tx, &admitted.number.number);
    let (state_tx, mut state_rx) = ctx.dialogs.new_dialog_state_channel();
    let dialog = match ctx
        .dialogs
        .get_or_create_server_invite(&tx, state_tx, None, contact)
    {
        Ok(d) => d,
        Err(e) => {
            warn!(error = %e, "cannot create the dialog");
            let _ = tx.reply(StatusCode::ServerInternalError).await;
            return;
        }
    };
    let dialog_id: DialogId = dialog.id();
    ctx.calls.dialogs.insert(call_id.clone(), dialog.clone());
    let caller = tx
        .original
        .from_header()
        .ok()
        .and_then(|f| f.uri().ok())
        .and_then(|u| u.auth.map(|a| a.user))
        .unwrap_or_default();
    ctx.bus.publish(Event::CallAdmitted {
        call_id: call_id.clone(),
        trunk: admitted.trunk.name.clone(),
        caller,
        number: admitted.number.number.clone(),
        source: admitted.source,
    });
    info!(caller_source = %admitted.source, "call admitted");

    // The INVITE server transaction runs beside the actor: it sends 100/1xx/2xx
    // as the actor asks, absorbs retransmissions and turns CANCEL into 487.
    let mut invite_dialog = dialog.clone();
    let transaction = tokio::spawn(async move {
        if let Err(e) = invite_dialog.handle(&mut tx).await {
            debug!(error = %e, "INVITE transaction ended with an error");
        }
    });

    let sdp_headers = || Some(vec![Header::ContentType("application/sdp".into())]);
    let mut answered = false;
    let mut ended: Option<ReleasedBy> = None;
    let answer_after = admitted.number.answer_after;
    if !answer_after.is_zero() {
        let _ = dialog.ringing(None, None);
        let ring = tokio::time::sleep(answer_after);
        tokio::pin!(ring);
        loop {
            tokio::select! {
                _ = &mut ring => break,
                state = state_rx.recv() => match state {
                    Some(DialogState::Terminated(_, reason)) => {
                        info!(?reason, "caller gave up while ringing");
                        ended = Some(released_by(&reason));
                        break;
                    }
                    Some(_) => {}
                    None => { ended = Some(ReleasedBy::System); break; }
                }
            }
        }
    }
    if ended.is_none() {
        if let Err(e) = dialog.accept(sdp_headers(), Some(sdp.clone().into_bytes())) {
            warn!(error = %e, "could not answer");
            ended = Some(ReleasedBy::System);
        }
    }

    let mut rtp_buf = [0u8; 2048];
    let mut ignored_rtp: u64 = 0;
    while ended.is_none() {
        tokio::select! {
            state = state_rx.recv() => match state {
                Some(DialogState::Confirmed(..)) if !answered => {
                    answered = true;
                    ctx.bus.publish(Event::CallAnswered { call_id: call_id.clone() });
                    info!("call answered");
                }
                Some(DialogState::Updated(_, req, handle)) => {
                    // A re-INVITE or UPDATE: keep the session as it is.
                    let body = (req.method == Method::Invite
                        || (req.method == Method::Update && !req.body.is_empty()))
                        .then(|| sdp.clone().into_bytes());
                    let headers = body.as_ref().and_then(|_| sdp_headers());
                    let _ = handle.respond(StatusCode::OK, headers, body).await;
                }
                Some(DialogState::Info(_, _, handle)) | Some(DialogState::Options(_, _, handle)) => {
                    let _ = handle.reply(StatusCode::OK).await;
                }
                Some(DialogState::Message(_, _, handle))
                | Some(DialogState::Notify(_, _, handle))
                | Some(DialogState::Refer(_, _, handle)) => {
                    let _ = handle.reply(StatusCode::MethodNotAllowed).await;
                }
                Some(DialogState::Terminated(_, reason)) => {
                    info!(?reason, "call ended");
                    ended = Some(released_by(&reason));
                }
                Some(_) => {}
                None => ended = Some(ReleasedBy::System),
            },
            received = rtp.recv_from(&mut rtp_buf) => {
                if received.is_ok() {
                    ignored_rtp += 1;
                }
            }
        }
    }
    debug!(ignored_rtp, "media placeholder closed");
    ctx.bus.publish(Event::CallEnded {
        call_id: call_id.clone(),
        released_by: ended.unwrap_or(ReleasedBy::System),
        answered,
    });
    ctx.calls.dialogs.remove(&call_id);
    // Let the INVITE transaction finish its own timers (487/ACK, 2xx/ACK).
    let _ = tokio::time::timeout(Duration::from_secs(40), transaction).await;
    ctx.dialogs.remove_dialog(&dialog_id);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcmu_offers_are_accepted() {
        let offer = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 8 0 101\r\n";
        assert_eq!(classify_offer(offer), Offer::Pcmu);
    }

    #[test]
    fn offers_without_pcmu_or_audio_are_refused() {
        let alaw_only = b"v=0\r\nm=audio 6000 RTP/AVP 8\r\n";
        assert!(matches!(classify_offer(alaw_only), Offer::Unacceptable(w) if w.contains("PCMU")));
        let video = b"v=0\r\nm=video 6000 RTP/AVP 96\r\n";
        assert!(matches!(classify_offer(video), Offer::Unacceptable(w) if w.contains("audio")));
    }

    #[test]
    fn empty_body_is_a_delayed_offer() {
        assert_eq!(classify_offer(b""), Offer::Delayed);
        assert_eq!(classify_offer(b"\r\n"), Offer::Delayed);
    }

    #[test]
    fn sdp_names_pcmu_on_the_given_port() {
        let sdp = pcmu_sdp(7, "127.0.0.1:40000".parse().unwrap());
        assert!(sdp.contains("m=audio 40000 RTP/AVP 0\r\n"));
        assert!(sdp.contains("c=IN IP4 127.0.0.1\r\n"));
        assert!(sdp.contains("a=rtpmap:0 PCMU/8000\r\n"));
        assert!(sdp.ends_with("a=sendrecv\r\n"));
    }
}
