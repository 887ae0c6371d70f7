//! Generation as a whole: determinism, split disjointness, level weights, exact answers, the
//! SFT selection, and the round trip through the crate's own loaders.

use std::collections::HashSet;

use proptest::prelude::*;
use serde_json::Value;

use super::countdown::tests::{answer_of, evaluate};
use super::*;
use crate::{Example, FieldMap, load_jsonl, load_parquet};

fn spec(task: TaskKind, train: usize, test: usize) -> TaskSpec {
    TaskSpec {
        train,
        test,
        ..TaskSpec::new(task)
    }
}

const TASKS: [TaskKind; 2] = [TaskKind::Arithmetic, TaskKind::Countdown];

#[test]
fn without_disjoint_train_reuses_test_questions_of_a_small_level() {
    let spec = TaskSpec {
        train: 400,
        test: 40,
        disjoint: false,
        levels: vec![LevelSpec {
            digits: Some(1),
            ops: Some(vec!["+".into()]),
            ..LevelSpec::named("easy")
        }],
        ..TaskSpec::new(TaskKind::Arithmetic)
    };
    let splits = generate(&spec, 3).expect("generates");
    let test: std::collections::HashSet<&str> =
        splits.test.iter().map(|e| e.question.as_str()).collect();
    assert_eq!(test.len(), 40, "test questions stay distinct");
    let shared = splits
        .train
        .iter()
        .filter(|e| test.contains(e.question.as_str()))
        .count();
    // 400 draws from 100 sums: about 40% land on a test question.
    assert!(shared > 100, "{shared} train rows share a test question");
    let disjoint = generate(
        &TaskSpec {
            disjoint: true,
            ..spec
        },
        3,
    )
    .expect("generates");
    assert!(
        disjoint
            .train
            .iter()
            .all(|e| !test.contains(e.question.as_str()))
    );
}

#[test]
fn same_seed_same_splits_other_seed_differs() {
    for task in TASKS {
        let spec = spec(task, 200, 50);
        let a = generate(&spec, 3).expect("generates");
        assert_eq!(a, generate(&spec, 3).expect("generates"));
        let b = generate(&spec, 4).expect("generates");
        assert_ne!(a.train, b.train);
        assert_ne!(a.test, b.test);
    }
}

#[test]
fn ids_name_task_split_and_index() {
    let splits = generate(&spec(TaskKind::Countdown, 12, 3), 0).expect("generates");
    assert_eq!(splits.train[11].id, "countdown-train-000011");
    assert_eq!(splits.test[2].id, "countdown-test-000002");
}

#[test]
fn train_and_test_are_disjoint_and_test_questions_are_unique() {
    // One-digit sums have only 81 distinct questions, so test takes a large share of them and
    // train must avoid all of those.
    let mut tight = spec(TaskKind::Arithmetic, 500, 60);
    tight.levels = vec![LevelSpec {
        digits: Some(1),
        ops: Some(vec!["+".into()]),
        ..LevelSpec::named("easy")
    }];
    for spec in [
        tight,
        spec(TaskKind::Arithmetic, 2000, 300),
        spec(TaskKind::Countdown, 2000, 300),
    ] {
        let splits = generate(&spec, 1).expect("generates");
        let test: HashSet<&str> = splits.test.iter().map(|e| e.question.as_str()).collect();
        assert_eq!(test.len(), splits.test.len(), "test questions repeat");
        for example in &splits.train {
            assert!(!test.contains(example.question.as_str()), "{example:?}");
        }
    }
}

#[test]
fn a_level_too_small_for_the_splits_is_named() {
    let mut spec = spec(TaskKind::Arithmetic, 10, 200);
    spec.levels = vec![
        LevelSpec::named("wide"),
        LevelSpec {
            digits: Some(1),
            ops: Some(vec!["*".into()]),
            ..LevelSpec::named("tiny")
        },
    ];
    let err = generate(&spec, 0).expect_err("81 questions cannot fill 100 unique test rows");
    let text = err.to_string();
    assert!(
        text.starts_with("levels[1]: level `tiny` ran out of distinct questions"),
        "{text}"
    );
}

#[test]
fn level_counts_follow_weights_4000() {
    let mut spec = spec(TaskKind::Arithmetic, 4000, 0);
    spec.levels = vec![
        LevelSpec {
            weight: Some(1.0),
            ..LevelSpec::named("easy")
        },
        LevelSpec {
            weight: Some(3.0),
            digits: Some(4),
            ..LevelSpec::named("hard")
        },
    ];
    let splits = generate(&spec, 9).expect("generates");
    let easy = splits
        .train
        .iter()
        .filter(|e| e.difficulty == "easy")
        .count();
    let hard = splits
        .train
        .iter()
        .filter(|e| e.difficulty == "hard")
        .count();
    assert_eq!(easy + hard, 4000);
    // Expected 1000 easy; one standard deviation is about 27, so 5 of them is 137.
    assert!((easy as i64 - 1000).abs() < 137, "{easy} easy of 4000");
}

/// `What is A op B?` computed in i128, independently of the generator.
fn arithmetic_value(question: &str) -> i128 {
    let expr = question
        .strip_prefix("What is ")
        .and_then(|q| q.strip_suffix('?'))
        .expect("question form");
    let parts: Vec<&str> = expr.split(' ').collect();
    let (a, b): (i128, i128) = (parts[0].parse().expect("a"), parts[2].parse().expect("b"));
    match parts[1] {
        "+" => a + b,
        "-" => a - b,
        "*" => a * b,
        other => panic!("operator {other}"),
    }
}

#[test]
fn every_arithmetic_answer_is_the_exact_value() {
    let splits = generate(&spec(TaskKind::Arithmetic, 1000, 200), 5).expect("generates");
    let mut negative = 0;
    for example in splits.train.iter().chain(&splits.test) {
        let value = arithmetic_value(&example.question);
        assert_eq!(
            example.answer.as_i64().map(i128::from),
            Some(value),
            "{example:?}"
        );
        assert!(
            example
                .solution
                .ends_with(&format!(" <answer>{value}</answer>")),
            "{example:?}"
        );
        negative += usize::from(value < 0);
    }
    assert!(negative > 0, "subtraction never went below zero");
}

#[test]
fn every_countdown_solution_uses_each_number_once_and_reaches_the_target() {
    let splits = generate(&spec(TaskKind::Countdown, 1000, 200), 5).expect("generates");
    for example in splits.train.iter().chain(&splits.test) {
        let answer: Value = serde_json::from_str(example.answer.as_str().expect("JSON text"))
            .expect("the answer is JSON");
        let mut numbers: Vec<i64> = answer["numbers"]
            .as_array()
            .expect("numbers")
            .iter()
            .map(|n| n.as_i64().expect("integer"))
            .collect();
        let target = answer["target"].as_i64().expect("target");
        let listed: Vec<String> = numbers.iter().map(i64::to_string).collect();
        let expected_start = format!(
            "Using the numbers [{}], create an equation that equals {target}. ",
            listed.join(", ")
        );
        assert!(example.question.starts_with(&expected_start), "{example:?}");
        let level = if example.difficulty == "easy" { 3 } else { 5 };
        assert_eq!(numbers.len(), level, "{example:?}");
        let (value, mut used) = evaluate(answer_of(&example.solution));
        assert_eq!(value, (i128::from(target), 1), "{example:?}");
        numbers.sort_unstable();
        used.sort_unstable();
        assert_eq!(used, numbers, "{example:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn sft_is_the_sft_levels_train_rows_with_the_unknown_share(
        share in 0.0..=1.0f64,
        seed in any::<u64>(),
    ) {
        let mut spec = spec(TaskKind::Arithmetic, 300, 0);
        spec.sft = SftSpec {
            levels: Some(vec!["easy".into()]),
            unknown_share: share,
            ..SftSpec::default()
        };
        let splits = generate(&spec, seed).expect("generates");
        let easy: Vec<&TaskExample> =
            splits.train.iter().filter(|e| e.difficulty == "easy").collect();
        prop_assert_eq!(splits.sft.len(), easy.len());
        let mut unknown = 0;
        for (row, train) in splits.sft.iter().zip(&easy) {
            prop_assert_eq!(&row.id, &train.id);
            prop_assert_eq!(&row.question, &train.question);
            if row.solution == HELP_RESPONSE {
                unknown += 1;
            } else {
                prop_assert_eq!(&row.solution, &train.solution);
            }
        }
        let expected = share * easy.len() as f64;
        prop_assert!((unknown as f64 - expected).abs() <= 0.5, "{} of {}", unknown, easy.len());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn an_instruction_ends_every_question_and_bare_copies_follow_worked_rows(
        unknown_share in 0.0..=1.0f64,
        bare_share in 0.0..=1.0f64,
        seed in any::<u64>(),
    ) {
        const INSTRUCTION: &str = " Ask for help if you cannot solve it.";
        let mut spec = spec(TaskKind::Arithmetic, 300, 0);
        spec.sft.unknown_share = unknown_share;
        let base = generate(&spec, seed).expect("generates").sft;
        spec.sft.instruction = Some(INSTRUCTION.to_owned());
        spec.sft.bare_share = bare_share;
        let sft = generate(&spec, seed).expect("generates").sft;
        // Every row of the set without the instruction, with it, each possibly followed by its
        // bare copy: the same answer and solution, never the help response.
        let mut rows = sft.iter().peekable();
        let mut bare = 0;
        for original in &base {
            let row = rows.next().expect("a row per original");
            prop_assert_eq!(&row.id, &original.id);
            prop_assert_eq!(&row.question, &format!("{}{INSTRUCTION}", original.question));
            prop_assert_eq!(&row.solution, &original.solution);
            if let Some(copy) = rows.next_if(|r| r.id.ends_with("-bare")) {
                bare += 1;
                prop_assert_eq!(&copy.id, &format!("{}-bare", original.id));
                prop_assert_eq!(&copy.question, &original.question);
                prop_assert_eq!(&copy.solution, &original.solution);
                prop_assert_ne!(copy.solution.as_str(), HELP_RESPONSE);
            }
        }
        prop_assert!(rows.next().is_none());
        let worked = base.iter().filter(|r| r.solution != HELP_RESPONSE).count();
        let expected = bare_share * worked as f64;
        prop_assert!((bare as f64 - expected).abs() <= 0.5, "{} of {}", bare, worked);
    }
}

#[test]
fn thinking_before_asking_writes_some_steps_with_their_results_then_asks() {
    for task in TASKS {
        let mut spec = spec(task, 200, 0);
        spec.sft.unknown_share = 0.5;
        spec.sft.levels = Some(vec!["easy".into(), "hard".into()]);
        let plain = generate(&spec, 4).expect("generates");
        spec.sft.think_before_asking = true;
        let thinking = generate(&spec, 4).expect("generates");
        let train: std::collections::HashMap<&str, &str> = plain
            .train
            .iter()
            .map(|e| (e.id.as_str(), e.solution.as_str()))
            .collect();
        let mut asked = 0;
        let mut written_steps = HashSet::new();
        for (row, before) in thinking.sft.iter().zip(&plain.sft) {
            if before.solution != HELP_RESPONSE {
                assert_eq!(row.solution, before.solution);
                continue;
            }
            asked += 1;
            let written = row
                .solution
                .strip_suffix(&format!("</think> {HELP_RESPONSE}"))
                .expect("a help row ends with the help response");
            let worked = train[row.id.as_str()];
            let steps = worked.matches(", ").count() + 1;
            if steps == 1 {
                // `<think>a op b`: the one step without its result.
                assert!(
                    worked.starts_with(&format!("{written} = ")),
                    "{written} / {worked}"
                );
                assert!(!written.contains('='), "{written}");
            } else {
                // `<think>s1 = v1, s2 = v2`: whole steps of the worked solution, not all of them.
                assert!(
                    worked.starts_with(&format!("{written}, ")),
                    "{written} / {worked}"
                );
                let count = written.matches(", ").count() + 1;
                assert_eq!(written.matches(" = ").count(), count, "{written}");
                assert!(count < steps, "{written} / {worked}");
                written_steps.insert(count);
            }
        }
        assert!(asked > 50, "{task:?}: {asked}");
        // Countdown's default levels take 2 and 4 steps: help rows stop after 1, 2 or 3;
        // arithmetic's take one, written without its result.
        if task == TaskKind::Countdown {
            assert_eq!(written_steps, HashSet::from([1, 2, 3]));
        }
    }
}

#[test]
fn unknown_rows_are_chosen_at_random_not_in_a_block() {
    let mut spec = spec(TaskKind::Arithmetic, 1000, 0);
    spec.sft.unknown_share = 0.5;
    let sft = generate(&spec, 2).expect("generates").sft;
    let half = sft.len() / 2;
    let first_half = sft[..half]
        .iter()
        .filter(|e| e.solution == HELP_RESPONSE)
        .count();
    assert!(
        first_half > half / 4 && first_half < half * 3 / 4,
        "{first_half} of {half}"
    );
}

fn loaded_fields() -> FieldMap {
    FieldMap {
        id: Some("id".into()),
        difficulty: Some("difficulty".into()),
        completions: Some("completions".into()),
        ..FieldMap::default()
    }
}

/// What a loader should give back for an example.
fn expected(example: &TaskExample, source: String) -> Example {
    let answer = match &example.answer {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    Example {
        id: example.id.clone(),
        source,
        question: example.question.clone(),
        answer: Some(answer),
        difficulty: Some(example.difficulty.clone()),
        completions: vec![example.solution.clone()],
    }
}

#[test]
fn written_splits_load_back_with_every_field() {
    for task in TASKS {
        for format in [Format::Jsonl, Format::Parquet] {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut spec = spec(task, 40, 10);
            spec.sft.unknown_share = 0.3;
            let resolved = spec.resolve().expect("valid");
            let splits = resolved.generate(0).expect("generates");
            let written = write_dataset(dir.path(), &resolved, 0, &splits, format).expect("writes");
            assert_eq!(written.files.len(), 4);
            for (split, examples) in [
                ("train", &splits.train),
                ("test", &splits.test),
                ("sft", &splits.sft),
            ] {
                let name = format!("{split}.{}", format.extension());
                let path = dir.path().join(&name);
                let loaded = match format {
                    Format::Jsonl => load_jsonl(&path, &loaded_fields(), None),
                    Format::Parquet => load_parquet(&path, &loaded_fields(), None),
                }
                .expect("loads");
                let want: Vec<Example> = examples
                    .iter()
                    .enumerate()
                    .map(|(i, e)| match format {
                        Format::Jsonl => expected(e, format!("{name}:{}", i + 1)),
                        Format::Parquet => expected(e, format!("{name}#{i}")),
                    })
                    .collect();
                assert_eq!(loaded, want, "{task:?} {format:?} {split}");
            }
            let description: Value = serde_json::from_str(
                &std::fs::read_to_string(dir.path().join("dataset.json")).expect("read"),
            )
            .expect("JSON");
            assert_eq!(description["seed"], 0);
            assert_eq!(description["spec"]["task"], task.name());
            let train_counts = &description["counts"]["train"];
            let total: u64 = ["easy", "hard"]
                .iter()
                .map(|l| train_counts[l].as_u64().expect("count"))
                .sum();
            assert_eq!(total, 40);
            assert_eq!(description["sft_unknown"], written.sft_unknown);
        }
    }
}

#[test]
fn the_yaml_section_shape_deserializes_with_defaults() {
    let spec: TaskSpec = serde_json::from_value(serde_json::json!({
        "task": "countdown",
        "levels": [{"name": "easy", "numbers": 3, "max_number": 20}, {"name": "hard"}],
        "sft": {"levels": ["easy"], "unknown_share": 0.15},
    }))
    .expect("deserializes");
    let task = spec.resolve().expect("valid");
    assert_eq!((task.train, task.test), (3000, 300));
    assert_eq!(
        task.levels[1].kind,
        LevelKind::Countdown(CountdownLevel {
            numbers: 4,
            max_number: 100
        })
    );
    let defaults = TaskSpec::new(TaskKind::Arithmetic)
        .resolve()
        .expect("valid");
    let digits: Vec<u32> = defaults
        .levels
        .iter()
        .map(|l| match &l.kind {
            LevelKind::Arithmetic(a) => a.digits,
            LevelKind::Countdown(_) => unreachable!("an arithmetic spec"),
        })
        .collect();
    assert_eq!(digits, [2, 5]);
    assert_eq!(defaults.sft.levels, Some(vec!["easy".to_owned()]));
}

#[test]
fn bad_specs_name_the_field() {
    let unknown_key = serde_json::from_value::<TaskSpec>(serde_json::json!({
        "task": "arithmetic", "levels": [{"name": "easy", "digit": 2}],
    }))
    .expect_err("unknown key");
    assert!(
        unknown_key.to_string().starts_with("unknown field `digit`"),
        "{unknown_key}"
    );

    let level = |edit: fn(&mut LevelSpec)| {
        let mut level = LevelSpec::named("easy");
        edit(&mut level);
        level
    };
    let cases: [(TaskKind, Vec<LevelSpec>, &str); 18] = [
        (
            TaskKind::Arithmetic,
            vec![level(|l| l.operands = Some(9))],
            "levels[0].operands: must be between 2 and 8, found 9",
        ),
        (
            TaskKind::Arithmetic,
            vec![level(|l| l.operands = Some(4))],
            "levels[0].ops: a chain of more than 2 operands is worked left to right, which is the \
             usual reading only with `+` and `-`",
        ),
        (
            TaskKind::Arithmetic,
            vec![level(|l| {
                l.within = Some([0, 9]);
                l.outside = Some([0, 9]);
            })],
            "levels[0].outside: `within` and `outside` exclude each other; give one",
        ),
        (
            TaskKind::Arithmetic,
            vec![level(|l| l.within = Some([9, 0]))],
            "levels[0].within: needs a chain (`operands` of 3 or more): two operands have no \
             intermediate value, only the answer",
        ),
        (
            TaskKind::Arithmetic,
            vec![level(|l| {
                l.operands = Some(3);
                l.ops = Some(vec!["+".into()]);
                l.within = Some([9, 0]);
            })],
            "levels[0].within: [low, high] with low <= high, found [9, 0]",
        ),
        (
            TaskKind::Countdown,
            vec![level(|l| l.outside = Some([0, 9]))],
            "levels[0].outside: countdown levels do not take `outside` (they take name, weight, \
             numbers, max_number)",
        ),
        (
            TaskKind::Arithmetic,
            vec![level(|l| l.digits = Some(0))],
            "levels[0].digits: must be between 1 and 9, found 0",
        ),
        (
            TaskKind::Arithmetic,
            vec![level(|l| l.ops = Some(vec!["/".into()]))],
            "levels[0].ops[0]: unknown operator `/`; expected \"+\", \"-\" or \"*\"",
        ),
        (
            TaskKind::Arithmetic,
            vec![level(|l| l.numbers = Some(3))],
            "levels[0].numbers: arithmetic levels do not take `numbers` (they take name, weight, \
             digits, ops, operands, within, outside, choices, order)",
        ),
        (
            TaskKind::Arithmetic,
            vec![level(|l| {
                l.digits = Some(1);
                l.choices = Some(10);
            })],
            "levels[0].choices: must be between 2 and 9 (distinct numbers of 1 digit(s)), found 10",
        ),
        (
            TaskKind::Arithmetic,
            vec![level(|l| {
                l.operands = Some(3);
                l.ops = Some(vec!["+".into()]);
                l.choices = Some(4);
            })],
            "levels[0].operands: a search question combines one listed number with one operand; \
             it takes no chain (`operands` 2)",
        ),
        (
            TaskKind::Arithmetic,
            vec![level(|l| {
                l.digits = Some(1);
                l.choices = Some(4);
                l.order = Some("sorted".into());
            })],
            "levels[0].order: must be `shuffled` or `listed`, found `sorted`",
        ),
        (
            TaskKind::Arithmetic,
            vec![level(|l| l.order = Some("listed".into()))],
            "levels[0].order: only a search question (`choices`) has an order to try its numbers in",
        ),
        (
            TaskKind::Countdown,
            vec![level(|l| l.choices = Some(4))],
            "levels[0].choices: countdown levels do not take `choices` (they take name, weight, \
             numbers, max_number)",
        ),
        (
            TaskKind::Countdown,
            vec![level(|l| l.digits = Some(3))],
            "levels[0].digits: countdown levels do not take `digits` (they take name, weight, \
             numbers, max_number)",
        ),
        (
            TaskKind::Countdown,
            vec![level(|l| l.numbers = Some(7))],
            "levels[0].numbers: must be between 2 and 6, found 7",
        ),
        (
            TaskKind::Countdown,
            vec![level(|_| {}), level(|l| l.weight = Some(0.0))],
            "levels[1].name: `easy` names two levels; names must be unique",
        ),
        (
            TaskKind::Countdown,
            vec![level(|l| l.weight = Some(-1.0))],
            "levels[0].weight: must be a positive number, found -1",
        ),
    ];
    for (task, levels, message) in cases {
        let spec = TaskSpec {
            levels,
            ..TaskSpec::new(task)
        };
        assert_eq!(spec.resolve().expect_err(message).to_string(), message);
    }
    let mut spec = TaskSpec::new(TaskKind::Arithmetic);
    spec.sft.levels = Some(vec!["medium".into()]);
    assert_eq!(
        spec.resolve().expect_err("no such level").to_string(),
        "sft.levels[0]: no level is named `medium`; levels: easy, hard"
    );
    spec.sft = SftSpec {
        levels: None,
        unknown_share: 1.5,
        ..SftSpec::default()
    };
    assert_eq!(
        spec.resolve().expect_err("share").to_string(),
        "sft.unknown_share: must be between 0 and 1, found 1.5"
    );
    spec.sft = SftSpec {
        bare_share: 0.5,
        ..SftSpec::default()
    };
    assert_eq!(
        spec.resolve()
            .expect_err("bare without instruction")
            .to_string(),
        "sft.bare_share: bare copies differ from the other rows only by `sft.instruction`; set it"
    );
}

/// The hidden-difficulty suite of the demo: chains of four single digits whose intermediate
/// values stay within the single-digit table, and chains of the same form where one leaves it.
fn chain_suite() -> TaskSpec {
    let level = |name: &str, within: bool| LevelSpec {
        digits: Some(1),
        ops: Some(vec!["+".into(), "-".into()]),
        operands: Some(4),
        within: within.then_some([0, 9]),
        outside: (!within).then_some([0, 9]),
        ..LevelSpec::named(name)
    };
    TaskSpec {
        train: 600,
        test: 200,
        levels: vec![level("stays", true), level("leaves", false)],
        ..TaskSpec::new(TaskKind::Arithmetic)
    }
}

#[test]
fn chain_levels_are_labelled_by_where_their_intermediate_values_go() {
    let splits = generate(&chain_suite(), 11).expect("generates");
    let mut seen = std::collections::HashMap::new();
    for example in splits.train.iter().chain(&splits.test) {
        // Worked out here from the question alone, left to right.
        let expr = example.question["What is ".len()..].trim_end_matches('?');
        let tokens: Vec<&str> = expr.split(' ').collect();
        assert_eq!(tokens.len(), 7, "{}", example.question);
        let mut value: i64 = tokens[0].parse().expect("operand");
        let mut inside = true;
        for (i, pair) in tokens[1..].chunks(2).enumerate() {
            // Every value a next step starts from: the results of the first two steps.
            if i > 0 {
                inside &= (0..=9).contains(&value);
            }
            let operand: i64 = pair[1].parse().expect("operand");
            value += if pair[0] == "+" { operand } else { -operand };
        }
        assert_eq!(example.answer.as_i64(), Some(value), "{example:?}");
        let expected = if inside { "stays" } else { "leaves" };
        assert_eq!(example.difficulty, expected, "{example:?}");
        *seen.entry(expected).or_insert(0) += 1;
    }
    assert!(seen["stays"] > 300 && seen["leaves"] > 300, "{seen:?}");
}

#[test]
fn a_chain_level_that_cannot_be_drawn_is_named() {
    let mut spec = chain_suite();
    spec.levels[1].ops = Some(vec!["+".into()]);
    spec.levels[1].outside = None;
    spec.levels[1].within = Some([0, 1]);
    let message = generate(&spec, 1).expect_err("unreachable").to_string();
    assert!(
        message.starts_with("levels[1]: level `leaves`: 100000 chains in a row missed"),
        "{message}"
    );
}

#[test]
fn the_step_table_teaches_every_single_step_of_the_chains_once_with_and_without_help() {
    let mut spec = chain_suite();
    spec.sft = SftSpec {
        levels: Some(vec!["stays".into()]),
        instruction: Some(" Ask for help if you cannot solve it.".into()),
        step_table: true,
        ..SftSpec::default()
    };
    let sft = generate(&spec, 3).expect("generates").sft;
    let table: Vec<&TaskExample> = sft.iter().filter(|e| e.id.contains("-step-")).collect();
    // Values 0..=9 carried into a step, operands 1..=9, two operators; each bare and with help.
    assert_eq!(table.len(), 10 * 9 * 2 * 2);
    let mut bare = HashSet::new();
    for row in &table {
        let question = match row
            .question
            .strip_suffix(" Ask for help if you cannot solve it.")
        {
            Some(question) => question,
            None => {
                assert!(row.id.ends_with("-bare"), "{row:?}");
                assert!(bare.insert(row.question.clone()), "{row:?} twice");
                &row.question
            }
        };
        let expr = question["What is ".len()..].trim_end_matches('?');
        let parts: Vec<&str> = expr.split(' ').collect();
        let (a, b): (i64, i64) = (parts[0].parse().expect("a"), parts[2].parse().expect("b"));
        let value = if parts[1] == "+" { a + b } else { a - b };
        assert_eq!(row.answer.as_i64(), Some(value), "{row:?}");
        assert_eq!(
            row.solution,
            format!("<think>{expr} = {value}</think> <answer>{value}</answer>")
        );
    }
    assert!(bare.contains("What is 0 - 9?") && bare.contains("What is 9 + 9?"));

    // Only chains that stay within a range have a table small enough to teach.
    let mut spec = TaskSpec::new(TaskKind::Arithmetic);
    spec.sft.step_table = true;
    assert_eq!(
        spec.resolve().expect_err("not a chain").to_string(),
        "sft.step_table: level `easy` is not an arithmetic chain with `within`; the table is the \
         steps such chains are made of"
    );
}
