//! Objects of any kind — the built-in ones, and custom resources found by discovery: get one
//! or list them, patch one; and the pods of a namespace or node.

use super::*;
use crate::action::world::World;

input! {
    k8s:
    pub struct GetInput {
        /// The kind: deployment, pod, node, service, configmap, ... or any other the API server
        /// serves, custom resources included (VirtualService, virtualservices, vs).
        pub kind: String,
        /// Pins the kind's group and version, e.g. "networking.istio.io/v1beta1".
        pub api_version: Option<String>,
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
) -> Option<&'static (&'static str, &'static str, &'static str, &'static str, bool)> {
    let k = kind.to_ascii_lowercase();
    let k = k.trim_end_matches('s');
    KINDS.iter().find(|(name, ..)| *name == k)
}

/// A kind as the API server serves it, and whether it is namespaced: a built-in one from the
/// table, any other — custom resources included — by discovery, matched on its kind, plural,
/// singular or short name (case-insensitive); `api_version` pins group and version.
pub(super) async fn resolve(
    client: &Client,
    kind: &str,
    api_version: Option<&str>,
    context: &str,
) -> Result<(kube::api::ApiResource, bool), ActionError> {
    if let (Some((k, group, version, plural, namespaced)), None) = (kind_of(kind), api_version) {
        let gvk = GroupVersionKind::gvk(group, version, k);
        return Ok((
            kube::api::ApiResource::from_gvk_with_plural(&gvk, plural),
            *namespaced,
        ));
    }
    // The API's own lists (they carry short names, which kube's Discovery drops).
    let fail = |e| kube_error("discovering the API's kinds", context, e);
    let mut lists = vec![client.list_core_api_resources("v1").await.map_err(fail)?];
    for group in client.list_api_groups().await.map_err(fail)?.groups {
        let versions: Vec<String> = match api_version {
            Some(av) => match av.split_once('/') {
                Some((g, v)) if g == group.name => vec![v.to_string()],
                _ => continue,
            },
            None => group
                .preferred_version
                .iter()
                .map(|v| v.version.clone())
                .collect(),
        };
        for v in versions {
            let gv = format!("{}/{v}", group.name);
            lists.push(client.list_api_group_resources(&gv).await.map_err(fail)?);
        }
    }
    let wanted = kind.to_ascii_lowercase();
    let mut known = Vec::new();
    for list in lists {
        if api_version.is_some_and(|av| av != list.group_version) {
            continue;
        }
        let (group, version) = list
            .group_version
            .split_once('/')
            .unwrap_or(("", list.group_version.as_str()));
        for r in list.resources.iter().filter(|r| !r.name.contains('/')) {
            let matches = r.kind.to_ascii_lowercase() == wanted
                || r.name == wanted
                || r.singular_name == wanted
                || r.short_names.iter().flatten().any(|s| *s == wanted);
            if matches {
                let gvk = GroupVersionKind::gvk(group, version, &r.kind);
                return Ok((
                    kube::api::ApiResource::from_gvk_with_plural(&gvk, &r.name),
                    r.namespaced,
                ));
            }
            known.push(r.kind.clone());
        }
    }
    known.sort();
    known.dedup();
    Err(ActionError::permanent(format!(
        "{context}: the API server serves no kind '{kind}'{}; it serves {}",
        api_version.map(|v| format!(" in {v}")).unwrap_or_default(),
        known.join(", ")
    )))
}

/// The API of a kind's objects in a namespace (the context's when none is given; all, for
/// kinds that have none).
async fn object_api(
    cluster: Cluster,
    kind: &str,
    api_version: Option<&str>,
    namespace: Option<String>,
    cx: &Cx,
) -> Result<(Api<DynamicObject>, kube::api::ApiResource), ActionError> {
    let (client, default_ns) = client(&cluster, cx).await?;
    let (ar, namespaced) = resolve(&client, kind, api_version, &cluster.context).await?;
    let api = if namespaced {
        Api::namespaced_with(client, &namespace.unwrap_or(default_ns), &ar)
    } else {
        Api::all_with(client, &ar)
    };
    Ok((api, ar))
}

action! {
    /// Get one object by name, or list objects of a kind (with a label selector).
    Get(GetInput) -> Objects = Spec::read("k8s", "get")
        .limit_kept_by_engine()
}

impl Action for Get {
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

    fn predict_in(input: &GetInput, world: &World) -> Option<Result<Objects, ActionError>> {
        let place = world.cluster(&input.context)?;
        let kind = input.kind.to_ascii_lowercase();
        let items: Vec<Value> = match kind.trim_end_matches('s') {
            "deployment" | "deploy" => {
                let name = input.name.clone().or_else(|| place.deployment.clone())?;
                if place.deployment.as_deref() != Some(name.as_str()) {
                    return None;
                }
                vec![serde_json::json!({
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": { "name": name, "namespace": place.namespace, "generation": 1 },
                    "spec": {
                        "replicas": place.app_replicas,
                        "template": { "spec": { "containers": [{ "name": name, "image": place.image }] } },
                    },
                    "status": {
                        "observedGeneration": 1,
                        "replicas": place.app_replicas,
                        "readyReplicas": place.ready_replicas,
                        "availableReplicas": place.ready_replicas,
                        "updatedReplicas": place.app_replicas,
                    },
                })]
            }
            "node" | "no" => {
                // The scenario's nodes, the first `cordoned` of them unschedulable.
                let (nodes, cordoned) = place.nodes.unwrap_or((3, 0));
                (1..=nodes)
                    .map(|i| {
                        let spec = if i <= cordoned {
                            serde_json::json!({ "unschedulable": true })
                        } else {
                            serde_json::json!({})
                        };
                        serde_json::json!({
                            "apiVersion": "v1",
                            "kind": "Node",
                            "metadata": { "name": format!("{}-node-{i}", place.name) },
                            "spec": spec,
                        })
                    })
                    .collect()
            }
            _ => return None,
        };
        Some(Ok(Objects {
            count: items.len(),
            items,
        }))
    }

    async fn run(input: GetInput, cx: Cx) -> Result<Objects, ActionError> {
        let (api, ar) = object_api(
            input.cluster(),
            &input.kind,
            input.api_version.as_deref(),
            input.namespace.clone(),
            &cx,
        )
        .await?;
        let kind = ar.kind.clone();
        let what = format!("{kind} {}", input.name.as_deref().unwrap_or(""));
        let items = match &input.name {
            Some(name) => vec![api
                .get(name)
                .await
                .map_err(|e| kube_error(&what, &input.context, e))?],
            None => {
                api.list(&labelled(input.labels.as_deref()))
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

action! {
    /// List pods (by label selector or node) with their node, phase, readiness and restarts.
    Pods(PodsInput) -> PodList = Spec::read("k8s", "pods")
        .limit_kept_by_engine()
}

impl Action for Pods {
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
        let cluster = input.cluster();
        let (client, default_ns) = client(&cluster, &cx).await?;
        let api: Api<Pod> =
            Api::namespaced(client, input.namespace.as_deref().unwrap_or(&default_ns));
        let mut lp = labelled(input.labels.as_deref());
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

/// A list's parameters: those with the labels, when a selector is given; all otherwise.
fn labelled(selector: Option<&str>) -> ListParams {
    match selector {
        Some(labels) => ListParams::default().labels(labels),
        None => ListParams::default(),
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

/// How a patch merges (kubectl patch --type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PatchType {
    /// JSON merge patch (RFC 7386): objects merge, lists are replaced whole.
    Merge,
    /// Kubernetes' strategic merge: lists of containers, env, ports merge by their keys.
    /// Built-in kinds only.
    Strategic,
    /// JSON patch (RFC 6902): a list of operations (add, remove, replace, test, ...).
    Json,
}

input! {
    k8s:
    pub struct PatchInput {
        /// The kind, built-in or custom (VirtualService, virtualservices, deployment, ...).
        pub kind: String,
        /// The object's name.
        pub name: String,
        /// The namespace (default: the context's).
        pub namespace: Option<String>,
        /// Pins the kind's group and version, e.g. "networking.istio.io/v1beta1".
        pub api_version: Option<String>,
        /// The patch: an object (merge, strategic) or a list of operations (json).
        pub patch: Value,
        /// merge, strategic or json (default: strategic for Kubernetes' own kinds, as kubectl
        /// patch does; merge for custom resources, which do not take strategic patches).
        #[serde(rename = "type")]
        pub patch_type: Option<PatchType>,
    }
}

/// A patched object.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Patched {
    /// Whether the object changed (false: it already was as the patch makes it).
    pub changed: bool,
    /// The object after the patch, as the API returns it.
    pub object: Value,
}

fn strip_volatile(mut v: Value) -> Value {
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in ["resourceVersion", "managedFields", "generation"] {
            meta.remove(k);
        }
    }
    v
}

action! {
    /// Patch any object — built-in kinds and custom resources (Istio's VirtualService, say), found
    /// by discovery — with a merge, strategic-merge or JSON patch, as kubectl patch does. Merge and
    /// strategic patches converge; write a JSON patch to converge too (replace, test: an add to the
    /// end of a list repeats on a resumed run).
    PatchObject(PatchInput) -> Patched = Spec::converge("k8s", "patch").timeout(60).retries(2)
        .limit_kept_by_engine()
}

impl Action for PatchObject {
    fn describe(input: &PatchInput) -> String {
        let text = input.patch.to_string();
        let shown: String = text.chars().take(160).collect();
        format!(
            "patch {} {}{} in {} ({}): {shown}{}",
            input.kind.to_lowercase(),
            input
                .namespace
                .as_deref()
                .map(|n| format!("{n}/"))
                .unwrap_or_default(),
            input.name,
            input.context,
            match input.patch_type {
                Some(PatchType::Merge) => "merge",
                Some(PatchType::Strategic) => "strategic",
                Some(PatchType::Json) => "json",
                None => "default type",
            },
            if text.len() > shown.len() { "…" } else { "" }
        )
    }

    /// A dry-run cannot know the object after the patch: a merge or strategic patch stands
    /// for it (the fields it sets), a JSON patch gives an empty object.
    fn predict(input: &PatchInput) -> Patched {
        Patched {
            changed: true,
            object: if input.patch.is_object() {
                input.patch.clone()
            } else {
                Value::Object(Default::default())
            },
        }
    }

    async fn run(input: PatchInput, cx: Cx) -> Result<Patched, ActionError> {
        let (api, ar) = object_api(
            input.cluster(),
            &input.kind,
            input.api_version.as_deref(),
            input.namespace.clone(),
            &cx,
        )
        .await?;
        let built_in = !ar.group.contains('.') || ar.group.ends_with(".k8s.io");
        let how = input.patch_type.unwrap_or(if built_in {
            PatchType::Strategic
        } else {
            PatchType::Merge
        });
        let what = format!("{} {}", ar.kind, input.name);
        let before = api
            .get(&input.name)
            .await
            .map_err(|e| kube_error(&what, &input.context, e))?;
        let patch = match how {
            PatchType::Merge => Patch::Merge(input.patch.clone()),
            PatchType::Strategic => Patch::Strategic(input.patch.clone()),
            PatchType::Json => {
                let ops: json_patch::Patch = serde_json::from_value(input.patch.clone())
                    .map_err(|e| {
                        ActionError::permanent(format!(
                            "a JSON patch is a list of operations ({{\"op\": \"replace\", \"path\": \"/spec/replicas\", \"value\": 3}}): {e}"
                        ))
                    })?;
                Patch::Json::<Value>(ops)
            }
        };
        let after = api
            .patch(&input.name, &PatchParams::default(), &patch)
            .await
            .map_err(|e| kube_error(&format!("patching {what}"), &input.context, e))?;
        let before = strip_volatile(serde_json::to_value(before).unwrap_or(Value::Null));
        let after = serde_json::to_value(after).unwrap_or(Value::Null);
        Ok(Patched {
            changed: before != strip_volatile(after.clone()),
            object: after,
        })
    }
}
