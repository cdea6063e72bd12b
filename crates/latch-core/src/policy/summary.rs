//! What a loaded policy set declares, for reports: its `@step_up` forbids.

use super::PolicyEngine;

impl PolicyEngine {
    /// The `@step_up` forbids in load order, as `(policy id, group, quorum)`.
    pub fn step_up_policies(&self) -> Vec<(String, String, u32)> {
        self.ids
            .iter()
            .filter_map(|id| {
                let m = self.meta.get(id)?;
                Some((id.clone(), m.step_up.clone()?, m.quorum))
            })
            .collect()
    }
}
