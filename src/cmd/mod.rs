//! One module per subcommand.

pub mod cloud_sim;
pub mod inspect;
pub mod model;
pub mod report;
pub mod run;
pub mod validate;
pub mod verify;
