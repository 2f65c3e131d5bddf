//! DTMF in the three forms a call can carry it: RFC 4733 (ex RFC 2833)
//! telephone-events in RTP, SIP INFO bodies (`application/dtmf-relay` and
//! `application/dtmf`), and in-band tones found by Goertzel filters on 8 kHz
//! linear PCM.
//!
//! Pure logic, no I/O, no locks; the detectors keep fixed-size state and never
//! allocate per packet or frame. Each detector reports a key press once.

/// Errors of DTMF parsing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DtmfError {
    #[error("telephone-event payload is {len} bytes, at least 4 are needed")]
    Truncated { len: usize },
    #[error(
        "INFO content type `{0}` carries no DTMF (expected application/dtmf-relay or application/dtmf)"
    )]
    UnsupportedContentType(String),
    #[error("application/dtmf-relay body has no Signal line")]
    MissingSignal,
    #[error("`{0}` is not a DTMF signal (0-9, *, #, A-D, 10, 11)")]
    InvalidSignal(String),
}

/// The DTMF keys by RFC 4733 event code 0..=15.
const KEYS: [char; 16] = [
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', '*', '#', 'A', 'B', 'C', 'D',
];

/// The key of an RFC 4733 event code: 0-9, 10 `*`, 11 `#`, 12-15 `A`-`D`.
/// Other events (flash, tones) have none.
pub fn digit_of(event: u8) -> Option<char> {
    KEYS.get(usize::from(event)).copied()
}

// ---------------------------------------------------------------------------
// RFC 4733 telephone-events
// ---------------------------------------------------------------------------

/// One RFC 4733 §2.3 event block: event code, end bit, volume (0..=63, in
/// -dBm0) and duration in RTP timestamp units since the event's timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TelephoneEvent {
    pub event: u8,
    pub end: bool,
    pub volume: u8,
    pub duration: u16,
}

impl TelephoneEvent {
    /// Parses the first 4-byte event block of an RTP payload. Further bytes
    /// (redundant blocks of earlier events, RFC 4733 §2.5.1.5) are ignored;
    /// the reserved bit is ignored too.
    pub fn parse(payload: &[u8]) -> Result<TelephoneEvent, DtmfError> {
        let &[event, flags, d0, d1, ..] = payload else {
            return Err(DtmfError::Truncated { len: payload.len() });
        };
        Ok(TelephoneEvent {
            event,
            end: flags & 0x80 != 0,
            volume: flags & 0x3F,
            duration: u16::from_be_bytes([d0, d1]),
        })
    }

    /// The 4-byte payload of this event. `volume` is cut to its 6 bits; the
    /// reserved bit is sent as 0.
    pub fn encode(&self) -> [u8; 4] {
        let [d0, d1] = self.duration.to_be_bytes();
        let flags = if self.end { 0x80 } else { 0 } | (self.volume & 0x3F);
        [self.event, flags, d0, d1]
    }

    /// The key of this event, if it is a DTMF event.
    pub fn digit(&self) -> Option<char> {
        digit_of(self.event)
    }
}

/// How far back (in RTP timestamp units, serial-number arithmetic) a timestamp
/// counts as a late packet of an earlier event rather than a jump of the
/// sender's clock: 2^18 units, 32 s at 8 kHz.
const LATE_WINDOW: u32 = 1 << 18;

#[derive(Debug, Clone, Copy)]
struct Current {
    timestamp: u32,
    event: u8,
    reported: bool,
    /// A packet of this segment reached the 16-bit duration limit (0xFFFF).
    saturated: bool,
}

/// Turns a stream of RFC 4733 packets into key presses, each reported once.
///
/// An event is identified by its RTP timestamp (RFC 4733 §2.5.1.3: all packets
/// of one event, including the three retransmitted end packets, carry the
/// event's start timestamp). The digit is reported on the first end packet.
/// If all end packets are lost, it is reported when the next event (a newer
/// timestamp) starts, before anything about the new one; if that first packet
/// of the new event is itself an end packet, the new digit is reported on its
/// next retransmission, at the event after, or by [`flush`](Self::flush).
///
/// Timestamps compare modulo 2^32, so the RTP clock wrapping is harmless;
/// packets older than the current event (by less than 2^18 units) are late
/// copies and ignored, while bigger jumps count as a new event. Events longer
/// than the 16-bit duration field (RFC 4733 §2.5.2.3: the sender starts a new
/// segment with a new timestamp once the duration reaches 0xFFFF) are followed
/// across segments and still count once: a new timestamp for the same event
/// code, without the marker bit, within 0x10000 units of a segment that hit
/// 0xFFFF continues it. Packets that do not parse are ignored.
#[derive(Debug, Clone, Default)]
pub struct EventDetector {
    current: Option<Current>,
}

impl EventDetector {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one telephone-event packet's RTP timestamp, marker bit and
    /// payload; returns a key when a press completes.
    pub fn on_packet(&mut self, rtp_timestamp: u32, marker: bool, payload: &[u8]) -> Option<char> {
        let ev = TelephoneEvent::parse(payload).ok()?;
        let saturated = ev.duration == u16::MAX;
        let Some(cur) = self.current.as_mut() else {
            return self.start(rtp_timestamp, ev, saturated);
        };
        if cur.timestamp == rtp_timestamp && cur.event == ev.event {
            cur.saturated |= saturated;
            return Self::end_of(cur, ev.end);
        }
        let delta = rtp_timestamp.wrapping_sub(cur.timestamp);
        if cur.timestamp != rtp_timestamp && delta.wrapping_neg() <= LATE_WINDOW {
            return None; // a late packet of an earlier event
        }
        if cur.saturated && cur.event == ev.event && !marker && delta <= 0x1_0000 {
            // Next segment of a long event.
            cur.timestamp = rtp_timestamp;
            cur.saturated = saturated;
            return Self::end_of(cur, ev.end);
        }
        // A new event: the previous one is over even if its end was lost.
        let previous = if cur.reported {
            None
        } else {
            digit_of(cur.event)
        };
        if previous.is_none() {
            return self.start(rtp_timestamp, ev, saturated);
        }
        self.current = Some(Current {
            timestamp: rtp_timestamp,
            event: ev.event,
            reported: false,
            saturated,
        });
        previous
    }

    /// Reports the current event if it has not been reported yet (its end
    /// packets lost, or still going): for the end of the stream or an idle
    /// timeout kept by the caller.
    pub fn flush(&mut self) -> Option<char> {
        let cur = self.current.as_mut()?;
        Self::end_of(cur, true)
    }

    fn start(&mut self, timestamp: u32, ev: TelephoneEvent, saturated: bool) -> Option<char> {
        let cur = self.current.insert(Current {
            timestamp,
            event: ev.event,
            reported: false,
            saturated,
        });
        Self::end_of(cur, ev.end)
    }

    fn end_of(cur: &mut Current, end: bool) -> Option<char> {
        if !end || cur.reported {
            return None;
        }
        cur.reported = true;
        digit_of(cur.event)
    }
}

// ---------------------------------------------------------------------------
// SIP INFO
// ---------------------------------------------------------------------------

/// Reads the key from a SIP INFO body.
///
/// `application/dtmf-relay`: lines `key=value` (CRLF or LF, spaces anywhere
/// around key and value, keys case-insensitive); the first `Signal` line
/// gives the key, `Duration` and other lines are ignored.
/// `application/dtmf`: the body is the key itself.
/// A key is one of `0-9 * # A-D` (a-d too) or an event number 0..=15 (10 `*`,
/// 11 `#`). The content type compares case-insensitively, parameters after
/// `;` ignored.
pub fn parse_info(content_type: &str, body: &[u8]) -> Result<char, DtmfError> {
    let media_type = content_type.split(';').next().unwrap_or_default().trim();
    if media_type.eq_ignore_ascii_case("application/dtmf-relay") {
        for line in body.split(|&b| b == b'\n') {
            let Some(eq) = line.iter().position(|&b| b == b'=') else {
                continue;
            };
            let (key, value) = (line[..eq].trim_ascii(), line[eq + 1..].trim_ascii());
            if key.eq_ignore_ascii_case(b"signal") {
                return parse_signal(value);
            }
        }
        Err(DtmfError::MissingSignal)
    } else if media_type.eq_ignore_ascii_case("application/dtmf") {
        parse_signal(body.trim_ascii())
    } else {
        Err(DtmfError::UnsupportedContentType(media_type.to_owned()))
    }
}

/// A key as text: one of `0-9 * # A-D a-d`, or an event number 0..=15.
fn parse_signal(value: &[u8]) -> Result<char, DtmfError> {
    let digit = match value {
        [c] if c.is_ascii_digit() => digit_of(c - b'0'),
        [b'*'] => Some('*'),
        [b'#'] => Some('#'),
        [c @ (b'A'..=b'D' | b'a'..=b'd')] => Some(char::from(c.to_ascii_uppercase())),
        [b'1', c] if c.is_ascii_digit() => digit_of(10 + (c - b'0')),
        _ => None,
    };
    digit.ok_or_else(|| DtmfError::InvalidSignal(String::from_utf8_lossy(value).into_owned()))
}

// ---------------------------------------------------------------------------
// In-band (Goertzel)
// ---------------------------------------------------------------------------

const SAMPLE_RATE: f32 = 8000.0;
/// Analysis block: 102 samples = 12.75 ms. Its ~78 Hz resolution puts the
/// nearest other DTMF frequency (73 Hz away at worst) near the first null of
/// the filter's response, and short blocks keep the timing decisions fine.
const BLOCK: usize = 102;
/// Row (low group) then column (high group) frequencies, Hz.
const FREQS: [f32; 8] = [697.0, 770.0, 852.0, 941.0, 1209.0, 1336.0, 1477.0, 1633.0];
const KEYPAD: [[char; 4]; 4] = [
    ['1', '2', '3', 'A'],
    ['4', '5', '6', 'B'],
    ['7', '8', '9', 'C'],
    ['*', '0', '#', 'D'],
];
/// Peak amplitude of a 0 dBm0 sine in 16-bit linear PCM (G.711: +3.17 dBm0 is
/// full scale for µ-law, +3.14 dBm0 for A-law).
const DBM0_PEAK: f32 = 22_700.0;
/// Each tone must be at least -30 dBm0.
const MIN_TONE_PEAK: f32 = DBM0_PEAK * 0.031_622_78; // 10^(-30/20)
/// The column tone may be up to 4 dB stronger than the row tone ("normal" or
/// forward twist)...
const MAX_COLUMN_OVER_ROW: f32 = 2.511_886; // 10^(4/10)
/// ...and up to 8 dB weaker ("reverse" twist: lines lose more of the high group).
const MAX_ROW_OVER_COLUMN: f32 = 6.309_573; // 10^(8/10)
/// In each group the strongest filter must beat every other one by 8 dB.
const GROUP_MARGIN: f32 = 6.309_573;
/// The two tones must carry at least 60% of the block's energy. A block only
/// partly covered by a tone scores about the covered fraction, so edges and
/// short blips fail too.
const MIN_TONE_SHARE: f32 = 0.6;
/// Consecutive valid blocks needed to accept a key: 3 × 12.75 ms = 38 ms of
/// tone; any tone of 41 ms or more is accepted, anything under 28 ms never.
const MIN_ON_BLOCKS: u8 = 3;
/// Consecutive non-tone blocks (25.5 ms) that end a press, so the same key can
/// count again; one lost block inside a tone does not split it.
const MIN_OFF_BLOCKS: u8 = 2;
/// Digits found in one `push` beyond the first wait here for later calls.
const QUEUE: usize = 8;

/// Finds DTMF keys in 8 kHz linear PCM, for calls without telephone-events.
///
/// Samples are cut into 102-sample blocks whatever the frame size (the
/// Goertzel state carries over between calls, nothing is buffered or
/// allocated). A block names a key when: both its row and its column tone
/// reach -30 dBm0; the column tone is at most 4 dB above or 8 dB below the row
/// tone; each is at least 8 dB above the other filters of its group; and the
/// two carry 60% of the block's energy. A key is reported once, after 3
/// consecutive blocks agree (≈ 40 ms); the same key counts again only after 2
/// blocks (≈ 25 ms) without it. A different key may follow directly.
#[derive(Debug, Clone)]
pub struct InbandDetector {
    coef: [f32; 8],
    s1: [f32; 8],
    s2: [f32; 8],
    energy: f32,
    filled: usize,
    candidate: Option<char>,
    run: u8,
    latched: Option<char>,
    quiet: u8,
    queue: [char; QUEUE],
    queued: usize,
}

impl Default for InbandDetector {
    fn default() -> Self {
        Self::new()
    }
}

impl InbandDetector {
    pub fn new() -> Self {
        let coef = FREQS.map(|f| 2.0 * (std::f32::consts::TAU * f / SAMPLE_RATE).cos());
        InbandDetector {
            coef,
            s1: [0.0; 8],
            s2: [0.0; 8],
            energy: 0.0,
            filled: 0,
            candidate: None,
            run: 0,
            latched: None,
            quiet: MIN_OFF_BLOCKS,
            queue: ['\0'; QUEUE],
            queued: 0,
        }
    }

    /// Feeds samples (any count; 20 ms = 160 is typical) and returns a key
    /// when a press is recognised. One call completes at most one key unless
    /// it carries more than ~300 samples; extra keys wait (up to 8, later ones
    /// dropped) and come out of the following calls, `push(&[])` included.
    /// For bulk input use [`push_each`](Self::push_each).
    pub fn push(&mut self, pcm: &[i16]) -> Option<char> {
        let mut queue = self.queue;
        let mut queued = self.queued;
        self.push_each(pcm, |d| {
            if queued < QUEUE {
                queue[queued] = d;
                queued += 1;
            }
        });
        if queued == 0 {
            return None;
        }
        let first = queue[0];
        queue.copy_within(1..queued, 0);
        self.queue = queue;
        self.queued = queued - 1;
        Some(first)
    }

    /// Feeds samples of any count and hands every key recognised in them to
    /// `on_key`, in order. Keys waiting from [`push`](Self::push) are not
    /// touched.
    pub fn push_each(&mut self, pcm: &[i16], mut on_key: impl FnMut(char)) {
        let mut rest = pcm;
        while !rest.is_empty() {
            let take = (BLOCK - self.filled).min(rest.len());
            let (now, later) = rest.split_at(take);
            self.feed(now);
            self.filled += take;
            rest = later;
            if self.filled == BLOCK {
                let key = self.classify();
                self.s1 = [0.0; 8];
                self.s2 = [0.0; 8];
                self.energy = 0.0;
                self.filled = 0;
                if let Some(d) = self.decide(key) {
                    on_key(d);
                }
            }
        }
    }

    /// Back to the initial state (e.g. after a codec change or a hold).
    pub fn reset(&mut self) {
        *self = Self::new();
    }

    fn feed(&mut self, samples: &[i16]) {
        let c = self.coef;
        let mut s1 = self.s1;
        let mut s2 = self.s2;
        let mut energy = self.energy;
        for &x in samples {
            let x = f32::from(x);
            energy += x * x;
            for k in 0..8 {
                let s0 = x + c[k] * s1[k] - s2[k];
                s2[k] = s1[k];
                s1[k] = s0;
            }
        }
        self.s1 = s1;
        self.s2 = s2;
        self.energy = energy;
    }

    /// The key one full block shows, if any.
    fn classify(&self) -> Option<char> {
        let mut power = [0.0f32; 8];
        for (k, p) in power.iter_mut().enumerate() {
            let (a, b) = (self.s1[k], self.s2[k]);
            *p = a * a + b * b - self.coef[k] * a * b;
        }
        let (rows, cols) = power.split_at(4);
        let (row, row_power) = strongest(rows)?;
        let (col, col_power) = strongest(cols)?;
        // A sine of peak A over N samples gives |X|^2 = (N A / 2)^2.
        let n = BLOCK as f32;
        let min_power = (n * MIN_TONE_PEAK / 2.0) * (n * MIN_TONE_PEAK / 2.0);
        let ok = row_power >= min_power
            && col_power >= min_power
            && col_power <= row_power * MAX_COLUMN_OVER_ROW
            && row_power <= col_power * MAX_ROW_OVER_COLUMN
            && clear_winner(rows, row, row_power)
            && clear_winner(cols, col, col_power)
            // Share of energy: a lone sine scores 2|X|^2 / (N E) = 1.
            && 2.0 * (row_power + col_power) >= MIN_TONE_SHARE * n * self.energy;
        ok.then(|| KEYPAD[row][col])
    }

    /// Debounces block results into reported key presses.
    fn decide(&mut self, key: Option<char>) -> Option<char> {
        let Some(key) = key else {
            self.candidate = None;
            self.run = 0;
            self.quiet = self.quiet.saturating_add(1);
            if self.quiet >= MIN_OFF_BLOCKS {
                self.latched = None;
            }
            return None;
        };
        self.quiet = 0;
        if self.candidate == Some(key) {
            self.run = self.run.saturating_add(1);
        } else {
            self.candidate = Some(key);
            self.run = 1;
        }
        if self.run >= MIN_ON_BLOCKS && self.latched != Some(key) {
            self.latched = Some(key);
            return Some(key);
        }
        None
    }
}

/// Index and power of the strongest filter of a group.
fn strongest(group: &[f32]) -> Option<(usize, f32)> {
    group
        .iter()
        .copied()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

/// Whether every other filter of the group is `GROUP_MARGIN` below the winner.
fn clear_winner(group: &[f32], winner: usize, power: f32) -> bool {
    group
        .iter()
        .enumerate()
        .all(|(k, &p)| k == winner || p * GROUP_MARGIN <= power)
}

#[cfg(test)]
mod tests {
    use super::*;

    // --- RFC 4733 -------------------------------------------------------

    #[test]
    fn digit_of_maps_all_sixteen_events() {
        let all: String = (0..16).filter_map(digit_of).collect();
        assert_eq!(all, "0123456789*#ABCD");
        assert_eq!(digit_of(16), None); // flash
        assert_eq!(digit_of(255), None);
    }

    #[test]
    fn parse_vectors() {
        // Event 5, not end, volume 10, duration 160.
        let ev = TelephoneEvent::parse(&[0x05, 0x0A, 0x00, 0xA0]);
        assert_eq!(
            ev,
            Ok(TelephoneEvent {
                event: 5,
                end: false,
                volume: 10,
                duration: 160
            })
        );
        // '#' end, reserved bit set (ignored), volume 63, duration 0x0320.
        let ev = TelephoneEvent::parse(&[0x0B, 0xFF, 0x03, 0x20]).unwrap();
        assert_eq!(
            (ev.event, ev.end, ev.volume, ev.duration),
            (11, true, 63, 800)
        );
        assert_eq!(ev.digit(), Some('#'));
        // A redundant second block is ignored.
        let ev = TelephoneEvent::parse(&[0x01, 0x80, 0x01, 0x40, 0x02, 0x80, 0x01, 0x40]).unwrap();
        assert_eq!((ev.event, ev.end, ev.duration), (1, true, 320));
        for len in 0..4 {
            assert_eq!(
                TelephoneEvent::parse(&[0u8; 4][..len]),
                Err(DtmfError::Truncated { len })
            );
        }
    }

    #[test]
    fn encode_round_trips() {
        let ev = TelephoneEvent {
            event: 12,
            end: true,
            volume: 7,
            duration: 1280,
        };
        assert_eq!(ev.encode(), [12, 0x87, 0x05, 0x00]);
        assert_eq!(TelephoneEvent::parse(&ev.encode()), Ok(ev));
        let loud = TelephoneEvent { volume: 0xFF, ..ev };
        assert_eq!(loud.encode()[1], 0xBF);
    }

    fn packet(event: u8, end: bool, duration: u16) -> [u8; 4] {
        TelephoneEvent {
            event,
            end,
            volume: 10,
            duration,
        }
        .encode()
    }

    /// A sender's packets for one press: marker start, 6 interims, 3 ends.
    fn press(event: u8, ts: u32) -> Vec<(u32, bool, [u8; 4])> {
        let mut v = vec![(ts, true, packet(event, false, 0))];
        for i in 1..=6 {
            v.push((ts, false, packet(event, false, i * 160)));
        }
        for _ in 0..3 {
            v.push((ts, false, packet(event, true, 1120)));
        }
        v
    }

    fn run(det: &mut EventDetector, packets: &[(u32, bool, [u8; 4])]) -> String {
        packets
            .iter()
            .filter_map(|(ts, m, p)| det.on_packet(*ts, *m, p))
            .collect()
    }

    #[test]
    fn detector_reports_a_press_once() {
        let mut det = EventDetector::default();
        let pkts = press(5, 1000);
        let digits: Vec<(usize, char)> = pkts
            .iter()
            .enumerate()
            .filter_map(|(i, (ts, m, p))| det.on_packet(*ts, *m, p).map(|d| (i, d)))
            .collect();
        assert_eq!(digits, vec![(7, '5')]); // on the first end packet
        // A late retransmission of the end changes nothing.
        assert_eq!(det.on_packet(1000, false, &packet(5, true, 1120)), None);
        assert_eq!(det.flush(), None);
    }

    #[test]
    fn same_key_twice_is_two_presses() {
        let mut det = EventDetector::new();
        let mut pkts = press(1, 8000);
        pkts.extend(press(1, 8000 + 2400));
        assert_eq!(run(&mut det, &pkts), "11");
    }

    #[test]
    fn lost_end_packets_report_when_next_event_starts() {
        let mut det = EventDetector::new();
        let first: Vec<_> = press(7, 500).into_iter().take(7).collect(); // no ends
        assert_eq!(run(&mut det, &first), "");
        // The next event's first packet brings out the previous digit.
        assert_eq!(det.on_packet(3000, true, &packet(8, false, 0)), Some('7'));
        assert_eq!(run(&mut det, &press(8, 3000)), "8");
        // A straggler of the first event after all that is ignored.
        assert_eq!(det.on_packet(500, false, &packet(7, true, 1120)), None);
    }

    #[test]
    fn lost_ends_then_lone_end_packet() {
        let mut det = EventDetector::new();
        assert_eq!(det.on_packet(100, true, &packet(2, false, 0)), None);
        // The next event arrives as nothing but one end packet: previous first...
        assert_eq!(det.on_packet(2000, false, &packet(3, true, 800)), Some('2'));
        // ...then the new one on a retransmission, once.
        assert_eq!(det.on_packet(2000, false, &packet(3, true, 800)), Some('3'));
        assert_eq!(det.on_packet(2000, false, &packet(3, true, 800)), None);
        // Or, without retransmission, by flush.
        let mut det = EventDetector::new();
        det.on_packet(100, true, &packet(2, false, 0));
        assert_eq!(det.on_packet(2000, false, &packet(3, true, 800)), Some('2'));
        assert_eq!(det.flush(), Some('3'));
        assert_eq!(det.flush(), None);
    }

    #[test]
    fn rtp_timestamp_wraps() {
        let mut det = EventDetector::new();
        let before = u32::MAX - 200;
        let after = before.wrapping_add(2400); // past zero
        assert!(after < before);
        let mut pkts = press(4, before);
        pkts.extend(press(6, after));
        assert_eq!(run(&mut det, &pkts), "46");
        // A late packet from before the wrap is older, not newer.
        assert_eq!(det.on_packet(before, true, &packet(4, false, 0)), None);
        assert_eq!(det.on_packet(before, false, &packet(4, true, 1120)), None);
    }

    #[test]
    fn clock_jump_backwards_far_is_a_new_event() {
        let mut det = EventDetector::new();
        assert_eq!(run(&mut det, &press(1, 3_000_000_000)), "1");
        assert_eq!(run(&mut det, &press(2, 12_345)), "2");
    }

    #[test]
    fn long_event_spans_16_bit_duration_segments() {
        // A key held for ~10 s at 8 kHz: more than the 16-bit duration field.
        let mut det = EventDetector::new();
        let ts = 0xFFFF_0000u32; // the segments also cross the 32-bit wrap
        let mut out = String::new();
        let mut feed = |ts: u32, m: bool, p: [u8; 4]| {
            if let Some(d) = det.on_packet(ts, m, &p) {
                out.push(d);
            }
        };
        feed(ts, true, packet(9, false, 0));
        for d in (8000..=0xFFFF_u32).step_by(8000) {
            feed(ts, false, packet(9, false, d as u16));
        }
        feed(ts, false, packet(9, false, 0xFFFF));
        let ts2 = ts.wrapping_add(0xFFFF);
        for d in [0u16, 160, 8000, 14_000] {
            feed(ts2, false, packet(9, false, d));
        }
        for _ in 0..3 {
            feed(ts2, false, packet(9, true, 14_080));
        }
        // A new press of the same key afterwards still counts.
        let ts3 = ts2.wrapping_add(20_000);
        feed(ts3, true, packet(9, false, 0));
        feed(ts3, false, packet(9, true, 800));
        assert_eq!(out, "99");
    }

    #[test]
    fn non_dtmf_events_and_garbage_are_ignored() {
        let mut det = EventDetector::new();
        assert_eq!(det.on_packet(0, true, &packet(16, true, 800)), None); // flash
        assert_eq!(det.on_packet(10, true, &[1, 2]), None);
        assert_eq!(run(&mut det, &press(0, 4000)), "0");
    }

    // --- SIP INFO ---------------------------------------------------------

    #[test]
    fn info_dtmf_relay() {
        let relay = "application/dtmf-relay";
        assert_eq!(parse_info(relay, b"Signal=5\r\nDuration=160\r\n"), Ok('5'));
        assert_eq!(parse_info(relay, b"Signal=5\nDuration=160"), Ok('5'));
        assert_eq!(parse_info(relay, b"  signal =  #  \r\n"), Ok('#'));
        assert_eq!(parse_info(relay, b"Duration= 250\r\nSIGNAL=*\r\n"), Ok('*'));
        assert_eq!(parse_info(relay, b"Signal=10\r\nDuration=160\r\n"), Ok('*'));
        assert_eq!(parse_info(relay, b"Signal=11"), Ok('#'));
        assert_eq!(parse_info(relay, b"Signal=d"), Ok('D'));
        assert_eq!(parse_info(relay, b"Signal=A\r\n"), Ok('A'));
        assert_eq!(parse_info(relay, b"\r\n\r\nSignal\t=\t0\r\n"), Ok('0'));
        assert_eq!(
            parse_info("Application/DTMF-Relay; charset=utf-8", b"Signal=9"),
            Ok('9')
        );
        assert_eq!(
            parse_info(relay, b"Duration=160\r\n"),
            Err(DtmfError::MissingSignal)
        );
        assert_eq!(parse_info(relay, b""), Err(DtmfError::MissingSignal));
        assert_eq!(
            parse_info(relay, b"Signal=12x"),
            Err(DtmfError::InvalidSignal("12x".into()))
        );
        assert_eq!(
            parse_info(relay, b"Signal="),
            Err(DtmfError::InvalidSignal(String::new()))
        );
        assert!(parse_info(relay, b"Signal=E").is_err());
        assert!(parse_info(relay, b"Signal=16").is_err());
        assert!(parse_info(relay, b"Signal=\xFF\xFE").is_err());
    }

    #[test]
    fn info_dtmf() {
        assert_eq!(parse_info("application/dtmf", b"7"), Ok('7'));
        assert_eq!(parse_info("APPLICATION/DTMF", b" 3\r\n"), Ok('3'));
        assert_eq!(parse_info("application/dtmf ;x=y", b"#"), Ok('#'));
        assert_eq!(parse_info("application/dtmf", b"10"), Ok('*'));
        assert_eq!(parse_info("application/dtmf", b"11\n"), Ok('#'));
        assert_eq!(parse_info("application/dtmf", b"b"), Ok('B'));
        assert!(parse_info("application/dtmf", b"").is_err());
        assert!(parse_info("application/dtmf", b"12 3").is_err());
        assert!(parse_info("application/dtmf", b"Signal=1").is_err());
    }

    #[test]
    fn info_unknown_content_type_is_named() {
        let err = parse_info("application/sdp", b"v=0").unwrap_err();
        assert_eq!(
            err,
            DtmfError::UnsupportedContentType("application/sdp".into())
        );
        assert!(err.to_string().contains("application/sdp"));
        assert!(parse_info("", b"5").is_err());
        assert!(parse_info("text/plain", b"Signal=5").is_err());
    }

    /// xorshift32: a tiny deterministic generator for the tests.
    struct Rng(u32);
    impl Rng {
        fn next(&mut self) -> u32 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            self.0 = x;
            x
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = Rng(0x1234_5678);
        let mut det = EventDetector::new();
        let mut inband = InbandDetector::new();
        let mut buf = [0u8; 64];
        let mut pcm = [0i16; 333];
        for _ in 0..20_000 {
            let len = (rng.next() % 64) as usize;
            for b in &mut buf[..len] {
                *b = rng.next() as u8;
            }
            // Bias some bytes towards the interesting ones.
            if len > 0 && rng.next() % 4 == 0 {
                buf[0] = b"S=\r\n1*#"[(rng.next() % 7) as usize];
            }
            let data = &buf[..len];
            let _ = TelephoneEvent::parse(data);
            let _ = det.on_packet(rng.next(), rng.next() & 1 == 1, data);
            let _ = det.flush();
            let _ = parse_info("application/dtmf-relay", data);
            let _ = parse_info("application/dtmf", data);
            let _ = parse_info(&String::from_utf8_lossy(data), data);
        }
        for _ in 0..200 {
            let len = (rng.next() % 333) as usize;
            for s in &mut pcm[..len] {
                *s = rng.next() as i16;
            }
            let _ = inband.push(&pcm[..len]);
        }
    }

    // --- In-band ----------------------------------------------------------

    const MS: usize = 8; // samples per millisecond
    /// -10 dBm0 peak amplitude.
    const MINUS_10_DBM0: f64 = 22_700.0 * 0.316_227_766;

    fn freqs_of(key: char) -> (f64, f64) {
        let rows = [697.0, 770.0, 852.0, 941.0];
        let cols = [1209.0, 1336.0, 1477.0, 1633.0];
        for (r, line) in KEYPAD.iter().enumerate() {
            for (c, &k) in line.iter().enumerate() {
                if k == key {
                    return (rows[r], cols[c]);
                }
            }
        }
        panic!("no key {key}");
    }

    /// Appends `ms` of the key's two tones at the given peak amplitudes.
    fn tone(out: &mut Vec<i16>, key: char, ms: usize, row_peak: f64, col_peak: f64) {
        let (fr, fc) = freqs_of(key);
        let start = out.len();
        for n in 0..ms * MS {
            let t = (start + n) as f64 / 8000.0;
            let v = row_peak * (std::f64::consts::TAU * fr * t).sin()
                + col_peak * (std::f64::consts::TAU * fc * t + 1.0).sin();
            out.push(v.round() as i16);
        }
    }

    fn silence(out: &mut Vec<i16>, ms: usize) {
        out.extend(std::iter::repeat_n(0, ms * MS));
    }

    /// Runs a signal through a fresh detector in frames of `frame` samples.
    fn detect(signal: &[i16], frame: usize) -> String {
        let mut det = InbandDetector::new();
        let mut out: String = signal.chunks(frame).filter_map(|f| det.push(f)).collect();
        while let Some(d) = det.push(&[]) {
            out.push(d);
        }
        out
    }

    #[test]
    fn inband_each_of_16_keys_once() {
        for key in "0123456789*#ABCD".chars() {
            for lead in [0, 3, 51, 101] {
                // Vary the alignment of the tone against the analysis blocks.
                let mut s = vec![0i16; lead];
                tone(&mut s, key, 60, MINUS_10_DBM0, MINUS_10_DBM0);
                silence(&mut s, 60);
                assert_eq!(detect(&s, 160), key.to_string(), "key {key}, lead {lead}");
            }
        }
    }

    #[test]
    fn inband_sequence_in_order_any_frame_size() {
        let mut s = Vec::new();
        for key in "1234567890*#".chars() {
            tone(&mut s, key, 60, MINUS_10_DBM0, MINUS_10_DBM0);
            silence(&mut s, 60);
        }
        for frame in [160, 80, 240, 1, 7, 102, 205, 333, 1000] {
            assert_eq!(detect(&s, frame), "1234567890*#", "frame {frame}");
        }
        for frame in [3000, s.len()] {
            let mut det = InbandDetector::new();
            let mut out = String::new();
            for f in s.chunks(frame) {
                det.push_each(f, |d| out.push(d));
            }
            assert_eq!(out, "1234567890*#", "push_each, frame {frame}");
        }
    }

    #[test]
    fn inband_survives_g711() {
        use crate::media::g711::Codec;
        let mut s = Vec::new();
        silence(&mut s, 20);
        for key in "159#".chars() {
            tone(&mut s, key, 60, MINUS_10_DBM0, MINUS_10_DBM0);
            silence(&mut s, 60);
        }
        for codec in [Codec::Pcmu, Codec::Pcma] {
            let mut coded = vec![0u8; s.len()];
            let mut back = vec![0i16; s.len()];
            codec.encode(&s, &mut coded);
            codec.decode(&coded, &mut back);
            assert_eq!(detect(&back, 160), "159#", "{codec:?}");
        }
    }

    #[test]
    fn inband_same_key_twice_with_gap() {
        let mut s = Vec::new();
        tone(&mut s, '5', 60, MINUS_10_DBM0, MINUS_10_DBM0);
        silence(&mut s, 50);
        tone(&mut s, '5', 60, MINUS_10_DBM0, MINUS_10_DBM0);
        silence(&mut s, 60);
        assert_eq!(detect(&s, 160), "55");
        // A long press is still one key.
        let mut s = Vec::new();
        tone(&mut s, '8', 1500, MINUS_10_DBM0, MINUS_10_DBM0);
        assert_eq!(detect(&s, 160), "8");
    }

    #[test]
    fn inband_short_blip_is_nothing() {
        for lead in [0, 20, 40, 60, 80, 101] {
            let mut s = vec![0i16; lead];
            tone(&mut s, '3', 20, MINUS_10_DBM0, MINUS_10_DBM0);
            silence(&mut s, 60);
            assert_eq!(detect(&s, 160), "", "lead {lead}");
        }
    }

    #[test]
    fn inband_levels_and_twist() {
        let db = |d: f64| 22_700.0 * 10f64.powf(d / 20.0);
        let case = |row: f64, col: f64| {
            let mut s = Vec::new();
            tone(&mut s, '6', 80, db(row), db(col));
            silence(&mut s, 40);
            detect(&s, 160)
        };
        assert_eq!(case(-25.0, -25.0), "6");
        assert_eq!(case(-3.0, -3.0), "6");
        assert_eq!(case(-36.0, -36.0), ""); // too weak
        assert_eq!(case(-10.0, -17.0), "6"); // column 7 dB weaker: reverse twist allowed
        assert_eq!(case(-10.0, -20.0), ""); // 10 dB: too much
        assert_eq!(case(-13.0, -10.0), "6"); // column 3 dB stronger: allowed
        assert_eq!(case(-16.0, -10.0), ""); // 6 dB: too much
    }

    #[test]
    fn inband_rejects_single_tone() {
        let mut s = Vec::new();
        for n in 0..8000 {
            let t = n as f64 / 8000.0;
            s.push((MINUS_10_DBM0 * (std::f64::consts::TAU * 1000.0 * t).sin()) as i16);
        }
        assert_eq!(detect(&s, 160), "");
        // A lone DTMF row tone is not a key either.
        let mut s = Vec::new();
        tone(&mut s, '1', 500, MINUS_10_DBM0, 0.0);
        assert_eq!(detect(&s, 160), "");
    }

    #[test]
    fn inband_rejects_white_noise() {
        let mut rng = Rng(0xDEAD_BEEF);
        let s: Vec<i16> = (0..16_000).map(|_| (rng.next() >> 16) as i16 / 3).collect();
        assert_eq!(detect(&s, 160), "");
    }

    #[test]
    fn inband_rejects_speech_like_signal() {
        // Voiced-speech stand-in: a gliding 100-180 Hz fundamental with harmonics
        // to 3.4 kHz shaped by formants placed on the DTMF bands (the hard case),
        // syllable-rate envelope, plus a little noise.
        let mut rng = Rng(42);
        let formants = [(720.0, 90.0), (1300.0, 110.0), (2500.0, 150.0)];
        let mut phases = [0.0f64; 40];
        let mut s = Vec::new();
        for n in 0..3 * 8000 {
            let t = n as f64 / 8000.0;
            let f0 = 140.0 + 40.0 * (std::f64::consts::TAU * 0.7 * t).sin();
            let mut v = 0.0;
            for (h, phase) in phases.iter_mut().enumerate() {
                let f = f0 * (h + 1) as f64;
                if f > 3400.0 {
                    break;
                }
                *phase += std::f64::consts::TAU * f / 8000.0;
                let gain: f64 = formants
                    .iter()
                    .map(|&(fc, bw)| 1.0 / (1.0 + ((f - fc) / bw).powi(2)).sqrt())
                    .sum();
                v += gain * phase.sin() / (h + 1) as f64;
            }
            let envelope = 0.5 + 0.5 * (std::f64::consts::TAU * 4.0 * t).sin().abs();
            let noise = f64::from((rng.next() >> 16) as i16) / 200.0;
            s.push((v * envelope * 4000.0 + noise) as i16);
        }
        assert_eq!(detect(&s, 160), "");
    }

    #[test]
    fn inband_queue_holds_digits_of_one_big_push() {
        let mut s = Vec::new();
        for key in "ABCD".chars() {
            tone(&mut s, key, 60, MINUS_10_DBM0, MINUS_10_DBM0);
            silence(&mut s, 60);
        }
        let mut det = InbandDetector::new();
        assert_eq!(det.push(&s), Some('A'));
        assert_eq!(det.push(&[]), Some('B'));
        assert_eq!(det.push(&[0; 10]), Some('C'));
        assert_eq!(det.push(&[]), Some('D'));
        assert_eq!(det.push(&[]), None);
        det.reset();
        assert_eq!(det.push(&[]), None);
    }
}
