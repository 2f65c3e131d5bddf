//! The SIP edge's per-message work: screening a datagram, checking a parsed
//! request, digest verification, and the ceilings and lockout looked up for
//! each new INVITE or authentication. Run with `cargo bench --bench sip_edge`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use hotline::sip::digest::{self, Algorithm};
use hotline::sip::screen::{check_request, screen_datagram};
use rsipstack::sip::SipMessage;

const INVITE: &str = "INVITE sip:401@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-524287-1---77ba9a9a5e7c3d5c;rport\r\n\
Max-Forwards: 70\r\n\
Contact: <sip:caller@127.0.0.1:5070>\r\n\
To: <sip:401@127.0.0.1:5060>\r\n\
From: \"Caller\" <sip:13800138000@127.0.0.1:5070>;tag=98d3a9f0\r\n\
Call-ID: 5b0c3f2ad6a94d6f9b1b5c2e7e1a0c11\r\n\
CSeq: 1 INVITE\r\n\
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS\r\n\
Content-Type: application/sdp\r\n\
User-Agent: bench\r\n\
Content-Length: 142\r\n\r\n\
v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n";

fn screening(c: &mut Criterion) {
    let packet = INVITE.as_bytes();
    c.bench_function("screen_datagram/invite", |b| {
        b.iter(|| screen_datagram(black_box(packet), "hotline"))
    });
    let Ok(SipMessage::Request(req)) = SipMessage::try_from(packet) else {
        panic!("bench INVITE does not parse");
    };
    c.bench_function("check_request/invite", |b| {
        b.iter(|| check_request(black_box(&req), true))
    });
    c.bench_function("rsipstack_parse/invite", |b| {
        b.iter(|| SipMessage::try_from(black_box(packet)))
    });
}

fn digest_auth(c: &mut Criterion) {
    for algorithm in [Algorithm::Md5, Algorithm::Sha256] {
        let value = digest::authorization_value(
            "1001",
            "demo1001",
            "hotline",
            "000000006b040792.b3d6a3d8133fa1aa.cf27c7277daadbcf7c63a3e3cad74835",
            "sip:127.0.0.1:5060",
            "REGISTER",
            algorithm,
            "0a4f113b",
            1,
            None,
        );
        c.bench_function(&format!("digest_parse_verify/{}", algorithm.name()), |b| {
            b.iter(|| {
                let creds = digest::parse_credentials(black_box(&value)).ok();
                creds.is_some_and(|c| digest::verify(&c, "REGISTER", "demo1001"))
            })
        });
    }
}

/// What each new INVITE adds: the source's token bucket, the live Call-ID
/// lookup and a call slot taken and given back; and what each
/// authentication adds: the lockout lookup and the digest uri comparison.
fn edge_limits(c: &mut Criterion) {
    use hotline::sip::auth::uri_matches;
    use hotline::sip::limits::{CallSlots, SourceRate};
    use hotline::sip::lockout::{Lockout, LockoutPolicy};
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::{Duration, Instant};

    let sources: Vec<IpAddr> = (0..1000u32)
        .map(|i| IpAddr::V4(Ipv4Addr::from(0xc000_0200 + i)))
        .collect();
    let rate = SourceRate::new(1e9, 1_000_000);
    let slots = CallSlots::new(1000);
    let mut n = 0usize;
    c.bench_function("new_invite_checks", |b| {
        b.iter(|| {
            n = (n + 1) % sources.len();
            let now = Instant::now();
            let admitted = rate.admit(black_box(sources[n]), now).is_ok();
            let call_id = "5b0c3f2ad6a94d6f9b1b5c2e7e1a0c11";
            let in_use = slots.in_use(black_box(call_id));
            let slot = slots.take(call_id, "carrier", 100).ok();
            (admitted, in_use, slot.is_some())
        })
    });
    let lockout = Lockout::new(LockoutPolicy {
        max_failures_per_user: 5,
        max_failures_per_source: 100,
        window: Duration::from_secs(60),
        ban_time: Duration::from_secs(300),
    });
    for (i, ip) in sources.iter().enumerate() {
        lockout.record_failure(*ip, &format!("{}", 1000 + i % 50), Instant::now());
    }
    c.bench_function("auth_lockout_and_uri_checks", |b| {
        b.iter(|| {
            n = (n + 1) % sources.len();
            let banned = lockout.banned(black_box(sources[n]), "1001", Instant::now());
            let same = uri_matches(
                black_box("sip:401@127.0.0.1:5060"),
                black_box("sip:401@127.0.0.1:5060"),
            );
            (banned.is_some(), same)
        })
    });
    let nonces = digest::NonceIssuer::new(Duration::from_secs(300));
    let bound = [192u8, 0, 2, 1];
    let nonce = nonces.issue_bound(1_800_000_000, &bound);
    c.bench_function("nonce_check_bound", |b| {
        b.iter(|| nonces.check_bound(black_box(&nonce), 1_800_000_010, &bound))
    });
}

criterion_group!(benches, screening, digest_auth, edge_limits);
criterion_main!(benches);
