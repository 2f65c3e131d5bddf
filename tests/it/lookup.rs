//! IVR `lookup` nodes against a real HTTP service that misbehaves: one that
//! never answers, one that answers 500, and an address nobody listens on.
//! Each time the flow takes its failure branch within the node's timeout,
//! and the caller hears music, never silence, while the lookup runs.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::*;

/// How the stand-in account service behaves.
#[derive(Clone, Copy, Debug)]
enum Service {
    /// Accepts, reads the request, never answers.
    Stalls,
    /// Answers 500 Internal Server Error.
    Fails,
    /// Nobody listens on the port.
    Unreachable,
}

/// The service on a port of its own, serving until `stop` is set (bounded
/// to 20 s either way).
fn start_service(kind: Service, stop: Arc<AtomicBool>) -> u16 {
    let port = free_port();
    if let Service::Unreachable = kind {
        return port;
    }
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(20);
        let mut held = Vec::new();
        while !stop.load(Ordering::Relaxed) && Instant::now() < until {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    stream.set_nonblocking(false).unwrap();
                    stream
                        .set_read_timeout(Some(Duration::from_secs(2)))
                        .unwrap();
                    let mut buf = [0u8; 2048];
                    let _ = stream.read(&mut buf);
                    if let Service::Fails = kind {
                        let _ = stream.write_all(
                            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n",
                        );
                    }
                    held.push(stream);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    port
}

const TIMEOUT_SECS: u64 = 2;

fn flow(service_port: u16) -> String {
    format!(
        "[ivr.main]\nstart = \"ask\"\n\
         [ivr.main.nodes.ask]\ntype = \"lookup\"\n\
         url = \"http://127.0.0.1:{service_port}/account?caller={{caller}}\"\n\
         timeout = \"{TIMEOUT_SECS}s\"\nnext = \"found\"\nfailure = \"failed\"\n\
         [ivr.main.nodes.found]\ntype = \"play\"\nprompts = [\"greeting\"]\nnext = \"bye\"\n\
         [ivr.main.nodes.failed]\ntype = \"play\"\nprompts = [\"lookup_failed\"]\nnext = \"bye\"\n\
         [ivr.main.nodes.bye]\ntype = \"hangup\"\nprompts = [\"goodbye\"]\n"
    )
}

/// A call into a flow whose lookup meets `kind`: the failure branch within
/// the timeout, and audio (not silence) all the while.
fn lookup_meets(kind: Service) {
    let stop = Arc::new(AtomicBool::new(false));
    let service = start_service(kind, stop.clone());
    let server = Server::start(TestConfig::new().extra(&flow(service)));
    let mut caller = Caller::new(&server);
    let offer = sdp_offer(caller.rtp_addr(), "0", "");
    let started = Instant::now();
    assert_eq!(caller.invite("400", &offer).status(), Some(200));
    caller.ack("");
    caller
        .rtp
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    // Until the failure branch is entered: the largest gap between packets,
    // and how many carried sound (PCMU 0xFF/0x7F are silence).
    let mut buf = [0u8; 2048];
    let mut last = Instant::now();
    let mut longest_gap = Duration::ZERO;
    let mut audible = 0;
    let limit = Duration::from_secs(TIMEOUT_SECS) + Duration::from_millis(2500);
    let entered = loop {
        if !server
            .events(&["\"type\":\"ivr_node_entered\"", "\"node\":\"failed\""])
            .is_empty()
        {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{kind:?}: no failure branch within {limit:?}:\n{}",
            server.log()
        );
        if let Ok((n, _)) = caller.rtp.recv_from(&mut buf) {
            let now = Instant::now();
            longest_gap = longest_gap.max(now - last);
            last = now;
            if n > 12 && buf[12..n].iter().any(|b| *b != 0xFF && *b != 0x7F) {
                audible += 1;
            }
        } else {
            longest_gap = longest_gap.max(last.elapsed());
        }
    };
    stop.store(true, Ordering::Relaxed);
    eprintln!(
        "{kind:?}: failure branch after {entered:?}, longest audio gap {longest_gap:?}, {audible} audible packets"
    );
    assert!(
        server
            .events(&["\"type\":\"ivr_node_entered\"", "\"node\":\"found\""])
            .is_empty(),
        "{kind:?}: the success branch was taken"
    );
    if let Service::Stalls = kind {
        assert!(
            entered >= Duration::from_millis(TIMEOUT_SECS * 1000 - 200),
            "a stalled service is waited for its timeout: {entered:?}"
        );
    }
    assert!(
        longest_gap < Duration::from_millis(500),
        "{kind:?}: {longest_gap:?} of silence while the lookup ran"
    );
    // A lookup that fails at once leaves no time to hear anything.
    if entered > Duration::from_millis(500) {
        assert!(audible > 0, "{kind:?}: nothing audible during the lookup");
    }
    server.wait_event(
        &[
            "\"type\":\"prompt_started\"",
            "\"prompts\":[\"lookup_failed\"]",
        ],
        Duration::from_secs(3),
    );
    caller.bye();
}

#[test]
fn a_stalled_lookup_takes_the_failure_branch_at_its_timeout_with_music_meanwhile() {
    lookup_meets(Service::Stalls);
}

#[test]
fn a_lookup_answered_500_takes_the_failure_branch() {
    lookup_meets(Service::Fails);
}

#[test]
fn an_unreachable_lookup_service_takes_the_failure_branch() {
    lookup_meets(Service::Unreachable);
}
