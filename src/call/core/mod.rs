//! The call's decisions as pure state machines: inputs and `now` in, effects
//! out; no socket, no SIP stack, no runtime. The call actor carries the
//! effects out.

pub mod consult;
pub mod monitor;
