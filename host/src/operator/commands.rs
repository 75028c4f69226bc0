//! The operator's commands (`imgfleet tenants …`, `imgfleet keys …`, `origins`, `url-keys`,
//! `url sign`, `admin-token`): the management plane from a shell, straight on the identity
//! store.
//! Output is JSON, for scripts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use imgfleet_auth::{Quota, Scope};

use crate::operator::cli::{
    ExportFormat, KeyAction, OriginAction, PurgeAction, StoreArgs, TenantAction, UrlAction,
    UrlKeyAction, UsageAction,
};
use imgfleet_stores::clock::now_ms;
use imgfleet_stores::identity::admin::{
    self as manage, NewOrigin, PublicKey, create_key, new_admin_token,
};
use imgfleet_stores::identity::dynamodb::DynamoIdentityStore;
use imgfleet_stores::identity::postgres::PostgresIdentityStore;
use imgfleet_stores::identity::sqlite::SqliteIdentityStore;
use imgfleet_stores::identity::{IdentityStore, OriginSource};
use imgfleet_stores::usage::UsageStore;
use imgfleet_stores::usage::dynamodb::DynamoUsageStore;
use imgfleet_stores::usage::postgres::PostgresUsageStore;
use imgfleet_stores::usage::sqlite::SqliteUsageStore;

pub fn identity_path(data_dir: &Path) -> PathBuf {
    data_dir.join("identity.sqlite")
}

/// Which database holds the shared stores, from `--database-url`.
enum Database<'a> {
    Local,
    Postgres(&'a str),
    Dynamo(imgfleet_stores::dynamodb::Location),
}

impl<'a> Database<'a> {
    fn from_url(url: Option<&'a str>) -> anyhow::Result<Self> {
        Ok(match url {
            None => Self::Local,
            Some(url) => match imgfleet_stores::dynamodb::Location::parse(url) {
                Some(location) => Self::Dynamo(location.map_err(anyhow::Error::msg)?),
                None => Self::Postgres(url),
            },
        })
    }
}

/// The DynamoDB table `name`, created (on-demand billing) when missing.
async fn dynamo_table(
    location: &imgfleet_stores::dynamodb::Location,
    name: String,
) -> anyhow::Result<(aws_sdk_dynamodb::Client, String)> {
    let client = location.client().await;
    imgfleet_stores::dynamodb::ensure_table(&client, &name)
        .await
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("opening the DynamoDB table {name}"))?;
    Ok((client, name))
}

/// The identity store: the fleet's PostgreSQL database or DynamoDB tables when given, else
/// the data directory's SQLite file.
pub async fn open_identity(
    data_dir: &Path,
    database_url: Option<&str>,
) -> anyhow::Result<Arc<dyn IdentityStore>> {
    Ok(match Database::from_url(database_url)? {
        Database::Postgres(url) => Arc::new(
            PostgresIdentityStore::open(url)
                .await
                .context("opening the identity store in PostgreSQL")?,
        ),
        Database::Dynamo(location) => {
            let (client, table) = dynamo_table(&location, location.identity_table()).await?;
            Arc::new(DynamoIdentityStore::new(client, table))
        }
        Database::Local => {
            std::fs::create_dir_all(data_dir)
                .with_context(|| format!("creating {}", data_dir.display()))?;
            Arc::new(
                SqliteIdentityStore::open(&identity_path(data_dir)).with_context(|| {
                    format!(
                        "opening the identity store {}",
                        identity_path(data_dir).display()
                    )
                })?,
            )
        }
    })
}

/// The usage store, chosen as [`open_identity`] chooses.
pub async fn open_usage(
    data_dir: &Path,
    database_url: Option<&str>,
) -> anyhow::Result<Arc<dyn UsageStore>> {
    Ok(match Database::from_url(database_url)? {
        Database::Postgres(url) => Arc::new(
            PostgresUsageStore::open(url)
                .await
                .context("opening the usage store in PostgreSQL")?,
        ),
        Database::Dynamo(location) => {
            let (client, table) = dynamo_table(&location, location.usage_table()).await?;
            Arc::new(DynamoUsageStore::new(client, table))
        }
        Database::Local => {
            std::fs::create_dir_all(data_dir)
                .with_context(|| format!("creating {}", data_dir.display()))?;
            Arc::new(
                SqliteUsageStore::open(&usage_path(data_dir)).with_context(|| {
                    format!("opening the usage store {}", usage_path(data_dir).display())
                })?,
            )
        }
    })
}

/// Whether `--database-url` names PostgreSQL (which also holds the fleet's shared job store).
pub fn is_postgres(database_url: Option<&str>) -> bool {
    matches!(Database::from_url(database_url), Ok(Database::Postgres(_)))
}

async fn open(store: &StoreArgs) -> anyhow::Result<Arc<dyn IdentityStore>> {
    open_identity(&store.data_dir, store.database_url.as_deref()).await
}

fn print(value: impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}

pub async fn tenants(store: &StoreArgs, action: TenantAction) -> anyhow::Result<()> {
    let s = open(store).await?;
    match action {
        TenantAction::Create { id } => print(s.create_tenant(&id).await?),
        TenantAction::List => print(s.tenants().await?),
        TenantAction::Disable { id } => print(s.set_disabled(&id, true).await?),
        TenantAction::Enable { id } => print(s.set_disabled(&id, false).await?),
        TenantAction::Quota {
            id,
            requests_per_second,
            monthly_bytes,
            monthly_pixels,
        } => print(
            s.set_quota(
                &id,
                Quota {
                    requests_per_second,
                    monthly_bytes,
                    monthly_pixels,
                },
            )
            .await?,
        ),
    }
}

pub async fn keys(store: &StoreArgs, action: KeyAction) -> anyhow::Result<()> {
    let s = open(store).await?;
    match action {
        KeyAction::Create {
            tenant,
            scopes,
            label,
        } => {
            let scopes = if scopes.is_empty() {
                None
            } else {
                Some(
                    scopes
                        .iter()
                        .map(|x| {
                            Scope::parse(x).with_context(|| {
                                format!("unknown scope `{x}` (resize, jobs or usage)")
                            })
                        })
                        .collect::<anyhow::Result<Vec<_>>>()?,
                )
            };
            print(create_key(s.as_ref(), &tenant, scopes, label).await?)
        }
        KeyAction::List { tenant } => print(
            s.keys(&tenant)
                .await?
                .into_iter()
                .map(PublicKey::from)
                .collect::<Vec<_>>(),
        ),
        KeyAction::Revoke { key_id } => print(PublicKey::from(s.revoke_key(&key_id).await?)),
    }
}

/// The admin token kept in the data directory, created (mode 0600) on first use.
pub fn admin_token_file(data_dir: &Path) -> anyhow::Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join("admin.token");
    if let Ok(token) = std::fs::read_to_string(&path) {
        let token = token.trim().to_string();
        anyhow::ensure!(!token.is_empty(), "{} is empty", path.display());
        return Ok(token);
    }
    std::fs::create_dir_all(data_dir)?;
    let token = new_admin_token();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(f, "{token}")?;
    f.sync_all()?;
    Ok(token)
}

pub fn usage_path(data_dir: &Path) -> PathBuf {
    data_dir.join("usage.sqlite")
}

pub async fn usage(store: &StoreArgs, action: UsageAction) -> anyhow::Result<()> {
    let s = open_usage(&store.data_dir, store.database_url.as_deref()).await?;
    match action {
        UsageAction::Export {
            tenant,
            from,
            to,
            format,
        } => {
            let records = s
                .records(
                    &tenant,
                    from.unwrap_or(0),
                    to.unwrap_or(imgfleet_stores::clock::now_ms() + 1),
                )
                .await?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            use std::io::Write;
            match format {
                ExportFormat::Jsonl => {
                    for r in &records {
                        serde_json::to_writer(&mut out, r)?;
                        writeln!(out)?;
                    }
                }
                ExportFormat::Csv => {
                    writeln!(
                        out,
                        "id,request_id,tenant,key_id,at_ms,route,status,in_bytes,in_format,in_width,in_height,out_bytes,out_format,out_width,out_height,cpu_ns,wall_ns,queue_ns,origin_bytes,not_modified,cache"
                    )?;
                    for r in &records {
                        // Every field is an id, a number or a format name: nothing to quote.
                        writeln!(
                            out,
                            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                            r.id,
                            r.request_id,
                            r.tenant,
                            r.key_id,
                            r.at_ms,
                            r.route,
                            r.status,
                            r.input.bytes,
                            r.input.format.as_deref().unwrap_or(""),
                            r.input.width,
                            r.input.height,
                            r.output.bytes,
                            r.output.format.as_deref().unwrap_or(""),
                            r.output.width,
                            r.output.height,
                            r.cpu_ns,
                            r.wall_ns,
                            r.queue_ns,
                            r.origin_bytes,
                            r.not_modified,
                            r.cache.map_or("", |c| c.as_str()),
                        )?;
                    }
                }
            }
            out.flush()?;
            Ok(())
        }
        UsageAction::Compact { older_than_days } => {
            let before =
                imgfleet_stores::clock::now_ms().saturating_sub(older_than_days * 86_400_000);
            print(serde_json::json!({ "packed": s.compact(before).await? }))
        }
    }
}

pub async fn origins(store: &StoreArgs, action: OriginAction) -> anyhow::Result<()> {
    let s = open(store).await?;
    match action {
        OriginAction::Add {
            tenant,
            name,
            http_base_url,
            allow_private,
            s3_bucket,
            s3_prefix,
            s3_region,
            s3_endpoint,
            max_age_secs,
            immutable,
        } => {
            let source = match (http_base_url, s3_bucket) {
                (Some(base_url), None) => OriginSource::Http {
                    base_url,
                    allow_private,
                },
                (None, Some(bucket)) => OriginSource::S3 {
                    bucket,
                    prefix: s3_prefix,
                    region: s3_region,
                    endpoint: s3_endpoint,
                },
                _ => anyhow::bail!("give --http-base-url or --s3-bucket"),
            };
            let new = NewOrigin {
                name,
                source,
                max_age_secs,
                immutable,
            };
            print(manage::add_origin(s.as_ref(), &tenant, new).await?)
        }
        OriginAction::List { tenant } => print(manage::origins(s.as_ref(), &tenant).await?),
        OriginAction::Remove { tenant, name } => {
            print(manage::remove_origin(s.as_ref(), &tenant, &name).await?)
        }
    }
}

pub async fn purges(store: &StoreArgs, action: PurgeAction) -> anyhow::Result<()> {
    let s = open(store).await?;
    match action {
        PurgeAction::Add {
            tenant,
            origin,
            path,
            prefix,
        } => {
            let new = manage::NewPurge {
                origin,
                path,
                prefix,
            };
            print(manage::purge(s.as_ref(), &tenant, new).await?)
        }
        PurgeAction::List { tenant } => print(manage::purges(s.as_ref(), &tenant).await?),
    }
}

pub async fn url_keys(store: &StoreArgs, action: UrlKeyAction) -> anyhow::Result<()> {
    let s = open(store).await?;
    match action {
        UrlKeyAction::Create { tenant, label } => {
            print(manage::create_url_key(s.as_ref(), &tenant, label).await?)
        }
        UrlKeyAction::List { tenant } => print(manage::url_keys(s.as_ref(), &tenant).await?),
        UrlKeyAction::Revoke { tenant, key_id } => {
            print(manage::revoke_url_key(s.as_ref(), &tenant, &key_id).await?)
        }
    }
}

pub fn url(action: UrlAction) -> anyhow::Result<()> {
    let UrlAction::Sign {
        key,
        tenant,
        origin,
        query,
        expires_in,
        base,
        path,
    } = action;
    let expires = expires_in.map(|secs| now_ms() / 1000 + secs);
    let signed = crate::delivery::url::sign_url(&key, &tenant, &origin, &query, expires, &path)?;
    println!("{}{signed}", base.trim_end_matches('/'));
    Ok(())
}
