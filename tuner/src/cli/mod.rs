//! The `polytune` command line: `search` (the default), `train` and `trial`.
//!
//! ```text
//! polytune [search] [--budget N] [--config FILE] [--data-dir DIR] [--weights FILE] [--device D]
//!                   [--study-dir DIR] [--out FILE] [--solver S] [--workers N] [--seed S]
//! polytune train [--config FILE] [--epsilon 2.0[,e2..]] [--seed S] [--data-dir DIR] [--device D]
//!                [--weights FILE] [--save model.safetensors] [--metrics metrics.csv] [--test]
//! polytune trial --spec FILE|-
//! polytune worker --storage URL [--device D] [--max-trials N] [--data-root DIR] [--study NAME]
//! polytune status [--storage URL | --server URL] [STUDY]
//! polytune serve [--dir DIR] [--data-root DIR] [--listen ADDR] [--token-file F] [--storage URL]
//!                [--max-running N] [--log-format text|json]
//! polytune submit CONFIG --server URL [--name N] [--token-file F]
//! polytune fetch ID --server URL --out FILE [--token-file F]
//! polytune cancel ID --server URL [--token-file F]
//! ```
//!
//! `serve` runs the tuner as a daemon (see [`polytune::serve`]): an HTTP API
//! and dashboard, a queue of submitted studies; `submit`, `status
//! --server`, `fetch` and `cancel` are its clients.
//!
//! `--storage postgresql://…` keeps the study's trials in PostgreSQL
//! (see [`polytune::storage`]): `polytune [search]` coordinates and runs
//! `--local-workers` (default `--workers`) workers itself; `polytune worker`
//! adds workers on any machine.
//!
//! Without `--config` the embedded default
//! ([`polytune::study::EMBEDDED_DEFAULT`]: the small ResNet on the embedded
//! digits set) is used. A config is a study config
//! (see [`polytune::study::StudyConfig`]): `train` uses its `[train]` and
//! `[data]` sections and `study.seed`.
//!
//! Only the binary parses arguments, sets up logging and draws progress
//! bars ([`display`]); everything it runs is `polytune`'s library.

mod display;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};

use polytune::data::Dataset;
use polytune::fs::same_target;
use polytune::orchestrator::stop_signal;
use polytune::search::SolverKind;
use polytune::search::MAX_ABS_BOUND;
use polytune::storage::worker::{run_worker, WorkerOptions};
use polytune::storage::{status, PgStore, PgTarget};
use polytune::study::{
    child_runner, run_study_blocking, trial_program, LoadedConfig, StudyConfig, StudyError,
    StudyOptions,
};
use polytune::study::{MAX_BUDGET, MAX_SEED, MAX_WORKERS};
use polytune::train::config::check_batch_memory;
use polytune::train::{
    check_weights, data_config_from_table, provenance_of, set_threads, train, TrainConfig,
    TrainOptions,
};
use polytune::trial::run_trial_command;

/// polytune: tunes the ε₁..εₙ of PolyLoss by searching over short fine-tunes.
#[derive(Parser, Debug)]
#[command(name = "polytune", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to do (default: search).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of the default `search` command.
    #[command(flatten)]
    pub search: SearchArgs,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Search ε (the default): trials, journal, tuned TOML.
    Search(SearchArgs),
    /// One fine-tune with a given ε: progress bars, metrics CSV, saved model.
    Train(TrainArgs),
    /// One trial of a study: reads a trial spec, prints one result line (JSON).
    Trial(TrialArgs),
    /// Runs queued trials of PostgreSQL-stored studies (any machine).
    Worker(WorkerArgs),
    /// Where a study stands: trials by state, best so far, workers, ETA.
    Status(StatusArgs),
    /// The tuner daemon: HTTP API, dashboard and a queue of submitted studies.
    Serve(ServeArgs),
    /// Submits a study config to a daemon.
    Submit(SubmitArgs),
    /// Writes a finished study's tuned TOML from a daemon to a file.
    Fetch(FetchArgs),
    /// Cancels a daemon's study.
    Cancel(CancelArgs),
}

/// Log line format.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Plain text lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `polytune serve`.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Daemon directory: the queue, the study directories, the image caches.
    #[arg(long, default_value = "polytune-serve")]
    pub dir: PathBuf,
    /// Submitted configs' data and weights paths resolve under this directory, and may not leave it.
    #[arg(long, default_value = ".")]
    pub data_root: PathBuf,
    /// Address to listen on; anything but loopback needs --token-file.
    #[arg(long, default_value = polytune::serve::DEFAULT_LISTEN)]
    pub listen: std::net::SocketAddr,
    /// File holding the bearer token clients must send (one line, ≥ 16 characters).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Keep the studies' trials in PostgreSQL (postgresql://…) so `polytune worker`s on any machine run them.
    #[arg(long)]
    pub storage: Option<String>,
    /// With --storage: workers the daemon runs itself per study; 0..=1024 (default: the study's workers).
    #[arg(long, requires = "storage", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=MAX_WORKERS as u64))]
    pub local_workers: Option<usize>,
    /// Studies run at once; 1..=256.
    #[arg(long, default_value_t = 1, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=256))]
    pub max_running: usize,
    /// Request body cap in bytes; 1024..=67108864 (larger bodies get 413).
    #[arg(long, default_value_t = polytune::serve::DEFAULT_MAX_BODY, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1024..=(64 << 20)))]
    pub max_body_bytes: usize,
    /// Let submitted configs run a `[trial] command` program (only programs under --data-root).
    #[arg(long)]
    pub allow_trial_command: bool,
    /// Seconds running trials get after SIGINT / SIGTERM before they are stopped; 0..=10^7.
    #[arg(long, default_value_t = 30.0, value_parser = parse_grace)]
    pub grace_s: f64,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How to reach a daemon.
#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    /// The daemon: http://host:port.
    #[arg(long)]
    pub server: String,
    /// File holding the daemon's bearer token (or set POLYTUNE_TOKEN).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
}

/// `polytune submit`.
#[derive(Args, Debug, Clone)]
pub struct SubmitArgs {
    /// The study config (TOML).
    pub config: PathBuf,
    /// A name for the study (A-Z a-z 0-9 - _ .).
    #[arg(long)]
    pub name: Option<String>,
    /// The daemon.
    #[command(flatten)]
    pub server: ServerArgs,
}

/// `polytune fetch`.
#[derive(Args, Debug, Clone)]
pub struct FetchArgs {
    /// The study's id.
    pub id: u64,
    /// Where to write the tuned TOML (atomically).
    #[arg(long)]
    pub out: PathBuf,
    /// The daemon.
    #[command(flatten)]
    pub server: ServerArgs,
}

/// `polytune cancel`.
#[derive(Args, Debug, Clone)]
pub struct CancelArgs {
    /// The study's id.
    pub id: u64,
    /// The daemon.
    #[command(flatten)]
    pub server: ServerArgs,
}

/// `polytune worker`.
#[derive(Args, Debug, Clone)]
pub struct WorkerArgs {
    /// The study database: postgresql://user[:password]@host[:port]/db (or PG* variables, PGPASSFILE).
    #[arg(long)]
    pub storage: String,
    /// Compute device for every trial: cpu, cuda or cuda:N (overrides the study's [train].device).
    #[arg(long)]
    pub device: Option<String>,
    /// Stop after this many trials (default: run until SIGINT / SIGTERM).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=MAX_BUDGET))]
    pub max_trials: Option<u64>,
    /// Where the studies' relative data and weights paths resolve (default: the current directory).
    #[arg(long)]
    pub data_root: Option<PathBuf>,
    /// Only run trials of this study.
    #[arg(long)]
    pub study: Option<String>,
    /// Seconds a running trial gets to finish after SIGINT / SIGTERM before it is killed and given back; 0..=10^7.
    #[arg(long, default_value_t = 30.0, value_parser = parse_grace)]
    pub grace_s: f64,
}

/// `polytune status`.
#[derive(Args, Debug, Clone)]
pub struct StatusArgs {
    /// The study database (without it STUDY is a study directory with a journal).
    #[arg(long, conflicts_with = "server")]
    pub storage: Option<String>,
    /// A daemon (http://host:port): STUDY is its study id (default: all studies).
    #[arg(long)]
    pub server: Option<String>,
    /// With --server: file holding the daemon's bearer token (or set POLYTUNE_TOKEN).
    #[arg(long, requires = "server")]
    pub token_file: Option<PathBuf>,
    /// A study name (with --storage; default: all studies) or directory (default: studies/digits-small-resnet).
    pub study: Option<String>,
}

fn parse_grace(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if (0.0..=polytune::study::MAX_SECONDS).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} must be in [0, 1e7] seconds"))
    }
}

/// The options of `search` and `train` that override a config's inputs.
#[derive(Args, Debug, Clone, Default)]
pub struct InputOverrides {
    /// Data directory (or CSV manifest): overrides [data].path.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Pretrained weights (torchvision state dict as safetensors): overrides [train].weights.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Compute device of the training: cpu, cuda or cuda:N (overrides [train].device).
    #[arg(long)]
    pub device: Option<String>,
}

impl InputOverrides {
    /// Applies `--data-dir`, `--weights` and `--device` to the config's opaque tables.
    fn apply(&self, cfg: &mut StudyConfig) {
        let path_value = |p: &Path| toml::Value::String(p.display().to_string());
        if let Some(d) = &self.data_dir {
            cfg.data.insert("path".into(), path_value(d));
        }
        if let Some(w) = &self.weights {
            cfg.train.insert("weights".into(), path_value(w));
        }
        if let Some(d) = &self.device {
            cfg.train
                .insert("device".into(), toml::Value::String(d.clone()));
        }
    }
}

/// `polytune [search]`.
#[derive(Args, Debug, Clone, Default)]
pub struct SearchArgs {
    /// Search trials (fine-tunes), the cross-entropy baseline included; 1..=1000000 [config: study.budget].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=MAX_BUDGET))]
    pub budget: Option<u64>,
    /// Study config (TOML); default: the embedded digits / small-ResNet config.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub inputs: InputOverrides,
    /// Study directory (journal, tuned TOML, plot); default: studies/<config name>.
    #[arg(long)]
    pub study_dir: Option<PathBuf>,
    /// Also write the tuned TOML here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// nelder-mead, particle-swarm, brent or random [config: search.solver].
    #[arg(long)]
    pub solver: Option<SolverKind>,
    /// Trials run at once; 1..=1024 [config: study.workers].
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_WORKERS as u64))]
    pub workers: Option<usize>,
    /// Seed shared by the search trials; 0..=2^53 [config: study.seed].
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=MAX_SEED))]
    pub seed: Option<u64>,
    /// Keep the trials in PostgreSQL (postgresql://user[:password]@host[:port]/db) for workers on any machine; the study's name is the study directory's name.
    #[arg(long)]
    pub storage: Option<String>,
    /// With --storage: workers this process runs itself; 0..=1024 (default: --workers).
    #[arg(long, requires = "storage", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=MAX_WORKERS as u64))]
    pub local_workers: Option<usize>,
}

/// `polytune train`.
#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    /// Study config (TOML) whose [train] and [data] sections to use; default: the embedded one.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// ε₁..ε_N of PolyLoss, comma-separated (0 = plain cross-entropy).
    #[arg(
        long,
        value_delimiter = ',',
        allow_negative_numbers = true,
        default_value = "2.0"
    )]
    pub epsilon: Vec<f64>,
    /// Seed of initialisation, data order and augmentation; 0..=2^53 [config: study.seed].
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=MAX_SEED))]
    pub seed: Option<u64>,
    #[command(flatten)]
    pub inputs: InputOverrides,
    /// Save the fine-tuned model here (safetensors, torchvision names).
    #[arg(long)]
    pub save: Option<PathBuf>,
    /// Write per-epoch metrics here (CSV).
    #[arg(long)]
    pub metrics: Option<PathBuf>,
    /// Also evaluate the test split at the end.
    #[arg(long)]
    pub test: bool,
}

/// `polytune trial`.
#[derive(Args, Debug, Clone)]
pub struct TrialArgs {
    /// The trial spec (JSON): a file, or `-` for standard input.
    #[arg(long)]
    pub spec: String,
}

/// Runs the command line; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    let json = matches!(&cli.command, Some(Command::Serve(a)) if a.log_format == LogFormat::Json);
    if json {
        display::init_json_logging()
    } else {
        display::init_logging()
    }
    .map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))?;
    // The library's progress (study trials, image decoding) as bars.
    polytune::progress::install(display::Bars)?;
    match cli.command {
        None => search(cli.search),
        Some(Command::Search(a)) => search(a),
        Some(Command::Train(a)) => train_command(a),
        Some(Command::Trial(a)) => trial_command(a),
        Some(Command::Worker(a)) => worker_command(a),
        Some(Command::Status(a)) => status_command(a),
        Some(Command::Serve(a)) => serve_command(a),
        Some(Command::Submit(a)) => submit_command(a),
        Some(Command::Fetch(a)) => fetch_command(a),
        Some(Command::Cancel(a)) => cancel_command(a),
    }
}

fn search(a: SearchArgs) -> anyhow::Result<u8> {
    let storage = a.storage.as_deref().map(PgTarget::parse).transpose()?;
    let LoadedConfig {
        config: mut cfg,
        source,
        name,
    } = StudyConfig::load_or_default(a.config.as_deref())?;
    if let Some(b) = a.budget {
        cfg.study.budget = b;
    }
    if let Some(w) = a.workers {
        cfg.study.workers = w;
    }
    if let Some(s) = a.seed {
        cfg.study.seed = s;
    }
    if let Some(s) = a.solver {
        cfg.search.solver = s;
    }
    a.inputs.apply(&mut cfg);
    cfg.validate_named(&source)?;

    // Check the trainer's sections, the data and the weights once, up
    // front: a mistake there is one clear error, not a failed trial per ε.
    // An external trial program owns its [train] / [data] tables.
    let train_cfg = if cfg.trial.command.is_none() {
        let train_cfg = TrainConfig::from_table(&cfg.train, &source)?;
        let data_cfg = data_config_from_table(&cfg.data, &source)?;
        check_batch_memory(&train_cfg, data_cfg.image_size(), &source)?;
        let data = Dataset::load(&data_cfg)?;
        check_weights(&train_cfg)?;
        tracing::info!(
            "{}: {} on {} ({} classes, {} train / {} valid images at {} px), {} + {} epochs per trial; confirmation on {}",
            source,
            train_cfg.model,
            data.source().name(),
            data.num_classes(),
            data.train().len(),
            data.valid().len(),
            data.image_size(),
            train_cfg.freeze_epochs,
            train_cfg.epochs,
            if data.has_test() {
                "the test split"
            } else {
                "the held-out half of the validation split"
            }
        );
        Some((train_cfg, data_cfg))
    } else {
        tracing::info!(
            "{source}: trials run the external program {:?}",
            cfg.trial.command.as_deref().unwrap_or_default()
        );
        None
    };

    let study_dir = a
        .study_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("studies").join(&name));
    let runner = child_runner(&cfg, trial_program(&cfg)?);
    let mut opts = StudyOptions::new(&study_dir);
    opts.config_source = source;
    opts.out = a.out.clone();
    opts.resume_command = Some(std::env::args().collect::<Vec<_>>().join(" "));
    opts.storage = storage;
    opts.local_workers = a.local_workers;
    if train_cfg.is_some() {
        opts.provenance = provenance_of(&cfg, &opts.config_source)?;
    }
    match run_study_blocking(cfg, opts, Arc::new(runner)) {
        Ok(report) => {
            print_stdout(&format!("{}\n", report.summary_table()))?;
            Ok(0)
        }
        Err(e @ StudyError::Interrupted { .. }) => {
            print_stderr(&format!("error: {e}\n"));
            // 128 + the signal's number: 130 for SIGINT, 143 for SIGTERM.
            Ok(stop_signal::exit_code().unwrap_or(130))
        }
        Err(e) => Err(e.into()),
    }
}

/// Writes `text` to standard output. A closed pipe (`polytune … | head`)
/// is not an error: the reader has what it wanted and the study's files are
/// written, so the command ends quietly.
pub fn print_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(e).context("cannot write to standard output"))
        }
        _ => Ok(()),
    }
}

/// Writes `text` to standard error, ignoring failure (there is nowhere
/// left to report it).
pub fn print_stderr(text: &str) {
    use std::io::Write;
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

fn train_command(a: TrainArgs) -> anyhow::Result<u8> {
    let LoadedConfig {
        config: mut cfg,
        source,
        ..
    } = StudyConfig::load_or_default(a.config.as_deref())?;
    a.inputs.apply(&mut cfg);
    let train_cfg = TrainConfig::from_table(&cfg.train, &source)?;
    let data_cfg = data_config_from_table(&cfg.data, &source)?;
    check_batch_memory(&train_cfg, data_cfg.image_size(), &source)?;
    // The outputs must not overwrite the inputs (or each other).
    let mut inputs: Vec<(&str, &Path)> = Vec::new();
    if let Some(c) = &a.config {
        inputs.push(("the config", c));
    }
    if let Some(w) = &train_cfg.weights {
        inputs.push(("the weights", w));
    }
    let outputs = [
        ("--save", a.save.as_deref()),
        ("--metrics", a.metrics.as_deref()),
    ];
    for (i, (flag, out)) in outputs.iter().enumerate() {
        let Some(out) = out else { continue };
        let mut others = inputs.clone();
        if let (0, Some(m)) = (i, &a.metrics) {
            others.push(("--metrics", m));
        }
        if let Some((what, _)) = others.iter().find(|(_, p)| same_target(out, p)) {
            bail!(
                "{flag} {} is {what}: refusing to overwrite it",
                out.display()
            );
        }
    }
    if a.epsilon.is_empty() {
        bail!("--epsilon needs at least one value");
    }
    if let Some(e) = a
        .epsilon
        .iter()
        .find(|e| e.is_nan() || e.abs() > MAX_ABS_BOUND)
    {
        bail!(
            "--epsilon {e:e} must be in [-{m:e}, {m:e}] (f32's range)",
            m = MAX_ABS_BOUND as f32
        );
    }
    set_threads(train_cfg.threads);
    let seed = a.seed.unwrap_or(cfg.study.seed);
    let data = Dataset::load(&data_cfg)?;
    tracing::info!(
        "training {} on {} ({} classes, {} train / {} valid images at {} px) with ε = {:?}, seed {seed}",
        train_cfg.model,
        data.source().name(),
        data.num_classes(),
        data.train().len(),
        data.valid().len(),
        data.image_size(),
        a.epsilon
    );
    let mut bars = display::TrainBars::new(train_cfg.total_epochs() as u64);
    let opts = TrainOptions {
        epsilon: a.epsilon.clone(),
        seed,
        metrics_csv: a.metrics.clone(),
        save: a.save.clone(),
        test: a.test,
        observer: Some(&mut bars),
    };
    let report = train(&train_cfg, &data, opts);
    bars.finish();
    let report = report?;
    let mut text =
        String::from("epoch  phase     train_loss  val_loss  val_top1  val_top5  seconds\n");
    for m in &report.epochs {
        text += &format!(
            "{:>5}  {:<8}  {:>10.4}  {:>8.4}  {:>8.4}  {:>8.4}  {:>7.2}\n",
            m.epoch,
            m.phase.name(),
            m.train_loss,
            m.valid.loss,
            m.valid.top1,
            m.valid.top5,
            m.seconds
        );
    }
    text += &format!(
        "validation: top-1 {:.4}, top-5 {:.4}, CE {:.4} ({} images); {:.1} s in all\n",
        report.valid.top1, report.valid.top5, report.valid.loss, report.valid.count, report.seconds
    );
    if let Some(t) = &report.test {
        text += &format!(
            "test: top-1 {:.4}, top-5 {:.4}, CE {:.4} ({} images)\n",
            t.top1, t.top5, t.loss, t.count
        );
    }
    if let Some(p) = &a.metrics {
        text += &format!("metrics: {}\n", p.display());
    }
    if let Some(p) = &a.save {
        text += &format!("model: {}\n", p.display());
    }
    print_stdout(&text)?;
    Ok(0)
}

fn trial_command(a: TrialArgs) -> anyhow::Result<u8> {
    run_trial_command(&a.spec)?;
    Ok(0)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn worker_command(a: WorkerArgs) -> anyhow::Result<u8> {
    let target = PgTarget::parse(&a.storage)?;
    if let Some(root) = &a.data_root {
        if !root.is_dir() {
            bail!("--data-root {}: not a directory", root.display());
        }
    }
    let rt = runtime()?;
    let report = rt.block_on(async {
        let mut opts = WorkerOptions::new();
        let store = PgStore::open(&target, &format!("polytune worker {}", opts.id)).await?;
        if let Some(name) = &a.study {
            let row = store.study(name).await?.ok_or_else(|| {
                polytune::storage::StorageError::UnknownStudy {
                    study: name.clone(),
                    target: target.redacted().into(),
                }
            })?;
            opts.study = Some(row.id);
        }
        opts.device = a.device.clone();
        opts.max_trials = a.max_trials;
        opts.data_root = a.data_root.clone();
        let shutdown = polytune::orchestrator::Shutdown::new();
        let listener = shutdown
            .listen_for_signals(std::time::Duration::from_secs_f64(a.grace_s))
            .context("cannot install signal handlers")?;
        tracing::info!("worker {} polling {}", opts.id, target.redacted());
        let report = run_worker(&store, &opts, &shutdown).await;
        listener.abort();
        anyhow::Ok(report?)
    })?;
    print_stdout(&format!(
        "worker: {} trial(s) run, {} given back, {} result(s) discarded after a lost lease\n",
        report.trials, report.given_back, report.lost_claims
    ))?;
    Ok(stop_signal::exit_code().unwrap_or(0))
}

fn serve_command(a: ServeArgs) -> anyhow::Result<u8> {
    let mut opts = polytune::serve::ServeOptions::new(&a.dir, &a.data_root);
    opts.listen = a.listen;
    opts.token_file = a.token_file.clone();
    opts.storage = a.storage.as_deref().map(PgTarget::parse).transpose()?;
    opts.local_workers = a.local_workers;
    opts.max_running = a.max_running;
    opts.max_body_bytes = a.max_body_bytes;
    opts.allow_trial_command = a.allow_trial_command;
    opts.grace = std::time::Duration::from_secs_f64(a.grace_s);
    runtime()?.block_on(async {
        let shutdown = polytune::orchestrator::Shutdown::new();
        let listener = shutdown
            .listen_for_signals(opts.grace)
            .context("cannot install signal handlers")?;
        let served = polytune::serve::serve(opts, shutdown, |_| {}).await;
        listener.abort();
        anyhow::Ok(served?)
    })?;
    // 128 + the signal's number (143 after SIGTERM); 0 when nothing stopped it.
    Ok(stop_signal::exit_code().unwrap_or(0))
}

/// A client of the daemon named by `--server`, with the token from
/// `--token-file` or `POLYTUNE_TOKEN`.
fn client(
    server: &str,
    token_file: Option<&Path>,
) -> anyhow::Result<polytune::serve::client::Client> {
    let token = match token_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("{}: cannot read the token", f.display()))?
                .trim()
                .to_string(),
        ),
        None => std::env::var("POLYTUNE_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()),
    };
    Ok(polytune::serve::client::Client::new(
        server,
        token,
        std::time::Duration::from_secs(60),
    ))
}

fn submit_command(a: SubmitArgs) -> anyhow::Result<u8> {
    let text = std::fs::read_to_string(&a.config)
        .with_context(|| format!("{}: cannot read the study config", a.config.display()))?;
    let c = client(&a.server.server, a.server.token_file.as_deref())?;
    let s = c
        .submit(&text, a.name.as_deref())
        .with_context(|| format!("{} was refused", a.config.display()))?;
    print_stdout(&format!(
        "study {} ({}) {}: polytune status --server {} {}\n",
        s.id, s.name, s.state, a.server.server, s.id
    ))?;
    Ok(0)
}

fn fetch_command(a: FetchArgs) -> anyhow::Result<u8> {
    let c = client(&a.server.server, a.server.token_file.as_deref())?;
    let text = c.tuned_toml(a.id)?;
    polytune::fs::write_atomic(&a.out, text.as_bytes())
        .with_context(|| format!("{}: cannot write the tuned TOML", a.out.display()))?;
    print_stdout(&format!(
        "study {}: tuned TOML written to {}\n",
        a.id,
        a.out.display()
    ))?;
    Ok(0)
}

fn cancel_command(a: CancelArgs) -> anyhow::Result<u8> {
    let c = client(&a.server.server, a.server.token_file.as_deref())?;
    let d = c.cancel(a.id)?;
    print_stdout(&format!("study {}: {}\n", d.summary.id, d.summary.state))?;
    Ok(0)
}

fn status_command(a: StatusArgs) -> anyhow::Result<u8> {
    if let Some(server) = &a.server {
        let c = client(server, a.token_file.as_deref())?;
        let text = match &a.study {
            Some(id) => {
                let id: u64 = id
                    .parse()
                    .with_context(|| format!("{id:?} is not a study id of the daemon"))?;
                polytune::serve::client::render_detail(&c.study(id)?)
            }
            None => polytune::serve::client::render_list(&c.studies()?),
        };
        print_stdout(&text)?;
        return Ok(0);
    }
    let text = match &a.storage {
        None => {
            let dir = a
                .study
                .clone()
                .unwrap_or_else(|| format!("studies/{}", polytune::study::EMBEDDED_NAME));
            status::render(&status::journal_status(Path::new(&dir))?, &[])
        }
        Some(url) => {
            let target = PgTarget::parse(url)?;
            runtime()?.block_on(async {
                let store = PgStore::open(&target, "polytune status").await?;
                let workers = store.workers().await?;
                let studies = match &a.study {
                    Some(name) => vec![store.study(name).await?.ok_or_else(|| {
                        polytune::storage::StorageError::UnknownStudy {
                            study: name.clone(),
                            target: target.redacted().into(),
                        }
                    })?],
                    None => store.studies().await?,
                };
                if studies.is_empty() {
                    return anyhow::Ok(format!("{}: no studies yet\n", target.redacted()));
                }
                let mut text = String::new();
                for (i, s) in studies.iter().enumerate() {
                    let st = status::pg_study_status(&store, s).await?;
                    // Workers once, after the last study.
                    let w: &[_] = if i + 1 == studies.len() {
                        &workers
                    } else {
                        &[]
                    };
                    text += &status::render(&st, w);
                }
                anyhow::Ok(text)
            })?
        }
    };
    print_stdout(&text)?;
    Ok(0)
}
