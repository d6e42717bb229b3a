//! The dashboard: the `site/` front end, built by `build.rs` and embedded in the binary.
//!
//! `/assets/*` are Vite's content-hashed files, cached for good. Every other GET that is
//! not the API's, DERP's, `/healthz` or a path app is a page route of the single-page
//! app and gets `index.html` (never cached, so a new build is picked up at once). What
//! is left is answered with the API's JSON 404.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::api::error::ApiError;

/// One embedded file of the built dashboard.
pub struct SiteFile {
    /// Path relative to the build root, e.g. `assets/index-1a2b3c.js`.
    pub path: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

mod embedded {
    use super::SiteFile;
    include!(concat!(env!("OUT_DIR"), "/site_files.rs"));
}

pub use embedded::FILES;

/// The embedded file at `path` (relative, no leading slash).
pub fn file(path: &str) -> Option<&'static SiteFile> {
    FILES.iter().find(|f| f.path == path)
}

/// The headers every page response carries.
#[derive(Clone)]
struct PageHeaders {
    csp: HeaderValue,
}

/// The dashboard's routes and the fallback for everything no other router matched.
/// `access_url` sets the CSP's WebSocket origin.
pub fn router(access_url: &url::Url) -> Router {
    Router::new()
        .route("/assets/{*path}", get(asset))
        .fallback(fallback)
        .with_state(PageHeaders {
            csp: content_security_policy(access_url),
        })
}

/// The dashboard's CSP: scripts, styles, images and fetches from our own origin only,
/// WebSockets to our own ws(s) origin, and no framing by other sites. xterm.js writes
/// `<style>` elements at run time, hence `'unsafe-inline'` for styles (not scripts).
fn content_security_policy(access_url: &url::Url) -> HeaderValue {
    let origin = access_url.origin().ascii_serialization();
    let ws = origin
        .strip_prefix("https://")
        .map(|h| format!("wss://{h}"))
        .or_else(|| origin.strip_prefix("http://").map(|h| format!("ws://{h}")))
        .unwrap_or_default();
    let csp = format!(
        "default-src 'self'; connect-src 'self' {ws}; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'self'; base-uri 'self'; form-action 'self'"
    );
    HeaderValue::from_str(&csp)
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'self'; frame-ancestors 'self'"))
}

async fn asset(Path(path): Path<String>) -> Response {
    match file(&format!("assets/{path}")) {
        Some(f) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(f.content_type),
                ),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=31536000, immutable"),
                ),
                (
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ),
            ],
            f.body,
        )
            .into_response(),
        None => ApiError::not_found("No such dashboard file.").into_response(),
    }
}

async fn fallback(State(headers): State<PageHeaders>, method: Method, uri: Uri) -> Response {
    let path = uri.path();
    if !(method == Method::GET || method == Method::HEAD) || !is_page_route(path) {
        return ApiError::not_found("No such API route.").into_response();
    }
    // A file at the build root (e.g. /favicon.svg) is itself; any other route is the app.
    let f = match path.strip_prefix('/').and_then(file) {
        Some(f) if !f.path.contains('/') => f,
        _ => match file("index.html") {
            Some(index) => index,
            None => return ApiError::not_found("The dashboard is not built in.").into_response(),
        },
    };
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(f.content_type),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (header::CONTENT_SECURITY_POLICY, headers.csp),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("same-origin"),
            ),
        ],
        f.body,
    )
        .into_response()
}

/// Whether `path` is one of the dashboard's page routes, i.e. owned by no other part of
/// the server: not the API, DERP, `/healthz`, the assets, nor a path app
/// (`/@{owner}/{workspace}/apps/…`).
pub fn is_page_route(path: &str) -> bool {
    let under = |prefix: &str| {
        path == prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    if under("/api") || under("/derp") || under("/healthz") || under("/assets") {
        return false;
    }
    let mut segments = path.trim_start_matches('/').split('/');
    let is_app = matches!(
        (segments.next(), segments.next(), segments.next()),
        (Some(owner), Some(_workspace), Some("apps")) if owner.starts_with('@')
    );
    !is_app
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_routes() {
        for p in [
            "/",
            "/login",
            "/setup",
            "/health",
            "/@alice/dev",
            "/@alice/dev/terminal",
            "/apiary",
            "/derpy",
            "/@alice/dev/appsx",
        ] {
            assert!(is_page_route(p), "{p} should be a page route");
        }
        for p in [
            "/api",
            "/api/v2/nonexistent",
            "/derp",
            "/derp/probe",
            "/healthz",
            "/assets/x.js",
            "/@alice/dev/apps",
            "/@alice/dev/apps/code/",
        ] {
            assert!(!is_page_route(p), "{p} should not be a page route");
        }
    }

    #[test]
    fn csp_names_our_websocket_origin() {
        let csp = |u: &str| {
            content_security_policy(&url::Url::parse(u).unwrap_or_else(|e| panic!("{u}: {e}")))
                .to_str()
                .map(str::to_string)
                .unwrap_or_default()
        };
        assert!(csp("http://127.0.0.1:3000/").contains("connect-src 'self' ws://127.0.0.1:3000;"));
        assert!(
            csp("https://tether.example.com/")
                .contains("connect-src 'self' wss://tether.example.com;")
        );
        assert!(csp("https://tether.example.com/").contains("frame-ancestors 'self'"));
    }

    #[test]
    fn the_build_is_embedded() {
        let index = file("index.html").map(|f| String::from_utf8_lossy(f.body).into_owned());
        assert!(index.is_some_and(|i| i.contains("/assets/")));
        assert!(
            FILES
                .iter()
                .any(|f| f.path.starts_with("assets/") && f.path.ends_with(".js"))
        );
    }
}
