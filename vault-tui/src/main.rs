//! Entry point: parse arguments, run the console, report a fatal error.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let args = vault_tui::cli::Args::parse();
    match vault_tui::console::run(args.socket).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vault-tui: {e}");
            ExitCode::FAILURE
        }
    }
}
