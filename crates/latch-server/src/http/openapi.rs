//! The OpenAPI 3.1 document ([`ApiDoc`]) served at `/v1/openapi.json`.
//!
//! Handlers document their own answers (`#[utoipa::path]`); a modifier adds the ones
//! the shared layers give, so every status an operation can answer is in the document with the
//! JSON error shape ([`ErrorBody`]): `400` (a malformed body or query string), `401` (failed
//! authentication, with the RFC 6750 challenge), `408` (the request timeout), `413`, `415`,
//! `429` (too many failed authentications from the source), `500` and `503`. The routing layer's
//! own `404` (unknown path) and `405` (known path, other method, with `Allow`) use the same
//! shape.

use axum::Json;
use latch_core::ErrorCode;
use utoipa::OpenApi;
use utoipa::openapi::path::Operation;
use utoipa::openapi::{Ref, RefOr, Response};

use crate::dev::DevTokenRequest;
use crate::http::error::{ErrorBody, ErrorDetail};
use crate::http::routes::{
    access, admin, approvals, audit, ca, dev, gateway, health, introspection, leases, login, oauth,
    proxy, resources, scan, ssf, tasks,
};

/// The OpenAPI 3.1 document served at `/v1/openapi.json`.
#[derive(OpenApi)]
#[openapi(
    info(title = "Latch", description = "Just-in-time access broker for AI agents and workloads"),
    paths(health::healthz, health::readyz, health::metrics_endpoint, health::jwks, openapi_json, ca::ssh_ca, ca::ssh_krl, ca::x509_ca, ca::x509_crl, ca::spiffe_bundle,
          resources::list_resources, tasks::open_task, tasks::list_tasks, tasks::get_task, tasks::task_history, tasks::complete_task, tasks::cancel_task,
          access::request_access, access::get_request, access::claim_request, leases::task_leases,
          leases::renew_lease, leases::revoke_lease, approvals::pending, approvals::approve, approvals::deny,
          introspection::introspect, introspection::oauth_revoke, audit::audit, audit::audit_export,
          audit::audit_checkpoint, audit::audit_find, tasks::report_tool_use, tasks::task_events,
          dev::dev_token, dev::dev_jwks, oauth::token, oauth::authorization_server_metadata,
          oauth::protected_resource_metadata, crate::http::routes::oauth_as::register,
          crate::http::routes::oauth_as::revoke, crate::http::routes::oauth_as::revoke_grant, scan::scan, proxy::proxy_rules, login::whoami,
          login::login_config,
          admin::tasks, admin::leases, admin::revoke_lease, admin::cancel_task, admin::freezes,
          admin::engage, admin::lift, gateway::tools, gateway::call_tool,
          crate::http::routes::reports::controls,
          ssf::configuration, ssf::stream, ssf::create_stream, ssf::replace_stream,
          ssf::update_stream, ssf::delete_stream, ssf::status),
    components(schemas(ErrorBody, ErrorDetail, latch_core::broker::ResourceInfo, crate::http::error::OAuthClientError,
                       login::WhoAmI, crate::config::LoginSettings, access::AccessResponse, access::RequestView, access::CredentialBody,
                       approvals::PendingView, approvals::VoteBody, leases::RenewBody,
                       introspection::TokenForm, dev::DevTokenResponse, DevTokenRequest, ErrorCode,
                       audit::FindRequest, latch_core::audit::ToolUseReport,
                       latch_core::audit::AuditCheckpoint, oauth::TokenExchangeForm,
                       scan::ScanRequest, scan::ScanResponse, scan::ScanFinding, proxy::ProxyRules,
                       latch_core::broker::LeakResponse, admin::ReasonBody, admin::FreezeBody,
                       latch_core::broker::TaskPage, latch_core::broker::LeasePage,
                       latch_core::broker::LiveLease, latch_core::broker::FreezeReport,
                       latch_core::freeze::Freeze, latch_core::freeze::FreezeScope,
                       latch_core::freeze::ScopeKind, latch_core::freeze::FreezeState,
                       gateway::GatewayTools, gateway::ToolCallResponse,
                       latch_core::gateway::GatewayTool, latch_core::gateway::ToolCall,
                       latch_core::controls::ControlReport,
                       crate::ssf::TransmitterMetadata, crate::ssf::AuthorizationScheme,
                       crate::ssf::StreamConfiguration, crate::ssf::Delivery,
                       crate::ssf::StreamStatus, ssf::StreamAnswer)),
    modifiers(&Security, &CommonResponses, &DependentRequired)
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

/// A shared answer: its status, component name and description.
struct Common {
    status: &'static str,
    name: &'static str,
    description: &'static str,
    /// A response header it always carries.
    header: Option<(&'static str, &'static str)>,
}

const BAD_REQUEST: Common = Common {
    status: "400",
    name: "BadRequest",
    description: "`invalid_request`: the body or a parameter is malformed or breaks a rule this \
        document states (types, lengths, patterns, bounds; a JSON member name given twice in one \
        object, at any depth)",
    header: None,
};
const UNAUTHORIZED: Common = Common {
    status: "401",
    name: "Unauthorized",
    description: "authentication failed: `token_missing`, `token_expired`, `signature_invalid`, \
        `audience_mismatch`, `dpop_proof_invalid`, … (`client_auth_failed` for the OAuth client \
        endpoints); `WWW-Authenticate` carries the challenge (RFC 6750 §3: no error code when \
        the request carried no credentials)",
    header: Some((
        "WWW-Authenticate",
        "`Bearer realm=\"latch\"` (no credentials), `Bearer realm=\"latch\", error=\"invalid_token\"`, \
         or `Basic realm=\"latch\"` (OAuth client endpoints)",
    )),
};
const TIMEOUT: Common = Common {
    status: "408",
    name: "RequestTimeout",
    description: "`request_timeout`: not answered within `[http] request_timeout`",
    header: None,
};
const TOO_LARGE: Common = Common {
    status: "413",
    name: "PayloadTooLarge",
    description: "`body_too_large`: the body is larger than `[server] max_body_bytes`",
    header: None,
};
const MEDIA_TYPE: Common = Common {
    status: "415",
    name: "UnsupportedMediaType",
    description: "`unsupported_media_type`: the body is not of the media type this operation \
        reads (its `Content-Type`)",
    header: None,
};
const RATE_LIMITED: Common = Common {
    status: "429",
    name: "TooManyRequests",
    description: "`rate_limited`: too many failed authentications came from this source; \
        requests carrying credentials are refused until its window ends",
    header: Some(("Retry-After", "seconds until the source's window ends")),
};
const INTERNAL: Common = Common {
    status: "500",
    name: "InternalError",
    description: "`internal`: unexpected; nothing was changed",
    header: None,
};
const UNAVAILABLE: Common = Common {
    status: "503",
    name: "ServiceUnavailable",
    description: "`store_unavailable`: the store failed (audit fails closed: no answer without \
        its record); retry later",
    header: None,
};

/// Adds the answers of the shared layers to every operation that can get them (without
/// replacing what a handler documents itself), and a description to any answer without one.
struct CommonResponses;

impl CommonResponses {
    fn component(c: &Common) -> Response {
        use utoipa::openapi::ObjectBuilder;
        use utoipa::openapi::header::HeaderBuilder;
        use utoipa::openapi::response::ResponseBuilder;
        use utoipa::openapi::schema::Type;
        let mut b = ResponseBuilder::new().description(c.description).content(
            "application/json",
            utoipa::openapi::content::ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        );
        if let Some((name, description)) = c.header {
            b = b.header(
                name,
                HeaderBuilder::new()
                    .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                    .description(Some(description))
                    .build(),
            );
        }
        b.build()
    }

    /// The shared answers `op` (of `path`) can get.
    fn applicable(path: &str, op: &Operation) -> Vec<&'static Common> {
        // Every route is behind the request timeout and the failed-authentication limit.
        let mut v = vec![&TIMEOUT, &RATE_LIMITED];
        if path == "/oauth/token" || crate::http::error::is_oauth_client_endpoint(path) {
            // The OAuth token endpoint answers in the RFC 6749 §5.2 shape (documented there).
            return v;
        }
        if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
            v.extend([&UNAUTHORIZED, &INTERNAL, &UNAVAILABLE]);
        }
        let has_query = op.parameters.iter().flatten().any(|p| match p {
            RefOr::T(p) => matches!(p.parameter_in, utoipa::openapi::path::ParameterIn::Query),
            RefOr::Ref(_) => false,
        });
        if op.request_body.is_some() {
            v.extend([&BAD_REQUEST, &TOO_LARGE, &MEDIA_TYPE]);
        } else if has_query {
            v.push(&BAD_REQUEST);
        }
        v
    }
}

impl utoipa::Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let all = [
            &BAD_REQUEST,
            &UNAUTHORIZED,
            &TIMEOUT,
            &TOO_LARGE,
            &MEDIA_TYPE,
            &RATE_LIMITED,
            &INTERNAL,
            &UNAVAILABLE,
        ];
        let c = openapi.components.get_or_insert_with(Default::default);
        for common in all {
            c.responses
                .insert(common.name.into(), RefOr::T(Self::component(common)));
        }
        for (path, item) in &mut openapi.paths.paths {
            let ops = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in ops.into_iter().flatten() {
                for common in Self::applicable(path, op) {
                    op.responses
                        .responses
                        .entry(common.status.into())
                        .or_insert_with(|| RefOr::Ref(Ref::from_response_name(common.name)));
                }
                for (status, r) in &mut op.responses.responses {
                    if let RefOr::T(r) = r
                        && r.description.is_empty()
                    {
                        r.description = default_description(status).into();
                    }
                }
            }
        }
    }
}

/// Parameters that need others (JSON Schema 2020-12 `dependentRequired` and `if`/`then`, which
/// the derive cannot state): a relayed DPoP proof needs the method and URL it was made for
/// (`TokenForm`), an actor token its type (`TokenExchangeForm`), a human development token its
/// subject (`DevTokenRequest`).
struct DependentRequired;

impl utoipa::Modify for DependentRequired {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let rules = [
            (
                "TokenForm",
                serde_json::json!({"dpop_proof": ["htm", "htu"]}),
            ),
            (
                "TokenExchangeForm",
                serde_json::json!({"actor_token": ["actor_token_type"]}),
            ),
        ];
        let Some(c) = openapi.components.as_mut() else {
            return;
        };
        for (name, rule) in rules {
            if let Some(RefOr::T(utoipa::openapi::Schema::Object(o))) = c.schemas.get_mut(name) {
                o.extensions
                    .get_or_insert_with(Default::default)
                    .insert("dependentRequired".into(), rule);
            }
        }
        // A human development token needs its `subject` (JSON Schema 2020-12 `if`/`then`).
        if let Some(RefOr::T(utoipa::openapi::Schema::Object(o))) =
            c.schemas.get_mut("DevTokenRequest")
        {
            let ext = o.extensions.get_or_insert_with(Default::default);
            ext.insert(
                "if".into(),
                serde_json::json!({"properties": {"kind": {"const": "human"}}, "required": ["kind"]}),
            );
            ext.insert("then".into(), serde_json::json!({"required": ["subject"]}));
        }
    }
}

/// The description of an answer its handler did not describe.
fn default_description(status: &str) -> &'static str {
    match status {
        "200" => "the result",
        "201" => "created",
        "202" => "accepted, not done yet",
        "204" => "nothing to return",
        _ => "an error, in the JSON error shape",
    }
}

#[utoipa::path(get, path = "/v1/openapi.json", responses((status = 200, content_type = "application/json",
    description = "this OpenAPI 3.1 document")))]
pub(crate) async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
