//! `tripline secrets set|list|rm`: on a data folder directly, or through a running
//! server's control API (`--server`) while `tripline serve` holds the folder. A value is
//! read from standard input and never printed.

use std::io::Read as _;
use std::process::ExitCode;
use std::sync::Arc;

use serde_json::{Value, json};
use tripline_app::ports::Clock as _;
use tripline_app::ports::SystemClock;
use tripline_app::secrets::Secrets;
use tripline_embedded::EmbeddedStore;

use super::{SecretsAt, SecretsCommand};

pub fn run(command: SecretsCommand) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The value on standard input, without one trailing newline.
fn read_value() -> anyhow::Result<String> {
    let mut value = String::new();
    std::io::stdin()
        .read_to_string(&mut value)
        .map_err(|e| anyhow::anyhow!("cannot read the value from standard input: {e}"))?;
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    if value.is_empty() {
        anyhow::bail!(
            "no value on standard input; pipe it in, e.g. `printf %s \"$TOKEN\" | tripline secrets set NAME`"
        );
    }
    Ok(value)
}

async fn dispatch(command: SecretsCommand) -> anyhow::Result<()> {
    let (at, action) = match command {
        SecretsCommand::Set { name, at } => (at, Action::Set(name, read_value()?)),
        SecretsCommand::List { at } => (at, Action::List),
        SecretsCommand::Rm { name, force, at } => (at, Action::Remove(name, force)),
    };
    match &at.server {
        Some(server) => through_server(server, at.api_key.as_deref(), action).await,
        None => in_folder(&at, action).await,
    }
}

enum Action {
    Set(String, String),
    List,
    Remove(String, bool),
}

/// The data folder's store and secrets, when no running server holds the folder (the
/// error then says to go through it).
pub(crate) fn open_folder(at: &SecretsAt) -> anyhow::Result<(EmbeddedStore, Secrets)> {
    let store = match EmbeddedStore::open(&at.data) {
        Ok(s) => s,
        Err(tripline_embedded::OpenError::Locked(dir)) => anyhow::bail!(
            "a running `tripline serve` has the data folder {} open; go through it: add --server http://127.0.0.1:8787 (its --listen address) and its --api-key",
            dir.display()
        ),
        Err(e) => return Err(e.into()),
    };
    let embedded =
        tripline_local::embedded_secrets(&store, &at.data, at.secrets_key_file.as_deref())?;
    Ok((store, Secrets::new(Arc::new(embedded), None)))
}

async fn in_folder(at: &SecretsAt, action: Action) -> anyhow::Result<()> {
    let (store, secrets) = open_folder(at)?;
    let now = SystemClock.now();
    match action {
        Action::Set(name, value) => {
            secrets.set(&name, &value, now).await?;
            println!("set secret `{name}`");
        }
        Action::List => {
            let used = users(&store).await?;
            print_list(
                secrets
                    .list()
                    .await?
                    .into_iter()
                    .map(|s| {
                        let used_by = used.get(&s.name).cloned().unwrap_or_default();
                        json!({"name": s.name, "set_at": s.set_at, "used_by": used_by})
                    })
                    .collect(),
            );
        }
        Action::Remove(name, force) => {
            let used = users(&store).await?;
            if let Some(by) = used.get(&name)
                && !force
            {
                anyhow::bail!(
                    "the secret `{name}` is read by {}; change them first, or pass --force",
                    by.join(", ")
                );
            }
            if secrets.remove(&name).await? {
                println!("removed secret `{name}`");
            } else {
                anyhow::bail!("no secret `{name}`");
            }
        }
    }
    Ok(())
}

/// Which deployed workflows read each secret.
async fn users(
    store: &EmbeddedStore,
) -> anyhow::Result<std::collections::BTreeMap<String, Vec<String>>> {
    use tripline_app::ports::Store as _;
    let mut out: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for rec in store
        .latest_workflows()
        .await?
        .into_iter()
        .filter(|r| !r.removed)
    {
        for name in tripline_core::validate::secret_names(&rec.definition) {
            out.entry(name).or_default().push(rec.id.clone());
        }
    }
    Ok(out)
}

fn print_list(items: Vec<Value>) {
    if items.is_empty() {
        println!("no secrets; set one with `printf %s \"$VALUE\" | tripline secrets set NAME`");
        return;
    }
    println!("{:<32} {:<26} USED BY", "NAME", "SET AT");
    for i in items {
        let used: Vec<&str> = i["used_by"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        println!(
            "{:<32} {:<26} {}",
            i["name"].as_str().unwrap_or_default(),
            i["set_at"].as_str().unwrap_or_default(),
            if used.is_empty() {
                "-".to_string()
            } else {
                used.join(", ")
            }
        );
    }
}

async fn through_server(server: &str, api_key: Option<&str>, action: Action) -> anyhow::Result<()> {
    let base = server.trim_end_matches('/');
    let client = reqwest::Client::new();
    let with_key = |r: reqwest::RequestBuilder| {
        let r = r.header(tripline_app::http::control::REQUEST_HEADER, "1");
        match api_key {
            Some(k) => r.bearer_auth(k),
            None => r,
        }
    };
    let request = match &action {
        Action::Set(name, value) => with_key(client.put(format!("{base}/v1/secrets/{name}")))
            .json(&json!({ "value": value })),
        Action::List => with_key(client.get(format!("{base}/v1/secrets"))),
        Action::Remove(name, force) => {
            with_key(client.delete(format!("{base}/v1/secrets/{name}?force={force}")))
        }
    };
    let resp = request
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach {base}: {e}"))?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let msg = body["detail"].as_str().unwrap_or("no message");
        anyhow::bail!("the server answered {status}: {msg}");
    }
    match action {
        Action::Set(name, _) => println!("set secret `{name}`"),
        Action::List => print_list(body["items"].as_array().cloned().unwrap_or_default()),
        Action::Remove(name, _) => println!("removed secret `{name}`"),
    }
    Ok(())
}
