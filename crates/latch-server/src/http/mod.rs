//! The HTTP edge: axum handlers that extract the caller, validate the body, call one
//! [`Broker`](latch_core::Broker) method and map the result.
//!
//! * [`state`]: [`AppState`] (ports only) and per-request metadata;
//! * [`error`]: the error body and [`AppError`];
//! * [`extract`]: body/query extractors, bearer token, the workload/human call shape;
//! * [`middleware`]: request id, source address, access log;
//! * [`body_guard`]: request bodies: `413` for an oversize declared length, `408` past
//!   `[http] body_timeout`;
//! * [`dpop`]: DPoP proof verification (RFC 9449);
//! * [`routes`]: one file per resource;
//! * [`mcp`]: the MCP tools and the `/mcp` edge;
//! * [`console`]: the approval console's HTML pages and sign-in (`/console/`);
//! * [`openapi`]: the OpenAPI document; [`router()`]: the whole API, testable with
//!   `tower::ServiceExt::oneshot`.
//!
//! Inside the crate, modules name each other by their full path (`crate::http::state::…`),
//! never through the re-exports below; `tests/module_graph.rs` checks that no module imports
//! one that imports it back.

pub mod body_guard;
pub mod console;
pub mod dpop;
pub mod error;
pub mod extract;
pub mod mcp;
pub mod middleware;
pub mod openapi;
pub mod router;
pub mod routes;
pub mod state;

pub use error::{AppError, ErrorBody, ErrorDetail};
pub use openapi::ApiDoc;
pub use router::router;
pub use state::{AppState, ReqMeta, ScanSettings};
