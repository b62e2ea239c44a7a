//! `trigger_workflow` steps: the run a step starts, admitted once per run and step.

use serde_json::{Value, json};
use tripline_core::Run;
use tripline_core::engine::Event;
use tripline_core::run::{FailureClass, ParentRef, StepError, TriggerKind, TriggerRef};

use super::{CHILD_CLAIM_WINDOW, ExecError};
use crate::App;
use crate::ports::{Admitted, IdempotencyClaim, InboxMessage};

impl App {
    /// Records (once per run and step) the run a `trigger_workflow` step starts.
    pub(super) async fn start_child(
        &self,
        parent: &Run,
        step: &str,
        workflow: &str,
        input: Value,
    ) -> Result<Event, ExecError> {
        let attempt = parent.cursor.attempt;
        let failed = |message: String| Event::StepFailed {
            step: step.to_string(),
            attempt,
            started_at: self.clock.now(),
            request: json!({"workflow": workflow}),
            error: StepError {
                class: FailureClass::Request,
                message,
            },
            output: None,
        };
        self.refresh_workflows(false).await;
        if self.deployments.latest(workflow).is_none() {
            // Deployed elsewhere since this process last looked (AWS): look now.
            self.refresh_workflows(true).await;
        }
        let Some(rec) = self.deployments.latest(workflow) else {
            return Ok(failed(format!(
                "workflow `{workflow}` is not deployed; deploy it before the runs that start it"
            )));
        };
        let now = self.clock.now();
        let message = InboxMessage::new(self.new_id(), now, &rec.id, "workflow", "POST")
            .at_path(format!("/v1/runs/{}/steps/{step}", parent.id))
            .with_json(&input);
        let trigger = TriggerRef {
            kind: TriggerKind::Workflow,
            id: parent.workflow.clone(),
        };
        let input = json!({ "body": input, "parent": {"run_id": parent.id, "workflow": parent.workflow, "step": step} });
        let mut child = self.run_of_message(&message, &rec, trigger, input);
        let run_id = child.id.clone();
        child.parent = Some(ParentRef {
            run_id: parent.id.clone(),
            workflow: parent.workflow.clone(),
            step: step.to_string(),
            flow: None,
        });
        let claim = IdempotencyClaim {
            key: format!("{}/trigger_workflow/{}/{step}", rec.id, parent.id),
            expires_at: now.plus(CHILD_CLAIM_WINDOW),
            held_by_message: false,
        };
        let admitted = self.admit_runs(message, vec![child], Some(claim)).await?;
        let run_id = match admitted {
            Admitted::New { .. } => run_id,
            Admitted::Duplicate { run_id } => run_id,
        };
        Ok(Event::ChildStarted {
            step: step.to_string(),
            run_id,
            workflow: rec.id.clone(),
        })
    }
}
