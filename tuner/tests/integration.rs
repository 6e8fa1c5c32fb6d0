//! Every polytune integration test in one binary (one link instead of
//! thirty on CI's 2 cores). Each test file is a module; the shared
//! fixtures are declared once here. `study_resume` stays its own binary
//! (its `main` is also the subprocess it kills).
//!
//! Run one file's tests with a filter: `cargo test -p polytune --test integration serve::`.

mod common;
mod data_support;
#[path = "pg_support/db.rs"]
mod db;
mod golden_json;
mod hardening_support;
#[path = "pg_support/load.rs"]
mod load;
mod shared_data;
mod train_support;

mod cli_options;
mod data_augment_golden;
mod data_augment_recipe;
mod data_batches;
mod data_cache;
mod data_config;
mod data_decode;
mod data_mat;
mod data_sources;
mod hardening;
mod orchestrator_child;
mod pg_storage;
mod polytune_cli;
mod search_bayes;
mod search_gp;
mod search_solvers;
mod serve;
mod stats_ci;
mod study_journal;
mod study_retries;
mod study_run;
mod train_configs;
mod train_digits;
mod train_errors;
mod train_features;
mod train_frozen_bn;
mod train_head;
mod train_recipe;
mod train_schedule;
mod trial_external;
