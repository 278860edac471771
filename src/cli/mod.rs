//! The command line: arguments → validated requests → subcommands → exit code.

use clap::Parser;

pub use arguments::{Arguments, Command, Output, StackCommand};

use crate::error::{exit, Error};

/// Prints a line on stdout (the submodules below see the macro by being declared after it). A
/// reader that went away (`runbook log RUN | head -1`) ends the
/// command quietly with exit 0, as ripgrep does, instead of a panic.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::cli::say_line(format_args!($($arg)*))?
    };
}
/// Prints a line on stderr. A reader that went away is no reason to stop, nor to panic: a run
/// goes on (its journal holds everything) and the exit code still says how it ended.
macro_rules! tell {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}
mod arguments;
#[cfg(feature = "stack")]
mod stack;
mod subcommand;

pub(crate) fn say_line(line: std::fmt::Arguments) -> Result<(), Error> {
    use std::io::Write;
    writeln!(std::io::stdout().lock(), "{line}").map_err(output_error)
}

/// Writes to stdout as it is, with no line added.
pub(crate) fn write_out(bytes: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    std::io::stdout()
        .lock()
        .write_all(bytes)
        .map_err(output_error)
}

/// A reader that went away is [`Error::ClosedOutput`]; anything else, an I/O error.
fn output_error(e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Error::ClosedOutput
    } else {
        Error::Io(format!("cannot write the output: {e}"))
    }
}

/// Runs the command line and returns the process exit code.
pub fn main_entry() -> i32 {
    let args = match Arguments::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    exit::SUCCESS
                }
                _ => exit::INVALID_INPUT,
            };
        }
    };
    let redactor = crate::secret::Redactor::default();
    let flag = store_flag(&args);
    let again = given_again(&args);
    let beside = progress_beside_error(&args);
    match subcommand::dispatch(args, &redactor, &flag) {
        Ok(()) | Err(Error::ClosedOutput) => exit::SUCCESS,
        Err(e) => {
            let e = if beside { e.brief() } else { e };
            tell!("{}", redactor.redact(&e.render_for(&flag, &again)));
            e.exit_code()
        }
    }
}

/// Whether a run's progress lines and its final error are read in one place: progress as text,
/// and standard output the same open file as standard error (one terminal, or `2>&1` into one
/// log). The error then names a failure the progress printed in full by its first line; where
/// they part (stdout to a file, or a JSON stream), the error keeps the whole message.
fn progress_beside_error(args: &Arguments) -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let text = match &args.command {
        Command::Run { output, .. }
        | Command::Resume { output, .. }
        | Command::Watch { output, .. } => *output == Output::Text,
        _ => false,
    };
    let id = |fd: std::os::fd::BorrowedFd<'_>| {
        let meta = std::fs::File::from(fd.try_clone_to_owned().ok()?)
            .metadata()
            .ok()?;
        Some((meta.dev(), meta.ino(), meta.rdev()))
    };
    text && {
        let out = id(std::io::stdout().as_fd());
        out.is_some() && out == id(std::io::stderr().as_fd())
    }
}

/// The `--var`s a resume of this command's run must be given again: those holding a URL with
/// a password, which the journal keeps masked (`***` marks where the password goes, as in
/// the store option).
/// And the inventory a resume was pointed at with `-i`: this host's copy, which the next
/// resume on this host needs too.
fn given_again(args: &Arguments) -> String {
    let (vars, inventory) = match &args.command {
        Command::Run { vars, .. } => (vars, None),
        Command::Resume {
            vars, inventory, ..
        } => (vars, inventory.as_ref()),
        _ => return String::new(),
    };
    let vars: String = vars
        .iter()
        .filter_map(|v| {
            let masked = crate::secret::mask_url_passwords(v);
            (masked != *v).then(|| format!(" --var {}", quoted(&masked)))
        })
        .collect();
    match inventory {
        Some(path) => format!("{vars} -i {}", quoted(&path.to_string_lossy())),
        None => vars,
    }
}

use crate::error::shell_word as quoted;

/// The store options this command was given, as they must be repeated in a command it
/// suggests (`runbook resume RUN --store ...`), so the command works when pasted; empty when
/// they come from the environment or are the default.
fn store_flag(args: &Arguments) -> String {
    let from_env = |name: &str, value: &str| std::env::var(name).is_ok_and(|v| v == value);
    match &args.store {
        Some(url) if from_env("RUNBOOK_STORE", url) => String::new(),
        // The password stays out: `***` marks where it goes (or set PGPASSWORD).
        Some(url) => format!(
            " --store {}",
            quoted(&crate::secret::mask_url_passwords(url))
        ),
        None => {
            let dir = args.state_dir.to_string_lossy();
            if dir == ".runbook" || from_env("RUNBOOK_STATE_DIR", &dir) {
                String::new()
            } else {
                format!(" --state-dir {}", quoted(&dir))
            }
        }
    }
}
