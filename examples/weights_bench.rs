//! The weight broadcast of a cluster run, measured alone (`tandem_pipeline::cluster::
//! time_broadcast`): process 0 publishes versions of a model, the operator cluster runs use
//! carries each to every other process's hub, and those copy it into their generator's model.
//! One JSON line per version and process. `benches/cluster.sh` runs it on the Qwen2.5-0.5B
//! shape on loopback:
//!
//! ```sh
//! cargo run --release --example weights_bench -- --model DIR --hostfile FILE --process 1 &
//! cargo run --release --example weights_bench -- --model DIR --hostfile FILE --process 0
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use clap::Parser;
use tandem_pipeline::Cluster;
use tandem_stages::policy::{
    self, DeviceSpec, PolicyHub, PromptFormat, Tokenizer, Transformer, WeightDtype,
};

#[derive(Parser)]
struct Args {
    /// A local HF model directory (the learner's and the generators' model).
    #[arg(long)]
    model: PathBuf,
    /// The cluster's hostfile (one `host:port` per line).
    #[arg(long)]
    hostfile: PathBuf,
    /// This process.
    #[arg(long)]
    process: usize,
    /// Versions to send.
    #[arg(long, default_value_t = 3)]
    versions: u64,
    /// Torch threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// The weights' dtype: f32 (the CPU's training dtype) or bf16 (a GPU's).
    #[arg(long, default_value = "f32")]
    dtype: String,
}

fn main() -> Result<()> {
    let args = Args::parse();
    policy::set_threads(args.threads);
    let cluster =
        Cluster::from_hostfile(&args.hostfile, args.process, None).map_err(anyhow::Error::msg)?;
    let dtype = match args.dtype.as_str() {
        "f32" => WeightDtype::F32,
        "bf16" => WeightDtype::BF16,
        other => anyhow::bail!("--dtype {other}: expected f32 or bf16"),
    };
    let model = Transformer::load(&args.model, &DeviceSpec::Cpu, Some(dtype))?;
    let hub = Arc::new(PolicyHub::new(
        args.model.clone(),
        (args.model.clone(), 0),
        model.config.dtype,
        1.0,
        PromptFormat {
            chat: false,
            system_prompt: None,
            template: "{question}".into(),
        },
        Tokenizer::from_dir(&args.model)?,
        0,
    ));
    let processes = cluster.processes();
    let timings = tandem_pipeline::cluster::time_broadcast(&cluster, hub, model, args.versions)
        .map_err(anyhow::Error::msg)?;
    for t in timings {
        let mut line = serde_json::to_value(&t)?;
        line["bench"] = "weights_broadcast".into();
        line["process"] = args.process.into();
        line["processes"] = processes.into();
        line["dtype"] = args.dtype.clone().into();
        if args.process == 0 {
            line["gb_per_s"] = (t.bytes as f64 / (t.installed_s - t.publish_s) / 1e9).into();
        }
        println!("{line}");
    }
    Ok(())
}
