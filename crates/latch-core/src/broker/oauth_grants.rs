//! The OAuth 2.1 authorization server for MCP clients: dynamic client registration
//! (RFC 7591), consent (a grant and its single-use code), the authorization code grant with
//! PKCE S256 (RFC 7636) bound to one resource (RFC 8707), refresh tokens rotated on use with
//! replay detection (OAuth 2.1 §4.3.1), revocation (RFC 7009) and the copilot principal an
//! access token stands for.
//!
//! # Security
//! Codes and tokens are random `ltco?_…` values ([`crate::credential_format`]), stored only as
//! keyed HMACs; none is ever put in an audit event, an error or a log. A grant is the root of
//! revocation: a revoked grant makes every code and token under it refuse at once, and a code
//! or refresh token presented a second time revokes its grant.

use super::*;
use crate::credential_format::{self, CredentialKind};
use crate::model;
use crate::oauth_grant::{
    GrantState, MCP_CLIENT_PRESET, OAuthClient, OAuthGrant, OAuthRecord, OAuthToken, TokenKind,
    client_key, grant_key, token_key,
};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

/// A refusal of the token endpoint (RFC 6749 §5.2): the OAuth `error` and a secret-free
/// description; or a broker failure.
#[derive(Debug)]
pub enum GrantError {
    /// `invalid_grant`, `invalid_request`, `invalid_target`, `invalid_client`.
    OAuth {
        /// The RFC 6749 §5.2 error code.
        error: &'static str,
        /// Lowercase, secret-free description.
        description: String,
    },
    /// The store, the rate limit or another broker failure.
    Broker(ApiError),
}

impl From<ApiError> for GrantError {
    fn from(e: ApiError) -> Self {
        Self::Broker(e)
    }
}

fn invalid_grant(description: &str) -> GrantError {
    GrantError::OAuth {
        error: "invalid_grant",
        description: description.to_owned(),
    }
}

/// The client of a consent, as the authorization endpoint identified it.
#[derive(Debug, Clone)]
pub struct ConsentClient {
    /// A metadata document URL, or a registered `mcpc_…` id.
    pub client_id: String,
    /// Whether `client_id` is a metadata document URL (CIMD).
    pub client_id_is_url: bool,
    /// The client's name from its metadata or registration.
    pub client_name: Option<String>,
}

/// What a consent binds its code to.
#[derive(Debug, Clone)]
pub struct ConsentRequest {
    /// The client.
    pub client: ConsentClient,
    /// The redirect URI the code goes to (one the client's metadata lists).
    pub redirect_uri: String,
    /// Whether the redirect URI is loopback (the client runs on the human's machine).
    pub developer_machine: bool,
    /// The PKCE S256 challenge.
    pub code_challenge: String,
    /// The resource (Latch's own `/mcp` URL).
    pub resource: String,
}

/// The token endpoint's successful answer (RFC 6749 §5.1), before rendering.
pub struct IssuedTokens {
    /// The new access token (shown once).
    pub access_token: SecretString,
    /// The new refresh token (shown once).
    pub refresh_token: SecretString,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    /// The grant.
    pub grant_id: String,
}

impl std::fmt::Debug for IssuedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedTokens")
            .field("grant_id", &self.grant_id)
            .finish_non_exhaustive()
    }
}

/// The form of a code exchange (RFC 6749 §4.1.3 with RFC 7636 §4.5 and RFC 8707 §2.2).
#[derive(Debug, Clone, Copy)]
pub struct CodeExchange<'a> {
    /// The code.
    pub code: &'a str,
    /// The client id the code was issued to.
    pub client_id: &'a str,
    /// The redirect URI of the authorization request.
    pub redirect_uri: &'a str,
    /// The PKCE verifier.
    pub code_verifier: &'a str,
    /// The resource, when the client names it again.
    pub resource: Option<&'a str>,
}

/// Whether a PKCE `code_verifier` (43–128 unreserved characters, RFC 7636 §4.1) hashes to the
/// S256 `challenge` (§4.6), compared in constant time.
pub fn pkce_s256_matches(verifier: &str, challenge: &str) -> bool {
    let shape = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    if !shape {
        return false;
    }
    use base64::Engine;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref());
    aws_lc_rs::constant_time::verify_slices_are_equal(computed.as_bytes(), challenge.as_bytes())
        .is_ok()
}

impl Broker {
    fn oauth_hmac(&self, value: &str) -> String {
        self.hasher
            .hmac_hex(&format!("latch oauth token v1\0{value}"))
    }

    fn new_oauth_secret(&self, kind: CredentialKind) -> Result<SecretString> {
        credential_format::generate(kind)
            .map(|v| SecretString::from(v.to_string()))
            .map_err(|()| ApiError::new(ErrorCode::Internal, "the random generator failed"))
    }

    /// The token row of `value` (a code or token) with its grant, if both exist.
    async fn oauth_token_and_grant(&self, value: &str) -> Result<Option<(OAuthToken, OAuthGrant)>> {
        let token = match self
            .store
            .oauth_record(&token_key(&self.oauth_hmac(value)))
            .await?
        {
            Some(OAuthRecord::Token(t)) => t,
            _ => return Ok(None),
        };
        match self.store.oauth_record(&grant_key(&token.grant_id)).await? {
            Some(OAuthRecord::Grant(g)) => Ok(Some((token, g))),
            _ => Ok(None),
        }
    }

    /// The grant with id `id`, if any.
    ///
    /// # Errors
    /// `store_unavailable`.
    pub async fn oauth_grant(&self, id: &str) -> Result<Option<OAuthGrant>> {
        match self.store.oauth_record(&grant_key(id)).await? {
            Some(OAuthRecord::Grant(g)) => Ok(Some(g)),
            _ => Ok(None),
        }
    }

    /// Registers a public client (RFC 7591 §3.1): its name and exact redirect URIs (the caller
    /// checked their shape). Records `oauth.client_registered`.
    ///
    /// # Errors
    /// `store_unavailable`.
    pub async fn oauth_register_client(
        &self,
        ctx: &CallCtx,
        client_name: Option<String>,
        redirect_uris: Vec<String>,
    ) -> Result<OAuthClient> {
        let now = self.now();
        let client = OAuthClient {
            client_id: model::new_id("mcpc"),
            client_name,
            redirect_uris,
            created_at_unix_secs: now,
            expires_at_unix_secs: now + self.settings.oauth.registration_ttl_secs,
            version: 1,
        };
        let ev = AuditEvent::new(now, AuditKind::OAuthClientRegistered, "anonymous", "ok").detail(
            json!({"client_id": client.client_id, "client_name": client.client_name,
                "redirect_uris": client.redirect_uris, "source_ip": ctx.source_ip}),
        );
        let batch = WriteBatch::new()
            .write(Write::InsertOAuth(OAuthRecord::Client(client.clone())))
            .audit(ev);
        self.commit(ctx, batch).await?;
        Ok(client)
    }

    /// The registered client `client_id`, unless unknown or expired.
    ///
    /// # Errors
    /// `store_unavailable`.
    pub async fn oauth_registered_client(&self, client_id: &str) -> Result<Option<OAuthClient>> {
        match self.store.oauth_record(&client_key(client_id)).await? {
            Some(OAuthRecord::Client(c)) if c.expires_at_unix_secs > self.now() => Ok(Some(c)),
            _ => Ok(None),
        }
    }

    /// The human approved `req` on the consent page: stores a grant and its single-use code
    /// (bound to client, redirect URI, PKCE challenge and resource); records `oauth.consented`.
    /// Returns the code (shown once, in the redirect).
    ///
    /// # Errors
    /// `store_unavailable`, `internal` (random generator).
    pub async fn oauth_consent(
        &self,
        ctx: &CallCtx,
        human: &Human,
        req: ConsentRequest,
    ) -> Result<SecretString> {
        let now = self.now();
        let o = &self.settings.oauth;
        let grant = OAuthGrant {
            id: model::new_id("ogr"),
            client_id: req.client.client_id,
            client_id_is_url: req.client.client_id_is_url,
            client_name: req.client.client_name,
            redirect_uri: req.redirect_uri,
            developer_machine: req.developer_machine,
            human: human.clone(),
            resource: req.resource,
            created_at_unix_secs: now,
            expires_at_unix_secs: now + o.grant_max_secs,
            state: GrantState::Active,
            revoked_reason: None,
            version: 1,
        };
        let code = self.new_oauth_secret(CredentialKind::OAuthCode)?;
        let row = OAuthToken {
            hmac: self.oauth_hmac(code.expose_secret()),
            grant_id: grant.id.clone(),
            kind: TokenKind::Code,
            used: false,
            expires_at_unix_secs: now + o.code_ttl_secs,
            code_challenge: Some(req.code_challenge),
            version: 1,
        };
        let ev = AuditEvent::new(now, AuditKind::OAuthConsented, &human.id, "ok")
            .detail(grant_detail(&grant));
        let batch = WriteBatch::new()
            .write(Write::InsertOAuth(OAuthRecord::Grant(grant)))
            .write(Write::InsertOAuth(OAuthRecord::Token(row)))
            .audit(ev);
        self.commit(ctx, batch).await?;
        Ok(code)
    }

    /// Records that `human` refused `client_id` on the consent page (`oauth.consent_denied`).
    ///
    /// # Errors
    /// `store_unavailable`.
    pub async fn oauth_consent_denied(
        &self,
        ctx: &CallCtx,
        human: &Human,
        client_id: &str,
    ) -> Result<()> {
        let ev = AuditEvent::new(
            self.now(),
            AuditKind::OAuthConsentDenied,
            &human.id,
            "denied",
        )
        .detail(json!({"client_id": client_id}));
        self.commit(ctx, WriteBatch::new().audit(ev)).await?;
        Ok(())
    }

    /// A refused token request: counted like other failed authentications (the first of a
    /// window audited at once), then answered `invalid_grant`.
    async fn grant_refused(&self, ctx: &CallCtx, description: &str) -> GrantError {
        let e = ApiError::new(
            ErrorCode::ClientAuthFailed,
            format!("token request: {description}"),
        );
        if let Err(e) = self.record_auth_failure(ctx, &e).await {
            return GrantError::Broker(e);
        }
        invalid_grant(description)
    }

    /// The authorization code grant (RFC 6749 §4.1.3): the code must be unused, unexpired, of
    /// an active grant, issued to `client_id` for `redirect_uri`, with a PKCE verifier that
    /// matches its S256 challenge and (when named) the grant's resource. A code presented a
    /// second time revokes its grant (and so every token issued from it). Records
    /// `oauth.grant_issued`.
    ///
    /// # Errors
    /// [`GrantError::OAuth`] `invalid_grant` / `invalid_target`; `rate_limited` or
    /// `store_unavailable` as [`GrantError::Broker`].
    pub async fn oauth_exchange_code(
        &self,
        ctx: &CallCtx,
        x: CodeExchange<'_>,
    ) -> std::result::Result<IssuedTokens, GrantError> {
        self.check_auth_limit(ctx)?;
        let Some((code, grant)) = self.oauth_token_and_grant(x.code).await? else {
            return Err(self.grant_refused(ctx, "unknown authorization code").await);
        };
        if code.kind != TokenKind::Code {
            return Err(self.grant_refused(ctx, "not an authorization code").await);
        }
        if code.used {
            self.revoke_grant_row(ctx, grant, "code_replay", "anonymous")
                .await?;
            return Err(self
                .grant_refused(
                    ctx,
                    "authorization code was already used; its grant is revoked",
                )
                .await);
        }
        let now = self.now();
        let refusal = if grant.state != GrantState::Active {
            Some("the grant was revoked")
        } else if code.expires_at_unix_secs <= now {
            Some("authorization code expired")
        } else if grant.client_id != x.client_id {
            Some("authorization code was issued to another client")
        } else if grant.redirect_uri != x.redirect_uri {
            Some("redirect_uri differs from the authorization request's")
        } else if !pkce_s256_matches(
            x.code_verifier,
            code.code_challenge.as_deref().unwrap_or(""),
        ) {
            Some("code_verifier does not match the code challenge (pkce s256)")
        } else {
            None
        };
        if let Some(r) = refusal {
            return Err(self.grant_refused(ctx, r).await);
        }
        if x.resource.is_some_and(|r| r != grant.resource) {
            return Err(GrantError::OAuth {
                error: "invalid_target",
                description: "the code was issued for another resource".into(),
            });
        }
        let used = OAuthToken {
            used: true,
            version: code.version + 1,
            ..code
        };
        let replay = ("code_replay", "authorization code was already used");
        self.redeem(ctx, grant, used, AuditKind::OAuthGrantIssued, replay, now)
            .await
    }

    /// Marks `used` (a code or a refresh token) used and issues a fresh token pair, in one
    /// commit with its audit event. When another redemption of the same code or token won the
    /// race (a compare-and-set conflict), it is a replay: the grant is revoked.
    async fn redeem(
        &self,
        ctx: &CallCtx,
        grant: OAuthGrant,
        used: OAuthToken,
        kind: AuditKind,
        (replay_reason, replay_message): (&str, &'static str),
        now: i64,
    ) -> Result<IssuedTokens, GrantError> {
        let (tokens, writes) = self.token_pair(&grant, now)?;
        let ev = AuditEvent::new(now, kind, &grant.human.id, "ok").detail(grant_detail(&grant));
        let batch = writes
            .into_iter()
            .fold(
                WriteBatch::new().write(Write::UpdateOAuth(OAuthRecord::Token(used))),
                WriteBatch::write,
            )
            .audit(ev);
        match self.commit(ctx, batch).await {
            Ok(_) => Ok(tokens),
            Err(StoreError::Conflict(_)) => {
                self.revoke_grant_row(ctx, grant, replay_reason, "anonymous")
                    .await?;
                Err(invalid_grant(replay_message))
            }
            Err(e) => Err(GrantError::Broker(e.into())),
        }
    }

    /// The refresh token grant (RFC 6749 §6) with rotation: the presented refresh token is
    /// marked used and a new access and refresh token are issued. A used refresh token
    /// presented again revokes the grant (OAuth 2.1 §4.3.1). Records `oauth.grant_refreshed`.
    ///
    /// # Errors
    /// As [`oauth_exchange_code`](Self::oauth_exchange_code).
    pub async fn oauth_refresh(
        &self,
        ctx: &CallCtx,
        refresh_token: &str,
        client_id: Option<&str>,
        resource: Option<&str>,
    ) -> std::result::Result<IssuedTokens, GrantError> {
        self.check_auth_limit(ctx)?;
        let Some((rt, grant)) = self.oauth_token_and_grant(refresh_token).await? else {
            return Err(self.grant_refused(ctx, "unknown refresh token").await);
        };
        if rt.kind != TokenKind::Refresh {
            return Err(self.grant_refused(ctx, "not a refresh token").await);
        }
        if rt.used && grant.state == GrantState::Active {
            self.revoke_grant_row(ctx, grant, "refresh_replay", "anonymous")
                .await?;
            return Err(self
                .grant_refused(ctx, "refresh token was already used; its grant is revoked")
                .await);
        }
        let now = self.now();
        let refusal = if grant.state != GrantState::Active || rt.used {
            Some("the grant was revoked")
        } else if rt.expires_at_unix_secs <= now || grant.expires_at_unix_secs <= now {
            Some("refresh token expired")
        } else if client_id.is_some_and(|c| c != grant.client_id) {
            Some("refresh token was issued to another client")
        } else {
            None
        };
        if let Some(r) = refusal {
            return Err(self.grant_refused(ctx, r).await);
        }
        if resource.is_some_and(|r| r != grant.resource) {
            return Err(GrantError::OAuth {
                error: "invalid_target",
                description: "the grant is for another resource".into(),
            });
        }
        let used = OAuthToken {
            used: true,
            version: rt.version + 1,
            ..rt
        };
        let replay = ("refresh_replay", "refresh token was already used");
        self.redeem(
            ctx,
            grant,
            used,
            AuditKind::OAuthGrantRefreshed,
            replay,
            now,
        )
        .await
    }

    /// A new access and refresh token for `grant` and their row inserts.
    fn token_pair(
        &self,
        grant: &OAuthGrant,
        now: i64,
    ) -> std::result::Result<(IssuedTokens, Vec<Write>), GrantError> {
        let o = &self.settings.oauth;
        let access = self.new_oauth_secret(CredentialKind::OAuthAccess)?;
        let refresh = self.new_oauth_secret(CredentialKind::OAuthRefresh)?;
        let access_exp = (now + o.access_ttl_secs).min(grant.expires_at_unix_secs);
        let refresh_exp = (now + o.refresh_ttl_secs).min(grant.expires_at_unix_secs);
        let row = |value: &SecretString, kind, exp| {
            Write::InsertOAuth(OAuthRecord::Token(OAuthToken {
                hmac: self.oauth_hmac(value.expose_secret()),
                grant_id: grant.id.clone(),
                kind,
                used: false,
                expires_at_unix_secs: exp,
                code_challenge: None,
                version: 1,
            }))
        };
        let writes = vec![
            row(&access, TokenKind::Access, access_exp),
            row(&refresh, TokenKind::Refresh, refresh_exp),
        ];
        Ok((
            IssuedTokens {
                access_token: access,
                refresh_token: refresh,
                expires_in: access_exp - now,
                grant_id: grant.id.clone(),
            },
            writes,
        ))
    }

    /// Marks `grant` revoked for `reason` by `actor`, with `oauth.grant_revoked`. Revoking a
    /// revoked grant does nothing; a concurrent change makes it re-read and try again.
    async fn revoke_grant_row(
        &self,
        ctx: &CallCtx,
        mut grant: OAuthGrant,
        reason: &str,
        actor: &str,
    ) -> Result<()> {
        for _ in 0..3 {
            if grant.state == GrantState::Revoked {
                return Ok(());
            }
            let ev = AuditEvent::new(self.now(), AuditKind::OAuthGrantRevoked, actor, reason)
                .detail(grant_detail(&grant));
            let revoked = OAuthGrant {
                state: GrantState::Revoked,
                revoked_reason: Some(reason.to_owned()),
                version: grant.version + 1,
                ..grant.clone()
            };
            let batch = WriteBatch::new()
                .write(Write::UpdateOAuth(OAuthRecord::Grant(revoked)))
                .audit(ev);
            match self.commit(ctx, batch).await {
                Ok(_) => return Ok(()),
                Err(StoreError::Conflict(_)) => match self.oauth_grant(&grant.id).await? {
                    Some(g) => grant = g,
                    None => return Ok(()),
                },
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::new(
            ErrorCode::Conflict,
            "the grant changed concurrently; try again",
        ))
    }

    /// Token revocation (RFC 7009 §2.1): a Latch access or refresh token revokes its whole
    /// grant (every token issued under it). Anything else is ignored; the answer is the same.
    ///
    /// # Errors
    /// `store_unavailable`.
    pub async fn oauth_revoke_token(&self, ctx: &CallCtx, token: &str) -> Result<()> {
        if !matches!(
            credential_format::parse(token),
            Some(CredentialKind::OAuthAccess | CredentialKind::OAuthRefresh)
        ) {
            return Ok(());
        }
        if let Some((t, grant)) = self.oauth_token_and_grant(token).await?
            && t.kind != TokenKind::Code
        {
            self.revoke_grant_row(ctx, grant, "client", "anonymous")
                .await?;
        }
        Ok(())
    }

    /// Revokes grant `id` on behalf of `human`: its own human, or an admin. Anyone else gets
    /// `not_found` (no existence leak).
    ///
    /// # Errors
    /// `not_found`, `store_unavailable`.
    pub async fn oauth_revoke_grant(
        &self,
        ctx: &CallCtx,
        human: &Human,
        id: &str,
    ) -> Result<OAuthGrant> {
        let grant = self.oauth_grant(id).await?.filter(|g| {
            (g.human.id == human.id && g.human.issuer == human.issuer) || self.is_admin(human)
        });
        let Some(grant) = grant else {
            return Err(ApiError::new(ErrorCode::NotFound, "no such grant"));
        };
        let reason = if grant.human.id == human.id {
            "human"
        } else {
            "admin"
        };
        self.revoke_grant_row(ctx, grant, reason, &human.id).await?;
        self.oauth_grant(id)
            .await?
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such grant"))
    }

    /// The copilot principal of a Latch-issued access token, presented through `resource`
    /// (`ctx.resource`): the MCP client acting for the human who consented. `None` when the
    /// token is not one of ours at all.
    ///
    /// # Errors
    /// `token_expired` (expired, or its grant revoked or ended), `audience_mismatch` (presented
    /// outside the resource it was issued for), `store_unavailable`.
    pub(super) async fn verify_oauth_access(&self, ctx: &CallCtx, token: &str) -> Result<Workload> {
        let invalid = || ApiError::new(ErrorCode::TokenExpired, "access token is not active");
        let Some((t, g)) = self.oauth_token_and_grant(token).await? else {
            return Err(invalid());
        };
        let now = self.now();
        if t.kind != TokenKind::Access
            || g.state != GrantState::Active
            || t.expires_at_unix_secs <= now
            || g.expires_at_unix_secs <= now
        {
            return Err(invalid());
        }
        if ctx.resource.as_deref() != Some(g.resource.as_str()) {
            return Err(ApiError::new(
                ErrorCode::AudienceMismatch,
                "this access token is for another resource",
            ));
        }
        Ok(copilot(
            &self.settings.public_url,
            &g,
            t.expires_at_unix_secs,
        ))
    }
}

/// The workload principal of an MCP client acting for the grant's human.
fn copilot(issuer: &str, g: &OAuthGrant, expires: i64) -> Workload {
    let issuer = issuer.trim_end_matches('/').to_owned();
    Workload {
        id: format!("{issuer}#{}", g.id),
        issuer,
        subject: g.id.clone(),
        preset: MCP_CLIENT_PRESET.to_owned(),
        run_binding: None,
        on_behalf_of: Some(g.human.id.clone()),
        claims: model::WorkloadClaims {
            client_id: Some(g.client_id.clone()),
            client_metadata_url: g.client_id_is_url.then(|| g.client_id.clone()),
            developer_machine: Some(g.developer_machine),
            untrusted_source: false,
            ..Default::default()
        },
        token_expires_at_unix_secs: expires,
    }
}

/// The audit detail of a grant: ids and names, never a token.
fn grant_detail(g: &OAuthGrant) -> Value {
    json!({"grant_id": g.id, "client_id": g.client_id, "client_name": g.client_name,
        "redirect_uri": g.redirect_uri, "resource": g.resource, "human": g.human.id,
        "developer_machine": g.developer_machine})
}
