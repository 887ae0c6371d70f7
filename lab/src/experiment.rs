//! `tandem experiment`: one task suite, several seeds, every method of a comparison trained and
//! evaluated at the same budget, on the same test split, as a table with the spread over seeds.
//!
//! The suite is a demo file (`configs/demo.yaml`, `configs/demo-ci.yaml`): its data, tokenizer,
//! model, warm start, simulated cloud, evaluation and RL pipeline. A method is a set of
//! overrides of that RL pipeline (`stages.5.kind=advantage.grpo`) and, optionally, its own
//! evaluation budget. A cell is one method at one seed: an ordinary RL run and an ordinary
//! evaluation, stored under `seed-<S>/<method>/`, with `cell.json` written last. Rerunning the
//! same command resumes: a cell with its `cell.json` is never computed again.
//!
//! Writes `experiment.json` (every cell's figures), `table.md` (mean ± sd over seeds) and
//! `help_rate.{png,svg}` (each method's help rate per RL step, the mean over seeds).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use tandem_pipeline::report::{self, Breakdown};
use tandem_pipeline::yaml::Document;

use crate::demo::{self, DemoConfig, PipelineRef, Source};

/// An experiment file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// The directory's name under `--out`.
    pub name: String,
    /// The demo file whose suite every cell shares, relative to the experiment file.
    pub suite: PathBuf,
    /// Overrides of the suite, as `tandem demo --set` takes them (`train.set=[run.steps=60]`).
    #[serde(default)]
    pub suite_set: Vec<String>,
    /// The seeds: one warm start each, and one cell per method.
    pub seeds: Vec<u64>,
    /// The methods compared.
    pub methods: Vec<Method>,
}

/// One method: overrides of the suite's RL pipeline.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Method {
    /// Its name in the table and its cells' directory (letters, digits, `-`, `_`).
    pub name: String,
    /// Overrides of the suite's RL pipeline, applied after the suite's own `train.set`.
    #[serde(default)]
    pub set: Vec<String>,
    /// The evaluation budget (default: the suite's `eval.budget`).
    #[serde(default)]
    pub budget: Option<f64>,
    /// A model trained without the help option: report the baselines built on it (device
    /// only, with naive offloading at the budget, with a learned router) instead of its own
    /// routing, which never asks.
    #[serde(default)]
    pub baselines: bool,
}

/// Where an experiment writes, and how many cells run at once.
#[derive(Clone, Debug)]
pub struct Options {
    /// The experiment's directory is `<out>/<name>`; rerunning resumes it.
    pub out: PathBuf,
    /// Where warm starts are cached (shared with `tandem demo`).
    pub cache: PathBuf,
    /// Cells run at once.
    pub jobs: usize,
}

/// What one cell measured on the test split.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Cell {
    /// The method.
    pub method: String,
    /// The seed.
    pub seed: u64,
    /// The evaluation budget.
    pub budget: f64,
    /// The RL run.
    pub train_run: PathBuf,
    /// The evaluation's run with the help option.
    pub eval_run: PathBuf,
    /// The policy's share of questions sent to the cloud.
    pub call_rate: f64,
    /// The policy's help rate (asks, sent or not).
    pub help_rate: f64,
    /// Accuracy on the questions the policy kept on the device.
    pub conditional_accuracy: f64,
    /// Accuracy with its asks sent to the cloud up to the budget.
    pub overall_accuracy: f64,
    /// The model without the help option.
    pub local_only: f64,
    /// Every question answered by the cloud.
    pub cloud_only: f64,
    /// The learned router on this model (methods with `baselines`).
    pub router: Option<demo::RouterBaseline>,
    /// The help rate of the RL run's training samples, per step.
    pub help_per_step: Vec<(f64, f64)>,
    /// Seconds the cell took.
    pub seconds: f64,
}

/// One row of the table: a method (or a baseline) over the seeds.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// What the row is.
    pub name: String,
    /// `(mean, sd)` over seeds of the call ratio, the conditional accuracy and the overall
    /// accuracy at the budget.
    pub call_ratio: (f64, f64),
    /// See `call_ratio`.
    pub conditional_accuracy: (f64, f64),
    /// See `call_ratio`.
    pub overall_accuracy: (f64, f64),
    /// Seeds in the row.
    pub seeds: usize,
    /// The evaluation budget of the method's cells (none for cloud only).
    pub budget: Option<f64>,
}

/// What `tandem experiment` reports (also `experiment.json`).
#[derive(Clone, Debug, Serialize)]
pub struct ExperimentReport {
    /// The experiment's directory.
    pub dir: PathBuf,
    /// Its settings.
    pub config: ExperimentConfig,
    /// Every cell.
    pub cells: Vec<Cell>,
    /// The table's rows.
    pub rows: Vec<Row>,
    /// The table (Markdown).
    pub table: String,
    /// Cells computed by this invocation (the others were read back).
    pub computed: usize,
}

/// Reads an experiment file and its suite; errors say the file, line and column.
pub fn load(file: &Path, sets: &[String]) -> Result<(ExperimentConfig, PathBuf)> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("{}: cannot read", file.display()))?;
    let mut document = Document::parse(file, &text)?;
    document.interpolate_env(&|name| std::env::var(name).ok())?;
    for set in sets {
        document.set(set)?;
    }
    let config: ExperimentConfig = document.deserialize_at(&[])?;
    if config.seeds.is_empty() || config.methods.is_empty() {
        bail!("{}: an experiment needs seeds and methods", file.display());
    }
    let mut seen = std::collections::BTreeSet::new();
    if let Some(seed) = config.seeds.iter().find(|seed| !seen.insert(**seed)) {
        bail!("{}: seed {seed} twice", file.display());
    }
    let mut names = std::collections::BTreeSet::new();
    for method in &config.methods {
        let ok = !method.name.is_empty()
            && method
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok {
            bail!(
                "{}: method name {:?}: use letters, digits, - and _",
                file.display(),
                method.name
            );
        }
        if !names.insert(&method.name) {
            bail!("{}: method {:?} twice", file.display(), method.name);
        }
        if let Some(b) = method.budget
            && !(0.0..=1.0).contains(&b)
        {
            bail!(
                "{}: method {}: budget {b} is not a share between 0 and 1",
                file.display(),
                method.name
            );
        }
    }
    let suite = file.parent().unwrap_or(Path::new("")).join(&config.suite);
    Ok((config, suite))
}

/// The suite at one seed.
fn suite_at(suite: &Path, config: &ExperimentConfig, seed: u64) -> Result<(DemoConfig, Source)> {
    let mut sets = config.suite_set.clone();
    sets.push(format!("seed={seed}"));
    demo::load(Some(suite), &sets)
}

/// Plans every cell's RL pipeline on the suite's fresh model: a bad override fails here, before
/// anything runs, naming the method.
pub fn validate(config: &ExperimentConfig, suite: &Path) -> Result<()> {
    let (demo_config, source) = suite_at(suite, config, config.seeds[0])?;
    let trains: Vec<(String, PipelineRef)> = config
        .methods
        .iter()
        .map(|m| (format!("method {}", m.name), train_ref(&demo_config, m)))
        .collect();
    demo::validate_with(&demo_config, &source, &trains)?;
    Ok(())
}

fn train_ref(config: &DemoConfig, method: &Method) -> PipelineRef {
    PipelineRef {
        pipeline: config.train.pipeline.clone(),
        set: config
            .train
            .set
            .iter()
            .chain(&method.set)
            .cloned()
            .collect(),
    }
}

/// Runs (or resumes) the experiment.
pub fn run(config: &ExperimentConfig, suite: &Path, options: &Options) -> Result<ExperimentReport> {
    validate(config, suite)?;
    let dir = options.out.join(&config.name);
    std::fs::create_dir_all(&dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let settings = dir.join("settings.json");
    if settings.exists() {
        let text = std::fs::read_to_string(&settings)?;
        let before: ExperimentConfig = serde_json::from_str(&text)
            .with_context(|| format!("{}: not an experiment's settings", settings.display()))?;
        if before != *config {
            bail!(
                "{}: this experiment ran with other settings; use another --out or name, or \
                 delete the directory",
                dir.display()
            );
        }
    } else {
        std::fs::write(&settings, serde_json::to_string_pretty(config)? + "\n")?;
    }
    eprintln!("experiment: {}", dir.display());

    // The cells to compute; a cell with its cell.json is read back.
    let mut todo = Vec::new();
    let mut cells = Vec::new();
    for method in &config.methods {
        for &seed in &config.seeds {
            let cell_dir = dir.join(format!("seed-{seed}")).join(&method.name);
            let record = cell_dir.join("cell.json");
            if record.exists() {
                let text = std::fs::read_to_string(&record)?;
                cells.push(
                    serde_json::from_str::<Cell>(&text)
                        .with_context(|| format!("{}: not a cell", record.display()))?,
                );
            } else {
                todo.push(Todo {
                    seed,
                    method: method.clone(),
                    dir: cell_dir,
                });
            }
        }
    }
    let computed = todo.len();
    eprintln!(
        "experiment: {} cell(s) to compute, {} done before",
        computed,
        cells.len()
    );

    // A seed's warm start is made by the first of its cells to run, while the others wait for
    // it. The cells are queued method by method, so the first cells of the seeds come first
    // and the warm starts are made side by side.
    let warm_starts: BTreeMap<u64, OnceLock<Result<Suite, String>>> = config
        .seeds
        .iter()
        .map(|seed| (*seed, OnceLock::new()))
        .collect();
    let warm_start = |seed: u64| -> Result<Suite> {
        let made = warm_starts[&seed].get_or_init(|| {
            let make = || {
                let (demo_config, source) = suite_at(suite, config, seed)?;
                let seed_dir = dir.join(format!("seed-{seed}"));
                std::fs::create_dir_all(&seed_dir)?;
                let label = format!("seed {seed} warm start");
                eprintln!("{label}");
                let warm =
                    demo::warm_start(&demo_config, &source, &options.cache, &seed_dir, &label)?;
                Ok::<_, anyhow::Error>(Suite {
                    config: demo_config,
                    source,
                    warm,
                })
            };
            make().map_err(|e| format!("seed {seed}: warm start: {e:#}"))
        });
        made.clone().map_err(anyhow::Error::msg)
    };

    let results = in_parallel(options.jobs, todo, |next| {
        let label = format!("seed {} {}", next.seed, next.method.name);
        let result = warm_start(next.seed).and_then(|suite| next.run(&suite, &label));
        match &result {
            Ok(cell) => eprintln!(
                "{label}: done in {:.0} s, overall {:.1}% at call rate {:.1}%",
                cell.seconds,
                cell.overall_accuracy * 100.0,
                cell.call_rate * 100.0
            ),
            Err(e) => eprintln!("{label}: failed: {e:#}"),
        }
        (label, result)
    });
    let mut failed = Vec::new();
    for (label, result) in results {
        match result {
            Ok(cell) => cells.push(cell),
            Err(e) => failed.push(format!("{label}: {e:#}")),
        }
    }
    cells.sort_by(|a, b| (a.seed, &a.method).cmp(&(b.seed, &b.method)));
    if !failed.is_empty() {
        bail!(
            "{} cell(s) failed (the finished ones are kept; rerun to resume):\n{}",
            failed.len(),
            failed.join("\n")
        );
    }
    let rows = rows(config, &cells);
    let table = table(config, &rows);
    let report = ExperimentReport {
        dir: dir.clone(),
        config: config.clone(),
        cells,
        rows,
        table,
        computed,
    };
    std::fs::write(
        dir.join("experiment.json"),
        serde_json::to_string_pretty(&report)? + "\n",
    )?;
    std::fs::write(dir.join("table.md"), &report.table)?;
    plot_help(&dir, config, &report.cells)?;
    Ok(report)
}

/// `work` on every item, on up to `jobs` threads, taking the items in order; the results in the
/// order they finished.
fn in_parallel<T: Send, R: Send>(
    jobs: usize,
    items: Vec<T>,
    work: impl Fn(T) -> R + Sync,
) -> Vec<R> {
    let queue = Mutex::new(items.into_iter().rev().collect::<Vec<_>>());
    let results = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| {
                loop {
                    let Some(next) = queue.lock().expect("queue").pop() else {
                        return;
                    };
                    let result = work(next);
                    results.lock().expect("results").push(result);
                }
            });
        }
    });
    results.into_inner().expect("results")
}

/// A seed's suite and its warm start.
#[derive(Clone)]
struct Suite {
    config: DemoConfig,
    source: Source,
    warm: demo::WarmStart,
}

/// A cell to compute.
struct Todo {
    seed: u64,
    method: Method,
    dir: PathBuf,
}

impl Todo {
    fn run(&self, suite: &Suite, label: &str) -> Result<Cell> {
        let started = Instant::now();
        // A cell stopped midway leaves runs but no cell.json: start it again from scratch.
        if self.dir.exists() {
            std::fs::remove_dir_all(&self.dir)?;
        }
        std::fs::create_dir_all(&self.dir)?;
        let mut config = suite.config.clone();
        config.train = train_ref(&suite.config, &self.method);
        if let Some(budget) = self.method.budget {
            config.eval.budget = budget;
        }
        config.eval.router = self.method.baselines;
        let cloud = demo::spawn_cloud(&config)?;
        let trained = demo::train(
            &config,
            &suite.source,
            &suite.warm,
            &cloud.base_url(),
            &self.dir,
            label,
        );
        let (train_run, model) = match trained {
            Ok(t) => t,
            Err(e) => {
                cloud.shutdown();
                return Err(e);
            }
        };
        let evaluated =
            demo::evaluate_model(&config, &suite.warm, &model, &cloud.base_url(), &self.dir);
        cloud.shutdown();
        let evaluated = evaluated?;
        let cell = Cell {
            method: self.method.name.clone(),
            seed: self.seed,
            budget: config.eval.budget,
            eval_run: evaluated.eval_run.clone(),
            call_rate: evaluated.call_rate,
            help_rate: evaluated.help_rate,
            conditional_accuracy: evaluated.conditional_accuracy,
            overall_accuracy: evaluated.overall_accuracy,
            local_only: evaluated.local_only,
            cloud_only: evaluated.cloud_only,
            router: evaluated.router.clone(),
            help_per_step: help_per_step(&train_run)?,
            train_run,
            seconds: started.elapsed().as_secs_f64(),
        };
        std::fs::write(
            self.dir.join("cell.json"),
            serde_json::to_string_pretty(&cell)? + "\n",
        )?;
        Ok(cell)
    }
}

/// The RL run's help rate over its training samples, per step.
fn help_per_step(train_run: &Path) -> Result<Vec<(f64, f64)>> {
    let run = report::summarise(train_run, &train_run.join("report"), false, 64)?;
    Ok(run
        .steps_of(&Breakdown::All)
        .iter()
        .map(|(step, tally)| (*step as f64, tally.help_rate()))
        .collect())
}

/// Mean and sample standard deviation (0 for one value).
fn mean_sd(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, 0.0);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// The table's rows, in the paper's order: cloud only, then per method (its baselines first).
fn rows(config: &ExperimentConfig, cells: &[Cell]) -> Vec<Row> {
    let row = |name: String, picked: Vec<(f64, f64, f64)>| Row {
        name,
        call_ratio: mean_sd(&picked.iter().map(|p| p.0).collect::<Vec<_>>()),
        conditional_accuracy: mean_sd(&picked.iter().map(|p| p.1).collect::<Vec<_>>()),
        overall_accuracy: mean_sd(&picked.iter().map(|p| p.2).collect::<Vec<_>>()),
        seeds: picked.len(),
        budget: None,
    };
    let mut out = vec![row(
        "cloud only".into(),
        cells
            .iter()
            .filter(|c| c.method == config.methods[0].name)
            .map(|c| (1.0, f64::NAN, c.cloud_only))
            .collect(),
    )];
    let mut by_method: BTreeMap<&str, Vec<&Cell>> = BTreeMap::new();
    for cell in cells {
        by_method.entry(&cell.method).or_default().push(cell);
    }
    for method in &config.methods {
        let of = by_method.remove(method.name.as_str()).unwrap_or_default();
        let first = out.len();
        if method.baselines {
            let name = &method.name;
            out.push(row(
                format!("{name} (device only)"),
                of.iter()
                    .map(|c| (0.0, c.local_only, c.local_only))
                    .collect(),
            ));
            out.push(row(
                format!("{name} + naive offloading"),
                of.iter()
                    .map(|c| {
                        let b = c.budget;
                        (b, c.local_only, (1.0 - b) * c.local_only + b * c.cloud_only)
                    })
                    .collect(),
            ));
            out.push(row(
                format!("{name} + learned router"),
                of.iter()
                    .filter_map(|c| c.router.as_ref())
                    .map(|r| (r.call_rate, r.conditional_accuracy, r.overall_accuracy))
                    .collect(),
            ));
        } else {
            out.push(row(
                method.name.clone(),
                of.iter()
                    .map(|c| (c.call_rate, c.conditional_accuracy, c.overall_accuracy))
                    .collect(),
            ));
        }
        let budget = of.first().map(|c| c.budget);
        for r in &mut out[first..] {
            r.budget = budget;
        }
    }
    out
}

fn table(config: &ExperimentConfig, rows: &[Row]) -> String {
    let pct = |(mean, sd): (f64, f64)| {
        if mean.is_finite() {
            format!("{:.1} ± {:.1}", mean * 100.0, sd * 100.0)
        } else {
            "–".into()
        }
    };
    let seeds: Vec<String> = config.seeds.iter().map(u64::to_string).collect();
    // A budget sweep gives its methods different budgets: then each row says its own.
    let budgets: Vec<f64> = rows.iter().filter_map(|r| r.budget).collect();
    let swept = budgets.iter().any(|b| (b - budgets[0]).abs() > 1e-12);
    let mut out = if swept {
        format!(
            "Seeds {} (mean ± sd, %), the same test split for every row, each evaluated at its budget.\n\n\
             | method | budget | call ratio | conditional accuracy | overall accuracy |\n|---|---:|---:|---:|---:|\n",
            seeds.join(", ")
        )
    } else {
        format!(
            "Seeds {} (mean ± sd, %), the same test split and budget for every row.\n\n\
             | method | call ratio | conditional accuracy | overall accuracy |\n|---|---:|---:|---:|\n",
            seeds.join(", ")
        )
    };
    for r in rows {
        let budget = match (swept, r.budget) {
            (false, _) => String::new(),
            (true, Some(b)) => format!(" {:.0}% |", b * 100.0),
            (true, None) => " – |".into(),
        };
        out.push_str(&format!(
            "| {} |{budget} {} | {} | {} |\n",
            r.name,
            pct(r.call_ratio),
            pct(r.conditional_accuracy),
            pct(r.overall_accuracy)
        ));
    }
    out
}

/// Each RL method's help rate per step, the mean over seeds.
fn plot_help(dir: &Path, config: &ExperimentConfig, cells: &[Cell]) -> Result<()> {
    let mut series = Vec::new();
    for method in config.methods.iter().filter(|m| !m.baselines) {
        let mut sums: BTreeMap<u64, (f64, usize)> = BTreeMap::new();
        for cell in cells.iter().filter(|c| c.method == method.name) {
            for (step, rate) in &cell.help_per_step {
                let entry = sums.entry(*step as u64).or_default();
                entry.0 += rate;
                entry.1 += 1;
            }
        }
        let points = sums
            .into_iter()
            .map(|(step, (sum, n))| (step as f64, sum / n as f64))
            .collect();
        series.push((method.name.clone(), points));
    }
    crate::plot::write_rate_lines(
        dir,
        "help_rate",
        "Call-for-help rate per RL step (training samples, mean over seeds)",
        ("step", "help rate"),
        series,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, budget: Option<f64>) -> Row {
        Row {
            name: name.into(),
            call_ratio: (0.25, 0.05),
            conditional_accuracy: (0.5, 0.1),
            overall_accuracy: (0.6, 0.0),
            seeds: 2,
            budget,
        }
    }

    #[test]
    fn a_budget_sweep_gives_each_row_its_budget_and_a_plain_table_does_not() {
        let config = ExperimentConfig {
            name: "x".into(),
            suite: "s.yaml".into(),
            suite_set: vec![],
            seeds: vec![0, 1],
            methods: vec![],
        };
        let swept = table(
            &config,
            &[
                row("cloud only", None),
                row("gapg-20", Some(0.2)),
                row("gapg-50", Some(0.5)),
            ],
        );
        assert!(
            swept.contains("| method | budget | call ratio |"),
            "{swept}"
        );
        assert!(
            swept.contains("| gapg-20 | 20% | 25.0 ± 5.0 | 50.0 ± 10.0 | 60.0 ± 0.0 |"),
            "{swept}"
        );
        assert!(swept.contains("| cloud only | – |"), "{swept}");
        let plain = table(&config, &[row("cloud only", None), row("gapg", Some(0.3))]);
        assert!(
            plain.contains("the same test split and budget for every row"),
            "{plain}"
        );
        assert!(plain.contains("| gapg | 25.0 ± 5.0 |"), "{plain}");
    }
}
