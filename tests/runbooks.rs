//! The shipped runbooks, drilled end to end on the local multi-region stack and checked with
//! the servers' own clients: psql, redis-cli, the AWS SDK, kubectl.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use runbook_stack::redis::{cli, info_field};
use runbook_stack::web::Health;
use runbook_stack::{moto, Stack};

use crate::support::{assert_says, kill9, wait_for, Ran, Test};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

pub(crate) struct Drill {
    pub stack: Stack,
    pub inventory: PathBuf,
    pub kubeconfig: PathBuf,
    pub t: Test,
    _dir: tempfile::TempDir,
}

pub(crate) fn drill() -> Drill {
    drill_with(runbook_stack::Options::default())
}

/// The stack with options (`runbook stack up --tls --prometheus`).
pub(crate) fn drill_with(options: runbook_stack::Options) -> Drill {
    let dir = tempfile::tempdir().unwrap();
    let server = moto::find_server(Some(Path::new(&format!("{ROOT}/.venv/bin/moto_server"))));
    let stack =
        Stack::up_with(&dir.path().join("stack"), &server, options).expect("the stack starts");
    let (inventory, kubeconfig) = stack.write_files(std::process::id()).unwrap();
    let t = Test::new()
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    Drill {
        stack,
        inventory,
        kubeconfig,
        t,
        _dir: dir,
    }
}

impl Drill {
    pub fn args(&self, runbook: &str, extra: &[&str]) -> Vec<String> {
        let mut a = vec![
            "run".to_string(),
            format!("{ROOT}/runbooks/{runbook}.rhai"),
            "-i".into(),
            self.inventory.display().to_string(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }

    /// An emergency failover to `target`, which must pass its health check `within`.
    pub fn emergency_failover_to(&self, target: &str, within: &str) -> Ran {
        let target = format!("target={target}");
        let within = format!("health_within={within}");
        let vars = [
            "--var",
            "check_interval=100ms",
            "--var",
            &target,
            "--var",
            &within,
        ];
        self.run("emergency-failover", &vars)
    }

    pub fn run(&self, runbook: &str, extra: &[&str]) -> Ran {
        let args = self.args(runbook, extra);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.t.exec(&refs)
    }

    /// Starts a runbook, SIGKILLs it once its journal satisfies `reached`, and returns the
    /// run's id and journal at that point.
    pub fn kill_when(
        &self,
        runbook: &str,
        extra: &[&str],
        reached: impl Fn(&str) -> bool,
    ) -> (String, String) {
        let args = self.args(runbook, extra);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut child = self.t.spawn(&refs);
        assert!(
            wait_for(Duration::from_secs(60), || {
                self.t
                    .run_ids()
                    .first()
                    .is_some_and(|id| reached(&self.t.journal(id)))
            }),
            "{runbook} never reached the point to kill it at"
        );
        kill9(&mut child);
        let run = self.t.only_run();
        let journal = self.t.journal(&run);
        (run, journal)
    }

    /// What Slack received (the stack's webhook), each message as its JSON text.
    pub fn slack(&self) -> Vec<String> {
        self.stack
            .web
            .messages()
            .iter()
            .map(|m| m.to_string())
            .collect()
    }

    /// `runbook report` of a run as Markdown, JSON and HTML, each checked against the run's
    /// journal: every step it started is in the steps table, the status matches, no
    /// password shows. Returns the Markdown.
    pub fn report(&self, run: &str, status: &str) -> String {
        let journal = self.t.journal(run);
        let mut steps: Vec<String> = Vec::new();
        let mut runbook = String::new();
        for line in journal.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            if v["event"] == "run_started" {
                runbook = v["runbook"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_string();
            }
            if v["event"] == "step_started" {
                let path: Vec<&str> = v["step"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s.as_str().unwrap())
                    .collect();
                let name = path.join(" › ");
                if !steps.contains(&name) {
                    steps.push(name);
                }
            }
        }
        let md = self.t.exec(&["report", run]);
        assert_eq!(md.code, 0, "{}", md.all());
        let head = format!("# Run {run} — {runbook}: {status}");
        assert!(md.stdout.starts_with(&head), "{head}\n{}", md.stdout);
        for section in [
            "| **Wall time** |",
            "## Steps",
            "| Step | Start | Duration | Status | Retries | Actions |",
            "## Sessions",
        ] {
            assert!(md.stdout.contains(section), "{section}\n{}", md.stdout);
        }
        for name in &steps {
            let leaf = name.rsplit(" › ").next().unwrap();
            assert!(
                md.stdout.contains(&format!("{leaf} | +")),
                "step {name} missing\n{}",
                md.stdout
            );
        }
        let json = self.t.exec(&["report", run, "--json"]);
        assert_eq!(json.code, 0, "{}", json.all());
        let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
        assert_eq!(v["status"], status);
        let names: Vec<&str> = v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names, steps,
            "the report's steps are the journal's, in order"
        );
        let html_path = self.t.path(&format!("{run}.html"));
        let html = self
            .t
            .exec(&["report", run, "--html", html_path.to_str().unwrap()]);
        assert_eq!(html.code, 0, "{}", html.all());
        assert!(html.stdout.contains("written to"), "{}", html.stdout);
        let page = std::fs::read_to_string(&html_path).unwrap();
        assert!(
            page.starts_with("<!DOCTYPE html>") && page.contains("<svg"),
            "{page}"
        );
        assert!(
            page.matches("<rect").count() >= steps.len(),
            "a bar per step"
        );
        for external in ["<script", "<link", "src=\"http", "@import"] {
            assert!(!page.contains(external), "self-contained: {external}");
        }
        for out in [&md.stdout, &json.stdout, &page] {
            for secret in [":runbook-stack@", "password=runbook-stack"] {
                assert!(!out.contains(secret), "a password in the report");
            }
        }
        md.stdout
    }

    pub fn psql(&self, region: &str, sql: &str) -> String {
        self.stack.pg.psql(self.stack.pg.node(region), sql).unwrap()
    }

    /// Waits up to `within` until `sql` on the region's database answers `want` (a standby
    /// replaying, a server reconnecting); fails the test with the last answer when it does not.
    pub fn psql_until(&self, region: &str, sql: &str, want: &str, within: Duration) {
        let mut last = String::new();
        let reached = wait_for(within, || {
            last = self.psql(region, sql);
            last == want
        });
        assert!(
            reached,
            "{region}: `{sql}` answered {last:?}, not {want:?}, within {within:?}"
        );
    }

    /// The region's database as a pg_dump archive (custom format) at `to`.
    pub fn pg_dump(&self, region: &str, to: &Path) {
        let node = self.stack.pg.node(region);
        let mut c = Command::new("pg_dump");
        c.args(["-Fc", "-h", "127.0.0.1", "-p", &node.port.to_string()])
            .args(["-U", "postgres", "-d", "postgres", "-f"])
            .arg(to)
            .env("PGPASSWORD", runbook_stack::postgres::PASSWORD);
        runbook_stack::run(c, "pg_dump").unwrap();
    }

    /// Data a restore puts back: 50 rows of `accounts` in us-east-1's database archived at
    /// `to`, then 40 of them deleted.
    pub fn damaged_data(&self, to: &Path) {
        self.psql("us-east-1", "CREATE TABLE accounts (id int PRIMARY KEY); INSERT INTO accounts SELECT generate_series(1, 50)");
        self.pg_dump("us-east-1", to);
        self.psql("us-east-1", "DELETE FROM accounts WHERE id > 10");
    }

    pub fn kubectl(&self, region: &str, args: &[&str]) -> String {
        let mut c = Command::new("kubectl");
        c.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--context", region, "-n", "app"])
            .args(args);
        runbook_stack::run(c, &format!("kubectl {args:?}"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// A field of the region's application deployment, by its jsonpath ("spec.replicas").
    pub fn deployment(&self, region: &str, path: &str) -> String {
        self.kubectl(
            region,
            &[
                "get",
                "deploy",
                "orchestrator",
                "-o",
                &format!("jsonpath={{.{path}}}"),
            ],
        )
    }

    pub fn replicas(&self, region: &str) -> String {
        self.deployment(region, "spec.replicas")
    }

    /// Makes `region` pass its health check, resumes `run`, which must finish, and checks
    /// Route53's weights: each region of `before` at the weight `after` gives it.
    pub fn resume_once_healthy(
        &self,
        run: &str,
        region: &str,
        before: &[(String, i64)],
        after: impl Fn(&str, i64) -> i64,
    ) {
        self.stack.web.set_health(region, Health::Ok);
        let resumed = self.t.exec(&["resume", run]);
        assert_eq!(resumed.code, 0, "{}", resumed.all());
        let want: Vec<(String, i64)> = before
            .iter()
            .map(|(r, w)| (r.clone(), after(r, *w)))
            .collect();
        assert_eq!(self.stack.moto.weights(), want);
    }

    /// Runs `act`, which must exit with `code`, say each of `says` on stderr, and leave
    /// everything a runbook could change as it was.
    pub fn changes_nothing(&self, code: i32, says: &[&str], act: impl FnOnce() -> Ran) {
        let before = self.state();
        let ran = act();
        assert_eq!(ran.code, code, "{}", ran.all());
        crate::support::assert_says(&ran.stderr, says);
        assert_eq!(self.state(), before, "nothing changed");
    }

    /// Everything a runbook could change, as the servers report it.
    pub(crate) fn state(&self) -> Vec<String> {
        let mut s = Vec::new();
        for n in &self.stack.pg.nodes {
            s.push(self.stack.pg.psql(
                n,
                "SELECT pg_is_in_recovery()::text || '|' || current_setting('default_transaction_read_only') || '|' || current_setting('wal_level')
                 || '|' || (SELECT count(*) FROM pg_roles) || '|' || (SELECT count(*) FROM pg_replication_slots)
                 || '|' || (SELECT string_agg(application_name, ',' ORDER BY application_name) FROM pg_stat_replication)",
            ).unwrap_or_else(|_| "does not answer".into()));
            s.push(
                std::fs::read_to_string(n.data_dir.join("postgresql.auto.conf"))
                    .unwrap_or_default(),
            );
        }
        for n in &self.stack.redis.nodes {
            s.push(format!(
                "{:?}/{:?}",
                info_field(n, "role"),
                info_field(n, "master_port")
            ));
        }
        s.push(self.stack.moto.snapshot());
        for k in &self.stack.kube {
            s.push(k.snapshot());
            s.push(format!("{:?}", k.writes()));
        }
        s.push(format!("{} messages", self.stack.web.messages().len()));
        s
    }
}

#[test]
fn every_shipped_runbook_and_stdlib_module_passes_check() {
    let t = Test::new();
    let mut args = vec!["check".to_string()];
    for dir in ["runbooks", "stdlib", "runbooks/examples"] {
        for e in std::fs::read_dir(format!("{ROOT}/{dir}")).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "rhai") {
                args.push(p.display().to_string());
            }
        }
    }
    assert!(args.len() >= 13, "{args:?}");
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let ran = t.exec(&refs);
    assert_eq!(ran.code, 0, "{}", ran.all());
}

/// Every runbook's dry-run reads the stack, changes nothing on any server, sends no message,
/// and prints a plan that names each change.
#[test]
fn dry_runs_change_nothing_and_plan_every_change() {
    let d = drill();
    std::thread::sleep(Duration::from_millis(500)); // let the first rollouts settle
    let before = d.state();
    let manifests = format!("--var=manifests={ROOT}/runbooks/manifests");
    let dump = d.t.path("app.dump");
    d.pg_dump("us-east-1", &dump);
    let backup = format!("backup={}", dump.display());
    let restore = format!(
        "~ shell::run: run `pg_restore --clean --if-exists --no-owner --single-transaction --dbname \"$RESTORE_DATABASE_URL\" '{}'`",
        dump.display()
    );
    let cases: [(&str, Vec<&str>, Vec<&str>); 10] = [
        ("initial-setup", vec![&manifests], vec!["~ k8s::apply: apply namespace/app, deployment/orchestrator to us-east-1", "~ pg::create_role: role replicator", "~ dns::upsert: upsert in example.com"]),
        ("planned-failover", vec!["--var", "target=eu-west-1"], vec!["~ approve: ask for approval", "~ k8s::scale: scale deployment app/orchestrator in us-east-1 to 0 replicas; now 3", "~ pg::fence: fence 127.0.0.1:", "~ pg::promote: promote 127.0.0.1:", "(eu-west-1) to primary; now replica at", "~ dns::set_weights: set weights of orchestrator.example.com A: ap-southeast-1 0 / eu-west-1 100 / us-east-1 0; now ap-southeast-1 0 / eu-west-1 0 / us-east-1 100"]),
        ("emergency-failover", vec!["--var", "check_interval=10ms", "--var", "force=true"], vec!["~ notify::slack: Slack: \":rotating_light: CRITICAL", "~ pg::promote: promote", "~ redis::promote: promote", "~ k8s::set_env: set DATABASE_URL=postgres://postgres:***@"]),
        ("maintenance", vec!["--var", "window=1s", "--var", "settle=1s"], vec!["~ k8s::drain: drain node eu-west-1-node-1 in eu-west-1; now", "~ k8s::uncordon: uncordon node us-east-1-node-3"]),
        ("rollback", vec![], vec!["~ k8s::rollout_undo: roll back deployment orchestrator in us-east-1 to the previous revision; now at revision 1"]),
        ("rollback", vec!["--var", "mode=database", "--var", &backup], vec!["~ k8s::scale: scale deployment app/orchestrator in eu-west-1 to 0 replicas", "~ pg::fence: fence 127.0.0.1:", "~ shell::run: run `pg_dump --format=custom --file '", &restore]),
        // eu-west-1 already streams from us-east-1: no rewind, its writes not stopped.
        ("rejoin", vec!["--var", "region=eu-west-1"], vec!["eu-west-1 already streams from us-east-1", "~ pg::create_replication_slot: create replication slot eu_west_1", "~ redis::replicate: make", "eu-west-1 streamed from us-east-1 already: its database needed no rejoin, and its cache and application follow us-east-1; DNS weight 0"]),
        ("status", vec![], vec!["Plan: "]),
        // A standby takes no writes: nothing to fence.
        ("fence", vec!["--var", "region=eu-west-1"], vec!["eu-west-1's database is a standby streaming from us-east-1: it takes no writes, so there is nothing to fence", "Plan: no changes"]),
        // The only region in rotation: its users to every region that serves them.
        ("drain", vec!["--var", "region=us-east-1"], vec!["~ dns::set_weights: set weights of orchestrator.example.com A: ap-southeast-1 100 / eu-west-1 100 / us-east-1 0", "~ notify::slack: Slack: \":construction: us-east-1 is out of rotation"]),
    ];
    for (runbook, vars, expected) in cases {
        let mut extra = vec!["--dry-run"];
        extra.extend(vars);
        let ran = d.run(runbook, &extra);
        assert_eq!(ran.code, 0, "{runbook}:\n{}", ran.all());
        assert!(
            ran.stdout.contains("Plan: "),
            "{runbook}: no plan\n{}",
            ran.stdout
        );
        for e in expected {
            assert!(
                ran.stdout.contains(e),
                "{runbook}: the plan lacks {e:?}\n{}",
                ran.stdout
            );
        }
        assert_eq!(d.state(), before, "{runbook}'s dry-run changed a server");
    }
    assert!(d.t.run_ids().is_empty(), "dry-runs leave no runs");
    assert!(
        kept_archives(&d.t.path("")).is_empty(),
        "nothing was dumped"
    );
}

#[test]
fn initial_setup_converges_and_a_second_run_changes_nothing() {
    let d = drill();
    // eu-west-1 names its kustomize overlay; the other regions get the plain folder.
    let inventory = std::fs::read_to_string(&d.inventory).unwrap().replace(
        "[regions.eu-west-1]\n",
        &format!("[regions.eu-west-1]\nkustomize = \"{ROOT}/runbooks/overlays/eu-west-1\"\n"),
    );
    std::fs::write(&d.inventory, inventory).unwrap();
    let manifests = format!("--var=manifests={ROOT}/runbooks/manifests");
    // A standby's database that does not answer would stop the setup half-way: refused first.
    let eu = d.stack.pg.node("eu-west-1");
    d.stack.pg.stop_node(eu);
    d.changes_nothing(
        1,
        &[
            "eu-west-1's database does not answer: the setup configures every region's database and would stop half-way. Nothing was changed",
            "next: nothing was changed; once the cause is fixed, run it again",
        ],
        || d.run("initial-setup", &[&manifests]),
    );
    d.stack.pg.start_node(eu).unwrap();
    let ran = d.run("initial-setup", &[&manifests]);
    assert_eq!(ran.code, 0, "{}", ran.all());
    let slack = d.slack();
    assert!(
        slack.iter().any(|m| m.contains(
            "multi-region setup verified: us-east-1 primary; standbys eu-west-1, ap-southeast-1"
        )),
        "{slack:?}"
    );
    // DNS gave eu-west-1 no users (the stack starts at 100 / 0 / 0): a drain is not told apart
    // from a region never in rotation, so it is said, with the weights that keep it out.
    assert_says(
        &ran.stdout,
        &["eu-west-1 is put in rotation: DNS gives it no users now, and weight 30 after this setup. If it was taken out on purpose (drain.rhai, a maintenance), keep it out with --var weights=70,0,0"],
    );
    assert!(
        !ran.stdout.contains("ap-southeast-1 is put in rotation"),
        "{}",
        ran.stdout
    );
    let report = d.report(&d.t.newest_run(), "finished");
    assert!(
        report.contains("| primary | us-east-1 | report |"),
        "{report}"
    );
    let label = |region: &str| d.deployment(region, "metadata.labels.region");
    assert_eq!(
        label("eu-west-1"),
        "eu-west-1",
        "the overlay was applied there"
    );
    assert_eq!(label("us-east-1"), "", "the plain folder elsewhere");
    assert!(
        ran.stdout.contains("2 standbys streaming"),
        "{}",
        ran.stdout
    );
    assert_eq!(
        d.psql(
            "us-east-1",
            "SELECT rolreplication FROM pg_roles WHERE rolname = 'replicator'"
        ),
        "t"
    );
    assert_eq!(
        d.psql(
            "us-east-1",
            "SELECT string_agg(slot_name, ',' ORDER BY slot_name) FROM pg_replication_slots"
        ),
        "ap_southeast_1,eu_west_1"
    );
    assert_eq!(
        d.stack.moto.weights(),
        [
            ("ap-southeast-1".into(), 0),
            ("eu-west-1".into(), 30),
            ("us-east-1".into(), 70)
        ]
    );
    let env = d.deployment(
        "eu-west-1",
        "spec.template.spec.containers[0].env[?(@.name==\"DATABASE_URL\")].value",
    );
    assert!(
        env.contains(&format!(":{}/", d.stack.pg.node("eu-west-1").port)),
        "eu-west-1 reads its local replica: {env}"
    );
    assert_eq!(
        cli(d.stack.redis.node("ap-southeast-1"), &["ROLE"])
            .unwrap()
            .lines()
            .next(),
        Some("slave")
    );
    let before = d.state();
    let again = d.run("initial-setup", &[&manifests]);
    assert_eq!(again.code, 0, "{}", again.all());
    let after = d.state();
    // The same objects, settings, roles, slots and records; only the report message is new.
    let strip = |s: Vec<String>| -> Vec<String> {
        s.into_iter()
            .filter(|x| !x.ends_with("messages") && !x.starts_with('{'))
            .collect()
    };
    assert_eq!(strip(after), strip(before));

    // What runs is kept on a third run: an upgraded image, an operator's scale. A region
    // scaled to 0 comes back at the manifests' count; keep_running=false puts the manifests'
    // values everywhere.
    for region in ["us-east-1", "eu-west-1"] {
        d.kubectl(
            region,
            &[
                "set",
                "image",
                "deploy/orchestrator",
                "orchestrator=orchestrator:1.4",
            ],
        );
    }
    d.kubectl(
        "eu-west-1",
        &["scale", "deploy/orchestrator", "--replicas=1"],
    );
    d.kubectl(
        "ap-southeast-1",
        &["scale", "deploy/orchestrator", "--replicas=0"],
    );
    let image = |region: &str| d.deployment(region, "spec.template.spec.containers[0].image");
    let kept = d.run("initial-setup", &[&manifests]);
    assert_eq!(kept.code, 0, "{}", kept.all());
    assert_says(
        &kept.stdout,
        &[
            "apply namespace/app, deployment/orchestrator to us-east-1 (running images and replica counts kept)",
            "us-east-1: deployment/app/orchestrator: container orchestrator image orchestrator:1.4 kept (the manifests say orchestrator:1.0)",
            "eu-west-1: deployment/app/orchestrator: replicas 1 kept (the manifests say 3)",
            "eu-west-1: what runs was kept: an image changes region by region with upgrade.rhai",
        ],
    );
    assert_eq!(
        (
            image("us-east-1"),
            image("eu-west-1"),
            image("ap-southeast-1")
        ),
        (
            "orchestrator:1.4".into(),
            "orchestrator:1.4".into(),
            "orchestrator:1.0".into()
        )
    );
    assert_eq!(
        REGIONS.map(|r| d.replicas(r)),
        ["3", "1", "3"],
        "eu-west-1's scale kept; ap-southeast-1, stopped, brought up"
    );
    assert!(
        !kept.stdout.contains("ap-southeast-1: deployment"),
        "{}",
        kept.stdout
    );
    let manifests_values = d.run(
        "initial-setup",
        &[&manifests, "--var", "keep_running=false"],
    );
    assert_eq!(manifests_values.code, 0, "{}", manifests_values.all());
    assert!(
        !manifests_values.stdout.contains(" kept "),
        "{}",
        manifests_values.stdout
    );
    for region in REGIONS {
        assert_eq!(image(region), "orchestrator:1.0", "{region}");
        assert_eq!(d.replicas(region), "3", "{region}");
    }
}

/// Planned failover under a steady insert load: every insert the database acknowledged is on
/// the new primary.
#[test]
fn planned_failover_under_load_loses_no_committed_row() {
    let d = drill();
    d.psql(
        "us-east-1",
        "CREATE TABLE orders (id serial PRIMARY KEY, at timestamptz DEFAULT now())",
    );
    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicUsize::new(0));
    let port = d.stack.pg.node("us-east-1").port;
    let socket = d.stack.pg.dir.clone();
    let load = {
        let (stop, committed) = (stop.clone(), committed.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let ok = Command::new("psql")
                    .args(["-X", "-q", "-U", "postgres", "-h"])
                    .arg(&socket)
                    .args([
                        "-p",
                        &port.to_string(),
                        "-d",
                        "postgres",
                        "-v",
                        "ON_ERROR_STOP=1",
                        "-c",
                        "INSERT INTO orders DEFAULT VALUES",
                    ])
                    .output()
                    .map(|o| o.status.success())
                    .unwrap_or(false);
                if ok {
                    committed.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };
    assert!(wait_for(Duration::from_secs(10), || committed
        .load(Ordering::SeqCst)
        >= 20));
    let ran = d.run("planned-failover", &["--var", "target=eu-west-1", "--yes"]);
    stop.store(true, Ordering::SeqCst);
    load.join().unwrap();
    assert_eq!(ran.code, 0, "{}", ran.all());
    let report = d.report(&d.t.newest_run(), "finished");
    assert!(
        report.contains("| **Data-loss bound** | 0 bytes (eu-west-1 replayed past"),
        "{report}"
    );
    assert!(
        report.contains("| new_primary | eu-west-1 | report |"),
        "{report}"
    );
    let acknowledged = committed.load(Ordering::SeqCst);
    let on_new_primary: usize = d
        .psql("eu-west-1", "SELECT count(*) FROM orders")
        .parse()
        .unwrap();
    assert!(acknowledged >= 20);
    assert_eq!(
        on_new_primary, acknowledged,
        "every acknowledged insert is on the new primary"
    );
    // The end state, as each system's own client sees it.
    assert_eq!(d.psql("eu-west-1", "SELECT pg_is_in_recovery()"), "f");
    // A switchover: the old primary is a standby of the new one, no longer fenced.
    assert_eq!(
        d.psql(
            "us-east-1",
            "SELECT pg_is_in_recovery()::text || ' ' || current_setting('default_transaction_read_only')"
        ),
        "true off"
    );
    assert_eq!(
        d.psql(
            "eu-west-1",
            "SELECT string_agg(application_name, ',' ORDER BY application_name) FROM pg_stat_replication"
        ),
        "ap-southeast-1,us-east-1"
    );
    for standby in ["ap-southeast-1", "us-east-1"] {
        d.psql_until(
            standby,
            "SELECT count(*) FROM orders",
            &acknowledged.to_string(),
            Duration::from_secs(10),
        );
    }
    assert_eq!(
        info_field(d.stack.redis.node("eu-west-1"), "role").as_deref(),
        Some("master")
    );
    assert_eq!(
        info_field(d.stack.redis.node("us-east-1"), "master_port"),
        Some(d.stack.redis.node("eu-west-1").port.to_string())
    );
    assert_eq!(
        d.stack.moto.weights(),
        [
            ("ap-southeast-1".into(), 0),
            ("eu-west-1".into(), 100),
            ("us-east-1".into(), 0)
        ]
    );
    // The old primary's region runs what it normally runs, pointed at the new primary, out of
    // rotation (its DNS weight is 0 above).
    assert_eq!(d.replicas("us-east-1"), "3");
    assert_eq!(d.replicas("eu-west-1"), "3");
    let messages = format!("{:?}", d.stack.web.messages());
    assert!(
        messages.contains("no committed transaction lost"),
        "{messages}"
    );

    // Asked again (shell history, a second operator): nothing to do, and nothing done...
    let before = d.state();
    let again = d.run("planned-failover", &["--var", "target=eu-west-1"]);
    assert_eq!(again.code, 0, "{}", again.all());
    crate::support::assert_says(
        &again.stdout,
        &["eu-west-1 is the primary already, and the standbys, Redis, traffic and applications follow it: nothing to do"],
    );
    assert_eq!(d.state(), before, "nothing changed");
    // ...but what does not follow it is named, at once (exit 1), and still nothing is done.
    d.stack.web.set_health("eu-west-1", Health::Fail);
    d.changes_nothing(
        1,
        &[
            "in step 'already done': topology::verify failed: the postcondition does not hold:\n      - eu-west-1 has DNS weight 100 but fails its health check",
            "in step 'already done'",
        ],
        || d.run("planned-failover", &["--var", "target=eu-west-1"]),
    );
    d.stack.web.set_health("eu-west-1", Health::Ok);
}

#[test]
fn emergency_failover_with_the_primary_down_completes_and_reports_its_recovery_time() {
    let d = drill();
    d.stack.web.set_health("us-east-1", Health::Fail);
    d.stack.pg.stop_node(d.stack.pg.node("us-east-1"));
    let ran = d.run("emergency-failover", &["--var", "check_interval=100ms"]);
    assert_eq!(ran.code, 0, "{}", ran.all());
    let report = d.report(&d.t.newest_run(), "finished");
    for want in [
        "| **Data-loss bound** | 0 bytes (the old primary is down; its WAL on disk ends at",
        "| new_primary | eu-west-1 | report |",
        "| old_primary_database | UNFENCED | report |",
        "| old_primary_application | scaled to 0 | report |",
        "| **Operators** | tester |",
    ] {
        assert!(report.contains(want), "{want}\n{report}");
    }
    let line = ran
        .stdout
        .lines()
        .find(|l| l.contains("failover from us-east-1 to eu-west-1 done in"))
        .unwrap_or_else(|| panic!("{}", ran.stdout));
    let secs: f64 = line
        .split("done in ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(secs > 0.0 && secs < 60.0, "{line}");
    assert_eq!(d.psql("eu-west-1", "SELECT pg_is_in_recovery()"), "f");
    assert_eq!(
        info_field(d.stack.redis.node("eu-west-1"), "role").as_deref(),
        Some("master")
    );
    assert_eq!(d.stack.moto.weights()[1], ("eu-west-1".into(), 100));
    assert_eq!(d.replicas("eu-west-1"), "3");
    let messages = format!("{:?}", d.stack.web.messages());
    assert!(
        messages.contains("CRITICAL: us-east-1 is failing") && messages.contains("done in"),
        "{messages}"
    );
}

/// Traffic goes only to a region that passes its health check: an emergency failover whose
/// target's application fails it promotes the target, then stops before DNS moves a single
/// user (resumable, saying where users still go); resumed once it passes, it moves them.
#[test]
fn emergency_failover_sends_no_users_to_a_target_that_fails_its_health_check() {
    let d = drill();
    d.stack.web.set_health("us-east-1", Health::Fail);
    d.stack.pg.stop_node(d.stack.pg.node("us-east-1"));
    d.stack.web.set_health("eu-west-1", Health::Fail);
    let weights = d.stack.moto.weights();
    let ran = d.emergency_failover_to("eu-west-1", "3s");
    assert_eq!(ran.code, 1, "{}", ran.all());
    assert_says(
        &ran.stderr,
        &[
            "eu-west-1 does not pass its health check within 3s (--var health_within): DNS was not changed, so no users were sent to it. Fix it and resume this run; until then DNS keeps sending users to us-east-1.",
            "runbook resume ",
        ],
    );
    assert_eq!(d.stack.moto.weights(), weights, "no user moved");
    assert_eq!(d.psql("eu-west-1", "SELECT pg_is_in_recovery()"), "f");

    let all_to_eu = |r: &str, _| if r == "eu-west-1" { 100 } else { 0 };
    d.resume_once_healthy(&d.t.only_run(), "eu-west-1", &weights, all_to_eu);
}

/// An emergency failover stopped by a mistake in the inventory (the target's health URL names a
/// port nothing listens on) goes on once the operator fixes the file: the resume replays what
/// the run saw and changed — the observation at the start took the whole inventory — runs the
/// failed check with the fixed URL and finishes, promoting once.
#[test]
fn emergency_failover_resumes_once_the_operator_fixes_the_inventory() {
    let d = drill();
    d.stack.web.set_health("us-east-1", Health::Fail);
    d.stack.pg.stop_node(d.stack.pg.node("us-east-1"));
    let good = std::fs::read_to_string(&d.inventory).unwrap();
    let (head, eu) = good.split_once("[regions.eu-west-1]").unwrap();
    let at = eu.find("health_url = \"").unwrap() + "health_url = \"".len();
    let end = at + eu[at..].find('"').unwrap();
    let wrong = format!(
        "{head}[regions.eu-west-1]{}http://127.0.0.1:9/health{}",
        &eu[..at],
        &eu[end..]
    );
    std::fs::write(&d.inventory, &wrong).unwrap();
    let weights = d.stack.moto.weights();
    let ran = d.emergency_failover_to("eu-west-1", "2s");
    assert_eq!(ran.code, 1, "{}", ran.all());
    assert_says(
        &ran.stderr,
        &["eu-west-1 does not pass its health check within 2s"],
    );
    assert_eq!(d.stack.moto.weights(), weights, "no user moved");
    let run = d.t.only_run();

    std::fs::write(&d.inventory, &good).unwrap();
    let resumed = d.t.exec(&["resume", &run]);
    assert_eq!(resumed.code, 0, "{}", resumed.all());
    assert_says(
        &resumed.all(),
        &[
            "changed since the run started: regions.eu-west-1.health_url. What the run read and said with the old values stands as recorded",
            "· topology::observe observe ap-southeast-1, eu-west-1, us-east-1 (replayed: made with the inventory as it was)",
            "· pg::promote promote ",
            "run finished",
        ],
    );
    let promotions =
        d.t.journal(&run)
            .lines()
            .filter(|l| l.contains("\"event\":\"action_started\"") && l.contains("\"pg::promote\""))
            .count();
    assert_eq!(promotions, 1, "promoted once");
    // The resume recorded the inventory it read, passwords masked as at the start.
    let journal = d.t.journal(&run);
    let resumed = journal
        .lines()
        .find(|l| l.contains("\"event\":\"run_resumed\""))
        .unwrap();
    assert!(resumed.contains(&eu[at..end]), "{resumed}");
    assert!(
        !journal.contains(":runbook-stack@"),
        "a password in the journal"
    );
    let to_eu: Vec<(String, i64)> = weights
        .iter()
        .map(|(r, _)| (r.clone(), if r == "eu-west-1" { 100 } else { 0 }))
        .collect();
    assert_eq!(d.stack.moto.weights(), to_eu);
    assert_eq!(d.psql("eu-west-1", "SELECT pg_is_in_recovery()"), "f");
}

/// A planned failover killed while it waits for the promoted target to pass its health check,
/// the target failing it meanwhile: resumed, it stops before DNS moves a user; resumed once
/// the target passes, it moves them and finishes.
#[test]
fn planned_failover_moves_users_only_once_the_target_passes_its_health_check() {
    let d = drill();
    let weights = d.stack.moto.weights();
    let (run, _) = d.kill_when(
        "planned-failover",
        &[
            "--var",
            "target=eu-west-1",
            "--var",
            "health_within=3s",
            "--yes",
        ],
        |j| j.contains(r#""step":["target healthy"]"#),
    );
    assert_eq!(d.psql("eu-west-1", "SELECT pg_is_in_recovery()"), "f");
    d.stack.web.set_health("eu-west-1", Health::Fail);
    let failed = d.t.exec(&["resume", &run]);
    assert_eq!(failed.code, 1, "{}", failed.all());
    assert_says(
        &failed.stderr,
        &["eu-west-1 does not pass its health check within 3s (--var health_within): DNS was not changed, so no users were sent to it. Fix it and resume this run; until then DNS keeps sending users to us-east-1."],
    );
    assert_eq!(d.stack.moto.weights(), weights, "no user moved");

    let all_to_eu = |r: &str, _| if r == "eu-west-1" { 100 } else { 0 };
    d.resume_once_healthy(&run, "eu-west-1", &weights, all_to_eu);
}

/// rejoin.rhai gives a region its DNS weight back only once it passes its health check: with
/// its application failing, the region is made a standby and the run stops before DNS sends it
/// a user, saying how to put them back later; resumed once it passes, it sets the weight.
#[test]
fn rejoin_gives_users_back_only_once_the_region_passes_its_health_check() {
    let d = drill();
    let weights = d.stack.moto.weights();
    d.stack.web.set_health("ap-southeast-1", Health::Fail);
    let args = [
        "--var",
        "region=ap-southeast-1",
        "--var",
        "weight=45",
        "--var",
        "replicas=2",
        "--var",
        "health_within=3s",
    ];
    let ran = d.run("rejoin", &args);
    assert_eq!(ran.code, 1, "{}", ran.all());
    assert_says(
        &ran.stderr,
        &[
            "ap-southeast-1 does not pass its health check within 3s (--var health_within): DNS was not changed, so no users were sent to it. Fix it and resume this run; ap-southeast-1 is a standby again, only its users are not back (or abandon this run and put them back later: runbook run ",
            "/runbooks/drain.rhai -i ",
            " --var region=ap-southeast-1 --var restore=true).",
        ],
    );
    assert_eq!(d.stack.moto.weights(), weights, "no user moved");
    assert_eq!(d.psql("ap-southeast-1", "SELECT pg_is_in_recovery()"), "t");

    let ap_back = |r: &str, w| if r == "ap-southeast-1" { 45 } else { w };
    d.resume_once_healthy(&d.t.only_run(), "ap-southeast-1", &weights, ap_back);
}

/// A lost region: its database crashed, and its addresses — the database's port, Redis, the
/// Kubernetes API, the health endpoint — take connections and never answer, as a region cut
/// off by the network does. The failover observes it within its probe time, gives each of the
/// lost region's parts a bounded try, and completes everywhere else.
#[test]
fn emergency_failover_completes_when_the_lost_region_never_answers() {
    let d = drill();
    // (It answers after 11 s: later than any check waits.)
    d.stack.web.set_health("us-east-1", Health::Slow);
    let node = d.stack.pg.node("us-east-1");
    runbook_stack::postgres::stop_dir(&node.data_dir, libc::SIGQUIT).unwrap();
    let silent = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let database = silent(node.port);
    let (redis, kube) = (silent(0), silent(0));
    let port = |l: &std::net::TcpListener| l.local_addr().unwrap().port();
    let was_redis = d.stack.redis.node("us-east-1").port;
    let was_kube = d
        .stack
        .kube
        .iter()
        .find(|k| k.region == "us-east-1")
        .unwrap()
        .port;
    let kubeconfig = d.t.path("lost.kubeconfig");
    std::fs::write(
        &kubeconfig,
        std::fs::read_to_string(&d.kubeconfig).unwrap().replace(
            &format!("127.0.0.1:{was_kube}"),
            &format!("127.0.0.1:{}", port(&kube)),
        ),
    )
    .unwrap();
    let inventory = std::fs::read_to_string(&d.inventory)
        .unwrap()
        .replace(
            &format!("127.0.0.1:{was_redis}"),
            &format!("127.0.0.1:{}", port(&redis)),
        )
        .replace(
            &format!("redis_port = {was_redis}"),
            &format!("redis_port = {}", port(&redis)),
        )
        .replace(
            &d.kubeconfig.display().to_string(),
            &kubeconfig.display().to_string(),
        );
    std::fs::write(&d.inventory, inventory).unwrap();

    let ran = d.run("emergency-failover", &[]);
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert_says(
        &ran.stdout,
        &[
            "us-east-1's application could not be read (the Kubernetes API did not answer within 3s)",
            // Its database does not answer: its health is not waited on again.
            "us-east-1: database unreachable; its health check failed when observed: ",
            "us-east-1's database could not be fenced",
            "us-east-1's application could not be scaled to 0: k8s::scale failed: did not finish within 3s",
            "Redis in us-east-1 not repointed",
            "applications in us-east-1 not repointed: k8s::set_env failed: did not finish within 3s",
            "result old_primary_database: UNFENCED",
            "us-east-1's application could not be scaled to 0 (its cluster did not answer): if the region comes back it runs against its old database until that rejoin, which stops it first",
            "result old_primary_application: NOT scaled to 0",
        ],
    );
    assert_eq!(d.psql("eu-west-1", "SELECT pg_is_in_recovery()"), "f");
    assert_eq!(d.stack.moto.weights()[1], ("eu-west-1".into(), 100));
    assert!(d
        .deployment(
            "ap-southeast-1",
            "spec.template.spec.containers[0].env[?(@.name==\"DATABASE_URL\")].value"
        )
        .contains(&format!(":{}/", d.stack.pg.node("eu-west-1").port)));
    // The lost region's parts are tried at once, so that none waits behind another: its
    // application's scale to 0 starts before its database's fence gives up, and the regions
    // that answer follow the new primary before the lost one's tries end.
    let journal = d.t.journal(&d.t.only_run());
    let line = |event: &str, step: &str, branch: &str| {
        let at = format!(r#""event":"{event}","step":["{step}","[{branch}]"]"#);
        journal
            .lines()
            .position(|l| l.contains(&at))
            .unwrap_or_else(|| panic!("no {at} in the journal:\n{journal}"))
    };
    let fence = "fence old primary";
    assert!(
        line("action_started", fence, "application") < line("action_failed", fence, "database")
    );
    for step in ["promote cache", "repoint applications"] {
        let lost = line("action_failed", step, "us-east-1");
        assert!(
            line("action_finished", step, "ap-southeast-1") < lost,
            "{step}:\n{journal}"
        );
    }
    drop((database, redis, kube));
}

/// A Slack webhook that takes the request and never answers costs the failover 5 s a message,
/// not the 15 s an action waits by default: the alert and the report each say what happened,
/// and the failover completes.
#[test]
fn a_slack_webhook_that_never_answers_does_not_stop_an_emergency_failover() {
    let d = drill();
    let slack = crate::support::Server::start();
    slack.reply("/slack", 200, "ok", Duration::from_secs(120));
    let text = std::fs::read_to_string(&d.inventory).unwrap();
    let (before, after) = text.split_once("slack_webhook = ").unwrap();
    let rest = after.split_once('\n').unwrap().1;
    std::fs::write(
        &d.inventory,
        format!(
            "{before}slack_webhook = \"{}\"\n{rest}",
            slack.url("/slack")
        ),
    )
    .unwrap();
    d.stack.web.set_health("us-east-1", Health::Fail);
    d.stack.pg.stop_node(d.stack.pg.node("us-east-1"));
    let ran = d.run("emergency-failover", &["--var", "check_interval=100ms"]);
    assert_eq!(ran.code, 0, "{}", ran.all());
    let hung = format!(
        "Slack message not sent: notify::slack failed: {}: no answer within 5s",
        slack.url("/slack")
    );
    assert_eq!(ran.stdout.matches(&hung).count(), 2, "{}", ran.stdout);
    assert_eq!(slack.count("POST", "/slack"), 2);
    assert_eq!(d.psql("eu-west-1", "SELECT pg_is_in_recovery()"), "f");
}

/// With a [cdn] in the inventory, the emergency failover purges it once traffic has moved
/// (CloudFront in moto, checked with boto3) and says so in its report and its Slack message;
/// a rollback whose Cloudflare purge fails is still a finished rollback that says so.
#[test]
fn failovers_and_rollbacks_purge_the_cdn_the_inventory_names() {
    let d = drill();
    let id = crate::dns::distribution(&d.stack.moto);
    let inventory = std::fs::read_to_string(&d.inventory).unwrap();
    std::fs::write(
        &d.inventory,
        format!(
            "{inventory}\n[cdn]\nprovider = \"cloudfront\"\ndistribution_id = \"{id}\"\nendpoint_url = \"{}\"\n",
            d.stack.moto.endpoint()
        ),
    )
    .unwrap();
    d.stack.web.set_health("us-east-1", Health::Fail);
    d.stack.pg.stop_node(d.stack.pg.node("us-east-1"));
    let ran = d.run("emergency-failover", &["--var", "check_interval=100ms"]);
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert_eq!(
        crate::dns::invalidated_paths(&d.stack.moto, &id),
        r#"["/*"]"#
    );
    let at = |text: &str| {
        ran.stdout
            .find(text)
            .unwrap_or_else(|| panic!("{text} in {}", ran.stdout))
    };
    assert!(at("▶ move traffic") < at("▶ purge cdn"));
    let report = d.report(&d.t.newest_run(), "finished");
    assert!(
        report.contains(&format!(
            "| cdn | CloudFront distribution {id}: /* invalidated"
        )),
        "{report}"
    );
    let messages = format!("{:?}", d.stack.web.messages());
    assert!(
        messages.contains("CDN: CloudFront distribution"),
        "{messages}"
    );

    // Cloudflare that answers 500: the rollback finishes and says the cache was not purged.
    let cloudflare = crate::support::Server::start();
    cloudflare.reply("/cf", 500, "cloudflare is down", std::time::Duration::ZERO);
    std::fs::write(
        &d.inventory,
        format!(
            "{inventory}\n[cdn]\nprovider = \"cloudflare\"\nzone_id = \"z9\"\ntoken = {{ env = \"CF_TEST_TOKEN\" }}\napi = \"{}\"\n",
            cloudflare.url("/cf")
        ),
    )
    .unwrap();
    d.kubectl(
        "eu-west-1",
        &["set", "env", "deploy/orchestrator", "FEATURE=broken"],
    );
    let args = d.args("rollback", &["--var", "regions=eu-west-1"]);
    let out =
        d.t.command(&args)
            .env("CF_TEST_TOKEN", "cf-t0ken-77")
            .output()
            .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(
        all.contains("Cloudflare zone z9 NOT purged") && all.contains("purge it by hand"),
        "{all}"
    );
    let purge = cloudflare
        .requests()
        .into_iter()
        .find(|r| r.path == "/cf/zones/z9/purge_cache")
        .expect("the purge was tried");
    assert_eq!(purge.headers["authorization"], "Bearer cf-t0ken-77");
    assert!(!all.contains("cf-t0ken-77"), "{all}");
}

#[test]
fn a_target_too_far_behind_is_refused_unless_forced() {
    let d = drill();
    d.stack.web.set_health("us-east-1", Health::Fail);
    let ran = d.run(
        "emergency-failover",
        &["--var", "check_interval=10ms", "--var", "max_lag_bytes=-1"],
    );
    assert_eq!(ran.code, 1, "{}", ran.all());
    // us-east-1's database answers: what the target lacks is not lost yet.
    assert_says(
        &ran.stderr,
        &["behind us-east-1, more than max_lag_bytes -1 bytes. us-east-1 still answers, so that is not yet lost: --var force=true fences it first and gives eu-west-1 up to 30s (--var catch_up) to replay the rest"],
    );
    assert_eq!(
        d.psql("eu-west-1", "SELECT pg_is_in_recovery()"),
        "t",
        "nothing was promoted"
    );
    let report = d.report(&d.t.newest_run(), "failed");
    assert!(report.contains("## Failures"), "{report}");
    assert!(
        report.contains("more than max_lag_bytes -1 bytes"),
        "{report}"
    );

    // Forced, as the refusal says: fenced first, the target waits for the rest, nothing lost.
    let ran = d.run(
        "emergency-failover",
        &[
            "--var",
            "check_interval=10ms",
            "--var",
            "max_lag_bytes=-1",
            "--var",
            "force=true",
        ],
    );
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert_says(
        &ran.stdout,
        &["data-loss bound 0 bytes, exact (the old primary was fenced at"],
    );
    assert_eq!(d.psql("eu-west-1", "SELECT pg_is_in_recovery()"), "f");
}

/// Killed during the wait between regions, maintenance resumes with the next region and does
/// not redo the first.
#[test]
fn maintenance_resumed_after_a_kill_continues_with_the_next_region() {
    let d = drill();
    d.kill_when(
        "maintenance",
        &[
            "--var",
            "window=200ms",
            "--var",
            "settle=3s",
            "--var",
            "regions=eu-west-1,ap-southeast-1",
        ],
        |j| j.contains("settle after eu-west-1") && j.matches("timer_started").count() >= 2,
    );
    let eu = d
        .stack
        .kube
        .iter()
        .find(|k| k.region == "eu-west-1")
        .unwrap();
    let ap = d
        .stack
        .kube
        .iter()
        .find(|k| k.region == "ap-southeast-1")
        .unwrap();
    let eu_writes = eu.writes();
    assert!(
        eu_writes.get("POST pods/eviction").copied().unwrap_or(0) > 0,
        "{eu_writes:?}"
    );
    assert!(
        ap.writes().is_empty(),
        "the second region was not touched yet"
    );
    let run = d.t.only_run();
    let resumed = d.t.exec(&["resume", &run]);
    assert_eq!(resumed.code, 0, "{}", resumed.all());
    // Two sessions: the one killed, and the resume.
    let report = d.report(&run, "finished");
    assert!(report.contains("| 1 | started "), "{report}");
    assert!(
        report.contains("| stopped without a record (killed, or its host lost) |"),
        "{report}"
    );
    assert!(report.contains("| 2 | resumed "), "{report}");
    assert_eq!(
        eu.writes(),
        eu_writes,
        "the first region was not done again"
    );
    assert!(ap.writes().get("POST pods/eviction").copied().unwrap_or(0) > 0);
    for region in ["eu-west-1", "ap-southeast-1"] {
        let cordoned = d.kubectl(
            region,
            &[
                "get",
                "nodes",
                "-o",
                "jsonpath={.items[*].spec.unschedulable}",
            ],
        );
        assert!(!cordoned.contains("true"), "{region}: {cordoned}");
    }
    assert_eq!(
        d.stack.moto.weights(),
        [
            ("ap-southeast-1".into(), 0),
            ("eu-west-1".into(), 0),
            ("us-east-1".into(), 100)
        ]
    );
    let told = d.slack().join("\n");
    assert!(
        told.contains("maintenance of eu-west-1, ap-southeast-1 done; traffic back to ap-southeast-1 0 / eu-west-1 0 / us-east-1 100"),
        "{told}"
    );
}

#[test]
fn rollback_restores_the_previous_revision_and_a_database_backup() {
    let d = drill();
    // An application release goes wrong...
    d.kubectl(
        "us-east-1",
        &["set", "env", "deploy/orchestrator", "FEATURE=broken"],
    );
    let ran = d.run("rollback", &["--var", "regions=us-east-1"]);
    assert_eq!(ran.code, 0, "{}", ran.all());
    d.report(&d.t.newest_run(), "finished");
    let slack = d.slack();
    assert!(
        slack
            .iter()
            .any(|m| m.contains(r#""text":"application rolled back in us-east-1""#)),
        "{slack:?}"
    );
    let env = d.deployment("us-east-1", "spec.template.spec.containers[0].env[*].name");
    assert!(!env.contains("FEATURE"), "{env}");

    // ...and a migration damages data: restore the dump taken before it.
    let dump = d.t.path("before.dump");
    d.damaged_data(&dump);
    // The applications cached what they read of the damaged data.
    let cache = d.stack.redis.node("us-east-1");
    for key in ["account:7", "account:8"] {
        cli(cache, &["SET", key, "damaged"]).unwrap();
    }
    let replicas = REGIONS.map(|r| d.replicas(r));
    let paused = d.run(
        "rollback",
        &[
            "--var",
            "mode=database",
            "--var",
            &format!("backup={}", dump.display()),
        ],
    );
    assert_eq!(
        paused.code,
        3,
        "the restore waits for approval\n{}",
        paused.all()
    );
    assert_eq!(d.psql("us-east-1", "SELECT count(*) FROM accounts"), "10");
    assert_says(
        &paused.stdout,
        &["; Redis is emptied on us-east-1 (its replicas follow)."],
    );
    assert_eq!(
        cli(cache, &["DBSIZE"]).unwrap(),
        "2",
        "nothing before the approval"
    );
    let run =
        d.t.run_ids()
            .into_iter()
            .find(|id| d.t.journal(id).contains("run_paused"))
            .expect("the paused run");
    let done = d.t.exec(&["resume", &run, "--approve"]);
    assert_eq!(done.code, 0, "{}", done.all());
    assert_eq!(d.psql("us-east-1", "SELECT count(*) FROM accounts"), "50");
    // The standbys replayed it; every region's application (each on the primary's data) was
    // stopped for it and runs again as before; the database takes writes again.
    for (i, region) in REGIONS.iter().enumerate() {
        assert_says(
            &done.stdout,
            &[&format!(
                "scale deployment app/orchestrator in {region} to 0 replicas"
            )],
        );
        assert_eq!(d.replicas(region), replicas[i], "{region}");
        if *region != "us-east-1" {
            assert_eq!(
                d.psql(region, "SELECT count(*) FROM accounts"),
                "50",
                "{region}"
            );
        }
    }
    d.psql("us-east-1", "INSERT INTO accounts VALUES (51)");
    // Nothing cached from the replaced data is left, in any region, and the restore's own
    // report says where Redis was emptied.
    assert_says(
        &done.stdout,
        &[
            "us-east-1's Redis: 2 cached key(s) removed",
            "result redis emptied: us-east-1",
        ],
    );
    for region in REGIONS {
        let keys = cli(d.stack.redis.node(region), &["DBSIZE"]).unwrap();
        assert_eq!(keys, "0", "{region}'s Redis");
    }
    // What it replaced was kept beside the archive: the 10 rows left after the damage.
    let kept = kept_archives(&d.t.path(""));
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(archived_rows(&kept[0], "accounts"), 10);
    assert_says(
        &done.stdout,
        &[&format!("result kept: {}", kept[0].display())],
    );
    // Paused for the approval, approved on resume: two sessions, the approval with who and how.
    let report = d.report(&run, "finished");
    assert!(report.contains("## Approvals"), "{report}");
    assert!(report.contains("| tester | resume --approve |"), "{report}");
    assert!(report.contains("| paused: "), "{report}");
    assert_eq!(d.replicas("us-east-1"), "3");
    let url_password = format!(":{}@", runbook_stack::postgres::PASSWORD);
    assert!(
        !d.t.state_text().contains(&url_password),
        "the password in the database URL is masked in the journal"
    );
}

pub(crate) const REGIONS: [&str; 3] = ["us-east-1", "eu-west-1", "ap-southeast-1"];

/// The archives a database restore kept of what it replaced, in `dir`.
pub(crate) fn kept_archives(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.contains("-before-restore-") && name.ends_with(".dump")
        })
        .collect();
    found.sort();
    found
}

/// How many rows of `table` a pg_dump archive holds.
fn archived_rows(archive: &Path, table: &str) -> usize {
    let mut c = Command::new("pg_restore");
    c.args(["--data-only", "--table", table, "-f", "-"])
        .arg(archive);
    let text = runbook_stack::run(c, "pg_restore").unwrap();
    let copy = text.find("COPY ").expect("the table's data");
    text[copy..]
        .lines()
        .skip(1)
        .take_while(|l| *l != "\\.")
        .count()
}

/// A restore that fails (a view made since the archive holds the table it would drop) leaves
/// the data as it was — one transaction — with writes stopped for everyone: the applications
/// at 0 and the database refusing other sessions' writes. `resume --undo` lets writes in
/// again. Before any of it, what would go wrong later is refused with nothing changed.
#[test]
fn a_failed_restore_leaves_the_data_as_it_was_and_undo_lets_writes_in_again() {
    let d = drill();
    let dump = d.t.path("before.dump");
    d.damaged_data(&dump);
    d.psql(
        "us-east-1",
        "CREATE VIEW recent AS SELECT * FROM accounts WHERE id > 5",
    );
    let replicas = REGIONS.map(|r| d.replicas(r));
    let backup = format!("backup={}", dump.display());
    let restore = |extra: &[&str]| {
        let mut args = vec!["--var", "mode=database", "--var", &backup, "--yes"];
        args.extend(extra);
        d.run("rollback", &args)
    };
    // The inventory names the region; the servers say it is a standby.
    d.changes_nothing(
        1,
        &[
            "--var region=eu-west-1: its database is a standby streaming from us-east-1",
            "not the primary. A restore goes to the primary, us-east-1",
        ],
        || restore(&["--var", "region=eu-west-1"]),
    );
    std::fs::write(d.t.path("taken.dump"), "an earlier file").unwrap();
    let taken = format!("save_to={}", d.t.path("taken.dump").display());
    d.changes_nothing(
        1,
        &["taken.dump already exists and is never overwritten"],
        || restore(&["--var", &taken]),
    );
    d.changes_nothing(
        1,
        &["/no/such/folder is not a folder this user can write to"],
        || restore(&["--var", "save_to=/no/such/folder/x.dump"]),
    );
    assert_eq!(
        std::fs::read_to_string(d.t.path("taken.dump")).unwrap(),
        "an earlier file"
    );

    let failed = restore(&[]);
    assert_eq!(failed.code, 1, "{}", failed.all());
    assert_says(
        &failed.stderr,
        &["cannot drop table public.accounts", "--undo"],
    );
    assert_eq!(d.psql("us-east-1", "SELECT count(*) FROM accounts"), "10");
    for region in REGIONS {
        assert_eq!(d.replicas(region), "0", "{region}");
    }
    let node = d.stack.pg.node("us-east-1");
    let refused = d
        .stack
        .pg
        .psql(node, "INSERT INTO accounts VALUES (99)")
        .unwrap_err();
    assert!(
        refused.to_string().contains("read-only transaction"),
        "{refused}"
    );
    assert_eq!(kept_archives(&d.t.path("")).len(), 1);

    let run = d.t.newest_run();
    let undone = d.t.exec(&["resume", &run, "--undo"]);
    assert_eq!(undone.code, 0, "{}", undone.all());
    d.psql("us-east-1", "INSERT INTO accounts VALUES (99)");
    for (i, region) in REGIONS.iter().enumerate() {
        assert_eq!(d.replicas(region), replicas[i], "{region}");
    }
    // The channel heard it fail, and then that it was undone.
    let told = format!("{:?}", d.stack.web.messages());
    let failed = told
        .find(":x: the restore of us-east-1's database FAILED at step 'restore'")
        .expect(&told);
    let undone = told
        .find(&format!(":leftwards_arrow_with_hook: the restore of us-east-1's database undone (run {run}): reversed 'stop writes'; left as they are (no undo): 'keep current data'"))
        .expect(&told);
    assert!(failed < undone, "{told}");
}

/// Planned failover and maintenance check the backup first: a backup CronJob whose last success
/// is older than backup_max_age stops them before any change, naming it; force_backup goes on.
#[test]
fn a_stale_backup_stops_risky_work_before_any_change() {
    let d = drill();
    let stale =
        runbook_stack::kube::backup_cronjob("pg-backup", "app", Duration::from_secs(30 * 3600));
    for k in &d.stack.kube {
        k.put("cronjobs", "app", "pg-backup", stale.clone());
    }
    assert!(!d
        .kubectl(
            "us-east-1",
            &[
                "get",
                "cronjob",
                "pg-backup",
                "-o",
                "jsonpath={.status.lastSuccessfulTime}"
            ]
        )
        .is_empty());
    let before = d.state();
    for (runbook, vars) in [
        (
            "planned-failover",
            vec!["--var", "target=eu-west-1", "--yes"],
        ),
        (
            "maintenance",
            vec!["--var", "window=1s", "--var", "settle=1s"],
        ),
    ] {
        let ran = d.run(runbook, &vars);
        assert_eq!(ran.code, 1, "{runbook}: {}", ran.all());
        assert!(
            ran.all()
                .contains("CronJob app/pg-backup in us-east-1 last succeeded 1day 6h")
                && ran.all().contains("more than 1day 2h")
                && ran.all().contains("--var force_backup=true"),
            "{runbook}: {}",
            ran.all()
        );
    }
    assert_eq!(d.state(), before, "nothing changed");
    let forced = d.run(
        "planned-failover",
        &[
            "--var",
            "target=eu-west-1",
            "--var",
            "force_backup=true",
            "--dry-run",
        ],
    );
    assert_eq!(forced.code, 0, "{}", forced.all());
    assert!(
        forced.all().contains("WARNING: CronJob app/pg-backup"),
        "{}",
        forced.all()
    );
}

/// With a mesh route named in the inventory, a failover sends each region's Istio
/// VirtualService route to the new primary's destination (checked with kubectl).
#[test]
fn a_failover_moves_the_mesh_route_when_the_inventory_names_one() {
    let d = drill();
    let subsets = [
        ("us-east-1", "us-east"),
        ("eu-west-1", "eu-west"),
        ("ap-southeast-1", "ap-southeast"),
    ];
    let route: Vec<serde_json::Value> = subsets
        .iter()
        .map(|(_, s)| {
            serde_json::json!({"destination": {"host": "orchestrator", "subset": s},
                               "weight": if *s == "us-east" { 95 } else if *s == "eu-west" { 5 } else { 0 }})
        })
        .collect();
    let vs = serde_json::json!({
        "apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
        "metadata": {"name": "orchestrator", "namespace": "app"},
        "spec": {"hosts": ["orchestrator"], "http": [{"name": "local-region", "route": route}]}
    });
    for k in &d.stack.kube {
        k.put("virtualservices", "app", "orchestrator", vs.clone());
    }
    let mut inventory = std::fs::read_to_string(&d.inventory).unwrap();
    for (region, subset) in subsets {
        inventory = inventory.replace(
            &format!("[regions.{region}]\n"),
            &format!("[regions.{region}]\nmesh_destination = \"{subset}\"\n"),
        );
    }
    inventory.push_str("\n[mesh]\nvirtual_service = \"orchestrator\"\nroute = \"local-region\"\n");
    std::fs::write(&d.inventory, inventory).unwrap();

    let ran = d.run("planned-failover", &["--var", "target=eu-west-1", "--yes"]);
    assert_eq!(ran.code, 0, "{}", ran.all());
    for (region, _) in subsets {
        assert_eq!(
            d.kubectl(
                region,
                &[
                    "get",
                    "virtualservice",
                    "orchestrator",
                    "-o",
                    "jsonpath={.spec.http[0].route[*].weight}"
                ]
            ),
            "0 100 0",
            "{region}'s mesh route"
        );
    }
}

/// On a stack with Prometheus, maintenance gates each region on its error rate and P99 against
/// the inventory's targets; a region serving errors fails its gate, showing the values.
#[test]
fn maintenance_gates_on_prometheus_error_rate_and_p99() {
    let d = drill_with(runbook_stack::Options {
        prometheus: true,
        ..Default::default()
    });
    let ran = d.run(
        "maintenance",
        &[
            "--var",
            "window=1s",
            "--var",
            "settle=1s",
            "--var",
            "regions=eu-west-1",
        ],
    );
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert!(
        ran.all().contains("eu-west-1: error rate 0"),
        "{}",
        ran.all()
    );
    assert!(ran.all().contains("ms (below 150 ms)"), "{}", ran.all());

    // ap-southeast-1 serves half its requests with 503: its error-rate gate does not hold.
    d.stack.web.set_health("ap-southeast-1", Health::Fail);
    let gate = Test::new().script(
        r#"import "health" as health; health::gates(inventory, "ap-southeast-1", 0.01, "4s");"#,
    );
    let failed = gate.exec(&[
        "run",
        "runbook.rhai",
        "-i",
        &d.inventory.display().to_string(),
    ]);
    assert_eq!(failed.code, 1, "{}", failed.all());
    assert!(
        failed
            .all()
            .contains("did not hold 3 times in a row within 4s"),
        "{}",
        failed.all()
    );
    assert!(
        failed.all().contains("last values (newest first): ✗ 0."),
        "{}",
        failed.all()
    );
}

/// upgrade.rhai on the stack with Prometheus: a clean upgrade puts the image in every region;
/// a region that fails its checks is rolled back, the run stops with the regions after it
/// untouched, and --undo puts the upgraded ones back; a dry-run changes nothing.
#[test]
fn upgrade_goes_region_by_region_and_rolls_back_a_failing_one() {
    let d = drill_with(runbook_stack::Options {
        prometheus: true,
        ..Default::default()
    });
    let image = |region: &str| d.deployment(region, "spec.template.spec.containers[0].image");
    let before = d.state();
    let dry = d.run(
        "upgrade",
        &[
            "--var",
            "image=orchestrator:1.1",
            "--var",
            "bake=1s",
            "--dry-run",
        ],
    );
    assert_eq!(dry.code, 0, "{}", dry.all());
    assert!(
        dry.stdout
            .contains("~ k8s::patch: patch deployment app/orchestrator in eu-west-1"),
        "{}",
        dry.all()
    );
    assert_eq!(d.state(), before, "a dry-run changes nothing");

    // A region already failing its health check is not upgraded (the new image would be
    // blamed for it): refused before any change, with the command that upgrades the others.
    d.stack.web.set_health("eu-west-1", Health::Fail);
    d.changes_nothing(
        1,
        &[
            "eu-west-1 fails its health check (3 checks in a row) before any change",
            "Nothing was changed",
            "or upgrade the others: runbook run ",
            "/runbooks/upgrade.rhai -i ",
            "--var image=orchestrator:1.1 --var max_error_rate=0.01 --var regions=ap-southeast-1,us-east-1",
        ],
        || {
            d.run(
                "upgrade",
                &["--var", "image=orchestrator:1.1", "--var", "bake=1s"],
            )
        },
    );
    d.stack.web.set_health("eu-west-1", Health::Ok);

    let ran = d.run(
        "upgrade",
        &["--var", "image=orchestrator:1.1", "--var", "bake=1s"],
    );
    assert_eq!(ran.code, 0, "{}", ran.all());
    let slack = d.slack();
    assert!(
        slack.iter().any(|m| {
            m.contains(
            "upgrade to orchestrator:1.1 done in every region: eu-west-1, ap-southeast-1, us-east-1"
        )
        }),
        "{slack:?}"
    );
    // The bakes are timed waits: in the report's time split and its timeline.
    let report = d.report(&d.t.newest_run(), "finished");
    assert!(report.contains("timed waits "), "{report}");
    assert!(
        report.contains("| image | orchestrator:1.1 | report |"),
        "{report}"
    );
    for region in ["us-east-1", "eu-west-1", "ap-southeast-1"] {
        assert_eq!(image(region), "orchestrator:1.1", "{region}");
    }
    // Secondaries first, the primary last; each gated.
    let at = |text: &str| {
        ran.stdout
            .find(text)
            .unwrap_or_else(|| panic!("{text} in {}", ran.stdout))
    };
    assert!(at("▶ upgrade eu-west-1") < at("▶ upgrade ap-southeast-1"));
    assert!(at("▶ upgrade ap-southeast-1") < at("▶ upgrade us-east-1"));
    assert!(ran.stdout.contains("ap-southeast-1: P99"), "{}", ran.stdout);

    // The second region fails once it runs the new image: rolled back, the primary
    // untouched, the first undone on request.
    let finished = AtomicBool::new(false);
    let failed = std::thread::scope(|s| {
        s.spawn(|| {
            while !finished.load(Ordering::SeqCst) {
                if image("ap-southeast-1") == "orchestrator:1.2" {
                    d.stack.web.set_health("ap-southeast-1", Health::Fail);
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let ran = d.run(
            "upgrade",
            &[
                "--var",
                "image=orchestrator:1.2",
                "--var",
                "bake=1s",
                "--var",
                "gate_timeout=3s",
            ],
        );
        finished.store(true, Ordering::SeqCst);
        ran
    });
    assert_eq!(failed.code, 1, "{}", failed.all());
    assert!(
        failed
            .all()
            .contains("ap-southeast-1 failed its checks and was rolled back to orchestrator:1.1"),
        "{}",
        failed.all()
    );
    assert_eq!(image("eu-west-1"), "orchestrator:1.2");
    assert_eq!(image("ap-southeast-1"), "orchestrator:1.1");
    assert_eq!(
        image("us-east-1"),
        "orchestrator:1.1",
        "the regions after it are untouched"
    );
    d.stack.web.set_health("ap-southeast-1", Health::Ok);
    let run = failed
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("starting run "))
        .and_then(|l| l.split(':').next())
        .unwrap()
        .to_string();
    // The team was told, once, by the runbook's failure handler: where, and how it goes on.
    let told: Vec<String> = d
        .slack()
        .into_iter()
        .filter(|m| m.contains("failed its checks"))
        .collect();
    assert_eq!(told.len(), 1, "{told:?}");
    assert_says(
        &told[0],
        &[
            ":x: upgrade to orchestrator:1.2 FAILED at step 'upgrade ap-southeast-1': ",
            "ap-southeast-1 failed its checks and was rolled back to orchestrator:1.1",
            &format!("run {run} stopped mid-way; once the cause is fixed, `runbook resume {run}`"),
        ],
    );
    let undone = d.t.exec(&["resume", &run, "--undo"]);
    assert_eq!(undone.code, 0, "{}", undone.all());
    let report = d.report(&run, "undone");
    assert!(report.contains("| undone: "), "{report}");
    assert_eq!(
        image("eu-west-1"),
        "orchestrator:1.1",
        "--undo rolled it back"
    );
}

/// upgrade.rhai killed during a region's bake resumes with the time left, without setting the
/// image of the finished region again, and finishes the others.
#[test]
fn upgrade_killed_mid_bake_resumes_with_the_time_left() {
    let d = drill();
    let (run, journal) = d.kill_when(
        "upgrade",
        &[
            "--var",
            "image=orchestrator:2.0",
            "--var",
            "bake=4s",
            "--var",
            "regions=eu-west-1,ap-southeast-1",
        ],
        |j| j.contains("bake eu-west-1") && j.contains("timer_started"),
    );
    let until: u64 = journal
        .split(r#""until_ms":"#)
        .nth(1)
        .and_then(|s| s.split('}').next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    let eu = d
        .stack
        .kube
        .iter()
        .find(|k| k.region == "eu-west-1")
        .unwrap();
    let patches = |k: &runbook_stack::kube::FakeKube| {
        k.writes().get("PATCH deployments").copied().unwrap_or(0)
    };
    let eu_patches = patches(eu);
    assert!(eu_patches > 0);

    let resumed = d.t.exec(&["resume", &run, "--output", "json"]);
    assert_eq!(resumed.code, 0, "{}", resumed.all());
    assert!(
        resumed.stdout.contains(&format!(r#""until_ms":{until}"#)),
        "the bake ends when the first one would have\n{}",
        resumed.stdout
    );
    assert_eq!(
        patches(eu),
        eu_patches,
        "eu-west-1's image was not set again"
    );
    assert_eq!(
        d.deployment("ap-southeast-1", "spec.template.spec.containers[0].image"),
        "orchestrator:2.0"
    );
}

/// drain.rhai on real servers: a region whose health check fails is taken out of rotation (its
/// share to the regions in rotation; none of them serving, to one that does), and refused back
/// until it passes; a drain of the primary's region leaves its database the primary; with no
/// region left to serve, nothing changes.
#[test]
fn a_failing_region_is_drained_and_put_back_once_it_serves() {
    let d = drill();
    // Runs drain.rhai with `vars` (each a --var), checks its exit code and what it says, and
    // the weights Route53 has after it, as [us-east-1, eu-west-1, ap-southeast-1].
    let drain = |vars: &[&str], code: i32, says: &[&str], weights: [i64; 3]| -> String {
        let mut args = Vec::new();
        for v in vars {
            args.extend(["--var", v]);
        }
        let ran = d.run("drain", &args);
        assert_eq!(ran.code, code, "{vars:?}: {}", ran.all());
        assert_says(&ran.all(), says);
        let [us, eu, ap] = weights;
        let want: Vec<(String, i64)> = vec![
            ("ap-southeast-1".into(), ap),
            ("eu-west-1".into(), eu),
            ("us-east-1".into(), us),
        ];
        assert_eq!(d.stack.moto.weights(), want, "{vars:?}");
        ran.all()
    };
    let us_back = ["region=us-east-1", "restore=true", "weight=100"];
    let eu_back = ["region=eu-west-1", "restore=true", "weight=30"];
    let inventory = d.inventory.display().to_string();

    // Out of rotation already: nothing to do; back in rotation at the weight given.
    drain(
        &["region=eu-west-1"],
        0,
        &["eu-west-1 is out of rotation already (DNS weight 0): nothing to do"],
        [100, 0, 0],
    );
    drain(&eu_back, 0, &[], [100, 30, 0]);

    // Its health check fails: status names the drain, and the drain takes it out, telling
    // Slack how to put it back; its application keeps running.
    d.stack.web.set_health("eu-west-1", Health::Fail);
    let status = d.run("status", &[]);
    assert_eq!(status.code, 1, "{}", status.all());
    assert_says(
        &status.all(),
        &[
            "DNS sends weight 30 to eu-west-1, whose health check fails",
            &format!("next: take it out of rotation: runbook run {ROOT}/runbooks/drain.rhai -i {inventory} --var region=eu-west-1"),
        ],
    );
    let before = d.slack().len();
    let back = format!("runbook run {ROOT}/runbooks/drain.rhai -i {inventory} --var region=eu-west-1 --var restore=true --var weight=30");
    drain(
        &["region=eu-west-1"],
        0,
        &[&format!("result next: {back}")],
        [100, 0, 0],
    );
    let sent = d.slack()[before..].join("\n");
    assert!(
        sent.contains("eu-west-1 is out of rotation (DNS weight 30 → 0)"),
        "{sent}"
    );
    assert_eq!(d.replicas("eu-west-1"), "2");

    // Refused back while it fails; back once it passes.
    drain(
        &eu_back,
        1,
        &["eu-west-1 cannot take users back: its health check fails. Nothing was changed"],
        [100, 0, 0],
    );
    d.stack.web.set_health("eu-west-1", Health::Ok);
    drain(&eu_back, 0, &[], [100, 30, 0]);

    // The primary's region: its share to eu-west-1, its database still the primary; then back.
    drain(
        &["region=us-east-1"],
        0,
        &["us-east-1's database stays the primary"],
        [0, 30, 0],
    );
    assert_eq!(d.psql("us-east-1", "SELECT pg_is_in_recovery()"), "f");
    drain(&us_back, 0, &[], [100, 30, 0]);

    // eu-west-1 in rotation fails: ap-southeast-1, out of rotation but serving, takes the users.
    d.stack.web.set_health("eu-west-1", Health::Fail);
    drain(
        &["region=us-east-1"],
        0,
        &[
            "ap-southeast-1 passes its health check and has 2 ready replica(s): it takes us-east-1's users (weight 0 → 100)",
            "eu-west-1 stays in rotation though its health check fails",
        ],
        [0, 30, 100],
    );
    drain(&us_back, 0, &[], [100, 30, 100]);

    // No region left that serves: refused, nothing changed.
    d.stack.web.set_health("ap-southeast-1", Health::Fail);
    drain(
        &["region=us-east-1"],
        1,
        &["no other region can take us-east-1's users (ap-southeast-1: its health check fails; eu-west-1: its health check fails): us-east-1 keeps its weight 100"],
        [100, 30, 100],
    );
}

/// initial-setup sends users only to regions that pass their health check: with eu-west-1's
/// failing, it stops before DNS changes (every weight as it was) and says why; resumed once
/// eu-west-1 passes, it sets the weights.
#[test]
fn initial_setup_sends_no_users_to_a_region_that_fails_its_health_check() {
    let d = drill();
    let manifests = format!("--var=manifests={ROOT}/runbooks/manifests");
    let before = d.stack.moto.weights();
    d.stack.web.set_health("eu-west-1", Health::Fail);
    let ran = d.run("initial-setup", &[&manifests, "--var", "health_within=6s"]);
    assert_eq!(ran.code, 1, "{}", ran.all());
    let run = d.t.newest_run();
    assert_says(
        &ran.all(),
        &[
            "eu-west-1 does not pass its health check within 6s (--var health_within): DNS was not changed, so no users were sent to it. Fix it and resume this run, or run again with --var weights giving eu-west-1 weight 0",
            &format!("runbook resume {run}"),
        ],
    );
    assert_eq!(d.stack.moto.weights(), before);
    d.stack.web.set_health("eu-west-1", Health::Ok);
    let resumed = d.t.exec(&["resume", &run]);
    assert_eq!(resumed.code, 0, "{}", resumed.all());
    assert_eq!(
        d.stack.moto.weights(),
        [
            ("ap-southeast-1".into(), 0),
            ("eu-west-1".into(), 30),
            ("us-east-1".into(), 70)
        ]
    );
}
