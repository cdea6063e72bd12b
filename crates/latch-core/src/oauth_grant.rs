//! The OAuth 2.1 authorization server's records for MCP clients (local copilots): registered
//! clients (RFC 7591), grants (one human's consent to one client for one resource), and the
//! opaque codes and tokens issued under a grant, stored only as keyed HMACs.
//!
//! They are kept in one store table (`oauth_records`, migration `0006`) as [`OAuthRecord`]s,
//! keyed by [`OAuthRecord::key`]; updates are compare-and-set on `version`.

use serde::{Deserialize, Serialize};

use crate::model::Human;

/// The principal preset of an MCP client acting for a human through a Latch-issued token.
pub const MCP_CLIENT_PRESET: &str = "mcp_client";

/// A client registered by dynamic client registration (RFC 7591 §3.2.1). Public clients only
/// (`token_endpoint_auth_method` `none`): Latch keeps no client secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthClient {
    /// `mcpc_<uuid>`, assigned by Latch.
    pub client_id: String,
    /// The name the client gave (shown escaped on the consent page, never trusted).
    pub client_name: Option<String>,
    /// The exact redirect URIs it registered.
    pub redirect_uris: Vec<String>,
    /// When it registered (Unix seconds).
    pub created_at_unix_secs: i64,
    /// When the registration is forgotten (Unix seconds).
    pub expires_at_unix_secs: i64,
    /// Compare-and-set version (1 at insert).
    pub version: i64,
}

/// Lifecycle of a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantState {
    /// Consent given; its code, access and refresh tokens work.
    Active,
    /// Revoked (by the human, an admin, the client, or replay detection): nothing under it works.
    Revoked,
}

/// One human's consent to one client, for one resource (RFC 8707): the root of every code and
/// token issued for it. Revoking it invalidates them all at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthGrant {
    /// `ogr_<uuid>`.
    pub id: String,
    /// The client: a Client ID Metadata Document URL, or a registered `mcpc_…` id.
    pub client_id: String,
    /// Whether `client_id` is a metadata document URL (CIMD) rather than a registration.
    pub client_id_is_url: bool,
    /// The client's name as its metadata or registration gave it.
    pub client_name: Option<String>,
    /// The redirect URI the code was sent to.
    pub redirect_uri: String,
    /// Whether the redirect URI is a loopback address: the client runs on the human's own
    /// machine (a local copilot, RFC 8252 §7.3).
    pub developer_machine: bool,
    /// The human who consented, as the console session knew them.
    pub human: Human,
    /// The resource the tokens are for (Latch's own `/mcp` URL).
    pub resource: String,
    /// When consent was given (Unix seconds).
    pub created_at_unix_secs: i64,
    /// When the grant ends whatever refreshes happen (Unix seconds).
    pub expires_at_unix_secs: i64,
    /// Active or revoked.
    pub state: GrantState,
    /// Why it was revoked (`client`, `human`, `admin`, `code_replay`, `refresh_replay`).
    pub revoked_reason: Option<String>,
    /// Compare-and-set version (1 at insert).
    pub version: i64,
}

/// What an opaque secret of a grant is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// An authorization code (single use, short-lived).
    Code,
    /// An access token (bearer, for the grant's resource).
    Access,
    /// A refresh token (rotated on use).
    Refresh,
}

/// An opaque code or token, stored under the keyed HMAC of its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthToken {
    /// HMAC (hex) of the value, keyed by the broker's credential key.
    pub hmac: String,
    /// The grant it belongs to.
    pub grant_id: String,
    /// Code, access or refresh.
    pub kind: TokenKind,
    /// Whether it was used (a code redeemed, a refresh token rotated). A used one presented
    /// again is a replay: the grant is revoked.
    pub used: bool,
    /// When it stops working (Unix seconds).
    pub expires_at_unix_secs: i64,
    /// Codes only: the PKCE S256 challenge (RFC 7636 §4.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_challenge: Option<String>,
    /// Compare-and-set version (1 at insert).
    pub version: i64,
}

/// One row of the `oauth_records` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OAuthRecord {
    /// A registered client.
    Client(OAuthClient),
    /// A grant.
    Grant(OAuthGrant),
    /// A code or token.
    Token(OAuthToken),
}

impl OAuthRecord {
    /// The row key: `client:<id>`, `grant:<id>`, `token:<hmac>`.
    pub fn key(&self) -> String {
        match self {
            Self::Client(c) => client_key(&c.client_id),
            Self::Grant(g) => grant_key(&g.id),
            Self::Token(t) => token_key(&t.hmac),
        }
    }
    /// The grant the row belongs to (empty for a client).
    pub fn grant_id(&self) -> &str {
        match self {
            Self::Client(_) => "",
            Self::Grant(g) => &g.id,
            Self::Token(t) => &t.grant_id,
        }
    }
    /// The human of a grant (empty otherwise).
    pub fn human_id(&self) -> &str {
        match self {
            Self::Grant(g) => &g.human.id,
            _ => "",
        }
    }
    /// When the row may be purged (Unix seconds).
    pub fn expires_at_unix_secs(&self) -> i64 {
        match self {
            Self::Client(c) => c.expires_at_unix_secs,
            Self::Grant(g) => g.expires_at_unix_secs,
            Self::Token(t) => t.expires_at_unix_secs,
        }
    }
    /// Its compare-and-set version.
    pub fn version(&self) -> i64 {
        match self {
            Self::Client(c) => c.version,
            Self::Grant(g) => g.version,
            Self::Token(t) => t.version,
        }
    }
    /// `client`, `grant` or `token`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Client(_) => "client",
            Self::Grant(_) => "grant",
            Self::Token(_) => "token",
        }
    }
}

/// Row key of a registered client.
pub fn client_key(client_id: &str) -> String {
    format!("client:{client_id}")
}
/// Row key of a grant.
pub fn grant_key(id: &str) -> String {
    format!("grant:{id}")
}
/// Row key of a token.
pub fn token_key(hmac: &str) -> String {
    format!("token:{hmac}")
}

/// Lifetimes of the authorization server's codes and tokens (`[mcp_oauth]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OAuthGrantSettings {
    /// Authorization code lifetime (seconds; default 60).
    pub code_ttl_secs: i64,
    /// Access token lifetime (seconds; default 600).
    pub access_ttl_secs: i64,
    /// Refresh token lifetime (seconds; default 8 h); each refresh issues a new one.
    pub refresh_ttl_secs: i64,
    /// Longest a grant lasts, refreshes included (seconds; default 7 days): then the human is
    /// asked again.
    pub grant_max_secs: i64,
    /// How long a dynamic client registration is kept (seconds; default 30 days).
    pub registration_ttl_secs: i64,
}

impl Default for OAuthGrantSettings {
    fn default() -> Self {
        Self {
            code_ttl_secs: 60,
            access_ttl_secs: 600,
            refresh_ttl_secs: 8 * 3600,
            grant_max_secs: 7 * 24 * 3600,
            registration_ttl_secs: 30 * 24 * 3600,
        }
    }
}
