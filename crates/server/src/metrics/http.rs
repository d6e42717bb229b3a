//! Requests to the HTTP API, by route template (never the raw path, so the label values
//! are bounded by the routes that exist), method and status code; requests in flight;
//! and time to the response by route.

use std::borrow::Cow;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The route label of a request no route matched (dashboard pages and 404s).
pub const FALLBACK: &str = "fallback";

/// Labels of a counted request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The HTTP method; methods outside the standard ones are `other`.
    pub method: &'static str,
    /// The route template, e.g. `/api/v2/workspaces/{name}`, or [`FALLBACK`].
    pub route: Cow<'static, str>,
    /// The status code.
    pub code: u16,
}

/// Labels of the time histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// As in [`RequestLabels::route`].
    pub route: Cow<'static, str>,
}

fn duration_histogram() -> Histogram {
    // 1 ms to 16 s, ×4 apart: API calls, argon2 logins and slow upgrades alike.
    Histogram::new(exponential_buckets(0.001, 4.0, 8))
}

/// The HTTP metrics; clones share them.
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    in_flight: Gauge,
    duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            in_flight: Gauge::default(),
            duration: Family::new_with_constructor(duration_histogram),
        }
    }
}

impl HttpMetrics {
    /// Registers the metrics on `registry` (prefixed `tether_` by the caller).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route template and status code.",
            self.requests.clone(),
        );
        registry.register(
            "http_requests_in_flight",
            "HTTP requests being handled now.",
            self.in_flight.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from a request to its response head, by route template.",
            self.duration.clone(),
        );
    }

    /// `app` with this middleware around every route and the fallback.
    pub fn layer(&self, app: Router) -> Router {
        app.layer(axum::middleware::from_fn_with_state(self.clone(), track))
    }
}

/// Decrements the in-flight gauge however the request ends (a client that hangs up
/// drops the handler's future).
struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

async fn track(
    axum::extract::State(m): axum::extract::State<HttpMetrics>,
    req: Request,
    next: Next,
) -> Response {
    let route: Cow<'static, str> = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(Cow::Borrowed(FALLBACK), |p| {
            Cow::Owned(p.as_str().to_owned())
        });
    let method = method_label(req.method());
    m.in_flight.inc();
    let guard = InFlight(m.in_flight.clone());
    let start = Instant::now();
    let resp = next.run(req).await;
    drop(guard);
    m.duration
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(start.elapsed().as_secs_f64());
    m.requests
        .get_or_create(&RequestLabels {
            method,
            route,
            code: resp.status().as_u16(),
        })
        .inc();
    resp
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use axum::body::Body;
    use axum::routing::get;
    use tower_service::Service;

    use super::*;

    async fn call(app: &mut Router, method: &str, uri: &str) -> u16 {
        let req = axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap();
        app.call(req).await.unwrap().status().as_u16()
    }

    #[tokio::test]
    async fn requests_are_counted_by_route_template_not_by_path() {
        let m = HttpMetrics::default();
        let app = Router::new()
            .route("/things/{name}", get(|| async { "x" }))
            .fallback(|| async { (axum::http::StatusCode::NOT_FOUND, "no") });
        let mut app = m.layer(app);
        for name in ["a", "b", "c"] {
            assert_eq!(call(&mut app, "GET", &format!("/things/{name}")).await, 200);
        }
        assert_eq!(call(&mut app, "POST", "/things/a").await, 405);
        for path in ["/x", "/y/z", "/../etc"] {
            assert_eq!(call(&mut app, "GET", path).await, 404);
        }
        assert_eq!(call(&mut app, "BREW", "/nothing").await, 404);

        let mut registry = Registry::with_prefix("tether");
        m.register(&mut registry);
        let text = tether_metrics::encode(&registry);
        let s = tether_metrics::text::parse(&text).unwrap();
        let n = |labels: &[(&str, &str)]| s.value("tether_http_requests_total", labels);
        let route = ("route", "/things/{name}");
        assert_eq!(n(&[("method", "GET"), route, ("code", "200")]), Some(3.0));
        assert_eq!(n(&[("method", "POST"), route, ("code", "405")]), Some(1.0));
        assert_eq!(
            n(&[("method", "GET"), ("route", FALLBACK), ("code", "404")]),
            Some(3.0)
        );
        assert_eq!(
            n(&[("method", "other"), ("route", FALLBACK), ("code", "404")]),
            Some(1.0)
        );
        // Four series, whatever the paths were.
        assert_eq!(s.samples("tether_http_requests_total").count(), 4, "{text}");
        assert_eq!(s.value("tether_http_requests_in_flight", &[]), Some(0.0));
        assert_eq!(
            s.value("tether_http_request_duration_seconds_count", &[route]),
            Some(4.0)
        );
    }
}
