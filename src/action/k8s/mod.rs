//! `k8s::` — Kubernetes through the kube crate, one kubeconfig context per region (as operators
//! use `kubectl --context=us-east-1`): get, server-side apply, scale, set env, rollout status
//! and undo, restart, pods, cordon, uncordon, drain.

mod apply;
mod cronjobs;
mod deployments;
mod nodes;
mod objects;
pub use apply::*;
pub use cronjobs::*;
pub use deployments::*;
pub use nodes::*;
pub use objects::*;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DynamicObject, EvictParams, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::GroupVersionKind;
use kube::{Client, Config};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{Action, ActionError, Cx, Dur, ErrorKind, Poll, Spec};
use crate::secret::SecretString;

/// Which cluster: a kubeconfig context and the kubeconfig it is in.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// The kubeconfig context, e.g. "us-east-1".
    pub context: String,
    /// The kubeconfig file (default: $KUBECONFIG or ~/.kube/config).
    pub kubeconfig: Option<String>,
}

static CLIENTS: super::Clients<Cluster, (Client, String)> = super::Clients::new();

/// A client for the context, and the context's default namespace.
async fn client(c: &Cluster, cx: &Cx) -> Result<(Client, String), ActionError> {
    if let Some(held) = CLIENTS.get(c) {
        return Ok(held);
    }
    let kubeconfig = match &c.kubeconfig {
        Some(path) => Kubeconfig::read_from(path),
        None => Kubeconfig::read(),
    }
    .map_err(|e| ActionError::permanent(format!("kubeconfig: {e}")))?;
    let known: Vec<String> = kubeconfig.contexts.iter().map(|n| n.name.clone()).collect();
    if !known.contains(&c.context) {
        return Err(ActionError::permanent(format!(
            "no context '{}' in the kubeconfig{}; it has {}",
            c.context,
            c.kubeconfig
                .as_deref()
                .map(|p| format!(" {p}"))
                .unwrap_or_default(),
            known.join(", ")
        )));
    }
    let options = KubeConfigOptions {
        context: Some(c.context.clone()),
        cluster: None,
        user: None,
    };
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|e| ActionError::permanent(format!("context {}: {e}", c.context)))?;
    config.connect_timeout = Some(cx.timeout.min(Duration::from_secs(10)));
    config.read_timeout = Some(Duration::from_secs(60));
    let ns = config.default_namespace.clone();
    let client = Client::try_from(config)
        .map_err(|e| ActionError::permanent(format!("context {}: {e}", c.context)))?;
    Ok(CLIENTS.keep(c.clone(), (client, ns)))
}

fn kube_error(what: &str, context: &str, e: kube::Error) -> ActionError {
    match e {
        kube::Error::Api(r) => {
            let kind = match r.code {
                429 | 500 | 503 | 504 => ErrorKind::TransientMaybeApplied,
                409 => ErrorKind::TransientMaybeApplied,
                _ => ErrorKind::Permanent,
            };
            let message = if r.code == 404 {
                format!("{what} in {context}: not found ({})", r.message)
            } else {
                format!(
                    "{what} in {context}: {} ({} {})",
                    r.message, r.code, r.reason
                )
            };
            ActionError { message, kind }
        }
        other => {
            let mut text = other.to_string();
            let mut source = std::error::Error::source(&other);
            while let Some(s) = source {
                let more = s.to_string();
                if !text.contains(&more) {
                    text = format!("{text}: {more}");
                }
                source = s.source();
            }
            ActionError::not_sent(format!("{what} in {context}: {text}"))
        }
    }
}

fn revision_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<i64> {
    meta.annotations
        .as_ref()?
        .get("deployment.kubernetes.io/revision")?
        .parse()
        .ok()
}
