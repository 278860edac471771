//! The command line: arguments → validated requests → subcommands → exit code.

mod arguments;
mod stack;
mod subcommand;

use clap::Parser;

pub use arguments::{Arguments, Command, Output, StackCommand};

use crate::error::exit;

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
    match subcommand::dispatch(args, &redactor) {
        Ok(()) => exit::SUCCESS,
        Err(e) => {
            eprintln!("{}", redactor.redact(&e.render()));
            e.exit_code()
        }
    }
}
