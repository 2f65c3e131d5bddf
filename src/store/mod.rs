//! The store: call detail records and the event log in an embedded SQLite
//! database.
//!
//! Owns the database file (`store.path`) and everything written to it. The
//! store follows the event bus losslessly: the publisher hands each event
//! to a dedicated writer thread through a channel, counted in the store's
//! [`Backlog`] (whose depth the SIP edge watches to refuse new calls before
//! the store could fall behind for good); the thread folds
//! the events of each call into its record ([`cdr::CdrBuilder`]) and writes
//! batches in one transaction every `store.batch_interval`. Nothing on the
//! call path waits for the disk. [`Store::close`] writes everything accepted
//! before the process exits; after a crash, the calls that ended more than
//! one interval earlier are on disk, and the calls that were live get their
//! records at the next start ([`recover`]).
//!
//! Reading (`hotline cdr export`) is in [`export`]; it works while the
//! server writes (WAL).

pub mod cdr;
pub mod export;
pub mod recover;
pub mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::error;

pub use cdr::{Cdr, CdrBuilder, Disposition};
pub use writer::{Retention, WriterOptions};

use crate::config::StoreSettings;
use crate::events::{Attachment, Backlog, EventBus, Stamped};
use writer::{Msg, Writer};

/// What went wrong with the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "the database {path} has schema version {found}, newer than this hotline knows ({known}): run a newer hotline or use another file"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("cannot migrate the database {path} to schema version {version}: {source}")]
    Migrate {
        path: PathBuf,
        version: i64,
        source: rusqlite::Error,
    },
    #[error(
        "no database at {path} (give the file with --db, or the server's --config for its store.path)"
    )]
    NotFound { path: PathBuf },
    #[error("{path} is not a hotline database (it has no hotline schema)")]
    NotHotline { path: PathBuf },
    #[error("cannot read the database {path}: {source}")]
    Read {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot write the records of the calls the last run left live in {path}: {source}")]
    Recover {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot start the store's writer thread: {0}")]
    Thread(std::io::Error),
}

/// Counters of the store, shared with whoever reports on it.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Failed writes, events lost before they reached the store, and rows
    /// dropped (over the pending cap, or unwritable at close).
    pub errors: AtomicU64,
    /// Events handed to the writer thread and not yet taken by it.
    pub queue: Arc<Backlog>,
    /// Rows committed: events and call records.
    pub rows_written: AtomicU64,
    /// Rows accepted and not yet committed.
    pub pending: AtomicU64,
    /// Calls left without a record by a dead process and recovered at start.
    pub recovered: AtomicU64,
    /// Batches that could not be written (a full disk, a lock, I/O).
    pub write_failures: AtomicU64,
    /// The last write failed: rows wait in memory (an alarm).
    pub failing: std::sync::atomic::AtomicBool,
    /// Rows dropped over `store.max_pending` while the database could not
    /// be written.
    pub rows_dropped: AtomicU64,
    /// Refusals counted and not stored (over `store.refusals_per_second`).
    pub refusals_unsampled: AtomicU64,
    /// Rows deleted past their retention.
    pub events_expired: AtomicU64,
    pub cdrs_expired: AtomicU64,
}

/// The handle of a running store. Dropping it without [`Store::close`]
/// still lets the writer finish in the background, unawaited.
pub struct Store {
    path: PathBuf,
    stats: Arc<StoreStats>,
    inbox: std::sync::mpsc::Sender<Msg>,
    writer: Option<std::thread::JoinHandle<()>>,
    attachment: Option<Attachment>,
}

impl Store {
    /// Opens (creating and migrating) the database at `path` and starts its
    /// writer thread. Events are handed over with [`Store::record`] or, from
    /// the bus, with [`Store::follow`].
    pub fn open(path: &Path, options: WriterOptions) -> Result<Store, StoreError> {
        let mut conn = schema::open_for_writing(path, options.busy_timeout)?;
        let stats = Arc::new(StoreStats::default());
        match recover::recover(&mut conn) {
            Ok(0) => {}
            Ok(calls) => {
                stats.recovered.store(calls as u64, Ordering::Relaxed);
                tracing::warn!(
                    path = %path.display(),
                    calls,
                    "calls live when the last run died got their records, as interrupted"
                );
            }
            // A full disk must not keep hotline from taking calls: the
            // rows are still missing, the next start tries again.
            Err(source) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                let e = StoreError::Recover {
                    path: path.to_path_buf(),
                    source,
                };
                error!(error = %e, "the calls of the last run stay without records for now");
            }
        }
        let (inbox, messages) = std::sync::mpsc::channel();
        let writer = Writer::new(conn, path.to_path_buf(), stats.clone(), options);
        let thread = std::thread::Builder::new()
            .name("hotline-store".into())
            .spawn(move || writer.run(messages))
            .map_err(StoreError::Thread)?;
        Ok(Store {
            path: path.to_path_buf(),
            stats,
            inbox,
            writer: Some(thread),
            attachment: None,
        })
    }

    /// Opens the store described by `[store]` and records every event
    /// published on `bus` from now on.
    pub fn start(settings: &StoreSettings, bus: &EventBus) -> Result<Store, StoreError> {
        let options = WriterOptions {
            batch_interval: settings.batch_interval,
            max_pending: settings.max_pending,
            refusals_per_second: settings.refusals_per_second,
            retention: Retention {
                events: settings.retention_events,
                cdrs: settings.retention_cdrs,
                sweep_every: settings.retention_sweep_interval,
            },
            ..WriterOptions::default()
        };
        let mut store = Store::open(&settings.path, options)?;
        store.follow(bus);
        Ok(store)
    }

    /// Follows `bus` from now on, losing nothing: the publisher hands each
    /// event to the writer thread.
    pub fn follow(&mut self, bus: &EventBus) {
        let inbox = self.inbox.clone();
        let stats = self.stats.clone();
        let attachment = bus.attach("store", stats.queue.clone(), move |stamped| {
            hand_over(&stats, &inbox, stamped.clone());
        });
        self.attachment = Some(attachment);
    }

    /// Hands one event to the writer; never blocks.
    pub fn record(&self, stamped: Stamped) {
        hand_over(&self.stats, &self.inbox, stamped);
    }

    /// The store's counters.
    pub fn stats(&self) -> Arc<StoreStats> {
        self.stats.clone()
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes the events already published, writes everything accepted and
    /// stops the writer thread.
    pub async fn close(mut self) {
        // Everything published before this is already in the channel.
        drop(self.attachment.take());
        let _ = self.inbox.send(Msg::Close);
        if let Some(thread) = self.writer.take() {
            match tokio::task::spawn_blocking(move || thread.join()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => error!("the store's writer thread panicked"),
                Err(e) => error!(error = %e, "cannot wait for the store's writer thread"),
            }
        }
        tracing::info!(
            path = %self.path.display(),
            rows = self.stats.rows_written.load(Ordering::Relaxed),
            errors = self.stats.errors.load(Ordering::Relaxed),
            "store closed"
        );
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        drop(self.attachment.take());
        if self.writer.is_some() {
            let _ = self.inbox.send(Msg::Close);
        }
    }
}

/// Queues one event for the writer, counted in the store's queue; past its
/// capacity the event is lost and counted as an error (which the door's
/// shedding keeps from happening).
fn hand_over(stats: &StoreStats, inbox: &std::sync::mpsc::Sender<Msg>, stamped: Stamped) {
    let queue = &stats.queue;
    // Fails only once the writer has stopped, i.e. after close.
    let queued = queue.hand_over(|| inbox.send(Msg::Event(Box::new(stamped))).is_ok());
    if !queued {
        stats.errors.fetch_add(1, Ordering::Relaxed);
        let lost = queue.lost();
        // Logged at 1, 2, 4, 8, ... lost: an alarm, not a flood.
        if lost.is_power_of_two() {
            error!(
                lost,
                capacity = queue.capacity(),
                "the store's queue is full: events lost, their calls' records may be incomplete"
            );
        }
    }
}

#[cfg(test)]
mod tests;
