//! `tandem model init`: a randomly initialised HF-format model, for tests, benchmarks and the
//! demo (nothing can be downloaded, so tiny models are made here).

use std::path::{Path, PathBuf};

use tch::Device;

use super::checkpoint::{TOKENIZER_FILES, save_pretrained};
use super::config::{Arch, ModelConfig, Shape, WeightDtype};
use super::model::Transformer;
use super::tokenizer::Tokenizer;
use super::weights::StoredWeights;
use super::{PolicyError, Result};

/// What `tandem model init` makes.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// Decoder family.
    pub arch: Arch,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads.
    pub num_key_value_heads: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// Embedding rows; default: the tokenizer's size rounded up to a multiple of 64.
    pub vocab_size: Option<usize>,
    /// Longest context.
    pub max_position_embeddings: usize,
    /// RoPE base.
    pub rope_theta: f64,
    /// Whether the output projection is the embedding matrix (default for Qwen2 shapes).
    pub tie_word_embeddings: bool,
    /// `tokenizer.json` to ship with the model; `tokenizer_config.json`, `chat_template.jinja`
    /// and `generation_config.json` beside it are copied too.
    pub tokenizer: PathBuf,
    /// Seed of the weights.
    pub seed: u64,
    /// Standard deviation of the weights.
    pub init_std: f64,
    /// The dtype the weights are written in.
    pub dtype: WeightDtype,
}

/// Writes a new random model to `out` and returns its configuration.
pub fn init_model(out: &Path, options: &InitOptions) -> Result<ModelConfig> {
    let o = options;
    if o.num_attention_heads == 0 || !o.hidden_size.is_multiple_of(o.num_attention_heads) {
        return Err(PolicyError::Invalid(format!(
            "--hidden {} must be a multiple of --heads {}",
            o.hidden_size, o.num_attention_heads
        )));
    }
    if o.num_key_value_heads == 0 || !o.num_attention_heads.is_multiple_of(o.num_key_value_heads) {
        return Err(PolicyError::Invalid(format!(
            "--kv-heads {} must divide --heads {}",
            o.num_key_value_heads, o.num_attention_heads
        )));
    }
    if !o.tokenizer.is_file() {
        return Err(PolicyError::Missing {
            path: o.tokenizer.clone(),
            message: "tokenizer file not found".into(),
        });
    }
    // Tokenizer files first, from the directory of the given tokenizer.json.
    let staging = tempdir_near(out)?;
    let result = (|| {
        let from_dir = o.tokenizer.parent().unwrap_or(Path::new("."));
        std::fs::copy(&o.tokenizer, staging.join("tokenizer.json"))
            .map_err(|e| PolicyError::io(&o.tokenizer, e))?;
        for name in TOKENIZER_FILES.iter().skip(1) {
            let from = from_dir.join(name);
            if from.is_file() {
                std::fs::copy(&from, staging.join(name)).map_err(|e| PolicyError::io(&from, e))?;
            }
        }
        let tokenizer = Tokenizer::from_dir(&staging)?;
        let vocab_size = o
            .vocab_size
            .unwrap_or_else(|| tokenizer.vocab_size().div_ceil(64) * 64);
        if vocab_size < tokenizer.vocab_size() {
            return Err(PolicyError::Invalid(format!(
                "--vocab {vocab_size} is smaller than the tokenizer's {} tokens",
                tokenizer.vocab_size()
            )));
        }
        let shape = Shape {
            vocab_size,
            hidden_size: o.hidden_size,
            intermediate_size: o.intermediate_size,
            num_hidden_layers: o.num_hidden_layers,
            num_attention_heads: o.num_attention_heads,
            num_key_value_heads: o.num_key_value_heads,
            max_position_embeddings: o.max_position_embeddings,
            rope_theta: o.rope_theta,
            tie_word_embeddings: o.tie_word_embeddings,
        };
        let mut config = ModelConfig::new(o.arch, shape);
        let bos = tokenizer_bos(&staging, &tokenizer);
        config.set_special_tokens(bos, tokenizer.eos_token_ids());
        let mut weights = StoredWeights::random(o.seed, o.init_std);
        let model =
            Transformer::from_weights(config.clone(), &mut weights, Device::Cpu, tch::Kind::Float)?;
        save_pretrained(&model, &staging, out, o.dtype)?;
        Ok(config)
    })();
    let _ = std::fs::remove_dir_all(&staging);
    result
}

/// The BOS id, when `tokenizer_config.json` names a BOS token.
fn tokenizer_bos(dir: &Path, tokenizer: &Tokenizer) -> Option<u32> {
    let text = std::fs::read_to_string(dir.join("tokenizer_config.json")).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    let bos = match value.get("bos_token")? {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(o) => o.get("content")?.as_str()?.to_string(),
        _ => return None,
    };
    tokenizer
        .encode(&bos, false)
        .ok()
        .filter(|ids| ids.len() == 1)
        .map(|ids| ids[0])
}

fn tempdir_near(out: &Path) -> Result<PathBuf> {
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| PolicyError::io(parent, e))?;
    let dir = parent.join(format!(".tandem-init-tokenizer.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).map_err(|e| PolicyError::io(&dir, e))?;
    Ok(dir)
}
