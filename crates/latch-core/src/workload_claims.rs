//! The claims of a workload principal ([`WorkloadClaims`]), re-exported from
//! [`crate::model`].

use serde::{Deserialize, Serialize};
#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// Claims mapped from a workload-identity token onto the workload principal. Which claim fills
/// which field is decided by the issuer's preset (GitHub Actions, GitLab CI, Kubernetes) or its
/// explicit claim mapping. All are optional: Cedar policies test them with `has`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct WorkloadClaims {
    /// `owner/name` of the source repository.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// Stable numeric repository id (survives renames), as a string.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository_id: Option<String>,
    /// Owner (organisation or group) of the repository.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository_owner: Option<String>,
    /// Stable id of the owner (GitHub `repository_owner_id`, GitLab `namespace_id`), as a
    /// string: survives renames, and a re-registered owner name gets a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_owner_id: Option<String>,
    /// Full git ref the run is for, e.g. `refs/heads/main` or `refs/pull/7/merge`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    /// Branch name when (and only when) `git_ref` is `refs/heads/<branch>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Whether the issuer says the ref is protected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ref_protected: Option<bool>,
    /// Deployment environment the job is bound to by the issuer (e.g. GitHub environment).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// What triggered the run (`push`, `pull_request`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_name: Option<String>,
    /// True when the run builds code from outside the repository (a pull request from a fork,
    /// or any pull-request merge ref): never the repository's trusted branch workflow.
    pub untrusted_source: bool,
    /// `github-hosted`, `self-hosted`, …
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runner_environment: Option<String>,
    /// The workflow or CI config that runs, pinned to a ref.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow_ref: Option<String>,
    /// Kubernetes namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Kubernetes service account name (informational; not stable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// Kubernetes service account UID (the stable identity).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_account_uid: Option<String>,
    /// SPIFFE workloads: the SPIFFE ID (`spiffe://example.org/ns/payments/sa/api`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<String>,
    /// SPIFFE workloads: the trust domain (`example.org`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_domain: Option<String>,
    /// SPIFFE workloads: the SPIFFE ID's path segments, in order (`["ns", "payments", "sa",
    /// "api"]`). Cedar sees them as the set `spiffe_path` and the set of leading paths
    /// `spiffe_path_prefixes` (`["/ns", "/ns/payments", …]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spiffe_path: Vec<String>,
    /// GitHub Actions: the workflow run's id (`run_id`), the same for every job and attempt of
    /// the run. With `run_attempt` it is the run binding (`gh-run:{run_id}/{run_attempt}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// GitHub Actions: the attempt of the run (`run_attempt`, `"1"` for the first; a re-run
    /// gets the next number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_attempt: Option<String>,
    /// GitLab CI: the pipeline's id (`pipeline_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_id: Option<String>,
    /// GitLab CI: the job's id (`job_id`, the run binding `gl-job:{job_id}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// Kubernetes: the UID of the pod the token is bound to (`kubernetes.io.pod.uid`, the run
    /// binding `pod:{uid}`); absent for tokens not bound to a pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// MCP clients acting for a human (preset `mcp_client`): the OAuth client id (a Client ID
    /// Metadata Document URL, or the `mcpc_…` id of a registered client).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// MCP clients identified by a Client ID Metadata Document: its URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_metadata_url: Option<String>,
    /// MCP clients: whether the client runs on the human's own machine (its redirect URI was a
    /// loopback address when the human consented).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub developer_machine: Option<bool>,
}

impl WorkloadClaims {
    /// A repository or owner name spelled as its platform compares it: GitHub and GitLab
    /// resolve owner and repository names case-insensitively, so `Acme/Payments` and
    /// `acme/payments` are one repository there and are written in lowercase here (principal
    /// claims, task repositories, Cedar attributes). Other presets keep the name as issued.
    /// Names are not ids: policies that must survive renames and re-registrations bind to
    /// `repository_id` / `repository_owner_id` instead.
    ///
    /// Only ASCII letters are folded: the platforms' names are ASCII, and Unicode lowercasing
    /// would make other names collide with them (`K`, U+212A KELVIN SIGN, lowercases to `k`).
    pub fn canonical_name(preset: &str, name: &str) -> String {
        match preset {
            "github_actions" | "gitlab_ci" => name.to_ascii_lowercase(),
            _ => name.to_owned(),
        }
    }
}
