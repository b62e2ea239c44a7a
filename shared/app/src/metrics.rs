//! What the use cases count: webhooks by outcome, runs started and ended, step durations
//! and attempts, the scheduler's lag. Kept in memory by each process and given out two
//! ways: the Prometheus text format (the local `/metrics`, cumulative since start), and
//! CloudWatch embedded-metric-format lines (the Lambda functions print what an invocation
//! counted when it ends: CloudWatch Logs turns them into metrics, with no API call per
//! run; the AWS Lambda Powertools convention).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use tripline_core::run::{StepExecution, StepStatus};

/// The label pairs of one series, in order.
type Labels = Vec<(&'static str, String)>;

/// Step durations, in seconds.
const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// The attempt a step succeeded at.
const ATTEMPT_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 5.0, 10.0];
/// Scheduler lag, in seconds.
const LAG_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0];

/// The most values one EMF line carries for a histogram (CloudWatch takes 100).
const EMF_VALUES: usize = 100;

/// Every metric: its name, type, unit (for EMF) and help.
const FAMILIES: &[(&str, &str, &str, &str)] = &[
    (
        "tripline_webhooks_total",
        "counter",
        "Count",
        "Webhook requests by workflow and outcome (accepted, filtered, or the error code).",
    ),
    (
        "tripline_runs_started_total",
        "counter",
        "Count",
        "Runs admitted, by workflow and trigger kind.",
    ),
    (
        "tripline_runs_ended_total",
        "counter",
        "Count",
        "Runs ended, by workflow and status.",
    ),
    (
        "tripline_step_duration_seconds",
        "histogram",
        "Seconds",
        "The duration of each step attempt, by workflow and result.",
    ),
    (
        "tripline_step_attempts",
        "histogram",
        "Count",
        "The attempt at which a step succeeded, by workflow.",
    ),
    (
        "tripline_scheduler_lag_seconds",
        "histogram",
        "Seconds",
        "How late a cron tick was handled after its scheduled time.",
    ),
];

struct Histogram {
    buckets: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Series {
    counters: BTreeMap<(&'static str, Labels), f64>,
    histograms: BTreeMap<(&'static str, Labels), Histogram>,
    /// Since the last EMF flush: counter increments and histogram values.
    pending_counts: BTreeMap<(&'static str, Labels), f64>,
    pending_values: BTreeMap<(&'static str, Labels), Vec<f64>>,
}

/// What the step metrics read of a step execution (copied, so that counting a run's steps
/// after its write does not clone their outputs).
#[derive(Clone, Copy, Debug)]
pub struct StepTiming {
    pub status: StepStatus,
    pub duration_ms: i64,
    pub attempt: u32,
}

impl From<&StepExecution> for StepTiming {
    fn from(e: &StepExecution) -> Self {
        Self {
            status: e.status,
            duration_ms: e.duration_ms,
            attempt: e.attempt,
        }
    }
}

/// The counters and histograms of one process.
#[derive(Default)]
pub struct Metrics {
    series: Mutex<Series>,
    /// Whether EMF lines are wanted (the Lambda functions): keeps what an invocation
    /// counted until [`Metrics::emf_lines`] takes it.
    emf: std::sync::atomic::AtomicBool,
}

impl Metrics {
    /// Keep what is counted for [`Metrics::emf_lines`] (the Lambda functions).
    pub fn enable_emf(&self) {
        self.emf.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether this process gives its metrics as EMF lines (AWS) rather than `/metrics`.
    pub fn emf(&self) -> bool {
        self.emf.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn add(&self, name: &'static str, labels: Labels, by: f64) {
        let emf = self.emf();
        if let Ok(mut s) = self.series.lock() {
            if emf {
                *s.pending_counts.entry((name, labels.clone())).or_default() += by;
            }
            *s.counters.entry((name, labels)).or_default() += by;
        }
    }

    fn observe(&self, name: &'static str, buckets: &'static [f64], labels: Labels, v: f64) {
        let emf = self.emf();
        if let Ok(mut s) = self.series.lock() {
            if emf {
                s.pending_values
                    .entry((name, labels.clone()))
                    .or_default()
                    .push(v);
            }
            let h = s
                .histograms
                .entry((name, labels))
                .or_insert_with(|| Histogram {
                    buckets,
                    counts: vec![0; buckets.len()],
                    sum: 0.0,
                    count: 0,
                });
            for (i, le) in h.buckets.iter().enumerate() {
                if v <= *le {
                    h.counts[i] += 1;
                }
            }
            h.sum += v;
            h.count += 1;
        }
    }

    /// A webhook request answered, with its outcome: `accepted`, `filtered`, or the
    /// answer's error code.
    pub fn webhook(&self, workflow: &str, outcome: &str) {
        let labels = vec![
            ("workflow", workflow.to_string()),
            ("outcome", outcome.to_string()),
        ];
        self.add("tripline_webhooks_total", labels, 1.0);
    }

    pub fn run_started(&self, workflow: &str, trigger: &str) {
        let labels = vec![
            ("workflow", workflow.to_string()),
            ("trigger", trigger.to_string()),
        ];
        self.add("tripline_runs_started_total", labels, 1.0);
    }

    pub fn run_ended(&self, workflow: &str, status: &str) {
        let labels = vec![
            ("workflow", workflow.to_string()),
            ("status", status.to_string()),
        ];
        self.add("tripline_runs_ended_total", labels, 1.0);
    }

    /// Step executions just recorded.
    pub fn steps(&self, workflow: &str, executions: impl IntoIterator<Item = StepTiming>) {
        for e in executions {
            let result = match e.status {
                StepStatus::Succeeded => "succeeded",
                StepStatus::Failed => "failed",
                StepStatus::Skipped => continue,
            };
            let labels = vec![
                ("workflow", workflow.to_string()),
                ("result", result.to_string()),
            ];
            let seconds = e.duration_ms.max(0) as f64 / 1000.0;
            self.observe(
                "tripline_step_duration_seconds",
                DURATION_BUCKETS,
                labels,
                seconds,
            );
            if e.status == StepStatus::Succeeded {
                let labels = vec![("workflow", workflow.to_string())];
                self.observe(
                    "tripline_step_attempts",
                    ATTEMPT_BUCKETS,
                    labels,
                    f64::from(e.attempt),
                );
            }
        }
    }

    /// A cron tick handled `lag` after its scheduled time.
    pub fn scheduler_lag(&self, lag: std::time::Duration) {
        self.observe(
            "tripline_scheduler_lag_seconds",
            LAG_BUCKETS,
            Vec::new(),
            lag.as_secs_f64(),
        );
    }

    /// Everything counted since the process started, in the Prometheus text format
    /// (version 0.0.4), followed by `gauges` (name, help, value) measured now.
    pub fn prometheus(&self, gauges: &[(&str, &str, f64)]) -> String {
        let mut out = String::new();
        let Ok(s) = self.series.lock() else {
            return out;
        };
        for (name, kind, _, help) in FAMILIES {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for ((_, labels), v) in s
                .counters
                .range((*name, Vec::new())..)
                .take_while(|((n, _), _)| n == name)
            {
                let _ = writeln!(out, "{name}{} {v}", render(labels, None));
            }
            for ((_, labels), h) in s
                .histograms
                .range((*name, Vec::new())..)
                .take_while(|((n, _), _)| n == name)
            {
                for (le, c) in h.buckets.iter().zip(&h.counts) {
                    let _ = writeln!(
                        out,
                        "{name}_bucket{} {c}",
                        render(labels, Some(&le.to_string()))
                    );
                }
                let _ = writeln!(
                    out,
                    "{name}_bucket{} {}",
                    render(labels, Some("+Inf")),
                    h.count
                );
                let _ = writeln!(out, "{name}_sum{} {}", render(labels, None), h.sum);
                let _ = writeln!(out, "{name}_count{} {}", render(labels, None), h.count);
            }
        }
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        out
    }

    /// What was counted since the last call, as CloudWatch embedded-metric-format lines
    /// (one per series; a histogram's values in lines of at most 100), namespace
    /// `Tripline`, dimensions the series' labels. Empty when EMF is not enabled.
    pub fn emf_lines(&self, at_millis: i64) -> Vec<String> {
        let Ok(mut s) = self.series.lock() else {
            return Vec::new();
        };
        let counts = std::mem::take(&mut s.pending_counts);
        let values = std::mem::take(&mut s.pending_values);
        drop(s);
        let mut lines = Vec::new();
        for ((name, labels), n) in counts {
            lines.push(emf_line(name, &labels, serde_json::json!(n), at_millis));
        }
        for ((name, labels), vs) in values {
            for chunk in vs.chunks(EMF_VALUES) {
                lines.push(emf_line(name, &labels, serde_json::json!(chunk), at_millis));
            }
        }
        lines
    }

    /// Prints [`Metrics::emf_lines`] to stdout, where the Lambda runtime sends them to
    /// CloudWatch Logs.
    pub fn flush_emf(&self, at_millis: i64) {
        for line in self.emf_lines(at_millis) {
            println!("{line}");
        }
    }
}

/// `{a="x",b="y"}`, with `le` last for a bucket; label values escaped.
fn render(labels: &Labels, le: Option<&str>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn emf_line(name: &str, labels: &Labels, value: serde_json::Value, at: i64) -> String {
    let short = name.trim_start_matches("tripline_");
    let unit = FAMILIES
        .iter()
        .find(|f| f.0 == name)
        .map_or("None", |f| f.2);
    let dims: Vec<&str> = labels.iter().map(|(k, _)| *k).collect();
    let mut doc = serde_json::json!({
        "_aws": {
            "Timestamp": at,
            "CloudWatchMetrics": [{
                "Namespace": "Tripline",
                "Dimensions": [dims],
                "Metrics": [{"Name": short, "Unit": unit}],
            }],
        },
        short: value,
    });
    for (k, v) in labels {
        doc[*k] = serde_json::json!(v);
    }
    doc.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tripline_core::Timestamp;

    fn exec(status: StepStatus, attempt: u32, ms: i64) -> StepExecution {
        StepExecution {
            step_id: "s".into(),
            attempt,
            status,
            request: None,
            output: None,
            error: None,
            started_at: Timestamp(0),
            finished_at: Timestamp(ms),
            duration_ms: ms,
        }
    }

    #[test]
    fn prometheus_text_has_counters_histograms_and_gauges() {
        let m = Metrics::default();
        m.webhook("orders", "accepted");
        m.webhook("orders", "accepted");
        m.webhook("orders", "bad_signature");
        m.steps(
            "orders",
            [
                exec(StepStatus::Succeeded, 2, 30),
                exec(StepStatus::Failed, 1, 2000),
            ]
            .iter()
            .map(StepTiming::from),
        );
        let text = m.prometheus(&[("tripline_queue_depth", "Items ready.", 4.0)]);
        assert!(
            text.contains("tripline_webhooks_total{workflow=\"orders\",outcome=\"accepted\"} 2\n"),
            "{text}"
        );
        assert!(text.contains(
            "tripline_webhooks_total{workflow=\"orders\",outcome=\"bad_signature\"} 1\n"
        ));
        assert!(text.contains("tripline_step_duration_seconds_bucket{workflow=\"orders\",result=\"succeeded\",le=\"0.05\"} 1\n"), "{text}");
        assert!(text.contains("tripline_step_duration_seconds_bucket{workflow=\"orders\",result=\"failed\",le=\"1\"} 0\n"), "{text}");
        assert!(text.contains(
            "tripline_step_duration_seconds_count{workflow=\"orders\",result=\"failed\"} 1\n"
        ));
        assert!(
            text.contains("tripline_step_attempts_bucket{workflow=\"orders\",le=\"2\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE tripline_queue_depth gauge\ntripline_queue_depth 4\n"));
    }

    #[test]
    fn emf_lines_carry_what_was_counted_since_the_last_flush_only() {
        let m = Metrics::default();
        m.webhook("w", "accepted");
        assert!(
            m.emf_lines(1).is_empty(),
            "nothing is kept before EMF is enabled"
        );
        m.enable_emf();
        m.run_ended("w", "succeeded");
        m.scheduler_lag(std::time::Duration::from_millis(250));
        let lines = m.emf_lines(1_000);
        assert_eq!(lines.len(), 2, "{lines:?}");
        let ended: serde_json::Value = serde_json::from_str(&lines[0]).expect("json");
        assert_eq!(ended["runs_ended_total"], 1.0);
        assert_eq!(ended["workflow"], "w");
        assert_eq!(
            ended["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            serde_json::json!([["workflow", "status"]])
        );
        let lag: serde_json::Value = serde_json::from_str(&lines[1]).expect("json");
        assert_eq!(lag["scheduler_lag_seconds"], serde_json::json!([0.25]));
        assert!(m.emf_lines(2).is_empty(), "a flush takes what it printed");
    }

    #[test]
    fn a_label_value_is_escaped() {
        assert_eq!(
            render(&vec![("w", "a\"b\\c".into())], None),
            "{w=\"a\\\"b\\\\c\"}"
        );
    }
}
