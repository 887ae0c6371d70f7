//! What `tandem eval` does: a routing policy against a cloud budget.
//!
//! Two ordinary pipelines run over the test set, each stored like any run:
//! - `eval-help`: greedy answers with the help option (the task's template), the cloud's answer to
//!   every question (`ask: all`; answers are cached on disk), verdicts on both;
//! - `eval-local`: greedy answers without the help option (the `_task` template), verdicts.
//!
//! Joined on the prompt id they give one [`Outcome`] per question, and every figure follows
//! from those (`tandem_stages::eval`): the policy's asks go to the cloud, in a seeded order,
//! until `floor(budget × N)` are out; asks past the cap are answered by the re-generation
//! without the help option (counted as `capped`). The baselines (device only, cloud only, naive
//! offloading at the same call rate) and the routing curve use the same answers; the curve is
//! drawn to `eval/accuracy_vs_call_rate.{png,svg}`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use tandem_datasets::{FieldMap, FieldOverrides, Preset};
use tandem_pipeline::{Plan, PlanOptions, RunOptions};
use tandem_stages::eval::{AtBudget, Outcome, RoutingCurve, joined_outcomes, ranking_for_policy};

/// The task: which templates, stop strings and verifier an evaluation uses.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Task {
    /// Template I, `verify.countdown` (answers in `<answer>` tags).
    Countdown,
    /// Template II, `verify.math` (answers in `\boxed{}`).
    Math,
    /// (Ours) the short `arithmetic` template, `verify.math` on `<answer>` tags: the demo's.
    Arithmetic,
}

impl Task {
    fn name(self) -> &'static str {
        match self {
            Task::Countdown => "countdown",
            Task::Math => "math",
            Task::Arithmetic => "arithmetic",
        }
    }

    /// The template with the help option (its `_task` variant is the one without).
    fn template(self) -> tandem_stages::prompt::NamedTemplate {
        use tandem_stages::prompt::NamedTemplate;
        match self {
            Task::Countdown => NamedTemplate::Countdown,
            Task::Math => NamedTemplate::Math,
            Task::Arithmetic => NamedTemplate::Arithmetic,
        }
    }

    /// `(stop strings, verify stage, the cloud's user message)` as YAML values.
    fn yaml_parts(self) -> (String, &'static str, &'static str) {
        // The template's stop strings, as `tandem serve` uses them too.
        let stop = serde_json::Value::from(self.template().stop_strings().to_vec()).to_string();
        match self {
            Task::Countdown => (
                stop,
                "{ id: verdicts, kind: verify.countdown }",
                r#""{question} Return the final equation in <answer> </answer> tags.""#,
            ),
            Task::Math => (
                stop,
                // The default extractors: a box, an answer tag, Minerva's "The final answer
                // is …" sentence, a closing "The answer is …".
                "{ id: verdicts, kind: verify.math }",
                r#""{question} Put your final answer within \\boxed{}.""#,
            ),
            Task::Arithmetic => (
                stop,
                "{ id: verdicts, kind: verify.math, params: { extract: [answer_tag] } }",
                r#""{question} Return the final answer in <answer> </answer> tags.""#,
            ),
        }
    }
}

/// Arguments of `tandem eval`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The model: a local HF directory (a checkpoint of a run, for instance).
    pub model: PathBuf,
    /// The test set: JSON Lines, a Parquet file, or a directory of Parquet shards.
    #[arg(long)]
    pub dataset: PathBuf,
    /// Map a field: `--field question=problem --field answer=solution --field id=uid`
    /// (`id`, `question`, `answer`, `difficulty`; defaults as in `source.jsonl`, or the
    /// preset's).
    #[arg(long = "field", value_name = "NAME=COLUMN")]
    pub fields: Vec<String>,
    /// A real benchmark's mapping (`gsm8k`, `math-lighteval`, `math-500`, `amc23`,
    /// `minerva-math`, `countdown-tasks`, `aime`), passed to the source stage as `preset:`: its
    /// field names, question and reference answer, so the dataset is read as downloaded;
    /// `--field`s override its field names.
    #[arg(long, value_name = "NAME")]
    pub preset: Option<String>,
    /// The task (templates and verifier).
    #[arg(long, value_enum)]
    pub task: Task,
    /// The cloud's OpenAI-compatible base URL (up to `/v1`).
    #[arg(long)]
    pub cloud: String,
    /// The cloud model.
    #[arg(long, default_value = "sim-oracle")]
    pub cloud_model: String,
    /// The environment variable holding the cloud's API key (never the key itself).
    #[arg(long)]
    pub api_key_env: Option<String>,
    /// The largest share of questions that may go to the cloud.
    #[arg(long, default_value_t = 0.3)]
    pub budget: f64,
    /// Seeds the order capped asks are chosen in.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Sampling temperature of the device's answers (0 = greedy).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// Torch intra-op threads of the device model (0 = libtorch's default).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Most new tokens per answer.
    #[arg(long, default_value_t = 1024)]
    pub max_new_tokens: usize,
    /// Use only the first N questions.
    #[arg(long)]
    pub limit: Option<usize>,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Directory the two runs are created in.
    #[arg(long, default_value = "runs")]
    pub out: PathBuf,
    /// Also evaluate the learned-router baseline, trained on this stored run's prompts and
    /// local verdicts (e.g. an `eval-local` run over a training split): a classifier on the
    /// model's representation of each prompt, thresholded to the budget.
    #[arg(long, value_name = "RUN_DIR", conflicts_with = "router_train")]
    pub router_from: Option<PathBuf>,
    /// Also evaluate the learned-router baseline, trained on this dataset (e.g. the training
    /// split, with the same `--field`s): the model answers it without the help option first,
    /// stored as a `router-train` run, and the router learns which questions it solved.
    #[arg(long, value_name = "DATASET")]
    pub router_train: Option<PathBuf>,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What `tandem eval` reports (also written to `eval.json` in the help run's directory).
#[derive(Debug, Serialize)]
pub struct Report {
    /// The model directory.
    pub model: String,
    /// The task's name.
    pub task: &'static str,
    /// The largest share of questions sent to the cloud.
    pub budget: f64,
    /// The seed of the order capped asks are chosen in.
    pub seed: u64,
    /// The run with the help option (and the cloud's answers).
    pub help_run: String,
    /// The run without it.
    pub local_run: String,
    /// The policy at the budget.
    pub policy: Figures,
    /// Questions whose cloud call failed (counted as a wrong cloud answer).
    pub cloud_failures: usize,
    /// Every question answered on the device, without the help option.
    pub local_only: f64,
    /// Every question answered by the cloud.
    pub cloud_only: f64,
    /// Random offloading at the policy's call rate (expected accuracy).
    pub naive_offloading: f64,
    /// RouteLLM's APGR of the policy's ranking (asks first), `None` without a gap.
    pub apgr: Option<f64>,
    /// The call rate at which the policy's ranking recovers half the device→cloud gap.
    pub cpt50: Option<f64>,
    /// `(call rate, accuracy)` of the policy's ranking.
    pub curve: Vec<(f64, f64)>,
    /// The learned-router baseline, with `--router-from`.
    pub router: Option<RouterFigures>,
}

/// The device without the help option, plus a learned router offloading up to the budget.
#[derive(Debug, Serialize)]
pub struct RouterFigures {
    /// The run it was trained on, and how many of its questions the device solved.
    trained_on: String,
    examples: usize,
    solved: usize,
    /// Its training loss (mean BCE) at the end.
    final_bce: f64,
    /// ROC AUC of its `P(solved)` on the evaluation's questions against whether the device,
    /// without the help option, solved them: 0.5 is chance, 1 a perfect router. `None` when
    /// the device solved all of them or none.
    pub auc: Option<f64>,
    sent: usize,
    /// Share of questions it sent to the cloud.
    pub call_rate: f64,
    /// Accuracy on the questions it kept on the device.
    pub conditional_accuracy: f64,
    /// Accuracy with its choices sent to the cloud up to the budget.
    pub overall_accuracy: f64,
    apgr: Option<f64>,
    /// `(call rate, accuracy)` of the router's ranking.
    curve: Vec<(f64, f64)>,
}

/// [`AtBudget`] as it is reported.
#[derive(Debug, Serialize)]
pub struct Figures {
    /// Questions evaluated.
    pub questions: usize,
    /// Questions the model asked for help on.
    pub asked: usize,
    /// Asks sent to the cloud, up to the budget.
    pub sent: usize,
    /// Asks past the budget, answered on the device without the help option.
    pub capped: usize,
    /// `asked / questions`.
    pub help_ratio: f64,
    /// `sent / questions`.
    pub call_rate: f64,
    /// Share of questions answered correctly on the device.
    pub local_accuracy: f64,
    /// Accuracy on the questions answered on the device.
    pub conditional_accuracy: f64,
    /// Accuracy with the asks sent to the cloud up to the budget.
    pub overall_accuracy: f64,
}

impl From<&AtBudget> for Figures {
    fn from(a: &AtBudget) -> Figures {
        Figures {
            questions: a.questions,
            asked: a.asked,
            sent: a.sent,
            capped: a.capped,
            help_ratio: a.help_ratio,
            call_rate: a.call_rate,
            local_accuracy: a.local_accuracy,
            conditional_accuracy: a.conditional_accuracy,
            overall_accuracy: a.overall_accuracy,
        }
    }
}

/// An evaluation's report and its two runs.
pub struct Evaluation {
    /// The figures.
    pub report: Report,
    /// The run with the help option; the report is in its `eval/` directory.
    pub help_run: PathBuf,
    /// Per question, in prompt-id order: the outcome with the help option, and whether the
    /// answer without it was right.
    pub outcomes: Vec<(Outcome, bool)>,
}

/// Runs both pipelines, joins them, and writes `eval/eval.json`, `eval.md` and the curve.
pub fn evaluate(args: &Args) -> Result<Evaluation> {
    if !(0.0..=1.0).contains(&args.budget) {
        bail!("--budget {}: must be a share between 0 and 1", args.budget);
    }
    let (fields, preset) = field_map(&args.fields, args.preset.as_deref())?;
    let questions = count_questions(&args.dataset, &fields, preset, args.limit)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("{}: cannot create", args.out.display()))?;
    let help = run_pipeline(args, (&fields, preset), questions, Pipeline::Help)?;
    let local = run_pipeline(args, (&fields, preset), questions, Pipeline::Local)?;
    let (outcomes, cloud_failures) = joined_outcomes(&help, &local).map_err(anyhow::Error::msg)?;
    let mut report = report(args, &help, &local, &outcomes, cloud_failures);
    let router_run = match (&args.router_from, &args.router_train) {
        (Some(run), _) => Some(run.clone()),
        (None, Some(dataset)) => {
            let on_train = Args {
                dataset: dataset.clone(),
                limit: None,
                ..args.clone()
            };
            let questions = count_questions(dataset, &fields, preset, None)?;
            Some(run_pipeline(
                &on_train,
                (&fields, preset),
                questions,
                Pipeline::RouterTrain,
            )?)
        }
        (None, None) => None,
    };
    if let Some(train) = &router_run {
        report.router = Some(router(args, train, &help, &outcomes, report.cloud_only)?);
    }
    let json = serde_json::to_string_pretty(&report)?;
    let dir = help.join("eval");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("eval.json"), format!("{json}\n"))?;
    std::fs::write(dir.join("eval.md"), markdown(&report))?;
    let mut lines = vec![
        ("the policy".to_owned(), report.curve.clone()),
        (
            "naive offloading (expected)".to_owned(),
            vec![(0.0, report.local_only), (1.0, report.cloud_only)],
        ),
    ];
    if let Some(router) = &report.router {
        lines.push(("device + learned router".to_owned(), router.curve.clone()));
    }
    crate::plot::write_rate_lines(
        &dir,
        "accuracy_vs_call_rate",
        "Overall accuracy vs call rate",
        ("call rate", "overall accuracy"),
        lines,
    )?;
    Ok(Evaluation {
        report,
        help_run: help,
        outcomes,
    })
}

/// How many questions `dataset` holds (up to `limit`), read as the source stage reads it: the
/// `--field` map over the preset's fields (or the defaults), the preset building each row.
fn count_questions(
    dataset: &Path,
    fields: &serde_json::Value,
    preset: Option<&'static Preset>,
    limit: Option<usize>,
) -> Result<usize> {
    let overrides: FieldOverrides =
        serde_json::from_value(fields.clone()).with_context(|| format!("--field: {fields}"))?;
    let mapping = overrides.over(preset.map_or_else(FieldMap::default, Preset::fields));
    let questions = tandem_datasets::load_with_preset(dataset, &mapping, preset, limit)
        .map_err(anyhow::Error::msg)?
        .len();
    if questions == 0 {
        bail!("{}: no questions", dataset.display());
    }
    Ok(questions)
}

/// The pipelines `tandem eval` runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pipeline {
    /// With the help option, and the cloud's answer to every question.
    Help,
    /// Without the help option.
    Local,
    /// Without the help option, over the router's training questions.
    RouterTrain,
}

/// `--field name=column` pairs as `source.*`'s `fields` object, and the `--preset`.
fn field_map(
    pairs: &[String],
    preset: Option<&str>,
) -> Result<(serde_json::Value, Option<&'static Preset>)> {
    let preset = match preset {
        None => None,
        Some(name) => Some(Preset::named(name).with_context(|| {
            format!(
                "--preset {name}: no such preset (the presets are {})",
                Preset::known()
            )
        })?),
    };
    let mut map = serde_json::Map::new();
    for pair in pairs {
        let Some((name, column)) = pair.split_once('=') else {
            bail!("--field {pair}: expected NAME=COLUMN, e.g. question=problem");
        };
        if !["id", "question", "answer", "difficulty"].contains(&name) {
            bail!("--field {pair}: NAME is one of id, question, answer, difficulty");
        }
        map.insert(name.to_owned(), column.into());
    }
    Ok((serde_json::Value::Object(map), preset))
}

/// Writes and runs one of the two pipelines; returns its run directory.
fn run_pipeline(
    args: &Args,
    (fields, preset): (&serde_json::Value, Option<&'static Preset>),
    questions: usize,
    pipeline: Pipeline,
) -> Result<PathBuf> {
    let (stop, verify, cloud_prompt) = args.task.yaml_parts();
    let quote = |p: &Path| serde_json::Value::from(p.display().to_string()).to_string();
    let with_help = pipeline == Pipeline::Help;
    let (name, template) = match pipeline {
        Pipeline::Help => ("eval-help", args.task.template()),
        Pipeline::Local => ("eval-local", args.task.template().without_help()),
        Pipeline::RouterTrain => ("router-train", args.task.template().without_help()),
    };
    let template = template.name();
    let limit = args
        .limit
        .map(|l| format!(", limit: {l}"))
        .unwrap_or_default();
    let preset = preset
        .map(|p| format!(", preset: {}", p.name()))
        .unwrap_or_default();
    let source = if args.dataset.extension().is_some_and(|e| e == "jsonl") {
        "source.jsonl"
    } else {
        "source.parquet"
    };
    let mut yaml = format!(
        r#"# Written by `tandem eval` ({name}); run it again with `tandem run` to reproduce.
run: {{ name: {name}, seed: {seed}, prompts_per_step: {questions}, group_size: 1, steps: 1 }}
stages:
  - {{ id: prompts, kind: {source}, params: {{ path: {dataset}, shuffle: false, fields: {fields}{limit}{preset} }} }}
  - id: rollouts
    kind: generate.policy
    params: {{ model: {model}, device: {device}, threads: {threads}, template: {template}, temperature: {temperature}, max_new_tokens: {max_new}, stop: {stop}, batch_prompts: 64 }}
"#,
        seed = args.seed,
        dataset = quote(&args.dataset),
        model = quote(&args.model),
        device = serde_json::Value::from(args.device.clone()),
        max_new = args.max_new_tokens,
        threads = args.threads,
        temperature = args.temperature,
    );
    if with_help {
        let key = args
            .api_key_env
            .as_ref()
            .map(|k| format!(", api_key_env: {}", serde_json::Value::from(k.clone())))
            .unwrap_or_default();
        yaml.push_str(&format!(
            "  - {{ id: cloud, kind: cloud.openai, params: {{ base_url: {url}, model: {model}, ask: all, prompt_template: {cloud_prompt}{key} }} }}\n",
            url = serde_json::Value::from(args.cloud.clone()),
            model = serde_json::Value::from(args.cloud_model.clone()),
        ));
    }
    yaml.push_str(&format!("  - {verify}\n"));
    let file = args.out.join(format!(".{name}.yaml"));
    std::fs::write(&file, &yaml).with_context(|| format!("{}: cannot write", file.display()))?;
    let plan = Plan::from_file(&file, &PlanOptions::default())?;
    let options = RunOptions {
        out_dir: args.out.clone(),
        ..Default::default()
    };
    let summary = tandem_pipeline::run(plan, options)?;
    let kept = summary.run_dir.join("pipeline.yaml");
    std::fs::rename(&file, &kept).with_context(|| format!("{}", kept.display()))?;
    eprintln!("{name}: {}", summary.run_dir.display());
    Ok(summary.run_dir)
}

fn report(
    args: &Args,
    help: &Path,
    local: &Path,
    joined: &[(Outcome, bool)],
    cloud_failures: usize,
) -> Report {
    let outcomes: Vec<Outcome> = joined.iter().map(|(o, _)| *o).collect();
    let n = outcomes.len().max(1) as f64;
    let ranking = ranking_for_policy(&outcomes, args.seed);
    let policy = AtBudget::new(&outcomes, &ranking, args.budget);
    let local_only = joined.iter().filter(|(_, l)| *l).count() as f64 / n;
    let cloud_only = outcomes.iter().filter(|o| o.cloud_correct).count() as f64 / n;
    let curve = RoutingCurve::new(&outcomes, &ranking);
    let name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    Report {
        model: args.model.display().to_string(),
        task: args.task.name(),
        budget: args.budget,
        seed: args.seed,
        help_run: name(help),
        local_run: name(local),
        naive_offloading: local_only + policy.call_rate * (cloud_only - local_only),
        policy: Figures::from(&policy),
        cloud_failures,
        local_only,
        cloud_only,
        apgr: curve.apgr(cloud_only),
        cpt50: curve.call_rate_to_recover(cloud_only, 0.5),
        curve: curve.points,
        router: None,
    }
}

/// Trains the router on `train`'s questions and applies it to the evaluation's questions.
fn router(
    args: &Args,
    train: &Path,
    help: &Path,
    joined: &[(Outcome, bool)],
    cloud_only: f64,
) -> Result<RouterFigures> {
    use tandem_stages::eval::{Router, RouterTraining, prompt_features, solved_questions};
    use tandem_stages::policy::{DeviceSpec, Policy, PromptFormat};
    let fail = |e: String| anyhow::anyhow!(e);
    let device: DeviceSpec = args.device.parse()?;
    let policy = Policy::load(&args.model, &device, None)?;
    // The router serves the device answering without the help option: encode as it sees them.
    let template = args.task.template().without_help();
    let format = PromptFormat {
        chat: true,
        system_prompt: template.system_prompt(),
        template: template.user_turn().to_owned(),
    };
    let encode = |questions: &mut dyn Iterator<Item = &String>| -> Result<Vec<Vec<u32>>> {
        questions
            .map(|q| Ok(format.encode(&policy.tokenizer, q)?))
            .collect()
    };
    let examples = solved_questions(train).map_err(fail)?;
    let labels: Vec<bool> = examples.values().map(|(_, solved)| *solved).collect();
    let ids = encode(&mut examples.values().map(|(q, _)| q))?;
    let router = Router::train(
        &prompt_features(&policy.model, &ids, 16),
        &labels,
        &RouterTraining::default(),
    );
    // The evaluation's questions, in the prompt-id order of `joined`.
    let questions = solved_questions(help).map_err(fail)?;
    let ids = encode(&mut questions.values().map(|(q, _)| q))?;
    if questions.len() != joined.len() {
        bail!(
            "{}: {} prompts stored but {} questions judged; the run is incomplete",
            help.display(),
            questions.len(),
            joined.len()
        );
    }
    let features = prompt_features(&policy.model, &ids, 16);
    let solved: Vec<bool> = joined
        .iter()
        .map(|(_, without_help)| *without_help)
        .collect();
    let auc = tandem_stages::eval::roc_auc(&router.solve_probability(&features), &solved);
    let scores = router.offload_scores(&features);
    // The router "asks" for every question, in the order of its scores: the budget then takes
    // the least likely to be solved, exactly as it takes the policy's asks.
    let outcomes: Vec<Outcome> = joined
        .iter()
        .map(|(o, without_help)| Outcome {
            asked: true,
            local_correct: *without_help,
            cloud_correct: o.cloud_correct,
        })
        .collect();
    let ranking = tandem_stages::eval::ranking_by_scores(&scores);
    let at = AtBudget::new(&outcomes, &ranking, args.budget);
    let curve = RoutingCurve::new(&outcomes, &ranking);
    Ok(RouterFigures {
        trained_on: train.display().to_string(),
        examples: labels.len(),
        solved: labels.iter().filter(|s| **s).count(),
        final_bce: router.losses.last().copied().unwrap_or(f64::NAN),
        auc,
        sent: at.sent,
        call_rate: at.call_rate,
        conditional_accuracy: at.conditional_accuracy,
        overall_accuracy: at.overall_accuracy,
        apgr: curve.apgr(cloud_only),
        curve: curve.points,
    })
}

/// The report as the Markdown table `tandem eval` prints and writes to `eval.md`.
pub fn markdown(r: &Report) -> String {
    let p = &r.policy;
    let pct = |x: f64| format!("{:.1}", 100.0 * x);
    let opt = |x: Option<f64>| x.map_or("–".to_owned(), |v| format!("{v:.3}"));
    format!(
        "# Evaluation of {model} ({task}, budget {budget}%)\n\n\
         {n} questions; the policy asked for help on {asked} ({help}%), {sent} went to the cloud \
         ({call}%), {capped} past the cap were answered on the device.\n\n\
         | method | call rate % | conditional acc. % | overall acc. % |\n|---|---|---|---|\n\
         | device only (no help option) | 0.0 | {lo} | {lo} |\n\
         | naive offloading (same call rate) | {call} | – | {naive} |\n\
         | **the policy** | {call} | {cond} | {overall} |\n\
         {router}\
         | cloud only | 100.0 | – | {cloud} |\n\n\
         Local accuracy {local}%. Routing: APGR {apgr}, CPT(50%) {cpt}.{router_auc} Cloud calls that failed: {fail}.\n",
        model = r.model,
        task = r.task,
        budget = pct(r.budget),
        n = p.questions,
        asked = p.asked,
        help = pct(p.help_ratio),
        sent = p.sent,
        call = pct(p.call_rate),
        capped = p.capped,
        lo = pct(r.local_only),
        naive = pct(r.naive_offloading),
        cond = pct(p.conditional_accuracy),
        overall = pct(p.overall_accuracy),
        cloud = pct(r.cloud_only),
        local = pct(p.local_accuracy),
        apgr = opt(r.apgr),
        cpt = opt(r.cpt50),
        fail = r.cloud_failures,
        router_auc = r.router.as_ref().map_or(String::new(), |q| format!(
            " Learned router: AUC {} for \"solved on the device\".",
            opt(q.auc)
        )),
        router = r.router.as_ref().map_or(String::new(), |q| format!(
            "| device + learned router | {} | {} | {} |\n",
            pct(q.call_rate),
            pct(q.conditional_accuracy),
            pct(q.overall_accuracy)
        )),
    )
}
