//! The first look at every incoming SIP message, before any transaction exists.
//!
//! Owns the rules that keep bad input from reaching (or stalling) the stack:
//! requests missing a mandatory header, a CSeq that contradicts the method, a bad
//! Content-Length, Max-Forwards exhausted, and datagrams the SIP parser cannot
//! read at all. (Failed logins lock out authentication only, in the digest
//! authority: nothing here refuses a source as a whole, so a spoofed source
//! cannot cost a real one its service.) It also gives back the place of each
//! SIP/TCP connection the stack reports closed. Each gets a precise 4xx/5xx with
//! a reason phrase saying what was wrong, or silence when no answer can be
//! addressed. Checks are pure functions; the two adapters at the bottom plug them
//! into rsipstack (the transport-event inspector and the UDP socket seam).

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

use rsipstack::sip::{
    Header, HeadersExt, Method, Request, Response, Scheme, SipMessage, StatusCode, Version,
};
use rsipstack::transaction::endpoint::TransportEventInspector;
use rsipstack::transport::{SipAddr, SipConnection, TransportEvent};

use super::ALLOW;
use super::limits::EdgeLimits;

/// A request refused at the door.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: u16,
    pub reason: String,
}

impl Rejection {
    fn new(code: u16, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }
}

/// Checks a parsed request; `datagram` is true for UDP, where a Content-Length
/// larger than the body means the message was truncated (RFC 3261 §18.3).
pub fn check_request(req: &Request, datagram: bool) -> Result<(), Rejection> {
    let bad = |reason: &str| Rejection::new(400, reason);
    if req.version != Version::V2 {
        return Err(Rejection::new(505, "Version Not Supported"));
    }
    match &req.uri.scheme {
        None | Some(Scheme::Sip) | Some(Scheme::Sips) => {}
        Some(Scheme::Other(s)) if s.eq_ignore_ascii_case("tel") => {}
        Some(_) => return Err(Rejection::new(416, "Unsupported URI Scheme")),
    }
    let from = req.from_header().map_err(|_| bad("Missing From header"))?;
    match from.tag() {
        Ok(Some(_)) => {}
        _ => return Err(bad("From header has no tag")),
    }
    req.to_header().map_err(|_| bad("Missing To header"))?;
    let call_id = req
        .call_id_header()
        .map_err(|_| bad("Missing Call-ID header"))?;
    if call_id.value().trim().is_empty() {
        return Err(bad("Empty Call-ID header"));
    }
    let cseq = req.cseq_header().map_err(|_| bad("Missing CSeq header"))?;
    cseq.seq().map_err(|_| bad("Malformed CSeq number"))?;
    match cseq.method() {
        Ok(m) if m == req.method => {}
        Ok(_) => return Err(bad("CSeq method does not match the request method")),
        Err(_) => return Err(bad("Malformed CSeq method")),
    }
    for header in req.headers.iter() {
        match header {
            Header::MaxForwards(mf) => match mf.value().trim().parse::<u32>() {
                Ok(0) if req.method != Method::Ack => {
                    return Err(Rejection::new(483, "Too Many Hops"));
                }
                Ok(_) => {}
                Err(_) => return Err(bad("Malformed Max-Forwards header")),
            },
            Header::ContentLength(cl) => match cl.value().trim().parse::<usize>() {
                Ok(len) if datagram && len > req.body.len() => {
                    return Err(bad("Content-Length exceeds the message body"));
                }
                Ok(_) => {}
                Err(_) => return Err(bad("Malformed Content-Length header")),
            },
            _ => {}
        }
    }
    Ok(())
}

/// Builds the response to a rejected (parsed) request.
pub fn rejection_response(req: &Request, rejection: &Rejection, server: &str) -> Response {
    let mut headers: Vec<Header> = req
        .headers
        .iter()
        .filter(|h| {
            matches!(
                h,
                Header::Via(_) | Header::CallId(_) | Header::From(_) | Header::CSeq(_)
            )
        })
        .cloned()
        .collect();
    if let Ok(to) = req.to_header() {
        let value = match to.tag() {
            Ok(Some(_)) => to.value().to_string(),
            _ => format!("{};tag={}", to.value(), rsipstack::transaction::make_tag()),
        };
        headers.push(Header::Other("To".into(), value));
    }
    if matches!(rejection.code, 405 | 501) {
        headers.push(Header::Other("Allow".into(), ALLOW.into()));
    }
    headers.push(Header::Other("Server".into(), server.into()));
    headers.push(Header::Other("Content-Length".into(), "0".into()));
    Response {
        status_code: StatusCode::Other(rejection.code, rejection.reason.clone()),
        wire_reason: None,
        version: Version::V2,
        headers: headers.into(),
        body: Vec::new(),
    }
}

/// What to do with a raw datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatagramVerdict {
    /// The SIP parser can read it: let the stack have it.
    Pass,
    /// Unreadable, but addressed well enough to answer with these bytes.
    Answer(Vec<u8>),
    /// Unreadable and unanswerable (garbage, or a broken response).
    Drop,
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
                )
        })
}

/// Decides about a datagram by its start line and header block, the only places
/// where the SIP parser can fail. Cheap: no allocation when the datagram passes.
pub fn screen_datagram(packet: &[u8], server: &str) -> DatagramVerdict {
    if packet.iter().all(|b| b.is_ascii_whitespace()) {
        return DatagramVerdict::Pass; // keepalive
    }
    let head_end = find(packet, b"\r\n\r\n");
    let head = &packet[..head_end.unwrap_or(packet.len())];
    let line_end = find(head, b"\r\n").unwrap_or(head.len());
    let Ok(start) = std::str::from_utf8(&head[..line_end]) else {
        return DatagramVerdict::Drop;
    };
    if start.starts_with("SIP/") {
        // A response we cannot parse has nobody to answer to.
        return if head_end.is_some() && rsipstack::sip::SipMessage::try_from(packet).is_ok() {
            DatagramVerdict::Pass
        } else {
            DatagramVerdict::Drop
        };
    }
    let mut parts = start.splitn(3, [' ', '\t']);
    let (method, uri, version) = (parts.next(), parts.next(), parts.next());
    let rejection = match (method, uri, version) {
        (Some(m), Some(u), Some(v)) if is_token(m) => {
            if Method::from_str(m).is_err() {
                Rejection::new(501, "Not Implemented")
            } else if Version::from_str(v.trim()).is_err() {
                Rejection::new(505, "Version Not Supported")
            } else if rsipstack::sip::uri::parse_uri(u.trim()).is_err() {
                Rejection::new(400, "Malformed Request-URI")
            } else if head_end.is_none() {
                Rejection::new(400, "Truncated message: no empty line after the headers")
            } else {
                return DatagramVerdict::Pass;
            }
        }
        _ => Rejection::new(400, "Malformed Request-Line"),
    };
    match raw_response(head, &rejection, server) {
        Some(bytes) => DatagramVerdict::Answer(bytes),
        None => DatagramVerdict::Drop,
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

/// A response built from the raw header lines of an unparseable request, when it
/// has the headers a response must echo (Via, From, To, Call-ID, CSeq).
fn raw_response(head: &[u8], rejection: &Rejection, server: &str) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(head).ok()?;
    let (mut vias, mut from, mut to, mut call_id, mut cseq) = (Vec::new(), None, None, None, None);
    for line in text.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "via" | "v" => vias.push(value),
            "from" | "f" => from = Some(value),
            "to" | "t" => to = Some(value),
            "call-id" | "i" => call_id = Some(value),
            "cseq" => cseq = Some(value),
            _ => {}
        }
    }
    let (from, to, call_id, cseq) = (from?, to?, call_id?, cseq?);
    if vias.is_empty() {
        return None;
    }
    let mut out = format!("SIP/2.0 {} {}\r\n", rejection.code, rejection.reason);
    for via in vias {
        out.push_str(&format!("Via: {via}\r\n"));
    }
    out.push_str(&format!("From: {from}\r\n"));
    if to.contains(";tag=") {
        out.push_str(&format!("To: {to}\r\n"));
    } else {
        out.push_str(&format!(
            "To: {to};tag={}\r\n",
            rsipstack::transaction::make_tag()
        ));
    }
    out.push_str(&format!("Call-ID: {call_id}\r\nCSeq: {cseq}\r\n"));
    if rejection.code == 501 {
        out.push_str(&format!("Allow: {ALLOW}\r\n"));
    }
    out.push_str(&format!("Server: {server}\r\nContent-Length: 0\r\n\r\n"));
    Some(out.into_bytes())
}

/// Plugs [`check_request`] into rsipstack, for every transport, and watches
/// SIP/TCP connections close.
pub struct Screen {
    pub limits: Arc<EdgeLimits>,
    pub server: String,
}

fn socket_addr(addr: &SipAddr) -> Option<SocketAddr> {
    SocketAddr::try_from(addr.addr.clone()).ok()
}

impl Screen {
    async fn refuse(
        &self,
        req: &Request,
        rejection: Rejection,
        conn: &SipConnection,
        from: &SipAddr,
    ) {
        tracing::debug!(
            method = %req.method, src = %from, code = rejection.code, reason = %rejection.reason,
            "request refused"
        );
        if req.method == Method::Ack {
            return;
        }
        let resp = rejection_response(req, &rejection, &self.server);
        let dest = (!conn.is_reliable()).then_some(from);
        if let Err(e) = conn.send(SipMessage::Response(resp), dest).await {
            tracing::debug!(error = %e, "could not send refusal");
        }
    }
}

#[async_trait::async_trait]
impl TransportEventInspector for Screen {
    async fn handle(&self, event: TransportEvent) -> Option<TransportEvent> {
        if let TransportEvent::Closed(conn) = &event {
            if conn.transport() == rsipstack::sip::Transport::Tcp
                && let Some(peer) = conn.get_remote_addr().and_then(socket_addr)
            {
                self.limits.tcp.release(peer);
            }
            return Some(event);
        }
        let TransportEvent::Incoming(SipMessage::Request(req), conn, from) = &event else {
            return Some(event);
        };
        if let Err(rejection) = check_request(req, !conn.is_reliable()) {
            self.refuse(req, rejection, conn, from).await;
            return None;
        }
        Some(event)
    }
}

/// The UDP socket rsipstack reads from: datagrams its parser would silently drop
/// are answered (400/416/501/505) or dropped here, and counted.
pub struct ScreenedUdpSocket {
    socket: tokio::net::UdpSocket,
    server: String,
}

impl ScreenedUdpSocket {
    pub fn new(socket: tokio::net::UdpSocket, server: &str) -> Self {
        Self {
            socket,
            server: server.to_string(),
        }
    }
}

#[async_trait::async_trait]
impl rsipstack::platform::net::UdpSocket for ScreenedUdpSocket {
    async fn recv_from(&self, buf: &mut [u8]) -> rsipstack::Result<(usize, SocketAddr)> {
        loop {
            let (len, src) = self.socket.recv_from(buf).await?;
            match screen_datagram(&buf[..len], &self.server) {
                DatagramVerdict::Pass => return Ok((len, src)),
                DatagramVerdict::Answer(bytes) => {
                    tracing::debug!(%src, len, "unparseable request answered");
                    if let Err(e) = self.socket.send_to(&bytes, src).await {
                        tracing::debug!(error = %e, "could not answer unparseable request");
                    }
                }
                DatagramVerdict::Drop => {
                    tracing::debug!(%src, len, "unparseable datagram dropped");
                }
            }
        }
    }

    async fn send_to(&self, buf: &[u8], addr: SocketAddr) -> rsipstack::Result<usize> {
        Ok(self.socket.send_to(buf, addr).await?)
    }

    fn local_addr(&self) -> rsipstack::Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "OPTIONS sip:400@127.0.0.1 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n\
        Max-Forwards: 70\r\n\
        From: <sip:a@127.0.0.1>;tag=1\r\n\
        To: <sip:400@127.0.0.1>\r\n\
        Call-ID: abc\r\n\
        CSeq: 1 OPTIONS\r\n\
        Content-Length: 0\r\n\r\n";

    fn parse(text: &str) -> Request {
        match SipMessage::try_from(text.as_bytes()).unwrap() {
            SipMessage::Request(r) => r,
            SipMessage::Response(_) => panic!("not a request"),
        }
    }

    fn without(header: &str) -> String {
        GOOD.lines()
            .filter(|l| !l.starts_with(header))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
            .replace('\n', "\r\n")
            .replace("\r\r\n", "\r\n")
    }

    #[test]
    fn a_well_formed_request_passes() {
        assert_eq!(check_request(&parse(GOOD), true), Ok(()));
        assert_eq!(screen_datagram(GOOD.as_bytes(), "t"), DatagramVerdict::Pass);
    }

    #[test]
    fn each_missing_mandatory_header_is_named() {
        for (header, reason) in [
            ("From:", "Missing From header"),
            ("To:", "Missing To header"),
            ("Call-ID:", "Missing Call-ID header"),
            ("CSeq:", "Missing CSeq header"),
        ] {
            let req = parse(&without(header));
            assert_eq!(
                check_request(&req, true),
                Err(Rejection::new(400, reason)),
                "{header}"
            );
        }
    }

    #[test]
    fn from_without_tag_is_refused() {
        let req = parse(&GOOD.replace(";tag=1", ""));
        assert_eq!(
            check_request(&req, true).unwrap_err().reason,
            "From header has no tag"
        );
    }

    #[test]
    fn cseq_must_match_the_method() {
        let req = parse(&GOOD.replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE"));
        assert_eq!(check_request(&req, true).unwrap_err().code, 400);
        let req = parse(&GOOD.replace("CSeq: 1 OPTIONS", "CSeq: x OPTIONS"));
        assert_eq!(
            check_request(&req, true).unwrap_err().reason,
            "Malformed CSeq number"
        );
    }

    #[test]
    fn max_forwards_zero_is_483_except_for_ack() {
        let req = parse(&GOOD.replace("Max-Forwards: 70", "Max-Forwards: 0"));
        assert_eq!(check_request(&req, true).unwrap_err().code, 483);
        let ack = GOOD
            .replace("Max-Forwards: 70", "Max-Forwards: 0")
            .replace("OPTIONS", "ACK");
        assert_eq!(check_request(&parse(&ack), true), Ok(()));
        let req = parse(&GOOD.replace("Max-Forwards: 70", "Max-Forwards: lots"));
        assert_eq!(check_request(&req, true).unwrap_err().code, 400);
    }

    #[test]
    fn content_length_beyond_the_datagram_is_refused_on_udp_only() {
        let req = parse(&GOOD.replace("Content-Length: 0", "Content-Length: 50"));
        assert_eq!(
            check_request(&req, true).unwrap_err().reason,
            "Content-Length exceeds the message body"
        );
        assert_eq!(check_request(&req, false), Ok(()));
    }

    #[test]
    fn rejection_response_echoes_the_dialog_headers_with_a_to_tag() {
        let req = parse(&GOOD.replace("Max-Forwards: 70", "Max-Forwards: 0"));
        let rejection = check_request(&req, true).unwrap_err();
        let text =
            String::from_utf8(rejection_response(&req, &rejection, "hotline").to_bytes()).unwrap();
        assert!(text.starts_with("SIP/2.0 483 Too Many Hops\r\n"), "{text}");
        assert!(text.contains("Call-ID: abc"), "{text}");
        assert!(text.contains("To: <sip:400@127.0.0.1>;tag="), "{text}");
        assert!(
            text.contains("Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1"),
            "{text}"
        );
    }

    fn answer(packet: &str) -> String {
        match screen_datagram(packet.as_bytes(), "hotline") {
            DatagramVerdict::Answer(bytes) => String::from_utf8(bytes).unwrap(),
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    #[test]
    fn unknown_method_gets_501_with_allow() {
        let text = answer(&GOOD.replace("OPTIONS", "FOO"));
        assert!(
            text.starts_with("SIP/2.0 501 Not Implemented\r\n"),
            "{text}"
        );
        assert!(text.contains("Allow: INVITE"), "{text}");
        assert!(text.contains("CSeq: 1 FOO"), "{text}");
    }

    #[test]
    fn bad_version_and_bad_uri_are_named() {
        let req = parse(&GOOD.replace("SIP/2.0\r\nVia", "SIP/3.0\r\nVia"));
        assert_eq!(check_request(&req, true).unwrap_err().code, 505);
        let req = parse(&GOOD.replace("sip:400@127.0.0.1 SIP", "mailto:x@y SIP"));
        assert_eq!(check_request(&req, true).unwrap_err().code, 416);
        let text = answer(&GOOD.replace("sip:400@127.0.0.1 SIP", "sip:400@ SIP"));
        assert!(
            text.starts_with("SIP/2.0 400 Malformed Request-URI"),
            "{text}"
        );
    }

    #[test]
    fn truncated_request_is_answered_when_addressable() {
        let truncated = &GOOD[..GOOD.len() - 4];
        assert!(answer(truncated).starts_with("SIP/2.0 400 Truncated message"));
        let cut = &GOOD[..40];
        assert_eq!(screen_datagram(cut.as_bytes(), "t"), DatagramVerdict::Drop);
    }

    #[test]
    fn garbage_and_broken_responses_are_dropped() {
        for packet in [
            &b"\x00\x01\x02garbage\xff\xfe"[..],
            b"hello world\r\n\r\n",
            b"SIP/2.0 999\r\n",
            b"INVITE\r\n\r\n",
        ] {
            assert_eq!(
                screen_datagram(packet, "t"),
                DatagramVerdict::Drop,
                "{packet:?}"
            );
        }
        assert_eq!(screen_datagram(b"\r\n\r\n", "t"), DatagramVerdict::Pass);
    }

    #[test]
    fn screening_never_panics_on_arbitrary_bytes() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for len in 0..2000usize {
            let mut bytes = Vec::with_capacity(len % 300);
            for _ in 0..len % 300 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                bytes.push(state as u8);
            }
            if len % 3 == 0 {
                bytes.splice(0..0, GOOD.as_bytes()[..len % GOOD.len()].iter().copied());
            }
            let _ = screen_datagram(&bytes, "t");
        }
    }
}
