//! Each trigger's use case: an input arrives, passes the trigger's gate, and becomes runs
//! through [`crate::admission`]: webhooks (`webhook`), the control API (`manual`), cron
//! ticks (`cron`), Kafka records (`kafka`), ended runs (`flow`), and inbox messages again
//! (`reprocess`), and ended runs again on request (`retry`).

pub mod cron;
pub mod dry_run;
pub mod flow;
pub mod kafka;
pub mod manual;
pub mod once;
pub mod reprocess;
pub mod retry;
pub mod webhook;
