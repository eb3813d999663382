//! `alb`: one binary for the alb-rs gateway. See README.md and `alb --help`.

mod admin;
mod cli;
mod compile;
mod controller;
mod crd;
mod echo;
mod ingress;
mod manifests;
mod metrics;
mod nginx;
mod operator;
mod policy;
mod standalone;
mod tls;

use anyhow::Result;
use clap::Parser;

/// mimalloc instead of glibc's malloc: compiling a policy allocates and frees many small objects, and glibc's
/// malloc (with its free-chunk consolidation) took ~45 % of a 10,000-rule compile (perf, `alb policy --time`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ALB_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: cli::Cli) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(cli::dispatch(args))
}
