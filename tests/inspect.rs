//! `tandem inspect`: `--where` and `--prompt-id` filters, and the group view.

use std::path::{Path, PathBuf};

use tandem_schemas::io::Rows;

use crate::common::{pipeline_yaml, run_in_process, stored_streams, tandem, write_dataset};

/// An offline run (samples, verdicts, the hierarchical reward, GAPG, no filter) of 3 steps of
/// 4 prompts × 4 samples; returns its directory.
fn offline_run(dir: &Path) -> PathBuf {
    let data = dir.join("data.jsonl");
    write_dataset(&data, 12, 4, 9);
    let mut yaml = pipeline_yaml(&data, 4, 4, 3);
    yaml.push_str(
        "  - { id: reward, kind: reward.collab }\n  - { id: advantage, kind: advantage.gapg }\n  - { id: keep, kind: filter.none }\n",
    );
    let file = dir.join("pipeline.yaml");
    std::fs::write(&file, yaml).expect("write");
    run_in_process(&file, 2, &dir.join("runs")).run_dir
}

fn stdout(args: &[&str], cwd: &Path) -> String {
    let out = tandem(args, cwd);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn inspect_prompt_id_shows_the_group_question_samples_verdicts_rewards_advantages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = offline_run(dir.path());
    let streams = stored_streams(&run);
    let (Rows::Prompts(prompts), Rows::Samples(samples)) =
        (&streams["prompts"], &streams["rollouts"])
    else {
        panic!("stream kinds")
    };
    // A prompt of step 1 with a sample that asked for help.
    let asking = samples
        .iter()
        .find(|s| s.step == 1 && s.asked_help)
        .expect("some sample asks for help");
    let prompt = prompts
        .iter()
        .find(|p| p.step == 1 && p.prompt_id == asking.prompt_id)
        .expect("its prompt");
    let text = stdout(
        &[
            "inspect",
            run.to_str().expect("utf-8"),
            "--prompt-id",
            &prompt.prompt_id,
            "--step",
            "1",
            "--full",
        ],
        dir.path(),
    );
    let mut expected = vec![
        format!("── step 1 · prompt {} ──", prompt.prompt_id),
        format!("question    {}", prompt.question),
        format!("answer      {}", prompt.answer.as_deref().expect("answer")),
        "filter      kept: true".to_owned(),
    ];
    let (Rows::Verdicts(verdicts), Rows::Rewards(rewards), Rows::Advantages(advantages)) = (
        &streams["verdicts"],
        &streams["reward"],
        &streams["advantage"],
    ) else {
        panic!("stream kinds")
    };
    let of = |step: u64, idx: u32| {
        move |id: &str, s: u64, i: u32| id == prompt.prompt_id && s == step && i == idx
    };
    for sample in samples
        .iter()
        .filter(|s| s.step == 1 && s.prompt_id == prompt.prompt_id)
    {
        let here = of(1, sample.sample_idx);
        expected.push(format!(
            "sample {}    asked_help: {}",
            sample.sample_idx, sample.asked_help
        ));
        expected.push(format!("  text      {}", sample.text));
        let verdict = verdicts
            .iter()
            .find(|v| v.sample_idx.is_some_and(|i| here(&v.prompt_id, v.step, i)))
            .expect("a verdict");
        expected.push(format!(
            "  verdict   local correct: {}, extracted: {}, method: {}",
            verdict.correct,
            verdict.extracted.as_deref().unwrap_or("∅"),
            verdict.method
        ));
        let reward = rewards
            .iter()
            .find(|r| here(&r.prompt_id, r.step, r.sample_idx))
            .expect("a reward");
        expected.push(format!("  reward    {} (", reward.reward));
        let advantage = advantages
            .iter()
            .find(|a| here(&a.prompt_id, a.step, a.sample_idx))
            .expect("an advantage");
        expected.push(format!("  advantage {} (gapg)", advantage.advantage));
    }
    for line in expected {
        assert!(text.contains(&line), "no `{line}` in:\n{text}");
    }
    assert!(!text.contains("── step 0"), "--step 1 shows only step 1");
}

#[test]
fn inspect_where_asked_help_true_shows_exactly_the_rows_that_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = offline_run(dir.path());
    let Rows::Samples(samples) = &stored_streams(&run)["rollouts"] else {
        panic!("samples")
    };
    let asked = samples.iter().filter(|s| s.asked_help).count();
    assert!(asked > 0 && asked < samples.len());
    let run = run.to_str().expect("utf-8");
    for condition in ["asked_help=true", "help=true"] {
        let text = stdout(
            &[
                "inspect", run, "--stream", "rollouts", "--where", condition, "--limit", "1000",
            ],
            dir.path(),
        );
        assert!(
            text.contains(&format!("\n{asked} row(s) shown")),
            "{condition}: expected {asked} rows:\n{text}"
        );
    }
    // With --prompt-id too: that prompt's rows that asked.
    let one = &samples
        .iter()
        .find(|s| s.asked_help)
        .expect("one")
        .prompt_id;
    let of_one = samples
        .iter()
        .filter(|s| s.asked_help && &s.prompt_id == one)
        .count();
    let text = stdout(
        &[
            "inspect",
            run,
            "--stream",
            "rollouts",
            "--where",
            "help=true",
            "--prompt-id",
            one,
            "--limit",
            "1000",
        ],
        dir.path(),
    );
    assert!(text.contains(&format!("\n{of_one} row(s) shown")), "{text}");

    let out = tandem(
        &[
            "inspect",
            run,
            "--stream",
            "rollouts",
            "--where",
            "helped=true",
        ],
        dir.path(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("stream `rollouts` has no column `helped`; its columns: ")
            && err.contains("prompt_id, sample_idx"),
        "{err}"
    );
}
