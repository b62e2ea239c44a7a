//! Webhook authentication: the client's address against `ip_allowlist`; API keys and Basic
//! credentials from the headers; signatures (Standard Webhooks, the senders' HMAC presets,
//! a generic HMAC scheme) over the raw body before anything parses it. Every comparison is
//! in constant time, every credential may be a secret by name. And which headers are
//! credentials, never stored.

use std::net::IpAddr;
use std::sync::Arc;

use axum::http::{HeaderMap, header};
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use subtle::ConstantTimeEq;
use tripline_core::Timestamp;
use tripline_core::definition::{
    DeliveryId, HmacAlgorithm, SignatureEncoding, SignatureScheme, WebhookAuth,
};

use crate::App;
use crate::ports::StoreError;

/// Why a request was not let in.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// A wrong or missing API key or Basic credential (which one is not said).
    Credentials,
    /// A signature check failed: the message says which.
    Signature(BadSignature),
    /// The secret store failed: nothing can be checked.
    Unavailable(StoreError),
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        Refusal::Unavailable(e)
    }
}

impl From<BadSignature> for Refusal {
    fn from(e: BadSignature) -> Self {
        Refusal::Signature(e)
    }
}

fn eq(a: &[u8], b: &[u8]) -> bool {
    bool::from(a.ct_eq(b))
}

/// True when `ip` may call a webhook with this allowlist (empty: anyone).
pub(crate) fn ip_allowed(list: &[String], ip: Option<IpAddr>) -> bool {
    list.is_empty() || ip.is_some_and(|ip| tripline_core::net::allowed(list, ip))
}

/// The checks made on the headers alone, before the body is read: API keys and Basic.
pub(crate) async fn check_headers(
    app: &App,
    auth: &WebhookAuth,
    headers: &HeaderMap,
    now: Timestamp,
) -> Result<(), Refusal> {
    match auth {
        WebhookAuth::ApiKey { header, keys } => {
            let Some(given) = headers.get(header.as_str()) else {
                return Err(Refusal::Credentials);
            };
            let fields: Vec<&str> = keys.iter().map(String::as_str).collect();
            let keys = app.secrets.credentials(&fields, now).await?;
            // Check every key so the time taken does not tell which one matched.
            let ok = keys
                .iter()
                .fold(false, |ok, k| eq(given.as_bytes(), k.as_bytes()) | ok);
            ok.then_some(()).ok_or(Refusal::Credentials)
        }
        WebhookAuth::Basic { username, password } => {
            let Some(password) = app.secrets.credential(password, now).await? else {
                return Err(Refusal::Credentials);
            };
            basic_matches(headers, username, &password)
                .then_some(())
                .ok_or(Refusal::Credentials)
        }
        // Need the body: checked by `check_signature` once it is read.
        WebhookAuth::StandardWebhooks { .. } | WebhookAuth::Hmac(_) | WebhookAuth::None => Ok(()),
    }
}

fn basic_matches(headers: &HeaderMap, username: &str, password: &str) -> bool {
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
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let expected = format!("{username}:{password}");
    eq(&decoded, expected.as_bytes())
}

/// The signature check over the raw body. `Ok(Some(id))`: verified, and the sender named
/// the delivery `id` (its idempotency key).
pub(crate) async fn check_signature(
    app: &App,
    auth: &WebhookAuth,
    headers: &HeaderMap,
    body: &[u8],
    now: Timestamp,
) -> Result<Option<String>, Refusal> {
    let now_secs = now.millis().div_euclid(1000);
    match auth {
        WebhookAuth::StandardWebhooks { secrets, tolerance } => {
            let fields: Vec<&str> = secrets.iter().map(String::as_str).collect();
            let secrets = app.secrets.credentials(&fields, now).await?;
            standard_webhooks(&secrets, tolerance.std(), headers, body, now_secs)?;
            Ok(header_value(headers, "webhook-id"))
        }
        WebhookAuth::Hmac(h) => {
            let fields: Vec<&str> = h.secrets.iter().map(String::as_str).collect();
            let secrets = app.secrets.credentials(&fields, now).await?;
            let scheme = h.scheme();
            hmac_signed(&scheme, &secrets, headers, body, now_secs)?;
            Ok(match &scheme.delivery_id {
                Some(DeliveryId::Header(name)) => header_value(headers, name),
                Some(DeliveryId::BodyField(field)) => body_field(body, field),
                None => None,
            })
        }
        _ => Ok(None),
    }
}

/// A delivery id fit to be an idempotency key: present, at most 255 bytes.
fn header_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .map(str::to_string)
}

fn body_field(body: &[u8], field: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get(field)?
        .as_str()
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .map(str::to_string)
}

/// Why a signature was refused: the message says which check failed.
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

fn fresh(ts: i64, tolerance_secs: u64, now_secs: i64, header: &str) -> Result<(), BadSignature> {
    let off = (now_secs - ts).unsigned_abs();
    if off > tolerance_secs {
        return Err(format!(
            "stale timestamp: {header} is {off} s from now, over the tolerance of {tolerance_secs} s (a replay, or a clock that is off)"
        )
        .into());
    }
    Ok(())
}

/// A Standard Webhooks signature check: `Err` says what is wrong.
pub(crate) fn standard_webhooks(
    secrets: &[Arc<str>],
    tolerance: std::time::Duration,
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
            "missing header: a signed webhook needs the webhook-id, webhook-timestamp and webhook-signature headers"
                .into(),
        );
    };
    let Ok(ts) = ts.trim().parse::<i64>() else {
        return Err(format!("bad format: webhook-timestamp `{ts}` is not Unix seconds").into());
    };
    fresh(ts, tolerance.as_secs(), now_secs, "webhook-timestamp")?;
    let given: Vec<&str> = sigs
        .split_whitespace()
        .filter_map(|s| s.strip_prefix("v1,"))
        .collect();
    if given.is_empty() {
        return Err("bad format: webhook-signature has no `v1,` signature".into());
    }
    let mut ok = false;
    for secret in secrets {
        let Ok(expected) = crate::signing::signature(secret, id, ts, body) else {
            continue;
        };
        for g in &given {
            ok |= eq(g.as_bytes(), expected.as_bytes());
        }
    }
    if ok {
        Ok(())
    } else {
        Err("no match: webhook-signature does not match the body under any of the trigger's secrets".into())
    }
}

/// The HMAC of `message` under `key`.
pub(crate) fn mac(algorithm: HmacAlgorithm, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    fn run<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        let Ok(mut m) = <M as KeyInit>::new_from_slice(key) else {
            return Vec::new();
        };
        for p in parts {
            m.update(p);
        }
        m.finalize().into_bytes().to_vec()
    }
    match algorithm {
        HmacAlgorithm::Sha1 => run::<Hmac<sha1::Sha1>>(key, parts),
        HmacAlgorithm::Sha256 => run::<Hmac<sha2::Sha256>>(key, parts),
        HmacAlgorithm::Sha512 => run::<Hmac<sha2::Sha512>>(key, parts),
    }
}

/// An HMAC signature check by `scheme`: `Err` says which check failed (missing header,
/// bad format, stale timestamp, no match).
pub(crate) fn hmac_signed(
    scheme: &SignatureScheme,
    secrets: &[Arc<str>],
    headers: &HeaderMap,
    body: &[u8],
    now_secs: i64,
) -> Result<(), BadSignature> {
    let (timestamp, given) = signatures_given(scheme, headers)?;
    if let Some(ts) = &timestamp {
        let header = scheme.timestamp_header.as_deref().unwrap_or("t");
        let Ok(secs) = ts.trim().parse::<i64>() else {
            return Err(format!("bad format: the timestamp `{ts}` is not Unix seconds").into());
        };
        fresh(secs, scheme.tolerance.std().as_secs(), now_secs, header)?;
    }
    let decoded = decoded(scheme, &given)?;
    let ts = timestamp.unwrap_or_default();
    let parts = signed_parts(&scheme.signed, body, ts.as_bytes());
    let mut ok = false;
    for secret in secrets {
        let expected = mac(scheme.algorithm, secret.as_bytes(), &parts);
        for g in &decoded {
            ok |= g.len() == expected.len() && eq(g, &expected);
        }
    }
    if ok {
        Ok(())
    } else {
        Err(format!(
            "no match: the signature in `{}` does not match the body under any of the trigger's secrets",
            scheme.header
        )
        .into())
    }
}

/// The signed timestamp (when the scheme has one) and the signatures the request gives.
fn signatures_given<'h>(
    scheme: &SignatureScheme,
    headers: &'h HeaderMap,
) -> Result<(Option<String>, Vec<&'h str>), BadSignature> {
    let Some(value) = headers.get(scheme.header.as_str()) else {
        return Err(format!(
            "missing header: the request has no `{}` header",
            scheme.header
        )
        .into());
    };
    let Ok(value) = value.to_str() else {
        return Err(format!("bad format: the `{}` header is not text", scheme.header).into());
    };
    if scheme.stripe_format {
        let mut t = None;
        let mut v1 = Vec::new();
        for pair in value.split(',') {
            match pair.trim().split_once('=') {
                Some(("t", ts)) => t = Some(ts.to_string()),
                Some(("v1", sig)) => v1.push(sig),
                _ => {}
            }
        }
        if t.is_none() || v1.is_empty() {
            return Err(format!(
                "bad format: `{}` needs `t=<timestamp>` and at least one `v1=<signature>`",
                scheme.header
            )
            .into());
        }
        return Ok((t, v1));
    }
    let ts = match &scheme.timestamp_header {
        None => None,
        Some(h) => match headers.get(h.as_str()).and_then(|v| v.to_str().ok()) {
            Some(ts) => Some(ts.to_string()),
            None => return Err(format!("missing header: the request has no `{h}` header").into()),
        },
    };
    let Some(sig) = value.trim().strip_prefix(scheme.prefix.as_str()) else {
        return Err(format!(
            "bad format: `{}` does not start with `{}`",
            scheme.header, scheme.prefix
        )
        .into());
    };
    Ok((ts, vec![sig]))
}

/// The given signatures as bytes; at least one must decode.
fn decoded(scheme: &SignatureScheme, given: &[&str]) -> Result<Vec<Vec<u8>>, BadSignature> {
    let decoded: Vec<Vec<u8>> = given
        .iter()
        .filter_map(|g| match scheme.encoding {
            SignatureEncoding::Hex => decode_hex(g.trim()),
            SignatureEncoding::Base64 => base64::engine::general_purpose::STANDARD
                .decode(g.trim())
                .ok(),
        })
        .collect();
    if decoded.is_empty() {
        let enc = match scheme.encoding {
            SignatureEncoding::Hex => "hex",
            SignatureEncoding::Base64 => "base64",
        };
        return Err(format!(
            "bad format: the signature in `{}` is not {enc}",
            scheme.header
        )
        .into());
    }
    Ok(decoded)
}

/// What is signed: `signed` with `{timestamp}` and `{body}` in their places, the body as
/// raw bytes.
fn signed_parts<'a>(signed: &'a str, body: &'a [u8], ts: &'a [u8]) -> Vec<&'a [u8]> {
    let mut parts: Vec<&[u8]> = Vec::new();
    let mut rest = signed;
    while !rest.is_empty() {
        let next = [("{body}", body), ("{timestamp}", ts)]
            .into_iter()
            .filter_map(|(p, v)| rest.find(p).map(|at| (at, p, v)))
            .min_by_key(|(at, _, _)| *at);
        match next {
            Some((at, p, v)) => {
                parts.push(&rest.as_bytes()[..at]);
                parts.push(v);
                rest = &rest[at + p.len()..];
            }
            None => {
                parts.push(rest.as_bytes());
                rest = "";
            }
        }
    }
    parts
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
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
    use tripline_core::definition::{HmacAuth, HmacPreset};

    use super::*;

    fn secret(s: &str) -> Vec<Arc<str>> {
        vec![Arc::from(s)]
    }

    fn preset(p: HmacPreset) -> SignatureScheme {
        HmacAuth {
            preset: Some(p),
            ..Default::default()
        }
        .scheme()
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn basic_auth_is_checked() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic dTpwYXNzd29yZDE="),
        );
        assert!(basic_matches(&h, "u", "password1"));
        assert!(!basic_matches(&h, "u", "wrong"));
    }

    #[test]
    fn github_matches_its_published_example() {
        // docs.github.com, "Validating webhook deliveries": secret "It's a Secret to
        // Everybody", payload "Hello, World!".
        let mut h = HeaderMap::new();
        h.insert(
            "x-hub-signature-256",
            HeaderValue::from_static(
                "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            ),
        );
        let s = preset(HmacPreset::Github);
        let ok = hmac_signed(
            &s,
            &secret("It's a Secret to Everybody"),
            &h,
            b"Hello, World!",
            0,
        );
        assert_eq!(ok, Ok(()));
        let bad = hmac_signed(&s, &secret("another"), &h, b"Hello, World!", 0).unwrap_err();
        assert!(bad.0.starts_with("no match"), "{bad}");
        let missing = hmac_signed(&s, &secret("x"), &HeaderMap::new(), b"", 0).unwrap_err();
        assert!(missing.0.starts_with("missing header"), "{missing}");
    }

    #[test]
    fn slack_matches_its_published_example() {
        // api.slack.com, "Verifying requests from Slack".
        let body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let mut h = HeaderMap::new();
        h.insert(
            "x-slack-request-timestamp",
            HeaderValue::from_static("1531420618"),
        );
        h.insert(
            "x-slack-signature",
            HeaderValue::from_static(
                "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
            ),
        );
        let s = preset(HmacPreset::Slack);
        let secret = secret("8f742231b10e8888abcd99yyyzzz85a5");
        assert_eq!(
            hmac_signed(&s, &secret, &h, body.as_bytes(), 1531420618 + 60),
            Ok(())
        );
        let stale = hmac_signed(&s, &secret, &h, body.as_bytes(), 1531420618 + 301).unwrap_err();
        assert!(stale.0.starts_with("stale timestamp"), "{stale}");
    }

    #[test]
    fn stripe_takes_any_v1_and_signs_the_timestamp_with_the_body() {
        let body = br#"{"id":"evt_1","type":"charge.succeeded"}"#;
        let key = "whsec_test_secret";
        let good = hex(&mac(
            HmacAlgorithm::Sha256,
            key.as_bytes(),
            &[b"1700000000.", body],
        ));
        let header = format!("t=1700000000,v1={},v1={good},v0=ignored", "00".repeat(32));
        let mut h = HeaderMap::new();
        h.insert("stripe-signature", HeaderValue::from_str(&header).unwrap());
        let s = preset(HmacPreset::Stripe);
        assert_eq!(hmac_signed(&s, &secret(key), &h, body, 1700000100), Ok(()));
        let stale = hmac_signed(&s, &secret(key), &h, body, 1700000301).unwrap_err();
        assert!(stale.0.starts_with("stale"), "{stale}");
        h.insert("stripe-signature", HeaderValue::from_static("v1=abc"));
        let bad = hmac_signed(&s, &secret(key), &h, body, 1700000100).unwrap_err();
        assert!(bad.0.starts_with("bad format"), "{bad}");
    }

    #[test]
    fn shopify_is_base64_of_the_body() {
        let body = br#"{"id":1}"#;
        let sig = base64::engine::general_purpose::STANDARD.encode(mac(
            HmacAlgorithm::Sha256,
            b"shpss_k",
            &[body],
        ));
        let mut h = HeaderMap::new();
        h.insert(
            "x-shopify-hmac-sha256",
            HeaderValue::from_str(&sig).unwrap(),
        );
        let s = preset(HmacPreset::Shopify);
        assert_eq!(hmac_signed(&s, &secret("shpss_k"), &h, body, 0), Ok(()));
        // Rotation: any of the secrets.
        let two = vec![Arc::from("old"), Arc::from("shpss_k")];
        assert_eq!(hmac_signed(&s, &two, &h, body, 0), Ok(()));
    }

    #[test]
    fn a_generic_scheme_reads_its_fields() {
        let auth = HmacAuth {
            secrets: vec!["k".into()],
            header: Some("X-Sig".into()),
            algorithm: Some(HmacAlgorithm::Sha512),
            encoding: Some(SignatureEncoding::Base64),
            prefix: Some("sha512=".into()),
            signed: Some("{timestamp}:{body}".into()),
            timestamp_header: Some("X-Ts".into()),
            ..Default::default()
        };
        let body = b"payload";
        let sig = base64::engine::general_purpose::STANDARD.encode(mac(
            HmacAlgorithm::Sha512,
            b"k",
            &[b"100:", body],
        ));
        let mut h = HeaderMap::new();
        h.insert(
            "x-sig",
            HeaderValue::from_str(&format!("sha512={sig}")).unwrap(),
        );
        h.insert("x-ts", HeaderValue::from_static("100"));
        assert_eq!(
            hmac_signed(&auth.scheme(), &secret("k"), &h, body, 100),
            Ok(())
        );
        h.insert("x-sig", HeaderValue::from_str(&sig).unwrap());
        let e = hmac_signed(&auth.scheme(), &secret("k"), &h, body, 100).unwrap_err();
        assert!(e.0.contains("does not start with `sha512=`"), "{e}");
        // sha1, hex: the scheme of older senders.
        let sha1 = HmacAuth {
            secrets: vec!["k".into()],
            header: Some("X-Hub-Signature".into()),
            algorithm: Some(HmacAlgorithm::Sha1),
            prefix: Some("sha1=".into()),
            ..Default::default()
        };
        let sig = hex(&mac(HmacAlgorithm::Sha1, b"k", &[body]));
        h.insert(
            "x-hub-signature",
            HeaderValue::from_str(&format!("sha1={sig}")).unwrap(),
        );
        assert_eq!(
            hmac_signed(&sha1.scheme(), &secret("k"), &h, body, 0),
            Ok(())
        );
    }
}
