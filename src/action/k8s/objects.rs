//! Objects: get one or list them, and the pods of a namespace or node.

use super::*;

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
