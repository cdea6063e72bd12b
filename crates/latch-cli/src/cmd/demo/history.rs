//! The demo's history step: a decision that reads what the task did before. A sandbox task
//! publishes at once while clean; once it holds a secret (approved by `security`) it is tainted,
//! the publish credential it already held is revoked at once, and publishing again needs
//! security's approval (`examples/policies/60-history.cedar`).

use serde_json::json;

use super::{Script, introspect, short, show_decision, token};
use crate::client::Client;

/// The history step, in its own sandbox task of `agent`.
pub(super) async fn history_step(
    s: &mut Script,
    anon: &Client,
    agent: &Client,
) -> Result<(), String> {
    s.step("History-aware policy: a task that has held a secret may not publish without security");
    let t = agent
        .post(
            "/v1/tasks",
            &json!({"purpose": "rotate the package signing key", "environment": "sandbox", "ttl_secs": 1800}),
        )
        .await?;
    let task = short(&t.body["id"]);
    let requests = format!("/v1/tasks/{task}/requests");
    let publish = json!({"resource": "package-registry", "actions": ["write"], "justification": "publish 1.4.2"});
    let a = agent.post(&requests, &publish).await?;
    let publish_tok = short(&a.body["credential"]["value"]);
    s.check(
        a.status == 201,
        "a clean task publishes to the (egress) package registry at once",
    );
    let v = agent
        .post(
            &requests,
            &json!({"resource": "sandbox-vault", "actions": ["read"], "justification": "read the signing key"}),
        )
        .await?;
    s.check(
        v.status == 202,
        "reading the secret signing key waits for `security`",
    );
    let sam = anon.with_token(
        &token(
            anon,
            json!({"kind": "human", "subject": "sam", "groups": ["security"]}),
        )
        .await?,
    );
    let rid = short(&v.body["request"]["id"]);
    let ok = sam
        .post(
            &format!("/v1/approvals/{rid}/approve"),
            &json!({"digest": v.body["request"]["digest"], "reason": "key rotation ticket SEC-88"}),
        )
        .await?;
    let c = agent
        .post(&format!("{requests}/{rid}/claim"), &json!({}))
        .await?;
    s.check(
        ok.status == 200 && c.status == 201,
        "sam (security) approves; the agent claims the secret: the task is now tainted",
    );
    let i = introspect(anon, &publish_tok).await?;
    s.check(
        i.body["active"] == false,
        "the publish credential it already held is revoked at once (history changed)",
    );
    let again = agent.post(&requests, &publish).await?;
    show_decision(s, &again);
    s.check(
        again.status == 202,
        "publishing again needs security's approval (tainted-egress-needs-security)",
    );
    let h = agent.get(&format!("/v1/tasks/{task}/history")).await?;
    s.say(format!(
        "GET /v1/tasks/{task}/history: tainted {}, sensitivities {}",
        h.body["tainted"], h.body["history"]["sensitivities"]
    ));
    let _ = agent
        .post(&format!("/v1/tasks/{task}/complete"), &json!({}))
        .await?;
    Ok(())
}
