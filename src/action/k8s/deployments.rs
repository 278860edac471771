//! Deployments: scale, set env, rollout status and undo, restart.

use super::*;
use crate::action::world::World;

input! {
    k8s_deployment:
    pub struct ScaleInput {
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

/// A deployment a call names: its cluster, namespace and name.
pub struct DeploymentRef<'a> {
    pub cluster: Cluster,
    pub namespace: &'a Option<String>,
    pub name: &'a str,
}

impl<'a> DeploymentRef<'a> {
    /// Reaches it: its cluster's client and its namespace (the context's when the call names
    /// none).
    async fn open(self, cx: &Cx) -> Result<Reached<'a>, ActionError> {
        let (client, default_ns) = client(&self.cluster, cx).await?;
        let ns = self.namespace.clone().unwrap_or(default_ns);
        Ok(Reached {
            api: Api::namespaced(client.clone(), &ns),
            what: format!("deployment {ns}/{}", self.name),
            client,
            ns,
            name: self.name,
            context: self.cluster.context,
        })
    }

    /// For a dry-run's preview: the deployment, when it can be read.
    async fn peek(self, cx: &Cx) -> Option<Deployment> {
        self.open(cx).await.ok()?.read().await.ok()
    }
}

/// A deployment reached: its namespace's API, and its name for messages.
struct Reached<'a> {
    api: Api<Deployment>,
    client: kube::Client,
    ns: String,
    /// "deployment NS/NAME".
    what: String,
    name: &'a str,
    context: String,
}

impl Reached<'_> {
    /// The deployment as it is now.
    async fn read(&self) -> Result<Deployment, ActionError> {
        self.api.get(self.name).await.map_err(|e| self.error(e))
    }

    /// Changes its pod template with a strategic-merge patch, as `kubectl patch` does.
    async fn patch_template(&self, template: Value) -> Result<(), ActionError> {
        let patch = json!({"spec": {"template": template}});
        self.api
            .patch(self.name, &PatchParams::default(), &Patch::Strategic(patch))
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// A failed call on it, named with its namespace and context.
    fn error(&self, e: kube::Error) -> ActionError {
        kube_error(&self.what, &self.context, e)
    }
}

action! {
    /// Set a deployment's replica count (the scale subresource); a no-op when it already has it.
    Scale(ScaleInput) -> Scaled = Spec::converge("k8s", "scale").timeout(30).retries(2)
        .limit_kept_by_engine()
}

impl Action for Scale {
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
        let d = input.target().peek(&cx).await?;
        Some(format!(
            "now {}",
            d.spec.and_then(|s| s.replicas).unwrap_or(1)
        ))
    }

    async fn run(input: ScaleInput, cx: Cx) -> Result<Scaled, ActionError> {
        if input.replicas < 0 {
            return Err(ActionError::permanent("replicas cannot be negative"));
        }
        let deployment = input.target().open(&cx).await?;
        let d = deployment.read().await?;
        let before = d.spec.and_then(|s| s.replicas).unwrap_or(1);
        if before == input.replicas {
            return Ok(Scaled {
                before,
                replicas: input.replicas,
                changed: false,
            });
        }
        deployment
            .api
            .patch_scale(
                &input.deployment,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": input.replicas}})),
            )
            .await
            .map_err(|e| deployment.error(e))?;
        Ok(Scaled {
            before,
            replicas: input.replicas,
            changed: true,
        })
    }
}

input! {
    k8s_deployment:
    pub struct SetEnvInput {
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

action! {
    /// Set environment variables on a deployment's container (a rollout follows); a no-op when they
    /// already have those values.
    SetEnv(SetEnvInput) -> EnvSet = Spec::converge("k8s", "set_env").timeout(30).retries(2)
        .limit_kept_by_engine()
}

impl Action for SetEnv {
    fn describe(input: &SetEnvInput) -> String {
        let vars: Vec<String> = input
            .env
            .iter()
            .map(|(k, v)| format!("{k}={}", v.shown()))
            .collect();
        format!("set {} on {}", vars.join(" "), input.what())
    }

    fn predict(input: &SetEnvInput) -> EnvSet {
        EnvSet {
            container: input.container.clone().unwrap_or_default(),
            changed: input.env.keys().cloned().collect(),
        }
    }

    async fn preview(input: SetEnvInput, cx: Cx) -> Option<String> {
        let d = input.target().peek(&cx).await?;
        let containers = d.spec?.template.spec?.containers;
        let c = match &input.container {
            Some(name) => containers.into_iter().find(|c| &c.name == name)?,
            None => containers.into_iter().next()?,
        };
        let env = c.env.unwrap_or_default();
        let differ: Vec<&str> = input
            .env
            .iter()
            .filter(|(k, v)| {
                env.iter()
                    .find(|e| &e.name == *k)
                    .and_then(|e| e.value.clone())
                    != v.reveal().ok()
            })
            .map(|(k, _)| k.as_str())
            .collect();
        Some(if differ.is_empty() {
            "already so".into()
        } else {
            format!("now different: {}", differ.join(", "))
        })
    }

    async fn run(input: SetEnvInput, cx: Cx) -> Result<EnvSet, ActionError> {
        let deployment = input.target().open(&cx).await?;
        let d = deployment.read().await?;
        let what = &deployment.what;
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
            let containers = json!([{"name": container.name, "env": patch_env}]);
            let template = json!({"spec": {"containers": containers}});
            deployment.patch_template(template).await?;
        }
        Ok(EnvSet {
            container: container.name.clone(),
            changed,
        })
    }
}

input! {
    k8s_deployment:
    pub struct DeploymentInput {
        /// Time between checks (default "250ms").
        #[serde(default = "Dur::ms::<250>")]
        pub interval: Dur,
    }
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

action! {
    /// Wait until a deployment's rollout is complete: observed, every replica updated and
    /// available.
    RolloutStatus(DeploymentInput) -> RolledOut =
        Spec::read("k8s", "rollout_status").timeout(300).retries(0)
        .limit_kept_by_engine()
}

impl Action for RolloutStatus {
    fn describe(input: &DeploymentInput) -> String {
        format!("wait for the rollout of {}", input.what())
    }

    fn predict(_: &DeploymentInput) -> RolledOut {
        RolledOut {
            revision: None,
            replicas: 0,
            waited_ms: 0,
        }
    }

    fn predict_in(
        input: &DeploymentInput,
        world: &World,
    ) -> Option<Result<RolledOut, ActionError>> {
        let place = world.cluster(&input.context)?;
        Some(Ok(RolledOut {
            revision: Some(1),
            replicas: place.app_replicas as i32,
            waited_ms: 0,
        }))
    }

    async fn run(input: DeploymentInput, cx: Cx) -> Result<RolledOut, ActionError> {
        let poll = Poll::new(&cx, input.interval.0);
        let deployment = input.target().open(&cx).await?;
        let what = &deployment.what;
        loop {
            let d = deployment.read().await?;
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
                    waited_ms: poll.waited_ms(),
                });
            }
            let state = format!("{updated} of {want} updated, {available} available");
            cx.note(state.clone());
            poll.pause(&cx, |limit| {
                format!(
                    "{what} in {} did not finish its rollout within {limit}: {state}",
                    input.context
                )
            })
            .await?;
        }
    }
}

input! {
    k8s_deployment:
    pub struct UndoInput {
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

action! {
    /// Roll a deployment back to the previous (or a given) revision, as kubectl rollout undo does
    /// through its ReplicaSets.
    RolloutUndo(UndoInput) -> RolledBack = Spec::change("k8s", "rollout_undo")
        .limit_kept_by_engine()
}

impl Action for RolloutUndo {
    fn describe(input: &UndoInput) -> String {
        let to = input
            .to_revision
            .map(|r| format!("revision {r}"))
            .unwrap_or_else(|| "the previous revision".into());
        format!("roll back {} to {to}", input.what())
    }

    fn predict(input: &UndoInput) -> RolledBack {
        RolledBack {
            from_revision: None,
            to_revision: input.to_revision.unwrap_or(0),
        }
    }

    async fn preview(input: UndoInput, cx: Cx) -> Option<String> {
        let d = input.target().peek(&cx).await?;
        revision_of(&d.metadata).map(|r| format!("now at revision {r}"))
    }

    async fn run(input: UndoInput, cx: Cx) -> Result<RolledBack, ActionError> {
        let deployment = input.target().open(&cx).await?;
        let what = &deployment.what;
        let d = deployment.read().await?;
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
        let sets: Api<ReplicaSet> = Api::namespaced(deployment.client.clone(), &deployment.ns);
        let uid = d.metadata.uid.clone();
        let owned: Vec<ReplicaSet> = sets
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| deployment.error(e))?
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
        deployment.patch_template(template).await?;
        Ok(RolledBack {
            from_revision: current,
            to_revision: *to,
        })
    }
}

/// A restarted deployment.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Restarted {
    /// The time written to the pod template (kubectl.kubernetes.io/restartedAt).
    pub restarted_at: String,
}

action! {
    /// Restart a deployment's pods with a rolling update (kubectl rollout restart).
    Restart(DeploymentInput) -> Restarted = Spec::change("k8s", "restart").timeout(30)
        .limit_kept_by_engine()
}

impl Action for Restart {
    fn describe(input: &DeploymentInput) -> String {
        format!("restart {}", input.what())
    }

    fn predict(_: &DeploymentInput) -> Restarted {
        Restarted {
            restarted_at: String::new(),
        }
    }

    async fn run(input: DeploymentInput, cx: Cx) -> Result<Restarted, ActionError> {
        let deployment = input.target().open(&cx).await?;
        let at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let annotations = json!({"kubectl.kubernetes.io/restartedAt": at});
        let template = json!({"metadata": {"annotations": annotations}});
        deployment.patch_template(template).await?;
        Ok(Restarted { restarted_at: at })
    }
}
