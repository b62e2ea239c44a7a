//! Credentials in a definition: which secrets it names (checked against the secret store
//! at deploy), and which credentials it writes inline (accepted, with a warning that says
//! how to move each into a secret).

use std::collections::{BTreeMap, BTreeSet};

use super::Problem;
use crate::definition::{Action, HttpAction, Trigger, Workflow};
use crate::secrets;
use crate::source::join;

/// A request a definition renders: its path, url, headers, and the http action (query and
/// body) when it is one.
type Request<'a> = (
    String,
    &'a str,
    &'a BTreeMap<String, String>,
    Option<&'a HttpAction>,
);

/// Every request the definition renders, with its path: `http` steps, notifications,
/// callbacks (whose body is the run's envelope, not a template).
fn requests(wf: &Workflow) -> Vec<Request<'_>> {
    let mut out = Vec::new();
    for (i, step) in wf.steps.iter().enumerate() {
        let path = format!("steps[{i}]");
        let action = match &step.action {
            Action::Http(h) => Some((path, h)),
            Action::Approval(a) => a.notify.as_ref().map(|n| (join(&path, "notify"), n)),
            Action::WaitForWebhook(w) => w.notify.as_ref().map(|n| (join(&path, "notify"), n)),
            _ => None,
        };
        if let Some((p, h)) = action {
            out.push((p, h.url.as_str(), &h.headers, Some(h)));
        }
        for (p, inner) in lane_steps(&step.action, &format!("steps[{i}]")) {
            if let Action::Http(h) = &inner.action {
                out.push((p, h.url.as_str(), &h.headers, Some(h)));
            }
        }
    }
    for (key, cb) in [
        ("on_success", &wf.on_success),
        ("on_failure", &wf.on_failure),
    ] {
        if let Some(cb) = cb {
            out.push((key.to_string(), cb.url.as_str(), &cb.headers, None));
        }
    }
    out
}

/// The steps inside a `map` or `parallel` step, with their paths.
fn lane_steps<'a>(action: &'a Action, path: &str) -> Vec<(String, &'a crate::definition::Step)> {
    match action {
        Action::Map(m) => m
            .steps
            .iter()
            .enumerate()
            .map(|(j, s)| (format!("{path}.steps[{j}]"), s))
            .collect(),
        Action::Parallel(p) => p
            .branches
            .iter()
            .enumerate()
            .flat_map(|(b, br)| {
                br.steps
                    .iter()
                    .enumerate()
                    .map(move |(j, s)| (format!("{path}.branches[{b}].steps[{j}]"), s))
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The names of the secrets a definition reads: in its request templates, its webhooks'
/// credentials and its callback secret.
pub fn secret_names(wf: &Workflow) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (_, url, headers, http) in requests(wf) {
        secrets::names_in_template(url, &mut names);
        secrets::names_in_map(headers, &mut names);
        if let Some(h) = http {
            secrets::names_in_map(&h.query, &mut names);
            if let Some(body) = &h.body {
                secrets::names_in_value(body, &mut names);
            }
        }
    }
    for t in &wf.triggers {
        if let Trigger::Webhook(w) = t {
            for (_, value) in w.auth.credentials() {
                if let Some(name) = secrets::reference(value) {
                    names.insert(name.to_string());
                }
            }
        }
        if let Trigger::Kafka(k) = t
            && let Some(name) = k
                .cluster
                .as_ref()
                .and_then(|c| c.sasl.as_ref())
                .and_then(|s| secrets::reference(&s.password))
        {
            names.insert(name.to_string());
        }
    }
    if let Some(name) = wf.callback_secret.as_deref().and_then(secrets::reference) {
        names.insert(name.to_string());
    }
    names
}

const SENSITIVE_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
    "api-key",
    "x-auth-token",
    "x-access-token",
];

const SENSITIVE_QUERY: &[&str] = &[
    "api_key",
    "apikey",
    "key",
    "token",
    "access_token",
    "secret",
    "client_secret",
    "password",
    "sig",
    "signature",
];

/// True when a header or query value writes a credential inline: literal text beyond an
/// auth scheme's name, and no secret.
fn inline_value(value: &str) -> bool {
    if value.contains("secrets.") {
        return false;
    }
    // The literal text outside `{{ … }}` blocks.
    let mut literal = String::new();
    let mut rest = value;
    while let Some(at) = rest.find("{{") {
        literal.push_str(&rest[..at]);
        rest = rest[at..]
            .find("}}")
            .map_or("", |end| &rest[at + end + 2..]);
    }
    literal.push_str(rest);
    let literal = literal.trim();
    let literal = ["Bearer ", "Basic ", "Token ", "bearer ", "basic ", "token "]
        .iter()
        .fold(literal, |l, p| l.strip_prefix(p).unwrap_or(l));
    literal.trim().len() >= 8
}

/// True when a URL writes a password in its authority (`https://user:pw@host/`).
fn url_password(url: &str) -> bool {
    let Some((_, rest)) = url.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let Some((userinfo, _)) = authority.rsplit_once('@') else {
        return false;
    };
    userinfo
        .split_once(':')
        .is_some_and(|(_, pw)| !pw.is_empty() && !pw.contains("secrets."))
}

fn how_to_move(what: &str) -> String {
    format!(
        "{what} is written inline: anyone who can read the definition can read it. Move it into a secret: `tripline secrets set NAME` (the value on standard input) or `PUT /v1/secrets/NAME`, then write `{{{{ secrets.NAME }}}}` here"
    )
}

fn warning(path: String, message: String) -> Problem {
    Problem {
        path,
        line: None,
        column: None,
        message,
    }
}

/// The credentials a definition writes inline, each as a warning with its path.
pub fn warnings(wf: &Workflow) -> Vec<Problem> {
    let mut out = Vec::new();
    for (i, t) in wf.triggers.iter().enumerate() {
        if let Trigger::Webhook(w) = t {
            for (field, value) in w.auth.credentials() {
                if secrets::reference(value).is_none() {
                    let path = format!("triggers[{i}].auth.{field}");
                    out.push(warning(path, how_to_move("this webhook credential")));
                }
            }
        }
    }
    if let Some(s) = &wf.callback_secret
        && secrets::reference(s).is_none()
    {
        out.push(warning(
            "callback_secret".into(),
            how_to_move("the callbacks' signing secret"),
        ));
    }
    for (path, url, headers, http) in requests(wf) {
        if url_password(url) {
            out.push(warning(
                join(&path, "url"),
                how_to_move("the password in this URL"),
            ));
        }
        for (name, value) in headers {
            if SENSITIVE_HEADERS.contains(&name.to_ascii_lowercase().as_str())
                && inline_value(value)
            {
                let p = join(&join(&path, "headers"), name);
                out.push(warning(p, how_to_move(&format!("the `{name}` header"))));
            }
        }
        for (name, value) in http.map(|h| &h.query).into_iter().flatten() {
            if SENSITIVE_QUERY.contains(&name.to_ascii_lowercase().as_str()) && inline_value(value)
            {
                let p = join(&join(&path, "query"), name);
                out.push(warning(p, how_to_move(&format!("the `{name}` parameter"))));
            }
        }
    }
    out
}

/// How an answer shows a credential written inline.
pub const HIDDEN: &str = "[redacted]";

/// The definition as answers show it: every credential written inline (webhook keys,
/// passwords and signing secrets, the callback secret, credential headers and parameters
/// of requests) replaced by `[redacted]`; references to secrets are kept.
pub fn without_credentials(wf: &Workflow) -> Workflow {
    let mut wf = wf.clone();
    for t in &mut wf.triggers {
        if let Trigger::Webhook(w) = t {
            for value in w.auth.credentials_mut() {
                if secrets::reference(value).is_none() {
                    *value = HIDDEN.into();
                }
            }
        }
    }
    if let Some(s) = wf.callback_secret.as_mut()
        && secrets::reference(s).is_none()
    {
        *s = HIDDEN.into();
    }
    let hide_map = |m: &mut BTreeMap<String, String>, names: &[&str]| {
        for (name, value) in m.iter_mut() {
            if names.contains(&name.to_ascii_lowercase().as_str()) && inline_value(value) {
                *value = HIDDEN.into();
            }
        }
    };
    let hide_http = |h: &mut HttpAction| {
        hide_map(&mut h.headers, SENSITIVE_HEADERS);
        hide_map(&mut h.query, SENSITIVE_QUERY);
        if url_password(&h.url) {
            h.url = hide_url_password(&h.url);
        }
    };
    for step in &mut wf.steps {
        match &mut step.action {
            Action::Http(h) => hide_http(h),
            Action::Approval(a) => a.notify.iter_mut().for_each(hide_http),
            Action::WaitForWebhook(w) => w.notify.iter_mut().for_each(hide_http),
            Action::Map(m) => m.steps.iter_mut().for_each(|s| {
                if let Action::Http(h) = &mut s.action {
                    hide_http(h)
                }
            }),
            Action::Parallel(p) => p
                .branches
                .iter_mut()
                .flat_map(|b| &mut b.steps)
                .for_each(|s| {
                    if let Action::Http(h) = &mut s.action {
                        hide_http(h)
                    }
                }),
            _ => {}
        }
    }
    for cb in [wf.on_success.as_mut(), wf.on_failure.as_mut()]
        .into_iter()
        .flatten()
    {
        hide_map(&mut cb.headers, SENSITIVE_HEADERS);
        if url_password(&cb.url) {
            cb.url = hide_url_password(&cb.url);
        }
    }
    wf
}

fn hide_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_string();
    };
    let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
    format!("{scheme}://{user}:{HIDDEN}@{host}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{Format, load};

    #[test]
    fn names_come_from_requests_credentials_and_the_callback_secret() {
        let wf = load(
            r#"
id: x
triggers:
  - type: webhook
    auth: {type: api_key, keys: ["{{ secrets.hook_key }}"]}
steps:
  - id: a
    type: http
    method: POST
    url: "https://api.example.com/{{ secrets.tenant }}/x"
    headers: {authorization: "Bearer {{ secrets.crm_token }}"}
    query: {k: "{{ secrets.q }}"}
    body: {nested: ["{{ secrets.in_body }}"]}
callback_secret: "{{ secrets.cb }}"
on_success: {url: "https://hooks.example.com", headers: {x-sig: "{{ secrets.cb_header }}"}}
"#,
            Format::Yaml,
        )
        .unwrap();
        let names: Vec<String> = secret_names(&wf).into_iter().collect();
        assert_eq!(
            names,
            [
                "cb",
                "cb_header",
                "crm_token",
                "hook_key",
                "in_body",
                "q",
                "tenant"
            ]
        );
        assert!(warnings(&wf).is_empty(), "{:?}", warnings(&wf));
    }

    #[test]
    fn inline_credentials_are_warned_with_where_and_how_to_move_them() {
        let wf = load(
            r#"
id: x
triggers:
  - type: webhook
    auth: {type: basic, username: u, password: "hunter2hunter2"}
steps:
  - id: a
    type: http
    url: "https://u:pw@api.example.com/"
    headers: {Authorization: "Bearer abcdef123456", accept: "application/json"}
    query: {api_key: "k-1234567890", page: "2"}
"#,
            Format::Yaml,
        )
        .unwrap();
        let paths: Vec<String> = warnings(&wf).into_iter().map(|p| p.path).collect();
        assert_eq!(
            paths,
            [
                "triggers[0].auth.password",
                "steps[0].url",
                "steps[0].headers.Authorization",
                "steps[0].query.api_key",
            ]
        );
        assert!(warnings(&wf)[0].message.contains("tripline secrets set"));
        let shown = serde_json::to_string(&without_credentials(&wf)).unwrap();
        for value in ["hunter2hunter2", "abcdef123456", "k-1234567890", ":pw@"] {
            assert!(!shown.contains(value), "{value} in {shown}");
        }
        assert!(
            shown.contains("https://u:[redacted]@api.example.com/"),
            "{shown}"
        );
        assert!(shown.contains("application/json"), "{shown}");
    }
}
