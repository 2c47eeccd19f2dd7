//! `scheme-sim`: runs the token service and network simulator, or generates
//! missing KEK components (`gen-components`).

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use scheme_sim::{Keks, Sim};
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(version, about, subcommand_negates_reqs = true)]
struct Cli {
    /// Address to listen on, e.g. 127.0.0.1:8700 (port 0: any free port).
    #[arg(long, required = true)]
    listen: Option<SocketAddr>,
    /// Directory of the KEK components `<scheme>.c1` and `<scheme>.c2`.
    #[arg(long, required = true)]
    kek_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Generate the KEK components missing from DIR and exit.
    GenComponents {
        #[arg(long)]
        kek_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let result = match (cli.command, cli.listen, cli.kek_dir) {
        (Some(Command::GenComponents { kek_dir }), _, _) => {
            scheme_sim::kek::generate_missing(&kek_dir)
                .map(|written| {
                    eprintln!(
                        "{} key component(s) generated in {}",
                        written.len(),
                        kek_dir.display()
                    );
                })
                .map_err(|e| e.to_string())
        }
        (None, Some(listen), Some(kek_dir)) => run(listen, kek_dir),
        // clap enforces --listen and --kek-dir without a subcommand.
        (None, _, _) => Err("--listen and --kek-dir are required".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scheme-sim: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(listen: SocketAddr, kek_dir: PathBuf) -> Result<(), String> {
    let keks = Keks::load_or_generate(&kek_dir).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async move {
        let shutdown = shutdown_signal()?;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let local = listener
            .local_addr()
            .map_err(|e| format!("cannot read the bound address: {e}"))?;
        // The one stdout line: test harnesses read the port from it.
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {local}")
            .and_then(|()| out.flush())
            .map_err(|e| format!("cannot write to stdout: {e}"))?;
        drop(out);
        tracing::info!(%local, "scheme-sim ready");
        scheme_sim::serve(listener, Arc::new(Sim::new(keks)), shutdown)
            .await
            .map_err(|e| format!("server failed: {e}"))?;
        tracing::info!("scheme-sim stopped");
        Ok(())
    })
}

/// Installs the SIGTERM and SIGINT handlers now, before the listening line
/// is printed, so a harness that signals right after reading it is heard;
/// the returned future completes on either signal.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, String> {
    use tokio::signal::unix::{SignalKind, signal};
    let install = |kind| signal(kind).map_err(|e| format!("cannot install a signal handler: {e}"));
    let mut term = install(SignalKind::terminate())?;
    let mut int = install(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    })
}
