//! The OpenAPI 3.1 document ([`ApiDoc`]) served at `/v1/openapi.json`.

use axum::Json;
use latch_core::ErrorCode;
use utoipa::OpenApi;

use crate::dev::DevTokenRequest;
use crate::http::error::{ErrorBody, ErrorDetail};
use crate::http::routes::{
    access, approvals, audit, ca, dev, health, introspection, leases, oauth, proxy, scan, tasks,
};

/// The OpenAPI 3.1 document served at `/v1/openapi.json`.
#[derive(OpenApi)]
#[openapi(
    info(title = "Latch", description = "Just-in-time access broker for AI agents and workloads"),
    paths(health::healthz, health::readyz, health::jwks, ca::ssh_ca, ca::ssh_krl, ca::x509_ca, ca::x509_crl,
          tasks::open_task, tasks::list_tasks, tasks::get_task, tasks::complete_task, tasks::cancel_task,
          access::request_access, access::get_request, access::claim_request, leases::task_leases,
          leases::renew_lease, leases::revoke_lease, approvals::pending, approvals::approve, approvals::deny,
          introspection::introspect, introspection::oauth_revoke, audit::audit, audit::audit_export,
          audit::audit_checkpoint, audit::audit_find, tasks::report_tool_use, tasks::task_events,
          dev::dev_token, dev::dev_jwks, oauth::token, oauth::authorization_server_metadata,
          oauth::protected_resource_metadata, scan::scan, proxy::proxy_rules),
    components(schemas(ErrorBody, ErrorDetail, access::AccessResponse, access::CredentialBody,
                       approvals::PendingView, approvals::VoteBody, leases::RenewBody,
                       introspection::TokenForm, dev::DevTokenResponse, DevTokenRequest, ErrorCode,
                       audit::FindRequest, latch_core::audit::ToolUseReport,
                       latch_core::audit::AuditCheckpoint, oauth::TokenExchangeForm,
                       scan::ScanRequest, scan::ScanResponse, scan::ScanFinding, proxy::ProxyRules,
                       latch_core::broker::LeakResponse)),
    modifiers(&Security)
)]
pub struct ApiDoc;

struct Security;
impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let c = openapi.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        c.add_security_scheme(
            "basic",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
    }
}

pub(crate) async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
