//! tripline-core: the pure domain of Tripline. Workflow definitions and their validation,
//! templates, filters and conditions, and the run state machine. No I/O: time and ids come
//! in as arguments.

pub mod definition;
pub mod engine;
pub mod filter;
pub mod flow;
#[cfg(test)]
mod fuzz;
pub mod net;
pub mod retry;
pub mod run;
pub mod secrets;
pub mod source;
pub mod template;
pub mod time;
pub mod validate;

pub use definition::Workflow;
pub use engine::{Effect, Event, apply};
pub use run::{Run, RunStatus};
pub use time::{Duration, Timestamp};
