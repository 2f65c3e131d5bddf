//! RTP headers and RFC 4733 telephone events, as the media path reads them.
use hotline::media::dtmf::{EventDetector, TelephoneEvent};

fn main() {
    afl::fuzz!(|packet: &[u8]| {
        let mut detector = EventDetector::new();
        if let Ok(reader) = rtp_rs::RtpReader::new(packet) {
            let _ = reader.csrc().count();
            let _ = reader.extension();
            let _ = detector.on_packet(reader.timestamp(), reader.mark(), reader.payload());
        }
        let _ = TelephoneEvent::parse(packet);
        let _ = detector.flush();
    });
}
