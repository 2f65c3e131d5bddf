//! Digest credentials (Authorization / Proxy-Authorization) and their check.
use hotline::sip::digest;

fn main() {
    afl::fuzz!(|value: &[u8]| {
        if let Ok(text) = std::str::from_utf8(value) {
            if let Ok(creds) = digest::parse_credentials(text) {
                let _ = digest::verify(&creds, "REGISTER", "secret");
            }
        }
    });
}
