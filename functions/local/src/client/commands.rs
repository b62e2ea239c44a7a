//! The client's commands on workflows, runs, inbox messages, bulk jobs and exports.

use std::io::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use super::table::{self, text};
use super::{Client, Exit, Failure, query};

/// The filters the listings, bulk jobs and exports take.
#[derive(clap::Args, Clone, Default)]
pub struct Filters {
    #[arg(long)]
    pub workflow: Option<String>,
    /// A run status (queued, running, waiting, succeeded, failed, cancelled, timed_out).
    #[arg(long)]
    pub status: Option<String>,
    /// A message outcome (started, filtered, rejected, duplicate, …).
    #[arg(long)]
    pub outcome: Option<String>,
    /// A trigger's id.
    #[arg(long)]
    pub trigger: Option<String>,
    /// Text inside a run's input or a message's body.
    #[arg(long)]
    pub text: Option<String>,
    /// A run error type (step_failed, template_error, …).
    #[arg(long)]
    pub error_type: Option<String>,
    /// Runs started by this run (or retrying it).
    #[arg(long)]
    pub parent: Option<String>,
    /// Messages made by this run.
    #[arg(long)]
    pub run: Option<String>,
    /// From this time on (RFC 3339).
    #[arg(long)]
    pub since: Option<String>,
    /// Before this time (RFC 3339).
    #[arg(long)]
    pub until: Option<String>,
}

impl Filters {
    fn runs(&self) -> Vec<(&'static str, Option<String>)> {
        vec![
            ("workflow", self.workflow.clone()),
            ("status", self.status.clone()),
            ("trigger", self.trigger.clone()),
            ("text", self.text.clone()),
            ("error_type", self.error_type.clone()),
            ("parent", self.parent.clone()),
            ("since", self.since.clone()),
            ("until", self.until.clone()),
        ]
    }

    fn inbox(&self) -> Vec<(&'static str, Option<String>)> {
        vec![
            ("workflow", self.workflow.clone()),
            ("trigger", self.trigger.clone()),
            ("outcome", self.outcome.clone()),
            ("text", self.text.clone()),
            ("run", self.run.clone()),
            ("since", self.since.clone()),
            ("until", self.until.clone()),
        ]
    }

    /// As a JSON object (a bulk job's filter): the set ones.
    fn object(pairs: Vec<(&'static str, Option<String>)>) -> Value {
        Value::Object(
            pairs
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k.to_string(), json!(v))))
                .collect(),
        )
    }
}

#[derive(clap::Subcommand)]
pub enum WorkflowsCommand {
    /// The deployed workflows, their triggers and switches.
    List,
    /// One workflow: its definition, triggers and revisions.
    Get { id: String },
    /// Switch a workflow (or with --trigger, one trigger) on.
    Enable {
        id: String,
        #[arg(long)]
        trigger: Option<String>,
    },
    /// Switch a workflow (or with --trigger, one trigger) off, without removing it.
    Disable {
        id: String,
        #[arg(long)]
        trigger: Option<String>,
    },
    /// Deploy a folder of definitions (see `tripline deploy`).
    Deploy(super::DeployArgs),
    /// Show what deploying a folder would change (see `tripline diff`).
    Diff(super::DeployArgs),
}

pub async fn workflows(c: &Client, cmd: WorkflowsCommand) -> Result<Exit, Failure> {
    match cmd {
        WorkflowsCommand::List => {
            let v = c.get("/v1/workflows").await?;
            c.show(&v, |v| {
                let items = v["items"].as_array().cloned().unwrap_or_default();
                table::print(
                    &["WORKFLOW", "REVISION", "ENABLED", "TRIGGERS"],
                    &items,
                    |w, col| match col {
                        0 => text(&w["id"]),
                        1 => text(&w["revision"]),
                        2 => text(&w["enabled"]),
                        _ => w["triggers"]
                            .as_array()
                            .map(|ts| {
                                ts.iter()
                                    .map(|t| {
                                        let off = if t["enabled"] == false { " (off)" } else { "" };
                                        format!("{}:{}{off}", text(&t["type"]), text(&t["trigger"]))
                                    })
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            })
                            .unwrap_or_default(),
                    },
                    "no workflows deployed; deploy a folder with `tripline deploy DIR`",
                );
            });
        }
        WorkflowsCommand::Get { id } => {
            let v = c.get(&format!("/v1/workflows/{id}")).await?;
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        WorkflowsCommand::Enable { id, trigger } => switch(c, &id, trigger, "enable").await?,
        WorkflowsCommand::Disable { id, trigger } => switch(c, &id, trigger, "disable").await?,
        WorkflowsCommand::Deploy(args) => return super::deploy::deploy(c, &args, true).await,
        WorkflowsCommand::Diff(args) => return super::deploy::deploy(c, &args, false).await,
    }
    Ok(Exit::Ok)
}

async fn switch(c: &Client, id: &str, trigger: Option<String>, verb: &str) -> Result<(), Failure> {
    let path = match &trigger {
        Some(t) => format!("/v1/workflows/{id}/triggers/{t}/{verb}"),
        None => format!("/v1/workflows/{id}/{verb}"),
    };
    let v = c.post(&path, &json!({})).await?;
    c.show(&v, |v| {
        let what = trigger.map_or(format!("workflow `{id}`"), |t| {
            format!("trigger `{t}` of `{id}`")
        });
        println!(
            "{what} is {} (revision {})",
            if verb == "enable" { "on" } else { "off" },
            text(&v["revision"])
        );
    });
    Ok(())
}

#[derive(clap::Subcommand)]
pub enum RunsCommand {
    /// Runs, newest first.
    List {
        #[command(flatten)]
        filters: Box<Filters>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// One run: status, steps, output, error.
    Get { id: String },
    /// Cancel a queued, running or waiting run.
    Cancel { id: String },
    /// Retry an ended run: a new run with the same input.
    Retry {
        id: String,
        /// Keep what the steps before the failed one did, and start there.
        #[arg(long)]
        from_failed_step: bool,
        /// Run the revision the run ran, not the current one.
        #[arg(long)]
        own_revision: bool,
    },
    /// Follow a run until it ends; exits 0 when it succeeded, 4 otherwise.
    Watch {
        id: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
}

fn print_runs(items: &[Value]) {
    table::print(
        &["RUN", "WORKFLOW", "TRIGGER", "STATUS", "STARTED", "ERROR"],
        items,
        |r, col| match col {
            0 => text(&r["run_id"]),
            1 => text(&r["workflow"]),
            2 => text(&r["trigger"]["id"]),
            3 => text(&r["status"]),
            4 => text(&r["inserted_at"]),
            _ => text(&r["error"]),
        },
        "no runs",
    );
}

pub async fn runs(c: &Client, cmd: RunsCommand) -> Result<Exit, Failure> {
    match cmd {
        RunsCommand::List { filters, limit } => {
            let mut pairs = filters.runs();
            pairs.push(("limit", Some(limit.to_string())));
            let v = c.get(&format!("/v1/runs{}", query(&pairs))).await?;
            c.show(&v, |v| {
                print_runs(v["items"].as_array().map_or(&[][..], Vec::as_slice))
            });
        }
        RunsCommand::Get { id } => {
            let v = c.get(&format!("/v1/runs/{id}")).await?;
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        RunsCommand::Cancel { id } => {
            let v = c.post(&format!("/v1/runs/{id}/cancel"), &json!({})).await?;
            c.show(&v, |v| println!("run `{id}` is {}", text(&v["status"])));
        }
        RunsCommand::Retry {
            id,
            from_failed_step,
            own_revision,
        } => {
            let from = if from_failed_step {
                "failed_step"
            } else {
                "start"
            };
            let revision = if own_revision { "own" } else { "current" };
            let v = c
                .post(
                    &format!("/v1/runs/{id}/retry?from={from}&revision={revision}"),
                    &json!({}),
                )
                .await?;
            c.show(&v, |v| println!("{}", text(&v["run_id"])));
        }
        RunsCommand::Watch { id, timeout } => return watch(c, &id, timeout).await,
    }
    Ok(Exit::Ok)
}

/// Prints each step as it is recorded and the end; the exit code says how it ended.
async fn watch(c: &Client, id: &str, timeout: u64) -> Result<Exit, Failure> {
    let until = std::time::Instant::now() + Duration::from_secs(timeout);
    let mut shown = 0;
    loop {
        let run = c.get(&format!("/v1/runs/{id}")).await?;
        let execs = run["step_executions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for e in execs.iter().skip(shown) {
            if !c.json {
                let error = e["error"]["message"]
                    .as_str()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default();
                println!(
                    "{} attempt {} {} ({} ms){error}",
                    text(&e["step_id"]),
                    text(&e["attempt"]),
                    text(&e["status"]),
                    text(&e["duration_ms"])
                );
            }
        }
        shown = execs.len();
        let status = run["status"].as_str().unwrap_or_default();
        if matches!(status, "succeeded" | "failed" | "cancelled" | "timed_out") {
            c.show(&run, |run| {
                let error = run["error"]
                    .as_str()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default();
                println!("run `{id}` {status}{error}");
            });
            return Ok(if status == "succeeded" {
                Exit::Ok
            } else {
                Exit::Refused
            });
        }
        if std::time::Instant::now() > until {
            return Err(Failure::new(
                Exit::Failed,
                format!("run `{id}` is still {status} after {timeout} s"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[derive(clap::Subcommand)]
pub enum InboxCommand {
    /// Inbox messages, newest first.
    List {
        #[command(flatten)]
        filters: Box<Filters>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// One message, its raw body and outcome.
    Get { id: String },
    /// Match a message again against its workflow's current revision.
    Reprocess { id: String },
}

pub async fn inbox(c: &Client, cmd: InboxCommand) -> Result<Exit, Failure> {
    match cmd {
        InboxCommand::List { filters, limit } => {
            let mut pairs = filters.inbox();
            pairs.push(("limit", Some(limit.to_string())));
            let v = c.get(&format!("/v1/inbox{}", query(&pairs))).await?;
            c.show(&v, |v| {
                let items = v["items"].as_array().cloned().unwrap_or_default();
                table::print(
                    &[
                        "MESSAGE", "WORKFLOW", "TRIGGER", "OUTCOME", "RECEIVED", "REASON",
                    ],
                    &items,
                    |m, col| match col {
                        0 => text(&m["id"]),
                        1 => text(&m["workflow"]),
                        2 => text(&m["trigger"]),
                        3 => text(&m["outcome"]["kind"]),
                        4 => text(&m["received_at"]),
                        _ => text(&m["outcome"]["reason"]),
                    },
                    "no messages",
                );
            });
        }
        InboxCommand::Get { id } => {
            let v = c.get(&format!("/v1/inbox/{id}")).await?;
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        InboxCommand::Reprocess { id } => {
            let v = c
                .post(&format!("/v1/inbox/{id}/reprocess"), &json!({}))
                .await?;
            c.show(&v, |v| {
                println!("{}", serde_json::to_string(v).unwrap_or_default())
            });
        }
    }
    Ok(Exit::Ok)
}

#[derive(clap::Subcommand)]
pub enum BulkCommand {
    /// Retry every run the filters select.
    Retry {
        #[command(flatten)]
        filters: Filters,
        #[arg(long)]
        from_failed_step: bool,
        #[arg(long)]
        own_revision: bool,
        /// Only say how many runs it would retry.
        #[arg(long)]
        dry_run: bool,
    },
    /// Cancel every run the filters select.
    Cancel {
        #[command(flatten)]
        filters: Filters,
        #[arg(long)]
        dry_run: bool,
    },
    /// Reprocess every inbox message the filters select.
    Reprocess {
        #[command(flatten)]
        filters: Filters,
        #[arg(long)]
        dry_run: bool,
    },
}

/// Makes the job, prints its id, and follows it with a progress bar until it is done;
/// exits 4 when any item failed.
pub async fn bulk(c: &Client, cmd: BulkCommand) -> Result<Exit, Failure> {
    let (body, dry_run) = match cmd {
        BulkCommand::Retry {
            filters,
            from_failed_step,
            own_revision,
            dry_run,
        } => (
            json!({
                "action": "retry",
                "from": if from_failed_step { "failed_step" } else { "start" },
                "revision": if own_revision { "own" } else { "current" },
                "filter": Filters::object(filters.runs()),
                "dry_run": dry_run,
            }),
            dry_run,
        ),
        BulkCommand::Cancel { filters, dry_run } => (
            json!({"action": "cancel", "filter": Filters::object(filters.runs()), "dry_run": dry_run}),
            dry_run,
        ),
        BulkCommand::Reprocess { filters, dry_run } => (
            json!({"action": "reprocess", "filter": Filters::object(filters.inbox()), "dry_run": dry_run}),
            dry_run,
        ),
    };
    let job = c.post("/v1/jobs", &body).await?;
    if dry_run {
        c.show(&job, |j| {
            println!("it would act on {} item(s)", text(&j["total"]))
        });
        return Ok(Exit::Ok);
    }
    let id = text(&job["id"]);
    eprintln!("job {id}: {} item(s)", text(&job["total"]));
    let total = job["total"].as_u64().unwrap_or(0);
    let bar = (!c.json).then(|| {
        let bar = indicatif::ProgressBar::new(total);
        if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}") {
            bar.set_style(style);
        }
        bar
    });
    let done = loop {
        let job = c.get(&format!("/v1/jobs/{id}")).await?;
        let (d, f) = (
            job["done"].as_u64().unwrap_or(0),
            job["failed"].as_u64().unwrap_or(0),
        );
        if let Some(bar) = &bar {
            bar.set_position(d + f);
            bar.set_message(format!("{f} failed"));
        }
        if job["status"] == "done" {
            break job;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    if let Some(bar) = bar {
        bar.finish();
    }
    c.show(&done, |j| {
        println!(
            "job {id} done: {} done, {} failed",
            text(&j["done"]),
            text(&j["failed"])
        )
    });
    Ok(if done["failed"].as_u64().unwrap_or(0) > 0 {
        Exit::Refused
    } else {
        Exit::Ok
    })
}

#[derive(clap::Subcommand)]
pub enum ExportCommand {
    /// Every run the filters select.
    Runs {
        #[command(flatten)]
        filters: Filters,
        #[arg(long, value_parser = ["csv", "ndjson"], default_value = "csv")]
        format: String,
    },
    /// Every inbox message the filters select.
    Inbox {
        #[command(flatten)]
        filters: Filters,
        #[arg(long, value_parser = ["csv", "ndjson"], default_value = "csv")]
        format: String,
    },
}

/// Writes the export to standard output as it arrives, following the parts of a server
/// that answers in parts (AWS); a CSV header is written once.
pub async fn export(c: &Client, cmd: ExportCommand) -> Result<Exit, Failure> {
    let (what, mut pairs, format) = match cmd {
        ExportCommand::Runs { filters, format } => ("runs", filters.runs(), format),
        ExportCommand::Inbox { filters, format } => ("inbox", filters.inbox(), format),
    };
    pairs.push(("format", Some(format.clone())));
    let mut out = std::io::stdout().lock();
    let mut cursor: Option<String> = None;
    let mut first = true;
    loop {
        let mut p = pairs.clone();
        p.push(("cursor", cursor.clone()));
        let resp = c
            .raw(c.request(
                reqwest::Method::GET,
                &format!("/v1/{what}/export{}", query(&p)),
            ))
            .await?;
        let next = resp
            .headers()
            .get("x-tripline-next-cursor")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut resp = resp;
        let mut skip_header = !first && format == "csv";
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| Failure::new(Exit::Failed, format!("the export was cut: {e}")))?
        {
            let mut bytes = &chunk[..];
            if skip_header {
                match bytes.iter().position(|b| *b == b'\n') {
                    Some(i) => {
                        bytes = &bytes[i + 1..];
                        skip_header = false;
                    }
                    None => continue,
                }
            }
            out.write_all(bytes)
                .map_err(|e| Failure::new(Exit::Failed, format!("cannot write: {e}")))?;
        }
        first = false;
        match next {
            Some(n) => cursor = Some(n),
            None => return Ok(Exit::Ok),
        }
    }
}
