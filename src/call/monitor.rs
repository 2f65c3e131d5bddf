//! Supervisor monitoring of a bridged call (rulebook Q2): the supervisor's
//! leg (a phone hotline rings for the CTI API, or a phone that dialled a
//! feature code), its mode, and the audio it hears and adds.
//!
//! The monitored call is not delayed: a caller's or agent's packet still goes
//! out the moment it arrives, with its own numbering; when the receiving side
//! is to hear the supervisor, the supervisor's queued audio is added into that
//! packet's samples. The supervisor hears a 20 ms mix of both sides on a stream
//! of hotline's own, paced by the call actor's timer (no task of its own).

use std::net::SocketAddr;
use std::time::Duration;

use rsipstack::dialog::dialog::DialogState;
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::StatusCode;
use rsipstack::transaction::Transaction;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::acd::{Side, end_dialog};
use super::agent_leg::{self, ForkFinal};
use super::media_session::MediaSession;
use super::relay::{LegFormat, Relayed, relay};
use super::{Actor, Phase};
use crate::events::Event;
use crate::media::mixer::{FRAME, MixStream, PcmQueue};
use crate::media::rtp::HEADER_LEN;
use crate::media::sdp;

/// The mixing period.
pub const TICK: Duration = Duration::from_millis(20);

/// The most samples one packet may carry through the mixer (ptime up to 120 ms).
const MAX_SAMPLES: usize = 960;

/// Who hears the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MonitorMode {
    /// The supervisor hears both sides; nobody hears the supervisor.
    Listen,
    /// The agent hears the supervisor; the caller does not.
    Whisper,
    /// All three hear each other.
    Barge,
}

impl MonitorMode {
    pub fn as_str(self) -> &'static str {
        match self {
            MonitorMode::Listen => "listen",
            MonitorMode::Whisper => "whisper",
            MonitorMode::Barge => "barge",
        }
    }

    pub fn agent_hears_supervisor(self) -> bool {
        !matches!(self, MonitorMode::Listen)
    }

    pub fn caller_hears_supervisor(self) -> bool {
        matches!(self, MonitorMode::Barge)
    }

    /// The supervisor's keys during a session: 1 listen, 2 whisper, 3 barge.
    pub fn from_key(key: char) -> Option<MonitorMode> {
        match key {
            '1' => Some(MonitorMode::Listen),
            '2' => Some(MonitorMode::Whisper),
            '3' => Some(MonitorMode::Barge),
            _ => None,
        }
    }
}

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

type Reply = oneshot::Sender<Result<(), String>>;

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

/// The supervisor's leg of a monitored call.
pub struct Monitor {
    pub supervisor: String,
    pub mode: MonitorMode,
    via: &'static str,
    pub media: MediaSession,
    dialog: InviteDialog,
    /// The SIP Call-ID of the supervisor's dialog.
    sip_call_id: String,
    /// When the supervisor's phone answered; `None` while it rings.
    answered_at: Option<Instant>,
    next_tick: Instant,
    /// When a packet of the caller, and of the agent, last went through.
    last_from_caller: Instant,
    last_from_agent: Instant,
    mix: Box<Mix>,
}

/// How long a side may send nothing (silence suppression, a hold) before the
/// supervisor's voice for the other side travels on a stream of its own.
const SILENT_SIDE: Duration = Duration::from_millis(60);

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
    /// The consulted agent of a three-way call, mixed like a barging
    /// supervisor.
    pub fn conference(
        agent: String,
        media: MediaSession,
        dialog: InviteDialog,
        sip_call_id: String,
    ) -> Monitor {
        let now = Instant::now();
        Monitor {
            supervisor: agent,
            mode: MonitorMode::Barge,
            via: "conference",
            media,
            dialog,
            sip_call_id,
            answered_at: Some(now),
            next_tick: now + TICK,
            last_from_caller: now,
            last_from_agent: now,
            mix: Mix::new(),
        }
    }

    /// Whether this is the consulted agent of a three-way call.
    pub fn is_conference(&self) -> bool {
        self.via == "conference"
    }

    /// The leg's media, dialog and SIP Call-ID, when its party stays on.
    pub fn into_leg(self) -> (MediaSession, InviteDialog, String) {
        (self.media, self.dialog, self.sip_call_id)
    }

    pub fn owns(&self, sip_call_id: &str) -> bool {
        self.sip_call_id == sip_call_id
    }

    fn answered(&self) -> bool {
        self.answered_at.is_some()
    }

    /// The next mixing deadline, while the supervisor listens.
    pub fn deadline(&self) -> Option<Instant> {
        self.answered().then_some(self.next_tick)
    }

    /// Relays a packet of one side of the bridge to the other, keeping its
    /// audio for the supervisor and adding the supervisor's voice when the
    /// receiving side is to hear it.
    pub fn relay(
        &mut self,
        from_side: Side,
        packet: &[u8],
        from: &LegFormat,
        to: &LegFormat,
        out: &mut [u8],
    ) -> Option<Relayed> {
        if !self.answered() {
            return relay(packet, from, to, out);
        }
        match from_side {
            Side::Caller => self.last_from_caller = Instant::now(),
            Side::Agent => self.last_from_agent = Instant::now(),
        }
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

    /// The supervisor's own audio: queued for whoever is to hear it.
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

    /// Sends the supervisor the mix of the frames due by `now`.
    pub fn tick(&mut self, now: Instant) {
        if !self.answered() || self.next_tick > now {
            return;
        }
        // After a stall, start afresh rather than send a burst.
        if now - self.next_tick > 5 * TICK {
            self.next_tick = now;
        }
        let format = self.media.negotiated().map(LegFormat::from);
        let remote = self.media.remote();
        while self.next_tick <= now {
            self.next_tick += TICK;
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

    /// The supervisor's next 20 ms for `to` (the side that hears it), sent
    /// on a stream of its own when the other side has been silent: whisper
    /// and barge must not wait for the monitored parties to speak.
    pub fn speak_alone(&mut self, now: Instant, to: Side, format: LegFormat, media: &MediaSession) {
        let (hears, carrier_silent) = match to {
            Side::Agent => (
                self.mode.agent_hears_supervisor(),
                now.saturating_duration_since(self.last_from_caller) > SILENT_SIDE,
            ),
            Side::Caller => (
                self.mode.caller_hears_supervisor(),
                now.saturating_duration_since(self.last_from_agent) > SILENT_SIDE,
            ),
        };
        if !self.answered() || !hears || !carrier_silent {
            return;
        }
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

/// The socket the supervisor's RTP arrives on.
pub fn monitor_rtp(monitor: Option<&Monitor>) -> Option<std::sync::Arc<tokio::net::UdpSocket>> {
    monitor.map(|m| m.media.rtp.clone())
}

impl Actor {
    pub(super) async fn on_monitor_command(&mut self, command: MonitorCommand) {
        match command {
            MonitorCommand::Start {
                supervisor,
                mode,
                reply,
            } => {
                let _ = reply.send(self.ring_supervisor(supervisor, mode).await);
            }
            MonitorCommand::Mode { mode, reply } => {
                let result = match self.monitor.as_ref().filter(|m| !m.is_conference()) {
                    Some(_) => {
                        self.change_monitor_mode(mode);
                        Ok(())
                    }
                    None => Err("nobody monitors this call".to_string()),
                };
                let _ = reply.send(result);
            }
            MonitorCommand::Stop { reply } => {
                let result = match self.monitor.as_ref().is_some_and(|m| !m.is_conference()) {
                    true => {
                        self.end_monitor("stopped", true);
                        Ok(())
                    }
                    false => Err("nobody monitors this call".to_string()),
                };
                let _ = reply.send(result);
            }
            MonitorCommand::Incoming(incoming) => self.answer_supervisor(*incoming).await,
        }
    }

    /// Why the call cannot be monitored now, if it cannot.
    fn unmonitorable(&self, supervisor: &str) -> Option<String> {
        if !matches!(self.phase, Phase::Bridged) || self.acd.connected.is_none() {
            return Some("only a call connected to an agent can be monitored".into());
        }
        match &self.monitor {
            Some(m) if m.is_conference() => Some("a three-way call is going on".into()),
            Some(m) if m.supervisor != supervisor => Some(format!(
                "supervisor {} already monitors this call",
                m.supervisor
            )),
            Some(_) => Some(format!("{supervisor} already monitors this call")),
            None => None,
        }
    }

    /// CTI: rings the supervisor's phone; the session starts when it answers.
    async fn ring_supervisor(
        &mut self,
        supervisor: String,
        mode: MonitorMode,
    ) -> Result<(), String> {
        if let Some(m) = self.monitor.as_ref()
            && m.supervisor == supervisor
            && !m.is_conference()
        {
            self.change_monitor_mode(mode);
            return Ok(());
        }
        if let Some(why) = self.unmonitorable(&supervisor) {
            return Err(why);
        }
        let bindings = self.ctx.registrar.contacts(&supervisor);
        let Some(binding) = bindings.first() else {
            return Err(format!("the phone of {supervisor} is not registered"));
        };
        let mut media = self.open_leg_media().await?;
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
        )?;
        info!(%supervisor, mode = mode.as_str(), "ringing the supervisor");
        self.monitor = Some(Monitor {
            supervisor,
            mode,
            via: "api",
            media,
            dialog: fork.dialog,
            sip_call_id: fork.call_id,
            answered_at: None,
            next_tick: Instant::now(),
            last_from_caller: Instant::now(),
            last_from_agent: Instant::now(),
            mix: Mix::new(),
        });
        Ok(())
    }

    pub(super) fn is_monitor_fork(&self, fork: &str) -> bool {
        self.monitor.as_ref().is_some_and(|m| m.owns(fork))
    }

    /// The supervisor's phone answered hotline's INVITE, or did not.
    pub(super) fn on_monitor_final(&mut self, fin: ForkFinal) {
        let Some(monitor) = self.monitor.as_mut() else {
            return;
        };
        let response = match fin.response {
            Some(r) if agent_leg::is_success(&r) => r,
            other => {
                let code = other.as_ref().map(agent_leg::code);
                info!(supervisor = %monitor.supervisor, ?code, "the supervisor did not answer");
                self.end_monitor("not_answered", false);
                return;
            }
        };
        if let Err(e) = sdp::parse(&response.body).and_then(|a| monitor.media.accept_answer(&a)) {
            warn!(error = %e, "the supervisor's phone answered with unusable SDP");
            self.end_monitor("unusable_sdp", true);
            return;
        }
        self.monitor_started();
    }

    /// Feature code: answers the supervisor's INVITE in this call's dialogs.
    async fn answer_supervisor(&mut self, incoming: IncomingMonitor) {
        let IncomingMonitor {
            mut tx,
            supervisor,
            mode,
        } = incoming;
        if let Some(why) = self.unmonitorable(&supervisor) {
            info!(%supervisor, %why, "monitoring refused");
            let reason = format!("SIP;cause=486;text=\"{}\"", why.replace('"', "'"));
            let headers = vec![rsipstack::sip::Header::Other("Reason".into(), reason)];
            let _ = tx.reply_with(StatusCode::BusyHere, headers, None).await;
            return;
        }
        let Some(phone) = self.take_phone_invite(&mut tx).await else {
            return;
        };
        if !phone.accept(tx) {
            return;
        }
        let super::PhoneInvite {
            media,
            dialog,
            sip_call_id,
            ..
        } = phone;
        self.monitor = Some(Monitor {
            supervisor,
            mode,
            via: "phone",
            media,
            dialog,
            sip_call_id,
            answered_at: None,
            next_tick: Instant::now(),
            last_from_caller: Instant::now(),
            last_from_agent: Instant::now(),
            mix: Mix::new(),
        });
        self.monitor_started();
    }

    fn monitor_started(&mut self) {
        let agent = self
            .acd
            .connected
            .as_ref()
            .map(|c| c.leg.agent.0.clone())
            .unwrap_or_default();
        let Some(monitor) = self.monitor.as_mut() else {
            return;
        };
        let now = Instant::now();
        monitor.answered_at = Some(now);
        monitor.next_tick = now + TICK;
        info!(supervisor = %monitor.supervisor, mode = monitor.mode.as_str(), via = monitor.via, "monitoring");
        self.ctx.bus.publish(Event::MonitorStarted {
            call_id: self.call_id.clone(),
            supervisor: monitor.supervisor.clone(),
            agent,
            mode: monitor.mode.as_str(),
            via: monitor.via,
        });
    }

    fn change_monitor_mode(&mut self, mode: MonitorMode) {
        let Some(monitor) = self.monitor.as_mut() else {
            return;
        };
        if monitor.mode == mode {
            return;
        }
        monitor.set_mode(mode);
        info!(supervisor = %monitor.supervisor, mode = mode.as_str(), "monitor mode changed");
        self.ctx.bus.publish(Event::MonitorModeChanged {
            call_id: self.call_id.clone(),
            supervisor: monitor.supervisor.clone(),
            mode: mode.as_str(),
        });
    }

    /// Ends the session; `hang_up` sends the supervisor BYE (or CANCEL while
    /// ringing), false when its dialog is already over.
    pub(super) fn end_monitor(&mut self, reason: &'static str, hang_up: bool) {
        let Some(monitor) = self.monitor.take() else {
            return;
        };
        if hang_up {
            match monitor.dialog.state() {
                DialogState::Confirmed(..) | DialogState::WaitAck(..) => {
                    end_dialog(&self.ctx, monitor.dialog.clone())
                }
                _ if monitor.via == "api" => {
                    let dialog = monitor.dialog.clone();
                    tokio::spawn(async move {
                        if let Err(e) = dialog.cancel().await {
                            debug!(error = %e, "CANCEL to the supervisor failed");
                        }
                    });
                }
                _ => {}
            }
        } else {
            self.ctx.dialogs.remove_dialog(&monitor.dialog.id());
        }
        if monitor.is_conference() {
            self.conference_party_left();
            return;
        }
        let Some(answered_at) = monitor.answered_at else {
            self.ctx.bus.publish(Event::MonitorEnded {
                call_id: self.call_id.clone(),
                supervisor: monitor.supervisor,
                reason,
                duration_ms: None,
            });
            return;
        };
        info!(supervisor = %monitor.supervisor, reason, "monitoring ended");
        self.ctx.bus.publish(Event::MonitorEnded {
            call_id: self.call_id.clone(),
            supervisor: monitor.supervisor,
            reason,
            duration_ms: Some(answered_at.elapsed().as_millis() as u64),
        });
    }

    /// RTP from the supervisor's phone: its voice, or a key changing the mode.
    pub(super) fn on_supervisor_rtp(&mut self, source: SocketAddr, packet: &[u8]) {
        let Some(monitor) = self.monitor.as_mut() else {
            return;
        };
        let (accepted, digit) = monitor.media.on_rtp(source, packet);
        if accepted && monitor.answered() {
            monitor.on_audio(packet);
        }
        let conference = monitor.is_conference();
        if let Some(mode) = digit
            .and_then(|(key, _)| MonitorMode::from_key(key))
            .filter(|_| !conference)
        {
            self.change_monitor_mode(mode);
        }
    }

    /// The mix for the supervisor; the session ends once no agent is on the call.
    pub(super) fn on_monitor_timer(&mut self, now: Instant) {
        if self.monitor.is_none() {
            return;
        }
        if !matches!(self.phase, Phase::Bridged) || self.acd.connected.is_none() {
            self.end_monitor("call_left_agent", true);
            return;
        }
        let Some(monitor) = self.monitor.as_mut() else {
            return;
        };
        monitor.tick(now);
        // While a consultation uses the agent's leg, it carries the
        // consulted agent; a held caller hears the music.
        if self.consult.is_some() {
            return;
        }
        if let Some(connected) = self.acd.connected.as_ref()
            && let Some(format) = connected.leg.media.negotiated().map(LegFormat::from)
        {
            monitor.speak_alone(now, Side::Agent, format, &connected.leg.media);
        }
        if !self.core.is_held()
            && let Some(format) = self.media.negotiated().map(LegFormat::from)
        {
            monitor.speak_alone(now, Side::Caller, format, &self.media);
        }
    }

    /// A request or state change in the supervisor's dialog.
    pub(super) async fn on_monitor_dialog(&mut self, state: DialogState) {
        match state {
            DialogState::Terminated(id, reason) => {
                debug!(?reason, "the supervisor's dialog ended");
                self.ctx.dialogs.remove_dialog(&id);
                self.end_monitor("supervisor_hung_up", false);
            }
            DialogState::Updated(_, req, handle) => {
                if let Some(monitor) = self.monitor.as_mut() {
                    super::answer_update(&mut monitor.media, &req, &handle).await;
                }
            }
            DialogState::Info(_, req, handle) => {
                let digit =
                    crate::media::dtmf::parse_info(&super::content_type(&req), &req.body).ok();
                let _ = handle.reply(StatusCode::OK).await;
                if let Some(mode) = digit.and_then(MonitorMode::from_key) {
                    self.change_monitor_mode(mode);
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

    const PCMU: LegFormat = LegFormat {
        codec: Codec::Pcmu,
        payload_type: 0,
        telephone_event: Some(101),
    };
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
