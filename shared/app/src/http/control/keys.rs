//! `/v1/keys` (make, list and remove scoped API keys) and `/v1/audit` (the log of
//! state-changing control actions), both `admin`; and the middleware that checks a
//! request's key against its route's scope and writes the audit log.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tripline_core::Timestamp;

use super::{Limit, PageParams, Params, bad_request, cross_site, not_found, page_response};
use crate::App;
use crate::http::{error_response, unavailable};
use crate::keys::{KeyError, LOCAL, Principal, Scope};
use crate::ports::{AuditEntry, AuditQuery};

/// The scope a route needs: looking needs `read`; keys and the audit log `admin`;
/// changing workflows and secrets `deploy`; every other change `operate`.
fn required(method: &Method, route: &str) -> Scope {
    let changes = !matches!(*method, Method::GET | Method::HEAD);
    if route.starts_with("/v1/keys") || route == "/v1/audit" {
        Scope::Admin
    } else if !changes || route == "/v1/workflows/{id}/dry-run" {
        // A dry run changes nothing (it is a POST for its body).
        Scope::Read
    } else if route == "/v1/workflows/{id}" || route.starts_with("/v1/secrets") {
        Scope::Deploy
    } else {
        Scope::Operate
    }
}

/// Who is calling: the key named by `Authorization: Bearer …`; on a server without a key
/// (loopback only), a request without one is `local`, with every scope.
async fn principal(app: &App, given: Option<String>) -> Result<Principal, Response> {
    let refused = || {
        error_response(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the control API needs `Authorization: Bearer <api key>` with a key it knows",
        )
    };
    match given {
        None if app.config.api_key.is_none() => Ok(Principal {
            name: LOCAL.into(),
            scope: Scope::Admin,
        }),
        None => Err(refused()),
        Some(key) => match app
            .keys
            .authenticate(&app.secrets, app.config.api_key.as_deref(), key.trim())
            .await
        {
            Ok(Some(p)) => Ok(p),
            Ok(None) => Err(refused()),
            Err(e) => Err(unavailable(&e)),
        },
    }
}

/// The control API's gate: the browser guard (without a key), the key and its scope;
/// then every state-changing request, and every one refused for its scope, goes to the
/// audit log with its answer's status.
pub(super) async fn require_key(
    State(app): State<Arc<App>>,
    route: Option<MatchedPath>,
    mut req: Request,
    next: Next,
) -> Response {
    if app.config.api_key.is_none()
        && app.config.browser_guard
        && req.uri().path().starts_with("/v1/")
        && let Some(why) = cross_site(&app, &req)
    {
        return error_response(StatusCode::FORBIDDEN, "forbidden", why);
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let who = match principal(&app, given).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let acted = Acted::of(&req, route.as_ref());
    let (method, route) = (&acted.method, &acted.route);
    let need = required(method, route);
    let changes = !matches!(*method, Method::GET | Method::HEAD);
    let response = if who.scope < need {
        error_response(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            format!(
                "the key `{}` has the scope `{}`; {method} {route} needs `{}` or above",
                who.name,
                who.scope.as_str(),
                need.as_str()
            ),
        )
    } else {
        req.extensions_mut().insert(who.clone());
        next.run(req).await
    };
    if changes || response.status() == StatusCode::FORBIDDEN {
        acted.record(&app, who.name, "", response.status()).await;
    }
    response
}

/// What the audit log keeps of a request, read before it is handled: the API's gate and
/// the console's both append their entries through it.
pub(crate) struct Acted {
    method: Method,
    /// The matched route, e.g. `/v1/workflows/{id}` (the path when none matched).
    route: String,
    path: String,
    from: Option<String>,
}

impl Acted {
    pub(crate) fn of(req: &Request, route: Option<&MatchedPath>) -> Self {
        let path = req.uri().path().to_string();
        Self {
            method: req.method().clone(),
            route: route.map_or_else(|| path.clone(), |r| r.as_str().to_string()),
            path,
            from: crate::http::ingress::client_of(req).map(|ip| ip.to_string()),
        }
    }

    /// Appends the entry: `key` acted, answered `status`; `marker` tells where (the
    /// console's posts say ` (console)`). A failed write is logged, not the caller's.
    pub(crate) async fn record(self, app: &App, key: String, marker: &str, status: StatusCode) {
        let entry = AuditEntry {
            id: app.new_id(),
            at: app.clock.now(),
            key,
            action: format!("{} {}{marker}", self.method, self.route),
            path: self.path,
            status: status.as_u16(),
            from: self.from,
        };
        if let Err(e) = app.store.record_audit(&entry).await {
            tracing::error!(error = %e, entry = ?entry, "the audit log could not be written");
        }
    }
}

pub(super) async fn list_keys(State(app): State<Arc<App>>) -> Response {
    match app.keys.list(&app.secrets).await {
        Ok(keys) => Json(json!({ "items": keys })).into_response(),
        Err(e) => unavailable(&e),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    name: String,
    scope: String,
}

/// `POST /v1/keys` with `{"name": "ci", "scope": "deploy"}`: `201` with the key, shown
/// this once.
pub(super) async fn create_key(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let Ok(new) = serde_json::from_slice::<NewKey>(&body) else {
        return bad_request(
            "send {\"name\": \"…\", \"scope\": \"read|operate|deploy|admin\"} as JSON",
        );
    };
    let Some(scope) = Scope::parse(&new.scope) else {
        return bad_request(format!(
            "unknown scope `{}`; use read, operate, deploy or admin",
            new.scope
        ));
    };
    let now = app.clock.now();
    match app.keys.create(&app.secrets, &new.name, scope, now).await {
        Ok(key) => {
            tracing::info!(key = %new.name, scope = scope.as_str(), "API key made");
            let body = json!({"name": new.name, "scope": scope, "created": now, "key": key});
            (StatusCode::CREATED, Json(body)).into_response()
        }
        Err(e) => key_error(e),
    }
}

fn key_error(e: KeyError) -> Response {
    match e {
        KeyError::Store(e) => unavailable(&e),
        KeyError::Exists(_) => error_response(StatusCode::CONFLICT, "conflict", e.to_string()),
        KeyError::NoStore => error_response(
            StatusCode::NOT_IMPLEMENTED,
            "no_secret_store",
            e.to_string(),
        ),
        KeyError::BadName(_) => bad_request(e.to_string()),
    }
}

/// `DELETE /v1/keys/{name}`: the key stops working (in AWS, within the secret cache's
/// bound in the other functions: 60 s by default).
pub(super) async fn delete_key(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    match app.keys.remove(&app.secrets, &name).await {
        Ok(true) => {
            tracing::info!(key = %name, "API key removed");
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(false) => not_found("key", &name),
        Err(e) => key_error(e),
    }
}

/// `GET /v1/audit`'s parameters.
#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditParams {
    since: Option<Timestamp>,
    until: Option<Timestamp>,
    limit: Option<Limit>,
    cursor: Option<String>,
}

/// `GET /v1/audit`: newest first. There is no route that changes or removes an entry.
pub(super) async fn list_audit(
    State(app): State<Arc<App>>,
    Params(q): Params<AuditParams>,
) -> Response {
    let p = PageParams::new(q.since, q.until, q.limit, q.cursor);
    let query = AuditQuery {
        since: p.since,
        until: p.until,
        limit: p.limit,
        cursor: p.cursor,
    };
    page_response(app.store.audit(&query).await, |e| json!(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_needs_the_scope_of_what_it_does() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(required(&get, "/v1/runs"), Scope::Read);
        assert_eq!(required(&get, "/v1/audit"), Scope::Admin);
        assert_eq!(required(&get, "/v1/keys"), Scope::Admin);
        assert_eq!(required(&post, "/v1/runs/{id}/cancel"), Scope::Operate);
        assert_eq!(required(&post, "/v1/runs/{id}/retry"), Scope::Operate);
        assert_eq!(
            required(&post, "/v1/workflows/{id}/disable"),
            Scope::Operate
        );
        assert_eq!(required(&post, "/v1/workflows/{id}/dry-run"), Scope::Read);
        assert_eq!(required(&get, "/metrics"), Scope::Read);
        assert_eq!(required(&post, "/v1/workflows/{id}/runs"), Scope::Operate);
        assert_eq!(required(&Method::PUT, "/v1/workflows/{id}"), Scope::Deploy);
        assert_eq!(
            required(&Method::DELETE, "/v1/workflows/{id}"),
            Scope::Deploy
        );
        assert_eq!(required(&Method::PUT, "/v1/secrets/{name}"), Scope::Deploy);
        assert_eq!(
            required(&Method::PATCH, "/v1/workflows/{id}/context"),
            Scope::Operate
        );
        assert_eq!(required(&post, "/v1/keys"), Scope::Admin);
    }
}
