//! Server-side apply of manifests.

use super::*;

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
