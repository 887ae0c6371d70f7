//! Pipeline file → validated [`Plan`]: everything that can be wrong with a pipeline is found
//! here, before anything runs or writes, and reported at its file:line:column.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tandem_schemas::{Facet, Facets};
use tandem_stages::{
    BuildContext, Built, Registry, ResumePoint, Role, RunSettings, Scope, SharedState, StageError,
};

use crate::spec::PipelineSpec;
use crate::yaml::{Document, Location, Seg, YamlError};

/// Why a pipeline cannot run.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The file is not valid YAML, or a value has the wrong type or name.
    #[error(transparent)]
    Yaml(#[from] YamlError),
    /// A stage cannot be built or is in the wrong place.
    #[error("{location}: stage `{stage}` ({kind}): {message}")]
    Stage {
        /// Where the stage (or the offending value) is written.
        location: Location,
        /// The stage's id.
        stage: String,
        /// The stage's kind.
        kind: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The pipeline as a whole is inconsistent.
    #[error("{location}: {message}")]
    Pipeline {
        /// Where the inconsistency is written.
        location: Location,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// One validated stage.
pub struct PlannedStage {
    /// Its YAML id.
    pub id: Arc<str>,
    /// Its kind.
    pub kind: String,
    /// Its contract.
    pub role: Role,
    /// Its parameters as written (after `${ENV}` and `--set`).
    pub params: serde_json::Value,
    /// Whether its output stream is stored.
    pub materialize: bool,
    /// What it reads.
    pub needs: Facets,
    /// What it adds.
    pub provides: Facets,
    /// Whether it sees groups as they arrive or whole steps.
    pub scope: Scope,
    /// Streams a sink writes itself (a learner's `metrics`).
    pub sink_streams: Vec<(String, tandem_schemas::StreamKind)>,
    /// Whether it is a sink that updates the policy (a learner).
    pub updates_policy: bool,
}

impl PlannedStage {
    /// The streams this stage writes when materialised: its id if it provides one facet,
    /// `<id>.<facet>` for each if it provides several.
    pub fn streams(&self) -> Vec<(String, Facet)> {
        let facets: Vec<Facet> = self.provides.iter().collect();
        match facets.as_slice() {
            [one] => vec![(self.id.to_string(), *one)],
            many => many
                .iter()
                .map(|f| (format!("{}.{}", self.id, f.name()), *f))
                .collect(),
        }
    }
}

/// A pipeline that passed every check, with its stages built once (the instances worker 0 runs).
pub struct Plan {
    /// The pipeline file.
    pub file: PathBuf,
    /// The resolved document (for the manifest).
    pub document: Document,
    /// The typed spec.
    pub spec: PipelineSpec,
    /// Settings every stage sees.
    pub settings: RunSettings,
    /// Steps the run will take.
    pub steps: u64,
    /// The stages in order.
    pub stages: Vec<PlannedStage>,
    /// The built instances, in stage order (taken by the first worker).
    pub built: Vec<Built>,
    /// The registry the stages came from (other workers build their own instances with it).
    pub registry: Registry,
    /// What the instances of a stage on different workers share (every build gets it).
    pub shared: SharedState,
}

/// Options for reading a pipeline.
#[derive(Clone, Debug, Default)]
pub struct PlanOptions {
    /// `--set key.path=value` overrides, applied in order after `${ENV}` interpolation.
    pub sets: Vec<String>,
}

impl Plan {
    /// Reads, resolves and validates a pipeline file with the built-in kinds.
    pub fn from_file(file: &Path, options: &PlanOptions) -> Result<Plan, PlanError> {
        Plan::from_file_with(file, options, Registry::builtin())
    }

    /// Reads, resolves and validates a pipeline file with the given registry.
    pub fn from_file_with(
        file: &Path,
        options: &PlanOptions,
        registry: Registry,
    ) -> Result<Plan, PlanError> {
        let mut document = Document::read(file)?;
        document.interpolate_env(&|name| std::env::var(name).ok())?;
        for set in &options.sets {
            document.set(set)?;
        }
        Plan::from_document(document, registry)
    }

    /// Validates an already resolved document.
    pub fn from_document(document: Document, registry: Registry) -> Result<Plan, PlanError> {
        Plan::from_document_with(document, registry, None)
    }

    /// Validates an already resolved document for a run that starts at `resume` (stages that
    /// keep state across steps load it from there while they are built).
    pub fn from_document_with(
        document: Document,
        registry: Registry,
        resume: Option<ResumePoint>,
    ) -> Result<Plan, PlanError> {
        let spec: PipelineSpec = document.deserialize_at(&[])?;
        let file = document.file().to_owned();
        let at = |path: &[Seg]| document.locate(path);
        let key = |k: &str| Seg::Key(k.to_owned());

        let mut settings = settings(&spec, &document)?;
        settings.resume = resume;
        if spec.stages.is_empty() {
            return Err(PlanError::Pipeline {
                location: at(&[key("stages")]),
                message: "the pipeline has no stages; it needs at least a source".into(),
            });
        }

        let base_dir = working_dir();
        let shared = SharedState::default();
        let mut stages: Vec<PlannedStage> = Vec::new();
        let mut built = Vec::new();
        let mut available = Facets::NONE;
        let mut seen_sink = false;
        for (i, stage) in spec.stages.iter().enumerate() {
            let here = |field: &str| at(&[key("stages"), Seg::Index(i), key(field)]);
            let stage_error = |location: Location, message: String| PlanError::Stage {
                location,
                stage: stage.id.clone(),
                kind: stage.kind.clone(),
                message,
            };
            if !valid_id(&stage.id) {
                return Err(stage_error(
                    here("id"),
                    "ids are made of letters, digits, `_` and `-` (they name directories)".into(),
                ));
            }
            if let Some(first) = stages.iter().position(|s| *s.id == *stage.id) {
                return Err(stage_error(
                    here("id"),
                    format!(
                        "the id is already used by stage {} (ids name the stored streams, so they must be unique)",
                        first + 1
                    ),
                ));
            }
            if stage.id == "errors" {
                return Err(stage_error(
                    here("id"),
                    "`errors` is the name of the run's error stream; choose another id".into(),
                ));
            }
            let Some(kind) = registry.get(&stage.kind) else {
                return Err(stage_error(
                    here("kind"),
                    format!(
                        "unknown stage kind `{}`; known kinds: {}",
                        stage.kind,
                        registry.names().join(", ")
                    ),
                ));
            };
            let ctx = BuildContext {
                stage_id: stage.id.as_str().into(),
                base_dir: base_dir.clone(),
                run: settings.clone(),
                shared: shared.clone(),
            };
            let instance = (kind.build)(&stage.params, &ctx).map_err(|e| match e {
                StageError::Params { path, message } => PlanError::from(document.invalid_at(
                    &[key("stages"), Seg::Index(i), key("params")],
                    &path,
                    &message,
                )),
                other => stage_error(here("params"), other.to_string()),
            })?;
            let role = role_of(&instance);
            match (i, role) {
                (0, Role::Source) => {}
                (0, _) => {
                    return Err(stage_error(
                        here("kind"),
                        format!(
                            "the first stage must be a source (source.jsonl, source.parquet, source.replay), not a {role}"
                        ),
                    ));
                }
                (_, Role::Source) => {
                    return Err(stage_error(
                        here("kind"),
                        "a pipeline has one source, and it comes first".into(),
                    ));
                }
                (_, Role::Sink) => seen_sink = true,
                (_, _) if seen_sink => {
                    return Err(stage_error(
                        here("kind"),
                        "sinks come last: move this stage before the first sink".into(),
                    ));
                }
                _ => {}
            }
            let (needs, provides) = (instance.needs(), instance.provides());
            let missing = needs.missing_from(available);
            if !missing.is_empty() {
                let names: Vec<_> = missing.iter().map(|f| f.name()).collect();
                return Err(stage_error(
                    here("kind"),
                    format!(
                        "needs {} but no stage before it provides {}; stages before it provide {}{}",
                        names.join(" and "),
                        if missing.len() == 1 { "it" } else { "them" },
                        available,
                        hint(&missing),
                    ),
                ));
            }
            available = available.union(provides);
            stages.push(PlannedStage {
                id: stage.id.as_str().into(),
                kind: stage.kind.clone(),
                role,
                params: stage.params.clone(),
                materialize: stage.materialize,
                needs,
                provides,
                scope: instance.scope(),
                sink_streams: match &instance {
                    Built::Sink(sink) => sink.streams(),
                    _ => Vec::new(),
                },
                updates_policy: matches!(&instance, Built::Sink(sink) if sink.updates_policy()),
            });
            built.push(instance);
        }
        let natural = match &built[0] {
            Built::Source(source) => source.natural_steps(),
            _ => unreachable!("checked above: the first stage is a source"),
        };
        let steps = settings.steps.unwrap_or(natural);
        Ok(Plan {
            file,
            document,
            spec,
            settings,
            steps,
            stages,
            built,
            registry,
            shared,
        })
    }

    /// Builds a fresh instance of every stage (for another worker; sources and sinks only run
    /// on the first worker, so they are not built again).
    pub fn build_worker_instances(&self) -> Result<Vec<Option<Built>>, StageError> {
        let base_dir = working_dir();
        self.stages
            .iter()
            .map(|stage| match stage.role {
                Role::Source | Role::Sink => Ok(None),
                Role::Generator | Role::Group => {
                    let ctx = BuildContext {
                        stage_id: stage.id.clone(),
                        base_dir: base_dir.clone(),
                        run: self.settings.clone(),
                        shared: self.shared.clone(),
                    };
                    self.registry
                        .build(&stage.kind, &stage.params, &ctx)
                        .map(Some)
                }
            })
            .collect()
    }
}

/// Relative paths in parameters are relative to where tandem is started, as with TRL and verl
/// command lines (so `--set stages.0.params.run=runs/x` means what it says).
fn working_dir() -> PathBuf {
    std::env::current_dir().unwrap_or_default()
}

fn role_of(built: &Built) -> Role {
    match built {
        Built::Source(_) => Role::Source,
        Built::Generator(_) => Role::Generator,
        Built::Group(_) => Role::Group,
        Built::Sink(_) => Role::Sink,
    }
}

fn hint(missing: &[Facet]) -> &'static str {
    match missing.first() {
        Some(Facet::Samples) => " (add a generator such as generate.offline after the source)",
        Some(Facet::Verdicts) => " (add a verify stage such as verify.exact before it)",
        _ => "",
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn settings(spec: &PipelineSpec, document: &Document) -> Result<RunSettings, PlanError> {
    let run = &spec.run;
    let at = |field: &str| document.locate(&[Seg::Key("run".into()), Seg::Key(field.into())]);
    let g = run.group_size;
    if g == 0 {
        return Err(PlanError::Pipeline {
            location: at("group_size"),
            message: "run.group_size must be at least 1".into(),
        });
    }
    let prompts = match (run.prompts_per_step, run.batch_size) {
        (None, None) => {
            return Err(PlanError::Pipeline { location: document.locate(&[Seg::Key("run".into())]), message: "run needs `prompts_per_step` (prompts a step) or `batch_size` (samples a step, a multiple of group_size)".into() });
        }
        (Some(p), None) => p,
        (p, Some(b)) => {
            if b % g != 0 {
                return Err(PlanError::Pipeline {
                    location: at("batch_size"),
                    message: format!(
                        "run.batch_size ({b}) is not a multiple of run.group_size ({g}): every prompt needs all of its {g} samples in the same step"
                    ),
                });
            }
            if let Some(p) = p.filter(|&p| p * g != b) {
                return Err(PlanError::Pipeline {
                    location: at("batch_size"),
                    message: format!(
                        "run.batch_size ({b}) disagrees with prompts_per_step × group_size ({p} × {g} = {})",
                        p * g
                    ),
                });
            }
            b / g
        }
    };
    if prompts == 0 {
        return Err(PlanError::Pipeline {
            location: at("prompts_per_step"),
            message: "a step needs at least one prompt".into(),
        });
    }
    Ok(RunSettings {
        batch_size: prompts,
        group_size: g,
        steps: run.steps,
        seed: run.seed,
        max_staleness: run.max_staleness,
        resume: None,
    })
}
