//! Which examples each training step uses.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// A batch size that cannot cut the dataset into batches.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The batch size is 0.
    #[error("batch size must be at least 1")]
    ZeroBatchSize,
    /// Not even one batch fits in the dataset.
    #[error("batch size {batch_size} is larger than the dataset ({len} examples)")]
    BatchLargerThanDataset {
        /// The requested batch size.
        batch_size: usize,
        /// The number of examples.
        len: usize,
    },
}

/// Which examples each training step uses: epochs of a seeded shuffle (or file order), cut into
/// batches of `batch_size`; the remainder of an epoch that does not fill a batch is dropped (so
/// no prompt appears twice in one step).
///
/// Any step can be computed on its own, so a resumed run sees the same batches as an
/// uninterrupted one with the same seed.
///
/// ```
/// let batches = tandem_datasets::Batches::new(10, 4, false, 0)?;
/// assert_eq!(batches.steps_per_epoch(), 2);
/// assert_eq!(batches.indices(1), vec![4, 5, 6, 7]);
/// assert_eq!(batches.indices(2), vec![0, 1, 2, 3]);
/// # Ok::<(), tandem_datasets::BatchError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batches {
    len: usize,
    batch_size: usize,
    shuffle: bool,
    seed: u64,
}

impl Batches {
    /// Batches over `len` examples; fails if `batch_size` is 0 or larger than `len`.
    pub fn new(
        len: usize,
        batch_size: usize,
        shuffle: bool,
        seed: u64,
    ) -> Result<Batches, BatchError> {
        if batch_size == 0 {
            return Err(BatchError::ZeroBatchSize);
        }
        if batch_size > len {
            return Err(BatchError::BatchLargerThanDataset { batch_size, len });
        }
        Ok(Batches {
            len,
            batch_size,
            shuffle,
            seed,
        })
    }

    /// Training steps in one pass over the dataset.
    pub fn steps_per_epoch(&self) -> u64 {
        (self.len / self.batch_size) as u64
    }

    /// The 0-based epoch that step `step` belongs to.
    pub fn epoch(&self, step: u64) -> u64 {
        step / self.steps_per_epoch()
    }

    /// Indices into the examples for training step `step`. Each epoch is its own permutation,
    /// recomputed per call (O(len), negligible next to a training step).
    pub fn indices(&self, step: u64) -> Vec<usize> {
        let epoch = self.epoch(step);
        let mut order: Vec<usize> = (0..self.len).collect();
        if self.shuffle {
            // The golden-ratio multiplier spreads consecutive epochs over the seed space, so
            // epoch 1 of seed s is not epoch 0 of seed s ^ 1.
            let mut rng =
                ChaCha8Rng::seed_from_u64(self.seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            order.shuffle(&mut rng);
        }
        let start = (step % self.steps_per_epoch()) as usize * self.batch_size;
        order.truncate(start + self.batch_size);
        order.split_off(start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn epoch(batches: &Batches, epoch: u64) -> Vec<usize> {
        let spe = batches.steps_per_epoch();
        (epoch * spe..(epoch + 1) * spe)
            .flat_map(|step| batches.indices(step))
            .collect()
    }

    #[test]
    fn shuffled_epochs_10_3_seed_7() {
        let batches = Batches::new(10, 3, true, 7).expect("valid");
        assert_eq!(batches.steps_per_epoch(), 3);
        let (first, second) = (epoch(&batches, 0), epoch(&batches, 1));
        assert_eq!(first.iter().collect::<BTreeSet<_>>().len(), 9);
        assert_eq!(second.iter().collect::<BTreeSet<_>>().len(), 9);
        assert_ne!(first, second);
        assert_eq!(
            first,
            epoch(&Batches::new(10, 3, true, 7).expect("valid"), 0)
        );
        assert_ne!(
            first,
            epoch(&Batches::new(10, 3, true, 8).expect("valid"), 0)
        );
        assert_eq!(batches.epoch(5), 1);
    }

    #[test]
    fn unshuffled_is_file_order_5_2() {
        let batches = Batches::new(5, 2, false, 7).expect("valid");
        let steps: Vec<Vec<usize>> = (0..5).map(|step| batches.indices(step)).collect();
        assert_eq!(
            steps,
            [vec![0, 1], vec![2, 3], vec![0, 1], vec![2, 3], vec![0, 1]]
        );
    }

    #[test]
    fn bad_batch_sizes() {
        assert_eq!(Batches::new(5, 0, true, 0), Err(BatchError::ZeroBatchSize));
        assert_eq!(
            Batches::new(5, 6, true, 0),
            Err(BatchError::BatchLargerThanDataset {
                batch_size: 6,
                len: 5
            })
        );
        assert_eq!(
            BatchError::BatchLargerThanDataset {
                batch_size: 6,
                len: 5
            }
            .to_string(),
            "batch size 6 is larger than the dataset (5 examples)"
        );
    }

    proptest::proptest! {
        #[test]
        fn epochs_partition_distinct_indices(len in 1usize..300, size_frac in 0.0f64..1.0, seed: u64, epoch_no in 0u64..1000, shuffle: bool) {
            let batch_size = 1 + ((len - 1) as f64 * size_frac) as usize;
            let batches = Batches::new(len, batch_size, shuffle, seed).expect("valid");
            let spe = batches.steps_per_epoch();
            proptest::prop_assert_eq!(spe, (len / batch_size) as u64);
            let all = epoch(&batches, epoch_no);
            proptest::prop_assert_eq!(all.len() as u64, spe * batch_size as u64);
            let distinct: BTreeSet<usize> = all.iter().copied().collect();
            proptest::prop_assert_eq!(distinct.len(), all.len());
            proptest::prop_assert!(all.iter().all(|&i| i < len));
            proptest::prop_assert_eq!(all, epoch(&batches, epoch_no));
        }
    }
}
