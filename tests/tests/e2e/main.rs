//! Every end-to-end test of Tripline, linked as one binary (one link of the whole stack
//! instead of one per file). Each module is one area; the harness is `tripline_tests`.

mod aws_concurrency;
mod aws_context;
mod aws_cron;
mod aws_flows;
mod aws_idempotency;
mod aws_kafka;
mod aws_keys;
mod aws_parking;
mod aws_secrets;
mod aws_shape;
mod cli;
mod concurrency;
mod conformance_aws;
mod conformance_embedded;
mod context;
mod control;
mod crash;
mod cron;
mod examples;
mod executor_deadline;
mod faults;
mod flows;
mod fuzz;
mod hardening;
mod idempotency;
mod kafka;
mod kafka_broker;
mod keys;
mod parking;
mod retention;
mod secrets;
mod signatures;
mod steps;
mod template;
mod webhooks;
