//! The `metrics` room: every figure of the call-center rulebook as a
//! Prometheus series. Call-center metrics are fed only by consuming events
//! from the bus (never on the call path); live state (queues, agents) is read
//! from the router's snapshot, and protocol counters (SIP, RTP) from the
//! edge's and media engine's atomics, when the page is scraped.
//!
//! Names start with `hotline_`, times are in seconds, and labels are of low
//! cardinality: queue, state, reason, outcome, released_by, score, method, code —
//! never a call id or a phone number. Per-agent series only with
//! `metrics.per_agent`.

mod page;

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use prometheus::{
    GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry,
};

use crate::config::Settings;
use crate::events::{Event, ReleasedBy, Stamped};

pub use page::{Sources, StoreFigures, render};

/// Buckets for waits, rings, holds, wrap-ups and breaks: seconds to an hour.
const BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0, 900.0,
    1800.0, 3600.0,
];

/// Talk times run longer (L5 averages 150 s).
const TALK_BUCKETS: &[f64] = &[
    5.0, 15.0, 30.0, 60.0, 90.0, 120.0, 150.0, 180.0, 240.0, 300.0, 450.0, 600.0, 900.0, 1800.0,
    3600.0,
];

/// What the metrics room knows of a call while it lasts.
#[derive(Debug, Default)]
struct CallTrack {
    queue: Option<String>,
}

/// When an agent entered its current state.
#[derive(Debug)]
struct AgentTrack {
    state: &'static str,
    reason: Option<String>,
    since: SystemTime,
}

/// Every event-fed series, registered in one registry.
pub struct Metrics {
    pub registry: Registry,
    per_agent: bool,
    service_level: HashMap<String, Duration>,
    calls: HashMap<String, CallTrack>,
    agents: HashMap<String, AgentTrack>,

    calls_total: IntCounter,
    calls_rejected: IntCounterVec,
    ivr_exits: IntCounterVec,
    queue_entered: IntCounterVec,
    queue_answered: IntCounterVec,
    queue_answered_within_sl: IntCounterVec,
    queue_abandoned: IntCounterVec,
    queue_overflowed: IntCounterVec,
    callbacks_requested: IntCounterVec,
    callbacks_completed: IntCounterVec,
    callbacks_failed: IntCounterVec,
    outbound_refused: IntCounterVec,
    queue_wait: HistogramVec,
    abandon_wait: HistogramVec,
    offer_ring: HistogramVec,
    talk: HistogramVec,
    hold: HistogramVec,
    wrap_up: Histogram,
    not_ready: HistogramVec,
    offers_failed: IntCounterVec,
    hold_warnings: IntCounterVec,
    hold_limit: IntCounterVec,
    breaks_over_limit: IntCounterVec,
    transfers: IntCounterVec,
    monitor_sessions: IntCounterVec,
    monitor_mode_changes: IntCounterVec,
    monitor_active: prometheus::IntGauge,
    monitor_refused: IntCounterVec,
    consultations: IntCounterVec,
    released: IntCounterVec,
    calls_expired: IntCounterVec,
    staffing_below_minimum: IntCounterVec,
    auth_failures: IntCounter,
    bans: IntCounter,
    events_lost: IntCounter,
    agent_answered: IntCounterVec,
    agent_talk: IntCounterVec,
    agent_state: IntGaugeVec,
    // --- Recording (rulebook Q1) ---
    recordings_started: IntCounter,
    recordings_finished: IntCounter,
    recording_failures: IntCounter,
    recording_bytes: IntCounter,
    survey: SurveySeries,
}

/// The post-call survey's series (rulebook Q3), and the responses per queue
/// the satisfaction ratio is computed from: (scores 4 or 5, all).
struct SurveySeries {
    responses: IntCounterVec,
    satisfaction: GaugeVec,
    counts: HashMap<String, (u64, u64)>,
}

impl SurveySeries {
    /// The queues with a survey start with zero responses of each score,
    /// their target, and a ratio that is NaN until the first response.
    fn new(r: &Registry, settings: &Settings) -> prometheus::Result<SurveySeries> {
        let responses = counter_vec(
            r,
            "hotline_survey_responses_total",
            "Post-call survey answers, by queue and score (1-5).",
            &["queue", "score"],
        )?;
        let gauge = |name: &str, help: &str| -> prometheus::Result<GaugeVec> {
            let g = GaugeVec::new(Opts::new(name, help), &["queue"])?;
            r.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let satisfaction = gauge(
            "hotline_survey_satisfaction_ratio",
            "Share of survey scores of 4 or 5 since the start, per queue (NaN before the first).",
        )?;
        let target = gauge(
            "hotline_survey_satisfaction_target_ratio",
            "The queue's survey_target.",
        )?;
        for (name, queue) in settings.queues.iter().filter(|(_, q)| q.survey.is_some()) {
            for score in ["1", "2", "3", "4", "5"] {
                responses.with_label_values(&[name.as_str(), score]);
            }
            satisfaction.with_label_values(&[name]).set(f64::NAN);
            target.with_label_values(&[name]).set(queue.survey_target.0);
        }
        Ok(SurveySeries {
            responses,
            satisfaction,
            counts: HashMap::new(),
        })
    }

    fn answered(&mut self, queue: &str, score: u8) {
        self.responses
            .with_label_values(&[queue, &score.to_string()])
            .inc();
        let (good, all) = self.counts.entry(queue.to_string()).or_default();
        *all += 1;
        if score >= 4 {
            *good += 1;
        }
        self.satisfaction
            .with_label_values(&[queue])
            .set(*good as f64 / *all as f64);
    }
}

fn counter(registry: &Registry, name: &str, help: &str) -> prometheus::Result<IntCounter> {
    let c = IntCounter::new(name, help)?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

fn counter_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

fn histogram_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> prometheus::Result<HistogramVec> {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )?;
    registry.register(Box::new(h.clone()))?;
    Ok(h)
}

fn secs_ms(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

fn released_name(by: ReleasedBy) -> &'static str {
    match by {
        ReleasedBy::Caller => "caller",
        ReleasedBy::Agent => "agent",
        ReleasedBy::System => "system",
    }
}

impl Metrics {
    /// Registers every series; the queues of `settings` start at zero so rates
    /// and service levels exist before the first call.
    pub fn new(settings: &Settings) -> prometheus::Result<Metrics> {
        let r = Registry::new();
        let q = &["queue"];
        let m = Metrics {
            per_agent: settings.metrics_per_agent,
            service_level: settings
                .queues
                .iter()
                .map(|(name, queue)| (name.clone(), queue.service_level))
                .collect(),
            calls: HashMap::new(),
            agents: HashMap::new(),
            calls_total: counter(&r, "hotline_calls_total", "Calls admitted from trunks.")?,
            calls_rejected: counter_vec(
                &r,
                "hotline_calls_rejected_total",
                "INVITEs refused, by reason.",
                &["reason"],
            )?,
            ivr_exits: counter_vec(
                &r,
                "hotline_ivr_exits_total",
                "Calls leaving an IVR flow, by flow and exit.",
                &["flow", "exit"],
            )?,
            queue_entered: counter_vec(
                &r,
                "hotline_queue_entered_total",
                "Callers joining a queue (again after an overflow or a requeue).",
                q,
            )?,
            queue_answered: counter_vec(
                &r,
                "hotline_queue_answered_total",
                "Queued callers answered by an agent.",
                q,
            )?,
            queue_answered_within_sl: counter_vec(
                &r,
                "hotline_queue_answered_within_sl_total",
                "Queued callers answered within the queue's service_level_seconds.",
                q,
            )?,
            queue_abandoned: counter_vec(
                &r,
                "hotline_queue_abandoned_total",
                "Queued callers who hung up before an agent answered.",
                q,
            )?,
            queue_overflowed: counter_vec(
                &r,
                "hotline_queue_overflowed_total",
                "Callers sent to the queue's overflow, by reason.",
                &["queue", "reason"],
            )?,
            callbacks_requested: counter_vec(
                &r,
                "hotline_callbacks_requested_total",
                "Callers who left a number to be called back.",
                q,
            )?,
            callbacks_completed: counter_vec(
                &r,
                "hotline_callbacks_completed_total",
                "Callbacks where agent and customer were connected.",
                q,
            )?,
            callbacks_failed: counter_vec(
                &r,
                "hotline_callbacks_failed_total",
                "Callbacks whose customer could not be reached.",
                q,
            )?,
            outbound_refused: counter_vec(
                &r,
                "hotline_outbound_refused_total",
                "Numbers hotline did not dial out, by trunk and reason (dial plan or ceiling).",
                &["trunk", "reason"],
            )?,
            queue_wait: histogram_vec(
                &r,
                "hotline_queue_wait_seconds",
                "Time answered callers waited, from joining the first queue.",
                q,
                BUCKETS,
            )?,
            abandon_wait: histogram_vec(
                &r,
                "hotline_queue_abandon_wait_seconds",
                "Time abandoned callers waited before hanging up.",
                q,
                BUCKETS,
            )?,
            offer_ring: histogram_vec(
                &r,
                "hotline_offer_ring_seconds",
                "Time an agent's phone rang, per offer.",
                q,
                BUCKETS,
            )?,
            talk: histogram_vec(
                &r,
                "hotline_talk_seconds",
                "Talk time of connected calls (hold included).",
                q,
                TALK_BUCKETS,
            )?,
            hold: histogram_vec(
                &r,
                "hotline_hold_seconds",
                "Duration of each hold.",
                q,
                BUCKETS,
            )?,
            wrap_up: {
                let h = Histogram::with_opts(
                    HistogramOpts::new("hotline_wrap_up_seconds", "After-call work time per call.")
                        .buckets(BUCKETS.to_vec()),
                )?;
                r.register(Box::new(h.clone()))?;
                h
            },
            not_ready: histogram_vec(
                &r,
                "hotline_not_ready_seconds",
                "Time agents spent not ready, by reason.",
                &["reason"],
                BUCKETS,
            )?,
            offers_failed: counter_vec(
                &r,
                "hotline_offers_failed_total",
                "Offers that did not connect, by outcome (no_answer = ring-no-answer).",
                &["queue", "outcome"],
            )?,
            hold_warnings: counter_vec(
                &r,
                "hotline_hold_warnings_total",
                "Holds about to reach the hold limit.",
                q,
            )?,
            hold_limit: counter_vec(
                &r,
                "hotline_hold_limit_reached_total",
                "Holds that reached the hold limit, by the action taken.",
                &["queue", "action"],
            )?,
            breaks_over_limit: counter_vec(
                &r,
                "hotline_breaks_over_limit_total",
                "Not-ready periods over the break limit (each multiple), by reason.",
                &["reason"],
            )?,
            transfers: counter_vec(
                &r,
                "hotline_transfers_total",
                "Calls transferred, by the queue they were answered from.",
                q,
            )?,
            monitor_sessions: counter_vec(
                &r,
                "hotline_monitor_sessions_total",
                "Supervisor monitoring sessions started, by first mode and how (api or phone).",
                &["mode", "via"],
            )?,
            monitor_mode_changes: counter_vec(
                &r,
                "hotline_monitor_mode_changes_total",
                "Monitoring sessions switched to a mode during the session.",
                &["mode"],
            )?,
            monitor_active: {
                let g = prometheus::IntGauge::new(
                    "hotline_monitor_sessions_active",
                    "Supervisors monitoring a live call now.",
                )?;
                r.register(Box::new(g.clone()))?;
                g
            },
            monitor_refused: counter_vec(
                &r,
                "hotline_monitor_refused_total",
                "Requests to monitor an agent refused, by via (phone, api) and reason (not_supervisor, out_of_scope, foreign_phone).",
                &["via", "reason"],
            )?,
            consultations: counter_vec(
                &r,
                "hotline_consultations_total",
                "Consultations ended, by queue and outcome (transferred: attended transfer, conference: three-way, cancelled, not_answered, ...).",
                &["queue", "outcome"],
            )?,
            released: counter_vec(
                &r,
                "hotline_calls_released_total",
                "Connected calls ended, by who hung up first.",
                &["queue", "released_by"],
            )?,
            calls_expired: counter_vec(
                &r,
                "hotline_calls_expired_total",
                "Calls hotline ended because their end never came, by reason (rtp_timeout, session_expired, max_duration).",
                &["reason"],
            )?,
            staffing_below_minimum: counter_vec(
                &r,
                "hotline_staffing_below_minimum_total",
                "Times a queue fell below its min_staffed.",
                q,
            )?,
            auth_failures: counter(
                &r,
                "hotline_auth_failures_total",
                "Failed digest authentications.",
            )?,
            bans: counter(
                &r,
                "hotline_bans_total",
                "Lockouts from authentication after repeated failures (a user from an address, or an address).",
            )?,
            events_lost: counter(
                &r,
                "hotline_metrics_events_lost_total",
                "Events the metrics room missed because it fell behind.",
            )?,
            agent_answered: counter_vec(
                &r,
                "hotline_agent_answered_total",
                "Calls answered, per agent (metrics.per_agent).",
                &["agent"],
            )?,
            agent_talk: counter_vec(
                &r,
                "hotline_agent_talk_seconds_total",
                "Talk time, per agent (metrics.per_agent).",
                &["agent"],
            )?,
            agent_state: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        "hotline_agent_state",
                        "1 for the state each agent is in (metrics.per_agent).",
                    ),
                    &["agent", "state"],
                )?;
                if settings.metrics_per_agent {
                    r.register(Box::new(g.clone()))?;
                }
                g
            },
            recordings_started: counter(
                &r,
                "hotline_recordings_started_total",
                "Call recordings started.",
            )?,
            recordings_finished: counter(
                &r,
                "hotline_recordings_finished_total",
                "Call recordings finalised with their checksum.",
            )?,
            recording_failures: counter(
                &r,
                "hotline_recording_failures_total",
                "Call recordings stopped by an error (disk full, write error): an alarm.",
            )?,
            recording_bytes: counter(
                &r,
                "hotline_recording_bytes_total",
                "Bytes of finished recording files.",
            )?,
            survey: SurveySeries::new(&r, settings)?,
            registry: r,
        };
        #[cfg(target_os = "linux")]
        m.registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        // Families that exist before their first event, so dashboards and
        // rates see zeros rather than nothing.
        for reason in [
            "not_a_trunk",
            "banned",
            "unknown_number",
            "number_not_allowed",
            "shutting_down",
            "blocked",
        ] {
            m.calls_rejected.with_label_values(&[reason]);
        }
        for flow in settings.ivr.keys() {
            m.ivr_exits.with_label_values(&[flow.as_str(), "hangup"]);
        }
        for trunk in settings.trunks.iter().filter(|t| t.outbound.is_some()) {
            for reason in crate::sip::dialplan::DialRefusal::ALL {
                m.outbound_refused
                    .with_label_values(&[trunk.name.as_str(), reason.as_str()]);
            }
        }
        m.breaks_over_limit.with_label_values(&["no-answer"]);
        for reason in crate::call::lifetime::EXPIRY_REASONS {
            m.calls_expired.with_label_values(&[reason]);
        }
        for (via, reason) in [
            ("phone", "not_supervisor"),
            ("phone", "out_of_scope"),
            ("api", "foreign_phone"),
        ] {
            m.monitor_refused.with_label_values(&[via, reason]);
        }
        for mode in ["listen", "whisper", "barge"] {
            m.monitor_mode_changes.with_label_values(&[mode]);
            for via in ["api", "phone"] {
                m.monitor_sessions.with_label_values(&[mode, via]);
            }
        }
        m.not_ready.with_label_values(&["no-answer"]);
        for queue in settings.queues.keys() {
            let l = &[queue.as_str()];
            for c in [
                &m.queue_entered,
                &m.queue_answered,
                &m.queue_answered_within_sl,
                &m.queue_abandoned,
                &m.callbacks_requested,
                &m.callbacks_completed,
                &m.callbacks_failed,
                &m.hold_warnings,
                &m.transfers,
                &m.staffing_below_minimum,
            ] {
                c.with_label_values(l);
            }
            for outcome in ["no_answer", "busy", "declined", "unreachable"] {
                m.offers_failed
                    .with_label_values(&[queue.as_str(), outcome]);
            }
            for by in ["caller", "agent", "system"] {
                m.released.with_label_values(&[queue.as_str(), by]);
            }
            m.hold_limit
                .with_label_values(&[queue.as_str(), settings.acd.hold_action.as_str()]);
            for outcome in ["transferred", "conference", "cancelled"] {
                m.consultations
                    .with_label_values(&[queue.as_str(), outcome]);
            }
            for reason in ["max_wait", "max_len", "no_agents"] {
                m.queue_overflowed
                    .with_label_values(&[queue.as_str(), reason]);
            }
            for h in [
                &m.queue_wait,
                &m.abandon_wait,
                &m.offer_ring,
                &m.talk,
                &m.hold,
            ] {
                h.with_label_values(l);
            }
        }
        Ok(m)
    }

    fn queue_of(&self, call_id: &str) -> String {
        self.calls
            .get(call_id)
            .and_then(|c| c.queue.clone())
            .unwrap_or_default()
    }

    /// Moves the series `event` stands for.
    pub fn observe(&mut self, stamped: &Stamped) {
        match &stamped.event {
            Event::CallAdmitted { call_id, .. } => {
                self.calls_total.inc();
                self.calls.insert(call_id.clone(), CallTrack::default());
            }
            Event::CallRejected { reason, .. } => {
                let reason = serde_json::to_value(reason)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                self.calls_rejected.with_label_values(&[&reason]).inc();
            }
            Event::IvrExited { flow, exit, .. } => {
                self.ivr_exits.with_label_values(&[flow, exit]).inc();
            }
            Event::CallQueued { call_id, queue, .. } => {
                self.queue_entered.with_label_values(&[queue]).inc();
                self.calls.entry(call_id.clone()).or_default().queue = Some(queue.clone());
            }
            Event::CallConnected {
                queue,
                agent,
                waited_ms,
                ring_ms,
                ..
            } => {
                let l = &[queue.as_str()];
                self.queue_answered.with_label_values(l).inc();
                let target = self
                    .service_level
                    .get(queue)
                    .copied()
                    .unwrap_or(Duration::from_secs(20));
                if Duration::from_millis(*waited_ms) <= target {
                    self.queue_answered_within_sl.with_label_values(l).inc();
                }
                self.queue_wait
                    .with_label_values(l)
                    .observe(secs_ms(*waited_ms));
                self.offer_ring
                    .with_label_values(l)
                    .observe(secs_ms(*ring_ms));
                if self.per_agent {
                    self.agent_answered.with_label_values(&[agent]).inc();
                }
            }
            Event::OfferFailed {
                queue,
                outcome,
                ring_ms,
                ..
            } => {
                self.offers_failed
                    .with_label_values(&[queue.as_str(), outcome])
                    .inc();
                self.offer_ring
                    .with_label_values(&[queue])
                    .observe(secs_ms(*ring_ms));
            }
            Event::CallAbandoned {
                queue, waited_ms, ..
            } => {
                self.queue_abandoned.with_label_values(&[queue]).inc();
                self.abandon_wait
                    .with_label_values(&[queue])
                    .observe(secs_ms(*waited_ms));
            }
            Event::CallOverflowed { queue, reason, .. } => {
                self.queue_overflowed
                    .with_label_values(&[queue.as_str(), reason])
                    .inc();
            }
            Event::CallbackRequested { queue, .. } => {
                self.callbacks_requested.with_label_values(&[queue]).inc();
            }
            Event::CallbackCompleted { call_id, .. } => {
                let queue = self.queue_of(call_id);
                self.callbacks_completed.with_label_values(&[&queue]).inc();
            }
            Event::CallbackFailed { call_id, .. } => {
                let queue = self.queue_of(call_id);
                self.callbacks_failed.with_label_values(&[&queue]).inc();
            }
            Event::OutboundRefused { trunk, reason, .. } => {
                self.outbound_refused
                    .with_label_values(&[trunk.as_str(), reason.as_str()])
                    .inc();
            }
            Event::HoldWarning { call_id, .. } => {
                let queue = self.queue_of(call_id);
                self.hold_warnings.with_label_values(&[&queue]).inc();
            }
            Event::HoldLimitReached {
                call_id, action, ..
            } => {
                let queue = self.queue_of(call_id);
                self.hold_limit
                    .with_label_values(&[queue.as_str(), action])
                    .inc();
            }
            Event::HoldEnded {
                call_id, held_ms, ..
            } => {
                let queue = self.queue_of(call_id);
                self.hold
                    .with_label_values(&[&queue])
                    .observe(secs_ms(*held_ms));
            }
            Event::CallReleased {
                queue,
                agent,
                released_by,
                talk_ms,
                ..
            } => {
                self.talk
                    .with_label_values(&[queue])
                    .observe(secs_ms(*talk_ms));
                self.released
                    .with_label_values(&[queue.as_str(), released_name(*released_by)])
                    .inc();
                if self.per_agent {
                    self.agent_talk
                        .with_label_values(&[agent])
                        .inc_by(talk_ms / 1000);
                }
            }
            Event::CallExpired { reason, .. } => {
                self.calls_expired.with_label_values(&[reason]).inc();
            }
            Event::CallTransferred { from_queue, .. } => {
                self.transfers.with_label_values(&[from_queue]).inc();
            }
            Event::MonitorStarted { mode, via, .. } => {
                self.monitor_sessions.with_label_values(&[mode, via]).inc();
                self.monitor_active.inc();
            }
            Event::ConsultEnded {
                call_id, outcome, ..
            } => {
                let queue = self.queue_of(call_id);
                self.consultations
                    .with_label_values(&[queue.as_str(), outcome])
                    .inc();
            }
            Event::MonitorModeChanged { mode, .. } => {
                self.monitor_mode_changes.with_label_values(&[mode]).inc();
            }
            Event::MonitorRefused { via, reason, .. } => {
                self.monitor_refused.with_label_values(&[via, reason]).inc();
            }
            Event::MonitorEnded {
                duration_ms: Some(_),
                ..
            } => {
                self.monitor_active.dec();
            }
            Event::BreakOverLimit { reason, .. } => {
                self.breaks_over_limit.with_label_values(&[reason]).inc();
            }
            Event::StaffingBelowMinimum { queue, .. } => {
                self.staffing_below_minimum
                    .with_label_values(&[queue])
                    .inc();
            }
            Event::RecordingStarted { .. } => self.recordings_started.inc(),
            Event::RecordingFinished { bytes, .. } => {
                self.recordings_finished.inc();
                self.recording_bytes.inc_by(*bytes);
            }
            Event::RecordingFailed { .. } => self.recording_failures.inc(),
            Event::SurveyAnswered { queue, score, .. } => self.survey.answered(queue, *score),
            Event::AuthFailed { .. } => self.auth_failures.inc(),
            Event::SourceBanned { .. } => self.bans.inc(),
            Event::CallEnded { call_id, .. } => {
                self.calls.remove(call_id);
            }
            Event::AgentStateChanged {
                agent,
                state,
                reason,
            } => self.agent_state_changed(agent, state, reason.clone(), stamped.at),
            _ => {}
        }
    }

    /// Wrap-up and not-ready time end when the agent leaves the state.
    fn agent_state_changed(
        &mut self,
        agent: &str,
        state: &'static str,
        reason: Option<String>,
        at: SystemTime,
    ) {
        if let Some(previous) = self.agents.get(agent) {
            let lasted = at
                .duration_since(previous.since)
                .unwrap_or(Duration::ZERO)
                .as_secs_f64();
            match previous.state {
                "wrap-up" => self.wrap_up.observe(lasted),
                "not-ready" => self
                    .not_ready
                    .with_label_values(&[previous.reason.as_deref().unwrap_or("")])
                    .observe(lasted),
                _ => {}
            }
            if self.per_agent {
                self.agent_state
                    .with_label_values(&[agent, previous.state])
                    .set(0);
            }
        }
        if self.per_agent {
            self.agent_state.with_label_values(&[agent, state]).set(1);
        }
        self.agents.insert(
            agent.to_string(),
            AgentTrack {
                state,
                reason,
                since: at,
            },
        );
    }

    /// Counts events missed by a lagging subscriber.
    pub fn lost(&self, n: u64) {
        self.events_lost.inc_by(n);
    }
}

/// Consumes the bus into `metrics`, losing nothing: the publisher hands
/// each event to the metrics task's own queue (counted in a
/// [`crate::events::Backlog`]), so counters do not drift when the task runs
/// late under load. The registry (cheap to clone, shared) is what the page
/// reads; the task alone owns the rest.
pub fn follow(bus: &crate::events::EventBus, mut metrics: Metrics) -> Registry {
    let registry = metrics.registry.clone();
    let lost = metrics.events_lost.clone();
    let queue = std::sync::Arc::new(crate::events::Backlog::default());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Stamped>();
    let handed = queue.clone();
    let attachment = bus.attach("metrics", queue.clone(), move |stamped| {
        let queued = handed.hand_over(|| tx.send(stamped.clone()).is_ok());
        if !queued {
            lost.inc();
            if handed.lost().is_power_of_two() {
                tracing::warn!(
                    lost = handed.lost(),
                    "the metrics' queue is full: events lost"
                );
            }
        }
    });
    tokio::spawn(async move {
        // Delivery stops with the task: the bus holds no sender of a gone task.
        let _attachment = attachment;
        while let Some(stamped) = rx.recv().await {
            queue.taken();
            metrics.observe(&stamped);
        }
    });
    registry
}

#[cfg(test)]
mod tests;
