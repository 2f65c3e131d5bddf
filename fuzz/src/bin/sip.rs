//! The SIP screen, then the SIP parser and the request checks behind it.
use hotline::sip::screen::{self, DatagramVerdict};

fn main() {
    afl::fuzz!(|packet: &[u8]| {
        if screen::screen_datagram(packet, "hotline") == DatagramVerdict::Pass {
            if let Ok(rsipstack::sip::SipMessage::Request(req)) =
                rsipstack::sip::SipMessage::try_from(packet)
            {
                if let Err(rejection) = screen::check_request(&req, true) {
                    let _ = screen::rejection_response(&req, &rejection, "hotline");
                }
            }
        }
    });
}
