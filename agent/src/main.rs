//! `outpost-agent`: one per host. It will turn the host into offers, run what the bridge asks
//! through the local dockerd, and keep it healthy while the network is down.
//!
//! This build has the command line only; the supervisor arrives with issue 4.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// The Outpost agent: runs containers on this host, supervised locally, commanded over MQTT.
#[derive(Debug, Parser)]
#[command(name = "outpost-agent", version, about)]
struct Cli {
    /// The agent's configuration file (TOML).
    #[arg(long, default_value = "/etc/outpost/agent.toml")]
    config: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    eprintln!(
        "outpost-agent {}: the supervisor is not built yet (config {} not read); \
         this binary only answers --help and --version",
        env!("CARGO_PKG_VERSION"),
        cli.config.display()
    );
    ExitCode::from(2)
}
