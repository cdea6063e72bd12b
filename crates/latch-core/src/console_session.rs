//! [`ConsoleSession`]: a signed-in human's approval-console session, as stored (re-exported
//! from [`crate::model`]).

use serde::{Deserialize, Serialize};

use crate::model::Human;

/// A signed-in human's approval-console session, as stored.
///
/// # Security
/// The store keys it by `id_hmac`, a keyed HMAC (hex) of the random session id the browser holds
/// in its cookie; the id itself is never stored, so a read of the database cannot be turned into
/// a session. The human's groups are those the identity provider asserted at sign-in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleSession {
    /// HMAC-SHA-256 (hex) of the session id, keyed by a key derived from the master key.
    pub id_hmac: String,
    /// The human's id (as the issuer's `id_claim` gives it).
    pub human_id: String,
    /// The issuer that signed the human in.
    pub issuer: String,
    /// The approver groups the issuer asserted at sign-in.
    pub groups: Vec<String>,
    /// A display name, if the issuer gave one (`name`); shown escaped, never trusted.
    #[serde(default)]
    pub name: Option<String>,
    /// How the human signed in: `oidc` (the code flow) or `dev` (the development issuer).
    pub via: String,
    /// When it was opened (Unix seconds).
    pub created_at_unix_secs: i64,
    /// When it ends (Unix seconds); from then on it is refused and purged.
    pub expires_at_unix_secs: i64,
}

impl ConsoleSession {
    /// The human this session acts as.
    pub fn human(&self) -> Human {
        Human {
            id: self.human_id.clone(),
            issuer: self.issuer.clone(),
            groups: self.groups.clone(),
            groups_asserted_at_unix_secs: Some(self.created_at_unix_secs),
        }
    }
}
