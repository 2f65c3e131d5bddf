//! Counts of SIP messages by method and status code, taken as rsipstack
//! hands messages in and out (a message inspector). Plain atomics in fixed
//! tables: counting costs a relaxed add and never allocates or locks, and the
//! label sets stay bounded whatever peers send.

use std::sync::atomic::{AtomicU64, Ordering};

use rsipstack::sip::{Method, SipMessage};
use rsipstack::transaction::endpoint::MessageInspector;
use rsipstack::transport::SipAddr;

/// The methods counted by name; everything else is "other".
pub const METHODS: [&str; 15] = [
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "REGISTER",
    "OPTIONS",
    "INFO",
    "UPDATE",
    "PRACK",
    "SUBSCRIBE",
    "NOTIFY",
    "REFER",
    "MESSAGE",
    "PUBLISH",
    "other",
];

const CODES: usize = 600; // 100..=699

fn method_index(method: &Method) -> usize {
    let name = method.to_string();
    METHODS[..METHODS.len() - 1]
        .iter()
        .position(|m| *m == name)
        .unwrap_or(METHODS.len() - 1)
}

/// Counters per direction: requests by method, responses by method and code.
pub struct Direction {
    requests: Vec<AtomicU64>,
    responses: Vec<AtomicU64>,
}

impl Direction {
    fn new() -> Direction {
        Direction {
            requests: (0..METHODS.len()).map(|_| AtomicU64::new(0)).collect(),
            responses: (0..METHODS.len() * CODES)
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }

    fn count(&self, msg: &SipMessage) {
        match msg {
            SipMessage::Request(req) => {
                self.requests[method_index(&req.method)].fetch_add(1, Ordering::Relaxed);
            }
            SipMessage::Response(resp) => {
                let code = u16::from(resp.status_code.clone());
                let method = rsipstack::sip::HeadersExt::cseq_header(resp)
                    .ok()
                    .and_then(|c| c.method().ok())
                    .map_or(METHODS.len() - 1, |m| method_index(&m));
                if (100..700).contains(&code) {
                    let slot = method * CODES + usize::from(code - 100);
                    self.responses[slot].fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Non-zero request counts: (method, count).
    pub fn requests(&self) -> Vec<(&'static str, u64)> {
        METHODS
            .iter()
            .zip(&self.requests)
            .map(|(m, c)| (*m, c.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Non-zero response counts: (method, code, count).
    pub fn responses(&self) -> Vec<(&'static str, u16, u64)> {
        self.responses
            .iter()
            .enumerate()
            .filter_map(|(slot, c)| {
                let n = c.load(Ordering::Relaxed);
                (n > 0).then(|| (METHODS[slot / CODES], (slot % CODES + 100) as u16, n))
            })
            .collect()
    }
}

/// What hotline received and what it sent.
pub struct SipStats {
    pub received: Direction,
    pub sent: Direction,
}

impl Default for SipStats {
    fn default() -> Self {
        SipStats {
            received: Direction::new(),
            sent: Direction::new(),
        }
    }
}

/// The inspector rsipstack calls; shares the counters with the metrics page.
pub struct Counting(pub std::sync::Arc<SipStats>);

impl MessageInspector for Counting {
    fn before_send(&self, msg: SipMessage, _dest: Option<&SipAddr>) -> SipMessage {
        self.0.sent.count(&msg);
        msg
    }

    fn after_received(&self, msg: SipMessage, _from: Option<&SipAddr>) -> SipMessage {
        self.0.received.count(&msg);
        msg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> SipMessage {
        SipMessage::try_from(text.replace('\n', "\r\n").as_str()).unwrap()
    }

    #[test]
    fn requests_and_responses_are_counted_by_method_and_code() {
        let stats = std::sync::Arc::new(SipStats::default());
        let inspector = Counting(stats.clone());
        let invite = parse(
            "INVITE sip:401@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\nFrom: <sip:a@127.0.0.1>;tag=1\nTo: <sip:401@127.0.0.1>\nCall-ID: c1\nCSeq: 1 INVITE\nContent-Length: 0\n\n",
        );
        let ok = parse(
            "SIP/2.0 486 Busy Here\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\nFrom: <sip:a@127.0.0.1>;tag=1\nTo: <sip:401@127.0.0.1>;tag=2\nCall-ID: c1\nCSeq: 1 INVITE\nContent-Length: 0\n\n",
        );
        let weird = parse(
            "SUBSCRIBE sip:401@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK2\nFrom: <sip:a@127.0.0.1>;tag=1\nTo: <sip:401@127.0.0.1>\nCall-ID: c2\nCSeq: 1 SUBSCRIBE\nContent-Length: 0\n\n",
        );
        inspector.after_received(invite.clone(), None);
        inspector.after_received(invite, None);
        inspector.after_received(weird, None);
        inspector.before_send(ok, None);
        assert_eq!(
            stats.received.requests(),
            vec![("INVITE", 2), ("SUBSCRIBE", 1)]
        );
        assert_eq!(stats.sent.responses(), vec![("INVITE", 486, 1)]);
        assert!(stats.sent.requests().is_empty());
        assert!(stats.received.responses().is_empty());
    }
}
