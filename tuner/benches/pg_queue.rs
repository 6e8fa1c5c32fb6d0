//! Storage throughput: 2,000 trials through 8 workers on PostgreSQL, each
//! trial a 5 ms sleep — in-process (the storage path alone) and as a child
//! process per trial (`tests/fixtures/trial_sleep5ms.sh`, what a real
//! worker does). Prints trials/s and the lost / duplicated counts.
//!
//! ```text
//! scripts/pg-test-cluster.sh start /tmp/pg && . /tmp/pg/env
//! cargo bench -p polytune --bench pg_queue
//! ```
//! Env `PG_QUEUE_TRIALS` (default 2000) and `PG_QUEUE_WORKERS` (default 8).

#[path = "../tests/pg_support/load.rs"]
mod load;

use load::{run_load, LoadTrial};
use polytune::storage::{PgStore, PgTarget};

fn main() {
    let Ok(url) = std::env::var("POLYTUNE_TEST_PG_URL") else {
        eprintln!(
            "pg_queue: set POLYTUNE_TEST_PG_URL (scripts/pg-test-cluster.sh start DIR; . DIR/env)"
        );
        return;
    };
    let env_num = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let n = env_num("PG_QUEUE_TRIALS", 2000);
    let workers = env_num("PG_QUEUE_WORKERS", 8) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let admin = PgTarget::parse(&url).expect("url");
        let c = admin.connect("pg_queue bench").await.expect("connect");
        c.batch_execute("DROP DATABASE IF EXISTS pg_queue_bench WITH (FORCE)")
            .await
            .expect("drop");
        c.batch_execute("CREATE DATABASE pg_queue_bench")
            .await
            .expect("create");
        let (base, _) = url.rsplit_once('/').expect("url with a database");
        let target = PgTarget::parse(&format!("{base}/pg_queue_bench")).expect("url");
        let store = PgStore::open(&target, "pg_queue bench")
            .await
            .expect("open");
        let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/trial_sleep5ms.sh");
        println!("{n} trials (5 ms each), {workers} workers, PostgreSQL on this machine");
        println!(
            "{:<28} {:>9} {:>10} {:>6} {:>11}",
            "trial", "seconds", "trials/s", "lost", "duplicated"
        );
        for (name, trial) in [
            ("in-process 5 ms sleep", LoadTrial::InProcess),
            ("child process (sh, 5 ms)", LoadTrial::Command(fixture)),
        ] {
            let tag = if matches!(trial, LoadTrial::InProcess) {
                "inproc"
            } else {
                "child"
            };
            let r = run_load(&store, tag, n, workers, trial).await;
            println!(
                "{name:<28} {:>9.2} {:>10.0} {:>8} {:>6} {:>11}",
                r.seconds,
                n as f64 / r.seconds,
                r.attempts,
                n as usize - r.finished,
                r.duplicated
            );
        }
    });
}
