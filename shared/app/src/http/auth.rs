//! Webhook authentication: API keys and Basic credentials from the headers, Standard
//! Webhooks signatures over the raw body, all compared in constant time; and which headers
//! are credentials, never stored.

use std::time::Duration;

use axum::http::{HeaderMap, header};
use base64::Engine as _;
use subtle::ConstantTimeEq;
use tripline_core::definition::WebhookAuth;

pub(crate) fn authorized(auth: &WebhookAuth, headers: &HeaderMap) -> bool {
    let eq = |a: &[u8], b: &[u8]| bool::from(a.ct_eq(b));
    match auth {
        WebhookAuth::None => true,
        WebhookAuth::ApiKey { header, keys } => {
            let Some(given) = headers.get(header.as_str()) else {
                return false;
            };
            // Check every key so the time taken does not tell which one matched.
            keys.iter()
                .fold(false, |ok, k| eq(given.as_bytes(), k.as_bytes()) | ok)
        }
        WebhookAuth::Basic { username, password } => {
            let Some(value) = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
            else {
                return false;
            };
            let Some(encoded) = value
                .strip_prefix("Basic ")
                .or_else(|| value.strip_prefix("basic "))
            else {
                return false;
            };
            let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim())
            else {
                return false;
            };
            let expected = format!("{username}:{password}");
            eq(&decoded, expected.as_bytes())
        }
        // Needs the body: checked by `signed` once it is read.
        WebhookAuth::StandardWebhooks { .. } => true,
    }
}

/// Why a Standard Webhooks signature was refused: the message says which check failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct BadSignature(String);

impl From<String> for BadSignature {
    fn from(message: String) -> Self {
        BadSignature(message)
    }
}

impl From<&str> for BadSignature {
    fn from(message: &str) -> Self {
        BadSignature(message.to_string())
    }
}

/// A Standard Webhooks signature check: `Err` says what is wrong.
pub(crate) fn signed(
    secrets: &[String],
    tolerance: Duration,
    headers: &HeaderMap,
    body: &[u8],
    now_secs: i64,
) -> Result<(), BadSignature> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(id), Some(ts), Some(sigs)) = (
        get("webhook-id"),
        get("webhook-timestamp"),
        get("webhook-signature"),
    ) else {
        return Err(
            "a signed webhook needs the webhook-id, webhook-timestamp and webhook-signature headers"
                .into(),
        );
    };
    let Ok(ts) = ts.trim().parse::<i64>() else {
        return Err(format!("webhook-timestamp `{ts}` is not Unix seconds").into());
    };
    let off = (now_secs - ts).unsigned_abs();
    if off > tolerance.as_secs() {
        return Err(format!(
            "webhook-timestamp is {off} s from now, over the tolerance of {} s (a replay, or a clock that is off)",
            tolerance.as_secs()
        )
        .into());
    }
    let given: Vec<&str> = sigs
        .split_whitespace()
        .filter_map(|s| s.strip_prefix("v1,"))
        .collect();
    let mut ok = false;
    for secret in secrets {
        let Ok(expected) = crate::signing::signature(secret, id, ts, body) else {
            continue;
        };
        for g in &given {
            ok |= bool::from(g.as_bytes().ct_eq(expected.as_bytes()));
        }
    }
    if ok {
        Ok(())
    } else {
        Err("webhook-signature does not match the body under any of the trigger's secrets".into())
    }
}

/// Header names whose values never reach the inbox or the run.
fn is_credential(name: &str, auth: &WebhookAuth) -> bool {
    name == "authorization"
        || name == "cookie"
        || name == "proxy-authorization"
        || matches!(auth, WebhookAuth::ApiKey { header, .. } if header.eq_ignore_ascii_case(name))
}

pub(crate) fn redacted_headers(headers: &HeaderMap, auth: &WebhookAuth) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            let name = k.as_str().to_string();
            let value = if is_credential(&name, auth) {
                "[redacted]".to_string()
            } else {
                String::from_utf8_lossy(v.as_bytes()).into_owned()
            };
            (name, value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn api_keys_and_basic_auth_are_checked() {
        let auth = WebhookAuth::ApiKey {
            header: "x-api-key".into(),
            keys: vec!["k1k1k1k1k1k1k1k1".into(), "k2k2k2k2k2k2k2k2".into()],
        };
        let mut h = HeaderMap::new();
        assert!(!authorized(&auth, &h));
        h.insert("x-api-key", HeaderValue::from_static("k2k2k2k2k2k2k2k2"));
        assert!(authorized(&auth, &h));
        h.insert("x-api-key", HeaderValue::from_static("k2k2k2k2k2k2k2k3"));
        assert!(!authorized(&auth, &h));

        let basic = WebhookAuth::Basic {
            username: "u".into(),
            password: "password1".into(),
        };
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic dTpwYXNzd29yZDE="),
        );
        assert!(authorized(&basic, &h));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic dTp3cm9uZw=="),
        );
        assert!(!authorized(&basic, &h));
    }
}
