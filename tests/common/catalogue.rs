//! The metrics hotline exposes, by name: what the deploy files may use and
//! what the live page must show.

/// The metrics hotline exposes (counters, gauges, and histograms by their
/// base name).
pub const CATALOGUE: &[&str] = &[
    "hotline_calls_total",
    "hotline_calls_rejected_total",
    "hotline_calls_active",
    "hotline_ivr_exits_total",
    "hotline_queue_entered_total",
    "hotline_queue_answered_total",
    "hotline_queue_answered_within_sl_total",
    "hotline_queue_abandoned_total",
    "hotline_queue_overflowed_total",
    "hotline_callbacks_requested_total",
    "hotline_callbacks_completed_total",
    "hotline_callbacks_failed_total",
    "hotline_offers_failed_total",
    "hotline_hold_warnings_total",
    "hotline_hold_limit_reached_total",
    "hotline_breaks_over_limit_total",
    "hotline_transfers_total",
    "hotline_monitor_sessions_total",
    "hotline_monitor_mode_changes_total",
    "hotline_monitor_sessions_active",
    "hotline_consultations_total",
    "hotline_calls_released_total",
    "hotline_staffing_below_minimum_total",
    "hotline_queue_waiting",
    "hotline_queue_longest_wait_seconds",
    "hotline_queue_estimated_wait_seconds",
    "hotline_queue_staffed",
    "hotline_queue_agents",
    "hotline_agents",
    "hotline_sip_requests_total",
    "hotline_sip_responses_total",
    "hotline_registrations_active",
    "hotline_auth_failures_total",
    "hotline_bans_total",
    "hotline_rtp_packets_received_total",
    "hotline_rtp_bytes_received_total",
    "hotline_rtp_packets_sent_total",
    "hotline_rtp_bytes_sent_total",
    "hotline_rtp_packets_dropped_total",
    "hotline_media_late_ticks_total",
    "hotline_store_errors_total",
    "hotline_store_rows_written_total",
    "hotline_store_pending",
    "hotline_build_info",
    "hotline_uptime_seconds",
    "hotline_recordings_started_total",
    "hotline_recordings_finished_total",
    "hotline_recording_failures_total",
    "hotline_recording_bytes_total",
    "hotline_survey_responses_total",
    "hotline_survey_satisfaction_ratio",
    "hotline_survey_satisfaction_target_ratio",
];

/// Histograms: exposed as `_bucket`, `_sum` and `_count` series.
pub const HISTOGRAMS: &[&str] = &[
    "hotline_queue_wait_seconds",
    "hotline_queue_abandon_wait_seconds",
    "hotline_offer_ring_seconds",
    "hotline_talk_seconds",
    "hotline_hold_seconds",
    "hotline_wrap_up_seconds",
    "hotline_not_ready_seconds",
];

/// The standard process metrics the page carries.
pub const PROCESS_METRICS: &[&str] = &[
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
    "process_start_time_seconds",
];
