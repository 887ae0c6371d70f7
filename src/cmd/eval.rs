//! `tandem eval`: a routing policy against a cloud budget (the evaluation is `tandem_lab::eval`).

use anyhow::Result;
pub use tandem_lab::eval::Args;
use tandem_lab::eval::{Evaluation, evaluate, markdown};

pub fn run(args: Args) -> Result<()> {
    let Evaluation {
        report, help_run, ..
    } = evaluate(&args)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", markdown(&report));
        println!("\nwritten to {}", help_run.join("eval").display());
    }
    Ok(())
}
