//! What the AWS actions (Route53, CloudFront) share: the SDK configuration — the standard
//! credential chain, rustls with ring, an endpoint override for moto or LocalStack — and how
//! an SDK error reads and is classified.

// Every SDK crate re-exports the same smithy error types; these come through Route53's.
use aws_sdk_route53::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use super::{ActionError, ErrorKind};

/// The SDK configuration for an endpoint (default: AWS) and a signing region.
pub(crate) async fn config(endpoint_url: &Option<String>, region: &str) -> aws_config::SdkConfig {
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http)
        .region(aws_config::Region::new(region.to_string()));
    if let Some(url) = endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

/// An SDK error as the operator reads it — the service's code and message, or the causes of a
/// failure to reach it, or that no credentials could be loaded — classified for retries:
/// throttling and unavailability may pass, the service's refusals do not.
pub(crate) fn error<E, R>(what: &str, place: &str, e: SdkError<E, R>) -> ActionError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let kind = match &e {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => ErrorKind::TransientNotSent,
        SdkError::ServiceError(s) => match s.err().code() {
            Some("Throttling" | "PriorRequestNotComplete" | "ServiceUnavailable") => {
                ErrorKind::TransientMaybeApplied
            }
            _ => ErrorKind::Permanent,
        },
        SdkError::ResponseError(_) => ErrorKind::TransientMaybeApplied,
        _ => ErrorKind::Permanent,
    };
    let detail = match e.as_service_error() {
        Some(s) => format!(
            "{}: {}",
            s.code().unwrap_or("error"),
            s.message().unwrap_or("")
        ),
        None => {
            let full = DisplayErrorContext(&e).to_string();
            if full.contains("loading credentials") || full.contains("no credentials") {
                "no AWS credentials could be loaded: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
                 AWS_PROFILE, or run where a role provides them"
                    .to_string()
            } else {
                // The causes, without the debug dump of the request that follows them.
                full.split(" (DispatchFailure")
                    .next()
                    .unwrap_or(&full)
                    .to_string()
            }
        }
    };
    ActionError {
        message: format!("{what} ({place}): {detail}"),
        kind,
    }
}
