//! `tripline diff DIR` and `tripline deploy DIR`: a folder of definitions (in git) as the
//! source of truth for a server. `diff` shows which workflows and triggers would be added,
//! changed or removed, with a readable diff of each changed definition; `deploy` applies it
//! (removals only with `--prune`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{Value, json};
use tripline_core::validate::{Format, load, without_credentials};

use super::{Client, Exit, Failure};

#[derive(clap::Args, Clone)]
pub struct DeployArgs {
    /// The folder of definitions (.yaml, .yml, .json).
    pub dir: PathBuf,
    /// Also remove the server's workflows that the folder does not have.
    #[arg(long)]
    pub prune: bool,
}

/// One local definition: its file, text and workflow.
struct Local {
    file: PathBuf,
    text: String,
    format: Format,
    definition: Value,
    triggers: BTreeMap<String, Value>,
}

/// What the folder would do to one workflow.
enum Change {
    Add,
    Edit(String),
    Same,
    Remove,
}

/// `diff` (`apply: false`) or `deploy` (`apply: true`).
pub async fn deploy(c: &Client, args: &DeployArgs, apply: bool) -> Result<Exit, Failure> {
    let locals = read_folder(&args.dir)?;
    let listed = c.get("/v1/workflows").await?;
    let mut server: BTreeMap<String, Value> = BTreeMap::new();
    for w in listed["items"].as_array().cloned().unwrap_or_default() {
        let id = w["id"].as_str().unwrap_or_default().to_string();
        let full = c.get(&format!("/v1/workflows/{id}")).await?;
        server.insert(id, full);
    }
    let mut plan: Vec<(String, Change)> = Vec::new();
    for (id, local) in &locals {
        plan.push((
            id.clone(),
            match server.get(id) {
                None => Change::Add,
                Some(s) => {
                    let theirs = normalized(&s["definition"]);
                    if theirs == local.definition {
                        Change::Same
                    } else {
                        Change::Edit(text_diff(&theirs, &local.definition, &local.file))
                    }
                }
            },
        ));
    }
    for id in server.keys().filter(|id| !locals.contains_key(*id)) {
        plan.push((id.clone(), Change::Remove));
    }
    let differs = plan.iter().any(|(_, c)| !matches!(c, Change::Same));
    if c.json && !apply {
        let v: Vec<Value> = plan
            .iter()
            .map(|(id, ch)| {
                let kind = match ch {
                    Change::Add => "add",
                    Change::Edit(_) => "change",
                    Change::Same => "same",
                    Change::Remove => "remove",
                };
                json!({"workflow": id, "change": kind})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        print_plan(&plan, &locals, &server, args.prune);
    }
    if !apply {
        return Ok(if differs { Exit::Differs } else { Exit::Ok });
    }
    apply_plan(c, &plan, &locals, args.prune).await
}

fn print_plan(
    plan: &[(String, Change)],
    locals: &BTreeMap<String, Local>,
    server: &BTreeMap<String, Value>,
    prune: bool,
) {
    for (id, change) in plan {
        match change {
            Change::Add => {
                let triggers: Vec<&String> = locals[id].triggers.keys().collect();
                println!("+ {id} (new; triggers: {})", join(&triggers));
            }
            Change::Same => println!("= {id} (unchanged)"),
            Change::Remove if prune => println!("- {id} (not in the folder: removed)"),
            Change::Remove => println!("- {id} (not in the folder: kept; --prune removes it)"),
            Change::Edit(diff) => {
                let theirs = triggers_of(&normalized(&server[id]["definition"]));
                let ours = &locals[id].triggers;
                let mut notes = Vec::new();
                for t in ours.keys().filter(|t| !theirs.contains_key(*t)) {
                    notes.push(format!("+trigger {t}"));
                }
                for t in theirs.keys().filter(|t| !ours.contains_key(*t)) {
                    notes.push(format!("-trigger {t}"));
                }
                for (t, v) in ours
                    .iter()
                    .filter(|(t, v)| theirs.get(*t).is_some_and(|x| x != *v))
                {
                    let _ = v;
                    notes.push(format!("~trigger {t}"));
                }
                let notes = if notes.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", notes.join(", "))
                };
                println!("~ {id}{notes}");
                for line in diff.lines() {
                    println!("    {line}");
                }
            }
        }
    }
}

async fn apply_plan(
    c: &Client,
    plan: &[(String, Change)],
    locals: &BTreeMap<String, Local>,
    prune: bool,
) -> Result<Exit, Failure> {
    for (id, change) in plan {
        match change {
            Change::Add | Change::Edit(_) => {
                let local = &locals[id];
                let ct = match local.format {
                    Format::Json => "application/json",
                    Format::Yaml => "application/yaml",
                };
                let req = c
                    .request(reqwest::Method::PUT, &format!("/v1/workflows/{id}"))
                    .header("content-type", ct)
                    .body(local.text.clone());
                let v = c.send(req).await.map_err(|f| Failure {
                    message: format!("{}: {}", local.file.display(), f.message),
                    ..f
                })?;
                println!("deployed {id}: revision {}", v["revision"]);
            }
            Change::Remove if prune => {
                c.send(c.request(reqwest::Method::DELETE, &format!("/v1/workflows/{id}")))
                    .await?;
                println!("removed {id}");
            }
            Change::Remove | Change::Same => {}
        }
    }
    Ok(Exit::Ok)
}

/// The folder's definitions by workflow id; every problem of every file, or two files
/// naming one workflow, stops before anything is sent.
fn read_folder(dir: &std::path::Path) -> Result<BTreeMap<String, Local>, Failure> {
    let files = tripline_local::definition_files(dir)
        .map_err(|e| Failure::new(Exit::Refused, e.to_string()))?;
    let mut out: BTreeMap<String, Local> = BTreeMap::new();
    let mut problems = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|e| {
            Failure::new(
                Exit::Refused,
                format!("{}: cannot read: {e}", file.display()),
            )
        })?;
        let format = Format::from_path(&file.to_string_lossy());
        match load(&text, format) {
            Ok(wf) => {
                let definition = normalized(
                    &serde_json::to_value(without_credentials(&wf)).unwrap_or(Value::Null),
                );
                if let Some(other) = out.get(&wf.id) {
                    problems.push(format!(
                        "{} and {} both define workflow `{}`",
                        other.file.display(),
                        file.display(),
                        wf.id
                    ));
                    continue;
                }
                let triggers = triggers_of(&definition);
                out.insert(
                    wf.id.clone(),
                    Local {
                        file,
                        text,
                        format,
                        definition,
                        triggers,
                    },
                );
            }
            Err(ps) => problems.extend(ps.iter().map(|p| format!("{}:{p}", file.display()))),
        }
    }
    if !problems.is_empty() {
        return Err(Failure::new(
            Exit::Refused,
            format!(
                "the folder's definitions have problems; nothing was sent:\n{}",
                problems.join("\n")
            ),
        ));
    }
    Ok(out)
}

/// A definition as both sides can compare it: keys in one order, and what the server fills
/// in (webhook tokens it generated, the callback secret it made) left out.
fn normalized(definition: &Value) -> Value {
    let mut v = sorted(definition);
    if let Some(o) = v.as_object_mut() {
        o.remove("callback_secret");
        if let Some(ts) = o.get_mut("triggers").and_then(Value::as_array_mut) {
            for t in ts {
                if let Some(t) = t.as_object_mut() {
                    t.remove("token");
                }
            }
        }
    }
    v
}

/// Objects' keys in sorted order, all the way down.
fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&o[k])))
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

fn triggers_of(definition: &Value) -> BTreeMap<String, Value> {
    definition["triggers"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .map(|t| {
                    (
                        format!(
                            "{}:{}",
                            t["type"].as_str().unwrap_or("?"),
                            t["id"].as_str().unwrap_or("?")
                        ),
                        t.clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A unified diff of the two definitions as indented JSON.
fn text_diff(server: &Value, local: &Value, file: &std::path::Path) -> String {
    tripline_app::deploy::definition_diff(server, local, "server", &file.display().to_string())
}

fn join(items: &[&String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}
