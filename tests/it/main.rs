//! hotline's integration tests, one binary: each module drives the real
//! `hotline serve` (or the CLI) from one area with real peers, through the
//! harness in [`support`]. Run one area with `cargo test --test it acd::`,
//! one test by its name, or all of them with `cargo test --test it`.

mod support;

mod acd;
mod api;
mod call_limits;
mod calls;
mod cli;
mod consult;
mod control_errors;
mod deploy;
mod dialog_races;
mod edge_guard;
mod fuzz;
mod lookup;
mod media;
mod metrics;
mod monitor;
mod overload;
mod recording;
mod refer;
mod registrar;
mod robustness;
mod rtp_latch;
mod softphone;
mod store;
mod survey;
mod wallboard;
