//! A private PostgreSQL cluster for one test: Debian's server binaries (`PG_BIN`, default
//! `/usr/lib/postgresql/15/bin`, installed by `scripts/install-toolchain.sh`), a data directory
//! in a temp dir, trust authentication on 127.0.0.1 only, a free port. PostgreSQL refuses to run
//! as root, so when the tests run as root the cluster belongs to a non-root user
//! (`SLUICE_PG_USER`, default `postgres`, which Debian's package creates) and every server
//! command runs through `runuser -u USER --`. Built for speed, not durability: `initdb -N`,
//! `fsync=off`, `synchronous_commit=off`, `full_page_writes=off`.
//!
//! The service connects as the non-superuser role `sluice` (password `sluice`), owner of the
//! database `sluice`, as a deployment's application role would.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The role and database the service gets in [`PgServer::url`].
pub const ROLE: &str = "sluice";
pub const DATABASE: &str = "sluice";

/// Where Debian's PostgreSQL server binaries are.
pub fn pg_bin() -> PathBuf {
    let bin = std::env::var_os("PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"));
    assert!(
        bin.join("postgres").is_file(),
        "no PostgreSQL server in {}: run scripts/install-toolchain.sh (scripts/dev.sh test does) or set PG_BIN",
        bin.display()
    );
    bin
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `id` of a user (`-u` or `-g`), or of the current one without a name.
fn id(flag: &str, user: Option<&str>) -> u32 {
    let mut cmd = Command::new("id");
    cmd.arg(flag);
    if let Some(u) = user {
        cmd.arg(u);
    }
    let out = cmd.output().expect("run id");
    assert!(
        out.status.success(),
        "id {flag} {user:?}: {}\n(the tests run PostgreSQL as a non-root user: scripts/install-toolchain.sh installs Debian's postgresql-15, which creates `postgres`)",
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a numeric id")
}

/// A running private PostgreSQL cluster; stopped (immediately) and deleted when dropped.
pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// The user the server runs as when we are root.
    run_as: Option<String>,
    running: bool,
}

impl PgServer {
    /// Creates a cluster on a free port, starts it and creates the role and database of
    /// [`PgServer::url`].
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// As [`PgServer::start`], with extra `postgresql.conf` lines (e.g.
    /// `shared_preload_libraries = 'pg_stat_statements'`).
    pub fn start_with(settings: &[&str]) -> Self {
        let bin = pg_bin();
        let root = id("-u", None) == 0;
        let mut builder = tempfile::Builder::new();
        builder.prefix("sluice-pg-");
        let dir = if root {
            // Under /tmp, whatever TMPDIR says: the server's user must be able to reach it.
            builder.tempdir_in("/tmp")
        } else {
            builder.tempdir()
        }
        .expect("temp dir");
        let run_as = if root {
            let user = std::env::var("SLUICE_PG_USER").unwrap_or_else(|_| "postgres".into());
            let (uid, gid) = (id("-u", Some(&user)), id("-g", Some(&user)));
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown pg dir");
            Some(user)
        } else {
            None
        };
        let port = crate::free_port();
        let mut pg = Self {
            dir,
            bin,
            port,
            run_as,
            running: false,
        };
        let data = pg.data_dir();
        pg.server_cmd(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "-N",
                "--no-instructions",
            ],
        );
        // Loopback only, this port, the socket in our own directory (not /var/run/postgresql).
        let mut conf = format!(
            "\n# sluice-tests\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 300\n\
             log_min_messages = warning\n",
            pg.dir.path().display()
        );
        for s in settings {
            conf.push_str(s);
            conf.push('\n');
        }
        let conf_path = data.join("postgresql.conf");
        let mut all = std::fs::read_to_string(&conf_path).expect("postgresql.conf");
        all.push_str(&conf);
        // Written in place: the file keeps its owner (the server's user).
        std::fs::write(&conf_path, all).expect("write postgresql.conf");
        pg.start_server();
        // Two calls: psql -c runs one string as one transaction, and CREATE DATABASE refuses that.
        pg.psql_as(
            "postgres",
            "postgres",
            &format!("CREATE ROLE {ROLE} LOGIN PASSWORD '{ROLE}'"),
        );
        pg.psql_as(
            "postgres",
            "postgres",
            &format!("CREATE DATABASE {DATABASE} OWNER {ROLE}"),
        );
        pg
    }

    /// `postgres://sluice:sluice@127.0.0.1:PORT/sluice`.
    pub fn url(&self) -> String {
        format!(
            "postgres://{ROLE}:{ROLE}@127.0.0.1:{}/{DATABASE}",
            self.port
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Runs a server program (`initdb`, `pg_ctl`) as the cluster's user; panics on failure.
    fn server_cmd(&self, program: &str, args: &[&str]) -> String {
        let exe = self.bin.join(program);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        // A working directory the server's user may enter.
        cmd.args(args).current_dir(self.dir.path());
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("run {program}: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}\nserver log:\n{}",
            text(&out),
            self.logs()
        );
        text(&out)
    }

    fn start_server(&mut self) {
        let data = self.data_dir();
        let log = self.log_path();
        self.server_cmd(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        self.running = true;
    }

    fn stop_server(&mut self, mode: &str) {
        if !self.running {
            return;
        }
        let data = self.data_dir();
        self.server_cmd(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-m",
                mode,
                "-w",
                "-t",
                "60",
                "stop",
            ],
        );
        self.running = false;
    }

    /// Stops the server (`-m fast`: open sessions are terminated, as in a failover or an
    /// operator's restart). Data and port are kept for [`PgServer::start_again`].
    pub fn stop(&mut self) {
        self.stop_server("fast");
    }

    /// Starts a stopped server again, on the same port and data.
    pub fn start_again(&mut self) {
        if !self.running {
            self.start_server();
        }
    }

    /// Stop, then start on the same port and data: every client connection is cut.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    pub fn is_running(&self) -> bool {
        self.running
    }

    /// Runs `sql` with psql as the application role on its database; returns the rows
    /// unaligned (`|` between columns, a line per row). Panics on an SQL error.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_as(ROLE, DATABASE, sql)
    }

    /// Runs `sql` as the superuser `postgres` on `database`.
    pub fn psql_super(&self, database: &str, sql: &str) -> String {
        self.psql_as("postgres", database, sql)
    }

    fn psql_as(&self, role: &str, database: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-A",
                "-t",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", role, "-d", database, "-c", sql])
            .env_remove("PGPASSWORD")
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql:?} failed: {}\nserver log:\n{}",
            text(&out),
            self.logs()
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The cluster's directory (data in `data/`, log in `server.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.running {
            let data = self.data_dir();
            let exe = self.bin.join("pg_ctl");
            let mut cmd = match &self.run_as {
                Some(user) => {
                    let mut c = Command::new("runuser");
                    c.args(["-u", user, "--"]).arg(&exe);
                    c
                }
                None => Command::new(&exe),
            };
            let _ = cmd
                .arg("-D")
                .arg(&data)
                .args(["-m", "immediate", "-w", "-t", "30", "stop"])
                .current_dir(self.dir.path())
                .output();
            self.running = false;
        }
    }
}
