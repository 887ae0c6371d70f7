//! `verify.math` end to end: responses against references, as the stage judges them.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use tandem_schemas::{CloudRecord, Group, PromptRecord, SampleRecord, Target};

use super::*;
use crate::contract::{BuildContext, StepContext};
use crate::verify::Judgement;

fn verifier() -> MathVerifier {
    MathVerifier::new(MathConfig::default()).expect("default config")
}

fn with_whole() -> MathVerifier {
    MathVerifier::new(MathConfig {
        extract: vec![
            MathExtractor::Boxed,
            MathExtractor::AnswerTag,
            MathExtractor::Whole,
        ],
        ..MathConfig::default()
    })
    .expect("config")
}

/// (reference, prediction, correct, method): the prediction is the whole response, as a
/// `whole` extractor reads it.
fn check_table(table: &[(&str, &str, bool, &str)]) {
    let v = with_whole();
    for (gold, pred, correct, method) in table {
        let j = v.judge(pred, &v.reference(gold));
        assert_eq!(
            (j.correct, j.method.as_str()),
            (*correct, *method),
            "gold {gold:?} vs {pred:?} (normalized {:?})",
            j.normalized
        );
    }
}

#[test]
fn traps_reported_against_other_verifiers() {
    check_table(&[
        ("1/2004!", "1/2006!", false, "exact_rational"),
        (
            r"\frac{1}{2004!}",
            r"\frac{1}{2004!}",
            true,
            "exact_rational",
        ),
        (r"\pm 2021", "2021", false, "structure"),
        ("2021", r"\pm 2021", false, "structure"),
        (r"\pm 2021", r"2021, -2021", true, "exact_rational"),
        (r"\sqrt{1/n}", r"1/\sqrt{n}", true, "numeric"),
        (
            r"\frac{1}{\sqrt{n}}",
            r"\sqrt{\frac{1}{n}}",
            true,
            "numeric",
        ),
        ("pi/2", r"\dfrac{\pi}{2}", true, "numeric"),
        (r"\dfrac{\pi}{2}", "pi/2", true, "numeric"),
        ("73", "**73**", true, "exact_rational"),
        ("73", "The answer is **73**", false, "string"),
        // "Find all x": a partial answer is wrong, whichever way the full one is written.
        (r"\{1, 2\}", "1", false, "structure"),
        ("1, 2", "1", false, "structure"),
        ("1, 2", "2, 1", true, "exact_rational"),
        (r"1 \text{ and } 2", r"\{2, 1\}", true, "exact_rational"),
        ("x = 1 or x = 2", "1", false, "structure"),
    ]);
}

#[test]
fn normalisations_table() {
    check_table(&[
        (r"\frac{3}{4}", r"\dfrac{3}{4}", true, "exact_rational"),
        (r"\frac{3}{4}", r"\tfrac34", true, "exact_rational"),
        ("(1, 2)", r"\left( 1, 2 \right)", true, "exact_rational"),
        ("1000", r"1\!000", true, "exact_rational"),
        ("1000", r"1\,000", true, "exact_rational"),
        ("1000000", "1,000,000", true, "exact_rational"),
        ("1000", "1{,}000", true, "exact_rational"),
        ("30", r"30^\circ", true, "exact_rational"),
        ("30", r"30^{\circ}", true, "exact_rational"),
        ("50", r"50\%", true, "exact_rational"),
        ("5", r"\$5", true, "exact_rational"),
        ("5", r"\$5.00", true, "exact_rational"),
        ("12", r"12 \text{ cm}", true, "exact_rational"),
        ("12", r"12\text{ square units}", true, "exact_rational"),
        ("12", r"12 \mbox{inches}", true, "exact_rational"),
        ("5", "x = 5", true, "exact_rational"),
        ("5", r"k=\frac{10}{2}", true, "exact_rational"),
        ("5", "5.", true, "exact_rational"),
        ("5", "$5$.", true, "exact_rational"),
        ("(1, 2)", "(x, y) = (1, 2)", true, "exact_rational"),
        ("(1, 2)", "x = 1, y = 2", true, "exact_rational"),
        ("0.5", r"\frac{1}{2}", true, "exact_rational"),
        ("-3", "−3", true, "exact_rational"),
        (r"\pi", "π", true, "numeric"),
        (r"\text{Monday}", "monday", true, "string"),
        (r"\textbf{Monday}", "Tuesday", false, "string"),
        ("no solution", r"\text{No solution}", true, "string"),
    ]);
}

#[test]
fn answer_shapes_table() {
    check_table(&[
        // Integers, decimals, fractions.
        ("42", "42", true, "exact_rational"),
        ("42", "43", false, "exact_rational"),
        ("0.25", "1/4", true, "exact_rational"),
        ("1/3", "0.333", false, "exact_rational"),
        ("5/2", r"2\frac{1}{2}", true, "exact_rational"),
        ("-1/2", r"-\frac12", true, "exact_rational"),
        ("6", r"3 \cdot 2", true, "exact_rational"),
        ("6", r"3 \times 2", true, "exact_rational"),
        ("1.5", r"3 \div 2", true, "exact_rational"),
        // Roots and powers.
        (r"2\sqrt{2}", r"\sqrt{8}", true, "numeric"),
        (r"2\sqrt{2}", r"\sqrt{6}", false, "numeric"),
        ("4", r"\sqrt{16}", true, "exact_rational"),
        ("2", r"\sqrt[3]{8}", true, "exact_rational"),
        (r"\sqrt[3]{2}", "2^{1/3}", true, "numeric"),
        ("1024", "2^{10}", true, "exact_rational"),
        ("1/8", "2^{-3}", true, "exact_rational"),
        // Constants.
        (r"2\pi", r"\pi \cdot 2", true, "numeric"),
        (r"e^2", r"e \cdot e", true, "numeric"),
        ("2i", r"\sqrt{-4}", true, "numeric"),
        ("3 + 4i", "4i + 3", true, "numeric"),
        (r"\infty", r"\infty", true, "structure"),
        // Functions.
        (r"\frac{1}{2}", r"\sin\frac{\pi}{6}", true, "numeric"),
        (r"\frac{\pi}{4}", r"\arctan 1", true, "numeric"),
        ("3", r"\log_2 8", true, "numeric"),
        ("2", r"\ln e^2", true, "numeric"),
        (r"\sin^2 x + \cos^2 x", "1", true, "numeric"),
        ("120", "5!", true, "exact_rational"),
        ("10", r"\binom{5}{2}", true, "exact_rational"),
        ("3", "|-3|", true, "exact_rational"),
        // Expressions with variables.
        ("2x + 2", "2(x + 1)", true, "numeric"),
        ("x^2 - 1", "(x - 1)(x + 1)", true, "numeric"),
        ("x^2 - 1", "(x - 1)^2", false, "numeric"),
        (r"\frac{a}{b}", "a/b", true, "numeric"),
        ("2ab", "2ba", true, "numeric"),
        ("x_1 + x_2", "x_2 + x_1", true, "numeric"),
        (r"\alpha + 1", r"1 + \alpha", true, "numeric"),
        ("2x", "2y", false, "numeric"),
        // ±.
        (
            r"1 \pm \sqrt{2}",
            r"1 + \sqrt{2}, 1 - \sqrt{2}",
            true,
            "numeric",
        ),
        (r"1 \pm \sqrt{2}", r"1 + \sqrt{2}", false, "structure"),
        // Intervals.
        ("[1, 2)", r"\left[1, 2\right)", true, "exact_rational"),
        ("[1, 2)", "(1, 2]", false, "structure"),
        (r"(-\infty, 3)", "x < 3", true, "exact_rational"),
        (r"[2, \infty)", r"x \geq 2", true, "exact_rational"),
        (
            r"(0, 1) \cup (2, 3)",
            r"(2, 3) \cup (0, 1)",
            true,
            "exact_rational",
        ),
        // Sets and tuples.
        (r"\{1, 2, 3\}", r"\{3, 2, 1\}", true, "exact_rational"),
        (r"\{1, 2, 3\}", r"\{1, 2\}", false, "exact_rational"),
        (r"\emptyset", r"\varnothing", true, "structure"),
        ("(1, 2)", "(2, 1)", false, "exact_rational"),
        ("(1, 2, 3)", "(1, 2)", false, "structure"),
        // Matrices.
        (
            r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}",
            r"\begin{bmatrix} 1 & 2 \\ 3 & 4 \end{bmatrix}",
            true,
            "exact_rational",
        ),
        (
            r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}",
            "(1, 2)",
            true,
            "exact_rational",
        ),
        // Equations and inequalities.
        ("y = 2x + 1", "y = 1 + 2x", true, "numeric"),
        ("x^2 + y^2 = 4", "y^2 + x^2 - 4 = 0", true, "numeric"),
        ("x + y > 1", "1 < y + x", true, "numeric"),
        ("x + y > 1", "x + y < 1", false, "numeric"),
        // Text answers fall back to strings.
        ("odd", "odd", true, "string"),
        ("odd", "even", false, "string"),
    ]);
}

/// GSM8K's gold answers are worked solutions ending in `#### 72`: the number after the marker
/// is the reference, whatever the worked text before it says.
#[test]
fn gsm8k_gold_answers_are_read_after_their_hashes() {
    let v = verifier();
    let gold = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n\
                Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72";
    let reference = v.reference(gold);
    assert_eq!(reference.normalized(), "72");
    assert!(
        v.judge(r"So the answer is $\boxed{72}$.", &reference)
            .correct
    );
    assert!(
        !v.judge(r"So the answer is $\boxed{24}$.", &reference)
            .correct
    );
    // Thousands separators, and text after the marker's line, as in the dataset.
    let reference = v.reference("She earns 5 * 200 = <<5*200=1000>>1000.\n#### 1,000\n");
    assert!(
        v.judge(r"\boxed{1000}", &reference).correct,
        "{reference:?}"
    );
    // A boxed answer still wins (MATH), and a bare `####` is no answer.
    assert_eq!(v.reference(r"#### 3 but $\boxed{4}$").normalized(), "4");
    assert_eq!(v.reference("####").normalized(), "####");
}

#[test]
fn verdicts_record_extraction_normalisation_and_method() {
    let v = verifier();
    let reference = v.reference(r"The solution is long... so the answer is $\boxed{\frac{1}{2}}$.");
    assert_eq!(reference.normalized(), r"\frac{1}{2}");
    assert!(reference.parsed());
    let j = v.judge(r"Step 1: ... Therefore $\boxed{\dfrac{1}{2}}$.", &reference);
    assert_eq!(
        j,
        Judgement {
            correct: true,
            extracted: Some(r"\dfrac{1}{2}".into()),
            normalized: Some(r"\frac{1}{2}".into()),
            method: "exact_rational".into(),
        }
    );
    let j = v.judge("I cannot solve this.", &reference);
    assert_eq!(
        (j.correct, j.method.as_str(), j.extracted),
        (false, "no_answer", None)
    );
    let j = v.judge("<answer>0.5</answer>", &reference);
    assert!(j.correct);
    let prefix = MathVerifier::new(MathConfig {
        extract: vec![MathExtractor::Prefix("The final answer is".into())],
        ..MathConfig::default()
    })
    .expect("config");
    let j = prefix.judge(
        "Final Answer: The final answer is $0.5$. I hope it is correct.",
        &reference,
    );
    assert_eq!((j.correct, j.extracted.as_deref()), (true, Some("0.5")));
}

fn in_mode(mode: MathMode) -> MathVerifier {
    MathVerifier::new(MathConfig {
        mode,
        ..MathConfig::default()
    })
    .expect("config")
}

/// (gold, response, strict, math_verify): the issue's examples of what math-verify accepts,
/// judged by the default extractors in both modes.
const MODE_TABLE: &[(&str, &str, bool, bool)] = &[
    // lighteval's Minerva prompt asks for this sentence.
    (
        "42",
        "Final Answer: The final answer is $42$. I hope it is correct.",
        true,
        true,
    ),
    (
        "42",
        "So we get 6 * 7.\nFinal Answer: The final answer is 42. I hope it is correct.",
        true,
        true,
    ),
    (
        r"\frac{1}{2}",
        r"Final Answer: The final answer is $\dfrac{1}{2}$. I hope it is correct.",
        true,
        true,
    ),
    // A closing "the answer is", with or without math delimiters.
    (
        "42",
        "Adding the two gives 42. The answer is 42.",
        true,
        true,
    ),
    (
        "42",
        "the answer is 41. No, wait: the answer is 42",
        true,
        true,
    ),
    ("0.5", "Thus, the answer is $0.5$.", true, true),
    ("42", "The answer is 43.", false, false),
    // A box still comes first.
    ("42", r"The answer is 41, so $\boxed{42}$.", true, true),
    // A number followed by words is that number for math-verify (its reading of `3 pi` too).
    ("12", "The answer is 12 apples.", false, true),
    ("5", "The answer is $5$ cm.", true, true),
    ("-2.5", "The answer is -2.5 apples.", false, true),
    ("-2.5", "The answer is -2.5 degrees.", true, true), // a unit strict mode drops too
    ("13", "The answer is 12 apples.", false, false),
    ("12", r"The answer is 12+3 apples.", false, false),
    // Percent: `%` is dropped in both modes; the fraction counts with `percent`.
    (r"25\%", r"\boxed{0.25}", false, true),
    (r"28\%", r"\boxed{28}", true, true),
    ("0.25", r"\boxed{25\%}", false, true),
    ("25", r"\boxed{25\%}", true, true),
    (r"25\%", r"\boxed{0.26}", false, false),
    (r"\frac{1}{4}", r"\boxed{25\%}", false, true),
    ("25", r"\boxed{0.25}", false, false),
    // Decimals rounded to 6 places, as math-verify's `float_rounding`.
    (r"\frac{1}{3}", r"\boxed{0.333333}", false, true),
    (r"\frac{1}{3}", r"\boxed{0.3333333}", false, true),
    (r"\frac{2}{3}", r"\boxed{0.666667}", false, true),
    (r"\frac{1}{3}", r"\boxed{0.33}", false, false),
    (r"\sqrt{2}", r"\boxed{1.414214}", false, true),
    (r"\sqrt{2}", r"\boxed{1.4142}", false, false),
    // No decimal on either side: exact as ever.
    (
        r"\frac{1}{3}",
        r"\boxed{\frac{333333}{1000000}}",
        false,
        false,
    ),
    // The strict traps hold in both modes.
    ("1/2004!", r"\boxed{\frac{1}{2006!}}", false, false),
    (r"\pm 2021", r"\boxed{2021}", false, false),
];

#[test]
fn modes_judge_the_issue_examples_strict_and_as_math_verify() {
    let strict = verifier();
    let math_verify = in_mode(MathMode::MathVerify);
    for &(gold, response, want_strict, want_math_verify) in MODE_TABLE {
        for (v, want, name) in [
            (&strict, want_strict, "strict"),
            (&math_verify, want_math_verify, "math_verify"),
        ] {
            let j = v.judge(response, &v.reference(gold));
            assert_eq!(
                j.correct, want,
                "{name}: gold {gold:?} vs {response:?} (extracted {:?}, method {})",
                j.extracted, j.method
            );
        }
    }
}

#[test]
fn percent_and_decimal_places_are_options_of_their_own() {
    let with = |percent, decimal_places| {
        MathVerifier::new(MathConfig {
            percent,
            decimal_places,
            ..MathConfig::default()
        })
        .expect("config")
    };
    let judge = |v: &MathVerifier, gold: &str, answer: &str| {
        v.judge(&format!(r"\boxed{{{answer}}}"), &v.reference(gold))
    };
    let percent = with(Some(true), None);
    let j = judge(&percent, r"25\%", "0.25");
    assert_eq!((j.correct, j.method.as_str()), (true, "exact_rational"));
    assert!(judge(&percent, "0.25", r"25\%").correct);
    assert!(!judge(&percent, r"\frac{1}{3}", "0.333333").correct);
    let rounding = with(None, Some(2));
    let j = judge(&rounding, r"\frac{1}{3}", "0.33");
    assert_eq!((j.correct, j.method.as_str()), (true, "numeric"));
    assert!(!judge(&rounding, r"\frac{1}{3}", "0.34").correct);
    assert!(!judge(&rounding, r"25\%", "0.25").correct);
    // Rounding is for constants: lists and expressions in `x` are compared as before.
    assert!(!judge(&rounding, "x", "1.001x").correct);
    // An explicit option wins over the mode.
    let v = MathVerifier::new(MathConfig {
        mode: MathMode::MathVerify,
        percent: Some(false),
        ..MathConfig::default()
    })
    .expect("config");
    assert!(!judge(&v, r"25\%", "0.25").correct);
    assert!(judge(&v, r"\frac{1}{3}", "0.333333").correct);
    let config: MathConfig =
        serde_json::from_value(serde_json::json!({"mode": "math_verify"})).expect("mode parses");
    assert_eq!(
        (config.percent_as_fraction(), config.rounding()),
        (true, Some(6))
    );
    let config = MathConfig::default();
    assert_eq!(
        (config.mode, config.percent_as_fraction(), config.rounding()),
        (MathMode::Strict, false, None)
    );
}

#[test]
fn the_stage_judges_samples_and_cloud_and_flags_missing_references() {
    let ctx = BuildContext::new("math", crate::RunSettings::default());
    let built = crate::registry::build_with::<MathConfig>(&serde_json::Value::Null, &ctx)
        .expect("defaults build");
    let crate::contract::Built::Group(mut stage) = built else {
        panic!("verify.math is a group stage");
    };
    let sample = |i, text: &str| SampleRecord {
        prompt_id: "p".into(),
        sample_idx: i,
        text: text.into(),
        ..Default::default()
    };
    let mut groups = vec![
        Group {
            samples: vec![
                sample(0, r"\boxed{10}"),
                sample(1, r"\boxed{11}"),
                sample(2, "<unknown> I need external assistance </unknown>"),
            ],
            cloud: Some(CloudRecord {
                answer: Some(r"It is $\boxed{10.0}$".into()),
                ..Default::default()
            }),
            ..Group::new(PromptRecord {
                prompt_id: "p".into(),
                answer: Some("10".into()),
                ..Default::default()
            })
        },
        Group::new(PromptRecord {
            prompt_id: "q".into(),
            answer: Some("  ".into()),
            ..Default::default()
        }),
    ];
    let step = StepContext::single_worker("r", "math", 0);
    stage.process(&mut groups, &step).expect("process");
    let got: Vec<_> = groups[0]
        .verdicts
        .iter()
        .map(|v| (v.sample_idx, v.target, v.correct, v.method.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (Some(0), Target::Local, true, "exact_rational"),
            (Some(1), Target::Local, false, "exact_rational"),
            (Some(2), Target::Local, false, "no_answer"),
            (None, Target::Cloud, true, "exact_rational"),
        ]
    );
    assert_eq!(groups[1].errors[0].kind, "no_reference");
    assert!(groups[1].verdicts.is_empty());
}

#[test]
fn config_is_checked() {
    let ctx = BuildContext::new("math", crate::RunSettings::default());
    let build = |params: serde_json::Value| {
        crate::registry::build_with::<MathConfig>(&params, &ctx)
            .err()
            .map(|e| e.to_string())
    };
    assert_eq!(
        build(serde_json::json!({"extract": ["boxed", {"prefix": "The answer is"}, "whole"]})),
        None
    );
    assert_eq!(
        build(serde_json::json!({"extract": []})),
        Some("extract: list at least one place to look for the answer".into())
    );
    assert_eq!(
        build(serde_json::json!({"extract": [{"prefix": ""}]})),
        Some("extract[0].prefix: the prefix must be non-empty ASCII text".into())
    );
    assert_eq!(
        build(serde_json::json!({"rel_tol": -1.0})),
        Some("rel_tol: must be a number in [0, 1)".into())
    );
    assert_eq!(
        build(serde_json::json!({"point_range": [2.0, 1.0]})),
        Some("point_range: must be two finite numbers, low < high".into())
    );
    assert_eq!(
        build(serde_json::json!({"time_limit_ms": 0})),
        Some("time_limit_ms: must be at least 1".into())
    );
    assert_eq!(
        build(serde_json::json!({"decimal_places": 16})),
        Some("decimal_places: must be between 0 and 15".into())
    );
    assert_eq!(
        build(serde_json::json!({"mode": "math_verify", "percent": false, "decimal_places": 4})),
        None
    );
    assert!(
        build(serde_json::json!({"mode": "lighteval"}))
            .is_some_and(|e| e.contains("unknown variant"))
    );
    assert!(
        build(serde_json::json!({"tolerance": 1.0})).is_some_and(|e| e.contains("unknown field"))
    );
    assert!(
        build(serde_json::json!({"extract": ["regex"]}))
            .is_some_and(|e| e.contains("unknown variant"))
    );
}

/// Each adversarial answer must come back, without panicking, within the limit plus a generous
/// margin for a loaded machine (numbers live in BENCHMARKS.md, not here).
#[test]
fn adversarial_answers_return_within_the_limit() {
    let limit_ms = 200;
    let v = MathVerifier::new(MathConfig {
        time_limit_ms: limit_ms,
        extract: vec![MathExtractor::Boxed, MathExtractor::Whole],
        max_answer_chars: 2_000_000,
        ..MathConfig::default()
    })
    .expect("config");
    let capped = with_whole();
    let megabyte = "1".repeat(1 << 20);
    let cases: Vec<(String, &str)> = vec![
        (megabyte.clone(), "1"),
        (
            format!("{}1{}", "(".repeat(100_000), ")".repeat(100_000)),
            "1",
        ),
        (format!(r"\boxed{{{}}}", "{".repeat(100_000)), "1"),
        (
            format!(r"\boxed{{{}1{}}}", "{".repeat(100_000), "}".repeat(100_000)),
            "1",
        ),
        ("(".repeat(1 << 20), "1"),
        ("10^10^10^10^10".into(), "1"),
        ("2^{10^{9}}".into(), "2^{10^{9}}"),
        ("2^(10^9)".into(), "1"),
        ("(10^{10})!".into(), "1"),
        ("9999999999999!".into(), "1"),
        (r"\binom{10^{12}}{10^{6}}".into(), "1"),
        ("x^{10^{10}}".into(), "x"),
        ("e^{e^{e^{e^{e^{e^{10}}}}}}".into(), "1"),
        (vec!["x"; 50_000].join("+"), "50000x"),
        (vec!["2"; 100_000].join("*"), "1"),
        (vec![r"\sqrt{2}"; 20_000].join("+"), "1"),
        (format!("{}1", "-".repeat(1 << 20)), "1"),
        (vec![r"\pm 1"; 1_000].join("+"), "1"),
        (vec!["1"; 100_000].join(","), "1, 1"),
        (format!(r"\{{{}\}}", vec!["x"; 3_000].join(",")), r"\{x\}"),
        ("\\".repeat(1 << 20), "1"),
        ("é".repeat(1 << 19), "é"),
        ("\u{0}\u{7f}\u{feff}\u{202e}".repeat(1000), "1"),
    ];
    for (answer, gold) in &cases {
        for verifier in [&v, &capped] {
            let reference = verifier.reference(gold);
            let start = Instant::now();
            let j = verifier.judge(answer, &reference);
            let took = start.elapsed();
            assert!(
                took < Duration::from_millis(limit_ms) + Duration::from_secs(1),
                "{}… took {took:?} ({})",
                answer.chars().take(40).collect::<String>(),
                j.method
            );
        }
        // The reference side is bounded the same way.
        let start = Instant::now();
        let reference = v.reference(answer);
        let _ = v.judge(gold, &reference);
        assert!(start.elapsed() < Duration::from_millis(2 * limit_ms) + Duration::from_secs(1));
    }
}

#[test]
fn the_limit_holds_on_other_threads() {
    let v = MathVerifier::new(MathConfig {
        time_limit_ms: 50,
        ..MathConfig::default()
    })
    .expect("config");
    let answer = format!(r"\boxed{{\{{{}\}}}}", vec!["x"; 400].join(","));
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let reference = v.reference(r"\{x, y\}");
                    let start = Instant::now();
                    let j = v.judge(&answer, &reference);
                    (j.correct, start.elapsed())
                })
            })
            .collect();
        for handle in handles {
            let (correct, took) = handle.join().expect("no panic");
            assert!(!correct);
            assert!(took < Duration::from_secs(2));
        }
    });
}

/// Plain values: integers, decimals, fractions, and a few closed forms, written in different
/// ways.
fn plain_value() -> impl Strategy<Value = String> {
    prop_oneof![
        (-10_000i64..10_000).prop_map(|n| n.to_string()),
        (-1000i64..1000, 0u32..4).prop_map(|(n, d)| format!("{}", n as f64 / 10f64.powi(d as i32))),
        (-50i64..50, 1i64..50).prop_map(|(p, q)| format!(r"\frac{{{p}}}{{{q}}}")),
        (-50i64..50, 1i64..50).prop_map(|(p, q)| format!("{p}/{q}")),
        (1i64..50).prop_map(|n| format!(r"\sqrt{{{n}}}")),
        (1i64..5, 1i64..5).prop_map(|(a, b)| format!(r"{a}\pi/{b}")),
        (0i64..8).prop_map(|n| format!("{n}!")),
        (-5i64..5, 0u32..4).prop_map(|(b, e)| format!("({b})^{e}")),
        (1i64..20).prop_map(|n| format!(r"\pm {n}")),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn equivalence_is_symmetric_for_plain_values(a in plain_value(), b in plain_value()) {
        let v = with_whole();
        let ab = v.judge(&a, &v.reference(&b));
        let ba = v.judge(&b, &v.reference(&a));
        prop_assert_eq!((ab.correct, &ab.method), (ba.correct, &ba.method), "{} vs {}", a, b);
        // And every value equals itself.
        prop_assert!(v.judge(&a, &v.reference(&a)).correct, "{} vs itself", a);
    }

    #[test]
    fn verdicts_are_stable_under_renormalisation(a in plain_value(), b in plain_value()) {
        let v = with_whole();
        let once = normalize(&b);
        prop_assert_eq!(normalize(&once), once.clone());
        let direct = v.judge(&b, &v.reference(&a));
        let renormalised = v.judge(&once, &v.reference(&normalize(&a)));
        prop_assert_eq!(direct.correct, renormalised.correct, "{} vs {}", a, b);
    }

    #[test]
    fn no_input_panics_or_overruns(text in "\\PC{0,200}", gold in "\\PC{0,40}") {
        let v = MathVerifier::new(MathConfig {
            time_limit_ms: 100,
            extract: vec![MathExtractor::Boxed, MathExtractor::Whole],
            ..MathConfig::default()
        }).expect("config");
        let start = Instant::now();
        let _ = v.judge(&text, &v.reference(&gold));
        prop_assert!(start.elapsed() < Duration::from_millis(1200));
    }
}

#[test]
fn a_leading_number_is_read_only_before_words() {
    use super::stage::leading_number;
    for (answer, want) in [
        ("12 apples", Some("12")),
        ("-2.5 cm", Some("-2.5")),
        ("3 pi", Some("3")),
        ("12", None),
        ("12 + 3", None),
        ("12+3 apples", None),
        ("1.2.3 apples", None),
        ("x apples", None),
        ("- 3 apples", None),
        ("12. apples", None),
    ] {
        assert_eq!(leading_number(answer), want, "{answer:?}");
    }
}
