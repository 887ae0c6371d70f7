//! `reward.collab` → `advantage.gapg` → `filter.adaptive` over generated data, with 1 and 2
//! workers: the stored advantages and D1 set are recomputed from the stored rewards and
//! verdicts, D2 stays within ⌊ρ · |D1|⌋ and meets its condition, and both runs store the same rows.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use tandem_pipeline::{Plan, PlanOptions, RunOptions};
use tandem_schemas::io::Rows;
use tandem_schemas::{
    AdvantageRecord, CloudRecord, ErrorRecord, Facet, Facets, FilterRecord, Group, RewardRecord,
    SampleRecord, Target, VerdictRecord,
};
use tandem_stages::registry::{KindSpec, StageConfig, build_with};
use tandem_stages::{BuildContext, Built, GroupStage, Registry, Role, StepContext};

use crate::common::*;

/// Stands in for `cloud.openai`: answers every prompt some sample asked help for, rightly for
/// two prompts in three (by the prompt id) and wrongly for the rest, so that the filter sees
/// prompts the cloud solved and prompts it did not.
#[derive(serde::Deserialize)]
struct CloudOracle {}

impl StageConfig for CloudOracle {
    fn build(self, _ctx: &BuildContext) -> tandem_stages::Result<Built> {
        Ok(Built::Group(Box::new(self)))
    }
}

impl GroupStage for CloudOracle {
    fn needs(&self) -> Facets {
        Facets::of(&[Facet::Samples])
    }

    fn provides(&self) -> Facets {
        Facets::of(&[Facet::Cloud])
    }

    fn process(&mut self, groups: &mut [Group], _ctx: &StepContext) -> tandem_stages::Result<()> {
        for group in groups {
            if !group.samples.iter().any(|s| s.asked_help) {
                continue;
            }
            let right = group.prompt.prompt_id.bytes().map(u32::from).sum::<u32>() % 3 != 0;
            let answer = match &group.prompt.answer {
                Some(reference) if right => reference.clone(),
                _ => "wrong".to_owned(),
            };
            group.cloud = Some(CloudRecord {
                run_id: group.prompt.run_id.clone(),
                step: group.prompt.step,
                prompt_id: group.prompt.prompt_id.clone(),
                model: "oracle".into(),
                answer: Some(format!("<answer>{answer}</answer>")),
                ..CloudRecord::default()
            });
        }
        Ok(())
    }
}

/// ρ of the pipeline: small enough that the cap binds in some steps.
const RHO: (u64, u64) = (1, 4);

/// A dataset of `prompts` generated questions, one in nine with a blank reference answer (so
/// the verifier, the reward and the advantage stage refuse it), and the pipeline over it.
fn pipeline(dir: &Path, prompts: usize, per_step: usize, group_size: usize, steps: u64) -> Plan {
    let data = dir.join("data.jsonl");
    write_dataset(&data, prompts, group_size, 17);
    let text = std::fs::read_to_string(&data).expect("read dataset");
    let mut lines = String::new();
    for (i, line) in text.lines().enumerate() {
        let mut row: serde_json::Value = serde_json::from_str(line).expect("row");
        if i % 9 == 4 {
            row["solution"] = "".into();
        }
        lines.push_str(&row.to_string());
        lines.push('\n');
    }
    std::fs::write(&data, lines).expect("write dataset");

    let (numerator, denominator) = RHO;
    let yaml = pipeline_yaml(&data, per_step, group_size, steps).replace(
        "  - id: verdicts\n",
        "  - id: cloud\n    kind: test.cloud_oracle\n  - id: verdicts\n",
    ) + &format!(
        "  - id: reward\n    kind: reward.collab\n\
         \x20 - id: adv\n    kind: advantage.gapg\n\
         \x20 - id: filter\n    kind: filter.adaptive\n    params: {{ rho: {numerator}/{denominator} }}\n"
    );
    let path = dir.join("pipeline.yaml");
    std::fs::write(&path, yaml).expect("write pipeline");
    let mut registry = Registry::builtin();
    registry.register(KindSpec {
        name: "test.cloud_oracle",
        role: Role::Group,
        summary: "",
        build: build_with::<CloudOracle>,
    });
    Plan::from_file_with(&path, &PlanOptions::default(), registry).expect("plan")
}

/// Every stored row of one prompt of one step.
#[derive(Default)]
struct Stored<'r> {
    samples: Vec<&'r SampleRecord>,
    verdicts: Vec<&'r VerdictRecord>,
    rewards: BTreeMap<u32, &'r RewardRecord>,
    advantages: Vec<&'r AdvantageRecord>,
    filter: Vec<&'r FilterRecord>,
    errors: Vec<&'r ErrorRecord>,
}

impl Stored<'_> {
    /// Whether some sample answered correctly without asking for help.
    fn solved_locally(&self) -> bool {
        self.samples.iter().any(|s| {
            !s.asked_help
                && self.verdicts.iter().any(|v| {
                    v.target == Target::Local && v.sample_idx == Some(s.sample_idx) && v.correct
                })
        })
    }

    fn rewards_differ(&self) -> bool {
        let rewards: Vec<f64> = self.rewards.values().map(|r| r.reward).collect();
        rewards.iter().any(|r| (r - rewards[0]).abs() > 1e-6)
    }

    fn cloud_correct(&self) -> bool {
        self.verdicts
            .iter()
            .any(|v| v.target == Target::Cloud && v.sample_idx.is_none() && v.correct)
    }

    fn bucket(&self) -> &str {
        assert_eq!(self.filter.len(), 1, "one filter row per prompt");
        &self.filter[0].bucket
    }
}

/// The rows of stream `$name`, which holds `Rows::$variant`.
macro_rules! rows {
    ($streams:expr, $name:literal, $variant:ident) => {
        match &$streams[$name] {
            Rows::$variant(rows) => rows,
            other => panic!("stream {} holds {:?}", $name, other.kind()),
        }
    };
}

/// The rows of one prompt of one step, which the prompts stream must hold.
fn entry<'o, 'r>(
    out: &'o mut BTreeMap<(u64, String), Stored<'r>>,
    step: u64,
    prompt_id: &str,
) -> &'o mut Stored<'r> {
    out.get_mut(&(step, prompt_id.to_owned()))
        .unwrap_or_else(|| panic!("a row of step {step} for unknown prompt {prompt_id}"))
}

/// The stored rows, by (step, prompt id).
fn by_prompt(streams: &BTreeMap<String, Rows>) -> BTreeMap<(u64, String), Stored<'_>> {
    let mut out: BTreeMap<(u64, String), Stored> = BTreeMap::new();
    for p in rows!(streams, "prompts", Prompts) {
        out.entry((p.step, p.prompt_id.clone())).or_default();
    }
    for s in rows!(streams, "rollouts", Samples) {
        entry(&mut out, s.step, &s.prompt_id).samples.push(s);
    }
    for v in rows!(streams, "verdicts", Verdicts) {
        entry(&mut out, v.step, &v.prompt_id).verdicts.push(v);
    }
    for r in rows!(streams, "reward", Rewards) {
        let previous = entry(&mut out, r.step, &r.prompt_id)
            .rewards
            .insert(r.sample_idx, r);
        assert!(previous.is_none(), "one reward row per sample");
    }
    for a in rows!(streams, "adv", Advantages) {
        entry(&mut out, a.step, &a.prompt_id).advantages.push(a);
    }
    for f in rows!(streams, "filter", Filter) {
        entry(&mut out, f.step, &f.prompt_id).filter.push(f);
    }
    for e in rows!(streams, "errors", Errors) {
        entry(&mut out, e.step, &e.prompt_id).errors.push(e);
    }
    for stored in out.values_mut() {
        stored.samples.sort_by_key(|s| s.sample_idx);
        stored.advantages.sort_by_key(|a| a.sample_idx);
    }
    out
}

#[test]
fn gapg_and_adaptive_filter_match_a_recomputation_with_1_and_2_workers_180_prompts_g4_batch30_steps6()
 {
    let dir = tempfile::tempdir().expect("tempdir");
    let (prompts, per_step, group_size, steps) = (180, 30, 4, 6);
    let mut stored = Vec::new();
    for workers in [1, 2] {
        let options = RunOptions {
            cluster: None,
            workers,
            out_dir: dir.path().join(format!("runs{workers}")),
            ..RunOptions::default()
        };
        let plan = pipeline(dir.path(), prompts, per_step, group_size, steps);
        let run = tandem_pipeline::run(plan, options).expect("run");
        stored.push(stored_streams(&run.run_dir));
    }
    assert_eq!(stored[0], stored[1], "1 and 2 workers store the same rows");
    let groups = by_prompt(&stored[1]);
    assert_eq!(groups.len(), per_step * steps as usize);

    // GAPG, recomputed from the stored rewards: (r_i − r̄) / (G − 1), or no rows and an error.
    let mut refused = 0;
    for ((step, prompt_id), g) in &groups {
        let rewarded = g.samples.len() >= 2
            && g.samples
                .iter()
                .all(|s| g.rewards.contains_key(&s.sample_idx));
        if !rewarded {
            refused += 1;
            assert!(
                g.advantages.is_empty(),
                "{step}/{prompt_id}: advantages without rewards"
            );
            assert!(
                g.errors
                    .iter()
                    .any(|e| e.stage == "adv" && e.kind == "missing_reward"),
                "{step}/{prompt_id}: no error row from the advantage stage"
            );
            continue;
        }
        let rewards: Vec<f64> = g
            .samples
            .iter()
            .map(|s| g.rewards[&s.sample_idx].reward)
            .collect();
        let mean = rewards.iter().sum::<f64>() / rewards.len() as f64;
        let n = (rewards.len() - 1) as f64;
        assert_eq!(g.advantages.len(), g.samples.len(), "{step}/{prompt_id}");
        for ((a, s), r) in g.advantages.iter().zip(&g.samples).zip(&rewards) {
            assert_eq!(
                (a.sample_idx, a.policy_version),
                (s.sample_idx, s.policy_version)
            );
            assert_eq!(a.estimator, "gapg");
            let want = (r - mean) / n;
            assert!(
                (a.advantage - want).abs() < 1e-12,
                "{step}/{prompt_id}: {} vs {want}",
                a.advantage
            );
        }
    }
    assert!(refused > 0, "the blank references were refused");

    // The filter, recomputed per step from the stored verdicts, rewards and errors.
    let (numerator, denominator) = RHO;
    let mut steps_capped = 0;
    let mut d2_total = 0;
    let mut per_step_buckets: BTreeMap<u64, BTreeMap<&str, usize>> = BTreeMap::new();
    for step in 0..steps {
        let in_step: Vec<(&String, &Stored)> = groups
            .iter()
            .filter(|((s, _), _)| *s == step)
            .map(|((_, id), g)| (id, g))
            .collect();
        let mut d1_expected = BTreeSet::new();
        let mut candidates = BTreeSet::new();
        for (id, g) in &in_step {
            if !g.errors.is_empty() {
                assert_eq!(g.bucket(), "errors", "{step}/{id}");
                assert!(!g.filter[0].kept);
                continue;
            }
            if g.solved_locally() && g.rewards_differ() {
                d1_expected.insert(id.as_str());
            }
            if !g.solved_locally() && g.samples.iter().any(|s| s.asked_help) && g.cloud_correct() {
                candidates.insert(id.as_str());
            }
        }
        let bucket = |name: &str| -> BTreeSet<&str> {
            in_step
                .iter()
                .filter(|(_, g)| g.bucket() == name)
                .map(|(id, _)| id.as_str())
                .collect()
        };
        assert_eq!(bucket("D1"), d1_expected, "step {step}: D1");
        let d2 = bucket("D2");
        let cap = (d1_expected.len() as u64 * numerator / denominator) as usize;
        assert!(
            d2.len() <= cap,
            "step {step}: |D2| = {} over ⌊ρ · |D1|⌋ = {cap}",
            d2.len()
        );
        assert_eq!(
            d2.len(),
            cap.min(candidates.len()),
            "step {step}: as many D2 as fit"
        );
        assert!(
            d2.is_subset(&candidates),
            "step {step}: a D2 prompt the cloud did not solve"
        );
        for (id, g) in &in_step {
            let f = g.filter[0];
            assert_eq!(
                f.kept,
                matches!(f.bucket.as_str(), "D1" | "D2"),
                "{step}/{id}"
            );
        }
        steps_capped += usize::from(candidates.len() > cap);
        d2_total += d2.len();
        let counts = per_step_buckets.entry(step).or_default();
        for (_, g) in &in_step {
            *counts.entry(g.bucket()).or_default() += 1;
        }
    }
    // The data exercise every branch, or the comparison would be weak.
    assert!(d2_total > 0, "some D2: {per_step_buckets:?}");
    assert!(
        steps_capped > 0,
        "the ρ cap binds in some step: {per_step_buckets:?}"
    );
    assert!(
        per_step_buckets
            .values()
            .all(|c| c.get("D1").is_some_and(|&n| n > 0)),
        "{per_step_buckets:?}"
    );
    assert!(per_step_buckets.values().any(|c| c.contains_key("errors")));
}
