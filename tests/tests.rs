//! Integration tests of the whole (one test binary, as ripgrep and cargo do).

mod advantage_filter;
mod bad_input;
mod cloud;
mod cloud_sim;
mod common;
mod data;
mod dataflow;
mod demo;
mod eval;
mod hf_layouts;
mod inspect;
mod interop;
mod kill;
mod learn;
mod parquet_codecs;
mod plugin_rewards;
mod policy;
mod presets;
mod recipes;
mod replay;
mod report;
mod serve;
mod sft;
mod step_scope;
mod torch_smoke;
mod verify;
