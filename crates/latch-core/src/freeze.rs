//! Kill-switch freezes: what a freeze covers ([`FreezeScope`]), the stored [`Freeze`], and the
//! one scope rule ([`FreezeScope::covers`]) that both the kill switch (which live credentials
//! it revokes) and every grant, claim and renewal (refused while a freeze covers it) apply.

use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// The kind of a freeze's scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ScopeKind {
    /// One workload principal (`iss#sub`, as `GET /v1/admin/tasks` shows it).
    Workload,
    /// One repository (`owner/name`; compared as the platforms do, ignoring ASCII case).
    Repository,
    /// One configured resource id.
    Resource,
    /// Everything.
    All,
    /// Every task acting for one human (`on_behalf_of`, ASCII case ignored): engaged by an
    /// operator, or by a Shared Signals event from the human's identity provider (CAEP
    /// `session-revoked`, `credential-change`, RISC `account-disabled`; see `crate::ssf`).
    Human,
}

impl ScopeKind {
    /// Stable string form.
    pub fn as_str(self) -> &'static str {
        match self {
            ScopeKind::Workload => "workload",
            ScopeKind::Repository => "repository",
            ScopeKind::Resource => "resource",
            ScopeKind::All => "all",
            ScopeKind::Human => "human",
        }
    }
}

/// What a freeze covers: a kind and, unless the kind is `all`, the value it matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FreezeScope {
    /// Which attribute the freeze matches.
    pub kind: ScopeKind,
    /// The workload id, repository, resource id or human id (absent for `all`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// What a grant is about, as the scope rule sees it.
#[derive(Debug, Clone, Copy)]
pub struct GrantSubject<'a> {
    /// The workload principal (the task's owner).
    pub principal_id: &'a str,
    /// The task's repository, if any.
    pub repository: Option<&'a str>,
    /// The resource id.
    pub resource_id: &'a str,
    /// The human the task acts for, if any (`Task::on_behalf_of`).
    pub on_behalf_of: Option<&'a str>,
}

impl FreezeScope {
    /// Whether a grant (or a live credential) about `g` falls in this scope: `all` covers
    /// everything; `workload` the principal with exactly this id; `repository` a task of this
    /// repository (ASCII case ignored, as GitHub and GitLab compare names); `resource` the
    /// resource with exactly this id; `human` a task acting for this human (ASCII case ignored,
    /// as human ids are compared everywhere). A scope without its value covers nothing (such a
    /// scope is refused on input; a stored one is never read as `all`).
    pub fn covers(&self, g: &GrantSubject<'_>) -> bool {
        let v = self.value.as_deref();
        match self.kind {
            ScopeKind::All => true,
            ScopeKind::Workload => v == Some(g.principal_id),
            ScopeKind::Repository => match (v, g.repository) {
                (Some(v), Some(r)) => v.eq_ignore_ascii_case(r),
                _ => false,
            },
            ScopeKind::Resource => v == Some(g.resource_id),
            ScopeKind::Human => match (v, g.on_behalf_of) {
                (Some(v), Some(h)) => v.eq_ignore_ascii_case(h),
                _ => false,
            },
        }
    }

    /// `kind` or `kind:value`, for messages.
    pub fn label(&self) -> String {
        match &self.value {
            Some(v) if self.kind != ScopeKind::All => format!("{}:{v}", self.kind.as_str()),
            _ => self.kind.as_str().to_owned(),
        }
    }
}

/// State of a freeze.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum FreezeState {
    /// Grants, claims and renewals in scope are refused.
    Active,
    /// Lifted by an operator; policy decides again.
    Lifted,
}

impl FreezeState {
    /// Stable string form.
    pub fn as_str(self) -> &'static str {
        match self {
            FreezeState::Active => "active",
            FreezeState::Lifted => "lifted",
        }
    }
}

/// A kill switch as stored: who engaged it, why, over what, and whether it still holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Freeze {
    /// `frz_<uuid>`.
    pub id: String,
    /// What it covers.
    pub scope: FreezeScope,
    /// `active` or `lifted`.
    pub state: FreezeState,
    /// The operator (human id) who engaged it.
    pub engaged_by: String,
    /// Why (the operator's words).
    pub reason: String,
    /// When (Unix seconds).
    pub created_at_unix_secs: i64,
    /// Who lifted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifted_by: Option<String>,
    /// Why it was lifted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lift_reason: Option<String>,
    /// When it was lifted (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifted_at_unix_secs: Option<i64>,
    /// Optimistic-concurrency version.
    pub version: i64,
}

impl Freeze {
    /// Who froze the scope, for messages: `an operator`, or `the identity provider `x` (a
    /// shared signal)` for a freeze a Security Event Token engaged (`ssf:<transmitter>`).
    pub fn engaged_by_label(&self) -> String {
        match self.engaged_by.strip_prefix("ssf:") {
            Some(t) => format!("the identity provider `{t}` (a shared signal)"),
            None => "an operator".to_owned(),
        }
    }
}

/// The first active freeze in `freezes` that covers `g`, if any.
pub fn covering<'f>(freezes: &'f [Freeze], g: &GrantSubject<'_>) -> Option<&'f Freeze> {
    freezes
        .iter()
        .find(|f| f.state == FreezeState::Active && f.scope.covers(g))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn scope(kind: ScopeKind, value: Option<&str>) -> FreezeScope {
        FreezeScope {
            kind,
            value: value.map(str::to_owned),
        }
    }

    fn freeze(s: FreezeScope, state: FreezeState) -> Freeze {
        Freeze {
            id: "frz_1".into(),
            scope: s,
            state,
            engaged_by: "op".into(),
            reason: "r".into(),
            created_at_unix_secs: 0,
            lifted_by: None,
            lift_reason: None,
            lifted_at_unix_secs: None,
            version: 1,
        }
    }

    const NAMES: &[&str] = &["a", "b", "Acme/API", "acme/api", "x#y"];

    fn name() -> impl Strategy<Value = String> {
        prop::sample::select(NAMES).prop_map(str::to_owned)
    }

    fn kind() -> impl Strategy<Value = ScopeKind> {
        prop::sample::select(vec![
            ScopeKind::Workload,
            ScopeKind::Repository,
            ScopeKind::Resource,
            ScopeKind::All,
            ScopeKind::Human,
        ])
    }

    proptest! {
        /// A freeze on S covers exactly the grants whose workload, repository, resource or
        /// human is S's value (repositories and humans ignoring ASCII case), `all` covers
        /// everything, and a lifted freeze covers nothing (policy decides again).
        #[test]
        fn a_freeze_covers_exactly_its_scope(
            k in kind(), v in name(), p in name(), repo in prop::option::of(name()), res in name(),
            human in prop::option::of(name()), lifted in any::<bool>(),
        ) {
            let s = scope(k, (k != ScopeKind::All).then_some(v.as_str()));
            let g = GrantSubject {
                principal_id: &p, repository: repo.as_deref(), resource_id: &res,
                on_behalf_of: human.as_deref(),
            };
            let same = |x: &str| {
                x.bytes().map(|b| b.to_ascii_lowercase()).eq(v.bytes().map(|b| b.to_ascii_lowercase()))
            };
            let expected = match k {
                ScopeKind::All => true,
                ScopeKind::Workload => p == v,
                ScopeKind::Repository => repo.as_deref().is_some_and(same),
                ScopeKind::Resource => res == v,
                ScopeKind::Human => human.as_deref().is_some_and(same),
            };
            prop_assert_eq!(s.covers(&g), expected);
            let state = if lifted { FreezeState::Lifted } else { FreezeState::Active };
            let fs = [freeze(s, state)];
            prop_assert_eq!(covering(&fs, &g).is_some(), expected && !lifted);
        }
    }

    #[test]
    fn a_scope_without_its_value_covers_nothing() {
        let g = GrantSubject {
            principal_id: "a",
            repository: Some("a"),
            resource_id: "a",
            on_behalf_of: Some("a"),
        };
        for k in [
            ScopeKind::Workload,
            ScopeKind::Repository,
            ScopeKind::Resource,
            ScopeKind::Human,
        ] {
            assert!(!scope(k, None).covers(&g));
        }
        assert!(scope(ScopeKind::All, None).covers(&g));
    }
}
