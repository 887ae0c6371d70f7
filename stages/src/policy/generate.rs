//! Batched sampling with a KV cache.
//!
//! Prompts are left-padded into one batch and prefilled once; the cache rows are then repeated
//! so the G samples of a prompt share that prefill. Each step feeds one token per live row,
//! samples the next on the device, and stops a row on an end-of-sequence id, a stop string or
//! `max_new_tokens`. Rows that finish are dropped from the batch once enough of them have.
//!
//! Randomness comes from one ChaCha8 stream per sample seeded from its request's seed and the
//! sample's index, so a completion does not depend on what else was in the batch.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tandem_schemas::FinishReason;
use tch::{Device, Kind, Tensor};

use super::model::{Attend, KvCache, Transformer, positions_from_mask};
use super::tokenizer::Tokenizer;
use super::{PolicyError, Result};

/// How to sample.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// Most tokens to generate per sample.
    pub max_new_tokens: usize,
    /// Softmax temperature; `0` means greedy.
    pub temperature: f64,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches `top_p`.
    pub top_p: f64,
    /// Keep only the `top_k` most likely tokens (`0` = all).
    pub top_k: usize,
    /// Texts that end a completion (the stop string is kept in the text, as transformers does).
    pub stop: Vec<String>,
    /// Token ids that end a completion (usually the model's EOS ids).
    pub eos_token_ids: Vec<u32>,
}

impl Default for SamplingParams {
    fn default() -> SamplingParams {
        SamplingParams {
            max_new_tokens: 256,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            stop: Vec::new(),
            eos_token_ids: Vec::new(),
        }
    }
}

impl SamplingParams {
    fn greedy(&self) -> bool {
        self.temperature <= 0.0
    }

    /// The temperature log-probs are reported under (1 for greedy decoding).
    pub fn logprob_temperature(&self) -> f64 {
        if self.greedy() { 1.0 } else { self.temperature }
    }
}

/// One prompt to complete `num_samples` times.
#[derive(Clone, Debug)]
pub struct GenerationRequest {
    /// The prompt's token ids.
    pub prompt_ids: Vec<u32>,
    /// Completions wanted (G).
    pub num_samples: usize,
    /// Seed of this prompt's samples (sample `i` uses a stream derived from `(seed, i)`).
    pub seed: u64,
}

/// One completion.
#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    /// The generated token ids (an end-of-sequence id that stopped it included).
    pub token_ids: Vec<u32>,
    /// Log-probability of each generated token under the sampling distribution (logits divided
    /// by the temperature, before top-k/top-p truncation).
    pub logprobs: Vec<f32>,
    /// The text, without special tokens, cut right after a stop string that ended it.
    pub text: String,
    /// Why it ended.
    pub finish_reason: FinishReason,
}

/// A row of the decoding batch.
struct Row {
    request: usize,
    rng: ChaCha8Rng,
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
    finish: Option<FinishReason>,
}

/// Completes every request; `out[r][i]` is sample `i` of request `r`.
pub fn generate(
    model: &Transformer,
    tokenizer: &Tokenizer,
    requests: &[GenerationRequest],
    params: &SamplingParams,
) -> Result<Vec<Vec<Completion>>> {
    if let Some(r) = requests.iter().position(|r| r.prompt_ids.is_empty()) {
        return Err(PolicyError::Invalid(format!("request {r}: empty prompt")));
    }
    if requests.is_empty() || params.max_new_tokens == 0 {
        return Ok(requests
            .iter()
            .map(|r| vec![empty_completion(); r.num_samples])
            .collect());
    }
    let device = model.device();
    let longest = requests
        .iter()
        .map(|r| r.prompt_ids.len())
        .max()
        .unwrap_or(0) as i64;
    let capacity = longest + params.max_new_tokens as i64;
    if capacity as usize > model.config.max_position_embeddings {
        tracing::debug!(
            capacity,
            max = model.config.max_position_embeddings,
            "generation runs past max_position_embeddings"
        );
    }
    let pad = i64::from(tokenizer.pad_token_id());

    // Left-padded prompt batch.
    let b = requests.len() as i64;
    let mut ids = vec![pad; (b * longest) as usize];
    let mut valid = vec![false; (b * capacity) as usize];
    for (r, req) in requests.iter().enumerate() {
        let offset = longest as usize - req.prompt_ids.len();
        for (j, &id) in req.prompt_ids.iter().enumerate() {
            ids[r * longest as usize + offset + j] = i64::from(id);
        }
        for j in offset..longest as usize {
            valid[r * capacity as usize + j] = true;
        }
    }
    let input = Tensor::from_slice(&ids)
        .view([b, longest])
        .to_device(device);
    let mut key_valid = Tensor::from_slice(&valid)
        .view([b, capacity])
        .to_device(device);
    let prompt_mask = key_valid.narrow(1, 0, longest);
    let positions = positions_from_mask(&prompt_mask);
    let mut next_position = positions.select(1, longest - 1) + 1;
    let padded = requests
        .iter()
        .any(|r| r.prompt_ids.len() as i64 != longest);
    let attend = Attend::new(&key_valid, 0, longest, padded);

    tch::no_grad(|| -> Result<Vec<Vec<Completion>>> {
        let mut cache = KvCache::new(model, b, capacity);
        let hidden = model.forward(&input, &positions, &attend, Some(&mut cache));
        let mut logits = model.logits(&hidden.select(1, longest - 1));

        // Every prompt's prefill, repeated for its samples.
        let mut rows: Vec<Row> = Vec::new();
        let mut source: Vec<i64> = Vec::new();
        for (r, req) in requests.iter().enumerate() {
            for i in 0..req.num_samples {
                rows.push(Row {
                    request: r,
                    rng: sample_rng(req.seed, i),
                    tokens: Vec::new(),
                    logprobs: Vec::new(),
                    finish: None,
                });
                source.push(r as i64);
            }
        }
        if rows.is_empty() {
            return Ok(requests.iter().map(|_| Vec::new()).collect());
        }
        let index = Tensor::from_slice(&source).to_device(device);
        cache.select_rows(&index);
        logits = logits.index_select(0, &index);
        key_valid = key_valid.index_select(0, &index);
        next_position = next_position.index_select(0, &index);
        // live[k] = the row of `rows` that batch row k decodes.
        let mut live: Vec<usize> = (0..rows.len()).collect();
        let stop_window = params.stop.iter().map(|s| s.len()).max().unwrap_or(0);

        for step in 0..params.max_new_tokens {
            let uniforms: Vec<f32> = live.iter().map(|&k| rows[k].rng.random::<f32>()).collect();
            let (tokens, logprobs) = sample(&logits, &uniforms, params)?;
            let mut finished = 0;
            for (slot, &k) in live.iter().enumerate() {
                let row = &mut rows[k];
                // A row that ended stays in the batch until enough others end (below); what is
                // sampled for it meanwhile is not part of its completion.
                if row.finish.is_some() {
                    finished += 1;
                    continue;
                }
                let token = tokens[slot] as u32;
                row.tokens.push(token);
                row.logprobs.push(logprobs[slot]);
                if params.eos_token_ids.contains(&token) {
                    row.finish = Some(FinishReason::Eos);
                } else if stop_window > 0
                    && hits_stop(tokenizer, &row.tokens, &params.stop, stop_window)?
                {
                    row.finish = Some(FinishReason::Stop);
                } else if step + 1 == params.max_new_tokens {
                    row.finish = Some(FinishReason::Length);
                }
                finished += usize::from(row.finish.is_some());
            }
            if live.iter().all(|&k| rows[k].finish.is_some()) {
                break;
            }
            // Drop finished rows once a quarter of the batch is done: copying the cache costs
            // about as much as a step over that many dead rows.
            let mut token_tensor = Tensor::from_slice(&tokens).to_device(device);
            if finished > 0 && finished * 4 >= live.len() {
                let keep: Vec<i64> = (0..live.len() as i64)
                    .filter(|&slot| rows[live[slot as usize]].finish.is_none())
                    .collect();
                let keep_index = Tensor::from_slice(&keep).to_device(device);
                cache.select_rows(&keep_index);
                key_valid = key_valid.index_select(0, &keep_index);
                next_position = next_position.index_select(0, &keep_index);
                token_tensor = token_tensor.index_select(0, &keep_index);
                live = keep.iter().map(|&slot| live[slot as usize]).collect();
            }
            let n = live.len() as i64;
            let _ = key_valid.narrow(1, cache.len, 1).fill_(1);
            let attend = if padded {
                Attend::Mask(
                    key_valid
                        .narrow(1, 0, cache.len + 1)
                        .view([n, 1, 1, cache.len + 1])
                        .to_kind(Kind::Bool),
                )
            } else {
                Attend::All
            };
            let positions = next_position.view([n, 1]);
            let hidden = model.forward(
                &token_tensor.view([n, 1]),
                &positions,
                &attend,
                Some(&mut cache),
            );
            logits = model.logits(&hidden.select(1, 0));
            next_position += 1;
        }

        let mut out: Vec<Vec<Completion>> = requests
            .iter()
            .map(|r| Vec::with_capacity(r.num_samples))
            .collect();
        for row in rows {
            let finish = row.finish.unwrap_or(FinishReason::Length);
            let mut text = tokenizer.decode(&row.tokens, true)?;
            if finish == FinishReason::Stop {
                cut_after_stop(&mut text, &params.stop);
            }
            out[row.request].push(Completion {
                token_ids: row.tokens,
                logprobs: row.logprobs,
                text,
                finish_reason: finish,
            });
        }
        Ok(out)
    })
}

fn empty_completion() -> Completion {
    Completion {
        token_ids: Vec::new(),
        logprobs: Vec::new(),
        text: String::new(),
        finish_reason: FinishReason::Length,
    }
}

/// The random stream of sample `index` of a request seeded with `seed`.
fn sample_rng(seed: u64, index: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index as u64);
    rng
}

/// Picks one token per row of `logits` `[R, V]` and its log-prob under the temperature-scaled
/// distribution. Sampling is inverse-CDF with the given uniforms, so it is reproducible without
/// torch's global RNG.
fn sample(
    logits: &Tensor,
    uniforms: &[f32],
    params: &SamplingParams,
) -> Result<(Vec<i64>, Vec<f32>)> {
    let rows = logits.size()[0];
    let vocab = logits.size()[1];
    let scaled = logits / params.logprob_temperature();
    let logp = scaled.log_softmax(-1, Kind::Float);
    let tokens = if params.greedy() {
        scaled.argmax(-1, false)
    } else {
        let mut filtered = scaled;
        if params.top_k > 0 && (params.top_k as i64) < vocab {
            let (top, _) = filtered.topk(params.top_k as i64, -1, true, true);
            let kth = top.narrow(1, params.top_k as i64 - 1, 1);
            filtered = filtered.masked_fill(&filtered.lt_tensor(&kth), f64::NEG_INFINITY);
        }
        let u = Tensor::from_slice(uniforms)
            .to_device(logits.device())
            .view([rows, 1]);
        if params.top_p < 1.0 {
            let (sorted, order) = filtered.sort(-1, true);
            let probs = sorted.softmax(-1, Kind::Float);
            let before = probs.cumsum(-1, Kind::Float) - &probs;
            let kept = probs.masked_fill(&before.gt(params.top_p), 0.0);
            let picked = inverse_cdf(&kept, &u);
            order.gather(1, &picked.unsqueeze(1), false).squeeze_dim(1)
        } else {
            inverse_cdf(&filtered.softmax(-1, Kind::Float), &u)
        }
    };
    let chosen = logp.gather(1, &tokens.unsqueeze(1), false).squeeze_dim(1);
    let tokens: Vec<i64> = Vec::<i64>::try_from(tokens.to_device(Device::Cpu))?;
    let logprobs: Vec<f32> = Vec::<f32>::try_from(chosen.to_device(Device::Cpu))?;
    Ok((tokens, logprobs))
}

/// The first index whose cumulative (unnormalised) probability exceeds `u` times the total.
fn inverse_cdf(probs: &Tensor, u: &Tensor) -> Tensor {
    let cdf = probs.cumsum(-1, Kind::Float);
    let total = cdf.narrow(1, cdf.size()[1] - 1, 1);
    // Keep the target strictly below the total, so the first index whose cumulative mass exceeds
    // it always carries mass: a zero-probability token is never picked, whatever the rounding.
    let target = (u * &total).minimum(&(&total * (1.0 - 1e-6)));
    target
        .searchsorted::<Tensor>(&cdf, false, true, "right", None)
        .squeeze_dim(1)
}

/// Whether the tail of `tokens` contains a stop string. Only the last `window` tokens are
/// decoded: every token is at least one byte, so a stop string of `window` bytes ending now
/// lies within them.
fn hits_stop(
    tokenizer: &Tokenizer,
    tokens: &[u32],
    stop: &[String],
    window: usize,
) -> Result<bool> {
    let start = tokens.len().saturating_sub(window + 1);
    let tail = tokenizer.decode(&tokens[start..], false)?;
    Ok(stop
        .iter()
        .any(|s| !s.is_empty() && tail.contains(s.as_str())))
}

/// Cuts `text` after the first stop string it contains.
pub fn cut_after_stop(text: &mut String, stop: &[String]) {
    let end = stop
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()).map(|at| at + s.len()))
        .min();
    if let Some(end) = end {
        text.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_after_the_first_stop_string() {
        let mut t = "think <answer>4</answer> more </unknown>".to_string();
        cut_after_stop(&mut t, &["</unknown>".into(), "</answer>".into()]);
        assert_eq!(t, "think <answer>4</answer>");
    }

    #[test]
    fn sampling_follows_the_distribution_and_truncation() {
        let logits =
            Tensor::from_slice(&[0.0f32, 0.0, 0.0, 10.0, 10.0, f32::NEG_INFINITY]).view([1, 6]);
        let params = SamplingParams {
            temperature: 1.0,
            ..SamplingParams::default()
        };
        // Mass sits on tokens 3 and 4 equally: u below ½ gives 3, above gives 4.
        assert_eq!(sample(&logits, &[0.25], &params).unwrap().0, vec![3]);
        assert_eq!(sample(&logits, &[0.75], &params).unwrap().0, vec![4]);
        // A zero-probability token is never chosen, even at u → 1.
        assert_eq!(sample(&logits, &[0.999_999_9], &params).unwrap().0, vec![4]);
        // top_k = 2 keeps the two most likely tokens (ties kept, as transformers does).
        let skewed =
            Tensor::from_slice(&[9.0f32, 0.0, 0.0, 10.0, 8.0, f32::NEG_INFINITY]).view([1, 6]);
        let top2 = SamplingParams {
            top_k: 2,
            ..params.clone()
        };
        for u in [0.01, 0.5, 0.99] {
            let picked = sample(&skewed, &[u], &top2).unwrap().0[0];
            assert!(
                picked == 0 || picked == 3,
                "top-2 picked {picked} at u = {u}"
            );
        }
        // top_p = 0.4 keeps the single most likely token.
        let nucleus = SamplingParams {
            top_p: 0.4,
            ..params.clone()
        };
        let (tokens, logprobs) = sample(&logits, &[0.99], &nucleus).unwrap();
        assert!(tokens[0] == 3 || tokens[0] == 4);
        // Log-probs are those of the untruncated distribution: ln ½ (up to e^-10 mass).
        assert!((logprobs[0] - 0.5f32.ln()).abs() < 1e-3, "{logprobs:?}");
        // Greedy picks the first maximum.
        let greedy = SamplingParams {
            temperature: 0.0,
            ..params
        };
        assert_eq!(sample(&logits, &[0.5], &greedy).unwrap().0, vec![3]);
    }

    #[test]
    fn sample_streams_differ_by_index_and_repeat_by_seed() {
        let draw = |seed, i| sample_rng(seed, i).random::<u64>();
        assert_eq!(draw(7, 0), draw(7, 0));
        assert_ne!(draw(7, 0), draw(7, 1));
        assert_ne!(draw(7, 0), draw(8, 0));
    }
}
