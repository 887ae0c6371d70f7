//! `tandem serve`: the trained model behind an OpenAI-compatible endpoint, the cloud called
//! only when it asks, within a budget (the server is `tandem_serve`; docs/serve.md).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use tandem_serve::{BudgetWindow, ServeConfig, config::TokenSource};

/// Arguments of `tandem serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The device model: a local HF directory (a checkpoint of a run, for instance).
    model: PathBuf,
    /// The cloud's OpenAI-compatible base URL (up to `/v1`), e.g. `tandem cloud-sim`'s.
    #[arg(long)]
    cloud: String,
    /// The cloud model.
    #[arg(long, default_value = "sim-oracle")]
    cloud_model: String,
    /// The environment variable holding the cloud's API key (never the key itself).
    #[arg(long)]
    api_key_env: Option<String>,
    /// The largest share of requests that may go to the cloud.
    #[arg(long, default_value_t = 0.3)]
    budget: f64,
    /// Count the budget's share over the last N requests (default: every request since start).
    #[arg(long, value_name = "N")]
    budget_window: Option<usize>,
    /// The template the model was trained with (`arithmetic`, `countdown`, `math`): its
    /// `_task` variant answers capped requests. Without it, the bare question in the model's
    /// own chat template.
    #[arg(long)]
    template: Option<String>,
    /// Render prompts as plain text, not through the model's chat template.
    #[arg(long)]
    no_chat: bool,
    /// Stop strings (repeatable; default: the template's, as `tandem eval` uses).
    #[arg(long)]
    stop: Vec<String>,
    /// Most new tokens of a device answer (a request's `max_tokens` may lower it).
    #[arg(long, default_value_t = 512)]
    max_new_tokens: usize,
    /// Device temperature unless a request sets one (0 = greedy).
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// The name `/v1/models` lists (default: the model directory's name).
    #[arg(long)]
    name: Option<String>,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Torch intra-op threads (0 = libtorch's default).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Address to listen on (port 0: any free port; the ready line names it).
    #[arg(long, default_value = "127.0.0.1:8000")]
    bind: String,
    /// Requests waiting for the device at most; more are answered 429 with Retry-After.
    #[arg(long, default_value_t = 256)]
    queue: usize,
    /// Requests per device batch at most.
    #[arg(long, default_value_t = 32)]
    max_batch: usize,
    /// How long the device waits for more requests to join a batch, in milliseconds.
    #[arg(long, default_value_t = 5)]
    batch_window_ms: u64,
    /// The environment variable holding the bearer token clients must send.
    #[arg(long, conflicts_with = "token_file")]
    token_env: Option<String>,
    /// A file whose first line is the bearer token clients must send.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Time limit of one cloud attempt, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    cloud_timeout_ms: u64,
    /// Retries of a cloud call that failed in a way that heals (timeouts, 429, 5xx).
    #[arg(long, default_value_t = 2)]
    cloud_retries: u32,
    /// US dollars per million cloud prompt tokens (for the ledger's cost).
    #[arg(long, default_value_t = 0.0)]
    price_in: f64,
    /// US dollars per million cloud completion tokens.
    #[arg(long, default_value_t = 0.0)]
    price_out: f64,
    /// Where the ledger's run directory (`serve-<time>`) is created.
    #[arg(long, default_value = "runs")]
    out: PathBuf,
    /// How often the ledger writes a part file, in seconds.
    #[arg(long, default_value_t = 10.0)]
    ledger_flush_secs: f64,
    /// Stop (and flush the ledger) when standard input closes.
    #[arg(long)]
    exit_on_stdin_eof: bool,
}

pub fn run(args: Args) -> Result<()> {
    let mut config = ServeConfig::new(args.model, args.cloud);
    if let Some(name) = args.name {
        config.model_name = name;
    }
    config.template = args
        .template
        .as_deref()
        .map(ServeConfig::parse_template)
        .transpose()?;
    config.chat = !args.no_chat;
    config.stop = args.stop;
    config.max_new_tokens = args.max_new_tokens;
    config.temperature = args.temperature;
    config.device = args.device;
    config.threads = args.threads;
    config.cloud_model = args.cloud_model;
    config.cloud_key_env = args.api_key_env;
    config.cloud_timeout = Duration::from_millis(args.cloud_timeout_ms);
    config.cloud_retries = args.cloud_retries;
    config.prices.input_per_million = args.price_in;
    config.prices.output_per_million = args.price_out;
    config.budget = args.budget;
    config.budget_window = args
        .budget_window
        .map_or(BudgetWindow::Total, BudgetWindow::Requests);
    config.bind = args.bind;
    config.queue = args.queue;
    config.max_batch = args.max_batch;
    config.batch_window = Duration::from_millis(args.batch_window_ms);
    config.client_token = match (args.token_env, args.token_file) {
        (Some(name), _) => Some(TokenSource::Env(name)),
        (None, Some(file)) => Some(TokenSource::File(file)),
        (None, None) => None,
    };
    config.out = args.out;
    anyhow::ensure!(
        args.ledger_flush_secs.is_finite() && args.ledger_flush_secs > 0.0,
        "--ledger-flush-secs {}: must be > 0",
        args.ledger_flush_secs
    );
    config.ledger_flush = Duration::from_secs_f64(args.ledger_flush_secs);
    config.exit_on_stdin_eof = args.exit_on_stdin_eof;
    tandem_serve::serve(config, |addr| {
        // The ready line: scripts and tests read the address from it.
        println!("tandem serve listening on http://{addr}/v1");
        let _ = std::io::stdout().flush();
    })?;
    Ok(())
}
