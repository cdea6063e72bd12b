//! Request digests (approvals bind to them) and keyed HMACs of credential values.

use aws_lc_rs::{digest, hmac};
use secrecy::{ExposeSecret, SecretString};

/// SHA-256 (lowercase hex) over the canonical JSON of what an approver approves: request id,
/// task id, principal, resource, sorted actions, TTL, justification and the provider parameters
/// (e.g. the SSH public key to certify; omitted when null, so requests without parameters keep
/// the digest they always had). Any change to any of them changes the digest, so an approval
/// cannot be replayed onto another request, nor onto another key.
#[expect(
    clippy::too_many_arguments,
    reason = "the digest binds each field by name; a struct would only restate them"
)]
pub fn request_digest(
    request_id: &str,
    task_id: &str,
    principal_id: &str,
    resource_id: &str,
    actions: &[String],
    ttl_secs: i64,
    justification: &str,
    params: &serde_json::Value,
) -> String {
    // serde_json serialises struct fields in declaration order: a stable canonical form.
    #[derive(serde::Serialize)]
    struct Canon<'a> {
        v: u8,
        request_id: &'a str,
        task_id: &'a str,
        principal_id: &'a str,
        resource_id: &'a str,
        actions: &'a [String],
        ttl_secs: i64,
        justification: &'a str,
        #[serde(skip_serializing_if = "serde_json::Value::is_null")]
        params: &'a serde_json::Value,
    }
    let bytes = serde_json::to_vec(&Canon {
        v: 1,
        request_id,
        task_id,
        principal_id,
        resource_id,
        actions,
        ttl_secs,
        justification,
        params,
    })
    .unwrap_or_default();
    hex::encode(digest::digest(&digest::SHA256, &bytes))
}

/// Computes keyed HMAC-SHA256 of credential values, so the store and audit log can refer to a
/// credential (introspection lookup, leak search) without holding it.
///
/// # Security
/// The key never leaves this struct; `Debug` does not print it.
pub struct CredentialHasher {
    key: hmac::Key,
}

impl std::fmt::Debug for CredentialHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialHasher(..)")
    }
}

impl CredentialHasher {
    /// A hasher keyed with `key` (at least 32 bytes recommended).
    pub fn new(key: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
        }
    }
    /// Lowercase hex HMAC of `value`.
    pub fn hmac_hex(&self, value: &str) -> String {
        hex::encode(hmac::sign(&self.key, value.as_bytes()))
    }
    /// Lowercase hex HMAC of a secret.
    pub fn hmac_secret(&self, value: &SecretString) -> String {
        self.hmac_hex(value.expose_secret())
    }
}
