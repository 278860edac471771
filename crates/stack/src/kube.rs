//! A fake Kubernetes API server for one region: objects in memory behind the real REST paths,
//! and a small controller that does what the deployment and ReplicaSet controllers and the
//! scheduler would (ReplicaSets per template revision, pods on schedulable nodes, deployment
//! status after a short rollout delay). It speaks enough of the API for the `kube` crate and
//! for the real `kubectl`: discovery, get/list with label and field selectors, watch, create,
//! replace, merge / strategic-merge / JSON / apply patches, delete, the scale subresource and
//! evictions.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::http::{read_request, Request};

/// (resource, namespace, name); cluster-scoped objects have an empty namespace.
type Key = (String, String, String);

#[derive(Clone)]
struct WatchEvent {
    rv: u64,
    kind: &'static str,
    key: Key,
    object: Value,
}

struct State {
    rv: u64,
    uid: u64,
    /// This server's port: the first part of every uid it gives.
    server: u16,
    objects: BTreeMap<Key, Value>,
    events: Vec<WatchEvent>,
    /// When each deployment's rollout completes (after a spec change).
    ready_at: HashMap<Key, Instant>,
    rollout_delay: Duration,
    /// Writes received, by "METHOD resource[/subresource]", to count side effects.
    writes: BTreeMap<String, usize>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    stop: AtomicBool,
}

pub struct FakeKube {
    pub port: u16,
    pub region: String,
    shared: Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// (group, version, resource, namespaced, kind)
const RESOURCES: &[(&str, &str, &str, bool, &str)] = &[
    ("", "v1", "pods", true, "Pod"),
    ("", "v1", "nodes", false, "Node"),
    ("", "v1", "namespaces", false, "Namespace"),
    ("", "v1", "services", true, "Service"),
    ("", "v1", "configmaps", true, "ConfigMap"),
    ("", "v1", "secrets", true, "Secret"),
    ("apps", "v1", "deployments", true, "Deployment"),
    ("apps", "v1", "replicasets", true, "ReplicaSet"),
    ("apps", "v1", "daemonsets", true, "DaemonSet"),
    ("apps", "v1", "statefulsets", true, "StatefulSet"),
    (
        "policy",
        "v1",
        "poddisruptionbudgets",
        true,
        "PodDisruptionBudget",
    ),
    ("batch", "v1", "cronjobs", true, "CronJob"),
    ("batch", "v1", "jobs", true, "Job"),
    // Istio's traffic management, served as custom resources (as its CRDs make them).
    (
        "networking.istio.io",
        "v1beta1",
        "virtualservices",
        true,
        "VirtualService",
    ),
    (
        "networking.istio.io",
        "v1beta1",
        "destinationrules",
        true,
        "DestinationRule",
    ),
];

/// Whether a group is one of Kubernetes' own (strategic merge works there, not on custom
/// resources).
fn built_in(group: &str) -> bool {
    !group.contains('.') || group.ends_with(".k8s.io")
}

fn resource_info(
    resource: &str,
) -> Option<&'static (&'static str, &'static str, &'static str, bool, &'static str)> {
    RESOURCES.iter().find(|r| r.2 == resource)
}

fn api_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

fn status_error(code: u16, reason: &str, message: String) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code}),
    )
}

fn not_found(resource: &str, name: &str) -> (u16, Value) {
    let group = resource_info(resource).map(|r| r.0).unwrap_or("");
    let what = if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    };
    let mut e = status_error(404, "NotFound", format!("{what} \"{name}\" not found"));
    e.1["details"] = json!({"name": name, "group": group, "kind": resource});
    e
}

// ---- patches -------------------------------------------------------------------------------

fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().unwrap();
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// The merge key of a list, by field name, as the Kubernetes API declares them.
fn merge_key(field: &str) -> Option<&'static str> {
    match field {
        "containers" | "initContainers" | "env" | "volumes" | "imagePullSecrets" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "ports" => Some("containerPort"),
        "tolerations" => Some("key"),
        _ => None,
    }
}

/// Strategic merge patch: maps merge, lists with a merge key merge by it, directives apply.
fn strategic_merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replaced = patch.clone();
        replaced.as_object_mut().unwrap().remove("$patch");
        *target = replaced;
        return;
    }
    if !target.is_object() {
        *target = json!({});
    }
    let t = target.as_object_mut().unwrap();
    for (k, v) in p {
        if k.starts_with("$setElementOrder/") || k == "$retainKeys" || k == "$patch" {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Value::Array(gone)) = (t.get_mut(field), v) {
                list.retain(|x| !gone.contains(x));
            }
            continue;
        }
        if v.is_null() {
            t.remove(k);
            continue;
        }
        match (merge_key(k), v) {
            (Some(key), Value::Array(items)) => {
                let current = t.entry(k.clone()).or_insert(json!([]));
                if !current.is_array() {
                    *current = json!([]);
                }
                let list = current.as_array_mut().unwrap();
                for item in items {
                    let id = item.get(key).cloned();
                    let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                    let pos = list.iter().position(|x| x.get(key) == id.as_ref());
                    match (pos, delete) {
                        (Some(i), true) => {
                            list.remove(i);
                        }
                        (Some(i), false) => strategic_merge(&mut list[i], item),
                        (None, false) => {
                            let mut fresh = json!({});
                            strategic_merge(&mut fresh, item);
                            list.push(fresh);
                        }
                        (None, true) => {}
                    }
                }
            }
            (_, Value::Object(_)) => strategic_merge(t.entry(k.clone()).or_insert(Value::Null), v),
            _ => {
                t.insert(k.clone(), v.clone());
            }
        }
    }
}

fn pointer_parts(path: &str) -> Vec<String> {
    path.split('/')
        .skip(1)
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect()
}

/// RFC 6902 JSON patch: add, replace, remove, test.
fn json_patch(target: &mut Value, ops: &Value) -> Result<(), String> {
    for op in ops
        .as_array()
        .ok_or("a JSON patch is a list of operations")?
    {
        let kind = op["op"].as_str().unwrap_or("");
        let parts = pointer_parts(op["path"].as_str().unwrap_or(""));
        let Some((last, parents)) = parts.split_last() else {
            *target = op["value"].clone();
            continue;
        };
        let mut cur = &mut *target;
        for p in parents {
            cur = match cur {
                Value::Object(m) => m.entry(p.clone()).or_insert(json!({})),
                Value::Array(a) => a
                    .get_mut(p.parse::<usize>().map_err(|e| e.to_string())?)
                    .ok_or("index out of range")?,
                _ => return Err(format!("cannot walk into {p}")),
            };
        }
        match (kind, cur) {
            ("add" | "replace", Value::Object(m)) => {
                m.insert(last.clone(), op["value"].clone());
            }
            ("add", Value::Array(a)) if last == "-" => a.push(op["value"].clone()),
            ("add", Value::Array(a)) => a.insert(
                last.parse::<usize>().map_err(|e| e.to_string())?,
                op["value"].clone(),
            ),
            ("replace", Value::Array(a)) => {
                a[last.parse::<usize>().map_err(|e| e.to_string())?] = op["value"].clone()
            }
            ("remove", Value::Object(m)) => {
                m.remove(last);
            }
            ("remove", Value::Array(a)) => {
                a.remove(last.parse::<usize>().map_err(|e| e.to_string())?);
            }
            ("test", Value::Object(m)) => {
                if m.get(last) != Some(&op["value"]) {
                    return Err(format!("test failed at {}", op["path"]));
                }
            }
            (other, _) => return Err(format!("unsupported JSON patch operation {other}")),
        }
    }
    Ok(())
}

// ---- selectors -----------------------------------------------------------------------------

fn labels_match(obj: &Value, selector: &str) -> bool {
    let labels = &obj["metadata"]["labels"];
    selector
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .all(|term| {
            let term = term.trim();
            if let Some((k, v)) = term.split_once("!=") {
                labels[k.trim()].as_str() != Some(v.trim())
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                labels[k.trim()].as_str() == Some(v.trim())
            } else if let Some(k) = term.strip_prefix('!') {
                labels[k.trim()].is_null()
            } else {
                !labels[term].is_null()
            }
        })
}

fn fields_match(obj: &Value, selector: &str) -> bool {
    selector
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .all(|term| {
            let (k, v, neg) = match term.split_once("!=") {
                Some((k, v)) => (k, v, true),
                None => match term.split_once("==").or_else(|| term.split_once('=')) {
                    Some((k, v)) => (k, v, false),
                    None => return true,
                },
            };
            let mut cur = obj;
            for part in k.trim().split('.') {
                cur = &cur[part];
            }
            let actual = match cur {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (actual == v.trim()) != neg
        })
}

// ---- the store -----------------------------------------------------------------------------

impl State {
    fn kind_of(resource: &str) -> (String, String) {
        let (g, v, _, _, kind) = resource_info(resource)
            .copied()
            .unwrap_or(("", "v1", "", true, ""));
        (api_version(g, v), kind.to_string())
    }

    /// Stores an object (create or update), bumping resourceVersion, generation on a spec
    /// change, and recording a watch event.
    fn put(&mut self, key: &Key, mut obj: Value) -> Value {
        let (api, kind) = Self::kind_of(&key.0);
        self.rv += 1;
        let old = self.objects.get(key).cloned();
        let meta = obj["metadata"].as_object_mut().map(|_| ()).is_some();
        if !meta {
            obj["metadata"] = json!({});
        }
        obj["apiVersion"] = json!(api);
        obj["kind"] = json!(kind);
        obj["metadata"]["name"] = json!(key.2);
        if !key.1.is_empty() {
            obj["metadata"]["namespace"] = json!(key.1);
        }
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        match &old {
            Some(o) => {
                obj["metadata"]["uid"] = o["metadata"]["uid"].clone();
                obj["metadata"]["creationTimestamp"] = o["metadata"]["creationTimestamp"].clone();
                let generation = o["metadata"]["generation"].as_i64().unwrap_or(1);
                let changed = o.get("spec") != obj.get("spec");
                obj["metadata"]["generation"] =
                    json!(if changed { generation + 1 } else { generation });
                if changed && key.0 == "deployments" {
                    self.ready_at
                        .insert(key.clone(), Instant::now() + self.rollout_delay);
                }
            }
            None => {
                self.uid += 1;
                // Unique across the stack's servers, as a real cluster's random uids are.
                obj["metadata"]["uid"] = json!(format!(
                    "{:08x}-0000-4000-8000-{:012}",
                    self.server, self.uid
                ));
                obj["metadata"]["creationTimestamp"] = json!(now_rfc3339());
                obj["metadata"]["generation"] = json!(1);
                if key.0 == "deployments" {
                    self.ready_at
                        .insert(key.clone(), Instant::now() + self.rollout_delay);
                }
            }
        }
        if old.as_ref() != Some(&obj) {
            self.events.push(WatchEvent {
                rv: self.rv,
                kind: if old.is_some() { "MODIFIED" } else { "ADDED" },
                key: key.clone(),
                object: obj.clone(),
            });
        }
        self.objects.insert(key.clone(), obj.clone());
        obj
    }

    fn remove(&mut self, key: &Key) -> Option<Value> {
        let mut obj = self.objects.remove(key)?;
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.events.push(WatchEvent {
            rv: self.rv,
            kind: "DELETED",
            key: key.clone(),
            object: obj.clone(),
        });
        self.ready_at.remove(key);
        Some(obj)
    }

    fn list(
        &self,
        resource: &str,
        namespace: Option<&str>,
        labels: Option<&str>,
        fields: Option<&str>,
    ) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|(k, _)| k.0 == resource && namespace.is_none_or(|ns| k.1 == ns))
            .map(|(_, v)| v)
            .filter(|v| labels.is_none_or(|s| labels_match(v, s)))
            .filter(|v| fields.is_none_or(|s| fields_match(v, s)))
            .cloned()
            .collect()
    }

    /// What the deployment and ReplicaSet controllers and the scheduler would do.
    fn reconcile(&mut self) {
        let deployments: Vec<(Key, Value)> = self
            .objects
            .iter()
            .filter(|(k, _)| k.0 == "deployments")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (key, dep) in deployments {
            self.reconcile_deployment(&key, &dep);
        }
        let sets: Vec<(Key, Value)> = self
            .objects
            .iter()
            .filter(|(k, _)| k.0 == "replicasets")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (key, rs) in sets {
            self.reconcile_pods(&key, &rs);
        }
    }

    fn reconcile_deployment(&mut self, key: &Key, dep: &Value) {
        let ns = &key.1;
        let uid = dep["metadata"]["uid"].clone();
        let mut template = dep["spec"]["template"].clone();
        if let Some(l) = template["metadata"]["labels"].as_object_mut() {
            l.remove("pod-template-hash");
        }
        let hash = {
            use sha2::{Digest, Sha256};
            let d = Sha256::digest(template.to_string().as_bytes());
            d.iter()
                .take(5)
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        let owned: Vec<(Key, Value)> = self
            .objects
            .iter()
            .filter(|(k, v)| {
                k.0 == "replicasets"
                    && k.1 == *ns
                    && v["metadata"]["ownerReferences"][0]["uid"] == uid
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let max_revision = owned
            .iter()
            .filter_map(|(_, rs)| {
                rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
                    .as_str()?
                    .parse::<i64>()
                    .ok()
            })
            .max()
            .unwrap_or(0);
        let replicas = dep["spec"]["replicas"].as_i64().unwrap_or(1);
        let current_name = format!("{}-{hash}", key.2);
        let current_key: Key = ("replicasets".into(), ns.clone(), current_name.clone());
        let existing = owned
            .iter()
            .find(|(k, _)| *k == current_key)
            .map(|(_, v)| v.clone());
        let revision = match &existing {
            Some(rs)
                if rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
                    .as_str()
                    .and_then(|r| r.parse::<i64>().ok())
                    == Some(max_revision) =>
            {
                max_revision
            }
            _ => max_revision + 1,
        };
        let mut rs_template = template.clone();
        rs_template["metadata"]["labels"]["pod-template-hash"] = json!(hash);
        let mut selector = dep["spec"]["selector"].clone();
        selector["matchLabels"]["pod-template-hash"] = json!(hash);
        let mut labels = template["metadata"]["labels"].clone();
        labels["pod-template-hash"] = json!(hash);
        let rs = json!({
            "metadata": {
                "labels": labels,
                "annotations": {
                    "deployment.kubernetes.io/revision": revision.to_string(),
                    "deployment.kubernetes.io/desired-replicas": replicas.to_string(),
                },
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": key.2, "uid": uid, "controller": true, "blockOwnerDeletion": true}],
            },
            "spec": {"replicas": replicas, "selector": selector, "template": rs_template},
            "status": {"replicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas, "observedGeneration": 1},
        });
        let unchanged = existing.as_ref().is_some_and(|e| {
            e.get("spec") == rs.get("spec")
                && e["metadata"]["annotations"] == rs["metadata"]["annotations"]
        });
        if !unchanged {
            let mut merged = existing.clone().unwrap_or(json!({}));
            merged["metadata"]["labels"] = rs["metadata"]["labels"].clone();
            merged["metadata"]["annotations"] = rs["metadata"]["annotations"].clone();
            merged["metadata"]["ownerReferences"] = rs["metadata"]["ownerReferences"].clone();
            merged["spec"] = rs["spec"].clone();
            merged["status"] = rs["status"].clone();
            self.put(&current_key, merged);
        }
        for (k, old) in owned.iter().filter(|(k, _)| *k != current_key) {
            if old["spec"]["replicas"].as_i64() != Some(0) {
                let mut scaled = old.clone();
                scaled["spec"]["replicas"] = json!(0);
                scaled["status"] = json!({"replicas": 0, "observedGeneration": 1});
                self.put(k, scaled);
            }
        }
        // Deployment status: the rollout completes after the delay.
        let done = self.ready_at.get(key).is_none_or(|t| Instant::now() >= *t);
        let generation = dep["metadata"]["generation"].as_i64().unwrap_or(1);
        let mut status = json!({
            "observedGeneration": generation,
            "replicas": replicas,
            "updatedReplicas": if done { replicas } else { 0 },
            "readyReplicas": if done { replicas } else { 0 },
            "availableReplicas": if done { replicas } else { 0 },
            "conditions": [
                {"type": "Available", "status": if done { "True" } else { "False" }, "reason": if done { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" }},
                {"type": "Progressing", "status": "True", "reason": if done { "NewReplicaSetAvailable" } else { "ReplicaSetUpdated" },
                 "message": format!("ReplicaSet \"{current_name}\" {}", if done { "has successfully progressed." } else { "is progressing." })},
            ],
        });
        if replicas == 0 {
            status["availableReplicas"] = json!(0);
        }
        let mut annotations = dep["metadata"]["annotations"].clone();
        if !annotations.is_object() {
            annotations = json!({});
        }
        annotations["deployment.kubernetes.io/revision"] = json!(revision.to_string());
        if dep["status"] != status || dep["metadata"]["annotations"] != annotations {
            let mut updated = dep.clone();
            updated["status"] = status;
            updated["metadata"]["annotations"] = annotations;
            // A status write does not bump the generation (spec is unchanged).
            self.put(key, updated);
            if done {
                self.ready_at.remove(key);
            }
        }
    }

    fn reconcile_pods(&mut self, key: &Key, rs: &Value) {
        let want = rs["spec"]["replicas"].as_i64().unwrap_or(0) as usize;
        let uid = rs["metadata"]["uid"].clone();
        let pods: Vec<Key> = self
            .objects
            .iter()
            .filter(|(k, v)| {
                k.0 == "pods" && k.1 == key.1 && v["metadata"]["ownerReferences"][0]["uid"] == uid
            })
            .map(|(k, _)| k.clone())
            .collect();
        for extra in pods.iter().skip(want) {
            self.remove(extra);
        }
        let schedulable: Vec<String> = self
            .objects
            .iter()
            .filter(|(k, v)| k.0 == "nodes" && v["spec"]["unschedulable"] != true)
            .map(|(k, _)| k.2.clone())
            .collect();
        if !schedulable.is_empty() {
            // The scheduler places pods left pending while no node would take them.
            for (i, pod_key) in pods.iter().take(want).enumerate() {
                let Some(pod) = self.objects.get(pod_key) else {
                    continue;
                };
                if pod["spec"]["nodeName"].is_null() {
                    let mut placed = pod.clone();
                    placed["spec"]["nodeName"] = json!(schedulable[i % schedulable.len()]);
                    placed["status"] = json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]});
                    self.put(pod_key, placed);
                }
            }
        }
        let nodes: Vec<String> = self
            .objects
            .iter()
            .filter(|(k, v)| k.0 == "nodes" && v["spec"]["unschedulable"] != true)
            .map(|(k, _)| k.2.clone())
            .collect();
        for i in pods.len()..want {
            self.uid += 1;
            let name = format!("{}-{:05x}", key.2, (self.uid * 7919) % 0xfffff);
            let node = if nodes.is_empty() {
                None
            } else {
                Some(nodes[(self.uid as usize + i) % nodes.len()].clone())
            };
            let template = &rs["spec"]["template"];
            let pod = json!({
                "metadata": {
                    "labels": template["metadata"]["labels"],
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": key.2, "uid": uid, "controller": true, "blockOwnerDeletion": true}],
                },
                "spec": {
                    "containers": template["spec"]["containers"],
                    "nodeName": node,
                },
                "status": if node.is_some() {
                    json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]})
                } else {
                    json!({"phase": "Pending"})
                },
            });
            self.put(&("pods".into(), key.1.clone(), name), pod);
        }
    }
}

// ---- HTTP ----------------------------------------------------------------------------------

fn respond(stream: &mut TcpStream, code: u16, body: &Value) -> std::io::Result<()> {
    let text = body.to_string();
    let reason = match code {
        200 => "OK",
        201 => "Created",
        404 => "Not Found",
        409 => "Conflict",
        422 => "Unprocessable Entity",
        _ => "Error",
    };
    write!(stream, "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}", text.len())?;
    stream.flush()
}

/// What a path names.
struct Target {
    resource: String,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn parse_target(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest: &[&str] = match segs.as_slice() {
        ["api", "v1", rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, r @ ..] if !r.is_empty() => (Some(ns.to_string()), r),
        r => (None, r),
    };
    match rest {
        [resource] => Some(Target {
            resource: resource.to_string(),
            namespace,
            name: None,
            sub: None,
        }),
        [resource, name] => Some(Target {
            resource: resource.to_string(),
            namespace,
            name: Some(name.to_string()),
            sub: None,
        }),
        [resource, name, sub] => Some(Target {
            resource: resource.to_string(),
            namespace,
            name: Some(name.to_string()),
            sub: Some(sub.to_string()),
        }),
        _ => None,
    }
}

fn discovery(path: &str, port: u16) -> Option<Value> {
    let resources = |group: &str| -> Value {
        let mut list: Vec<Value> = RESOURCES
            .iter()
            .filter(|r| r.0 == group)
            .map(|(_, _, name, namespaced, kind)| {
                let short: &[&str] = match *name {
                    "deployments" => &["deploy"],
                    "pods" => &["po"],
                    "nodes" => &["no"],
                    "namespaces" => &["ns"],
                    "replicasets" => &["rs"],
                    "daemonsets" => &["ds"],
                    "statefulsets" => &["sts"],
                    "services" => &["svc"],
                    "configmaps" => &["cm"],
                    "poddisruptionbudgets" => &["pdb"],
                    "cronjobs" => &["cj"],
                    "virtualservices" => &["vs"],
                    "destinationrules" => &["dr"],
                    _ => &[],
                };
                json!({"name": name, "singularName": kind.to_lowercase(), "namespaced": namespaced, "kind": kind, "shortNames": short,
                       "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]})
            })
            .collect();
        if group == "apps" {
            list.push(json!({"name": "deployments/scale", "singularName": "", "namespaced": true, "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}));
            list.push(json!({"name": "deployments/status", "singularName": "", "namespaced": true, "kind": "Deployment", "verbs": ["get", "patch", "update"]}));
        }
        if group.is_empty() {
            list.push(json!({"name": "pods/eviction", "singularName": "", "namespaced": true, "group": "policy", "version": "v1", "kind": "Eviction", "verbs": ["create"]}));
        }
        list.into()
    };
    Some(match path.trim_end_matches('/') {
        "/version" => {
            json!({"major": "1", "minor": "32", "gitVersion": "v1.32.0-runbook-fake", "platform": "linux/amd64"})
        }
        "/api" => {
            json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": format!("127.0.0.1:{port}")}]})
        }
        "/apis" => {
            let mut seen: Vec<(&str, &str)> = Vec::new();
            for (g, v, ..) in RESOURCES {
                if !g.is_empty() && !seen.contains(&(g, v)) {
                    seen.push((g, v));
                }
            }
            let groups: Vec<Value> = seen
                .iter()
                .map(|(g, v)| {
                    let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
                    json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
                })
                .collect();
            json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        }
        "/api/v1" => {
            json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": resources("")})
        }
        other => {
            let (group, version) = other.strip_prefix("/apis/")?.split_once('/')?;
            if !RESOURCES.iter().any(|r| r.0 == group && r.1 == version) {
                return None;
            }
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{group}/{version}"), "resources": resources(group)})
        }
    })
}

fn scale_of(dep: &Value) -> Value {
    let labels: Vec<String> = dep["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": dep["metadata"]["name"], "namespace": dep["metadata"]["namespace"], "resourceVersion": dep["metadata"]["resourceVersion"], "uid": dep["metadata"]["uid"]},
        "spec": {"replicas": dep["spec"]["replicas"]},
        "status": {"replicas": dep["status"]["replicas"], "selector": labels.join(",")},
    })
}

fn apply_patch(obj: &mut Value, content_type: &str, body: &[u8]) -> Result<(), (u16, Value)> {
    let bad = |e: String| status_error(400, "BadRequest", e);
    let group = obj["apiVersion"]
        .as_str()
        .and_then(|v| v.split_once('/'))
        .map(|(g, _)| g)
        .unwrap_or("");
    if content_type.starts_with("application/strategic-merge-patch") && !built_in(group) {
        // As the real API server answers for custom resources.
        return Err(status_error(
            415,
            "UnsupportedMediaType",
            "the body of the request was in an unknown format - accepted media types include: \
             application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
                .into(),
        ));
    }
    if content_type.starts_with("application/apply-patch") {
        let patch: Value = serde_yaml::from_slice(body).map_err(|e| bad(e.to_string()))?;
        // Server-side apply merges associative lists (containers, env) by their keys.
        strategic_merge(obj, &patch);
        return Ok(());
    }
    let patch: Value = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
    if content_type.starts_with("application/json-patch") {
        json_patch(obj, &patch).map_err(|e| status_error(422, "Invalid", e))
    } else if content_type.starts_with("application/strategic-merge-patch") {
        strategic_merge(obj, &patch);
        Ok(())
    } else {
        merge_patch(obj, &patch);
        Ok(())
    }
}

impl FakeKube {
    /// Starts a server for `region` on a free loopback port, with three schedulable nodes.
    pub fn start(region: &str, rollout_delay: Duration) -> std::io::Result<FakeKube> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                rv: 0,
                uid: 0,
                server: port,
                objects: BTreeMap::new(),
                events: Vec::new(),
                ready_at: HashMap::new(),
                rollout_delay,
                writes: BTreeMap::new(),
            }),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        {
            let mut st = shared.state.lock().unwrap();
            for i in 1..=3 {
                let name = format!("{region}-node-{i}");
                st.put(
                    &("nodes".into(), String::new(), name.clone()),
                    json!({"metadata": {"labels": {"kubernetes.io/hostname": name, "topology.kubernetes.io/region": region}},
                           "spec": {}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
                );
            }
        }
        let mut threads = Vec::new();
        let s = shared.clone();
        threads.push(std::thread::spawn(move || {
            while !s.stop.load(Ordering::SeqCst) {
                {
                    let mut st = s.state.lock().unwrap();
                    let before = st.rv;
                    st.reconcile();
                    if st.rv != before {
                        s.changed.notify_all();
                    }
                }
                std::thread::sleep(Duration::from_millis(25));
            }
        }));
        let s = shared.clone();
        threads.push(std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                std::thread::spawn(move || serve(conn, s, port));
            }
        }));
        Ok(FakeKube {
            port,
            region: region.into(),
            shared,
            threads,
        })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// An object as stored (for tests), if it exists.
    pub fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        self.shared
            .state
            .lock()
            .unwrap()
            .objects
            .get(&(resource.into(), namespace.into(), name.into()))
            .cloned()
    }

    pub fn list(
        &self,
        resource: &str,
        namespace: Option<&str>,
        labels: Option<&str>,
    ) -> Vec<Value> {
        self.shared
            .state
            .lock()
            .unwrap()
            .list(resource, namespace, labels, None)
    }

    /// Creates or replaces an object directly (seeding the stack).
    pub fn put(&self, resource: &str, namespace: &str, name: &str, obj: Value) {
        let mut st = self.shared.state.lock().unwrap();
        st.put(&(resource.into(), namespace.into(), name.into()), obj);
        st.reconcile();
    }

    /// The same as [`FakeKube::put`], for the world a stack starts in: a deployment written
    /// so has rolled out already (ready now, not after the rollout delay).
    pub fn put_rolled_out(&self, resource: &str, namespace: &str, name: &str, obj: Value) {
        let key: Key = (resource.into(), namespace.into(), name.into());
        let mut st = self.shared.state.lock().unwrap();
        st.put(&key, obj);
        st.ready_at.remove(&key);
        st.reconcile();
    }

    /// Write requests received, by "METHOD resource[/subresource]".
    pub fn writes(&self) -> BTreeMap<String, usize> {
        self.shared.state.lock().unwrap().writes.clone()
    }

    /// Every object as text, to compare states before and after.
    pub fn snapshot(&self) -> String {
        let st = self.shared.state.lock().unwrap();
        st.objects
            .iter()
            .map(|(k, v)| {
                let mut v = v.clone();
                v["metadata"]["resourceVersion"] = Value::Null;
                v["status"] = Value::Null;
                format!("{k:?} {v}\n")
            })
            .collect()
    }

    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.changed.notify_all();
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(stream: TcpStream, shared: Arc<Shared>, port: u16) {
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut out = stream;
    while let Some(req) = read_request(&mut reader) {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        if req.method == "GET" {
            if let Some(body) = discovery(&req.path, port) {
                if respond(&mut out, 200, &body).is_err() {
                    return;
                }
                continue;
            }
        }
        let Some(target) = parse_target(&req.path) else {
            let (code, body) = status_error(
                404,
                "NotFound",
                format!(
                    "the server could not find the requested resource ({})",
                    req.path
                ),
            );
            if respond(&mut out, code, &body).is_err() {
                return;
            }
            continue;
        };
        let watching = req.method == "GET"
            && matches!(
                req.query.get("watch").map(String::as_str),
                Some("true" | "1")
            );
        if watching {
            watch(&mut out, &shared, &target, &req);
            return;
        }
        let (code, body) = handle(&shared, &target, &req);
        if respond(&mut out, code, &body).is_err() {
            return;
        }
    }
}

fn handle(shared: &Shared, t: &Target, req: &Request) -> (u16, Value) {
    if resource_info(&t.resource).is_none() {
        return status_error(
            404,
            "NotFound",
            format!("the server doesn't have a resource type \"{}\"", t.resource),
        );
    }
    let ns = t.namespace.clone().unwrap_or_default();
    let mut st = shared.state.lock().unwrap();
    if req.method != "GET" {
        let what = match &t.sub {
            Some(sub) => format!("{} {}/{sub}", req.method, t.resource),
            None => format!("{} {}", req.method, t.resource),
        };
        *st.writes.entry(what).or_default() += 1;
    }
    let result = match (req.method.as_str(), &t.name, t.sub.as_deref()) {
        ("GET", None, _) => {
            let items = st.list(
                &t.resource,
                t.namespace.as_deref(),
                req.query.get("labelSelector").map(String::as_str),
                req.query.get("fieldSelector").map(String::as_str),
            );
            let (api, kind) = State::kind_of(&t.resource);
            (
                200,
                json!({"kind": format!("{kind}List"), "apiVersion": api, "metadata": {"resourceVersion": st.rv.to_string()}, "items": items}),
            )
        }
        ("GET", Some(name), sub) => {
            match st
                .objects
                .get(&(t.resource.clone(), ns.clone(), name.clone()))
            {
                None => not_found(&t.resource, name),
                Some(obj) if sub == Some("scale") => (200, scale_of(obj)),
                Some(obj) => (200, obj.clone()),
            }
        }
        ("POST", None, _) => {
            let Ok(mut obj) = serde_json::from_slice::<Value>(&req.body) else {
                return status_error(400, "BadRequest", "the body is not JSON".into());
            };
            let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
            if name.is_empty() {
                return status_error(422, "Invalid", "metadata.name: Required value".into());
            }
            let key = (t.resource.clone(), ns.clone(), name.clone());
            if st.objects.contains_key(&key) {
                return status_error(
                    409,
                    "AlreadyExists",
                    format!("{} \"{name}\" already exists", t.resource),
                );
            }
            obj["status"] = obj.get("status").cloned().unwrap_or(json!({}));
            (201, st.put(&key, obj))
        }
        ("POST", Some(name), Some("eviction")) => {
            let key = ("pods".to_string(), ns.clone(), name.clone());
            match st.remove(&key) {
                Some(_) => (
                    201,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 201}),
                ),
                None => not_found("pods", name),
            }
        }
        ("PUT" | "PATCH", Some(name), sub) => {
            let key = (t.resource.clone(), ns.clone(), name.clone());
            let apply = req.content_type.starts_with("application/apply-patch");
            let existing = st.objects.get(&key).cloned();
            let mut obj = match (existing, apply) {
                (Some(o), _) => o,
                (None, true) => json!({"metadata": {"name": name}}),
                (None, false) => return not_found(&t.resource, name),
            };
            if sub == Some("scale") {
                let mut scale = scale_of(&obj);
                if req.method == "PUT" {
                    scale = serde_json::from_slice(&req.body).unwrap_or(scale);
                } else if let Err(e) = apply_patch(&mut scale, &req.content_type, &req.body) {
                    return e;
                }
                obj["spec"]["replicas"] = scale["spec"]["replicas"].clone();
                let stored = st.put(&key, obj);
                st.reconcile();
                return (200, scale_of(&stored));
            }
            if req.method == "PUT" {
                match serde_json::from_slice::<Value>(&req.body) {
                    Ok(mut new) => {
                        if new.get("status").is_none() {
                            new["status"] = obj["status"].clone();
                        }
                        obj = new;
                    }
                    Err(e) => return status_error(400, "BadRequest", e.to_string()),
                }
            } else if let Err(e) = apply_patch(&mut obj, &req.content_type, &req.body) {
                return e;
            }
            let code = if st.objects.contains_key(&key) {
                200
            } else {
                201
            };
            let stored = st.put(&key, obj);
            st.reconcile();
            let stored = st.objects.get(&key).cloned().unwrap_or(stored);
            (code, stored)
        }
        ("DELETE", Some(name), None) => {
            let key = (t.resource.clone(), ns.clone(), name.clone());
            match st.remove(&key) {
                Some(obj) => {
                    // Garbage collection: what the object controlled goes with it.
                    let uid = obj["metadata"]["uid"].clone();
                    let owned: Vec<Key> = st
                        .objects
                        .iter()
                        .filter(|(_, v)| v["metadata"]["ownerReferences"][0]["uid"] == uid)
                        .map(|(k, _)| k.clone())
                        .collect();
                    for k in owned {
                        st.remove(&k);
                    }
                    (200, obj)
                }
                None => not_found(&t.resource, name),
            }
        }
        (m, _, _) => status_error(
            405,
            "MethodNotAllowed",
            format!("{m} is not supported here"),
        ),
    };
    shared.changed.notify_all();
    result
}

/// Streams watch events as chunked JSON lines until the timeout or the client goes.
fn watch(out: &mut TcpStream, shared: &Shared, t: &Target, req: &Request) {
    let timeout = req
        .query
        .get("timeoutSeconds")
        .and_then(|s| s.parse().ok())
        .unwrap_or(300u64);
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let labels = req.query.get("labelSelector").cloned();
    let fields = req.query.get("fieldSelector").cloned();
    let mut since: u64 = req
        .query
        .get("resourceVersion")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .is_err()
    {
        return;
    }
    let mut st = shared.state.lock().unwrap();
    if since == 0 {
        // No resourceVersion: start with the current objects as ADDED events.
        let current = st.list(
            &t.resource,
            t.namespace.as_deref(),
            labels.as_deref(),
            fields.as_deref(),
        );
        since = st.rv;
        drop(st);
        for obj in current {
            if send_event(out, "ADDED", &obj).is_err() {
                return;
            }
        }
        st = shared.state.lock().unwrap();
    }
    loop {
        let events: Vec<WatchEvent> = st
            .events
            .iter()
            .filter(|e| {
                e.rv > since
                    && e.key.0 == t.resource
                    && t.namespace.as_ref().is_none_or(|ns| e.key.1 == *ns)
            })
            .filter(|e| t.name.as_ref().is_none_or(|n| e.key.2 == *n))
            .filter(|e| labels.as_deref().is_none_or(|s| labels_match(&e.object, s)))
            .filter(|e| fields.as_deref().is_none_or(|s| fields_match(&e.object, s)))
            .cloned()
            .collect();
        since = st.rv;
        drop(st);
        for e in events {
            if send_event(out, e.kind, &e.object).is_err() {
                return;
            }
        }
        if Instant::now() >= deadline || shared.stop.load(Ordering::SeqCst) {
            let _ = write!(out, "0\r\n\r\n");
            return;
        }
        st = shared.state.lock().unwrap();
        let (guard, _) = shared
            .changed
            .wait_timeout(st, Duration::from_millis(200))
            .unwrap();
        st = guard;
        // A client that went away: a zero-length probe write fails.
        if out.write_all(b"").is_err() {
            return;
        }
    }
}

fn send_event(out: &mut TcpStream, kind: &str, obj: &Value) -> std::io::Result<()> {
    let line = format!("{}\n", json!({"type": kind, "object": obj}));
    write!(out, "{:x}\r\n{line}\r\n", line.len())?;
    out.flush()
}

/// A kubeconfig with one context per fake server, named after its region.
pub fn kubeconfig(servers: &[&FakeKube]) -> String {
    let mut clusters = String::new();
    let mut contexts = String::new();
    for s in servers {
        clusters.push_str(&format!(
            "- name: {r}\n  cluster:\n    server: {u}\n",
            r = s.region,
            u = s.url()
        ));
        contexts.push_str(&format!("- name: {r}\n  context:\n    cluster: {r}\n    user: runbook\n    namespace: default\n", r = s.region));
    }
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n{clusters}contexts:\n{contexts}current-context: {}\nusers:\n- name: runbook\n  user:\n    token: local-stack\n",
        servers.first().map(|s| s.region.as_str()).unwrap_or("")
    )
}

/// A deployment as a region of the stack runs it.
pub fn deployment(
    name: &str,
    namespace: &str,
    replicas: i64,
    image: &str,
    env: &[(&str, &str)],
) -> Value {
    let env: Vec<Value> = env
        .iter()
        .map(|(k, v)| json!({"name": k, "value": v}))
        .collect();
    json!({
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": name, "image": image, "env": env}]},
            },
        },
    })
}

/// A backup CronJob whose last successful run ended `age` ago (the fake server runs no jobs:
/// its status is what the test or the stack sets).
pub fn backup_cronjob(name: &str, namespace: &str, age: Duration) -> Value {
    let at = |ago: Duration| {
        humantime::format_rfc3339_seconds(std::time::SystemTime::now() - ago).to_string()
    };
    json!({
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "schedule": "0 2 * * *",
            "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "OnFailure",
                "containers": [{"name": "backup", "image": "postgres:15", "command": ["pg_dumpall"]}],
            }}}},
        },
        "status": {"lastScheduleTime": at(age + Duration::from_secs(60)), "lastSuccessfulTime": at(age)},
    })
}
