//! `outpost-bridge`: the Marathon API over a fleet of Outpost agents.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use outpost_bridge::config::Config;

/// The Outpost bridge: Marathon and Mesos APIs over a fleet of Outpost agents.
#[derive(Debug, Parser)]
#[command(name = "outpost-bridge", version, about)]
struct Cli {
    /// The bridge's configuration file (TOML). Without it, the built-in defaults: API on
    /// 127.0.0.1:8080, broker mqtt://127.0.0.1:1883, state in /var/lib/outpost-bridge.
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Validate the configuration, print it, and exit (1 if invalid).
    CheckConfig,
    /// Load-balancer mode: follow a Marathon API (this bridge's, or any Marathon), render an
    /// HAProxy config from its apps' healthy tasks, validate it, put it in place and reload
    /// HAProxy on every change. See docs/discovery.md.
    Lb {
        /// The Marathon APIs to follow: one URL, or several (the bridges of a group, comma- or
        /// space-separated, as marathon-lb takes them); tried in turn when one fails.
        #[arg(long, num_args = 1.., value_delimiter = ',', default_value = "http://127.0.0.1:8080")]
        marathon: Vec<String>,
        /// The HAProxy config file to write.
        #[arg(long)]
        haproxy_config: PathBuf,
        /// A minijinja template replacing the built-in one (read again at every render).
        #[arg(long)]
        template: Option<PathBuf>,
        /// The haproxy binary (validates every render; runs HAProxy unless --reload-command).
        #[arg(long, default_value = "haproxy")]
        haproxy: String,
        /// Reload an HAProxy run elsewhere with this shell command instead of running one.
        #[arg(long)]
        reload_command: Option<String>,
        /// The address frontends bind.
        #[arg(long, default_value = "0.0.0.0")]
        bind: String,
        /// The port of the shared frontend for HAPROXY_{n}_VHOST apps.
        #[arg(long, default_value_t = 80)]
        http_port: u16,
        /// Print the rendered config once and exit (nothing written or reloaded).
        #[arg(long)]
        once: bool,
    },
    /// Make the Ed25519 key commands are signed with (or read the one in FILE) and print its
    /// public key, for agents' `[commands] trusted_keys`.
    SigningKey {
        /// The key file (PKCS#8 PEM, written mode 0600 if it does not exist).
        #[arg(long)]
        file: PathBuf,
    },
    /// Issue a CA (or reuse the one in DIR) and mutual-TLS certificates for the broker, the
    /// bridge and each agent (CN = agent id), for a test fleet. See docs/security.md.
    IssueCerts {
        /// Where to write ca.pem/.key, broker.pem/.key, bridge.pem/.key, agent-ID.pem/.key.
        #[arg(long)]
        dir: PathBuf,
        /// An agent id to issue a client certificate for (repeatable).
        #[arg(long = "agent")]
        agents: Vec<String>,
        /// A host name or IP address the broker is reached by (repeatable).
        #[arg(long = "broker-host", default_values = ["localhost", "127.0.0.1"])]
        broker_hosts: Vec<String>,
        /// Days the certificates are valid.
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Only the agents' certificates (the broker's and bridge's exist already).
        #[arg(long)]
        agents_only: bool,
    },
}

/// Logs to stderr; `OUTPOST_LOG` sets the filter (`info` by default).
fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OUTPOST_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

fn lb(cmd: &Cmd) -> ExitCode {
    let Cmd::Lb {
        marathon,
        haproxy_config,
        template,
        haproxy,
        reload_command,
        bind,
        http_port,
        once,
    } = cmd
    else {
        return ExitCode::FAILURE;
    };
    let marathons = match outpost_bridge::lb::Marathons::new(marathon) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("outpost-bridge lb: {e}");
            return ExitCode::from(2);
        }
    };
    let opts = outpost_bridge::lb::LbOptions {
        settings: outpost_bridge::lb::RenderSettings {
            bind: bind.clone(),
            http_port: *http_port,
            marathon: marathons.joined(),
        },
        marathon: marathons,
        config: haproxy_config.clone(),
        template: template.clone(),
        haproxy: haproxy.clone(),
        reload_command: reload_command.clone(),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("outpost-bridge lb: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = if *once {
        runtime
            .block_on(outpost_bridge::lb::render_to_string(&opts))
            .map(|text| print!("{text}"))
    } else {
        runtime.block_on(outpost_bridge::lb::run(opts))
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("outpost-bridge lb: {e}");
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    outpost_bridge::memory::few_heaps();
    let cli = Cli::parse();
    if let Some(cmd @ Cmd::Lb { .. }) = &cli.command {
        init_logging();
        return lb(cmd);
    }
    if let Some(Cmd::SigningKey { file }) = &cli.command {
        return match outpost_bridge::signing::create_or_load(file) {
            Ok(s) => {
                println!("{}", s.public_base64());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("outpost-bridge signing-key: {e}");
                ExitCode::from(1)
            }
        };
    }
    if let Some(Cmd::IssueCerts {
        dir,
        agents,
        broker_hosts,
        days,
        agents_only,
    }) = &cli.command
    {
        let mut req = outpost_bridge::certs::Request::valid_for_days(
            dir.clone(),
            agents.clone(),
            broker_hosts.clone(),
            *days,
        );
        req.servers = !agents_only;
        return match outpost_bridge::certs::issue(&req) {
            Ok(files) => {
                for f in files {
                    println!("{}", f.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("outpost-bridge issue-certs: {e}");
                ExitCode::from(1)
            }
        };
    }
    let config = match &cli.config {
        Some(path) => Config::load(path),
        None => Config::parse("", std::path::Path::new("(defaults)")),
    };
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("outpost-bridge: invalid configuration: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(Cmd::CheckConfig) = cli.command {
        print!("{}", config.summary());
        return ExitCode::SUCCESS;
    }
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("outpost-bridge: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(outpost_bridge::server::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("outpost-bridge: {e}");
            ExitCode::from(1)
        }
    }
}
