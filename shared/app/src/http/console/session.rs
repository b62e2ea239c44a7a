//! Signing in to the console: an API key (or a scoped one) is exchanged for a session
//! cookie — `HttpOnly`, `SameSite=Strict`, `Secure` behind HTTPS — that names the key and
//! its scope, signed (HMAC-SHA256) under a key of Tripline's own in the secret store. The
//! key itself is never kept. Every form carries a token derived from the session, so that
//! a request another site makes (which `SameSite=Strict` already keeps the cookie from)
//! would still be refused.

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tripline_core::Timestamp;

use crate::App;
use crate::keys::{Principal, Scope};

/// The session cookie's name.
pub const COOKIE: &str = "tripline_session";
/// How long a session lasts.
pub const SESSION_HOURS: i64 = 12;

/// A signed-in person: the key's name and scope, and the session's cookie value.
#[derive(Clone, Debug)]
pub struct Session {
    pub who: Principal,
    pub cookie: String,
}

fn mac(key: &str, text: &str) -> String {
    // HMAC takes a key of any length: this never fails.
    let Ok(mut m) = <Hmac<Sha256> as KeyInit>::new_from_slice(key.as_bytes()) else {
        return String::new();
    };
    m.update(text.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
}

impl App {
    /// A session cookie value for `who`, valid for [`SESSION_HOURS`].
    pub async fn new_session(&self, who: &Principal) -> Result<String, crate::ports::StoreError> {
        let now = self.clock.now();
        let key = self.secrets.session_key(now).await?;
        let until = now.millis() + SESSION_HOURS * 3_600_000;
        let text = format!("{}.{}.{until}", who.name, who.scope.as_str());
        Ok(format!("{text}.{}", mac(&key, &text)))
    }

    /// The session a cookie value names, when its signature holds and it has not expired.
    pub async fn session(&self, cookie: &str) -> Option<Session> {
        let now = self.clock.now();
        let key = self.secrets.session_key(now).await.ok()?;
        let (text, sig) = cookie.rsplit_once('.')?;
        if !bool::from(mac(&key, text).as_bytes().ct_eq(sig.as_bytes())) {
            return None;
        }
        let mut parts = text.split('.');
        let (name, scope, until) = (parts.next()?, parts.next()?, parts.next()?);
        if until.parse::<i64>().ok()? < now.millis() {
            return None;
        }
        Some(Session {
            who: Principal {
                name: name.to_string(),
                scope: Scope::parse(scope)?,
            },
            cookie: cookie.to_string(),
        })
    }

    /// The token every form of a session carries.
    pub async fn form_token(&self, session: &Session) -> String {
        let key = self
            .secrets
            .session_key(Timestamp(0).max(self.clock.now()))
            .await
            .map(|k| k.to_string())
            .unwrap_or_default();
        mac(&key, &format!("form.{}", session.cookie))
    }
}

/// The session cookie of a request's `Cookie` header.
pub fn cookie_of(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix(&format!("{COOKIE}="))
                .map(str::to_string)
        })
}

/// `Set-Cookie` for a session (empty value and `Max-Age=0`: signed out).
pub fn set_cookie(value: &str, secure: bool) -> String {
    let age = if value.is_empty() {
        0
    } else {
        SESSION_HOURS * 3600
    };
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={age}{secure}")
}
