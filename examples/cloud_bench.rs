//! Throughput of `cloud.openai` against `tandem cloud-sim` (BENCHMARKS.md, "Cloud stage").
//!
//!     cargo build --release && cargo run --release --example cloud_bench -- [REQUESTS] [LATENCY_MS] [IN_FLIGHT]
//!
//! Starts `target/release/tandem cloud-sim --latency-ms LATENCY_MS` on loopback, sends REQUESTS
//! distinct questions (default 2000) through the stage with IN_FLIGHT (default 64) in flight, and
//! prints requests/s against the ideal IN_FLIGHT / latency, and this process's CPU time per
//! request (user + system, from /proc/self/stat).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use tandem_schemas::{Group, PromptRecord, SampleRecord};
use tandem_stages::{BuildContext, Built, Registry, RunSettings, StepContext};

/// This process's CPU seconds (user + system) so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the file, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

fn main() -> anyhow::Result<()> {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let requests = args.first().copied().unwrap_or(2000) as usize;
    let latency_ms = args.get(1).copied().unwrap_or(100);
    let in_flight = args.get(2).copied().unwrap_or(64);

    let mut sim = Command::new("target/release/tandem")
        .args([
            "cloud-sim",
            "--exit-on-stdin-eof",
            "--latency-ms",
            &latency_ms.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(sim.stdout.as_mut().expect("piped")).read_line(&mut line)?;
    let base = line
        .trim()
        .trim_start_matches("cloud-sim listening on ")
        .to_owned();

    let params = serde_json::json!({
        "base_url": base, "model": "sim-oracle", "cache_dir": null, "max_in_flight": in_flight,
    });
    let ctx = BuildContext::new("cloud", RunSettings::default());
    let Built::Group(mut stage) = Registry::builtin().build("cloud.openai", &params, &ctx)? else {
        anyhow::bail!("cloud.openai is a group stage");
    };
    let mut groups: Vec<Group> = (0..requests)
        .map(|i| {
            let mut g = Group::new(PromptRecord {
                prompt_id: format!("q{i:05}"),
                question: format!("What is {i} + {}?", i + 1),
                ..Default::default()
            });
            g.samples.push(SampleRecord {
                asked_help: true,
                ..Default::default()
            });
            g
        })
        .collect();

    let (cpu0, t0) = (cpu_seconds(), Instant::now());
    stage.process(
        &mut groups,
        &StepContext::single_worker("bench", "cloud", 0),
    )?;
    let (wall, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - cpu0);
    let answered = groups
        .iter()
        .filter(|g| g.cloud.as_ref().is_some_and(|c| c.answer.is_some()))
        .count();
    let ideal = in_flight as f64 * 1000.0 / latency_ms as f64;
    println!(
        "{requests} requests, {latency_ms} ms latency, {in_flight} in flight: {answered} answered in {wall:.2} s = {:.0} req/s (ideal {ideal:.0}, {:.1}%); client CPU {:.0} µs/request",
        requests as f64 / wall,
        100.0 * requests as f64 / wall / ideal,
        cpu * 1e6 / requests as f64
    );
    drop(sim.stdin.take());
    sim.wait()?;
    Ok(())
}
