//! Call detail records: folding one call's events into its row.
//!
//! [`CdrBuilder`] is pure: it sees the events of one call in order and, at
//! the call's last event (`CallEnded`, or `CallRejected` for a call never
//! admitted), returns the finished [`Cdr`]. [`Assembler`] keeps one builder
//! per call in progress.

use std::collections::HashMap;
use std::fmt;

use crate::events::{Event, ReleasedBy, Stamped};

/// How a call ended, from the caller's point of view.
///
/// Decided when the call ends, in this order:
/// 1. `Rejected`: refused before it was admitted (`CallRejected`); its row
///    has `arrived_at = ended_at`.
/// 2. A call whose caller asked to be called back: `Answered` when the
///    customer was reached (`CallbackCompleted`), `Failed` when the callback
///    did not reach the customer (`CallbackFailed`), otherwise `Callback`
///    (requested and not yet completed when the call ended).
/// 3. `Answered`: an agent was connected (`CallConnected`) at some point,
///    even if the call was later requeued.
/// 4. `Abandoned`: the caller hung up while queued, or before hotline
///    answered its call. `Failed` instead when hotline itself ended a
///    queued call (a shutdown).
/// 5. `Overflowed`: the last thing that happened in a queue was an overflow
///    (to `hangup`, or to an IVR flow where the call then ended).
/// 6. `Ivr`: hotline answered, the call never joined a queue: it ended in an
///    IVR flow, during a greeting, or after the blocklist prompt.
/// 7. `Failed`: hotline ended the call before answering it, or the call's
///    end was never seen (see [`Assembler::expire`]).
///
/// `Interrupted` is never decided by the events: it is the row rebuilt at
/// the next start, from the event log, for a call that was live when the
/// process died (a kill, a crash; see `store::recover`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Answered,
    Abandoned,
    Overflowed,
    Rejected,
    Ivr,
    Callback,
    Failed,
    Interrupted,
}

impl Disposition {
    /// The name stored in the `disposition` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::Answered => "answered",
            Disposition::Abandoned => "abandoned",
            Disposition::Overflowed => "overflowed",
            Disposition::Rejected => "rejected",
            Disposition::Ivr => "ivr",
            Disposition::Callback => "callback",
            Disposition::Failed => "failed",
            Disposition::Interrupted => "interrupted",
        }
    }
}

impl fmt::Display for Disposition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name of `released_by` in the `cdr` table and in events.
pub fn released_by_name(by: ReleasedBy) -> &'static str {
    match by {
        ReleasedBy::Caller => "caller",
        ReleasedBy::Agent => "agent",
        ReleasedBy::System => "system",
    }
}

/// One row of the `cdr` table. Times are unix milliseconds, durations
/// milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cdr {
    /// The SIP Call-ID of the caller's INVITE.
    pub call_id: String,
    pub trunk: Option<String>,
    /// The caller's number (user part of From).
    pub caller: Option<String>,
    /// The hotline number dialled.
    pub dialed: Option<String>,
    /// IVR nodes entered, in order: `flow:node>node>...`; a node of another
    /// flow (an overflow into IVR) starts with its flow name again.
    pub ivr_path: Option<String>,
    /// The last queue the call waited in (the one it was answered from).
    pub queue: Option<String>,
    /// The agent connected (the last one, if the call was requeued).
    pub agent: Option<String>,
    pub arrived_at: i64,
    /// First time the call joined a queue.
    pub queued_at: Option<i64>,
    /// First offer to an agent.
    pub offered_at: Option<i64>,
    /// First time an agent was connected.
    pub answered_at: Option<i64>,
    pub ended_at: i64,
    /// Time in queues until an agent answered, or until the caller left
    /// (abandon, overflow, end of the call).
    pub waited_ms: i64,
    /// Offers made (agents rung; a ring-all offer counts each agent).
    pub ring_attempts: i64,
    /// From an agent's answer to the release, holds included; summed over
    /// connections.
    pub talk_ms: i64,
    pub hold_count: i64,
    pub hold_ms: i64,
    pub longest_hold_ms: i64,
    /// Transfers to another queue (rulebook L6).
    pub transfers: i64,
    /// Who ended the call: caller, agent or system.
    pub released_by: Option<&'static str>,
    pub disposition: Disposition,
    /// An agent answered after the ring limit.
    pub late_answer: bool,
    pub recording: Option<String>,
    pub category: Option<String>,
    pub notes: Option<String>,
    // --- Recording (rulebook Q1) ---
    /// When the recording started (the bridge), unix ms.
    pub recording_started_at: Option<i64>,
    /// SHA-256 (hex) of the finished recording; `None` when it failed or
    /// never finished.
    pub recording_sha256: Option<String>,
    /// Length of the recorded audio.
    pub recording_ms: Option<i64>,
    /// Holds as offsets from the start of the recording,
    /// `START-END[,START-END...]` in ms.
    pub hold_periods: Option<String>,
    /// The caller's post-call survey score, 1 to 5 (rulebook Q3).
    pub survey_score: Option<i64>,
    /// Why hotline ended a call whose end never came: `rtp_timeout`,
    /// `session_expired` or `max_duration`.
    pub end_reason: Option<&'static str>,
}

/// Where the call stands with queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QueueState {
    Never,
    Queued,
    Abandoned,
    Overflowed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallbackState {
    None,
    Requested,
    Completed,
    Failed,
}

/// The agent connection under way: hold accounting until its release.
#[derive(Debug, Clone, Copy)]
struct Connection {
    answered_at: i64,
    holds: i64,
    ended_holds_ms: i64,
    hold_since: Option<i64>,
}

/// Folds the events of one call into its [`Cdr`].
#[derive(Debug, Clone)]
pub struct CdrBuilder {
    call_id: String,
    trunk: Option<String>,
    caller: Option<String>,
    dialed: Option<String>,
    ivr_path: String,
    ivr_flow: Option<String>,
    queue: Option<String>,
    agent: Option<String>,
    arrived_at: Option<i64>,
    queued_at: Option<i64>,
    offered_at: Option<i64>,
    answered_at: Option<i64>,
    waited_ms: Option<i64>,
    left_queue_waited_ms: Option<i64>,
    ring_attempts: i64,
    talk_ms: i64,
    hold_count: i64,
    hold_ms: i64,
    longest_hold_ms: i64,
    late: bool,
    connection: Option<Connection>,
    ever_connected: bool,
    hotline_answered: bool,
    queue_state: QueueState,
    callback: CallbackState,
    last_at: i64,
    transfers: i64,
    category: Option<String>,
    notes: Option<String>,
    recording: Recorded,
    survey_score: Option<i64>,
    end_reason: Option<&'static str>,
}

/// What the recording events said.
#[derive(Debug, Clone, Default)]
struct Recorded {
    path: Option<String>,
    started_at: Option<i64>,
    sha256: Option<String>,
    duration_ms: Option<i64>,
    hold_periods: Option<String>,
}

impl CdrBuilder {
    pub fn new(call_id: &str) -> CdrBuilder {
        CdrBuilder {
            call_id: call_id.to_string(),
            trunk: None,
            caller: None,
            dialed: None,
            ivr_path: String::new(),
            ivr_flow: None,
            queue: None,
            agent: None,
            arrived_at: None,
            queued_at: None,
            offered_at: None,
            answered_at: None,
            waited_ms: None,
            left_queue_waited_ms: None,
            ring_attempts: 0,
            talk_ms: 0,
            hold_count: 0,
            hold_ms: 0,
            longest_hold_ms: 0,
            late: false,
            connection: None,
            ever_connected: false,
            hotline_answered: false,
            queue_state: QueueState::Never,
            callback: CallbackState::None,
            last_at: 0,
            transfers: 0,
            category: None,
            notes: None,
            recording: Recorded::default(),
            survey_score: None,
            end_reason: None,
        }
    }

    /// Unix ms of the last event seen.
    pub fn last_at(&self) -> i64 {
        self.last_at
    }

    /// Takes one event of this call (`at` in unix ms); returns the finished
    /// row at the call's last event.
    pub fn apply(&mut self, at: i64, event: &Event) -> Option<Cdr> {
        self.last_at = at;
        if self.arrived_at.is_none() {
            self.arrived_at = Some(at);
        }
        match event {
            Event::CallAdmitted {
                trunk,
                caller,
                number,
                ..
            } => {
                self.arrived_at = Some(at);
                self.trunk = Some(trunk.clone());
                self.caller = Some(caller.clone());
                self.dialed = Some(number.clone());
            }
            // An INVITE refused with the Call-ID of a call already admitted
            // does not end that call.
            Event::CallRejected { .. } if self.trunk.is_some() => {}
            Event::CallRejected { number, .. } => {
                self.dialed = Some(number.clone());
                return Some(self.finish(
                    at,
                    Some(ReleasedBy::System),
                    Some(Disposition::Rejected),
                ));
            }
            Event::CallAnswered { .. } => self.hotline_answered = true,
            Event::IvrNodeEntered { flow, node, .. } => {
                if self.ivr_flow.as_deref() == Some(flow.as_str()) {
                    self.ivr_path.push('>');
                } else {
                    if !self.ivr_path.is_empty() {
                        self.ivr_path.push('>');
                    }
                    self.ivr_path.push_str(flow);
                    self.ivr_path.push(':');
                    self.ivr_flow = Some(flow.clone());
                }
                self.ivr_path.push_str(node);
            }
            Event::CallQueued { queue, .. } => {
                self.queued_at.get_or_insert(at);
                self.queue = Some(queue.clone());
                self.queue_state = QueueState::Queued;
            }
            Event::CallOffered { .. } => {
                self.offered_at.get_or_insert(at);
                self.ring_attempts += 1;
            }
            Event::CallConnected {
                agent,
                queue,
                waited_ms,
                late,
                ..
            } => {
                self.answered_at.get_or_insert(at);
                self.waited_ms.get_or_insert(ms(*waited_ms));
                self.agent = Some(agent.clone());
                self.queue = Some(queue.clone());
                self.late |= *late;
                self.ever_connected = true;
                self.connection = Some(Connection {
                    answered_at: at,
                    holds: 0,
                    ended_holds_ms: 0,
                    hold_since: None,
                });
            }
            Event::HoldStarted { .. } => {
                if let Some(c) = self.connection.as_mut() {
                    c.holds += 1;
                    c.hold_since = Some(at);
                }
            }
            Event::HoldEnded { held_ms, .. } => {
                if let Some(c) = self.connection.as_mut() {
                    c.ended_holds_ms += ms(*held_ms);
                    c.hold_since = None;
                }
                self.longest_hold_ms = self.longest_hold_ms.max(ms(*held_ms));
            }
            Event::CallReleased {
                talk_ms,
                holds,
                hold_ms,
                ..
            } => {
                self.talk_ms += ms(*talk_ms);
                self.hold_count += i64::from(*holds);
                self.hold_ms += ms(*hold_ms);
                // A hold still running at the release ends with it.
                let ended = self.connection.take().map_or(0, |c| c.ended_holds_ms);
                self.longest_hold_ms = self.longest_hold_ms.max(ms(*hold_ms) - ended);
            }
            Event::CallAbandoned {
                queue, waited_ms, ..
            } => {
                self.queue = Some(queue.clone());
                self.left_queue_waited_ms = Some(ms(*waited_ms));
                self.queue_state = QueueState::Abandoned;
            }
            Event::CallOverflowed {
                queue, waited_ms, ..
            } => {
                self.queue = Some(queue.clone());
                self.left_queue_waited_ms = Some(ms(*waited_ms));
                self.queue_state = QueueState::Overflowed;
            }
            Event::CallbackRequested { .. } => self.callback = CallbackState::Requested,
            Event::CallbackCompleted { agent, .. } => {
                self.callback = CallbackState::Completed;
                self.agent = Some(agent.clone());
            }
            Event::CallbackFailed { .. } => self.callback = CallbackState::Failed,
            Event::CallDispositionSet {
                category, notes, ..
            } => {
                self.category = Some(category.clone());
                self.notes = (!notes.is_empty()).then(|| notes.clone());
            }
            Event::CallTransferred { count, .. } => self.transfers = i64::from(*count),
            Event::RecordingStarted { path, .. } => {
                self.recording.path = Some(path.clone());
                self.recording.started_at = Some(at);
            }
            Event::RecordingFinished {
                path,
                sha256,
                duration_ms,
                hold_periods,
                ..
            } => {
                self.recording.path = Some(path.clone());
                self.recording.sha256 = Some(sha256.clone());
                self.recording.duration_ms = Some(ms(*duration_ms));
                self.recording.hold_periods = Some(hold_periods.clone());
            }
            Event::RecordingFailed { path, .. } => {
                self.recording.path.get_or_insert_with(|| path.clone());
            }
            Event::SurveyAnswered { score, .. } => self.survey_score = Some(i64::from(*score)),
            Event::CallExpired { reason, .. } => self.end_reason = Some(*reason),
            Event::CallEnded {
                released_by,
                answered,
                ..
            } => {
                self.hotline_answered |= *answered;
                return Some(self.finish(at, Some(*released_by), None));
            }
            _ => {}
        }
        None
    }

    /// The row as it stands, ended at `ended_at`: with `disposition`, or the
    /// one the events lead to.
    pub fn finish(
        &mut self,
        ended_at: i64,
        released_by: Option<ReleasedBy>,
        disposition: Option<Disposition>,
    ) -> Cdr {
        // A connection never released (its event lost) ends with the call.
        if let Some(c) = self.connection.take() {
            let running = c.hold_since.map_or(0, |since| (ended_at - since).max(0));
            self.talk_ms += (ended_at - c.answered_at).max(0);
            self.hold_count += c.holds;
            self.hold_ms += c.ended_holds_ms + running;
            self.longest_hold_ms = self.longest_hold_ms.max(running);
        }
        let disposition = disposition.unwrap_or_else(|| self.disposition(released_by));
        let waited_ms = self
            .waited_ms
            .or(self.left_queue_waited_ms)
            .or_else(|| self.queued_at.map(|q| (ended_at - q).max(0)))
            .unwrap_or(0);
        Cdr {
            call_id: self.call_id.clone(),
            trunk: self.trunk.clone(),
            caller: self.caller.clone(),
            dialed: self.dialed.clone(),
            ivr_path: (!self.ivr_path.is_empty()).then(|| self.ivr_path.clone()),
            queue: self.queue.clone(),
            agent: self.agent.clone(),
            arrived_at: self.arrived_at.unwrap_or(ended_at),
            queued_at: self.queued_at,
            offered_at: self.offered_at,
            answered_at: self.answered_at,
            ended_at,
            waited_ms,
            ring_attempts: self.ring_attempts,
            talk_ms: self.talk_ms,
            hold_count: self.hold_count,
            hold_ms: self.hold_ms,
            longest_hold_ms: self.longest_hold_ms,
            transfers: self.transfers,
            released_by: released_by.map(released_by_name),
            disposition,
            late_answer: self.late,
            recording: self.recording.path.clone(),
            category: self.category.clone(),
            notes: self.notes.clone(),
            recording_started_at: self.recording.started_at,
            recording_sha256: self.recording.sha256.clone(),
            recording_ms: self.recording.duration_ms,
            hold_periods: self.recording.hold_periods.clone(),
            survey_score: self.survey_score,
            end_reason: self.end_reason,
        }
    }

    fn disposition(&self, released_by: Option<ReleasedBy>) -> Disposition {
        let by_caller = released_by == Some(ReleasedBy::Caller);
        match self.callback {
            CallbackState::Completed => return Disposition::Answered,
            CallbackState::Failed => return Disposition::Failed,
            CallbackState::Requested => return Disposition::Callback,
            CallbackState::None => {}
        }
        if self.ever_connected {
            return Disposition::Answered;
        }
        match self.queue_state {
            QueueState::Queued | QueueState::Abandoned if by_caller => Disposition::Abandoned,
            QueueState::Queued | QueueState::Abandoned => Disposition::Failed,
            QueueState::Overflowed => Disposition::Overflowed,
            QueueState::Never if self.hotline_answered => Disposition::Ivr,
            QueueState::Never if by_caller => Disposition::Abandoned,
            QueueState::Never => Disposition::Failed,
        }
    }
}

/// Milliseconds as stored (SQLite integers are signed).
fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Unix milliseconds of a stamped event.
pub fn unix_ms(at: std::time::SystemTime) -> i64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The call an event belongs to, if it is about one call.
pub fn call_id_of(event: &Event) -> Option<&str> {
    match event {
        Event::CallAdmitted { call_id, .. }
        | Event::CallRejected { call_id, .. }
        | Event::CallAnswered { call_id }
        | Event::CallEnded { call_id, .. }
        | Event::CallExpired { call_id, .. }
        | Event::MediaStarted { call_id, .. }
        | Event::MediaStopped { call_id, .. }
        | Event::IvrNodeEntered { call_id, .. }
        | Event::IvrExited { call_id, .. }
        | Event::DtmfReceived { call_id, .. }
        | Event::PromptStarted { call_id, .. }
        | Event::PromptFinished { call_id }
        | Event::CallQueued { call_id, .. }
        | Event::CallOffered { call_id, .. }
        | Event::OfferFailed { call_id, .. }
        | Event::CallConnected { call_id, .. }
        | Event::CallBridged { call_id, .. }
        | Event::HoldStarted { call_id, .. }
        | Event::HoldWarning { call_id, .. }
        | Event::HoldLimitReached { call_id, .. }
        | Event::HoldEnded { call_id, .. }
        | Event::CallAbandoned { call_id, .. }
        | Event::CallOverflowed { call_id, .. }
        | Event::CallReleased { call_id, .. }
        | Event::PositionAnnounced { call_id, .. }
        | Event::CallbackRequested { call_id, .. }
        | Event::CallbackCompleted { call_id, .. }
        | Event::CallbackFailed { call_id, .. }
        | Event::OutboundRefused { call_id, .. }
        | Event::CallDispositionSet { call_id, .. }
        | Event::CallTransferred { call_id, .. }
        | Event::RecordingStarted { call_id, .. }
        | Event::RecordingFinished { call_id, .. }
        | Event::RecordingFailed { call_id, .. }
        | Event::MonitorStarted { call_id, .. }
        | Event::MonitorModeChanged { call_id, .. }
        | Event::MonitorEnded { call_id, .. }
        | Event::ConsultStarted { call_id, .. }
        | Event::ConsultAnswered { call_id, .. }
        | Event::ConsultEnded { call_id, .. }
        | Event::ConferenceStarted { call_id, .. }
        | Event::ConferenceEnded { call_id, .. }
        | Event::SurveyAnswered { call_id, .. } => Some(call_id),
        Event::RegistrationAdded { .. }
        | Event::RegistrationRefreshed { .. }
        | Event::RegistrationRemoved { .. }
        | Event::AuthFailed { .. }
        | Event::SourceBanned { .. }
        | Event::AgentStateChanged { .. }
        | Event::BreakOverLimit { .. }
        | Event::StaffingBelowMinimum { .. }
        | Event::MonitorRefused { .. } => None,
    }
}

/// The builders of the calls in progress.
#[derive(Debug, Default)]
pub struct Assembler {
    calls: HashMap<String, CdrBuilder>,
}

impl Assembler {
    /// Takes one event; returns a call's row when the event ends it.
    pub fn fold(&mut self, stamped: &Stamped) -> Option<Cdr> {
        let call_id = call_id_of(&stamped.event)?;
        let at = unix_ms(stamped.at);
        let builder = self
            .calls
            .entry(call_id.to_string())
            .or_insert_with(|| CdrBuilder::new(call_id));
        let cdr = builder.apply(at, &stamped.event)?;
        self.calls.remove(call_id);
        Some(cdr)
    }

    /// Calls in progress.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Finishes the calls that have had no event since before `older_than`
    /// (unix ms): their end was lost. Each row ends at its last event, as
    /// `failed` unless it was answered.
    pub fn expire(&mut self, older_than: i64) -> Vec<Cdr> {
        let stale: Vec<String> = self
            .calls
            .iter()
            .filter(|(_, b)| b.last_at() < older_than)
            .map(|(id, _)| id.clone())
            .collect();
        stale
            .into_iter()
            .filter_map(|id| self.calls.remove(&id))
            .map(|mut b| {
                let ended = b.last_at();
                let disposition = if b.ever_connected {
                    Disposition::Answered
                } else {
                    Disposition::Failed
                };
                b.finish(ended, None, Some(disposition))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    const T0: i64 = 1_800_000_000_000;

    /// A scripted call: events at offsets (ms) from T0, fed in order.
    fn run(script: &[(i64, Event)]) -> Cdr {
        let mut assembler = Assembler::default();
        let mut done = None;
        for (offset, event) in script {
            let stamped = Stamped {
                at: UNIX_EPOCH + Duration::from_millis((T0 + offset) as u64),
                event: event.clone(),
            };
            if let Some(cdr) = assembler.fold(&stamped) {
                assert!(done.is_none(), "a second row for the call");
                done = Some(cdr);
            }
        }
        assert!(assembler.is_empty(), "the call is still in progress");
        done.expect("the script ends the call")
    }

    fn id() -> String {
        "c1".to_string()
    }

    fn admitted(number: &str) -> Event {
        Event::CallAdmitted {
            call_id: id(),
            trunk: "local".into(),
            caller: "5551234".into(),
            number: number.into(),
            source: "127.0.0.1:5070".parse().unwrap(),
        }
    }

    fn node(flow: &str, node: &str) -> Event {
        Event::IvrNodeEntered {
            call_id: id(),
            flow: flow.into(),
            node: node.into(),
        }
    }

    fn queued(queue: &str, waited_ms: u64) -> Event {
        Event::CallQueued {
            call_id: id(),
            queue: queue.into(),
            waited_ms,
        }
    }

    fn offered(agent: &str) -> Event {
        Event::CallOffered {
            call_id: id(),
            agent: agent.into(),
            queue: "support".into(),
            caller: "5551234".into(),
            number: "401".into(),
            contacts: 1,
            vars: Default::default(),
        }
    }

    fn connected(agent: &str, waited_ms: u64, late: bool) -> Event {
        Event::CallConnected {
            call_id: id(),
            agent: agent.into(),
            queue: "support".into(),
            waited_ms,
            ring_ms: 1000,
            late,
        }
    }

    fn released(agent: &str, talk_ms: u64, holds: u32, hold_ms: u64) -> Event {
        Event::CallReleased {
            call_id: id(),
            agent: agent.into(),
            queue: "support".into(),
            released_by: ReleasedBy::Caller,
            talk_ms,
            holds,
            hold_ms,
        }
    }

    fn ended(by: ReleasedBy, answered: bool) -> Event {
        Event::CallEnded {
            call_id: id(),
            released_by: by,
            answered,
        }
    }

    fn answered() -> Event {
        Event::CallAnswered { call_id: id() }
    }

    #[test]
    fn an_answered_call_with_a_hold() {
        let cdr = run(&[
            (0, admitted("400")),
            (10, answered()),
            (20, node("main", "greeting")),
            (2_000, node("main", "hours")),
            (2_001, node("main", "menu")),
            (4_000, node("main", "support")),
            (
                4_001,
                Event::IvrExited {
                    call_id: id(),
                    flow: "main".into(),
                    exit: "queue:support".into(),
                },
            ),
            (4_002, queued("support", 0)),
            (5_000, offered("1001")),
            (6_500, connected("1001", 2_498, false)),
            (
                10_000,
                Event::HoldStarted {
                    call_id: id(),
                    agent: "1001".into(),
                    by: "agent",
                },
            ),
            (
                13_000,
                Event::HoldEnded {
                    call_id: id(),
                    agent: "1001".into(),
                    held_ms: 3_000,
                },
            ),
            (20_500, released("1001", 14_000, 1, 3_000)),
            (20_510, ended(ReleasedBy::Caller, true)),
        ]);
        assert_eq!(
            cdr,
            Cdr {
                call_id: "c1".into(),
                trunk: Some("local".into()),
                caller: Some("5551234".into()),
                dialed: Some("400".into()),
                ivr_path: Some("main:greeting>hours>menu>support".into()),
                queue: Some("support".into()),
                agent: Some("1001".into()),
                arrived_at: T0,
                queued_at: Some(T0 + 4_002),
                offered_at: Some(T0 + 5_000),
                answered_at: Some(T0 + 6_500),
                ended_at: T0 + 20_510,
                waited_ms: 2_498,
                ring_attempts: 1,
                talk_ms: 14_000,
                hold_count: 1,
                hold_ms: 3_000,
                longest_hold_ms: 3_000,
                transfers: 0,
                released_by: Some("caller"),
                disposition: Disposition::Answered,
                late_answer: false,
                recording: None,
                category: None,
                notes: None,
                recording_started_at: None,
                recording_sha256: None,
                recording_ms: None,
                hold_periods: None,
                survey_score: None,
                end_reason: None,
            }
        );
    }

    #[test]
    fn the_recording_events_fill_the_recording_columns() {
        let path = "/rec/2026-12-06/c1.wav".to_string();
        let cdr = run(&[
            (0, admitted("402")),
            (100, queued("support", 0)),
            (200, offered("1001")),
            (1_000, connected("1001", 900, false)),
            (
                1_010,
                Event::RecordingStarted {
                    call_id: id(),
                    path: path.clone(),
                },
            ),
            (9_000, released("1001", 8_000, 1, 2_000)),
            (
                9_050,
                Event::RecordingFinished {
                    call_id: id(),
                    path: path.clone(),
                    sha256: "ab".repeat(32),
                    duration_ms: 7_990,
                    bytes: 255_724,
                    hold_periods: "2000-4000".into(),
                },
            ),
            (9_060, ended(ReleasedBy::Caller, true)),
        ]);
        assert_eq!(cdr.recording.as_deref(), Some(path.as_str()));
        assert_eq!(cdr.recording_started_at, Some(T0 + 1_010));
        assert_eq!(cdr.recording_sha256, Some("ab".repeat(32)));
        assert_eq!(cdr.recording_ms, Some(7_990));
        assert_eq!(cdr.hold_periods.as_deref(), Some("2000-4000"));

        // A recording that failed keeps its path and has no checksum.
        let cdr = run(&[
            (0, admitted("402")),
            (
                10,
                Event::RecordingStarted {
                    call_id: id(),
                    path: path.clone(),
                },
            ),
            (
                20,
                Event::RecordingFailed {
                    call_id: id(),
                    path: path.clone(),
                    error: "No space left on device".into(),
                },
            ),
            (30, ended(ReleasedBy::Caller, true)),
        ]);
        assert_eq!(cdr.recording.as_deref(), Some(path.as_str()));
        assert_eq!(cdr.recording_sha256, None);
        assert_eq!(cdr.recording_ms, None);
    }

    #[test]
    fn a_call_hotline_ended_for_a_lost_bye_carries_the_reason() {
        let cdr = run(&[
            (0, admitted("401")),
            (1, queued("support", 0)),
            (2, offered("1001")),
            (3, connected("1001", 2, false)),
            (
                60_003,
                Event::CallExpired {
                    call_id: id(),
                    reason: "rtp_timeout",
                },
            ),
            (60_004, ended(ReleasedBy::System, true)),
        ]);
        assert_eq!(cdr.end_reason, Some("rtp_timeout"));
        assert_eq!(cdr.released_by, Some("system"));
        assert_eq!(cdr.disposition, Disposition::Answered);
        let plain = run(&[(0, admitted("401")), (1, ended(ReleasedBy::Caller, true))]);
        assert_eq!(plain.end_reason, None);
    }

    #[test]
    fn the_survey_score_given_after_the_agent_left_is_on_the_record() {
        let cdr = run(&[
            (0, admitted("401")),
            (1, queued("support", 0)),
            (2, offered("1001")),
            (3, connected("1001", 2, false)),
            (5_000, released("1001", 4_997, 0, 0)),
            (
                9_000,
                Event::SurveyAnswered {
                    call_id: id(),
                    queue: "support".into(),
                    agent: "1001".into(),
                    score: 4,
                },
            ),
            (9_500, ended(ReleasedBy::System, true)),
        ]);
        assert_eq!(cdr.survey_score, Some(4));
        assert_eq!(cdr.disposition, Disposition::Answered);
        assert_eq!(cdr.talk_ms, 4_997);
        assert_eq!(
            run(&[(0, admitted("401")), (1, ended(ReleasedBy::Caller, true))]).survey_score,
            None
        );
    }

    #[test]
    fn a_hold_running_at_the_release_counts_as_the_longest() {
        let cdr = run(&[
            (0, admitted("401")),
            (1, queued("support", 0)),
            (2, offered("1001")),
            (3, connected("1001", 2, false)),
            (
                100,
                Event::HoldStarted {
                    call_id: id(),
                    agent: "1001".into(),
                    by: "caller",
                },
            ),
            (
                1_100,
                Event::HoldEnded {
                    call_id: id(),
                    agent: "1001".into(),
                    held_ms: 1_000,
                },
            ),
            (
                2_000,
                Event::HoldStarted {
                    call_id: id(),
                    agent: "1001".into(),
                    by: "agent",
                },
            ),
            (7_000, released("1001", 6_997, 2, 6_000)),
            (7_001, ended(ReleasedBy::Agent, true)),
        ]);
        assert_eq!(
            (cdr.hold_count, cdr.hold_ms, cdr.longest_hold_ms),
            (2, 6_000, 5_000)
        );
        assert_eq!(cdr.released_by, Some("agent"));
        assert_eq!(cdr.disposition, Disposition::Answered);
        assert_eq!(cdr.ivr_path, None);
    }

    #[test]
    fn a_caller_who_hangs_up_in_the_queue_abandoned() {
        let cdr = run(&[
            (0, admitted("401")),
            (5, answered()),
            (3_000, queued("support", 0)),
            (3_010, offered("1001")),
            (
                8_000,
                Event::CallAbandoned {
                    call_id: id(),
                    queue: "support".into(),
                    waited_ms: 5_000,
                },
            ),
            (8_001, ended(ReleasedBy::Caller, true)),
        ]);
        assert_eq!(cdr.disposition, Disposition::Abandoned);
        assert_eq!(cdr.queue.as_deref(), Some("support"));
        assert_eq!(cdr.agent, None);
        assert_eq!(cdr.queued_at, Some(T0 + 3_000));
        assert_eq!(cdr.offered_at, Some(T0 + 3_010));
        assert_eq!(cdr.answered_at, None);
        assert_eq!(cdr.waited_ms, 5_000);
        assert_eq!(cdr.ring_attempts, 1);
        assert_eq!((cdr.talk_ms, cdr.hold_count, cdr.hold_ms), (0, 0, 0));
        assert_eq!(cdr.released_by, Some("caller"));
        assert!(!cdr.late_answer);
        assert_eq!(cdr.ended_at, T0 + 8_001);
    }

    #[test]
    fn a_queued_call_ended_by_hotline_failed() {
        let cdr = run(&[
            (0, admitted("401")),
            (1, queued("support", 0)),
            (
                900,
                Event::CallAbandoned {
                    call_id: id(),
                    queue: "support".into(),
                    waited_ms: 899,
                },
            ),
            (901, ended(ReleasedBy::System, true)),
        ]);
        assert_eq!(cdr.disposition, Disposition::Failed);
        assert_eq!(cdr.released_by, Some("system"));
    }

    #[test]
    fn ring_no_answer_then_answered_by_the_next_agent() {
        let cdr = run(&[
            (0, admitted("402")),
            (1, queued("support", 0)),
            (2, offered("1001")),
            (
                6_002,
                Event::OfferFailed {
                    call_id: id(),
                    agent: "1001".into(),
                    queue: "support".into(),
                    outcome: "no_answer",
                    ring_ms: 6_000,
                },
            ),
            (6_010, offered("1002")),
            (6_510, connected("1002", 6_509, false)),
            (16_510, released("1002", 10_000, 0, 0)),
            (16_520, ended(ReleasedBy::Caller, true)),
        ]);
        assert_eq!(cdr.disposition, Disposition::Answered);
        assert_eq!(cdr.ring_attempts, 2);
        assert_eq!(cdr.agent.as_deref(), Some("1002"));
        assert_eq!(cdr.offered_at, Some(T0 + 2));
        assert_eq!(cdr.answered_at, Some(T0 + 6_510));
        assert_eq!(cdr.waited_ms, 6_509);
        assert_eq!(cdr.talk_ms, 10_000);
        assert_eq!(cdr.longest_hold_ms, 0);
    }

    #[test]
    fn a_late_answer_is_marked() {
        let cdr = run(&[
            (0, admitted("402")),
            (1, queued("support", 0)),
            (2, offered("1001")),
            (7_000, connected("1001", 6_999, true)),
            (8_000, released("1001", 1_000, 0, 0)),
            (8_001, ended(ReleasedBy::Caller, true)),
        ]);
        assert!(cdr.late_answer);
    }

    #[test]
    fn an_overflow_to_hangup() {
        let cdr = run(&[
            (0, admitted("402")),
            (1, queued("support", 0)),
            (
                30_001,
                Event::CallOverflowed {
                    call_id: id(),
                    queue: "support".into(),
                    reason: "max_wait",
                    target: "hangup".into(),
                    waited_ms: 30_000,
                },
            ),
            (32_000, ended(ReleasedBy::System, true)),
        ]);
        assert_eq!(cdr.disposition, Disposition::Overflowed);
        assert_eq!(cdr.waited_ms, 30_000);
        assert_eq!(cdr.queue.as_deref(), Some("support"));
        assert_eq!(cdr.ring_attempts, 0);
        assert_eq!(cdr.released_by, Some("system"));
    }

    #[test]
    fn an_overflow_into_an_ivr_flow_extends_the_path_with_its_flow() {
        let cdr = run(&[
            (0, admitted("400")),
            (1, node("main", "menu")),
            (2, node("main", "support")),
            (3, queued("support", 0)),
            (
                10_003,
                Event::CallOverflowed {
                    call_id: id(),
                    queue: "support".into(),
                    reason: "max_wait",
                    target: "ivr:voicemail".into(),
                    waited_ms: 10_000,
                },
            ),
            (10_004, node("voicemail", "start")),
            (10_005, node("voicemail", "bye")),
            (12_000, ended(ReleasedBy::System, true)),
        ]);
        assert_eq!(cdr.disposition, Disposition::Overflowed);
        assert_eq!(
            cdr.ivr_path.as_deref(),
            Some("main:menu>support>voicemail:start>bye")
        );
    }

    #[test]
    fn an_overflow_to_another_queue_then_answered_is_answered() {
        let cdr = run(&[
            (0, admitted("402")),
            (1, queued("support", 0)),
            (
                10_001,
                Event::CallOverflowed {
                    call_id: id(),
                    queue: "support".into(),
                    reason: "max_wait",
                    target: "queue:sales".into(),
                    waited_ms: 10_000,
                },
            ),
            (10_002, queued("sales", 10_001)),
            (10_003, offered("1002")),
            (
                11_000,
                Event::CallConnected {
                    call_id: id(),
                    agent: "1002".into(),
                    queue: "sales".into(),
                    waited_ms: 10_999,
                    ring_ms: 997,
                    late: false,
                },
            ),
            (12_000, released("1002", 1_000, 0, 0)),
            (12_001, ended(ReleasedBy::Caller, true)),
        ]);
        assert_eq!(cdr.disposition, Disposition::Answered);
        assert_eq!(cdr.queue.as_deref(), Some("sales"));
        assert_eq!(cdr.queued_at, Some(T0 + 1));
        assert_eq!(cdr.waited_ms, 10_999);
    }

    #[test]
    fn a_rejected_call_is_a_row_that_ends_as_it_arrives() {
        let cdr = run(&[(
            0,
            Event::CallRejected {
                call_id: id(),
                number: "999".into(),
                source: "127.0.0.1:5070".parse().unwrap(),
                status: 404,
                reason: crate::events::RejectReason::UnknownNumber,
            },
        )]);
        assert_eq!(cdr.disposition, Disposition::Rejected);
        assert_eq!(cdr.arrived_at, T0);
        assert_eq!(cdr.ended_at, T0);
        assert_eq!(cdr.dialed.as_deref(), Some("999"));
        assert_eq!(cdr.trunk, None);
        assert_eq!(cdr.caller, None);
        assert_eq!(cdr.released_by, Some("system"));
        assert_eq!((cdr.waited_ms, cdr.ring_attempts), (0, 0));
    }

    #[test]
    fn a_refused_invite_with_the_call_id_of_an_admitted_call_does_not_end_it() {
        let cdr = run(&[
            (0, admitted("401")),
            (
                5,
                Event::CallRejected {
                    call_id: id(),
                    number: "401".into(),
                    source: "127.0.0.1:5070".parse().unwrap(),
                    status: 503,
                    reason: crate::events::RejectReason::ShuttingDown,
                },
            ),
            (10, answered()),
            (20, ended(ReleasedBy::Caller, true)),
        ]);
        assert_eq!(cdr.disposition, Disposition::Ivr);
        assert_eq!(cdr.ended_at, T0 + 20);
    }

    #[test]
    fn a_call_that_ends_in_the_ivr() {
        let cdr = run(&[
            (0, admitted("400")),
            (10, answered()),
            (20, node("main", "greeting")),
            (2_000, node("main", "hours")),
            (2_001, node("main", "menu")),
            (3_000, node("main", "account")),
            (
                5_000,
                Event::IvrExited {
                    call_id: id(),
                    flow: "main".into(),
                    exit: "caller_hung_up:account".into(),
                },
            ),
            (5_001, ended(ReleasedBy::Caller, true)),
        ]);
        assert_eq!(cdr.disposition, Disposition::Ivr);
        assert_eq!(
            cdr.ivr_path.as_deref(),
            Some("main:greeting>hours>menu>account")
        );
        assert_eq!(cdr.queue, None);
        assert_eq!(cdr.queued_at, None);
        assert_eq!(cdr.waited_ms, 0);
        assert_eq!(cdr.released_by, Some("caller"));
    }

    #[test]
    fn a_hang_up_during_the_greeting_is_ivr_and_before_the_answer_abandoned() {
        let greeting = run(&[
            (0, admitted("401")),
            (1, answered()),
            (1_000, ended(ReleasedBy::Caller, true)),
        ]);
        assert_eq!(greeting.disposition, Disposition::Ivr);
        assert_eq!(greeting.ivr_path, None);
        let ringing = run(&[
            (0, admitted("401")),
            (3_000, ended(ReleasedBy::Caller, false)),
        ]);
        assert_eq!(ringing.disposition, Disposition::Abandoned);
        let refused = run(&[(0, admitted("401")), (3, ended(ReleasedBy::System, false))]);
        assert_eq!(refused.disposition, Disposition::Failed);
    }

    #[test]
    fn callbacks_pending_completed_and_failed() {
        let requested = || Event::CallbackRequested {
            call_id: id(),
            queue: "support".into(),
            number: "5551234".into(),
        };
        let pending = run(&[
            (0, admitted("401")),
            (1, queued("support", 0)),
            (60_000, requested()),
            (90_000, ended(ReleasedBy::System, true)),
        ]);
        assert_eq!(pending.disposition, Disposition::Callback);
        assert_eq!(pending.waited_ms, 89_999);

        let completed = run(&[
            (0, admitted("401")),
            (1, queued("support", 0)),
            (60_000, requested()),
            (70_000, offered("1001")),
            (71_000, connected("1001", 70_999, false)),
            (
                75_000,
                Event::CallbackCompleted {
                    call_id: id(),
                    agent: "1001".into(),
                    number: "5551234".into(),
                },
            ),
            (95_000, released("1001", 24_000, 0, 0)),
            (95_001, ended(ReleasedBy::Caller, true)),
        ]);
        assert_eq!(completed.disposition, Disposition::Answered);
        assert_eq!(completed.agent.as_deref(), Some("1001"));

        let failed = run(&[
            (0, admitted("401")),
            (1, queued("support", 0)),
            (60_000, requested()),
            (70_000, offered("1001")),
            (71_000, connected("1001", 70_999, false)),
            (
                101_000,
                Event::CallbackFailed {
                    call_id: id(),
                    number: "5551234".into(),
                    status: Some(408),
                },
            ),
            (101_100, released("1001", 30_100, 0, 0)),
            (101_200, ended(ReleasedBy::System, true)),
        ]);
        assert_eq!(failed.disposition, Disposition::Failed);
    }

    #[test]
    fn a_requeued_call_sums_its_connections() {
        let cdr = run(&[
            (0, admitted("402")),
            (1, queued("support", 0)),
            (2, offered("1001")),
            (1_000, connected("1001", 999, false)),
            (
                2_000,
                Event::HoldStarted {
                    call_id: id(),
                    agent: "1001".into(),
                    by: "agent",
                },
            ),
            (32_000, released("1001", 31_000, 1, 30_000)),
            (32_001, queued("support", 32_000)),
            (32_002, offered("1002")),
            (33_000, connected("1002", 32_999, false)),
            (43_000, released("1002", 10_000, 0, 0)),
            (43_001, ended(ReleasedBy::Caller, true)),
        ]);
        assert_eq!(cdr.disposition, Disposition::Answered);
        assert_eq!(cdr.agent.as_deref(), Some("1002"));
        assert_eq!(cdr.answered_at, Some(T0 + 1_000));
        assert_eq!(cdr.waited_ms, 999);
        assert_eq!(cdr.talk_ms, 41_000);
        assert_eq!(cdr.ring_attempts, 2);
        assert_eq!(
            (cdr.hold_count, cdr.hold_ms, cdr.longest_hold_ms),
            (1, 30_000, 30_000)
        );
    }

    #[test]
    fn calls_are_kept_apart_and_other_events_are_ignored() {
        let mut assembler = Assembler::default();
        let at = UNIX_EPOCH + Duration::from_millis(T0 as u64);
        let stamp = |event| Stamped { at, event };
        let ended_c2 = Event::CallEnded {
            call_id: "c2".into(),
            released_by: ReleasedBy::Caller,
            answered: false,
        };
        assert!(assembler.fold(&stamp(admitted("400"))).is_none());
        assert!(
            assembler
                .fold(&stamp(Event::AgentStateChanged {
                    agent: "1001".into(),
                    state: "ready",
                    reason: None,
                }))
                .is_none()
        );
        assert_eq!(assembler.len(), 1);
        let c2 = assembler.fold(&stamp(ended_c2)).expect("c2 ends");
        assert_eq!(c2.call_id, "c2");
        assert_eq!(assembler.len(), 1, "c1 is still in progress");
    }

    #[test]
    fn calls_whose_end_was_lost_are_expired_as_failed() {
        let mut assembler = Assembler::default();
        let at = |offset: i64| UNIX_EPOCH + Duration::from_millis((T0 + offset) as u64);
        assembler.fold(&Stamped {
            at: at(0),
            event: admitted("401"),
        });
        assembler.fold(&Stamped {
            at: at(5_000),
            event: queued("support", 0),
        });
        assert!(assembler.expire(T0 + 5_000).is_empty());
        let rows = assembler.expire(T0 + 5_001);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].disposition, Disposition::Failed);
        assert_eq!(rows[0].ended_at, T0 + 5_000);
        assert_eq!(rows[0].released_by, None);
        assert!(assembler.is_empty());
    }
}
