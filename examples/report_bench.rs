//! Writes a synthetic run for timing `tandem report` (BENCHMARKS.md): `steps` steps of
//! `per_step` samples (groups of 4) with prompts, local and cloud verdicts, rewards and a cloud
//! ledger, as two workers' part files, and a manifest whose `steps_completed` covers them and
//! whose recorded pipeline names the stages that would have written them (for `tandem replay`).
//!
//! ```text
//! cargo run --release --example report_bench -- /tmp/bench-run 0 1000 1000    # steps 0..1000
//! cargo run --release --example report_bench -- /tmp/bench-run 1000 1010 1000  # append 10
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use tandem_schemas::io::Rows;
use tandem_schemas::layout::{Manifest, RunLayout, RunStatus, StreamEntry};
use tandem_schemas::{
    CloudRecord, PromptRecord, RewardRecord, SampleRecord, StreamKind, Target, VerdictRecord,
};

const GROUP: u32 = 4;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, from, to, per_step] = args.as_slice() else {
        anyhow::bail!("usage: report_bench <run_dir> <from_step> <to_step> <samples_per_step>");
    };
    let run = PathBuf::from(dir);
    let (from, to, per_step): (u64, u64, u32) = (from.parse()?, to.parse()?, per_step.parse()?);
    let layout = RunLayout::new(&run);
    let run_id = run
        .file_name()
        .context("run dir has a name")?
        .to_string_lossy()
        .into_owned();
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for step in from..to {
        let (mut prompts, mut samples, mut verdicts, mut rewards, mut cloud) =
            (vec![], vec![], vec![], vec![], vec![]);
        for p in 0..per_step / GROUP {
            let prompt_id = format!("q{:06}", (u64::from(p) * 7919 + step * 13) % 100_003);
            prompts.push(PromptRecord {
                run_id: run_id.clone(),
                step,
                prompt_id: prompt_id.clone(),
                source: format!("bench.jsonl:{p}"),
                question: "What is 1 + 1?".into(),
                difficulty: Some(["easy", "medium", "hard"][p as usize % 3].into()),
                ..PromptRecord::default()
            });
            let mut asked_any = false;
            for s in 0..GROUP {
                let asked_help = next() % 4 == 0;
                asked_any |= asked_help;
                samples.push(SampleRecord {
                    run_id: run_id.clone(),
                    step,
                    prompt_id: prompt_id.clone(),
                    sample_idx: s,
                    text: "<think>1+1</think><answer>2</answer>".into(),
                    token_ids: vec![1, 2, 3, 4, 5, 6, 7, 8],
                    logprobs: vec![-0.5; 8],
                    asked_help,
                    ..SampleRecord::default()
                });
                verdicts.push(VerdictRecord {
                    run_id: run_id.clone(),
                    step,
                    prompt_id: prompt_id.clone(),
                    sample_idx: Some(s),
                    target: Target::Local,
                    correct: next() % 2 == 0,
                    method: "exact".into(),
                    ..VerdictRecord::default()
                });
                rewards.push(RewardRecord {
                    run_id: run_id.clone(),
                    step,
                    prompt_id: prompt_id.clone(),
                    sample_idx: s,
                    reward: (next() % 1000) as f64 / 1000.0,
                    ..RewardRecord::default()
                });
            }
            if asked_any {
                verdicts.push(VerdictRecord {
                    run_id: run_id.clone(),
                    step,
                    prompt_id: prompt_id.clone(),
                    sample_idx: None,
                    target: Target::Cloud,
                    correct: next() % 10 != 0,
                    method: "exact".into(),
                    ..VerdictRecord::default()
                });
                cloud.push(CloudRecord {
                    run_id: run_id.clone(),
                    step,
                    prompt_id,
                    model: "sim".into(),
                    tokens_in: 60,
                    tokens_out: 20,
                    cost_usd: 0.0001,
                    ..CloudRecord::default()
                });
            }
        }
        let half = samples.len() / 2;
        let parts = [
            ("prompts", Rows::Prompts(prompts), 0),
            ("rollouts", Rows::Samples(samples.split_off(half)), 1),
            ("rollouts", Rows::Samples(samples), 0),
            ("verdicts", Rows::Verdicts(verdicts), 0),
            ("reward", Rows::Rewards(rewards), 0),
            ("cloud", Rows::Cloud(cloud), 0),
        ];
        for (stream, rows, worker) in parts {
            rows.write_part(&layout.part(stream, step, worker))?;
        }
    }
    let streams = [
        ("prompts", StreamKind::Prompts),
        ("rollouts", StreamKind::Samples),
        ("cloud", StreamKind::Cloud),
        ("verdicts", StreamKind::Verdicts),
        ("reward", StreamKind::Rewards),
    ];
    Manifest {
        run_id,
        status: RunStatus::Complete,
        pipeline_file: "synthetic".into(),
        // The pipeline such a run comes from, so `tandem replay` can stand in for its stages.
        config: serde_json::json!({
            "run": { "name": "synthetic", "prompts_per_step": per_step / GROUP, "group_size": GROUP, "seed": 0 },
            "stages": [
                { "id": "prompts", "kind": "source.jsonl", "params": { "path": "synthetic.jsonl" } },
                { "id": "rollouts", "kind": "generate.offline" },
                { "id": "cloud", "kind": "cloud.openai", "params": { "base_url": "http://127.0.0.1:9/v1", "model": "synthetic" } },
                { "id": "verdicts", "kind": "verify.exact" },
                { "id": "reward", "kind": "reward.collab" }
            ]
        }),
        seed: 0,
        workers: 2,
        processes: 1,
        versions: BTreeMap::new(),
        streams: streams
            .iter()
            .map(|(name, kind)| StreamEntry {
                name: (*name).into(),
                kind: *kind,
                stage: (*name).into(),
            })
            .collect(),
        steps_completed: to,
        parent: None,
        error: None,
        checkpointed: false,
        resumed_at: vec![],
    }
    .write(&layout)?;
    Ok(())
}
