//! The shared 20 ms clock that paces every outgoing media stream.
//!
//! One thread owns all playing streams and, every 20 ms, sends each stream
//! its next frame, so thousands of prompt and music-on-hold streams cost one
//! timer, not thousands drifting apart. The streams are spread over the four
//! 5 ms slots of a cycle, so a cycle's sends do not pile up at one instant
//! and each frame leaves close to its own deadline; a slot where nothing
//! plays is not woken for. The thread is its own, not a task of the async
//! runtime: it wakes on a high-resolution sleep, where the runtime's timer
//! rounds to the millisecond and shares its threads with the calls, so a
//! tick would start a millisecond or more late and its frames later still.
//! Call actors steer their stream through a lock-free channel
//! ([`StreamHandle`]) and hear back when a playlist ends.
//! A stream with nothing to play stays silent while its RTP clock runs on.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::g711::Codec;
use super::prompt::{Playback, Prompt};
use super::rtp::{HEADER_LEN, OutgoingStream, send_now};

/// Samples in one 20 ms frame at 8 kHz.
pub const FRAME_SAMPLES: usize = 160;
/// The pacing period.
pub const FRAME: Duration = Duration::from_millis(20);

/// What a stream tells its call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaEvent {
    /// The playlist started with this generation has played to its end.
    PlaybackFinished { generation: u64 },
}

enum Command {
    Add {
        id: u64,
        socket: Sender,
        codec: Codec,
        payload_type: u8,
        events: mpsc::UnboundedSender<MediaEvent>,
    },
    Play {
        id: u64,
        prompts: Vec<Arc<Prompt>>,
        looping: bool,
        generation: u64,
    },
    Stop {
        id: u64,
    },
    SetRemote {
        id: u64,
        remote: Option<SocketAddr>,
    },
    SetCodec {
        id: u64,
        codec: Codec,
        payload_type: u8,
    },
    Remove {
        id: u64,
    },
}

/// Counters of the pacer, readable at any time.
#[derive(Debug)]
pub struct PacerStats {
    pub ticks: AtomicU64,
    pub frames_sent: AtomicU64,
    /// RTP bytes (headers included) of the frames sent.
    pub bytes_sent: AtomicU64,
    pub send_failures: AtomicU64,
    /// 20 ms cycles with a slot that started more than 2 ms after its
    /// deadline.
    pub late_ticks: AtomicU64,
    /// Frames sent more than 2 ms after their tick's deadline (a tick that
    /// started late, or the tail of a tick with many streams), counted to
    /// the nearest [`LATE_FRAME_CHECK`] frames.
    pub late_frames: AtomicU64,
    pub max_lateness_us: AtomicU64,
    pub streams: AtomicU64,
    /// Slot lateness in 250 µs buckets; the last bucket holds 10 ms and more.
    lateness: [AtomicU64; LATENESS_BUCKETS],
}

const LATENESS_BUCKETS: usize = 41;

impl Default for PacerStats {
    fn default() -> Self {
        PacerStats {
            ticks: AtomicU64::new(0),
            frames_sent: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            send_failures: AtomicU64::new(0),
            late_ticks: AtomicU64::new(0),
            late_frames: AtomicU64::new(0),
            max_lateness_us: AtomicU64::new(0),
            streams: AtomicU64::new(0),
            lateness: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}
const LATENESS_STEP_US: u64 = 250;

impl PacerStats {
    fn record_lateness(&self, us: u64) {
        let bucket = ((us / LATENESS_STEP_US) as usize).min(LATENESS_BUCKETS - 1);
        self.lateness[bucket].fetch_add(1, Ordering::Relaxed);
        self.max_lateness_us.fetch_max(us, Ordering::Relaxed);
    }

    /// The lateness below which `fraction` (e.g. 0.99) of the ticks started,
    /// to the 250 µs bucket.
    pub fn lateness_quantile(&self, fraction: f64) -> Duration {
        let counts: Vec<u64> = self
            .lateness
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        let wanted = (total as f64 * fraction).ceil() as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= wanted && wanted > 0 {
                return Duration::from_micros((i as u64 + 1) * LATENESS_STEP_US);
            }
        }
        Duration::ZERO
    }
}

/// Handle to the pacing task; cheap to clone.
#[derive(Clone)]
pub struct Pacer {
    commands: mpsc::UnboundedSender<Command>,
    next_id: Arc<AtomicU64>,
    pub stats: Arc<PacerStats>,
}

/// One call's outgoing stream. Dropping it removes the stream.
pub struct StreamHandle {
    id: u64,
    commands: mpsc::UnboundedSender<Command>,
    generation: u64,
}

/// What a stream sends from: its own handle on the call's socket (the same
/// port), so the call may hand its socket to a media loop meanwhile; the
/// call's shared socket when no handle could be made.
enum Sender {
    Own(std::net::UdpSocket),
    Shared(Arc<UdpSocket>),
}

impl Sender {
    fn new(socket: Arc<UdpSocket>) -> Sender {
        use std::os::fd::AsFd;
        match socket.as_fd().try_clone_to_owned() {
            Ok(fd) => Sender::Own(std::net::UdpSocket::from(fd)),
            Err(_) => Sender::Shared(socket),
        }
    }

    /// Sends without waiting (both are non-blocking).
    fn try_send_to(&self, buf: &[u8], target: SocketAddr) -> std::io::Result<usize> {
        match self {
            Sender::Own(socket) => socket.send_to(buf, target),
            Sender::Shared(socket) => send_now(socket, buf, target),
        }
    }
}

struct Stream {
    socket: Sender,
    remote: Option<SocketAddr>,
    codec: Codec,
    payload_type: u8,
    numbering: OutgoingStream,
    playback: Option<(Playback, u64)>,
    events: mpsc::UnboundedSender<MediaEvent>,
}

impl Pacer {
    /// Starts the pacing thread.
    pub fn start() -> Pacer {
        Self::start_with(Arc::new(PacerStats::default()))
    }

    fn start_with(stats: Arc<PacerStats>) -> Pacer {
        let (commands, rx) = mpsc::unbounded_channel();
        let thread_stats = stats.clone();
        if let Err(e) = std::thread::Builder::new()
            .name("media-pacer".into())
            .spawn(move || run(rx, thread_stats))
        {
            // Without its thread no prompt plays: calls still connect,
            // and the stalled pacer is seen in its tick counter.
            tracing::error!(error = %e, "cannot start the media pacer");
        }
        Pacer {
            commands,
            next_id: Arc::new(AtomicU64::new(1)),
            stats,
        }
    }

    /// Registers a stream that sends from `socket`; `events` hears when playlists end.
    pub fn add_stream(
        &self,
        socket: Arc<UdpSocket>,
        codec: Codec,
        payload_type: u8,
        events: mpsc::UnboundedSender<MediaEvent>,
    ) -> StreamHandle {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let _ = self.commands.send(Command::Add {
            id,
            socket: Sender::new(socket),
            codec,
            payload_type,
            events,
        });
        StreamHandle {
            id,
            commands: self.commands.clone(),
            generation: 0,
        }
    }
}

impl StreamHandle {
    /// Plays `prompts` back to back (looping for music on hold), replacing what
    /// was playing. Returns the generation its `PlaybackFinished` will carry.
    pub fn play(&mut self, prompts: Vec<Arc<Prompt>>, looping: bool) -> u64 {
        self.generation += 1;
        let _ = self.commands.send(Command::Play {
            id: self.id,
            prompts,
            looping,
            generation: self.generation,
        });
        self.generation
    }

    pub fn stop(&self) {
        let _ = self.commands.send(Command::Stop { id: self.id });
    }

    /// Where to send (None: keep the clock but send nothing, e.g. on hold).
    pub fn set_remote(&self, remote: Option<SocketAddr>) {
        let _ = self.commands.send(Command::SetRemote {
            id: self.id,
            remote,
        });
    }

    /// A handle that moves only where the stream goes (a media loop
    /// following a caller's latched source); it does not keep the stream.
    pub fn follower(&self) -> RemoteFollower {
        RemoteFollower {
            id: self.id,
            commands: self.commands.clone(),
        }
    }

    pub fn set_codec(&self, codec: Codec, payload_type: u8) {
        let _ = self.commands.send(Command::SetCodec {
            id: self.id,
            codec,
            payload_type,
        });
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }
}

impl Drop for StreamHandle {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Remove { id: self.id });
    }
}

/// Where one stream goes, settable from another thread (see
/// [`StreamHandle::follower`]).
pub struct RemoteFollower {
    id: u64,
    commands: mpsc::UnboundedSender<Command>,
}

impl RemoteFollower {
    pub fn set_remote(&self, remote: Option<SocketAddr>) {
        let _ = self.commands.send(Command::SetRemote {
            id: self.id,
            remote,
        });
    }
}

fn apply(streams: &mut HashMap<u64, Stream>, command: Command) {
    match command {
        Command::Add {
            id,
            socket,
            codec,
            payload_type,
            events,
        } => {
            streams.insert(
                id,
                Stream {
                    socket,
                    remote: None,
                    codec,
                    payload_type,
                    numbering: OutgoingStream::new(),
                    playback: None,
                    events,
                },
            );
        }
        Command::Play {
            id,
            prompts,
            looping,
            generation,
        } => {
            if let Some(s) = streams.get_mut(&id) {
                s.playback = Some((Playback::new(prompts, looping), generation));
            }
        }
        Command::Stop { id } => {
            if let Some(s) = streams.get_mut(&id) {
                s.playback = None;
            }
        }
        Command::SetRemote { id, remote } => {
            if let Some(s) = streams.get_mut(&id) {
                s.remote = remote;
            }
        }
        Command::SetCodec {
            id,
            codec,
            payload_type,
        } => {
            if let Some(s) = streams.get_mut(&id) {
                s.codec = codec;
                s.payload_type = payload_type;
            }
        }
        Command::Remove { id } => {
            streams.remove(&id);
        }
    }
}

/// Sends one frame, or lets the stream's clock run when it may not send.
#[allow(clippy::too_many_arguments)]
fn send_frame(
    numbering: &mut OutgoingStream,
    socket: &Sender,
    remote: Option<SocketAddr>,
    payload_type: u8,
    frame: &[u8],
    buf: &mut [u8],
    stats: &PacerStats,
) -> bool {
    let Some(remote) = remote else {
        numbering.skip(FRAME_SAMPLES as u32);
        return false;
    };
    let len = numbering.write_packet(payload_type, frame, FRAME_SAMPLES as u32, buf);
    match socket.try_send_to(&buf[..len], remote) {
        Ok(sent) => {
            stats.frames_sent.fetch_add(1, Ordering::Relaxed);
            stats.bytes_sent.fetch_add(sent as u64, Ordering::Relaxed);
            true
        }
        Err(_) => {
            stats.send_failures.fetch_add(1, Ordering::Relaxed);
            false
        }
    }
}

/// How many frames go out between two looks at the clock while a tick
/// sends (a look costs tens of nanoseconds, a frame microseconds).
pub const LATE_FRAME_CHECK: u64 = 16;
/// A frame sent later than this after its tick's deadline is late.
const LATE_FRAME: Duration = Duration::from_millis(2);

/// Sends every stream its next frame; `deadline` is the tick's, by which
/// late frames are counted; `missed` the cycles since the streams were last
/// ticked (their clocks run on by as many frames). Whether any stream is
/// still playing.
fn tick(
    streams: &mut HashMap<u64, Stream>,
    buf: &mut [u8],
    stats: &PacerStats,
    deadline: Instant,
    missed: u32,
) -> bool {
    let late_after = deadline + LATE_FRAME;
    let mut late = Instant::now() > late_after;
    let (mut sent, mut sent_late) = (0u64, 0u64);
    let mut playing = false;
    for stream in streams.values_mut() {
        if missed > 0 {
            stream.numbering.skip(missed * FRAME_SAMPLES as u32);
        }
        let mut drained = false;
        match &mut stream.playback {
            Some((playback, _)) => match playback.next_frame(stream.codec) {
                Some(frame) => {
                    if send_frame(
                        &mut stream.numbering,
                        &stream.socket,
                        stream.remote,
                        stream.payload_type,
                        frame,
                        buf,
                        stats,
                    ) {
                        sent += 1;
                        if !late && sent % LATE_FRAME_CHECK == 0 {
                            late = Instant::now() > late_after;
                        }
                        if late {
                            sent_late += 1;
                        }
                    }
                }
                None => drained = true,
            },
            None => stream.numbering.skip(FRAME_SAMPLES as u32),
        }
        if let Some((playback, generation)) = &mut stream.playback {
            // Announced as the last frame goes out, so a playlist the call
            // starts in answer is in place for the next tick: no gap.
            if *generation != 0 && (drained || playback.is_finished()) {
                let done = std::mem::replace(generation, 0);
                let _ = stream
                    .events
                    .send(MediaEvent::PlaybackFinished { generation: done });
            }
        }
        if drained {
            stream.playback = None;
            stream.numbering.skip(FRAME_SAMPLES as u32);
        }
        playing |= stream.playback.is_some();
    }
    if sent_late > 0 {
        stats.late_frames.fetch_add(sent_late, Ordering::Relaxed);
    }
    playing
}

/// The 20 ms cycle is cut into this many slots; each stream sends in its
/// own (by its id), so a cycle's frames go out spread over it rather than
/// all at one instant, and each within a slot of its deadline. A slot
/// where nothing plays is not woken for (its streams' clocks catch up at
/// its next visit), so a server with nothing to play wakes once a cycle.
/// Four, not more: every wake of the thread is a context switch, and with
/// 1 ms slots the wakes of a busy server cost more CPU than the frames
/// (calls into an IVR at 500/s took 30 % more server CPU).
const SLOTS: usize = 4;

fn slot_of(id: u64) -> usize {
    (id % SLOTS as u64) as usize
}

impl Command {
    fn stream_id(&self) -> u64 {
        match self {
            Command::Add { id, .. }
            | Command::Play { id, .. }
            | Command::Stop { id }
            | Command::SetRemote { id, .. }
            | Command::SetCodec { id, .. }
            | Command::Remove { id } => *id,
        }
    }
}

fn run(mut commands: mpsc::UnboundedReceiver<Command>, stats: Arc<PacerStats>) {
    let mut slots: Vec<HashMap<u64, Stream>> = (0..SLOTS).map(|_| HashMap::new()).collect();
    let slot_length = FRAME / SLOTS as u32;
    let mut buf = vec![0u8; HEADER_LEN + 1024];
    let mut deadline = Instant::now();
    let mut slot = 0;
    let mut cycle: u64 = 0;
    let mut cycle_late = false;
    let mut playing = [false; SLOTS];
    let mut visited = [0u64; SLOTS];
    loop {
        if slot == 0 || playing[slot] {
            let now = Instant::now();
            if deadline > now {
                std::thread::sleep(deadline - now);
            }
            // After a stall the deadlines stay where they were: the slots
            // missed follow at once, so the streams' clocks match real time.
            let lateness = Instant::now().saturating_duration_since(deadline);
            stats.record_lateness(lateness.as_micros() as u64);
            cycle_late |= lateness > Duration::from_millis(2);
            loop {
                match commands.try_recv() {
                    Ok(command) => {
                        let at = slot_of(command.stream_id());
                        playing[at] |= matches!(command, Command::Play { .. });
                        apply(&mut slots[at], command);
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => return,
                }
            }
            let missed = cycle.saturating_sub(visited[slot]).saturating_sub(1) as u32;
            playing[slot] = tick(&mut slots[slot], &mut buf, &stats, deadline, missed);
            visited[slot] = cycle;
        }
        slot += 1;
        if slot == SLOTS {
            // A tick is one whole cycle; late if any of its slots was.
            slot = 0;
            cycle += 1;
            stats.ticks.fetch_add(1, Ordering::Relaxed);
            if std::mem::take(&mut cycle_late) {
                stats.late_ticks.fetch_add(1, Ordering::Relaxed);
            }
            let streams: usize = slots.iter().map(HashMap::len).sum();
            stats.streams.store(streams as u64, Ordering::Relaxed);
        }
        deadline += slot_length;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(frames: usize) -> Arc<Prompt> {
        let pcm: Vec<i16> = (0..frames * FRAME_SAMPLES)
            .map(|i| ((i as f32 * 0.3).sin() * 8000.0) as i16)
            .collect();
        Arc::new(Prompt::from_pcm("tone", pcm))
    }

    /// `count` streams playing a long tone to one sink, applied as the
    /// pacing task would.
    fn playing_streams(count: u64, sink: SocketAddr) -> HashMap<u64, Stream> {
        let mut streams = HashMap::new();
        for id in 0..count {
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            socket.set_nonblocking(true).unwrap();
            let (events, _) = mpsc::unbounded_channel();
            for command in [
                Command::Add {
                    id,
                    socket: Sender::Own(socket),
                    codec: Codec::Pcmu,
                    payload_type: 0,
                    events,
                },
                Command::SetRemote {
                    id,
                    remote: Some(sink),
                },
                Command::Play {
                    id,
                    prompts: vec![tone(10)],
                    looping: true,
                    generation: 1,
                },
            ] {
                apply(&mut streams, command);
            }
        }
        streams
    }

    #[test]
    fn frames_sent_more_than_2ms_after_their_tick_are_counted_late() {
        let sink = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut streams = playing_streams(40, sink.local_addr().unwrap());
        let stats = PacerStats::default();
        let mut buf = vec![0u8; HEADER_LEN + 1024];
        // On time: nothing is late (40 frames take far less than 2 ms).
        tick(&mut streams, &mut buf, &stats, Instant::now(), 0);
        assert_eq!(stats.frames_sent.load(Ordering::Relaxed), 40);
        assert_eq!(stats.late_frames.load(Ordering::Relaxed), 0);
        // A tick that starts 5 ms after its deadline: every frame is late.
        let deadline = Instant::now() - Duration::from_millis(5);
        tick(&mut streams, &mut buf, &stats, deadline, 0);
        assert_eq!(stats.frames_sent.load(Ordering::Relaxed), 80);
        assert_eq!(stats.late_frames.load(Ordering::Relaxed), 40);
        // A tick that starts 1.9 ms after: the first look at the clock
        // (after LATE_FRAME_CHECK frames) may find it past 2 ms, never
        // before.
        let deadline = Instant::now() - Duration::from_micros(1900);
        tick(&mut streams, &mut buf, &stats, deadline, 0);
        let late = stats.late_frames.load(Ordering::Relaxed) - 40;
        assert!(late <= 40 - LATE_FRAME_CHECK, "{late} late frames");
    }

    #[test]
    fn a_slot_ticked_after_idle_cycles_keeps_its_streams_clocks_in_real_time() {
        let sink = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sink.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut streams = playing_streams(1, sink.local_addr().unwrap());
        let stats = PacerStats::default();
        let mut buf = vec![0u8; HEADER_LEN + 1024];
        let timestamp = || {
            let mut packet = [0u8; 512];
            let (n, _) = sink.recv_from(&mut packet).unwrap();
            rtp_rs::RtpReader::new(&packet[..n]).unwrap().timestamp()
        };
        assert!(tick(&mut streams, &mut buf, &stats, Instant::now(), 0));
        let first = timestamp();
        assert!(tick(&mut streams, &mut buf, &stats, Instant::now(), 0));
        assert_eq!(timestamp(), first.wrapping_add(160));
        // Three cycles not ticked: the next frame is stamped where real
        // time is.
        assert!(tick(&mut streams, &mut buf, &stats, Instant::now(), 3));
        assert_eq!(timestamp(), first.wrapping_add(5 * 160));
        // Nothing playing: the slot says so (it need not be woken for).
        apply(&mut streams, Command::Stop { id: 0 });
        assert!(!tick(&mut streams, &mut buf, &stats, Instant::now(), 0));
    }

    #[tokio::test]
    async fn prompts_are_paced_every_20ms_without_gaps_and_announce_their_end() {
        let pacer = Pacer::start();
        let sink = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let (tx, mut events) = mpsc::unbounded_channel();
        let mut stream = pacer.add_stream(socket, Codec::Pcmu, 0, tx);
        stream.set_remote(Some(sink.local_addr().unwrap()));
        let generation = stream.play(vec![tone(5), tone(5)], false);

        let mut buf = [0u8; 512];
        let mut seqs = Vec::new();
        let mut stamps = Vec::new();
        let mut arrivals = Vec::new();
        for _ in 0..10 {
            let (n, _) = tokio::time::timeout(Duration::from_secs(2), sink.recv_from(&mut buf))
                .await
                .unwrap()
                .unwrap();
            arrivals.push(Instant::now());
            let r = rtp_rs::RtpReader::new(&buf[..n]).unwrap();
            assert_eq!(r.payload_type(), 0);
            assert_eq!(r.payload().len(), FRAME_SAMPLES);
            seqs.push(u16::from(r.sequence_number()));
            stamps.push(r.timestamp());
        }
        for w in seqs.windows(2) {
            assert_eq!(w[1], w[0].wrapping_add(1), "{seqs:?}");
        }
        for w in stamps.windows(2) {
            assert_eq!(
                w[1],
                w[0].wrapping_add(160),
                "no gap between prompts: {stamps:?}"
            );
        }
        let span = arrivals[9] - arrivals[0];
        assert!(
            span >= Duration::from_millis(150) && span <= Duration::from_millis(260),
            "9 frame intervals took {span:?}"
        );
        let finished = tokio::time::timeout(Duration::from_secs(1), events.recv())
            .await
            .unwrap();
        assert_eq!(finished, Some(MediaEvent::PlaybackFinished { generation }));
        // nothing more is sent once the playlist is over
        assert!(
            tokio::time::timeout(Duration::from_millis(100), sink.recv_from(&mut buf))
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_new_playlist_replaces_the_old_and_stop_silences() {
        let pacer = Pacer::start();
        let sink = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let (tx, mut events) = mpsc::unbounded_channel();
        let mut stream = pacer.add_stream(socket, Codec::Pcma, 8, tx);
        stream.set_remote(Some(sink.local_addr().unwrap()));
        let first = stream.play(vec![tone(100)], false);
        let mut buf = [0u8; 512];
        let (n, _) = sink.recv_from(&mut buf).await.unwrap();
        assert_eq!(rtp_rs::RtpReader::new(&buf[..n]).unwrap().payload_type(), 8);
        let second = stream.play(vec![tone(2)], false);
        assert_ne!(first, second);
        let got = tokio::time::timeout(Duration::from_secs(1), events.recv())
            .await
            .unwrap();
        assert_eq!(
            got,
            Some(MediaEvent::PlaybackFinished { generation: second })
        );
        stream.play(vec![tone(100)], true);
        stream.stop();
        tokio::time::sleep(Duration::from_millis(60)).await;
        while sink.try_recv_from(&mut buf).is_ok() {}
        assert!(
            tokio::time::timeout(Duration::from_millis(100), sink.recv_from(&mut buf))
                .await
                .is_err(),
            "stopped stream still sends"
        );
    }
}
