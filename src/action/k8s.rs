//! `k8s::` — Kubernetes through the kube crate, one kubeconfig context per region (as the seeds
//! use `kubectl --context=us-east-1`): get, server-side apply, scale, set env, rollout status
//! and undo, restart, pods, cordon, uncordon, drain.

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

use super::{Action, ActionError, Cx, Dur, ErrorKind, Spec};
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

// ---- get and pods --------------------------------------------------------------------------

input! {
    k8s:
    pub struct GetInput {
        /// The kind: deployment, pod, node, service, configmap, replicaset, namespace, ...
        pub kind: String,
        /// One object by name (default: all that match).
        pub name: Option<String>,
        /// The namespace (default: the context's).
        pub namespace: Option<String>,
        /// A label selector, e.g. "app=web".
        pub labels: Option<String>,
    }
}

/// Objects found.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Objects {
    /// The objects, as the API returns them.
    pub items: Vec<Value>,
    /// How many.
    pub count: usize,
}

/// (kind, group, version, plural, namespaced)
const KINDS: &[(&str, &str, &str, &str, bool)] = &[
    ("deployment", "apps", "v1", "deployments", true),
    ("replicaset", "apps", "v1", "replicasets", true),
    ("daemonset", "apps", "v1", "daemonsets", true),
    ("statefulset", "apps", "v1", "statefulsets", true),
    ("pod", "", "v1", "pods", true),
    ("node", "", "v1", "nodes", false),
    ("namespace", "", "v1", "namespaces", false),
    ("service", "", "v1", "services", true),
    ("configmap", "", "v1", "configmaps", true),
    ("secret", "", "v1", "secrets", true),
];

fn kind_of(
    kind: &str,
) -> Result<&'static (&'static str, &'static str, &'static str, &'static str, bool), ActionError> {
    let k = kind.to_ascii_lowercase();
    let k = k.trim_end_matches('s');
    KINDS.iter().find(|(name, ..)| *name == k).ok_or_else(|| {
        let names: Vec<&str> = KINDS.iter().map(|k| k.0).collect();
        ActionError::permanent(format!(
            "unknown kind '{kind}'; the kinds are {}",
            names.join(", ")
        ))
    })
}

pub struct Get;

impl Action for Get {
    type Input = GetInput;
    type Output = Objects;

    fn spec() -> Spec {
        Spec::read(
            "k8s",
            "get",
            "Get one object by name, or list objects of a kind (with a label selector).",
        )
    }

    fn describe(input: &GetInput) -> String {
        format!(
            "get {} {} in {}",
            input.kind,
            input.name.as_deref().unwrap_or("(all)"),
            input.context
        )
    }

    fn predict(_: &GetInput) -> Objects {
        Objects {
            items: vec![],
            count: 0,
        }
    }

    async fn run(input: GetInput, cx: Cx) -> Result<Objects, ActionError> {
        let cluster = Cluster {
            context: input.context.clone(),
            kubeconfig: input.kubeconfig.clone(),
        };
        let (client, default_ns) = client(&cluster, &cx).await?;
        let (kind, group, version, plural, namespaced) = *kind_of(&input.kind)?;
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let ar = kube::api::ApiResource::from_gvk_with_plural(&gvk, plural);
        let ns = input.namespace.clone().unwrap_or(default_ns);
        let api: Api<DynamicObject> = if namespaced {
            Api::namespaced_with(client, &ns, &ar)
        } else {
            Api::all_with(client, &ar)
        };
        let what = format!("{kind} {}", input.name.as_deref().unwrap_or(""));
        let items = match &input.name {
            Some(name) => vec![api
                .get(name)
                .await
                .map_err(|e| kube_error(&what, &input.context, e))?],
            None => {
                let mut lp = ListParams::default();
                if let Some(l) = &input.labels {
                    lp = lp.labels(l);
                }
                api.list(&lp)
                    .await
                    .map_err(|e| kube_error(&what, &input.context, e))?
                    .items
            }
        };
        let items: Vec<Value> = items
            .into_iter()
            .map(|o| serde_json::to_value(o).unwrap_or(Value::Null))
            .collect();
        Ok(Objects {
            count: items.len(),
            items,
        })
    }
}

input! {
    k8s:
    pub struct PodsInput {
        /// The namespace (default: the context's).
        pub namespace: Option<String>,
        /// A label selector, e.g. "app=web".
        pub labels: Option<String>,
        /// Only pods on this node.
        pub node: Option<String>,
    }
}

/// A pod in brief.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PodSummary {
    /// Its name.
    pub name: String,
    /// The node it runs on.
    pub node: Option<String>,
    /// Pending, Running, Succeeded, Failed.
    pub phase: Option<String>,
    /// Its Ready condition.
    pub ready: bool,
    /// Container restarts, added up.
    pub restarts: i32,
}

/// Pods found.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PodList {
    /// The pods.
    pub pods: Vec<PodSummary>,
    /// How many are ready.
    pub ready: usize,
}

pub struct Pods;

impl Action for Pods {
    type Input = PodsInput;
    type Output = PodList;

    fn spec() -> Spec {
        Spec::read(
            "k8s",
            "pods",
            "List pods (by label selector or node) with their node, phase, readiness and restarts.",
        )
    }

    fn describe(input: &PodsInput) -> String {
        format!(
            "pods {} in {}",
            input.labels.as_deref().unwrap_or(""),
            input.context
        )
    }

    fn predict(_: &PodsInput) -> PodList {
        PodList {
            pods: vec![],
            ready: 0,
        }
    }

    async fn run(input: PodsInput, cx: Cx) -> Result<PodList, ActionError> {
        let cluster = Cluster {
            context: input.context.clone(),
            kubeconfig: input.kubeconfig.clone(),
        };
        let (client, default_ns) = client(&cluster, &cx).await?;
        let api: Api<Pod> =
            Api::namespaced(client, input.namespace.as_deref().unwrap_or(&default_ns));
        let mut lp = ListParams::default();
        if let Some(l) = &input.labels {
            lp = lp.labels(l);
        }
        if let Some(n) = &input.node {
            lp = lp.fields(&format!("spec.nodeName={n}"));
        }
        let list = api
            .list(&lp)
            .await
            .map_err(|e| kube_error("pods", &input.context, e))?;
        let pods: Vec<PodSummary> = list.items.iter().map(summary).collect();
        Ok(PodList {
            ready: pods.iter().filter(|p| p.ready).count(),
            pods,
        })
    }
}

fn summary(p: &Pod) -> PodSummary {
    let status = p.status.as_ref();
    PodSummary {
        name: p.metadata.name.clone().unwrap_or_default(),
        node: p.spec.as_ref().and_then(|s| s.node_name.clone()),
        phase: status.and_then(|s| s.phase.clone()),
        ready: status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
        restarts: status
            .and_then(|s| s.container_statuses.as_ref())
            .map(|cs| cs.iter().map(|c| c.restart_count).sum())
            .unwrap_or(0),
    }
}

// ---- apply ---------------------------------------------------------------------------------

input! {
    k8s:
    pub struct ApplyInput {
        /// A manifest file (YAML, several documents allowed) or a folder of them.
        pub path: String,
        /// The namespace for namespaced objects that name none (default: the context's).
        pub namespace: Option<String>,
        /// The field manager recorded by server-side apply (default "runbook").
        #[serde(default = "manager")]
        pub field_manager: String,
        /// Take over fields another manager owns.
        #[serde(default)]
        pub force: bool,
    }
}

fn manager() -> String {
    "runbook".into()
}

/// What was applied.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Applied {
    /// Each object as kind/namespace/name.
    pub applied: Vec<String>,
}

fn manifests(path: &str) -> Result<Vec<(String, Value)>, ActionError> {
    let p = PathBuf::from(path);
    let mut files: Vec<PathBuf> = if p.is_dir() {
        std::fs::read_dir(&p)
            .map_err(|e| ActionError::permanent(format!("{path}: {e}")))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|f| {
                matches!(
                    f.extension().and_then(|x| x.to_str()),
                    Some("yaml" | "yml" | "json")
                )
            })
            .collect()
    } else {
        vec![p]
    };
    files.sort();
    let mut docs = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f)
            .map_err(|e| ActionError::permanent(format!("{}: {e}", f.display())))?;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = Value::deserialize(doc).map_err(|e| {
                ActionError::permanent(format!("{}: not valid YAML: {e}", f.display()))
            })?;
            if value.is_null() {
                continue;
            }
            if value.get("kind").is_none() || value.get("apiVersion").is_none() {
                return Err(ActionError::permanent(format!(
                    "{}: a manifest without kind or apiVersion",
                    f.display()
                )));
            }
            docs.push((f.display().to_string(), value));
        }
    }
    if docs.is_empty() {
        return Err(ActionError::permanent(format!(
            "{path}: no manifests found"
        )));
    }
    Ok(docs)
}

pub struct Apply;

impl Action for Apply {
    type Input = ApplyInput;
    type Output = Applied;

    fn spec() -> Spec {
        Spec::converge("k8s", "apply", "Server-side apply of a manifest file or a folder of manifests (idempotent: applying twice changes nothing).").timeout(120).retries(2)
    }

    fn describe(input: &ApplyInput) -> String {
        let what = match manifests(&input.path) {
            Ok(docs) => docs
                .iter()
                .map(|(_, d)| {
                    format!(
                        "{}/{}",
                        d["kind"].as_str().unwrap_or("?").to_lowercase(),
                        d["metadata"]["name"].as_str().unwrap_or("?")
                    )
                })
                .collect::<Vec<_>>()
                .join(", "),
            Err(_) => input.path.clone(),
        };
        format!("apply {what} to {}", input.context)
    }

    fn predict(input: &ApplyInput) -> Applied {
        Applied {
            applied: vec![input.path.clone()],
        }
    }

    async fn run(input: ApplyInput, cx: Cx) -> Result<Applied, ActionError> {
        let docs = manifests(&input.path)?;
        let cluster = Cluster {
            context: input.context.clone(),
            kubeconfig: input.kubeconfig.clone(),
        };
        let (client, default_ns) = client(&cluster, &cx).await?;
        let mut params = PatchParams::apply(&input.field_manager);
        if input.force {
            params = params.force();
        }
        let mut applied = Vec::new();
        for (file, doc) in docs {
            let api_version = doc["apiVersion"].as_str().unwrap_or("");
            let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
            let kind = doc["kind"].as_str().unwrap_or("");
            let name = doc["metadata"]["name"].as_str().unwrap_or("").to_string();
            let gvk = GroupVersionKind::gvk(group, version, kind);
            let (ar, caps) = kube::discovery::pinned_kind(&client, &gvk)
                .await
                .map_err(|e| kube_error(&format!("{file}: kind {kind}"), &input.context, e))?;
            let namespaced = caps.scope == kube::discovery::Scope::Namespaced;
            let ns = doc["metadata"]["namespace"]
                .as_str()
                .map(str::to_string)
                .or_else(|| input.namespace.clone())
                .unwrap_or_else(|| default_ns.clone());
            let api: Api<DynamicObject> = if namespaced {
                Api::namespaced_with(client.clone(), &ns, &ar)
            } else {
                Api::all_with(client.clone(), &ar)
            };
            api.patch(&name, &params, &Patch::Apply(&doc))
                .await
                .map_err(|e| kube_error(&format!("applying {kind} {name}"), &input.context, e))?;
            applied.push(if namespaced {
                format!("{}/{ns}/{name}", kind.to_lowercase())
            } else {
                format!("{}/{name}", kind.to_lowercase())
            });
        }
        Ok(Applied { applied })
    }
}

// ---- deployments ---------------------------------------------------------------------------

input! {
    k8s:
    pub struct ScaleInput {
        /// The namespace (default: the context's).
        pub namespace: Option<String>,
        /// The deployment.
        pub deployment: String,
        /// The replica count wanted.
        pub replicas: i32,
    }
}

/// A scaled deployment.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Scaled {
    /// Replicas before.
    pub before: i32,
    /// Replicas now asked for.
    pub replicas: i32,
    /// False when it already had that many.
    pub changed: bool,
}

async fn deployments(
    context: &str,
    kubeconfig: &Option<String>,
    namespace: &Option<String>,
    cx: &Cx,
) -> Result<(Api<Deployment>, String), ActionError> {
    let cluster = Cluster {
        context: context.to_string(),
        kubeconfig: kubeconfig.clone(),
    };
    let (client, default_ns) = client(&cluster, cx).await?;
    let ns = namespace.clone().unwrap_or(default_ns);
    Ok((Api::namespaced(client, &ns), ns))
}

pub struct Scale;

impl Action for Scale {
    type Input = ScaleInput;
    type Output = Scaled;

    fn spec() -> Spec {
        Spec::converge("k8s", "scale", "Set a deployment's replica count (the scale subresource); a no-op when it already has it.").timeout(30).retries(2)
    }

    fn describe(input: &ScaleInput) -> String {
        format!(
            "scale deployment {}/{} in {} to {} replicas",
            input.namespace.as_deref().unwrap_or("-"),
            input.deployment,
            input.context,
            input.replicas
        )
    }

    fn predict(input: &ScaleInput) -> Scaled {
        Scaled {
            before: 0,
            replicas: input.replicas,
            changed: true,
        }
    }

    async fn preview(input: ScaleInput, cx: Cx) -> Option<String> {
        let (api, _) = deployments(&input.context, &input.kubeconfig, &input.namespace, &cx)
            .await
            .ok()?;
        let d = api.get(&input.deployment).await.ok()?;
        Some(format!(
            "now {}",
            d.spec.and_then(|s| s.replicas).unwrap_or(1)
        ))
    }

    async fn run(input: ScaleInput, cx: Cx) -> Result<Scaled, ActionError> {
        if input.replicas < 0 {
            return Err(ActionError::permanent("replicas cannot be negative"));
        }
        let (api, ns) =
            deployments(&input.context, &input.kubeconfig, &input.namespace, &cx).await?;
        let what = format!("deployment {ns}/{}", input.deployment);
        let d = api
            .get(&input.deployment)
            .await
            .map_err(|e| kube_error(&what, &input.context, e))?;
        let before = d.spec.and_then(|s| s.replicas).unwrap_or(1);
        if before == input.replicas {
            return Ok(Scaled {
                before,
                replicas: input.replicas,
                changed: false,
            });
        }
        api.patch_scale(
            &input.deployment,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": input.replicas}})),
        )
        .await
        .map_err(|e| kube_error(&what, &input.context, e))?;
        Ok(Scaled {
            before,
            replicas: input.replicas,
            changed: true,
        })
    }
}

input! {
    k8s:
    pub struct SetEnvInput {
        /// The namespace (default: the context's).
        pub namespace: Option<String>,
        /// The deployment.
        pub deployment: String,
        /// The container (default: the first).
        pub container: Option<String>,
        /// Variables to set, e.g. #{ DATABASE_URL: inventory.regions[r].database_url }; values may be secrets.
        pub env: BTreeMap<String, SecretString>,
    }
}

/// The result of setting variables.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct EnvSet {
    /// The container changed.
    pub container: String,
    /// Names of the variables that changed (empty: all already so, nothing rolled out).
    pub changed: Vec<String>,
}

pub struct SetEnv;

impl Action for SetEnv {
    type Input = SetEnvInput;
    type Output = EnvSet;

    fn spec() -> Spec {
        Spec::converge("k8s", "set_env", "Set environment variables on a deployment's container (a rollout follows); a no-op when they already have those values.").timeout(30).retries(2)
    }

    fn describe(input: &SetEnvInput) -> String {
        let vars: Vec<String> = input
            .env
            .iter()
            .map(|(k, v)| format!("{k}={}", v.shown()))
            .collect();
        format!(
            "set {} on deployment {} in {}",
            vars.join(" "),
            input.deployment,
            input.context
        )
    }

    fn predict(input: &SetEnvInput) -> EnvSet {
        EnvSet {
            container: input.container.clone().unwrap_or_default(),
            changed: input.env.keys().cloned().collect(),
        }
    }

    async fn preview(input: SetEnvInput, cx: Cx) -> Option<String> {
        let (api, _) = deployments(&input.context, &input.kubeconfig, &input.namespace, &cx)
            .await
            .ok()?;
        let d = api.get(&input.deployment).await.ok()?;
        let containers = d.spec?.template.spec?.containers;
        let c = match &input.container {
            Some(name) => containers.into_iter().find(|c| &c.name == name)?,
            None => containers.into_iter().next()?,
        };
        let env = c.env.unwrap_or_default();
        let differ: Vec<&String> = input
            .env
            .iter()
            .filter(|(k, v)| {
                env.iter()
                    .find(|e| &e.name == *k)
                    .and_then(|e| e.value.clone())
                    != v.reveal().ok()
            })
            .map(|(k, _)| k)
            .collect();
        Some(if differ.is_empty() {
            "already so".into()
        } else {
            format!(
                "now different: {}",
                differ
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    }

    async fn run(input: SetEnvInput, cx: Cx) -> Result<EnvSet, ActionError> {
        let (api, ns) =
            deployments(&input.context, &input.kubeconfig, &input.namespace, &cx).await?;
        let what = format!("deployment {ns}/{}", input.deployment);
        let d = api
            .get(&input.deployment)
            .await
            .map_err(|e| kube_error(&what, &input.context, e))?;
        let containers = d
            .spec
            .and_then(|s| s.template.spec)
            .map(|s| s.containers)
            .unwrap_or_default();
        let container = match &input.container {
            Some(name) => containers.iter().find(|c| &c.name == name).ok_or_else(|| {
                ActionError::permanent(format!(
                    "{what} in {} has no container '{name}'; it has {}",
                    input.context,
                    containers
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?,
            None => containers
                .first()
                .ok_or_else(|| ActionError::permanent(format!("{what} has no containers")))?,
        };
        let current = container.env.clone().unwrap_or_default();
        let mut changed = Vec::new();
        let mut patch_env = Vec::new();
        for (name, value) in &input.env {
            let value = value.reveal().map_err(ActionError::permanent)?;
            if current
                .iter()
                .find(|e| &e.name == name)
                .and_then(|e| e.value.as_ref())
                != Some(&value)
            {
                changed.push(name.clone());
                patch_env.push(json!({"name": name, "value": value}));
            }
        }
        if !changed.is_empty() {
            let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": container.name, "env": patch_env}]}}}});
            api.patch(
                &input.deployment,
                &PatchParams::default(),
                &Patch::Strategic(patch),
            )
            .await
            .map_err(|e| kube_error(&what, &input.context, e))?;
        }
        Ok(EnvSet {
            container: container.name.clone(),
            changed,
        })
    }
}

input! {
    k8s:
    pub struct DeploymentInput {
        /// The namespace (default: the context's).
        pub namespace: Option<String>,
        /// The deployment.
        pub deployment: String,
        /// Time between checks (default "250ms").
        #[serde(default = "quarter")]
        pub interval: Dur,
    }
}

fn quarter() -> Dur {
    Dur(Duration::from_millis(250))
}

/// A finished rollout.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RolledOut {
    /// The deployment's revision.
    pub revision: Option<i64>,
    /// Replicas wanted and available.
    pub replicas: i32,
    /// Milliseconds waited.
    pub waited_ms: u64,
}

pub struct RolloutStatus;

impl Action for RolloutStatus {
    type Input = DeploymentInput;
    type Output = RolledOut;

    fn spec() -> Spec {
        Spec::read("k8s", "rollout_status", "Wait until a deployment's rollout is complete: observed, every replica updated and available.").timeout(300).retries(0)
    }

    fn describe(input: &DeploymentInput) -> String {
        format!(
            "wait for the rollout of deployment {} in {}",
            input.deployment, input.context
        )
    }

    fn predict(_: &DeploymentInput) -> RolledOut {
        RolledOut {
            revision: None,
            replicas: 0,
            waited_ms: 0,
        }
    }

    async fn run(input: DeploymentInput, cx: Cx) -> Result<RolledOut, ActionError> {
        let started = Instant::now();
        let (api, ns) =
            deployments(&input.context, &input.kubeconfig, &input.namespace, &cx).await?;
        let what = format!("deployment {ns}/{}", input.deployment);
        loop {
            let d = api
                .get(&input.deployment)
                .await
                .map_err(|e| kube_error(&what, &input.context, e))?;
            let generation = d.metadata.generation.unwrap_or(0);
            let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let s = d.status.clone().unwrap_or_default();
            let observed = s.observed_generation.unwrap_or(0) >= generation;
            let updated = s.updated_replicas.unwrap_or(0);
            let available = s.available_replicas.unwrap_or(0);
            let total = s.replicas.unwrap_or(0);
            if observed && updated >= want && total == updated && available >= updated {
                return Ok(RolledOut {
                    revision: revision_of(&d.metadata),
                    replicas: want,
                    waited_ms: started.elapsed().as_millis() as u64,
                });
            }
            let state = format!("{updated} of {want} updated, {available} available");
            cx.note(state.clone());
            if started.elapsed() + input.interval.0 > cx.timeout {
                return Err(ActionError::permanent(format!(
                    "{what} in {} did not finish its rollout within {}: {state}",
                    input.context,
                    humantime::format_duration(cx.timeout)
                )));
            }
            if cx.cancel.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(ActionError {
                    message: "interrupted".into(),
                    kind: ErrorKind::Interrupted,
                });
            }
            tokio::time::sleep(input.interval.0).await;
        }
    }
}

input! {
    k8s:
    pub struct UndoInput {
        /// The namespace (default: the context's).
        pub namespace: Option<String>,
        /// The deployment.
        pub deployment: String,
        /// The revision to go back to (default: the one before the current).
        pub to_revision: Option<i64>,
    }
}

/// A rolled-back deployment.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RolledBack {
    /// The revision it was at.
    pub from_revision: Option<i64>,
    /// The revision whose pod template it now runs.
    pub to_revision: i64,
}

pub struct RolloutUndo;

impl Action for RolloutUndo {
    type Input = UndoInput;
    type Output = RolledBack;

    fn spec() -> Spec {
        Spec::change("k8s", "rollout_undo", "Roll a deployment back to the previous (or a given) revision, as kubectl rollout undo does through its ReplicaSets.")
    }

    fn describe(input: &UndoInput) -> String {
        let to = input
            .to_revision
            .map(|r| format!("revision {r}"))
            .unwrap_or_else(|| "the previous revision".into());
        format!(
            "roll back deployment {} in {} to {to}",
            input.deployment, input.context
        )
    }

    fn predict(input: &UndoInput) -> RolledBack {
        RolledBack {
            from_revision: None,
            to_revision: input.to_revision.unwrap_or(0),
        }
    }

    async fn preview(input: UndoInput, cx: Cx) -> Option<String> {
        let (api, _) = deployments(&input.context, &input.kubeconfig, &input.namespace, &cx)
            .await
            .ok()?;
        let d = api.get(&input.deployment).await.ok()?;
        revision_of(&d.metadata).map(|r| format!("now at revision {r}"))
    }

    async fn run(input: UndoInput, cx: Cx) -> Result<RolledBack, ActionError> {
        let cluster = Cluster {
            context: input.context.clone(),
            kubeconfig: input.kubeconfig.clone(),
        };
        let (client, default_ns) = client(&cluster, &cx).await?;
        let ns = input.namespace.clone().unwrap_or(default_ns);
        let api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        let what = format!("deployment {ns}/{}", input.deployment);
        let d = api
            .get(&input.deployment)
            .await
            .map_err(|e| kube_error(&what, &input.context, e))?;
        let current = revision_of(&d.metadata);
        let selector = d
            .spec
            .as_ref()
            .and_then(|s| s.selector.match_labels.clone())
            .unwrap_or_default()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let sets: Api<ReplicaSet> = Api::namespaced(client, &ns);
        let uid = d.metadata.uid.clone();
        let owned: Vec<ReplicaSet> = sets
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| kube_error(&what, &input.context, e))?
            .items
            .into_iter()
            .filter(|rs| {
                rs.metadata.owner_references.as_ref().is_some_and(|o| {
                    o.iter()
                        .any(|o| o.controller == Some(true) && Some(&o.uid) == uid.as_ref())
                })
            })
            .collect();
        let mut revisions: Vec<(i64, &ReplicaSet)> = owned
            .iter()
            .filter_map(|rs| Some((revision_of(&rs.metadata)?, rs)))
            .collect();
        revisions.sort_by_key(|(r, _)| *r);
        let target = match input.to_revision {
            Some(r) => revisions.iter().find(|(rev, _)| *rev == r),
            None => revisions
                .iter()
                .rev()
                .find(|(rev, _)| Some(*rev) != current),
        };
        let Some((to, rs)) = target else {
            let known: Vec<String> = revisions.iter().map(|(r, _)| r.to_string()).collect();
            return Err(ActionError::permanent(format!(
                "{what} in {} has no revision {}to roll back to (revisions: {})",
                input.context,
                input
                    .to_revision
                    .map(|r| format!("{r} "))
                    .unwrap_or_default(),
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            )));
        };
        let mut template = serde_json::to_value(rs.spec.as_ref().and_then(|s| s.template.clone()))
            .unwrap_or(Value::Null);
        if let Some(labels) = template["metadata"]["labels"].as_object_mut() {
            labels.remove("pod-template-hash");
        }
        template["$patch"] = json!("replace");
        api.patch(
            &input.deployment,
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": template}})),
        )
        .await
        .map_err(|e| kube_error(&what, &input.context, e))?;
        Ok(RolledBack {
            from_revision: current,
            to_revision: *to,
        })
    }
}

pub struct Restart;

/// A restarted deployment.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Restarted {
    /// The time written to the pod template (kubectl.kubernetes.io/restartedAt).
    pub restarted_at: String,
}

impl Action for Restart {
    type Input = DeploymentInput;
    type Output = Restarted;

    fn spec() -> Spec {
        Spec::change(
            "k8s",
            "restart",
            "Restart a deployment's pods with a rolling update (kubectl rollout restart).",
        )
        .timeout(30)
    }

    fn describe(input: &DeploymentInput) -> String {
        format!(
            "restart deployment {} in {}",
            input.deployment, input.context
        )
    }

    fn predict(_: &DeploymentInput) -> Restarted {
        Restarted {
            restarted_at: String::new(),
        }
    }

    async fn run(input: DeploymentInput, cx: Cx) -> Result<Restarted, ActionError> {
        let (api, ns) =
            deployments(&input.context, &input.kubeconfig, &input.namespace, &cx).await?;
        let at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let patch = json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": at}}}}});
        api.patch(
            &input.deployment,
            &PatchParams::default(),
            &Patch::Strategic(patch),
        )
        .await
        .map_err(|e| {
            kube_error(
                &format!("deployment {ns}/{}", input.deployment),
                &input.context,
                e,
            )
        })?;
        Ok(Restarted { restarted_at: at })
    }
}

// ---- nodes ---------------------------------------------------------------------------------

input! {
    k8s:
    pub struct NodeInput {
        /// The node.
        pub node: String,
    }
}

/// Whether the node changed.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct NodeChanged {
    /// False when it already was so.
    pub changed: bool,
}

async fn set_unschedulable(
    input: &NodeInput,
    cx: &Cx,
    value: bool,
) -> Result<NodeChanged, ActionError> {
    let cluster = Cluster {
        context: input.context.clone(),
        kubeconfig: input.kubeconfig.clone(),
    };
    let (client, _) = client(&cluster, cx).await?;
    let api: Api<Node> = Api::all(client);
    let what = format!("node {}", input.node);
    let node = api
        .get(&input.node)
        .await
        .map_err(|e| kube_error(&what, &input.context, e))?;
    if node.spec.and_then(|s| s.unschedulable).unwrap_or(false) == value {
        return Ok(NodeChanged { changed: false });
    }
    api.patch(
        &input.node,
        &PatchParams::default(),
        &Patch::Strategic(json!({"spec": {"unschedulable": value}})),
    )
    .await
    .map_err(|e| kube_error(&what, &input.context, e))?;
    Ok(NodeChanged { changed: true })
}

pub struct Cordon;
pub struct Uncordon;

impl Action for Cordon {
    type Input = NodeInput;
    type Output = NodeChanged;

    fn spec() -> Spec {
        Spec::converge(
            "k8s",
            "cordon",
            "Mark a node unschedulable (a no-op when it already is).",
        )
        .timeout(30)
        .retries(2)
    }

    fn describe(input: &NodeInput) -> String {
        format!("cordon node {} in {}", input.node, input.context)
    }

    fn predict(_: &NodeInput) -> NodeChanged {
        NodeChanged { changed: true }
    }

    async fn run(input: NodeInput, cx: Cx) -> Result<NodeChanged, ActionError> {
        set_unschedulable(&input, &cx, true).await
    }
}

impl Action for Uncordon {
    type Input = NodeInput;
    type Output = NodeChanged;

    fn spec() -> Spec {
        Spec::converge(
            "k8s",
            "uncordon",
            "Mark a node schedulable again (a no-op when it already is).",
        )
        .timeout(30)
        .retries(2)
    }

    fn describe(input: &NodeInput) -> String {
        format!("uncordon node {} in {}", input.node, input.context)
    }

    fn predict(_: &NodeInput) -> NodeChanged {
        NodeChanged { changed: true }
    }

    async fn run(input: NodeInput, cx: Cx) -> Result<NodeChanged, ActionError> {
        set_unschedulable(&input, &cx, false).await
    }
}

input! {
    k8s:
    pub struct DrainInput {
        /// The node.
        pub node: String,
        /// Leave pods that DaemonSets run (default true; they would come back at once).
        #[serde(default = "yes")]
        pub ignore_daemonsets: bool,
    }
}

fn yes() -> bool {
    true
}

/// A drained node.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Drained {
    /// Pods evicted, as namespace/name.
    pub evicted: Vec<String>,
    /// Pods left in place (DaemonSet pods), as namespace/name.
    pub skipped: Vec<String>,
}

pub struct Drain;

impl Action for Drain {
    type Input = DrainInput;
    type Output = Drained;

    fn spec() -> Spec {
        Spec::converge("k8s", "drain", "Cordon a node and evict its pods (respecting disruption budgets: a refused eviction is retried until the time limit), waiting until they are gone.").timeout(300).retries(0)
    }

    fn describe(input: &DrainInput) -> String {
        format!("drain node {} in {}", input.node, input.context)
    }

    fn predict(_: &DrainInput) -> Drained {
        Drained {
            evicted: vec![],
            skipped: vec![],
        }
    }

    async fn preview(input: DrainInput, cx: Cx) -> Option<String> {
        let cluster = Cluster {
            context: input.context.clone(),
            kubeconfig: input.kubeconfig.clone(),
        };
        let (client, _) = client(&cluster, &cx).await.ok()?;
        let pods: Api<Pod> = Api::all(client);
        let list = pods
            .list(&ListParams::default().fields(&format!("spec.nodeName={}", input.node)))
            .await
            .ok()?;
        Some(format!("now {} pod(s) on it", list.items.len()))
    }

    async fn run(input: DrainInput, cx: Cx) -> Result<Drained, ActionError> {
        let started = Instant::now();
        set_unschedulable(
            &NodeInput {
                context: input.context.clone(),
                kubeconfig: input.kubeconfig.clone(),
                node: input.node.clone(),
            },
            &cx,
            true,
        )
        .await?;
        let cluster = Cluster {
            context: input.context.clone(),
            kubeconfig: input.kubeconfig.clone(),
        };
        let (client, _) = client(&cluster, &cx).await?;
        let all: Api<Pod> = Api::all(client.clone());
        let what = format!("node {}", input.node);
        let on_node = all
            .list(&ListParams::default().fields(&format!("spec.nodeName={}", input.node)))
            .await
            .map_err(|e| kube_error(&what, &input.context, e))?;
        let mut evicted = Vec::new();
        let mut skipped = Vec::new();
        for pod in on_node.items {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let ns = pod.metadata.namespace.clone().unwrap_or_default();
            let daemon = pod
                .metadata
                .owner_references
                .as_ref()
                .is_some_and(|o| o.iter().any(|o| o.kind == "DaemonSet"));
            if daemon && input.ignore_daemonsets {
                skipped.push(format!("{ns}/{name}"));
                continue;
            }
            let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
            loop {
                match api.evict(&name, &EvictParams::default()).await {
                    Ok(_) => break,
                    Err(kube::Error::Api(r)) if r.code == 404 => break,
                    Err(kube::Error::Api(r)) if r.code == 429 && started.elapsed() < cx.timeout => {
                        cx.note(format!(
                            "eviction of {ns}/{name} refused for now (disruption budget); retrying"
                        ));
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    Err(e) => {
                        return Err(kube_error(
                            &format!("evicting pod {ns}/{name}"),
                            &input.context,
                            e,
                        ))
                    }
                }
            }
            evicted.push((ns, name));
        }
        for (ns, name) in &evicted {
            let api: Api<Pod> = Api::namespaced(client.clone(), ns);
            loop {
                match api.get_opt(name).await {
                    Ok(None) => break,
                    Ok(Some(_)) if started.elapsed() < cx.timeout => {
                        tokio::time::sleep(Duration::from_millis(200)).await
                    }
                    Ok(Some(_)) => {
                        return Err(ActionError::permanent(format!(
                            "pod {ns}/{name} was still on {} after the time limit",
                            input.node
                        )))
                    }
                    Err(e) => {
                        return Err(kube_error(&format!("pod {ns}/{name}"), &input.context, e))
                    }
                }
            }
        }
        Ok(Drained {
            evicted: evicted
                .into_iter()
                .map(|(ns, n)| format!("{ns}/{n}"))
                .collect(),
            skipped,
        })
    }
}
