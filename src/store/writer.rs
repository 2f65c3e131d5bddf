//! The writer thread: the only connection that writes. It folds events into
//! call records and writes batches, one transaction each, every
//! `batch_interval` or as soon as `batch_rows` rows wait. A batch that
//! cannot be written (a full disk, a lock) stays pending, raises the alarm
//! (`StoreStats::failing`) and is tried again at the next interval; only
//! past `max_pending` rows are the oldest events, then the oldest records,
//! dropped (and counted).
//!
//! Refusals (INVITEs refused before admission, failed authentications)
//! are written at most `refusals_per_second` a second: a flood from the
//! network is counted, not stored row by row. The retention sweep deletes
//! events and records older than `store.retention` at start and then
//! periodically.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime};

use rusqlite::{Connection, TransactionBehavior, params};
use tracing::{error, info, warn};

use super::StoreStats;
use super::cdr::{Assembler, Cdr, call_id_of, unix_ms};
use crate::events::{Event, Stamped};

/// How the writer batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterOptions {
    /// Longest time an accepted row waits before its batch is written.
    pub batch_interval: Duration,
    /// A batch is written as soon as this many rows (events and CDRs) wait.
    pub batch_rows: usize,
    /// Most rows kept while the database cannot be written; past it the
    /// oldest events (then the oldest CDRs) are dropped and counted as
    /// errors.
    pub max_pending: usize,
    /// How long a write waits for a lock held by another connection.
    pub busy_timeout: Duration,
    /// Refusals (rejected INVITEs, failed authentications) stored per
    /// second at most; the others are only counted.
    pub refusals_per_second: u32,
    /// What is kept how long.
    pub retention: Retention,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            batch_interval: Duration::from_secs(1),
            batch_rows: 1_000,
            max_pending: 100_000,
            busy_timeout: super::schema::DEFAULT_BUSY_TIMEOUT,
            refusals_per_second: 10,
            retention: Retention::default(),
        }
    }
}

/// How long rows are kept (`None`: forever) and how often the old ones are
/// deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub events: Option<Duration>,
    pub cdrs: Option<Duration>,
    pub sweep_every: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            events: Some(Duration::from_secs(90 * 24 * 3600)),
            cdrs: None,
            sweep_every: Duration::from_secs(3600),
        }
    }
}

/// Rows deleted by one retention sweep in one transaction, so that the
/// sweep never holds the write lock long.
const SWEEP_CHUNK: i64 = 5_000;

/// A call in progress with no event for this long lost its end (events
/// lost by a lagging subscriber): its row is written as it stands.
const STALE_CALL: Duration = Duration::from_secs(24 * 3600);
/// How often the calls in progress are checked for staleness.
const STALE_CHECK_EVERY: Duration = Duration::from_secs(60);
/// Attempts to write what is left when the store closes (each may wait the
/// busy timeout: the stop stays within a service manager's patience).
const CLOSE_ATTEMPTS: u32 = 2;

/// What the writer thread is sent.
pub(super) enum Msg {
    Event(Box<Stamped>),
    /// Write everything accepted and stop.
    Close,
}

pub(super) struct EventRow {
    at: i64,
    call_id: Option<String>,
    kind: String,
    json: String,
}

pub(super) struct Writer {
    conn: Connection,
    path: PathBuf,
    stats: Arc<StoreStats>,
    options: WriterOptions,
    assembler: Assembler,
    events: VecDeque<EventRow>,
    cdrs: VecDeque<Cdr>,
    /// The last write failed: retry at the interval only.
    failing: bool,
    /// Rows dropped over the cap since it was last reported.
    dropped: u64,
    /// The second of the refusals counted and how many were stored in it.
    refusal_window: (Option<Instant>, u32),
}

impl Writer {
    pub(super) fn new(
        conn: Connection,
        path: PathBuf,
        stats: Arc<StoreStats>,
        options: WriterOptions,
    ) -> Writer {
        Writer {
            conn,
            path,
            stats,
            options,
            assembler: Assembler::default(),
            events: VecDeque::new(),
            cdrs: VecDeque::new(),
            failing: false,
            dropped: 0,
            refusal_window: (None, 0),
        }
    }

    /// Runs until told to close or every sender is gone, then writes what
    /// is left.
    pub(super) fn run(mut self, inbox: Receiver<Msg>) {
        let interval = self.options.batch_interval;
        let mut next_write = Instant::now() + interval;
        let mut next_stale_check = Instant::now() + STALE_CHECK_EVERY;
        self.sweep_retention();
        let mut next_sweep = Instant::now() + self.options.retention.sweep_every;
        loop {
            let now = Instant::now();
            let received = if now >= next_write {
                Err(RecvTimeoutError::Timeout)
            } else {
                inbox.recv_timeout(next_write - now)
            };
            match received {
                Ok(Msg::Event(stamped)) => {
                    self.stats.queue.taken();
                    self.accept(&stamped);
                    if !self.failing && self.pending() >= self.options.batch_rows {
                        self.write();
                    }
                }
                Ok(Msg::Close) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    if now >= next_stale_check {
                        self.expire_stale();
                        next_stale_check = now + STALE_CHECK_EVERY;
                    }
                    if now >= next_sweep {
                        self.sweep_retention();
                        next_sweep = Instant::now() + self.options.retention.sweep_every;
                    }
                    self.write();
                    next_write = Instant::now() + interval;
                }
            }
        }
        self.close();
    }

    fn pending(&self) -> usize {
        self.events.len() + self.cdrs.len()
    }

    fn update_pending(&self) {
        self.stats
            .pending
            .store(self.pending() as u64, Ordering::Relaxed);
    }

    /// Whether a refusal may be stored now: `refusals_per_second` in each
    /// second, counted from the first refusal of the second.
    fn sample_refusal(&mut self, now: Instant) -> bool {
        let (start, stored) = &mut self.refusal_window;
        if start.is_none_or(|s| now.saturating_duration_since(s) >= Duration::from_secs(1)) {
            *start = Some(now);
            *stored = 0;
        }
        if *stored < self.options.refusals_per_second {
            *stored += 1;
            true
        } else {
            false
        }
    }

    /// Queues the event's row and, when it ends a call, the call's record.
    fn accept(&mut self, stamped: &Stamped) {
        let refusal = matches!(
            stamped.event,
            Event::CallRejected { .. } | Event::AuthFailed { .. }
        );
        if refusal && !self.sample_refusal(Instant::now()) {
            self.stats
                .refusals_unsampled
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        match serde_json::to_value(stamped) {
            Ok(value) => {
                let kind = value
                    .get("type")
                    .and_then(|t| t.as_str())
                    .unwrap_or("unknown")
                    .to_string();
                self.events.push_back(EventRow {
                    at: unix_ms(stamped.at),
                    call_id: call_id_of(&stamped.event).map(str::to_string),
                    kind,
                    json: value.to_string(),
                });
            }
            Err(e) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                self.stats.write_failures.fetch_add(1, Ordering::Relaxed);
                self.stats.failing.store(true, Ordering::Relaxed);
                error!(error = %e, "an event could not be serialized for the store");
            }
        }
        if let Some(cdr) = self.assembler.fold(stamped) {
            self.cdrs.push_back(cdr);
        }
        self.enforce_cap();
        self.update_pending();
    }

    fn enforce_cap(&mut self) {
        while self.pending() > self.options.max_pending {
            if self.events.pop_front().is_none() {
                self.cdrs.pop_front();
            }
            self.dropped += 1;
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            self.stats.rows_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Deletes the events and records older than their retention, a chunk
    /// per transaction; a failure is logged and tried at the next sweep.
    fn sweep_retention(&mut self) {
        let retention = self.options.retention;
        let now = SystemTime::now();
        let tables = [
            ("events", "at", retention.events, &self.stats.events_expired),
            ("cdr", "ended_at", retention.cdrs, &self.stats.cdrs_expired),
        ];
        for (table, column, keep, expired) in tables {
            let Some(keep) = keep else {
                continue;
            };
            let Some(before) = now.checked_sub(keep) else {
                continue;
            };
            match delete_older(&self.conn, table, column, unix_ms(before)) {
                Ok(0) => {}
                Ok(rows) => {
                    expired.fetch_add(rows, Ordering::Relaxed);
                    info!(
                        table,
                        rows,
                        kept_days = keep.as_secs() / 86_400,
                        "rows past their retention deleted"
                    );
                }
                Err(e) => {
                    warn!(path = %self.path.display(), table, error = %e, "the retention sweep failed; it is tried again later");
                }
            }
        }
    }

    fn expire_stale(&mut self) {
        let older_than = unix_ms(SystemTime::now() - STALE_CALL);
        let stale = self.assembler.expire(older_than);
        if !stale.is_empty() {
            warn!(
                calls = stale.len(),
                "calls silent for 24 h: their end was never seen, their records are written as they stand"
            );
            self.cdrs.extend(stale);
            self.enforce_cap();
            self.update_pending();
        }
    }

    /// Writes every pending row in one transaction; on failure they stay.
    fn write(&mut self) -> bool {
        if self.dropped > 0 {
            error!(
                path = %self.path.display(),
                dropped = self.dropped,
                cap = self.options.max_pending,
                "the call database has been unwritable too long: rows over the cap were dropped"
            );
            self.dropped = 0;
        }
        if self.pending() == 0 {
            return true;
        }
        match write_batch(&mut self.conn, &self.events, &self.cdrs) {
            Ok(duplicates) => {
                for call_id in duplicates {
                    warn!(%call_id, "a call with this Call-ID is already recorded: the new record was not written");
                }
                let rows = self.pending() as u64;
                self.events.clear();
                self.cdrs.clear();
                self.stats.rows_written.fetch_add(rows, Ordering::Relaxed);
                self.update_pending();
                self.stats.failing.store(false, Ordering::Relaxed);
                if self.failing {
                    info!(path = %self.path.display(), rows, "the call database is writable again");
                    self.failing = false;
                }
                true
            }
            Err(e) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                self.stats.write_failures.fetch_add(1, Ordering::Relaxed);
                self.stats.failing.store(true, Ordering::Relaxed);
                error!(
                    path = %self.path.display(),
                    error = %e,
                    pending = self.pending(),
                    "cannot write to the call database; the batch is kept and retried"
                );
                self.failing = true;
                false
            }
        }
    }

    fn close(&mut self) {
        let mut attempt = 1;
        while !self.write() && attempt < CLOSE_ATTEMPTS {
            attempt += 1;
            std::thread::sleep(Duration::from_millis(200));
        }
        let lost = self.pending();
        if lost > 0 {
            self.stats.errors.fetch_add(lost as u64, Ordering::Relaxed);
            error!(path = %self.path.display(), rows = lost, "the store closed with rows it could not write");
        }
        if !self.assembler.is_empty() {
            info!(
                calls = self.assembler.len(),
                "calls still in progress when the store closed: their events are stored, they have no record"
            );
        }
    }
}

/// Deletes the rows of `table` whose `column` is before `before` (unix
/// ms), [`SWEEP_CHUNK`] per transaction; returns how many.
fn delete_older(
    conn: &Connection,
    table: &str,
    column: &str,
    before: i64,
) -> rusqlite::Result<u64> {
    let sql = format!(
        "DELETE FROM {table} WHERE rowid IN
            (SELECT rowid FROM {table} WHERE {column} < ?1 LIMIT ?2)"
    );
    let mut total = 0u64;
    loop {
        let deleted = conn.execute(&sql, params![before, SWEEP_CHUNK])?;
        total += deleted as u64;
        if (deleted as i64) < SWEEP_CHUNK {
            return Ok(total);
        }
    }
}

/// One transaction: the events, then the records. Returns the Call-IDs
/// whose record already existed.
pub(super) fn write_batch(
    conn: &mut Connection,
    events: &VecDeque<EventRow>,
    cdrs: &VecDeque<Cdr>,
) -> rusqlite::Result<Vec<String>> {
    // IMMEDIATE takes the write lock at BEGIN, so a busy database fails
    // (after the busy timeout) before any work.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut duplicates = Vec::new();
    {
        let mut insert_event = tx.prepare_cached(
            "INSERT INTO events (at, call_id, type, json) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for e in events {
            insert_event.execute(params![e.at, e.call_id, e.kind, e.json])?;
        }
        let mut insert_cdr = tx.prepare_cached(
            "INSERT INTO cdr (call_id, trunk, caller, dialed, ivr_path, queue, agent,
                arrived_at, queued_at, offered_at, answered_at, ended_at, waited_ms,
                ring_attempts, talk_ms, hold_count, hold_ms, longest_hold_ms, transfers,
                released_by, disposition, late_answer, recording, category, notes,
                recording_started_at, recording_sha256, recording_ms, hold_periods,
                survey_score, end_reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,
                ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30,
                ?31)
             ON CONFLICT (call_id) DO NOTHING",
        )?;
        for c in cdrs {
            let inserted = insert_cdr.execute(params![
                c.call_id,
                c.trunk,
                c.caller,
                c.dialed,
                c.ivr_path,
                c.queue,
                c.agent,
                c.arrived_at,
                c.queued_at,
                c.offered_at,
                c.answered_at,
                c.ended_at,
                c.waited_ms,
                c.ring_attempts,
                c.talk_ms,
                c.hold_count,
                c.hold_ms,
                c.longest_hold_ms,
                c.transfers,
                c.released_by,
                c.disposition.as_str(),
                c.late_answer,
                c.recording,
                c.category,
                c.notes,
                c.recording_started_at,
                c.recording_sha256,
                c.recording_ms,
                c.hold_periods,
                c.survey_score,
                c.end_reason,
            ])?;
            if inserted == 0 {
                duplicates.push(c.call_id.clone());
            }
        }
    }
    tx.commit()?;
    Ok(duplicates)
}
