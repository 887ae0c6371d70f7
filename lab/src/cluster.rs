//! `tandem run --local-cluster N`: N processes of this binary on loopback, for trying cluster
//! runs on one machine and for tests. Each child is the same command with `--processes N
//! --process I --hostfile FILE` in place of `--local-cluster N`.

use std::ffi::OsString;
use std::io::{BufRead, Write};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tandem_pipeline::Cluster;

/// How long the other processes get to stop by themselves once one has failed, before they are
/// killed. Each stops within a step's work plus a moment; this is a backstop only.
const GRACE: Duration = Duration::from_secs(120);

/// Runs `args` (the command line after the binary, without `--local-cluster`) as `processes`
/// local processes; waits for all of them. Fails, naming the process, if one exits non-zero.
pub fn run_local(processes: usize, args: &[OsString]) -> Result<()> {
    if processes == 0 {
        bail!("--local-cluster needs at least 1 process");
    }
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let dir = tempfile::Builder::new()
        .prefix("tandem-cluster-")
        .tempdir()
        .context("cannot make a directory for the hostfile")?;
    let hostfile = dir.path().join("hostfile");
    let addresses = Cluster::loopback(processes).context("cannot find free loopback ports")?;
    std::fs::write(&hostfile, Cluster::hostfile_text(&addresses))
        .with_context(|| format!("cannot write {}", hostfile.display()))?;
    let mut children: Vec<Option<Child>> = Vec::with_capacity(processes);
    let mut forwarders = Vec::with_capacity(processes);
    for process in 0..processes {
        let child = Command::new(&exe)
            .args(args)
            .arg("--processes")
            .arg(processes.to_string())
            .arg("--process")
            .arg(process.to_string())
            .arg("--hostfile")
            .arg(&hostfile)
            .stdout(Stdio::piped())
            .spawn();
        match child {
            Ok(mut child) => {
                if let Some(stdout) = child.stdout.take() {
                    forwarders.push(forward_without_connection_chatter(stdout));
                }
                children.push(Some(child));
            }
            Err(e) => {
                stop_all(&mut children);
                bail!("cannot start process {process}: {e}");
            }
        }
    }
    let mut statuses: Vec<Option<ExitStatus>> = vec![None; processes];
    let mut first_failure: Option<(usize, ExitStatus, Instant)> = None;
    while statuses.iter().any(Option::is_none) {
        for (process, slot) in children.iter_mut().enumerate() {
            let Some(child) = slot else { continue };
            if let Some(status) = child.try_wait()? {
                statuses[process] = Some(status);
                *slot = None;
                if !status.success() && first_failure.is_none() {
                    first_failure = Some((process, status, Instant::now()));
                }
            }
        }
        if let Some((_, _, since)) = first_failure
            && since.elapsed() > GRACE
        {
            stop_all(&mut children);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Every line the processes printed is out before the summary below.
    for forwarder in forwarders {
        let _ = forwarder.join();
    }
    match first_failure {
        Some((process, status, _)) => bail!("process {process} of {processes} failed ({status})"),
        None => Ok(()),
    }
}

/// Copies a child's stdout to ours, line by line, without the lines timely prints while the
/// processes of a local cluster find one another (they start within a second of each other,
/// so the first connection attempts are refused and retried; that is expected here).
fn forward_without_connection_chatter(stdout: ChildStdout) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let chatter = line.starts_with("awaiting connections (at ")
                || (line.starts_with("worker ") && line.contains("error connecting to worker"));
            if !chatter {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
            }
        }
    })
}

/// Kills and reaps every child still running.
fn stop_all(children: &mut [Option<Child>]) {
    for child in children.iter_mut().flatten() {
        let _ = child.kill();
        let _ = child.wait();
    }
}
