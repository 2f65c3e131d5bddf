//! Supervisor monitoring of a bridged call (rulebook Q2): the actor's side.
//! The session's decisions are the pure
//! [`MonitorMachine`](super::core::monitor::MonitorMachine)'s; this file owns
//! the mixed leg (the supervisor's phone, or the third party of a three-way
//! call, which is mixed like a barging supervisor), the audio it hears and
//! adds, and carries the machine's effects out.
//!
//! The monitored call is not delayed: a caller's or agent's packet still goes
//! out the moment it arrives, with its own numbering; when the receiving side
//! is to hear the supervisor, the supervisor's queued audio is added into that
//! packet's samples. The supervisor hears a 20 ms mix of both sides on a stream
//! of hotline's own, paced by the call actor's timer (no task of its own).

use std::net::SocketAddr;

use rsipstack::dialog::dialog::DialogState;
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::StatusCode;
use rsipstack::transaction::Transaction;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::Actor;
use super::acd::{Side, end_dialog};
use super::agent_leg::{self, ForkFinal};
use super::control::ControlError;
use super::core::monitor::{
    CallView, MixClock, MonitorEffect, MonitorEnd, MonitorInput, Party, Supervisor, Via,
};
pub use super::core::monitor::{MonitorMode, TICK};
use super::media_session::MediaSession;
use super::relay::{LegFormat, Relayed, relay};
use crate::media::mixer::{FRAME, MixStream, PcmQueue};
use crate::media::rtp::HEADER_LEN;
use crate::media::sdp;

/// The most samples one packet may carry through the mixer (ptime up to 120 ms).
const MAX_SAMPLES: usize = 960;

/// A supervisor's phone that dialled a feature code, handed to the call it
/// monitors.
pub struct IncomingMonitor {
    pub tx: Transaction,
    pub supervisor: String,
    pub mode: MonitorMode,
}

impl std::fmt::Debug for IncomingMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncomingMonitor")
            .field("supervisor", &self.supervisor)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

type Reply = oneshot::Sender<Result<(), ControlError>>;

/// What the CTI API or the SIP edge asks of a call's monitoring.
#[derive(Debug)]
pub enum MonitorCommand {
    /// Ring `supervisor`'s phone and let it monitor in `mode`.
    Start {
        supervisor: String,
        mode: MonitorMode,
        reply: Reply,
    },
    /// Change the mode of the session on.
    Mode { mode: MonitorMode, reply: Reply },
    /// End the session (BYE to the supervisor).
    Stop { reply: Reply },
    /// A supervisor's phone dialled a feature code for this call.
    Incoming(Box<IncomingMonitor>),
}

/// The leg the mixer serves: a supervisor's, or the third party's of a
/// three-way call.
pub struct Monitor {
    /// Who hears this leg's voice (a third party is heard like a barging
    /// supervisor).
    mode: MonitorMode,
    pub media: MediaSession,
    dialog: InviteDialog,
    /// The SIP Call-ID of the leg's dialog.
    sip_call_id: String,
    /// The mix's pacing, once the leg's phone answered.
    clock: Option<MixClock>,
    mix: Box<Mix>,
}

/// The monitor's audio buffers, allocated once per session.
struct Mix {
    /// The caller's and the agent's audio, for the supervisor.
    caller: PcmQueue,
    agent: PcmQueue,
    /// The supervisor's audio, for the agent and for the caller.
    for_agent: PcmQueue,
    for_caller: PcmQueue,
    pcm: [i16; MAX_SAMPLES],
    frame: [i16; FRAME],
    out: [u8; HEADER_LEN + MAX_SAMPLES],
    stream: MixStream,
    /// The supervisor's voice alone, to the agent and to the caller, while
    /// the side that usually carries it is silent.
    to_agent: MixStream,
    to_caller: MixStream,
}

impl Mix {
    fn new() -> Box<Mix> {
        Box::new(Mix {
            caller: PcmQueue::default(),
            agent: PcmQueue::default(),
            for_agent: PcmQueue::default(),
            for_caller: PcmQueue::default(),
            pcm: [0; MAX_SAMPLES],
            frame: [0; FRAME],
            out: [0; HEADER_LEN + MAX_SAMPLES],
            stream: MixStream::new(rand::random()),
            to_agent: MixStream::new(rand::random()),
            to_caller: MixStream::new(rand::random()),
        })
    }
}

/// Decodes an audio packet of `format` into `pcm`; the number of samples, or
/// `None` when the packet is not audio of that format.
fn decode(packet: &[u8], format: &LegFormat, pcm: &mut [i16]) -> Option<usize> {
    let reader = rtp_rs::RtpReader::new(packet).ok()?;
    if reader.payload_type() != format.payload_type {
        return None;
    }
    let payload = reader.payload();
    let n = payload.len().min(pcm.len());
    format.codec.decode(&payload[..n], &mut pcm[..n]);
    Some(n)
}

/// Relays `packet` from `from` to `to` like [`relay`], with `inject`'s audio
/// added into its samples; the sender's numbering passes through.
pub fn relay_mixed(
    packet: &[u8],
    from: &LegFormat,
    to: &LegFormat,
    inject: &mut PcmQueue,
    pcm: &mut [i16],
    out: &mut [u8],
) -> Option<Relayed> {
    let Some(n) = decode(packet, from, pcm) else {
        return relay(packet, from, to, out);
    };
    let len = HEADER_LEN + n;
    if out.len() < len {
        return None;
    }
    inject.mix_into(&mut pcm[..n]);
    // A decodable packet is at least a header long.
    out[..HEADER_LEN].copy_from_slice(&packet[..HEADER_LEN]);
    out[0] = 0x80;
    out[1] = (to.payload_type & 0x7f) | (packet[1] & 0x80);
    to.codec.encode(&pcm[..n], &mut out[HEADER_LEN..len]);
    Some(Relayed::Audio(len))
}

impl Monitor {
    fn new(
        mode: MonitorMode,
        media: MediaSession,
        dialog: InviteDialog,
        sip_call_id: String,
    ) -> Monitor {
        Monitor {
            mode,
            media,
            dialog,
            sip_call_id,
            clock: None,
            mix: Mix::new(),
        }
    }

    /// The consulted agent of a three-way call, mixed like a barging
    /// supervisor, from now.
    pub fn conference(media: MediaSession, dialog: InviteDialog, sip_call_id: String) -> Monitor {
        let mut leg = Monitor::new(MonitorMode::Barge, media, dialog, sip_call_id);
        leg.clock = Some(MixClock::start(Instant::now().into_std()));
        leg
    }

    /// The leg's media, dialog and SIP Call-ID, when its party stays on.
    pub fn into_leg(self) -> (MediaSession, InviteDialog, String) {
        (self.media, self.dialog, self.sip_call_id)
    }

    pub fn owns(&self, sip_call_id: &str) -> bool {
        self.sip_call_id == sip_call_id
    }

    /// The next mixing deadline, once the leg's phone answered.
    pub fn deadline(&self) -> Option<Instant> {
        self.clock.map(|c| Instant::from_std(c.deadline()))
    }

    /// Relays a packet of one side of the bridge to the other, keeping its
    /// audio for the mix and adding this leg's voice when the receiving side
    /// is to hear it.
    pub fn relay(
        &mut self,
        from_side: Side,
        packet: &[u8],
        from: &LegFormat,
        to: &LegFormat,
        out: &mut [u8],
    ) -> Option<Relayed> {
        let Some(clock) = self.clock.as_mut() else {
            return relay(packet, from, to, out);
        };
        clock.heard(party(from_side), Instant::now().into_std());
        let mix = &mut *self.mix;
        let (tap, inject, mixed) = match from_side {
            Side::Caller => (
                &mut mix.caller,
                &mut mix.for_agent,
                self.mode.agent_hears_supervisor(),
            ),
            Side::Agent => (
                &mut mix.agent,
                &mut mix.for_caller,
                self.mode.caller_hears_supervisor(),
            ),
        };
        if let Some(n) = decode(packet, from, &mut mix.pcm) {
            tap.push(&mix.pcm[..n]);
        }
        if mixed {
            relay_mixed(packet, from, to, inject, &mut mix.pcm, out)
        } else {
            relay(packet, from, to, out)
        }
    }

    /// The leg's own audio: queued for whoever is to hear it.
    fn on_audio(&mut self, packet: &[u8]) {
        let Some(format) = self.media.negotiated().map(LegFormat::from) else {
            return;
        };
        let mix = &mut *self.mix;
        let Some(n) = decode(packet, &format, &mut mix.pcm) else {
            return;
        };
        if self.mode.agent_hears_supervisor() {
            mix.for_agent.push(&mix.pcm[..n]);
        }
        if self.mode.caller_hears_supervisor() {
            mix.for_caller.push(&mix.pcm[..n]);
        }
    }

    /// Sends the leg the mix of the frames due by `now`.
    fn tick(&mut self, now: Instant) {
        let Some(frames) = self.clock.as_mut().map(|c| c.due(now.into_std())) else {
            return;
        };
        let format = self.media.negotiated().map(LegFormat::from);
        let remote = self.media.remote();
        for _ in 0..frames {
            let mix = &mut *self.mix;
            mix.frame = [0; FRAME];
            mix.caller.mix_into(&mut mix.frame);
            mix.agent.mix_into(&mut mix.frame);
            let (Some(format), Some(remote)) = (format, remote) else {
                continue;
            };
            if let Some(n) =
                mix.stream
                    .packet(format.codec, format.payload_type, &mix.frame, &mut mix.out)
                && let Ok(sent) = self.media.rtp.try_send_to(&mix.out[..n], remote)
            {
                self.media.relayed(sent);
            }
        }
    }

    /// This leg's next 20 ms for `to` (the side that hears it), sent on a
    /// stream of its own (the 60 ms silence rule said so).
    fn speak_alone(&mut self, to: Side, format: LegFormat, media: &MediaSession) {
        let mix = &mut *self.mix;
        let (queue, stream) = match to {
            Side::Agent => (&mut mix.for_agent, &mut mix.to_agent),
            Side::Caller => (&mut mix.for_caller, &mut mix.to_caller),
        };
        if queue.len() < FRAME {
            return;
        }
        let Some(remote) = media.remote() else {
            return;
        };
        mix.frame = [0; FRAME];
        queue.mix_into(&mut mix.frame);
        if let Some(n) = stream.packet(format.codec, format.payload_type, &mix.frame, &mut mix.out)
            && let Ok(sent) = media.rtp.try_send_to(&mix.out[..n], remote)
        {
            media.relayed(sent);
        }
    }

    fn set_mode(&mut self, mode: MonitorMode) {
        self.mode = mode;
        // Voice queued for someone who no longer hears it must not leak later.
        if !mode.agent_hears_supervisor() {
            self.mix.for_agent.clear();
        }
        if !mode.caller_hears_supervisor() {
            self.mix.for_caller.clear();
        }
    }
}

fn party(side: Side) -> Party {
    match side {
        Side::Caller => Party::Caller,
        Side::Agent => Party::Agent,
    }
}

fn end_of(reason: &str) -> MonitorEnd {
    match reason {
        "transferred" => MonitorEnd::Transferred,
        "requeued" => MonitorEnd::Requeued,
        "call_left_agent" => MonitorEnd::CallLeftAgent,
        "supervisor_hung_up" => MonitorEnd::SupervisorHungUp,
        "stopped" => MonitorEnd::Stopped,
        _ => MonitorEnd::CallEnded,
    }
}

/// The socket the mixed leg's RTP arrives on.
pub fn monitor_rtp(mixed: Option<&MixedLeg>) -> Option<std::sync::Arc<tokio::net::UdpSocket>> {
    mixed.and_then(|m| m.leg().media.rtp.watched())
}

/// Who the mixer serves besides caller and agent; the two exclude each
/// other (no monitoring of a three-way call, no three-way call while a
/// supervisor is on). Boxed: every call has room for one, few use it.
pub enum MixedLeg {
    /// A supervisor listening in, whispering or barging.
    Supervisor(Box<Monitor>),
    /// The consulted agent of a three-way call, heard like a barging
    /// supervisor.
    ThirdParty(Box<Monitor>),
}

impl MixedLeg {
    pub fn leg(&self) -> &Monitor {
        match self {
            MixedLeg::Supervisor(leg) | MixedLeg::ThirdParty(leg) => leg,
        }
    }

    pub fn leg_mut(&mut self) -> &mut Monitor {
        match self {
            MixedLeg::Supervisor(leg) | MixedLeg::ThirdParty(leg) => leg,
        }
    }

    fn is_supervisor(&self) -> bool {
        matches!(self, MixedLeg::Supervisor(_))
    }

    pub fn is_third_party(&self) -> bool {
        matches!(self, MixedLeg::ThirdParty(_))
    }

    pub fn into_leg(self) -> Monitor {
        match self {
            MixedLeg::Supervisor(leg) | MixedLeg::ThirdParty(leg) => *leg,
        }
    }
}

/// What asking the supervisor's phone needs, once the machine has said so.
enum Reach {
    Ring,
    Accept,
}

impl Actor {
    /// What the supervisor machine needs to know of the call.
    fn monitor_view(&self) -> CallView {
        let bridged = self.core.bridged();
        CallView {
            agent: self
                .acd
                .connected
                .as_ref()
                .filter(|_| bridged)
                .map(|c| c.leg.agent.0.clone()),
            three_way: self.consult.in_conference(),
        }
    }

    /// Feeds the supervisor machine `input` and carries out its effects, up
    /// to the phone it asks to reach; the command's answer, if it has one.
    fn supervise(
        &mut self,
        input: MonitorInput,
    ) -> (Option<Result<(), ControlError>>, Option<Reach>) {
        let view = self.monitor_view();
        let effects = self
            .supervisor
            .handle(input, &view, Instant::now().into_std());
        let mut reply = None;
        let mut reach = None;
        for effect in effects {
            match effect {
                MonitorEffect::Reply(result) => reply = Some(result.map_err(ControlError::from)),
                MonitorEffect::Ring => reach = Some(Reach::Ring),
                MonitorEffect::Accept => reach = Some(Reach::Accept),
                MonitorEffect::Refuse(why) => reply = Some(Err(why.into())),
                MonitorEffect::SetMode(mode) => {
                    if let Some(MixedLeg::Supervisor(monitor)) = self.mixed.as_mut() {
                        monitor.set_mode(mode);
                    }
                    info!(mode = mode.as_str(), "monitor mode changed");
                }
                MonitorEffect::Mix => {
                    if let Some(MixedLeg::Supervisor(monitor)) = self.mixed.as_mut() {
                        monitor.clock = Some(MixClock::start(Instant::now().into_std()));
                    }
                    if let (Some(s), Some(mode)) =
                        (self.supervisor.supervisor(), self.supervisor.mode())
                    {
                        info!(supervisor = %s.name, mode = mode.as_str(), via = s.via.as_str(), "monitoring");
                    }
                }
                MonitorEffect::HangUp(via) => {
                    if let Some(mixed) = self.mixed.take_if(|m| m.is_supervisor()) {
                        self.hang_up_mixed(mixed.into_leg(), via == Via::Api);
                    }
                }
                MonitorEffect::Release => {
                    if let Some(mixed) = self.mixed.take_if(|m| m.is_supervisor()) {
                        self.ctx.dialogs.remove_dialog(&mixed.leg().dialog.id());
                    }
                }
                MonitorEffect::Publish(event) => {
                    if let crate::events::Event::MonitorEnded {
                        supervisor,
                        reason,
                        duration_ms: Some(_),
                        ..
                    } = &event
                    {
                        info!(%supervisor, reason, "monitoring ended");
                    }
                    self.ctx.bus.publish(event);
                }
            }
        }
        (reply, reach)
    }

    /// BYE to a mixed leg's phone, or CANCEL while hotline rings it.
    fn hang_up_mixed(&self, monitor: Monitor, rung_by_hotline: bool) {
        match monitor.dialog.state() {
            DialogState::Confirmed(..) | DialogState::WaitAck(..) => {
                end_dialog(&self.ctx, monitor.dialog.clone())
            }
            _ if rung_by_hotline => {
                let dialog = monitor.dialog.clone();
                tokio::spawn(async move {
                    if let Err(e) = dialog.cancel().await {
                        debug!(error = %e, "CANCEL to the supervisor failed");
                    }
                });
            }
            _ => {}
        }
    }

    pub(super) async fn on_monitor_command(&mut self, command: MonitorCommand) {
        let (input, reply) = match command {
            MonitorCommand::Start {
                supervisor,
                mode,
                reply,
            } => {
                let supervisor = Supervisor {
                    name: supervisor,
                    via: Via::Api,
                };
                (MonitorInput::Start { supervisor, mode }, reply)
            }
            MonitorCommand::Mode { mode, reply } => (MonitorInput::Mode(mode), reply),
            MonitorCommand::Stop { reply } => (MonitorInput::Stop, reply),
            MonitorCommand::Incoming(incoming) => return self.answer_supervisor(*incoming).await,
        };
        let (mut answer, reach) = self.supervise(input);
        if let Some(Reach::Ring) = reach {
            let rung = self.ring_supervisor().await;
            answer = self.supervise(MonitorInput::Rung(rung)).0;
        }
        if let Some(answer) = answer {
            let _ = reply.send(answer);
        }
    }

    /// CTI: rings the supervisor's phone; the session starts when it answers.
    async fn ring_supervisor(&mut self) -> Result<(), ControlError> {
        let (Some(supervisor), Some(mode)) = (
            self.supervisor.supervisor().map(|s| s.name.clone()),
            self.supervisor.mode(),
        ) else {
            return Err(ControlError::NotMonitored);
        };
        let bindings = self.ctx.registrar.contacts(&supervisor);
        let Some(binding) = bindings.first() else {
            return Err(ControlError::PhoneNotRegistered(supervisor));
        };
        let mut media = self
            .open_leg_media()
            .await
            .map_err(ControlError::LegFailed)?;
        let dial = agent_leg::Dial {
            from_user: &self.acd.caller,
            display: Some("monitor"),
            header: Some(("X-Hotline-Monitor", mode.as_str())),
            session_timer: Vec::new(),
        };
        let fork = agent_leg::ring(
            &self.ctx,
            binding.into(),
            &dial,
            media.offer(),
            self.acd.states.clone(),
            self.acd.finals.0.clone(),
        )
        .map_err(ControlError::LegFailed)?;
        info!(%supervisor, mode = mode.as_str(), "ringing the supervisor");
        self.mixed = Some(MixedLeg::Supervisor(Box::new(Monitor::new(
            mode,
            media,
            fork.dialog,
            fork.call_id,
        ))));
        Ok(())
    }

    pub(super) fn is_monitor_fork(&self, fork: &str) -> bool {
        self.mixed.as_ref().is_some_and(|m| m.leg().owns(fork))
    }

    /// The supervisor's phone answered hotline's INVITE, or did not.
    pub(super) fn on_monitor_final(&mut self, fin: ForkFinal) {
        let Some(MixedLeg::Supervisor(monitor)) = self.mixed.as_mut() else {
            return;
        };
        let response = match fin.response {
            Some(r) if agent_leg::is_success(&r) => r,
            other => {
                let code = other.as_ref().map(agent_leg::code);
                info!(?code, "the supervisor did not answer");
                self.supervise(MonitorInput::NotAnswered);
                return;
            }
        };
        if let Err(e) = sdp::parse(&response.body).and_then(|a| monitor.media.accept_answer(&a)) {
            warn!(error = %e, "the supervisor's phone answered with unusable SDP");
            self.supervise(MonitorInput::UnusableAnswer);
            return;
        }
        self.supervise(MonitorInput::Answered);
    }

    /// Feature code: answers the supervisor's INVITE in this call's dialogs.
    async fn answer_supervisor(&mut self, incoming: IncomingMonitor) {
        let IncomingMonitor {
            mut tx,
            supervisor,
            mode,
        } = incoming;
        let start = MonitorInput::Start {
            supervisor: Supervisor {
                name: supervisor.clone(),
                via: Via::Phone,
            },
            mode,
        };
        let (refused, reach) = self.supervise(start);
        if let Some(Err(why)) = refused {
            info!(%supervisor, %why, "monitoring refused");
            let reason = format!(
                "SIP;cause=486;text=\"{}\"",
                why.to_string().replace('"', "'")
            );
            let headers = vec![rsipstack::sip::Header::Other("Reason".into(), reason)];
            let _ = tx.reply_with(StatusCode::BusyHere, headers, None).await;
            return;
        }
        if !matches!(reach, Some(Reach::Accept)) {
            return;
        }
        let accepted = match self.take_phone_invite(&mut tx).await {
            Some(phone) if phone.accept(tx) => Some(phone),
            _ => None,
        };
        let Some(phone) = accepted else {
            self.supervise(MonitorInput::Rung(Err(ControlError::LegFailed(
                "the supervisor's call failed".into(),
            ))));
            return;
        };
        let super::PhoneInvite {
            media,
            dialog,
            sip_call_id,
            ..
        } = phone;
        self.mixed = Some(MixedLeg::Supervisor(Box::new(Monitor::new(
            mode,
            media,
            dialog,
            sip_call_id,
        ))));
        self.supervise(MonitorInput::Answered);
    }

    /// Ends what the mixer serves: the supervisor's session (`reason`), or
    /// the third party of a three-way call (hung up when `hang_up`).
    pub(super) fn end_monitor(&mut self, reason: &'static str, hang_up: bool) {
        if self.supervisor.supervisor().is_some() {
            self.supervise(MonitorInput::End(end_of(reason)));
            return;
        }
        let Some(monitor) = self.mixed.take_if(|m| m.is_third_party()) else {
            return;
        };
        let monitor = monitor.into_leg();
        match hang_up {
            true => self.hang_up_mixed(monitor, false),
            false => self.ctx.dialogs.remove_dialog(&monitor.dialog.id()),
        }
        if self.consult.in_conference() {
            self.conference_party_left();
        }
    }

    /// RTP from the mixed leg's phone: its voice, or a key changing the mode.
    pub(super) fn on_supervisor_rtp(&mut self, source: SocketAddr, packet: &[u8]) {
        let Some(monitor) = self.mixed.as_mut().map(MixedLeg::leg_mut) else {
            return;
        };
        let (accepted, digit) = monitor.media.on_rtp(source, packet);
        if accepted && monitor.clock.is_some() {
            monitor.on_audio(packet);
        }
        if let Some((key, _)) = digit {
            self.supervise(MonitorInput::Key(key));
        }
    }

    /// The mix for the mixed leg; it ends once no agent is on the call.
    pub(super) fn on_monitor_timer(&mut self, now: Instant) {
        if self.mixed.is_none() {
            return;
        }
        if self.monitor_view().agent.is_none() {
            self.end_monitor("call_left_agent", true);
            return;
        }
        let Some(monitor) = self.mixed.as_mut().map(MixedLeg::leg_mut) else {
            return;
        };
        monitor.tick(now);
        let Some(lone) = monitor.clock.map(|c| {
            let held = self.core.is_held();
            c.lone_voice(monitor.mode, now.into_std(), self.consult.running(), held)
        }) else {
            return;
        };
        if lone.agent
            && let Some(connected) = self.acd.connected.as_ref()
            && let Some(format) = connected.leg.media.negotiated().map(LegFormat::from)
        {
            monitor.speak_alone(Side::Agent, format, &connected.leg.media);
        }
        if lone.caller
            && let Some(format) = self.media.negotiated().map(LegFormat::from)
        {
            monitor.speak_alone(Side::Caller, format, &self.media);
        }
    }

    /// A request or state change in the mixed leg's dialog.
    pub(super) async fn on_monitor_dialog(&mut self, state: DialogState) {
        match state {
            DialogState::Terminated(id, reason) => {
                debug!(?reason, "the supervisor's dialog ended");
                self.ctx.dialogs.remove_dialog(&id);
                if self.supervisor.supervisor().is_some() {
                    self.supervise(MonitorInput::SupervisorLeft);
                } else {
                    self.end_monitor("supervisor_hung_up", false);
                }
            }
            DialogState::Updated(_, req, handle) => {
                if let Some(monitor) = self.mixed.as_mut().map(MixedLeg::leg_mut) {
                    super::answer_update(&mut monitor.media, &req, &handle).await;
                }
            }
            DialogState::Info(_, req, handle) => {
                let digit =
                    crate::media::dtmf::parse_info(&super::content_type(&req), &req.body).ok();
                let _ = handle.reply(StatusCode::OK).await;
                if let Some(key) = digit {
                    self.supervise(MonitorInput::Key(key));
                }
            }
            DialogState::Options(_, _, handle) => {
                let _ = handle.reply(StatusCode::OK).await;
            }
            DialogState::Message(_, _, handle)
            | DialogState::Notify(_, _, handle)
            | DialogState::Refer(_, _, handle)
            | DialogState::Publish(_, _, handle) => {
                let _ = handle.reply(StatusCode::MethodNotAllowed).await;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::g711::Codec;

    const PCMU: LegFormat = LegFormat::PCMU;
    const PCMA: LegFormat = LegFormat {
        codec: Codec::Pcma,
        payload_type: 8,
        telephone_event: None,
    };

    fn packet(format: &LegFormat, pcm: &[i16]) -> Vec<u8> {
        let mut p = vec![0x80, format.payload_type | 0x80, 0x12, 0x34, 0, 0, 1, 0];
        p.extend_from_slice(&0xcafe_f00du32.to_be_bytes());
        let mut payload = vec![0u8; pcm.len()];
        format.codec.encode(pcm, &mut payload);
        p.extend_from_slice(&payload);
        p
    }

    fn pcm_of(packet: &[u8], format: &LegFormat) -> Vec<i16> {
        let mut pcm = vec![0i16; packet.len()];
        let n = decode(packet, format, &mut pcm).unwrap();
        pcm.truncate(n);
        pcm
    }

    #[test]
    fn the_modes_say_who_hears_the_supervisor() {
        assert!(!MonitorMode::Listen.agent_hears_supervisor());
        assert!(!MonitorMode::Listen.caller_hears_supervisor());
        assert!(MonitorMode::Whisper.agent_hears_supervisor());
        assert!(!MonitorMode::Whisper.caller_hears_supervisor());
        assert!(MonitorMode::Barge.agent_hears_supervisor());
        assert!(MonitorMode::Barge.caller_hears_supervisor());
        assert_eq!(MonitorMode::from_key('2'), Some(MonitorMode::Whisper));
        assert_eq!(MonitorMode::from_key('9'), None);
    }

    #[test]
    fn a_mixed_relay_adds_the_supervisor_and_keeps_the_senders_numbering() {
        let caller = vec![1000i16; FRAME];
        let mut supervisor = PcmQueue::default();
        supervisor.push(&[2000i16; FRAME]);
        let input = packet(&PCMU, &caller);
        let mut pcm = [0i16; MAX_SAMPLES];
        let mut out = [0u8; 400];
        let n = relay_mixed(&input, &PCMU, &PCMA, &mut supervisor, &mut pcm, &mut out)
            .unwrap()
            .len();
        let reader = rtp_rs::RtpReader::new(&out[..n]).unwrap();
        assert_eq!(reader.payload_type(), 8);
        assert!(reader.mark());
        assert_eq!(u16::from(reader.sequence_number()), 0x1234);
        assert_eq!(reader.ssrc(), 0xcafe_f00d);
        let mixed = pcm_of(&out[..n], &PCMA);
        // G.711 quantises: the sum is near 3000, far from either part alone.
        assert!(
            mixed.iter().all(|&s| (2800..3200).contains(&s)),
            "{mixed:?}"
        );
        assert!(supervisor.is_empty());
        // Nothing queued: the packet passes as it came, transcoded.
        let n = relay_mixed(&input, &PCMU, &PCMA, &mut supervisor, &mut pcm, &mut out)
            .unwrap()
            .len();
        let alone = pcm_of(&out[..n], &PCMA);
        assert!(alone.iter().all(|&s| (900..1100).contains(&s)), "{alone:?}");
    }

    #[test]
    fn events_pass_a_mixed_relay_untouched() {
        let mut event = vec![0x80, 101 | 0x80, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
        event.extend_from_slice(&[5, 0x0a, 0, 0xa0]);
        let mut q = PcmQueue::default();
        q.push(&[1000; FRAME]);
        let mut pcm = [0i16; MAX_SAMPLES];
        let mut out = [0u8; 64];
        let to = LegFormat {
            telephone_event: Some(96),
            ..PCMA
        };
        let relayed = relay_mixed(&event, &PCMU, &to, &mut q, &mut pcm, &mut out);
        assert_eq!(relayed, Some(Relayed::Event(16)));
        assert_eq!(
            q.len(),
            FRAME,
            "the supervisor's audio waits for the next packet"
        );
    }
}
