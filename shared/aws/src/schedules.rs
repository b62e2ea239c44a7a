//! Cron triggers as EventBridge Scheduler schedules: one recurring schedule per trigger, in
//! Tripline's schedule group, invoking the cron-tick function with the scheduled time.

use async_trait::async_trait;
use aws_sdk_scheduler::types::{
    DeadLetterConfig, FlexibleTimeWindow, FlexibleTimeWindowMode, RetryPolicy, ScheduleState,
    Target,
};
use serde_json::json;
use sha2::Digest;
use tripline_app::ports::Schedules;
use tripline_app::ports::StoreError;
use tripline_core::definition::CronTrigger;
use tripline_core::time::cron::eventbridge_expression;

use crate::settings::CronSettings;
use crate::store_error;

/// The schedules of cron triggers on EventBridge Scheduler.
#[derive(Debug)]
pub struct EventBridgeSchedules {
    scheduler: aws_sdk_scheduler::Client,
    settings: CronSettings,
}

/// A trigger's schedule name: `{workflow}.{trigger}` (names hold 1 to 64 of
/// `[0-9a-zA-Z-_.]`; a longer one is cut and ends with a hash of the whole).
pub fn schedule_name(workflow: &str, trigger: &str) -> String {
    let full = format!("{workflow}.{trigger}");
    if full.len() <= 64 {
        return full;
    }
    let digest = sha2::Sha256::digest(full.as_bytes());
    let hash: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{hash}", &full[..51])
}

/// What the schedule sends to the cron-tick function: Scheduler fills in the time the
/// schedule fired for (`<aws.scheduler.scheduled-time>`, RFC 3339 in UTC).
pub fn tick_input(workflow: &str, trigger: &str) -> String {
    json!({
        "workflow": workflow,
        "trigger": trigger,
        "scheduled_time": "<aws.scheduler.scheduled-time>",
    })
    .to_string()
}

impl EventBridgeSchedules {
    pub fn new(scheduler: aws_sdk_scheduler::Client, settings: CronSettings) -> Self {
        Self {
            scheduler,
            settings,
        }
    }
}

fn build_error(e: aws_sdk_scheduler::error::BuildError) -> StoreError {
    StoreError::Unavailable(Box::new(e))
}

#[async_trait]
impl Schedules for EventBridgeSchedules {
    fn refuse(&self, trigger: &CronTrigger) -> Option<String> {
        eventbridge_expression(&trigger.schedule).err().map(|e| {
            format!("{e} (this is the AWS shape, where cron triggers run on EventBridge Scheduler)")
        })
    }

    async fn put(
        &self,
        workflow: &str,
        trigger: &CronTrigger,
        enabled: bool,
    ) -> Result<(), StoreError> {
        let state = if enabled {
            ScheduleState::Enabled
        } else {
            ScheduleState::Disabled
        };
        let expression = eventbridge_expression(&trigger.schedule)
            .map_err(|e| StoreError::Unavailable(e.into()))?;
        let c = &self.settings;
        let mut target = Target::builder()
            .arn(&c.target_arn)
            .role_arn(&c.role_arn)
            .input(tick_input(workflow, &trigger.id))
            .retry_policy(
                RetryPolicy::builder()
                    .maximum_retry_attempts(185)
                    .maximum_event_age_in_seconds(86_400)
                    .build(),
            );
        if let Some(dlq) = &c.dead_letter_arn {
            target = target.dead_letter_config(DeadLetterConfig::builder().arn(dlq).build());
        }
        let target = target.build().map_err(build_error)?;
        let window = FlexibleTimeWindow::builder()
            .mode(FlexibleTimeWindowMode::Off)
            .build()
            .map_err(build_error)?;
        let name = schedule_name(workflow, &trigger.id);
        let zone = trigger.timezone.as_deref().unwrap_or("UTC");
        let description = format!(
            "Tripline: workflow {workflow}, cron trigger {} ({})",
            trigger.id, trigger.schedule
        );
        let created = self
            .scheduler
            .create_schedule()
            .name(&name)
            .group_name(&c.group)
            .schedule_expression(&expression)
            .schedule_expression_timezone(zone)
            .flexible_time_window(window.clone())
            .target(target.clone())
            .state(state.clone())
            .description(&description)
            .send()
            .await;
        match created {
            Ok(_) => {
                tracing::info!(schedule = %name, expression, enabled, "schedule created");
                return Ok(());
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conflict_exception()) => {}
            Err(e) => return Err(store_error("Scheduler CreateSchedule", e)),
        }
        self.scheduler
            .update_schedule()
            .name(&name)
            .group_name(&c.group)
            .schedule_expression(&expression)
            .schedule_expression_timezone(zone)
            .flexible_time_window(window)
            .target(target)
            .state(state)
            .description(description)
            .send()
            .await
            .map_err(|e| store_error("Scheduler UpdateSchedule", e))?;
        tracing::info!(schedule = %name, expression, enabled, "schedule updated");
        Ok(())
    }

    async fn delete(&self, workflow: &str, trigger: &str) -> Result<(), StoreError> {
        let name = schedule_name(workflow, trigger);
        match self
            .scheduler
            .delete_schedule()
            .name(&name)
            .group_name(&self.settings.group)
            .send()
            .await
        {
            Ok(_) => {
                tracing::info!(schedule = %name, "schedule deleted");
                Ok(())
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(store_error("Scheduler DeleteSchedule", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_name_is_at_most_64_allowed_characters_and_stays_unique() {
        assert_eq!(schedule_name("pull", "nightly"), "pull.nightly");
        let long_wf = "w".repeat(64);
        let a = schedule_name(&long_wf, "nightly");
        let b = schedule_name(&long_wf, "hourly");
        assert!(a.len() <= 64 && b.len() <= 64);
        assert_ne!(a, b);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        );
    }
}
