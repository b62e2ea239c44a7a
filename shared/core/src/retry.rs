//! Retrying a run: a new run with the same trigger input, linked to the original
//! (`retry_of`). From the start, it runs every step again; from the failed step, it keeps
//! what the steps before that one recorded and starts there.

use serde::{Deserialize, Serialize};

use crate::definition::Workflow;
use crate::run::{Run, RunStatus, StepStatus};
use crate::time::Timestamp;

/// Where a retry starts.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum RetryFrom {
    /// Every step runs again.
    #[default]
    Start,
    /// The steps before the one that failed keep their recorded results (outputs, skips);
    /// the run starts at the failed step.
    FailedStep,
}

/// The run a retry is a retry of, and where it started.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RetryOf {
    pub run_id: String,
    pub from: RetryFrom,
    /// The step it started at (from the failed step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
}

/// The top-level step a run failed at: its last failed execution's step (a lane's
/// `each[2].get` is the `each` step).
pub fn failed_step(run: &Run) -> Option<&str> {
    run.step_executions
        .iter()
        .rev()
        .find(|e| e.status == StepStatus::Failed)
        .map(|e| e.step_id.split('[').next().unwrap_or(&e.step_id))
}

/// The new `queued` run `id` that retries `original` with `wf` (its revision `revision`).
/// `Err`: why this run cannot be retried so.
pub fn retry_run(
    original: &Run,
    wf: &Workflow,
    revision: u32,
    from: RetryFrom,
    id: String,
    now: Timestamp,
) -> Result<Run, String> {
    if !original.status.is_terminal() {
        return Err(format!(
            "run `{}` is {}; only an ended run is retried (cancel it first)",
            original.id,
            original.status.as_str()
        ));
    }
    let mut run = Run::new(
        id,
        &original.workflow,
        revision,
        original.trigger.clone(),
        original.trigger_input.clone(),
        now,
    );
    run.parent = original.parent.clone();
    run.scheduled_at = original.scheduled_at;
    let mut retry = RetryOf {
        run_id: original.id.clone(),
        from,
        step: None,
    };
    if from == RetryFrom::FailedStep {
        let step = resume_point(original, wf)?;
        let index = wf.steps.iter().position(|s| s.id == step).unwrap_or(0);
        let kept: Vec<&str> = wf.steps[..index].iter().map(|s| s.id.as_str()).collect();
        run.step_executions = original
            .step_executions
            .iter()
            .filter(|e| e.status != StepStatus::Failed)
            .filter(|e| kept.contains(&e.step_id.split('[').next().unwrap_or(&e.step_id)))
            .cloned()
            .collect();
        run.context = original.context.clone();
        run.cursor.step = index;
        retry.step = Some(step.to_string());
    }
    run.retry_of = Some(retry);
    Ok(run)
}

/// The step a retry from the failed step starts at, in `wf`: the original's failed step,
/// which must still be there, after steps that all still are.
fn resume_point<'a>(original: &'a Run, wf: &Workflow) -> Result<&'a str, String> {
    if original.status == RunStatus::Succeeded {
        return Err(format!(
            "run `{}` succeeded; there is no failed step to retry from (retry it from the start)",
            original.id
        ));
    }
    let Some(step) = failed_step(original) else {
        return Err(format!(
            "run `{}` ended {} without a failed step ({}); retry it from the start",
            original.id,
            original.status.as_str(),
            original.error.as_deref().unwrap_or("no error recorded")
        ));
    };
    let Some(index) = wf.steps.iter().position(|s| s.id == step) else {
        return Err(format!(
            "the failed step `{step}` is not in this revision of `{}`; retry from the start, or with the run's own revision",
            original.workflow
        ));
    };
    let ran = |id: &str| {
        original
            .step_executions
            .iter()
            .any(|e| e.step_id == id && e.status != StepStatus::Failed)
    };
    if let Some(missing) = wf.steps[..index].iter().find(|s| !ran(&s.id)) {
        return Err(format!(
            "step `{}` comes before `{step}` in this revision but has no result in run `{}`; retry from the start, or with the run's own revision",
            missing.id, original.id
        ));
    }
    Ok(step)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::run::{ErrorType, StepExecution, TriggerKind, TriggerRef};

    fn wf(steps: &[&str]) -> Workflow {
        let steps: Vec<_> = steps
            .iter()
            .map(|id| json!({"id": id, "type": "transform", "value": 1}))
            .collect();
        serde_json::from_value(json!({"id": "w", "steps": steps})).expect("workflow")
    }

    fn exec(step: &str, status: StepStatus) -> StepExecution {
        StepExecution {
            step_id: step.into(),
            attempt: 1,
            status,
            request: None,
            output: Some(json!(step)),
            error: None,
            started_at: Timestamp(0),
            finished_at: Timestamp(1),
            duration_ms: 1,
        }
    }

    fn failed_at(execs: Vec<StepExecution>) -> Run {
        let trigger = TriggerRef {
            kind: TriggerKind::Webhook,
            id: "in".into(),
        };
        let mut run = Run::new(
            "r1".into(),
            "w",
            1,
            trigger,
            json!({"body": 7}),
            Timestamp(0),
        );
        run.status = RunStatus::Failed;
        run.error_type = Some(ErrorType::StepFailed);
        run.step_executions = execs;
        run.context.insert("k".into(), json!("v"));
        run
    }

    #[test]
    fn from_the_start_keeps_only_the_input() {
        let original = failed_at(vec![
            exec("a", StepStatus::Succeeded),
            exec("b", StepStatus::Failed),
        ]);
        let run = retry_run(
            &original,
            &wf(&["a", "b"]),
            2,
            RetryFrom::Start,
            "r2".into(),
            Timestamp(5),
        )
        .expect("retry");
        assert_eq!(run.status, RunStatus::Queued);
        assert_eq!(run.revision, 2);
        assert_eq!(run.trigger_input, json!({"body": 7}));
        assert!(run.step_executions.is_empty());
        assert_eq!(run.cursor.step, 0);
        assert_eq!(run.retry_of.expect("link").run_id, "r1");
    }

    #[test]
    fn from_the_failed_step_keeps_the_results_before_it() {
        let original = failed_at(vec![
            exec("a", StepStatus::Succeeded),
            exec("b", StepStatus::Skipped),
            exec("each[0].get", StepStatus::Succeeded),
            exec("each[1].get", StepStatus::Failed),
            exec("each", StepStatus::Failed),
        ]);
        let w = wf(&["a", "b", "each", "d"]);
        let run = retry_run(
            &original,
            &w,
            1,
            RetryFrom::FailedStep,
            "r2".into(),
            Timestamp(5),
        )
        .expect("retry");
        assert_eq!(run.cursor.step, 2);
        let ids: Vec<&str> = run
            .step_executions
            .iter()
            .map(|e| e.step_id.as_str())
            .collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(run.step_outputs()["a"], json!("a"));
        assert_eq!(run.context["k"], json!("v"));
        assert_eq!(run.retry_of.expect("link").step.as_deref(), Some("each"));
    }

    #[test]
    fn from_the_failed_step_refuses_what_it_cannot_reuse() {
        let original = failed_at(vec![
            exec("a", StepStatus::Succeeded),
            exec("b", StepStatus::Failed),
        ]);
        let at = |w: &Workflow| {
            retry_run(
                &original,
                w,
                2,
                RetryFrom::FailedStep,
                "r2".into(),
                Timestamp(5),
            )
            .expect_err("refused")
        };
        assert!(at(&wf(&["a", "c"])).contains("`b` is not in this revision"));
        assert!(at(&wf(&["a", "new", "b"])).contains("step `new` comes before `b`"));
        let mut ok = original.clone();
        ok.status = RunStatus::Succeeded;
        let e = retry_run(
            &ok,
            &wf(&["a", "b"]),
            1,
            RetryFrom::FailedStep,
            "r2".into(),
            Timestamp(5),
        );
        assert!(e.expect_err("refused").contains("no failed step"));
        let mut running = original.clone();
        running.status = RunStatus::Running;
        let e = retry_run(
            &running,
            &wf(&["a", "b"]),
            1,
            RetryFrom::Start,
            "r2".into(),
            Timestamp(5),
        );
        assert!(e.expect_err("refused").contains("only an ended run"));
    }
}
