//! Evaluation of a routing policy against a cloud budget: the paper's metrics (call-for-help
//! ratio, local, conditional and overall accuracy at a budget) and RouteLLM's routing metrics
//! (accuracy against call rate, APGR, the call rate that recovers half the gap), computed from
//! one outcome per test question.

mod router;
mod routing;
mod runs;

pub use router::{Router, RouterTraining, prompt_features};
pub use routing::{
    AtBudget, Outcome, RoutingCurve, ranking_by_scores, ranking_for_policy, ranking_random, roc_auc,
};
pub use runs::{joined_outcomes, solved_questions};
