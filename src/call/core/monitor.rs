//! The supervisor's session on a bridged call (rulebook Q2): who may monitor,
//! listen / whisper / barge and the keys 1/2/3 that switch between them, the
//! end of the session when either side leaves, and the pacing of the mix the
//! supervisor hears with the 60 ms silence rule for its own voice.
//!
//! Pure: the actor rings or answers the supervisor's phone, mixes the audio
//! and carries the [`MonitorEffect`]s out. The third party of a three-way call
//! shares the mixer but is no supervisor: it is the consultation machine's.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::call::control::ControlError;
use crate::events::Event;

/// The mixing period.
pub const TICK: Duration = Duration::from_millis(20);

/// How long a side may send nothing (silence suppression, a hold) before the
/// supervisor's voice for the other side travels on a stream of its own.
pub const SILENT_SIDE: Duration = Duration::from_millis(60);

/// After a stall this long, the mix starts afresh rather than send a burst.
const STALL: Duration = Duration::from_millis(100);

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

/// A side of the monitored bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    Caller,
    Agent,
}

/// The pacing of a mixed leg (a supervisor's, or a three-way call's third
/// party's): when its next 20 ms frame is due, and when each side of the
/// bridge last sent audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MixClock {
    next_tick: Instant,
    last_from_caller: Instant,
    last_from_agent: Instant,
}

impl MixClock {
    /// A clock whose first frame is due one tick after `now`.
    pub fn start(now: Instant) -> MixClock {
        MixClock {
            next_tick: now + TICK,
            last_from_caller: now,
            last_from_agent: now,
        }
    }

    pub fn deadline(&self) -> Instant {
        self.next_tick
    }

    /// A packet of `from` went through the bridge.
    pub fn heard(&mut self, from: Party, now: Instant) {
        match from {
            Party::Caller => self.last_from_caller = now,
            Party::Agent => self.last_from_agent = now,
        }
    }

    /// The frames due by `now`; the clock moves past them.
    pub fn due(&mut self, now: Instant) -> usize {
        if self.next_tick > now {
            return 0;
        }
        if now - self.next_tick > STALL {
            self.next_tick = now;
        }
        let mut frames = 0;
        while self.next_tick <= now {
            self.next_tick += TICK;
            frames += 1;
        }
        frames
    }

    /// Whether the supervisor's voice for `to` goes on a stream of its own:
    /// `to` hears it in `mode` and the side that usually carries it has been
    /// silent longer than [`SILENT_SIDE`]. Whisper and barge must not wait
    /// for the monitored parties to speak.
    pub fn speaks_alone(&self, to: Party, mode: MonitorMode, now: Instant) -> bool {
        let (hears, carrier) = match to {
            Party::Agent => (mode.agent_hears_supervisor(), self.last_from_caller),
            Party::Caller => (mode.caller_hears_supervisor(), self.last_from_agent),
        };
        hears && now.saturating_duration_since(carrier) > SILENT_SIDE
    }

    /// Who hears the leg's voice alone at `now`. While a consultation uses
    /// the agent's leg it carries the consulted agent, so nobody does; a
    /// held caller hears the music.
    pub fn lone_voice(
        &self,
        mode: MonitorMode,
        now: Instant,
        consulting: bool,
        caller_held: bool,
    ) -> LoneVoice {
        if consulting {
            return LoneVoice::default();
        }
        LoneVoice {
            agent: self.speaks_alone(Party::Agent, mode, now),
            caller: !caller_held && self.speaks_alone(Party::Caller, mode, now),
        }
    }
}

/// Which sides hear the mixed leg's voice on a stream of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoneVoice {
    pub agent: bool,
    pub caller: bool,
}

/// How the supervisor came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The CTI API: hotline rings the supervisor's phone.
    Api,
    /// The supervisor's phone dialled a feature code.
    Phone,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Api => "api",
            Via::Phone => "phone",
        }
    }
}

/// The supervisor of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Supervisor {
    pub name: String,
    pub via: Via,
}

/// Why monitoring is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MonitorRefusal {
    #[error("only a call connected to an agent can be monitored")]
    NotBridged,
    #[error("a three-way call is going on")]
    ThreeWay,
    #[error("supervisor {0} already monitors this call")]
    Taken(String),
    #[error("{0} already monitors this call")]
    AlreadyOn(String),
    #[error("nobody monitors this call")]
    NobodyMonitors,
    /// The supervisor's phone could not be rung (not registered, no media).
    #[error("{0}")]
    Unreachable(ControlError),
}

/// Why a session ended; the reason of `monitor_ended` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MonitorEnd {
    Stopped,
    NotAnswered,
    UnusableSdp,
    SupervisorHungUp,
    CallLeftAgent,
    Transferred,
    Requeued,
    CallEnded,
}

impl MonitorEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            MonitorEnd::Stopped => "stopped",
            MonitorEnd::NotAnswered => "not_answered",
            MonitorEnd::UnusableSdp => "unusable_sdp",
            MonitorEnd::SupervisorHungUp => "supervisor_hung_up",
            MonitorEnd::CallLeftAgent => "call_left_agent",
            MonitorEnd::Transferred => "transferred",
            MonitorEnd::Requeued => "requeued",
            MonitorEnd::CallEnded => "call_ended",
        }
    }

    /// Whether the supervisor's phone is still on and is to be hung up.
    fn hangs_up(self) -> bool {
        !matches!(self, MonitorEnd::NotAnswered | MonitorEnd::SupervisorHungUp)
    }
}

/// The session's state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Session {
    #[default]
    Idle,
    /// hotline rings the supervisor's phone.
    Ringing {
        supervisor: Supervisor,
        mode: MonitorMode,
    },
    /// The supervisor hears the call (and is heard, by mode).
    On {
        supervisor: Supervisor,
        mode: MonitorMode,
        since: Instant,
    },
}

/// What the machine must know of the call around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallView {
    /// The agent the call is bridged to, if it is.
    pub agent: Option<String>,
    /// A three-way call holds the mixer.
    pub three_way: bool,
}

/// What the machine is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MonitorInput {
    /// A supervisor asks to monitor: the API (hotline is to ring its phone)
    /// or its phone's feature code (answered at once).
    Start {
        supervisor: Supervisor,
        mode: MonitorMode,
    },
    /// hotline rang the supervisor's phone (API), or could not; a feature
    /// code's call that could not be answered is `Err` too.
    Rung(Result<(), ControlError>),
    /// The supervisor's phone answered with usable media.
    Answered,
    /// The supervisor's phone answered with media it cannot use.
    UnusableAnswer,
    /// The supervisor's phone gave up (or the feature code's call could not
    /// be answered).
    NotAnswered,
    /// The API asks for another mode.
    Mode(MonitorMode),
    /// The supervisor pressed a key.
    Key(char),
    Stop,
    SupervisorLeft,
    /// The call moves on (ends, is transferred, requeued, or no agent is
    /// on it any more).
    End(MonitorEnd),
}

/// What the actor is to do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum MonitorEffect {
    /// The answer to the command.
    Reply(Result<(), MonitorRefusal>),
    /// Ring the supervisor's phone (API); the outcome comes back as
    /// [`MonitorInput::Rung`].
    Ring,
    /// Answer the supervisor's phone (feature code).
    Accept,
    /// Refuse the supervisor's phone call (feature code).
    Refuse(MonitorRefusal),
    /// Who hears the supervisor changed: voice queued for someone who no
    /// longer hears it must not leak later.
    SetMode(MonitorMode),
    /// Start mixing for the supervisor.
    Mix,
    /// BYE to the supervisor's phone (or CANCEL while hotline rings it).
    HangUp(Via),
    /// Let the supervisor's leg go (its dialog is over).
    Release,
    Publish(Event),
}

/// A call's supervisor session.
#[derive(Debug, Clone)]
pub struct MonitorMachine {
    call_id: String,
    session: Session,
}

impl MonitorMachine {
    pub fn new(call_id: &str) -> MonitorMachine {
        MonitorMachine {
            call_id: call_id.to_string(),
            session: Session::Idle,
        }
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    pub fn supervisor(&self) -> Option<&Supervisor> {
        match &self.session {
            Session::Ringing { supervisor, .. } | Session::On { supervisor, .. } => {
                Some(supervisor)
            }
            Session::Idle => None,
        }
    }

    pub fn mode(&self) -> Option<MonitorMode> {
        match &self.session {
            Session::Ringing { mode, .. } | Session::On { mode, .. } => Some(*mode),
            Session::Idle => None,
        }
    }

    /// The supervisor hears the call.
    pub fn on(&self) -> bool {
        matches!(self.session, Session::On { .. })
    }

    pub fn handle(
        &mut self,
        input: MonitorInput,
        call: &CallView,
        now: Instant,
    ) -> Vec<MonitorEffect> {
        let mut out = Vec::new();
        match input {
            MonitorInput::Start { supervisor, mode } => {
                self.start(supervisor, mode, call, &mut out)
            }
            MonitorInput::Rung(result) => {
                if matches!(self.session, Session::Ringing { .. }) {
                    if result.is_err() {
                        self.session = Session::Idle;
                    }
                    out.push(MonitorEffect::Reply(
                        result.map_err(MonitorRefusal::Unreachable),
                    ));
                }
            }
            MonitorInput::Answered => {
                let ringing = matches!(self.session, Session::Ringing { .. });
                if ringing
                    && let Session::Ringing { supervisor, mode } = std::mem::take(&mut self.session)
                {
                    out.push(MonitorEffect::Mix);
                    out.push(MonitorEffect::Publish(Event::MonitorStarted {
                        call_id: self.call_id.clone(),
                        supervisor: supervisor.name.clone(),
                        agent: call.agent.clone().unwrap_or_default(),
                        mode: mode.as_str(),
                        via: supervisor.via.as_str(),
                    }));
                    self.session = Session::On {
                        supervisor,
                        mode,
                        since: now,
                    };
                }
            }
            MonitorInput::UnusableAnswer => {
                if matches!(self.session, Session::Ringing { .. }) {
                    self.end(MonitorEnd::UnusableSdp, now, &mut out);
                }
            }
            MonitorInput::NotAnswered => {
                if matches!(self.session, Session::Ringing { .. }) {
                    self.end(MonitorEnd::NotAnswered, now, &mut out);
                }
            }
            MonitorInput::Mode(mode) => {
                let result = match self.session {
                    Session::Idle => Err(MonitorRefusal::NobodyMonitors),
                    _ => {
                        self.set_mode(mode, &mut out);
                        Ok(())
                    }
                };
                out.push(MonitorEffect::Reply(result));
            }
            MonitorInput::Key(key) => {
                if let Some(mode) = MonitorMode::from_key(key).filter(|_| self.on()) {
                    self.set_mode(mode, &mut out);
                }
            }
            MonitorInput::Stop => {
                let result = match self.session {
                    Session::Idle => Err(MonitorRefusal::NobodyMonitors),
                    _ => {
                        self.end(MonitorEnd::Stopped, now, &mut out);
                        Ok(())
                    }
                };
                out.push(MonitorEffect::Reply(result));
            }
            MonitorInput::SupervisorLeft => self.end(MonitorEnd::SupervisorHungUp, now, &mut out),
            MonitorInput::End(end) => self.end(end, now, &mut out),
        }
        out
    }

    fn start(
        &mut self,
        supervisor: Supervisor,
        mode: MonitorMode,
        call: &CallView,
        out: &mut Vec<MonitorEffect>,
    ) {
        // The API asking again for the supervisor on: another mode.
        if supervisor.via == Via::Api
            && self.supervisor().is_some_and(|s| s.name == supervisor.name)
        {
            self.set_mode(mode, out);
            out.push(MonitorEffect::Reply(Ok(())));
            return;
        }
        let refusal = if call.agent.is_none() {
            Some(MonitorRefusal::NotBridged)
        } else if call.three_way {
            Some(MonitorRefusal::ThreeWay)
        } else {
            match self.supervisor() {
                Some(on) if on.name != supervisor.name => {
                    Some(MonitorRefusal::Taken(on.name.clone()))
                }
                Some(_) => Some(MonitorRefusal::AlreadyOn(supervisor.name.clone())),
                None => None,
            }
        };
        match (refusal, supervisor.via) {
            (Some(refusal), Via::Api) => out.push(MonitorEffect::Reply(Err(refusal))),
            (Some(refusal), Via::Phone) => out.push(MonitorEffect::Refuse(refusal)),
            (None, via) => {
                out.push(match via {
                    Via::Api => MonitorEffect::Ring,
                    Via::Phone => MonitorEffect::Accept,
                });
                self.session = Session::Ringing { supervisor, mode };
            }
        }
    }

    fn set_mode(&mut self, new: MonitorMode, out: &mut Vec<MonitorEffect>) {
        let (supervisor, mode) = match &mut self.session {
            Session::Ringing { supervisor, mode }
            | Session::On {
                supervisor, mode, ..
            } => (supervisor, mode),
            Session::Idle => return,
        };
        if *mode == new {
            return;
        }
        *mode = new;
        out.push(MonitorEffect::SetMode(new));
        out.push(MonitorEffect::Publish(Event::MonitorModeChanged {
            call_id: self.call_id.clone(),
            supervisor: supervisor.name.clone(),
            mode: new.as_str(),
        }));
    }

    /// Ends the session: the supervisor's phone is hung up unless it left.
    fn end(&mut self, end: MonitorEnd, now: Instant, out: &mut Vec<MonitorEffect>) {
        let (supervisor, since) = match std::mem::take(&mut self.session) {
            Session::Idle => return,
            Session::Ringing { supervisor, .. } => (supervisor, None),
            Session::On {
                supervisor, since, ..
            } => (supervisor, Some(since)),
        };
        out.push(match end.hangs_up() {
            true => MonitorEffect::HangUp(supervisor.via),
            false => MonitorEffect::Release,
        });
        out.push(MonitorEffect::Publish(Event::MonitorEnded {
            call_id: self.call_id.clone(),
            supervisor: supervisor.name,
            reason: end.as_str(),
            duration_ms: since.map(|s| now.saturating_duration_since(s).as_millis() as u64),
        }));
    }
}

#[cfg(test)]
mod tests;
