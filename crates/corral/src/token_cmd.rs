//! `corral token`: lists, creates and revokes a farm's tokens, on its database directly
//! (the orchestrator may be running or not).

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use corral_orchestrator::store::{SqlStore, Store, TokenKind};
use corral_orchestrator::DatabaseUrl;
use std::path::PathBuf;
use std::process::ExitCode;

pub const EXAMPLES: &str = "\
Examples:
  corral token list --data corral-data/orchestrator
  corral token create client --name laptop --data corral-data/orchestrator
  corral token create join --database postgres://corral:secret@db/corral
  corral token revoke 3 --data corral-data/orchestrator";

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
    /// The orchestrator's data folder (its SQLite database is corral.db in it).
    #[arg(
        long,
        env = "CORRAL_DATA",
        default_value = "corral-data/orchestrator",
        global = true
    )]
    data: PathBuf,
    /// The orchestrator's database, when not the SQLite file in --data.
    #[arg(long, env = "CORRAL_DATABASE", value_name = "URL", value_parser = DatabaseUrl::parse, global = true)]
    database: Option<DatabaseUrl>,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Every token: id, kind, name, when made and revoked (never the token itself).
    List,
    /// Make a token and print it (only now: the farm keeps its hash).
    Create {
        /// `client` (the whole API), `join` (nodes joining) or `node`.
        kind: TokenKind,
        /// A label to tell tokens apart.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// Revoke a token by its id (from `corral token list`): calls with it get 403.
    Revoke { id: i64 },
}

pub async fn run(args: TokenArgs) -> anyhow::Result<ExitCode> {
    let url = match args.database {
        Some(url) => url,
        None => {
            if !args.data.is_dir() {
                bail!(
                    "no orchestrator data folder `{}` (--data or --database says where the farm's database is)",
                    args.data.display()
                );
            }
            DatabaseUrl::in_data_dir(&args.data)
        }
    };
    let store = SqlStore::open(&url)
        .await
        .with_context(|| format!("cannot open the database {}", url.redacted()))?;
    match args.command {
        TokenCommand::List => {
            println!(
                "{:>4}  {:<6}  {:<20}  {:<25}  REVOKED",
                "ID", "KIND", "NAME", "CREATED"
            );
            for t in store.tokens().await? {
                let revoked = t
                    .revoked
                    .map(|r| r.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                    .unwrap_or_else(|| "-".into());
                println!(
                    "{:>4}  {:<6}  {:<20}  {:<25}  {revoked}",
                    t.id,
                    t.kind.name(),
                    crate::table::for_terminal(&t.name),
                    t.created.format("%Y-%m-%d %H:%M:%S UTC")
                );
            }
        }
        TokenCommand::Create { kind, name } => {
            let (token, record) =
                corral_orchestrator::auth::create_token(store.as_ref(), kind, &name).await?;
            eprintln!(
                "{} token {} made; it is shown only now:",
                kind.name(),
                record.id
            );
            println!("{token}");
        }
        TokenCommand::Revoke { id } => {
            if !store.revoke_token(id).await? {
                bail!("no token {id} (see `corral token list`)");
            }
            eprintln!("token {id} revoked");
        }
    }
    Ok(ExitCode::SUCCESS)
}
