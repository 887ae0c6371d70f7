//! One module per subcommand.

pub mod cloud_sim;
pub mod data;
pub mod demo;
pub mod eval;
pub mod experiment;
pub mod inspect;
pub mod model;
pub mod replay;
pub mod report;
pub mod run;
pub mod serve;
pub mod validate;
pub mod verify;
