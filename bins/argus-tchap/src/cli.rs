//! The command line: what each command and option means (parsed by clap in `main.rs`).

use std::{path::PathBuf, time::Duration};

use argus_domain::{AccessToken, ActorId, Classification, HomeserverUrl, OrgId, RoomId};
use argus_server::config::DEFAULT_CONFIG_FILE;
use argus_store::ChainHead;
use clap::{Parser, Subcommand};
use time::OffsetDateTime;

/// Argus Tchap connector: pulls Matrix (Tchap) rooms into durable storage per organisation and
/// classification, and serves them through a GraphQL API.
#[derive(Debug, Parser)]
#[command(name = "argus-tchap", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file (absent file = defaults; `ARGUS_*` variables override it).
    #[arg(long, global = true, env = "ARGUS_CONFIG", default_value = DEFAULT_CONFIG_FILE)]
    pub config: PathBuf,
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    pub log_json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
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
    /// The keys that seal watched rooms' Matrix tokens.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Archived rooms.
    #[command(subcommand)]
    Rooms(RoomsCommand),
    /// The files of archived messages.
    #[command(subcommand)]
    Media(MediaCommand),
    /// Write a disclosure package of one room (a BagIt bag, signed, with the transparency
    /// log's proofs) for an organisation, limited to what a viewer of that organisation at the
    /// given clearance may see; prints the package id, what it holds and its checkpoint's size.
    Disclose(DiscloseArgs),
    /// Verify a disclosure package offline against the public keys given (never those in the
    /// package): the bag's manifests, the minisign signature, the checkpoint's signature, every
    /// inclusion proof, every version against its run's eventsRoot, the transcript against
    /// messages.jsonl. Exits 0 with a summary when it verifies, non-zero with the reason
    /// otherwise.
    VerifyPackage(VerifyPackageArgs),
}

/// `argus-tchap disclose`.
#[derive(Debug, clap::Args)]
pub struct DiscloseArgs {
    /// The organisation the room is archived for.
    #[arg(long)]
    pub org: OrgId,
    /// Matrix room id, e.g. !abc:agent.tchap.gouv.fr
    #[arg(long)]
    pub room: RoomId,
    /// Only what was sent at or after this time (RFC 3339, e.g. 2026-01-31T00:00:00Z).
    #[arg(long, value_parser = rfc3339)]
    pub from: Option<OffsetDateTime>,
    /// Only what was sent at or before this time (RFC 3339).
    #[arg(long, value_parser = rfc3339)]
    pub to: Option<OffsetDateTime>,
    /// The clearance the package is limited to (contract name or French marking).
    #[arg(long, default_value = "TOP_SECRET")]
    pub clearance: Classification,
    /// Who discloses (kept in the access journal and the package).
    #[arg(long, default_value = "operator")]
    pub actor: ActorId,
    /// Also package the files the scanner found infected.
    #[arg(long)]
    pub include_quarantined: bool,
    /// Also package the content messages had when captured, held after a later redaction
    /// (legal hold), as a holder of `tchap:redacted` reads it.
    #[arg(long)]
    pub include_held: bool,
    /// The folder the bag is written in (must not exist, or be empty).
    #[arg(long)]
    pub out: PathBuf,
}

/// `argus-tchap verify-package`.
#[derive(Debug, clap::Args)]
pub struct VerifyPackageArgs {
    /// The package's folder (the bag).
    pub dir: PathBuf,
    /// The transparency log's signed-note verifier key (`name+hexid+base64`, from `keys public`).
    #[arg(long)]
    pub log_key: String,
    /// The packages' minisign public key (its base64 line, from `keys public`).
    #[arg(long)]
    pub package_key: String,
}

/// Parses an RFC 3339 time.
pub fn rfc3339(value: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("not an RFC 3339 time: {e}"))
}

/// `argus-tchap media …`.
#[derive(Debug, Subcommand)]
pub enum MediaCommand {
    /// Scan every held file again with the configured scanner (`[media] clamd`), after its
    /// signatures were updated: each file's verdict, engine and signature version are replaced;
    /// a file the scanner cannot judge keeps its earlier verdict. Exits non-zero when any could
    /// not be scanned.
    Rescan,
}

/// `argus-tchap rooms …`.
#[derive(Debug, Subcommand)]
pub enum RoomsCommand {
    /// Move an archived room to another homeserver (a real migration). A stored room answers
    /// only to the homeserver it was archived from: ingestions from any other are refused with
    /// HOMESERVER_MISMATCH. Afterwards it answers to the new one only; its next ingestion reads
    /// from the new server's live end. The move is audited, naming both homeservers. Watches of
    /// the room keep their homeserver (and token) until renewed.
    Rehome(RehomeArgs),
}

/// `argus-tchap rooms rehome`.
#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("target").required(true).multiple(false).args(["homeserver", "account"]))]
pub struct RehomeArgs {
    /// Organisation the room is archived for.
    #[arg(long)]
    pub org: OrgId,
    /// Matrix room id, e.g. !abc:agent.tchap.gouv.fr
    #[arg(long)]
    pub room: RoomId,
    /// Base URL of the homeserver the room answers to from now on (or `--account`).
    #[arg(long)]
    pub homeserver: Option<HomeserverUrl>,
    /// An account of the homeserver the room answers to from now on, instead of
    /// `--homeserver`: a Matrix user id, found by server discovery, or an e-mail address,
    /// looked up on `[matrix] identity_server` first (the account whose token will read the
    /// room). No token is asked: the homeserver found is the move's target, nothing more.
    #[arg(long)]
    pub account: Option<String>,
    /// Who moves it (kept in the audit trail).
    #[arg(long, default_value = "operator")]
    pub actor: ActorId,
}

/// `argus-tchap keys …`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Re-seal every watched room's token under the current key (`watch.token_key` or
    /// `watch.token_key_file`), opening each with the current or a previous key
    /// (`watch.previous_token_key_files`); afterwards the previous keys can be removed.
    Rotate,
    /// Print the public keys to hand to an oversight body: the transparency log's signed-note
    /// verifier key (`log: name+hexid+base64`, what checkpoints verify against) and the
    /// disclosure packages' minisign public key (`package: base64`, what `minisign -P` takes),
    /// one per line; the keys are generated in the data directory on first use.
    Public(PublicKeyArgs),
}

/// `argus-tchap keys public`.
#[derive(Debug, clap::Args)]
pub struct PublicKeyArgs {
    /// Print the log's verifier key alone, unlabelled.
    #[arg(long, conflicts_with = "package")]
    pub log: bool,
    /// Print the packages' minisign public key alone, unlabelled.
    #[arg(long)]
    pub package: bool,
}

/// `argus-tchap ingest`.
#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("server").required(true).multiple(false).args(["homeserver", "account"]))]
pub struct IngestArgs {
    /// Base URL of the homeserver, e.g. `https://matrix.agent.tchap.gouv.fr` (or `--account`).
    #[arg(long)]
    pub homeserver: Option<String>,
    /// The account instead of the homeserver: a Matrix user id
    /// (`@jean.dupont-finances.gouv.fr:agent.finances.tchap.gouv.fr`), found by server
    /// discovery, or an e-mail address, looked up on `[matrix] identity_server` first. The token
    /// must belong to it.
    #[arg(long)]
    pub account: Option<String>,
    /// Matrix room id, e.g. !abc:agent.tchap.gouv.fr
    #[arg(long, required_unless_present = "all_joined", conflicts_with = "all_joined")]
    pub room: Option<String>,
    /// Ingest every room the token's account has joined (`GET /joined_rooms`), one after
    /// another, with a progress bar per room and a summary table.
    #[arg(long, conflicts_with_all = ["backfill", "follow_upgrades"])]
    pub all_joined: bool,
    /// Classification of the room and its messages (contract name or French marking).
    #[arg(long)]
    pub classification: Classification,
    /// Organisation the room is stored for.
    #[arg(long)]
    pub org: OrgId,
    /// Who runs the ingestion (kept in the audit trail).
    #[arg(long, default_value = "operator")]
    pub actor: ActorId,
    /// The operator's clearance (default: the classification asked for).
    #[arg(long)]
    pub clearance: Option<Classification>,
    /// Upper bound on message events pulled.
    #[arg(long)]
    pub max_messages: Option<u32>,
    /// Matrix access token; `-` reads it from standard input. Prefer the environment variable
    /// to the command line, which other local users can see.
    #[arg(long, env = "MATRIX_ACCESS_TOKEN", hide_env_values = true, value_parser = access_token)]
    pub access_token: AccessToken,
    /// The account's recovery key (Element security key, or legacy key-backup recovery key):
    /// encrypted history is decrypted from the account's key backup. Used for this run only;
    /// prefer the environment variable to the command line.
    #[arg(long, env = "MATRIX_RECOVERY_KEY", hide_env_values = true, value_parser = secret_value)]
    pub recovery_key: Option<argus_domain::Secret>,
    /// The account's refresh token: the access token is renewed before it expires or when the
    /// homeserver refuses it (in memory, for this run). Prefer the environment variable.
    #[arg(long, env = "MATRIX_REFRESH_TOKEN", hide_env_values = true, value_parser = secret_value)]
    pub refresh_token: Option<argus_domain::Secret>,
    /// The OAuth 2.0 client id the tokens were issued to (a next-generation auth server's).
    #[arg(long)]
    pub oauth_client_id: Option<String>,
    /// Read only older history, from where the room's last backwards read stopped (a
    /// backfill), instead of what is new since the last run followed by older history.
    #[arg(long)]
    pub backfill: bool,
    /// After the room, ingest the rooms that replaced it (room upgrades), one after another.
    #[arg(long)]
    pub follow_upgrades: bool,
    /// Capture only what was sent at or after this time (RFC 3339, e.g.
    /// `2026-01-01T00:00:00Z`): older history stops there (the homeserver's
    /// `timestamp_to_event`), and the room's history is then complete since that date.
    #[arg(long, value_parser = rfc3339)]
    pub since: Option<OffsetDateTime>,
}

/// A secret as given (`Debug` of the arguments shows it as `[redacted]`).
pub fn secret_value(value: &str) -> Result<argus_domain::Secret, std::convert::Infallible> {
    Ok(argus_domain::Secret::new(value))
}

/// The token as given (`Debug` of the arguments shows it as `[redacted]`).
pub fn access_token(value: &str) -> Result<AccessToken, std::convert::Infallible> {
    Ok(AccessToken::new(value))
}

/// `argus-tchap audit …`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
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
    /// Print the organisation's current signed checkpoint of its transparency log (a C2SP
    /// signed note: origin `<log name>/<org>`, size, base64 root, signature), to hand to the
    /// oversight body on a schedule.
    Checkpoint {
        /// The organisation.
        #[arg(long)]
        org: OrgId,
    },
    /// Print the current signed checkpoint, a blank line, then the RFC 9162 consistency proof
    /// from an earlier checkpoint's size to it (base64 hashes, one per line).
    Consistency {
        /// The organisation.
        #[arg(long)]
        org: OrgId,
        /// The size of the earlier checkpoint.
        #[arg(long)]
        old_size: u64,
    },
}

/// `argus-tchap token`.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// Obtain the token from the identity provider configured in `[oauth]` with the OAuth 2.0
    /// client-credentials grant instead of minting one; the provider decides the claims. Only
    /// `--scope`, when given, is sent.
    #[arg(long, conflicts_with_all = ["sub", "org", "clearance", "ttl"])]
    pub client_credentials: bool,
    /// The subject (actor).
    #[arg(long, default_value = "dev")]
    pub sub: ActorId,
    /// The organisation.
    #[arg(long, required_unless_present = "client_credentials")]
    pub org: Option<OrgId>,
    /// The clearance (contract name or French marking).
    #[arg(long, required_unless_present = "client_credentials")]
    pub clearance: Option<Classification>,
    /// Scopes, space- or comma-separated, repeatable (default: all three for a development
    /// token, the configured `oauth.scopes` with `--client-credentials`).
    #[arg(long)]
    pub scope: Vec<String>,
    /// Lifetime, e.g. 3600, 90s, 30m, 12h, 7d.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub ttl: Duration,
}

/// `argus-tchap fusion …`.
#[derive(Debug, Subcommand)]
pub enum FusionCommand {
    /// Deliver pending outbox rows to the configured sinks.
    Relay {
        /// Drain the outbox once and exit (the only mode outside `serve`).
        #[arg(long)]
        once: bool,
    },
    /// Show pending, delivered and parked rows.
    Status,
}

/// Parses a duration: `3600`, `90s`, `30m`, `12h`, `7d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
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

/// Parses `org:seq`.
pub fn org_seq(value: &str) -> Result<(OrgId, i64), String> {
    let (org, seq) = value.rsplit_once(':').ok_or("expected ORG:SEQ")?;
    let org = org.parse::<OrgId>().map_err(|e| e.to_string())?;
    let seq = seq.parse::<i64>().ok().filter(|s| *s >= 0).ok_or("SEQ must be a whole number")?;
    Ok((org, seq))
}
