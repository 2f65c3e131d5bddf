//! The `recording` room (rulebook Q1): every bridged call becomes one WAV
//! file, `DIR/YYYY-MM-DD/CALL_ID.wav`, whose SHA-256 goes on the call's
//! record; hotline never deletes one, and `hotline recordings verify`
//! finds a file that went missing or changed.
//!
//! A call's [`CallRecording`] lives in its actor. It decodes the inbound
//! RTP of each leg (never what hotline plays: music on hold and prompts are
//! not recorded) into a timeline kept by arrival time, caller left and
//! agent right, silence where a leg sent nothing or while the call is on
//! hold (agent side). Every `recording.flush_interval` the samples up to now
//! are handed, as one buffer, to the writer ([`writer`]).
//!
//! The writer is one std thread for all recordings: writes are sequential
//! appends, one per call per interval, so a single thread keeps up with
//! thousands of calls while the number of threads stays fixed whatever the
//! load, and the blocking file I/O (and the fsync and SHA-256 at hang-up)
//! never runs on the async runtime. Sending a buffer never blocks the call;
//! buffers come back to their call to be filled again, so the steady state
//! allocates nothing.

pub mod verify;
pub mod wav;
pub mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant, SystemTime};

use crate::config::{RecordingFormat, RecordingSettings};
use crate::events::EventBus;
use crate::media::g711::Codec;
use writer::Job;

/// Samples per millisecond.
const PER_MS: u64 = 8;
/// A packet arriving this much after the end of the leg's last one starts
/// after a gap of silence; closer, it follows on (arrival jitter).
const JITTER_FRAMES: u64 = 60 * PER_MS;
/// A leg running this far ahead of the clock (a burst) loses packets
/// rather than drifting.
const MAX_AHEAD_FRAMES: u64 = 200 * PER_MS;
const CALLER: usize = 0;
const AGENT: usize = 1;

/// A file-system-safe name for a call id: letters, digits, `.`, `-`, `_`
/// and `@` kept, anything else `_`; never empty, never hidden, at most 128
/// characters.
pub fn file_stem(call_id: &str) -> String {
    let mut stem: String = call_id
        .chars()
        .take(128)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if stem.starts_with('.') {
        stem.replace_range(0..1, "_");
    }
    if stem.is_empty() {
        stem.push('_');
    }
    stem
}

/// Where the recording of `call_id`, which started at `call_start`, goes.
pub fn path_for(dir: &Path, call_id: &str, call_start: SystemTime) -> PathBuf {
    let t = time::OffsetDateTime::from(call_start);
    let day = format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day());
    let path = dir.join(day).join(format!("{}.wav", file_stem(call_id)));
    std::path::absolute(&path).unwrap_or(path)
}

/// `START-END,START-END` (ms).
pub fn format_holds(holds: &[(u64, u64)]) -> String {
    holds
        .iter()
        .map(|(a, b)| format!("{a}-{b}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The recording of one call, owned by its actor.
pub struct CallRecording {
    /// When the call arrived: names the day directory.
    call_start: SystemTime,
    /// A call is recorded once, from its first bridge to its end.
    started: bool,
    active: Option<Active>,
}

struct Active {
    id: u64,
    jobs: &'static Sender<Job>,
    /// Written buffers coming back (a tokio receiver: the actor must stay
    /// `Sync`).
    returns: tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
    failed: Arc<AtomicBool>,
    timeline: Timeline,
    started: Instant,
    flush_every: Duration,
    next_flush: Instant,
    hold_since: Option<u64>,
    holds: Vec<(u64, u64)>,
}

impl Default for CallRecording {
    fn default() -> Self {
        Self::new()
    }
}

impl CallRecording {
    /// Nothing recorded yet; the call arrives now.
    pub fn new() -> CallRecording {
        CallRecording {
            call_start: SystemTime::now(),
            started: false,
            active: None,
        }
    }

    pub fn is_active(&self) -> bool {
        self.active.is_some()
    }

    /// Starts recording now (at the bridge); later calls (a bridge to the
    /// next agent after a transfer) change nothing.
    pub fn start(&mut self, settings: &RecordingSettings, call_id: &str, bus: &EventBus) {
        if self.started {
            return;
        }
        self.started = true;
        let Some(jobs) = writer::jobs() else {
            return;
        };
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let stereo = settings.format == RecordingFormat::Stereo;
        let failed = Arc::new(AtomicBool::new(false));
        let (returns_tx, returns) = tokio::sync::mpsc::unbounded_channel();
        let open = Job::Open {
            id,
            call_id: call_id.to_string(),
            path: path_for(&settings.dir, call_id, self.call_start),
            channels: if stereo { 2 } else { 1 },
            bus: bus.clone(),
            failed: failed.clone(),
            returns: returns_tx,
        };
        if jobs.send(open).is_err() {
            return;
        }
        let now = Instant::now();
        let flush_every = settings.flush_interval;
        self.active = Some(Active {
            id,
            jobs,
            returns,
            failed,
            timeline: Timeline::new(stereo, frames_of(flush_every) + 8000),
            started: now,
            flush_every,
            next_flush: now + flush_every,
            hold_since: None,
            holds: Vec::new(),
        });
    }

    /// When the next flush is due.
    pub fn flush_at(&self) -> Option<tokio::time::Instant> {
        self.active
            .as_ref()
            .map(|a| tokio::time::Instant::from_std(a.next_flush))
    }

    /// An RTP packet from the caller, whose leg agreed on `format` (codec,
    /// payload type).
    pub fn caller(&mut self, packet: &[u8], format: Option<(Codec, u8)>, on_hold: bool) {
        self.packet(CALLER, packet, format, on_hold);
    }

    /// An RTP packet from the agent; on hold it is not recorded.
    pub fn agent(&mut self, packet: &[u8], format: Option<(Codec, u8)>, on_hold: bool) {
        self.packet(AGENT, packet, format, on_hold);
    }

    fn packet(&mut self, channel: usize, packet: &[u8], format: Option<(Codec, u8)>, hold: bool) {
        let now = Instant::now();
        self.tick_at(now, hold);
        let Some(active) = self.active.as_mut() else {
            return;
        };
        if channel == AGENT && hold {
            return;
        }
        let (Some((codec, pt)), Ok(reader)) = (format, rtp_rs::RtpReader::new(packet)) else {
            return;
        };
        if reader.payload_type() != pt {
            return;
        }
        let at = frames_of(now - active.started);
        active.timeline.put(channel, at, codec, reader.payload());
    }

    /// The clock: flushes when due and notes hold changes.
    pub fn tick(&mut self, now: tokio::time::Instant, on_hold: bool) {
        self.tick_at(now.into_std(), on_hold);
    }

    fn tick_at(&mut self, now: Instant, on_hold: bool) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let ms = (now - active.started).as_millis() as u64;
        match (active.hold_since, on_hold) {
            (None, true) => active.hold_since = Some(ms),
            (Some(since), false) => {
                active.holds.push((since, ms));
                active.hold_since = None;
            }
            _ => {}
        }
        if now >= active.next_flush {
            // Looked at once per flush, not per packet: the flag lives
            // apart from the call's other state, and a read of it per
            // packet was a cache miss per packet.
            if active.failed.load(Ordering::Acquire) {
                // The writer raised the alarm; the call goes on unrecorded.
                self.active = None;
                return;
            }
            // Packets within the jitter of now may still arrive for the
            // stretch just before it: it waits for the next flush.
            let end = frames_of(now - active.started).saturating_sub(JITTER_FRAMES);
            active.flush(end);
            active.next_flush = now + active.flush_every;
        }
    }

    /// The call ended: the rest is written and the file finalised. The
    /// receiver is told once the writer published how it ended.
    pub fn finish(&mut self) -> Option<tokio::sync::oneshot::Receiver<()>> {
        let mut active = self.active.take()?;
        let now = Instant::now();
        let end_ms = (now - active.started).as_millis() as u64;
        if let Some(since) = active.hold_since.take() {
            active.holds.push((since, end_ms));
        }
        let end = frames_of(now - active.started).max(active.timeline.written_end());
        active.flush(end);
        let (done, finished) = tokio::sync::oneshot::channel();
        let job = Job::Finish {
            id: active.id,
            hold_periods: format_holds(&active.holds),
            done,
        };
        active.jobs.send(job).ok()?;
        Some(finished)
    }
}

impl Active {
    fn flush(&mut self, end: u64) {
        let mut buf = self.returns.try_recv().unwrap_or_default();
        let silence = self.timeline.take(end, &mut buf);
        if buf.is_empty() && silence == 0 {
            return;
        }
        let _ = self.jobs.send(Job::Write {
            id: self.id,
            data: buf,
            silence,
        });
    }
}

fn frames_of(d: Duration) -> u64 {
    (d.as_micros() as u64) * PER_MS / 1000
}

/// Both channels from the last flush on, placed by arrival.
struct Timeline {
    stereo: bool,
    /// Caller's and agent's samples, each in its own run (a packet touches
    /// only its own channel's memory); index 0 is frame `flushed` of the
    /// recording.
    samples: [Vec<i16>; 2],
    /// Frames handed to the writer.
    flushed: u64,
    /// Per channel, the frame after its last sample.
    cursor: [u64; 2],
}

impl Timeline {
    fn new(stereo: bool, capacity_frames: u64) -> Timeline {
        Timeline {
            stereo,
            samples: [
                vec![0; capacity_frames as usize],
                vec![0; capacity_frames as usize],
            ],
            flushed: 0,
            cursor: [0; 2],
        }
    }

    fn capacity(&self) -> u64 {
        self.samples[0].len() as u64
    }

    fn written_end(&self) -> u64 {
        self.cursor[0].max(self.cursor[1])
    }

    /// Decodes `payload` into `channel`, following on from its last packet
    /// unless it arrived (frame `at`) after a gap.
    fn put(&mut self, channel: usize, at: u64, codec: Codec, payload: &[u8]) {
        let mut start = self.cursor[channel];
        if at > start + JITTER_FRAMES {
            start = at;
        }
        if start > at + MAX_AHEAD_FRAMES {
            return;
        }
        let start = start.max(self.flushed);
        let offset = start - self.flushed;
        let n = payload.len() as u64;
        if offset + n > self.capacity() {
            return;
        }
        let offset = offset as usize;
        let into = &mut self.samples[channel][offset..offset + payload.len()];
        codec.decode(payload, into);
        self.cursor[channel] = start + n;
    }

    /// Moves frames up to `end` into `out` as little-endian PCM (stereo, or
    /// the saturating mix); returns the bytes of silence that follow them
    /// when `end` lies beyond what the timeline holds.
    fn take(&mut self, end: u64, out: &mut Vec<u8>) -> u64 {
        out.clear();
        if end <= self.flushed {
            return 0;
        }
        let frames = end - self.flushed;
        let held = frames.min(self.capacity()) as usize;
        out.reserve(held * if self.stereo { 4 } else { 2 });
        let [caller, agent] = &self.samples;
        for (c, a) in caller[..held].iter().zip(&agent[..held]) {
            if self.stereo {
                out.extend_from_slice(&c.to_le_bytes());
                out.extend_from_slice(&a.to_le_bytes());
            } else {
                out.extend_from_slice(&c.saturating_add(*a).to_le_bytes());
            }
        }
        for channel in &mut self.samples {
            let len = channel.len();
            channel.copy_within(held..len, 0);
            channel[len - held..].fill(0);
        }
        self.flushed = end;
        let bytes_per_frame = if self.stereo { 4 } else { 2 };
        (frames - held as u64) * bytes_per_frame
    }
}

#[cfg(test)]
mod tests;
