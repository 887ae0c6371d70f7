//! `reward.command`: a reward computed by a long-lived subprocess in any language, speaking JSON
//! Lines on its standard input and output.
//!
//! For each group the stage writes one line, the group's [`GroupView`], and reads one line back,
//! the result (`{"scores": [...]}` or `{"error": "..."}`, checked as described in
//! [`super::plugin`]). The process is started on the first group and kept for the run, one per
//! worker. Its standard error is passed to the log (and its last lines are quoted when it dies).
//!
//! - A call that takes longer than `timeout_ms` becomes a `timeout` error row, and the process is
//!   killed (a late answer would be read as the next group's) and started again for the next
//!   group.
//! - A process that exits or closes its output mid-call makes a `crashed` error row with its exit
//!   status and last words, and is started again for the next group. Past `max_restarts`
//!   restarts the run stops: a reward that cannot stay up would turn every group into an error.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tandem_schemas::{Facet, Facets, Group};

use super::plugin::{self, GroupView, Problem};
use super::{non_negative, one};
use crate::contract::{BuildContext, Built, GroupStage, StepContext};
use crate::registry::StageConfig;
use crate::{Result, StageError};

/// Parameters of `reward.command`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandConfig {
    /// The program and its arguments, e.g. `[python3, rewards/brevity.py]`. A relative program
    /// path containing `/` is resolved against the working directory; a bare name is looked up
    /// on `PATH`.
    pub command: Vec<String>,
    /// Working directory of the process (default: tandem's).
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// Extra environment variables of the process.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Longest wait for one group's line, in milliseconds (default 30000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Restarts (after a crash or a timeout) before the run stops (default 5 per worker).
    #[serde(default = "default_max_restarts")]
    pub max_restarts: u32,
    /// The component name of bare-number scores (default `score`).
    #[serde(default = "default_component")]
    pub component: String,
    /// Multiplier of this stage's contribution to the summed reward (default 1.0).
    #[serde(default = "one")]
    pub weight: f64,
}

fn default_timeout_ms() -> u64 {
    30_000
}

fn default_max_restarts() -> u32 {
    5
}

pub(super) fn default_component() -> String {
    "score".into()
}

impl StageConfig for CommandConfig {
    fn build(mut self, ctx: &BuildContext) -> Result<Built> {
        non_negative("weight", self.weight)?;
        let Some(program) = self.command.first() else {
            return Err(StageError::Params {
                path: "command".into(),
                message: "must name a program, e.g. [python3, reward.py]".into(),
            });
        };
        if self.timeout_ms == 0 {
            return Err(StageError::Params {
                path: "timeout_ms".into(),
                message: "must be > 0".into(),
            });
        }
        if program.contains('/') {
            let resolved = ctx.resolve(program.as_ref());
            if !resolved.is_file() {
                return Err(StageError::Params {
                    path: "command[0]".into(),
                    message: format!("no such program: {}", resolved.display()),
                });
            }
            self.command[0] = resolved.to_string_lossy().into_owned();
        } else if !on_path(program) {
            return Err(StageError::Params {
                path: "command[0]".into(),
                message: format!("`{program}` is not on PATH"),
            });
        }
        self.cwd = self.cwd.map(|dir| ctx.resolve(&dir));
        Ok(Built::Group(Box::new(CommandReward {
            config: self,
            process: None,
            restarts: 0,
        })))
    }
}

/// Whether `name` is an executable file in a `PATH` directory.
fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
}

/// Scores groups with a subprocess.
pub struct CommandReward {
    config: CommandConfig,
    process: Option<Process>,
    restarts: u32,
}

impl GroupStage for CommandReward {
    fn needs(&self) -> Facets {
        Facets::of(&[Facet::Samples])
    }

    fn provides(&self) -> Facets {
        Facets::of(&[Facet::Rewards])
    }

    fn process(&mut self, groups: &mut [Group], ctx: &StepContext) -> Result<()> {
        for group in groups {
            let result = self.score(group, ctx)?;
            plugin::apply(group, &ctx.stage_id, self.config.weight, result);
        }
        Ok(())
    }
}

impl CommandReward {
    /// Sends one group and checks the answer; a failed call is a problem of the group.
    fn score(
        &mut self,
        group: &Group,
        ctx: &StepContext,
    ) -> Result<Result<Vec<plugin::Components>, Vec<Problem>>> {
        let line = serde_json::to_string(&GroupView::of(group))
            .map_err(|e| StageError::Run(format!("encoding group {}: {e}", group.prompt_id())))?;
        let process = match &mut self.process {
            Some(process) => process,
            slot @ None => slot.insert(Process::spawn(&self.config, ctx)?),
        };
        match process.call(&line, Duration::from_millis(self.config.timeout_ms)) {
            Ok(answer) => Ok(plugin::parse_line(&answer)
                .map_err(|p| vec![p])
                .and_then(|value| plugin::check(&value, group, &self.config.component))),
            Err(problem) => {
                // The process is gone or stuck: drop (kill) it; the next group starts another.
                self.process = None;
                self.restarts += 1;
                if self.restarts > self.config.max_restarts {
                    return Err(StageError::Run(format!(
                        "stage `{}`: reward command {:?} failed {} times (max_restarts: {}); last: {}",
                        ctx.stage_id,
                        self.config.command,
                        self.restarts,
                        self.config.max_restarts,
                        problem.reason
                    )));
                }
                Ok(Err(vec![problem]))
            }
        }
    }
}

/// Lines of standard error kept for messages.
const STDERR_TAIL: usize = 20;

/// A running reward process.
struct Process {
    child: Child,
    /// `None` once closed, when the process is dropped.
    stdin: Option<ChildStdin>,
    lines: Receiver<std::io::Result<String>>,
    stderr: Arc<Mutex<VecDeque<String>>>,
}

impl Process {
    fn spawn(config: &CommandConfig, ctx: &StepContext) -> Result<Process> {
        let mut command = Command::new(&config.command[0]);
        command
            .args(&config.command[1..])
            .envs(&config.env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(dir) = &config.cwd {
            command.current_dir(dir);
        }
        let mut child = command.spawn().map_err(|e| {
            StageError::Run(format!(
                "stage `{}`: starting reward command {:?}: {e}",
                ctx.stage_id, config.command
            ))
        })?;
        let (stdin, stdout, stderr) =
            match (child.stdin.take(), child.stdout.take(), child.stderr.take()) {
                (Some(i), Some(o), Some(e)) => (i, o, e),
                _ => {
                    return Err(StageError::Run(
                        "reward command: pipes were not opened".into(),
                    ));
                }
            };
        // Readers on their own threads: the stage waits on a channel with a timeout, and a
        // process that writes much to stderr never blocks on a full pipe.
        let (tx, lines) = mpsc::channel();
        std::thread::Builder::new()
            .name(format!("{}-stdout", ctx.stage_id))
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let failed = line.is_err();
                    if tx.send(line).is_err() || failed {
                        break;
                    }
                }
            })
            .map_err(|e| StageError::Run(format!("reward command: reader thread: {e}")))?;
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_TAIL)));
        let sink = Arc::clone(&tail);
        let stage = ctx.stage_id.clone();
        std::thread::Builder::new()
            .name(format!("{}-stderr", ctx.stage_id))
            .spawn(move || {
                for line in BufReader::new(stderr)
                    .lines()
                    .map_while(std::result::Result::ok)
                {
                    tracing::info!(stage = %stage, "{line}");
                    let mut tail = sink.lock().unwrap_or_else(|e| e.into_inner());
                    if tail.len() == STDERR_TAIL {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            })
            .map_err(|e| StageError::Run(format!("reward command: stderr thread: {e}")))?;
        Ok(Process {
            child,
            stdin: Some(stdin),
            lines,
            stderr: tail,
        })
    }

    /// Writes `line` and waits up to `timeout` for the answer line.
    fn call(&mut self, line: &str, timeout: Duration) -> Result<String, Problem> {
        let sent = match self.stdin.as_mut() {
            Some(stdin) => stdin
                .write_all(line.as_bytes())
                .and_then(|()| stdin.write_all(b"\n"))
                .and_then(|()| stdin.flush()),
            None => Err(std::io::ErrorKind::BrokenPipe.into()),
        };
        if let Err(e) = sent {
            return Err(self.crashed(&format!("writing the group failed ({e})")));
        }
        match self.lines.recv_timeout(timeout) {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(self.crashed(&format!("reading its answer failed ({e})"))),
            Err(RecvTimeoutError::Disconnected) => Err(self.crashed("it closed its output")),
            Err(RecvTimeoutError::Timeout) => Err(Problem::group(
                "timeout",
                format!(
                    "no answer within {} ms; the process was restarted",
                    timeout.as_millis()
                ),
            )),
        }
    }

    /// A `crashed` problem with the exit status and the last lines of standard error.
    fn crashed(&mut self, what: &str) -> Problem {
        // Give a dying process a moment to be reaped so its status can be told.
        let mut status = None;
        for _ in 0..50 {
            if let Ok(Some(s)) = self.child.try_wait() {
                status = Some(s);
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // The reader thread may still be draining stderr; give it the same moment.
        let tail = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        let last: Vec<&str> = tail
            .iter()
            .rev()
            .take(5)
            .rev()
            .map(String::as_str)
            .collect();
        let status = status.map_or_else(|| "still running".to_owned(), |s| s.to_string());
        Problem::group(
            "crashed",
            format!(
                "reward command {what}; {status}; last stderr: {}",
                if last.is_empty() {
                    "(none)".to_owned()
                } else {
                    last.join(" | ")
                }
            ),
        )
    }
}

impl Drop for Process {
    /// Closes the process's input (a well-behaved loop ends at EOF), then kills it if it lingers.
    fn drop(&mut self) {
        drop(self.stdin.take());
        for _ in 0..20 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use tandem_schemas::{PromptRecord, SampleRecord};

    use super::*;

    /// A stage running `python3 -c script`.
    fn stage(script: &str, timeout_ms: u64, max_restarts: u32) -> CommandReward {
        let params = serde_json::json!({
            "command": ["python3", "-c", script],
            "timeout_ms": timeout_ms,
            "max_restarts": max_restarts,
        });
        let config: CommandConfig = crate::params::parse(&params).expect("params");
        let ctx = BuildContext::new("judge", crate::RunSettings::default());
        match config.build(&ctx).expect("build") {
            Built::Group(_) => {}
            _ => unreachable!("a group stage"),
        }
        CommandReward {
            config: crate::params::parse(&params).expect("params"),
            process: None,
            restarts: 0,
        }
    }

    /// Groups `q0…` with `samples` samples each whose text is the prompt id.
    fn groups(ids: &[&str], samples: u32) -> Vec<Group> {
        ids.iter()
            .map(|id| {
                let mut g = Group::new(PromptRecord {
                    prompt_id: (*id).into(),
                    question: format!("question {id}"),
                    ..Default::default()
                });
                g.samples = (0..samples)
                    .map(|i| SampleRecord {
                        prompt_id: (*id).into(),
                        sample_idx: i,
                        text: "x ".repeat(i as usize + 1),
                        ..Default::default()
                    })
                    .collect();
                g
            })
            .collect()
    }

    fn ctx() -> StepContext {
        StepContext::single_worker("run", "judge", 0)
    }

    /// What happened to each group: its rewards, or its error rows' kinds.
    fn outcome(groups: &[Group]) -> Vec<String> {
        groups
            .iter()
            .map(|g| {
                if g.errors.is_empty() {
                    let r: Vec<String> = g.rewards.iter().map(|r| r.reward.to_string()).collect();
                    format!("{}: {}", g.prompt_id(), r.join(","))
                } else {
                    let e: Vec<&str> = g.errors.iter().map(|e| e.kind.as_str()).collect();
                    format!("{}: error {}", g.prompt_id(), e.join(","))
                }
            })
            .collect()
    }

    /// Answers by prompt id: `ok` scores word counts, the others misbehave in one way each.
    const MISBEHAVING: &str = r#"
import json, sys, time
for line in sys.stdin:
    g = json.loads(line)
    pid = g["prompt_id"]
    words = [len(s["text"].split()) for s in g["samples"]]
    if pid.startswith("ok"):
        out = {"scores": words}
    elif pid == "short":
        out = {"scores": words[:-1]}
    elif pid == "nan":
        out = {"scores": [float("nan")] + words[1:]}
    elif pid == "text":
        out = {"scores": ["1"] + words[1:]}
    elif pid == "refuse":
        out = {"error": "no gold answer"}
    elif pid == "garbage":
        print("not json at all", flush=True)
        continue
    elif pid == "crash":
        sys.stderr.write("boom: cannot score\n"); sys.stderr.flush()
        sys.exit(3)
    elif pid == "hang":
        time.sleep(30)
    print(json.dumps(out), flush=True)
"#;

    #[test]
    fn every_misbehaviour_is_an_error_row_and_good_groups_still_score() {
        let mut s = stage(MISBEHAVING, 1500, 5);
        let mut gs = groups(
            &[
                "ok1", "short", "nan", "text", "refuse", "garbage", "crash", "ok2", "hang", "ok3",
            ],
            3,
        );
        s.process(&mut gs, &ctx()).expect("the run goes on");
        assert_eq!(
            outcome(&gs),
            vec![
                "ok1: 1,2,3",
                "short: error bad_response",
                "nan: error bad_score",
                "text: error bad_score",
                "refuse: error plugin_error",
                "garbage: error bad_response",
                "crash: error crashed",
                "ok2: 1,2,3",
                "hang: error timeout",
                "ok3: 1,2,3",
            ]
        );
        let reason = |id: &str| {
            let g = gs.iter().find(|g| g.prompt_id() == id).expect("group");
            g.errors[0].reason.clone()
        };
        assert!(
            reason("short").contains("2 scores for 3 samples"),
            "{}",
            reason("short")
        );
        assert!(reason("nan").contains("NaN"), "{}", reason("nan"));
        assert!(
            reason("crash").contains("exit status: 3"),
            "{}",
            reason("crash")
        );
        assert!(
            reason("crash").contains("boom: cannot score"),
            "{}",
            reason("crash")
        );
        assert!(
            reason("hang").contains("no answer within 1500 ms"),
            "{}",
            reason("hang")
        );
        assert_eq!(
            s.restarts, 2,
            "one restart after the crash, one after the hang"
        );
    }

    #[test]
    fn a_reward_that_keeps_dying_stops_the_run() {
        let mut s = stage("import sys; sys.exit(1)", 5000, 2);
        let mut gs = groups(&["a", "b", "c", "d"], 2);
        let err = s.process(&mut gs, &ctx()).expect_err("stops");
        let message = err.to_string();
        assert!(
            message.contains("failed 3 times (max_restarts: 2)"),
            "{message}"
        );
        assert_eq!(
            gs.iter().map(|g| g.errors.len()).collect::<Vec<_>>(),
            vec![1, 1, 0, 0],
            "the groups before the stop keep their rows"
        );
    }

    #[test]
    fn a_missing_program_is_a_params_error() {
        let ctx = BuildContext::new("judge", crate::RunSettings::default());
        for (command, message) in [
            (serde_json::json!([]), "command: must name a program"),
            (
                serde_json::json!(["no-such-program-tandem"]),
                "command[0]: `no-such-program-tandem` is not on PATH",
            ),
            (
                serde_json::json!(["./missing/reward.py"]),
                "command[0]: no such program: ",
            ),
        ] {
            let config: CommandConfig =
                crate::params::parse(&serde_json::json!({ "command": command })).expect("params");
            let err = config.build(&ctx).err().expect("rejected").to_string();
            assert!(err.starts_with(message), "{err}");
        }
    }
}
