//! Reading search questions back (`Which of 3, 8, 5, 2 plus 4 is 9?`, the `choices` levels of
//! the arithmetic task): which listed number, combined with the operand, gives the target. The
//! form is written in `arithmetic.rs`; it is read here, beside it, for whoever must answer such a
//! question (the simulated cloud).

/// A search question, read back from its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchProblem {
    /// The listed numbers, in order.
    pub numbers: Vec<i64>,
    /// `+`, `-` or `*`.
    pub op: char,
    /// The operand every number is combined with.
    pub operand: i64,
    /// The value to reach.
    pub target: i64,
}

impl SearchProblem {
    /// `n op operand`, or `None` on overflow.
    pub fn apply(&self, n: i64) -> Option<i64> {
        match self.op {
            '+' => n.checked_add(self.operand),
            '-' => n.checked_sub(self.operand),
            _ => n.checked_mul(self.operand),
        }
    }

    /// The first listed number that reaches the target.
    pub fn solve(&self) -> Option<i64> {
        self.numbers
            .iter()
            .copied()
            .find(|&n| self.apply(n) == Some(self.target))
    }
}

/// The search question inside a message (templates wrap it): `Which of A, B, … <plus|minus|times>
/// K is T?`, numbers as integers.
pub fn problem_in(message: &str) -> Option<SearchProblem> {
    let start = message.find("Which of ")? + "Which of ".len();
    let rest = &message[start..];
    let (body, _) = rest.split_once('?')?;
    let (left, target) = body.rsplit_once(" is ")?;
    let target = target.trim().parse().ok()?;
    let (list, op, operand) = ["plus", "minus", "times"].iter().find_map(|word| {
        let (list, operand) = left.rsplit_once(&format!(" {word} "))?;
        let op = match *word {
            "plus" => '+',
            "minus" => '-',
            _ => '*',
        };
        Some((list, op, operand))
    })?;
    let operand = operand.trim().parse().ok()?;
    let numbers = list
        .split(',')
        .map(|n| n.trim().parse().ok())
        .collect::<Option<Vec<i64>>>()?;
    Some(SearchProblem {
        numbers,
        op,
        operand,
        target,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_questions_are_read_and_solved() {
        let problem =
            problem_in("Which of 3, 8, 5, 2 plus 4 is 9? Ask for help if you cannot solve it.")
                .unwrap();
        assert_eq!(problem.numbers, [3, 8, 5, 2]);
        assert_eq!((problem.op, problem.operand, problem.target), ('+', 4, 9));
        assert_eq!(problem.solve(), Some(5));
        let minus = problem_in("Which of 12, 40 minus 7 is -3?").unwrap();
        assert_eq!(minus.solve(), None);
        assert_eq!(
            problem_in("Which of 6, 7 times 3 is 21?").unwrap().solve(),
            Some(7)
        );
        for not_one in [
            "What is 3 + 4?",
            "Which of these is 9?",
            "Which of 3, x plus 4 is 9?",
        ] {
            assert_eq!(problem_in(not_one), None, "{not_one}");
        }
    }
}
