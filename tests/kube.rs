//! The fake Kubernetes API server, checked with the real kubectl, and the k8s:: actions.

use std::process::Command;
use std::time::Duration;

use runbook_stack::kube::{deployment, kubeconfig, FakeKube};

fn cluster(region: &str) -> (tempfile::TempDir, FakeKube, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let kube = FakeKube::start(region, Duration::from_millis(300)).unwrap();
    kube.put(
        "namespaces",
        "",
        "app",
        serde_json::json!({"metadata": {}, "spec": {}}),
    );
    kube.put(
        "deployments",
        "app",
        "web",
        deployment(
            "web",
            "app",
            3,
            "web:1.0",
            &[("DATABASE_URL", "postgres://db-us/app")],
        ),
    );
    let config = dir.path().join("kubeconfig");
    std::fs::write(&config, kubeconfig(&[&kube])).unwrap();
    (dir, kube, config)
}

fn kubectl(config: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(config)
        .args(["--context", "us-east-1", "--request-timeout=20s"])
        .args(args)
        .output()
        .expect("kubectl runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn ok(config: &std::path::Path, args: &[&str], expect: &str) -> String {
    let (success, out) = kubectl(config, args);
    assert!(success && out.contains(expect), "kubectl {args:?} → {out}");
    out
}

#[test]
fn kubectl_works_against_the_fake_api_server() {
    let (_d, kube, config) = cluster("us-east-1");
    ok(&config, &["-n", "app", "get", "deploy"], "web");
    ok(
        &config,
        &["-n", "app", "get", "pods", "-l", "app=web"],
        "web-",
    );
    ok(
        &config,
        &["-n", "app", "scale", "deploy/web", "--replicas=4"],
        "scaled",
    );
    assert_eq!(
        kube.get("deployments", "app", "web").unwrap()["spec"]["replicas"],
        4
    );
    ok(
        &config,
        &[
            "-n",
            "app",
            "rollout",
            "status",
            "deploy/web",
            "--timeout=30s",
        ],
        "successfully rolled out",
    );
    assert_eq!(kube.list("pods", Some("app"), Some("app=web")).len(), 4);

    ok(
        &config,
        &[
            "-n",
            "app",
            "set",
            "env",
            "deploy/web",
            "DATABASE_URL=postgres://db-eu/app",
        ],
        "env updated",
    );
    let env = kube.get("deployments", "app", "web").unwrap()["spec"]["template"]["spec"]
        ["containers"][0]["env"]
        .clone();
    assert_eq!(
        env,
        serde_json::json!([{"name": "DATABASE_URL", "value": "postgres://db-eu/app"}])
    );
    ok(
        &config,
        &[
            "-n",
            "app",
            "rollout",
            "status",
            "deploy/web",
            "--timeout=30s",
        ],
        "successfully rolled out",
    );
    let revision = |k: &FakeKube| {
        k.get("deployments", "app", "web").unwrap()["metadata"]["annotations"]
            ["deployment.kubernetes.io/revision"]
            .clone()
    };
    assert_eq!(revision(&kube), "2");

    ok(
        &config,
        &["-n", "app", "rollout", "undo", "deploy/web"],
        "rolled back",
    );
    let env = kube.get("deployments", "app", "web").unwrap()["spec"]["template"]["spec"]
        ["containers"][0]["env"]
        .clone();
    assert_eq!(env[0]["value"], "postgres://db-us/app");
    ok(
        &config,
        &[
            "-n",
            "app",
            "rollout",
            "status",
            "deploy/web",
            "--timeout=30s",
        ],
        "successfully rolled out",
    );
    assert_eq!(revision(&kube), "3");

    ok(&config, &["cordon", "us-east-1-node-1"], "cordoned");
    assert_eq!(
        kube.get("nodes", "", "us-east-1-node-1").unwrap()["spec"]["unschedulable"],
        true
    );
    ok(
        &config,
        &[
            "drain",
            "us-east-1-node-2",
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=60s",
        ],
        "drained",
    );
    // The controller replaces evicted pods shortly after, as a real one would.
    assert!(crate::support::wait_for(Duration::from_secs(5), || kube
        .list("pods", Some("app"), Some("app=web"))
        .len()
        == 4));
    let pods = kube.list("pods", Some("app"), Some("app=web"));
    for p in pods {
        let node = p["spec"]["nodeName"].as_str().unwrap().to_string();
        assert!(
            node == "us-east-1-node-3",
            "pods run only on the node neither cordoned nor drained: {node}"
        );
    }
    ok(&config, &["uncordon", "us-east-1-node-1"], "uncordoned");
}

fn runbook_test(config: &std::path::Path, script: &str) -> crate::support::Test {
    crate::support::Test::new()
        .inventory(&format!("[k8s]\nkubeconfig = \"{}\"\n", config.display()))
        .script(script)
}

const ACTIONS: &str = r#"
    let k = #{ context: "us-east-1", kubeconfig: inventory.k8s.kubeconfig, namespace: "app" };
    let at = |extra| { let m = k; m += extra; m };
    let s = k8s::scale(at.call(#{ deployment: "web", replicas: 5 }));
    let e = k8s::set_env(at.call(#{ deployment: "web", env: #{ DATABASE_URL: "postgres://db-eu/app" } }));
    let r = k8s::rollout_status(at.call(#{ deployment: "web", timeout: "30s" }));
    let p = k8s::pods(at.call(#{ labels: "app=web" }));
    let c = k8s::cordon(#{ context: "us-east-1", kubeconfig: inventory.k8s.kubeconfig, node: "us-east-1-node-1" });
    let g = k8s::get(at.call(#{ kind: "deployment", name: "web" }));
    log(`scaled=${s.changed} env=${e.changed} revision=${r.revision} pods=${p.pods.len()} ready=${p.ready} cordon=${c.changed} image=${g.items[0].spec.template.spec.containers[0].image}`);
"#;

#[test]
fn k8s_actions_work_and_twice_is_once() {
    let (_d, kube, config) = cluster("us-east-1");
    runbook_test(&config, ACTIONS)
        .run(&[])
        .code(0)
        .stdout("scaled=true env=[\"DATABASE_URL\"] revision=2 pods=5 ready=5 cordon=true image=web:1.0")
        .check();
    let dep = kube.get("deployments", "app", "web").unwrap();
    assert_eq!(dep["spec"]["replicas"], 5);
    assert_eq!(
        dep["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"],
        "postgres://db-eu/app"
    );
    assert_eq!(
        kube.get("nodes", "", "us-east-1-node-1").unwrap()["spec"]["unschedulable"],
        true
    );
    let writes = kube.writes();
    runbook_test(&config, ACTIONS)
        .run(&[])
        .code(0)
        .stdout("scaled=false env=[] revision=2")
        .stdout("cordon=false")
        .check();
    assert_eq!(kube.writes(), writes, "a second run sends no write at all");
}

#[test]
fn undo_restart_apply_and_drain() {
    let (d, kube, config) = cluster("us-east-1");
    let manifests = d.path().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(
        manifests.join("app.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: app\ndata:\n  region: us-east-1\n---\n\
         apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\n  namespace: app\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {app: api}\n  template:\n    metadata:\n      labels: {app: api}\n    spec:\n      containers:\n      - name: api\n        image: api:2.0\n",
    )
    .unwrap();
    let script = format!(
        r#"
        let k = #{{ context: "us-east-1", kubeconfig: inventory.k8s.kubeconfig, namespace: "app" }};
        step("apply", || {{
            let a = k8s::apply(#{{ context: "us-east-1", kubeconfig: inventory.k8s.kubeconfig, path: "{dir}" }});
            log(`applied ${{a.applied}}`);
        }});
        step("change and undo", || {{
            k8s::set_env(#{{ context: "us-east-1", kubeconfig: inventory.k8s.kubeconfig, namespace: "app", deployment: "web", env: #{{ MODE: "new" }} }});
            k8s::rollout_status(#{{ context: "us-east-1", kubeconfig: inventory.k8s.kubeconfig, namespace: "app", deployment: "web" }});
            let u = k8s::rollout_undo(#{{ context: "us-east-1", kubeconfig: inventory.k8s.kubeconfig, namespace: "app", deployment: "web" }});
            log(`undo ${{u.from_revision}} -> ${{u.to_revision}}`);
            k8s::restart(#{{ context: "us-east-1", kubeconfig: inventory.k8s.kubeconfig, namespace: "app", deployment: "web" }});
        }});
        step("drain", || {{
            let d = k8s::drain(#{{ context: "us-east-1", kubeconfig: inventory.k8s.kubeconfig, node: "us-east-1-node-2", timeout: "60s" }});
            log(`evicted ${{d.evicted.len()}}`);
        }});
        "#,
        dir = manifests.display()
    );
    runbook_test(&config, &script)
        .run(&[])
        .code(0)
        .stdout(r#"applied ["configmap/app/settings", "deployment/app/api"]"#)
        .stdout("undo 2 -> 1")
        .stdout("evicted")
        .check();
    assert_eq!(
        kube.get("configmaps", "app", "settings").unwrap()["data"]["region"],
        "us-east-1"
    );
    assert!(crate::support::wait_for(Duration::from_secs(5), || kube
        .list("pods", Some("app"), Some("app=api"))
        .len()
        == 2));
    let web = kube.get("deployments", "app", "web").unwrap();
    let env = &web["spec"]["template"]["spec"]["containers"][0]["env"];
    assert!(
        !env.to_string().contains("MODE"),
        "undo restored the first template: {env}"
    );
    assert!(web["spec"]["template"]["metadata"]["annotations"]
        ["kubectl.kubernetes.io/restartedAt"]
        .is_string());
    assert!(kube
        .list("pods", None, None)
        .iter()
        .all(|p| p["spec"]["nodeName"] != "us-east-1-node-2"));
    assert_eq!(
        kube.get("nodes", "", "us-east-1-node-2").unwrap()["spec"]["unschedulable"],
        true
    );
    // Applying the same manifests again changes nothing.
    let before = kube.snapshot();
    let again = format!(
        r#"k8s::apply(#{{ context: "us-east-1", kubeconfig: inventory.k8s.kubeconfig, path: "{}" }});"#,
        manifests.display()
    );
    runbook_test(&config, &again).run(&[]).code(0).check();
    assert_eq!(kube.snapshot(), before);
}

#[test]
fn dry_run_changes_no_object_and_plans_in_the_operators_words() {
    let (_d, kube, config) = cluster("us-east-1");
    std::thread::sleep(Duration::from_millis(400));
    let before = kube.snapshot();
    let writes = kube.writes();
    runbook_test(&config, ACTIONS)
        .run(&["--dry-run"])
        .code(0)
        .stdout("~ k8s::scale: scale deployment app/web in us-east-1 to 5 replicas; now 3")
        .stdout("~ k8s::set_env: set DATABASE_URL=postgres://db-eu/app on deployment web in us-east-1; now different: DATABASE_URL")
        .stdout("~ k8s::cordon: cordon node us-east-1-node-1 in us-east-1")
        .check();
    assert_eq!(kube.snapshot(), before);
    assert_eq!(kube.writes(), writes);
}

#[test]
fn unknown_deployments_and_contexts_are_named() {
    let (_d, _kube, config) = cluster("us-east-1");
    let t = runbook_test(
        &config,
        r#"
        try { k8s::scale(#{ context: "eu-west-9", kubeconfig: inventory.k8s.kubeconfig, deployment: "web", replicas: 1 }); } catch (e) { log(e); }
        k8s::scale(#{ context: "us-east-1", kubeconfig: inventory.k8s.kubeconfig, namespace: "app", deployment: "nope", replicas: 1 });
        "#,
    )
    .run(&[])
    .code(1)
    .stdout("no context 'eu-west-9' in the kubeconfig")
    .stdout("it has us-east-1")
    .stderr("deployment app/nope in us-east-1: not found");
    t.check();
    assert_eq!(t.journal(&t.only_run()).matches("action_failed").count(), 2);
}

/// Rendering a kustomization for the plan line runs `kubectl kustomize` like every child an
/// action starts: registered, so the second Ctrl-C that stops the run at once stops it too
/// (here a `kubectl` that hangs; before, it outlived the run).
#[test]
fn a_second_ctrl_c_stops_a_hung_kustomize_render() {
    let t = crate::support::Test::new()
        .file("overlay/kustomization.yaml", "resources: []\n")
        .file(
            "bin/kubectl",
            "#!/bin/sh\necho $$ > kubectl.pid\nexec sleep 60\n",
        )
        .script(r#"step("apply", || k8s::apply(#{ context: "x", kustomize: "overlay" }));"#);
    let bin = t.path("bin");
    std::fs::set_permissions(
        bin.join("kubectl"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let t = t.env("PATH", &path);
    let child = t.spawn(&["run", "runbook.rhai"]);
    let pid_file = t.path("kubectl.pid");
    assert!(crate::support::wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(&pid_file).is_ok_and(|p| p.ends_with('\n'))
    }));
    let kubectl: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Stopped by its own process id whatever the outcome.
    struct Stop(i32);
    impl Drop for Stop {
        fn drop(&mut self) {
            unsafe {
                libc::kill(self.0, libc::SIGKILL);
            }
        }
    }
    let _stop = Stop(kubectl);
    for _ in 0..2 {
        unsafe {
            libc::kill(child.id() as i32, libc::SIGINT);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{out:?}");
    let alive = || {
        std::fs::read_to_string(format!("/proc/{kubectl}/stat")).is_ok_and(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
    };
    assert!(
        crate::support::wait_for(Duration::from_secs(5), || !alive()),
        "kubectl kustomize (pid {kubectl}) outlived the run"
    );
}

/// `k8s::apply` with `kustomize`: an overlay rendered as `kubectl apply -k` renders it, applied
/// by the engine — planned object by object in a dry-run, applied, and checked with kubectl.
#[test]
fn apply_renders_a_kustomize_overlay() {
    let (d, kube, config) = cluster("us-east-1");
    let base = d.path().join("k8s/base");
    let overlay = d.path().join("k8s/overlays/us-east-1");
    std::fs::create_dir_all(&base).unwrap();
    std::fs::create_dir_all(&overlay).unwrap();
    std::fs::write(
        base.join("api.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {app: api}\n  template:\n    metadata:\n      labels: {app: api}\n    spec:\n      containers:\n      - name: api\n        image: api:1.0\n",
    )
    .unwrap();
    std::fs::write(
        base.join("kustomization.yaml"),
        "namespace: app\nresources:\n- api.yaml\n",
    )
    .unwrap();
    std::fs::write(
        overlay.join("kustomization.yaml"),
        "namespace: app\nresources:\n- ../../base\nnamePrefix: east-\nimages:\n- name: api\n  newTag: \"2.0\"\nreplicas:\n- name: api\n  count: 5\nconfigMapGenerator:\n- name: region\n  literals: [REGION=us-east-1]\n  options: {disableNameSuffixHash: true}\n",
    )
    .unwrap();
    let script = format!(
        r#"let a = k8s::apply(#{{ context: "us-east-1", kubeconfig: inventory.k8s.kubeconfig, kustomize: "{}" }});
        log(`applied ${{a.applied}}`);"#,
        overlay.display()
    );
    let before = kube.snapshot();
    runbook_test(&config, &script)
        .run(&["--dry-run"])
        .code(0)
        .stdout("apply configmap/east-region, deployment/east-api to us-east-1")
        .check();
    assert_eq!(kube.snapshot(), before, "a dry-run changes nothing");
    runbook_test(&config, &script)
        .run(&[])
        .code(0)
        .stdout(r#"applied ["configmap/app/east-region", "deployment/app/east-api"]"#)
        .check();
    ok(
        &config,
        &[
            "-n",
            "app",
            "get",
            "deployment",
            "east-api",
            "-o",
            "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image}",
        ],
        "5 api:2.0",
    );
    ok(
        &config,
        &[
            "-n",
            "app",
            "get",
            "configmap",
            "east-region",
            "-o",
            "jsonpath={.data.REGION}",
        ],
        "us-east-1",
    );

    // Not a kustomization, and both sources at once: named, nothing sent.
    let writes = kube.writes();
    let t = runbook_test(
        &config,
        &format!(
            r#"k8s::apply(#{{ context: "us-east-1", kubeconfig: inventory.k8s.kubeconfig, kustomize: "{}" }});"#,
            d.path().display()
        ),
    );
    t.run(&[])
        .code(1)
        .stderr("no kustomization.yaml there")
        .check();
    let t = runbook_test(
        &config,
        &format!(
            r#"k8s::apply(#{{ context: "us-east-1", kubeconfig: inventory.k8s.kubeconfig, kustomize: "{}", path: "{}" }});"#,
            overlay.display(),
            base.display()
        ),
    );
    t.run(&[]).code(1).stderr("not both").check();
    assert_eq!(kube.writes(), writes);
}

/// An Istio VirtualService, a custom resource the fake server serves as Istio's CRDs do.
fn virtual_service() -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "VirtualService",
        "metadata": {"name": "api", "namespace": "app"},
        "spec": {"hosts": ["api"], "http": [{
            "name": "local-region",
            "route": [
                {"destination": {"host": "api", "subset": "us-east"}, "weight": 95},
                {"destination": {"host": "api-eu", "subset": "eu-west"}, "weight": 5}
            ],
            "timeout": "2s"
        }]}
    })
}

/// k8s::patch of any kind found by discovery — a custom resource (merge by default, as
/// strategic merge is refused there) and a built-in one (strategic by default, JSON on
/// request) — and the mesh module shifting VirtualService weights; all checked with kubectl.
#[test]
fn patch_reaches_custom_resources_and_mesh_shifts_route_weights() {
    let (_d, kube, config) = cluster("us-east-1");
    kube.put("virtualservices", "app", "api", virtual_service());
    ok(&config, &["api-resources"], "virtualservices");
    ok(&config, &["-n", "app", "get", "vs", "api"], "api");

    let script = r#"
        import "mesh" as mesh;
        let k = #{ context: "us-east-1", kubeconfig: inventory.k8s.kubeconfig, namespace: "app" };
        let p = k8s::patch(#{ context: "us-east-1", kubeconfig: inventory.k8s.kubeconfig, namespace: "app",
                              kind: "VirtualService", name: "api", patch: #{ spec: #{ hosts: ["api", "api.example.com"] } } });
        log(`merge changed: ${p.changed}`);
        let again = k8s::patch(#{ context: "us-east-1", kubeconfig: inventory.k8s.kubeconfig, namespace: "app",
                                  kind: "virtualservices", name: "api", patch: #{ spec: #{ hosts: ["api", "api.example.com"] } } });
        log(`again changed: ${again.changed}`);
        try {
            k8s::patch(#{ context: "us-east-1", kubeconfig: inventory.k8s.kubeconfig, namespace: "app",
                          kind: "vs", name: "api", type: "strategic", patch: #{ spec: #{ hosts: ["x"] } } });
        } catch (e) { log(`strategic on a custom resource: ${e}`); }
        let s = k8s::patch(#{ context: "us-east-1", kubeconfig: inventory.k8s.kubeconfig, namespace: "app",
                              kind: "deployment", name: "web",
                              patch: #{ spec: #{ template: #{ spec: #{ containers: [#{ name: "web", image: "web:1.1" }] } } } } });
        let j = k8s::patch(#{ context: "us-east-1", kubeconfig: inventory.k8s.kubeconfig, namespace: "app",
                              kind: "deployment", name: "web", type: "json",
                              patch: [#{ op: "replace", path: "/spec/replicas", value: 4 }] });
        if !is_dry_run() { log(`json replicas: ${j.object.spec.replicas}`); }
        let before = mesh::shift(k, "api", "local-region", #{ "us-east": 0, "eu-west": 100 });
        log(`weights before: ${before}`);
        log(`weights now: ${mesh::weights(k, "api", ())}`);
        try { mesh::shift(k, "api", "local-region", #{ "us-east": 50 }); }
        catch (e) { log(`refused: ${e}`); }
        try { k8s::get(#{ context: "us-east-1", kubeconfig: inventory.k8s.kubeconfig, kind: "Gateway" }); }
        catch (e) { log(`unknown: ${e}`); }
    "#;
    let dry = kube.snapshot();
    runbook_test(&config, script)
        .run(&["--dry-run"])
        .code(0)
        .stdout("patch virtualservice app/api in us-east-1 (default type)")
        .check();
    assert_eq!(kube.snapshot(), dry, "a dry-run changes nothing");
    runbook_test(&config, script)
        .run(&[])
        .code(0)
        .stdout("merge changed: true")
        .stdout("again changed: false")
        .stdout("strategic on a custom resource:")
        .stdout("UnsupportedMediaType")
        .stdout("json replicas: 4")
        .stdout(r#"weights before: #{"eu-west": 5, "us-east": 95}"#)
        .stdout(r#"weights now: #{"eu-west": 100, "us-east": 0}"#)
        .stdout("would add up to 150, not 100")
        .stdout("serves no kind 'Gateway'")
        .check();
    ok(
        &config,
        &[
            "-n",
            "app",
            "get",
            "virtualservice",
            "api",
            "-o",
            "jsonpath={.spec.http[0].route[*].weight} {.spec.hosts} {.spec.http[0].timeout}",
        ],
        r#"0 100 ["api","api.example.com"] 2s"#,
    );
    // Strategic merge kept the container's other fields and merged by name.
    ok(
        &config,
        &["-n", "app", "get", "deployment", "web", "-o", "jsonpath={.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].env[0].name}"],
        "web:1.1 DATABASE_URL",
    );
}
