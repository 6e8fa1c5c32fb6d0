//! `polytune`: see [`cli`] for the commands.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    match cli::run(cli::Cli::parse()) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            cli::print_stderr(&format!("error: {}\n", error_chain(&e)));
            ExitCode::from(1)
        }
    }
}

/// The error and its causes joined by `: `, leaving out a cause whose text
/// the message already holds (many errors print their source as part of
/// their own message, e.g. `{path}: {source}`, and would otherwise show it
/// twice: "x: Is a directory (os error 21): Is a directory (os error 21)").
fn error_chain(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.is_empty() {
            text = part;
        } else if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
    }
    text
}
