//! LoRA: low-rank adapters on the projections of a frozen base model, in PEFT's format.
//!
//! A target projection `W` (`[out, in]`) computes `x·Wᵀ + s · (dropout(x)·Aᵀ)·Bᵀ` with `A`
//! `[r, in]`, `B` `[out, r]` and `s = alpha / r` (rsLoRA: `alpha / √r`), as PEFT's `lora.Linear`
//! does. The adapters are f32 whatever dtype the base is held in; only they train.
//!
//! On disk an adapter is what `PeftModel.save_pretrained` writes: `adapter_config.json` and
//! `adapter_model.safetensors` with keys like
//! `base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`, so it loads in PEFT (and in
//! vLLM) unchanged, and PEFT's adapters load here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tch::{Kind, Tensor};

use super::{PolicyError, Result};

/// PEFT's adapter configuration file.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
/// PEFT's adapter weights file.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// The prefix PEFT's `PeftModelForCausalLM` puts before the transformers parameter names.
pub const PEFT_PREFIX: &str = "base_model.model.";

/// A projection of a decoder layer that can carry an adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetModule {
    /// Attention query projection.
    QProj,
    /// Attention key projection.
    KProj,
    /// Attention value projection.
    VProj,
    /// Attention output projection.
    OProj,
    /// MLP gate projection.
    GateProj,
    /// MLP up projection.
    UpProj,
    /// MLP down projection.
    DownProj,
}

impl TargetModule {
    /// Every projection, in the order of a layer's weights.
    pub const ALL: [TargetModule; 7] = [
        TargetModule::QProj,
        TargetModule::KProj,
        TargetModule::VProj,
        TargetModule::OProj,
        TargetModule::GateProj,
        TargetModule::UpProj,
        TargetModule::DownProj,
    ];

    /// The module name PEFT's `target_modules` uses (`q_proj`).
    pub fn name(self) -> &'static str {
        match self {
            TargetModule::QProj => "q_proj",
            TargetModule::KProj => "k_proj",
            TargetModule::VProj => "v_proj",
            TargetModule::OProj => "o_proj",
            TargetModule::GateProj => "gate_proj",
            TargetModule::UpProj => "up_proj",
            TargetModule::DownProj => "down_proj",
        }
    }

    /// The path below `model.layers.<l>` (`self_attn.q_proj`).
    pub fn path(self) -> &'static str {
        match self {
            TargetModule::QProj => "self_attn.q_proj",
            TargetModule::KProj => "self_attn.k_proj",
            TargetModule::VProj => "self_attn.v_proj",
            TargetModule::OProj => "self_attn.o_proj",
            TargetModule::GateProj => "mlp.gate_proj",
            TargetModule::UpProj => "mlp.up_proj",
            TargetModule::DownProj => "mlp.down_proj",
        }
    }

    /// The projection named `name` (`q_proj`), if it is one.
    pub fn from_name(name: &str) -> Option<TargetModule> {
        TargetModule::ALL.into_iter().find(|t| t.name() == name)
    }
}

impl std::str::FromStr for TargetModule {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<TargetModule> {
        TargetModule::from_name(s).ok_or_else(|| {
            PolicyError::Invalid(format!(
                "`{s}` is not a projection LoRA can target (expected one of {})",
                names(&TargetModule::ALL)
            ))
        })
    }
}

fn names(targets: &[TargetModule]) -> String {
    targets
        .iter()
        .map(|t| t.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// LoRA's options: the `lora:` mapping of `learn.pg` and `learn.sft`.
///
/// ```yaml
/// lora: { r: 16, alpha: 32, targets: [q_proj, k_proj, v_proj, o_proj] }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraConfig {
    /// Rank of the adapters.
    pub r: usize,
    /// Scale numerator (PEFT's `lora_alpha`; default: `r`, a scale of 1).
    #[serde(default)]
    pub alpha: Option<f64>,
    /// rsLoRA: scale by `alpha / √r` instead of `alpha / r` (PEFT's `use_rslora`; default false).
    #[serde(default)]
    pub rslora: bool,
    /// Dropout on the adapters' input while learning (PEFT's `lora_dropout`; default 0).
    #[serde(default)]
    pub dropout: f64,
    /// The projections that get adapters (default: all seven, `q_proj` … `down_proj`).
    #[serde(default = "all_targets")]
    pub targets: Vec<TargetModule>,
}

fn all_targets() -> Vec<TargetModule> {
    TargetModule::ALL.to_vec()
}

impl LoraConfig {
    /// Rank `r` with `alpha = r` on every projection.
    pub fn new(r: usize) -> LoraConfig {
        LoraConfig {
            r,
            alpha: None,
            rslora: false,
            dropout: 0.0,
            targets: all_targets(),
        }
    }

    /// `lora_alpha`.
    pub fn alpha(&self) -> f64 {
        self.alpha.unwrap_or(self.r as f64)
    }

    /// The factor of the adapters' output: `alpha / r`, or `alpha / √r` with rsLoRA.
    pub fn scaling(&self) -> f64 {
        let r = self.r as f64;
        if self.rslora {
            self.alpha() / r.sqrt()
        } else {
            self.alpha() / r
        }
    }

    /// Checks the values; the error names the field (`r`, `alpha`, `dropout`, `targets`).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.r == 0 {
            return Err(("r", "must be at least 1".into()));
        }
        if let Some(alpha) = self.alpha
            && !(alpha.is_finite() && alpha > 0.0)
        {
            return Err(("alpha", format!("must be a finite number > 0, got {alpha}")));
        }
        if !(self.dropout.is_finite() && (0.0..1.0).contains(&self.dropout)) {
            return Err((
                "dropout",
                format!("must be in [0, 1), got {}", self.dropout),
            ));
        }
        if self.targets.is_empty() {
            return Err((
                "targets",
                format!("name at least one of {}", names(&TargetModule::ALL)),
            ));
        }
        Ok(())
    }

    /// The targets, sorted and without repeats.
    pub fn target_set(&self) -> Vec<TargetModule> {
        let mut t = self.targets.clone();
        t.sort();
        t.dedup();
        t
    }

    /// Whether an adapter of `self` can continue as one of `other` (same rank, scale and
    /// targets; dropout may differ).
    pub fn same_shape(&self, other: &LoraConfig) -> bool {
        self.r == other.r
            && self.alpha() == other.alpha()
            && self.rslora == other.rslora
            && self.target_set() == other.target_set()
    }
}

/// How new adapters start.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LoraInit {
    /// PEFT's default: `A` from Kaiming-uniform (`U(±1/√in)`), `B` zero, so the adapted model
    /// starts as the base model. Seeded per tensor name.
    Peft {
        /// The seed of `A`.
        seed: u64,
    },
    /// `B` drawn too (`U(±1/√r)`), as PEFT's `init_lora_weights=False` leaves it: an adapter
    /// that changes the model, for tests and parity checks.
    Random {
        /// The seed of `A` and `B`.
        seed: u64,
    },
}

/// One projection's adapter.
pub(crate) struct LoraLinear {
    /// `[r, in]`, f32.
    pub a: Tensor,
    /// `[out, r]`, f32.
    pub b: Tensor,
    pub scaling: f64,
    pub dropout: f64,
}

impl LoraLinear {
    /// `s · (dropout(x)·Aᵀ)·Bᵀ` in f32 (dropout only while `training`).
    pub fn delta(&self, x: &Tensor, training: bool) -> Tensor {
        let x = x.to_kind(Kind::Float);
        let x = if training && self.dropout > 0.0 {
            x.dropout(self.dropout, true)
        } else {
            x
        };
        x.linear::<Tensor>(&self.a, None)
            .linear::<Tensor>(&self.b, None)
            * self.scaling
    }
}

/// The names of a target's two matrices in layer `layer` (tandem's names: the transformers
/// parameter path without PEFT's prefix).
pub(crate) fn param_names(layer: usize, target: TargetModule) -> [String; 2] {
    let base = format!("model.layers.{layer}.{}", target.path());
    [
        format!("{base}.lora_A.weight"),
        format!("{base}.lora_B.weight"),
    ]
}

/// Whether `dir` holds an adapter (rather than a whole model).
pub fn is_adapter_dir(dir: &Path) -> bool {
    dir.join(ADAPTER_CONFIG).is_file()
}

/// `adapter_config.json` as PEFT 0.21 writes it for `config` on a base named
/// `base_model_name_or_path`: every field, in PEFT's (sorted) order, so PEFT reads back exactly
/// what it would have written.
pub fn peft_config_json(config: &LoraConfig, base_model_name_or_path: &str) -> Value {
    let mut targets: Vec<&str> = config.target_set().iter().map(|t| t.name()).collect();
    targets.sort_unstable();
    json!({
        "alora_invocation_tokens": null,
        "alpha_pattern": {},
        "arrow_config": null,
        "auto_mapping": null,
        "base_model_name_or_path": base_model_name_or_path,
        "bias": "none",
        "corda_config": null,
        "ensure_weight_tying": false,
        "eva_config": null,
        "exclude_modules": null,
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "kasa_config": null,
        "layer_replication": null,
        "layers_pattern": null,
        "layers_to_transform": null,
        "loftq_config": {},
        "lora_alpha": alpha_json(config.alpha()),
        "lora_bias": false,
        "lora_dropout": config.dropout,
        "lora_ga_config": null,
        "megatron_config": null,
        "megatron_core": "megatron.core",
        "modules_to_save": null,
        "monteclora_config": null,
        "peft_type": "LORA",
        "peft_version": "0.21.2",
        "qalora_group_size": 16,
        "r": config.r,
        "rank_pattern": {},
        "revision": null,
        "target_modules": targets,
        "target_parameters": null,
        "task_type": "CAUSAL_LM",
        "trainable_token_indices": null,
        "use_bdlora": null,
        "use_dora": false,
        "use_qalora": false,
        "use_rslora": config.rslora,
        "velora_config": null,
    })
}

/// PEFT writes an integer `lora_alpha` as an integer.
fn alpha_json(alpha: f64) -> Value {
    if alpha.fract() == 0.0 && alpha.abs() < 1e15 {
        json!(alpha as i64)
    } else {
        json!(alpha)
    }
}

/// Reads `dir/adapter_config.json`: the LoRA options and `base_model_name_or_path`. Anything
/// tandem cannot apply exactly as PEFT would (DoRA, biases, per-module ranks, regex targets, …)
/// is an error naming the file and field.
pub fn read_adapter_config(dir: &Path) -> Result<(LoraConfig, Option<String>)> {
    let path = dir.join(ADAPTER_CONFIG);
    let text = std::fs::read_to_string(&path).map_err(|e| PolicyError::missing(&path, e))?;
    let value: Value = serde_json::from_str(&text).map_err(|e| PolicyError::Config {
        path: path.clone(),
        message: format!("line {}, column {}: {e}", e.line(), e.column()),
    })?;
    let field = |name: &str, message: String| PolicyError::Config {
        path: path.clone(),
        message: format!("field `{name}`: {message}"),
    };
    let get = |name: &str| value.get(name).filter(|v| !v.is_null());
    match get("peft_type").and_then(Value::as_str) {
        Some("LORA") => {}
        other => {
            return Err(field(
                "peft_type",
                format!("{other:?}: only LORA adapters are supported"),
            ));
        }
    }
    let r = get("r")
        .and_then(Value::as_u64)
        .filter(|&r| r > 0)
        .ok_or_else(|| field("r", "missing or not an integer >= 1".into()))? as usize;
    let alpha = match get("lora_alpha") {
        None => 8.0, // PEFT's default
        Some(v) => v
            .as_f64()
            .ok_or_else(|| field("lora_alpha", format!("{v}: expected a number")))?,
    };
    let dropout = match get("lora_dropout") {
        None => 0.0,
        Some(v) => v
            .as_f64()
            .ok_or_else(|| field("lora_dropout", format!("{v}: expected a number")))?,
    };
    let flag = |name: &str| -> Result<bool> {
        match get(name) {
            None => Ok(false),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| field(name, format!("{v}: expected true or false"))),
        }
    };
    let rslora = flag("use_rslora")?;
    for unsupported in ["use_dora", "fan_in_fan_out", "lora_bias", "use_qalora"] {
        if flag(unsupported)? {
            return Err(field(unsupported, "true is not supported".into()));
        }
    }
    if let Some(bias) = get("bias").and_then(Value::as_str)
        && bias != "none"
    {
        return Err(field(
            "bias",
            format!("`{bias}` is not supported (only \"none\")"),
        ));
    }
    for pattern in ["rank_pattern", "alpha_pattern"] {
        if get(pattern)
            .and_then(Value::as_object)
            .is_some_and(|m| !m.is_empty())
        {
            return Err(field(
                pattern,
                "per-module ranks or alphas are not supported".into(),
            ));
        }
    }
    for absent in [
        "layers_to_transform",
        "modules_to_save",
        "layer_replication",
        "exclude_modules",
        "target_parameters",
        "trainable_token_indices",
    ] {
        match get(absent) {
            None => {}
            Some(Value::Array(a)) if a.is_empty() => {}
            Some(v) => return Err(field(absent, format!("{v} is not supported"))),
        }
    }
    let targets = match get("target_modules") {
        Some(Value::String(s)) if s == "all-linear" => all_targets(),
        Some(Value::String(s)) => {
            return Err(field(
                "target_modules",
                format!(
                    "the pattern `{s}` is not supported: list module names ({})",
                    names(&TargetModule::ALL)
                ),
            ));
        }
        Some(Value::Array(list)) => list
            .iter()
            .map(|v| {
                let name = v.as_str().unwrap_or_default();
                TargetModule::from_name(name).ok_or_else(|| {
                    field(
                        "target_modules",
                        format!(
                            "{v} is not a projection LoRA can target (expected one of {})",
                            names(&TargetModule::ALL)
                        ),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?,
        _ => return Err(field("target_modules", "missing or not a list".into())),
    };
    let config = LoraConfig {
        r,
        alpha: Some(alpha),
        rslora,
        dropout,
        targets,
    };
    config
        .validate()
        .map_err(|(name, message)| field(name, message))?;
    let base = get("base_model_name_or_path")
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok((config, base))
}

/// Reads `dir/adapter_model.safetensors`, keyed by tandem's names (PEFT's prefix removed, and
/// the adapter name PEFT may leave in, `.lora_A.default.weight`, too).
pub(crate) fn read_adapter_weights(dir: &Path) -> Result<(PathBuf, BTreeMap<String, Tensor>)> {
    let path = dir.join(ADAPTER_WEIGHTS);
    if !path.is_file() {
        return Err(PolicyError::Missing {
            path,
            message: format!("no adapter weights ({ADAPTER_CONFIG} is there)"),
        });
    }
    let stored = super::weights::read_file(&path)?;
    let mut out = BTreeMap::new();
    for (name, tensor) in stored {
        let Some(short) = name.strip_prefix(PEFT_PREFIX) else {
            return Err(PolicyError::Tensor {
                path,
                name,
                message: format!("not a PEFT adapter key (no `{PEFT_PREFIX}` prefix)"),
            });
        };
        let short = short
            .replace(".lora_A.default.weight", ".lora_A.weight")
            .replace(".lora_B.default.weight", ".lora_B.weight");
        out.insert(short, tensor);
    }
    Ok((path, out))
}

/// The PEFT key of a tandem adapter parameter name.
pub(crate) fn peft_key(name: &str) -> String {
    format!("{PEFT_PREFIX}{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_is_alpha_over_r_or_over_its_root() {
        let mut c = LoraConfig::new(16);
        c.alpha = Some(32.0);
        assert_eq!(c.scaling(), 2.0);
        c.rslora = true;
        assert_eq!(c.scaling(), 8.0);
        assert_eq!(LoraConfig::new(4).scaling(), 1.0);
    }

    #[test]
    fn bad_options_name_their_field() {
        let mut c = LoraConfig::new(0);
        assert_eq!(c.validate().unwrap_err().0, "r");
        c.r = 4;
        c.dropout = 1.0;
        assert_eq!(c.validate().unwrap_err().0, "dropout");
        c.dropout = 0.1;
        c.targets.clear();
        assert_eq!(c.validate().unwrap_err().0, "targets");
        let err = serde_json::from_str::<LoraConfig>(r#"{"r": 4, "targets": ["qproj"]}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("qproj") && err.contains("q_proj"), "{err}");
    }

    #[test]
    fn peft_config_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = LoraConfig::new(8);
        c.alpha = Some(16.0);
        c.rslora = true;
        c.dropout = 0.05;
        c.targets = vec![TargetModule::VProj, TargetModule::QProj];
        let json = peft_config_json(&c, "some/base");
        assert_eq!(json["lora_alpha"], json!(16));
        assert_eq!(json["target_modules"], json!(["q_proj", "v_proj"]));
        std::fs::write(dir.path().join(ADAPTER_CONFIG), json.to_string()).unwrap();
        let (back, base) = read_adapter_config(dir.path()).unwrap();
        assert!(back.same_shape(&c) && back.dropout == c.dropout);
        assert_eq!(base.as_deref(), Some("some/base"));
    }

    #[test]
    fn unsupported_peft_options_name_file_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ADAPTER_CONFIG);
        let base = peft_config_json(&LoraConfig::new(4), "b");
        for (key, value, field) in [
            (
                "target_modules",
                json!(["q_proj", "dense"]),
                "target_modules",
            ),
            ("target_modules", json!(".*proj"), "target_modules"),
            ("use_dora", json!(true), "use_dora"),
            ("peft_type", json!("IA3"), "peft_type"),
            ("r", json!(0), "r"),
            ("rank_pattern", json!({"q_proj": 2}), "rank_pattern"),
        ] {
            let mut bad = base.clone();
            bad[key] = value;
            std::fs::write(&path, bad.to_string()).unwrap();
            let err = read_adapter_config(dir.path()).unwrap_err().to_string();
            assert!(
                err.contains(ADAPTER_CONFIG) && err.contains(&format!("`{field}`")),
                "{err}"
            );
        }
    }
}
