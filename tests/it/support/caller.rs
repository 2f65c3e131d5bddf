//! A minimal caller for tests that must see the RTP itself: SIP over UDP
//! from a raw socket, RTP on its own socket.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use super::*;
use hotline::media::g711::Codec;

/// A minimal caller: SIP over UDP, RTP on its own socket.
pub struct Caller {
    pub sip: UdpClient,
    pub rtp: UdpSocket,
    pub dialog: Dialog,
    pub to: String,
    pub server_rtp: Option<SocketAddr>,
    pub cseq: u32,
    pub seq: u16,
}

pub fn sdp_offer(rtp: SocketAddr, formats: &str, extra: &str) -> String {
    format!(
        "v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {} RTP/AVP {formats}\r\n{extra}",
        rtp.port()
    )
}

pub fn media_of(body: &str) -> Option<SocketAddr> {
    let ip = body
        .lines()
        .find_map(|l| l.trim().strip_prefix("c=IN IP4 "))?
        .trim()
        .to_string();
    let port = body
        .lines()
        .find_map(|l| l.trim().strip_prefix("m=audio "))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(SocketAddr::new(ip.parse().ok()?, port))
}

impl Caller {
    pub fn new(server: &Server) -> Caller {
        let sip = UdpClient::new(server);
        // From the port registry: a kernel-picked port may be one another
        // test's server still sends to.
        let (rtp, _) = super::audio::rtp_socket();
        rtp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let dialog = sip.dialog();
        Caller {
            sip,
            rtp,
            dialog,
            to: String::new(),
            server_rtp: None,
            cseq: 1,
            seq: 1000,
        }
    }

    pub fn rtp_addr(&self) -> SocketAddr {
        self.rtp.local_addr().unwrap()
    }

    /// INVITE with `body` (an SDP offer, or empty); returns the final response.
    pub fn invite(&mut self, number: &str, body: &str) -> SipMsg {
        let uri = format!("sip:{number}@{}", self.dialog.server);
        let mut extra = vec![format!("Contact: <sip:caller@{}>", self.sip.local())];
        if !body.is_empty() {
            extra.push("Content-Type: application/sdp".into());
        }
        let invite = self.dialog.request("INVITE", &uri, number, &extra, body);
        self.sip.send(&invite);
        let ok = self
            .sip
            .final_response("INVITE", Duration::from_secs(5))
            .expect("a final response to the INVITE");
        if ok.status() == Some(200) {
            self.to = ok.header("To").unwrap().to_string();
            self.server_rtp = media_of(&ok.body);
        }
        ok
    }

    /// Like [`Caller::invite`], with `from` as the user of the From header
    /// (the caller's number as the trunk presents it).
    pub fn invite_from(&mut self, from: &str, number: &str, body: &str) -> SipMsg {
        let uri = format!("sip:{number}@{}", self.dialog.server);
        let mut extra = vec![format!("Contact: <sip:caller@{}>", self.sip.local())];
        if !body.is_empty() {
            extra.push("Content-Type: application/sdp".into());
        }
        let invite = self
            .dialog
            .request("INVITE", &uri, number, &extra, body)
            .replacen(
                &format!("From: <sip:{number}@"),
                &format!("From: <sip:{from}@"),
                1,
            );
        self.sip.send(&invite);
        let ok = self
            .sip
            .final_response("INVITE", Duration::from_secs(5))
            .expect("a final response to the INVITE");
        if ok.status() == Some(200) {
            self.to = ok.header("To").unwrap().to_string();
            self.server_rtp = media_of(&ok.body);
        }
        ok
    }

    pub fn in_dialog(&mut self, method: &str, content_type: Option<&str>, body: &str) -> String {
        let cseq = if method == "ACK" {
            1
        } else {
            self.cseq += 1;
            self.cseq
        };
        let d = &self.dialog;
        let mut s = format!(
            "{method} sip:400@{} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch={};rport\r\nMax-Forwards: 70\r\nFrom: <sip:caller@{}>;tag={}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\n",
            d.server,
            d.local,
            Dialog::branch(),
            d.server.ip(),
            d.from_tag,
            self.to,
            d.call_id
        );
        if let Some(ct) = content_type {
            s.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        s.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        s
    }

    pub fn ack(&mut self, body: &str) {
        let ack = self.in_dialog("ACK", (!body.is_empty()).then_some("application/sdp"), body);
        self.sip.send(&ack);
    }

    pub fn info(&mut self, digit: char) {
        let info = self.in_dialog(
            "INFO",
            Some("application/dtmf-relay"),
            &format!("Signal={digit}\r\nDuration=160\r\n"),
        );
        self.sip.send(&info);
        let r = self.sip.final_response("INFO", Duration::from_secs(3));
        assert_status(&r, 200, "INFO with a digit");
    }

    /// Sends an in-dialog re-INVITE with `direction` and ACKs its 200;
    /// returns the 200.
    pub fn reinvite(&mut self, version: u32, direction: &str) -> SipMsg {
        let offer = sdp_offer(
            self.rtp_addr(),
            "0",
            &format!("a=rtpmap:0 PCMU/8000\r\na={direction}\r\n"),
        )
        .replace("o=caller 1 1", &format!("o=caller 1 {version}"));
        let reinvite = self.in_dialog("INVITE", Some("application/sdp"), &offer);
        self.sip.send(&reinvite);
        let ok = self
            .sip
            .final_response("INVITE", Duration::from_secs(5))
            .expect("a final response to the re-INVITE");
        assert_eq!(ok.status(), Some(200), "{}", ok.raw);
        let cseq = self.cseq;
        let ack = self
            .in_dialog("ACK", None, "")
            .replace("CSeq: 1 ACK", &format!("CSeq: {cseq} ACK"));
        self.sip.send(&ack);
        ok
    }

    pub fn bye(&mut self) {
        let bye = self.in_dialog("BYE", None, "");
        self.sip.send(&bye);
        let r = self.sip.final_response("BYE", Duration::from_secs(3));
        assert_status(&r, 200, "BYE");
    }

    /// One key as RFC 4733 events (PT 101): start, interim, three end packets.
    pub fn press(&mut self, digit: char) {
        let event: u8 = match digit {
            '0'..='9' => digit as u8 - b'0',
            '*' => 10,
            '#' => 11,
            _ => panic!("not a key"),
        };
        let target = self.server_rtp.expect("server RTP address");
        let timestamp: u32 = u32::from(self.seq) * 1000;
        for (i, (end, duration)) in [
            (false, 160u16),
            (false, 320),
            (false, 480),
            (true, 640),
            (true, 640),
            (true, 640),
        ]
        .into_iter()
        .enumerate()
        {
            let mut p = vec![0x80, 101 | if i == 0 { 0x80 } else { 0 }];
            p.extend_from_slice(&self.seq.to_be_bytes());
            p.extend_from_slice(&timestamp.to_be_bytes());
            p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
            p.extend_from_slice(&[event, if end { 0x80 | 10 } else { 10 }]);
            p.extend_from_slice(&duration.to_be_bytes());
            self.rtp.send_to(&p, target).unwrap();
            self.seq = self.seq.wrapping_add(1);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// One key as in-band tones in PCMU (for a peer without telephone-event):
    /// 100 ms of the key's two frequencies, then 100 ms of silence.
    pub fn press_inband(&mut self, row: f64, column: f64) {
        let target = self.server_rtp.expect("server RTP address");
        let mut t = 0usize;
        for frame in 0..10 {
            let mut pcm = [0i16; 160];
            if frame < 5 {
                for s in pcm.iter_mut() {
                    let x = t as f64 / 8000.0;
                    *s = (6000.0 * (2.0 * std::f64::consts::PI * row * x).sin()
                        + 6000.0 * (2.0 * std::f64::consts::PI * column * x).sin())
                        as i16;
                    t += 1;
                }
            }
            let mut payload = [0u8; 160];
            Codec::Pcmu.encode(&pcm, &mut payload);
            let mut p = vec![0x80, 0];
            p.extend_from_slice(&self.seq.to_be_bytes());
            p.extend_from_slice(&(u32::from(self.seq) * 160).to_be_bytes());
            p.extend_from_slice(&0x2345_6789u32.to_be_bytes());
            p.extend_from_slice(&payload);
            self.rtp.send_to(&p, target).unwrap();
            self.seq = self.seq.wrapping_add(1);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Receives `n` RTP packets: (arrival, payload type, seq, timestamp, payload).
    pub fn receive(&self, n: usize) -> Vec<(Instant, u8, u16, u32, Vec<u8>)> {
        let mut out = Vec::with_capacity(n);
        let mut buf = [0u8; 2048];
        while out.len() < n {
            let (len, _) = match self.rtp.recv_from(&mut buf) {
                // A signal (a child of the test process exiting) cut the wait short.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                received => received.expect("RTP from hotline"),
            };
            let p = &buf[..len];
            assert!(len >= 12 && p[0] >> 6 == 2, "not RTP: {p:?}");
            out.push((
                Instant::now(),
                p[1] & 0x7f,
                u16::from_be_bytes([p[2], p[3]]),
                u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
                p[12..].to_vec(),
            ));
        }
        out
    }
}
