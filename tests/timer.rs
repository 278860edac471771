use std::time::{Duration, Instant};

use crate::support::{kill9, Test};

/// A durable timer killed halfway waits only for what is left on resume.
#[test]
fn a_durable_timer_resumes_with_the_remaining_time() {
    let t = Test::new().script(r#"step("wait", || sleep("3s")); log("woke");"#);
    let mut child = t.spawn_until_sleeping(&["run", "runbook.rhai"]);
    let run = t.only_run();
    let journal = t.journal(&run);
    let until: u64 = journal
        .split(r#""until_ms":"#)
        .nth(1)
        .unwrap()
        .split('}')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    kill9(&mut child);

    let started = Instant::now();
    let ran = t.exec(&["resume", &run, "--output", "json"]);
    let took = started.elapsed();
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert!(
        ran.stdout.contains(&format!(r#""until_ms":{until}"#)),
        "the resumed wait ends when the first one would have\n{}",
        ran.stdout
    );
    assert!(
        took < Duration::from_millis(2900),
        "waited the full time again: {took:?}"
    );
    assert!(ran.stdout.contains("woke"));
    assert_eq!(t.journal(&run).matches("timer_started").count(), 1);
}

#[test]
fn dry_run_does_not_wait() {
    let started = Instant::now();
    Test::new()
        .script(r#"sleep("1h"); log("after");"#)
        .run(&["--dry-run"])
        .code(0)
        .stdout("after")
        .check();
    assert!(started.elapsed() < Duration::from_secs(60));
}
