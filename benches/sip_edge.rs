//! The SIP edge's per-message work: screening a datagram, checking a parsed
//! request, and digest verification. Run with `cargo bench --bench sip_edge`.

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

criterion_group!(benches, screening, digest_auth);
criterion_main!(benches);
