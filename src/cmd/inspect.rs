//! `tandem inspect`: a stored run as a person reads it: its manifest, the rows of one stream
//! (filtered with `--where` and `--prompt-id`), or one prompt's group across every stream.

mod group;

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::reader::{FileReader, SerializedFileReader};
use tandem_schemas::layout::{Manifest, RunLayout};

/// Arguments of `tandem inspect`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The run directory (`runs/<run_id>`).
    run_dir: PathBuf,
    /// Show the rows of this stream (a stage id, or `errors`).
    #[arg(long)]
    stream: Option<String>,
    /// Only this step.
    #[arg(long)]
    step: Option<u64>,
    /// At most this many rows.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Cut cells (and sample texts in the group view) longer than this many characters.
    #[arg(long, default_value_t = 60)]
    width: usize,
    /// Do not cut cells or texts.
    #[arg(long)]
    full: bool,
    /// Only rows whose COLUMN, formatted as shown, is VALUE (`--where asked_help=true`;
    /// `help` stands for `asked_help`). Repeatable: every one must hold.
    #[arg(long = "where", value_name = "COLUMN=VALUE", requires = "stream")]
    wheres: Vec<String>,
    /// Only this prompt's rows; without --stream (or with --group), its group as a person
    /// reads it: question, each sample with its verdict, reward and advantage, the cloud
    /// answer and its verdict, the filter decision.
    #[arg(long)]
    prompt_id: Option<String>,
    /// Show the group view of --prompt-id even with --stream.
    #[arg(long, requires = "prompt_id")]
    group: bool,
}

impl Args {
    fn width(&self) -> usize {
        if self.full { usize::MAX } else { self.width }
    }
}

pub fn run(args: Args) -> Result<()> {
    let layout = RunLayout::new(&args.run_dir);
    let manifest = Manifest::read(&layout).map_err(anyhow::Error::msg)?;
    match (&args.stream, &args.prompt_id) {
        (_, Some(prompt_id)) if args.group || args.stream.is_none() => {
            group::show(&layout, &manifest, prompt_id, args.step, args.width())
        }
        (None, _) => summary(&layout, &manifest),
        (Some(stream), _) => rows(&layout, &manifest, stream, &args),
    }
}

fn summary(layout: &RunLayout, manifest: &Manifest) -> Result<()> {
    println!("run      {}", manifest.run_id);
    println!(
        "status   {:?} ({} step(s) complete)",
        manifest.status, manifest.steps_completed
    );
    println!("pipeline {}", manifest.pipeline_file);
    if manifest.processes > 1 {
        println!(
            "seed     {}   workers {} in each of {} processes",
            manifest.seed, manifest.workers, manifest.processes
        );
    } else {
        println!("seed     {}   workers {}", manifest.seed, manifest.workers);
    }
    if let Some(parent) = &manifest.parent {
        println!("parent   {parent}");
    }
    if let Some(error) = &manifest.error {
        println!("error    {error}");
    }
    let mut table = table(&["stream", "rows", "steps", "stage"]);
    for entry in &manifest.streams {
        let steps = layout.steps(&entry.name)?;
        let mut rows = 0i64;
        for &step in &steps {
            for part in layout.parts(&entry.name, step)? {
                let reader = SerializedFileReader::new(
                    File::open(&part).with_context(|| part.display().to_string())?,
                )?;
                rows += reader.metadata().file_metadata().num_rows();
            }
        }
        table.add_row(vec![
            format!("{} ({})", entry.name, entry.kind),
            rows.to_string(),
            steps.len().to_string(),
            entry.stage.clone(),
        ]);
    }
    println!("{table}");
    Ok(())
}

fn rows(layout: &RunLayout, manifest: &Manifest, stream: &str, args: &Args) -> Result<()> {
    if !manifest.streams.iter().any(|s| s.name == stream) {
        let known: Vec<_> = manifest.streams.iter().map(|s| s.name.as_str()).collect();
        bail!(
            "run {} has no stream `{stream}`; it has: {}",
            manifest.run_id,
            known.join(", ")
        );
    }
    let steps = match args.step {
        Some(step) => vec![step],
        None => layout.steps(stream)?,
    };
    let mut wheres: Vec<(String, String)> = Vec::new();
    for condition in &args.wheres {
        let Some((column, value)) = condition.split_once('=') else {
            bail!("--where {condition}: expected COLUMN=VALUE, for example asked_help=true");
        };
        wheres.push((column.trim().to_owned(), value.to_owned()));
    }
    if let Some(prompt_id) = &args.prompt_id {
        wheres.push(("prompt_id".into(), prompt_id.clone()));
    }
    let mut table: Option<Table> = None;
    let mut shown = 0usize;
    let options = FormatOptions::default().with_null("∅");
    'files: for step in steps {
        for part in layout.parts(stream, step)? {
            for batch in read(&part)? {
                let header: Vec<String> = batch
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect();
                let table = table.get_or_insert_with(|| table_of(&header));
                let formatters = batch
                    .columns()
                    .iter()
                    .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
                    .collect::<Result<Vec<_>, _>>()?;
                let conditions = wheres
                    .iter()
                    .map(|(column, value)| Ok((column_index(&header, column, stream)?, value)))
                    .collect::<Result<Vec<_>>>()?;
                for row in 0..batch.num_rows() {
                    if !conditions
                        .iter()
                        .all(|(i, value)| formatters[*i].value(row).to_string() == **value)
                    {
                        continue;
                    }
                    if shown == args.limit {
                        break 'files;
                    }
                    table.add_row(
                        formatters
                            .iter()
                            .map(|f| cut(&f.value(row).to_string(), args.width()))
                            .collect::<Vec<_>>(),
                    );
                    shown += 1;
                }
            }
        }
    }
    match table {
        Some(table) => println!("{table}\n{shown} row(s) shown (--limit {})", args.limit),
        None => println!(
            "stream `{stream}` has no rows{}{}",
            args.step
                .map(|s| format!(" at step {s}"))
                .unwrap_or_default(),
            if wheres.is_empty() { "" } else { " that match" }
        ),
    }
    Ok(())
}

/// The index of a `--where` column; `help` is `asked_help` (the samples stream's flag).
fn column_index(header: &[String], column: &str, stream: &str) -> Result<usize> {
    let find = |name: &str| header.iter().position(|h| h == name);
    find(column)
        .or_else(|| (column == "help").then(|| find("asked_help")).flatten())
        .with_context(|| {
            format!(
                "--where: stream `{stream}` has no column `{column}`; its columns: {}",
                header.join(", ")
            )
        })
}

fn read(part: &Path) -> Result<Vec<arrow::record_batch::RecordBatch>> {
    let file = File::open(part).with_context(|| part.display().to_string())?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)?.build()?;
    Ok(reader.collect::<Result<Vec<_>, _>>()?)
}

pub(crate) fn cut(cell: &str, width: usize) -> String {
    let flat = cell.replace('\n', "⏎");
    if flat.chars().count() <= width {
        return flat;
    }
    let mut cut: String = flat.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

fn table(header: &[&str]) -> Table {
    table_of(&header.iter().map(|h| h.to_string()).collect::<Vec<_>>())
}

fn table_of(header: &[String]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header);
    table
}
