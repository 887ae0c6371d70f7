//! Stream kinds, group facets, and the [`Record`] trait that ties a row type to its schema.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use arrow::datatypes::{FieldRef, Schema, SchemaRef};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_arrow::schema::{SchemaLike, TracingOptions};

use crate::records::*;

/// Version of every schema this build writes; stored as `tandem.schema_version` in the metadata.
pub const SCHEMA_VERSION: u32 = 1;

/// A part of a [`crate::Group`] that a stage can need or provide.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Facet {
    /// The question (every group has it).
    Prompt,
    /// The G device samples.
    Samples,
    /// The cloud's answer.
    Cloud,
    /// Verdicts on samples (and on the cloud answer).
    Verdicts,
    /// Per-sample rewards.
    Rewards,
    /// Per-sample advantages.
    Advantages,
    /// The filter decision.
    Filter,
}

impl Facet {
    /// Every facet, in pipeline order.
    pub const ALL: [Facet; 7] = [
        Facet::Prompt,
        Facet::Samples,
        Facet::Cloud,
        Facet::Verdicts,
        Facet::Rewards,
        Facet::Advantages,
        Facet::Filter,
    ];

    /// The stream a stage providing this facet writes.
    pub fn stream(self) -> StreamKind {
        match self {
            Facet::Prompt => StreamKind::Prompts,
            Facet::Samples => StreamKind::Samples,
            Facet::Cloud => StreamKind::Cloud,
            Facet::Verdicts => StreamKind::Verdicts,
            Facet::Rewards => StreamKind::Rewards,
            Facet::Advantages => StreamKind::Advantages,
            Facet::Filter => StreamKind::Filter,
        }
    }

    /// The lower-case name used in YAML and messages.
    pub fn name(self) -> &'static str {
        self.stream().name()
    }
}

impl fmt::Display for Facet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of facets (what a stage needs, or what is available at a point of the pipeline).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Facets(u8);

impl Facets {
    /// The empty set.
    pub const NONE: Facets = Facets(0);

    /// A set of the given facets.
    pub fn of(facets: &[Facet]) -> Facets {
        facets.iter().fold(Facets::NONE, |set, &f| set.with(f))
    }

    /// This set with `facet` added.
    pub fn with(self, facet: Facet) -> Facets {
        Facets(self.0 | (1 << facet as u8))
    }

    /// The union of two sets.
    pub fn union(self, other: Facets) -> Facets {
        Facets(self.0 | other.0)
    }

    /// Whether `facet` is in the set.
    pub fn contains(self, facet: Facet) -> bool {
        self.0 & (1 << facet as u8) != 0
    }

    /// The facets of `self` that `available` lacks.
    pub fn missing_from(self, available: Facets) -> Vec<Facet> {
        self.iter().filter(|&f| !available.contains(f)).collect()
    }

    /// The facets in the set, in pipeline order.
    pub fn iter(self) -> impl Iterator<Item = Facet> {
        Facet::ALL.into_iter().filter(move |&f| self.contains(f))
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Facets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = self.iter().map(Facet::name).collect();
        write!(f, "[{}]", names.join(", "))
    }
}

/// The kind of rows a stored stream holds.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum StreamKind {
    /// [`PromptRecord`] rows.
    Prompts,
    /// [`SampleRecord`] rows.
    Samples,
    /// [`CloudRecord`] rows.
    Cloud,
    /// [`VerdictRecord`] rows.
    Verdicts,
    /// [`RewardRecord`] rows.
    Rewards,
    /// [`AdvantageRecord`] rows.
    Advantages,
    /// [`FilterRecord`] rows.
    Filter,
    /// [`MetricsRecord`] rows.
    Metrics,
    /// [`ErrorRecord`] rows.
    Errors,
    /// [`RequestRecord`] rows (`tandem serve`'s ledger).
    Requests,
}

impl StreamKind {
    /// The name stored in the schema metadata and used in manifests.
    pub fn name(self) -> &'static str {
        match self {
            StreamKind::Prompts => "prompts",
            StreamKind::Samples => "samples",
            StreamKind::Cloud => "cloud",
            StreamKind::Verdicts => "verdicts",
            StreamKind::Rewards => "rewards",
            StreamKind::Advantages => "advantages",
            StreamKind::Filter => "filter",
            StreamKind::Metrics => "metrics",
            StreamKind::Errors => "errors",
            StreamKind::Requests => "requests",
        }
    }

    /// The group facet this stream stores, if it stores one.
    pub fn facet(self) -> Option<Facet> {
        Facet::ALL.into_iter().find(|f| f.stream() == self)
    }

    /// The Arrow schema of the stream.
    pub fn schema(self) -> SchemaRef {
        match self {
            StreamKind::Prompts => PromptRecord::schema(),
            StreamKind::Samples => SampleRecord::schema(),
            StreamKind::Cloud => CloudRecord::schema(),
            StreamKind::Verdicts => VerdictRecord::schema(),
            StreamKind::Rewards => RewardRecord::schema(),
            StreamKind::Advantages => AdvantageRecord::schema(),
            StreamKind::Filter => FilterRecord::schema(),
            StreamKind::Metrics => MetricsRecord::schema(),
            StreamKind::Errors => ErrorRecord::schema(),
            StreamKind::Requests => RequestRecord::schema(),
        }
    }
}

impl fmt::Display for StreamKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A row type of a stream: serde for the Arrow bridge, plus which stream it is.
pub trait Record: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// The stream these rows belong to.
    const KIND: StreamKind;

    /// The Arrow fields, derived once from the type.
    fn fields() -> &'static [FieldRef];

    /// The Arrow schema with `tandem.stream` and `tandem.schema_version` metadata.
    fn schema() -> SchemaRef;
}

/// Options shared by every schema: enums as strings (readable in DuckDB), maps as Arrow maps.
fn tracing_options() -> TracingOptions {
    TracingOptions::default()
        .enums_without_data_as_strings(true)
        .map_as_struct(false)
}

fn derive_schema<R: Record>() -> (Vec<FieldRef>, SchemaRef) {
    let fields = Vec::<FieldRef>::from_type::<R>(tracing_options())
        .expect("record types are plain structs that serde_arrow can trace");
    let metadata = HashMap::from([
        ("tandem.stream".to_owned(), R::KIND.name().to_owned()),
        (
            "tandem.schema_version".to_owned(),
            SCHEMA_VERSION.to_string(),
        ),
    ]);
    let schema = Arc::new(Schema::new(fields.clone()).with_metadata(metadata));
    (fields, schema)
}

macro_rules! record {
    ($ty:ty, $kind:expr) => {
        impl Record for $ty {
            const KIND: StreamKind = $kind;

            fn fields() -> &'static [FieldRef] {
                &cached::<$ty>().0
            }

            fn schema() -> SchemaRef {
                cached::<$ty>().1.clone()
            }
        }
    };
}

/// One schema cache per record type (generic statics do not exist, so a match on the kind).
fn cached<R: Record>() -> &'static (Vec<FieldRef>, SchemaRef) {
    static CACHE: [OnceLock<(Vec<FieldRef>, SchemaRef)>; 10] = [const { OnceLock::new() }; 10];
    CACHE[R::KIND as usize].get_or_init(derive_schema::<R>)
}

record!(PromptRecord, StreamKind::Prompts);
record!(SampleRecord, StreamKind::Samples);
record!(CloudRecord, StreamKind::Cloud);
record!(VerdictRecord, StreamKind::Verdicts);
record!(RewardRecord, StreamKind::Rewards);
record!(AdvantageRecord, StreamKind::Advantages);
record!(FilterRecord, StreamKind::Filter);
record!(MetricsRecord, StreamKind::Metrics);
record!(ErrorRecord, StreamKind::Errors);
record!(RequestRecord, StreamKind::Requests);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facets_set_operations() {
        let have = Facets::of(&[Facet::Prompt, Facet::Samples]);
        let need = Facets::of(&[Facet::Samples, Facet::Verdicts, Facet::Cloud]);
        assert_eq!(need.missing_from(have), vec![Facet::Cloud, Facet::Verdicts]);
        assert!(have.union(need).contains(Facet::Cloud));
        assert_eq!(have.to_string(), "[prompts, samples]");
    }

    #[test]
    fn every_kind_has_its_own_schema_with_metadata() {
        let kinds = [
            StreamKind::Prompts,
            StreamKind::Samples,
            StreamKind::Cloud,
            StreamKind::Verdicts,
            StreamKind::Rewards,
            StreamKind::Advantages,
            StreamKind::Filter,
            StreamKind::Metrics,
            StreamKind::Errors,
            StreamKind::Requests,
        ];
        for kind in kinds {
            let schema = kind.schema();
            assert_eq!(schema.metadata()["tandem.stream"], kind.name());
            assert_eq!(schema.metadata()["tandem.schema_version"], "1");
            assert!(
                schema.field_with_name("run_id").is_ok(),
                "{kind} lacks run_id"
            );
            assert!(schema.field_with_name("step").is_ok(), "{kind} lacks step");
        }
        assert!(
            StreamKind::Samples
                .schema()
                .field_with_name("sample_idx")
                .is_ok()
        );
        assert_eq!(StreamKind::Samples.facet(), Some(Facet::Samples));
        assert_eq!(StreamKind::Errors.facet(), None);
    }
}
