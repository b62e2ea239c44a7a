//! tripline-app: Tripline's use cases, generic over the ports in [`ports`]. Where things
//! happen (README: "Where things happen" follows a webhook and a work item through them):
//!
//! - [`app`]: `App`, what every use case shares, built once at start-up;
//! - [`ports`]: every port the adapters implement (store, queue, clock, schedules, Kafka);
//! - [`admission`]: the one way a message becomes runs (gate, idempotency claim, write,
//!   enqueue);
//! - [`intake`]: each trigger's use case (webhook, manual, cron, kafka, flow, reprocess),
//!   each ending in admission;
//! - [`executor`]: work items to runs: delivery, the one effect interpreter, the one
//!   run-end path, workers and the sweeper;
//! - [`http`]: the routes (webhooks, resume/approval, the control API): handlers parse,
//!   call a use case, and answer;
//! - [`deploy`], [`concurrency`], [`outbound`], [`secrets`], [`signing`], [`tokens`]: what
//!   those use.

pub mod admission;
pub mod app;
pub mod concurrency;
pub mod deploy;
pub mod executor;
pub mod http;
pub mod intake;
pub mod jobs;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod outbound;
pub mod ports;
pub mod queries;
pub mod secrets;
pub mod signing;
pub mod switches;
pub mod tokens;
pub mod upkeep;
pub mod waits;

pub use app::{App, Config, STATE_LIMIT};
