//! Who is calling: the one typed caller of a request, built once (`call.rs` step 1), and what
//! its audit record collects on the way.

use std::sync::Arc;

use serde_json::Value;

use crate::{
    policy::{PersonInfo, Policies},
    protocol::Version,
    sign_in::tokens::AccessClaims,
    vault::Holder,
};

/// How the client can be asked to connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptForm {
    /// `-32042` (2025-11-25 with `elicitation.url`).
    UrlElicitationError,
    /// `InputRequiredResult` (2026-07-28 with `elicitation.url`).
    InputRequired,
    /// A tool error with the link in its text.
    Text,
    /// The re-authorization cascade: HTTP `401`, and the client's next authorization at
    /// Doorman goes through the resource first (chosen per resource, never from capabilities).
    Reauthorize,
}

impl PromptForm {
    /// From the revision and the capabilities the client declared.
    pub fn of(version: Version, capabilities: &Value) -> Self {
        let url = capabilities
            .get("elicitation")
            .and_then(|e| e.get("url"))
            .is_some_and(Value::is_object);
        match (url, version.is_modern()) {
            (true, true) => Self::InputRequired,
            (true, false) if version.has_url_elicitation() => Self::UrlElicitationError,
            _ => Self::Text,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::UrlElicitationError => "url_elicitation_error",
            Self::InputRequired => "input_required",
            Self::Text => "text",
            Self::Reauthorize => "reauthorize",
        }
    }
}

/// The signed-in caller of one request, built once per request (accounts mode).
#[derive(Debug, Clone)]
pub struct Caller {
    /// The person's Doorman id.
    pub user_id: String,
    /// The client grant (the access token's `sid`).
    pub grant: String,
    /// The stateful MCP session (its id's hash), if any.
    pub session_hash: Option<String>,
    /// How this client can be asked to connect a resource.
    pub form: PromptForm,
    /// What policies need to know about the person; `Err` (why) when it could not be read,
    /// which denies every upstream-bound request.
    pub person: Result<Arc<PersonInfo>, String>,
    pub client_id: String,
    /// When the person signed in (seconds), for `sign_in_max_age`.
    pub auth_time: i64,
}

impl Caller {
    /// From the bearer token's claims and the conversation.
    pub async fn resolve(
        policies: Option<&Policies>,
        claims: &AccessClaims,
        session_hash: Option<String>,
        form: PromptForm,
    ) -> Self {
        let person = match policies {
            Some(p) => p.person(&claims.sub).await.map_err(|e| {
                tracing::warn!(user = %claims.sub, error = %e, "cannot read a person's groups: their requests are denied");
                "the person's groups could not be read".to_owned()
            }),
            None => Ok(Arc::new(PersonInfo {
                id: claims.sub.clone(),
                ..PersonInfo::default()
            })),
        };
        Self {
            user_id: claims.sub.clone(),
            grant: claims.sid.clone(),
            session_hash,
            form,
            person,
            client_id: claims.client_id.clone(),
            auth_time: claims.auth_time,
        }
    }

    /// Whose connections the vault serves this caller from.
    pub fn holder(&self) -> Holder<'_> {
        Holder {
            user_id: &self.user_id,
            grant: &self.grant,
            session_hash: self.session_hash.as_deref(),
        }
    }

    /// The client id, when the caller is a service client (no person).
    pub fn service_client(&self) -> Option<&str> {
        self.person.as_ref().ok().and_then(|p| p.service_client())
    }

    /// How audit records name the person.
    pub fn label(&self) -> &str {
        match &self.person {
            Ok(p) => p.label(),
            Err(_) => &self.user_id,
        }
    }

    /// How the audit names the conversation: a stateful session (its id's hash, shortened)
    /// or the client grant.
    pub fn conversation_label(&self) -> String {
        match &self.session_hash {
            Some(h) => format!("session:{}", &h[..h.len().min(12)]),
            None => format!("grant:{}", self.grant),
        }
    }
}

/// What the audit record of one request says besides the request itself.
#[derive(Debug, Default)]
pub struct CallRecord {
    pub upstream: Option<String>,
    /// The tool or prompt name, or the resource URI, as the client sent it.
    pub name: Option<String>,
    pub resource: Option<String>,
    pub account: Option<String>,
    /// `None`: allowed. Else `denied`, `connection_required`, `step_up_required`.
    pub decision: Option<&'static str>,
    pub policy: Option<String>,
    /// Redacted JSON, where a policy says `log_arguments`.
    pub arguments: Option<String>,
    pub detail: Option<String>,
}
