//! The recordings' writer thread: the only code that touches recording
//! files. Call actors hand it filled buffers over an unbounded channel and
//! never wait for it; it appends them, keeps each header up to date,
//! finalises a file at hang-up (sync, SHA-256) and publishes the recording
//! events. A write error ends that recording only (the file stays as it is)
//! and is published as `RecordingFailed`.

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, OnceLock};

use sha2::{Digest, Sha256};
use tracing::{error, info};

use super::wav::{HEADER_LEN, SAMPLE_RATE, WavFile};
use crate::events::{Event, EventBus};

/// What a call's recording asks of the writer.
pub enum Job {
    Open {
        id: u64,
        call_id: String,
        /// The path wanted; a file already there gets a `-2`, `-3`... sibling.
        path: PathBuf,
        channels: u16,
        bus: EventBus,
        /// Set when the recording failed: the call stops feeding it.
        failed: Arc<AtomicBool>,
        /// Buffers go back here once written, to be filled again.
        returns: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
    },
    Write {
        id: u64,
        data: Vec<u8>,
        /// Zero bytes after `data` (a stretch nobody spoke in).
        silence: u64,
    },
    Finish {
        id: u64,
        hold_periods: String,
        /// Told once the file is final and its events are published.
        done: tokio::sync::oneshot::Sender<()>,
    },
}

struct Open {
    call_id: String,
    path: PathBuf,
    wav: WavFile,
    bus: EventBus,
    failed: Arc<AtomicBool>,
    returns: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
}

/// The one writer thread of the process, started on first use; `None` if
/// it cannot be started.
pub fn jobs() -> Option<&'static Sender<Job>> {
    static JOBS: OnceLock<Option<Sender<Job>>> = OnceLock::new();
    JOBS.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        match std::thread::Builder::new()
            .name("hotline-recorder".into())
            .spawn(move || run(rx))
        {
            Ok(_) => Some(tx),
            Err(e) => {
                error!(error = %e, "cannot start the recordings' writer thread: nothing is recorded");
                None
            }
        }
    })
    .as_ref()
}

/// Serves jobs until every sender is gone.
pub fn run(jobs: Receiver<Job>) {
    let mut open: HashMap<u64, Open> = HashMap::new();
    while let Ok(job) = jobs.recv() {
        match job {
            Job::Open {
                id,
                call_id,
                path,
                channels,
                bus,
                failed,
                returns,
            } => match create(&path, channels) {
                Ok((path, wav)) => {
                    info!(%call_id, path = %path.display(), "recording");
                    bus.publish(Event::RecordingStarted {
                        call_id: call_id.clone(),
                        path: path.display().to_string(),
                    });
                    open.insert(
                        id,
                        Open {
                            call_id,
                            path,
                            wav,
                            bus,
                            failed,
                            returns,
                        },
                    );
                }
                Err(e) => {
                    failed.store(true, Ordering::Release);
                    alarm(&bus, &call_id, &path, &e);
                }
            },
            Job::Write { id, data, silence } => {
                let Some(rec) = open.get_mut(&id) else {
                    continue;
                };
                let result = rec.wav.append(&data, silence);
                let _ = rec.returns.send(data);
                if let Err(e) = result
                    && let Some(rec) = open.remove(&id)
                {
                    rec.failed.store(true, Ordering::Release);
                    alarm(&rec.bus, &rec.call_id, &rec.path, &e);
                }
            }
            Job::Finish {
                id,
                hold_periods,
                done,
            } => {
                if let Some(rec) = open.remove(&id) {
                    finish(rec, hold_periods);
                }
                let _ = done.send(());
            }
        }
    }
}

/// Creates the file (and its day directory); never replaces a file.
fn create(path: &Path, channels: u16) -> io::Result<(PathBuf, WavFile)> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut candidate = path.to_path_buf();
    for n in 2..=100 {
        match WavFile::create(&candidate, channels) {
            Ok(wav) => return Ok((candidate, wav)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let stem = path.file_stem().unwrap_or_default().to_string_lossy();
                candidate = path.with_file_name(format!("{stem}-{n}.wav"));
            }
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "a hundred recordings of this call id exist already",
    ))
}

fn finish(rec: Open, hold_periods: String) {
    let channels = u64::from(rec.wav.channels());
    let finished = rec.wav.finish().and_then(|data_len| {
        // The directory entry of a new file is durable only once its
        // directory is synced.
        if let Some(dir) = rec.path.parent()
            && let Ok(dir) = std::fs::File::open(dir)
        {
            let _ = dir.sync_all();
        }
        let (sha256, bytes) = sha256_of(&rec.path)?;
        Ok((data_len, sha256, bytes))
    });
    match finished {
        Ok((data_len, sha256, bytes)) => {
            let frames = data_len / (channels * 2);
            let duration_ms = frames * 1000 / u64::from(SAMPLE_RATE);
            info!(call_id = %rec.call_id, path = %rec.path.display(), duration_ms, bytes, "recording finished");
            rec.bus.publish(Event::RecordingFinished {
                call_id: rec.call_id,
                path: rec.path.display().to_string(),
                sha256,
                duration_ms,
                bytes,
                hold_periods,
            });
        }
        Err(e) => {
            rec.failed.store(true, Ordering::Release);
            alarm(&rec.bus, &rec.call_id, &rec.path, &e);
        }
    }
}

fn alarm(bus: &EventBus, call_id: &str, path: &Path, e: &io::Error) {
    error!(%call_id, path = %path.display(), error = %e, "recording failed: the call goes on unrecorded");
    bus.publish(Event::RecordingFailed {
        call_id: call_id.to_string(),
        path: path.display().to_string(),
        error: e.to_string(),
    });
}

/// SHA-256 (lowercase hex) and size of a file, as read back from disk.
pub fn sha256_of(path: &Path) -> io::Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), bytes))
}

/// Bytes a file of `frames` frames takes.
pub fn file_len(channels: u16, frames: u64) -> u64 {
    HEADER_LEN + frames * u64::from(channels) * 2
}

#[cfg(test)]
mod tests {
    use super::*;

    type Returned = tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>;

    fn open_job(id: u64, path: &Path, bus: &EventBus) -> (Job, Arc<AtomicBool>, Returned) {
        let failed = Arc::new(AtomicBool::new(false));
        let (returns, returned) = tokio::sync::mpsc::unbounded_channel();
        (
            Job::Open {
                id,
                call_id: format!("call-{id}"),
                path: path.to_path_buf(),
                channels: 2,
                bus: bus.clone(),
                failed: failed.clone(),
                returns,
            },
            failed,
            returned,
        )
    }

    #[test]
    fn a_recording_is_opened_written_and_finished_with_its_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("2026-12-06").join("c.wav");
        let bus = EventBus::new(64);
        let mut events = bus.subscribe();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || run(rx));
        let (open, failed, mut returned) = open_job(1, &path, &bus);
        tx.send(open).unwrap();
        tx.send(Job::Write {
            id: 1,
            data: vec![1; 32_000],
            silence: 32_000,
        })
        .unwrap();
        let (done, finished) = tokio::sync::oneshot::channel();
        tx.send(Job::Finish {
            id: 1,
            hold_periods: "100-200".into(),
            done,
        })
        .unwrap();
        finished.blocking_recv().unwrap();
        assert_eq!(
            returned.try_recv().unwrap().len(),
            32_000,
            "the buffer comes back"
        );
        assert!(!failed.load(Ordering::Acquire));
        drop(tx);
        thread.join().unwrap();

        let started = events.try_recv().unwrap().event;
        assert_eq!(
            started,
            Event::RecordingStarted {
                call_id: "call-1".into(),
                path: path.display().to_string()
            }
        );
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, file_len(2, 16_000));
        let expected = hex::encode(Sha256::digest(&bytes));
        match events.try_recv().unwrap().event {
            Event::RecordingFinished {
                sha256,
                duration_ms,
                bytes: size,
                hold_periods,
                ..
            } => {
                assert_eq!(sha256, expected);
                assert_eq!(duration_ms, 2_000);
                assert_eq!(size, bytes.len() as u64);
                assert_eq!(hold_periods, "100-200");
            }
            other => panic!("expected recording_finished, got {other:?}"),
        }
    }

    #[test]
    fn an_existing_file_gets_a_sibling_and_a_failure_is_an_alarm() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.wav");
        std::fs::write(&path, b"older").unwrap();
        let bus = EventBus::new(64);
        let mut events = bus.subscribe();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || run(rx));
        let (open, _, _returned) = open_job(1, &path, &bus);
        tx.send(open).unwrap();
        // A directory that cannot be made: its parent is a file.
        let blocked = path.join("under-a-file.wav");
        let (open, failed, _returned2) = open_job(2, &blocked, &bus);
        tx.send(open).unwrap();
        tx.send(Job::Write {
            id: 2,
            data: vec![0; 4],
            silence: 0,
        })
        .unwrap();
        drop(tx);
        thread.join().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"older");
        match events.try_recv().unwrap().event {
            Event::RecordingStarted { path: p, .. } => {
                assert_eq!(p, dir.path().join("c-2.wav").display().to_string())
            }
            other => panic!("{other:?}"),
        }
        match events.try_recv().unwrap().event {
            Event::RecordingFailed { call_id, error, .. } => {
                assert_eq!(call_id, "call-2");
                assert!(!error.is_empty());
            }
            other => panic!("{other:?}"),
        }
        assert!(failed.load(Ordering::Acquire));
    }
}
