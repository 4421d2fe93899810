//! The bodies of the `argus-tchap` commands. Each takes the loaded configuration and its
//! parsed arguments, and gets its store and services from [`argus_server::services`], the one
//! place they are assembled, as `serve` does.

use std::{
    io::{self, Read as _, Write},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use argus_domain::{AccessToken, FetchReport, OrgId, Scope, Viewer};
use argus_graphql::ingest;
use argus_server::{
    Config,
    auth::{TokenRequest, mint_dev_token},
    services,
};
use argus_store::ChainHead;

use crate::cli::{IngestArgs, RehomeArgs, TokenArgs};

pub mod oversight;

/// `schema`: prints the GraphQL schema (SDL).
pub fn schema() -> Result<ExitCode> {
    print_out(&argus_graphql::schema_sdl())?;
    Ok(ExitCode::SUCCESS)
}

/// `migrate`: creates or upgrades the database schema.
pub async fn migrate(config: &Config) -> Result<ExitCode> {
    let store = services::open_store(config).await?;
    print_out(&format!("database schema up to date ({:?})", store.backend()))?;
    Ok(ExitCode::SUCCESS)
}

/// `audit head`: one `org:seq:hash` line per organisation.
pub async fn audit_head(config: &Config) -> Result<ExitCode> {
    let store = services::open_store(config).await?;
    let heads = tokio::task::spawn_blocking(move || store.audit_heads()).await??;
    for head in &heads {
        print_out(&head.to_string())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `token`: a development token, or one from the identity provider (`--client-credentials`).
pub async fn token(config: &Config, args: TokenArgs) -> Result<ExitCode> {
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
        scopes: if scopes.is_empty() { vec![Scope::Read, Scope::Ingest, Scope::Audit] } else { scopes },
        ttl: args.ttl,
    };
    let source = config.key_source()?;
    print_out(&mint_dev_token(&config.jwt, &source, &request)?)?;
    Ok(ExitCode::SUCCESS)
}

/// `fusion relay --once`: drains the outbox to the configured sinks.
pub async fn fusion_relay_once(config: &Config, once: bool) -> Result<ExitCode> {
    if !once {
        bail!("the relay runs continuously inside `serve`; use `fusion relay --once` here");
    }
    let store = services::open_store(config).await?;
    let relay = services::relay(config, store)?;
    let report = relay.run_once().await?;
    print_out(&format!(
        "delivered {}, failed {}, parked {}",
        report.delivered, report.failed, report.parked
    ))?;
    Ok(if report.failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `fusion status`: pending, delivered and parked rows.
pub async fn fusion_status(config: &Config) -> Result<ExitCode> {
    let store = services::open_store(config).await?;
    let status = tokio::task::spawn_blocking(move || argus_fusion::status(&store)).await??;
    let mut out =
        format!("pending {}, delivered {}, parked {}", status.pending, status.delivered, status.parked);
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

/// Writes a line to standard output (the CLI's product); a closed pipe (`| head`) is not an
/// error.
pub fn print_out(text: &str) -> Result<()> {
    let mut out = io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// `serve`: runs the server until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> Result<ExitCode> {
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

/// `ingest --all-joined`: every joined room, one bar each, then a summary table.
async fn ingest_joined(
    services: &argus_graphql::Services,
    viewer: &Viewer,
    args: IngestArgs,
) -> Result<ExitCode> {
    let request = ingest::JoinedRequest {
        homeserver_url: args.homeserver.unwrap_or_default(),
        access_token: read_token(args.access_token)?,
        account: args.account,
        classification: args.classification,
        max_messages: args.max_messages.map(i64::from),
        recovery_key: args.recovery_key,
        refresh_token: args.refresh_token,
        oauth_client_id: args.oauth_client_id,
        since: args.since,
    };
    let cap = u64::from(args.max_messages.unwrap_or(services.app.limits.default_max_messages));
    let bars = indicatif::MultiProgress::new();
    let style = indicatif::ProgressStyle::with_template("{prefix:>32} [{bar:30}] {pos}/{len} {msg}")
        .map(|s| s.progress_chars("=> "))
        .ok();
    let mut current: Option<(String, indicatif::ProgressBar)> = None;
    let mut on_room = |room: &str, report: Option<&FetchReport>| {
        if current.as_ref().is_none_or(|(id, _)| id != room) {
            let bar = bars.add(indicatif::ProgressBar::new(cap));
            if let Some(style) = &style {
                bar.set_style(style.clone());
            }
            bar.set_prefix(room.to_owned());
            current = Some((room.to_owned(), bar));
        }
        if let Some((_, bar)) = &current {
            match report {
                Some(r) => {
                    bar.set_position(r.messages.min(cap));
                    bar.set_message(format!("{} pages", r.pages));
                }
                None => bar.finish(),
            }
        }
    };
    let result = ingest::ingest_joined(&services.app, viewer, request, &mut on_room).await;
    if let Some(media) = &services.app.media {
        // The rooms' files are fetched beside their runs: wait for them before exiting.
        let files = media.settle().await;
        eprintln!(
            "files: {} fetched, {} not held, {} left for later",
            files.fetched, files.ended, files.retried
        );
    }
    match result {
        Ok(rooms) => {
            let mut lines = vec![format!("{:<48} {:>8} {:>8}  {}", "room", "stored", "in room", "outcome")];
            let mut failed = 0;
            for room in &rooms {
                lines.push(match &room.result {
                    Ok(done) => format!(
                        "{:<48} {:>8} {:>8}  SUCCEEDED",
                        room.room_id, done.messages_stored, done.room.message_count
                    ),
                    Err((code, message)) => {
                        failed += 1;
                        format!("{:<48} {:>8} {:>8}  FAILED [{code}] {message}", room.room_id, "-", "-")
                    }
                });
            }
            lines.push(format!("{} room(s), {} failed", rooms.len(), failed));
            print_out(&lines.join("\n"))?;
            Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Err(e) => {
            eprintln!("ingestion failed [{}]: {}", e.code(), e.public_message());
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `ingest`: one room (or every joined room), through the same use-case and services as the
/// mutations.
pub async fn ingest_room(config: &Config, args: IngestArgs) -> Result<ExitCode> {
    let services = services::assemble(config).await?.services;
    let viewer = Viewer::new(
        args.actor.clone(),
        args.org.clone(),
        args.clearance.unwrap_or(args.classification),
        [Scope::Ingest, Scope::Read],
    );
    // Runs an earlier process left unfinished (killed) are audited first, once their lease ran out.
    let now = time::OffsetDateTime::now_utc();
    match services.app.with_store(move |store| store.close_interrupted_runs(now)).await {
        Ok(closed) if !closed.is_empty() => {
            eprintln!("audited {} interrupted run(s) of earlier processes", closed.len())
        }
        Ok(_) => {}
        Err(e) => eprintln!("warning: interrupted runs could not be audited [{}]", e.code()),
    }
    if args.all_joined {
        return ingest_joined(&services, &viewer, args).await;
    }
    let request = ingest::IngestRequest {
        homeserver_url: args.homeserver.unwrap_or_default(),
        access_token: read_token(args.access_token)?,
        account: args.account,
        refresh_token: args.refresh_token,
        oauth_client_id: args.oauth_client_id,
        since: args.since,
        room_id: args.room.unwrap_or_default(),
        classification: args.classification,
        max_messages: args.max_messages.map(i64::from),
        recovery_key: args.recovery_key,
        reach: if args.backfill { ingest::Reach::Backfill } else { ingest::Reach::Current },
        trigger: ingest::Trigger::Manual,
        follow_upgrades: args.follow_upgrades,
    };
    let cap = u64::from(args.max_messages.unwrap_or(services.app.limits.default_max_messages));
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
    let result = ingest::ingest_room(&services.app, &viewer, request, &mut on_page).await;
    bar.finish_and_clear();
    // The run's files are fetched beside it: this process waits for them before it exits.
    let files = match &services.app.media {
        Some(media) => media.settle().await,
        None => argus_ingest::MediaReport::default(),
    };
    match result {
        Ok(done) => {
            let r = &done.report;
            let rows = [
                ("room", done.room.room_id.to_string()),
                // What `--account` resolved to, or `--homeserver` as given.
                ("homeserver", done.room.homeserver_url.to_string()),
                ("name", done.room.name.clone().unwrap_or_default()),
                ("organisation", done.room.org.to_string()),
                ("classification", done.room.classification.to_string()),
                ("pages read", r.pages.to_string()),
                ("events fetched", r.events_fetched.to_string()),
                ("messages fetched", r.messages.to_string()),
                ("messages stored (new)", done.messages_stored.to_string()),
                ("messages in room", done.room.message_count.to_string()),
                ("encrypted (undecrypted)", r.encrypted.to_string()),
                ("decrypted", r.decrypted.to_string()),
                (
                    "undecryptable",
                    r.undecryptable.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", "),
                ),
                ("redacted", r.redacted.to_string()),
                ("edits applied", r.edits_applied.to_string()),
                ("edits ignored", r.edits_ignored.to_string()),
                ("redactions ignored", r.redactions_ignored.to_string()),
                ("malformed skipped", r.malformed_skipped.to_string()),
                ("foreign dropped", r.foreign_dropped.to_string()),
                ("truncated at cap", r.truncated.to_string()),
                ("history complete", done.room.history_complete.to_string()),
                ("files fetched", files.fetched.to_string()),
                ("files not held", files.ended.to_string()),
                ("files left for later", files.retried.to_string()),
                ("files scanned", files.scanned.to_string()),
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

/// `keys rotate`: re-seals every watched room's token and every account's shared pair under
/// the current key. What a renewal replaced while it was re-sealed is re-sealed by a further
/// pass (at most `ROTATION_PASSES`); the command fails while anything is left under another
/// key, so that an operator drops the previous keys only after a clean run.
pub async fn keys_rotate(config: &Config) -> Result<ExitCode> {
    let services = services::assemble(config).await?.services;
    let mut total = argus_ingest::watch::Rotation::default();
    for _ in 0..ROTATION_PASSES {
        match argus_ingest::watch::rotate_token_keys(&services.app).await {
            Ok(r) => {
                total.resealed += r.resealed;
                total.accounts += r.accounts;
                total.device_items += r.device_items;
                total.unopened = r.unopened;
                total.current = r.current;
                total.changed = r.changed;
                if r.changed == 0 {
                    break;
                }
            }
            Err(e) => {
                eprintln!("key rotation failed [{}]: {}", e.code(), e.public_message());
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    print_out(&format!(
        "re-sealed {} watch token(s), {} account pair(s) and {} device state item(s); {} already under the \
         current key; {} did not open with any key; {} changed while re-sealed",
        total.resealed, total.accounts, total.device_items, total.current, total.unopened, total.changed
    ))?;
    Ok(if total.unopened == 0 && total.changed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Passes of `keys rotate` over what renewals changed while it re-sealed.
const ROTATION_PASSES: usize = 3;

/// `rooms rehome`: moves an archived room to another homeserver, audited.
pub async fn rooms_rehome(config: &Config, args: RehomeArgs) -> Result<ExitCode> {
    let RehomeArgs { org, room, homeserver, account, actor } = args;
    let homeserver = match (homeserver, account) {
        (Some(homeserver), None) => homeserver,
        (None, Some(account)) => {
            // The account's homeserver, found as everywhere else (server discovery, the
            // identity server for an e-mail address), under the outbound policy.
            let connector = argus_matrix::Connector::new(services::connector_config(config))
                .context("the Matrix connector")?;
            let found = match account.parse::<argus_matrix::discovery::Account>() {
                Ok(account) => connector.resolve_account(&account).await,
                Err(e) => Err(e),
            };
            match found {
                Ok(resolved) => resolved.homeserver,
                Err(e) => {
                    eprintln!("the account's homeserver was not found [{}]: {e}", e.code());
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        _ => bail!("give exactly one of --homeserver and --account"),
    };
    let store = services::open_store(config).await?;
    let (room_id, org_id) = (room.clone(), org.clone());
    let moved =
        tokio::task::spawn_blocking(move || store.rehome_room(&actor, &org_id, &room_id, &homeserver))
            .await?;
    match moved {
        Ok(Some(record)) => {
            print_out(&format!(
                "{room} of {org} moved from {} to {}; audit record {}:{}\n\
                 watches of the room keep their homeserver until renewed with the new one \
                 (until then their runs are refused and they are paused)",
                record.entry.rehomed_from.as_deref().unwrap_or("?"),
                record.entry.homeserver_url,
                record.entry.org,
                record.seq,
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Ok(None) => {
            eprintln!("no room {room} is archived for {org}; nothing changed");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            eprintln!("the room was not moved [{}]: {}", e.code(), e.public_message());
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `audit verify`: recomputes every organisation's chain; fails if a link or a head is wrong.
pub async fn audit_verify(
    config: &Config,
    expected: Vec<ChainHead>,
    unkeyed_until: Vec<(OrgId, i64)>,
) -> Result<ExitCode> {
    let store = services::open_store(config).await?;
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

/// `argus-tchap media rescan`: every held file scanned again.
pub async fn media_rescan(config: &Config) -> Result<ExitCode> {
    let store = services::open_store(config).await?;
    if config.media.scanner().is_none() {
        eprintln!("no scanner is configured ([media] clamd with scan = \"clamd\"): nothing can be rescanned");
        return Ok(ExitCode::FAILURE);
    }
    let media = services::open_media(config)?;
    match media.rescan_all(&store).await {
        Ok(report) => {
            print_out(&format!(
                "{} files scanned again; {} could not be scanned (they keep their earlier verdict)",
                report.scanned, report.scan_failures
            ))?;
            Ok(if report.scan_failures == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Err(e) => {
            eprintln!("the rescan stopped [{}]: {}", e.code(), e.public_message());
            Ok(ExitCode::FAILURE)
        }
    }
}
