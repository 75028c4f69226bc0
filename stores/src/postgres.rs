//! A PostgreSQL connection for the fleet's shared stores: connected lazily, replaced when
//! it breaks, every call bounded so a database that stops answering is an error, not a
//! hang.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex, MutexGuard};
use tokio_postgres::{Client, NoTls};

/// How long one store operation may take before the database counts as unavailable.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Pg {
    config: tokio_postgres::Config,
    client: Mutex<Option<Client>>,
    /// Statements creating the store's tables; run (idempotently) on connecting until they
    /// succeed once, under an advisory lock, since several hosts may start at once.
    schema: &'static str,
    /// The schema is in place: later connections skip it. A database that went read-only
    /// refuses even `CREATE TABLE IF NOT EXISTS`, and reads must go on working there.
    schema_ready: AtomicBool,
}

/// Key of the advisory lock that serialises schema set-up across hosts.
const SCHEMA_LOCK: i64 = 0x1a6f_1ee7_0001;

impl Pg {
    /// Parses `url` (a `postgres://` URL or `key=value` string) and checks the database is
    /// reachable and its schema in place.
    pub async fn open(url: &str, schema: &'static str) -> Result<Self, String> {
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e| format!("PostgreSQL URL: {e}"))?;
        config.connect_timeout(Duration::from_secs(3));
        config.application_name("imgfleet");
        // The schema's `IF NOT EXISTS` notices on every connection are not news.
        config.options("-c client_min_messages=warning");
        let pg = Self {
            config,
            client: Mutex::new(None),
            schema,
            schema_ready: AtomicBool::new(false),
        };
        drop(pg.client().await?);
        Ok(pg)
    }

    /// The connection, (re)connected if there is none or it broke.
    pub async fn client(&self) -> Result<MutexGuard<'_, Option<Client>>, String> {
        let mut guard = self.client.lock().await;
        if guard.as_ref().is_none_or(Client::is_closed) {
            *guard = None;
            let (mut client, connection) =
                tokio::time::timeout(CALL_TIMEOUT, self.config.connect(NoTls))
                    .await
                    .map_err(|_| "no answer from PostgreSQL".to_string())?
                    .map_err(|e| e.to_string())?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!(error = %e, "PostgreSQL connection ended");
                }
            });
            if !self.schema_ready.load(Ordering::Acquire) && !read_only(&client).await? {
                let tx = client.transaction().await.map_err(|e| e.to_string())?;
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
                    .await
                    .map_err(|e| e.to_string())?;
                tx.batch_execute(self.schema)
                    .await
                    .map_err(|e| e.to_string())?;
                tx.commit().await.map_err(|e| e.to_string())?;
                self.schema_ready.store(true, Ordering::Release);
            }
            *guard = Some(client);
        }
        Ok(guard)
    }
}

/// Whether the server takes no writes (a standby, or `default_transaction_read_only`): its
/// schema cannot be checked by creating it, and need not be for reads.
async fn read_only(client: &Client) -> Result<bool, String> {
    let row = client
        .query_one("SHOW transaction_read_only", &[])
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.get::<_, &str>(0) == "on")
}

/// Runs `call` on the connection within [`CALL_TIMEOUT`]; a broken connection is dropped so
/// the next call reconnects. Errors become `E` through `unavailable` unless `classify` claims
/// them first (a conflict, a race).
#[macro_export]
macro_rules! pg_call {
    ($pg:expr, $unavailable:expr, |$client:ident| $body:expr) => {{
        let pg: &$crate::postgres::Pg = $pg;
        let unavailable = $unavailable;
        match pg.client().await {
            Err(e) => Err(unavailable(e)),
            Ok(mut guard) => {
                let $client = guard.as_mut().expect("connected");
                match tokio::time::timeout($crate::postgres::CALL_TIMEOUT, async { $body }).await {
                    Ok(result) => {
                        if $client.is_closed() {
                            *guard = None;
                        }
                        result
                    }
                    Err(_) => {
                        // The connection may be stuck mid-statement: start afresh.
                        *guard = None;
                        Err(unavailable("no answer from PostgreSQL".to_string()))
                    }
                }
            }
        }
    }};
}
