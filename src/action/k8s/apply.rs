//! Server-side apply of manifests: files, a folder, or a kustomization rendered as
//! `kubectl apply -k` renders it.

use super::*;

input! {
    k8s:
    pub struct ApplyInput {
        /// A manifest file (YAML, several documents allowed) or a folder of them (a
        /// kustomization.yaml there is skipped).
        pub path: Option<String>,
        /// A kustomization folder (a base or an overlay, e.g. k8s/overlays/us-east-1), rendered
        /// with `kubectl kustomize` as `kubectl apply -k` does; give this or `path`.
        pub kustomize: Option<String>,
        /// The namespace for namespaced objects that name none (default: the context's).
        pub namespace: Option<String>,
        /// The field manager recorded by server-side apply (default "runbook").
        #[serde(default = "manager")]
        pub field_manager: String,
        /// Take over fields another manager owns.
        #[serde(default)]
        pub force: bool,
        /// For a workload that already exists (Deployment, StatefulSet, DaemonSet,
        /// ReplicaSet), keep what changes while it runs: its containers' images and its
        /// replica count stay as they are (an upgrade's image, an operator's scale); the
        /// manifests' values are for a new one, and the count for one scaled to 0. `kept`
        /// lists what the manifests would have changed.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        pub keep_running: bool,
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
    /// With `keep_running`: each running value kept where the manifests say otherwise, as
    /// "deployment/app/orchestrator: image orchestrator:1.1 kept (the manifests say
    /// orchestrator:1.0)".
    #[serde(default)]
    pub kept: Vec<String>,
}

/// The kinds whose replica count and images change while they run.
const WORKLOADS: [&str; 4] = ["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"];

/// Puts the running replica count and container images of `running` into the manifest `doc`
/// (containers matched by name), and says what the manifest would have changed.
fn keep_running(doc: &mut Value, running: &Value, object: &str) -> Vec<String> {
    let mut kept = Vec::new();
    if let (Some(want), Some(has)) = (
        doc.pointer("/spec/replicas").cloned(),
        running.pointer("/spec/replicas"),
    ) {
        // A workload scaled to 0 is not running: it gets the manifests' count.
        if &want != has && has.as_i64() != Some(0) {
            kept.push(format!(
                "{object}: replicas {has} kept (the manifests say {want})"
            ));
            doc["spec"]["replicas"] = has.clone();
        }
    }
    for list in ["containers", "initContainers"] {
        let pointer = format!("/spec/template/spec/{list}");
        let Some(has) = running.pointer(&pointer).and_then(Value::as_array) else {
            continue;
        };
        let Some(want) = doc.pointer_mut(&pointer).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in want.iter_mut() {
            let name = c["name"].as_str().unwrap_or_default();
            let Some(running) = has.iter().find(|r| r["name"].as_str() == Some(name)) else {
                continue;
            };
            if let (Some(image), Some(want)) = (running["image"].as_str(), c["image"].as_str()) {
                if image != want {
                    kept.push(format!(
                        "{object}: container {name} image {image} kept (the manifests say {want})"
                    ));
                    c["image"] = Value::from(image);
                }
            }
        }
    }
    kept
}

/// The manifests to apply, each with where it came from.
fn manifests(input: &ApplyInput) -> Result<Vec<(String, Value)>, ActionError> {
    match (&input.path, &input.kustomize) {
        (Some(path), None) => files(path),
        (None, Some(dir)) => {
            let text = match rendered(dir) {
                Some(t) => t,
                None => kustomize(dir)?,
            };
            parse(&text, &format!("kustomization {dir}"), dir)
        }
        (Some(_), Some(_)) => Err(ActionError::permanent(
            "give `path` or `kustomize`, not both",
        )),
        (None, None) => Err(ActionError::permanent(
            "give `path` (manifest files) or `kustomize` (a kustomization folder)",
        )),
    }
}

fn files(path: &str) -> Result<Vec<(String, Value)>, ActionError> {
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
            // A folder that is also a kustomize base holds its kustomization: not a manifest.
            .filter(|f| {
                !matches!(
                    f.file_name().and_then(|x| x.to_str()),
                    Some("kustomization.yaml" | "kustomization.yml")
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
        docs.extend(parse(&text, &f.display().to_string(), path)?);
    }
    Ok(docs)
}

/// The documents of a YAML text; each must name its kind and apiVersion.
fn parse(text: &str, source: &str, given: &str) -> Result<Vec<(String, Value)>, ActionError> {
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = Value::deserialize(doc)
            .map_err(|e| ActionError::permanent(format!("{source}: not valid YAML: {e}")))?;
        if value.is_null() {
            continue;
        }
        if value.get("kind").is_none() || value.get("apiVersion").is_none() {
            return Err(ActionError::permanent(format!(
                "{source}: a manifest without kind or apiVersion"
            )));
        }
        docs.push((source.to_string(), value));
    }
    if docs.is_empty() {
        return Err(ActionError::permanent(format!(
            "{given}: no manifests found"
        )));
    }
    Ok(docs)
}

/// Kustomizations rendered in this process: the plan line and the apply see the same objects.
static RENDERED: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

fn rendered(dir: &str) -> Option<String> {
    RENDERED
        .lock()
        .unwrap()
        .iter()
        .find(|(d, _)| d == dir)
        .map(|(_, t)| t.clone())
}

/// Renders a kustomization with `kubectl kustomize` (kustomize is built into kubectl), as a
/// registered child process, and keeps the result for the run.
async fn render(dir: &str) -> Result<(), ActionError> {
    if rendered(dir).is_some() {
        return Ok(());
    }
    kustomization_exists(dir)?;
    let mut command = tokio::process::Command::new("kubectl");
    command.args(["kustomize", dir]);
    let out = crate::action::child::output(command, KUSTOMIZE_LIMIT)
        .await
        .map_err(|e| ActionError::permanent(format!("cannot run kubectl kustomize {dir}: {e}")))?
        .ok_or_else(|| too_long(dir))?;
    keep_rendered(dir, out)
}

/// How long rendering a kustomization may take (it reads local files only).
const KUSTOMIZE_LIMIT: Duration = Duration::from_secs(60);

fn too_long(dir: &str) -> ActionError {
    ActionError::permanent(format!(
        "kubectl kustomize {dir} took over {} s; it was stopped",
        KUSTOMIZE_LIMIT.as_secs()
    ))
}

fn keep_rendered(dir: &str, out: std::process::Output) -> Result<(), ActionError> {
    if !out.status.success() {
        return Err(ActionError::permanent(format!(
            "kubectl kustomize {dir}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    RENDERED.lock().unwrap().push((dir.to_string(), text));
    Ok(())
}

fn kustomization_exists(dir: &str) -> Result<(), ActionError> {
    let has = ["kustomization.yaml", "kustomization.yml", "Kustomization"]
        .iter()
        .any(|f| std::path::Path::new(dir).join(f).exists());
    if has {
        Ok(())
    } else {
        Err(ActionError::permanent(format!(
            "{dir}: no kustomization.yaml there"
        )))
    }
}

/// The same, for the plan line (describe and predict are not async).
fn kustomize(dir: &str) -> Result<String, ActionError> {
    kustomization_exists(dir)?;
    let mut command = std::process::Command::new("kubectl");
    command.args(["kustomize", dir]);
    let out = crate::action::child::output_blocking(command, KUSTOMIZE_LIMIT)
        .map_err(|e| ActionError::permanent(format!("cannot run kubectl kustomize {dir}: {e}")))?
        .ok_or_else(|| too_long(dir))?;
    keep_rendered(dir, out)?;
    Ok(rendered(dir).unwrap_or_default())
}

action! {
    /// Server-side apply of a manifest file, a folder of manifests, or a kustomization
    /// (`kustomize`: a base or overlay folder, rendered as `kubectl apply -k` does); idempotent:
    /// applying twice changes nothing.
    Apply(ApplyInput) -> Applied = Spec::converge("k8s", "apply").timeout(120).retries(2)
        .limit_kept_by_engine()
}

impl Action for Apply {
    fn describe(input: &ApplyInput) -> String {
        let what = match manifests(input) {
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
            Err(_) => input
                .path
                .clone()
                .or_else(|| input.kustomize.clone())
                .unwrap_or_default(),
        };
        let keep = if input.keep_running {
            " (running images and replica counts kept)"
        } else {
            ""
        };
        format!("apply {what} to {}{keep}", input.context)
    }

    fn predict(input: &ApplyInput) -> Applied {
        Applied {
            applied: manifests(input)
                .map(|docs| {
                    docs.iter()
                        .map(|(_, d)| {
                            format!(
                                "{}/{}",
                                d["kind"].as_str().unwrap_or("?").to_lowercase(),
                                d["metadata"]["name"].as_str().unwrap_or("?")
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
            kept: vec![],
        }
    }

    async fn run(input: ApplyInput, cx: Cx) -> Result<Applied, ActionError> {
        if let Some(dir) = &input.kustomize {
            render(dir).await?;
        }
        let docs = manifests(&input)?;
        let cluster = input.cluster();
        let (client, default_ns) = client(&cluster, &cx).await?;
        let mut params = PatchParams::apply(&input.field_manager);
        if input.force {
            params = params.force();
        }
        let mut applied = Vec::new();
        let mut kept = Vec::new();
        for (file, mut doc) in docs {
            let api_version = doc["apiVersion"].as_str().unwrap_or("");
            let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
            let kind = doc["kind"].as_str().unwrap_or("").to_string();
            let kind = kind.as_str();
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
            let object = if namespaced {
                format!("{}/{ns}/{name}", kind.to_lowercase())
            } else {
                format!("{}/{name}", kind.to_lowercase())
            };
            if input.keep_running && WORKLOADS.contains(&kind) {
                let running = api.get_opt(&name).await.map_err(|e| {
                    kube_error(&format!("reading {kind} {name}"), &input.context, e)
                })?;
                if let Some(running) = running {
                    kept.extend(keep_running(&mut doc, &running.data, &object));
                }
            }
            api.patch(&name, &params, &Patch::Apply(&doc))
                .await
                .map_err(|e| kube_error(&format!("applying {kind} {name}"), &input.context, e))?;
            applied.push(object);
        }
        Ok(Applied { applied, kept })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(replicas: i64, images: &[(&str, &str)], init: &[(&str, &str)]) -> Value {
        let list = |l: &[(&str, &str)]| {
            l.iter()
                .map(|(n, i)| json!({ "name": n, "image": i }))
                .collect::<Vec<_>>()
        };
        json!({ "spec": { "replicas": replicas, "template": { "spec": {
            "containers": list(images), "initContainers": list(init) } } } })
    }

    /// (manifest, running) → (what is applied, what is said to be kept).
    #[test]
    fn keep_running_keeps_what_changes_while_a_workload_runs() {
        let app = [("app", "app:1.0")];
        let cases: Vec<(&str, Value, Value, Value, Vec<&str>)> = vec![
            (
                "the same: nothing kept",
                deployment(3, &app, &[]),
                deployment(3, &app, &[]),
                deployment(3, &app, &[]),
                vec![],
            ),
            (
                "an upgraded image and a scale are kept",
                deployment(3, &app, &[]),
                deployment(5, &[("app", "app:1.1")], &[]),
                deployment(5, &[("app", "app:1.1")], &[]),
                vec![
                    "d: replicas 5 kept (the manifests say 3)",
                    "d: container app image app:1.1 kept (the manifests say app:1.0)",
                ],
            ),
            (
                "scaled to 0: the manifests' count",
                deployment(3, &app, &[]),
                deployment(0, &app, &[]),
                deployment(3, &app, &[]),
                vec![],
            ),
            (
                "containers match by name; a new one gets the manifests' image",
                deployment(2, &[("app", "app:1.0"), ("sidecar", "proxy:2")], &[]),
                deployment(2, &[("sidecar", "proxy:3"), ("old", "x:1")], &[]),
                deployment(2, &[("app", "app:1.0"), ("sidecar", "proxy:3")], &[]),
                vec!["d: container sidecar image proxy:3 kept (the manifests say proxy:2)"],
            ),
            (
                "init containers too",
                deployment(2, &app, &[("migrate", "app:1.0")]),
                deployment(2, &app, &[("migrate", "app:1.1")]),
                deployment(2, &app, &[("migrate", "app:1.1")]),
                vec!["d: container migrate image app:1.1 kept (the manifests say app:1.0)"],
            ),
            (
                "a manifest without replicas (an autoscaler's) is left without",
                json!({ "spec": { "template": { "spec": { "containers": [] } } } }),
                deployment(4, &[], &[]),
                json!({ "spec": { "template": { "spec": { "containers": [] } } } }),
                vec![],
            ),
        ];
        for (why, mut manifest, running, applied, said) in cases {
            let kept = keep_running(&mut manifest, &running, "d");
            assert_eq!(manifest, applied, "{why}");
            assert_eq!(kept, said, "{why}");
        }
    }
}
