//! The decoder: Qwen2 / Llama as transformers computes them (RMSNorm in f32, RoPE with the
//! configured scaling, grouped-query attention through fused SDPA, SwiGLU), with a preallocated
//! KV cache written in place.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use tch::{Device, Kind, Tensor};

use super::config::{ModelConfig, RopeScaling, WeightDtype};
use super::device::DeviceSpec;
use super::lora::{self, LoraConfig, LoraInit, LoraLinear, TargetModule};
use super::weights::StoredWeights;
use super::{PolicyError, Result};

/// One decoder layer's weights.
struct Layer {
    input_norm: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    post_norm: Tensor,
    gate: Linear,
    up: Linear,
    down: Linear,
}

struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
    /// A LoRA adapter on this projection.
    lora: Option<LoraLinear>,
}

impl Linear {
    /// `x·Wᵀ + b`, plus the adapter's `s·B·A·x` (computed in f32, added, and cast back to the
    /// base's dtype, as PEFT does); adapter dropout only while `training`.
    fn forward(&self, x: &Tensor, training: bool) -> Tensor {
        let y = project(x, &self.weight, self.bias.as_ref());
        match &self.lora {
            None => y,
            Some(lora) => {
                let kind = y.kind();
                (y.to_kind(Kind::Float) + lora.delta(x, training)).to_kind(kind)
            }
        }
    }
}

impl Layer {
    fn linear(&self, target: TargetModule) -> &Linear {
        match target {
            TargetModule::QProj => &self.q,
            TargetModule::KProj => &self.k,
            TargetModule::VProj => &self.v,
            TargetModule::OProj => &self.o,
            TargetModule::GateProj => &self.gate,
            TargetModule::UpProj => &self.up,
            TargetModule::DownProj => &self.down,
        }
    }

    fn linear_mut(&mut self, target: TargetModule) -> &mut Linear {
        match target {
            TargetModule::QProj => &mut self.q,
            TargetModule::KProj => &mut self.k,
            TargetModule::VProj => &mut self.v,
            TargetModule::OProj => &mut self.o,
            TargetModule::GateProj => &mut self.gate,
            TargetModule::UpProj => &mut self.up,
            TargetModule::DownProj => &mut self.down,
        }
    }
}

/// Rows up to which `project` multiplies as `W · xᵀ`.
const FEW_ROWS: i64 = 256;

/// Weights from which `project` multiplies as `W · xᵀ` (4 MB in f32): smaller ones stay in
/// cache, where `linear` is as fast and the extra copies cost more than they save.
const LARGE_WEIGHT: usize = 1 << 20;

/// `x · Wᵀ (+ b)` for `x` `[.., K]` and `W` `[N, K]`, as `linear` computes it. For a few rows
/// (a decoding step) and a large weight on CPU it is computed as `(W · xᵀ)ᵀ`: MKL then streams
/// the weight on every thread instead of repacking it into panels on one, which on a 2-core
/// CPU makes the output projection of a decoding step 2× faster (BENCHMARKS.md, "Policy
/// engine").
fn project(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Tensor {
    let size = x.size();
    let k = size[size.len() - 1];
    let rows = x.numel() as i64 / k.max(1);
    if rows > FEW_ROWS || weight.numel() < LARGE_WEIGHT || x.device() != Device::Cpu {
        return x.linear(weight, bias);
    }
    let mut out_size = size.clone();
    out_size[size.len() - 1] = weight.size()[0];
    // MKL is fastest with the rows contiguous (a transposed `B`), whatever layout `x` has. The
    // result is made row-major again: a transposed q, k or v would push SDPA off its fused
    // kernel (which needs unit stride in the last dimension) onto the unfused path.
    let out = weight.mm(&x.reshape([rows, k]).contiguous().tr()).tr();
    let out = match bias {
        Some(b) => out + b,
        None => out,
    };
    out.contiguous().reshape(out_size.as_slice())
}

/// A Qwen2 or Llama decoder with its weights on a device.
pub struct Transformer {
    /// The configuration it was built from.
    pub config: ModelConfig,
    /// Every parameter by HF name, in a fixed order (the order of the checkpoint's layout).
    params: Vec<(String, Tensor)>,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Tensor,
    inv_freq: Tensor,
    device: Device,
    kind: Kind,
    /// The LoRA options when adapters are attached.
    lora: Option<LoraConfig>,
    /// The adapters' matrices by tandem name (`model.layers.0.self_attn.q_proj.lora_A.weight`),
    /// layer by layer in the order of [`TargetModule::ALL`].
    adapter_params: Vec<(String, Tensor)>,
    /// Adapter dropout is on (the learner's passes); generation and scoring leave it off.
    training: AtomicBool,
}

/// Keys and values of every layer for a batch of rows, preallocated to `capacity` positions and
/// written in place as tokens are added.
pub struct KvCache {
    keys: Vec<Tensor>,
    values: Vec<Tensor>,
    /// Positions filled so far (the same for every row; padding is masked, not skipped).
    pub len: i64,
    /// Positions allocated.
    pub capacity: i64,
}

impl KvCache {
    /// An empty cache for `rows` sequences of up to `capacity` positions.
    pub fn new(model: &Transformer, rows: i64, capacity: i64) -> KvCache {
        let c = &model.config;
        let shape = [
            rows,
            c.num_key_value_heads as i64,
            capacity,
            c.head_dim as i64,
        ];
        let alloc = || Tensor::zeros(shape, (model.kind, model.device));
        KvCache {
            keys: (0..c.num_hidden_layers).map(|_| alloc()).collect(),
            values: (0..c.num_hidden_layers).map(|_| alloc()).collect(),
            len: 0,
            capacity,
        }
    }

    /// Keeps the rows `index` names, in that order (a row may repeat: this is how G samples
    /// share one prefill).
    pub fn select_rows(&mut self, index: &Tensor) {
        for t in self.keys.iter_mut().chain(self.values.iter_mut()) {
            *t = t.index_select(0, index);
        }
    }

    /// Rows held.
    pub fn rows(&self) -> i64 {
        self.keys.first().map_or(0, |k| k.size()[0])
    }
}

impl Transformer {
    /// Loads the weights of `dir` onto `device`, converted to `dtype` (default: f32 on CPU, bf16
    /// on CUDA).
    pub fn load(
        dir: &Path,
        device: &DeviceSpec,
        dtype: Option<WeightDtype>,
    ) -> Result<Transformer> {
        let config = ModelConfig::from_dir(dir)?;
        let device = device.resolve()?;
        let dtype = dtype.unwrap_or(match device {
            Device::Cpu => WeightDtype::F32,
            _ => WeightDtype::BF16,
        });
        let mut stored = StoredWeights::read(dir)?;
        let model = Transformer::from_weights(config, &mut stored, device, dtype.kind())?;
        let leftover: Vec<String> = stored
            .leftover()
            .into_iter()
            // Buffers some exporters write; recomputed here.
            .filter(|n| !n.ends_with("rotary_emb.inv_freq"))
            .collect();
        if !leftover.is_empty() {
            tracing::warn!(
                "{}: {} tensor(s) not used by {}: {}",
                stored.source.display(),
                leftover.len(),
                model.config.arch.hf_class(),
                leftover.join(", ")
            );
        }
        Ok(model)
    }

    /// Builds the model from named tensors: each is checked against the shape the config implies.
    pub(crate) fn from_weights(
        config: ModelConfig,
        stored: &mut StoredWeights,
        device: Device,
        kind: Kind,
    ) -> Result<Transformer> {
        let c = &config;
        let (h, i, v) = (
            c.hidden_size as i64,
            c.intermediate_size as i64,
            c.vocab_size as i64,
        );
        let q_out = (c.num_attention_heads * c.head_dim) as i64;
        let kv_out = (c.num_key_value_heads * c.head_dim) as i64;
        let mut params: Vec<(String, Tensor)> = Vec::new();
        let mut take = |name: String, shape: &[i64]| -> Result<Tensor> {
            let t = stored.take(&name, shape, kind, device)?;
            params.push((name, t.shallow_clone()));
            Ok(t)
        };
        let embed = take("model.embed_tokens.weight".into(), &[v, h])?;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for l in 0..c.num_hidden_layers {
            let p = format!("model.layers.{l}");
            let mut linear = |name: &str, out: i64, inp: i64, bias: bool| -> Result<Linear> {
                let weight = take(format!("{p}.{name}.weight"), &[out, inp])?;
                let bias = if bias {
                    Some(take(format!("{p}.{name}.bias"), &[out])?)
                } else {
                    None
                };
                Ok(Linear {
                    weight,
                    bias,
                    lora: None,
                })
            };
            let q = linear("self_attn.q_proj", q_out, h, c.attention_bias)?;
            let k = linear("self_attn.k_proj", kv_out, h, c.attention_bias)?;
            let v_proj = linear("self_attn.v_proj", kv_out, h, c.attention_bias)?;
            // Qwen2's output projection never has a bias; Llama's follows `attention_bias`.
            let o_bias = c.attention_bias && c.arch == super::Arch::Llama;
            let o = linear("self_attn.o_proj", h, q_out, o_bias)?;
            let gate = linear("mlp.gate_proj", i, h, false)?;
            let up = linear("mlp.up_proj", i, h, false)?;
            let down = linear("mlp.down_proj", h, i, false)?;
            layers.push(Layer {
                input_norm: take(format!("{p}.input_layernorm.weight"), &[h])?,
                q,
                k,
                v: v_proj,
                o,
                post_norm: take(format!("{p}.post_attention_layernorm.weight"), &[h])?,
                gate,
                up,
                down,
            });
        }
        let norm = take("model.norm.weight".into(), &[h])?;
        let lm_head = if config.tie_word_embeddings {
            // Some exporters write the tied matrix anyway; it is the embedding.
            let _ = stored
                .contains("lm_head.weight")
                .then(|| stored.take("lm_head.weight", &[v, h], kind, device));
            embed.shallow_clone()
        } else {
            take("lm_head.weight".into(), &[v, h])?
        };
        let inv_freq = inverse_frequencies(&config, device);
        Ok(Transformer {
            config,
            params,
            embed,
            layers,
            norm,
            lm_head,
            inv_freq,
            device,
            kind,
            lora: None,
            adapter_params: Vec::new(),
            training: AtomicBool::new(false),
        })
    }

    /// Attaches new LoRA adapters (f32, on the model's device) to the projections `config`
    /// targets, started as `init` says. The base weights are left as they are.
    pub fn attach_lora(&mut self, config: &LoraConfig, init: LoraInit) -> Result<()> {
        self.attach_lora_with(config, |name, shape| {
            let (seed, random_b) = match init {
                LoraInit::Peft { seed } => (seed, false),
                LoraInit::Random { seed } => (seed, true),
            };
            // Kaiming-uniform with a = √5 over the fan-in, as `nn.Linear` and PEFT draw `A`.
            let bound = 1.0 / (shape[1] as f64).sqrt();
            if name.ends_with("lora_B.weight") && !random_b {
                Ok(Tensor::zeros(shape, (Kind::Float, tch::Device::Cpu)))
            } else {
                Ok(super::weights::uniform(seed, name, shape, bound))
            }
        })
    }

    /// Attaches the adapter saved in `dir` (PEFT's `adapter_config.json` and
    /// `adapter_model.safetensors`). Every target's matrices must be there with the shapes the
    /// base implies, and nothing else.
    pub fn load_adapter(&mut self, dir: &Path) -> Result<LoraConfig> {
        let (config, _) = lora::read_adapter_config(dir)?;
        let (path, mut stored) = lora::read_adapter_weights(dir)?;
        self.attach_lora_with(&config, |name, shape| {
            let key = lora::peft_key(name);
            let t = stored.remove(name).ok_or_else(|| PolicyError::Tensor {
                path: path.clone(),
                name: key.clone(),
                message: format!(
                    "missing (adapter_config.json targets {} with r = {})",
                    config
                        .target_set()
                        .iter()
                        .map(|t| t.name())
                        .collect::<Vec<_>>()
                        .join(", "),
                    config.r
                ),
            })?;
            if t.size() != shape {
                return Err(PolicyError::Tensor {
                    path: path.clone(),
                    name: key,
                    message: format!(
                        "shape {:?}, the base model and r = {} imply {shape:?}",
                        t.size(),
                        config.r
                    ),
                });
            }
            if !matches!(t.kind(), Kind::Float | Kind::BFloat16 | Kind::Half) {
                return Err(PolicyError::Tensor {
                    path: path.clone(),
                    name: key,
                    message: format!("dtype {:?} is not a float type", t.kind()),
                });
            }
            Ok(t)
        })?;
        if let Some(extra) = stored.keys().next() {
            return Err(PolicyError::Tensor {
                path,
                name: lora::peft_key(extra),
                message: "not an adapter of a targeted projection of this base model".into(),
            });
        }
        Ok(config)
    }

    fn attach_lora_with(
        &mut self,
        config: &LoraConfig,
        mut make: impl FnMut(&str, &[i64]) -> Result<Tensor>,
    ) -> Result<()> {
        if self.lora.is_some() {
            return Err(PolicyError::Invalid(
                "the model already has LoRA adapters".into(),
            ));
        }
        config
            .validate()
            .map_err(|(field, m)| PolicyError::Invalid(format!("lora `{field}`: {m}")))?;
        let targets = config.target_set();
        let r = config.r as i64;
        let mut params = Vec::new();
        let mut built = Vec::new();
        for l in 0..self.layers.len() {
            for &target in &targets {
                let size = self.layers[l].linear_mut(target).weight.size();
                let (out, inp) = (size[0], size[1]);
                let [a_name, b_name] = lora::param_names(l, target);
                let a = make(&a_name, &[r, inp])?
                    .to_kind(Kind::Float)
                    .to_device(self.device);
                let b = make(&b_name, &[out, r])?
                    .to_kind(Kind::Float)
                    .to_device(self.device);
                params.push((a_name, a.shallow_clone()));
                params.push((b_name, b.shallow_clone()));
                built.push((l, target, a, b));
            }
        }
        for (l, target, a, b) in built {
            self.layers[l].linear_mut(target).lora = Some(LoraLinear {
                a,
                b,
                scaling: config.scaling(),
                dropout: config.dropout,
            });
        }
        self.adapter_params = params;
        self.lora = Some(config.clone());
        Ok(())
    }

    /// The LoRA options of the attached adapters, if any.
    pub fn lora(&self) -> Option<&LoraConfig> {
        self.lora.as_ref()
    }

    /// The adapters' matrices by name (empty without LoRA).
    pub fn adapter_parameters(&self) -> &[(String, Tensor)] {
        &self.adapter_params
    }

    /// What a learner updates: the adapters when there are any, else every parameter.
    pub fn trainable_parameters(&self) -> &[(String, Tensor)] {
        if self.lora.is_some() {
            &self.adapter_params
        } else {
            &self.params
        }
    }

    /// Folds the adapters into the base weights (`W += s·B·A`, in f32, stored back in the
    /// base's dtype) and removes them: the model then computes what base + adapter computed.
    pub fn merge_lora(&mut self) {
        if self.lora.take().is_none() {
            return;
        }
        tch::no_grad(|| {
            for layer in &mut self.layers {
                for target in TargetModule::ALL {
                    let linear = layer.linear_mut(target);
                    if let Some(lora) = linear.lora.take() {
                        let delta = lora.b.mm(&lora.a) * lora.scaling;
                        let merged = linear.weight.to_kind(Kind::Float) + delta;
                        linear.weight.copy_(&merged.to_kind(linear.weight.kind()));
                    }
                }
            }
        });
        self.adapter_params.clear();
    }

    /// The weights a serving engine loads, by HF name: every parameter with the adapters folded
    /// in (`W + s·B·A`, as [`Transformer::merge_lora`] computes it, in new tensors), and with
    /// `untie`, a tied output projection written out as `lm_head.weight` (the embedding again).
    /// Unchanged parameters share the model's storage (detached): nothing is copied to write
    /// them. The model itself is unchanged.
    pub fn serving_parameters(&self, untie: bool) -> Vec<(String, Tensor)> {
        tch::no_grad(|| {
            let mut out: Vec<(String, Tensor)> = self
                .params
                .iter()
                .map(|(name, t)| (name.clone(), t.detach()))
                .collect();
            for (l, layer) in self.layers.iter().enumerate() {
                for target in TargetModule::ALL {
                    let linear = layer.linear(target);
                    let Some(lora) = &linear.lora else { continue };
                    let name = format!("model.layers.{l}.{}.weight", target.path());
                    let merged = (linear.weight.to_kind(Kind::Float)
                        + lora.b.mm(&lora.a) * lora.scaling)
                        .to_kind(linear.weight.kind());
                    if let Some(slot) = out.iter_mut().find(|(n, _)| *n == name) {
                        slot.1 = merged;
                    }
                }
            }
            if untie
                && self.config.tie_word_embeddings
                && let Some((_, embed)) = out.iter().find(|(n, _)| n == "model.embed_tokens.weight")
            {
                let head = embed.shallow_clone();
                out.push(("lm_head.weight".into(), head));
            }
            out
        })
    }

    /// Turns adapter dropout on (learning) or off (generation, scoring).
    pub fn set_training(&self, on: bool) {
        self.training.store(on, Ordering::Relaxed);
    }

    /// The device the weights live on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The dtype the weights are held in.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Every parameter by HF name (a tied output projection appears once, as the embedding).
    pub fn named_parameters(&self) -> &[(String, Tensor)] {
        &self.params
    }

    /// Number of parameters (tied matrices counted once).
    pub fn num_parameters(&self) -> i64 {
        self.params.iter().map(|(_, t)| t.numel() as i64).sum()
    }

    /// Runs the decoder over `input_ids` `[B, T]` at `positions` `[B, T]`, attending as `attend`
    /// says. With a cache, the new keys and values are written at `cache.len..cache.len + T`
    /// and `cache.len` advances. Returns the final hidden states `[B, T, H]` (after the last norm).
    #[allow(clippy::assign_op_pattern)] // out of place: tensors in the autograd graph
    pub fn forward(
        &self,
        input_ids: &Tensor,
        positions: &Tensor,
        attend: &Attend,
        mut cache: Option<&mut KvCache>,
    ) -> Tensor {
        let c = &self.config;
        let (b, t) = (input_ids.size()[0], input_ids.size()[1]);
        let (heads, kv_heads, d) = (
            c.num_attention_heads as i64,
            c.num_key_value_heads as i64,
            c.head_dim as i64,
        );
        let (cos, sin) = self.rotary(positions);
        let mut x = Tensor::embedding(&self.embed, input_ids, -1, false, false);
        let start = cache.as_ref().map_or(0, |c| c.len);
        let tr = self.training.load(Ordering::Relaxed);
        for (l, layer) in self.layers.iter().enumerate() {
            let h = rms_norm(&x, &layer.input_norm, c.rms_norm_eps);
            let q = layer
                .q
                .forward(&h, tr)
                .view([b, t, heads, d])
                .transpose(1, 2);
            let k = layer
                .k
                .forward(&h, tr)
                .view([b, t, kv_heads, d])
                .transpose(1, 2);
            let v = layer
                .v
                .forward(&h, tr)
                .view([b, t, kv_heads, d])
                .transpose(1, 2);
            let q = apply_rotary(&q, &cos, &sin);
            let k = apply_rotary(&k, &cos, &sin);
            let (k, v) = match cache.as_deref_mut() {
                Some(cache) => {
                    let (ks, vs) = (&cache.keys[l], &cache.values[l]);
                    ks.narrow(2, start, t).copy_(&k);
                    vs.narrow(2, start, t).copy_(&v);
                    (ks.narrow(2, 0, start + t), vs.narrow(2, 0, start + t))
                }
                None => (k, v),
            };
            let (mask, causal) = match attend {
                Attend::Causal => (None, true),
                Attend::All => (None, false),
                Attend::Mask(mask) => (Some(mask), false),
            };
            let attn =
                Tensor::scaled_dot_product_attention(&q, &k, &v, mask, 0.0, causal, None, true);
            let attn = attn.transpose(1, 2).reshape([b, t, heads * d]);
            // Out of place: autograd saved `x` for the norm's backward; `+=` would overwrite it.
            x = x + layer.o.forward(&attn, tr);
            let h = rms_norm(&x, &layer.post_norm, c.rms_norm_eps);
            let mlp = layer.down.forward(
                &(layer.gate.forward(&h, tr).silu() * layer.up.forward(&h, tr)),
                tr,
            );
            x = x + mlp;
        }
        if let Some(cache) = cache {
            cache.len = start + t;
        }
        rms_norm(&x, &self.norm, c.rms_norm_eps)
    }

    /// Logits `[.., V]` in f32 for hidden states `[.., H]`.
    pub fn logits(&self, hidden: &Tensor) -> Tensor {
        project(hidden, &self.lm_head, None).to_kind(Kind::Float)
    }

    /// cos and sin `[B, 1, T, D]` for `positions` `[B, T]`, computed in f32 as transformers does.
    fn rotary(&self, positions: &Tensor) -> (Tensor, Tensor) {
        let freqs = positions.to_kind(Kind::Float).unsqueeze(-1) * &self.inv_freq;
        let emb = Tensor::cat(&[&freqs, &freqs], -1);
        (
            emb.cos().to_kind(self.kind).unsqueeze(1),
            emb.sin().to_kind(self.kind).unsqueeze(1),
        )
    }
}

fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Tensor {
    let kind = x.kind();
    let xf = x.to_kind(Kind::Float);
    let variance = xf.square().mean_dim(-1, true, Kind::Float);
    weight * (xf * (variance + eps).rsqrt()).to_kind(kind)
}

fn apply_rotary(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    let half = x.size()[3] / 2;
    let rotated = Tensor::cat(&[-x.narrow(3, half, half), x.narrow(3, 0, half)], -1);
    x * cos + rotated * sin
}

/// RoPE inverse frequencies `[D/2]` (f32), with the configured scaling applied.
fn inverse_frequencies(c: &ModelConfig, device: Device) -> Tensor {
    let d = c.head_dim as i64;
    let exponents = Tensor::arange_start_step(0, d, 2, (Kind::Int64, Device::Cpu))
        .to_kind(Kind::Float)
        / d as f64;
    let base = Tensor::from(c.rope_theta as f32);
    let inv_freq = base.pow(&exponents).reciprocal();
    let inv_freq = match c.rope_scaling {
        RopeScaling::None => inv_freq,
        RopeScaling::Linear { factor } => inv_freq / factor,
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings: old,
        } => {
            let low_wavelen = old / low_freq_factor;
            let high_wavelen = old / high_freq_factor;
            let wavelen = inv_freq.reciprocal() * (2.0 * std::f64::consts::PI);
            let scaled = inv_freq.where_self(&wavelen.le(low_wavelen), &(&inv_freq / factor));
            let smooth = ((wavelen.reciprocal() * old) - low_freq_factor)
                / (high_freq_factor - low_freq_factor);
            let smoothed = (-&smooth + 1.0) * &scaled / factor + &smooth * &scaled;
            let medium = wavelen
                .ge(high_wavelen)
                .logical_and(&wavelen.le(low_wavelen));
            smoothed.where_self(&medium, &scaled)
        }
    };
    inv_freq.to_device(device)
}

/// Which keys each query attends to.
pub enum Attend {
    /// Causal over the new tokens, no cached prefix and no padding: the fused kernels' fast path.
    Causal,
    /// Every key (one new token per row after an unpadded prefix).
    All,
    /// An explicit boolean mask `[B, 1, T, S]` (true = attend), for padded batches.
    Mask(Tensor),
}

impl Attend {
    /// How `[B, T]` new tokens after `past` cached positions attend, given which of the first
    /// `past + T` key positions are real (`key_valid` `[B, >= past + T]`) and whether any is
    /// padding.
    pub fn new(key_valid: &Tensor, past: i64, t: i64, padded: bool) -> Attend {
        match (padded, past, t) {
            (false, 0, _) => Attend::Causal,
            (false, _, 1) => Attend::All,
            _ => Attend::Mask(attention_mask(key_valid, past, t)),
        }
    }
}

/// The attention mask for `[B, T]` new tokens after `past` cached positions: row `b`, query `i`
/// sees key `j` when `j` is not padding (`key_valid[b, j]`) and `j <= past + i`. Every query also
/// sees itself, so a padding row never has an empty softmax (its output is ignored).
pub fn attention_mask(key_valid: &Tensor, past: i64, t: i64) -> Tensor {
    let device = key_valid.device();
    let s = past + t;
    let keys = key_valid.narrow(1, 0, s).to_kind(Kind::Bool);
    let q_pos = Tensor::arange_start(past, s, (Kind::Int64, device)).unsqueeze(1);
    let k_pos = Tensor::arange(s, (Kind::Int64, device)).unsqueeze(0);
    let causal = k_pos.le_tensor(&q_pos);
    let diagonal = k_pos.eq_tensor(&q_pos);
    causal
        .unsqueeze(0)
        .logical_and(&keys.unsqueeze(1))
        .logical_or(&diagonal.unsqueeze(0))
        .unsqueeze(1)
}

/// Positions of left-padded rows: `cumsum(mask) - 1`, and 1 on padding, as transformers does.
pub fn positions_from_mask(mask: &Tensor) -> Tensor {
    let pos = mask.to_kind(Kind::Int64).cumsum(-1, Kind::Int64) - 1;
    pos.masked_fill(&mask.to_kind(Kind::Int64).eq(0), 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_takes_the_transposed_route_with_linear_s_result() {
        // 1,024 × 1,024 = LARGE_WEIGHT elements: the (W · xᵀ)ᵀ route, for a decoding step's
        // [B, 1, K] rows and for rows laid out non-contiguously; above FEW_ROWS, linear.
        tch::manual_seed(0);
        let weight = Tensor::randn([1024, 1024], (Kind::Float, Device::Cpu));
        let bias = Tensor::randn([1024], (Kind::Float, Device::Cpu));
        let decode = Tensor::randn([8, 1, 1024], (Kind::Float, Device::Cpu));
        let strided = Tensor::randn([1024, 4], (Kind::Float, Device::Cpu)).tr();
        let prefill = Tensor::randn([2, 200, 1024], (Kind::Float, Device::Cpu));
        for x in [&decode, &strided, &prefill] {
            for b in [None, Some(&bias)] {
                let got = project(x, &weight, b);
                let want = x.linear(&weight, b);
                assert_eq!(got.size(), want.size());
                assert!(got.is_contiguous(), "a row-major result for SDPA");
                let diff = (&got - &want).abs().max().double_value(&[]);
                assert!(diff < 1e-3, "{:?}: max |Δ| {diff}", x.size());
            }
        }
    }
}
