//! The dashboard's files, embedded in the binary at build time: one HTML page for every
//! address (`/`, `/jobs/{id}`, `/nodes`, `/submit`; the page's own router picks the view),
//! its stylesheet and its JavaScript modules. Nothing is fetched from anywhere else, and
//! the content security policy says so to the browser.

use axum::extract::Path;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

/// Name, content type, contents.
const FILES: &[(&str, &str, &str)] = &[
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../../dashboard/app.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../dashboard/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_str!("../../dashboard/api.js"),
    ),
    (
        "ui.js",
        "text/javascript; charset=utf-8",
        include_str!("../../dashboard/ui.js"),
    ),
    (
        "jobs.js",
        "text/javascript; charset=utf-8",
        include_str!("../../dashboard/jobs.js"),
    ),
    (
        "job.js",
        "text/javascript; charset=utf-8",
        include_str!("../../dashboard/job.js"),
    ),
    (
        "nodes.js",
        "text/javascript; charset=utf-8",
        include_str!("../../dashboard/nodes.js"),
    ),
    (
        "submit.js",
        "text/javascript; charset=utf-8",
        include_str!("../../dashboard/submit.js"),
    ),
    (
        "icon.svg",
        "image/svg+xml",
        include_str!("../../dashboard/icon.svg"),
    ),
];

const INDEX: &str = include_str!("../../dashboard/index.html");

/// Only this origin: no CDN, no inline script, no outside request of any kind.
const CSP: &str = "default-src 'self'; img-src 'self' data:; media-src 'self'; \
                   style-src 'self'; script-src 'self'; connect-src 'self'; \
                   frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn with_headers(mut response: Response, content_type: &str) -> Response {
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Small files, and a new binary may change them: revalidate each time.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The page, for every dashboard address.
pub async fn page() -> Response {
    with_headers(INDEX.into_response(), "text/html; charset=utf-8")
}

/// One embedded file.
pub async fn asset(Path(file): Path<String>) -> Response {
    match FILES.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => with_headers(body.into_response(), content_type),
        None => corral_http::route_not_found(
            format!("/ui/{}", file.chars().take(100).collect::<String>())
                .parse()
                .unwrap_or_default(),
        )
        .await
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_the_page_imports_is_embedded() {
        let all: String = FILES.iter().map(|(_, _, body)| *body).collect();
        for line in all.lines().chain(INDEX.lines()) {
            for quote in ['"', '\''] {
                if let Some(start) = line.find(&format!("{quote}./")) {
                    let rest = &line[start + 3..];
                    let Some(end) = rest.find(quote) else {
                        continue;
                    };
                    let name = &rest[..end];
                    assert!(
                        FILES.iter().any(|(n, _, _)| *n == name),
                        "`{name}` is imported but not embedded"
                    );
                }
            }
        }
    }

    #[test]
    fn nothing_is_loaded_from_outside() {
        for (name, _, body) in FILES {
            for outside in ["http://", "https://", "//cdn", "@import url("] {
                // An SVG names its XML namespace with an http:// URI; nothing is fetched.
                let allowed = *name == "icon.svg" && outside == "http://";
                assert!(
                    allowed || !body.contains(outside),
                    "{name} mentions {outside}"
                );
            }
        }
        assert!(!INDEX.contains("<script>"), "no inline script");
    }
}
