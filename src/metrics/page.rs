//! The `/metrics` page: the event-fed registry, then the live state and the
//! protocol counters read at scrape time, in the Prometheus text format.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::Instant;

use prometheus::{Encoder, Registry, TextEncoder};

use crate::acd::{QueueSnapshot, Snapshot};
use crate::call::context::CallContext;
use crate::sip::EdgeContext;

/// What the page is made of.
pub struct Sources<'a> {
    pub registry: &'a Registry,
    pub edge: &'a CallContext,
    /// The router's snapshot (None if the router stopped).
    pub snapshot: Option<&'a Snapshot>,
    pub started: Instant,
    /// The CDR store's counters, when a store runs.
    pub store: Option<StoreFigures>,
}

/// The CDR store's counters at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreFigures {
    pub errors: u64,
    pub rows_written: u64,
    pub pending: u64,
    pub write_failures: u64,
    pub failing: bool,
    pub rows_dropped: u64,
    pub recovered: u64,
    pub refusals_unsampled: u64,
    pub events_expired: u64,
    pub cdrs_expired: u64,
}

const AGENT_STATES: [&str; 7] = [
    "logged-out",
    "ready",
    "not-ready",
    "offered",
    "talking",
    "on-hold",
    "wrap-up",
];

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Label values are escaped as the text format asks (\\, \", \n).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub fn render(src: &Sources<'_>) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let mut encoded = Vec::new();
    if TextEncoder::new()
        .encode(&src.registry.gather(), &mut encoded)
        .is_ok()
    {
        out.push_str(&String::from_utf8_lossy(&encoded));
    }
    let ctx = src.edge;

    family(
        &mut out,
        "hotline_build_info",
        "gauge",
        "Build information.",
    );
    let _ = writeln!(
        out,
        "hotline_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    family(
        &mut out,
        "hotline_uptime_seconds",
        "gauge",
        "Seconds since start.",
    );
    let _ = writeln!(
        out,
        "hotline_uptime_seconds {:.3}",
        src.started.elapsed().as_secs_f64()
    );
    family(
        &mut out,
        "hotline_calls_active",
        "gauge",
        "Calls in progress.",
    );
    let _ = writeln!(out, "hotline_calls_active {}", ctx.calls.len());
    family(
        &mut out,
        "hotline_registrations_active",
        "gauge",
        "Live registration bindings (agent contacts).",
    );
    let _ = writeln!(
        out,
        "hotline_registrations_active {}",
        ctx.registrar.active_bindings()
    );

    if let Some(snapshot) = src.snapshot {
        live_state(&mut out, snapshot);
    }
    sip(&mut out, ctx);
    edge_limits(&mut out, ctx);
    event_followers(&mut out, &ctx.edge.bus);
    rtp(&mut out, ctx);
    session_timers(&mut out, ctx);
    if let Some(store) = src.store {
        family(
            &mut out,
            "hotline_store_errors_total",
            "counter",
            "Failed writes (or rows dropped) in the CDR store.",
        );
        let _ = writeln!(out, "hotline_store_errors_total {}", store.errors);
        family(
            &mut out,
            "hotline_store_rows_written_total",
            "counter",
            "CDR and event rows written.",
        );
        let _ = writeln!(
            out,
            "hotline_store_rows_written_total {}",
            store.rows_written
        );
        family(
            &mut out,
            "hotline_store_pending",
            "gauge",
            "Rows accepted and not yet written.",
        );
        let _ = writeln!(out, "hotline_store_pending {}", store.pending);
        store_bounds(&mut out, &store);
    }
    out
}

/// A per-queue gauge: name, help, and its value for one queue.
type QueueGauge = (&'static str, &'static str, fn(&QueueSnapshot) -> String);

fn live_state(out: &mut String, snapshot: &Snapshot) {
    let mut agents = std::collections::BTreeMap::new();
    for state in AGENT_STATES {
        agents.insert(state, 0usize);
    }
    for agent in &snapshot.agents {
        *agents.entry(agent.state).or_default() += 1;
    }
    family(out, "hotline_agents", "gauge", "Agents by state.");
    for (state, n) in agents {
        let _ = writeln!(out, "hotline_agents{{state=\"{state}\"}} {n}");
    }
    let per_queue: [QueueGauge; 4] = [
        (
            "hotline_queue_waiting",
            "Callers waiting in each queue.",
            |q| q.waiting.to_string(),
        ),
        (
            "hotline_queue_longest_wait_seconds",
            "How long the longest-waiting caller of each queue has waited.",
            |q| format!("{:.3}", q.longest_wait.as_secs_f64()),
        ),
        (
            "hotline_queue_estimated_wait_seconds",
            "Moving average of recent waits until answer (0 before the first).",
            |q| format!("{:.3}", q.estimated_wait.map_or(0.0, |d| d.as_secs_f64())),
        ),
        (
            "hotline_queue_staffed",
            "Agents of each queue logged in without a pending logout.",
            |q| q.staffed.to_string(),
        ),
    ];
    for (name, help, value) in per_queue {
        family(out, name, "gauge", help);
        for q in &snapshot.queues {
            let _ = writeln!(out, "{name}{{queue=\"{}\"}} {}", escape(&q.id.0), value(q));
        }
    }
    family(
        out,
        "hotline_queue_agents",
        "gauge",
        "Agents serving each queue, by state.",
    );
    for q in &snapshot.queues {
        for state in AGENT_STATES {
            let n = q.agents_by_state.get(state).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "hotline_queue_agents{{queue=\"{}\",state=\"{state}\"}} {n}",
                escape(&q.id.0)
            );
        }
    }
}

fn sip(out: &mut String, ctx: &EdgeContext) {
    let stats = &ctx.sip_stats;
    family(
        out,
        "hotline_sip_requests_total",
        "counter",
        "SIP requests received, by method.",
    );
    for (method, n) in stats.received.requests() {
        let _ = writeln!(out, "hotline_sip_requests_total{{method=\"{method}\"}} {n}");
    }
    family(
        out,
        "hotline_sip_responses_total",
        "counter",
        "SIP responses sent, by method and code.",
    );
    for (method, code, n) in stats.sent.responses() {
        let _ = writeln!(
            out,
            "hotline_sip_responses_total{{method=\"{method}\",code=\"{code}\"}} {n}"
        );
    }
    family(
        out,
        "hotline_sip_requests_sent_total",
        "counter",
        "SIP requests hotline sent (agent legs, BYE, re-INVITE...), by method.",
    );
    for (method, n) in stats.sent.requests() {
        let _ = writeln!(
            out,
            "hotline_sip_requests_sent_total{{method=\"{method}\"}} {n}"
        );
    }
    family(
        out,
        "hotline_sip_responses_received_total",
        "counter",
        "SIP responses received, by method and code.",
    );
    for (method, code, n) in stats.received.responses() {
        let _ = writeln!(
            out,
            "hotline_sip_responses_received_total{{method=\"{method}\",code=\"{code}\"}} {n}"
        );
    }
}

/// The edge's ceilings and lockouts: what they refused and what is open.
/// One figure of a follower's queue: name, type, help, reading.
type BacklogFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&crate::events::Backlog) -> u64,
);

/// The queues of the bus's lossless followers (the store, the metrics).
fn event_followers(out: &mut String, bus: &crate::events::EventBus) {
    let backlogs = bus.backlogs();
    let families: [BacklogFamily; 3] = [
        (
            "hotline_events_queued",
            "gauge",
            "Events handed to a lossless follower (store, metrics) and not yet taken by it.",
            |b| b.queued(),
        ),
        (
            "hotline_events_queued_high_water",
            "gauge",
            "The most events that waited at once for a lossless follower since start.",
            |b| b.high_water(),
        ),
        (
            "hotline_events_lost_total",
            "counter",
            "Events a lossless follower lost because its queue was full (must stay 0).",
            |b| b.lost(),
        ),
    ];
    for (name, kind, help, value) in families {
        family(out, name, kind, help);
        for (follower, backlog) in &backlogs {
            let _ = writeln!(out, "{name}{{follower=\"{follower}\"}} {}", value(backlog));
        }
    }
}

/// Whether the door sheds new calls, and the calls shed by reason.
fn overload(out: &mut String, overload: &crate::sip::overload::Overload) {
    use crate::sip::overload::ShedReason;
    family(
        out,
        "hotline_overload_active",
        "gauge",
        "1 while new calls are refused (503) because the server fell behind: store backlog, late media ticks or event bus lag.",
    );
    let _ = writeln!(
        out,
        "hotline_overload_active {}",
        u8::from(overload.shedding().is_some())
    );
    family(
        out,
        "hotline_calls_shed_total",
        "counter",
        "New calls refused with 503 at the door, by reason: store_backlog, pacer_late, bus_lag (overload) and max_calls (limits.max_calls).",
    );
    for reason in ShedReason::ALL {
        let _ = writeln!(
            out,
            "hotline_calls_shed_total{{reason=\"{}\"}} {}",
            reason.label(),
            overload.shed(reason)
        );
    }
}

fn edge_limits(out: &mut String, ctx: &EdgeContext) {
    use crate::sip::limits::Refusal;
    use std::sync::atomic::Ordering::Relaxed;
    let limits = &ctx.limits;
    family(
        out,
        "hotline_sip_refused_total",
        "counter",
        "Requests and connections the SIP edge refused at a ceiling or lockout, by reason.",
    );
    for refusal in Refusal::ALL {
        let _ = writeln!(
            out,
            "hotline_sip_refused_total{{reason=\"{}\"}} {}",
            refusal.label(),
            limits.refused.get(refusal)
        );
    }
    overload(out, &limits.overload);
    let now = std::time::Instant::now();
    let (users, sources) = ctx.lockout.active(now);
    let (user_bans, source_bans) = ctx.lockout.imposed();
    family(
        out,
        "hotline_sip_auth_lockouts_total",
        "counter",
        "Lockouts from authentication imposed, by scope (one user from an address, or the address).",
    );
    let _ = writeln!(
        out,
        "hotline_sip_auth_lockouts_total{{scope=\"user\"}} {user_bans}"
    );
    let _ = writeln!(
        out,
        "hotline_sip_auth_lockouts_total{{scope=\"source\"}} {source_bans}"
    );
    family(
        out,
        "hotline_sip_auth_lockouts_active",
        "gauge",
        "Lockouts from authentication in force, by scope.",
    );
    let _ = writeln!(
        out,
        "hotline_sip_auth_lockouts_active{{scope=\"user\"}} {users}"
    );
    let _ = writeln!(
        out,
        "hotline_sip_auth_lockouts_active{{scope=\"source\"}} {sources}"
    );
    let (_, per_trunk) = limits.calls.counts();
    family(
        out,
        "hotline_trunk_calls_active",
        "gauge",
        "Calls from trunks holding a place under the call ceilings, by trunk.",
    );
    for (trunk, n) in per_trunk {
        let _ = writeln!(
            out,
            "hotline_trunk_calls_active{{trunk=\"{}\"}} {n}",
            escape(&trunk)
        );
    }
    family(
        out,
        "hotline_sip_tcp_connections",
        "gauge",
        "SIP/TCP connections open from peers.",
    );
    let _ = writeln!(
        out,
        "hotline_sip_tcp_connections {}",
        limits.tcp.open_count()
    );
    family(
        out,
        "hotline_http_connections",
        "gauge",
        "HTTP connections open.",
    );
    let _ = writeln!(
        out,
        "hotline_http_connections {}",
        limits.http_open.load(Relaxed)
    );
    family(
        out,
        "hotline_http_refused_total",
        "counter",
        "HTTP connections refused or closed by the listener's limits, by reason.",
    );
    let _ = writeln!(
        out,
        "hotline_http_refused_total{{reason=\"max_connections\"}} {}",
        limits.http_refused.load(Relaxed)
    );
    let _ = writeln!(
        out,
        "hotline_http_refused_total{{reason=\"header_timeout\"}} {}",
        limits.http_header_timeouts.load(Relaxed)
    );
}

fn rtp(out: &mut String, ctx: &CallContext) {
    let totals = &ctx.media.rtp;
    let pacer = &ctx.media.pacer.stats;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let rows = [
        (
            "hotline_rtp_packets_received_total",
            "RTP packets received from callers and agents.",
            load(&totals.packets_in),
        ),
        (
            "hotline_rtp_bytes_received_total",
            "RTP bytes received (headers included).",
            load(&totals.bytes_in),
        ),
        (
            "hotline_rtp_packets_sent_total",
            "RTP packets sent: prompts, music and the bridge.",
            load(&pacer.frames_sent) + load(&totals.relayed_packets),
        ),
        (
            "hotline_rtp_bytes_sent_total",
            "RTP bytes sent (headers included).",
            load(&pacer.bytes_sent) + load(&totals.relayed_bytes),
        ),
        (
            "hotline_rtp_packets_dropped_total",
            "RTP packets dropped: from the wrong source or malformed.",
            load(&totals.dropped),
        ),
        (
            "hotline_media_late_ticks_total",
            "20 ms pacing ticks that started more than 2 ms late.",
            load(&pacer.late_ticks),
        ),
        (
            "hotline_media_late_frames_total",
            "Prompt and music frames sent more than 2 ms after their 20 ms tick.",
            load(&pacer.late_frames),
        ),
    ];
    for (name, help, value) in rows {
        family(out, name, "counter", help);
        let _ = writeln!(out, "{name} {value}");
    }
    family(
        out,
        "hotline_rtp_packets_rejected_total",
        "counter",
        "Inbound RTP packets dropped, by reason: foreign_source (not the latched peer), malformed, unconfirmed_source (a NAT'd peer's source before its SSRC held).",
    );
    for (reason, counter) in [
        ("foreign_source", &totals.dropped_foreign),
        ("malformed", &totals.dropped_malformed),
        ("unconfirmed_source", &totals.dropped_unconfirmed),
    ] {
        let _ = writeln!(
            out,
            "hotline_rtp_packets_rejected_total{{reason=\"{reason}\"}} {}",
            load(counter)
        );
    }
    let engine = ctx.media.engine.as_ref();
    let loops = [
        (
            "hotline_media_loop_bridges",
            "Bridged calls each media loop relays (none: media.workers = 0).",
            engine.map(|e| e.bridges_per_loop()),
        ),
        (
            "hotline_media_loop_listeners",
            "Callers each media loop reads while they only listen to a prompt or music (none: media.workers = 0).",
            engine.map(|e| e.listeners_per_loop()),
        ),
    ];
    for (name, help, counts) in loops {
        family(out, name, "gauge", help);
        for (index, count) in counts.unwrap_or_default().into_iter().enumerate() {
            let _ = writeln!(out, "{name}{{loop=\"{index}\"}} {count}");
        }
    }
}

/// The store's alarms and bounds.
fn store_bounds(out: &mut String, store: &StoreFigures) {
    let simple: [(&str, &str, &str, u64); 5] = [
        (
            "hotline_store_write_failures_total",
            "counter",
            "Batches the CDR store could not write (full disk, lock, I/O); they are kept and retried.",
            store.write_failures,
        ),
        (
            "hotline_store_write_failing",
            "gauge",
            "1 while the CDR store cannot write and records wait in memory.",
            u64::from(store.failing),
        ),
        (
            "hotline_store_rows_dropped_total",
            "counter",
            "Rows dropped over store.max_pending while the database could not be written.",
            store.rows_dropped,
        ),
        (
            "hotline_store_calls_recovered_total",
            "counter",
            "Calls live when the last run died, given interrupted records at start.",
            store.recovered,
        ),
        (
            "hotline_store_refusals_unsampled_total",
            "counter",
            "Refused INVITEs and failed authentications counted but not stored (over store.refusals_per_second).",
            store.refusals_unsampled,
        ),
    ];
    for (name, kind, help, value) in simple {
        family(out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
    family(
        out,
        "hotline_store_retention_deleted_total",
        "counter",
        "Rows deleted past their retention (store.retention), by table.",
    );
    let _ = writeln!(
        out,
        "hotline_store_retention_deleted_total{{table=\"events\"}} {}",
        store.events_expired
    );
    let _ = writeln!(
        out,
        "hotline_store_retention_deleted_total{{table=\"cdr\"}} {}",
        store.cdrs_expired
    );
}

/// RFC 4028 session timers: refreshes by outcome, 422 refusals.
fn session_timers(out: &mut String, ctx: &CallContext) {
    let totals = &ctx.calls.session_timers;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    family(
        out,
        "hotline_session_refreshes_total",
        "counter",
        "Session timer refreshes: sent by hotline and answered 2xx (sent_ok) or refused or unanswered (sent_failed; unanswered ends the call), sent by the peer and answered (received).",
    );
    for (result, counter) in [
        ("sent_ok", &totals.refreshes_ok),
        ("sent_failed", &totals.refreshes_failed),
        ("received", &totals.refreshes_received),
    ] {
        let _ = writeln!(
            out,
            "hotline_session_refreshes_total{{result=\"{result}\"}} {}",
            load(counter)
        );
    }
    family(
        out,
        "hotline_session_interval_too_small_total",
        "counter",
        "422 Session Interval Too Small: sent (a Session-Expires below sip.min_se) and received from agents' phones (retried with their Min-SE).",
    );
    let _ = writeln!(
        out,
        "hotline_session_interval_too_small_total{{direction=\"sent\"}} {}",
        load(&totals.too_small)
    );
    let _ = writeln!(
        out,
        "hotline_session_interval_too_small_total{{direction=\"received\"}} {}",
        load(&totals.retried_after_422)
    );
}
