//! `cloudfront::` — CloudFront cache invalidation through the AWS SDK, with the
//! same credential chain and `endpoint_url` override as Route53.

use std::time::{Duration, Instant};

use aws_sdk_cloudfront::types::{InvalidationBatch, Paths};
use aws_sdk_cloudfront::Client;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Action, ActionError, Cx, Spec};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InvalidateInput {
    /// The distribution's id (E2QWRUHAPOMQZL).
    pub distribution_id: String,
    /// The paths to invalidate, e.g. ["/*"] or ["/index.html", "/api/*"].
    pub paths: Vec<String>,
    /// Wait until CloudFront reports the invalidation completed (default true).
    pub wait: Option<bool>,
    /// Another endpoint for the CloudFront API (moto, LocalStack); default: AWS.
    pub endpoint_url: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Invalidated {
    /// The invalidation's id.
    pub id: String,
    /// InProgress or Completed.
    pub status: String,
}

/// Clients are built once per endpoint.
static CLIENTS: super::Clients<Option<String>, Client> = super::Clients::new();

async fn client(endpoint_url: &Option<String>) -> Client {
    if let Some(c) = CLIENTS.get(endpoint_url) {
        return c;
    }
    let config = super::aws::config(endpoint_url, "us-east-1").await;
    CLIENTS.keep(endpoint_url.clone(), Client::new(&config))
}

fn place(endpoint_url: &Option<String>) -> String {
    endpoint_url.clone().unwrap_or_else(|| "CloudFront".into())
}

action! {
    /// Invalidate paths of a CloudFront distribution and wait until CloudFront completes it
    /// (converges: invalidating twice leaves the cache as once).
    Invalidate(InvalidateInput) -> Invalidated =
        Spec::converge("cloudfront", "invalidate").timeout(900).retries(2)
}

impl Action for Invalidate {
    fn describe(input: &InvalidateInput) -> String {
        format!(
            "invalidate {} in CloudFront distribution {}",
            input.paths.join(" "),
            input.distribution_id
        )
    }

    fn predict(_: &InvalidateInput) -> Invalidated {
        Invalidated {
            id: "(dry-run)".into(),
            status: "Completed".into(),
        }
    }

    async fn run(input: InvalidateInput, cx: Cx) -> Result<Invalidated, ActionError> {
        if input.paths.is_empty() {
            return Err(ActionError::permanent(
                "`paths` is empty: give at least one, e.g. [\"/*\"]",
            ));
        }
        let c = client(&input.endpoint_url).await;
        let at = place(&input.endpoint_url);
        let what = format!("invalidating distribution {}", input.distribution_id);
        let bad = |e: aws_sdk_cloudfront::error::BuildError| {
            ActionError::permanent(format!("{what}: {e}"))
        };
        let paths = Paths::builder()
            .quantity(input.paths.len() as i32)
            .set_items(Some(input.paths.clone()))
            .build()
            .map_err(bad)?;
        let reference = format!(
            "runbook-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        let batch = InvalidationBatch::builder()
            .paths(paths)
            .caller_reference(reference)
            .build()
            .map_err(bad)?;
        let out = c
            .create_invalidation()
            .distribution_id(&input.distribution_id)
            .invalidation_batch(batch)
            .send()
            .await
            .map_err(|e| super::aws::error(&what, &at, e))?;
        let inv = out.invalidation().ok_or_else(|| {
            ActionError::maybe_applied(format!("{what} ({at}): no invalidation in the answer"))
        })?;
        let id = inv.id().to_string();
        let mut status = inv.status().to_string();
        let deadline = Instant::now() + cx.timeout;
        while input.wait.unwrap_or(true) && !status.eq_ignore_ascii_case("completed") {
            if Instant::now() > deadline {
                return Err(ActionError::maybe_applied(format!(
                    "invalidation {id} of distribution {} is still {status} after {}",
                    input.distribution_id,
                    humantime::format_duration(cx.timeout)
                )));
            }
            cx.note(format!("invalidation {id}: {status}"));
            tokio::time::sleep(Duration::from_secs(2)).await;
            let now = c
                .get_invalidation()
                .distribution_id(&input.distribution_id)
                .id(&id)
                .send()
                .await
                .map_err(|e| super::aws::error(&format!("reading invalidation {id}"), &at, e))?;
            status = now
                .invalidation()
                .map(|i| i.status().to_string())
                .unwrap_or(status);
        }
        Ok(Invalidated { id, status })
    }
}
