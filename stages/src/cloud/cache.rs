//! The persistent answer cache: one JSON file per request hash, written to a temporary name and
//! renamed, so runs (and workers) can share a directory and a crash never leaves half a file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A cached answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CachedAnswer {
    /// The request hash (the file's name).
    pub request_hash: String,
    /// The model that answered.
    pub model: String,
    /// The answer text.
    pub answer: String,
    /// Separate reasoning text, for servers that return it.
    pub reasoning: Option<String>,
    /// Prompt tokens the original call was billed.
    pub tokens_in: u64,
    /// Completion tokens the original call was billed.
    pub tokens_out: u64,
}

/// A cache directory.
#[derive(Clone, Debug)]
pub struct DiskCache {
    dir: PathBuf,
}

impl DiskCache {
    /// The cache in `dir` (created on first write).
    pub fn new(dir: PathBuf) -> DiskCache {
        DiskCache { dir }
    }

    fn path(&self, hash: &str) -> PathBuf {
        let shard = hash.get(..2).unwrap_or("00");
        self.dir.join(shard).join(format!("{hash}.json"))
    }

    /// The cached answer of `hash`. An unreadable or foreign file counts as absent (and is
    /// overwritten by the next answer), so a damaged cache costs a call, never the run.
    pub fn get(&self, hash: &str) -> Option<CachedAnswer> {
        let text = std::fs::read_to_string(self.path(hash)).ok()?;
        let answer: CachedAnswer = serde_json::from_str(&text).ok()?;
        (answer.request_hash == hash).then_some(answer)
    }

    /// Stores an answer.
    pub fn put(&self, answer: &CachedAnswer) -> std::io::Result<()> {
        let path = self.path(&answer.request_hash);
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        serde_json::to_writer(&mut tmp, answer)?;
        tmp.persist(&path).map_err(|e| e.error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_survive_and_damage_reads_as_absent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = DiskCache::new(dir.path().join("cache"));
        let answer = CachedAnswer {
            request_hash: "ab12".into(),
            model: "m".into(),
            answer: "<answer>4</answer>".into(),
            reasoning: None,
            tokens_in: 10,
            tokens_out: 5,
        };
        assert_eq!(cache.get("ab12"), None);
        cache.put(&answer).expect("put");
        assert_eq!(
            DiskCache::new(dir.path().join("cache")).get("ab12"),
            Some(answer)
        );
        std::fs::write(dir.path().join("cache/ab/ab12.json"), "{trunc").expect("damage");
        assert_eq!(cache.get("ab12"), None);
    }
}
