//! The fake Kubernetes API server, checked with the real kubectl, and the k8s:: actions.

use std::process::Command;
use std::time::Duration;

use runbook::stack::kube::{deployment, kubeconfig, FakeKube};

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
    let pods = kube.list("pods", Some("app"), Some("app=web"));
    assert_eq!(pods.len(), 4, "the evicted pods were replaced");
    for p in pods {
        let node = p["spec"]["nodeName"].as_str().unwrap().to_string();
        assert!(
            node == "us-east-1-node-3",
            "pods run only on the node neither cordoned nor drained: {node}"
        );
    }
    ok(&config, &["uncordon", "us-east-1-node-1"], "uncordoned");
}
