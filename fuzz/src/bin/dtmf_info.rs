//! SIP INFO DTMF bodies (application/dtmf-relay and application/dtmf).
use hotline::media::dtmf;

fn main() {
    afl::fuzz!(|body: &[u8]| {
        let _ = dtmf::parse_info("application/dtmf-relay", body);
        let _ = dtmf::parse_info("application/dtmf", body);
    });
}
