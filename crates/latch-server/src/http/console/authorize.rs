//! The authorization endpoint of Latch's OAuth 2.1 authorization server for MCP clients
//! (`GET|POST /console/authorize`; RFC 6749 §4.1.1, RFC 7636, RFC 8707, the MCP authorization
//! specification 2025-11-25). It lives under `/console/` because it is the console: the human
//! signs in through the console's relying party (the configured human issuer) and its session
//! cookie (`Path=/console`) says who consents.
//!
//! * `GET`: checks the request; an unknown client or a redirect URI its metadata does not list
//!   is an error page (never a redirect, RFC 6749 §4.1.2.1); other errors redirect with
//!   `error`. Without a console session, a `303` to the console sign-in that returns here.
//!   Signed in: the consent page naming the client, its redirect host and what it may do.
//! * `POST`: the human's answer with the session's CSRF token; the request is checked again.
//!   Approve: a grant and a single-use code, redirected with `code`, `state` and `iss`
//!   (RFC 9207). Deny: `error=access_denied`.

use std::collections::HashMap;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use latch_core::broker::{ConsentClient, ConsentRequest};
use latch_core::{ApiError, ErrorCode};
use maud::html;

use crate::console::cimd::ClientMetadataFetcher;
use crate::http::console::session::{self};
use crate::http::console::{csrf, error_page, html as page_of, see_other, views};
use crate::http::state::{AppState, ReqMeta};

/// A checked authorization request.
struct AuthzRequest {
    client: ConsentClient,
    redirect_uri: String,
    state: Option<String>,
    code_challenge: String,
    resource: String,
}

/// Why a request is refused: shown as a page (client or redirect URI not trustworthy), or
/// sent back to the client's redirect URI (`error`, RFC 6749 §4.1.2.1).
enum Refusal {
    Page(ApiError),
    Redirect {
        redirect_uri: String,
        state: Option<String>,
        error: &'static str,
        description: String,
    },
}

/// The parameters of a query string or form, refusing a repeated one (RFC 6749 §3.1).
fn params(raw: &[u8]) -> Result<HashMap<String, String>, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(raw)
        .map_err(|_| ApiError::new(ErrorCode::InvalidRequest, "malformed parameters"))?;
    let mut m = HashMap::new();
    for (k, v) in pairs {
        if m.insert(k, v).is_some() {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "a parameter is given more than once (rfc 6749 §3.1)",
            ));
        }
    }
    Ok(m)
}

/// Whether a redirect URI's host is loopback (the client runs on this machine, RFC 8252 §7.3).
fn loopback_redirect(uri: &str) -> bool {
    url::Url::parse(uri).is_ok_and(|u| {
        u.scheme() == "http"
            && match u.host() {
                Some(url::Host::Ipv4(a)) => a.is_loopback(),
                Some(url::Host::Ipv6(a)) => a.is_loopback(),
                Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                None => false,
            }
    })
}

/// Checks an authorization request: the client (metadata document or registration), the
/// redirect URI, then the rest.
async fn check(s: &AppState, p: &HashMap<String, String>) -> Result<AuthzRequest, Refusal> {
    let get = |k: &str| p.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let page = |m: &str| Refusal::Page(ApiError::new(ErrorCode::InvalidRequest, m));
    let client_id = get("client_id").ok_or_else(|| page("client_id is missing"))?;
    let redirect_uri = get("redirect_uri").ok_or_else(|| page("redirect_uri is missing"))?;
    let c = s
        .console
        .as_deref()
        .ok_or_else(|| Refusal::Page(ApiError::new(ErrorCode::NotFound, "no console")))?;
    let (client, uris) = if ClientMetadataFetcher::is_url(client_id) {
        let now = s.broker.clock().now_unix_secs();
        let m = c
            .client_metadata
            .fetch(client_id, now)
            .await
            .map_err(|e| page(&format!("client metadata document refused: {e}")))?;
        let client = ConsentClient {
            client_id: m.client_id,
            client_id_is_url: true,
            client_name: m.client_name,
        };
        (client, m.redirect_uris)
    } else {
        let r = s
            .broker
            .oauth_registered_client(client_id)
            .await
            .map_err(Refusal::Page)?
            .ok_or_else(|| page("unknown client_id"))?;
        let client = ConsentClient {
            client_id: r.client_id,
            client_id_is_url: false,
            client_name: r.client_name,
        };
        (client, r.redirect_uris)
    };
    if !uris.iter().any(|u| u == redirect_uri) {
        return Err(page(
            "redirect_uri is not one of the client's redirect uris",
        ));
    }
    let state = get("state").map(str::to_owned);
    let back = |error: &'static str, d: &str| Refusal::Redirect {
        redirect_uri: redirect_uri.to_owned(),
        state: state.clone(),
        error,
        description: d.to_owned(),
    };
    if get("response_type") != Some("code") {
        return Err(back(
            "unsupported_response_type",
            "only response_type=code is supported",
        ));
    }
    let challenge = get("code_challenge")
        .filter(|c| {
            c.len() == 43
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
        })
        .ok_or_else(|| back("invalid_request", "a pkce s256 code_challenge is required"))?;
    if get("code_challenge_method") != Some("S256") {
        return Err(back(
            "invalid_request",
            "code_challenge_method must be S256 (plain is refused)",
        ));
    }
    let own = format!("{}/mcp", s.base_url);
    let resource = get("resource").unwrap_or(&own);
    if resource != own {
        return Err(back(
            "invalid_target",
            "the only resource this server issues tokens for is its /mcp endpoint",
        ));
    }
    Ok(AuthzRequest {
        client,
        redirect_uri: redirect_uri.to_owned(),
        state,
        code_challenge: challenge.to_owned(),
        resource: resource.to_owned(),
    })
}

/// A redirect to the client with `params` added (and RFC 9207 `iss`).
fn to_client(
    s: &AppState,
    redirect_uri: &str,
    state: Option<&str>,
    params: &[(&str, &str)],
) -> Response {
    let Ok(mut u) = url::Url::parse(redirect_uri) else {
        return error_page(&ApiError::new(
            ErrorCode::InvalidRequest,
            "bad redirect_uri",
        ));
    };
    {
        let mut q = u.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
        if let Some(st) = state {
            q.append_pair("state", st);
        }
        q.append_pair("iss", &s.base_url);
    }
    see_other(u.as_str())
}

fn refuse(s: &AppState, r: Refusal) -> Response {
    match r {
        Refusal::Page(e) => error_page(&e),
        Refusal::Redirect {
            redirect_uri,
            state,
            error,
            description,
        } => to_client(
            s,
            &redirect_uri,
            state.as_deref(),
            &[("error", error), ("error_description", &description)],
        ),
    }
}

/// `GET /console/authorize`.
pub(crate) async fn authorize(
    State(s): State<AppState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let raw = q.unwrap_or_default();
    let p = match params(raw.as_bytes()) {
        Ok(p) => p,
        Err(e) => return error_page(&e),
    };
    let req = match check(&s, &p).await {
        Ok(r) => r,
        Err(r) => return refuse(&s, r),
    };
    let signed = match session::current(&s, &headers).await {
        Ok(Some(x)) => x,
        Ok(None) => {
            let next = format!("/console/authorize?{raw}");
            let q = serde_urlencoded::to_string([("next", next.as_str())]).unwrap_or_default();
            return see_other(&format!("/console/login?{q}"));
        }
        Err(e) => return error_page(&e),
    };
    let token = csrf::token(&s, &signed);
    let mut resp = page_of(StatusCode::OK, consent_page(&s, &signed, &token, &req, &p));
    // The answer to the form is a redirect to the client: browsers check `form-action` on
    // it, so this page allows the redirect URI's origin too (and nothing else).
    if let Some(origin) = url::Url::parse(&req.redirect_uri)
        .ok()
        .map(|u| u.origin().ascii_serialization())
        .filter(|o| o != "null")
    {
        let csp = crate::http::console::CSP.replace(
            "form-action 'self'",
            &format!("form-action 'self' {origin}"),
        );
        if let Ok(v) = HeaderValue::from_str(&csp) {
            resp.headers_mut()
                .insert(header::CONTENT_SECURITY_POLICY, v);
        }
    }
    resp
}

fn consent_page(
    s: &AppState,
    signed: &session::SignedIn,
    token: &str,
    req: &AuthzRequest,
    p: &HashMap<String, String>,
) -> maud::Markup {
    let host = url::Url::parse(&req.redirect_uri)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    let name = req
        .client
        .client_name
        .as_deref()
        .unwrap_or("(unnamed client)");
    let ident = if req.client.client_id_is_url {
        req.client.client_id.clone()
    } else {
        "registered client".to_owned()
    };
    let who = crate::http::console::pages::who(s, signed, token);
    let keys = [
        "response_type",
        "client_id",
        "redirect_uri",
        "state",
        "code_challenge",
        "code_challenge_method",
        "resource",
        "scope",
    ];
    let body = html! {
        h1 { "Allow " (name) " to act for you?" }
        p { "Client: " strong { (name) } " — " code { (ident) } }
        p { "It will receive its answer at " code { (host) } "." }
        p { "If you allow it, it may use Latch's MCP tools as an agent acting for you ("
            (signed.session.human_id) "): open tasks and request access to resources. "
            "Policy decides every request; production resources need a step-up approval by someone "
            "other than you. You can revoke this access at any time." }
        form method="post" action="/console/authorize" {
            input type="hidden" name="csrf" value=(token);
            @for k in keys {
                @if let Some(v) = p.get(k) {
                    input type="hidden" name=(k) value=(v);
                }
            }
            button type="submit" name="decision" value="approve" { "Allow" }
            " "
            button type="submit" name="decision" value="deny" { "Deny" }
        }
    };
    views::page("Allow an MCP client", Some(&who), &body)
}

/// `POST /console/authorize`: the human's answer.
pub(crate) async fn decide(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = match params(&body) {
        Ok(p) => p,
        Err(e) => return error_page(&e),
    };
    let signed = match session::current(&s, &headers).await {
        Ok(Some(x)) => x,
        Ok(None) => {
            return error_page(&ApiError::new(
                ErrorCode::CsrfTokenInvalid,
                "this form did not come from your console session (reload the page and try again)",
            ));
        }
        Err(e) => return error_page(&e),
    };
    if let Err(e) = csrf::check(&s, &signed, p.get("csrf").map(String::as_str)) {
        return error_page(&e);
    }
    let req = match check(&s, &p).await {
        Ok(r) => r,
        Err(r) => return refuse(&s, r),
    };
    let human = signed.session.human();
    let ctx = m.ctx();
    if p.get("decision").map(String::as_str) != Some("approve") {
        if let Err(e) = s
            .broker
            .oauth_consent_denied(&ctx, &human, &req.client.client_id)
            .await
        {
            return error_page(&e);
        }
        return to_client(
            &s,
            &req.redirect_uri,
            req.state.as_deref(),
            &[
                ("error", "access_denied"),
                ("error_description", "the human refused"),
            ],
        );
    }
    let developer_machine = loopback_redirect(&req.redirect_uri);
    let consent = ConsentRequest {
        client: req.client,
        redirect_uri: req.redirect_uri.clone(),
        developer_machine,
        code_challenge: req.code_challenge,
        resource: req.resource,
    };
    match s.broker.oauth_consent(&ctx, &human, consent).await {
        Ok(code) => {
            use secrecy::ExposeSecret;
            to_client(
                &s,
                &req.redirect_uri,
                req.state.as_deref(),
                &[("code", code.expose_secret())],
            )
        }
        Err(e) => error_page(&e),
    }
}
