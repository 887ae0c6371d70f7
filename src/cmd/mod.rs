//! One module per subcommand.

pub mod inspect;
pub mod model;
pub mod run;
pub mod validate;
pub mod verify;
