//! `tripline keys create|list|rm`: scoped control API keys, on a data folder directly or
//! through a running server (`--server`). A made key is printed once, on standard output
//! alone, so that `KEY=$(tripline keys create ci --scope deploy)` keeps it.

use std::process::ExitCode;

use serde_json::{Value, json};
use tripline_app::keys::{ApiKeys, Scope};
use tripline_app::ports::{Clock as _, SystemClock};

use super::{KeysCommand, SecretsAt};

pub fn run(command: KeysCommand) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let result = match runtime {
        Ok(r) => r.block_on(dispatch(command)),
        Err(e) => Err(anyhow::anyhow!("cannot start the runtime: {e}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

enum Action {
    Create(String, Scope),
    List,
    Remove(String),
}

async fn dispatch(command: KeysCommand) -> anyhow::Result<()> {
    let (at, action) = match command {
        KeysCommand::Create { name, scope, at } => {
            let scope = Scope::parse(&scope).ok_or_else(|| {
                anyhow::anyhow!("unknown scope `{scope}`; use read, operate, deploy or admin")
            })?;
            (at, Action::Create(name, scope))
        }
        KeysCommand::List { at } => (at, Action::List),
        KeysCommand::Rm { name, at } => (at, Action::Remove(name)),
    };
    match &at.server {
        Some(server) => through_server(server, at.api_key.as_deref(), action).await,
        None => in_folder(&at, action).await,
    }
}

async fn in_folder(at: &SecretsAt, action: Action) -> anyhow::Result<()> {
    let (_store, secrets) = crate::secrets::open_folder(at)?;
    let keys = ApiKeys::default();
    match action {
        Action::Create(name, scope) => {
            let key = keys
                .create(&secrets, &name, scope, SystemClock.now())
                .await?;
            eprintln!(
                "made the `{}` key `{name}`; it is shown this once:",
                scope.as_str()
            );
            println!("{key}");
        }
        Action::List => print_list(&json!(keys.list(&secrets).await?)),
        Action::Remove(name) => {
            if !keys.remove(&secrets, &name).await? {
                anyhow::bail!("no key `{name}`");
            }
            println!("removed key `{name}`");
        }
    }
    Ok(())
}

fn print_list(items: &Value) {
    let items = items.as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        println!("no keys; make one with `tripline keys create NAME --scope read`");
        return;
    }
    println!("{:<32} {:<8} CREATED", "NAME", "SCOPE");
    for i in items {
        println!(
            "{:<32} {:<8} {}",
            i["name"].as_str().unwrap_or_default(),
            i["scope"].as_str().unwrap_or_default(),
            i["created"].as_str().unwrap_or_default()
        );
    }
}

async fn through_server(server: &str, api_key: Option<&str>, action: Action) -> anyhow::Result<()> {
    let base = server.trim_end_matches('/');
    let client = reqwest::Client::new();
    let request = match &action {
        Action::Create(name, scope) => client
            .post(format!("{base}/v1/keys"))
            .json(&json!({"name": name, "scope": scope.as_str()})),
        Action::List => client.get(format!("{base}/v1/keys")),
        Action::Remove(name) => client.delete(format!("{base}/v1/keys/{name}")),
    };
    let request = request.header(tripline_app::http::control::REQUEST_HEADER, "1");
    let request = match api_key {
        Some(k) => request.bearer_auth(k),
        None => request,
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
        Action::Create(name, scope) => {
            eprintln!(
                "made the `{}` key `{name}`; it is shown this once:",
                scope.as_str()
            );
            println!("{}", body["key"].as_str().unwrap_or_default());
        }
        Action::List => print_list(&body["items"]),
        Action::Remove(name) => println!("removed key `{name}`"),
    }
    Ok(())
}
