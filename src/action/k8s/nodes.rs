//! Nodes: cordon, uncordon, drain.

use super::*;

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
    let cluster = input.cluster();
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

action! {
    /// Mark a node unschedulable (a no-op when it already is).
    Cordon(NodeInput) -> NodeChanged = Spec::converge("k8s", "cordon").timeout(30).retries(2)
        .limit_kept_by_engine()
}

impl Action for Cordon {
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

action! {
    /// Mark a node schedulable again (a no-op when it already is).
    Uncordon(NodeInput) -> NodeChanged = Spec::converge("k8s", "uncordon").timeout(30).retries(2)
        .limit_kept_by_engine()
}

impl Action for Uncordon {
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
        #[serde(default = "crate::action::types::yes")]
        pub ignore_daemonsets: bool,
    }
}

/// A drained node.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Drained {
    /// Pods evicted, as namespace/name.
    pub evicted: Vec<String>,
    /// Pods left in place (DaemonSet pods), as namespace/name.
    pub skipped: Vec<String>,
}

action! {
    /// Cordon a node and evict its pods (respecting disruption budgets: a refused eviction is
    /// retried until the time limit), waiting until they are gone.
    Drain(DrainInput) -> Drained = Spec::converge("k8s", "drain").timeout(300).retries(0)
}

impl Action for Drain {
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
        let cluster = input.cluster();
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
        let cluster = input.cluster();
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
