//! `http::` — requests against HTTP endpoints, and health polling.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::world::{HealthState, Part, World};
use super::{Action, ActionError, Cx, Dur, ErrorKind, Poll, Spec, StatusSpec};
use crate::secret::SecretString;

/// The most of a response body the engine keeps.
pub const MAX_BODY: usize = 1 << 20;

input! {
    http:
    pub struct GetInput {
        /// Status codes that count as success: one code or a list (default: any 2xx).
        pub expect_status: Option<StatusSpec>,
    }
}

input! {
    http:
    pub struct PostInput {
        /// A text body (give `body` or `json`, not both).
        pub body: Option<String>,
        /// A JSON body, sent with content-type application/json.
        pub json: Option<Value>,
        /// Status codes that count as success: one code or a list (default: any 2xx).
        pub expect_status: Option<StatusSpec>,
    }
}

/// What an HTTP request returned.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// Response headers (lower-case names).
    pub headers: BTreeMap<String, String>,
    /// The body as text (at most 1 MiB).
    pub body: String,
    /// The body parsed as JSON, when it is JSON.
    pub json: Option<Value>,
    /// Time until the whole response was read, in milliseconds.
    pub latency_ms: u64,
}

fn predicted_response(expect: &Option<StatusSpec>) -> Response {
    Response {
        status: StatusSpec::first(expect),
        headers: BTreeMap::new(),
        body: String::new(),
        json: None,
        latency_ms: 0,
    }
}

/// Describes a reqwest error by its causes, without the URL (it may carry a secret).
pub(crate) fn error_text(e: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.contains(&text) {
            parts.push(text);
        }
        source = s.source();
    }
    let head = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "error reading the response"
    } else {
        "request failed"
    };
    if parts.is_empty() {
        head.to_string()
    } else {
        format!("{head}: {}", parts.join(": "))
    }
}

pub(crate) fn classify(e: &reqwest::Error) -> ErrorKind {
    if e.is_connect() {
        ErrorKind::TransientNotSent
    } else {
        ErrorKind::TransientMaybeApplied
    }
}

pub(crate) struct Request<'a> {
    pub method: reqwest::Method,
    pub url: &'a SecretString,
    pub headers: &'a BTreeMap<String, SecretString>,
    pub body: Option<String>,
    pub json: Option<&'a Value>,
    pub timeout: Duration,
}

impl<'a> Request<'a> {
    /// A GET that gives up after `timeout`.
    pub fn get(
        url: &'a SecretString,
        headers: &'a BTreeMap<String, SecretString>,
        timeout: Duration,
    ) -> Self {
        Request {
            method: reqwest::Method::GET,
            url,
            headers,
            body: None,
            json: None,
            timeout,
        }
    }

    /// A POST of a text body or a JSON one that gives up after `timeout`.
    pub fn post(
        url: &'a SecretString,
        headers: &'a BTreeMap<String, SecretString>,
        body: Option<String>,
        json: Option<&'a Value>,
        timeout: Duration,
    ) -> Self {
        Request {
            method: reqwest::Method::POST,
            body,
            json,
            ..Request::get(url, headers, timeout)
        }
    }
}

/// Sends a request and reads at most [`MAX_BODY`] of the answer.
pub(crate) async fn send(cx: &Cx, req: Request<'_>) -> Result<Response, ActionError> {
    let shown = req.url.shown();
    let url = req.url.reveal().map_err(ActionError::permanent)?;
    let mut builder = cx.http.request(req.method, &url).timeout(req.timeout);
    for (name, value) in req.headers {
        builder = builder.header(name, value.reveal().map_err(ActionError::permanent)?);
    }
    if let Some(json) = req.json {
        builder = builder.json(json);
    } else if let Some(body) = req.body {
        builder = builder.body(body);
    }
    let started = Instant::now();
    let mut resp = builder.send().await.map_err(|e| ActionError {
        message: if e.is_timeout() {
            // Which limit ran out says what to change: the call's `timeout`, or the endpoint.
            format!(
                "{shown}: no answer within {}",
                super::poll::limit_text(req.timeout)
            )
        } else {
            format!("{shown}: {}", error_text(&e))
        },
        kind: classify(&e),
    })?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_BODY.saturating_sub(body.len());
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) => break,
            Err(e) => {
                return Err(ActionError::maybe_applied(format!(
                    "{shown}: {}",
                    error_text(&e)
                )));
            }
        }
    }
    let body = String::from_utf8_lossy(&body).into_owned();
    let json = serde_json::from_str(&body).ok();
    Ok(Response {
        status,
        headers,
        body,
        json,
        latency_ms: started.elapsed().as_millis() as u64,
    })
}

fn check_status(
    shown: &str,
    resp: &Response,
    expect: &Option<StatusSpec>,
) -> Result<(), ActionError> {
    if StatusSpec::accepts(expect, resp.status) {
        return Ok(());
    }
    let mut snippet: String = resp.body.chars().take(200).collect();
    if resp.body.len() > snippet.len() {
        snippet.push('…');
    }
    let message = format!(
        "{shown} answered {} (expected {}){}",
        resp.status,
        StatusSpec::describe(expect),
        if snippet.trim().is_empty() {
            String::new()
        } else {
            format!(": {}", snippet.trim())
        }
    );
    // A 5xx may pass; anything else will not change by retrying.
    Err(if resp.status >= 500 {
        ActionError::maybe_applied(message)
    } else {
        ActionError::permanent(message)
    })
}

action! {
    /// GET a URL and return its status, headers and body; fails on an unexpected status.
    Get(GetInput) -> Response = Spec::read("http", "get").primary("url")
}

impl Action for Get {
    fn describe(input: &GetInput) -> String {
        format!("GET {}", input.url.shown())
    }

    fn predict(input: &GetInput) -> Response {
        predicted_response(&input.expect_status)
    }

    fn predict_in(input: &GetInput, world: &World) -> Option<Result<Response, ActionError>> {
        let (place, part) = world.endpoint_of(&input.url)?;
        let shown = input.url.shown();
        let why = world.why();
        let mut resp = predicted_response(&input.expect_status);
        match (place.health, part) {
            (Some(HealthState::Slow), Part::Health) => {
                return Some(Err(ActionError::maybe_applied(format!(
                    "timed out: {shown} answers after 15 s ({why})"
                ))))
            }
            (Some(HealthState::Failing), Part::Health) => resp.status = 503,
            (health, Part::Metrics) => {
                let rate = if health == Some(HealthState::Failing) {
                    0.5
                } else {
                    0.0
                };
                resp.json = Some(serde_json::json!({ "error_rate": rate }));
                resp.body = resp
                    .json
                    .as_ref()
                    .map(|j| j.to_string())
                    .unwrap_or_default();
            }
            _ => {}
        }
        Some(check_status(&shown, &resp, &input.expect_status).map(|_| resp))
    }

    async fn run(input: GetInput, cx: Cx) -> Result<Response, ActionError> {
        let resp = send(&cx, Request::get(&input.url, &input.headers, cx.timeout)).await?;
        check_status(&input.url.shown(), &resp, &input.expect_status)?;
        Ok(resp)
    }
}

action! {
    /// POST a text or JSON body to a URL; fails on an unexpected status.
    Post(PostInput) -> Response = Spec::change("http", "post").timeout(30)
}

impl Action for Post {
    fn describe(input: &PostInput) -> String {
        let body = match (&input.json, &input.body) {
            (Some(j), _) => format!(" (JSON, {} bytes)", j.to_string().len()),
            (None, Some(b)) => format!(" ({} bytes)", b.len()),
            _ => String::new(),
        };
        format!("POST {}{body}", input.url.shown())
    }

    fn predict(input: &PostInput) -> Response {
        predicted_response(&input.expect_status)
    }

    async fn run(input: PostInput, cx: Cx) -> Result<Response, ActionError> {
        if input.body.is_some() && input.json.is_some() {
            return Err(ActionError::permanent(
                "give either `body` or `json`, not both",
            ));
        }
        let json = input
            .json
            .as_ref()
            .map(crate::secret::reveal_json)
            .transpose()
            .map_err(ActionError::permanent)?;
        let req = Request::post(
            &input.url,
            &input.headers,
            input.body.clone(),
            json.as_ref(),
            cx.timeout,
        );
        let resp = send(&cx, req).await?;
        check_status(&input.url.shown(), &resp, &input.expect_status)?;
        Ok(resp)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum Until {
    /// Wait for N consecutive healthy answers.
    #[default]
    Healthy,
    /// Wait for N consecutive failures (detect an outage).
    Unhealthy,
}

input! {
    http:
    pub struct WaitHealthyInput {
        /// Status codes that count as healthy (default: any 2xx).
        pub expect_status: Option<StatusSpec>,
        /// "healthy" (default) waits for successes; "unhealthy" waits for failures.
        #[serde(default)]
        pub wait_for: Until,
        /// How many checks in a row must agree (default 3).
        #[serde(default = "default_consecutive")]
        pub consecutive: u32,
        /// Time between checks (default "2s").
        #[serde(default = "Dur::ms::<2000>")]
        pub interval: Dur,
        /// A check slower than this counts as a failure (default "10s").
        #[serde(default = "Dur::ms::<10000>")]
        pub max_latency: Dur,
    }
}

fn default_consecutive() -> u32 {
    3
}

/// Where a health wait ended.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct HealthReport {
    /// Whether the endpoint was healthy at the end.
    pub healthy: bool,
    /// How many checks were made.
    pub checks: u32,
    /// The last status code, if any answer came.
    pub last_status: Option<u16>,
    /// The last check's latency in milliseconds.
    pub last_latency_ms: u64,
    /// Why the last failing check failed.
    pub last_error: Option<String>,
}

action! {
    /// Poll a health endpoint until N consecutive checks are healthy (or, with wait_for:
    /// "unhealthy", failing).
    WaitHealthy(WaitHealthyInput) -> HealthReport =
        Spec::read("http", "wait_healthy").primary("url").timeout(300).retries(0)
}

impl Action for WaitHealthy {
    /// A wait for an endpoint to fail is answered when it is down.
    const ANSWERS_FOR_DOWN: bool = true;

    fn describe(input: &WaitHealthyInput) -> String {
        let what = match input.wait_for {
            Until::Healthy => "healthy",
            Until::Unhealthy => "failing",
        };
        format!(
            "wait until {} is {what} ({} checks in a row)",
            input.url.shown(),
            input.consecutive
        )
    }

    fn predict(input: &WaitHealthyInput) -> HealthReport {
        HealthReport {
            healthy: input.wait_for == Until::Healthy,
            checks: input.consecutive,
            last_status: Some(StatusSpec::first(&input.expect_status)),
            last_latency_ms: 0,
            last_error: None,
        }
    }

    fn predict_in(
        input: &WaitHealthyInput,
        world: &World,
    ) -> Option<Result<HealthReport, ActionError>> {
        let (place, part) = world.endpoint_of(&input.url)?;
        if part != Part::Health {
            return None;
        }
        let ok = place.health == Some(HealthState::Ok);
        let want_healthy = input.wait_for == Until::Healthy;
        let (status, latency, error) = match place.health {
            Some(HealthState::Failing) => (Some(503), 0, Some("status 503".to_string())),
            Some(HealthState::Slow) => (Some(200), 15_000, Some("answered after 15 s".into())),
            Some(HealthState::Down) => (None, 0, Some("does not answer".into())),
            _ => (Some(StatusSpec::first(&input.expect_status)), 0, None),
        };
        if ok != want_healthy {
            let what = if want_healthy { "healthy" } else { "failing" };
            return Some(Err(ActionError::permanent(format!(
                "{} did not become {what}: {} ({})",
                input.url.shown(),
                error.as_deref().unwrap_or("it stays healthy"),
                world.why()
            ))));
        }
        Some(Ok(HealthReport {
            healthy: ok,
            checks: input.consecutive,
            last_status: status,
            last_latency_ms: latency,
            last_error: error,
        }))
    }

    async fn run(input: WaitHealthyInput, cx: Cx) -> Result<HealthReport, ActionError> {
        let shown = input.url.shown();
        let poll = Poll::new(&cx, input.interval.0);
        let want_healthy = input.wait_for == Until::Healthy;
        let need = input.consecutive.max(1);
        let mut streak = 0;
        let mut report = HealthReport {
            healthy: false,
            checks: 0,
            last_status: None,
            last_latency_ms: 0,
            last_error: None,
        };
        let mut recent: Vec<String> = Vec::new();
        loop {
            let req = Request::get(&input.url, &input.headers, input.max_latency.0);
            let started = Instant::now();
            let outcome = send(&cx, req).await;
            report.checks += 1;
            report.last_latency_ms = started.elapsed().as_millis() as u64;
            let healthy = match outcome {
                Ok(resp) => {
                    report.last_status = Some(resp.status);
                    if !StatusSpec::accepts(&input.expect_status, resp.status) {
                        report.last_error = Some(format!("status {}", resp.status));
                        false
                    } else if started.elapsed() > input.max_latency.0 {
                        report.last_error = Some(format!("slow: {} ms", report.last_latency_ms));
                        false
                    } else {
                        report.last_error = None;
                        true
                    }
                }
                Err(e) => {
                    report.last_status = None;
                    report.last_error = Some(
                        e.message
                            .trim_start_matches(&format!("{shown}: "))
                            .to_string(),
                    );
                    false
                }
            };
            report.healthy = healthy;
            recent.push(report.last_error.clone().unwrap_or_else(|| "ok".into()));
            if recent.len() > 3 {
                recent.remove(0);
            }
            streak = if healthy == want_healthy {
                streak + 1
            } else {
                0
            };
            cx.note(format!(
                "check {}: {} ({streak}/{need})",
                report.checks,
                recent.last().unwrap()
            ));
            if streak >= need {
                return Ok(report);
            }
            poll.pause(&cx, |limit| {
                let what = if want_healthy { "healthy" } else { "failing" };
                format!(
                    "{shown} was not {what} for {need} checks in a row within {limit} ({} checks; last: {})",
                    report.checks,
                    recent.join(", ")
                )
            })
            .await?;
        }
    }
}
