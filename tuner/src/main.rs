//! `polytune`: see [`polytune::cli`] for the commands.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    match polytune::cli::run(polytune::cli::Cli::parse()) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
