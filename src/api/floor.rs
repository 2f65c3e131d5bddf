//! What the CTI API knows beyond the router's snapshot, built from the event
//! bus: a numbered journal of recent events (the WebSocket's resume window),
//! the live calls with their queue and agent (who may see which event), and
//! per-queue counts for today and the last 15 minutes (service level).
//!
//! The journal is bounded in entries and in bytes of JSON; an event larger
//! than an entry may be (texts from callers, agents' notes, IVR variables)
//! is kept with its long texts cut short and marked `"truncated": true`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Size of `json`, serialized.
    pub bytes: usize,
}

/// The journal's bounds and what they cost.
#[derive(Debug)]
pub struct JournalLimits {
    /// Bytes of JSON kept at most.
    pub max_bytes: usize,
    /// Largest entry; larger events are cut down.
    pub entry_max_bytes: usize,
}

impl Default for JournalLimits {
    fn default() -> Self {
        let limits = crate::config::ApiLimits::default();
        JournalLimits {
            max_bytes: limits.journal_max_bytes,
            entry_max_bytes: limits.journal_entry_max_bytes,
        }
    }
}

/// Counters of the journal, for the metrics page.
#[derive(Debug, Default)]
pub struct JournalStats {
    /// Events whose texts were cut to fit an entry.
    pub truncated: AtomicU64,
    /// Entries dropped before their turn to keep the bytes bound.
    pub evicted_for_bytes: AtomicU64,
    /// Bytes of JSON held now.
    pub bytes: AtomicU64,
    /// Event stream clients disconnected for falling behind.
    pub dropped_clients: AtomicU64,
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
    journal_bytes: usize,
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
    limits: Arc<JournalLimits>,
    stats: Arc<JournalStats>,
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
        Floor::with_limits(service_level, JournalLimits::default())
    }

    /// A floor whose journal keeps to `limits`.
    pub fn with_limits(service_level: HashMap<String, Duration>, limits: JournalLimits) -> Floor {
        Floor {
            inner: Arc::default(),
            live: broadcast::channel(1024).0,
            service_level: Arc::new(service_level),
            limits: Arc::new(limits),
            stats: Arc::default(),
        }
    }

    /// The journal's counters.
    pub fn journal_stats(&self) -> &JournalStats {
        &self.stats
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
        let Ok(mut json) = serde_json::to_value(stamped) else {
            return;
        };
        let mut bytes = json.to_string().len();
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
        // Who the event concerns is taken before any cut: the visibility
        // of a cut-down event is the event's own.
        if bytes > self.limits.entry_max_bytes {
            bytes = cut_down(&mut json, self.limits.entry_max_bytes);
            self.stats.truncated.fetch_add(1, Ordering::Relaxed);
        }
        let cursor = inner.next_cursor;
        inner.next_cursor += 1;
        let entry = Entry {
            cursor,
            json: Arc::new(json),
            call_id,
            agent,
            queue,
            bytes,
        };
        let mut evicted = 0;
        while inner.journal.len() >= JOURNAL_LEN
            || (!inner.journal.is_empty() && inner.journal_bytes + bytes > self.limits.max_bytes)
        {
            let Some(old) = inner.journal.pop_front() else {
                break;
            };
            inner.journal_bytes -= old.bytes;
            if inner.journal.len() + 1 < JOURNAL_LEN {
                evicted += 1;
            }
        }
        inner.journal_bytes += bytes;
        inner.journal.push_back(entry.clone());
        self.stats
            .bytes
            .store(inner.journal_bytes as u64, Ordering::Relaxed);
        drop(inner);
        if evicted > 0 {
            self.stats
                .evicted_for_bytes
                .fetch_add(evicted, Ordering::Relaxed);
        }
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

    /// Entries after `cursor`, or, when the journal no longer reaches back
    /// that far, every entry it still holds and the first cursor it lost
    /// nothing after (the client missed `cursor + 1` up to it, exclusive).
    pub fn resume(&self, cursor: u64) -> (Vec<Entry>, Option<u64>) {
        let inner = self.lock();
        let oldest = inner
            .journal
            .front()
            .map_or(inner.next_cursor, |e| e.cursor);
        let gap = (cursor + 1 < oldest).then_some(oldest);
        let entries = inner
            .journal
            .iter()
            .filter(|e| e.cursor > cursor)
            .cloned()
            .collect();
        (entries, gap)
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

/// Longest text kept in a cut-down event.
const CUT_TEXT_CHARS: usize = 256;

/// Cuts the texts of an oversized event to [`CUT_TEXT_CHARS`] and marks it
/// `"truncated": true`; if that is still over `max_bytes`, only its type,
/// time and the names of who it concerns are kept (each cut as well).
/// Returns the size it ends with.
fn cut_down(json: &mut serde_json::Value, max_bytes: usize) -> usize {
    fn cut_texts(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::String(text) => {
                if let Some((at, _)) = text.char_indices().nth(CUT_TEXT_CHARS) {
                    text.truncate(at);
                    text.push('…');
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(cut_texts),
            serde_json::Value::Object(fields) => fields.values_mut().for_each(cut_texts),
            _ => {}
        }
    }
    cut_texts(json);
    if let Some(fields) = json.as_object_mut() {
        fields.insert("truncated".into(), true.into());
    }
    let bytes = json.to_string().len();
    if bytes <= max_bytes {
        return bytes;
    }
    let mut kept = serde_json::Map::new();
    if let Some(fields) = json.as_object() {
        for name in ["at", "type", "call_id", "agent", "queue"] {
            if let Some(value) = fields.get(name) {
                kept.insert(name.into(), value.clone());
            }
        }
    }
    kept.insert("truncated".into(), true.into());
    *json = serde_json::Value::Object(kept);
    json.to_string().len()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn stamped(event: Event) -> Stamped {
        Stamped {
            at: SystemTime::now(),
            event,
        }
    }

    fn notes(call: usize, len: usize) -> Stamped {
        stamped(Event::CallDispositionSet {
            call_id: format!("call-{call}"),
            category: "sales".into(),
            notes: "=x".repeat(len / 2),
        })
    }

    #[test]
    fn an_oversized_event_is_kept_cut_down_and_counted() {
        let floor = Floor::with_limits(
            HashMap::new(),
            JournalLimits {
                max_bytes: 1_000_000,
                entry_max_bytes: 1_024,
            },
        );
        floor.record(&notes(1, 200_000));
        floor.record(&notes(2, 100));
        let stats = floor.journal_stats();
        assert_eq!(stats.truncated.load(Ordering::Relaxed), 1);
        let entries = floor.since(0).map(|mut e| {
            e.insert(0, floor.lock().journal[0].clone());
            e
        });
        let entries = entries.unwrap();
        assert_eq!(entries.len(), 2);
        let cut = &entries[0];
        assert!(cut.bytes <= 1_024, "{}", cut.bytes);
        assert_eq!(cut.json.to_string().len(), cut.bytes);
        assert_eq!(cut.json["truncated"], true);
        assert_eq!(cut.json["type"], "call_disposition_set");
        assert_eq!(cut.call_id.as_deref(), Some("call-1"));
        assert_eq!(floor.history("call-1").len(), 1, "still the call's history");
        assert!(entries[1].json.get("truncated").is_none());
        // An event with nothing but huge texts keeps its type and call.
        let huge_agent = stamped(Event::CallConnected {
            call_id: "call-3".into(),
            agent: "a".repeat(300),
            queue: "q".repeat(300),
            waited_ms: 0,
            ring_ms: 0,
            late: false,
        });
        floor.record(&huge_agent);
        let last = floor.lock().journal.back().cloned().unwrap();
        assert!(last.bytes <= 1_024 + 64, "{}", last.bytes);
        assert_eq!(last.json["call_id"], "call-3");
        assert_eq!(last.agent.as_deref(), Some("a".repeat(300).as_str()));
    }

    #[test]
    fn a_resume_older_than_the_journal_names_the_gap_and_gets_all_it_holds() {
        let floor = Floor::with_limits(
            HashMap::new(),
            JournalLimits {
                max_bytes: 8 * 1024,
                entry_max_bytes: 1024,
            },
        );
        for n in 0..100 {
            floor.record(&notes(n, 600));
        }
        let oldest = floor.lock().journal.front().unwrap().cursor;
        assert!(oldest > 10, "the journal dropped its oldest: {oldest}");
        let (entries, gap) = floor.resume(3);
        assert_eq!(gap, Some(oldest), "events 4 up to {oldest} are lost");
        let cursors: Vec<u64> = entries.iter().map(|e| e.cursor).collect();
        assert_eq!(cursors, (oldest..100).collect::<Vec<_>>());
        // Just before the oldest held: nothing lost.
        let (entries, gap) = floor.resume(oldest - 1);
        assert_eq!(gap, None);
        assert_eq!(entries.first().map(|e| e.cursor), Some(oldest));
        let (entries, gap) = floor.resume(99);
        assert_eq!((entries.len(), gap), (0, None));
    }

    #[test]
    fn the_journal_keeps_to_its_byte_bound_dropping_the_oldest() {
        let floor = Floor::with_limits(
            HashMap::new(),
            JournalLimits {
                max_bytes: 64 * 1024,
                entry_max_bytes: 4 * 1024,
            },
        );
        for n in 0..2_000 {
            floor.record(&notes(n, 3_000));
            let bytes = floor.journal_stats().bytes.load(Ordering::Relaxed);
            assert!(bytes <= 64 * 1024, "{bytes} bytes after {n}");
        }
        let inner = floor.lock();
        let held: usize = inner.journal.iter().map(|e| e.bytes).sum();
        assert_eq!(held, inner.journal_bytes);
        assert!(inner.journal.len() < 30, "{}", inner.journal.len());
        assert_eq!(
            inner.journal.back().unwrap().cursor,
            1_999,
            "the newest stays"
        );
        drop(inner);
        assert!(
            floor
                .journal_stats()
                .evicted_for_bytes
                .load(Ordering::Relaxed)
                > 1_900
        );
        assert_eq!(floor.journal_stats().truncated.load(Ordering::Relaxed), 0);
    }
}
