//! `filter.none`: keeps every group (bucket `all`), so that a run without filtering still has a
//! filter stream to compare with a filtered one (the paper's "collaboration-aware tuning"
//! baseline: `advantage.dr_grpo` and no filtering). A group that an earlier stage failed on is
//! still dropped (bucket `errors`): its rewards or advantages are incomplete, and learning from
//! them is not "no filtering" but learning from a wrong number.

use serde::Deserialize;
use tandem_schemas::{Facet, Facets, Group};

use super::decision::{Decision, earlier_errors};
use crate::Result;
use crate::contract::{BuildContext, Built, GroupStage, Scope, StepContext};
use crate::registry::StageConfig;

/// Parameters of `filter.none` (none).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoFilterConfig {}

impl StageConfig for NoFilterConfig {
    fn build(self, _ctx: &BuildContext) -> Result<Built> {
        Ok(Built::Group(Box::new(NoFilter)))
    }
}

/// Keeps every group that no stage failed on.
pub struct NoFilter;

impl GroupStage for NoFilter {
    fn needs(&self) -> Facets {
        Facets::of(&[Facet::Prompt])
    }

    fn provides(&self) -> Facets {
        Facets::of(&[Facet::Filter])
    }

    fn scope(&self) -> Scope {
        Scope::Step
    }

    fn process(&mut self, groups: &mut [Group], _ctx: &StepContext) -> Result<()> {
        for group in groups {
            earlier_errors(group)
                .unwrap_or_else(|| Decision::keep("all", "no filtering"))
                .write(group);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use tandem_schemas::PromptRecord;

    use super::*;

    #[test]
    fn keeps_all_but_failed_groups() {
        let prompt = |id: &str| {
            Group::new(PromptRecord {
                prompt_id: id.into(),
                step: 3,
                ..Default::default()
            })
        };
        let mut failed = prompt("failed");
        failed.push_error("rollouts", None, "too_few_completions", "x");
        let mut groups = vec![prompt("a"), failed];
        let Ok(Built::Group(mut stage)) = crate::registry::build_with::<NoFilterConfig>(
            &serde_json::Value::Null,
            &BuildContext::new("none", crate::RunSettings::default()),
        ) else {
            panic!("filter.none builds a group stage");
        };
        stage
            .process(&mut groups, &StepContext::single_worker("r", "none", 3))
            .expect("process");
        let rows: Vec<_> = groups
            .iter()
            .map(|g| {
                let f = g.filter.as_ref().expect("decision");
                (
                    f.prompt_id.as_str(),
                    f.step,
                    f.kept,
                    f.bucket.as_str(),
                    f.reason.as_str(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            vec![
                ("a", 3, true, "all", "no filtering"),
                (
                    "failed",
                    3,
                    false,
                    "errors",
                    "earlier stages failed on it: rollouts/too_few_completions"
                ),
            ]
        );
    }
}
