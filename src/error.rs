//! Errors the binary reports, each with its exit code and one rendering.

use std::fmt;
use std::path::PathBuf;

/// Exit codes, documented in the README.
pub mod exit {
    pub const SUCCESS: i32 = 0;
    pub const RUN_FAILED: i32 = 1;
    pub const INVALID_INPUT: i32 = 2;
    pub const PAUSED: i32 = 3;
    pub const LOCKED: i32 = 4;
    pub const INTERRUPTED: i32 = 130;
}

/// A position in a script file, for messages that point at a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptPos {
    pub file: String,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for ScriptPos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.column > 0 {
            write!(f, "{}:{}:{}", self.file, self.line, self.column)
        } else {
            write!(f, "{}:{}", self.file, self.line)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad command-line use.
    #[error("{0}")]
    Usage(String),

    /// A script that does not compile or fails lint.
    #[error("{message}")]
    Script {
        message: String,
        pos: Option<ScriptPos>,
        /// The offending source line, drawn under the message.
        source_line: Option<String>,
    },

    /// The inventory file or a value in it.
    #[error("inventory {path}: {message}")]
    Inventory { path: String, message: String },

    /// A parameter declared with `params` or given with `--var`.
    #[error("{0}")]
    Param(String),

    /// A journal that cannot be read or written.
    #[error("journal {}: {message}", path.display())]
    Journal { path: PathBuf, message: String },

    #[error("no run with id '{0}' in {1}; `runbook runs` lists the runs")]
    UnknownRun(String, String),

    /// Another run holds the lock.
    #[error("{0}")]
    Locked(String),

    /// The run needs a decision (approval, in-flight action) and was paused.
    #[error("{0}")]
    Paused(String),

    /// The run stopped on Ctrl-C / SIGTERM and can be resumed.
    #[error("{0}")]
    Interrupted(String),

    /// The run failed.
    #[error("{message}")]
    RunFailed {
        message: String,
        pos: Option<ScriptPos>,
        source_line: Option<String>,
    },

    #[error("{0}")]
    Io(String),

    /// Whoever read our output went away (`runbook log RUN | head -1`): stop quietly.
    #[error("the output was closed")]
    ClosedOutput,
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_)
            | Error::Script { .. }
            | Error::Inventory { .. }
            | Error::Param(_)
            | Error::Journal { .. }
            | Error::UnknownRun(..) => exit::INVALID_INPUT,
            Error::Locked(_) => exit::LOCKED,
            Error::Paused(_) => exit::PAUSED,
            Error::Interrupted(_) => exit::INTERRUPTED,
            Error::RunFailed { .. } | Error::Io(_) => exit::RUN_FAILED,
            Error::ClosedOutput => exit::SUCCESS,
        }
    }

    pub fn script(
        message: impl Into<String>,
        pos: Option<ScriptPos>,
        source: Option<&str>,
    ) -> Self {
        let source_line = match (&pos, source) {
            (Some(p), Some(src)) if p.line > 0 => src.lines().nth(p.line - 1).map(str::to_string),
            _ => None,
        };
        Error::Script {
            message: message.into(),
            pos,
            source_line,
        }
    }

    pub fn run_failed(
        message: impl Into<String>,
        pos: Option<ScriptPos>,
        source: Option<&str>,
    ) -> Self {
        match Error::script(message, pos, source) {
            Error::Script {
                message,
                pos,
                source_line,
            } => Error::RunFailed {
                message,
                pos,
                source_line,
            },
            other => other,
        }
    }

    /// The full message as printed on stderr, with the script line drawn under it.
    pub fn render(&self) -> String {
        match self {
            Error::Script {
                message,
                pos,
                source_line,
            }
            | Error::RunFailed {
                message,
                pos,
                source_line,
            } => {
                // A hint ("next: ...") goes below the drawing.
                let (message, hint) = match message.split_once("\n  next: ") {
                    Some((m, h)) => (m, Some(h)),
                    None => (message.as_str(), None),
                };
                let mut out = format!("error: {message}");
                if let Some(pos) = pos {
                    out.push_str(&format!("\n  --> {pos}"));
                    if let Some(line) = source_line {
                        let num = pos.line.to_string();
                        let pad = " ".repeat(num.len());
                        out.push_str(&format!("\n {pad} |\n {num} | {line}"));
                        if pos.column > 0 {
                            out.push_str(&format!("\n {pad} | {}^", " ".repeat(pos.column - 1)));
                        }
                    }
                }
                if let Some(h) = hint {
                    out.push_str(&format!("\n  next: {h}"));
                }
                out
            }
            Error::Paused(m) => format!("paused: {m}"),
            Error::Interrupted(m) => format!("interrupted: {m}"),
            other => format!("error: {other}"),
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
