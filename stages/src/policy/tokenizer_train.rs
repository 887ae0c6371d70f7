//! Training a byte-level BPE tokenizer from a corpus, written as a Qwen2-style tokenizer
//! directory (`tokenizer.json` + `tokenizer_config.json` with a ChatML template) that
//! [`Tokenizer::from_dir`](super::Tokenizer::from_dir) and `tandem model init` read.
//!
//! The pre-tokenizer is Qwen2's: its regex (which isolates every digit, so numbers are spelled
//! digit by digit and arithmetic stays learnable), then byte-level mapping. Unlike Qwen2 there
//! is no NFC normalizer, so `decode(encode(text)) == text` for every string: verifiers compare
//! model output byte for byte.

use std::path::Path;

use serde_json::{Map, Value, json};
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::PostProcessorWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior, TokenizerBuilder, TokenizerImpl};

use super::{PolicyError, Result};

/// Qwen2's pre-tokenization regex: contractions, letter runs, single digits, punctuation runs,
/// newlines and spaces.
pub const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The special tokens, in id order after the learned vocabulary: padding, then ChatML's turn
/// delimiters (`<|im_end|>` ends generation).
pub const SPECIAL_TOKENS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// ChatML: every message as `<|im_start|>role\ncontent<|im_end|>\n` (a system message only if
/// given), and `<|im_start|>assistant\n` to prompt a reply.
pub const CHATML_TEMPLATE: &str = "{%- for message in messages %}\
{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}\
{%- endfor %}\
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";

/// How to train a tokenizer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenizerTrainOptions {
    /// Tokens in all, special tokens included: 256 bytes + merges + 3 specials. A corpus with
    /// fewer mergeable pairs gives fewer.
    pub vocab_size: usize,
    /// A pair must occur this often in the corpus to be merged.
    pub min_frequency: u64,
}

impl Default for TokenizerTrainOptions {
    fn default() -> Self {
        TokenizerTrainOptions {
            vocab_size: 512,
            min_frequency: 2,
        }
    }
}

/// The smallest vocabulary: the 256 byte tokens and the special tokens.
pub const MIN_VOCAB_SIZE: usize = 256 + SPECIAL_TOKENS.len();

type Bpe = TokenizerImpl<
    BPE,
    NormalizerWrapper,
    PreTokenizerWrapper,
    PostProcessorWrapper,
    DecoderWrapper,
>;

/// Trains a byte-level BPE tokenizer on `texts` and writes `tokenizer.json` and
/// `tokenizer_config.json` into `out` (created if needed). The same texts and options give
/// byte-identical files.
pub fn train_tokenizer(
    texts: &[String],
    options: &TokenizerTrainOptions,
    out: &Path,
) -> Result<()> {
    if options.vocab_size < MIN_VOCAB_SIZE {
        return Err(PolicyError::Invalid(format!(
            "vocab size {} is below {MIN_VOCAB_SIZE} (256 bytes and {} special tokens)",
            options.vocab_size,
            SPECIAL_TOKENS.len()
        )));
    }
    let tokenizer_error = |e: &dyn std::fmt::Display| PolicyError::Tokenizer {
        path: out.join("tokenizer.json"),
        message: e.to_string(),
    };
    let split = Split::new(
        SplitPattern::Regex(QWEN2_PATTERN.to_owned()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(|e| tokenizer_error(&e))?;
    let byte_level = ByteLevel::new(false, false, false);
    let pre_tokenizer = Sequence::new(vec![split.into(), byte_level.into()]);
    let mut tokenizer: Bpe = TokenizerBuilder::new()
        .with_model(BPE::default())
        .with_normalizer(None)
        .with_pre_tokenizer(Some(pre_tokenizer.into()))
        .with_post_processor(Some(byte_level.into()))
        .with_decoder(Some(ByteLevel::default().into()))
        .build()
        .map_err(|e| tokenizer_error(&e))?;
    // Specials are added after training so they sit after the learned tokens, as in Qwen2.
    let mut trainer = BpeTrainerBuilder::new()
        .vocab_size(options.vocab_size - SPECIAL_TOKENS.len())
        .min_frequency(options.min_frequency)
        .show_progress(false)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    tokenizer
        .train(&mut trainer, texts.iter())
        .map_err(|e| tokenizer_error(&e))?;
    let specials: Vec<AddedToken> = SPECIAL_TOKENS
        .iter()
        .map(|t| AddedToken::from(*t, true))
        .collect();
    tokenizer.add_special_tokens(&specials);

    std::fs::create_dir_all(out).map_err(|e| PolicyError::io(out, e))?;
    let json = tokenizer.to_string(true).map_err(|e| tokenizer_error(&e))?;
    let path = out.join("tokenizer.json");
    std::fs::write(&path, json + "\n").map_err(|e| PolicyError::io(&path, e))?;

    let mut added = Map::new();
    for token in SPECIAL_TOKENS {
        let id = tokenizer
            .token_to_id(token)
            .expect("special tokens were just added");
        added.insert(
            id.to_string(),
            json!({"content": token, "lstrip": false, "normalized": false, "rstrip": false,
                   "single_word": false, "special": true}),
        );
    }
    let config = json!({
        "tokenizer_class": "Qwen2TokenizerFast",
        "added_tokens_decoder": Value::Object(added),
        "bos_token": null,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": null,
        "chat_template": CHATML_TEMPLATE,
        "clean_up_tokenization_spaces": false,
        "split_special_tokens": false,
    });
    let path = out.join("tokenizer_config.json");
    let text = serde_json::to_string_pretty(&config).expect("a JSON value serializes");
    std::fs::write(&path, text + "\n").map_err(|e| PolicyError::io(&path, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::policy::{ChatMessage, Tokenizer};

    fn corpus() -> Vec<String> {
        let mut texts = Vec::new();
        for i in 0..200u32 {
            let (a, b) = (i * 37 % 1000, i * 91 % 1000);
            texts.push(format!("What is {a} + {b}?"));
            texts.push(format!(
                "<think>{a} + {b} = {}</think> <answer>{}</answer>",
                a + b,
                a + b
            ));
        }
        texts.push("<unknown> I need external assistance </unknown>".into());
        texts
    }

    fn trained(vocab_size: usize) -> (tempfile::TempDir, Tokenizer) {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = TokenizerTrainOptions {
            vocab_size,
            ..TokenizerTrainOptions::default()
        };
        train_tokenizer(&corpus(), &options, dir.path()).expect("trains");
        let tokenizer = Tokenizer::from_dir(dir.path()).expect("loads");
        (dir, tokenizer)
    }

    #[test]
    fn loads_with_the_vocab_size_asked_and_im_end_as_eos() {
        // The corpus allows about 24 merges; 275 needs 16 of them.
        let (_dir, tokenizer) = trained(275);
        assert_eq!(tokenizer.vocab_size(), 275);
        let im_end = tokenizer.encode("<|im_end|>", false).expect("encodes");
        assert_eq!(im_end, [274]);
        assert_eq!(tokenizer.eos_token_ids(), [274]);
        assert_eq!(tokenizer.pad_token_id(), 272);
    }

    #[test]
    fn a_small_corpus_stops_at_the_largest_reachable_size() {
        let (_dir, tokenizer) = trained(100_000);
        let size = tokenizer.vocab_size();
        assert!(size > MIN_VOCAB_SIZE && size < 2000, "{size}");
    }

    #[test]
    fn too_small_a_vocabulary_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = TokenizerTrainOptions {
            vocab_size: 200,
            ..TokenizerTrainOptions::default()
        };
        let err = train_tokenizer(&corpus(), &options, dir.path()).expect_err("too small");
        assert_eq!(
            err.to_string(),
            "vocab size 200 is below 259 (256 bytes and 3 special tokens)"
        );
    }

    #[test]
    fn digits_are_single_tokens_and_corpus_lines_round_trip() {
        let (_dir, tokenizer) = trained(400);
        for text in corpus() {
            let ids = tokenizer.encode(&text, false).expect("encodes");
            assert_eq!(tokenizer.decode(&ids, false).expect("decodes"), text);
        }
        let ids = tokenizer.encode("1234567890", false).expect("encodes");
        assert_eq!(ids.len(), 10);
        let ids = tokenizer.encode("What is 12?", false).expect("encodes");
        let pieces: Vec<String> = ids
            .iter()
            .map(|&id| tokenizer.decode(&[id], false).expect("decodes"))
            .collect();
        assert!(
            pieces.ends_with(&["1".into(), "2".into(), "?".into()]),
            "{pieces:?}"
        );
    }

    #[test]
    fn chatml_renders_system_user_and_the_generation_prompt() {
        let (_dir, tokenizer) = trained(300);
        let messages = [
            ChatMessage {
                role: "system".into(),
                content: "Be brief.".into(),
            },
            ChatMessage::user("What is 2 + 3?"),
        ];
        assert_eq!(
            tokenizer
                .apply_chat_template(&messages, true)
                .expect("renders"),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n\
             <|im_start|>assistant\n"
        );
        assert_eq!(
            tokenizer
                .apply_chat_template(&messages[1..], false)
                .expect("renders"),
            "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n"
        );
    }

    #[test]
    fn training_twice_gives_byte_identical_files() {
        let options = TokenizerTrainOptions::default();
        let (a, b) = (
            tempfile::tempdir().expect("a"),
            tempfile::tempdir().expect("b"),
        );
        train_tokenizer(&corpus(), &options, a.path()).expect("trains");
        train_tokenizer(&corpus(), &options, b.path()).expect("trains");
        for file in ["tokenizer.json", "tokenizer_config.json"] {
            let read = |dir: &tempfile::TempDir| std::fs::read(dir.path().join(file)).expect(file);
            assert!(read(&a) == read(&b), "{file} differs between two trainings");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_text_round_trips(text in any::<String>()) {
            static DIR: std::sync::OnceLock<(tempfile::TempDir, Tokenizer)> =
                std::sync::OnceLock::new();
            let (_, tokenizer) = DIR.get_or_init(|| trained(300));
            let ids = tokenizer.encode(&text, false).expect("encodes");
            prop_assert_eq!(tokenizer.decode(&ids, false).expect("decodes"), text);
        }
    }
}
