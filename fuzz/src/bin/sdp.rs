//! SDP offers (answered as hotline answers them) and answers to our offers.
use hotline::media::g711::Codec;
use hotline::media::sdp::{self, Local};

fn main() {
    let local = Local {
        addr: std::net::IpAddr::from([127, 0, 0, 1]),
        port: 20000,
        session_id: 1,
        version: 1,
    };
    afl::fuzz!(|body: &[u8]| {
        if let Ok(description) = sdp::parse(body) {
            let _ = sdp::answer(&description, &local, &[Codec::Pcmu, Codec::Pcma]);
            let _ = sdp::accept_answer(&description);
        }
    });
}
