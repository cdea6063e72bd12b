//! RFC 7662 introspection, answered from the live index or the store (fail closed).

use super::*;

/// RFC 7662 introspection answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Introspection {
    /// Whether the token is currently active (RFC 7662 §2.2).
    pub active: bool,
    /// Space-separated actions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Workload principal id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Audience.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// Expiry (Unix seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// Issued at (Unix seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Lease id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Task id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// Resource id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// `Bearer`, or `DPoP` for a key-bound token (RFC 9449 §6.2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    /// Confirmation (RFC 7800 / RFC 9449 §6.2): `{"jkt": thumbprint}` when the token is bound
    /// to a key; every use must then carry a DPoP proof signed by that key.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub cnf: Option<serde_json::Value>,
    /// The actor (RFC 8693 §4.1) when the token was obtained on someone's behalf.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub act: Option<serde_json::Value>,
    /// Whether the token's resource requires sender-constrained use (`require_dpop`): then an
    /// introspection must carry the DPoP proof the resource server received. Not serialized.
    #[serde(skip)]
    pub requires_dpop: bool,
}

impl Broker {
    /// RFC 7662 introspection of a credential value: active only while its lease is active,
    /// unexpired, and the value is the lease's current credential.
    ///
    /// Served from the in-memory index; a credential not in it (minted by another replica, or
    /// the index is not trusted) is looked up in the store. Fails closed: if the store cannot
    /// be read within `settings.introspection_store_timeout`, the answer is `active: false`.
    pub async fn introspect(&self, value: &str) -> Introspection {
        let h = self.hasher.hmac_hex(value);
        let now = self.now();
        let generation = {
            let live = self.live.read().unwrap_or_else(|p| p.into_inner());
            if live.trust.answers_at(|| self.clock.monotonic())
                && let Some(e) = live.entries.get(&h)
            {
                return Self::introspection(e, now);
            }
            live.generation
        };
        let lookup = tokio::time::timeout(
            self.settings.introspection_store_timeout,
            self.load_live_entry(&h),
        );
        let entry = match lookup.await {
            Ok(Ok(Some(e))) => e,
            Ok(Ok(None)) => {
                // Whatever a stale index held for this value is wrong: forget it (the write
                // lock only when there is something to forget: unknown values are common).
                let cached = self
                    .live
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .entries
                    .contains(&h);
                if cached {
                    let mut live = self.live.write().unwrap_or_else(|p| p.into_inner());
                    live.entries.remove_hmac(&h);
                }
                return Introspection::default();
            }
            Ok(Err(e)) => {
                tracing::warn!(code = %e.code, error = %e.message, "introspection: store lookup failed; answering inactive");
                return Introspection::default();
            }
            Err(_) => {
                tracing::warn!(
                    timeout_ms = self.settings.introspection_store_timeout.as_millis() as u64,
                    "introspection: store lookup timed out; answering inactive"
                );
                return Introspection::default();
            }
        };
        {
            let mut live = self.live.write().unwrap_or_else(|p| p.into_inner());
            // Not cached if an invalidation arrived while the store was read: it may be newer.
            // Caching while the index is stale is sound: a change committed after this read is
            // applied before the feed can next confirm freshness.
            if live.trust != CacheTrust::Never && live.generation == generation {
                live.entries.insert(&h, &entry);
            }
        }
        Self::introspection(entry, now)
    }

    fn introspection(e: LiveEntry, now: i64) -> Introspection {
        // A resource that requires binding never accepts an unbound token.
        if now >= e.exp || (e.require_dpop && e.binding.jkt.is_none()) {
            return Introspection::default();
        }
        Introspection {
            active: true,
            scope: Some(e.scope),
            sub: Some(e.sub),
            aud: Some(e.aud),
            exp: Some(e.exp),
            iat: Some(e.iat),
            jti: Some(e.lease_id),
            task_id: Some(e.task_id),
            resource: Some(e.resource),
            token_type: Some(
                if e.binding.jkt.is_some() {
                    "DPoP"
                } else {
                    "Bearer"
                }
                .into(),
            ),
            cnf: e.binding.jkt.map(|j| json!({ "jkt": j })),
            act: e.binding.act,
            requires_dpop: e.require_dpop,
        }
    }

    /// The index entry of the active lease whose current credential has HMAC `h`, if any.
    async fn load_live_entry(&self, h: &str) -> Result<Option<LiveEntry>> {
        let Some(l) = self.store.lease_by_credential_hmac(h).await? else {
            return Ok(None);
        };
        if l.state != LeaseState::Active || l.credential_hmac.as_deref() != Some(h) {
            return Ok(None);
        }
        let Some(task) = self.store.task(&l.task_id).await? else {
            return Ok(None);
        };
        Ok(self.live_entry(&l, &task))
    }
}
