//! A small client for the server's HTTP API. Every request is bounded in time, and every
//! failure becomes one sentence: unreachable server, wrong token, or the server's message.

use std::time::Duration;

use anyhow::{Result, anyhow};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tether_proto::api::{ErrorBody, SESSION_TOKEN_HEADER};
use url::Url;

/// An API client for one server, optionally authenticated.
#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    /// The server's base URL.
    pub base: Url,
    token: Option<String>,
}

/// A failed API call.
#[derive(Debug, thiserror::Error)]
pub enum ApiCallError {
    /// The server could not be reached.
    #[error("could not reach the tether server at {url}: {reason}")]
    Unreachable {
        /// The base URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The server answered with an error.
    #[error("{message}")]
    Status {
        /// HTTP status.
        status: StatusCode,
        /// The server's sentence.
        message: String,
    },
}

impl ApiCallError {
    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Status { status, .. } => Some(*status),
            Self::Unreachable { .. } => None,
        }
    }
}

impl ApiClient {
    /// A client for `base`, sending `headers` (those of `--header`) with every request.
    pub fn new(base: Url, token: Option<String>, headers: HeaderMap) -> Result<Self> {
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("tether-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| anyhow!("could not set up the HTTP client: {e}"))?;
        Ok(Self { http, base, token })
    }

    /// The same server with another token.
    pub fn with_token(&self, token: String) -> Self {
        Self {
            token: Some(token),
            ..self.clone()
        }
    }

    /// The session token, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    fn url(&self, path: &str) -> Result<Url> {
        self.base
            .join(path)
            .map_err(|e| anyhow!("bad API path {path}: {e}"))
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<reqwest::Response, ApiCallError> {
        let url = self.url(path).map_err(|e| ApiCallError::Unreachable {
            url: self.base.to_string(),
            reason: e.to_string(),
        })?;
        let mut req = self.http.request(method, url);
        if let Some(t) = &self.token {
            req = req.header(SESSION_TOKEN_HEADER, t);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await.map_err(|e| ApiCallError::Unreachable {
            url: self.base.as_str().trim_end_matches('/').to_string(),
            reason: describe(&e),
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        // The detail (why the database refused, what a valid name looks like) goes on
        // a line of its own under the sentence, as Coder's CLI shows it.
        let message = serde_json::from_str::<ErrorBody>(&text)
            .map(|b| match b.detail.trim() {
                "" => b.message,
                detail => format!("{}\n{detail}", b.message),
            })
            .unwrap_or_else(|_| {
                // Not the tether server's error shape: often an access proxy in front of it.
                format!(
                    "the server answered {status}: {} (not an answer of the tether server itself: if a proxy in front of it needs headers, pass them with --header or --header-command)",
                    crate::cmd::agent::first_line(&text)
                )
            });
        Err(ApiCallError::Status { status, message })
    }

    /// GET and decode JSON.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiCallError> {
        let resp = self.send(Method::GET, path, None).await?;
        decode(resp).await
    }

    /// GET, only the status matters.
    pub async fn get_status(&self, path: &str) -> Result<StatusCode, ApiCallError> {
        match self.send(Method::GET, path, None).await {
            Ok(r) => Ok(r.status()),
            Err(ApiCallError::Status { status, .. }) => Ok(status),
            Err(e) => Err(e),
        }
    }

    /// POST JSON and decode JSON.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ApiCallError> {
        let body = serde_json::to_vec(body).map_err(|e| ApiCallError::Status {
            status: StatusCode::BAD_REQUEST,
            message: format!("could not encode the request: {e}"),
        })?;
        let resp = self.send(Method::POST, path, Some(body)).await?;
        decode(resp).await
    }

    /// POST with no body and no answer.
    pub async fn post_empty(&self, path: &str) -> Result<(), ApiCallError> {
        self.send(Method::POST, path, None).await.map(drop)
    }

    /// PUT with no body, and decode JSON.
    pub async fn put<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiCallError> {
        let resp = self.send(Method::PUT, path, None).await?;
        decode(resp).await
    }

    /// DELETE.
    pub async fn delete(&self, path: &str) -> Result<(), ApiCallError> {
        self.send(Method::DELETE, path, None).await.map(drop)
    }
}

async fn decode<T: DeserializeOwned>(resp: reqwest::Response) -> Result<T, ApiCallError> {
    let status = resp.status();
    let bytes = resp.bytes().await.map_err(|e| ApiCallError::Status {
        status,
        message: format!("reading the answer failed: {e}"),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ApiCallError::Status {
        status,
        message: format!("the server's answer was not what this CLI expected ({e}); are the CLI and server versions the same?"),
    })
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    // The innermost cause is the useful one ("Connection refused (os error 111)").
    let mut src: &dyn std::error::Error = e;
    while let Some(next) = src.source() {
        src = next;
    }
    src.to_string()
}

#[cfg(test)]
mod tests {
    use tether_proto::api::route;

    use super::*;

    #[test]
    fn a_workspace_name_cannot_reach_another_route() {
        let api = ApiClient::new(
            Url::parse("http://127.0.0.1:3000/").expect("url"),
            None,
            HeaderMap::new(),
        )
        .expect("client");
        for (name, path) in [
            ("../users/me", "/api/v2/workspaces/..%2Fusers%2Fme"),
            ("../../healthz", "/api/v2/workspaces/..%2F..%2Fhealthz"),
            ("dev?x=1", "/api/v2/workspaces/dev%3Fx%3D1"),
            ("dev", "/api/v2/workspaces/dev"),
        ] {
            let url = api.url(&route::workspace(name).expect(name)).expect("join");
            assert_eq!(url.path(), path, "{name}");
            assert_eq!(url.query(), None, "{name}");
        }
        let e = route::workspace("..").expect_err("a dot segment");
        assert!(e.to_string().contains("\"..\""), "{e}");
    }
}
