//! The learned-router baseline (PAPER.md, "Task-Tuning & router"): a binary classifier on the
//! policy's own representation of the prompt, trained with binary cross-entropy on "did the
//! device solve it", then thresholded so that the questions least likely to be solved go to the
//! cloud until the budget is spent. The paper uses a DeBERTa-v3 classifier; the policy's hidden
//! states are the representation an on-device router has for free.

use tch::{Device, Kind, Tensor};

use crate::policy::{Attend, Transformer, positions_from_mask};

/// The prompt's representation: the mean of the final hidden states over its tokens, `[B, H]`
/// in f32 (left-padded batches of `batch` prompts; no gradients).
pub fn prompt_features(model: &Transformer, prompts: &[Vec<u32>], batch: usize) -> Tensor {
    let mut out = Vec::new();
    tch::no_grad(|| {
        for chunk in prompts.chunks(batch.max(1)) {
            let len = chunk.iter().map(Vec::len).max().unwrap_or(1).max(1);
            let mut ids = vec![0i64; chunk.len() * len];
            let mut valid = vec![false; chunk.len() * len];
            for (r, prompt) in chunk.iter().enumerate() {
                let offset = r * len + len - prompt.len();
                for (j, &t) in prompt.iter().enumerate() {
                    ids[offset + j] = i64::from(t);
                    valid[offset + j] = true;
                }
            }
            let (b, l) = (chunk.len() as i64, len as i64);
            let device = model.device();
            let ids = Tensor::from_slice(&ids).view([b, l]).to_device(device);
            let valid = Tensor::from_slice(&valid).view([b, l]).to_device(device);
            let padded = chunk.iter().any(|p| p.len() != len);
            let attend = Attend::new(&valid, 0, l, padded);
            let hidden = model
                .forward(&ids, &positions_from_mask(&valid), &attend, None)
                .to_kind(Kind::Float);
            let weights = valid.to_kind(Kind::Float).unsqueeze(-1);
            let pooled = (hidden * &weights).sum_dim_intlist(1, false, Kind::Float)
                / weights
                    .sum_dim_intlist(1, false, Kind::Float)
                    .clamp_min(1.0);
            out.push(pooled.to_device(Device::Cpu));
        }
    });
    if out.is_empty() {
        return Tensor::zeros([0, 0], (Kind::Float, Device::Cpu));
    }
    Tensor::cat(&out, 0)
}

/// How the router is trained.
#[derive(Clone, Debug, PartialEq)]
pub struct RouterTraining {
    /// Full-batch Adam steps.
    pub steps: usize,
    /// Adam's learning rate.
    pub lr: f64,
    /// L2 penalty on the weights.
    pub l2: f64,
}

impl Default for RouterTraining {
    fn default() -> Self {
        RouterTraining {
            steps: 300,
            lr: 0.05,
            l2: 1e-3,
        }
    }
}

/// Logistic regression on standardised features: `P(solved) = σ(w · (x − μ)/σ + b)`.
#[derive(Debug)]
pub struct Router {
    mean: Tensor,
    scale: Tensor,
    weight: Tensor,
    bias: Tensor,
    /// The training loss (mean BCE) after each step.
    pub losses: Vec<f64>,
}

impl Router {
    /// Trains on `features` `[N, H]` and `solved` (one label per row). Deterministic: the
    /// weights start at zero and the steps are full-batch.
    pub fn train(features: &Tensor, solved: &[bool], training: &RouterTraining) -> Router {
        let n = solved.len() as i64;
        assert_eq!(features.size()[0], n, "one label per feature row");
        let features = features.to_kind(Kind::Float);
        let mean = features.mean_dim(0, true, Kind::Float);
        let scale = features
            .std_dim(0, false, true)
            .clamp_min(1e-6)
            .to_kind(Kind::Float);
        let x = (&features - &mean) / &scale;
        let y = Tensor::from_slice(
            &solved
                .iter()
                .map(|&s| f32::from(u8::from(s)))
                .collect::<Vec<_>>(),
        );
        let h = x.size()[1];
        let weight = Tensor::zeros([h], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let bias = Tensor::zeros([1], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let mut adam = Adam::new(&[&weight, &bias]);
        let mut losses = Vec::with_capacity(training.steps);
        for _ in 0..training.steps {
            let logits = x.matmul(&weight) + &bias;
            let bce = logits.binary_cross_entropy_with_logits::<Tensor>(
                &y,
                None,
                None,
                tch::Reduction::Mean,
            );
            let loss = &bce + (&weight * &weight).sum(Kind::Float) * training.l2;
            losses.push(bce.double_value(&[]));
            for p in [&weight, &bias] {
                let mut g = p.grad();
                if g.defined() {
                    let _ = g.zero_();
                }
            }
            loss.backward();
            adam.step(training.lr);
        }
        Router {
            mean,
            scale,
            weight: weight.detach(),
            bias: bias.detach(),
            losses,
        }
    }

    /// `P(solved on the device)` per row of `features`.
    pub fn solve_probability(&self, features: &Tensor) -> Vec<f64> {
        let x = (features.to_kind(Kind::Float) - &self.mean) / &self.scale;
        let p = (x.matmul(&self.weight) + &self.bias).sigmoid();
        Vec::<f32>::try_from(p)
            .map_or_else(|_| Vec::new(), |v| v.into_iter().map(f64::from).collect())
    }

    /// Offload scores: the questions least likely to be solved on the device score highest
    /// (rank them with [`super::ranking_by_scores`]).
    pub fn offload_scores(&self, features: &Tensor) -> Vec<f64> {
        self.solve_probability(features)
            .into_iter()
            .map(|p| 1.0 - p)
            .collect()
    }
}

/// Plain Adam (β = 0.9, 0.999) for the router's two tensors.
struct Adam<'a> {
    params: Vec<&'a Tensor>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    t: i32,
}

impl<'a> Adam<'a> {
    fn new(params: &[&'a Tensor]) -> Adam<'a> {
        Adam {
            params: params.to_vec(),
            m: params.iter().map(|p| p.zeros_like()).collect(),
            v: params.iter().map(|p| p.zeros_like()).collect(),
            t: 0,
        }
    }

    fn step(&mut self, lr: f64) {
        self.t += 1;
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
        let (c1, c2) = (1.0 - b1.powi(self.t), 1.0 - b2.powi(self.t));
        tch::no_grad(|| {
            for ((p, m), v) in self.params.iter().zip(&mut self.m).zip(&mut self.v) {
                let g = p.grad();
                *m = &*m * b1 + &g * (1.0 - b1);
                *v = &*v * b2 + (&g * &g) * (1.0 - b2);
                let update = (&*m / c1) / ((&*v / c2).sqrt() + eps) * lr;
                let mut p = p.shallow_clone();
                let _ = p.g_sub_(&update);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_router_learns_a_separable_rule_and_ranks_the_unsolvable_first() {
        // Feature 0 decides (solved when > 0); feature 1 is noise.
        let rows: Vec<[f32; 2]> = (0..40)
            .map(|i| {
                let x = (i as f32 - 19.5) / 10.0;
                [x, ((i * 7919) % 13) as f32 / 13.0]
            })
            .collect();
        let solved: Vec<bool> = rows.iter().map(|r| r[0] > 0.0).collect();
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        let features = Tensor::from_slice(&flat).view([40, 2]);
        let router = Router::train(&features, &solved, &RouterTraining::default());
        let first = router.losses[0];
        let last = *router.losses.last().expect("steps");
        assert!(
            (first - std::f64::consts::LN_2).abs() < 1e-6,
            "zero weights: {first}"
        );
        assert!(last < 0.25 * first, "BCE fell from {first} to {last} only");
        let p = router.solve_probability(&features);
        let right = p
            .iter()
            .zip(&solved)
            .filter(|(p, s)| (**p > 0.5) == **s)
            .count();
        assert_eq!(right, 40, "{p:?}");
        let ranking = super::super::ranking_by_scores(&router.offload_scores(&features));
        assert!(ranking[..20].iter().all(|&i| !solved[i]), "{ranking:?}");
        let again = Router::train(&features, &solved, &RouterTraining::default());
        assert_eq!(again.solve_probability(&features), p, "deterministic");
    }
}
