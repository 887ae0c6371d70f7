//! What `tandem serve` runs with: the model and its template, the cloud, the budget, the queue.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use tandem_stages::cloud::Prices;
use tandem_stages::prompt::NamedTemplate;

use crate::budget::BudgetWindow;
use crate::{Error, Result};

/// The server's settings, resolved (the CLI's flags).
#[derive(Clone, Debug, Serialize)]
pub struct ServeConfig {
    /// The device model: a local HF directory (a checkpoint of a run, for instance).
    pub model: PathBuf,
    /// The name `/v1/models` lists and responses carry (default: the directory's name).
    pub model_name: String,
    /// The template the model was trained with (its help-free `_task` variant answers capped
    /// requests); `None`: the bare question in the model's own chat template, for both.
    #[serde(serialize_with = "template_name")]
    pub template: Option<NamedTemplate>,
    /// Render through the model's chat template (else plain text).
    pub chat: bool,
    /// Texts that end a device answer (default: the template's, as `tandem eval` uses).
    pub stop: Vec<String>,
    /// Most new tokens of a device answer (a request's `max_tokens` may lower it).
    pub max_new_tokens: usize,
    /// Device sampling temperature unless a request sets one (0 = greedy).
    pub temperature: f64,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// Torch intra-op threads (0 = libtorch's default).
    pub threads: usize,
    /// The cloud's OpenAI-compatible base URL (up to `/v1`).
    pub cloud_url: String,
    /// The cloud model.
    pub cloud_model: String,
    /// The environment variable holding the cloud's API key (the key is never stored).
    pub cloud_key_env: Option<String>,
    /// Time limit of one cloud attempt.
    #[serde(serialize_with = "millis")]
    pub cloud_timeout: Duration,
    /// Retries of a cloud call that failed in a way that heals.
    pub cloud_retries: u32,
    /// First backoff between cloud attempts.
    #[serde(serialize_with = "millis")]
    pub cloud_backoff: Duration,
    /// Prices for the ledger's cost column.
    #[serde(skip)]
    pub prices: Prices,
    /// The largest share of requests that may go to the cloud.
    pub budget: f64,
    /// Over which requests the share is counted.
    pub budget_window: BudgetWindow,
    /// Address to listen on.
    pub bind: String,
    /// Requests waiting for the device at most; more are answered 429.
    pub queue: usize,
    /// Requests per device batch at most.
    pub max_batch: usize,
    /// How long the device waits for more requests to join a batch.
    #[serde(serialize_with = "millis")]
    pub batch_window: Duration,
    /// The environment variable or file holding the token clients must send (the token is
    /// never stored).
    #[serde(skip)]
    pub client_token: Option<TokenSource>,
    /// Where the ledger's run directory is created.
    pub out: PathBuf,
    /// How often the ledger writes a part file.
    #[serde(serialize_with = "millis")]
    pub ledger_flush: Duration,
    /// Stop when standard input closes (for tests and supervisors).
    pub exit_on_stdin_eof: bool,
    /// Threads of the HTTP runtime.
    pub io_threads: usize,
}

/// Where the client token comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSource {
    /// An environment variable.
    Env(String),
    /// A file whose first line is the token.
    File(PathBuf),
}

impl TokenSource {
    /// The token; an error names the variable or file, never a value.
    pub fn read(&self) -> Result<String> {
        let (value, from) = match self {
            TokenSource::Env(name) => (
                std::env::var(name).unwrap_or_default(),
                format!("--token-env {name}: the environment variable"),
            ),
            TokenSource::File(path) => (
                std::fs::read_to_string(path)
                    .map_err(|e| Error::Config(format!("--token-file {}: {e}", path.display())))?
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
                format!("--token-file {}: the first line", path.display()),
            ),
        };
        let token = value.trim();
        if token.is_empty() {
            return Err(Error::Config(format!(
                "{from} is empty or unset (it should hold the token clients send)"
            )));
        }
        Ok(token.to_owned())
    }
}

fn template_name<S: serde::Serializer>(
    t: &Option<NamedTemplate>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(t.map_or("(the model's own)", NamedTemplate::name))
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

impl ServeConfig {
    /// Settings for `model` against the cloud at `cloud_url`, everything else at its default.
    pub fn new(model: PathBuf, cloud_url: String) -> ServeConfig {
        let model_name = model
            .file_name()
            .map_or_else(|| "tandem".to_owned(), |n| n.to_string_lossy().into_owned());
        ServeConfig {
            model,
            model_name,
            template: None,
            chat: true,
            stop: Vec::new(),
            max_new_tokens: 512,
            temperature: 0.0,
            device: "cpu".into(),
            threads: 0,
            cloud_url,
            cloud_model: "sim-oracle".into(),
            cloud_key_env: None,
            cloud_timeout: Duration::from_secs(30),
            cloud_retries: 2,
            cloud_backoff: Duration::from_millis(200),
            prices: Prices::default(),
            budget: 0.3,
            budget_window: BudgetWindow::Total,
            bind: "127.0.0.1:8000".into(),
            queue: 256,
            max_batch: 32,
            batch_window: Duration::from_millis(5),
            client_token: None,
            out: PathBuf::from("runs"),
            ledger_flush: Duration::from_secs(10),
            exit_on_stdin_eof: false,
            io_threads: 2,
        }
    }

    /// Parses a template name as the YAML spells it (`arithmetic`, `math_task`, …).
    pub fn parse_template(name: &str) -> Result<NamedTemplate> {
        serde_json::from_value(serde_json::Value::from(name)).map_err(|_| {
            let known: Vec<&str> = NamedTemplate::ALL.iter().map(|t| t.name()).collect();
            Error::Config(format!(
                "--template {name}: no such template (the templates are {})",
                known.join(", ")
            ))
        })
    }

    /// The stop strings: those given, else the template's.
    pub fn stop_strings(&self) -> Vec<String> {
        if !self.stop.is_empty() {
            return self.stop.clone();
        }
        self.template.map_or_else(Vec::new, |t| {
            t.stop_strings().iter().map(|s| (*s).to_owned()).collect()
        })
    }

    /// Checks what the types cannot; each message names the flag.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if !(0.0..=1.0).contains(&self.budget) {
            return bad(format!(
                "--budget {}: must be a share between 0 and 1",
                self.budget
            ));
        }
        if let BudgetWindow::Requests(0) = self.budget_window {
            return bad("--budget-window 0: a window holds at least one request (leave it out to count every request)".into());
        }
        match reqwest::Url::parse(&self.cloud_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => {}
            Ok(url) => {
                return bad(format!(
                    "--cloud {}: the scheme must be http or https, not `{}`",
                    self.cloud_url,
                    url.scheme()
                ));
            }
            Err(e) => return bad(format!("--cloud {}: not a URL: {e}", self.cloud_url)),
        }
        if self.cloud_model.trim().is_empty() {
            return bad("--cloud-model: must name the cloud model".into());
        }
        for (flag, value) in [
            ("--queue", self.queue),
            ("--max-batch", self.max_batch),
            ("--max-new-tokens", self.max_new_tokens),
        ] {
            if value == 0 {
                return bad(format!("{flag} 0: must be at least 1"));
            }
        }
        if self.cloud_timeout.is_zero() {
            return bad("--cloud-timeout-ms 0: must be > 0".into());
        }
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad(format!(
                "--temperature {}: must be a finite number >= 0",
                self.temperature
            ));
        }
        if let Some(template) = self.template
            && template.system_prompt().is_some()
            && !self.chat
        {
            return bad(format!(
                "--template {} has a system prompt, which needs the chat template (drop --no-chat)",
                template.name()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_flags_are_named_in_the_error() {
        let ok = ServeConfig::new("m".into(), "http://127.0.0.1:1/v1".into());
        assert!(ok.validate().is_ok());
        type Change = fn(&mut ServeConfig);
        let cases: [(Change, &str); 5] = [
            (|c| c.budget = 1.5, "--budget 1.5"),
            (|c| c.cloud_url = "ftp://x/v1".into(), "--cloud ftp://x/v1"),
            (|c| c.cloud_url = "not a url".into(), "--cloud not a url"),
            (|c| c.queue = 0, "--queue 0"),
            (
                |c| c.budget_window = BudgetWindow::Requests(0),
                "--budget-window 0",
            ),
        ];
        for (change, flag) in cases {
            let mut c = ok.clone();
            change(&mut c);
            let err = c.validate().expect_err(flag).to_string();
            assert!(err.starts_with(flag), "{err}");
        }
        let err = ServeConfig::parse_template("arithmetik").expect_err("a typo");
        assert!(err.to_string().contains("arithmetic_task"), "{err}");
        assert_eq!(
            ServeConfig::parse_template("math_task").ok(),
            Some(NamedTemplate::MathTask)
        );
    }

    #[test]
    fn the_stop_strings_are_the_templates_unless_given() {
        let mut c = ServeConfig::new("m".into(), "http://h/v1".into());
        assert!(c.stop_strings().is_empty());
        c.template = Some(NamedTemplate::Arithmetic);
        assert_eq!(c.stop_strings(), ["</answer>", "</unknown>"]);
        c.stop = vec!["END".into()];
        assert_eq!(c.stop_strings(), ["END"]);
    }
}
