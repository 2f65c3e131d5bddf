//! SDP for hotline's audio calls: parsing a peer's session description (RFC 4566/8866),
//! answering an offer and making our own offer (RFC 3264), telephone-event (RFC 4733).
//! It owns hotline's SDP types ([`SessionDescription`], [`Negotiated`]) and the
//! offer/answer rules; the call actor owns *when* to offer or answer and the dialog's
//! `o=` session version, which must grow by one for each new SDP sent in a dialog.
//!
//! A small hand-written parser of the subset hotline needs, not an SDP crate: `sdp-rs`
//! 0.2, `webrtc-sdp` and webrtc-rs `sdp` all refuse SDP without `t=` (or `s=`), and
//! `sdp-rs` refuses a body whose last line lacks its line break; all three model the
//! full grammar (WebRTC for two of them) and bring dependencies, while hotline needs
//! only audio over RTP/AVP. Unknown lines and attributes are ignored, LF or CRLF
//! accepted; what we produce always ends its lines with CRLF.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use thiserror::Error;

use crate::media::g711::Codec;

/// hotline sends and receives 20 ms packets, whatever the peer's `a=ptime`.
pub const PTIME_MS: u32 = 20;
/// The payload type we give telephone-event in our own offers.
pub const TELEPHONE_EVENT_PT: u8 = 101;
/// The clock rate of everything hotline speaks.
const CLOCK_RATE: u32 = 8000;
/// The events we receive and send (RFC 4733 §3.2: DTMF 0-9, *, #, A-D).
const EVENTS: &str = "0-15";
/// The only transport hotline speaks.
const RTP_AVP: &str = "RTP/AVP";

/// hotline's codecs (the RTP facts SDP needs about them follow).
const CODECS: [Codec; 2] = [Codec::Pcmu, Codec::Pcma];

/// The static payload type (RFC 3551).
fn static_pt(codec: Codec) -> u8 {
    match codec {
        Codec::Pcmu => 0,
        Codec::Pcma => 8,
    }
}

/// The encoding name written in `a=rtpmap`.
fn encoding_name(codec: Codec) -> &'static str {
    match codec {
        Codec::Pcmu => "PCMU",
        Codec::Pcma => "PCMA",
    }
}

/// What can go wrong reading an SDP body or negotiating with it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SdpError {
    #[error("SDP body is not UTF-8")]
    NotUtf8,
    #[error("SDP body does not start with a v= line")]
    MissingVersion,
    #[error("unsupported SDP version v={0} (only v=0)")]
    UnsupportedVersion(String),
    #[error("SDP has no o= line")]
    MissingOrigin,
    #[error("malformed {kind} line {line}: {text:?}")]
    Malformed {
        /// The line type: `o=`, `c=`, `m=`.
        kind: &'static str,
        /// 1-based line number in the body.
        line: usize,
        text: String,
    },
    #[error("SDP has no audio stream")]
    NoAudio,
    #[error("audio stream transport {0:?} is not supported (only RTP/AVP)")]
    UnsupportedTransport(String),
    #[error("audio stream has no connection address (no c= line)")]
    NoConnection,
    #[error("no common codec; offered: {}", .0.join(", "))]
    NoCommonCodec(Vec<String>),
    #[error("the answer rejected our audio stream (port 0)")]
    AudioRejected,
    #[error("the answer chose no codec we offered; answered: {}", .0.join(", "))]
    NotOffered(Vec<String>),
}

impl SdpError {
    /// The SIP Warning code (RFC 3261 §20.43) to put beside a 488 for this error.
    pub fn warn_code(&self) -> u16 {
        match self {
            SdpError::UnsupportedTransport(_) => 302,
            SdpError::NoAudio => 304,
            SdpError::NoCommonCodec(_) | SdpError::NotOffered(_) => 305,
            SdpError::NoConnection => 301,
            _ => 399,
        }
    }
}

/// A stream's direction (RFC 3264 §5.1), as seen by whoever wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Direction {
    #[default]
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    /// The direction the other side takes: what an answer says to an offer.
    pub fn reversed(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            same => same,
        }
    }

    /// Whether this side sends media.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether this side receives media.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    fn from_flags(sends: bool, receives: bool) -> Direction {
        match (sends, receives) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }

    /// This direction with receiving taken away (a peer at `c=0.0.0.0`).
    fn without_receiving(self) -> Direction {
        Direction::from_flags(self.sends(), false)
    }

    /// Both wishes together: send (receive) only if both say so. For a peer's answer
    /// to an offer of ours that was not sendrecv: `negotiated.direction.intersect(offered)`.
    pub fn intersect(self, other: Direction) -> Direction {
        Direction::from_flags(
            self.sends() && other.sends(),
            self.receives() && other.receives(),
        )
    }

    fn attribute(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    fn from_attribute(name: &str) -> Option<Direction> {
        [
            Direction::SendRecv,
            Direction::SendOnly,
            Direction::RecvOnly,
            Direction::Inactive,
        ]
        .into_iter()
        .find(|d| d.attribute().eq_ignore_ascii_case(name))
    }
}

/// The `o=` line. Session id and version are kept as written (RFC 4566 allows any
/// number of digits); compare `version` with the previous one to tell an unchanged
/// re-offer (RFC 3264 §8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub username: String,
    pub session_id: String,
    pub version: String,
    /// An address or a host name, as written.
    pub addr: String,
}

/// An encoding from `a=rtpmap`, or implied by a static payload type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoding {
    /// As written (`PCMU`, `pcmu`, `telephone-event`); compare ignoring case.
    pub name: String,
    pub clock_rate: u32,
    pub channels: Option<u16>,
}

impl Encoding {
    fn is(&self, name: &str, clock_rate: u32) -> bool {
        self.name.eq_ignore_ascii_case(name)
            && self.clock_rate == clock_rate
            && self.channels.is_none_or(|c| c == 1)
    }

    fn codec(&self) -> Option<Codec> {
        CODECS
            .into_iter()
            .find(|&c| self.is(encoding_name(c), CLOCK_RATE))
    }
}

/// One RTP payload format of a media line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadFormat {
    pub payload_type: u8,
    /// From `a=rtpmap`, else the RFC 3551 static assignment; `None` for a dynamic
    /// payload type without `a=rtpmap`.
    pub encoding: Option<Encoding>,
    /// The `a=fmtp` parameters, as written.
    pub fmtp: Option<String>,
}

impl PayloadFormat {
    fn codec(&self) -> Option<Codec> {
        self.encoding.as_ref().and_then(Encoding::codec)
    }

    fn is_telephone_event_8k(&self) -> bool {
        self.encoding
            .as_ref()
            .is_some_and(|e| e.is("telephone-event", CLOCK_RATE))
    }
}

impl fmt::Display for PayloadFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.encoding {
            Some(e) => {
                write!(f, "{} {}/{}", self.payload_type, e.name, e.clock_rate)?;
                match e.channels {
                    Some(ch) => write!(f, "/{ch}"),
                    None => Ok(()),
                }
            }
            None => write!(f, "{} (no rtpmap)", self.payload_type),
        }
    }
}

/// One `m=` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    /// `audio`, `video`, `image`, ... as written.
    pub kind: String,
    /// 0: the stream is rejected or disabled.
    pub port: u16,
    /// `RTP/AVP`, `RTP/SAVP`, `udptl`, ... as written.
    pub proto: String,
    /// The format list as written, in `m=` order (echoed when we reject the stream).
    pub formats: Vec<String>,
    /// The formats that are RTP payload types (0-127), in `m=` order.
    pub payloads: Vec<PayloadFormat>,
    /// Media-level `c=`, which overrides the session's.
    pub connection: Option<IpAddr>,
    /// Media-level direction attribute, which overrides the session's.
    pub direction: Option<Direction>,
    /// `a=ptime`, in milliseconds.
    pub ptime: Option<u32>,
}

impl Media {
    fn is_audio(&self) -> bool {
        self.kind.eq_ignore_ascii_case("audio")
    }

    fn is_rtp_avp(&self) -> bool {
        self.proto.eq_ignore_ascii_case(RTP_AVP)
    }

    /// The first telephone-event payload type at 8000 Hz, in `m=` order.
    pub fn telephone_event(&self) -> Option<u8> {
        self.payloads
            .iter()
            .find(|p| p.is_telephone_event_8k())
            .map(|p| p.payload_type)
    }

    fn describe_payloads(&self) -> Vec<String> {
        if self.payloads.is_empty() {
            self.formats.clone()
        } else {
            self.payloads.iter().map(ToString::to_string).collect()
        }
    }
}

/// A parsed session description: what hotline reads of a peer's SDP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    pub origin: Origin,
    /// Session-level `c=`.
    pub connection: Option<IpAddr>,
    /// Session-level direction attribute.
    pub direction: Option<Direction>,
    /// Every `m=` section, in order.
    pub media: Vec<Media>,
}

impl SessionDescription {
    /// The first audio stream, if any.
    pub fn audio(&self) -> Option<&Media> {
        self.media.iter().find(|m| m.is_audio())
    }

    /// A stream's connection address: its own `c=`, else the session's.
    pub fn connection_of(&self, media: &Media) -> Option<IpAddr> {
        media.connection.or(self.connection)
    }

    /// A stream's direction as its writer states it: media level, else session
    /// level, else sendrecv. A connection address of 0.0.0.0 (or `::`), the RFC 2543
    /// way to hold, takes receiving away: we must not send there.
    pub fn direction_of(&self, media: &Media) -> Direction {
        let stated = media.direction.or(self.direction).unwrap_or_default();
        match self.connection_of(media) {
            Some(ip) if ip.is_unspecified() => stated.without_receiving(),
            _ => stated,
        }
    }

    /// Where to send a stream's RTP: `None` when the port is 0, the address is
    /// unspecified (held) or missing.
    pub fn remote_of(&self, media: &Media) -> Option<SocketAddr> {
        match self.connection_of(media) {
            Some(ip) if !ip.is_unspecified() && media.port != 0 => {
                Some(SocketAddr::new(ip, media.port))
            }
            _ => None,
        }
    }
}

/// Our side of the media: where we receive RTP, and our `o=` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Local {
    pub addr: IpAddr,
    pub port: u16,
    /// Fixed for the dialog.
    pub session_id: u64,
    /// The caller's to keep: start anywhere and add one for each new offer or answer
    /// sent in the dialog (RFC 3264 §5, §8); re-sending an unchanged SDP keeps it.
    pub version: u64,
}

/// The outcome of a negotiation, from our side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub codec: Codec,
    /// The payload type to send the codec with (the peer's number for it).
    pub payload_type: u8,
    /// The telephone-event payload type at 8000 Hz, if both sides have it.
    pub telephone_event: Option<u8>,
    /// Where to send RTP; `None` when the peer holds with 0.0.0.0 or the stream has port 0.
    pub remote: Option<SocketAddr>,
    /// Our direction: send only if it [`Direction::sends`].
    pub direction: Direction,
    /// The packet time we send, in milliseconds (always [`PTIME_MS`]).
    pub ptime: u32,
}

// ---------------------------------------------------------------------------
// Parsing

/// The audio static payload types of RFC 3551 table 4.
fn static_audio(pt: u8) -> Option<Encoding> {
    let (name, clock_rate, channels) = match pt {
        0 => ("PCMU", 8000, None),
        3 => ("GSM", 8000, None),
        4 => ("G723", 8000, None),
        5 => ("DVI4", 8000, None),
        6 => ("DVI4", 16000, None),
        7 => ("LPC", 8000, None),
        8 => ("PCMA", 8000, None),
        9 => ("G722", 8000, None),
        10 => ("L16", 44100, Some(2)),
        11 => ("L16", 44100, None),
        12 => ("QCELP", 8000, None),
        13 => ("CN", 8000, None),
        14 => ("MPA", 90000, None),
        15 => ("G728", 8000, None),
        16 => ("DVI4", 11025, None),
        17 => ("DVI4", 22050, None),
        18 => ("G729", 8000, None),
        _ => return None,
    };
    Some(Encoding {
        name: name.to_string(),
        clock_rate,
        channels,
    })
}

/// `<pt> <name>/<rate>[/<channels>]`; `None` when malformed (the attribute is ignored).
fn parse_rtpmap(value: &str) -> Option<(u8, Encoding)> {
    let (pt, rest) = value.split_once(char::is_whitespace)?;
    let mut parts = rest.trim().split('/');
    let name = parts.next()?.trim();
    let clock_rate = parts.next()?.trim().parse().ok()?;
    let channels = match parts.next() {
        Some(ch) => Some(ch.trim().parse().ok()?),
        None => None,
    };
    if name.is_empty() {
        return None;
    }
    Some((
        pt.parse().ok()?,
        Encoding {
            name: name.to_string(),
            clock_rate,
            channels,
        },
    ))
}

/// `IN IP4|IP6 <address>[/ttl][/count]`.
fn parse_connection(value: &str) -> Option<IpAddr> {
    let mut parts = value.split_whitespace();
    let net = parts.next()?;
    let _addr_type = parts.next()?;
    let addr = parts.next()?;
    if !net.eq_ignore_ascii_case("IN") {
        return None;
    }
    addr.split('/').next()?.parse().ok()
}

fn parse_origin(value: &str) -> Option<Origin> {
    let fields: Vec<&str> = value.split_whitespace().collect();
    // Right-anchored, so a user name with spaces still parses.
    let split = fields.len().checked_sub(5).filter(|&n| n >= 1)?;
    let (user, rest) = fields.split_at(split);
    match rest {
        [session_id, version, _net, _addr_type, addr] => Some(Origin {
            username: user.join(" "),
            session_id: (*session_id).to_string(),
            version: (*version).to_string(),
            addr: (*addr).to_string(),
        }),
        _ => None,
    }
}

/// A media section being read, with its attributes not yet applied to its formats.
struct MediaBuilder {
    media: Media,
    rtpmaps: Vec<(u8, Encoding)>,
    fmtps: Vec<(u8, String)>,
}

impl MediaBuilder {
    /// `<media> <port>[/<count>] <proto> <fmt> ...`
    fn parse(value: &str) -> Option<MediaBuilder> {
        let mut parts = value.split_whitespace();
        let kind = parts.next()?;
        let port = parts.next()?.split('/').next()?.parse().ok()?;
        let proto = parts.next()?;
        let formats: Vec<String> = parts.map(str::to_string).collect();
        if formats.is_empty() {
            return None;
        }
        Some(MediaBuilder {
            media: Media {
                kind: kind.to_string(),
                port,
                proto: proto.to_string(),
                formats,
                payloads: Vec::new(),
                connection: None,
                direction: None,
                ptime: None,
            },
            rtpmaps: Vec::new(),
            fmtps: Vec::new(),
        })
    }

    fn attribute(&mut self, name: &str, value: Option<&str>) {
        let parse_pt_value = |v: &str| -> Option<(u8, String)> {
            let (pt, rest) = v.split_once(char::is_whitespace)?;
            Some((pt.parse().ok()?, rest.trim().to_string()))
        };
        match (name.to_ascii_lowercase().as_str(), value) {
            ("rtpmap", Some(v)) => {
                if let Some(map) = parse_rtpmap(v) {
                    self.rtpmaps.push(map);
                }
            }
            ("fmtp", Some(v)) => {
                if let Some(fmtp) = parse_pt_value(v) {
                    self.fmtps.push(fmtp);
                }
            }
            ("ptime", Some(v)) => self.media.ptime = v.parse().ok().or(self.media.ptime),
            (flag, None) => {
                if let Some(d) = Direction::from_attribute(flag) {
                    self.media.direction = Some(d);
                }
            }
            _ => {}
        }
    }

    fn finish(mut self) -> Media {
        let audio = self.media.is_audio();
        let mut payloads = Vec::new();
        for fmt in &self.media.formats {
            let Some(pt) = fmt.parse::<u8>().ok().filter(|&pt| pt <= 127) else {
                continue;
            };
            if payloads
                .iter()
                .any(|p: &PayloadFormat| p.payload_type == pt)
            {
                continue;
            }
            // The first rtpmap for a payload type wins; else the static table.
            let encoding = self
                .rtpmaps
                .iter()
                .find(|(p, _)| *p == pt)
                .map(|(_, e)| e.clone())
                .or_else(|| if audio { static_audio(pt) } else { None });
            let fmtp = self
                .fmtps
                .iter()
                .find(|(p, _)| *p == pt)
                .map(|(_, f)| f.clone());
            payloads.push(PayloadFormat {
                payload_type: pt,
                encoding,
                fmtp,
            });
        }
        self.media.payloads = payloads;
        self.media
    }
}

/// Parses an SDP body. Strict about what hotline relies on (`v=0` first, `o=`, well-formed
/// `c=` and `m=` lines); lenient about the rest: unknown or malformed other lines and
/// attributes are ignored, `s=` and `t=` may be missing, LF or CRLF line ends, static
/// payload types need no `a=rtpmap`. An SDP without audio parses; negotiation refuses it.
pub fn parse(body: &[u8]) -> Result<SessionDescription, SdpError> {
    let text = std::str::from_utf8(body).map_err(|_| SdpError::NotUtf8)?;
    let mut lines = text
        .split('\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty());

    match lines
        .next()
        .and_then(|(_, l)| l.strip_prefix("v="))
        .map(str::trim)
    {
        Some("0") => {}
        Some(other) => return Err(SdpError::UnsupportedVersion(other.to_string())),
        None => return Err(SdpError::MissingVersion),
    }

    let mut origin = None;
    let mut connection = None;
    let mut direction = None;
    let mut media: Vec<Media> = Vec::new();
    let mut current: Option<MediaBuilder> = None;

    for (number, line) in lines {
        let Some((kind, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        let malformed = |kind: &'static str| SdpError::Malformed {
            kind,
            line: number,
            text: line.to_string(),
        };
        match kind {
            "o" if current.is_none() => {
                origin = Some(parse_origin(value).ok_or_else(|| malformed("o="))?);
            }
            "c" => {
                let addr = parse_connection(value).ok_or_else(|| malformed("c="))?;
                match current.as_mut() {
                    Some(m) => m.media.connection = Some(addr),
                    None => connection = Some(addr),
                }
            }
            "m" => {
                let next = MediaBuilder::parse(value).ok_or_else(|| malformed("m="))?;
                if let Some(done) = current.replace(next) {
                    media.push(done.finish());
                }
            }
            "a" => {
                let (name, attr_value) = match value.split_once(':') {
                    Some((n, v)) => (n.trim(), Some(v.trim())),
                    None => (value, None),
                };
                match current.as_mut() {
                    Some(m) => m.attribute(name, attr_value),
                    None if attr_value.is_none() => {
                        if let Some(d) = Direction::from_attribute(name) {
                            direction = Some(d);
                        }
                    }
                    None => {}
                }
            }
            _ => {}
        }
    }
    if let Some(done) = current {
        media.push(done.finish());
    }

    Ok(SessionDescription {
        origin: origin.ok_or(SdpError::MissingOrigin)?,
        connection,
        direction,
        media,
    })
}

// ---------------------------------------------------------------------------
// Writing

/// Builds SDP text, every line ending with CRLF.
struct Writer(String);

impl Writer {
    fn new(local: &Local) -> Writer {
        let mut w = Writer(String::with_capacity(320));
        let ip = ip_type(local.addr);
        w.line(format_args!("v=0"));
        w.line(format_args!(
            "o=hotline {} {} IN {ip} {}",
            local.session_id, local.version, local.addr
        ));
        w.line(format_args!("s=hotline"));
        w.line(format_args!("c=IN {ip} {}", local.addr));
        w.line(format_args!("t=0 0"));
        w
    }

    fn line(&mut self, args: fmt::Arguments<'_>) {
        // Writing into a String cannot fail.
        let _ = fmt::Write::write_fmt(&mut self.0, args);
        self.0.push_str("\r\n");
    }

    /// An audio section offering or answering `codecs` (payload type, codec) in order.
    fn audio(
        &mut self,
        port: u16,
        codecs: &[(u8, Codec)],
        telephone_event: Option<u8>,
        direction: Direction,
    ) {
        let mut fmts: Vec<String> = codecs.iter().map(|(pt, _)| pt.to_string()).collect();
        fmts.extend(telephone_event.map(|pt| pt.to_string()));
        self.line(format_args!("m=audio {port} {RTP_AVP} {}", fmts.join(" ")));
        for (pt, codec) in codecs {
            self.line(format_args!(
                "a=rtpmap:{pt} {}/{CLOCK_RATE}",
                encoding_name(*codec)
            ));
        }
        if let Some(pt) = telephone_event {
            self.line(format_args!("a=rtpmap:{pt} telephone-event/{CLOCK_RATE}"));
            self.line(format_args!("a=fmtp:{pt} {EVENTS}"));
        }
        self.line(format_args!("a=ptime:{PTIME_MS}"));
        self.line(format_args!("a={}", direction.attribute()));
    }

    /// A stream we reject: port 0, its transport and format list as offered.
    fn rejected(&mut self, m: &Media) {
        self.line(format_args!(
            "m={} 0 {} {}",
            m.kind,
            m.proto,
            m.formats.join(" ")
        ));
    }
}

fn ip_type(addr: IpAddr) -> &'static str {
    match addr {
        IpAddr::V4(_) => "IP4",
        IpAddr::V6(_) => "IP6",
    }
}

// ---------------------------------------------------------------------------
// Negotiation

/// Answers an offer (RFC 3264 §6). The audio stream is the first RTP/AVP audio
/// stream with a port and a codec in `codecs` (the codecs this call may use: an empty
/// slice allows none); among them the first in the *offerer's* order wins (§6.1), and
/// the offerer's payload type numbers are kept, a dynamic telephone-event one too.
/// Our direction is the offer's reversed (an offerer at `c=0.0.0.0` counts as
/// sendonly). Every other stream is answered with port 0 and its format list. An
/// offer whose only audio is at port 0 is answered with port 0, inactive (a common
/// codec is still required).
///
/// [`SdpError::NoCommonCodec`], [`SdpError::NoAudio`] and
/// [`SdpError::UnsupportedTransport`] call for a 488 with a Warning of
/// [`SdpError::warn_code`].
pub fn answer(
    offer: &SessionDescription,
    local: &Local,
    codecs: &[Codec],
) -> Result<(Negotiated, String), SdpError> {
    let audio: Vec<(usize, &Media)> = offer
        .media
        .iter()
        .enumerate()
        .filter(|(_, m)| m.is_audio())
        .collect();
    let first_audio = audio.first().ok_or(SdpError::NoAudio)?.1;
    let rtp: Vec<(usize, &Media)> = audio
        .iter()
        .copied()
        .filter(|(_, m)| m.is_rtp_avp())
        .collect();
    let Some(&(first_rtp_index, first_rtp)) = rtp.first() else {
        return Err(SdpError::UnsupportedTransport(first_audio.proto.clone()));
    };
    let no_common = |m: &Media| SdpError::NoCommonCodec(m.describe_payloads());
    // The stream we take: the first enabled one with a common codec; when every
    // audio stream is disabled (port 0), the first of them.
    let enabled: Vec<(usize, &Media)> = rtp.iter().copied().filter(|(_, m)| m.port != 0).collect();
    let (index, media, (format, codec)) = match enabled.first() {
        Some(&(_, first_enabled)) => enabled
            .iter()
            .find_map(|&(i, m)| Some((i, m, common_codec(m, codecs)?)))
            .ok_or_else(|| no_common(first_enabled))?,
        None => (
            first_rtp_index,
            first_rtp,
            common_codec(first_rtp, codecs).ok_or_else(|| no_common(first_rtp))?,
        ),
    };
    let active = media.port != 0;
    if active && offer.connection_of(media).is_none() {
        return Err(SdpError::NoConnection);
    }
    let telephone_event = media.telephone_event();
    let direction = if active {
        offer.direction_of(media).reversed()
    } else {
        Direction::Inactive
    };
    let mut w = Writer::new(local);
    for (i, m) in offer.media.iter().enumerate() {
        if i == index && active {
            w.audio(
                local.port,
                &[(format.payload_type, codec)],
                telephone_event,
                direction,
            );
        } else {
            w.rejected(m);
        }
    }
    let negotiated = Negotiated {
        codec,
        payload_type: format.payload_type,
        telephone_event,
        remote: offer.remote_of(media),
        direction,
        ptime: PTIME_MS,
    };
    Ok((negotiated, w.0))
}

/// The first of a stream's formats, in its order, that is a codec in `codecs`.
fn common_codec<'m>(media: &'m Media, codecs: &[Codec]) -> Option<(&'m PayloadFormat, Codec)> {
    media
        .payloads
        .iter()
        .find_map(|p| p.codec().filter(|c| codecs.contains(c)).map(|c| (p, c)))
}

/// Our own offer (a 200 OK to a delayed-offer INVITE, or a re-INVITE, to hold with
/// [`Direction::SendOnly`] for instance): PCMU, PCMA and telephone-event/8000 as
/// payload type [`TELEPHONE_EVENT_PT`], 20 ms, `direction`.
pub fn offer(local: &Local, direction: Direction) -> String {
    let mut w = Writer::new(local);
    w.audio(
        local.port,
        &[
            (static_pt(Codec::Pcmu), Codec::Pcmu),
            (static_pt(Codec::Pcma), Codec::Pcma),
        ],
        Some(TELEPHONE_EVENT_PT),
        direction,
    );
    w.0
}

/// Takes the peer's answer to an [`offer`] of ours. The codec is the first of the
/// answer's formats that is one we offered (PCMU or PCMA at 8000 Hz, sent with the
/// answer's payload type number); formats we did not offer are passed over, and an
/// answer with none of ours is [`SdpError::NotOffered`]. The direction is the
/// answer's reversed: what the peer lets us do. If our offer was not sendrecv (hold),
/// narrow it with [`Direction::intersect`] so a sloppy answer cannot undo the hold.
pub fn accept_answer(answer: &SessionDescription) -> Result<Negotiated, SdpError> {
    // We offer one stream, so the answer's first m= line answers it.
    let media = answer.media.first().ok_or(SdpError::NoAudio)?;
    if !media.is_audio() {
        return Err(SdpError::NoAudio);
    }
    if media.port == 0 {
        return Err(SdpError::AudioRejected);
    }
    if !media.is_rtp_avp() {
        return Err(SdpError::UnsupportedTransport(media.proto.clone()));
    }
    let (format, codec) = media
        .payloads
        .iter()
        .find_map(|p| p.codec().map(|c| (p, c)))
        .ok_or_else(|| SdpError::NotOffered(media.describe_payloads()))?;
    if answer.connection_of(media).is_none() {
        return Err(SdpError::NoConnection);
    }
    Ok(Negotiated {
        codec,
        payload_type: format.payload_type,
        telephone_event: media.telephone_event(),
        remote: answer.remote_of(media),
        direction: answer.direction_of(media).reversed(),
        ptime: PTIME_MS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn local() -> Local {
        Local {
            addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
            port: 20000,
            session_id: 42,
            version: 7,
        }
    }

    const BOTH: &[Codec] = &[Codec::Pcmu, Codec::Pcma];

    /// An offer from 198.51.100.7 with the given audio m= tail and extra lines.
    fn offer_sdp(m_tail: &str, extra: &str) -> String {
        format!(
            "v=0\r\no=peer 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\n\
             t=0 0\r\nm=audio 4000 RTP/AVP {m_tail}\r\n{extra}"
        )
    }

    fn answer_to(sdp: &str) -> Result<(Negotiated, String), SdpError> {
        answer(&parse(sdp.as_bytes())?, &local(), BOTH)
    }

    fn remote() -> Option<SocketAddr> {
        Some("198.51.100.7:4000".parse().unwrap())
    }

    /// Every answer we produce parses back, ends lines with CRLF and keeps m= count.
    fn check_produced(text: &str, m_lines: usize) -> SessionDescription {
        assert!(text.ends_with("\r\n"));
        assert!(!text.replace("\r\n", "").contains('\n'));
        assert!(!text.replace("\r\n", "").contains('\r'));
        let sdp = parse(text.as_bytes()).unwrap();
        assert_eq!(sdp.media.len(), m_lines, "{text}");
        sdp
    }

    #[test]
    fn pcmu_only() {
        let (n, text) = answer_to(&offer_sdp("0", "a=rtpmap:0 PCMU/8000\r\n")).unwrap();
        assert_eq!(n.codec, Codec::Pcmu);
        assert_eq!(n.payload_type, 0);
        assert_eq!(n.telephone_event, None);
        assert_eq!(n.remote, remote());
        assert_eq!(n.direction, Direction::SendRecv);
        assert_eq!(n.ptime, 20);
        let back = check_produced(&text, 1);
        assert_eq!(back.audio().unwrap().formats, ["0"]);
        assert_eq!(back.connection, Some(local().addr));
        assert_eq!(back.origin.version, "7");
        assert_eq!(back.origin.session_id, "42");
        assert!(text.contains("m=audio 20000 RTP/AVP 0\r\n"));
        assert!(text.contains("a=sendrecv\r\n"));
        assert!(text.contains("a=ptime:20\r\n"));
    }

    #[test]
    fn pcma_only_without_rtpmap() {
        let (n, text) = answer_to(&offer_sdp("8", "")).unwrap();
        assert_eq!((n.codec, n.payload_type), (Codec::Pcma, 8));
        assert!(text.contains("a=rtpmap:8 PCMA/8000\r\n"));
        check_produced(&text, 1);
    }

    #[test]
    fn offerer_order_wins() {
        let (n, _) = answer_to(&offer_sdp("8 0", "")).unwrap();
        assert_eq!(n.codec, Codec::Pcma);
        let (n, _) = answer_to(&offer_sdp("0 8", "")).unwrap();
        assert_eq!(n.codec, Codec::Pcmu);
        // Our preference list only says what we allow, not the order.
        let sdp = parse(offer_sdp("0 8", "").as_bytes()).unwrap();
        let (n, _) = answer(&sdp, &local(), &[Codec::Pcma, Codec::Pcmu]).unwrap();
        assert_eq!(n.codec, Codec::Pcmu);
        let (n, text) = answer(&sdp, &local(), &[Codec::Pcma]).unwrap();
        assert_eq!(n.codec, Codec::Pcma);
        assert!(text.contains("m=audio 20000 RTP/AVP 8\r\n"));
        assert!(matches!(
            answer(&sdp, &local(), &[]),
            Err(SdpError::NoCommonCodec(_))
        ));
    }

    #[test]
    fn g729_then_pcmu_picks_pcmu() {
        let (n, text) = answer_to(&offer_sdp(
            "18 0",
            "a=rtpmap:18 G729/8000\r\na=fmtp:18 annexb=no\r\n",
        ))
        .unwrap();
        assert_eq!(n.codec, Codec::Pcmu);
        assert!(text.contains("m=audio 20000 RTP/AVP 0\r\n"));
        assert!(!text.contains("G729"));
    }

    #[test]
    fn no_common_codec() {
        let err = answer_to(&offer_sdp(
            "18 111",
            "a=rtpmap:111 opus/48000/2\r\na=rtpmap:18 G729/8000\r\n",
        ))
        .unwrap_err();
        assert_eq!(
            err,
            SdpError::NoCommonCodec(vec!["18 G729/8000".into(), "111 opus/48000/2".into()])
        );
        assert_eq!(err.warn_code(), 305);
        assert_eq!(
            err.to_string(),
            "no common codec; offered: 18 G729/8000, 111 opus/48000/2"
        );
        // A dynamic PT without rtpmap is nothing we know, and PCMU at 16 kHz is not ours.
        assert!(matches!(
            answer_to(&offer_sdp("96 97", "a=rtpmap:97 PCMU/16000\r\n")),
            Err(SdpError::NoCommonCodec(_))
        ));
    }

    #[test]
    fn odd_case_rtpmap_and_dynamic_pcmu() {
        let (n, text) = answer_to(&offer_sdp("0", "a=rtpmap:0 pcmu/8000\r\n")).unwrap();
        assert_eq!(n.codec, Codec::Pcmu);
        check_produced(&text, 1);
        // A codec under a dynamic number keeps the offerer's number.
        let (n, text) = answer_to(&offer_sdp("97", "a=RTPMAP:97 Pcma/8000/1\r\n")).unwrap();
        assert_eq!((n.codec, n.payload_type), (Codec::Pcma, 97));
        assert!(text.contains("m=audio 20000 RTP/AVP 97\r\na=rtpmap:97 PCMA/8000\r\n"));
    }

    #[test]
    fn telephone_event_payload_type_is_kept() {
        for pt in [96u8, 101] {
            let (n, text) = answer_to(&offer_sdp(
                &format!("0 {pt}"),
                &format!("a=rtpmap:{pt} telephone-event/8000\r\na=fmtp:{pt} 0-16\r\n"),
            ))
            .unwrap();
            assert_eq!(n.telephone_event, Some(pt));
            assert!(text.contains(&format!("m=audio 20000 RTP/AVP 0 {pt}\r\n")));
            assert!(text.contains(&format!("a=rtpmap:{pt} telephone-event/8000\r\n")));
            assert!(text.contains(&format!("a=fmtp:{pt} 0-15\r\n")));
            let back = check_produced(&text, 1);
            assert_eq!(back.audio().unwrap().telephone_event(), Some(pt));
        }
        let (n, text) = answer_to(&offer_sdp("0", "")).unwrap();
        assert_eq!(n.telephone_event, None);
        assert!(!text.contains("telephone-event"));
    }

    #[test]
    fn telephone_event_at_8000_is_chosen() {
        let (n, text) = answer_to(&offer_sdp(
            "0 100 101",
            "a=rtpmap:100 telephone-event/48000\r\na=rtpmap:101 TELEPHONE-EVENT/8000\r\n",
        ))
        .unwrap();
        assert_eq!(n.telephone_event, Some(101));
        assert!(!text.contains("a=rtpmap:100"));
        let (n, _) = answer_to(&offer_sdp(
            "0 100",
            "a=rtpmap:100 telephone-event/16000\r\n",
        ))
        .unwrap();
        assert_eq!(n.telephone_event, None);
    }

    #[test]
    fn directions_are_reversed() {
        for (offered, ours) in [
            ("sendrecv", Direction::SendRecv),
            ("sendonly", Direction::RecvOnly),
            ("recvonly", Direction::SendOnly),
            ("inactive", Direction::Inactive),
        ] {
            let (n, text) = answer_to(&offer_sdp("0", &format!("a={offered}\r\n"))).unwrap();
            assert_eq!(n.direction, ours, "{offered}");
            assert_eq!(n.remote, remote());
            let back = check_produced(&text, 1);
            assert_eq!(back.direction_of(back.audio().unwrap()), ours);
        }
        for d in [
            Direction::SendRecv,
            Direction::SendOnly,
            Direction::RecvOnly,
            Direction::Inactive,
        ] {
            assert_eq!(d.reversed().reversed(), d);
        }
    }

    #[test]
    fn old_style_hold_with_zero_address() {
        let sdp = offer_sdp("0 8", "").replace("c=IN IP4 198.51.100.7", "c=IN IP4 0.0.0.0");
        let (n, text) = answer_to(&sdp).unwrap();
        assert_eq!(n.remote, None);
        assert_eq!(n.direction, Direction::RecvOnly);
        assert!(text.contains("a=recvonly\r\n"));
        // 0.0.0.0 with recvonly leaves nothing flowing.
        let (n, _) = answer_to(&format!("{sdp}a=recvonly\r\n")).unwrap();
        assert_eq!((n.remote, n.direction), (None, Direction::Inactive));
        // The same with IPv6's unspecified address.
        let sdp = offer_sdp("0", "c=IN IP6 ::\r\n");
        let (n, _) = answer_to(&sdp).unwrap();
        assert_eq!((n.remote, n.direction), (None, Direction::RecvOnly));
    }

    #[test]
    fn disabled_audio_is_answered_with_port_zero() {
        let sdp = offer_sdp("0 8", "").replace("m=audio 4000", "m=audio 0");
        let (n, text) = answer_to(&sdp).unwrap();
        assert_eq!(n.remote, None);
        assert_eq!(n.direction, Direction::Inactive);
        assert!(text.contains("m=audio 0 RTP/AVP 0 8\r\n"));
        let back = check_produced(&text, 1);
        assert_eq!(back.audio().unwrap().port, 0);
        // A second, active audio stream is taken instead of the disabled one.
        let sdp = format!("{sdp}m=audio 4002 RTP/AVP 8\r\n");
        let (n, text) = answer_to(&sdp).unwrap();
        assert_eq!(n.remote, Some("198.51.100.7:4002".parse().unwrap()));
        assert!(text.contains("m=audio 0 RTP/AVP 0 8\r\nm=audio 20000 RTP/AVP 8\r\n"));
    }

    #[test]
    fn other_streams_are_rejected_with_port_zero() {
        let sdp = format!(
            "{}m=video 5000 RTP/AVP 96 97\r\na=rtpmap:96 H264/90000\r\n\
             m=image 6000 udptl t38\r\nm=audio 7000 RTP/AVP 8\r\n",
            offer_sdp("0 101", "a=rtpmap:101 telephone-event/8000\r\n")
        );
        let (n, text) = answer_to(&sdp).unwrap();
        assert_eq!(n.codec, Codec::Pcmu);
        assert_eq!(n.remote, remote());
        let back = check_produced(&text, 4);
        assert_eq!(back.media[0].port, 20000);
        assert!(text.contains("m=video 0 RTP/AVP 96 97\r\n"));
        assert!(text.contains("m=image 0 udptl t38\r\n"));
        assert!(text.contains("m=audio 0 RTP/AVP 8\r\n"));
        assert!(back.media[1..].iter().all(|m| m.port == 0));
    }

    #[test]
    fn video_before_audio() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n\
                   m=video 5000 RTP/AVP 31\r\nm=audio 4000 RTP/AVP 0\r\n";
        let (n, text) = answer_to(sdp).unwrap();
        assert_eq!(n.remote, remote());
        assert!(text.contains("m=video 0 RTP/AVP 31\r\nm=audio 20000 RTP/AVP 0\r\n"));
    }

    #[test]
    fn srtp_only_is_refused() {
        let sdp = offer_sdp("0", "").replace("RTP/AVP", "RTP/SAVP");
        let err = answer_to(&sdp).unwrap_err();
        assert_eq!(err, SdpError::UnsupportedTransport("RTP/SAVP".into()));
        assert_eq!(err.warn_code(), 302);
    }

    #[test]
    fn ipv6_offer_and_ipv6_local() {
        let sdp = "v=0\r\no=- 5 5 IN IP6 2001:db8::7\r\ns=-\r\nc=IN IP6 2001:db8::7\r\nt=0 0\r\n\
                   m=audio 4000 RTP/AVP 0\r\n";
        let offer = parse(sdp.as_bytes()).unwrap();
        assert_eq!(offer.origin.addr, "2001:db8::7");
        let mut ours = local();
        ours.addr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10));
        let (n, text) = answer(&offer, &ours, BOTH).unwrap();
        assert_eq!(n.remote, Some("[2001:db8::7]:4000".parse().unwrap()));
        assert!(text.contains("c=IN IP6 2001:db8::10\r\n"));
        assert!(text.contains("o=hotline 42 7 IN IP6 2001:db8::10\r\n"));
        let back = check_produced(&text, 1);
        assert_eq!(back.connection, Some(ours.addr));
    }

    #[test]
    fn media_level_overrides_session_level() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n\
                   a=sendonly\r\nm=audio 4000 RTP/AVP 0\r\nm=audio 4002 RTP/AVP 0\r\n\
                   c=IN IP4 203.0.113.9/127\r\na=recvonly\r\n";
        let offer = parse(sdp.as_bytes()).unwrap();
        let (first, second) = (&offer.media[0], &offer.media[1]);
        assert_eq!(offer.direction_of(first), Direction::SendOnly);
        assert_eq!(offer.direction_of(second), Direction::RecvOnly);
        assert_eq!(
            offer.remote_of(first),
            Some("198.51.100.7:4000".parse().unwrap())
        );
        assert_eq!(
            offer.remote_of(second),
            Some("203.0.113.9:4002".parse().unwrap())
        );
        let (n, _) = answer(&offer, &local(), BOTH).unwrap();
        assert_eq!(n.direction, Direction::RecvOnly);
        // Media-level c= only, no session-level one.
        let sdp = "v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nt=0 0\r\n\
                   m=audio 4000 RTP/AVP 0\r\nc=IN IP4 198.51.100.7\r\n";
        let (n, _) = answer_to(sdp).unwrap();
        assert_eq!(n.remote, remote());
        // No c= anywhere.
        let sdp =
            "v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
        assert_eq!(answer_to(sdp).unwrap_err(), SdpError::NoConnection);
    }

    #[test]
    fn ptime_other_than_20_is_answered_with_20() {
        let (n, text) = answer_to(&offer_sdp("8", "a=ptime:30\r\n")).unwrap();
        assert_eq!(n.ptime, 20);
        assert!(text.contains("a=ptime:20\r\n"));
        let offer = parse(offer_sdp("8", "a=ptime:30\r\n").as_bytes()).unwrap();
        assert_eq!(offer.audio().unwrap().ptime, Some(30));
    }

    #[test]
    fn our_offer_parses_back() {
        let text = offer(&local(), Direction::SendRecv);
        let sdp = check_produced(&text, 1);
        let m = sdp.audio().unwrap();
        assert_eq!(m.formats, ["0", "8", "101"]);
        assert_eq!(m.telephone_event(), Some(101));
        assert_eq!(m.ptime, Some(20));
        assert_eq!(sdp.remote_of(m), Some("192.0.2.10:20000".parse().unwrap()));
        assert_eq!(sdp.direction_of(m), Direction::SendRecv);
        let held = offer(&local(), Direction::SendOnly);
        assert!(held.contains("a=sendonly\r\n"));
        // hotline can answer its own offer.
        let (n, _) = answer(&sdp, &local(), BOTH).unwrap();
        assert_eq!((n.codec, n.telephone_event), (Codec::Pcmu, Some(101)));
    }

    #[test]
    fn delayed_offer_round_trip() {
        // We offer in the 200 OK; the peer answers in the ACK.
        let ours = parse(offer(&local(), Direction::SendRecv).as_bytes()).unwrap();
        let peer = Local {
            addr: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)),
            port: 4000,
            session_id: 9,
            version: 1,
        };
        let (_, peer_answer) = answer(&ours, &peer, &[Codec::Pcma]).unwrap();
        let n = accept_answer(&parse(peer_answer.as_bytes()).unwrap()).unwrap();
        assert_eq!(n.codec, Codec::Pcma);
        assert_eq!(n.payload_type, 8);
        assert_eq!(n.telephone_event, Some(101));
        assert_eq!(n.remote, remote());
        assert_eq!(n.direction, Direction::SendRecv);

        // A typical phone's answer: its own order, extra lines, a different te number.
        let phone = "v=0\r\no=- 3 4 IN IP4 198.51.100.7\r\ns=call\r\nc=IN IP4 198.51.100.7\r\n\
                     t=0 0\r\nm=audio 4000 RTP/AVP 0 96\r\na=rtpmap:96 telephone-event/8000\r\n";
        let n = accept_answer(&parse(phone.as_bytes()).unwrap()).unwrap();
        assert_eq!((n.codec, n.telephone_event), (Codec::Pcmu, Some(96)));

        // An answer choosing what we did not offer.
        let g729 = phone.replace("RTP/AVP 0 96", "RTP/AVP 18");
        let err = accept_answer(&parse(g729.as_bytes()).unwrap()).unwrap_err();
        assert_eq!(err, SdpError::NotOffered(vec!["18 G729/8000".into()]));
        // A rejected stream.
        let rejected = phone.replace("m=audio 4000", "m=audio 0");
        assert_eq!(
            accept_answer(&parse(rejected.as_bytes()).unwrap()),
            Err(SdpError::AudioRejected)
        );
    }

    #[test]
    fn accepting_an_answer_to_hold() {
        let ours = parse(offer(&local(), Direction::SendOnly).as_bytes()).unwrap();
        let peer = Local {
            addr: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)),
            port: 4000,
            session_id: 9,
            version: 2,
        };
        let (theirs, text) = answer(&ours, &peer, BOTH).unwrap();
        assert_eq!(theirs.direction, Direction::RecvOnly);
        let n = accept_answer(&parse(text.as_bytes()).unwrap()).unwrap();
        assert_eq!(n.direction, Direction::SendOnly);
        // A peer answering sendrecv to our sendonly does not take us off hold.
        let sendrecv = text.replace("a=recvonly", "a=sendrecv");
        let n = accept_answer(&parse(sendrecv.as_bytes()).unwrap()).unwrap();
        assert_eq!(n.direction, Direction::SendRecv);
        assert_eq!(
            n.direction.intersect(Direction::SendOnly),
            Direction::SendOnly
        );
        // An answer at 0.0.0.0 gets nothing from us.
        let zero = sendrecv.replace("c=IN IP4 198.51.100.7", "c=IN IP4 0.0.0.0");
        let n = accept_answer(&parse(zero.as_bytes()).unwrap()).unwrap();
        assert_eq!((n.remote, n.direction), (None, Direction::RecvOnly));
    }

    #[test]
    fn sipp_default_uac_offer() {
        // `sipp -sd uac`, with its keywords filled in; SIPp may send LF line ends.
        let sdp = "v=0\no=user1 53655765 2353687637 IN IP4 127.0.0.1\ns=-\n\
                   c=IN IP4 127.0.0.1\nt=0 0\nm=audio 6000 RTP/AVP 0\na=rtpmap:0 PCMU/8000\n\n";
        let offer = parse(sdp.as_bytes()).unwrap();
        assert_eq!(
            offer.origin,
            Origin {
                username: "user1".into(),
                session_id: "53655765".into(),
                version: "2353687637".into(),
                addr: "127.0.0.1".into(),
            }
        );
        let (n, text) = answer(&offer, &local(), BOTH).unwrap();
        assert_eq!(n.codec, Codec::Pcmu);
        assert_eq!(n.remote, Some("127.0.0.1:6000".parse().unwrap()));
        check_produced(&text, 1);
        let crlf = sdp.replace('\n', "\r\n");
        assert_eq!(parse(crlf.as_bytes()).unwrap(), offer);
    }

    /// Captured from Debian's baresip 1.0.0 (`module g711.so`) dialling out.
    const BARESIP: &str = "v=0\r\no=- 3497764428 694854656 IN IP4 192.0.2.2\r\ns=-\r\n\
        c=IN IP4 192.0.2.2\r\nt=0 0\r\na=tool:baresip 1.0.0\r\nm=audio 12900 RTP/AVP 0 8 101\r\n\
        a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
        a=fmtp:101 0-15\r\na=sendrecv\r\na=label:1\r\na=rtcp-rsize\r\n\
        a=ssrc:614018168 cname:sip:1001@127.0.0.1:25060\r\na=minptime:20\r\na=ptime:20\r\n";

    #[test]
    fn baresip_offer() {
        let offer = parse(BARESIP.as_bytes()).unwrap();
        let m = offer.audio().unwrap();
        assert_eq!(m.payloads[2].fmtp.as_deref(), Some("0-15"));
        let (n, text) = answer(&offer, &local(), BOTH).unwrap();
        assert_eq!(
            n,
            Negotiated {
                codec: Codec::Pcmu,
                payload_type: 0,
                telephone_event: Some(101),
                remote: Some("192.0.2.2:12900".parse().unwrap()),
                direction: Direction::SendRecv,
                ptime: 20,
            }
        );
        assert_eq!(
            text,
            "v=0\r\no=hotline 42 7 IN IP4 192.0.2.10\r\ns=hotline\r\nc=IN IP4 192.0.2.10\r\n\
             t=0 0\r\nm=audio 20000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\n\
             a=sendrecv\r\n"
        );
        let (n, _) = answer(&offer, &local(), &[Codec::Pcma]).unwrap();
        assert_eq!(n.payload_type, 8);
    }

    #[test]
    fn linphone_style_offer_with_many_codecs() {
        let sdp = "v=0\r\no=alice 2136 1738 IN IP4 192.168.1.20\r\ns=Talk\r\n\
            c=IN IP4 192.168.1.20\r\nt=0 0\r\n\
            a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics\r\n\
            a=record:off\r\n\
            m=audio 7078 RTP/AVP 96 97 98 18 8 0 101 99 100\r\n\
            a=rtpmap:96 opus/48000/2\r\na=fmtp:96 useinbandfec=1\r\n\
            a=rtpmap:97 speex/16000\r\na=fmtp:97 vbr=on\r\na=rtpmap:98 speex/8000\r\n\
            a=fmtp:98 vbr=on\r\na=fmtp:18 annexb=yes\r\n\
            a=rtpmap:101 telephone-event/48000\r\na=rtpmap:99 telephone-event/16000\r\n\
            a=rtpmap:100 telephone-event/8000\r\na=rtcp-fb:* trr-int 1000\r\n\
            a=rtcp-fb:* ccm tmmbr\r\n\
            m=video 9078 RTP/AVP 102 103\r\na=rtpmap:102 VP8/90000\r\n\
            a=rtpmap:103 H264/90000\r\na=fmtp:103 profile-level-id=42801F\r\n\
            a=rtcp-fb:102 nack pli\r\n";
        let offer = parse(sdp.as_bytes()).unwrap();
        assert_eq!(offer.audio().unwrap().payloads.len(), 9);
        assert_eq!(
            offer.audio().unwrap().payloads[3].encoding,
            Some(Encoding {
                name: "G729".into(),
                clock_rate: 8000,
                channels: None
            })
        );
        let (n, text) = answer(&offer, &local(), BOTH).unwrap();
        assert_eq!((n.codec, n.payload_type), (Codec::Pcma, 8));
        assert_eq!(n.telephone_event, Some(100));
        assert_eq!(n.remote, Some("192.168.1.20:7078".parse().unwrap()));
        assert!(text.contains("m=audio 20000 RTP/AVP 8 100\r\n"));
        assert!(text.contains("m=video 0 RTP/AVP 102 103\r\n"));
        check_produced(&text, 2);
    }

    #[test]
    fn lenient_with_missing_and_unknown_lines() {
        // No s=, no t=, unknown line types and attributes, trailing spaces, no final
        // line break, a port count, a malformed rtpmap and a non-numeric ptime.
        let sdp = "v=0\r\no=- 1 2 IN IP4 198.51.100.7 \r\nc=IN IP4 198.51.100.7\r\nx=what\r\n\
                   garbage line\r\nm=audio 4000/2 RTP/AVP 0 8\r\na=rtpmap:8\r\na=ptime:abc\r\n\
                   a=foo:bar\r\nb=AS:64\r\na=sendrecv ";
        let (n, _) = answer_to(sdp).unwrap();
        assert_eq!((n.codec, n.remote), (Codec::Pcmu, remote()));
        // A user name with a space.
        let sdp = "v=0\no=Some User 1 2 IN IP4 198.51.100.7\nc=IN IP4 198.51.100.7\nm=audio 4000 RTP/AVP 0";
        assert_eq!(parse(sdp.as_bytes()).unwrap().origin.username, "Some User");
    }

    #[test]
    fn refusals() {
        let ok = offer_sdp("0", "");
        assert_eq!(parse(&[0xff, 0xfe, b'v']), Err(SdpError::NotUtf8));
        assert_eq!(parse(b""), Err(SdpError::MissingVersion));
        assert_eq!(
            parse(ok.replace("v=0\r\n", "").as_bytes()),
            Err(SdpError::MissingVersion)
        );
        assert_eq!(
            parse(ok.replace("v=0", "v=1").as_bytes()),
            Err(SdpError::UnsupportedVersion("1".into()))
        );
        assert_eq!(
            parse(
                ok.replace("o=peer 1 1 IN IP4 198.51.100.7\r\n", "")
                    .as_bytes()
            ),
            Err(SdpError::MissingOrigin)
        );
        for (bad, kind) in [
            ("m=audio RTP/AVP 0", "m="),
            ("m=audio 70000 RTP/AVP 0", "m="),
            ("m=audio 4000 RTP/AVP", "m="),
            ("m=audio", "m="),
        ] {
            let sdp = ok.replace("m=audio 4000 RTP/AVP 0", bad);
            match parse(sdp.as_bytes()) {
                Err(SdpError::Malformed { kind: k, line, .. }) => {
                    assert_eq!((k, line), (kind, 6), "{bad}")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
        let sdp = ok.replace("c=IN IP4 198.51.100.7", "c=IN IP4 not-an-address");
        let err = parse(sdp.as_bytes()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "malformed c= line 4: \"c=IN IP4 not-an-address\""
        );
        let sdp = ok.replace("o=peer 1 1 IN IP4 198.51.100.7", "o=peer 1 1");
        assert!(matches!(
            parse(sdp.as_bytes()),
            Err(SdpError::Malformed { kind: "o=", .. })
        ));
        let no_audio = "v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\nc=IN IP4 198.51.100.7\r\n\
                        m=video 5000 RTP/AVP 31\r\n";
        let err = answer_to(no_audio).unwrap_err();
        assert_eq!((err.clone(), err.warn_code()), (SdpError::NoAudio, 304));
        let none = "v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\n";
        assert_eq!(answer_to(none).unwrap_err(), SdpError::NoAudio);
        assert_eq!(
            accept_answer(&parse(none.as_bytes()).unwrap()),
            Err(SdpError::NoAudio)
        );
    }

    /// A tiny deterministic generator, so the loop needs no extra crate.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    #[test]
    fn random_and_mutated_inputs_do_not_panic() {
        let seeds = [
            BARESIP.to_string(),
            offer(&local(), Direction::SendOnly),
            offer_sdp(
                "0 8 101",
                "a=rtpmap:101 telephone-event/8000\r\nm=video 5 RTP/AVP 9\r\n",
            ),
        ];
        let pieces: [&[u8]; 14] = [
            b"\r\n",
            b"\n",
            b"=",
            b":",
            b"/",
            b" ",
            b"m=audio ",
            b"c=IN IP6 ::",
            b"a=rtpmap:",
            b"0.0.0.0",
            b"65536",
            b"\xff",
            b"\xc3\xa9",
            b"a=sendonly\r\n",
        ];
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for round in 0..20_000 {
            let mut body = seeds[round % seeds.len()].clone().into_bytes();
            for _ in 0..=rng.below(6) {
                let at = rng.below(body.len() + 1);
                match rng.below(5) {
                    0 if !body.is_empty() => {
                        let end = (at + rng.below(12)).min(body.len());
                        body.drain(at.min(end)..end);
                    }
                    1 if at < body.len() => body[at] = rng.next() as u8,
                    2 => {
                        let piece = pieces[rng.below(pieces.len())];
                        body.splice(at..at, piece.iter().copied());
                    }
                    3 => body.truncate(at),
                    _ => {
                        let random: Vec<u8> =
                            (0..rng.below(16)).map(|_| rng.next() as u8).collect();
                        body.splice(at..at, random);
                    }
                }
            }
            if let Ok(sdp) = parse(&body) {
                if let Ok((_, text)) = answer(&sdp, &local(), BOTH) {
                    assert!(parse(text.as_bytes()).is_ok(), "{text}");
                }
                let _ = accept_answer(&sdp);
                for m in &sdp.media {
                    let _ = (sdp.remote_of(m), sdp.direction_of(m), m.telephone_event());
                }
            }
        }
    }
}
