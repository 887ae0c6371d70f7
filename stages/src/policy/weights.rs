//! Safetensors in and out: `model.safetensors`, or shards named by `model.safetensors.index.json`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use safetensors::Dtype;
use serde_json::Value;
use tch::{Device, Kind, Tensor};

use super::{PolicyError, Result};

/// The single-file weights name.
pub const WEIGHTS: &str = "model.safetensors";
/// The index of sharded weights.
pub const INDEX: &str = "model.safetensors.index.json";

/// Every tensor of a model directory by HF name, as stored (dtype and shape), on the CPU; or,
/// for a new model, a seeded source of random weights.
pub struct StoredWeights {
    tensors: HashMap<String, (Tensor, PathBuf)>,
    /// What was searched, for messages about a missing tensor.
    pub source: PathBuf,
    random: Option<RandomInit>,
}

/// How a new model's weights are drawn.
#[derive(Clone, Copy, Debug)]
struct RandomInit {
    seed: u64,
    std: f64,
}

impl StoredWeights {
    /// Reads `model.safetensors`, or every shard the index names.
    pub fn read(dir: &Path) -> Result<StoredWeights> {
        let single = dir.join(WEIGHTS);
        let index = dir.join(INDEX);
        let (files, source) = if single.is_file() {
            (vec![single.clone()], single)
        } else if index.is_file() {
            (shards(&index)?, index)
        } else {
            return Err(PolicyError::Missing {
                path: single,
                message: format!("no weights: neither {WEIGHTS} nor {INDEX} exists"),
            });
        };
        let mut tensors = HashMap::new();
        for file in files {
            for (name, tensor) in read_file(&file)? {
                tensors.insert(name, (tensor, file.clone()));
            }
        }
        Ok(StoredWeights {
            tensors,
            source,
            random: None,
        })
    }

    /// Random weights as transformers initialises them: matrices from N(0, std²), norm weights
    /// 1, biases 0. Each tensor has its own ChaCha8 stream keyed by its name, so the values do not
    /// depend on the order tensors are drawn in, nor on the machine.
    pub fn random(seed: u64, std: f64) -> StoredWeights {
        StoredWeights {
            tensors: HashMap::new(),
            source: PathBuf::from("<random init>"),
            random: Some(RandomInit { seed, std }),
        }
    }

    /// Takes tensor `name`, checks its shape, and converts it to `kind` on `device`.
    pub fn take(
        &mut self,
        name: &str,
        shape: &[i64],
        kind: Kind,
        device: Device,
    ) -> Result<Tensor> {
        if let Some(init) = self.random {
            return Ok(init.draw(name, shape).to_device(device).to_kind(kind));
        }
        let (tensor, file) = self
            .tensors
            .remove(name)
            .ok_or_else(|| PolicyError::Tensor {
                path: self.source.clone(),
                name: name.to_string(),
                message: "missing".into(),
            })?;
        if !matches!(tensor.kind(), Kind::Float | Kind::BFloat16 | Kind::Half) {
            return Err(PolicyError::Tensor {
                path: file,
                name: name.to_string(),
                message: format!(
                    "dtype {:?} is not a float type (F32, BF16, F16)",
                    tensor.kind()
                ),
            });
        }
        if tensor.size() != shape {
            return Err(PolicyError::Tensor {
                path: file,
                name: name.to_string(),
                message: format!("shape {:?}, the config implies {shape:?}", tensor.size()),
            });
        }
        Ok(tensor.to_device(device).to_kind(kind))
    }

    /// Whether tensor `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Names left after every expected tensor was taken.
    pub fn leftover(&self) -> Vec<String> {
        let mut names: Vec<String> = self.tensors.keys().cloned().collect();
        names.sort();
        names
    }
}

impl RandomInit {
    fn draw(&self, name: &str, shape: &[i64]) -> Tensor {
        if name.ends_with("norm.weight") {
            return Tensor::ones(shape, (Kind::Float, Device::Cpu));
        }
        if name.ends_with(".bias") {
            return Tensor::zeros(shape, (Kind::Float, Device::Cpu));
        }
        normal(self.seed, name, shape, self.std)
    }
}

/// `shape` values from N(0, std²) on the stream of `(seed, name)`: the same on every machine and
/// whatever order tensors are drawn in.
pub(crate) fn normal(seed: u64, name: &str, shape: &[i64], std: f64) -> Tensor {
    use rand::{Rng, SeedableRng};
    let numel: i64 = shape.iter().product();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(fnv1a(name));
    let mut values = Vec::with_capacity(numel as usize);
    while values.len() < numel as usize {
        // Box-Muller: two uniforms in (0, 1] give two independent standard normals.
        let u1: f64 = 1.0 - rng.random::<f64>();
        let u2: f64 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt() * std;
        let theta = 2.0 * std::f64::consts::PI * u2;
        values.push((r * theta.cos()) as f32);
        values.push((r * theta.sin()) as f32);
    }
    values.truncate(numel as usize);
    Tensor::from_slice(&values).view(shape)
}

/// `shape` values from U(-bound, bound) on the stream of `(seed, name)`.
pub(crate) fn uniform(seed: u64, name: &str, shape: &[i64], bound: f64) -> Tensor {
    use rand::{Rng, SeedableRng};
    let numel: i64 = shape.iter().product();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(fnv1a(name));
    let values: Vec<f32> = (0..numel)
        .map(|_| ((rng.random::<f64>() * 2.0 - 1.0) * bound) as f32)
        .collect();
    Tensor::from_slice(&values).view(shape)
}

fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn shards(index: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(index).map_err(|e| PolicyError::missing(index, e))?;
    let value: Value = serde_json::from_str(&text).map_err(|e| PolicyError::Config {
        path: index.to_path_buf(),
        message: e.to_string(),
    })?;
    let map = value
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| PolicyError::Config {
            path: index.to_path_buf(),
            message: "field `weight_map`: missing or not an object".into(),
        })?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut files: Vec<PathBuf> = Vec::new();
    for (name, file) in map {
        let file = file.as_str().ok_or_else(|| PolicyError::Config {
            path: index.to_path_buf(),
            message: format!("field `weight_map.{name}`: expected a file name"),
        })?;
        let path = dir.join(file);
        if !files.contains(&path) {
            files.push(path);
        }
    }
    Ok(files)
}

/// Writes `tensors` (HF name → tensor) as one safetensors file in `kind`, with the
/// `{"format": "pt"}` metadata transformers expects. Written to a temporary name and renamed.
pub fn write(path: &Path, tensors: &[(String, Tensor)], kind: Kind) -> Result<()> {
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let bytes = serialize(tensors, Some(kind), metadata)?;
    let tmp = tmp_name(path);
    std::fs::write(&tmp, bytes).map_err(|e| PolicyError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| PolicyError::io(path, e))
}

/// `tensors` as the bytes of a safetensors file with `metadata`, each tensor in `kind` (or in
/// its own dtype: `None`, which keeps the bits exactly).
pub fn serialize(
    tensors: &[(String, Tensor)],
    kind: Option<Kind>,
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>> {
    let mut chunks = serialize_chunks(tensors, kind, metadata, usize::MAX)?;
    Ok(chunks.pop().unwrap_or_default())
}

/// [`serialize`], cut into consecutive pieces of at most `chunk` bytes as it is written: each
/// tensor's bytes are copied once, from the tensor into the pieces (what a cluster run sends
/// a policy version in). Tensors are laid out as the safetensors crate does (by dtype, then
/// name).
pub fn serialize_chunks(
    tensors: &[(String, Tensor)],
    kind: Option<Kind>,
    metadata: HashMap<String, String>,
    chunk: usize,
) -> Result<Vec<Vec<u8>>> {
    let mut prepared = Vec::with_capacity(tensors.len());
    for (name, tensor) in tensors {
        let kind = kind.unwrap_or(tensor.kind());
        let dtype = match kind {
            Kind::Float => Dtype::F32,
            Kind::BFloat16 => Dtype::BF16,
            Kind::Half => Dtype::F16,
            other => {
                return Err(PolicyError::Invalid(format!(
                    "tensor `{name}`: cannot save weights as {other:?}"
                )));
            }
        };
        let flat = tensor
            .detach()
            .to_device(Device::Cpu)
            .to_kind(kind)
            .contiguous()
            .reshape([-1]);
        let shape: Vec<usize> = tensor.size().iter().map(|&d| d as usize).collect();
        prepared.push((name.as_str(), dtype, shape, flat));
    }
    prepared.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let mut offset = 0;
    let mut infos = Vec::with_capacity(prepared.len());
    for (name, dtype, shape, flat) in &prepared {
        let bytes = flat.numel() * (dtype.bitsize() / 8);
        infos.push((
            name.to_string(),
            safetensors::tensor::TensorInfo {
                dtype: *dtype,
                shape: shape.clone(),
                data_offsets: (offset, offset + bytes),
            },
        ));
        offset += bytes;
    }
    let bad = |e: &dyn std::fmt::Display| PolicyError::Invalid(format!("serializing weights: {e}"));
    let header = safetensors::tensor::Metadata::new(Some(metadata), infos).map_err(|e| bad(&e))?;
    let mut header = serde_json::to_vec(&header).map_err(|e| bad(&e))?;
    // The data starts 8-byte aligned, as the safetensors crate writes it.
    header.resize(header.len().next_multiple_of(8), b' ');
    let total = 8 + header.len() + offset;
    let mut out = Chunks::new(chunk.max(8), total);
    out.write(&(header.len() as u64).to_le_bytes());
    out.write(&header);
    for (_, dtype, _, flat) in &prepared {
        out.write_tensor(flat, dtype.bitsize() / 8)?;
    }
    Ok(out.done)
}

/// Consecutive byte pieces of at most `size` bytes, of a stream of `total` bytes.
struct Chunks {
    size: usize,
    left: usize,
    done: Vec<Vec<u8>>,
}

impl Chunks {
    fn new(size: usize, total: usize) -> Chunks {
        Chunks {
            size,
            left: total,
            done: Vec::new(),
        }
    }

    /// The piece being filled, with room for at least `at_least` bytes.
    fn current(&mut self, at_least: usize) -> &mut Vec<u8> {
        let full = self
            .done
            .last()
            .is_none_or(|c| c.len() + at_least > self.size);
        if full {
            let capacity = self.size.min(self.left);
            self.done.push(Vec::with_capacity(capacity));
        }
        self.done.last_mut().expect("just pushed")
    }

    fn write(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let size = self.size;
            let current = self.current(1);
            let n = (size - current.len()).min(bytes.len());
            current.extend_from_slice(&bytes[..n]);
            self.left -= n;
            bytes = &bytes[n..];
        }
    }

    /// Copies `flat`'s elements (of `elt` bytes) straight from the tensor, a piece at a time;
    /// a piece ends early rather than split an element.
    fn write_tensor(&mut self, flat: &Tensor, elt: usize) -> Result<()> {
        let numel = flat.numel();
        let mut done = 0;
        while done < numel {
            let size = self.size;
            let current = self.current(elt);
            let n = ((size - current.len()) / elt).min(numel - done);
            let start = current.len();
            current.resize(start + n * elt, 0);
            flat.narrow(0, done as i64, n as i64)
                .f_copy_data_u8(&mut current[start..], n)?;
            self.left -= n * elt;
            done += n;
        }
        Ok(())
    }
}

/// The tensors (CPU, stored dtype) and metadata of the pieces [`serialize_chunks`] made (or of
/// one piece: the bytes [`serialize`] made), without joining them first: each
/// tensor is made from the piece that holds it (or, when it spans pieces, from their bytes
/// joined). `what` names the bytes in errors.
pub fn deserialize_chunks(
    chunks: &[&[u8]],
    what: &str,
) -> Result<(BTreeMap<String, Tensor>, HashMap<String, String>)> {
    let bad = |message: String| PolicyError::Invalid(format!("{what}: {message}"));
    // Where each piece starts in the whole.
    let mut starts = Vec::with_capacity(chunks.len());
    let mut total = 0usize;
    for chunk in chunks {
        starts.push(total);
        total += chunk.len();
    }
    // The pieces of bytes [from, to) of the whole.
    let pieces = |from: usize, to: usize| -> Vec<&[u8]> {
        let first = starts.partition_point(|&s| s <= from).saturating_sub(1);
        let mut out = Vec::new();
        for (chunk, &start) in chunks.iter().zip(&starts).skip(first) {
            if start >= to {
                break;
            }
            let a = from.saturating_sub(start).min(chunk.len());
            let b = (to - start).min(chunk.len());
            if a < b {
                out.push(&chunk[a..b]);
            }
        }
        out
    };
    let joined = |from: usize, to: usize| -> Vec<u8> { pieces(from, to).concat() };
    if total < 8 {
        return Err(bad("shorter than a safetensors header".into()));
    }
    let n = u64::from_le_bytes(joined(0, 8).try_into().expect("8 bytes")) as usize;
    if n > 100_000_000 || 8 + n > total {
        return Err(bad(format!("not safetensors (a header of {n} bytes)")));
    }
    let header: safetensors::tensor::Metadata =
        serde_json::from_slice(&joined(8, 8 + n)).map_err(|e| bad(e.to_string()))?;
    let data = 8 + n;
    let mut out = BTreeMap::new();
    for (name, info) in header.tensors() {
        let kind = match info.dtype {
            Dtype::F32 => Kind::Float,
            Dtype::BF16 => Kind::BFloat16,
            Dtype::F16 => Kind::Half,
            other => return Err(bad(format!("tensor `{name}` has dtype {other:?}"))),
        };
        let shape: Vec<i64> = info.shape.iter().map(|&d| d as i64).collect();
        let (from, to) = (data + info.data_offsets.0, data + info.data_offsets.1);
        if to > total
            || to - from != info.shape.iter().product::<usize>() * (info.dtype.bitsize() / 8)
        {
            return Err(bad(format!(
                "tensor `{name}`: data_offsets do not fit its shape"
            )));
        }
        let tensor = match pieces(from, to).as_slice() {
            [one] => Tensor::f_from_data_size(one, &shape, kind)?,
            many => Tensor::f_from_data_size(&many.concat(), &shape, kind)?,
        };
        out.insert(name.clone(), tensor);
    }
    Ok((out, header.metadata().clone().unwrap_or_default()))
}

/// Reads one safetensors file into name → tensor (CPU, stored dtype).
///
/// Tensor by tensor from the file: the header first, then each tensor's bytes straight into a
/// buffer that becomes the tensor, so loading never holds the file twice (peak memory is the
/// model plus its largest tensor, not twice the model).
pub fn read_file(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    use std::io::{Read, Seek, SeekFrom};
    let bad = |message: String| PolicyError::Config {
        path: path.to_path_buf(),
        message,
    };
    let mut file = std::fs::File::open(path).map_err(|e| PolicyError::missing(path, e))?;
    let file_len = file
        .metadata()
        .map_err(|e| PolicyError::missing(path, e))?
        .len();
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .map_err(|e| PolicyError::missing(path, e))?;
    let header_len = u64::from_le_bytes(len);
    if header_len > 100_000_000 || 8 + header_len > file_len {
        return Err(bad(format!(
            "not a safetensors file (header of {header_len} bytes)"
        )));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header)
        .map_err(|e| PolicyError::missing(path, e))?;
    let header: BTreeMap<String, Value> =
        serde_json::from_slice(&header).map_err(|e| bad(format!("safetensors header: {e}")))?;
    let mut entries = Vec::new();
    for (name, info) in header.into_iter().filter(|(n, _)| n != "__metadata__") {
        let tensor_error = |message: String| PolicyError::Tensor {
            path: path.to_path_buf(),
            name: name.clone(),
            message,
        };
        let dtype = info
            .get("dtype")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let kind = match dtype {
            "F32" => Kind::Float,
            "BF16" => Kind::BFloat16,
            "F16" => Kind::Half,
            "I64" => Kind::Int64,
            other => {
                return Err(tensor_error(format!(
                    "dtype `{other}` is not supported (F32, BF16, F16)"
                )));
            }
        };
        let shape: Vec<i64> = info
            .get("shape")
            .and_then(Value::as_array)
            .map(|dims| dims.iter().filter_map(Value::as_i64).collect())
            .ok_or_else(|| tensor_error("no shape".into()))?;
        let offsets: Vec<u64> = info
            .get("data_offsets")
            .and_then(Value::as_array)
            .map(|o| o.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        let [start, end] = offsets[..] else {
            return Err(tensor_error("no data_offsets".into()));
        };
        let bytes = shape.iter().product::<i64>().max(0) as u64 * kind.elt_size_in_bytes() as u64;
        if end < start || end - start != bytes || 8 + header_len + end > file_len {
            return Err(tensor_error(format!(
                "data_offsets [{start}, {end}] do not hold a {dtype} tensor of shape {shape:?}"
            )));
        }
        entries.push((start, name, shape, kind, bytes));
    }
    // In file order, so the disk reads sequentially.
    entries.sort_by_key(|e| e.0);
    let mut out = BTreeMap::new();
    let mut buffer = Vec::new();
    for (start, name, shape, kind, bytes) in entries {
        buffer.resize(bytes as usize, 0);
        file.seek(SeekFrom::Start(8 + header_len + start))
            .and_then(|_| file.read_exact(&mut buffer))
            .map_err(|e| PolicyError::missing(path, e))?;
        out.insert(name, Tensor::f_from_data_size(&buffer, &shape, kind)?);
    }
    Ok(out)
}

/// A sibling name for writing `path` before renaming it into place.
pub fn tmp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Tensors of mixed dtypes and shapes (one of them empty), seeded.
    fn tensors(seed: i64) -> Vec<(String, Tensor)> {
        tch::manual_seed(seed);
        vec![
            (
                "b.weight".into(),
                Tensor::randn([7, 5], (Kind::Float, Device::Cpu)),
            ),
            (
                "a.bias".into(),
                Tensor::randn([13], (Kind::BFloat16, Device::Cpu)),
            ),
            (
                "c.empty".into(),
                Tensor::zeros([0, 3], (Kind::Float, Device::Cpu)),
            ),
            (
                "d.half".into(),
                Tensor::randn([3, 3, 2], (Kind::Half, Device::Cpu)),
            ),
        ]
    }

    fn same(a: &Tensor, b: &Tensor) -> bool {
        a.size() == b.size() && a.kind() == b.kind() && a.equal(b)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Cut anywhere, the pieces are the whole file's bytes in order, and reading them
        /// piece by piece (also re-cut at other places) gives back every tensor bit for bit.
        #[test]
        fn pieces_are_the_file_and_read_back_exactly(
            seed in 0i64..1000,
            chunk in 8usize..200,
            recut in 1usize..97,
        ) {
            let tensors = tensors(seed);
            let metadata = HashMap::from([("k".to_owned(), "v".to_owned())]);
            let whole = serialize(&tensors, None, metadata.clone()).unwrap();
            let chunks = serialize_chunks(&tensors, None, metadata.clone(), chunk).unwrap();
            prop_assert!(chunks.iter().all(|c| c.len() <= chunk && !c.is_empty()));
            prop_assert_eq!(chunks.concat(), whole.clone());
            // The safetensors crate reads what we wrote.
            let file = safetensors::SafeTensors::deserialize(&whole).unwrap();
            prop_assert_eq!(file.len(), tensors.len());
            let recut: Vec<&[u8]> = whole.chunks(recut).collect();
            for pieces in [chunks.iter().map(Vec::as_slice).collect::<Vec<_>>(), recut] {
                let (read, meta) = deserialize_chunks(&pieces, "test").unwrap();
                prop_assert_eq!(&meta, &metadata);
                for (name, tensor) in &tensors {
                    prop_assert!(same(&read[name], tensor), "{}", name);
                }
            }
        }
    }

    #[test]
    fn truncated_pieces_are_refused_with_what_they_are() {
        let tensors = tensors(1);
        let whole = serialize(&tensors, None, HashMap::new()).unwrap();
        let err = deserialize_chunks(&[&whole[..whole.len() - 4]], "published weights")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("published weights: tensor `"), "{err}");
        let err = deserialize_chunks(&[&whole[..5]], "w")
            .unwrap_err()
            .to_string();
        assert!(err.contains("shorter than a safetensors header"), "{err}");
    }
}
