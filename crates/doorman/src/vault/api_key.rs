//! Resources without OAuth (`kind = "api_key"`): a person connects by pasting a personal key on
//! Doorman's connect page. The key is tried with the resource's test request
//! (`[resources.api_key] check_url`, sent exactly as upstreams will receive it) before it is
//! stored; then it is sealed and served like an access token, with the same bindings, lifetimes,
//! accounts and disconnect. It has no refresh and no revocation: disconnecting deletes it here
//! (the person revokes it at the resource). It is never shown again, in pages or logs.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Uri};
use serde_json::Value;

use super::{Vault, oauth::ResourceClient};
use crate::{config::resolved::ApiKey, net::read_body};

/// The longest key accepted, and the longest account name kept from the check's answer.
const MAX_KEY: usize = 4096;
const MAX_ACCOUNT: usize = 200;
const CHECK_TIMEOUT: Duration = Duration::from_secs(15);
const MAX_ANSWER: usize = 256 * 1024;

/// What the resource said of a key.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyCheck {
    /// Good; the account it belongs to, when the check's answer names it.
    Accepted(Option<String>),
    /// Not a key the resource takes (what the person should know about why).
    Refused(String),
    /// The resource could not say (down, slow, an error of its own): nothing stored.
    Unavailable(String),
}

/// A pasted key, trimmed; `None` when it cannot be a key (empty, too long, control characters).
pub fn clean_key(raw: &str) -> Option<&str> {
    let key = raw.trim();
    (!key.is_empty() && key.len() <= MAX_KEY && !key.chars().any(char::is_control)).then_some(key)
}

/// A label the person gave for the account, kept when it is printable and short.
pub fn clean_label(raw: &str) -> Option<String> {
    let label: String = raw
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    (!label.is_empty()).then_some(label)
}

impl Vault {
    /// Tries `key` with the resource's test request.
    pub async fn check_api_key(&self, rc: &ResourceClient, key: &str) -> KeyCheck {
        let Some(spec) = &rc.resource.api_key else {
            return KeyCheck::Unavailable("this resource does not take API keys".into());
        };
        let Ok((name, value)) = super::header(rc, key) else {
            return KeyCheck::Refused("the key has characters no API key has".into());
        };
        let mut headers = HeaderMap::new();
        headers.insert(name, value);
        headers.insert(
            http::header::ACCEPT,
            http::HeaderValue::from_static("application/json"),
        );
        let Ok(uri) = spec.check_url.as_str().parse::<Uri>() else {
            return KeyCheck::Unavailable("the check URL is not valid".into());
        };
        let method = match spec.check_method {
            crate::config::CheckMethod::Get => Method::GET,
            crate::config::CheckMethod::Post => Method::POST,
        };
        let sent = tokio::time::timeout(
            CHECK_TIMEOUT,
            self.http.send(method, &uri, headers, Bytes::new()),
        );
        let response = match sent.await {
            Err(_) => {
                return KeyCheck::Unavailable(format!(
                    "it did not answer within {CHECK_TIMEOUT:?}"
                ));
            }
            Ok(Err(e)) => return KeyCheck::Unavailable(format!("it {e}")),
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        if matches!(status.as_u16(), 401 | 403) {
            return KeyCheck::Refused(format!("it refused the key (HTTP {})", status.as_u16()));
        }
        if !status.is_success() {
            return KeyCheck::Unavailable(format!("it answered HTTP {}", status.as_u16()));
        }
        let body = tokio::time::timeout(CHECK_TIMEOUT, read_body(response.into_body(), MAX_ANSWER))
            .await
            .ok()
            .and_then(Result::ok);
        KeyCheck::Accepted(account_in(spec, body.as_deref()))
    }
}

/// The account the check's JSON answer names at `account_pointer`, if any.
fn account_in(spec: &ApiKey, body: Option<&[u8]>) -> Option<String> {
    let pointer = spec.account_pointer.as_deref()?;
    let json: Value = serde_json::from_slice(body?).ok()?;
    let name = match json.pointer(pointer)? {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let name: String = name
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_ACCOUNT)
        .collect();
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(pointer: Option<&str>) -> ApiKey {
        ApiKey {
            check_url: "https://tracker.example/me".parse().unwrap(),
            check_method: Default::default(),
            account_pointer: pointer.map(String::from),
            help: None,
        }
    }

    #[test]
    fn keys_and_labels_are_trimmed_and_refused_when_they_cannot_be_one() {
        assert_eq!(clean_key("  tk_123 \n"), Some("tk_123"));
        assert_eq!(clean_key("   "), None);
        assert_eq!(clean_key("a\u{7}b"), None);
        assert_eq!(clean_key(&"k".repeat(MAX_KEY + 1)), None);
        assert_eq!(clean_label(" work\u{0}  "), Some("work".into()));
        assert_eq!(clean_label(""), None);
        assert_eq!(clean_label(&"l".repeat(100)).unwrap().len(), 64);
    }

    #[test]
    fn the_account_comes_from_the_pointer_in_a_json_answer_only() {
        let body = br#"{"user": {"login": "ada", "id": 7}, "list": []}"#;
        assert_eq!(
            account_in(&spec(Some("/user/login")), Some(body)),
            Some("ada".into())
        );
        assert_eq!(
            account_in(&spec(Some("/user/id")), Some(body)),
            Some("7".into())
        );
        assert_eq!(account_in(&spec(Some("/list")), Some(body)), None);
        assert_eq!(account_in(&spec(Some("/missing")), Some(body)), None);
        assert_eq!(account_in(&spec(None), Some(body)), None);
        assert_eq!(
            account_in(&spec(Some("/user/login")), Some(b"not json")),
            None
        );
    }
}
