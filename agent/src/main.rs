//! `outpost-agent`: one per host. Turns the host into offers, runs what the bridge asks
//! through the local dockerd, and keeps it healthy while the network is down.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use outpost_agent::config::Config;

/// The Outpost agent: runs containers on this host, supervised locally, commanded over MQTT.
#[derive(Debug, Parser)]
#[command(name = "outpost-agent", version, about)]
struct Cli {
    /// The agent's configuration file (TOML).
    #[arg(long, default_value = "/etc/outpost/agent.toml", global = true)]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Checks the configuration file and prints what it means; exits 1 if it is invalid.
    CheckConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("outpost-agent: invalid configuration: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(Cmd::CheckConfig) = cli.command {
        println!("{}: ok", cli.config.display());
        println!("agent_id = {}", config.agent_id);
        for b in &config.brokers {
            println!("broker = mqtt://{}:{}", b.host, b.port);
        }
        println!("docker = {:?}", config.docker);
        println!(
            "port_range = {}-{}",
            config.port_range.begin, config.port_range.end
        );
        println!("state_dir = {}", config.state_dir.display());
        return ExitCode::SUCCESS;
    }
    outpost_agent::driver::systemd::init_logging();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("outpost-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(outpost_agent::runtime::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("outpost-agent: {e}");
            ExitCode::FAILURE
        }
    }
}
