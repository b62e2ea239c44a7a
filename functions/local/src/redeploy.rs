//! `tripline serve --watch`: the workflows folder is looked at every second, and a
//! definition whose text changed (or a new file) is deployed as a new revision. A file
//! that does not validate is reported and changes nothing (the deployed revision keeps
//! running); a removed file leaves its workflow deployed (`DELETE /v1/workflows/{id}`
//! removes it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tripline_app::App;
use tripline_core::validate::Format;

/// How often the folder is looked at.
pub const EVERY: Duration = Duration::from_secs(1);

fn texts(dir: &Path) -> BTreeMap<PathBuf, String> {
    crate::definition_files(dir)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|f| std::fs::read_to_string(&f).ok().map(|t| (f, t)))
        .collect()
}

/// Redeploys what changes in `dir` until the task is dropped.
pub async fn watch(app: Arc<App>, dir: PathBuf) {
    let mut seen = texts(&dir);
    loop {
        tokio::time::sleep(EVERY).await;
        let now = texts(&dir);
        for (file, text) in &now {
            if seen.get(file) == Some(text) {
                continue;
            }
            let format = Format::from_path(&file.to_string_lossy());
            let deployed = app
                .deployments
                .deploy_text(app.store.as_ref(), text, format, None, app.clock.now())
                .await;
            match deployed {
                Ok(d) => {
                    tracing::info!(file = %file.display(), "definition changed: deployed");
                    if let Err(e) = app.sync_once(&d.record).await {
                        tracing::error!(file = %file.display(), error = %e, "its once runs could not be recorded; they will be at the next start");
                    }
                    for w in &d.warnings {
                        tracing::warn!("{}:{w}", file.display());
                    }
                }
                Err(tripline_app::deploy::DeployError::Invalid(problems)) => {
                    for p in problems {
                        tracing::error!(
                            "{}:{p} (not deployed; the running revision stays)",
                            file.display()
                        );
                    }
                }
                Err(e) => {
                    tracing::error!(file = %file.display(), error = %e, "not deployed; the running revision stays")
                }
            }
        }
        for gone in seen.keys().filter(|f| !now.contains_key(*f)) {
            tracing::warn!(file = %gone.display(), "definition file removed; its workflow stays deployed (DELETE /v1/workflows/{{id}} removes it)");
        }
        seen = now;
    }
}
