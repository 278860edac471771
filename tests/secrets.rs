use crate::support::{assert_says, Server, Test};

const TOKEN: &str = "xoxb-s3cr3t-T0KEN-4242";
const PASSWORD: &str = "pg-pa55word-99";

/// Secrets from the inventory and from secret(..) reach the targets, and appear nowhere in
/// output, errors or the journal — not even when a command prints them or a server echoes them.
#[test]
fn secrets_never_appear_in_output_errors_or_the_journal() {
    let server = Server::start();
    server.reply(
        "/echo",
        500,
        &format!("bad token {TOKEN}"),
        std::time::Duration::ZERO,
    );
    let slack = server.url(&format!("/hook/{TOKEN}"));
    let t = Test::new()
        .inventory("[notify]\nslack = { env = \"SLACK_WEBHOOK\" }\n[db]\npassword = { env = \"PG_PASSWORD\" }\n")
        .script(&format!(
            r#"
            let pw = secret("PG_PASSWORD");
            step("notify", || {{
                notify::slack(#{{ webhook: inventory.notify.slack, text: "failover started" }});
                log(`webhook is ${{inventory.notify.slack}}, password ${{pw}}`);
            }});
            step("use", || {{
                let r = shell::run(#{{ cmd: "echo user=app password=$PGPASSWORD", env: #{{ PGPASSWORD: inventory.db.password }} }});
                log(r.stdout);
                http::get(#{{ url: "{echo}", headers: #{{ authorization: inventory.notify.slack }}, retries: 0 }});
            }});
            "#,
            echo = server.url("/echo")
        ))
        .env("SLACK_WEBHOOK", &slack)
        .env("PG_PASSWORD", PASSWORD);
    for output in ["text", "json"] {
        // The run before failed after a change: it keeps its claim until abandoned.
        for run in t.run_ids() {
            let abandoned = t.exec(&["abandon", &run, "--reason", "next output"]);
            for secret in [TOKEN, PASSWORD] {
                assert!(!abandoned.all().contains(secret), "{}", abandoned.all());
            }
        }
        let ran = t.exec(&[
            "run",
            "runbook.rhai",
            "-i",
            "inventory.toml",
            "--output",
            output,
        ]);
        assert_eq!(ran.code, 1, "{}", ran.all());
        // The secrets did their work.
        assert!(ran.stdout.contains("password=***"), "{}", ran.stdout);
        assert!(ran.stderr.contains("bad token ***"), "{}", ran.stderr);
        for secret in [TOKEN, PASSWORD] {
            assert!(
                !ran.all().contains(secret),
                "{output} output shows a secret:\n{}",
                ran.all()
            );
        }
    }
    assert_eq!(
        server.count("POST", &format!("/hook/{TOKEN}")),
        2,
        "the webhook got the real URL"
    );
    let requests = server.requests();
    let auth = &requests.iter().find(|r| r.path == "/echo").unwrap().headers["authorization"];
    assert!(auth.contains(TOKEN), "the header got the real value");
    let state = t.state_text();
    assert!(
        state.contains("SLACK_WEBHOOK"),
        "the journal names the secret's variable"
    );
    for secret in [TOKEN, PASSWORD] {
        assert!(!state.contains(secret), "the journal holds a secret");
    }
    let log = t.exec(&["log", &t.run_ids()[0]]);
    assert!(!log.all().contains(TOKEN) && !log.all().contains(PASSWORD));
}

/// A secret written into text (`Bearer ${token}`, a webhook URL with the token in its path)
/// reaches the server whole through a field that takes secrets, and stays a reference in the
/// journal and masked in the output; the same run resumed sends it again.
#[test]
fn a_secret_written_into_text_reaches_the_server_and_nowhere_else() {
    let server = Server::start();
    server.reply("/echo", 200, "ok", std::time::Duration::ZERO);
    server.reply("/page", 202, "{}", std::time::Duration::ZERO);
    let base = server.url("");
    let t = Test::new()
        .inventory("[api]\ntoken = { env = \"API_TOKEN\" }\n")
        .script(&format!(
            r#"
            let token = inventory.api.token;
            step("call", || http::get(#{{ url: `{base}/echo/${{token}}`, headers: #{{ authorization: `Bearer ${{token}}` }} }}));
            step("ask", || approve("again?"));
            step("again", || http::get(#{{ url: `{base}/echo/again`, headers: #{{ authorization: `Bearer ${{secret("API_TOKEN")}}` }} }}));
            step("page", || notify::webhook(#{{ url: `{base}/page`, json: #{{ routing_key: token, summary: `key ${{token}}` }} }}));
            "#
        ))
        .env("API_TOKEN", TOKEN);
    let paused = t.exec(&["run", "runbook.rhai", "-i", "inventory.toml"]);
    assert_eq!(paused.code, 3, "{}", paused.all());
    let run = t.only_run();
    let resumed = t.exec(&["resume", &run, "--approve"]);
    assert_eq!(resumed.code, 0, "{}", resumed.all());
    let requests = server.requests();
    let sent: Vec<(String, String)> = requests
        .iter()
        .filter(|r| r.path.starts_with("/echo"))
        .map(|r| (r.path.clone(), r.headers["authorization"].clone()))
        .collect();
    // A JSON body for a machine gets its secrets in place, whole or written into text.
    let page = requests
        .iter()
        .find(|r| r.path == "/page")
        .expect("the page");
    let body: serde_json::Value = serde_json::from_str(&page.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"routing_key": TOKEN, "summary": format!("key {TOKEN}")})
    );
    assert_eq!(
        sent,
        vec![
            (format!("/echo/{TOKEN}"), format!("Bearer {TOKEN}")),
            ("/echo/again".to_string(), format!("Bearer {TOKEN}")),
        ]
    );
    let journal = t.journal(&run);
    assert!(
        journal.contains("Bearer <secret API_TOKEN>"),
        "the journal keeps the reference: {journal}"
    );
    for text in [paused.all(), resumed.all(), t.state_text()] {
        assert!(!text.contains(TOKEN), "a secret shows: {text}");
    }
}

/// A secret written into a field that takes none (a shell command line, SQL) would be sent as
/// the text `<secret NAME>`: the call is refused before it runs, naming the field.
#[test]
fn a_secret_written_into_a_field_that_takes_none_is_refused() {
    let t = Test::new()
        .script(
            r#"step("call", || shell::run(#{ cmd: `touch ran; echo ${secret("API_TOKEN")}` }));"#,
        )
        .env("API_TOKEN", TOKEN);
    let ran = t.exec(&["run", "runbook.rhai"]);
    assert_eq!(ran.code, 2, "{}", ran.all());
    assert_says(
        &ran.stderr,
        &[
            "shell::run: field `cmd`: has a secret written into it, but takes no secrets",
            "the fields that take secrets are argv, env",
            "--> runbook.rhai:1:",
        ],
    );
    assert!(!t.path("ran").exists(), "nothing ran");
    assert!(!ran.all().contains(TOKEN), "{}", ran.all());
}

#[test]
fn an_unset_secret_is_an_input_error_naming_the_variable() {
    Test::new()
        .inventory("[notify]\nslack = { env = \"NO_SUCH_VARIABLE_X\" }\n")
        .script(r#"log("x");"#)
        .run(&[])
        .code(2)
        .stderr("the secret 'notify.slack' is read from the environment, and environment variable NO_SUCH_VARIABLE_X is not set: export NO_SUCH_VARIABLE_X=... before running")
        .check();
}

/// Every shipped runbook, with its database, cache and webhook URLs and the replication
/// password as secrets: no secret value in any output, error or journal.
#[test]
fn no_runbook_shows_a_secret_anywhere() {
    let d = crate::runbooks::drill();
    let original = std::fs::read_to_string(&d.inventory).unwrap();
    let mut secret_inventory = String::new();
    let mut secrets: Vec<(String, String)> = Vec::new();
    let mut table = String::new();
    for line in original.lines() {
        if line.starts_with('[') {
            table = line
                .trim_matches(['[', ']'])
                .replace(['.', '-'], "_")
                .to_uppercase();
        }
        let secret_key = [
            "database_url",
            "redis_url",
            "slack_webhook",
            "replicator_password",
        ]
        .iter()
        .find(|k| line.starts_with(&format!("{k} = ")));
        match secret_key {
            Some(k) => {
                let value = line
                    .split_once(" = ")
                    .unwrap()
                    .1
                    .trim_matches('"')
                    .to_string();
                let var = format!("SECRET_{table}_{}", k.to_uppercase());
                secret_inventory.push_str(&format!("{k} = {{ env = \"{var}\" }}\n"));
                secrets.push((var, value));
            }
            None => secret_inventory.push_str(&format!("{line}\n")),
        }
    }
    let inventory = d.t.path("secret-inventory.toml");
    std::fs::write(&inventory, &secret_inventory).unwrap();
    let mut t = Test::new()
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    for (var, value) in &secrets {
        t = t.env(var, value);
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let inv = inventory.display().to_string();
    let manifests = format!("manifests={root}/runbooks/manifests");
    // A real restore: the database URL reaches pg_dump and pg_restore through their
    // environment, never their command lines, the plan or the journal.
    d.pg_dump("us-east-1", &t.path("app.dump"));
    let runs: Vec<(&str, Vec<&str>, i32)> = vec![
        ("initial-setup", vec!["--var", &manifests], 0),
        (
            "maintenance",
            vec![
                "--var",
                "window=100ms",
                "--var",
                "settle=100ms",
                "--var",
                "regions=ap-southeast-1",
            ],
            0,
        ),
        ("rollback", vec!["--var", "regions=eu-west-1"], 0),
        (
            "rollback",
            vec![
                "--var",
                "mode=database",
                "--var",
                "backup=app.dump",
                "--dry-run",
            ],
            0,
        ),
        (
            "rollback",
            vec![
                "--var",
                "mode=database",
                "--var",
                "backup=app.dump",
                "--yes",
            ],
            0,
        ),
        (
            "emergency-failover",
            vec![
                "--dry-run",
                "--var",
                "check_interval=10ms",
                "--var",
                "force=true",
            ],
            0,
        ),
        (
            "planned-failover",
            vec!["--var", "target=eu-west-1", "--yes"],
            0,
        ),
        // Again: eu-west-1 is no standby now, so this one fails and prints an error.
        (
            "planned-failover",
            vec![
                "--var",
                "target=eu-west-1",
                "--yes",
                "--var",
                "from=ap-southeast-1",
            ],
            1,
        ),
    ];
    let mut everything = String::new();
    for (runbook, vars, code) in runs {
        let script = format!("{root}/runbooks/{runbook}.rhai");
        let mut args = vec!["run", script.as_str(), "-i", inv.as_str()];
        args.extend(vars);
        let ran = t.exec(&args);
        assert_eq!(ran.code, code, "{runbook}:\n{}", ran.all());
        everything.push_str(&ran.all());
    }
    for id in t.run_ids() {
        everything.push_str(&t.exec(&["log", &id]).all());
        everything.push_str(&t.exec(&["log", &id, "--json"]).all());
    }
    everything.push_str(&t.state_text());
    assert!(
        everything.contains("SECRET_REGIONS_US_EAST_1_DATABASE_URL"),
        "the journal names secrets by their variable"
    );
    for (var, value) in &secrets {
        assert!(
            !everything.contains(value.as_str()),
            "{var}'s value appears"
        );
    }
    assert!(
        !everything.contains(runbook_stack::postgres::PASSWORD),
        "the password appears"
    );
}
