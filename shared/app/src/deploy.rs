//! Deploying workflows: validation, token resolution, revisions, and the in-memory registry
//! that maps webhook tokens to triggers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use crate::tokens::{new_callback_secret, new_token};
use serde_json::Value;
use tripline_core::definition::{CronTrigger, Trigger, WebhookTrigger};
use tripline_core::validate::{self, Format, Problem};
use tripline_core::{Timestamp, Workflow};

use crate::ports::Schedules;
use crate::ports::{Store, StoreError, WorkflowRecord};
use crate::secrets::Secrets;

/// A webhook trigger of the latest revision of a workflow.
#[derive(Clone)]
pub struct Hook {
    pub record: Arc<WorkflowRecord>,
    pub trigger: WebhookTrigger,
}

#[derive(Default)]
struct Registry {
    hooks: HashMap<String, Hook>,
    latest: HashMap<String, Arc<WorkflowRecord>>,
    /// How many of `latest`'s flow triggers listen to each workflow: a webhook's request
    /// asks it (`App::has_flow_listeners`).
    listened: HashMap<String, usize>,
}

/// The workflows a revision's flow triggers listen to.
fn flow_targets(record: &WorkflowRecord) -> impl Iterator<Item = &String> {
    record.definition.triggers.iter().filter_map(|t| match t {
        Trigger::Flow(f) => Some(&f.workflow),
        _ => None,
    })
}

/// What is deployed now, plus a cache of every revision runs refer to.
#[derive(Default)]
pub struct Deployments {
    registry: RwLock<Registry>,
    revisions: Mutex<HashMap<(String, u32), Arc<Workflow>>>,
    seen: Mutex<Seen>,
    schedules: std::sync::OnceLock<Arc<dyn Schedules>>,
    kafka: std::sync::OnceLock<Arc<dyn crate::ports::KafkaSource>>,
    secrets: std::sync::OnceLock<Arc<Secrets>>,
    /// The longest `retention` a workflow may set (AWS: the stack's, which the payload
    /// bucket's lifecycle rule keeps bodies for).
    retention_max: std::sync::OnceLock<std::time::Duration>,
}

/// What this process last saw of the deploys made elsewhere.
#[derive(Default)]
struct Seen {
    /// The [`DEPLOYED_MARKER`] when the registry was last loaded.
    generation: Option<Timestamp>,
    checked_at: Option<std::time::Instant>,
}

/// The marker every deploy sets: other processes compare it with what they loaded.
pub const DEPLOYED_MARKER: &str = "deployed";

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("the definition is invalid ({} problem(s))", .0.len())]
    Invalid(Vec<Problem>),
    #[error("another deploy of this workflow happened at the same time; try again")]
    Conflict,
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for DeployError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => DeployError::Conflict,
            other => DeployError::Store(other),
        }
    }
}

/// The result of a deploy.
pub struct Deployed {
    pub record: Arc<WorkflowRecord>,
    /// True when the definition equals the latest revision's: no new revision was made.
    pub unchanged: bool,
    /// What the definition does that works but should change (a credential written
    /// inline), each with its path and how to change it.
    pub warnings: Vec<Problem>,
}

fn problem(path: &str, message: String) -> Problem {
    Problem {
        path: path.into(),
        line: None,
        column: None,
        message,
    }
}

fn cron_triggers(wf: &Workflow) -> Vec<&CronTrigger> {
    wf.triggers
        .iter()
        .filter_map(|t| match t {
            Trigger::Cron(c) => Some(c),
            _ => None,
        })
        .collect()
}

/// A definition's text, parsed and validated: the workflow and its source as written;
/// `Invalid` with every problem and its position.
pub fn parse_definition(
    text: &str,
    format: Format,
    expected_id: Option<&str>,
) -> Result<(Workflow, Value), DeployError> {
    if text.len() > validate::MAX_DEFINITION_BYTES {
        return Err(DeployError::Invalid(vec![validate::too_large(text.len())]));
    }
    let parsed = match format {
        Format::Json => tripline_core::source::parse_json(text),
        Format::Yaml => tripline_core::source::parse(text),
    };
    let (source, positions) = parsed.map_err(|e| {
        DeployError::Invalid(vec![Problem {
            path: String::new(),
            line: e.position.map(|p| p.line),
            column: e.position.map(|p| p.column),
            message: e.message,
        }])
    })?;
    let wf = validate::load_value(&source, &positions).map_err(DeployError::Invalid)?;
    if let Some(expected) = expected_id
        && wf.id != expected
    {
        let msg = format!(
            "the definition's id is `{}` but it was deployed as `{expected}`; make them the same",
            wf.id
        );
        return Err(DeployError::Invalid(vec![problem("id", msg)]));
    }
    Ok((wf, source))
}

/// The previous revision's switches, for the triggers the new definition still has (a
/// removal turns everything on again).
fn kept_switches(previous: Option<&WorkflowRecord>, wf: &Workflow) -> crate::ports::Switches {
    let mut switches = previous
        .filter(|p| !p.removed)
        .map(|p| p.switches.clone())
        .unwrap_or_default();
    switches
        .triggers_off
        .retain(|id| wf.triggers.iter().any(|t| t.id() == id));
    switches
}

impl Deployments {
    pub(crate) fn schedules(&self) -> Option<&Arc<dyn Schedules>> {
        self.schedules.get()
    }

    pub fn set_schedules(&self, schedules: Arc<dyn Schedules>) {
        let _ = self.schedules.set(schedules);
    }

    pub fn set_secrets(&self, secrets: Arc<Secrets>) {
        let _ = self.secrets.set(secrets);
    }

    pub fn set_kafka_source(&self, source: Arc<dyn crate::ports::KafkaSource>) {
        let _ = self.kafka.set(source);
    }

    pub fn set_retention_max(&self, max: std::time::Duration) {
        let _ = self.retention_max.set(max);
    }
    pub fn hook(&self, token: &str) -> Option<Hook> {
        self.registry.read().ok()?.hooks.get(token).cloned()
    }

    pub fn latest(&self, id: &str) -> Option<Arc<WorkflowRecord>> {
        self.registry.read().ok()?.latest.get(id).cloned()
    }

    /// Whether a deployed workflow has a flow trigger on `workflow`.
    pub fn listened_to(&self, workflow: &str) -> bool {
        self.registry
            .read()
            .is_ok_and(|r| r.listened.contains_key(workflow))
    }

    pub fn all(&self) -> Vec<Arc<WorkflowRecord>> {
        let mut v: Vec<_> = self
            .registry
            .read()
            .map(|r| r.latest.values().cloned().collect())
            .unwrap_or_default();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    pub(crate) fn install(&self, record: Arc<WorkflowRecord>) {
        let Ok(mut reg) = self.registry.write() else {
            return;
        };
        reg.hooks.retain(|_, h| h.record.id != record.id);
        if let Some(before) = reg.latest.remove(&record.id) {
            for target in flow_targets(&before) {
                if let Some(n) = reg.listened.get_mut(target) {
                    *n -= 1;
                    if *n == 0 {
                        reg.listened.remove(target);
                    }
                }
            }
        }
        if !record.removed {
            for target in flow_targets(&record) {
                *reg.listened.entry(target.clone()).or_default() += 1;
            }
            self.install_live(&mut reg, record);
        }
    }

    fn install_live(&self, reg: &mut Registry, record: Arc<WorkflowRecord>) {
        for t in &record.definition.triggers {
            if let Trigger::Webhook(w) = t
                && let Some(token) = &w.token
            {
                reg.hooks.insert(
                    token.clone(),
                    Hook {
                        record: record.clone(),
                        trigger: w.clone(),
                    },
                );
            }
        }
        if let Ok(mut revs) = self.revisions.lock() {
            revs.insert(
                (record.id.clone(), record.revision),
                Arc::new(record.definition.clone()),
            );
        }
        reg.latest.insert(record.id.clone(), record);
    }

    /// Loads what the store has deployed (at start-up, and again where other processes
    /// deploy).
    pub async fn load(&self, store: &dyn Store) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        // Read before the workflows: a deploy in between moves it again.
        let generation = store.marker(DEPLOYED_MARKER).await?;
        for r in store.latest_workflows().await? {
            let newer = self
                .latest(&r.id)
                .is_none_or(|have| have.revision < r.revision);
            if newer && (!r.removed || self.latest(&r.id).is_some()) {
                self.install(Arc::new(r));
            }
        }
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Seen {
                generation,
                checked_at: Some(started),
            };
        }
        Ok(())
    }

    /// Reloads the registry when a deploy happened since it was loaded (one read of the
    /// deploy marker, and the workflows only when it moved).
    pub async fn refresh(&self, store: &dyn Store) -> Result<(), StoreError> {
        let checked = std::time::Instant::now();
        let generation = store.marker(DEPLOYED_MARKER).await?;
        let current = self.seen.lock().map(|s| s.generation).unwrap_or(None);
        if generation == current {
            if let Ok(mut seen) = self.seen.lock() {
                seen.checked_at = Some(checked);
            }
            return Ok(());
        }
        self.load(store).await
    }

    /// True when the registry was checked against the store less than `max_age` ago.
    pub fn checked_within(&self, max_age: std::time::Duration) -> bool {
        self.seen
            .lock()
            .ok()
            .and_then(|s| s.checked_at)
            .is_some_and(|at| at.elapsed() < max_age)
    }

    /// The definition of one revision, from the cache or the store.
    pub async fn revision(
        &self,
        store: &dyn Store,
        id: &str,
        revision: u32,
    ) -> Result<Option<Arc<Workflow>>, StoreError> {
        if let Some(w) = self
            .revisions
            .lock()
            .ok()
            .and_then(|m| m.get(&(id.to_string(), revision)).cloned())
        {
            return Ok(Some(w));
        }
        let Some(rec) = store.workflow(id, Some(revision)).await? else {
            return Ok(None);
        };
        let wf = Arc::new(rec.definition);
        if let Ok(mut m) = self.revisions.lock() {
            m.insert((id.to_string(), revision), wf.clone());
        }
        Ok(Some(wf))
    }

    /// Validates and deploys a definition's text.
    pub async fn deploy_text(
        &self,
        store: &dyn Store,
        text: &str,
        format: Format,
        expected_id: Option<&str>,
        now: Timestamp,
    ) -> Result<Deployed, DeployError> {
        let (wf, source) = parse_definition(text, format, expected_id)?;
        self.deploy(store, wf, source, now).await
    }

    /// Removes a workflow: a new revision that marks it removed, so that its webhooks stop
    /// answering, its cron triggers' schedules are deleted and nothing starts it, while its
    /// runs keep their revisions. `None` when it is not deployed.
    pub async fn remove(
        &self,
        store: &dyn Store,
        id: &str,
        now: Timestamp,
    ) -> Result<Option<Arc<WorkflowRecord>>, DeployError> {
        let Some(previous) = store.workflow(id, None).await?.filter(|p| !p.removed) else {
            return Ok(None);
        };
        let record = WorkflowRecord {
            id: previous.id.clone(),
            revision: previous.revision + 1,
            definition: previous.definition.clone(),
            source: Value::Null,
            deployed_at: now,
            removed: true,
            switches: Default::default(),
        };
        store.deploy(&record).await?;
        if let Err(e) = store.set_marker(DEPLOYED_MARKER, now).await {
            tracing::warn!(error = %e, "the deploy marker was not moved; other processes see this removal at their next full reload");
        }
        if let Some(schedules) = self.schedules.get() {
            for c in cron_triggers(&previous.definition) {
                if let Err(e) = schedules.delete(id, &c.id).await {
                    tracing::warn!(workflow = %id, trigger = %c.id, error = %e, "the removed workflow's schedule was not deleted; its ticks are recorded `rejected` and start nothing");
                }
            }
        }
        let rec = Arc::new(record);
        self.install(rec.clone());
        tracing::info!(workflow = %id, revision = rec.revision, "workflow removed");
        Ok(Some(rec))
    }

    /// Deploys a validated definition: fills in webhook tokens (keeping those of the
    /// previous revision), refuses a token another workflow uses, and makes a new revision
    /// unless the definition is unchanged.
    pub async fn deploy(
        &self,
        store: &dyn Store,
        mut wf: Workflow,
        source: Value,
        now: Timestamp,
    ) -> Result<Deployed, DeployError> {
        let previous = store.workflow(&wf.id, None).await?;
        if let Some(prev) = &previous
            && prev.source == source
            && !prev.removed
        {
            let rec = Arc::new(prev.clone());
            self.install(rec.clone());
            return Ok(Deployed {
                warnings: validate::warnings(&rec.definition),
                record: rec,
                unchanged: true,
            });
        }
        let mut problems = self.deploy_problems(&mut wf, previous.as_ref()).await?;
        let switches = kept_switches(previous.as_ref(), &wf);
        problems.extend(self.missing_secrets(&wf, &source).await?);
        if !problems.is_empty() {
            return Err(DeployError::Invalid(problems));
        }
        let schedules = self.schedules.get();
        let before: Vec<CronTrigger> = previous
            .as_ref()
            .filter(|p| !p.removed)
            .map(|p| cron_triggers(&p.definition).into_iter().cloned().collect())
            .unwrap_or_default();
        if let Some(schedules) = schedules {
            // Created or updated before the revision is stored: a failure leaves the old
            // revision deployed, and the deploy can be retried.
            for c in cron_triggers(&wf) {
                if !before.contains(c) {
                    let on = !switches.disabled && !switches.triggers_off.contains(&c.id);
                    schedules
                        .put(&wf.id, c, on)
                        .await
                        .map_err(DeployError::Store)?;
                }
            }
        }
        if (wf.on_success.is_some() || wf.on_failure.is_some()) && wf.callback_secret.is_none() {
            let kept = previous
                .as_ref()
                .and_then(|p| p.definition.callback_secret.clone());
            wf.callback_secret = Some(match kept {
                Some(k) => k,
                None => self.new_callback_secret(&wf.id, now).await?,
            });
        }
        let record = WorkflowRecord {
            id: wf.id.clone(),
            revision: previous.as_ref().map_or(1, |p| p.revision + 1),
            definition: wf,
            source,
            deployed_at: now,
            removed: false,
            switches,
        };
        store.deploy(&record).await?;
        self.after_deploy(store, &record, &before, now).await;
        let rec = Arc::new(record);
        self.install(rec.clone());
        tracing::info!(workflow = %rec.id, revision = rec.revision, "workflow deployed");
        Ok(Deployed {
            warnings: validate::warnings(&rec.definition),
            record: rec,
            unchanged: false,
        })
    }

    /// A generated callback signing secret: kept in the secret store as
    /// `callback_{workflow}` (set it to a value of your own to verify the signatures; it is
    /// never shown), referred to by the definition. Without a secret store, inline.
    async fn new_callback_secret(
        &self,
        workflow: &str,
        now: Timestamp,
    ) -> Result<String, DeployError> {
        let Some(secrets) = self.secrets.get() else {
            return Ok(new_callback_secret());
        };
        let name = format!("callback_{}", workflow.replace('-', "_"));
        if secrets.value(&name, now).await?.is_none() {
            secrets
                .set(&name, &new_callback_secret(), now)
                .await
                .map_err(|e| match e {
                    crate::secrets::SetError::Store(e) => DeployError::Store(e),
                    other => {
                        DeployError::Invalid(vec![problem("callback_secret", other.to_string())])
                    }
                })?;
        }
        Ok(tripline_core::secrets::reference_to(&name))
    }

    /// The secrets the definition names that the store does not have: each with where it
    /// is read and the closest names the store has.
    async fn missing_secrets(
        &self,
        wf: &Workflow,
        source: &Value,
    ) -> Result<Vec<Problem>, DeployError> {
        let wanted = validate::secret_names(wf);
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let have: Vec<String> = match self.secrets.get() {
            Some(s) => s.list().await?.into_iter().map(|i| i.name).collect(),
            None => Vec::new(),
        };
        let mut problems = Vec::new();
        for name in wanted.iter().filter(|n| !have.contains(n)) {
            let mut close: Vec<(f64, &String)> = have
                .iter()
                .map(|h| (strsim::jaro_winkler(name, h), h))
                .filter(|(score, _)| *score > 0.8)
                .collect();
            close.sort_by(|a, b| b.0.total_cmp(&a.0));
            let hint = match close.as_slice() {
                [] => String::new(),
                some => format!(
                    "; the closest existing: {}",
                    some.iter()
                        .take(3)
                        .map(|(_, n)| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            problems.push(problem(
                &where_read(source, name).unwrap_or_default(),
                format!("the secret `{name}` does not exist{hint}. Set it first: `tripline secrets set {name}` (the value on standard input) or `PUT /v1/secrets/{name}`"),
            ));
        }
        Ok(problems)
    }

    /// What would make this revision fail where it runs, beyond validation: a token
    /// another workflow uses (a missing token is generated, or kept from the previous
    /// revision), a schedule the scheduler refuses, a flow loop, topics the Kafka source
    /// cannot deliver.
    async fn deploy_problems(
        &self,
        wf: &mut Workflow,
        previous: Option<&WorkflowRecord>,
    ) -> Result<Vec<Problem>, DeployError> {
        let old_tokens: HashMap<String, String> = previous
            .into_iter()
            .flat_map(|p| p.definition.triggers.iter())
            .filter_map(|t| match t {
                Trigger::Webhook(w) => w.token.clone().map(|tok| (w.id.clone(), tok)),
                _ => None,
            })
            .collect();
        let mut problems = Vec::new();
        for (i, t) in wf.triggers.iter_mut().enumerate() {
            let Trigger::Webhook(w) = t else { continue };
            let token = w
                .token
                .get_or_insert_with(|| old_tokens.get(&w.id).cloned().unwrap_or_else(new_token));
            if let Some(other) = self.hook(token).filter(|h| h.record.id != wf.id) {
                problems.push(problem(
                    &format!("triggers[{i}].token"),
                    format!("this token is already used by workflow `{}`; every webhook needs its own token", other.record.id),
                ));
            }
        }
        if let (Some(max), Some(r)) = (self.retention_max.get(), wf.retention)
            && r.std() > *max
        {
            problems.push(problem(
                "retention",
                format!(
                    "this stack keeps records at most {} (its RetentionDays parameter); set a shorter retention or raise RetentionDays",
                    tripline_core::Duration(*max)
                ),
            ));
        }
        let schedules = self.schedules.get();
        if let Some(schedules) = schedules {
            for (i, t) in wf.triggers.iter().enumerate() {
                if let Trigger::Cron(c) = t
                    && let Some(why) = schedules.refuse(c)
                {
                    problems.push(problem(&format!("triggers[{i}].schedule"), why));
                }
            }
        }
        let deployed = self.all();
        for (i, t) in wf.triggers.iter().enumerate() {
            if let Trigger::Flow(f) = t
                && let Some(cycle) =
                    tripline_core::flow::flow_cycle(deployed.iter().map(|r| &r.definition), wf, f)
            {
                problems.push(problem(
                    &format!("triggers[{i}].workflow"),
                    format!(
                        "this flow trigger closes a loop ({}): each run's end would start the next for ever; remove one of the flow triggers on the way",
                        cycle.join(" → ")
                    ),
                ));
            }
        }
        if let Some(source) = self.kafka.get() {
            for (i, t) in wf.triggers.iter().enumerate() {
                if let Trigger::Kafka(k) = t
                    && let Some(why) = source.refuse(k).await?
                {
                    let field = match (&k.cluster, &k.start) {
                        (Some(_), _) => "cluster",
                        (None, Some(_)) => "start",
                        _ => "topics",
                    };
                    problems.push(problem(&format!("triggers[{i}].{field}"), why));
                }
            }
        }
        Ok(problems)
    }

    /// After the revision is stored: the deploy marker moves (other processes reload),
    /// new cron triggers start from now, and removed triggers' schedules are deleted.
    /// Failures are logged: the revision is deployed, and each has its fallback.
    async fn after_deploy(
        &self,
        store: &dyn Store,
        record: &WorkflowRecord,
        before: &[CronTrigger],
        now: Timestamp,
    ) {
        let schedules = self.schedules.get();
        if let Err(e) = store.set_marker(DEPLOYED_MARKER, now).await {
            tracing::warn!(error = %e, "the deploy marker was not moved; other processes see this deploy at their next full reload");
        }
        for c in cron_triggers(&record.definition) {
            if !before.contains(c)
                && let Err(e) = store.set_marker(&cursor_marker(&record.id, c), now).await
            {
                tracing::warn!(workflow = %record.id, trigger = %c.id, error = %e, "the new trigger's start was not recorded; the scheduler starts it from its last tick");
            }
        }
        if let Some(schedules) = schedules {
            let now_ids: Vec<String> = cron_triggers(&record.definition)
                .iter()
                .map(|c| c.id.clone())
                .collect();
            for gone in before.iter().filter(|c| !now_ids.contains(&c.id)) {
                if let Err(e) = schedules.delete(&record.id, &gone.id).await {
                    tracing::warn!(workflow = %record.id, trigger = %gone.id, error = %e, "the removed trigger's schedule was not deleted; its ticks are recorded `rejected` and start nothing");
                }
            }
        }
    }
}

/// The path of the first string of the definition that reads `secrets.NAME`.
fn where_read(source: &Value, name: &str) -> Option<String> {
    fn walk(v: &Value, path: String, needle: &str) -> Option<String> {
        match v {
            Value::String(s) => {
                let at = s.find(needle)?;
                let next = s[at + needle.len()..].chars().next();
                (!next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')).then_some(path)
            }
            Value::Array(items) => items
                .iter()
                .enumerate()
                .find_map(|(i, item)| walk(item, format!("{path}[{i}]"), needle)),
            Value::Object(map) => map.iter().find_map(|(k, item)| {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                walk(item, p, needle)
            }),
            _ => None,
        }
    }
    walk(source, String::new(), &format!("secrets.{name}"))
}

/// The last tick the local scheduler handled, per schedule. A deploy that adds or changes a
/// trigger (or deploys a removed workflow again) sets it to the deploy's time: the trigger
/// starts from there, and the ticks of before are not its missed ticks.
pub(crate) fn cursor_marker(workflow: &str, trigger: &CronTrigger) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(trigger.schedule.trim().as_bytes());
    h.update([0]);
    h.update(trigger.timezone.as_deref().unwrap_or("UTC").as_bytes());
    let digest = h.finalize();
    let short: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("cron/{workflow}/{}/{short}", trigger.id)
}

/// A unified diff of two definitions as indented JSON, with two lines of context: what
/// `tripline diff` prints and the console shows between revisions.
pub fn definition_diff(old: &Value, new: &Value, old_name: &str, new_name: &str) -> String {
    let a = serde_json::to_string_pretty(old).unwrap_or_default() + "\n";
    let b = serde_json::to_string_pretty(new).unwrap_or_default() + "\n";
    similar::TextDiff::from_lines(&a, &b)
        .unified_diff()
        .context_radius(2)
        .header(old_name, new_name)
        .to_string()
}
