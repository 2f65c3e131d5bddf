//! `hotline recordings verify`: every call record that names a finished
//! recording is checked against the file on disk; a file that is missing or
//! whose SHA-256 differs from the one recorded at hang-up is reported.

use std::path::{Path, PathBuf};

use crate::store::StoreError;
use crate::store::schema;

/// Why the check itself could not run.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot read the records of {path}: {source}")]
    Query {
        path: PathBuf,
        source: rusqlite::Error,
    },
}

/// What is wrong with one recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    Missing,
    /// The file's SHA-256 now.
    Modified {
        found: String,
    },
    /// The file is there but cannot be read.
    Unreadable {
        error: String,
    },
}

/// One recording that does not match its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub call_id: String,
    pub path: String,
    pub expected: String,
    pub problem: Problem,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.problem {
            Problem::Missing => write!(f, "MISSING  {} (call {})", self.path, self.call_id),
            Problem::Modified { found } => write!(
                f,
                "MODIFIED {} (call {}): sha256 {found}, recorded {}",
                self.path, self.call_id, self.expected
            ),
            Problem::Unreadable { error } => write!(
                f,
                "UNREADABLE {} (call {}): {error}",
                self.path, self.call_id
            ),
        }
    }
}

/// The outcome of a check.
#[derive(Debug, Default)]
pub struct Report {
    /// Recordings with a checksum that were checked.
    pub checked: usize,
    /// Records naming a recording that never finished (it failed, or the
    /// server stopped during the call): nothing to check them against.
    pub unfinished: usize,
    pub findings: Vec<Finding>,
}

/// Checks every finished recording named in the database at `db`.
pub fn verify(db: &Path) -> Result<Report, VerifyError> {
    let conn = schema::open_for_reading(db)?;
    let query_err = |source| VerifyError::Query {
        path: db.to_path_buf(),
        source,
    };
    let mut stmt = conn
        .prepare(
            "SELECT call_id, recording, recording_sha256 FROM cdr
             WHERE recording IS NOT NULL ORDER BY ended_at, call_id",
        )
        .map_err(query_err)?;
    let mut rows = stmt.query([]).map_err(query_err)?;
    let mut report = Report::default();
    while let Some(row) = rows.next().map_err(query_err)? {
        let call_id: String = row.get(0).map_err(query_err)?;
        let path: String = row.get(1).map_err(query_err)?;
        let Some(expected) = row.get::<_, Option<String>>(2).map_err(query_err)? else {
            report.unfinished += 1;
            continue;
        };
        report.checked += 1;
        let problem = match super::writer::sha256_of(Path::new(&path)) {
            Ok((found, _)) if found.eq_ignore_ascii_case(&expected) => continue,
            Ok((found, _)) => Problem::Modified { found },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Problem::Missing,
            Err(e) => Problem::Unreadable {
                error: e.to_string(),
            },
        };
        report.findings.push(Finding {
            call_id,
            path,
            expected,
            problem,
        });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    fn database(dir: &Path, rows: &[(&str, &Path, Option<String>)]) -> PathBuf {
        let db = dir.join("h.db");
        let conn = schema::open_for_writing(&db, schema::DEFAULT_BUSY_TIMEOUT).unwrap();
        for (n, (call_id, path, sha)) in rows.iter().enumerate() {
            conn.execute(
                "INSERT INTO cdr (call_id, arrived_at, ended_at, disposition, recording, recording_sha256)
                 VALUES (?1, 0, ?2, 'answered', ?3, ?4)",
                rusqlite::params![call_id, n as i64, path.display().to_string(), sha],
            )
            .unwrap();
        }
        conn.execute(
            "INSERT INTO cdr (call_id, arrived_at, ended_at, disposition) VALUES ('ivr', 0, 9, 'ivr')",
            [],
        )
        .unwrap();
        db
    }

    #[test]
    fn matching_files_pass_and_missing_or_changed_ones_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let sha = |bytes: &[u8]| hex::encode(sha2::Sha256::digest(bytes));
        let good = dir.path().join("good.wav");
        let changed = dir.path().join("changed.wav");
        let missing = dir.path().join("missing.wav");
        let failed = dir.path().join("failed.wav");
        std::fs::write(&good, b"RIFF good").unwrap();
        std::fs::write(&changed, b"RIFF original").unwrap();
        let db = database(
            dir.path(),
            &[
                ("a", &good, Some(sha(b"RIFF good"))),
                ("b", &changed, Some(sha(b"RIFF original"))),
                ("c", &missing, Some(sha(b"gone"))),
                ("d", &failed, None),
            ],
        );
        let report = verify(&db).unwrap();
        assert_eq!(report.findings.len(), 1, "{:?}", report.findings);
        assert_eq!(report.findings[0].problem, Problem::Missing);
        assert_eq!(report.findings[0].call_id, "c");
        assert_eq!(report.checked, 3);
        assert_eq!(report.unfinished, 1);

        // One byte flipped.
        let mut bytes = std::fs::read(&changed).unwrap();
        bytes[5] ^= 1;
        std::fs::write(&changed, &bytes).unwrap();
        let report = verify(&db).unwrap();
        assert_eq!(report.findings.len(), 2);
        let modified = &report.findings[0];
        assert_eq!(modified.call_id, "b");
        assert_eq!(modified.problem, Problem::Modified { found: sha(&bytes) });
        let line = modified.to_string();
        assert!(
            line.contains("changed.wav") && line.contains("MODIFIED"),
            "{line}"
        );
        assert!(report.findings[1].to_string().contains("missing.wav"));
    }

    #[test]
    fn a_missing_database_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = verify(&dir.path().join("none.db")).unwrap_err();
        assert!(err.to_string().contains("none.db"), "{err}");
    }
}
