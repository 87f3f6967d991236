//! `outpost-agent`: one per host. Turns the host into offers, runs what the bridge asks
//! through the local dockerd, and keeps it healthy while the network is down.
//!
//! The command line is parsed with `lexopt` rather than clap: it costs a few KiB of the static
//! binary instead of a few hundred.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use outpost_agent::config::Config;

const HELP: &str = "\
The Outpost agent: runs containers on this host, supervised locally, commanded over MQTT.

Usage: outpost-agent [OPTIONS] [COMMAND]

Commands:
  check-config  Checks the configuration file and prints what it means; exits 1 if it is invalid

Options:
      --config <CONFIG>  The agent's configuration file (TOML) [default: /etc/outpost/agent.toml]
  -h, --help             Print help
  -V, --version          Print version
";

/// What the command line asks for.
#[derive(Debug)]
struct Cli {
    config: PathBuf,
    check_config: bool,
}

/// Parses the arguments; `Err` carries the exit code after printing help, the version or an
/// error that names the argument.
fn parse() -> Result<Cli, ExitCode> {
    use lexopt::prelude::*;
    let mut cli = Cli {
        config: PathBuf::from("/etc/outpost/agent.toml"),
        check_config: false,
    };
    let mut parser = lexopt::Parser::from_env();
    let fail = |e: lexopt::Error| {
        eprintln!(
            "error: {e}\n\nUsage: outpost-agent [OPTIONS] [COMMAND]\n\nFor more information, try '--help'."
        );
        ExitCode::from(2)
    };
    while let Some(arg) = parser.next().map_err(fail)? {
        match arg {
            Long("config") => cli.config = parser.value().map_err(fail)?.into(),
            Short('h') | Long("help") => {
                print!("{HELP}");
                return Err(ExitCode::SUCCESS);
            }
            Short('V') | Long("version") => {
                println!("outpost-agent {}", env!("CARGO_PKG_VERSION"));
                return Err(ExitCode::SUCCESS);
            }
            Value(v) if v == "check-config" => cli.check_config = true,
            other => return Err(fail(other.unexpected())),
        }
    }
    Ok(cli)
}

fn main() -> ExitCode {
    let cli = match parse() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("outpost-agent: invalid configuration: {e}");
            return ExitCode::FAILURE;
        }
    };
    if cli.check_config {
        println!("{}: ok", cli.config.display());
        println!("agent_id = {}", config.agent_id);
        for b in &config.brokers {
            println!("broker = {b}");
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
