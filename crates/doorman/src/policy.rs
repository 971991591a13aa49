//! Who may call which tool, and how fresh their sign-in must be (`[[policies]]`, `[access]`).
//!
//! The first `[[policies]]` entry whose tool globs (and upstreams, if given) match a tool
//! decides for it: denied people and groups are refused; when the entry lists allowed people
//! or groups, only they may; otherwise everyone signed in may. Tools no entry matches follow
//! `[access] default`. Doorman's built-in tools (`doorman_*`) are always allowed.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use crate::{
    config::{AccessDefault, Config, PolicyConfig},
    store::Store,
};

/// What policies need to know about a person (from the store, cached briefly).
#[derive(Debug, Clone, Default)]
pub struct PersonInfo {
    pub id: String,
    pub username: Option<String>,
    pub email: Option<String>,
    pub groups: Vec<String>,
    pub is_admin: bool,
}

impl PersonInfo {
    /// How audit records and pages name the person.
    pub fn label(&self) -> &str {
        self.email
            .as_deref()
            .or(self.username.as_deref())
            .unwrap_or(&self.id)
    }

    fn is(&self, who: &str) -> bool {
        who == self.id
            || self.username.as_deref() == Some(who)
            || self
                .email
                .as_deref()
                .is_some_and(|e| e.eq_ignore_ascii_case(who))
    }

    fn in_any(&self, groups: &[String]) -> bool {
        groups.iter().any(|g| self.groups.contains(g))
    }
}

/// A decision about one tool for one person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allowed {
        /// The deciding entry's name (`None`: the default).
        policy: Option<String>,
        /// RFC 9470: the sign-in must be at most this old.
        sign_in_max_age: Option<Duration>,
        log_arguments: bool,
    },
    Denied {
        /// The deciding entry's name, or `default` (`[access] default = "deny"`).
        policy: String,
    },
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Self::Allowed { .. })
    }
}

/// The policies, and a short-lived cache of people's groups.
pub struct Policies {
    entries: Vec<PolicyConfig>,
    default: AccessDefault,
    store: Store,
    people: RwLock<HashMap<String, (Arc<PersonInfo>, std::time::Instant)>>,
}

/// How long a person's groups are cached (a group change at the provider reaches Doorman at
/// the next sign-in or re-check; this only bounds the store reads).
const PERSON_TTL: Duration = Duration::from_secs(30);

impl Policies {
    pub fn new(config: &Config, store: Store) -> Self {
        Self {
            entries: config.policies.clone(),
            default: config.access.default,
            store,
            people: RwLock::default(),
        }
    }

    fn name_of(&self, i: usize) -> String {
        self.entries[i]
            .name
            .clone()
            .unwrap_or_else(|| format!("policies[{i}]"))
    }

    /// The decision for `tool` (as clients see it) of `upstream`, for `person`.
    pub fn decide(&self, tool: &str, upstream: &str, person: &PersonInfo) -> Decision {
        let Some(i) = self.entries.iter().position(|p| p.applies(tool, upstream)) else {
            return match self.default {
                AccessDefault::Allow => Decision::Allowed {
                    policy: None,
                    sign_in_max_age: None,
                    log_arguments: false,
                },
                AccessDefault::Deny => Decision::Denied {
                    policy: "default".into(),
                },
            };
        };
        let p = &self.entries[i];
        let denied = p.deny_people.iter().any(|w| person.is(w)) || person.in_any(&p.deny_groups);
        let restricted = !p.allow_people.is_empty() || !p.allow_groups.is_empty();
        let allowed = p.allow_people.iter().any(|w| person.is(w)) || person.in_any(&p.allow_groups);
        if denied || (restricted && !allowed) {
            return Decision::Denied {
                policy: self.name_of(i),
            };
        }
        Decision::Allowed {
            policy: Some(self.name_of(i)),
            sign_in_max_age: p.sign_in_max_age.map(|d| d.0),
            log_arguments: p.log_arguments,
        }
    }

    /// A person's policy facts, from a 30-second cache in front of the store.
    pub async fn person(&self, id: &str) -> anyhow::Result<Arc<PersonInfo>> {
        if let Some((p, at)) = self.people.read().expect("people lock").get(id)
            && at.elapsed() < PERSON_TTL
        {
            return Ok(p.clone());
        }
        let info = match self.store.user(id).await? {
            Some(u) => PersonInfo {
                id: u.id.clone(),
                username: u.username.clone(),
                email: u.email.clone(),
                groups: serde_json::from_str(&u.groups).unwrap_or_default(),
                is_admin: u.is_admin,
            },
            None => PersonInfo {
                id: id.to_owned(),
                ..PersonInfo::default()
            },
        };
        let info = Arc::new(info);
        self.people
            .write()
            .expect("people lock")
            .insert(id.to_owned(), (info.clone(), std::time::Instant::now()));
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn policies(toml: &str) -> (Policies, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite_in(dir.path()).await.unwrap();
        let config = Config::from_toml(toml).unwrap();
        config.validate().unwrap();
        (Policies::new(&config, store), dir)
    }

    fn person(name: &str, groups: &[&str]) -> PersonInfo {
        PersonInfo {
            id: format!("id-{name}"),
            username: Some(name.into()),
            email: Some(format!("{name}@corp.example")),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            is_admin: false,
        }
    }

    const UPSTREAMS: &str = "[[upstreams]]\nname = \"gh\"\nurl = \"http://127.0.0.1:1/mcp\"\n[[upstreams]]\nname = \"wiki\"\nurl = \"http://127.0.0.1:2/mcp\"\n";

    #[tokio::test]
    async fn the_first_matching_policy_decides_by_people_and_groups() {
        let (p, _d) = policies(&format!(
            "{UPSTREAMS}
[[policies]]
name = \"no-interns\"
tools = [\"gh_delete_*\"]
deny_groups = [\"interns\"]
allow_groups = [\"admins\"]
allow_people = [\"carol@corp.example\"]
sign_in_max_age = \"5m\"
log_arguments = true
[[policies]]
tools = [\"*\"]
upstreams = [\"wiki\"]
deny_people = [\"bob\"]
"
        ))
        .await;
        let admin = person("alice", &["admins"]);
        let intern_admin = person("dave", &["admins", "interns"]);
        let carol = person("carol", &[]);
        let bob = person("bob", &[]);
        let allowed = |d: Decision| d.is_allowed();
        assert_eq!(
            p.decide("gh_delete_repo", "gh", &admin),
            Decision::Allowed {
                policy: Some("no-interns".into()),
                sign_in_max_age: Some(Duration::from_secs(300)),
                log_arguments: true
            }
        );
        assert_eq!(
            p.decide("gh_delete_repo", "gh", &intern_admin),
            Decision::Denied {
                policy: "no-interns".into()
            },
            "deny wins over allow"
        );
        assert!(
            allowed(p.decide("gh_delete_repo", "gh", &carol)),
            "by email"
        );
        assert!(
            !allowed(p.decide("gh_delete_repo", "gh", &bob)),
            "not in the allow lists"
        );
        assert!(
            allowed(p.decide("gh_list_repos", "gh", &bob)),
            "no policy: default allow"
        );
        assert_eq!(
            p.decide("wiki_read", "wiki", &bob),
            Decision::Denied {
                policy: "policies[1]".into()
            }
        );
        assert!(allowed(p.decide("wiki_read", "wiki", &admin)));
    }

    #[tokio::test]
    async fn default_deny_refuses_what_no_policy_allows() {
        let (p, _d) = policies(&format!(
            "{UPSTREAMS}[access]\ndefault = \"deny\"\n[[policies]]\ntools = [\"gh_*\"]\n"
        ))
        .await;
        let bob = person("bob", &[]);
        assert!(p.decide("gh_list", "gh", &bob).is_allowed());
        assert_eq!(
            p.decide("wiki_read", "wiki", &bob),
            Decision::Denied {
                policy: "default".into()
            }
        );
    }
}
