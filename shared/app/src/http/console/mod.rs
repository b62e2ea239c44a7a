//! The web console: server-rendered pages over the same use cases the control API calls
//! (listings, retry, cancel, switches, bulk jobs); no second copy of any rule. Signed in
//! with an API key exchanged for a session cookie ([`session`]); a key without the
//! `operate` scope sees no buttons and may not post.

/// The request's session, or the sign-in page to answer instead.
macro_rules! session {
    ($app:expr, $headers:expr) => {
        match super::signed_in(&$app, &$headers).await {
            Ok(s) => s,
            Err(r) => return r,
        }
    };
}

/// A form post's fields, or the refusal to answer instead (see [`form`]).
macro_rules! fields {
    ($app:expr, $headers:expr, $body:expr) => {
        match super::form(&$app, &$headers, &$body).await {
            Ok((_, f)) => f,
            Err(r) => return r,
        }
    };
}

mod admin;
mod drawing;
mod inbox;
mod pages;
mod schedules;
pub mod session;
mod views;
mod workflow;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use minijinja::context;

use crate::App;
use crate::keys::Scope;
use session::Session;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(pages::overview))
        .route("/login", get(login_page).post(login))
        .route("/console.js", get(script))
        .route("/logout", post(logout))
        .route("/runs", get(pages::runs))
        .route("/runs/bulk", post(pages::bulk))
        .route("/runs/{id}", get(pages::run))
        .route("/runs/{id}/retry", post(pages::retry))
        .route("/runs/{id}/cancel", post(pages::cancel))
        .route("/workflows", get(pages::workflows))
        .route("/workflows/{id}", get(workflow::workflow))
        .route("/workflows/{id}/dry-run", post(workflow::dry_run))
        .route("/workflows/{id}/context", post(workflow::set_context))
        .route("/jobs/{id}", get(workflow::job))
        .route("/inbox", get(inbox::inbox))
        .route("/inbox/bulk", post(inbox::reprocess))
        .route("/approvals", get(inbox::approvals))
        .route("/secrets", get(admin::secrets).post(admin::set_secret))
        .route("/audit", get(admin::audit))
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            admin::audited,
        ))
        .route("/workflows/{id}/{verb}", post(pages::switch_workflow))
        .route(
            "/workflows/{id}/triggers/{trigger}/{verb}",
            post(pages::switch_trigger),
        )
        .with_state(app)
}

/// A page: HTML that is never cached, shown in no frame.
fn page(html: String) -> Response {
    let mut r = Html(html).into_response();
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'"),
    );
    r
}

/// `GET /console.js`: the pages' one script (copy buttons, live updates), from the binary.
async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        include_str!("static/console.js"),
    )
        .into_response()
}

fn see_other(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// The session of a request, or the sign-in page to go to.
async fn signed_in(app: &App, headers: &HeaderMap) -> Result<Session, Response> {
    match session::cookie_of(headers) {
        Some(c) => match app.session(&c).await {
            Some(s) => Ok(s),
            None => Err(see_other("/login")),
        },
        None => Err(see_other("/login")),
    }
}

/// A form post's fields; refused unless it carries the session's form token and the key
/// may operate.
async fn form(
    app: &App,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(Session, Vec<(String, String)>), Response> {
    let (s, fields) = this_sessions_form(app, headers, body).await?;
    if s.who.scope < Scope::Operate {
        return Err(crate::http::error_response(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            format!("the key `{}` is read-only here", s.who.name),
        ));
    }
    Ok((s, fields))
}

/// A form posted in a signed-in session with that session's token (compared in constant
/// time), whatever the key's scope: signing out is the one form a read key posts.
async fn this_sessions_form(
    app: &App,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(Session, Vec<(String, String)>), Response> {
    let s = signed_in(app, headers).await?;
    let fields: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
    let expected = app.form_token(&s).await;
    let valid = field(&fields, "token").is_some_and(|t| {
        use subtle::ConstantTimeEq as _;
        !expected.is_empty() && bool::from(t.as_bytes().ct_eq(expected.as_bytes()))
    });
    if !valid {
        return Err(crate::http::error_response(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the form is not this session's (open the page again)",
        ));
    }
    Ok((s, fields))
}

/// A posted form's field.
fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

async fn login_page() -> Response {
    page(views::render("login.html", context! { title => "Sign in" }))
}

/// `POST /login` with `key`: a session for the key it names (on a server without an API
/// key, from loopback, any key signs in as `local`). A sign-in posted from another site is
/// refused: it would sign the person in as someone else (login CSRF).
async fn login(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    if from_elsewhere(&headers) {
        return crate::http::error_response(
            StatusCode::FORBIDDEN,
            "forbidden",
            "sign in from the console's own page (/login)",
        );
    }
    let key = form_urlencoded::parse(&body)
        .find(|(k, _)| k == "key")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let who = app
        .keys
        .authenticate(&app.secrets, app.config.api_key.as_deref(), key.trim())
        .await
        .ok()
        .flatten();
    let who = match (who, app.config.api_key.is_none()) {
        (Some(w), _) => w,
        // Without an API key the server answers loopback only: its operator is `local`.
        (None, true) => crate::keys::Principal {
            name: "local".into(),
            scope: Scope::Admin,
        },
        (None, false) => {
            let html = views::render(
                "login.html",
                context! { title => "Sign in", error => "That key is not known here." },
            );
            let mut r = page(html);
            *r.status_mut() = StatusCode::UNAUTHORIZED;
            return r;
        }
    };
    let Ok(cookie) = app.new_session(&who).await else {
        return crate::http::error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the session could not be made; try again",
        );
    };
    let secure = app.config.public_url.starts_with("https://");
    let mut r = see_other("/");
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(&cookie, secure)) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// Whether a form was posted by another site's page: the browser says so
/// (`Sec-Fetch-Site`), or its `Origin` is not this host. Clients that send neither (curl)
/// are not browsers carrying someone's cookies.
fn from_elsewhere(headers: &HeaderMap) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site") {
        return !matches!(site, "same-origin" | "none");
    }
    match (text("origin"), text("host")) {
        (Some(origin), Some(host)) => origin.split_once("://").map(|(_, h)| h) != Some(host),
        (Some(_), None) => true,
        _ => false,
    }
}

async fn logout(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = this_sessions_form(&app, &headers, &body).await {
        return r;
    }
    let mut r = see_other("/login");
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie("", false)) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// A listing page's query parameters, the empty ones left out.
fn listing_params(q: Option<String>) -> std::collections::BTreeMap<String, String> {
    form_urlencoded::parse(q.unwrap_or_default().as_bytes())
        .into_owned()
        .filter(|(_, v)| !v.is_empty())
        .collect()
}

/// The search form's fields as they were sent (`""` for those that were not), and the link
/// to the next page: the same parameters with its `cursor`.
fn listing_links(
    path: &str,
    params: &std::collections::BTreeMap<String, String>,
    fields: &[&str],
    cursor: Option<String>,
) -> (minijinja::Value, Option<String>) {
    let shown: std::collections::BTreeMap<&str, String> = fields
        .iter()
        .map(|f| (*f, params.get(*f).cloned().unwrap_or_default()))
        .collect();
    let next = cursor.map(|c| {
        let mut p = params.clone();
        p.insert("cursor".into(), c);
        format!(
            "{path}?{}",
            serde_urlencoded::to_string(&p).unwrap_or_default()
        )
    });
    (minijinja::Value::from_serialize(&shown), next)
}

/// What every page's layout is given: who is signed in, the form token, what they may do.
async fn frame(app: &App, s: &Session) -> minijinja::Value {
    context! {
        who => context! { name => s.who.name, scope => s.who.scope.as_str() },
        token => app.form_token(s).await,
        can_operate => s.who.scope >= Scope::Operate,
    }
}
