//! The control evidence report for operators (`GET /v1/admin/reports/controls`): the window
//! checked, the report recorded, the audit records of the window folded up to the checkpoint
//! the report cites, the loaded policies probed, and [`crate::controls::compute`] over it all.

use super::*;
use crate::audit::AuditCheckpoint;
use crate::controls::{
    CheckpointRef, ControlInputs, ControlReport, FigureFold, PolicyFacts, ResourceFact, StepUpFact,
    compute, probe,
};

/// Longest report window: 366 days.
pub const MAX_REPORT_WINDOW_SECS: i64 = 366 * 86_400;
/// Window when none is given: the last 30 days.
pub const DEFAULT_REPORT_WINDOW_SECS: i64 = 30 * 86_400;
/// Records read per store call.
const PAGE: u32 = 1000;

/// The window a report was asked for, before defaults: `[from, to)` in Unix seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowAsk {
    /// Start (default: `to` minus 30 days).
    pub from_unix_secs: Option<i64>,
    /// End, exclusive (default and upper bound: now).
    pub to_unix_secs: Option<i64>,
}

impl Broker {
    /// The window `ask` names, with defaults applied: `to` defaults to the end of the current
    /// second (records of this second included) and is clamped to it (nothing is recorded in
    /// the future), `from` defaults to 30 days before `to`.
    ///
    /// # Errors
    /// `invalid_window` when `from` is not before `to`, or they are more than 366 days apart.
    pub fn report_window(&self, ask: WindowAsk) -> Result<(i64, i64)> {
        let end = self.now().saturating_add(1);
        let to = ask.to_unix_secs.unwrap_or(end).min(end);
        let from = ask
            .from_unix_secs
            .unwrap_or_else(|| to.saturating_sub(DEFAULT_REPORT_WINDOW_SECS));
        if from >= to {
            return Err(ApiError::new(
                ErrorCode::InvalidWindow,
                "`from` must be before `to` (and `to` is at most now)",
            ));
        }
        if to.saturating_sub(from) > MAX_REPORT_WINDOW_SECS {
            return Err(ApiError::new(
                ErrorCode::InvalidWindow,
                "the window is longer than 366 days: narrow `from` and `to`",
            ));
        }
        Ok((from, to))
    }

    /// Checks that `human` may generate the control report and that `ask` is a valid window,
    /// and records `report.generated` (window and `format`) before anything is read, so the
    /// trail says who looked. Returns the window with defaults applied.
    ///
    /// # Errors
    /// `not_admin`, `invalid_window`, `store_unavailable` (audit fails closed: no report
    /// without its record).
    pub async fn record_controls_report(
        &self,
        ctx: &CallCtx,
        human: &Human,
        ask: WindowAsk,
        format: &str,
    ) -> Result<(i64, i64)> {
        self.require_operator(human)?;
        let (from, to) = self.report_window(ask)?;
        let ev = AuditEvent::new(self.now(), AuditKind::ReportGenerated, &human.id, "ok").detail(
            json!({
                "report": "controls", "format": format,
                "from_unix_secs": from, "to_unix_secs": to,
            }),
        );
        self.record_event(ctx, ev).await?;
        Ok((from, to))
    }

    /// The control evidence report over `[from, to)`, computed against `checkpoint` (records
    /// after its `seq` are not counted; `None` for an empty trail). Reads at most
    /// [`crate::controls::MAX_EVENTS`] records and says so when it stops there.
    ///
    /// # Errors
    /// `not_admin`, `invalid_window`, `store_unavailable`.
    pub async fn controls_report(
        &self,
        human: &Human,
        (from, to): (i64, i64),
        checkpoint: Option<&AuditCheckpoint>,
    ) -> Result<ControlReport> {
        self.require_operator(human)?;
        if from >= to || to - from > MAX_REPORT_WINDOW_SECS {
            return Err(ApiError::new(
                ErrorCode::InvalidWindow,
                "`from` must be before `to`, at most 366 days apart",
            ));
        }
        let mut resources: Vec<Resource> = self.resources.values().cloned().collect();
        resources.sort_by(|a, b| a.id.cmp(&b.id));
        let figures = match checkpoint {
            Some(cp) => {
                let production = resources
                    .iter()
                    .filter(|r| r.production)
                    .map(|r| r.id.clone());
                self.fold_window(FigureFold::new(production), from, to, cp.seq)
                    .await?
            }
            None => FigureFold::default().finish(),
        };
        let engine = self.policy();
        let policy = PolicyFacts {
            fingerprint: engine.fingerprint().to_owned(),
            policies: u32::try_from(engine.policy_ids().len()).unwrap_or(u32::MAX),
            step_up: engine
                .step_up_policies()
                .into_iter()
                .map(|(policy_id, group, quorum)| StepUpFact {
                    policy_id,
                    group,
                    quorum,
                })
                .collect(),
            probes: probe(
                &engine,
                &resources,
                &self.settings.production_environments,
                self.now(),
            ),
        };
        let mut config = self.settings.controls.clone();
        config.production_environments = self.settings.production_environments.clone();
        config.admin_groups = self.settings.admin_groups.clone();
        config.task_max_ttl_secs = self.settings.task_max_ttl_secs;
        config.public_url = self.settings.public_url.clone();
        config.notification_channels = self
            .settings
            .notify
            .routes
            .iter()
            .map(|r| r.name.clone())
            .collect();
        Ok(compute(&ControlInputs {
            generated_at_unix_secs: self.now(),
            broker: self.settings.public_url.clone(),
            window: (from, to),
            checkpoint: checkpoint.map(CheckpointRef::from),
            config,
            resources: resources.iter().map(ResourceFact::from).collect(),
            policy,
            figures,
        }))
    }

    /// Folds the records of `[from, to)` with `seq <= last_seq`, page by page, up to the cap.
    async fn fold_window(
        &self,
        mut fold: FigureFold,
        from: i64,
        to: i64,
        last_seq: i64,
    ) -> Result<crate::controls::AuditFigures> {
        let mut after = 0;
        loop {
            let page = self
                .store
                .audit_events(&AuditFilter {
                    since_unix_secs: Some(from),
                    until_unix_secs: Some(to),
                    after_seq: Some(after),
                    limit: Some(PAGE),
                    ..AuditFilter::default()
                })
                .await?;
            let full = page.len() as u32 == PAGE;
            for e in &page {
                if e.seq > last_seq {
                    return Ok(fold.finish());
                }
                if fold.events_read() >= crate::controls::MAX_EVENTS {
                    fold.truncate();
                    return Ok(fold.finish());
                }
                fold.add(e);
                after = e.seq;
            }
            if !full {
                return Ok(fold.finish());
            }
        }
    }
}
