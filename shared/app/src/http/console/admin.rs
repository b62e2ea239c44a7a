//! The console's secrets and audit pages, and the audit of the console's own actions.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::Response;
use minijinja::context;

use super::{frame, page, see_other, views};
use crate::App;
use crate::keys::Scope;
use crate::ports::AuditQuery;

/// `GET /secrets`: names and when each was set; a `deploy` key may set or rotate one.
pub(super) async fn secrets(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let s = session!(app, headers);
    let list = match app.secrets.list().await {
        Ok(l) => l,
        Err(e) => return crate::http::unavailable(&e),
    };
    let items: Vec<_> = list
        .iter()
        .map(|x| context! { name => x.name, set_at => x.set_at.to_string() })
        .collect();
    let ctx = context! {
        title => "Secrets", secrets => items, can_deploy => s.who.scope >= Scope::Deploy,
        ..frame(&app, &s).await
    };
    page(views::render("secrets.html", ctx))
}

/// `POST /secrets` with `name` and `value` (a `deploy` key): set or rotate it.
pub(super) async fn set_secret(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (s, fields) = match super::form(&app, &headers, &body).await {
        Ok(found) => found,
        Err(r) => return r,
    };
    if s.who.scope < Scope::Deploy {
        return crate::http::error_response(
            axum::http::StatusCode::FORBIDDEN,
            "insufficient_scope",
            "setting a secret needs a deploy key",
        );
    }
    let get = |k: &str| {
        fields
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    match app
        .secrets
        .set(&get("name"), &get("value"), app.clock.now())
        .await
    {
        Ok(()) => see_other("/secrets"),
        Err(e) => crate::http::error_response(
            axum::http::StatusCode::BAD_REQUEST,
            "bad_request",
            e.to_string(),
        ),
    }
}

/// `GET /audit`: the audit log, newest first (an admin key).
pub(super) async fn audit(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let s = session!(app, headers);
    let allowed = s.who.scope >= Scope::Admin;
    let entries = if allowed {
        match app
            .store
            .audit(&AuditQuery {
                limit: 200,
                ..AuditQuery::default()
            })
            .await
        {
            Ok(p) => p.items,
            Err(e) => return crate::http::unavailable(&e),
        }
    } else {
        Vec::new()
    };
    let ctx = context! {
        title => "Audit log", allowed => allowed,
        entries => minijinja::Value::from_serialize(&entries), ..frame(&app, &s).await
    };
    page(views::render("audit.html", ctx))
}

/// Middleware: every console post by a signed-in person is appended to the audit log,
/// as the control API's are (the key's name, the route, the path, the answer's status).
pub(super) async fn audited(
    State(app): State<Arc<App>>,
    route: Option<MatchedPath>,
    req: Request,
    next: Next,
) -> Response {
    let who = match super::session::cookie_of(req.headers()) {
        Some(c) if req.method() != Method::GET => app.session(&c).await,
        _ => None,
    };
    let acted = crate::http::control::Acted::of(&req, route.as_ref());
    let response = next.run(req).await;
    if let Some(s) = who {
        acted
            .record(&app, s.who.name, " (console)", response.status())
            .await;
    }
    response
}
