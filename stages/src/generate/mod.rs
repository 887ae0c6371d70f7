//! Generators: what fills in a group's samples.

mod offline;
mod openai;
mod policy;
mod server;

pub use offline::{OfflineConfig, OfflineGenerator};
pub use openai::{OpenAiGenConfig, OpenAiGenerator};
pub use policy::{Devices, PolicyConfig, PolicyGenerator};
pub use server::{LaunchConfig, Sync};

/// Where a generator's weights start: `dir`, or the checkpoint a resumed run continues from,
/// with its version.
pub(crate) fn start_point(
    ctx: &crate::BuildContext,
    dir: &std::path::Path,
) -> crate::Result<(std::path::PathBuf, u64)> {
    let checkpoint = ctx
        .run
        .resume
        .as_ref()
        .and_then(|r| r.checkpoint.as_deref());
    crate::policy::start_point(dir, checkpoint)
        .map_err(|e| crate::StageError::Run(format!("resuming: {e}")))
}

/// The run's [`PolicyHub`], made by the first generator built: where the learner finds the
/// prompt format, the temperature and the newest weights.
pub(crate) fn shared_hub(
    ctx: &crate::BuildContext,
    dir: &std::path::Path,
    start: &(std::path::PathBuf, u64),
    save_dtype: crate::policy::WeightDtype,
    temperature: f64,
    format: &crate::policy::PromptFormat,
) -> crate::Result<std::sync::Arc<crate::policy::PolicyHub>> {
    ctx.shared
        .get_or_try_init(crate::policy::PolicyHub::KEY, || {
            let tokenizer =
                crate::policy::Tokenizer::from_dir(dir).map_err(|e| crate::StageError::Params {
                    path: "model".into(),
                    message: e.to_string(),
                })?;
            let hub = crate::policy::PolicyHub::new(
                dir.to_path_buf(),
                start.clone(),
                save_dtype,
                temperature,
                format.clone(),
                tokenizer,
                ctx.run.max_staleness,
            );
            // With staleness, the steps right after a resume sample from versions the
            // checkpoint kept beside its own.
            if let Some(checkpoint) = ctx.run.resume.as_ref().and_then(|r| r.checkpoint.as_ref()) {
                hub.import_dir(checkpoint).map_err(|e| {
                    crate::StageError::Run(format!("resuming from {}: {e}", checkpoint.display()))
                })?;
            }
            Ok(hub)
        })
}

/// The seed of one prompt's samples at `step`: the run's seed, the step and the prompt id
/// hashed (FNV-1a), so a prompt's samples do not depend on what else the step holds.
pub(crate) fn group_seed(run_seed: u64, step: u64, prompt_id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ run_seed;
    for b in step.to_le_bytes().iter().chain(prompt_id.as_bytes()) {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}
