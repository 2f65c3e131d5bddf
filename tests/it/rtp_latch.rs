//! Who may take a call's RTP: a stranger spraying the server's whole RTP
//! range before the real parties speak hears nothing and is heard by no
//! one; a caller behind NAT (its SDP names a private address, its packets
//! come from elsewhere) still talks both ways.

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::acd::*;
use crate::support::audio::*;
use crate::support::caller::*;
use crate::support::*;

const CALLER_HZ: f64 = 440.0;
const AGENT_HZ: f64 = 1000.0;
const SPRAYER_HZ: f64 = 1700.0;

/// A stranger on `ip` that sends its own tone, one packet to every port of
/// `range` every 40 ms (one steady SSRC, as a real stream would), and
/// counts what comes back to it.
struct Sprayer {
    received: Arc<AtomicUsize>,
    sent: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sprayer {
    fn start(ip: &str, range: (u16, u16)) -> Sprayer {
        let socket = UdpSocket::bind((ip, 0)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(2)))
            .unwrap();
        let received = Arc::new(AtomicUsize::new(0));
        let sent = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, n, s) = (received.clone(), sent.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut payload = [0u8; 160];
            let pcm: Vec<i16> = (0..160)
                .map(|i| {
                    let x = i as f64 / 8000.0;
                    (8000.0 * (2.0 * std::f64::consts::PI * SPRAYER_HZ * x).sin()) as i16
                })
                .collect();
            hotline::media::g711::Codec::Pcmu.encode(&pcm, &mut payload);
            let mut seq = 0u16;
            let mut buf = [0u8; 2048];
            // Bounded: at most 30 s of spraying.
            let until = Instant::now() + Duration::from_secs(30);
            while !s.load(Ordering::Relaxed) && Instant::now() < until {
                let mut p = vec![0x80, 0];
                p.extend_from_slice(&seq.to_be_bytes());
                p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
                p.extend_from_slice(&0x0bad_5eedu32.to_be_bytes());
                p.extend_from_slice(&payload);
                for port in range.0..=range.1 {
                    if socket.send_to(&p, ("127.0.0.1", port)).is_ok() {
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                }
                seq = seq.wrapping_add(1);
                let next = Instant::now() + Duration::from_millis(40);
                while Instant::now() < next {
                    if socket.recv_from(&mut buf).is_ok() {
                        r.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        Sprayer {
            received,
            sent,
            stop,
            thread: Some(thread),
        }
    }

    fn received(&self) -> usize {
        self.received.load(Ordering::Relaxed)
    }

    /// Waits until every port of `range` has had `rounds` packets.
    fn wait_rounds(&self, range: (u16, u16), rounds: usize) {
        let packets = rounds * usize::from(range.1 - range.0 + 1);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.sent.load(Ordering::Relaxed) < packets {
            assert!(Instant::now() < deadline, "the stranger could not spray");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Sprayer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An RTP range of this test's own, away from the blocks other test
/// servers (of any process on the machine) take: the stranger sprays only
/// what belongs to the server under test.
fn own_rtp_range() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let slot = (std::process::id() * 2 + NEXT.fetch_add(1, Ordering::Relaxed)) % 40;
    let min = 20000 + slot * 250;
    format!("rtp_port_min = {min}\nrtp_port_max = {}", min + 199)
}

fn metric(server: &Server, line_start: &str) -> f64 {
    let page = http_get(server.http_port.unwrap(), "/metrics");
    page.lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{line_start} on the metrics page"))
}

/// Starts a stranger spraying the RTP range from `sprayer_host` before the
/// invited caller's first packet, then ACKs and lets the caller speak; returns
/// the sprayer, the caller's party and a window of bridged talk to measure.
fn talk_with_a_sprayer(
    server: &Server,
    caller_sip: &mut Caller,
    sprayer_host: &str,
) -> (Sprayer, Party, Instant, Instant) {
    let sprayer = Sprayer::start(sprayer_host, server.rtp_range());
    sprayer.wait_rounds(server.rtp_range(), 3);
    caller_sip.ack("");
    let caller = Party::start(
        caller_sip.rtp.try_clone().unwrap(),
        CALLER_HZ,
        caller_sip.server_rtp,
    );
    server.wait_event(&["\"type\":\"call_bridged\""], Duration::from_secs(10));
    let from = settle();
    std::thread::sleep(Duration::from_millis(1500));
    (sprayer, caller, from, Instant::now())
}

#[test]
fn a_stranger_spraying_the_rtp_range_first_neither_hears_nor_is_heard() {
    let server = Server::start(acd_config("").media(&own_rtp_range()).http(true));
    let agent_port = free_port();
    register_agent(&server, "1001", agent_port);
    let (agent_socket, agent_rtp) = rtp_socket();
    let agent = Party::start(agent_socket, AGENT_HZ, None);

    std::thread::scope(|s| {
        let agent_phone = s.spawn(|| answering_phone(agent_port, agent_rtp).run(&server));
        let mut caller_sip = Caller::new(&server);
        let offer = sdp_offer(caller_sip.rtp_addr(), "0", "a=rtpmap:0 PCMU/8000\r\n");
        assert_eq!(caller_sip.invite("402", &offer).status(), Some(200));
        // The stranger sprays every port of the range before the caller's
        // first packet, and on through the call (the agent's leg too).
        let (sprayer, caller, from, to) =
            talk_with_a_sprayer(&server, &mut caller_sip, "127.0.0.1");

        let caller_hears_agent = caller.share(AGENT_HZ, from, to);
        let agent_hears_caller = agent.share(CALLER_HZ, from, to);
        let caller_hears_sprayer = caller.share(SPRAYER_HZ, from, to);
        let agent_hears_sprayer = agent.share(SPRAYER_HZ, from, to);
        let sprayed = sprayer.sent.load(Ordering::Relaxed);
        let stolen = sprayer.received();
        drop(sprayer);
        assert!(sprayed > 1000, "the stranger sprayed: {sprayed} packets");
        assert!(
            caller_hears_agent > 0.3,
            "the caller hears the agent: share {caller_hears_agent:.3}; {}",
            caller.stats()
        );
        assert!(
            agent_hears_caller > 0.3,
            "the agent hears the caller: share {agent_hears_caller:.3}; {}",
            agent.stats()
        );
        assert!(
            caller_hears_sprayer < 0.02 && agent_hears_sprayer < 0.02,
            "nobody hears the stranger: caller {caller_hears_sprayer:.3}, agent {agent_hears_sprayer:.3}"
        );
        assert_eq!(stolen, 0, "the stranger received RTP from hotline");
        let rejected = metric(
            &server,
            "hotline_rtp_packets_rejected_total{reason=\"foreign_source\"}",
        );
        assert!(rejected > 100.0, "foreign packets counted: {rejected}");

        caller_sip
            .rtp
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        caller_sip.bye();
        agent_phone.join().unwrap().assert_ok(&server);
        caller.stop();
    });
    agent.stop();
}

#[test]
fn a_caller_behind_nat_talks_both_ways_and_a_stranger_cannot_take_its_place() {
    let server = Server::start(acd_config("").media(&own_rtp_range()));
    let agent_port = free_port();
    register_agent(&server, "1001", agent_port);
    let (agent_socket, agent_rtp) = rtp_socket();
    let agent = Party::start(agent_socket, AGENT_HZ, None);

    std::thread::scope(|s| {
        let agent_phone = s.spawn(|| answering_phone(agent_port, agent_rtp).run(&server));
        let mut caller_sip = Caller::new(&server);
        // The phone writes its LAN address; its packets come from the
        // NAT's (here: its real socket on 127.0.0.1, where its SIP comes
        // from too).
        let offer = sdp_offer(caller_sip.rtp_addr(), "0", "a=rtpmap:0 PCMU/8000\r\n")
            .replace("c=IN IP4 127.0.0.1", "c=IN IP4 192.168.77.20");
        assert_eq!(caller_sip.invite("402", &offer).status(), Some(200));
        // A stranger elsewhere sprays the range before the caller speaks:
        // a NAT'd caller's source is not latched from another host.
        let (sprayer, caller, from, to) =
            talk_with_a_sprayer(&server, &mut caller_sip, "127.0.0.2");
        let caller_hears_agent = caller.share(AGENT_HZ, from, to);
        let agent_hears_caller = agent.share(CALLER_HZ, from, to);
        let agent_hears_sprayer = agent.share(SPRAYER_HZ, from, to);
        let stolen = sprayer.received();
        drop(sprayer);
        assert!(
            caller_hears_agent > 0.3,
            "the NAT'd caller hears the agent: share {caller_hears_agent:.3}; {}",
            caller.stats()
        );
        assert!(
            agent_hears_caller > 0.3 && agent_hears_sprayer < 0.02,
            "the agent hears the NAT'd caller ({agent_hears_caller:.3}), not the stranger ({agent_hears_sprayer:.3}); {}",
            agent.stats()
        );
        assert_eq!(stolen, 0, "the stranger received RTP from hotline");
        caller_sip
            .rtp
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        caller_sip.bye();
        agent_phone.join().unwrap().assert_ok(&server);
        caller.stop();
    });
    agent.stop();
}
