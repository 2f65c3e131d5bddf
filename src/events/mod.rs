//! The typed event stream of hotline and its fan-out.
//!
//! Every happening that metrics, the store or the CTI API will care about is an
//! [`Event`]. Publishers call [`EventBus::publish`], which never blocks and never
//! fails. Two kinds of followers hear it:
//!
//! - subscribers ([`EventBus::subscribe`], a broadcast ring): one that falls
//!   behind loses the oldest events (and is told how many it lost); for those
//!   that may lose (the event log, the CTI journal);
//! - lossless followers ([`EventBus::attach`]): each event is handed to their
//!   own queue at publish time, so none is lost to a slow follower; the queue's
//!   depth, high-water mark and losses (only past its hard capacity) are kept
//!   in a [`Backlog`], which the SIP edge watches to refuse new calls long
//!   before that capacity (the store, the metrics).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::broadcast;

/// Why a registration binding went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnregisterReason {
    /// The phone sent `Expires: 0` for this contact.
    Unregistered,
    /// The phone sent `Contact: *` with `Expires: 0`.
    UnregisteredAll,
    /// The binding was not refreshed in time.
    Expired,
    /// The agent registered more contacts than allowed; the oldest made room.
    Evicted,
}

/// Why an INVITE was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The source is in no trunk and gave no valid trunk credentials.
    NotATrunk,
    /// The source is banned after repeated authentication failures.
    Banned,
    /// The dialled number is not a hotline number.
    UnknownNumber,
    /// The trunk may not dial this number.
    NumberNotAllowed,
    /// The server is shutting down.
    ShuttingDown,
    /// The caller's number is on the blocklist.
    Blocked,
}

/// Who ended a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleasedBy {
    Caller,
    Agent,
    System,
}

/// One happening, as published on the bus.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    RegistrationAdded {
        aor: String,
        contact: String,
        expires_secs: u64,
        source: SocketAddr,
    },
    RegistrationRefreshed {
        aor: String,
        contact: String,
        expires_secs: u64,
        source: SocketAddr,
    },
    RegistrationRemoved {
        aor: String,
        contact: String,
        reason: UnregisterReason,
    },
    AuthFailed {
        source: SocketAddr,
        username: Option<String>,
        method: String,
        reason: String,
    },
    SourceBanned {
        source: std::net::IpAddr,
        ban_secs: u64,
    },
    CallAdmitted {
        call_id: String,
        trunk: String,
        caller: String,
        number: String,
        source: SocketAddr,
    },
    CallRejected {
        call_id: String,
        number: String,
        source: SocketAddr,
        status: u16,
        reason: RejectReason,
    },
    CallAnswered {
        call_id: String,
    },
    CallEnded {
        call_id: String,
        released_by: ReleasedBy,
        /// Whether the call had been answered before it ended.
        answered: bool,
    },
    /// Hotline ended a call whose end never came: `rtp_timeout` (a leg sent
    /// no RTP while it should), `session_expired` (an RFC 4028 session
    /// timer ran out unrefreshed), `max_duration` (the number's or queue's
    /// longest call). `CallEnded` follows, released by the system.
    CallExpired {
        call_id: String,
        reason: &'static str,
    },
    MediaStarted {
        call_id: String,
        codec: String,
        /// Where RTP is sent (from the SDP, later the latched source).
        remote: Option<SocketAddr>,
        telephone_event: Option<u8>,
    },
    MediaStopped {
        call_id: String,
        packets_in: u64,
        dropped: u64,
    },
    IvrNodeEntered {
        call_id: String,
        flow: String,
        node: String,
    },
    IvrExited {
        call_id: String,
        flow: String,
        /// "queue:NAME", "hangup" or "caller_hung_up".
        exit: String,
    },
    DtmfReceived {
        call_id: String,
        digit: char,
        /// "rfc4733", "info" or "inband".
        via: &'static str,
    },
    PromptStarted {
        call_id: String,
        prompts: Vec<String>,
    },
    PromptFinished {
        call_id: String,
    },
    AgentStateChanged {
        agent: String,
        /// logged-out, ready, not-ready, offered, talking, on-hold, wrap-up.
        state: &'static str,
        reason: Option<String>,
    },
    /// The caller joined a queue (again, after a failed offer or an overflow).
    CallQueued {
        call_id: String,
        queue: String,
        /// Time already waited in earlier queues (kept across overflow).
        waited_ms: u64,
    },
    /// The router chose an agent; its phone(s) ring.
    CallOffered {
        call_id: String,
        agent: String,
        queue: String,
        caller: String,
        number: String,
        /// Registered contacts rung (0: the agent is unreachable).
        contacts: usize,
        /// What the IVR learned (the agent desktop's screen pop).
        vars: std::collections::BTreeMap<String, String>,
    },
    /// An offer did not connect: no_answer (ring limit), busy, declined, unreachable.
    OfferFailed {
        call_id: String,
        agent: String,
        queue: String,
        outcome: &'static str,
        ring_ms: u64,
    },
    /// The agent answered.
    CallConnected {
        call_id: String,
        agent: String,
        queue: String,
        waited_ms: u64,
        ring_ms: u64,
        /// Answered after the ring limit (QA checks the agent apologised).
        late: bool,
    },
    /// Audio now flows between caller and agent.
    CallBridged {
        call_id: String,
        agent: String,
        caller_codec: String,
        agent_codec: String,
    },
    HoldStarted {
        call_id: String,
        agent: String,
        /// "agent" or "caller": whose re-INVITE put the call on hold.
        by: &'static str,
    },
    HoldWarning {
        call_id: String,
        agent: String,
        held_ms: u64,
    },
    /// The hold limit (L2) was reached; `action` ran (alert, resume, requeue).
    HoldLimitReached {
        call_id: String,
        agent: String,
        held_ms: u64,
        action: &'static str,
        /// 1 at the limit, 2 at twice the limit, ...
        count: u32,
    },
    HoldEnded {
        call_id: String,
        agent: String,
        held_ms: u64,
    },
    /// The caller hung up before an agent answered.
    CallAbandoned {
        call_id: String,
        queue: String,
        waited_ms: u64,
    },
    /// The caller left a queue for its overflow target.
    CallOverflowed {
        call_id: String,
        queue: String,
        /// max_wait, max_len or no_agents.
        reason: &'static str,
        target: String,
        waited_ms: u64,
    },
    /// A connected call ended: who released it first (L3), talk time.
    CallReleased {
        call_id: String,
        agent: String,
        queue: String,
        released_by: ReleasedBy,
        talk_ms: u64,
        holds: u32,
        hold_ms: u64,
    },
    /// An agent has been not-ready longer than the break limit (L7).
    BreakOverLimit {
        agent: String,
        reason: String,
        not_ready_secs: u64,
        count: u32,
    },
    /// A queue has fewer agents logged in than its `min_staffed` (C2).
    StaffingBelowMinimum {
        queue: String,
        staffed: u32,
        min: u32,
    },
    /// The category (rulebook R1) and notes of a call, set over the CTI API.
    CallDispositionSet {
        call_id: String,
        category: String,
        notes: String,
    },
    /// A connected call was passed to another queue (rulebook L6).
    CallTransferred {
        call_id: String,
        agent: String,
        from_queue: String,
        to_queue: String,
        /// The agent named by the transfer, if one was.
        to_agent: Option<String>,
        /// Transfers of this call so far, this one included.
        count: u32,
    },
    /// The caller heard its position and estimated wait.
    PositionAnnounced {
        call_id: String,
        queue: String,
        position: usize,
        estimated_wait_secs: Option<u64>,
    },
    /// The caller asked to be called back (C3).
    CallbackRequested {
        call_id: String,
        queue: String,
        number: String,
    },
    /// An agent took the callback and the customer answered.
    CallbackCompleted {
        call_id: String,
        agent: String,
        number: String,
    },
    /// The customer of a callback could not be reached.
    CallbackFailed {
        call_id: String,
        number: String,
        status: Option<u16>,
    },
    /// A number hotline was to dial out through a trunk was refused by the
    /// trunk's dial plan or its outbound ceilings (`reason`).
    OutboundRefused {
        call_id: String,
        trunk: String,
        number: String,
        reason: String,
    },
    // --- Recording (rulebook Q1) ---
    /// The call's recording file was created.
    RecordingStarted {
        call_id: String,
        path: String,
    },
    /// The recording was finalised at hang-up: header complete, synced.
    RecordingFinished {
        call_id: String,
        path: String,
        /// SHA-256 of the whole file, lowercase hex.
        sha256: String,
        duration_ms: u64,
        /// Size of the file.
        bytes: u64,
        /// Holds as offsets from the start of the recording,
        /// `START-END[,START-END...]` in ms; empty without holds.
        hold_periods: String,
    },
    /// The recording stopped on an error (a full disk, any write error);
    /// the call goes on unrecorded from here. An alarm.
    RecordingFailed {
        call_id: String,
        path: String,
        error: String,
    },
    /// A supervisor joined a live call (rulebook Q2); `via` is "api" or "phone".
    MonitorStarted {
        call_id: String,
        supervisor: String,
        agent: String,
        mode: &'static str,
        via: &'static str,
    },
    /// The supervisor switched between listen, whisper and barge.
    MonitorModeChanged {
        call_id: String,
        supervisor: String,
        mode: &'static str,
    },
    /// The supervisor left, or the monitored call did.
    MonitorEnded {
        call_id: String,
        supervisor: String,
        reason: &'static str,
        /// How long the supervisor was on; `None` when its phone never answered.
        duration_ms: Option<u64>,
    },
    /// A request to monitor an agent was refused: `via` "phone" (a feature
    /// code) or "api"; `reason` not_supervisor, out_of_scope (the agent
    /// serves none of the supervisor's queues) or foreign_phone (the API
    /// was asked to ring a phone that is not the supervisor's).
    MonitorRefused {
        supervisor: String,
        agent: String,
        via: &'static str,
        reason: &'static str,
    },
    /// The agent consults another agent or a queue; the caller waits on hold.
    ConsultStarted {
        call_id: String,
        agent: String,
        /// "agent:ID" or "queue:NAME".
        target: String,
    },
    /// The consulted agent answered.
    ConsultAnswered {
        call_id: String,
        consultant: String,
    },
    /// transferred (attended transfer), conference (three-way), cancelled,
    /// not_answered, consultant_hung_up, agent_hung_up, call_ended, failed.
    ConsultEnded {
        call_id: String,
        outcome: &'static str,
    },
    /// Caller, agent and consulted agent talk together.
    ConferenceStarted {
        call_id: String,
        consultant: String,
    },
    /// The consulted agent left the three-way call, or stayed alone with
    /// the caller when the agent left.
    ConferenceEnded {
        call_id: String,
        consultant: String,
        talk_ms: u64,
    },
    /// The caller rated the call in its queue's post-call survey (rulebook Q3).
    SurveyAnswered {
        call_id: String,
        queue: String,
        /// The agent who served the caller last.
        agent: String,
        /// 1 (poor) to 5 (excellent).
        score: u8,
    },
}

/// An event with the time it happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stamped {
    #[serde(with = "unix_millis")]
    pub at: SystemTime,
    #[serde(flatten)]
    pub event: Event,
}

mod unix_millis {
    use std::time::{SystemTime, UNIX_EPOCH};

    pub fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        let ms = t
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        s.serialize_u64(ms)
    }
}

/// The queue of one lossless follower: events handed over and not yet
/// taken, the most there ever were, and those lost past its capacity (a
/// figure that must stay 0: the SIP edge refuses new calls long before).
#[derive(Debug)]
pub struct Backlog {
    queued: AtomicU64,
    high_water: AtomicU64,
    lost: AtomicU64,
    capacity: u64,
}

/// Events a lossless follower may have waiting before it loses some:
/// about a minute of events at a few thousand calls a second, far past
/// where the SIP edge starts refusing new calls.
pub const BACKLOG_CAPACITY: u64 = 1 << 18;

impl Default for Backlog {
    fn default() -> Self {
        Backlog::with_capacity(BACKLOG_CAPACITY)
    }
}

impl Backlog {
    /// A queue that loses events only past `capacity` waiting at once.
    pub fn with_capacity(capacity: u64) -> Backlog {
        Backlog {
            queued: AtomicU64::new(0),
            high_water: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            capacity: capacity.max(1),
        }
    }

    /// Counts one event in and runs `send` to queue it; `false` when the
    /// queue is full and the event is lost (counted). A `send` that fails
    /// (the follower has stopped) is not counted as waiting.
    pub fn hand_over(&self, send: impl FnOnce() -> bool) -> bool {
        let queued = self.queued.fetch_add(1, Ordering::AcqRel) + 1;
        if queued > self.capacity {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            self.lost.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.high_water.fetch_max(queued, Ordering::Relaxed);
        if !send() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
        }
        true
    }

    /// The follower took one event off its queue.
    pub fn taken(&self) {
        // Never below zero, even for an event queued without `hand_over`.
        let _ = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// Events waiting now.
    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Acquire)
    }

    /// The most events that ever waited at once.
    pub fn high_water(&self) -> u64 {
        self.high_water.load(Ordering::Relaxed)
    }

    /// Events lost because the queue was full.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }
}

type Deliver = Box<dyn Fn(&Stamped) + Send + Sync>;

struct Follower {
    id: u64,
    name: &'static str,
    backlog: Arc<Backlog>,
    deliver: Deliver,
}

#[derive(Default)]
struct Followers {
    next_id: u64,
    list: Vec<Follower>,
}

/// Non-blocking fan-out of events to any number of subscribers and
/// lossless followers.
#[derive(Clone)]
pub struct EventBus {
    sender: broadcast::Sender<Stamped>,
    capacity: usize,
    followers: Arc<RwLock<Followers>>,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("subscribers", &self.sender.receiver_count())
            .field("lag", &self.lag())
            .finish()
    }
}

/// A lossless follower's place on the bus; dropping it (or
/// [`Attachment::detach`]) stops the deliveries. It does not keep the bus
/// alive: once every handle of the bus is gone, so is the follower's
/// `deliver` (and with it, say, the sending half of its channel).
pub struct Attachment {
    followers: std::sync::Weak<RwLock<Followers>>,
    id: u64,
}

impl Attachment {
    /// Stops the deliveries; once this returns, no more events arrive.
    pub fn detach(self) {}
}

impl Drop for Attachment {
    fn drop(&mut self) {
        if let Some(followers) = self.followers.upgrade() {
            let mut followers = followers.write().unwrap_or_else(|e| e.into_inner());
            followers.list.retain(|f| f.id != self.id);
        }
    }
}

impl EventBus {
    /// `capacity` events are kept for the slowest subscriber before it starts losing them.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let (sender, _) = broadcast::channel(capacity);
        Self {
            sender,
            capacity,
            followers: Arc::default(),
        }
    }

    /// Publishes without waiting: hands the event to every lossless
    /// follower, then to the subscribers; with nobody listening the event
    /// is simply dropped.
    pub fn publish(&self, event: Event) {
        let stamped = Stamped {
            at: SystemTime::now(),
            event,
        };
        {
            let followers = self.followers.read().unwrap_or_else(|e| e.into_inner());
            for follower in &followers.list {
                (follower.deliver)(&stamped);
            }
        }
        // An Err only means nobody is listening right now.
        let _ = self.sender.send(stamped);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Stamped> {
        self.sender.subscribe()
    }

    /// Hands every event published from now on to `deliver`, in the
    /// publisher's thread: `deliver` must only queue it (through `backlog`,
    /// which the bus reports under `name`), never wait.
    pub fn attach(
        &self,
        name: &'static str,
        backlog: Arc<Backlog>,
        deliver: impl Fn(&Stamped) + Send + Sync + 'static,
    ) -> Attachment {
        let mut followers = self.followers.write().unwrap_or_else(|e| e.into_inner());
        let id = followers.next_id;
        followers.next_id += 1;
        followers.list.push(Follower {
            id,
            name,
            backlog,
            deliver: Box::new(deliver),
        });
        Attachment {
            followers: Arc::downgrade(&self.followers),
            id,
        }
    }

    /// The lossless followers' queues, by name.
    pub fn backlogs(&self) -> Vec<(&'static str, Arc<Backlog>)> {
        let followers = self.followers.read().unwrap_or_else(|e| e.into_inner());
        followers
            .list
            .iter()
            .map(|f| (f.name, f.backlog.clone()))
            .collect()
    }

    /// Events the slowest subscriber has yet to receive.
    pub fn lag(&self) -> usize {
        self.sender.len()
    }

    /// Events a subscriber may lag behind before it loses some.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// Events the server's bus keeps for its slowest subscriber.
pub const BUS_CAPACITY: usize = 4096;

impl Default for EventBus {
    fn default() -> Self {
        Self::new(BUS_CAPACITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(n: usize) -> Event {
        Event::CallAnswered {
            call_id: format!("c{n}"),
        }
    }

    #[tokio::test]
    async fn events_published_before_anyone_listens_are_not_replayed() {
        let bus = EventBus::new(4);
        bus.publish(answered(0));
        let mut rx = bus.subscribe();
        bus.publish(answered(1));
        assert_eq!(rx.recv().await.unwrap().event, answered(1));
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn subscribers_receive_events_in_order() {
        let bus = EventBus::new(16);
        let mut rx = bus.subscribe();
        for n in 0..3 {
            bus.publish(answered(n));
        }
        for n in 0..3 {
            assert_eq!(rx.recv().await.unwrap().event, answered(n));
        }
    }

    #[tokio::test]
    async fn a_slow_subscriber_loses_oldest_events_and_never_blocks_the_publisher() {
        let bus = EventBus::new(4);
        let mut rx = bus.subscribe();
        for n in 0..10 {
            bus.publish(answered(n));
        }
        match rx.recv().await {
            Err(broadcast::error::RecvError::Lagged(lost)) => assert_eq!(lost, 6),
            other => panic!("expected lag, got {other:?}"),
        }
        assert_eq!(rx.recv().await.unwrap().event, answered(6));
    }

    #[test]
    fn a_lossless_follower_gets_every_event_however_far_behind_it_is() {
        let bus = EventBus::new(4);
        let backlog = Arc::new(Backlog::with_capacity(1_000));
        let (tx, rx) = std::sync::mpsc::channel();
        let queue = backlog.clone();
        let attachment = bus.attach("test", backlog.clone(), move |s| {
            let tx = tx.clone();
            let s = s.clone();
            queue.hand_over(move || tx.send(s).is_ok());
        });
        for n in 0..100 {
            bus.publish(answered(n));
        }
        assert_eq!(backlog.queued(), 100);
        assert_eq!(backlog.high_water(), 100);
        for n in 0..100 {
            assert_eq!(rx.try_recv().unwrap().event, answered(n));
            backlog.taken();
        }
        assert_eq!(
            (backlog.queued(), backlog.high_water(), backlog.lost()),
            (0, 100, 0)
        );
        assert_eq!(bus.backlogs().len(), 1);
        attachment.detach();
        assert!(bus.backlogs().is_empty());
        bus.publish(answered(100));
        assert!(rx.try_recv().is_err(), "nothing arrives once detached");
    }

    #[test]
    fn a_follower_lets_go_of_its_queue_when_the_bus_is_gone() {
        let bus = EventBus::new(4);
        let (tx, rx) = std::sync::mpsc::channel::<Stamped>();
        let _attachment = bus.attach("test", Arc::default(), move |s| {
            let _ = tx.send(s.clone());
        });
        drop(bus);
        assert!(rx.recv().is_err(), "the sender went with the bus");
    }

    #[test]
    fn a_full_backlog_counts_what_it_loses_and_a_stopped_follower_holds_no_place() {
        let backlog = Backlog::with_capacity(2);
        assert!(backlog.hand_over(|| true));
        assert!(backlog.hand_over(|| true));
        assert!(!backlog.hand_over(|| panic!("not sent past the capacity")));
        assert_eq!((backlog.queued(), backlog.lost()), (2, 1));
        backlog.taken();
        assert!(backlog.hand_over(|| false), "a stopped follower is no loss");
        assert_eq!((backlog.queued(), backlog.lost()), (1, 1));
        backlog.taken();
        backlog.taken();
        assert_eq!(backlog.queued(), 0, "never below zero");
    }

    #[tokio::test]
    async fn the_lag_is_what_the_slowest_subscriber_has_not_received() {
        let bus = EventBus::new(8);
        let mut rx = bus.subscribe();
        for n in 0..3 {
            bus.publish(answered(n));
        }
        assert_eq!(bus.lag(), 3);
        rx.recv().await.unwrap();
        assert_eq!(bus.lag(), 2);
        assert_eq!(bus.capacity(), 8);
    }

    #[test]
    fn events_serialize_with_type_tag_and_timestamp() {
        let s = Stamped {
            at: std::time::UNIX_EPOCH + std::time::Duration::from_millis(1500),
            event: Event::RegistrationRemoved {
                aor: "1001".into(),
                contact: "sip:1001@127.0.0.1:5070".into(),
                reason: UnregisterReason::Expired,
            },
        };
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("\"type\":\"registration_removed\""), "{json}");
        assert!(json.contains("\"at\":1500"), "{json}");
        assert!(json.contains("\"reason\":\"expired\""), "{json}");
    }
}
