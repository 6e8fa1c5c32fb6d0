//! Where the PostgreSQL server is and how to log in: the `--storage` URL,
//! completed from the usual libpq sources, and a form of it that is safe to
//! print.
//!
//! Precedence, as libpq: what the URL says wins; a missing host, port,
//! user, database or password comes from `PGHOST`, `PGPORT`, `PGUSER`,
//! `PGDATABASE`, `PGPASSWORD`; a password still missing is looked up in
//! `PGPASSFILE` (default `~/.pgpass`, ignored unless only its owner can read
//! it). The password never appears in messages or logs: every error and
//! log line shows [`PgTarget::redacted`].

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::config::Host;

use super::super::StorageError;

/// Seconds a first connection may take before the URL is reported unreachable.
pub const CONNECT_TIMEOUT_S: u64 = 5;

/// A PostgreSQL server and login, with the password kept out of sight.
#[derive(Clone)]
pub struct PgTarget {
    config: tokio_postgres::Config,
    shown: String,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl std::fmt::Display for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

/// The environment the target is completed from (a seam for tests).
#[derive(Debug, Clone, Default)]
pub struct PgEnv {
    /// `PGHOST`.
    pub host: Option<String>,
    /// `PGPORT`.
    pub port: Option<String>,
    /// `PGUSER`.
    pub user: Option<String>,
    /// `PGDATABASE`.
    pub database: Option<String>,
    /// `PGPASSWORD`.
    pub password: Option<String>,
    /// `PGPASSFILE`, else `$HOME/.pgpass`.
    pub passfile: Option<PathBuf>,
    /// The login name used when no user is given (`$USER`).
    pub login: Option<String>,
}

impl PgEnv {
    /// The process environment.
    pub fn from_process() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Self {
            host: var("PGHOST"),
            port: var("PGPORT"),
            user: var("PGUSER"),
            database: var("PGDATABASE"),
            password: var("PGPASSWORD"),
            passfile: var("PGPASSFILE")
                .map(PathBuf::from)
                .or_else(|| var("HOME").map(|h| Path::new(&h).join(".pgpass"))),
            login: var("USER").or_else(|| var("LOGNAME")),
        }
    }
}

impl PgTarget {
    /// Parses a `postgresql://` (or `postgres://`) URL and completes it from
    /// the process environment.
    ///
    /// ```
    /// use polytune::storage::PgTarget;
    /// let t = PgTarget::parse("postgresql://tuner:s3cret@db.example:5433/studies").unwrap();
    /// assert_eq!(t.redacted(), "postgresql://tuner:***@db.example:5433/studies");
    /// assert!(!format!("{t:?}").contains("s3cret"));
    /// ```
    pub fn parse(url: &str) -> Result<Self, StorageError> {
        Self::parse_with(url, &PgEnv::from_process())
    }

    /// [`PgTarget::parse`] with an explicit environment.
    pub fn parse_with(url: &str, env: &PgEnv) -> Result<Self, StorageError> {
        let shown_raw = redact_url(url);
        let bad = |message: String| StorageError::BadUrl {
            url: shown_raw.clone(),
            message,
        };
        if !(url.starts_with("postgresql://") || url.starts_with("postgres://")) {
            return Err(bad(
                "a storage URL starts with postgresql:// (without --storage the study keeps its journal in the study directory)".into(),
            ));
        }
        let mut config = tokio_postgres::Config::from_str(url).map_err(|e| bad(e.to_string()))?;
        if config.get_hosts().is_empty() {
            let host = env
                .host
                .clone()
                .unwrap_or_else(|| "/var/run/postgresql".into());
            for h in host.split(',') {
                if h.starts_with('/') {
                    config.host_path(h);
                } else {
                    config.host(h);
                }
            }
        }
        if config.get_ports().is_empty() {
            if let Some(p) = &env.port {
                let port: u16 = p
                    .parse()
                    .map_err(|_| bad(format!("PGPORT {p:?} is not a port number")))?;
                config.port(port);
            }
        }
        if config.get_user().is_none() {
            match env.user.clone().or_else(|| env.login.clone()) {
                Some(u) => {
                    config.user(u);
                }
                None => return Err(bad("no user: put one in the URL or set PGUSER".into())),
            }
        }
        if config.get_dbname().is_none() {
            let db = env
                .database
                .clone()
                .unwrap_or_else(|| config.get_user().unwrap_or_default().to_string());
            config.dbname(db);
        }
        if config.get_password().is_none() {
            if let Some(p) = &env.password {
                config.password(p.as_str());
            } else if let Some(file) = &env.passfile {
                if let Some(p) = passfile_lookup(file, &config) {
                    config.password(p);
                }
            }
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(CONNECT_TIMEOUT_S));
        }
        let shown = describe(&config);
        Ok(Self { config, shown })
    }

    /// The target as a URL with the password replaced by `***`.
    pub fn redacted(&self) -> &str {
        &self.shown
    }

    /// The driver's config (holds the password: never print it).
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// The config with `application_name` set (shown in `pg_stat_activity`,
    /// which is how a refused coordinator learns who holds the study).
    pub fn config_named(&self, application_name: &str) -> tokio_postgres::Config {
        let mut c = self.config.clone();
        c.application_name(application_name);
        c
    }

    /// Opens one connection (its driver task runs on the current runtime).
    pub async fn connect(
        &self,
        application_name: &str,
    ) -> Result<tokio_postgres::Client, StorageError> {
        let (client, connection) = self
            .config_named(application_name)
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| StorageError::from_connect(self, e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("database connection ended: {e}");
            }
        });
        Ok(client)
    }
}

/// `scheme://user:***@rest` from the text the user gave (for a URL that
/// does not even parse).
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<not a URL>".into();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_string(),
    };
    // Query parameters may carry a password too.
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let q: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => kv.to_string(),
                })
                .collect();
            format!("{path}?{}", q.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// The completed config as a redacted URL.
fn describe(c: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = c
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let port = c.get_ports().get(i).or(c.get_ports().first());
            let name = match h {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            };
            match port {
                Some(p) => format!("{name}:{p}"),
                None => name,
            }
        })
        .collect();
    let user = c.get_user().unwrap_or("");
    let pw = if c.get_password().is_some() {
        ":***"
    } else {
        ""
    };
    format!(
        "postgresql://{user}{pw}@{}/{}",
        hosts.join(","),
        c.get_dbname().unwrap_or("")
    )
}

/// The password for `config` from a pgpass file, as libpq finds it: the
/// first line whose host, port, database and user match (`*` matches
/// anything; `\:` and `\\` escape). A file others can read is ignored.
pub fn passfile_lookup(file: &Path, config: &tokio_postgres::Config) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(file).ok()?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            "{}: ignored, it is readable by group or others (chmod 0600 it)",
            file.display()
        );
        return None;
    }
    let text = std::fs::read_to_string(file).ok()?;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(_)) | None => "localhost".into(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let want = [
        host.as_str(),
        port.as_str(),
        config.get_dbname().unwrap_or(""),
        config.get_user().unwrap_or(""),
    ];
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .map(split_pgpass_line)
        .find(|f| f.len() == 5 && want.iter().zip(f).all(|(w, f)| f == "*" || f == w))
        .map(|f| f[4].clone())
}

fn split_pgpass_line(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    out.last_mut().expect("non-empty").push(n);
                }
            }
            ':' => out.push(String::new()),
            c => out.last_mut().expect("non-empty").push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_fills_what_the_url_leaves_out() {
        let env = PgEnv {
            host: Some("db.internal".into()),
            port: Some("6543".into()),
            user: Some("alice".into()),
            database: Some("tuning".into()),
            password: Some("pw-from-env".into()),
            ..PgEnv::default()
        };
        let t = PgTarget::parse_with("postgresql://", &env).unwrap();
        assert_eq!(
            t.redacted(),
            "postgresql://alice:***@db.internal:6543/tuning"
        );
        assert_eq!(t.config().get_password(), Some(&b"pw-from-env"[..]));
        // The URL wins over the environment.
        let t = PgTarget::parse_with("postgresql://bob@other/db2", &env).unwrap();
        assert_eq!(t.config().get_user(), Some("bob"));
        assert_eq!(t.config().get_dbname(), Some("db2"));
        assert_eq!(t.config().get_password(), Some(&b"pw-from-env"[..]));
    }

    #[test]
    fn bad_urls_are_refused_without_showing_the_password() {
        for url in [
            "mysql://u:hunter2@h/db",
            "sqlite:///x.db",
            "postgresql://u:hunter2@h:notaport/db",
        ] {
            let e = PgTarget::parse_with(url, &PgEnv::default())
                .unwrap_err()
                .to_string();
            assert!(!e.contains("hunter2"), "{e}");
            assert!(e.contains("***") || !url.contains('@'), "{e}");
        }
        let e = PgTarget::parse_with("postgresql://h/db", &PgEnv::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("PGUSER"), "{e}");
    }

    #[test]
    fn pgpass_first_matching_line_with_wildcards_and_escapes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pgpass");
        std::fs::write(
            &f,
            "# comment\nother:5432:*:alice:wrong\ndb:5432:studies:alice:pa\\:ss\\\\1\n*:*:*:alice:fallback\n",
        )
        .unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let env = PgEnv {
            passfile: Some(f.clone()),
            ..PgEnv::default()
        };
        let t = PgTarget::parse_with("postgresql://alice@db/studies", &env).unwrap();
        assert_eq!(t.config().get_password(), Some(&b"pa:ss\\1"[..]));
        let t = PgTarget::parse_with("postgresql://alice@db/else", &env).unwrap();
        assert_eq!(t.config().get_password(), Some(&b"fallback"[..]));
        // Readable by others: ignored, as libpq does.
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let t = PgTarget::parse_with("postgresql://alice@db/studies", &env).unwrap();
        assert_eq!(t.config().get_password(), None);
    }
}
