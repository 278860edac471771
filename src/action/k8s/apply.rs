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

pub struct Apply;

impl Action for Apply {
    type Input = ApplyInput;
    type Output = Applied;

    fn spec() -> Spec {
        Spec::converge("k8s", "apply", "Server-side apply of a manifest file, a folder of manifests, or a kustomization (`kustomize`: a base or overlay folder, rendered as `kubectl apply -k` does); idempotent: applying twice changes nothing.").timeout(120).retries(2)
    }

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
        format!("apply {what} to {}", input.context)
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
