//! RFC 4028 session timers on a call's two dialogs: towards the trunk
//! hotline is the UAS of the caller's INVITE, towards an agent the UAC.
//!
//! This module reads and writes `Session-Expires`, `Min-SE` and
//! `Supported: timer`, negotiates the interval and who refreshes, and keeps
//! each leg's refresh and expiry instants. It sends nothing: the call actor
//! asks it what is due on its one timer, sends the refresh (UPDATE, else a
//! re-INVITE) and ends the call when a session expires.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rsipstack::sip::{Header, Request, Response};
use tokio::time::Instant;

use crate::sip::header_values;

/// Session timer counts over every call since start.
#[derive(Debug, Default)]
pub struct Totals {
    /// Refreshes hotline sent that were answered 2xx.
    pub refreshes_ok: AtomicU64,
    /// Refreshes hotline sent that failed (no answer, an error answer).
    pub refreshes_failed: AtomicU64,
    /// Refreshes the peers sent that hotline answered.
    pub refreshes_received: AtomicU64,
    /// Requests answered 422 Session Interval Too Small.
    pub too_small: AtomicU64,
    /// 422s from agents' phones that hotline retried with their Min-SE.
    pub retried_after_422: AtomicU64,
}

impl Totals {
    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// `[sip]` session timer settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerSettings {
    /// The interval hotline asks for and the longest it accepts.
    pub session_expires: Duration,
    /// The shortest interval hotline accepts (`Min-SE`).
    pub min_se: Duration,
}

/// Who refreshes, as a `refresher` parameter says it: the UAC or the UAS of
/// the transaction that carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    Uac,
    Uas,
}

/// A `Session-Expires` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionExpires {
    pub secs: u64,
    pub refresher: Option<Refresher>,
}

/// Parses `1800;refresher=uac`.
pub fn parse_session_expires(value: &str) -> Option<SessionExpires> {
    let mut parts = value.split(';');
    let secs = parts.next()?.trim().parse().ok()?;
    let refresher = parts.find_map(|p| {
        let (name, value) = p.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("refresher") {
            return None;
        }
        match value.trim().to_ascii_lowercase().as_str() {
            "uac" => Some(Refresher::Uac),
            "uas" => Some(Refresher::Uas),
            _ => None,
        }
    });
    Some(SessionExpires { secs, refresher })
}

/// The seconds of a `Min-SE` value (parameters ignored).
pub fn parse_min_se(value: &str) -> Option<u64> {
    value.split(';').next()?.trim().parse().ok()
}

fn header(headers: &rsipstack::sip::Headers, long: &str, short: &str) -> Option<String> {
    header_values(headers, long)
        .into_iter()
        .chain(header_values(headers, short))
        .next()
        .map(|v| v.to_string())
}

/// Whether an option tag is in `Supported` (or its compact form `k`).
fn supports_timer(headers: &rsipstack::sip::Headers) -> bool {
    header_values(headers, "Supported")
        .into_iter()
        .chain(header_values(headers, "k"))
        .any(|v| {
            v.split(',')
                .any(|tag| tag.trim().eq_ignore_ascii_case("timer"))
        })
}

/// Whether the peer takes UPDATE (its `Allow` lists it).
pub fn allows_update(headers: &rsipstack::sip::Headers) -> bool {
    header_values(headers, "Allow").into_iter().any(|v| {
        v.split(',')
            .any(|m| m.trim().eq_ignore_ascii_case("UPDATE"))
    })
}

/// What hotline, as the UAS of a request, does with its session timer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UasDecision {
    /// The asked interval is below `min_se`: 422 with this `Min-SE`.
    TooSmall { min_se: u64 },
    /// The session runs with this timer; `headers` go into the 2xx.
    Run {
        interval: Duration,
        we_refresh: bool,
        headers: Vec<Header>,
    },
}

/// Decides the session timer for a request hotline answers (an INVITE, a
/// re-INVITE or UPDATE refresh) from its `Session-Expires`, `Min-SE` and
/// `Supported`. Without a `Session-Expires`, hotline runs the timer itself
/// as the refresher (RFC 4028 §9: a UAC without timer support only has to
/// answer the refreshes).
pub fn negotiate_uas(request: &Request, settings: &TimerSettings) -> UasDecision {
    let asked = header(&request.headers, "Session-Expires", "x")
        .as_deref()
        .and_then(parse_session_expires);
    let their_min = header(&request.headers, "Min-SE", "Min-SE")
        .as_deref()
        .and_then(parse_min_se)
        .unwrap_or(0);
    let supported = supports_timer(&request.headers);
    decide_uas(asked, their_min, supported, settings)
}

fn decide_uas(
    asked: Option<SessionExpires>,
    their_min: u64,
    supported: bool,
    settings: &TimerSettings,
) -> UasDecision {
    let our_min = settings.min_se.as_secs().max(1);
    let ours = settings.session_expires.as_secs().max(our_min);
    let (secs, refresher) = match asked {
        Some(asked) if asked.secs < our_min => return UasDecision::TooSmall { min_se: our_min },
        // Shortened to ours, never below either side's minimum.
        Some(asked) => (
            asked.secs.min(ours).max(their_min).max(our_min),
            asked.refresher.unwrap_or(if supported {
                Refresher::Uac
            } else {
                Refresher::Uas
            }),
        ),
        None => (ours.max(their_min), Refresher::Uas),
    };
    let refresher = if supported { refresher } else { Refresher::Uas };
    let mut headers = vec![Header::Other(
        "Session-Expires".into(),
        format!(
            "{secs};refresher={}",
            if refresher == Refresher::Uac {
                "uac"
            } else {
                "uas"
            }
        ),
    )];
    if supported {
        headers.push(Header::Other("Require".into(), "timer".into()));
    }
    UasDecision::Run {
        interval: Duration::from_secs(secs),
        we_refresh: refresher == Refresher::Uas,
        headers,
    }
}

/// The headers of a request hotline sends as UAC (an INVITE to an agent, a
/// refresh): it asks for `interval` and refreshes itself.
pub fn uac_headers(interval: Duration, min_se: Duration, refresh: bool) -> Vec<Header> {
    let mut value = interval.as_secs().to_string();
    if refresh {
        value.push_str(";refresher=uac");
    }
    vec![
        Header::Other("Supported".into(), "timer".into()),
        Header::Other("Session-Expires".into(), value),
        Header::Other("Min-SE".into(), min_se.as_secs().max(1).to_string()),
    ]
}

/// The timer a 2xx to hotline's request sets: the interval and who
/// refreshes. A peer that does not know session timers (no
/// `Session-Expires`) is refreshed by hotline at the interval it asked.
pub fn from_answer(response: &Response, asked: Duration) -> (Duration, bool) {
    match header(&response.headers, "Session-Expires", "x")
        .as_deref()
        .and_then(parse_session_expires)
    {
        Some(se) => (
            Duration::from_secs(se.secs.max(1)),
            se.refresher != Some(Refresher::Uas),
        ),
        None => (asked, true),
    }
}

/// The `Min-SE` a 422 asks for.
pub fn min_se_of(response: &Response) -> Option<u64> {
    header(&response.headers, "Min-SE", "Min-SE")
        .as_deref()
        .and_then(parse_min_se)
}

/// How a refresh hotline sent went.
#[derive(Debug)]
pub enum RefreshOutcome {
    /// 2xx: the answer's body (SDP for a re-INVITE), the interval, and
    /// whether hotline refreshes next.
    Refreshed {
        body: Vec<u8>,
        interval: Duration,
        we_refresh: bool,
    },
    /// The peer is there but refused this refresh (491 glare, 405 or 501 to
    /// an UPDATE, a 5xx): the session lives on until it expires, and hotline
    /// tries again, by re-INVITE when the UPDATE was refused.
    Refused { code: u16, update_refused: bool },
    /// No answer, 408 or 481 (RFC 4028 §10): the session is gone.
    Lost(String),
}

impl RefreshOutcome {
    /// The outcome of a refresh (`update`: sent as UPDATE) from its final
    /// response, `None` when none came.
    pub fn of(response: Option<&Response>, update: bool, asked: Duration) -> RefreshOutcome {
        let Some(response) = response else {
            return RefreshOutcome::Lost("no answer".into());
        };
        let code = u16::from(response.status_code.clone());
        match code {
            200..=299 => {
                let (interval, we_refresh) = from_answer(response, asked);
                RefreshOutcome::Refreshed {
                    body: response.body.clone(),
                    interval,
                    we_refresh,
                }
            }
            408 | 481 => RefreshOutcome::Lost(format!("answered {code}")),
            _ => RefreshOutcome::Refused {
                code,
                update_refused: update && matches!(code, 405 | 501),
            },
        }
    }
}

/// What a leg's timer wants now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    Nothing,
    /// Hotline sends its refresh.
    Refresh,
    /// The session ran out unrefreshed.
    Expired,
}

/// One leg's running session timer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionTimer {
    pub interval: Duration,
    pub we_refresh: bool,
    /// When hotline sends its refresh (none while one is on its way).
    refresh_at: Option<Instant>,
    expires_at: Instant,
}

impl SessionTimer {
    /// A timer (re)started by a successful refresh or answer at `now`. The
    /// refresher refreshes at half the interval; the other side ends the
    /// session a little before the interval (RFC 4028 §10: the smaller of
    /// 32 s and a third of it), so a refresh that crosses the expiry on
    /// the wire still counts.
    pub fn start(interval: Duration, we_refresh: bool, now: Instant) -> SessionTimer {
        let margin = Duration::from_secs(32).min(interval / 3);
        SessionTimer {
            interval,
            we_refresh,
            refresh_at: we_refresh.then(|| now + interval / 2),
            expires_at: if we_refresh {
                now + interval
            } else {
                now + interval - margin
            },
        }
    }

    /// A refresh was refused: the next goes out soon (2 s, or half the
    /// time left when that is shorter); the expiry stays.
    pub fn retry(&mut self, now: Instant) {
        let left = self.expires_at.saturating_duration_since(now);
        self.refresh_at = Some(now + Duration::from_secs(2).min(left / 2));
    }

    pub fn deadline(&self) -> Instant {
        self.refresh_at
            .map_or(self.expires_at, |r| r.min(self.expires_at))
    }

    /// What is due at `now`; a refresh is asked for once.
    pub fn due(&mut self, now: Instant) -> Due {
        if self.expires_at <= now {
            return Due::Expired;
        }
        match self.refresh_at {
            Some(at) if at <= now => {
                self.refresh_at = None;
                Due::Refresh
            }
            _ => Due::Nothing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: TimerSettings = TimerSettings {
        session_expires: Duration::from_secs(1800),
        min_se: Duration::from_secs(90),
    };

    fn run(d: UasDecision) -> (u64, bool, Vec<String>) {
        match d {
            UasDecision::Run {
                interval,
                we_refresh,
                headers,
            } => (
                interval.as_secs(),
                we_refresh,
                headers.iter().map(|h| h.to_string()).collect(),
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn session_expires_values_parse() {
        assert_eq!(
            parse_session_expires("1800;refresher=uac"),
            Some(SessionExpires {
                secs: 1800,
                refresher: Some(Refresher::Uac)
            })
        );
        assert_eq!(
            parse_session_expires(" 90 ; Refresher = UAS"),
            Some(SessionExpires {
                secs: 90,
                refresher: Some(Refresher::Uas)
            })
        );
        assert_eq!(
            parse_session_expires("600"),
            Some(SessionExpires {
                secs: 600,
                refresher: None
            })
        );
        assert_eq!(parse_session_expires("soon"), None);
        assert_eq!(parse_min_se("90;x=1"), Some(90));
    }

    #[test]
    fn a_too_small_interval_is_422_with_our_minimum() {
        let asked = SessionExpires {
            secs: 30,
            refresher: None,
        };
        assert_eq!(
            decide_uas(Some(asked), 0, true, &SETTINGS),
            UasDecision::TooSmall { min_se: 90 }
        );
    }

    #[test]
    fn the_uas_shortens_to_its_own_interval_and_honours_the_refresher() {
        let asked = SessionExpires {
            secs: 7200,
            refresher: Some(Refresher::Uas),
        };
        let (secs, we_refresh, headers) = run(decide_uas(Some(asked), 90, true, &SETTINGS));
        assert_eq!((secs, we_refresh), (1800, true));
        assert!(headers.iter().any(|h| h.contains("1800;refresher=uas")));
        assert!(
            headers
                .iter()
                .any(|h| h.contains("Require") && h.contains("timer"))
        );
        let asked = SessionExpires {
            secs: 600,
            refresher: None,
        };
        let (secs, we_refresh, _) = run(decide_uas(Some(asked), 0, true, &SETTINGS));
        assert_eq!(
            (secs, we_refresh),
            (600, false),
            "a UAC that knows timers refreshes"
        );
    }

    #[test]
    fn a_uac_without_timer_support_gets_hotline_as_refresher_and_no_require() {
        let (secs, we_refresh, headers) = run(decide_uas(None, 0, false, &SETTINGS));
        assert_eq!((secs, we_refresh), (1800, true));
        assert!(!headers.iter().any(|h| h.contains("Require")));
        let asked = SessionExpires {
            secs: 300,
            refresher: Some(Refresher::Uac),
        };
        let (_, we_refresh, _) = run(decide_uas(Some(asked), 0, false, &SETTINGS));
        assert!(we_refresh, "it cannot refresh without supporting timers");
    }

    #[test]
    fn the_refresher_refreshes_at_half_and_the_other_side_expires_early() {
        let t0 = Instant::now();
        let mut ours = SessionTimer::start(Duration::from_secs(90), true, t0);
        assert_eq!(ours.deadline(), t0 + Duration::from_secs(45));
        assert_eq!(ours.due(t0 + Duration::from_secs(44)), Due::Nothing);
        assert_eq!(ours.due(t0 + Duration::from_secs(45)), Due::Refresh);
        assert_eq!(ours.due(t0 + Duration::from_secs(46)), Due::Nothing);
        assert_eq!(ours.deadline(), t0 + Duration::from_secs(90));
        assert_eq!(ours.due(t0 + Duration::from_secs(90)), Due::Expired);
        let mut theirs = SessionTimer::start(Duration::from_secs(90), false, t0);
        assert_eq!(theirs.deadline(), t0 + Duration::from_secs(60));
        assert_eq!(theirs.due(t0 + Duration::from_secs(59)), Due::Nothing);
        assert_eq!(theirs.due(t0 + Duration::from_secs(60)), Due::Expired);
        let long = SessionTimer::start(Duration::from_secs(1800), false, t0);
        assert_eq!(long.deadline(), t0 + Duration::from_secs(1768));
    }

    #[test]
    fn a_refused_refresh_is_tried_again_before_the_unchanged_expiry() {
        let t0 = Instant::now();
        let mut ours = SessionTimer::start(Duration::from_secs(90), true, t0);
        let at = t0 + Duration::from_secs(45);
        assert_eq!(ours.due(at), Due::Refresh);
        ours.retry(at);
        assert_eq!(ours.deadline(), at + Duration::from_secs(2));
        let late = t0 + Duration::from_secs(89);
        ours.retry(late);
        assert_eq!(ours.deadline(), late + Duration::from_millis(500));
        assert_eq!(ours.due(t0 + Duration::from_secs(90)), Due::Expired);
    }

    fn response(code: u16, headers: Vec<Header>) -> Response {
        Response {
            status_code: code.into(),
            wire_reason: None,
            version: rsipstack::sip::Version::V2,
            headers: headers.into(),
            body: Vec::new(),
        }
    }

    #[test]
    fn refresh_answers_are_told_apart() {
        let asked = Duration::from_secs(600);
        let ok = response(
            200,
            vec![Header::Other(
                "Session-Expires".into(),
                "300;refresher=uac".into(),
            )],
        );
        assert!(matches!(
            RefreshOutcome::of(Some(&ok), true, asked),
            RefreshOutcome::Refreshed { interval, we_refresh: true, .. } if interval == Duration::from_secs(300)
        ));
        let plain_ok = response(200, vec![]);
        assert!(matches!(
            RefreshOutcome::of(Some(&plain_ok), true, asked),
            RefreshOutcome::Refreshed { interval, we_refresh: true, .. } if interval == asked
        ));
        for code in [408, 481] {
            assert!(matches!(
                RefreshOutcome::of(Some(&response(code, vec![])), false, asked),
                RefreshOutcome::Lost(_)
            ));
        }
        assert!(matches!(
            RefreshOutcome::of(None, false, asked),
            RefreshOutcome::Lost(_)
        ));
        assert!(matches!(
            RefreshOutcome::of(Some(&response(405, vec![])), true, asked),
            RefreshOutcome::Refused {
                code: 405,
                update_refused: true
            }
        ));
        assert!(matches!(
            RefreshOutcome::of(Some(&response(491, vec![])), false, asked),
            RefreshOutcome::Refused {
                code: 491,
                update_refused: false
            }
        ));
    }
}
