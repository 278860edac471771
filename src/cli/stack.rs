//! `runbook stack up|down|health|messages`: the local multi-region stack from the command line.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::arguments::StackCommand;
use crate::error::Error;
use runbook_stack::{self as stack, moto, web::Health, Stack};

pub fn run(action: StackCommand) -> Result<(), Error> {
    match action {
        StackCommand::Up {
            dir,
            detach: true,
            tls,
            prometheus,
            moto_server,
        } => detach(&dir, stack::Options { tls, prometheus }, moto_server),
        StackCommand::Up {
            dir,
            detach: false,
            tls,
            prometheus,
            moto_server,
        } => foreground(&dir, stack::Options { tls, prometheus }, moto_server),
        StackCommand::Down { dir } => down(&dir),
        StackCommand::Health { region, mode, dir } => health(&dir, &region, &mode),
        StackCommand::Db {
            region,
            action,
            dir,
        } => db(&dir, &region, &action),
        StackCommand::Messages { dir } => messages(&dir),
    }
}

fn record(dir: &Path) -> Result<serde_json::Value, Error> {
    let path = dir.join("stack.json");
    let text = std::fs::read_to_string(&path).map_err(|_| {
        Error::Usage(format!(
            "no stack is running in {} (start one with `runbook stack up --dir {}`)",
            dir.display(),
            dir.display()
        ))
    })?;
    serde_json::from_str(&text).map_err(|e| Error::Usage(format!("{}: {e}", path.display())))
}

fn summary(dir: &Path, rec: &serde_json::Value) -> Result<(), Error> {
    say!(
        "stack up in {} ms: us-east-1 (primary), eu-west-1, ap-southeast-1",
        rec["started_in_ms"]
    );
    say!("  inventory:  {}", dir.join("inventory.toml").display());
    say!("  kubeconfig: {}", dir.join("kubeconfig").display());
    if let Some(port) = rec["prometheus"]["port"].as_u64() {
        say!(
            "  prometheus: http://127.0.0.1:{port} (each region's /metrics follows `stack health`)"
        );
    }
    if let Some(ca) = rec["tls_ca"].as_str() {
        say!("  TLS only:   PostgreSQL and Redis, certificates signed by {ca}");
    }
    say!("  run a runbook: AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing runbook run RUNBOOK -i {}", dir.join("inventory.toml").display());
    say!("  stop it:    runbook stack down --dir {}", dir.display());
    Ok(())
}

fn foreground(
    dir: &Path,
    options: stack::Options,
    moto_server: Option<PathBuf>,
) -> Result<(), Error> {
    if dir.join("stack.json").exists() {
        let rec = record(dir)?;
        let alive = rec["pid"]
            .as_i64()
            .is_some_and(|p| unsafe { libc::kill(p as i32, 0) } == 0);
        if alive {
            return Err(Error::Usage(format!(
                "a stack is already running in {} (pid {})",
                dir.display(),
                rec["pid"]
            )));
        }
        stack::stop_recorded(&rec);
        let _ = std::fs::remove_file(dir.join("stack.json"));
    }
    let server = moto::find_server(moto_server.as_deref());
    let signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ]);
    let mut signals = signals.ok();
    let st = Stack::up_with(dir, &server, options)
        .map_err(|e| Error::Io(format!("the stack did not start: {e}")))?;
    // Stopped while starting: stop every server (dropping the stack), and record nothing a
    // `stack down` or a runbook would take for a running stack.
    if let Some(signal) = signals.as_mut().and_then(|s| s.pending().next()) {
        drop(st);
        tell!(
            "stack up interrupted ({}): the servers it had started are stopped",
            signal_name(signal)
        );
        std::process::exit(crate::error::exit::INTERRUPTED);
    }
    st.write_files(std::process::id())
        .map_err(|e| Error::Io(e.to_string()))?;
    summary(&st.dir, &record(&st.dir)?)?;
    say!("serving until Ctrl-C or `runbook stack down`");
    if let Some(signals) = signals.as_mut() {
        signals.forever().next();
    }
    let dir = st.dir.clone();
    drop(st);
    let _ = std::fs::remove_file(dir.join("stack.json"));
    say!("stack stopped");
    Ok(())
}

fn detach(dir: &Path, options: stack::Options, moto_server: Option<PathBuf>) -> Result<(), Error> {
    std::fs::create_dir_all(dir)?;
    let _ = std::fs::remove_file(dir.join("stack.json"));
    let log = std::fs::File::create(dir.join("stack.log"))?;
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.args(["stack", "up", "--dir"]).arg(dir);
    if options.tls {
        cmd.arg("--tls");
    }
    if options.prometheus {
        cmd.arg("--prometheus");
    }
    if let Some(m) = moto_server {
        cmd.arg("--moto-server").arg(m);
    }
    // The serving process has a process group of its own (a Ctrl-C at the terminal does not
    // reach it once it serves); until it is up, a Ctrl-C or SIGTERM here stops it too.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ])
    .ok();
    use std::os::unix::process::CommandExt;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()?;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(120) {
        if dir.join("stack.json").exists() {
            summary(dir, &record(dir)?)?;
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut text = String::new();
            let _ = std::fs::File::open(dir.join("stack.log"))
                .and_then(|mut f| f.read_to_string(&mut text));
            return Err(Error::Io(format!(
                "the stack exited ({status}) before it was up:\n{}",
                text.trim()
            )));
        }
        if let Some(signal) = signals.as_mut().and_then(|s| s.pending().next()) {
            tell!(
                "stack up interrupted ({}): stopping the servers it had started",
                signal_name(signal)
            );
            stop_starting(dir, &mut child);
            tell!("stopped; nothing is left running in {}", dir.display());
            std::process::exit(crate::error::exit::INTERRUPTED);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stop_starting(dir, &mut child);
    Err(Error::Io(format!(
        "the stack was not up after 120 s, and what had started is stopped; see {}",
        dir.join("stack.log").display()
    )))
}

fn signal_name(signal: i32) -> String {
    match signal {
        libc::SIGINT => "Ctrl-C".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGHUP => "SIGHUP".into(),
        other => format!("signal {other}"),
    }
}

/// Stops a serving process that is not up yet: asked (SIGTERM), it finishes starting and
/// stops every server it started; then whatever a record names, in case it got that far.
fn stop_starting(dir: &Path, child: &mut std::process::Child) {
    let pid = child.id() as i32;
    // Exited: a zombie until waited for, which `running` does not count.
    stack::stop_pid(pid, libc::SIGTERM, Duration::from_secs(120), || {
        !stack::running(pid)
    });
    let _ = child.wait();
    if let Ok(rec) = record(dir) {
        stack::stop_recorded(&rec);
        let _ = std::fs::remove_file(dir.join("stack.json"));
    }
}

fn down(dir: &Path) -> Result<(), Error> {
    let rec = record(dir)?;
    if let Some(pid) = rec["pid"].as_i64() {
        let file = dir.join("stack.json");
        // Gone once it has removed its record and exited (not only closed its servers).
        stack::stop_pid(pid as i32, libc::SIGTERM, Duration::from_secs(60), || {
            !file.exists() && !stack::running(pid as i32)
        });
    }
    // Whatever its serving process did not stop (it was killed, say), by recorded id.
    stack::stop_recorded(&rec);
    let _ = std::fs::remove_file(dir.join("stack.json"));
    say!("stack in {} stopped", dir.display());
    Ok(())
}

fn control(dir: &Path, method: &str, path: &str) -> Result<String, Error> {
    let rec = record(dir)?;
    let port = rec["sink_port"].as_u64().unwrap_or(0);
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port as u16)).map_err(|e| {
        Error::Io(format!(
            "the stack in {} does not answer: {e}",
            dir.display()
        ))
    })?;
    use std::io::Write;
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    // Read the head, then exactly the body its Content-Length announces.
    let mut reader = std::io::BufReader::new(stream);
    let mut head = String::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        use std::io::BufRead;
        if reader.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        head.push_str(&line);
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    let body = String::from_utf8_lossy(&body).into_owned();
    if !head.starts_with("HTTP/1.1 200") {
        return Err(Error::Usage(format!("the stack refused {path}: {body}")));
    }
    Ok(body)
}

fn health(dir: &Path, region: &str, mode: &str) -> Result<(), Error> {
    if Health::parse(mode).is_none() {
        return Err(Error::Usage(format!(
            "health mode '{mode}': use ok, fail, slow, down or flap"
        )));
    }
    control(dir, "POST", &format!("/control/health/{region}/{mode}"))?;
    say!("{region} health endpoint: {mode}");
    Ok(())
}

fn db(dir: &Path, region: &str, action: &str) -> Result<(), Error> {
    let rec = record(dir)?;
    let nodes = rec["postgres"].as_array().cloned().unwrap_or_default();
    let Some(data_dir) = nodes
        .iter()
        .find(|n| n["region"] == region)
        .and_then(|n| n["data_dir"].as_str())
    else {
        let known: Vec<&str> = nodes.iter().filter_map(|n| n["region"].as_str()).collect();
        return Err(Error::Usage(format!(
            "no region '{region}' in the stack ({})",
            known.join(", ")
        )));
    };
    let data_dir = Path::new(data_dir);
    let done = match action {
        "stop" => {
            stack::postgres::stop_dir(data_dir, libc::SIGINT).map(|_| "stopped (fast shutdown)")
        }
        "crash" => stack::postgres::stop_dir(data_dir, libc::SIGQUIT)
            .map(|_| "crashed (immediate shutdown)"),
        _ => stack::postgres::start_dir(data_dir, region).map(|_| "started"),
    }
    .map_err(|e| Error::Io(format!("{region}'s database: {e}")))?;
    say!("{region}'s database {done}");
    Ok(())
}

fn messages(dir: &Path) -> Result<(), Error> {
    let body = control(dir, "GET", "/messages")?;
    let list: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap_or_default();
    for m in list {
        say!("{m}");
    }
    Ok(())
}
