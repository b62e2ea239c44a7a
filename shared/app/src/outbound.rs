//! Outbound HTTP for `http` steps: one client, the private-network guard, and the mapping of
//! responses and failures to step outputs and failure classes.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde_json::{Map, Value, json};
use tripline_core::engine::{HttpRequest, SuccessRule};
use tripline_core::run::{FailureClass, StepError};

/// The most of a response body a step's output keeps (the run record's bound per step,
/// whatever a downstream answers); the rest is cut, with a marker saying how much.
pub const STORED_BODY_LIMIT: usize = 256 * 1024;

/// `text` cut to at most `limit` bytes (on a character boundary), with a marker saying
/// how much was cut.
pub fn cut(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_string();
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[cut: {} more bytes]", &text[..end], text.len() - end)
}

/// Which destinations `http` steps may reach.
#[derive(Clone, Debug, Default)]
pub struct OutboundPolicy {
    /// Allow loopback, private, link-local and carrier-grade NAT addresses (for local
    /// development and tests). Off by default: such addresses are refused.
    pub allow_private_networks: bool,
    /// URL prefixes sent elsewhere: `(from, to)`. A request whose URL starts with `from`
    /// goes to `to` + the rest (to point workflows at a staging or stub server). The run
    /// records the URL the workflow asked for.
    pub rewrites: Vec<(String, String)>,
}

impl OutboundPolicy {
    fn rewrite(&self, url: &str) -> String {
        for (from, to) in &self.rewrites {
            if let Some(rest) = url.strip_prefix(from.as_str()) {
                return format!("{to}{rest}");
            }
        }
        url.to_string()
    }
}

/// True for addresses a workflow must not reach unless allowed: every address that is not
/// globally routable — loopback, private, link-local (cloud metadata: 169.254.169.254,
/// fd00:ec2::254), carrier-grade NAT, unspecified, broadcast, multicast, benchmarking
/// (198.18.0.0/15), reserved (240.0.0.0/4), IETF protocol assignments (192.0.0.0/24),
/// documentation ranges; in IPv6 also unique-local, site-local (fec0::/10), discard-only,
/// documentation, and every form that carries an IPv4 address or tunnels to one
/// (IPv4-mapped, IPv4-compatible, NAT64 64:ff9b::/96 and 64:ff9b:1::/48, 6to4 2002::/16,
/// Teredo 2001::/32).
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
                || o[0] >= 240
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let s = v6.segments();
            // IPv4-compatible (::a.b.c.d, deprecated): whatever it carries, never global.
            let v4_compatible = s[..6] == [0, 0, 0, 0, 0, 0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || v4_compatible
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xffc0) == 0xfec0
                || (s[0] == 0x0064 && s[1] == 0xff9b)
                || s[0] == 0x2002
                || (s[0] == 0x2001 && s[1] == 0)
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                || (s[0] == 0x2001 && (s[1] & 0xfff0) == 0x0010)
                || (s[0] == 0x2001 && (s[1] & 0xfff0) == 0x0020)
                || (s[0] == 0x2001 && s[1] == 0x0002 && s[2] == 0)
                || (s[..4] == [0x0100, 0, 0, 0])
        }
    }
}

struct GuardedResolver {
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = addrs
                .iter()
                .copied()
                .filter(|a| allow || !is_private(a.ip()))
                .collect();
            if allowed.is_empty() && !addrs.is_empty() {
                return Err(format!(
                    "refused: `{host}` resolves to a private or loopback address; allow private networks in the server's configuration to reach it"
                )
                .into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// Performs `http` steps.
#[derive(Clone)]
pub struct Outbound {
    client: reqwest::Client,
    /// For workflows with `allowed_hosts`: follows no redirect.
    listed_client: reqwest::Client,
    policy: OutboundPolicy,
    max_response_bytes: usize,
}

fn literal_refused(url: &reqwest::Url, policy: &OutboundPolicy) -> Option<String> {
    if policy.allow_private_networks {
        return None;
    }
    let ip = match url.host()? {
        url::Host::Ipv4(v4) => IpAddr::V4(v4),
        url::Host::Ipv6(v6) => IpAddr::V6(v6),
        url::Host::Domain(_) => return None,
    };
    is_private(ip).then(|| {
        format!("refused: {ip} is a private or loopback address; allow private networks in the server's configuration to reach it")
    })
}

impl Outbound {
    pub fn new(policy: OutboundPolicy) -> Self {
        let redirect_policy = policy.clone();
        let follow = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= 5 {
                return attempt.error("too many redirects (more than 5)");
            }
            match literal_refused(attempt.url(), &redirect_policy) {
                Some(msg) => attempt.error(msg),
                None => attempt.follow(),
            }
        });
        let client = |redirects| {
            reqwest::Client::builder()
                .dns_resolver(Arc::new(GuardedResolver {
                    allow_private: policy.allow_private_networks,
                }))
                .redirect(redirects)
                .user_agent(concat!("tripline/", env!("CARGO_PKG_VERSION")))
                // No system proxy (HTTP_PROXY and the like): a proxy would resolve the
                // name itself, around the guard.
                .no_proxy()
                .pool_idle_timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_default()
        };
        Self {
            client: client(follow),
            listed_client: client(reqwest::redirect::Policy::none()),
            policy,
            max_response_bytes: 5 * 1024 * 1024,
        }
    }

    /// Performs one attempt. Ok: the step output; Err: the failure (with the response as
    /// output when there was one).
    pub async fn perform(
        &self,
        req: &HttpRequest,
        timeout: Duration,
        success: &SuccessRule,
    ) -> Result<Value, (StepError, Option<Value>)> {
        let fail = |class, message: String| (StepError { class, message }, None);
        let builder = self
            .build(req, timeout)
            .map_err(|message| fail(FailureClass::Request, message))?;
        let resp = builder
            .send()
            .await
            .map_err(|e| fail(classify(&e), describe(&e)))?;
        let status = resp.status().as_u16();
        let output = self
            .read_response(resp)
            .await
            .map_err(|e| fail(FailureClass::Connection, e))?;
        if success.is_success(status) {
            return Ok(output);
        }
        let class = match status {
            429 => FailureClass::Status429,
            500..=599 => FailureClass::Status5xx,
            _ => FailureClass::Status4xx,
        };
        let error = StepError {
            class,
            message: format!("the server answered {status}"),
        };
        Err((error, Some(output)))
    }

    /// The request, with its URL rewritten and checked (an http or https URL whose
    /// address the policy allows), its headers, its idempotency key and its body; `Err`
    /// says why it cannot be sent.
    fn build(
        &self,
        req: &HttpRequest,
        timeout: Duration,
    ) -> Result<reqwest::RequestBuilder, String> {
        let target = self.policy.rewrite(&req.url);
        let url = reqwest::Url::parse(&target)
            .map_err(|e| format!("`{}` is not a valid URL: {e}", req.url))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("`{}` is not an http or https URL", req.url));
        }
        if let Some(msg) = literal_refused(&url, &self.policy) {
            return Err(msg);
        }
        // The host the workflow asked for (a rewrite is the operator's, not the author's).
        let asked = reqwest::Url::parse(&req.url).ok();
        let host = asked
            .as_ref()
            .and_then(|u| u.host_str())
            .unwrap_or_default();
        if !tripline_core::engine::host_allowed(&req.allowed_hosts, host) {
            return Err(format!(
                "refused: `{host}` is not in this workflow's allowed_hosts ({})",
                req.allowed_hosts.join(", ")
            ));
        }
        let method = reqwest::Method::from_bytes(req.method.as_str().as_bytes())
            .unwrap_or(reqwest::Method::GET);
        let client = if req.allowed_hosts.is_empty() {
            &self.client
        } else {
            &self.listed_client
        };
        let mut builder = client.request(method, url).timeout(timeout);
        if !req.query.is_empty() {
            builder = builder.query(&req.query.iter().collect::<Vec<_>>());
        }
        for (k, v) in &req.headers {
            builder = builder.header(k, v);
        }
        // The step's own key, if it sets one, replaces the run's (not sent beside it).
        if !req
            .headers
            .keys()
            .any(|k| k.eq_ignore_ascii_case("idempotency-key"))
        {
            builder = builder.header("idempotency-key", &req.idempotency_key);
        }
        let (content_type, body) = match &req.body {
            None => return Ok(builder),
            Some(Value::String(s)) => ("text/plain; charset=utf-8", s.clone().into_bytes()),
            Some(v) => (
                "application/json",
                serde_json::to_vec(v).unwrap_or_default(),
            ),
        };
        if !req.headers.contains_key("content-type") {
            builder = builder.header("content-type", content_type);
        }
        Ok(builder.body(body))
    }

    /// The step's output: `{status, headers, body}`, the body JSON when the response says
    /// so (and parses), else text; read up to the response limit.
    async fn read_response(&self, resp: reqwest::Response) -> Result<Value, String> {
        let status = resp.status().as_u16();
        let mut headers = Map::new();
        for (k, v) in resp.headers() {
            headers.insert(
                k.as_str().to_string(),
                Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
            );
        }
        let is_json = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.contains("json"));
        let bytes = read_limited(resp, self.max_response_bytes).await?;
        if bytes.len() > STORED_BODY_LIMIT {
            // Kept as text, cut: a later step that reads its fields fails, saying why,
            // rather than the run record growing with whatever the downstream sent.
            let text = String::from_utf8_lossy(&bytes);
            return Ok(json!({
                "status": status,
                "headers": headers,
                "body": cut(&text, STORED_BODY_LIMIT),
                "truncated": {"kept_bytes": STORED_BODY_LIMIT, "total_bytes": bytes.len()},
            }));
        }
        let body = if bytes.is_empty() {
            Value::Null
        } else if is_json {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        } else {
            Value::String(String::from_utf8_lossy(&bytes).into_owned())
        };
        Ok(json!({ "status": status, "headers": headers, "body": body }))
    }
}

async fn read_limited(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| describe(&e))? {
        if out.len() + chunk.len() > limit {
            return Err(format!("the response body is larger than {limit} bytes"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

fn classify(e: &reqwest::Error) -> FailureClass {
    if e.is_timeout() {
        FailureClass::Timeout
    } else if e.is_builder() || e.is_redirect() || describe(e).contains("refused: ") {
        FailureClass::Request
    } else {
        FailureClass::Connection
    }
}

/// The error with its causes, which is where reqwest keeps the useful part.
fn describe(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    if e.is_timeout() {
        msg = "the request timed out".into();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_on_a_character_boundary_with_a_marker() {
        assert_eq!(cut("short", 10), "short");
        assert_eq!(cut("ééé", 3), "é…[cut: 4 more bytes]");
    }

    #[test]
    fn rewrites_replace_the_first_matching_prefix() {
        let p = OutboundPolicy {
            allow_private_networks: false,
            rewrites: vec![(
                "https://api.example.com".into(),
                "http://127.0.0.1:9".into(),
            )],
        };
        assert_eq!(
            p.rewrite("https://api.example.com/v1/x?y=1"),
            "http://127.0.0.1:9/v1/x?y=1"
        );
        assert_eq!(
            p.rewrite("https://other.example.com/"),
            "https://other.example.com/"
        );
    }

    #[test]
    fn private_and_metadata_addresses_are_private() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "0.0.0.0",
        ] {
            assert!(is_private(a.parse().unwrap()), "{a}");
        }
        for a in [
            "198.18.0.1",
            "198.19.255.255",
            "240.0.0.1",
            "255.255.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "100.100.100.200",
            "fd00:ec2::254",
            "fec0::1",
            "::127.0.0.1",
            "::8.8.8.8",
            "64:ff9b::7f00:1",
            "64:ff9b:1::1",
            "2002:7f00:1::1",
            "2001::1",
            "2001:db8::1",
            "2001:10::1",
            "2001:2::1",
            "100::1",
            "ff02::1",
        ] {
            assert!(is_private(a.parse().unwrap()), "{a}");
        }
        for a in [
            "93.184.216.34",
            "2606:4700::1111",
            "100.128.0.1",
            "8.8.8.8",
            "198.20.0.1",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_private(a.parse().unwrap()), "{a}");
        }
    }
}
