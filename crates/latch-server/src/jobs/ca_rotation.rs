//! Scheduled rotation of the certificate authorities (`keys.ca_rotation_period`), checked at
//! start and after every reaper pass.

use std::sync::Arc;

use async_trait::async_trait;
use latch_providers::keyring::{KeyError, MasterKey};

/// A certificate authority whose signing key can be rotated. Implemented in `startup.rs` for
/// the concrete CA providers, so this job never names them.
#[async_trait]
pub trait RotatingCa: Send + Sync {
    /// Short name used in logs (`ssh`, `x509`).
    fn label(&self) -> &'static str;

    /// Re-reads the CA generations from the store, then rotates if the current key is at
    /// least `max_age_secs` old. Returns whether this call rotated.
    ///
    /// # Errors
    /// [`KeyError`] on store or key failures (the current CA stays in use).
    async fn rotate_if_due(&self, master: &MasterKey, max_age_secs: i64) -> Result<bool, KeyError>;

    /// The generation number of the current CA key (0 on first start, +1 per rotation).
    fn current_generation(&self) -> u32;
}

/// The rotation check over every configured CA.
#[derive(Clone)]
pub struct CaRotation {
    /// Rotation period in seconds; `None`: never rotate.
    pub period_secs: Option<i64>,
    /// Seals the new CA keys.
    pub master: Arc<MasterKey>,
    /// The CAs to check, in order.
    pub cas: Vec<Arc<dyn RotatingCa>>,
}

impl CaRotation {
    /// Rotates each CA whose current key is older than the period; failures are logged and
    /// the current key stays in use.
    pub async fn run(&self) {
        let Some(period) = self.period_secs else {
            return;
        };
        for ca in &self.cas {
            let label = ca.label();
            match ca.rotate_if_due(&self.master, period).await {
                Ok(true) => {
                    tracing::info!(
                        generation = ca.current_generation(),
                        "rotated the {label} ca"
                    )
                }
                Ok(false) => {}
                Err(e) => tracing::error!(error = %e, "{label} ca rotation failed"),
            }
        }
    }
}
