//! The run queue shared by replicas, in PostgreSQL (`DATABASE_URL`).
//!
//! One table, `sluice_runs` (`migrations/`), holds each run's record (as the API reports it),
//! its sealed request, and its claim: the replica executing it, a **lease** that replica renews
//! by heartbeat, and a **fencing token** from a sequence, so tokens only grow. The rules:
//! - one active run per connection: a partial unique index over queued and running rows;
//! - idempotency keys: a unique column;
//! - claiming: `SELECT … FOR UPDATE SKIP LOCKED` of the oldest queued rows, up to the replica's
//!   free slots (PostgreSQL docs, "The Locking Clause"); `NOTIFY sluice_queue` wakes idle
//!   replicas when a run is queued, `NOTIFY sluice_cancel` carries a cancel to its replica;
//! - a lease that ran out (the replica died, stalled or lost the database) is reaped by any
//!   replica: the run is queued again, or, after `max_attempts` claims, fails `interrupted`;
//! - every write about a claimed run names its token, so a replica that lost its claim can
//!   neither renew, end nor commit it ([`QueueFence`] guards the `_state.json` write).
//!
//! Migrations run at start under sqlx's advisory lock, so replicas starting together are safe.

use std::borrow::Cow;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sqlx::Row;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use sqlx::types::Json;

use crate::records::{RunRecord, RunStatus};

/// The database is unreachable or answered an error (never contains the URL's password).
#[derive(Debug, thiserror::Error)]
#[error("the run database is unavailable: {0}")]
pub struct DbError(String);

impl From<sqlx::Error> for DbError {
    fn from(e: sqlx::Error) -> Self {
        // sqlx's errors name the server and the failing statement, never the password.
        Self(e.to_string())
    }
}

/// A record as PostgreSQL `jsonb` takes it: `jsonb` refuses the NUL character (`\u0000`) in any
/// string or key (PostgreSQL docs, "JSON Types"), and a plugin's error message or a stream name
/// may hold one; it becomes U+FFFD instead of failing the write.
fn jsonb_safe<T: serde::Serialize>(value: &T) -> Json<Value> {
    fn clean(v: Value) -> Value {
        match v {
            Value::String(s) if s.contains('\0') => Value::String(s.replace('\0', "\u{FFFD}")),
            Value::Array(a) => Value::Array(a.into_iter().map(clean).collect()),
            Value::Object(o) => Value::Object(
                o.into_iter()
                    .map(|(k, v)| (k.replace('\0', "\u{FFFD}"), clean(v)))
                    .collect(),
            ),
            other => other,
        }
    }
    Json(clean(serde_json::to_value(value).unwrap_or_default()))
}

/// The run record a row holds, or `None` (logged) when it does not read as a run of that id:
/// written by another version, or by hand.
fn readable(run_id: &str, value: Value) -> Option<RunRecord> {
    match serde_json::from_value::<RunRecord>(value) {
        Ok(r) if r.run_id == run_id => Some(r),
        Ok(_) | Err(_) => {
            tracing::warn!(run_id = %run_id, "skipping an unreadable run record");
            None
        }
    }
}

/// The value the cluster recorded for a setting, recording `value` if none was. Replicas
/// starting together race here: an insert that waited for another's conflicting row sees no row
/// in its statement's snapshot, so the read is repeated (the next statement sees it).
async fn recorded_setting(pool: &PgPool, name: &str, value: &str) -> Result<String, DbError> {
    for _ in 0..5 {
        let recorded: Option<String> = sqlx::query_scalar(
            "WITH ins AS (INSERT INTO sluice_settings (name, value) VALUES ($1, $2)
                ON CONFLICT (name) DO NOTHING RETURNING value)
             SELECT value FROM ins UNION ALL
             SELECT value FROM sluice_settings WHERE name = $1 LIMIT 1",
        )
        .bind(name)
        .bind(value)
        .fetch_optional(pool)
        .await?;
        if let Some(v) = recorded {
            return Ok(v);
        }
    }
    Err(DbError(format!("cannot record the setting {name}")))
}

/// The most runs `GET runs` answers in replicated mode (the newest): a list is held in memory
/// whole, and the table keeps every run (found from outside: 50,000 rows took 63 MB per call).
pub const LIST_LIMIT: usize = 1000;

/// Channels of `LISTEN`/`NOTIFY`.
pub const QUEUE_CHANNEL: &str = "sluice_queue";
pub const CANCEL_CHANNEL: &str = "sluice_cancel";

/// The migrations, embedded in the binary (the image has no source tree).
#[derive(Debug)]
struct Embedded;

impl MigrationSource<'static> for Embedded {
    fn resolve(
        self,
    ) -> futures::future::BoxFuture<'static, Result<Vec<Migration>, sqlx::error::BoxDynError>> {
        Box::pin(async {
            Ok(vec![
                Migration::new(
                    1,
                    Cow::Borrowed("runs"),
                    MigrationType::Simple,
                    Cow::Borrowed(include_str!("migrations/0001_runs.sql")),
                    false,
                ),
                Migration::new(
                    2,
                    Cow::Borrowed("settings"),
                    MigrationType::Simple,
                    Cow::Borrowed(include_str!("migrations/0002_settings.sql")),
                    false,
                ),
            ])
        })
    }
}

/// Settings of the shared queue.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// This replica's name in run records and claims.
    pub replica: String,
    /// How long a claim holds without a heartbeat.
    pub lease: Duration,
    /// Claims of one run before it fails `interrupted`.
    pub max_attempts: u32,
    /// Queued runs the whole cluster holds; beyond that, submissions are refused.
    pub max_queued_runs: usize,
}

/// A claimed run: what the replica needs to execute it.
pub struct Claim {
    pub run_id: String,
    pub fence: u64,
    pub attempt: u32,
    pub record: RunRecord,
    pub sealed: Vec<u8>,
}

/// What inserting a run found.
pub enum Inserted {
    Queued,
    /// The idempotency key already names this run.
    Existing(Box<RunRecord>),
    /// The connection has this active run.
    Active(String),
    QueueFull,
}

/// What a heartbeat learned.
pub enum Beat {
    Held {
        cancel_requested: bool,
    },
    /// The claim is gone (reaped, or another attempt holds the run).
    Lost,
}

/// The shared queue.
pub struct SharedQueue {
    pool: PgPool,
    config: QueueConfig,
}

impl SharedQueue {
    /// Connects (a small pool: the queue's statements are short, and none may run longer than
    /// 10 s), migrates, and checks `shared` — settings every replica must have alike, as
    /// `(name, value)` — against what the first replica recorded.
    pub async fn connect(
        url: &str,
        config: QueueConfig,
        shared: &[(&str, String)],
    ) -> Result<Self, DbError> {
        let options = sqlx::postgres::PgConnectOptions::from_str(url)?
            .options([("statement_timeout", "10s")]);
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        Migrator::new(Embedded)
            .await
            .map_err(|e| DbError(e.to_string()))?
            .run(&pool)
            .await
            .map_err(|e| DbError(e.to_string()))?;
        for (name, value) in shared {
            let recorded = recorded_setting(&pool, name, value).await?;
            if recorded != *value {
                return Err(DbError(format!(
                    "this replica's {name} is {value:?} but the replicas sharing this database use {recorded:?}: every replica needs the same setting (to change it, stop every replica and delete the row from sluice_settings)"
                )));
            }
        }
        Ok(Self { pool, config })
    }

    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// A listener on the queue's channels; sqlx reconnects it after the database restarts.
    pub async fn listener(&self) -> Result<PgListener, DbError> {
        let mut l = PgListener::connect_with(&self.pool).await?;
        l.listen_all([QUEUE_CHANNEL, CANCEL_CHANNEL]).await?;
        Ok(l)
    }

    /// Inserts a queued run; says what stood in the way if it was not inserted.
    pub async fn insert(&self, record: &RunRecord, sealed: &[u8]) -> Result<Inserted, DbError> {
        if let Some(key) = &record.idempotency_key
            && let Some(existing) = self.by_idempotency_key(key).await?
        {
            return Ok(Inserted::Existing(Box::new(existing)));
        }
        let queued: i64 =
            sqlx::query_scalar("SELECT count(*) FROM sluice_runs WHERE status = 'queued'")
                .fetch_one(&self.pool)
                .await?;
        if queued as usize >= self.config.max_queued_runs {
            return Ok(Inserted::QueueFull);
        }
        let inserted = sqlx::query(
            "INSERT INTO sluice_runs (run_id, connection_id, status, record, request, idempotency_key)
             VALUES ($1, $2, 'queued', $3, $4, $5)
             ON CONFLICT DO NOTHING",
        )
        .bind(&record.run_id)
        .bind(&record.connection_id)
        .bind(jsonb_safe(record))
        .bind(sealed)
        .bind(&record.idempotency_key)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if inserted == 1 {
            self.notify(QUEUE_CHANNEL, "").await?;
            return Ok(Inserted::Queued);
        }
        // A unique rule held: the key (a concurrent first use) or the connection's active run.
        if let Some(key) = &record.idempotency_key
            && let Some(existing) = self.by_idempotency_key(key).await?
        {
            return Ok(Inserted::Existing(Box::new(existing)));
        }
        let active: Option<String> = sqlx::query_scalar(
            "SELECT run_id FROM sluice_runs
             WHERE connection_id = $1 AND status IN ('queued', 'running')",
        )
        .bind(&record.connection_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match active {
            Some(run_id) => Inserted::Active(run_id),
            // The active run ended in between: the caller may try again.
            None => Inserted::Active(String::new()),
        })
    }

    /// The run an idempotency key created, if any.
    pub async fn by_idempotency_key(&self, key: &str) -> Result<Option<RunRecord>, DbError> {
        let r: Option<(String, Json<Value>)> =
            sqlx::query_as("SELECT run_id, record FROM sluice_runs WHERE idempotency_key = $1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
        Ok(r.and_then(|(run_id, Json(v))| readable(&run_id, v)))
    }

    async fn notify(&self, channel: &str, payload: &str) -> Result<(), DbError> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel)
            .bind(payload)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The run, if its row exists and reads as a run (an unreadable row is logged and treated
    /// as absent, as [`SharedQueue::list`] does, rather than answered as a database failure).
    pub async fn get(&self, run_id: &str) -> Result<Option<RunRecord>, DbError> {
        let r: Option<Json<Value>> =
            sqlx::query_scalar("SELECT record FROM sluice_runs WHERE run_id = $1")
                .bind(run_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(r.and_then(|Json(v)| readable(run_id, v)))
    }

    /// Runs, newest first, optionally of one connection; at most [`LIST_LIMIT`]. A row whose
    /// record does not read as a run (written by another version, or by hand) is skipped and
    /// logged rather than failing the whole list.
    pub async fn list(&self, connection_id: Option<&str>) -> Result<Vec<RunRecord>, DbError> {
        let rows: Vec<(String, Json<Value>)> = sqlx::query_as(
            "SELECT run_id, record FROM sluice_runs WHERE ($1::text IS NULL OR connection_id = $1)
             ORDER BY created_at DESC, run_id DESC LIMIT $2",
        )
        .bind(connection_id)
        .bind(LIST_LIMIT as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(run_id, Json(v))| readable(&run_id, v))
            .collect())
    }

    /// Queued runs in the whole cluster.
    pub async fn queued(&self) -> Result<usize, DbError> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM sluice_runs WHERE status = 'queued'")
            .fetch_one(&self.pool)
            .await?;
        Ok(n as usize)
    }

    /// Claims up to `n` queued runs, oldest first, for this replica — only runs of the
    /// connectors it has loaded (`connectors`), so a replica still loading, or one without a
    /// connector, leaves those runs to the others instead of failing them.
    pub async fn claim(&self, n: usize, connectors: &[String]) -> Result<Vec<Claim>, DbError> {
        if n == 0 || connectors.is_empty() {
            return Ok(vec![]);
        }
        let rows = sqlx::query(
            "WITH next AS (
                SELECT run_id FROM sluice_runs
                WHERE status = 'queued' AND record->>'connector' = ANY($5)
                ORDER BY created_at, run_id LIMIT $1 FOR UPDATE SKIP LOCKED)
             UPDATE sluice_runs r SET
                status = 'running', attempts = r.attempts + 1, fence = nextval('sluice_fence'),
                replica = $2, lease_until = now() + make_interval(secs => $3),
                cancel_requested = false,
                record = r.record || jsonb_build_object(
                    'status', 'running', 'started_at', $4::text, 'attempts', r.attempts + 1,
                    'replica', $2::text)
             FROM next WHERE r.run_id = next.run_id
             RETURNING r.run_id, r.fence, r.attempts, r.record, r.request",
        )
        .bind(n as i64)
        .bind(&self.config.replica)
        .bind(self.config.lease.as_secs_f64())
        .bind(crate::now_rfc3339())
        .bind(connectors)
        .fetch_all(&self.pool)
        .await?;
        let mut claims = Vec::with_capacity(rows.len());
        for row in rows {
            let run_id: String = row.try_get("run_id")?;
            let Json(value): Json<Value> = row.try_get("record")?;
            // An unreadable row must not fail the runs claimed with it: it is left to the
            // reaper, which re-queues it and fails it after SLUICE_MAX_RUN_ATTEMPTS.
            let Some(record) = readable(&run_id, value) else {
                continue;
            };
            claims.push(Claim {
                run_id,
                fence: row.try_get::<i64, _>("fence")? as u64,
                attempt: row.try_get::<i32, _>("attempts")?.max(1) as u32,
                record,
                sealed: row
                    .try_get::<Option<Vec<u8>>, _>("request")?
                    .unwrap_or_default(),
            });
        }
        Ok(claims)
    }

    /// Renews a claim's lease and publishes the run's progress.
    pub async fn heartbeat(
        &self,
        run_id: &str,
        fence: u64,
        streams: &Value,
    ) -> Result<Beat, DbError> {
        let row: Option<bool> = sqlx::query_scalar(
            "UPDATE sluice_runs SET lease_until = now() + make_interval(secs => $3),
                record = jsonb_set(record, '{streams}', $4)
             WHERE run_id = $1 AND fence = $2 AND status = 'running'
             RETURNING cancel_requested",
        )
        .bind(run_id)
        .bind(fence as i64)
        .bind(self.config.lease.as_secs_f64())
        .bind(jsonb_safe(streams))
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(cancel_requested) => Beat::Held { cancel_requested },
            None => Beat::Lost,
        })
    }

    /// Renews a claim's lease for its commit and returns the seconds it now has, or `None`
    /// when the claim is no longer current (its token was superseded or the run ended).
    pub async fn renew_for_commit(&self, run_id: &str, fence: u64) -> Result<Option<f64>, DbError> {
        Ok(sqlx::query_scalar(
            "UPDATE sluice_runs SET lease_until = now() + make_interval(secs => $3)
             WHERE run_id = $1 AND fence = $2 AND status = 'running'
               AND lease_until > now()
             RETURNING EXTRACT(EPOCH FROM (lease_until - now()))::float8",
        )
        .bind(run_id)
        .bind(fence as i64)
        .bind(self.config.lease.as_secs_f64())
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Ends a claimed run with its final record; `false` when the claim was lost meanwhile.
    pub async fn finish(&self, record: &RunRecord, fence: u64) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE sluice_runs SET status = $3, record = $4, request = NULL, lease_until = NULL
             WHERE run_id = $1 AND fence = $2 AND status = 'running'",
        )
        .bind(&record.run_id)
        .bind(fence as i64)
        .bind(record.status.as_str())
        .bind(jsonb_safe(record))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(done == 1)
    }

    /// Puts a claimed run back in the queue without counting the attempt (graceful shutdown):
    /// another replica restarts it from the last committed state.
    pub async fn hand_back(&self, run_id: &str, fence: u64) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE sluice_runs SET status = 'queued', attempts = greatest(attempts - 1, 0),
                lease_until = NULL, replica = NULL,
                record = record || jsonb_build_object('status', 'queued',
                    'attempts', greatest(attempts - 1, 0))
             WHERE run_id = $1 AND fence = $2 AND status = 'running' AND NOT cancel_requested",
        )
        .bind(run_id)
        .bind(fence as i64)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if done == 1 {
            self.notify(QUEUE_CHANNEL, "").await?;
        }
        Ok(done == 1)
    }

    /// Cancels a run: a queued one ends here; a running one is flagged and its replica told.
    /// Returns the record as it is now, or `None` for an unknown run.
    pub async fn cancel(&self, run_id: &str) -> Result<Option<RunRecord>, DbError> {
        let now = crate::now_rfc3339();
        let updated: Option<String> = sqlx::query_scalar(
            "UPDATE sluice_runs SET cancel_requested = true,
                status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END,
                request = CASE WHEN status = 'queued' THEN NULL ELSE request END,
                record = CASE WHEN status = 'queued' THEN record || jsonb_build_object(
                    'status', 'cancelled', 'finished_at', $2::text,
                    'error', jsonb_build_object('code', 'cancelled',
                        'message', 'the run was cancelled; nothing of it was committed'))
                    ELSE record END || jsonb_build_object('cancel_requested', true)
             WHERE run_id = $1 AND status IN ('queued', 'running')
             RETURNING status",
        )
        .bind(run_id)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        if updated.as_deref() == Some(RunStatus::Running.as_str()) {
            self.notify(CANCEL_CHANNEL, run_id).await?;
        }
        self.get(run_id).await
    }

    /// Re-queues (or fails, after `max_attempts`, or cancels, when asked) the runs whose lease
    /// ran out. Returns how many went back to the queue.
    pub async fn reap(&self) -> Result<usize, DbError> {
        let message = format!(
            "the replica running this run stopped renewing its lease {} times; the run was given up (attempts are capped by SLUICE_MAX_RUN_ATTEMPTS)",
            self.config.max_attempts
        );
        let statuses: Vec<String> = sqlx::query_scalar(
            "WITH expired AS (
                SELECT run_id, CASE WHEN cancel_requested THEN 'cancelled'
                                    WHEN attempts >= $1 THEN 'failed'
                                    ELSE 'queued' END AS next
                FROM sluice_runs WHERE status = 'running' AND lease_until < now()
                FOR UPDATE SKIP LOCKED)
             UPDATE sluice_runs r SET status = e.next, lease_until = NULL,
                request = CASE WHEN e.next = 'queued' THEN r.request ELSE NULL END,
                record = r.record || CASE e.next
                    WHEN 'queued' THEN jsonb_build_object('status', 'queued')
                    WHEN 'cancelled' THEN jsonb_build_object('status', 'cancelled',
                        'finished_at', $2::text, 'error', jsonb_build_object('code', 'cancelled',
                        'message', 'the run was cancelled; its replica stopped before it ended'))
                    ELSE jsonb_build_object('status', 'failed', 'finished_at', $2::text,
                        'error', jsonb_build_object('code', 'interrupted', 'message', $3::text))
                    END
             FROM expired e WHERE r.run_id = e.run_id
             RETURNING r.status",
        )
        .bind(self.config.max_attempts as i32)
        .bind(crate::now_rfc3339())
        .bind(message)
        .fetch_all(&self.pool)
        .await?;
        let requeued = statuses.iter().filter(|s| *s == "queued").count();
        if !statuses.is_empty() {
            tracing::warn!(
                runs = statuses.len(),
                requeued,
                "reaped runs whose lease ran out"
            );
        }
        if requeued > 0 {
            self.notify(QUEUE_CHANNEL, "").await?;
        }
        Ok(requeued)
    }
}

/// The commit fence of a claimed run: its token must still be current and its lease must
/// have more than `margin` left; the state write then has the rest of the lease to land.
pub struct QueueFence {
    pub queue: Arc<SharedQueue>,
    pub run_id: String,
    pub token: u64,
    pub margin: Duration,
}

#[async_trait::async_trait]
impl sluice_storage::commit::CommitFence for QueueFence {
    async fn confirm(&self) -> Result<Duration, String> {
        let left = self
            .queue
            .renew_for_commit(&self.run_id, self.token)
            .await
            .map_err(|e| format!("cannot confirm the claim: {e}"))?
            .ok_or_else(|| {
                format!(
                    "fencing token {} no longer holds this run: its lease ran out before the commit (the heartbeats did not reach the database in time, or the replica stalled); the run is retried",
                    self.token
                )
            })?;
        // Whole seconds (`X-Amz-Expires`), never past the lease less the margin.
        let valid = Duration::from_secs_f64(left.max(0.0)).saturating_sub(self.margin);
        match valid.as_secs() {
            0 => Err("the claim's lease is too short to commit within it".to_string()),
            secs => Ok(Duration::from_secs(secs)),
        }
    }

    fn token(&self) -> u64 {
        self.token
    }
}
