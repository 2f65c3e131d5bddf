//! Records of the calls a dead process left behind. A call's row is built
//! in memory and written at its end; when the process is killed (or
//! crashes) mid-call, only the call's events are on disk. At the next
//! start, before anything else is written, every call with logged events
//! and no row gets one, folded from its events and ended as
//! `interrupted` at the last moment known of it: its last event, or the
//! last write to its recording. A recording is linked with the checksum
//! and length of the file as it was left, so `hotline recordings verify`
//! checks it like any other.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::SystemTime;

use rusqlite::{Connection, OptionalExtension};
use serde::Deserialize;

use super::cdr::{Cdr, CdrBuilder, Disposition, unix_ms};
use crate::events::{Event, ReleasedBy};

/// Only calls with an event this close to the newest logged one can have
/// been live at the end: older ones ended and were expired long ago.
const LIVE_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// The events of the log that make a call's row, as read back (see
/// [`Event`] for their meaning); every other kind is skipped.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Logged {
    CallAdmitted {
        #[serde(default)]
        trunk: String,
        #[serde(default)]
        caller: String,
        #[serde(default)]
        number: String,
    },
    CallAnswered,
    CallEnded {
        released_by: ReleasedBy,
        #[serde(default)]
        answered: bool,
    },
    IvrNodeEntered {
        flow: String,
        node: String,
    },
    CallQueued {
        queue: String,
        #[serde(default)]
        waited_ms: u64,
    },
    CallOffered {
        #[serde(default)]
        agent: String,
        #[serde(default)]
        queue: String,
    },
    CallConnected {
        agent: String,
        queue: String,
        #[serde(default)]
        waited_ms: u64,
        #[serde(default)]
        ring_ms: u64,
        #[serde(default)]
        late: bool,
    },
    HoldStarted {
        #[serde(default)]
        agent: String,
    },
    HoldEnded {
        #[serde(default)]
        agent: String,
        #[serde(default)]
        held_ms: u64,
    },
    CallReleased {
        #[serde(default)]
        agent: String,
        #[serde(default)]
        queue: String,
        released_by: ReleasedBy,
        #[serde(default)]
        talk_ms: u64,
        #[serde(default)]
        holds: u32,
        #[serde(default)]
        hold_ms: u64,
    },
    CallAbandoned {
        queue: String,
        #[serde(default)]
        waited_ms: u64,
    },
    CallOverflowed {
        queue: String,
        #[serde(default)]
        target: String,
        #[serde(default)]
        waited_ms: u64,
    },
    CallbackRequested {
        #[serde(default)]
        queue: String,
        #[serde(default)]
        number: String,
    },
    CallbackCompleted {
        agent: String,
        #[serde(default)]
        number: String,
    },
    CallbackFailed {
        #[serde(default)]
        number: String,
    },
    CallDispositionSet {
        category: String,
        #[serde(default)]
        notes: String,
    },
    CallTransferred {
        #[serde(default)]
        agent: String,
        #[serde(default)]
        from_queue: String,
        #[serde(default)]
        to_queue: String,
        count: u32,
    },
    RecordingStarted {
        path: String,
    },
    RecordingFinished {
        path: String,
        sha256: String,
        duration_ms: u64,
        #[serde(default)]
        bytes: u64,
        #[serde(default)]
        hold_periods: String,
    },
    RecordingFailed {
        path: String,
        #[serde(default)]
        error: String,
    },
    SurveyAnswered {
        #[serde(default)]
        queue: String,
        #[serde(default)]
        agent: String,
        score: u8,
    },
    #[serde(other)]
    Other,
}

impl Logged {
    /// The event as published (fields the row does not use are left
    /// empty).
    fn into_event(self, call_id: &str) -> Option<Event> {
        let call_id = call_id.to_string();
        Some(match self {
            Logged::CallAdmitted {
                trunk,
                caller,
                number,
            } => Event::CallAdmitted {
                call_id,
                trunk,
                caller,
                number,
                source: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
            },
            Logged::CallAnswered => Event::CallAnswered { call_id },
            Logged::CallEnded {
                released_by,
                answered,
            } => Event::CallEnded {
                call_id,
                released_by,
                answered,
            },
            Logged::IvrNodeEntered { flow, node } => Event::IvrNodeEntered {
                call_id,
                flow,
                node,
            },
            Logged::CallQueued { queue, waited_ms } => Event::CallQueued {
                call_id,
                queue,
                waited_ms,
            },
            Logged::CallOffered { agent, queue } => Event::CallOffered {
                call_id,
                agent,
                queue,
                caller: String::new(),
                number: String::new(),
                contacts: 0,
                vars: BTreeMap::new(),
            },
            Logged::CallConnected {
                agent,
                queue,
                waited_ms,
                ring_ms,
                late,
            } => Event::CallConnected {
                call_id,
                agent,
                queue,
                waited_ms,
                ring_ms,
                late,
            },
            Logged::HoldStarted { agent } => Event::HoldStarted {
                call_id,
                agent,
                by: "agent",
            },
            Logged::HoldEnded { agent, held_ms } => Event::HoldEnded {
                call_id,
                agent,
                held_ms,
            },
            Logged::CallReleased {
                agent,
                queue,
                released_by,
                talk_ms,
                holds,
                hold_ms,
            } => Event::CallReleased {
                call_id,
                agent,
                queue,
                released_by,
                talk_ms,
                holds,
                hold_ms,
            },
            Logged::CallAbandoned { queue, waited_ms } => Event::CallAbandoned {
                call_id,
                queue,
                waited_ms,
            },
            Logged::CallOverflowed {
                queue,
                target,
                waited_ms,
            } => Event::CallOverflowed {
                call_id,
                queue,
                reason: "",
                target,
                waited_ms,
            },
            Logged::CallbackRequested { queue, number } => Event::CallbackRequested {
                call_id,
                queue,
                number,
            },
            Logged::CallbackCompleted { agent, number } => Event::CallbackCompleted {
                call_id,
                agent,
                number,
            },
            Logged::CallbackFailed { number } => Event::CallbackFailed {
                call_id,
                number,
                status: None,
            },
            Logged::CallDispositionSet { category, notes } => Event::CallDispositionSet {
                call_id,
                category,
                notes,
            },
            Logged::CallTransferred {
                agent,
                from_queue,
                to_queue,
                count,
            } => Event::CallTransferred {
                call_id,
                agent,
                from_queue,
                to_queue,
                to_agent: None,
                count,
            },
            Logged::RecordingStarted { path } => Event::RecordingStarted { call_id, path },
            Logged::RecordingFinished {
                path,
                sha256,
                duration_ms,
                bytes,
                hold_periods,
            } => Event::RecordingFinished {
                call_id,
                path,
                sha256,
                duration_ms,
                bytes,
                hold_periods,
            },
            Logged::RecordingFailed { path, error } => Event::RecordingFailed {
                call_id,
                path,
                error,
            },
            Logged::SurveyAnswered {
                queue,
                agent,
                score,
            } => Event::SurveyAnswered {
                call_id,
                queue,
                agent,
                score,
            },
            Logged::Other => return None,
        })
    }
}

/// The calls with logged events and no row, near the end of the log.
fn calls_without_a_row(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let newest: Option<i64> = conn
        .query_row("SELECT MAX(at) FROM events", [], |r| r.get(0))
        .optional()?
        .flatten();
    let Some(newest) = newest else {
        return Ok(Vec::new());
    };
    let mut stmt = conn.prepare(
        "SELECT DISTINCT e.call_id FROM events e
         WHERE e.at >= ?1 AND e.call_id IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM cdr c WHERE c.call_id = e.call_id)",
    )?;
    stmt.query_map([newest - LIVE_WINDOW_MS], |r| r.get(0))?
        .collect()
}

/// Folds the logged events of `call_id` into its row: the row of its end
/// when the end was logged (its record was lost, not the call), otherwise
/// the call ended `interrupted` at the last moment known of it.
fn rebuild(conn: &Connection, call_id: &str) -> rusqlite::Result<Option<Cdr>> {
    let mut stmt =
        conn.prepare_cached("SELECT at, json FROM events WHERE call_id = ?1 ORDER BY id")?;
    let mut rows = stmt.query([call_id])?;
    let mut builder = CdrBuilder::new(call_id);
    let mut seen = false;
    while let Some(row) = rows.next()? {
        let at: i64 = row.get(0)?;
        let json: String = row.get(1)?;
        let Some(event) = serde_json::from_str::<Logged>(&json)
            .ok()
            .and_then(|logged| logged.into_event(call_id))
        else {
            continue;
        };
        seen = true;
        if let Some(done) = builder.apply(at, &event) {
            return Ok(Some(done));
        }
    }
    if !seen {
        return Ok(None);
    }
    // The row as the events leave it tells where the recording is.
    let as_logged = builder
        .clone()
        .finish(builder.last_at(), None, Some(Disposition::Interrupted));
    let recording = as_logged
        .recording
        .as_deref()
        .filter(|_| as_logged.recording_sha256.is_none())
        .and_then(|path| left_recording(Path::new(path), as_logged.recording_started_at));
    let ended_at = recording
        .as_ref()
        .map_or(builder.last_at(), |r| r.last_write.max(builder.last_at()));
    let mut cdr = builder.finish(ended_at, None, Some(Disposition::Interrupted));
    if let Some(r) = recording {
        cdr.recording_sha256 = Some(r.sha256);
        cdr.recording_ms = r.duration_ms;
    }
    Ok(Some(cdr))
}

/// A recording as the dead process left it.
struct LeftRecording {
    sha256: String,
    duration_ms: Option<i64>,
    /// Unix ms of the last write that reached it (at most now).
    last_write: i64,
}

/// The checksum and length of the file as it is, and its last write: the
/// last moment known of a quiet bridged call, which logs nothing while its
/// parties talk.
fn left_recording(path: &Path, started_at: Option<i64>) -> Option<LeftRecording> {
    let (sha256, _) = crate::recording::writer::sha256_of(path).ok()?;
    let header = std::fs::File::open(path).ok().and_then(|mut f| {
        let mut bytes = [0u8; 44];
        std::io::Read::read_exact(&mut f, &mut bytes).ok()?;
        crate::recording::wav::parse_header(&bytes)
    });
    let duration_ms = header.and_then(|(channels, rate, _, data)| {
        let frame = u64::from(channels) * 2;
        (frame > 0 && rate > 0)
            .then(|| u64::from(data) / frame * 1000 / u64::from(rate))
            .and_then(|ms| i64::try_from(ms).ok())
    });
    let modified = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map(unix_ms)
        .unwrap_or(0);
    let recorded_until = started_at.zip(duration_ms).map_or(0, |(s, d)| s + d);
    Some(LeftRecording {
        sha256,
        duration_ms,
        last_write: modified.min(unix_ms(SystemTime::now())).max(recorded_until),
    })
}

/// Writes a row for every call the last process left without one; returns
/// how many were written.
pub fn recover(conn: &mut Connection) -> rusqlite::Result<usize> {
    let ids = calls_without_a_row(conn)?;
    if ids.is_empty() {
        return Ok(0);
    }
    let mut cdrs = std::collections::VecDeque::new();
    for call_id in &ids {
        if let Some(cdr) = rebuild(conn, call_id)? {
            cdrs.push_back(cdr);
        }
    }
    let written = cdrs.len();
    super::writer::write_batch(conn, &std::collections::VecDeque::new(), &cdrs)?;
    Ok(written)
}
