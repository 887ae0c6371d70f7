//! The Countdown parser on arbitrary text, as an answer and as a question: no panic, and an
//! expression that parses is judged the same after its normalised form is parsed again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_stages::verify::{CountdownProblem, Outcome, check_expression};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let problem = CountdownProblem::from_question(text).unwrap_or(CountdownProblem {
        numbers: vec![74, 78, 36, 7],
        target: 33,
    });
    let (outcome, normalized) = check_expression(&problem, text);
    if let Some(normalized) = normalized {
        assert_ne!(outcome, Outcome::ParseError);
        assert_eq!(check_expression(&problem, &normalized).0, outcome);
    }
    let _ = CountdownProblem::from_answer_json(text);
});
