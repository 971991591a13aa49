//! The one rule set: who may use which tool, prompt and resource of which upstream, how fresh
//! their sign-in must be, and how long a layer-2 connection may serve it (`[[policies]]`,
//! `[access]`). Every upstream-bound request is decided here exactly once
//! (`gateway::call`), and list results are filtered by the same decision.
//!
//! Which entry decides a target (a tool, prompt or resource, by the name clients see):
//! - a tool: the first entry whose `tools` globs match it, within its `upstreams`;
//! - a prompt: the first entry whose `prompts` globs match it; else the first whose `tools`
//!   globs match it (prompts and tools share the `{upstream}_{name}` namespace);
//! - a resource URI or template (reads, subscriptions, completions): the first entry whose
//!   `resources` globs match it; else the first entry whose tool globs cover the whole upstream
//!   (`*`, `crm_*`). So an upstream denied to a person is denied for every method, unless an
//!   entry written for its prompts or resources says otherwise;
//! - nothing matched: `[access] default`.
//!
//! In the deciding entry, denied people and groups are refused; when it lists allowed people or
//! groups, only they may; otherwise everyone signed in may. A service client (the client
//! credentials grant, no person) is allowed only by a deciding entry that names it in
//! `clients`: entries without it, and `[access] default`, are for people. An entry that names
//! service clients and no people or groups is for those clients only. Doorman's built-in tools
//! (`doorman_*`) are not upstream-bound and are always allowed. Anything that cannot be
//! determined (the person's groups unreadable) is denied.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use crate::{
    config::{AccessDefault, Binding, Config, PolicyConfig, glob_matches},
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
    /// A service client's principal: its client id, and how it is named (`client:{id}`).
    pub service: Option<(String, String)>,
}

impl PersonInfo {
    /// How audit records and pages name the person (`client:{id}` for a service client).
    pub fn label(&self) -> &str {
        if let Some((_, label)) = &self.service {
            return label;
        }
        self.email
            .as_deref()
            .or(self.username.as_deref())
            .unwrap_or(&self.id)
    }

    /// The client id, when this is a service client's principal rather than a person.
    pub fn service_client(&self) -> Option<&str> {
        self.service.as_ref().map(|(id, _)| id.as_str())
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

/// What kind of thing a request acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tool,
    Prompt,
    /// A resource URI or URI template.
    Resource,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Tool => "tool",
            Kind::Prompt => "prompt",
            Kind::Resource => "resource",
        }
    }
}

/// One thing a request acts on: its kind, its name as clients see it, and its upstream.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub kind: Kind,
    /// `{upstream}_{tool}`, `{upstream}_{prompt}` or `{upstream}+{uri}`.
    pub name: &'a str,
    pub upstream: &'a str,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// The deciding entry refuses this person.
    Policy,
    /// A service client, and the deciding entry (or the default) does not name it in `clients`.
    PeopleOnly,
    /// No entry matched and `[access] default = "deny"`.
    Default,
    /// What the decision needs could not be read (the person's groups): denied.
    Undetermined(String),
}

/// The decision about one target for one person: everything the rest of the request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// `Ok`: allowed.
    pub verdict: Result<(), Denial>,
    /// The deciding entry's name (`None`: the default allowed it; `default` when it denied).
    pub policy: Option<String>,
    /// RFC 9470: the sign-in must be at most this old.
    pub sign_in_max_age: Option<Duration>,
    /// Layer 2: what a connection used for this is bound to (`None`: the resource's).
    pub binding: Option<Binding>,
    /// Layer 2: how long after the person authorized at the resource (`None`: the resource's).
    pub max_age: Option<Duration>,
    pub log_arguments: bool,
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        self.verdict.is_ok()
    }

    /// Everything allowed, nothing required (local mode, and built-in tools).
    pub fn allow_all() -> Self {
        Self {
            verdict: Ok(()),
            policy: None,
            sign_in_max_age: None,
            binding: None,
            max_age: None,
            log_arguments: false,
        }
    }

    fn denied(denial: Denial, policy: Option<String>) -> Self {
        Self {
            verdict: Err(denial),
            policy,
            ..Self::allow_all()
        }
    }

    /// Whether a sign-in at `auth_time_s` is too old for this decision at `now_s` (RFC 9470).
    pub fn needs_step_up(&self, auth_time_s: i64, now_s: i64) -> Option<Duration> {
        let max = self.sign_in_max_age?;
        (now_s - auth_time_s > max.as_secs() as i64).then_some(max)
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

    /// The entry that decides `target` (see the module docs), if any.
    fn deciding_entry(&self, target: &Target<'_>) -> Option<usize> {
        let first = |globs: fn(&PolicyConfig) -> &[String]| {
            self.entries.iter().position(|p| {
                p.scoped_to(target.upstream)
                    && globs(p).iter().any(|g| glob_matches(g, target.name))
            })
        };
        match target.kind {
            Kind::Tool => first(|p| &p.tools),
            // Prompts share the `{upstream}_{name}` namespace with tools: tool globs match them
            // too (a covering glob such as `crm_*` among them), after the entries written for
            // prompts.
            Kind::Prompt => first(|p| &p.prompts).or_else(|| first(|p| &p.tools)),
            Kind::Resource => first(|p| &p.resources).or_else(|| {
                self.entries
                    .iter()
                    .position(|p| p.covers_upstream(target.upstream))
            }),
        }
    }

    /// The decision for `target`, for `person` (`Err`: the person's facts could not be read,
    /// which denies, saying why).
    pub fn decide(&self, target: &Target<'_>, person: Result<&PersonInfo, &str>) -> Decision {
        let person = match person {
            Ok(p) => p,
            Err(why) => {
                return Decision::denied(Denial::Undetermined(why.to_owned()), None);
            }
        };
        let Some(i) = self.deciding_entry(target) else {
            if person.service.is_some() {
                return Decision::denied(Denial::PeopleOnly, Some("default".into()));
            }
            return match self.default {
                AccessDefault::Allow => Decision::allow_all(),
                AccessDefault::Deny => Decision::denied(Denial::Default, Some("default".into())),
            };
        };
        let p = &self.entries[i];
        if let Some(client) = person.service_client() {
            if !p.clients.iter().any(|c| c == client) {
                return Decision::denied(Denial::PeopleOnly, Some(self.name_of(i)));
            }
            return self.allowed(i);
        }
        let denied = p.deny_people.iter().any(|w| person.is(w)) || person.in_any(&p.deny_groups);
        // An entry that names who may (people, groups or service clients) is for them only.
        let restricted =
            !p.allow_people.is_empty() || !p.allow_groups.is_empty() || !p.clients.is_empty();
        let allowed = p.allow_people.iter().any(|w| person.is(w)) || person.in_any(&p.allow_groups);
        if denied || (restricted && !allowed) {
            return Decision::denied(Denial::Policy, Some(self.name_of(i)));
        }
        self.allowed(i)
    }

    /// What entry `i` allows with.
    fn allowed(&self, i: usize) -> Decision {
        let p = &self.entries[i];
        Decision {
            verdict: Ok(()),
            policy: Some(self.name_of(i)),
            sign_in_max_age: p.sign_in_max_age.map(|d| d.0),
            binding: p.binding,
            max_age: p.max_age.map(|d| d.0),
            log_arguments: p.log_arguments,
        }
    }

    /// Drops what is cached about a person (their groups changed, or they were disabled).
    pub fn forget(&self, id: &str) {
        self.people.write().expect("people lock").remove(id);
    }

    /// A person's policy facts, from a 30-second cache in front of the store. An error (the
    /// store unreachable, the person unknown, groups unreadable) is never cached, and denies.
    pub async fn person(&self, id: &str) -> anyhow::Result<Arc<PersonInfo>> {
        if let Some((p, at)) = self.people.read().expect("people lock").get(id)
            && at.elapsed() < PERSON_TTL
        {
            return Ok(p.clone());
        }
        let Some(u) = self.store.user(id).await? else {
            anyhow::bail!("no person has the id {id}");
        };
        let info = Arc::new(PersonInfo {
            id: u.id.clone(),
            username: u.username.clone(),
            email: u.email.clone(),
            service: (u.issuer == crate::store::SERVICE_ISSUER)
                .then(|| (u.subject.clone(), format!("client:{}", u.subject))),
            groups: u.groups.0,
            is_admin: u.is_admin,
        });
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
            service: None,
        }
    }

    fn tool<'a>(name: &'a str, upstream: &'a str) -> Target<'a> {
        Target {
            kind: Kind::Tool,
            name,
            upstream,
        }
    }

    const UPSTREAMS: &str = "[[upstreams]]\nname = \"gh\"\nurl = \"http://127.0.0.1:1/mcp\"\n[[upstreams]]\nname = \"wiki\"\nurl = \"http://127.0.0.1:2/mcp\"\n[[upstreams]]\nname = \"crm\"\nurl = \"http://127.0.0.1:3/mcp\"\n";

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
binding = \"call\"
max_age = \"10m\"
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
        assert_eq!(
            p.decide(&tool("gh_delete_repo", "gh"), Ok(&admin)),
            Decision {
                verdict: Ok(()),
                policy: Some("no-interns".into()),
                sign_in_max_age: Some(Duration::from_secs(300)),
                binding: Some(Binding::Call),
                max_age: Some(Duration::from_secs(600)),
                log_arguments: true
            }
        );
        let cases = [
            (
                "gh_delete_repo",
                "gh",
                &intern_admin,
                Err(Denial::Policy),
                Some("no-interns"),
                "deny wins over allow",
            ),
            (
                "gh_delete_repo",
                "gh",
                &carol,
                Ok(()),
                Some("no-interns"),
                "allowed by email",
            ),
            (
                "gh_delete_repo",
                "gh",
                &bob,
                Err(Denial::Policy),
                Some("no-interns"),
                "not in the allow lists",
            ),
            (
                "gh_list_repos",
                "gh",
                &bob,
                Ok(()),
                None,
                "no policy: default allow",
            ),
            (
                "wiki_read",
                "wiki",
                &bob,
                Err(Denial::Policy),
                Some("policies[1]"),
                "denied by name",
            ),
            (
                "wiki_read",
                "wiki",
                &admin,
                Ok(()),
                Some("policies[1]"),
                "not denied",
            ),
            (
                "gh_read",
                "gh",
                &bob,
                Ok(()),
                None,
                "the wiki entry is scoped to wiki",
            ),
        ];
        for (name, up, who, verdict, policy, why) in cases {
            let d = p.decide(&tool(name, up), Ok(who));
            assert_eq!((d.verdict, d.policy.as_deref()), (verdict, policy), "{why}");
        }
        // Prompts share the tools' namespace: tool globs decide them as before.
        let prompt = Target {
            kind: Kind::Prompt,
            name: "gh_delete_summary",
            upstream: "gh",
        };
        assert_eq!(p.decide(&prompt, Ok(&bob)).verdict, Err(Denial::Policy));
        assert!(p.decide(&prompt, Ok(&carol)).is_allowed());
    }

    #[tokio::test]
    async fn default_deny_refuses_what_no_policy_allows() {
        let (p, _d) = policies(&format!(
            "{UPSTREAMS}[access]\ndefault = \"deny\"\n[[policies]]\ntools = [\"gh_*\"]\n"
        ))
        .await;
        let bob = person("bob", &[]);
        assert!(p.decide(&tool("gh_list", "gh"), Ok(&bob)).is_allowed());
        let d = p.decide(&tool("wiki_read", "wiki"), Ok(&bob));
        assert_eq!(
            (d.verdict, d.policy.as_deref()),
            (Err(Denial::Default), Some("default"))
        );
        // `gh_*` covers gh entirely: its prompts and resources follow it; wiki's are denied.
        for kind in [Kind::Prompt, Kind::Resource] {
            let gh = Target {
                kind,
                name: "gh_x",
                upstream: "gh",
            };
            let wiki = Target {
                kind,
                name: "wiki+x://1",
                upstream: "wiki",
            };
            assert!(p.decide(&gh, Ok(&bob)).is_allowed(), "{kind:?}");
            assert_eq!(
                p.decide(&wiki, Ok(&bob)).verdict,
                Err(Denial::Default),
                "{kind:?}"
            );
        }
    }

    /// An upstream denied to a person is denied for every method, unless an entry written for
    /// prompts or resources says otherwise.
    #[tokio::test]
    async fn an_upstream_wide_entry_decides_prompts_resources_and_completions_too() {
        let (p, _d) = policies(&format!(
            "{UPSTREAMS}
[[policies]]
name = \"crm-sales\"
tools = [\"*\"]
upstreams = [\"crm\"]
allow_groups = [\"sales\"]
sign_in_max_age = \"1m\"
[[policies]]
name = \"crm-public-docs\"
resources = [\"crm+docs://public/*\"]
[[policies]]
name = \"crm-fresh-prompts\"
prompts = [\"crm_summary\"]
allow_groups = [\"sales\", \"support\"]
sign_in_max_age = \"2m\"
[[policies]]
name = \"gh-deletes\"
tools = [\"gh_delete_*\"]
deny_groups = [\"interns\"]
"
        ))
        .await;
        let pat = person("pat", &["sales"]);
        let sam = person("sam", &["support"]);
        let ivan = person("ivan", &["interns"]);
        let t = |kind, name| Target {
            kind,
            name,
            upstream: "crm",
        };
        let cases = [
            (
                t(Kind::Tool, "crm_add_lead"),
                &sam,
                Err(Denial::Policy),
                "crm-sales",
            ),
            (
                t(Kind::Prompt, "crm_pipeline"),
                &sam,
                Err(Denial::Policy),
                "crm-sales",
            ),
            (
                t(Kind::Resource, "crm+db://leads"),
                &sam,
                Err(Denial::Policy),
                "crm-sales",
            ),
            (
                t(Kind::Resource, "crm+db://leads/{id}"),
                &sam,
                Err(Denial::Policy),
                "crm-sales",
            ),
            (t(Kind::Prompt, "crm_pipeline"), &pat, Ok(()), "crm-sales"),
            (
                t(Kind::Resource, "crm+docs://public/faq"),
                &sam,
                Ok(()),
                "crm-public-docs",
            ),
            (
                t(Kind::Prompt, "crm_summary"),
                &sam,
                Ok(()),
                "crm-fresh-prompts",
            ),
            (
                t(Kind::Prompt, "crm_summary"),
                &ivan,
                Err(Denial::Policy),
                "crm-fresh-prompts",
            ),
        ];
        for (target, who, verdict, policy) in cases {
            let d = p.decide(&target, Ok(who));
            assert_eq!(
                (d.verdict, d.policy.as_deref()),
                (verdict, Some(policy)),
                "{target:?} for {}",
                who.label()
            );
        }
        // Step-up follows the deciding entry, for prompts as for tools.
        let d = p.decide(&t(Kind::Prompt, "crm_summary"), Ok(&pat));
        assert_eq!(d.needs_step_up(1_000, 1_000 + 120), None);
        assert_eq!(
            d.needs_step_up(1_000, 1_000 + 121),
            Some(Duration::from_secs(120))
        );
        let d = p.decide(&t(Kind::Resource, "crm+db://leads"), Ok(&pat));
        assert_eq!(d.needs_step_up(0, 61), Some(Duration::from_secs(60)));
        // A partial tool entry (gh_delete_*) does not cover gh's prompts or resources.
        let gh = Target {
            kind: Kind::Prompt,
            name: "gh_review",
            upstream: "gh",
        };
        assert_eq!(p.decide(&gh, Ok(&ivan)), Decision::allow_all());
    }

    #[tokio::test]
    async fn what_cannot_be_determined_is_denied() {
        let (p, _d) = policies(UPSTREAMS).await;
        for kind in [Kind::Tool, Kind::Prompt, Kind::Resource] {
            let target = Target {
                kind,
                name: "gh_x",
                upstream: "gh",
            };
            let d = p.decide(&target, Err("the store is unreachable"));
            assert_eq!(
                d.verdict,
                Err(Denial::Undetermined("the store is unreachable".into()))
            );
        }
        // An unknown person and unreadable groups are errors, never "no groups".
        assert!(p.person("nobody").await.is_err());
        crate::store::testing::insert_person(&p.store, "u1").await;
        crate::store::on_pool!(p.store, pool => sqlx::query("UPDATE users SET groups = 'not json'")
            .execute(pool)
            .await
            .map(|_| ()))
        .unwrap();
        let e = format!("{:#}", p.person("u1").await.unwrap_err());
        assert!(e.contains("groups are not a JSON list"), "{e}");
    }

    #[test]
    fn an_entry_covers_an_upstream_only_with_a_trailing_star_glob_over_its_namespace() {
        let entry = |tools: &[&str], upstreams: &[&str]| {
            let mut toml = format!(
                "[[upstreams]]\nname = \"crm\"\nurl = \"http://127.0.0.1:3/mcp\"\n[[upstreams]]\nname = \"gh\"\nurl = \"http://127.0.0.1:4/mcp\"\n[[policies]]\ntools = {tools:?}\n"
            );
            toml.push_str(&format!("upstreams = {upstreams:?}\n"));
            Config::from_toml(&toml).unwrap().policies.remove(0)
        };
        assert!(entry(&["*"], &[]).covers_upstream("crm"));
        assert!(entry(&["crm_*"], &[]).covers_upstream("crm"));
        assert!(entry(&["c*_*"], &[]).covers_upstream("crm"));
        assert!(entry(&["*"], &["crm"]).covers_upstream("crm"));
        assert!(!entry(&["*"], &["gh"]).covers_upstream("crm"));
        assert!(!entry(&["crm_delete_*"], &[]).covers_upstream("crm"));
        assert!(!entry(&["crm_?"], &[]).covers_upstream("crm"));
        assert!(!entry(&["gh_*"], &[]).covers_upstream("crm"));
    }

    fn service(client: &str) -> PersonInfo {
        PersonInfo {
            id: format!("principal-{client}"),
            service: Some((client.into(), format!("client:{client}"))),
            ..PersonInfo::default()
        }
    }

    #[tokio::test]
    async fn service_clients_are_allowed_only_where_an_entry_names_them() {
        let (p, _d) = policies(&format!(
            "{UPSTREAMS}
[[sign_in.clients]]
client_id = \"ci\"
grant_types = [\"client_credentials\"]
client_secret_env = \"CI\"
[[sign_in.clients]]
client_id = \"other\"
grant_types = [\"client_credentials\"]
client_secret_env = \"OTHER\"
[[policies]]
name = \"ci-only\"
tools = [\"gh_build\"]
clients = [\"ci\"]
[[policies]]
name = \"ci-and-admins\"
tools = [\"gh_deploy\"]
clients = [\"ci\"]
allow_groups = [\"admins\"]
[[policies]]
name = \"everyone\"
tools = [\"gh_read\"]
"
        ))
        .await;
        let ci = service("ci");
        let other = service("other");
        let admin = person("alice", &["admins"]);
        let cases = [
            ("gh_build", &ci, Ok(()), "named in clients"),
            (
                "gh_build",
                &other,
                Err(Denial::PeopleOnly),
                "another client is not",
            ),
            (
                "gh_build",
                &admin,
                Err(Denial::Policy),
                "clients alone: an allow list people are not on",
            ),
            ("gh_deploy", &ci, Ok(()), "clients beside groups"),
            ("gh_deploy", &admin, Ok(()), "the group beside clients"),
            (
                "gh_read",
                &ci,
                Err(Denial::PeopleOnly),
                "an entry for every person is not for clients",
            ),
            ("gh_read", &admin, Ok(()), "people as before"),
            (
                "gh_other",
                &ci,
                Err(Denial::PeopleOnly),
                "the default is for people",
            ),
            ("gh_other", &admin, Ok(()), "default allow for people"),
        ];
        for (name, who, verdict, why) in cases {
            assert_eq!(
                p.decide(&tool(name, "gh"), Ok(who)).verdict,
                verdict,
                "{why}"
            );
        }
        // A principal's name in people lists does not make it a person.
        assert_eq!(ci.label(), "client:ci");
        assert_eq!(admin.service_client(), None);
    }
}
