//! `outpost-bridge`: the central side. It will speak MQTT to the agents and the Marathon and
//! Mesos HTTP APIs to the rest of the world.
//!
//! This build has the command line only; the service arrives with issue 5.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// The Outpost bridge: Marathon and Mesos APIs over a fleet of Outpost agents.
#[derive(Debug, Parser)]
#[command(name = "outpost-bridge", version, about)]
struct Cli {
    /// The bridge's configuration file (TOML).
    #[arg(long, default_value = "/etc/outpost/bridge.toml")]
    config: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    eprintln!(
        "outpost-bridge {}: the service is not built yet (config {} not read); \
         this binary only answers --help and --version",
        env!("CARGO_PKG_VERSION"),
        cli.config.display()
    );
    ExitCode::from(2)
}
