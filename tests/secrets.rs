use crate::support::{Server, Test};

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

#[test]
fn an_unset_secret_is_an_input_error_naming_the_variable() {
    Test::new()
        .inventory("[notify]\nslack = { env = \"NO_SUCH_VARIABLE_X\" }\n")
        .script(r#"log("x");"#)
        .run(&[])
        .code(2)
        .stderr("'notify.slack' comes from environment variable NO_SUCH_VARIABLE_X is not set")
        .check();
}
