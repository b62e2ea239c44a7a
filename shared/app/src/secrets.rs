//! Secrets as the use cases see them: the store behind a per-process cache, and the two
//! things done with a rendered request (see `tripline_core::secrets`): its markers
//! swapped for values just before it is sent, and shown as `[secret:NAME]` where it is
//! recorded.
//!
//! The cache: where this process is the only writer (local shape), an entry lives until
//! this process sets or removes that secret, so a new value is used by the very next step.
//! Where other processes write (AWS: the control API is another function), an entry is
//! trusted for `ttl` (default 60 s) by the App's clock: a rotation reaches every function
//! within that bound, and a run costs no parameter read per step.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tripline_core::Timestamp;
use tripline_core::engine::HttpRequest;
use tripline_core::secrets::{self, Redactor, Unresolved};

use crate::ports::{NoSecrets, SecretInfo, SecretStore, StoreError};

/// The default time an AWS function trusts a cached secret.
pub const DEFAULT_SECRET_TTL: Duration = Duration::from_secs(60);

/// The longest secret value, in bytes.
pub const MAX_SECRET_BYTES: usize = 16 * 1024;

type Entry = (Option<Arc<str>>, Timestamp);

/// The secret store and this process's cache of it.
pub struct Secrets {
    store: Arc<dyn SecretStore>,
    /// `None`: this process is the only writer; entries live until it changes them.
    ttl: Option<Duration>,
    cache: Mutex<HashMap<String, Entry>>,
}

impl Default for Secrets {
    fn default() -> Self {
        Self::new(Arc::new(NoSecrets), None)
    }
}

/// Why a secret could not be set.
#[derive(Debug, thiserror::Error)]
pub enum SetError {
    #[error(
        "`{0}` is not a valid secret name: use 1 to 128 letters, digits and `_`, starting with a letter or `_` (templates read it as `secrets.NAME`)"
    )]
    BadName(String),
    #[error("a secret's value must not be empty")]
    Empty,
    #[error("a secret's value is at most {MAX_SECRET_BYTES} bytes; this one is {0}")]
    TooLarge(usize),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A request ready to send, and what to clean from what comes back.
pub struct Resolved {
    pub request: HttpRequest,
    pub redactor: Redactor,
}

impl Secrets {
    pub fn new(store: Arc<dyn SecretStore>, ttl: Option<Duration>) -> Self {
        Self {
            store,
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// One secret's value, from the cache while it is fresh.
    pub async fn value(&self, name: &str, now: Timestamp) -> Result<Option<Arc<str>>, StoreError> {
        if let Some((v, at)) = self.cache.lock().ok().and_then(|c| c.get(name).cloned())
            && self.ttl.is_none_or(|ttl| now.since(at) < ttl)
        {
            return Ok(v);
        }
        let v: Option<Arc<str>> = self.store.secret(name).await?.map(Arc::from);
        if let Ok(mut c) = self.cache.lock() {
            c.insert(name.to_string(), (v.clone(), now));
        }
        Ok(v)
    }

    /// Sets a secret (checked: a valid name, a value within bounds).
    pub async fn set(&self, name: &str, value: &str, now: Timestamp) -> Result<(), SetError> {
        if !secrets::valid_name(name) {
            return Err(SetError::BadName(name.to_string()));
        }
        if value.is_empty() {
            return Err(SetError::Empty);
        }
        if value.len() > MAX_SECRET_BYTES {
            return Err(SetError::TooLarge(value.len()));
        }
        self.store.set_secret(name, value, now).await?;
        self.forget(name);
        Ok(())
    }

    /// Removes a secret; false when there was none.
    pub async fn remove(&self, name: &str) -> Result<bool, StoreError> {
        let removed = self.store.remove_secret(name).await?;
        self.forget(name);
        Ok(removed)
    }

    pub async fn list(&self) -> Result<Vec<SecretInfo>, StoreError> {
        self.store.secret_names().await
    }

    fn forget(&self, name: &str) {
        if let Ok(mut c) = self.cache.lock() {
            c.remove(name);
        }
    }

    /// The value of a credential field: the secret it names, or the value written inline.
    pub async fn credential(
        &self,
        field: &str,
        now: Timestamp,
    ) -> Result<Option<Arc<str>>, StoreError> {
        match secrets::reference(field) {
            Some(name) => self.value(name, now).await,
            None => Ok(Some(Arc::from(field))),
        }
    }

    /// The values of credential fields; those that name a missing secret are left out.
    pub async fn credentials(
        &self,
        fields: &[&str],
        now: Timestamp,
    ) -> Result<Vec<Arc<str>>, StoreError> {
        let mut out = Vec::with_capacity(fields.len());
        for f in fields {
            if let Some(v) = self.credential(f, now).await? {
                out.push(v);
            }
        }
        Ok(out)
    }

    /// The request with its markers swapped for the secrets' values, and a redactor for
    /// what comes back. `Err(Ok(_))`: a secret is missing or a filter changed one;
    /// `Err(Err(_))`: the store failed.
    pub async fn resolve(
        &self,
        request: &HttpRequest,
        now: Timestamp,
    ) -> Result<Resolved, Result<Unresolved, StoreError>> {
        let mut names: Vec<String> = Vec::new();
        each_string(request, &mut |s| {
            names.extend(secrets::markers_in(s).into_iter().map(str::to_string));
        });
        names.sort();
        names.dedup();
        let mut values: BTreeMap<String, Arc<str>> = BTreeMap::new();
        for name in names {
            match self.value(&name, now).await {
                Ok(Some(v)) => {
                    values.insert(name, v);
                }
                Ok(None) => return Err(Ok(Unresolved::Missing(name))),
                Err(e) => return Err(Err(e)),
            }
        }
        let lookup = |name: &str| values.get(name).cloned();
        let swap = |s: &str| secrets::resolve(s, &lookup);
        let mut headers = BTreeMap::new();
        for (k, v) in &request.headers {
            headers.insert(k.clone(), swap(v).map_err(Ok)?);
        }
        let mut query = BTreeMap::new();
        for (k, v) in &request.query {
            query.insert(k.clone(), swap(v).map_err(Ok)?);
        }
        let body = match &request.body {
            None => None,
            Some(b) => {
                let mut failed = None;
                let out = secrets::map_strings(b, &mut |s| {
                    swap(s).unwrap_or_else(|e| {
                        failed = Some(e);
                        String::new()
                    })
                });
                if let Some(e) = failed {
                    return Err(Ok(e));
                }
                Some(out)
            }
        };
        let resolved = HttpRequest {
            method: request.method,
            url: swap(&request.url).map_err(Ok)?,
            headers,
            query,
            body,
            idempotency_key: request.idempotency_key.clone(),
        };
        Ok(Resolved {
            request: resolved,
            redactor: Redactor::new(values),
        })
    }
}

fn each_string(request: &HttpRequest, f: &mut dyn FnMut(&str)) {
    f(&request.url);
    request.headers.values().for_each(|v| f(v));
    request.query.values().for_each(|v| f(v));
    if let Some(b) = &request.body {
        secrets::any_string(b, &mut |s| {
            f(s);
            false
        });
    }
}

/// How a rendered request is recorded: each secret as `[secret:NAME]`; a credential
/// header (`authorization`, `cookie`, …) that holds no secret, written inline or made
/// with a filter, as `[redacted]`.
pub fn recorded(request: &HttpRequest) -> Value {
    let v = serde_json::to_value(request).unwrap_or(Value::Null);
    let mut v = secrets::map_strings(&v, &mut |s| secrets::display(s));
    if let Some(headers) = v.get_mut("headers").and_then(Value::as_object_mut) {
        for (name, value) in headers.iter_mut() {
            let credential = matches!(
                name.as_str(),
                "authorization" | "proxy-authorization" | "cookie" | "x-api-key"
            );
            if credential && !value.as_str().unwrap_or_default().contains("[secret:") {
                *value = Value::String("[redacted]".into());
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use tripline_core::definition::HttpMethod;

    #[derive(Default)]
    struct Memory(
        Mutex<HashMap<String, String>>,
        std::sync::atomic::AtomicUsize,
    );

    #[async_trait::async_trait]
    impl SecretStore for Memory {
        async fn secret(&self, name: &str) -> Result<Option<String>, StoreError> {
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(self.0.lock().unwrap().get(name).cloned())
        }
        async fn set_secret(
            &self,
            name: &str,
            value: &str,
            _: Timestamp,
        ) -> Result<(), StoreError> {
            self.0.lock().unwrap().insert(name.into(), value.into());
            Ok(())
        }
        async fn remove_secret(&self, name: &str) -> Result<bool, StoreError> {
            Ok(self.0.lock().unwrap().remove(name).is_some())
        }
        async fn secret_names(&self) -> Result<Vec<SecretInfo>, StoreError> {
            Ok(Vec::new())
        }
    }

    fn request(auth: &str) -> HttpRequest {
        HttpRequest {
            method: HttpMethod::Post,
            url: format!("https://api.example.com/{}", secrets::marker("tenant")),
            headers: [("authorization".to_string(), auth.to_string())].into(),
            query: BTreeMap::new(),
            body: Some(serde_json::json!({"k": secrets::marker("tenant")})),
            idempotency_key: "r:s".into(),
        }
    }

    #[tokio::test]
    async fn a_request_gets_its_values_and_is_recorded_with_placeholders() {
        let store = Arc::new(Memory::default());
        let s = Secrets::new(store.clone(), None);
        let t0 = Timestamp::from_millis(0);
        s.set("tenant", "acme-corp", t0).await.unwrap();
        s.set("tok", "tok-123456", t0).await.unwrap();
        let req = request(&format!("Bearer {}", secrets::marker("tok")));
        let r = s.resolve(&req, t0).await.ok().unwrap();
        assert_eq!(r.request.url, "https://api.example.com/acme-corp");
        assert_eq!(r.request.headers["authorization"], "Bearer tok-123456");
        assert_eq!(r.request.body.unwrap()["k"], "acme-corp");
        assert_eq!(r.redactor.redact("echo tok-123456"), "echo [secret:tok]");
        let rec = recorded(&req);
        assert_eq!(rec["headers"]["authorization"], "Bearer [secret:tok]");
        assert_eq!(rec["url"], "https://api.example.com/[secret:tenant]");
        let inline = recorded(&request("Bearer inline-credential"));
        assert_eq!(inline["headers"]["authorization"], "[redacted]");
    }

    #[tokio::test]
    async fn the_cache_is_trusted_for_its_ttl_on_the_clock_and_a_set_here_is_seen_at_once() {
        let store = Arc::new(Memory::default());
        let s = Secrets::new(store.clone(), Some(Duration::from_secs(60)));
        let t0 = Timestamp::from_millis(1_000_000);
        store.set_secret("k", "one", t0).await.unwrap();
        assert_eq!(s.value("k", t0).await.unwrap().as_deref(), Some("one"));
        // Another process rotates it: this one sees the old value until the ttl is over.
        store.set_secret("k", "two", t0).await.unwrap();
        let t59 = Timestamp::from_millis(1_000_000 + 59_000);
        assert_eq!(s.value("k", t59).await.unwrap().as_deref(), Some("one"));
        let t60 = Timestamp::from_millis(1_000_000 + 60_000);
        assert_eq!(s.value("k", t60).await.unwrap().as_deref(), Some("two"));
        // Reads within the ttl cost nothing.
        let reads = store.1.load(std::sync::atomic::Ordering::SeqCst);
        for _ in 0..10 {
            s.value("k", t60).await.unwrap();
        }
        assert_eq!(store.1.load(std::sync::atomic::Ordering::SeqCst), reads);
        // Set through this process: seen at once.
        s.set("k", "three", t60).await.unwrap();
        assert_eq!(s.value("k", t60).await.unwrap().as_deref(), Some("three"));
    }

    #[tokio::test]
    async fn a_missing_secret_and_a_bad_name_say_what_to_do() {
        let s = Secrets::new(Arc::new(Memory::default()), None);
        let t0 = Timestamp::from_millis(0);
        let err = s.resolve(&request("x"), t0).await.err().unwrap().unwrap();
        assert!(
            err.to_string().contains("tripline secrets set tenant"),
            "{err}"
        );
        assert!(matches!(
            s.set("bad-name", "v", t0).await,
            Err(SetError::BadName(_))
        ));
        assert!(matches!(s.set("ok", "", t0).await, Err(SetError::Empty)));
    }
}
