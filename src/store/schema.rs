//! The database file: opening it with hotline's settings, and the versioned
//! schema (`PRAGMA user_version`), migrated forward at open.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::StoreError;

/// Each migration, in order: `MIGRATIONS[0]` takes an empty database to
/// version 1. A database newer than `MIGRATIONS.len()` is refused.
const MIGRATIONS: &[&str] = &[
    // 1: call detail records and the event log.
    "CREATE TABLE cdr (
        call_id         TEXT PRIMARY KEY NOT NULL,
        trunk           TEXT,
        caller          TEXT,
        dialed          TEXT,
        ivr_path        TEXT,
        queue           TEXT,
        agent           TEXT,
        arrived_at      INTEGER NOT NULL,
        queued_at       INTEGER,
        offered_at      INTEGER,
        answered_at     INTEGER,
        ended_at        INTEGER NOT NULL,
        waited_ms       INTEGER NOT NULL DEFAULT 0,
        ring_attempts   INTEGER NOT NULL DEFAULT 0,
        talk_ms         INTEGER NOT NULL DEFAULT 0,
        hold_count      INTEGER NOT NULL DEFAULT 0,
        hold_ms         INTEGER NOT NULL DEFAULT 0,
        longest_hold_ms INTEGER NOT NULL DEFAULT 0,
        transfers       INTEGER NOT NULL DEFAULT 0,
        released_by     TEXT,
        disposition     TEXT NOT NULL,
        late_answer     INTEGER NOT NULL DEFAULT 0,
        recording       TEXT,
        category        TEXT,
        notes           TEXT
    );
    CREATE INDEX cdr_ended_at ON cdr(ended_at);
    CREATE TABLE events (
        id      INTEGER PRIMARY KEY,
        at      INTEGER NOT NULL,
        call_id TEXT,
        type    TEXT NOT NULL,
        json    TEXT NOT NULL
    );
    CREATE INDEX events_call_id ON events(call_id);",
    // 2: the recording of a call (rulebook Q1): `recording` (the file) is
    // joined by its start, checksum, length and hold periods.
    "ALTER TABLE cdr ADD COLUMN recording_started_at INTEGER;
    ALTER TABLE cdr ADD COLUMN recording_sha256 TEXT;
    ALTER TABLE cdr ADD COLUMN recording_ms INTEGER;
    ALTER TABLE cdr ADD COLUMN hold_periods TEXT;
    CREATE INDEX cdr_recording ON cdr(recording_started_at) WHERE recording IS NOT NULL;",
    // 3: the post-call survey's score (rulebook Q3).
    "ALTER TABLE cdr ADD COLUMN survey_score INTEGER;",
    // 4: events by time, for the retention sweep and the crash recovery.
    "CREATE INDEX events_at ON events(at);",
    // 5: why hotline ended a call whose end never came (a lost BYE): the
    // reason of its `call_expired` event.
    "ALTER TABLE cdr ADD COLUMN end_reason TEXT;",
];

/// The schema version this hotline writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// How long a statement waits for another connection's lock (an export, a
/// backup) before it fails with "database is locked".
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens (creating if need be) the database for writing and migrates it to
/// [`SCHEMA_VERSION`].
pub fn open_for_writing(path: &Path, busy_timeout: Duration) -> Result<Connection, StoreError> {
    let open_err = |source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
    conn.busy_timeout(busy_timeout).map_err(open_err)?;
    // WAL: readers (an export) never block the writer nor the writer them.
    // synchronous=NORMAL: a commit is not fsynced, only each checkpoint is.
    // That survives any crash of the process (the WAL is in the OS's
    // hands); a power loss or OS crash may lose the last transactions,
    // never corrupt the file. FULL would fsync every batch.
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(open_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(path = %path.display(), %mode, "the database would not switch to WAL");
    }
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(open_err)?;
    migrate(&mut conn, path)?;
    Ok(conn)
}

/// Opens an existing database for reading only, checking its schema.
pub fn open_for_reading(path: &Path) -> Result<Connection, StoreError> {
    if !path.is_file() {
        return Err(StoreError::NotFound {
            path: path.to_path_buf(),
        });
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let read_err = |source| StoreError::Read {
        path: path.to_path_buf(),
        source,
    };
    let conn = Connection::open_with_flags(path, flags).map_err(read_err)?;
    conn.busy_timeout(DEFAULT_BUSY_TIMEOUT).map_err(read_err)?;
    let version = user_version(&conn).map_err(read_err)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found: version,
            known: SCHEMA_VERSION,
        });
    }
    if version < 1 {
        return Err(StoreError::NotHotline {
            path: path.to_path_buf(),
        });
    }
    Ok(conn)
}

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

/// Applies the migrations the database lacks, each in its own transaction
/// with its version; refuses a database newer than this code.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let found = user_version(conn).map_err(|source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found,
            known: SCHEMA_VERSION,
        });
    }
    for (version, sql) in (1..)
        .zip(MIGRATIONS)
        .skip(usize::try_from(found).unwrap_or(0))
    {
        let migrate_err = |source| StoreError::Migrate {
            path: path.to_path_buf(),
            version,
            source,
        };
        let tx = conn.transaction().map_err(migrate_err)?;
        tx.execute_batch(sql).map_err(migrate_err)?;
        tx.pragma_update(None, "user_version", version)
            .map_err(migrate_err)?;
        tx.commit().map_err(migrate_err)?;
        tracing::info!(path = %path.display(), version, "database schema migrated");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_database_gets_the_current_schema_and_wal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.db");
        let conn = open_for_writing(&path, DEFAULT_BUSY_TIMEOUT).unwrap();
        assert_eq!(user_version(&conn).unwrap(), SCHEMA_VERSION);
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 1, "NORMAL");
        drop(conn);
        // Opening again migrates nothing and keeps the version.
        let conn = open_for_writing(&path, DEFAULT_BUSY_TIMEOUT).unwrap();
        assert_eq!(user_version(&conn).unwrap(), SCHEMA_VERSION);
        drop(conn);
        open_for_reading(&path).unwrap();
    }

    #[test]
    fn a_version_1_database_is_migrated_keeping_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO cdr (call_id, arrived_at, ended_at, disposition) VALUES ('old', 1, 2, 'ivr')",
            [],
        )
        .unwrap();
        drop(conn);
        let conn = open_for_writing(&path, DEFAULT_BUSY_TIMEOUT).unwrap();
        assert_eq!(user_version(&conn).unwrap(), SCHEMA_VERSION);
        let row: (String, Option<String>, Option<String>, Option<i64>) = conn
            .query_row(
                "SELECT call_id, recording_sha256, hold_periods, survey_score FROM cdr",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(row, ("old".to_string(), None, None, None));
    }

    #[test]
    fn a_newer_schema_is_refused_for_writing_and_reading() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.db");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(conn);
        for result in [
            open_for_writing(&path, DEFAULT_BUSY_TIMEOUT).map(drop),
            open_for_reading(&path).map(drop),
        ] {
            let err = result.unwrap_err();
            assert!(matches!(err, StoreError::TooNew { found, .. } if found == SCHEMA_VERSION + 1));
            let text = err.to_string();
            assert!(text.contains("h.db"), "{text}");
            assert!(text.contains("newer"), "{text}");
        }
    }

    #[test]
    fn reading_needs_an_existing_hotline_database() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.db");
        assert!(matches!(
            open_for_reading(&missing),
            Err(StoreError::NotFound { .. })
        ));
        assert!(!missing.exists(), "reading created the file");
        let other = dir.path().join("other.db");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE t (x)")
            .unwrap();
        let err = open_for_reading(&other).unwrap_err();
        assert!(matches!(err, StoreError::NotHotline { .. }), "{err}");
    }
}
