//! `argus-tchap`: the command-line entry point of the Argus Tchap connector: the GraphQL
//! server, the database migrations, ingestion from the terminal, audit-trail verification,
//! development tokens, the schema, and the fusion relay.

/// mimalloc: serving a page of messages allocates thousands of small values (GraphQL fields,
/// JSON strings), where it spends markedly less than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{
    io::{self, Read as _, Write},
    path::PathBuf,
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use argus_domain::{AccessToken, ActorId, Classification, FetchReport, OrgId, Scope, Viewer};
use argus_graphql::{Services, ingest};
use argus_server::{
    Config,
    auth::{TokenRequest, mint_dev_token},
    config::DEFAULT_CONFIG_FILE,
};
use argus_store::{ChainHead, Store};
use clap::{Parser, Subcommand};

/// Argus Tchap connector: pulls Matrix (Tchap) rooms into durable storage per organisation and
/// classification, and serves them through a GraphQL API.
#[derive(Debug, Parser)]
#[command(name = "argus-tchap", version, about, long_about = None)]
struct Cli {
    /// Configuration file (absent file = defaults; `ARGUS_*` variables override it).
    #[arg(long, global = true, env = "ARGUS_CONFIG", default_value = DEFAULT_CONFIG_FILE)]
    config: PathBuf,
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the GraphQL server (with no configuration: development mode on 127.0.0.1:8080).
    Serve,
    /// Create or upgrade the database schema, then exit.
    Migrate,
    /// Ingest one room from a homeserver, as the mutation `ingestTchapRoom` does.
    Ingest(IngestArgs),
    /// Inspect the hash-chained audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Mint a development token signed with the configured HS256 secret (refused when a real
    /// signing key is configured). Prints the token only.
    Token(TokenArgs),
    /// Print the GraphQL schema (SDL).
    Schema,
    /// The fusion relay (outbox of network-node entities).
    #[command(subcommand)]
    Fusion(FusionCommand),
}

#[derive(Debug, clap::Args)]
struct IngestArgs {
    /// Base URL of the homeserver, e.g. https://matrix.agent.tchap.gouv.fr
    #[arg(long)]
    homeserver: String,
    /// Matrix room id, e.g. !abc:agent.tchap.gouv.fr
    #[arg(long)]
    room: String,
    /// Classification of the room and its messages (contract name or French marking).
    #[arg(long)]
    classification: Classification,
    /// Organisation the room is stored for.
    #[arg(long)]
    org: OrgId,
    /// Who runs the ingestion (kept in the audit trail).
    #[arg(long, default_value = "operator")]
    actor: ActorId,
    /// The operator's clearance (default: the classification asked for).
    #[arg(long)]
    clearance: Option<Classification>,
    /// Upper bound on message events pulled.
    #[arg(long)]
    max_messages: Option<u32>,
    /// Matrix access token; `-` reads it from standard input. Prefer the environment variable
    /// to the command line, which other local users can see.
    #[arg(long, env = "MATRIX_ACCESS_TOKEN", hide_env_values = true, value_parser = access_token)]
    access_token: AccessToken,
}

/// The token as given (`Debug` of the arguments shows it as `[redacted]`).
fn access_token(value: &str) -> std::result::Result<AccessToken, std::convert::Infallible> {
    Ok(AccessToken::new(value))
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Recompute every organisation's chain; exit 1 if any link is broken or a head differs.
    Verify {
        /// Expected chain head `org:seq:hash` (from `audit head`), to detect truncation.
        #[arg(long = "expect-head", value_name = "ORG:SEQ:HASH")]
        expect_head: Vec<ChainHead>,
        /// With an audit key: the records of ORG up to SEQ were appended before the key was
        /// set and are checked unkeyed (a boundary kept outside the database).
        #[arg(long = "unkeyed-until", value_name = "ORG:SEQ", value_parser = org_seq)]
        unkeyed_until: Vec<(OrgId, i64)>,
    },
    /// Print the head of every organisation's chain, one `org:seq:hash` per line.
    Head,
}

#[derive(Debug, clap::Args)]
struct TokenArgs {
    /// Obtain the token from the identity provider configured in `[oauth]` with the OAuth 2.0
    /// client-credentials grant instead of minting one; the provider decides the claims. Only
    /// `--scope`, when given, is sent.
    #[arg(long, conflicts_with_all = ["sub", "org", "clearance", "ttl"])]
    client_credentials: bool,
    /// The subject (actor).
    #[arg(long, default_value = "dev")]
    sub: ActorId,
    /// The organisation.
    #[arg(long, required_unless_present = "client_credentials")]
    org: Option<OrgId>,
    /// The clearance (contract name or French marking).
    #[arg(long, required_unless_present = "client_credentials")]
    clearance: Option<Classification>,
    /// Scopes, space- or comma-separated, repeatable (default: all three for a development
    /// token, the configured `oauth.scopes` with `--client-credentials`).
    #[arg(long)]
    scope: Vec<String>,
    /// Lifetime, e.g. 3600, 90s, 30m, 12h, 7d.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    ttl: Duration,
}

#[derive(Debug, Subcommand)]
enum FusionCommand {
    /// Deliver pending outbox rows to the configured sinks.
    Relay {
        /// Drain the outbox once and exit (the only mode outside `serve`).
        #[arg(long)]
        once: bool,
    },
    /// Show pending, delivered and parked rows.
    Status,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let factor = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("invalid duration unit {unit:?} (s, m, h or d)")),
    };
    n.checked_mul(factor).map(Duration::from_secs).ok_or_else(|| "duration too long".to_owned())
}

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
        print_out(&argus_graphql::schema_sdl())?;
        return Ok(ExitCode::SUCCESS);
    }
    let config = Config::load(&cli.config)?;
    match cli.command {
        Command::Serve => serve(config).await,
        Command::Migrate => {
            let store = open_store(&config).await?;
            print_out(&format!("database schema up to date ({:?})", store.backend()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Ingest(args) => ingest_room(&config, args).await,
        Command::Audit(AuditCommand::Head) => {
            let store = open_store(&config).await?;
            let heads = tokio::task::spawn_blocking(move || store.audit_heads()).await??;
            for head in &heads {
                print_out(&head.to_string())?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit(AuditCommand::Verify { expect_head, unkeyed_until }) => {
            audit_verify(&config, expect_head, unkeyed_until).await
        }
        Command::Token(args) => {
            let names: Vec<String> = args
                .scope
                .iter()
                .flat_map(|s| s.split([' ', ',']))
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            let scopes = names
                .iter()
                .map(|s| s.parse::<Scope>().with_context(|| format!("unknown scope {s:?}")))
                .collect::<Result<Vec<_>>>()?;
            if args.client_credentials {
                print_out(&argus_server::auth::client_credentials_token(&config.oauth, &names).await?)?;
                return Ok(ExitCode::SUCCESS);
            }
            let (Some(org), Some(clearance)) = (args.org, args.clearance) else {
                bail!("--org and --clearance are required for a development token");
            };
            let request = TokenRequest {
                sub: args.sub,
                org,
                clearance,
                scopes: if scopes.is_empty() {
                    vec![Scope::Read, Scope::Ingest, Scope::Audit]
                } else {
                    scopes
                },
                ttl: args.ttl,
            };
            let source = config.key_source()?;
            print_out(&mint_dev_token(&config.jwt, &source, &request)?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Fusion(FusionCommand::Relay { once }) => {
            if !once {
                bail!("the relay runs continuously inside `serve`; use `fusion relay --once` here");
            }
            let store = open_store(&config).await?;
            let sinks = argus_fusion::build_sinks(&config.fusion)?;
            let relay = argus_fusion::Relay::new(store, sinks, config.fusion.relay_options());
            let report = relay.run_once().await?;
            print_out(&format!(
                "delivered {}, failed {}, parked {}",
                report.delivered, report.failed, report.parked
            ))?;
            Ok(if report.failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Fusion(FusionCommand::Status) => {
            let store = open_store(&config).await?;
            let status = tokio::task::spawn_blocking(move || argus_fusion::status(&store)).await??;
            let mut out = format!(
                "pending {}, delivered {}, parked {}",
                status.pending, status.delivered, status.parked
            );
            for row in &status.parked_rows {
                out.push_str(&format!(
                    "\nparked #{} {} {} v{} after {} attempts: {}",
                    row.id,
                    row.org,
                    row.room_id,
                    row.version,
                    row.attempts,
                    row.last_error.as_deref().unwrap_or("")
                ));
            }
            print_out(&out)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema => unreachable!("handled above"),
    }
}

/// Writes a line to standard output (the CLI's product); a closed pipe (`| head`) is not an
/// error.
fn print_out(text: &str) -> Result<()> {
    let mut out = io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

async fn open_store(config: &Config) -> Result<Store> {
    config.prepare_directories()?;
    let url = config.database_url.clone();
    let options = config.store_options()?;
    Ok(tokio::task::spawn_blocking(move || Store::open_with(&url, options)).await??)
}

async fn serve(config: Config) -> Result<ExitCode> {
    config.check_bind(config.bind)?;
    let listener = std::net::TcpListener::bind(config.bind)
        .with_context(|| format!("cannot listen on {}", config.bind))?;
    let addr = listener.local_addr()?;
    let base = format!("http://{addr}");
    let mut banner = format!("argus-tchap listening on {base}\n  GraphQL: {base}/graphql");
    if config.graphiql_enabled() {
        banner.push_str(&format!("\n  GraphiQL: {base}/graphiql"));
    }
    if config.is_development() {
        banner.push_str(&format!(
            "\n  Development mode: tokens are HS256-signed with the secret in {}.\n  \
             Mint a token:\n    TOKEN=$(argus-tchap token --sub alice --org dgsi --clearance SECRET)\n  \
             Query:\n    curl -s {base}/graphql -H \"Authorization: Bearer $TOKEN\" \
             -H 'content-type: application/json' -d '{{\"query\":\"{{ tchapStats {{ totalRooms totalMessages }} }}\"}}'",
            config.jwt.hs256_secret.as_ref().map_or_else(
                || config.data_dir().join(argus_server::config::DEV_SECRET_FILE).display().to_string(),
                |_| "jwt.hs256_secret".to_owned()
            ),
        ));
    }
    // Open the database and resolve the key before telling anyone to connect.
    let built = argus_server::app::build(&config).await?;
    print_out(&banner)?;
    argus_server::app::run_built(listener, built).await?;
    Ok(ExitCode::SUCCESS)
}

fn read_token(value: AccessToken) -> Result<AccessToken> {
    if value.expose_secret() == "-" {
        let mut token = String::new();
        io::stdin().take(8192).read_to_string(&mut token)?;
        return Ok(AccessToken::new(token.trim()));
    }
    Ok(value)
}

async fn ingest_room(config: &Config, args: IngestArgs) -> Result<ExitCode> {
    let store = open_store(config).await?;
    let connector = argus_matrix::Connector::new(argus_server::app::connector_config(config))?;
    let services = Arc::new(Services::new(store, connector));
    let viewer = Viewer::new(
        args.actor,
        args.org,
        args.clearance.unwrap_or(args.classification),
        [Scope::Ingest, Scope::Read],
    );
    let request = ingest::IngestRequest {
        homeserver_url: args.homeserver,
        access_token: read_token(args.access_token)?,
        room_id: args.room,
        classification: args.classification,
        max_messages: args.max_messages.map(i64::from),
    };
    let cap = u64::from(args.max_messages.unwrap_or(services.limits.default_max_messages));
    let bar = indicatif::ProgressBar::new(cap);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} {elapsed_precise} [{bar:40}] {pos}/{len} messages {msg}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    let progress = bar.clone();
    let mut on_page = move |report: &FetchReport| {
        progress.set_position(report.messages.min(cap));
        progress.set_message(format!("({} pages, {} events)", report.pages, report.events_fetched));
    };
    let result = ingest::ingest_room(&services, &viewer, request, &mut on_page).await;
    bar.finish_and_clear();
    match result {
        Ok(done) => {
            let r = &done.report;
            let rows = [
                ("room", done.room.room_id.to_string()),
                ("name", done.room.name.clone().unwrap_or_default()),
                ("organisation", done.room.org.to_string()),
                ("classification", done.room.classification.to_string()),
                ("pages read", r.pages.to_string()),
                ("events fetched", r.events_fetched.to_string()),
                ("messages fetched", r.messages.to_string()),
                ("messages stored (new)", done.messages_stored.to_string()),
                ("messages in room", done.room.message_count.to_string()),
                ("encrypted", r.encrypted.to_string()),
                ("redacted", r.redacted.to_string()),
                ("edits applied", r.edits_applied.to_string()),
                ("edits ignored", r.edits_ignored.to_string()),
                ("redactions ignored", r.redactions_ignored.to_string()),
                ("malformed skipped", r.malformed_skipped.to_string()),
                ("foreign dropped", r.foreign_dropped.to_string()),
                ("truncated at cap", r.truncated.to_string()),
                ("audit record", format!("{}:{}", done.ingestion.entry.org, done.ingestion.seq)),
            ];
            let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
            let table: Vec<String> = rows.iter().map(|(k, v)| format!("{k:<width$}  {v}")).collect();
            print_out(&table.join("\n"))?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("ingestion failed [{}]: {}", e.code(), e.public_message());
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Parses `org:seq`.
fn org_seq(value: &str) -> std::result::Result<(OrgId, i64), String> {
    let (org, seq) = value.rsplit_once(':').ok_or("expected ORG:SEQ")?;
    let org = org.parse::<OrgId>().map_err(|e| e.to_string())?;
    let seq = seq.parse::<i64>().ok().filter(|s| *s >= 0).ok_or("SEQ must be a whole number")?;
    Ok((org, seq))
}

async fn audit_verify(
    config: &Config,
    expected: Vec<ChainHead>,
    unkeyed_until: Vec<(OrgId, i64)>,
) -> Result<ExitCode> {
    let store = open_store(config).await?;
    let results =
        tokio::task::spawn_blocking(move || store.audit_verify_from(&expected, &unkeyed_until)).await??;
    let mut lines = Vec::new();
    let mut all_ok = true;
    for r in &results {
        if r.is_ok() {
            lines.push(format!("{}: ok, {} records", r.org, r.length));
        } else {
            all_ok = false;
            lines.push(format!(
                "{}: BROKEN at seq {}: {}",
                r.org,
                r.first_bad_seq.map_or_else(|| "?".to_owned(), |s| s.to_string()),
                r.problem.as_deref().unwrap_or("chain does not verify")
            ));
        }
    }
    if lines.is_empty() {
        lines.push("no audit records".to_owned());
    }
    print_out(&lines.join("\n"))?;
    Ok(if all_ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
