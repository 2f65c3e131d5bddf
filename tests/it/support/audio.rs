//! Real audio for media tests: parties that send a tone of their own over
//! RTP (PCMU, 20 ms) and keep what they hear, measured by frequency with a
//! Goertzel filter; SIPp phones whose media is such a party's socket.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;
use hotline::media::g711::Codec;

/// Decoded audio packets with their arrival times.
pub type Heard = Arc<Mutex<Vec<(Instant, Vec<i16>)>>>;

/// One party's audio: sends its tone every 20 ms (to `peer`, or to whoever
/// sent it audio first) and keeps what it receives with arrival times.
pub struct Party {
    received: Heard,
    /// Packets sent, and sends that failed.
    sent: Arc<(
        std::sync::atomic::AtomicUsize,
        std::sync::atomic::AtomicUsize,
    )>,
    stop: Arc<AtomicBool>,
    /// Sends nothing while set (silence suppression), still receiving.
    muted: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Party {
    pub fn start(socket: UdpSocket, hz: f64, peer: Option<SocketAddr>) -> Party {
        let received: Heard = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (received.clone(), stop.clone());
        let muted = Arc::new(AtomicBool::new(false));
        let quiet = muted.clone();
        let sent = Arc::new((
            std::sync::atomic::AtomicUsize::new(0),
            std::sync::atomic::AtomicUsize::new(0),
        ));
        let counts = sent.clone();
        let thread = std::thread::spawn(move || {
            socket
                .set_read_timeout(Some(Duration::from_millis(5)))
                .unwrap();
            let mut peer = peer;
            let mut next = Instant::now();
            let (mut seq, mut t) = (0u16, 0usize);
            let ssrc: u32 = rand_ssrc(hz);
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::Relaxed) {
                if let Ok((n, from)) = socket.recv_from(&mut buf)
                    && n > 12
                    && buf[1] & 0x7f == 0
                {
                    peer.get_or_insert(from);
                    let mut pcm = vec![0i16; n - 12];
                    Codec::Pcmu.decode(&buf[12..n], &mut pcm);
                    r.lock().unwrap().push((Instant::now(), pcm));
                }
                if Instant::now() >= next {
                    next += Duration::from_millis(20);
                    if let Some(peer) = peer.filter(|_| !quiet.load(Ordering::Relaxed)) {
                        let pcm: Vec<i16> = (0..160)
                            .map(|i| {
                                let x = (t + i) as f64 / 8000.0;
                                (8000.0 * (2.0 * std::f64::consts::PI * hz * x).sin()) as i16
                            })
                            .collect();
                        t += 160;
                        let mut p = vec![0x80, 0];
                        p.extend_from_slice(&seq.to_be_bytes());
                        p.extend_from_slice(&((seq as u32) * 160).to_be_bytes());
                        p.extend_from_slice(&ssrc.to_be_bytes());
                        let mut payload = [0u8; 160];
                        Codec::Pcmu.encode(&pcm, &mut payload);
                        p.extend_from_slice(&payload);
                        match socket.send_to(&p, peer) {
                            Ok(_) => counts.0.fetch_add(1, Ordering::Relaxed),
                            Err(_) => counts.1.fetch_add(1, Ordering::Relaxed),
                        };
                        seq = seq.wrapping_add(1);
                    }
                }
            }
        });
        Party {
            received,
            sent,
            stop,
            muted,
            thread: Some(thread),
        }
    }

    /// Stops or resumes sending (a phone with silence suppression).
    pub fn mute(&self, on: bool) {
        self.muted.store(on, Ordering::Relaxed);
    }

    /// Packets sent, failed sends and packets received, for diagnostics.
    pub fn stats(&self) -> String {
        format!(
            "sent {}, failed sends {}, received {}, running {}",
            self.sent.0.load(Ordering::Relaxed),
            self.sent.1.load(Ordering::Relaxed),
            self.received.lock().map_or(0, |r| r.len()),
            self.thread.as_ref().is_some_and(|t| !t.is_finished())
        )
    }

    /// The share of the audio received in `from..to` that is at `hz`
    /// (about 1 for a pure tone, 0.5 for one of two equal tones, 0 absent).
    pub fn share(&self, hz: f64, from: Instant, to: Instant) -> f64 {
        let received = self.received.lock().unwrap();
        let blocks: Vec<&Vec<i16>> = received
            .iter()
            .filter(|(at, pcm)| *at >= from && *at < to && pcm.len() == 160)
            .map(|(_, pcm)| pcm)
            .collect();
        if blocks.len() <= 20 {
            let first = received.first().map(|r| r.0);
            let timeline: Vec<String> = received
                .iter()
                .map(|(at, pcm)| {
                    format!(
                        "{}:{}",
                        first.map_or(0, |f| at.duration_since(f).as_millis()),
                        pcm.len()
                    )
                })
                .collect();
            panic!(
                "too little audio received in the window: {} packets; window {:?}..{:?} after the first packet; all: {}",
                blocks.len(),
                first.map(|f| from.saturating_duration_since(f)),
                first.map(|f| to.saturating_duration_since(f)),
                timeline.join(" ")
            );
        }
        let (mut tone, mut energy) = (0.0, 0.0);
        for block in blocks {
            tone += goertzel(block, hz);
            energy += block.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() * 80.0;
        }
        if energy == 0.0 { 0.0 } else { tone / energy }
    }

    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for Party {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn rand_ssrc(hz: f64) -> u32 {
    0x5000_0000 | hz as u32
}

/// Squared magnitude of `hz` in one block (Goertzel).
pub fn goertzel(block: &[i16], hz: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * hz / 8000.0;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in block {
        let s0 = f64::from(x) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - coeff * s1 * s2
}

/// A socket for a party's RTP, on a port taken from the same registry as
/// SIPp's: a port the kernel picked could be one just handed to a SIPp that
/// has not bound it yet, and SIPp binds with SO_REUSEADDR.
pub fn rtp_socket() -> (UdpSocket, u16) {
    for _ in 0..50 {
        let port = free_port();
        // Another socket of this process may have got it from the kernel
        // since the probe.
        if let Ok(socket) = UdpSocket::bind(("127.0.0.1", port)) {
            return (socket, port);
        }
    }
    panic!("no free UDP port for RTP on 127.0.0.1");
}

/// A registered phone on `port` that answers in PCMU with its audio on
/// `rtp_port`, a socket of the test, and talks until hotline hangs up.
pub fn answering_phone(port: u16, rtp_port: u16) -> Sipp {
    answering_phone_with_codec(port, rtp_port, (0, "PCMU"))
}

/// [`answering_phone`] answering with `codec` (payload type, name).
pub fn answering_phone_with_codec(port: u16, rtp_port: u16, codec: (u8, &str)) -> Sipp {
    Sipp::new("phone_answer_rtp")
        .port(port)
        .media()
        .key("rtp_port", &rtp_port.to_string())
        .key("pt", &codec.0.to_string())
        .key("codec", codec.1)
        .args(&["-timeout", "40s"])
}

/// A caller to 402 whose audio is a tone; returns it with its audio party.
pub fn call_in(server: &Server, number: &str, hz: f64) -> (Caller, Party) {
    let mut caller = Caller::new(server);
    let offer = sdp_offer(caller.rtp_addr(), "0", "a=rtpmap:0 PCMU/8000\r\n");
    let ok = caller.invite(number, &offer);
    assert_status(&Some(ok), 200, "INVITE to the queue's number");
    caller.ack("");
    let party = Party::start(caller.rtp.try_clone().unwrap(), hz, caller.server_rtp);
    (caller, party)
}

pub fn call_id_of(event: &str) -> String {
    let json = &event[event.find('{').expect("an event line carries JSON")..];
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    v["call_id"].as_str().unwrap().to_string()
}

pub fn settle() -> Instant {
    std::thread::sleep(Duration::from_millis(400));
    Instant::now()
}
