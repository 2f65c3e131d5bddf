//! The media loops: a fixed set of threads (`media.workers`), each an event
//! loop over the RTP sockets of the bridges handed to it, relaying caller ↔
//! agent without waking the calls' tasks, and of the callers who only
//! listen (an IVR prompt, music on hold), whose packets it judges, counts
//! and reads keys from.
//!
//! A call's actor hands a plain bridge over (both legs answered, neither on
//! hold, no supervisor, no consultation), or a caller's lone leg while
//! nothing but RFC 4733 keys is wanted from its audio, and takes it back
//! before anything changes the media picture. A recorded call's recording goes with its
//! bridge: the loop feeds it each leg's packets and flushes it when due
//! (the recording sends its buffers to the writer thread over a channel),
//! so recording does not keep a call off the loops. Each bridge stays on the loop it was given (the
//! least loaded one). Per packet the loop judges the source exactly as the
//! actor does ([`Latch::judge`], same counters), passes the caller's RFC 4733
//! keys to the actor, rewrites the packet with [`relay`] into a buffer
//! allocated once, and sends it from the other leg's socket. No task per leg,
//! no timer, no allocation and no lock on the packet path; the global totals
//! are added once per batch of readiness events, each call's own counters
//! at the loop's sweep (every 100 ms) and when it takes its media back.
//!
//! The loop takes the legs' sockets themselves, out of the async runtime's
//! readiness set (the pacer sends prompts from its own handle on each), so a
//! packet wakes the loop and nothing else; while it holds a bridge the actor
//! does not read them, and packets arriving during a handover wait in the
//! socket's kernel buffer for whoever reads next.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use tokio::sync::{mpsc as tokio_mpsc, oneshot};

use crate::call::relay::{LegFormat, relay};
use crate::media::dtmf::EventDetector;
use crate::media::pacer::RemoteFollower;
use crate::media::rtp::{DropReason, InboundStats, Latch, RtpTotals, Verdict};
use crate::recording::CallRecording;

/// One leg of a bridge as the loop takes it.
pub struct LegMedia {
    /// The leg's RTP socket (non-blocking), or a clone of it; handed back
    /// with the bridge.
    pub socket: std::net::UdpSocket,
    /// What the leg agreed to send and receive.
    pub format: LegFormat,
    /// Where the leg's RTP may come from; handed back when the bridge is.
    pub latch: Latch,
    /// The leg's inbound counters, shared with its session.
    pub stats: Arc<InboundStats>,
    /// Some: the leg's RFC 4733 keys are reported (the caller's).
    pub keys: Option<EventDetector>,
    /// Some: the stream hotline plays to this leg follows its source when
    /// it latches (a listening caller, whose prompt or music plays on).
    pub follow: Option<RemoteFollower>,
}

/// A bridge handed to a loop: the caller's leg, the agent's (none: the
/// caller only listens, nothing is relayed), and where the caller's keys go.
pub struct BridgeMedia {
    pub caller: LegMedia,
    pub agent: Option<LegMedia>,
    pub digits: tokio_mpsc::UnboundedSender<char>,
    /// The call's recording, when it records.
    pub recording: Option<CallRecording>,
}

/// What comes back with a bridge: each leg's socket and latch (it may have
/// moved), the caller's key detector (a key may be half pressed), the
/// recording.
pub struct Returned {
    pub caller_socket: std::net::UdpSocket,
    pub agent_socket: Option<std::net::UdpSocket>,
    pub caller_latch: Latch,
    pub agent_latch: Option<Latch>,
    pub caller_keys: Option<EventDetector>,
    pub recording: Option<CallRecording>,
}

/// A bridge on a loop, to take it back with.
#[derive(Debug)]
pub struct BridgeTicket {
    loop_index: usize,
    id: u64,
}

enum Command {
    Attach(u64, Box<BridgeMedia>),
    Detach(u64, oneshot::Sender<Returned>),
}

impl Command {
    fn into_bridge(self) -> Option<Box<BridgeMedia>> {
        match self {
            Command::Attach(_, bridge) => Some(bridge),
            Command::Detach(..) => None,
        }
    }
}

struct LoopHandle {
    commands: mpsc::Sender<Command>,
    waker: Arc<Waker>,
    load: Arc<LoopLoad>,
}

/// What a loop carries, for the gauges and for choosing the least loaded.
#[derive(Default)]
struct LoopLoad {
    bridges: AtomicUsize,
    listeners: AtomicUsize,
}

impl LoopLoad {
    fn counter(&self, listening: bool) -> &AtomicUsize {
        if listening {
            &self.listeners
        } else {
            &self.bridges
        }
    }

    /// A bridge reads two legs and sends; a listener reads one.
    fn weight(&self) -> usize {
        2 * self.bridges.load(Ordering::Relaxed) + self.listeners.load(Ordering::Relaxed)
    }
}

/// The media loops of the server.
pub struct MediaEngine {
    loops: Vec<LoopHandle>,
    next_id: AtomicU64,
}

const WAKER: Token = Token(usize::MAX);

impl MediaEngine {
    /// Starts `workers` loops (at least one), each on its own thread, adding
    /// what they count into `totals`.
    pub fn start(workers: usize, totals: Arc<RtpTotals>) -> std::io::Result<MediaEngine> {
        let mut loops = Vec::new();
        for index in 0..workers.max(1) {
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
            let (commands, inbox) = mpsc::channel();
            let load = Arc::new(LoopLoad::default());
            let mut media_loop = MediaLoop {
                poll,
                inbox,
                load: load.clone(),
                totals: totals.clone(),
                slots: Vec::new(),
                free: Vec::new(),
                by_id: HashMap::new(),
            };
            std::thread::Builder::new()
                .name(format!("media-loop-{index}"))
                .spawn(move || media_loop.run())?;
            loops.push(LoopHandle {
                commands,
                waker,
                load,
            });
        }
        Ok(MediaEngine {
            loops,
            next_id: AtomicU64::new(1),
        })
    }

    /// Bridges on each loop, in loop order.
    pub fn bridges_per_loop(&self) -> Vec<usize> {
        self.per_loop(|load| &load.bridges)
    }

    /// Listening callers on each loop, in loop order.
    pub fn listeners_per_loop(&self) -> Vec<usize> {
        self.per_loop(|load| &load.listeners)
    }

    fn per_loop(&self, counter: impl Fn(&LoopLoad) -> &AtomicUsize) -> Vec<usize> {
        self.loops
            .iter()
            .map(|l| counter(&l.load).load(Ordering::Relaxed))
            .collect()
    }

    /// Hands a bridge (or a listening caller) to the least loaded loop; it
    /// comes back when no loop runs.
    pub fn attach(&self, bridge: BridgeMedia) -> Result<BridgeTicket, Option<Box<BridgeMedia>>> {
        let Some((loop_index, handle)) = self
            .loops
            .iter()
            .enumerate()
            .min_by_key(|(_, l)| l.load.weight())
        else {
            return Err(Some(Box::new(bridge)));
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // Counted at once, so bridges handed over together spread out.
        let counter = handle.load.counter(bridge.agent.is_none());
        counter.fetch_add(1, Ordering::Relaxed);
        if let Err(mpsc::SendError(command)) =
            handle.commands.send(Command::Attach(id, Box::new(bridge)))
        {
            counter.fetch_sub(1, Ordering::Relaxed);
            return Err(command.into_bridge());
        }
        if let Err(e) = handle.waker.wake() {
            // The loop still takes it at its next sweep.
            tracing::debug!(error = %e, "cannot wake a media loop");
        }
        Ok(BridgeTicket { loop_index, id })
    }

    /// Takes a bridge back: the loop stops reading its sockets and answers
    /// with the legs' latches. `None` when the loop is gone.
    pub async fn detach(&self, ticket: BridgeTicket) -> Option<Returned> {
        let handle = self.loops.get(ticket.loop_index)?;
        let (reply, returned) = oneshot::channel();
        handle
            .commands
            .send(Command::Detach(ticket.id, reply))
            .ok()?;
        handle.waker.wake().ok()?;
        returned.await.ok()
    }
}

/// What one leg of a bridge is on the loop.
struct Leg {
    socket: UdpSocket,
    format: LegFormat,
    latch: Latch,
    /// The call's counters, published into at each sweep and at the
    /// handback.
    stats: Arc<InboundStats>,
    /// What the loop counted since it last published: the leg's own, next
    /// to the rest of its state, so a packet touches no shared line.
    counted: InboundStats,
    keys: Option<EventDetector>,
    follow: Option<RemoteFollower>,
}

impl Leg {
    fn new(media: LegMedia) -> Leg {
        Leg {
            socket: UdpSocket::from_std(media.socket),
            format: media.format,
            latch: media.latch,
            stats: media.stats,
            counted: InboundStats::default(),
            keys: media.keys,
            follow: media.follow,
        }
    }

    fn publish(&self) {
        self.counted.move_into(&self.stats);
    }

    /// Where this leg's RTP goes: the latched source, else the SDP's
    /// address unless the peer is behind NAT (as the session's `remote`;
    /// a bridge on a loop is never on hold).
    fn remote(&self) -> Option<SocketAddr> {
        self.latch
            .peer()
            .or_else(|| self.latch.expected().filter(|_| !self.latch.behind_nat()))
    }
}

struct Bridge {
    id: u64,
    caller: Leg,
    agent: Option<Leg>,
    digits: tokio_mpsc::UnboundedSender<char>,
    recording: Option<CallRecording>,
}

/// Counts of one batch, added to the totals at its end.
#[derive(Default)]
struct Tally {
    packets_in: u64,
    bytes_in: u64,
    foreign: u64,
    malformed: u64,
    unconfirmed: u64,
    relayed_packets: u64,
    relayed_bytes: u64,
}

impl Tally {
    fn flush(&mut self, totals: &RtpTotals) {
        let add = |counter: &AtomicU64, n: u64| {
            if n > 0 {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        };
        add(&totals.packets_in, self.packets_in);
        add(&totals.bytes_in, self.bytes_in);
        add(
            &totals.dropped,
            self.foreign + self.malformed + self.unconfirmed,
        );
        add(&totals.dropped_foreign, self.foreign);
        add(&totals.dropped_malformed, self.malformed);
        add(&totals.dropped_unconfirmed, self.unconfirmed);
        add(&totals.relayed_packets, self.relayed_packets);
        add(&totals.relayed_bytes, self.relayed_bytes);
        *self = Tally::default();
    }

    fn dropped(&mut self, reason: DropReason) {
        match reason {
            DropReason::ForeignSource => self.foreign += 1,
            DropReason::Malformed => self.malformed += 1,
            DropReason::Unconfirmed => self.unconfirmed += 1,
        }
    }
}

/// A datagram bigger than any RTP packet hotline takes is cut to this.
const PACKET_MAX: usize = 2048;
/// Receive errors in a row (other than "nothing more") before a socket is
/// left until its next readiness.
const ERRORS_IN_A_ROW: u32 = 8;
/// The most datagrams one look reads from one leg (a leg sends one every
/// 20 ms): a socket flooded by a stranger cannot keep its loop from the
/// other bridges; what is left is read first at the next look.
const PACKETS_PER_LOOK: usize = 64;
/// How often the loop publishes its legs' counters to their calls and looks
/// at its recordings' clocks (a recording also flushes as its packets
/// arrive; this covers a silent call).
const SWEEP: Duration = Duration::from_millis(100);
/// The least time between two looks at the sockets. Waking once per
/// packet would cost a context switch per packet; waiting this long lets
/// each look find many calls' packets ready (a packet waits at most this
/// long, well within the 20 ms a frame lasts).
const COALESCE: Duration = Duration::from_millis(1);

struct MediaLoop {
    poll: Poll,
    inbox: mpsc::Receiver<Command>,
    load: Arc<LoopLoad>,
    totals: Arc<RtpTotals>,
    slots: Vec<Option<Bridge>>,
    free: Vec<usize>,
    by_id: HashMap<u64, usize>,
}

impl MediaLoop {
    fn run(&mut self) {
        let mut events = Events::with_capacity(1024);
        let mut inbound = vec![0u8; PACKET_MAX];
        let mut outbound = vec![0u8; PACKET_MAX];
        let mut tally = Tally::default();
        let mut next_sweep = Instant::now() + SWEEP;
        // Legs whose datagrams were not all read at the last look; edge
        // triggered, they would not be reported again.
        let mut unfinished: Vec<(usize, usize)> = Vec::with_capacity(64);
        let mut carried: Vec<(usize, usize)> = Vec::with_capacity(64);
        loop {
            let wait = if unfinished.is_empty() {
                next_sweep.saturating_duration_since(Instant::now())
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(&mut events, Some(wait)) {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(error = %e, "media loop cannot wait for its sockets");
                return;
            }
            let looked = Instant::now();
            let mut commands = false;
            std::mem::swap(&mut unfinished, &mut carried);
            let ready = events.iter().filter_map(|event| {
                if event.token() == WAKER {
                    commands = true;
                    return None;
                }
                Some((event.token().0 / 2, event.token().0 % 2))
            });
            for (slot, side) in carried.drain(..).chain(ready) {
                if let Some(Some(bridge)) = self.slots.get_mut(slot)
                    && bridge.drain(side, &mut inbound, &mut outbound, &mut tally)
                {
                    unfinished.push((slot, side));
                }
            }
            tally.flush(&self.totals);
            let now = Instant::now();
            if now >= next_sweep {
                next_sweep = now + SWEEP;
                self.sweep(now);
            }
            if commands && !self.take_commands() {
                return;
            }
            if !events.is_empty() {
                let busy = looked.elapsed();
                if busy < COALESCE {
                    std::thread::sleep(COALESCE - busy);
                }
            }
        }
    }

    fn sweep(&mut self, now: Instant) {
        let now = tokio::time::Instant::from_std(now);
        for bridge in self.slots.iter_mut().flatten() {
            bridge.caller.publish();
            if let Some(agent) = &bridge.agent {
                agent.publish();
            }
            if let Some(recording) = bridge.recording.as_mut() {
                recording.tick(now, false);
            }
        }
    }

    /// Carries out what the engine sent; false once the engine is gone.
    fn take_commands(&mut self) -> bool {
        loop {
            match self.inbox.try_recv() {
                Ok(Command::Attach(id, bridge)) => self.attach(id, *bridge),
                Ok(Command::Detach(id, reply)) => {
                    if let Some(returned) = self.detach(id) {
                        let _ = reply.send(returned);
                    }
                }
                Err(mpsc::TryRecvError::Empty) => return true,
                Err(mpsc::TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn attach(&mut self, id: u64, bridge: BridgeMedia) {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        let mut bridge = Bridge {
            id,
            caller: Leg::new(bridge.caller),
            agent: bridge.agent.map(Leg::new),
            digits: bridge.digits,
            recording: bridge.recording,
        };
        let legs = std::iter::once(&mut bridge.caller).chain(bridge.agent.as_mut());
        for (side, leg) in legs.enumerate() {
            let token = Token(slot * 2 + side);
            if let Err(e) =
                self.poll
                    .registry()
                    .register(&mut leg.socket, token, Interest::READABLE)
            {
                // The bridge is kept: it is handed back when asked for, and
                // its call's silence clock ends it if no audio flows.
                tracing::warn!(error = %e, "media loop cannot watch a leg's socket");
            }
        }
        self.slots[slot] = Some(bridge);
        self.by_id.insert(id, slot);
    }

    fn detach(&mut self, id: u64) -> Option<Returned> {
        let slot = self.by_id.remove(&id)?;
        let mut bridge = self.slots.get_mut(slot)?.take()?;
        debug_assert_eq!(bridge.id, id);
        let legs = std::iter::once(&mut bridge.caller).chain(bridge.agent.as_mut());
        for leg in legs {
            let _ = self.poll.registry().deregister(&mut leg.socket);
            leg.publish();
        }
        self.free.push(slot);
        let counter = self.load.counter(bridge.agent.is_none());
        counter.fetch_sub(1, Ordering::Relaxed);
        let Bridge {
            caller,
            agent,
            recording,
            ..
        } = bridge;
        let (agent_socket, agent_latch) = agent.map(|a| (a.socket.into(), a.latch)).unzip();
        Some(Returned {
            caller_socket: caller.socket.into(),
            agent_socket,
            caller_latch: caller.latch,
            agent_latch,
            caller_keys: caller.keys,
            recording,
        })
    }
}

impl Bridge {
    /// Reads the datagrams waiting on leg `side`, at most
    /// [`PACKETS_PER_LOOK`], and relays what the other leg should hear (a
    /// listening caller's go nowhere); true when some may be left.
    fn drain(
        &mut self,
        side: usize,
        inbound: &mut [u8],
        outbound: &mut [u8],
        tally: &mut Tally,
    ) -> bool {
        let recording = &mut self.recording;
        let (from, to) = match (side, self.agent.as_mut()) {
            (0, agent) => (&mut self.caller, agent.map(|a| &*a)),
            (_, Some(agent)) => (agent, Some(&self.caller)),
            (_, None) => return false,
        };
        let mut errors = 0;
        for _ in 0..PACKETS_PER_LOOK {
            let (n, source) = match from.socket.recv_from(inbound) {
                Ok(received) => received,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                Err(_) => {
                    errors += 1;
                    if errors >= ERRORS_IN_A_ROW {
                        return false;
                    }
                    continue;
                }
            };
            errors = 0;
            let packet = &inbound[..n];
            match from
                .latch
                .judge(source, packet, &from.counted, Instant::now)
            {
                Verdict::Drop(reason) => {
                    tally.dropped(reason);
                    continue;
                }
                Verdict::Accept { latched: true } => {
                    if let Some(follow) = &from.follow {
                        follow.set_remote(Some(source));
                    }
                }
                Verdict::Accept { latched: false } => {}
            }
            tally.packets_in += 1;
            tally.bytes_in += n as u64;
            if let Some(recording) = recording.as_mut() {
                let format = Some((from.format.codec, from.format.payload_type));
                if side == 0 {
                    recording.caller(packet, format, false);
                } else {
                    recording.agent(packet, format, false);
                }
            }
            if let Some(keys) = from.keys.as_mut()
                && let Some(digit) = key_of(keys, &from.format, packet)
            {
                let _ = self.digits.send(digit);
            }
            let Some(to) = to else {
                continue;
            };
            let Some(relayed) = relay(packet, &from.format, &to.format, outbound) else {
                continue;
            };
            let Some(destination) = to.remote() else {
                continue;
            };
            if let Ok(sent) = to.socket.send_to(&outbound[..relayed.len()], destination) {
                tally.relayed_packets += 1;
                tally.relayed_bytes += sent as u64;
            }
        }
        true
    }
}

/// The key an RFC 4733 packet completes, if it is one.
fn key_of(keys: &mut EventDetector, format: &LegFormat, packet: &[u8]) -> Option<char> {
    let event = format.telephone_event?;
    let reader = rtp_rs::RtpReader::new(packet).ok()?;
    if reader.payload_type() != event {
        return None;
    }
    keys.on_packet(reader.timestamp(), reader.mark(), reader.payload())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PCMU: LegFormat = LegFormat::PCMU;

    fn bind() -> std::net::UdpSocket {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        socket
    }

    fn rtp(pt: u8, seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, pt];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    /// A leg whose peer sits at `peer`: hotline's socket (non-blocking, as
    /// tokio's are) and its clone for the loop.
    fn leg(peer: SocketAddr) -> (std::net::UdpSocket, LegMedia) {
        let ours = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        ours.set_nonblocking(true).unwrap();
        let mut latch = Latch::default();
        latch.expect(Some(peer), None, Instant::now(), Duration::ZERO);
        let media = LegMedia {
            socket: ours.try_clone().unwrap(),
            format: PCMU,
            latch,
            stats: Arc::default(),
            keys: None,
            follow: None,
        };
        (ours, media)
    }

    fn wait_for(what: &str, done: impl Fn() -> bool) {
        let until = Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(Instant::now() < until, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn one_look_reads_a_bounded_number_of_datagrams_from_a_flooded_leg() {
        let phone = bind();
        let stranger = bind();
        let (caller_socket, caller) = leg(phone.local_addr().unwrap());
        let (_agent_socket, agent) = leg(bind().local_addr().unwrap());
        let (digits, _keys) = tokio_mpsc::unbounded_channel();
        let mut bridge = Bridge {
            id: 1,
            caller: Leg::new(caller),
            agent: Some(Leg::new(agent)),
            digits,
            recording: None,
        };
        let target = caller_socket.local_addr().unwrap();
        let flood = 2 * PACKETS_PER_LOOK + 10;
        for seq in 0..flood {
            stranger
                .send_to(&rtp(0, seq as u16, &[0; 160]), target)
                .unwrap();
        }
        let (mut inbound, mut outbound) = ([0u8; PACKET_MAX], [0u8; PACKET_MAX]);
        let mut tally = Tally::default();
        let judged = |t: &Tally| t.packets_in + t.foreign + t.malformed + t.unconfirmed;
        let mut look = |tally: &mut Tally| bridge.drain(0, &mut inbound, &mut outbound, tally);
        assert!(look(&mut tally), "a full look leaves the rest for the next");
        assert_eq!(judged(&tally), PACKETS_PER_LOOK as u64);
        assert!(look(&mut tally));
        assert_eq!(judged(&tally), 2 * PACKETS_PER_LOOK as u64);
        assert!(!look(&mut tally), "the last look empties the socket");
        assert_eq!(judged(&tally), flood as u64);
        assert_eq!(
            tally.foreign, flood as u64,
            "every datagram was the stranger's"
        );
    }

    #[tokio::test]
    async fn a_bridge_on_a_loop_relays_both_ways_drops_strangers_and_hands_its_latches_back() {
        let totals = Arc::new(RtpTotals::default());
        let engine = MediaEngine::start(2, totals.clone()).unwrap();
        let caller_phone = bind();
        let agent_phone = bind();
        let stranger = bind();
        let (caller_socket, mut caller) = leg(caller_phone.local_addr().unwrap());
        let (agent_socket, agent) = leg(agent_phone.local_addr().unwrap());
        caller.keys = Some(EventDetector::default());
        let caller_stats = caller.stats.clone();
        let (digits_tx, mut digits) = tokio_mpsc::unbounded_channel();
        let ticket = engine
            .attach(BridgeMedia {
                caller,
                agent: Some(agent),
                digits: digits_tx,
                recording: None,
            })
            .ok()
            .unwrap();
        assert_eq!(engine.bridges_per_loop().iter().sum::<usize>(), 1);

        let caller_addr = caller_socket.local_addr().unwrap();
        let agent_addr = agent_socket.local_addr().unwrap();
        let mut buf = [0u8; 2048];
        for seq in 0..5u16 {
            let voice = rtp(0, seq, &[seq as u8; 160]);
            caller_phone.send_to(&voice, caller_addr).unwrap();
            let (n, from) = agent_phone.recv_from(&mut buf).unwrap();
            assert_eq!(
                from, agent_addr,
                "the agent hears the caller from its own leg"
            );
            assert_eq!(&buf[..n], &voice[..]);
            let reply = rtp(0, 100 + seq, &[0x55; 160]);
            agent_phone.send_to(&reply, agent_addr).unwrap();
            let (n, from) = caller_phone.recv_from(&mut buf).unwrap();
            assert_eq!(from, caller_addr);
            assert_eq!(&buf[..n], &reply[..]);
        }
        // A stranger's packet is dropped and counted, and reaches nobody.
        stranger
            .send_to(&rtp(0, 9, &[1; 160]), caller_addr)
            .unwrap();
        wait_for("the stranger's drop", || {
            totals.dropped_foreign.load(Ordering::Relaxed) == 1
        });
        // The call's own counters are published at the loop's next sweep.
        wait_for("the call's drop count", || {
            caller_stats.dropped_source.load(Ordering::Relaxed) == 1
        });
        // The caller's key (RFC 4733: start, then the end) reaches the call.
        let key = |end: bool| rtp(101, 50, &[5, if end { 0x8a } else { 0x0a }, 0, 160]);
        caller_phone.send_to(&key(false), caller_addr).unwrap();
        caller_phone.send_to(&key(true), caller_addr).unwrap();
        let digit = tokio::time::timeout(Duration::from_secs(5), digits.recv()).await;
        assert_eq!(digit.unwrap(), Some('5'));
        wait_for("the relay counts", || {
            totals.relayed_packets.load(Ordering::Relaxed) == 12
        });
        assert_eq!(totals.packets_in.load(Ordering::Relaxed), 12);
        wait_for("the call's packet count", || {
            caller_stats.packets.load(Ordering::Relaxed) == 7
        });

        let returned = engine.detach(ticket).await.unwrap();
        assert_eq!(returned.caller_socket.local_addr().ok(), Some(caller_addr));
        assert_eq!(
            returned.agent_socket.and_then(|s| s.local_addr().ok()),
            Some(agent_addr)
        );
        assert_eq!(returned.caller_latch.peer(), caller_phone.local_addr().ok());
        assert_eq!(
            returned.agent_latch.and_then(|l| l.peer()),
            agent_phone.local_addr().ok()
        );
        assert!(returned.caller_keys.is_some());
        assert_eq!(engine.bridges_per_loop().iter().sum::<usize>(), 0);
        // Taken back, the loop no longer reads the socket: the packet waits
        // in the kernel for the call's own reader.
        let late = rtp(0, 77, &[7; 160]);
        caller_phone.send_to(&late, caller_addr).unwrap();
        caller_socket.set_nonblocking(false).unwrap();
        caller_socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let (n, _) = caller_socket.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], &late[..]);
    }

    #[tokio::test]
    async fn a_natd_peer_that_latches_on_the_loop_comes_back_latched() {
        let engine = MediaEngine::start(1, Arc::default()).unwrap();
        let phone = bind();
        let agent_phone = bind();
        let (caller_socket, mut caller) = leg(phone.local_addr().unwrap());
        // The caller's SDP named a private address it does not send from;
        // its SIP came from the loopback address it really sends from.
        caller.latch = Latch::default();
        caller.latch.expect(
            Some("10.0.0.9:4000".parse().unwrap()),
            Some(phone.local_addr().unwrap().ip()),
            Instant::now(),
            Duration::from_secs(5),
        );
        let (_agent_socket, agent) = leg(agent_phone.local_addr().unwrap());
        let (digits, _keys) = tokio_mpsc::unbounded_channel();
        let ticket = engine
            .attach(BridgeMedia {
                caller,
                agent: Some(agent),
                digits,
                recording: None,
            })
            .ok()
            .unwrap();
        let caller_addr = caller_socket.local_addr().unwrap();
        let mut buf = [0u8; 2048];
        for seq in 0..3u16 {
            phone.send_to(&rtp(0, seq, &[0; 160]), caller_addr).unwrap();
        }
        // The third packet in a row confirms the source and is relayed.
        agent_phone.recv_from(&mut buf).unwrap();
        let returned = engine.detach(ticket).await.unwrap();
        assert_eq!(returned.caller_latch.peer(), phone.local_addr().ok());
        assert!(!returned.caller_latch.behind_nat());
    }

    #[tokio::test]
    async fn a_listening_caller_is_judged_and_counted_its_keys_pass_and_nothing_is_relayed() {
        let totals = Arc::new(RtpTotals::default());
        let engine = MediaEngine::start(2, totals.clone()).unwrap();
        let phone = bind();
        let stranger = bind();
        let (caller_socket, mut caller) = leg(phone.local_addr().unwrap());
        caller.keys = Some(EventDetector::default());
        let stats = caller.stats.clone();
        let (digits_tx, mut digits) = tokio_mpsc::unbounded_channel();
        let ticket = engine
            .attach(BridgeMedia {
                caller,
                agent: None,
                digits: digits_tx,
                recording: None,
            })
            .ok()
            .unwrap();
        assert_eq!(engine.listeners_per_loop().iter().sum::<usize>(), 1);
        assert_eq!(engine.bridges_per_loop().iter().sum::<usize>(), 0);
        let hotline = caller_socket.local_addr().unwrap();
        for seq in 0..4u16 {
            phone.send_to(&rtp(0, seq, &[0xff; 160]), hotline).unwrap();
        }
        stranger.send_to(&rtp(0, 9, &[1; 160]), hotline).unwrap();
        let key = |end: bool| rtp(101, 50, &[7, if end { 0x8a } else { 0x0a }, 0, 160]);
        phone.send_to(&key(false), hotline).unwrap();
        phone.send_to(&key(true), hotline).unwrap();
        let digit = tokio::time::timeout(Duration::from_secs(5), digits.recv()).await;
        assert_eq!(digit.unwrap(), Some('7'));
        wait_for("the counts", || {
            totals.packets_in.load(Ordering::Relaxed) == 6
                && totals.dropped_foreign.load(Ordering::Relaxed) == 1
        });
        assert_eq!(totals.relayed_packets.load(Ordering::Relaxed), 0);
        // Nothing came back to anyone: a listener's packets go nowhere.
        phone
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut buf = [0u8; 2048];
        assert!(phone.recv_from(&mut buf).is_err());

        let returned = engine.detach(ticket).await.unwrap();
        // Handed back, everything counted is published.
        assert_eq!(stats.packets.load(Ordering::Relaxed), 6);
        assert_eq!(stats.dropped_source.load(Ordering::Relaxed), 1);
        assert_eq!(returned.caller_socket.local_addr().ok(), Some(hotline));
        assert!(returned.agent_socket.is_none() && returned.agent_latch.is_none());
        assert_eq!(returned.caller_latch.peer(), phone.local_addr().ok());
        assert!(returned.caller_keys.is_some());
        assert_eq!(engine.listeners_per_loop().iter().sum::<usize>(), 0);
    }

    #[test]
    fn a_listener_weighs_half_a_bridge_when_a_loop_is_chosen() {
        let engine = MediaEngine::start(2, Arc::default()).unwrap();
        let listener = || {
            let (socket, caller) = leg(bind().local_addr().unwrap());
            let (digits, _) = tokio_mpsc::unbounded_channel();
            let media = BridgeMedia {
                caller,
                agent: None,
                digits,
                recording: None,
            };
            (socket, media)
        };
        let (_bridge_sockets, bridge) = {
            let (a, caller) = leg(bind().local_addr().unwrap());
            let (b, agent) = leg(bind().local_addr().unwrap());
            let (digits, _) = tokio_mpsc::unbounded_channel();
            let media = BridgeMedia {
                caller,
                agent: Some(agent),
                digits,
                recording: None,
            };
            ((a, b), media)
        };
        assert!(engine.attach(bridge).is_ok());
        // Two listeners weigh what the bridge does: both go to the other loop.
        let mut kept = Vec::new();
        for _ in 0..2 {
            let (socket, media) = listener();
            kept.push(socket);
            assert!(engine.attach(media).is_ok());
        }
        let bridges = engine.bridges_per_loop();
        let listeners = engine.listeners_per_loop();
        let with_bridge = bridges.iter().position(|&b| b == 1).unwrap();
        assert_eq!(listeners[with_bridge], 0);
        assert_eq!(listeners[1 - with_bridge], 2);
    }
}
