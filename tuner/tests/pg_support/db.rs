//! The test server (`POLYTUNE_TEST_PG_URL`, see `scripts/pg-test-cluster.sh`)
//! and fresh databases on it, for the PostgreSQL and daemon tests.

use polytune::storage::PgTarget;

/// The server the tests use, or `None` (with the reason printed).
pub fn server() -> Option<String> {
    match std::env::var("POLYTUNE_TEST_PG_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            let why = "POLYTUNE_TEST_PG_URL is not set (start a server with scripts/pg-test-cluster.sh start DIR and source DIR/env)";
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("CI runs the PostgreSQL tests: {why}");
            }
            eprintln!("skipping the PostgreSQL test: {why}");
            None
        }
    }
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A fresh database `name` on the test server; its URL.
pub fn fresh_db(url: &str, name: &str) -> String {
    let target = PgTarget::parse(url).unwrap();
    rt().block_on(async {
        let c = target.connect("polytune test setup").await.unwrap();
        c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
            .unwrap();
        c.batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
    });
    let (base, _) = url.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}
