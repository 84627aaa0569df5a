//! What the connector tests (GitHub, Slack, Linear, HubSpot, the SDK examples) share: their
//! test binary's prefix in the real S3 server's bucket, the service requests they make
//! (`validate`, a sync run to its end, `schema-sync`), and a local copy of what a run committed
//! there (the mirror), read with DuckDB as the backend reads the bucket.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::Service;
use crate::s3::{AK, BUCKET, SK, download, unique_prefix};

/// One test binary's place in [`BUCKET`]: a prefix no other test binary, nor an earlier run of
/// this one, uses (Garage's data outlives a run); each test uses its own connection ids in it.
pub struct Prefix(String);

impl Prefix {
    /// A fresh prefix named after the test binary (`tests/{name}-{nanoseconds}`).
    pub fn new(name: &str) -> Self {
        Self(unique_prefix(name))
    }

    /// The prefix's text, e.g. `tests/linear-1764…`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `storage` object of a run or schema-sync request: the bucket, this prefix and the
    /// read/write key.
    pub fn storage(&self) -> Value {
        json!({"bucket": BUCKET, "prefix": self.0, "access_key_id": AK, "secret_access_key": SK})
    }

    /// Copies what is committed for `connection` into the service's mirror (emptied first).
    pub async fn pull(&self, svc: &Service, connection: &str) {
        download(&format!("{}/{connection}/", self.0), &mirror(svc)).await;
    }

    /// The mirror's copy of a connection's objects (fresh after [`Prefix::pull`] or a sync).
    pub fn connection_dir(&self, svc: &Service, connection: &str) -> PathBuf {
        mirror(svc).join(BUCKET).join(&self.0).join(connection)
    }

    /// The body of a run request (`POST /internal/mirror-connections/runs`) of `connection`
    /// with the token credential, storing under this prefix.
    pub fn run_request(
        &self,
        connection: &str,
        connector: &str,
        config: &Value,
        token: &str,
    ) -> Value {
        json!({"connection_id": connection, "connector": connector, "config": config,
               "credentials": {"token": token}, "storage": self.storage()})
    }

    /// Runs a sync of [`Prefix::run_request`] to its end, asserts it succeeded and pulls the
    /// connection's objects; the run's final record.
    pub async fn sync(
        &self,
        svc: &Service,
        connection: &str,
        connector: &str,
        config: &Value,
        token: &str,
    ) -> Value {
        self.sync_request(svc, self.run_request(connection, connector, config, token))
            .await
    }

    /// [`Prefix::sync`] of a request body of one's own (its `storage` is set here).
    pub async fn sync_request(&self, svc: &Service, mut request: Value) -> Value {
        request["storage"] = self.storage();
        let run = svc.run_to_end(&request).await;
        assert_eq!(run["status"], "succeeded", "{run}\n{}", svc.logs());
        let connection = request["connection_id"].as_str().unwrap_or_default();
        self.pull(svc, connection).await;
        run
    }

    /// The local copies of the Parquet files one run committed for `stream`, as its manifest
    /// (`_runs/{run_id}.json`) lists them; pulled first.
    pub fn run_files(
        &self,
        svc: &Service,
        connection: &str,
        run_id: &str,
        stream: &str,
    ) -> Vec<PathBuf> {
        let manifest = self
            .connection_dir(svc, connection)
            .join(format!("_runs/{run_id}.json"));
        let manifest: Value = serde_json::from_slice(&std::fs::read(manifest).unwrap()).unwrap();
        manifest["streams"][stream]["files"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| mirror(svc).join(BUCKET).join(f["key"].as_str().unwrap()))
            .collect()
    }

    /// DuckDB with one view per stream of the connection: schema-sync's `view_sql` (the latest
    /// version of each row) over the mirror instead of `s3://`.
    pub async fn views(
        &self,
        svc: &Service,
        connection: &str,
        connector: &str,
    ) -> duckdb::Connection {
        let r = svc
            .post("/internal/mirror-connections/schema-sync")
            .json(&json!({"connection_id": connection, "connector": connector, "storage": self.storage()}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let catalog: Value = r.json().await.unwrap();
        let db = duckdb::Connection::open_in_memory().unwrap();
        let local = format!("{}/", mirror(svc).join(BUCKET).display());
        for s in catalog["streams"].as_array().unwrap() {
            if let Some(sql) = s["view_sql"].as_str() {
                db.execute_batch(&sql.replace(&format!("s3://{BUCKET}/"), &local))
                    .unwrap();
            }
        }
        db
    }
}

/// Where [`Prefix::pull`] copies the bucket for DuckDB to read: `mirror/` in the service's
/// data directory.
pub fn mirror(svc: &Service) -> PathBuf {
    svc.data_dir.join("mirror")
}

/// `POST validate` of `connector` with a token credential; the whole answer, after asserting
/// it is a 200 that does not echo the token.
pub async fn validate(svc: &Service, connector: &str, config: &Value, token: &str) -> Value {
    let r = svc
        .post("/internal/mirror-connections/validate")
        .json(&json!({"connector": connector, "config": config, "credentials": {"token": token}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert!(
        !body.to_string().contains(token),
        "a credential is never echoed: {body}"
    );
    body
}

/// Asserts a failed validation's error code, that its message is one line, and that it
/// mentions every one of `needles`.
pub fn assert_invalid(answer: &Value, code: &str, needles: &[&str]) {
    assert_eq!(answer["valid"], false, "{answer}");
    assert_eq!(answer["error"]["code"], code, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.contains('\n'), "one line: {message:?}");
    for needle in needles {
        assert!(message.contains(needle), "{needle:?} not in {message:?}");
    }
}

/// Records a run's status counts for `stream` (0 when absent).
pub fn records(run: &Value, stream: &str) -> u64 {
    run["streams"][stream]["records"].as_u64().unwrap_or(0)
}

/// The single integer `sql` selects.
pub fn count(db: &duckdb::Connection, sql: &str) -> i64 {
    db.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// The first column of every row `sql` selects, as text.
pub fn strings(db: &duckdb::Connection, sql: &str) -> Vec<String> {
    let mut stmt = db.prepare(sql).unwrap();
    stmt.query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// `read_parquet([...], union_by_name = true)` of these files, for a query's `FROM`.
pub fn read_parquet(files: &[PathBuf]) -> String {
    let list = files
        .iter()
        .map(|f| format!("'{}'", f.display().to_string().replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(", ");
    format!("read_parquet([{list}], union_by_name = true)")
}
