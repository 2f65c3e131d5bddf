//! What the CTI API knows beyond the router's snapshot, built from the event
//! bus: a numbered journal of recent events (the WebSocket's resume window),
//! the live calls with their queue and agent (who may see which event), and
//! per-queue counts for today and the last 15 minutes (service level).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::broadcast;

use crate::events::{Event, EventBus, Stamped};

/// Events kept for clients that reconnect.
pub const JOURNAL_LEN: usize = 10_000;
const WINDOW: Duration = Duration::from_secs(15 * 60);

/// One journal entry: the event as JSON with its cursor, and who it concerns.
#[derive(Debug, Clone)]
pub struct Entry {
    pub cursor: u64,
    pub json: Arc<serde_json::Value>,
    pub call_id: Option<String>,
    pub agent: Option<String>,
    pub queue: Option<String>,
}

/// A live call as the API lists it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LiveCall {
    pub call_id: String,
    pub caller: String,
    pub number: String,
    /// ivr, queued, offered, talking, on-hold.
    pub state: &'static str,
    pub queue: Option<String>,
    pub agent: Option<String>,
    /// Unix milliseconds.
    pub arrived_at: u64,
    pub queued_at: Option<u64>,
    pub answered_at: Option<u64>,
    pub hold_started_at: Option<u64>,
    pub vars: BTreeMap<String, String>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Outcome {
    at: u64,
    answered: bool,
    within_sl: bool,
}

/// Per-queue counts.
#[derive(Debug, Default)]
struct QueueCounts {
    day: u64,
    answered_today: u64,
    abandoned_today: u64,
    within_sl_today: u64,
    recent: VecDeque<Outcome>,
}

/// A queue's figures for the API.
#[derive(Debug, Clone, Copy, Default, Serialize, utoipa::ToSchema)]
pub struct QueueFigures {
    pub answered_today: u64,
    pub abandoned_today: u64,
    /// Answered within target ÷ (answered + abandoned) today; null without calls.
    pub service_level_today: Option<f64>,
    /// The same over the last 15 minutes.
    pub service_level_15m: Option<f64>,
}

#[derive(Default)]
struct Inner {
    next_cursor: u64,
    journal: VecDeque<Entry>,
    calls: HashMap<String, LiveCall>,
    queues: HashMap<String, QueueCounts>,
    paused: std::collections::HashSet<String>,
}

/// The shared picture; cheap to clone.
#[derive(Clone)]
pub struct Floor {
    inner: Arc<Mutex<Inner>>,
    live: broadcast::Sender<Entry>,
    service_level: Arc<HashMap<String, Duration>>,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn field(json: &serde_json::Value, name: &str) -> Option<String> {
    json.get(name).and_then(|v| v.as_str()).map(str::to_string)
}

impl Floor {
    pub fn new(service_level: HashMap<String, Duration>) -> Floor {
        Floor {
            inner: Arc::default(),
            live: broadcast::channel(1024).0,
            service_level: Arc::new(service_level),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data; keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Follows the bus until it closes.
    pub fn follow(&self, bus: &EventBus) {
        let floor = self.clone();
        let mut events = bus.subscribe();
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                match events.recv().await {
                    Ok(stamped) => floor.record(&stamped),
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(lost = n, "the CTI journal fell behind the event bus")
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        });
    }

    /// Takes one event into the journal, the live calls and the counts.
    pub fn record(&self, stamped: &Stamped) {
        let Ok(json) = serde_json::to_value(stamped) else {
            return;
        };
        let at = unix_ms(stamped.at);
        let mut inner = self.lock();
        let call_id = field(&json, "call_id");
        self.track(&mut inner, &stamped.event, at);
        let tracked = call_id.as_ref().and_then(|c| inner.calls.get(c));
        let agent = field(&json, "agent").or_else(|| tracked.and_then(|c| c.agent.clone()));
        let queue = field(&json, "queue").or_else(|| tracked.and_then(|c| c.queue.clone()));
        if let Event::CallEnded { call_id, .. } = &stamped.event {
            inner.calls.remove(call_id);
        }
        let cursor = inner.next_cursor;
        inner.next_cursor += 1;
        let entry = Entry {
            cursor,
            json: Arc::new(json),
            call_id,
            agent,
            queue,
        };
        if inner.journal.len() == JOURNAL_LEN {
            inner.journal.pop_front();
        }
        inner.journal.push_back(entry.clone());
        drop(inner);
        let _ = self.live.send(entry);
    }

    fn track(&self, inner: &mut Inner, event: &Event, at: u64) {
        match event {
            Event::CallAdmitted {
                call_id,
                caller,
                number,
                ..
            } => {
                inner.calls.insert(
                    call_id.clone(),
                    LiveCall {
                        call_id: call_id.clone(),
                        caller: caller.clone(),
                        number: number.clone(),
                        state: "ivr",
                        queue: None,
                        agent: None,
                        arrived_at: at,
                        queued_at: None,
                        answered_at: None,
                        hold_started_at: None,
                        vars: BTreeMap::new(),
                    },
                );
            }
            Event::CallQueued { call_id, queue, .. } => {
                if let Some(c) = inner.calls.get_mut(call_id) {
                    c.state = "queued";
                    c.queue = Some(queue.clone());
                    c.agent = None;
                    c.queued_at.get_or_insert(at);
                }
            }
            Event::CallOffered {
                call_id,
                agent,
                vars,
                ..
            } => {
                if let Some(c) = inner.calls.get_mut(call_id) {
                    c.state = "offered";
                    c.agent = Some(agent.clone());
                    c.vars = vars.clone();
                }
            }
            Event::OfferFailed { call_id, .. } => {
                if let Some(c) = inner.calls.get_mut(call_id) {
                    c.state = "queued";
                    c.agent = None;
                }
            }
            Event::CallConnected {
                call_id,
                agent,
                queue,
                waited_ms,
                ..
            } => {
                if let Some(c) = inner.calls.get_mut(call_id) {
                    c.state = "talking";
                    c.agent = Some(agent.clone());
                    c.answered_at = Some(at);
                }
                let within = Duration::from_millis(*waited_ms)
                    <= self
                        .service_level
                        .get(queue)
                        .copied()
                        .unwrap_or(Duration::from_secs(20));
                count(inner, queue, at, true, within);
            }
            Event::CallAbandoned { queue, .. } => count(inner, queue, at, false, false),
            Event::HoldStarted { call_id, .. } => {
                if let Some(c) = inner.calls.get_mut(call_id) {
                    c.state = "on-hold";
                    c.hold_started_at = Some(at);
                }
            }
            Event::HoldEnded { call_id, .. } => {
                if let Some(c) = inner.calls.get_mut(call_id) {
                    c.state = "talking";
                    c.hold_started_at = None;
                }
            }
            _ => {}
        }
    }

    /// Entries after `cursor` the caller may still get, or None when the
    /// journal no longer reaches back that far.
    pub fn since(&self, cursor: u64) -> Option<Vec<Entry>> {
        let inner = self.lock();
        let oldest = inner
            .journal
            .front()
            .map_or(inner.next_cursor, |e| e.cursor);
        if cursor + 1 < oldest {
            return None;
        }
        Some(
            inner
                .journal
                .iter()
                .filter(|e| e.cursor > cursor)
                .cloned()
                .collect(),
        )
    }

    /// The next cursor to be handed out.
    pub fn head(&self) -> u64 {
        self.lock().next_cursor
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Entry> {
        self.live.subscribe()
    }

    pub fn calls(&self) -> Vec<LiveCall> {
        let mut calls: Vec<LiveCall> = self.lock().calls.values().cloned().collect();
        calls.sort_by_key(|c| c.arrived_at);
        calls
    }

    pub fn call(&self, call_id: &str) -> Option<LiveCall> {
        self.lock().calls.get(call_id).cloned()
    }

    /// The journal's events of one call, oldest first.
    pub fn history(&self, call_id: &str) -> Vec<Arc<serde_json::Value>> {
        self.lock()
            .journal
            .iter()
            .filter(|e| e.call_id.as_deref() == Some(call_id))
            .map(|e| e.json.clone())
            .collect()
    }

    pub fn figures(&self, queue: &str, now: SystemTime) -> QueueFigures {
        let mut inner = self.lock();
        let now_ms = unix_ms(now);
        let Some(q) = inner.queues.get_mut(queue) else {
            return QueueFigures::default();
        };
        roll(q, now_ms);
        let ratio = |within: u64, answered: u64, abandoned: u64| {
            let total = answered + abandoned;
            (total > 0).then(|| within as f64 / total as f64)
        };
        let recent = q
            .recent
            .iter()
            .filter(|o| o.at + WINDOW.as_millis() as u64 > now_ms);
        let (mut within, mut answered, mut abandoned) = (0, 0, 0);
        for o in recent {
            if o.answered {
                answered += 1;
                within += u64::from(o.within_sl);
            } else {
                abandoned += 1;
            }
        }
        QueueFigures {
            answered_today: q.answered_today,
            abandoned_today: q.abandoned_today,
            service_level_today: ratio(q.within_sl_today, q.answered_today, q.abandoned_today),
            service_level_15m: ratio(within, answered, abandoned),
        }
    }

    /// Pauses or resumes a queue (new callers go to its overflow).
    pub fn set_paused(&self, queue: &str, paused: bool) {
        let mut inner = self.lock();
        if paused {
            inner.paused.insert(queue.to_string());
        } else {
            inner.paused.remove(queue);
        }
    }

    pub fn is_paused(&self, queue: &str) -> bool {
        self.lock().paused.contains(queue)
    }
}

/// Days since the epoch in UTC: "today" for the counts.
fn day_of(ms: u64) -> u64 {
    ms / 86_400_000
}

/// A new day starts the daily counts again; old outcomes leave the window.
fn roll(q: &mut QueueCounts, now_ms: u64) {
    if day_of(now_ms) != q.day {
        q.day = day_of(now_ms);
        q.answered_today = 0;
        q.abandoned_today = 0;
        q.within_sl_today = 0;
    }
    while q
        .recent
        .front()
        .is_some_and(|o| o.at + (WINDOW.as_millis() as u64) <= now_ms)
    {
        q.recent.pop_front();
    }
}

fn count(inner: &mut Inner, queue: &str, at: u64, answered: bool, within_sl: bool) {
    let q = inner.queues.entry(queue.to_string()).or_default();
    roll(q, at);
    if answered {
        q.answered_today += 1;
        q.within_sl_today += u64::from(within_sl);
    } else {
        q.abandoned_today += 1;
    }
    q.recent.push_back(Outcome {
        at,
        answered,
        within_sl,
    });
}
