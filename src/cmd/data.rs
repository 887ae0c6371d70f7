//! `tandem data …`: make datasets. `generate` writes a synthetic task's train, test and SFT
//! splits (see `tandem_datasets::tasks`).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use tandem_datasets::tasks::{self, Format, TaskError, TaskKind, TaskSpec};
use tandem_pipeline::yaml::Document;

/// Arguments of `tandem data`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Generate a synthetic task (arithmetic or countdown): `train`, `test` and `sft` files
    /// with exact answers, difficulty labels and worked solutions, and `dataset.json`.
    Generate(GenerateArgs),
}

#[derive(Debug, clap::Args)]
struct GenerateArgs {
    /// arithmetic or countdown (default: the spec's `task`).
    #[arg(long)]
    task: Option<TaskKind>,
    /// The directory to write into (created; existing split files are replaced).
    #[arg(long)]
    out: PathBuf,
    /// Seed: the same spec and seed give the same files.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Problems in the train split (overrides the spec's `train`; default 3000).
    #[arg(long)]
    train: Option<usize>,
    /// Problems in the test split (overrides the spec's `test`; default 300).
    #[arg(long)]
    test: Option<usize>,
    /// A YAML file holding the task spec (`task`, `train`, `test`, `levels`, `sft`).
    #[arg(long)]
    spec: Option<PathBuf>,
    /// jsonl or parquet.
    #[arg(long, default_value = "jsonl")]
    format: Format,
}

pub fn run(args: Args) -> Result<()> {
    match args.command {
        Command::Generate(a) => generate(&a),
    }
}

fn generate(a: &GenerateArgs) -> Result<()> {
    let (mut spec, document) = match &a.spec {
        Some(path) => {
            let document = Document::read(path)?;
            let spec: TaskSpec = document.deserialize_at(&[])?;
            (spec, Some(document))
        }
        None => match a.task {
            Some(task) => (TaskSpec::new(task), None),
            None => bail!("give --task (arithmetic or countdown) or a --spec file"),
        },
    };
    if let Some(task) = a.task
        && task != spec.task
    {
        bail!(
            "--task {} disagrees with the spec's `task: {}`",
            task.name(),
            spec.task.name()
        );
    }
    spec.train = a.train.unwrap_or(spec.train);
    spec.test = a.test.unwrap_or(spec.test);
    // A spec error names its field; from a file it also gets the file's line.
    let located = |err: TaskError| -> anyhow::Error {
        match (&err, &document) {
            (TaskError::Invalid { field, message }, Some(document)) => {
                document.invalid_at(&[], field, message).into()
            }
            _ => err.into(),
        }
    };
    let task = spec.resolve().map_err(located)?;
    let splits = task.generate(a.seed).map_err(located)?;
    let written = tasks::write_dataset(&a.out, &task, a.seed, &splits, a.format)
        .with_context(|| format!("writing {}", a.out.display()))?;
    for (split, per_level) in &written.counts {
        let total: usize = per_level.iter().map(|(_, n)| n).sum();
        let levels: Vec<String> = per_level.iter().map(|(l, n)| format!("{l} {n}")).collect();
        let unknown = if *split == "sft" {
            format!(", {} asking for help", written.sft_unknown)
        } else {
            String::new()
        };
        println!(
            "{split:<5} {total:>6} rows ({}{unknown})",
            levels.join(", ")
        );
    }
    for file in &written.files {
        println!("wrote {}", file.display());
    }
    Ok(())
}
