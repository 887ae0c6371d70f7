//! `config.json` of a HF model directory: the architectures the engine runs and their shapes.

use std::path::Path;

use serde_json::{Map, Value, json};

use super::{PolicyError, Result};

/// The decoder families the engine runs. Both are pre-norm decoders with RMSNorm, RoPE, grouped
/// query attention and a SwiGLU MLP; they differ in biases and defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// Qwen2 / Qwen2.5 (`model_type: qwen2`): q/k/v projections carry a bias.
    Qwen2,
    /// Llama 2/3.x (`model_type: llama`): biases only when `attention_bias` is set.
    Llama,
}

impl Arch {
    /// The `model_type` string of `config.json`.
    pub fn model_type(self) -> &'static str {
        match self {
            Arch::Qwen2 => "qwen2",
            Arch::Llama => "llama",
        }
    }

    /// The transformers class that loads it.
    pub fn hf_class(self) -> &'static str {
        match self {
            Arch::Qwen2 => "Qwen2ForCausalLM",
            Arch::Llama => "LlamaForCausalLM",
        }
    }

    /// Parses a `model_type`.
    pub fn from_model_type(model_type: &str) -> Option<Arch> {
        match model_type {
            "qwen2" => Some(Arch::Qwen2),
            "llama" => Some(Arch::Llama),
            _ => None,
        }
    }
}

/// How rotary frequencies are rescaled for long contexts (`rope_scaling` / `rope_parameters`).
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    None,
    /// Positions divided by `factor`.
    Linear {
        /// The divisor.
        factor: f64,
    },
    /// Llama 3.1's frequency-dependent rescaling.
    Llama3 {
        /// Scale for low frequencies.
        factor: f64,
        /// Wavelengths longer than `original / low_freq_factor` are fully scaled.
        low_freq_factor: f64,
        /// Wavelengths shorter than `original / high_freq_factor` are kept.
        high_freq_factor: f64,
        /// Context length the model was pre-trained with.
        original_max_position_embeddings: f64,
    },
}

/// The dtype weights are stored in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightDtype {
    /// 32-bit float.
    F32,
    /// bfloat16.
    BF16,
    /// IEEE half.
    F16,
}

impl WeightDtype {
    /// The name transformers writes (`torch_dtype` / `dtype`).
    pub fn hf_name(self) -> &'static str {
        match self {
            WeightDtype::F32 => "float32",
            WeightDtype::BF16 => "bfloat16",
            WeightDtype::F16 => "float16",
        }
    }

    /// The matching torch kind.
    pub fn kind(self) -> tch::Kind {
        match self {
            WeightDtype::F32 => tch::Kind::Float,
            WeightDtype::BF16 => tch::Kind::BFloat16,
            WeightDtype::F16 => tch::Kind::Half,
        }
    }

    fn parse(name: &str) -> Option<WeightDtype> {
        match name {
            "float32" | "float" => Some(WeightDtype::F32),
            "bfloat16" => Some(WeightDtype::BF16),
            "float16" | "half" => Some(WeightDtype::F16),
            _ => None,
        }
    }
}

/// The shape and numerics of a decoder, read from `config.json`.
///
/// The original JSON is kept, so a checkpoint written back holds every key the user's file had
/// (`bos_token_id`, `use_sliding_window`, …), not only those the engine reads.
#[derive(Clone, Debug)]
pub struct ModelConfig {
    /// Decoder family.
    pub arch: Arch,
    /// Rows of the embedding matrix (may exceed the tokenizer's vocabulary).
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (`< num_attention_heads` is grouped-query attention).
    pub num_key_value_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Longest context the positions are meant for.
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// RoPE rescaling.
    pub rope_scaling: RopeScaling,
    /// Whether q/k/v (and for Llama o) projections have biases.
    pub attention_bias: bool,
    /// Whether the output projection is the embedding matrix.
    pub tie_word_embeddings: bool,
    /// The dtype the weights are stored in.
    pub dtype: WeightDtype,
    /// End-of-sequence ids named in `config.json`.
    pub eos_token_ids: Vec<u32>,
    /// Beginning-of-sequence id named in `config.json`.
    pub bos_token_id: Option<u32>,
    raw: Map<String, Value>,
}

impl ModelConfig {
    /// Reads `<dir>/config.json`.
    pub fn from_dir(dir: &Path) -> Result<ModelConfig> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| {
            if super::is_adapter_dir(dir) {
                PolicyError::missing(
                    &path,
                    format!(
                        "{e}; the directory holds a LoRA adapter: give its base model and the \
                         adapter (`--adapter`), or merge them (`tandem model merge`)"
                    ),
                )
            } else {
                PolicyError::missing(&path, e)
            }
        })?;
        let value: Value = serde_json::from_str(&text).map_err(|e| PolicyError::Config {
            path: path.clone(),
            message: format!("line {}, column {}: {e}", e.line(), e.column()),
        })?;
        ModelConfig::from_json(value, &path)
    }

    /// Reads a parsed `config.json`; `path` only names the file in errors.
    pub fn from_json(value: Value, path: &Path) -> Result<ModelConfig> {
        let Value::Object(raw) = value else {
            return Err(bad(path, "", "the file must hold a JSON object"));
        };
        let f = Fields { raw: &raw, path };
        let model_type = f.str("model_type")?;
        let arch = Arch::from_model_type(&model_type).ok_or_else(|| PolicyError::Unsupported {
            path: path.to_path_buf(),
            model_type: model_type.clone(),
        })?;
        let hidden_size = f.usize("hidden_size")?;
        let num_attention_heads = f.usize("num_attention_heads")?;
        let num_key_value_heads = f.usize_or("num_key_value_heads", num_attention_heads)?;
        let head_dim = f.usize_or("head_dim", hidden_size / num_attention_heads.max(1))?;
        if num_attention_heads == 0 || num_key_value_heads == 0 {
            return Err(bad(path, "num_attention_heads", "heads must be at least 1"));
        }
        if num_attention_heads % num_key_value_heads != 0 {
            return Err(bad(
                path,
                "num_key_value_heads",
                &format!(
                    "{num_key_value_heads} does not divide num_attention_heads = {num_attention_heads}"
                ),
            ));
        }
        if head_dim % 2 != 0 {
            return Err(bad(path, "head_dim", "RoPE needs an even head dimension"));
        }
        // transformers ≥ 5 writes `rope_parameters` (holding `rope_theta`); older files write
        // `rope_theta` and `rope_scaling` at the top level. Both are read.
        let rope_params = raw.get("rope_parameters").filter(|v| v.is_object());
        let rope_theta = match rope_params.and_then(|p| p.get("rope_theta")) {
            Some(v) => v
                .as_f64()
                .ok_or_else(|| bad(path, "rope_parameters.rope_theta", "expected a number"))?,
            None => f.f64_or("rope_theta", 10_000.0)?,
        };
        let scaling = rope_params.or_else(|| raw.get("rope_scaling").filter(|v| !v.is_null()));
        let rope_scaling = match scaling {
            None => RopeScaling::None,
            Some(v) => parse_rope_scaling(v, path)?,
        };
        let dtype_name = raw
            .get("dtype")
            .or_else(|| raw.get("torch_dtype"))
            .and_then(Value::as_str)
            .unwrap_or("float32");
        let dtype = WeightDtype::parse(dtype_name).ok_or_else(|| {
            bad(
                path,
                "torch_dtype",
                &format!("unsupported dtype `{dtype_name}` (float32, bfloat16, float16)"),
            )
        })?;
        Ok(ModelConfig {
            arch,
            vocab_size: f.usize("vocab_size")?,
            hidden_size,
            intermediate_size: f.usize("intermediate_size")?,
            num_hidden_layers: f.usize("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            max_position_embeddings: f.usize_or("max_position_embeddings", 32_768)?,
            rms_norm_eps: f.f64_or("rms_norm_eps", 1e-6)?,
            rope_theta,
            rope_scaling,
            attention_bias: match arch {
                Arch::Qwen2 => true,
                Arch::Llama => f.bool_or("attention_bias", false)?,
            },
            tie_word_embeddings: f.bool_or("tie_word_embeddings", false)?,
            dtype,
            eos_token_ids: token_ids(raw.get("eos_token_id")),
            bos_token_id: token_ids(raw.get("bos_token_id")).first().copied(),
            raw,
        })
    }

    /// A new configuration (for `tandem model init`), written with the keys transformers reads.
    pub fn new(arch: Arch, shape: Shape) -> ModelConfig {
        let head_dim = shape.hidden_size / shape.num_attention_heads;
        let mut raw = Map::new();
        let mut put = |k: &str, v: Value| {
            raw.insert(k.to_string(), v);
        };
        put("architectures", json!([arch.hf_class()]));
        put("model_type", json!(arch.model_type()));
        put("vocab_size", json!(shape.vocab_size));
        put("hidden_size", json!(shape.hidden_size));
        put("intermediate_size", json!(shape.intermediate_size));
        put("num_hidden_layers", json!(shape.num_hidden_layers));
        put("num_attention_heads", json!(shape.num_attention_heads));
        put("num_key_value_heads", json!(shape.num_key_value_heads));
        put("head_dim", json!(head_dim));
        put("hidden_act", json!("silu"));
        put(
            "max_position_embeddings",
            json!(shape.max_position_embeddings),
        );
        put("rms_norm_eps", json!(1e-6));
        put("rope_theta", json!(shape.rope_theta));
        put("tie_word_embeddings", json!(shape.tie_word_embeddings));
        put("attention_dropout", json!(0.0));
        put("initializer_range", json!(0.02));
        put("use_cache", json!(true));
        if arch == Arch::Llama {
            put("attention_bias", json!(false));
            put("mlp_bias", json!(false));
        } else {
            put("use_sliding_window", json!(false));
        }
        put("torch_dtype", json!("float32"));
        let value = Value::Object(raw);
        ModelConfig::from_json(value, Path::new("config.json"))
            .expect("a config built from a shape parses")
    }

    /// Sets the special token ids the configuration names.
    pub fn set_special_tokens(&mut self, bos: Option<u32>, eos: &[u32]) {
        self.bos_token_id = bos;
        self.eos_token_ids = eos.to_vec();
        self.raw
            .insert("bos_token_id".into(), bos.map_or(Value::Null, |b| json!(b)));
        let eos_value = match eos {
            [one] => json!(one),
            many => json!(many),
        };
        self.raw.insert("eos_token_id".into(), eos_value);
    }

    /// The JSON to write as `config.json`, with the dtype the weights are saved in.
    pub fn to_json(&self, dtype: WeightDtype) -> Value {
        let mut raw = self.raw.clone();
        let key = if raw.contains_key("dtype") {
            "dtype"
        } else {
            "torch_dtype"
        };
        raw.insert(key.to_string(), json!(dtype.hf_name()));
        Value::Object(raw)
    }

    /// Number of parameters the shape implies (a tied output projection counted once).
    pub fn num_parameters(&self) -> u64 {
        let (h, i, v) = (
            self.hidden_size as u64,
            self.intermediate_size as u64,
            self.vocab_size as u64,
        );
        let q = (self.num_attention_heads * self.head_dim) as u64;
        let kv = (self.num_key_value_heads * self.head_dim) as u64;
        let bias = if self.attention_bias { q + 2 * kv } else { 0 };
        let o_bias = if self.attention_bias && self.arch == Arch::Llama {
            h
        } else {
            0
        };
        let layer = 2 * h + h * q + 2 * h * kv + bias + q * h + o_bias + 3 * h * i;
        let head = if self.tie_word_embeddings { 0 } else { v * h };
        v * h + self.num_hidden_layers as u64 * layer + h + head
    }

    /// Number of query heads per key/value head.
    pub fn gqa_groups(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }
}

/// The shape of a new model, for [`ModelConfig::new`].
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Rows of the embedding matrix.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads.
    pub num_key_value_heads: usize,
    /// Longest context.
    pub max_position_embeddings: usize,
    /// RoPE base.
    pub rope_theta: f64,
    /// Whether the output projection is the embedding matrix.
    pub tie_word_embeddings: bool,
}

fn parse_rope_scaling(v: &Value, path: &Path) -> Result<RopeScaling> {
    let kind = v
        .get("rope_type")
        .or_else(|| v.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let num = |key: &str| {
        v.get(key)
            .and_then(Value::as_f64)
            .ok_or_else(|| bad(path, &format!("rope_scaling.{key}"), "expected a number"))
    };
    match kind {
        "default" => Ok(RopeScaling::None),
        "linear" => Ok(RopeScaling::Linear {
            factor: num("factor")?,
        }),
        "llama3" => Ok(RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: num("original_max_position_embeddings")?,
        }),
        other => Err(bad(
            path,
            "rope_scaling.rope_type",
            &format!("`{other}` is not supported (default, linear, llama3)"),
        )),
    }
}

fn token_ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|n| vec![n as u32]).unwrap_or_default(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_u64)
            .map(|n| n as u32)
            .collect(),
        _ => Vec::new(),
    }
}

fn bad(path: &Path, field: &str, message: &str) -> PolicyError {
    let message = if field.is_empty() {
        message.to_string()
    } else {
        format!("field `{field}`: {message}")
    };
    PolicyError::Config {
        path: path.to_path_buf(),
        message,
    }
}

/// Typed access to the fields of a `config.json` object, with errors naming the field.
struct Fields<'a> {
    raw: &'a Map<String, Value>,
    path: &'a Path,
}

impl Fields<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.raw.get(key).filter(|v| !v.is_null())
    }

    fn str(&self, key: &str) -> Result<String> {
        match self.get(key) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(bad(self.path, key, "expected a string")),
            None => Err(bad(self.path, key, "missing")),
        }
    }

    fn usize(&self, key: &str) -> Result<usize> {
        match self.get(key) {
            Some(v) => v
                .as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| bad(self.path, key, "expected a non-negative integer")),
            None => Err(bad(self.path, key, "missing")),
        }
    }

    fn usize_or(&self, key: &str, default: usize) -> Result<usize> {
        if self.get(key).is_some() {
            self.usize(key)
        } else {
            Ok(default)
        }
    }

    fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        match self.get(key) {
            Some(v) => v
                .as_f64()
                .ok_or_else(|| bad(self.path, key, "expected a number")),
            None => Ok(default),
        }
    }

    fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            Some(v) => v
                .as_bool()
                .ok_or_else(|| bad(self.path, key, "expected true or false")),
            None => Ok(default),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<ModelConfig> {
        ModelConfig::from_json(v, Path::new("m/config.json"))
    }

    fn qwen() -> Value {
        json!({"model_type": "qwen2", "vocab_size": 100, "hidden_size": 64, "intermediate_size": 128,
               "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
               "tie_word_embeddings": true, "rope_theta": 1000000.0, "eos_token_id": 5})
    }

    #[test]
    fn reads_qwen2_defaults_and_biases() {
        let c = parse(qwen()).unwrap();
        assert_eq!(c.arch, Arch::Qwen2);
        assert_eq!((c.head_dim, c.gqa_groups()), (16, 2));
        assert!(c.attention_bias && c.tie_word_embeddings);
        assert_eq!(c.rope_theta, 1e6);
        assert_eq!(c.eos_token_ids, vec![5]);
        assert_eq!(c.dtype, WeightDtype::F32);
    }

    #[test]
    fn reads_both_rope_spellings() {
        let mut legacy = qwen();
        legacy["model_type"] = json!("llama");
        legacy["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 32});
        let mut v5 = qwen();
        v5["model_type"] = json!("llama");
        v5.as_object_mut().unwrap().remove("rope_theta");
        v5["rope_parameters"] = json!({"rope_type": "llama3", "rope_theta": 1000000.0, "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 32});
        let (a, b) = (parse(legacy).unwrap(), parse(v5).unwrap());
        assert_eq!(a.rope_scaling, b.rope_scaling);
        assert_eq!(a.rope_theta, b.rope_theta);
        assert!(matches!(a.rope_scaling, RopeScaling::Llama3 { factor, .. } if factor == 8.0));
        assert!(!a.attention_bias);
    }

    #[test]
    fn errors_name_file_and_field() {
        let mut v = qwen();
        v["model_type"] = json!("mistral");
        let e = parse(v).unwrap_err().to_string();
        assert!(e.contains("m/config.json") && e.contains("mistral"), "{e}");
        let mut v = qwen();
        v["hidden_size"] = json!("wide");
        let e = parse(v).unwrap_err().to_string();
        assert!(e.contains("`hidden_size`") && e.contains("integer"), "{e}");
        let mut v = qwen();
        v["num_key_value_heads"] = json!(3);
        assert!(
            parse(v)
                .unwrap_err()
                .to_string()
                .contains("does not divide")
        );
        let mut v = qwen();
        v["rope_scaling"] = json!({"rope_type": "yarn", "factor": 4.0});
        assert!(
            parse(v)
                .unwrap_err()
                .to_string()
                .contains("`yarn` is not supported")
        );
    }

    #[test]
    fn new_config_round_trips() {
        let shape = Shape {
            vocab_size: 300,
            hidden_size: 64,
            intermediate_size: 96,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 1,
            max_position_embeddings: 512,
            rope_theta: 5e5,
            tie_word_embeddings: false,
        };
        let mut c = ModelConfig::new(Arch::Llama, shape);
        c.set_special_tokens(Some(1), &[2, 3]);
        let back = parse(c.to_json(WeightDtype::BF16)).unwrap();
        assert_eq!(back.eos_token_ids, vec![2, 3]);
        assert_eq!(back.bos_token_id, Some(1));
        assert_eq!(back.dtype, WeightDtype::BF16);
        assert_eq!((back.num_key_value_heads, back.head_dim), (1, 16));
    }
}
