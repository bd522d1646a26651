//! Credentials (docs/remote-farm-protocol.md, "Credentials"): tokens made, hashed and
//! checked. A token is 32 random bytes shown once as `corral_` + base64url; the store
//! keeps only its SHA-256, and a presented token is found by that hash (so nothing is
//! compared byte by byte against a secret). [`require_token`] is the layer on the router
//! that checks every call but the probes and the dashboard's static files.

use crate::error::ApiError;
use crate::orchestrator::Orchestrator;
use crate::store::{Store, StoreError, TokenKind, TokenRecord};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use corral_core::Problem;
use corral_http::ProblemResponse;
use sha2::{Digest, Sha256};

/// What every token starts with, so one pasted in the wrong place is recognisable.
pub const TOKEN_PREFIX: &str = "corral_";

/// 32 random bytes from the operating system, as base64url without padding (43 characters).
pub fn random_secret() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(std::io::Error::other)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// A new token's text: `corral_` + 43 characters of base64url.
pub fn new_token() -> std::io::Result<String> {
    Ok(format!("{TOKEN_PREFIX}{}", random_secret()?))
}

/// The SHA-256 of a token's text, as 64 lowercase hex characters (what the store keeps).
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read random bytes: {0}")]
    Random(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Makes a token of `kind`, stores its hash, and answers the token (shown only now).
pub async fn create_token(
    store: &dyn Store,
    kind: TokenKind,
    name: &str,
) -> Result<(String, TokenRecord), TokenError> {
    let token = new_token()?;
    let record = store.create_token(kind, &token_hash(&token), name).await?;
    Ok((token, record))
}

/// The first start of a farm that needs tokens: when the store holds none, makes a
/// client token and a join token and answers them (to print once); `None` otherwise.
pub async fn first_tokens(store: &dyn Store) -> Result<Option<(String, String)>, TokenError> {
    if !store.tokens().await?.is_empty() {
        return Ok(None);
    }
    let (client, _) = create_token(store, TokenKind::Client, "first client").await?;
    let (join, _) = create_token(store, TokenKind::Join, "first join").await?;
    Ok(Some((client, join)))
}

/// Who made a checked call, for handlers that answer by kind (a node's join).
#[derive(Debug, Clone)]
pub struct Caller {
    pub kind: TokenKind,
    /// The token's name: a node token's is its node's id.
    pub name: String,
}

/// Routes anyone may call: the probes, and the dashboard's page and static files (the
/// page then asks for a token when the API answers 401).
fn is_open(method: &Method, path: &str) -> bool {
    if !(method == Method::GET || method == Method::HEAD) {
        return false;
    }
    matches!(
        path,
        "/" | "/healthz" | "/readyz" | "/jobs" | "/nodes" | "/submit"
    ) || path.starts_with("/ui/")
        || path
            .strip_prefix("/jobs/")
            .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'))
}

/// What a token of `kind` may call. Client tokens: everything. Join tokens: joining.
/// Node tokens: a node's own calls (registration refresh, manifests, blobs, frame uploads).
fn allows(kind: TokenKind, method: &Method, path: &str) -> bool {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let join = method == Method::POST && path == "/api/v1/nodes";
    match kind {
        TokenKind::Client => true,
        TokenKind::Join => join,
        TokenKind::Node => {
            let read = method == Method::GET || method == Method::HEAD;
            join || match segments.as_slice() {
                ["api", "v1", "manifests", _] => read,
                ["api", "v1", "blobs", hash] => read && *hash != "missing",
                ["api", "v1", "jobs", _, "frames", _] => method == Method::PUT,
                _ => false,
            }
        }
    }
}

/// The token a request carries: `Authorization: Bearer`, or (for the dashboard's media
/// and the event stream, which cannot set headers) the `token` query parameter.
fn presented(req: &Request) -> Option<String> {
    if let Some(value) = req.headers().get(header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_string());
    }
    // Only where a header cannot be set: reads of the event stream and of the dashboard's
    // media (a token in any other URL would end up in logs and histories for nothing).
    if !query_token_allowed(req.method(), req.uri().path()) {
        return None;
    }
    req.uri().query()?.split('&').find_map(|pair| {
        pair.strip_prefix("token=")
            .map(|t| t.replace("%5F", "_").replace("%2D", "-"))
    })
}

/// Where `?token=` counts: `GET`/`HEAD` of the event stream and of a job's media (frame
/// images, thumbnails, the preview video, a task's log), which `EventSource`, `<img>` and
/// `<video>` fetch without headers.
fn query_token_allowed(method: &Method, path: &str) -> bool {
    if !(method == Method::GET || method == Method::HEAD) {
        return false;
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    path == "/api/v1/events"
        || matches!(
            segments.as_slice(),
            ["api", "v1", "jobs", _, ..]
                if segments.last().is_some_and(|last| {
                    matches!(*last, "image" | "thumbnail" | "preview" | "preview.mp4" | "log")
                })
        )
}

/// `uri` without its `token` query parameter, so routes that refuse unknown parameters
/// never see it.
fn without_token(uri: &Uri) -> Option<Uri> {
    let query = uri.query()?;
    if !query.split('&').any(|p| p.starts_with("token=")) {
        return None;
    }
    let rest: Vec<&str> = query
        .split('&')
        .filter(|p| !p.starts_with("token="))
        .collect();
    let path_and_query = if rest.is_empty() {
        uri.path().to_string()
    } else {
        format!("{}?{}", uri.path(), rest.join("&"))
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = path_and_query.parse().ok();
    Uri::from_parts(parts).ok()
}

fn unauthorized(detail: &str) -> Response {
    let mut response =
        ProblemResponse(Problem::new(401, "Unauthorized").with_detail(detail)).into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

fn forbidden(detail: String) -> Response {
    ProblemResponse(Problem::new(403, "Forbidden").with_detail(detail)).into_response()
}

/// `app` behind [`require_token`] when the orchestrator requires tokens, else as it is.
/// Every route of `app` is checked (but [`is_open`]'s), its fallback included.
pub fn protect(o: Orchestrator, app: axum::Router) -> axum::Router {
    if o.config().auth {
        app.layer(axum::middleware::from_fn_with_state(o, require_token))
    } else {
        app
    }
}

/// The layer on the router when the farm needs tokens: a missing or unknown token is a
/// `401` with `WWW-Authenticate: Bearer`, a revoked one or one of the wrong kind a `403`,
/// each with a problem body and before any handler runs (so nothing changes).
pub async fn require_token(
    State(o): State<Orchestrator>,
    mut req: Request,
    next: Next,
) -> Response {
    if is_open(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    let Some(token) = presented(&req) else {
        return unauthorized("this farm requires a token, sent as `Authorization: Bearer TOKEN`");
    };
    let record = match o.store().token_by_hash(&token_hash(&token)).await {
        Ok(Some(record)) => record,
        Ok(None) => return unauthorized("the token is not known to this farm"),
        Err(e) => return ApiError::Store(e).into_response(),
    };
    if record.revoked.is_some() {
        return forbidden(format!("token {} was revoked", record.id));
    }
    if !allows(record.kind, req.method(), req.uri().path()) {
        return forbidden(format!(
            "a {} token may not call {} {}",
            record.kind.name(),
            req.method(),
            req.uri().path()
        ));
    }
    if let Some(uri) = without_token(req.uri()) {
        *req.uri_mut() = uri;
    }
    req.extensions_mut().insert(Caller {
        kind: record.kind,
        name: record.name,
    });
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_look_as_documented_and_hash_to_hex() {
        let token = new_token().expect("random");
        assert!(token.starts_with("corral_"));
        assert_eq!(token.len(), "corral_".len() + 43);
        assert_ne!(token, new_token().expect("random"));
        let hash = token_hash("corral_x");
        assert_eq!(hash.len(), 64);
        assert!(hash
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    }

    #[test]
    fn kinds_reach_only_their_routes() {
        let (get, post, put) = (Method::GET, Method::POST, Method::PUT);
        assert!(allows(TokenKind::Client, &get, "/api/v1/jobs"));
        assert!(allows(TokenKind::Join, &post, "/api/v1/nodes"));
        assert!(!allows(TokenKind::Join, &get, "/api/v1/nodes"));
        assert!(!allows(TokenKind::Join, &get, "/api/v1/jobs"));
        assert!(allows(TokenKind::Node, &post, "/api/v1/nodes"));
        assert!(allows(TokenKind::Node, &get, "/api/v1/manifests/ab"));
        assert!(allows(TokenKind::Node, &get, "/api/v1/blobs/ab"));
        assert!(!allows(TokenKind::Node, &post, "/api/v1/blobs/missing"));
        assert!(allows(TokenKind::Node, &put, "/api/v1/jobs/j/frames/3"));
        assert!(!allows(TokenKind::Node, &get, "/api/v1/jobs/j/frames/3"));
        assert!(!allows(TokenKind::Node, &post, "/api/v1/jobs"));
        assert!(
            is_open(&get, "/healthz") && is_open(&get, "/jobs/abc") && is_open(&get, "/ui/app.js")
        );
        assert!(!is_open(&get, "/api/v1/jobs") && !is_open(&get, "/metrics"));
        assert!(!is_open(&post, "/"));
    }

    #[test]
    fn the_token_parameter_is_taken_off_the_query() {
        let uri: Uri = "/api/v1/events?token=corral_x&since=3"
            .parse()
            .expect("uri");
        assert_eq!(
            without_token(&uri).expect("changed").to_string(),
            "/api/v1/events?since=3"
        );
        let uri: Uri = "/api/v1/events?token=corral_x".parse().expect("uri");
        assert_eq!(
            without_token(&uri).expect("changed").to_string(),
            "/api/v1/events"
        );
        assert!(without_token(&"/a?b=1".parse().expect("uri")).is_none());
    }
}
