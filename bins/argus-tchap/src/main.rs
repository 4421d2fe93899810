//! `argus-tchap`: the command-line entry point of the Argus Tchap connector: the GraphQL
//! server, the database migrations, ingestion from the terminal, audit-trail verification,
//! development tokens, the schema, the fusion relay, token keys and moving a room to another
//! homeserver. It parses the command line and
//! dispatches to [`argus_tchap::commands`].

/// mimalloc: serving a page of messages allocates thousands of small values (GraphQL fields,
/// JSON strings), where it spends markedly less than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{io, process::ExitCode};

use anyhow::Result;
use argus_server::Config;
use argus_tchap::{
    cli::{AuditCommand, Cli, Command, FusionCommand, KeysCommand, MediaCommand, RoomsCommand},
    commands,
};
use clap::Parser as _;

fn init_tracing(json: bool, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()));
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Command::Serve) { "info" } else { "warn" };
    init_tracing(cli.log_json, default_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    if let Command::Schema = cli.command {
        return commands::schema();
    }
    let config = Config::load(&cli.config)?;
    match cli.command {
        Command::Serve => commands::serve(config).await,
        Command::Migrate => commands::migrate(&config).await,
        Command::Ingest(args) => commands::ingest_room(&config, args).await,
        Command::Audit(AuditCommand::Head) => commands::audit_head(&config).await,
        Command::Audit(AuditCommand::Verify { expect_head, unkeyed_until }) => {
            commands::audit_verify(&config, expect_head, unkeyed_until).await
        }
        Command::Token(args) => commands::token(&config, args).await,
        Command::Fusion(FusionCommand::Relay { once }) => commands::fusion_relay_once(&config, once).await,
        Command::Fusion(FusionCommand::Status) => commands::fusion_status(&config).await,
        Command::Keys(KeysCommand::Rotate) => commands::keys_rotate(&config).await,
        Command::Keys(KeysCommand::Public(args)) => commands::oversight::keys_public(&config, &args),
        Command::Audit(AuditCommand::Checkpoint { org }) => {
            commands::oversight::audit_checkpoint(&config, org).await
        }
        Command::Audit(AuditCommand::Consistency { org, old_size }) => {
            commands::oversight::audit_consistency(&config, org, old_size).await
        }
        Command::Rooms(RoomsCommand::Rehome(args)) => commands::rooms_rehome(&config, args).await,
        Command::Media(MediaCommand::Rescan) => commands::media_rescan(&config).await,
        Command::Schema => commands::schema(),
    }
}
