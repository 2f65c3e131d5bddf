//! The writer thread: the only connection that writes. It folds events into
//! call records and writes batches, one transaction each, every
//! `batch_interval` or as soon as `batch_rows` rows wait. A batch that
//! cannot be written stays pending and is tried again at the next interval.

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
use crate::events::Stamped;

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
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            batch_interval: Duration::from_secs(1),
            batch_rows: 1_000,
            max_pending: 100_000,
            busy_timeout: super::schema::DEFAULT_BUSY_TIMEOUT,
        }
    }
}

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
        }
    }

    /// Runs until told to close or every sender is gone, then writes what
    /// is left.
    pub(super) fn run(mut self, inbox: Receiver<Msg>) {
        let interval = self.options.batch_interval;
        let mut next_write = Instant::now() + interval;
        let mut next_stale_check = Instant::now() + STALE_CHECK_EVERY;
        loop {
            let now = Instant::now();
            let received = if now >= next_write {
                Err(RecvTimeoutError::Timeout)
            } else {
                inbox.recv_timeout(next_write - now)
            };
            match received {
                Ok(Msg::Event(stamped)) => {
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

    /// Queues the event's row and, when it ends a call, the call's record.
    fn accept(&mut self, stamped: &Stamped) {
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
                if self.failing {
                    info!(path = %self.path.display(), rows, "the call database is writable again");
                    self.failing = false;
                }
                true
            }
            Err(e) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
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
                survey_score)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,
                ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30)
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
            ])?;
            if inserted == 0 {
                duplicates.push(c.call_id.clone());
            }
        }
    }
    tx.commit()?;
    Ok(duplicates)
}
