//! The math verifier on arbitrary text: the first line is the reference, the rest the
//! response. No panic, every verdict within its time limit (plus a second for a loaded
//! machine), and normalisation stable under re-normalisation.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use tandem_stages::verify::{MathConfig, MathExtractor, MathVerifier, normalize_math};

const LIMIT_MS: u64 = 100;

fn verifier() -> &'static MathVerifier {
    static VERIFIER: OnceLock<MathVerifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        MathVerifier::new(MathConfig {
            // `whole` last, so text without a box is parsed too.
            extract: vec![
                MathExtractor::Boxed,
                MathExtractor::AnswerTag,
                MathExtractor::Prefix("The answer is".into()),
                MathExtractor::Whole,
            ],
            time_limit_ms: LIMIT_MS,
            ..MathConfig::default()
        })
        .expect("a valid config")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (gold, response) = text.split_once('\n').unwrap_or(("1", text));
    let start = Instant::now();
    let reference = verifier().reference(gold);
    let judgement = verifier().judge(response, &reference);
    let took = start.elapsed();
    // Reference and response each have their own limit.
    assert!(
        took < Duration::from_millis(2 * LIMIT_MS) + Duration::from_secs(1),
        "{took:?} ({})",
        judgement.method
    );
    let once = normalize_math(response);
    assert_eq!(normalize_math(&once), once);
});
