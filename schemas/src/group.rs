//! [`Group`]: one prompt with its G samples and everything later stages added.

use serde::{Deserialize, Serialize};

use crate::records::*;
use crate::stream::{Facet, Facets};

/// The unit that flows through the group stages: one prompt, its samples, the cloud answer, and
/// whatever verify, reward, advantage and filter stages added. A stage never splits a group.
///
/// ```
/// use tandem_schemas::{Facet, Group, PromptRecord};
/// let group = Group::new(PromptRecord { prompt_id: "p1".into(), ..Default::default() });
/// assert!(group.facets().contains(Facet::Prompt));
/// assert!(!group.facets().contains(Facet::Samples));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Group {
    /// The question.
    pub prompt: PromptRecord,
    /// The device samples, ordered by `sample_idx`.
    pub samples: Vec<SampleRecord>,
    /// The cloud's answer, once a cloud stage ran and some sample asked for help.
    pub cloud: Option<CloudRecord>,
    /// Verdicts on samples and on the cloud answer.
    pub verdicts: Vec<VerdictRecord>,
    /// Rewards, one per sample.
    pub rewards: Vec<RewardRecord>,
    /// Advantages, one per sample.
    pub advantages: Vec<AdvantageRecord>,
    /// The filter decision.
    pub filter: Option<FilterRecord>,
    /// Records of this group that failed in some stage.
    pub errors: Vec<ErrorRecord>,
}

impl Group {
    /// A group holding only its prompt (what a source emits).
    pub fn new(prompt: PromptRecord) -> Group {
        Group {
            prompt,
            ..Group::default()
        }
    }

    /// The training step of the group.
    pub fn step(&self) -> u64 {
        self.prompt.step
    }

    /// The prompt's id.
    pub fn prompt_id(&self) -> &str {
        &self.prompt.prompt_id
    }

    /// The facets that hold rows in this group.
    pub fn facets(&self) -> Facets {
        let mut facets = Facets::of(&[Facet::Prompt]);
        let present = [
            (Facet::Samples, !self.samples.is_empty()),
            (Facet::Cloud, self.cloud.is_some()),
            (Facet::Verdicts, !self.verdicts.is_empty()),
            (Facet::Rewards, !self.rewards.is_empty()),
            (Facet::Advantages, !self.advantages.is_empty()),
            (Facet::Filter, self.filter.is_some()),
        ];
        for (facet, here) in present {
            if here {
                facets = facets.with(facet);
            }
        }
        facets
    }

    /// Records an error on this group (or on one of its samples) raised by `stage`.
    pub fn push_error(
        &mut self,
        stage: &str,
        sample_idx: Option<u32>,
        kind: &str,
        reason: impl Into<String>,
    ) {
        self.errors.push(ErrorRecord {
            run_id: self.prompt.run_id.clone(),
            step: self.prompt.step,
            prompt_id: self.prompt.prompt_id.clone(),
            sample_idx,
            stage: stage.to_owned(),
            kind: kind.to_owned(),
            reason: reason.into(),
        });
    }

    /// Moves the group (every row of it) to another run and step, as replay does.
    pub fn rekey(&mut self, run_id: &str, step: u64) {
        macro_rules! set {
            ($row:expr) => {{
                $row.run_id = run_id.to_owned();
                $row.step = step;
            }};
        }
        set!(self.prompt);
        self.samples.iter_mut().for_each(|r| set!(r));
        self.cloud.iter_mut().for_each(|r| set!(r));
        self.verdicts.iter_mut().for_each(|r| set!(r));
        self.rewards.iter_mut().for_each(|r| set!(r));
        self.advantages.iter_mut().for_each(|r| set!(r));
        self.filter.iter_mut().for_each(|r| set!(r));
        self.errors.iter_mut().for_each(|r| set!(r));
    }

    /// Whether the learner should use the group (no filter ran, or the filter kept it).
    pub fn kept(&self) -> bool {
        self.filter.as_ref().is_none_or(|f| f.kept)
    }
}
