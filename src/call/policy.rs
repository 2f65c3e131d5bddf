//! The call-center rules a call actor enforces on its own call, as plain data
//! and pure timers: the ring limit (L1) and the hold clock (L2), on
//! `std::time::Instant` so the call core can use them without a runtime. The router
//! enforces the rules about agents (wrap-up, breaks, staffing).

use std::time::{Duration, Instant};

use crate::config::{HoldAction, Settings};

/// The ACD settings a call needs, read once per call.
#[derive(Debug, Clone)]
pub struct CallPolicy {
    /// How long an offer rings before it is taken back (L1).
    pub ring_limit: Duration,
    pub hold_limit: Duration,
    pub hold_warning_before: Duration,
    pub hold_action: HoldAction,
    pub queue_header: String,
    /// How often a call may be passed on (L6).
    pub max_transfers: u32,
}

impl CallPolicy {
    pub fn from_settings(settings: &Settings) -> CallPolicy {
        let acd = &settings.acd;
        CallPolicy {
            ring_limit: acd.ring_cycle * acd.answer_within_rings.max(1),
            hold_limit: acd.hold_limit,
            hold_warning_before: acd.hold_warning_before,
            hold_action: acd.hold_action,
            queue_header: acd.queue_header.clone(),
            max_transfers: acd.max_transfers,
        }
    }
}

/// What the hold clock asks for when its deadline passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldStep {
    /// The limit comes in `hold_warning_before`.
    Warning { held: Duration },
    /// The limit is reached for the `count`-th time (1 at the limit, 2 at
    /// twice the limit...).
    Limit { held: Duration, count: u32 },
}

/// One hold's timers: a warning before each multiple of the limit, the limit
/// itself at each multiple (the `alert` action repeats; the other actions end
/// the hold at the first).
#[derive(Debug, Clone)]
pub struct HoldClock {
    pub started: Instant,
    limit: Duration,
    warn_before: Duration,
    /// Limits already reached.
    count: u32,
    /// Whether the warning for the next limit went out.
    warned: bool,
}

impl HoldClock {
    pub fn new(started: Instant, limit: Duration, warn_before: Duration) -> HoldClock {
        let warn_before = if warn_before >= limit {
            Duration::ZERO
        } else {
            warn_before
        };
        HoldClock {
            started,
            limit,
            warn_before,
            count: 0,
            warned: false,
        }
    }

    fn next_limit(&self) -> Instant {
        self.started + self.limit * (self.count + 1)
    }

    /// When [`HoldClock::step`] has something to say.
    pub fn deadline(&self) -> Instant {
        let limit = self.next_limit();
        if self.warned || self.warn_before.is_zero() {
            limit
        } else {
            limit - self.warn_before
        }
    }

    /// The step due at `now`, if any; call again for a later one.
    pub fn step(&mut self, now: Instant) -> Option<HoldStep> {
        if now < self.deadline() {
            return None;
        }
        let held = now.saturating_duration_since(self.started);
        if !self.warned && !self.warn_before.is_zero() {
            self.warned = true;
            return Some(HoldStep::Warning { held });
        }
        self.count += 1;
        self.warned = false;
        Some(HoldStep::Limit {
            held,
            count: self.count,
        })
    }

    pub fn held(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.started)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_warns_five_seconds_before_the_limit_and_repeats_each_limit() {
        let start = Instant::now();
        let mut clock = HoldClock::new(start, Duration::from_secs(30), Duration::from_secs(5));
        assert_eq!(clock.deadline(), start + Duration::from_secs(25));
        assert_eq!(
            clock.step(clock.deadline() - Duration::from_millis(1)),
            None
        );
        assert_eq!(
            clock.step(clock.deadline()),
            Some(HoldStep::Warning {
                held: Duration::from_secs(25)
            })
        );
        assert_eq!(clock.deadline(), start + Duration::from_secs(30));
        let at = clock.deadline();
        assert_eq!(
            clock.step(at),
            Some(HoldStep::Limit {
                held: Duration::from_secs(30),
                count: 1
            })
        );
        assert_eq!(clock.step(at), None);
        assert_eq!(clock.deadline(), start + Duration::from_secs(55));
        let now = start + Duration::from_secs(60);
        assert!(matches!(clock.step(now), Some(HoldStep::Warning { .. })));
        assert_eq!(
            clock.step(now),
            Some(HoldStep::Limit {
                held: Duration::from_secs(60),
                count: 2
            })
        );
    }

    #[test]
    fn no_warning_when_it_would_not_come_before_the_limit() {
        let start = Instant::now();
        for warn in [
            Duration::ZERO,
            Duration::from_secs(30),
            Duration::from_secs(40),
        ] {
            let mut clock = HoldClock::new(start, Duration::from_secs(30), warn);
            assert_eq!(clock.deadline(), start + Duration::from_secs(30));
            let at = start + Duration::from_secs(30);
            assert!(matches!(
                clock.step(at),
                Some(HoldStep::Limit { count: 1, .. })
            ));
        }
    }

    #[test]
    fn the_default_ring_limit_is_two_rings_of_three_seconds() {
        let settings = crate::config::Settings::load(None).unwrap();
        let policy = CallPolicy::from_settings(&settings);
        assert_eq!(policy.ring_limit, Duration::from_secs(6));
        assert_eq!(policy.hold_limit, Duration::from_secs(30));
        assert_eq!(policy.hold_warning_before, Duration::from_secs(5));
        assert_eq!(policy.hold_action, HoldAction::Alert);
    }
}
