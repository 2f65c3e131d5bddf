//! Overload shedding at the door: when the server falls behind (the store's
//! backlog, the media pacer's late ticks, the event bus's lag), new INVITEs
//! are answered 503 with Retry-After until it has caught up; calls already
//! up are never touched. A watcher samples the signals a few times a second
//! and feeds the pure [`OverloadGate`], whose hysteresis (in above a high
//! mark, out only after every signal stayed under half its mark for the
//! cool-down) keeps the door from flapping; the INVITE path reads one
//! atomic. With fewer than `limits.overload_min_calls` calls up the door
//! stays open: the lag then is not the calls' doing (a busy neighbour on
//! the machine), and refusing the few would not cure it. Calls shed, by reason, are counted for the metrics page, with
//! those refused at `limits.max_calls`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing::{info, warn};

/// Why new calls are refused, as the `reason` label of
/// `hotline_calls_shed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShedReason {
    /// `limits.max_calls` calls are up.
    MaxCalls,
    /// The store has more events and rows waiting than
    /// `limits.overload_store_backlog`.
    StoreBacklog,
    /// The media pacer started more than `limits.overload_pacer_late_ticks`
    /// ticks a second late.
    PacerLate,
    /// The event bus's slowest subscriber (or the metrics' queue) is more
    /// than `limits.overload_bus_lag` events behind.
    BusLag,
}

impl ShedReason {
    pub const ALL: [ShedReason; 4] = [
        ShedReason::MaxCalls,
        ShedReason::StoreBacklog,
        ShedReason::PacerLate,
        ShedReason::BusLag,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ShedReason::MaxCalls => "max_calls",
            ShedReason::StoreBacklog => "store_backlog",
            ShedReason::PacerLate => "pacer_late",
            ShedReason::BusLag => "bus_lag",
        }
    }
}

/// The high marks of the signals (0: the signal is not watched) and how
/// long every signal must stay under half its mark before new calls are
/// taken again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverloadThresholds {
    /// Calls up below which nothing is shed for overload.
    pub min_calls: u64,
    pub store_backlog: u64,
    pub pacer_late_ticks: u64,
    pub bus_lag: u64,
    pub cooldown: Duration,
}

impl OverloadThresholds {
    pub fn from_settings(settings: &crate::config::LimitsSettings) -> OverloadThresholds {
        OverloadThresholds {
            min_calls: settings.overload_min_calls,
            store_backlog: settings.overload_store_backlog,
            pacer_late_ticks: settings.overload_pacer_late_ticks,
            bus_lag: settings.overload_bus_lag,
            cooldown: settings.overload_cooldown,
        }
    }
}

/// What the server measured at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Signals {
    /// Calls up (holding a call slot).
    pub calls_up: u64,
    /// Events waiting for the store's writer plus rows not yet committed.
    pub store_backlog: u64,
    /// Pacer ticks more than 2 ms late in the last second.
    pub pacer_late_ticks: u64,
    /// Events the slowest bus subscriber (or the metrics) has yet to take.
    pub bus_lag: u64,
}

impl Signals {
    /// Each watched signal with its high mark, in the order a reason is named.
    fn marks(&self, t: &OverloadThresholds) -> [(ShedReason, u64, u64); 3] {
        [
            (
                ShedReason::StoreBacklog,
                self.store_backlog,
                t.store_backlog,
            ),
            (
                ShedReason::PacerLate,
                self.pacer_late_ticks,
                t.pacer_late_ticks,
            ),
            (ShedReason::BusLag, self.bus_lag, t.bus_lag),
        ]
    }
}

/// The hysteresis of the door, a pure function of the signals and `now`.
#[derive(Debug, Clone)]
pub struct OverloadGate {
    thresholds: OverloadThresholds,
    shedding: Option<ShedReason>,
    calm_since: Option<Instant>,
}

impl OverloadGate {
    pub fn new(thresholds: OverloadThresholds) -> OverloadGate {
        OverloadGate {
            thresholds,
            shedding: None,
            calm_since: None,
        }
    }

    /// Takes one sample; the reason new calls are refused now, if they are.
    /// In: a signal above its high mark. Out: every signal at or under half
    /// its mark, without a break, for the cool-down.
    pub fn update(&mut self, now: Instant, signals: Signals) -> Option<ShedReason> {
        if signals.calls_up < self.thresholds.min_calls {
            self.shedding = None;
            self.calm_since = None;
            return None;
        }
        let marks = signals.marks(&self.thresholds);
        let over = marks
            .iter()
            .find(|(_, value, high)| *high > 0 && value > high)
            .map(|(reason, _, _)| *reason);
        let calm = marks
            .iter()
            .all(|(_, value, high)| *high == 0 || *value <= high / 2);
        if let Some(reason) = over {
            self.shedding = Some(reason);
            self.calm_since = None;
        } else if self.shedding.is_some() {
            if calm {
                let since = *self.calm_since.get_or_insert(now);
                if now.saturating_duration_since(since) >= self.thresholds.cooldown {
                    self.shedding = None;
                    self.calm_since = None;
                }
            } else {
                self.calm_since = None;
            }
        }
        self.shedding
    }

    pub fn shedding(&self) -> Option<ShedReason> {
        self.shedding
    }
}

/// The door's state, shared by the watcher, the INVITE path and the
/// metrics page.
#[derive(Debug)]
pub struct Overload {
    thresholds: OverloadThresholds,
    /// 0: taking calls; else 1 + the index of the reason in `ShedReason::ALL`.
    active: AtomicU8,
    shed: [AtomicU64; ShedReason::ALL.len()],
}

impl Overload {
    pub fn new(thresholds: OverloadThresholds) -> Overload {
        Overload {
            thresholds,
            active: AtomicU8::new(0),
            shed: Default::default(),
        }
    }

    /// Why new calls are refused now (`MaxCalls` is never a state: the
    /// call slots decide that one per INVITE).
    pub fn shedding(&self) -> Option<ShedReason> {
        match self.active.load(Ordering::Acquire) {
            0 => None,
            n => ShedReason::ALL.get(usize::from(n) - 1).copied(),
        }
    }

    fn set(&self, reason: Option<ShedReason>) {
        let value = reason.map_or(0, |r| r as u8 + 1);
        self.active.store(value, Ordering::Release);
    }

    /// Counts one call refused for `reason`.
    pub fn count_shed(&self, reason: ShedReason) {
        self.shed[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Calls refused for `reason` since start.
    pub fn shed(&self, reason: ShedReason) -> u64 {
        self.shed[reason as usize].load(Ordering::Relaxed)
    }

    /// The Retry-After of a shed call, in seconds: the cool-down, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        self.thresholds.cooldown.as_secs_f64().ceil().max(1.0) as u64
    }

    pub fn thresholds(&self) -> OverloadThresholds {
        self.thresholds
    }
}

/// How often the watcher samples the signals.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// The window over which late pacer ticks are counted.
const LATE_WINDOW: Duration = Duration::from_secs(1);

/// Late pacer ticks within the last [`LATE_WINDOW`], from a counter that
/// only grows.
#[derive(Debug, Default)]
struct LateTicks {
    samples: VecDeque<(Instant, u64)>,
}

impl LateTicks {
    fn in_last_window(&mut self, now: Instant, total: u64) -> u64 {
        self.samples.push_back((now, total));
        while let Some(&(at, _)) = self.samples.front() {
            if now.saturating_duration_since(at) > LATE_WINDOW && self.samples.len() > 1 {
                self.samples.pop_front();
            } else {
                break;
            }
        }
        let oldest = self.samples.front().map_or(total, |&(_, n)| n);
        total.saturating_sub(oldest)
    }
}

/// What the watcher reads at each sample: the store's backlog, the pacer's
/// late ticks since start, the bus's lag.
pub struct SignalSources {
    pub calls_up: Box<dyn Fn() -> u64 + Send>,
    pub store_backlog: Box<dyn Fn() -> u64 + Send>,
    pub pacer_late_ticks_total: Box<dyn Fn() -> u64 + Send>,
    pub bus_lag: Box<dyn Fn() -> u64 + Send>,
}

/// Samples the signals until `overload` is the last handle on it, opening
/// and closing the door. Needs a tokio runtime.
pub fn watch(overload: Arc<Overload>, sources: SignalSources) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut gate = OverloadGate::new(overload.thresholds());
        let mut late = LateTicks::default();
        let mut clock = tokio::time::interval(SAMPLE_EVERY);
        clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while Arc::strong_count(&overload) > 1 {
            clock.tick().await;
            let now = Instant::now();
            let signals = Signals {
                calls_up: (sources.calls_up)(),
                store_backlog: (sources.store_backlog)(),
                pacer_late_ticks: late.in_last_window(now, (sources.pacer_late_ticks_total)()),
                bus_lag: (sources.bus_lag)(),
            };
            let before = gate.shedding();
            let after = gate.update(now, signals);
            if before != after {
                overload.set(after);
                match after {
                    Some(reason) => warn!(
                        reason = reason.label(),
                        calls_up = signals.calls_up,
                        store_backlog = signals.store_backlog,
                        pacer_late_ticks = signals.pacer_late_ticks,
                        bus_lag = signals.bus_lag,
                        "overloaded: new calls are refused (503) until the server catches up"
                    ),
                    None => info!("caught up: new calls are taken again"),
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thresholds() -> OverloadThresholds {
        OverloadThresholds {
            min_calls: 10,
            store_backlog: 100,
            pacer_late_ticks: 10,
            bus_lag: 1000,
            cooldown: Duration::from_secs(2),
        }
    }

    fn backlog(n: u64) -> Signals {
        Signals {
            calls_up: 50,
            store_backlog: n,
            ..Signals::default()
        }
    }

    #[test]
    fn the_door_closes_as_soon_as_a_signal_passes_its_mark() {
        let t0 = Instant::now();
        let mut gate = OverloadGate::new(thresholds());
        assert_eq!(
            gate.update(t0, backlog(100)),
            None,
            "at the mark is not over"
        );
        assert_eq!(
            gate.update(t0, backlog(101)),
            Some(ShedReason::StoreBacklog)
        );
        let mut gate = OverloadGate::new(thresholds());
        let late = Signals {
            calls_up: 50,
            pacer_late_ticks: 11,
            bus_lag: 1001,
            ..Signals::default()
        };
        assert_eq!(gate.update(t0, late), Some(ShedReason::PacerLate));
        let lag = Signals {
            calls_up: 50,
            bus_lag: 1001,
            ..Signals::default()
        };
        assert_eq!(
            gate.update(t0, lag),
            Some(ShedReason::BusLag),
            "the reason follows"
        );
    }

    #[test]
    fn the_door_opens_only_after_every_signal_stayed_under_half_its_mark_for_the_cooldown() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut gate = OverloadGate::new(thresholds());
        assert!(gate.update(t0, backlog(500)).is_some());
        // Under the mark but over half of it: still shedding, however long.
        assert!(gate.update(t0 + s(1), backlog(60)).is_some());
        assert!(gate.update(t0 + s(10), backlog(60)).is_some());
        // Calm from 10 s: not before 12 s.
        assert!(gate.update(t0 + s(10), backlog(50)).is_some());
        assert!(gate.update(t0 + s(11), backlog(0)).is_some());
        // A bump over half the mark restarts the cool-down.
        assert!(gate.update(t0 + s(11), backlog(51)).is_some());
        assert!(gate.update(t0 + s(12), backlog(0)).is_some());
        assert!(gate.update(t0 + s(13), backlog(0)).is_some());
        assert_eq!(gate.update(t0 + s(14), backlog(0)), None);
        // Taking calls, a value under the mark does not close the door.
        assert_eq!(gate.update(t0 + s(15), backlog(90)), None);
    }

    #[test]
    fn an_unwatched_signal_never_closes_the_door() {
        let t0 = Instant::now();
        let mut gate = OverloadGate::new(OverloadThresholds {
            min_calls: 0,
            store_backlog: 0,
            pacer_late_ticks: 0,
            bus_lag: 0,
            cooldown: Duration::from_secs(1),
        });
        let huge = Signals {
            calls_up: u64::MAX,
            store_backlog: u64::MAX,
            pacer_late_ticks: u64::MAX,
            bus_lag: u64::MAX,
        };
        assert_eq!(gate.update(t0, huge), None);
    }

    #[test]
    fn with_few_calls_up_the_door_stays_open_whatever_the_signals() {
        let t0 = Instant::now();
        let mut gate = OverloadGate::new(thresholds());
        let starved = Signals {
            calls_up: 9,
            store_backlog: 1_000,
            pacer_late_ticks: 50,
            bus_lag: 5_000,
        };
        assert_eq!(gate.update(t0, starved), None);
        let busy = Signals {
            calls_up: 10,
            ..starved
        };
        assert_eq!(gate.update(t0, busy), Some(ShedReason::StoreBacklog));
        // Once the calls have gone below the minimum, it opens at once.
        assert_eq!(gate.update(t0, starved), None);
    }

    #[test]
    fn late_ticks_are_counted_over_the_last_second() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut late = LateTicks::default();
        assert_eq!(
            late.in_last_window(t0, 100),
            0,
            "what came before start is old"
        );
        assert_eq!(late.in_last_window(t0 + ms(500), 105), 5);
        assert_eq!(late.in_last_window(t0 + ms(1000), 108), 8);
        // The sample at t0 has left the window.
        assert_eq!(late.in_last_window(t0 + ms(1400), 108), 3);
        assert_eq!(late.in_last_window(t0 + ms(3000), 108), 0);
    }

    #[test]
    fn the_shared_state_reports_the_reason_counts_and_retry_after() {
        let overload = Overload::new(OverloadThresholds {
            cooldown: Duration::from_millis(2500),
            ..thresholds()
        });
        assert_eq!(overload.shedding(), None);
        overload.set(Some(ShedReason::PacerLate));
        assert_eq!(overload.shedding(), Some(ShedReason::PacerLate));
        overload.set(None);
        assert_eq!(overload.shedding(), None);
        overload.count_shed(ShedReason::StoreBacklog);
        overload.count_shed(ShedReason::StoreBacklog);
        assert_eq!(overload.shed(ShedReason::StoreBacklog), 2);
        assert_eq!(overload.shed(ShedReason::MaxCalls), 0);
        assert_eq!(overload.retry_after_secs(), 3);
    }
}
