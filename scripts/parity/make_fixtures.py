#!/usr/bin/env python3
"""Reference fixtures for tandem's Qwen2 / Llama policy engine (HF transformers parity).

    python scripts/parity/make_fixtures.py generate [--root REPO_ROOT]
    python scripts/parity/make_fixtures.py check MODEL_DIR OUT.json
    python scripts/parity/make_fixtures.py lora [--tandem target/debug/tandem]

`generate` builds two tiny byte-level BPE tokenizers and two tiny random models and writes

    tests/fixtures/models/qwen2-tiny/   Qwen2ForCausalLM, f32, tied embeddings, single model.safetensors
    tests/fixtures/models/llama-tiny/   LlamaForCausalLM, bf16, untied, llama3 rope scaling, 2+ shards
    tests/fixtures/parity/<name>.json   tokenizer / chat template / logits / logprobs / greedy references

`check` loads any HF checkpoint directory (e.g. one written by tandem), fails on any missing /
unexpected / mismatched keys, and writes the same JSON shape for fixed, tokenizer-independent ids.

What transformers 5.23.0 writes (found while writing this script; the Rust loader must accept both
the new and the legacy spellings because real checkpoints on the Hub use the legacy ones):

* config.json: rope settings are written as a nested `rope_parameters` object, never as top-level
  `rope_theta` / `rope_scaling`:
      qwen2: "rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"}
      llama: "rope_parameters": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                                 "original_max_position_embeddings": 64, "rope_theta": 500000.0,
                                 "rope_type": "llama3"}
  Older checkpoints (Qwen2.5, Llama 3.x on the Hub) use top-level "rope_theta" plus
  "rope_scaling": {"rope_type"|"type": "llama3", "factor": ..., ...} (or null).
* config.json: the dtype key is "dtype" (transformers 4.x wrote "torch_dtype").
  qwen2 also gets "layer_types": ["full_attention", ...], "use_sliding_window": false,
  "sliding_window": null, "max_window_layers".
* Tied embeddings: `lm_head.weight` is NOT stored in model.safetensors when tie_word_embeddings=True
  (only model.embed_tokens.weight); the loader must alias it.
* The tokenizer's chat template is saved to a separate `chat_template.jinja` file by default
  (save_jinja_files=True).  For qwen2-tiny we save with save_jinja_files=False so the template is
  inlined in tokenizer_config.json["chat_template"] (as in Qwen2.5 repos); llama-tiny keeps the
  default `chat_template.jinja` file (as in newer repos).  A loader must read both.
* tokenizer_config.json as written by 5.23 has "tokenizer_class": "TokenizersBackend", a "backend"
  key and no "added_tokens_decoder" (the added tokens live only in tokenizer.json).  We rewrite it in
  the Hub shape (concrete class, explicit added_tokens_decoder); 5.23 loads either.
* AutoTokenizer picks the class from config.json's model_type: for qwen2 it builds Qwen2Tokenizer,
  which re-creates the normalizer (NFC) and pre-tokenizer (Qwen regex) in Python rather than taking
  them from tokenizer.json; llama gets the generic TokenizersBackend (tokenizer.json as is).  Every id
  list below is therefore cross-checked against tokenizers.Tokenizer.from_file("tokenizer.json"),
  which is what the Rust `tokenizers` crate runs.
* from_pretrained(torch_dtype=...) still works but warns; the 5.x name is dtype=.  The default
  attention implementation is sdpa; the default tokenizer padding_side is "right".
* HF renders chat templates with jinja2 ImmutableSandboxedEnvironment(trim_blocks=True,
  lstrip_blocks=True, extensions=[loopcontrols]); `tojson` is overridden to
  json.dumps(x, ensure_ascii=False) (", " / ": " separators, key order preserved, no HTML escaping);
  globals raise_exception, strftime_now, namespace.

Everything is seeded; re-running with the pinned versions reproduces the files bit-for-bit (the
script asserts that BPE training is deterministic by training twice).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

import transformers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

torch.set_num_threads(2)
transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
try:
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()
except ImportError:  # pragma: no cover
    pass

SEED = 1234
REPO_ROOT = Path(__file__).resolve().parents[2]
BPE_VOCAB = 400  # including the 256-symbol byte alphabet; special tokens are appended after it

# ---------------------------------------------------------------------------------------------
# Training corpus (written for this project; English prose + arithmetic + answer tags).
# ---------------------------------------------------------------------------------------------

CORPUS = r"""
The tandem engine reads a prompt, writes an answer, and checks the answer against a rule.
A policy is a model that picks the next token. The reference model stays frozen while the policy learns.
When the question is easy, the policy should answer quickly. When the question is hard, it may think first.
Question: What is 12 + 30? Let me add the tens and the ones. <answer>42</answer>
Question: What is 7 * 8? Seven times eight is fifty six. <answer>56</answer>
Question: What is 100 - 37? One hundred minus thirty seven leaves sixty three. <answer>63</answer>
Question: What is 144 / 12? Twelve twelves make one hundred forty four. <answer>12</answer>
Question: What is 3 + 4 * 5? Multiply first: 4 * 5 = 20, then 3 + 20 = 23. <answer>23</answer>
Question: What is (2 + 3) * (4 + 5)? The sums are 5 and 9, and 5 * 9 = 45. <answer>45</answer>
Question: What is 2^10? Doubling ten times gives 1024. <answer>1024</answer>
Question: What is 0.5 + 0.25? Half plus a quarter is 0.75. <answer>0.75</answer>
Question: What is -8 + 15? Start at minus eight and move fifteen steps up. <answer>7</answer>
Question: Who won the match on Tuesday? I do not have that information. <unknown>not enough data</unknown>
Question: What colour is the number nine? Numbers do not have colours. <unknown>undefined</unknown>
Question: How many grains of sand are on the beach? Nobody has counted them. <unknown>too many to count</unknown>
Question: Solve x + 5 = 12. Subtract five from both sides: x = 7. <answer>x = 7</answer>
Question: Solve 3x = 21. Divide both sides by three: x = 7. <answer>x = 7</answer>
Question: Solve 2x - 4 = 10. Add four, then halve: x = 7. <answer>x = 7</answer>
Question: Is 97 a prime number? It has no divisor between 2 and 9, so yes. <answer>yes</answer>
Question: Is 91 a prime number? No, because 91 = 7 * 13. <answer>no</answer>
Question: What is the sum of 1, 2, 3, 4 and 5? The sum is 15. <answer>15</answer>
Question: What is 25% of 80? A quarter of eighty is twenty. <answer>20</answer>
Question: What is 9 squared? 9 * 9 = 81. <answer>81</answer>
Question: What is the square root of 169? 13 * 13 = 169. <answer>13</answer>
Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 30 40 50 60 70 80 90 100
Numbers: 128 256 512 1000 2048 4096 65536 1000000 3.14159 2.71828 1.41421 -1 -10 -100 1e6 5e-4
Expressions: a + b = c, a - b = d, a * b = e, a / b = f, (a + b) * c = a * c + b * c.
Expressions: 1 + 1 = 2; 2 + 2 = 4; 4 + 4 = 8; 8 + 8 = 16; 16 + 16 = 32; 32 + 32 = 64.
Expressions: 10 - 1 = 9; 10 - 2 = 8; 10 - 3 = 7; 10 * 10 = 100; 100 / 4 = 25; 81 / 9 = 9.
The reward is one when the answer matches, and zero when it does not.
The learner collects rollouts, computes the advantage of each sample, and updates the weights.
Each group of samples shares a prompt, so the baseline is the mean reward of the group.
If the answer is missing, the reward is zero and the sample still counts toward the group mean.
The engine keeps a cache of keys and values so that each new token costs only one step.
Padding goes on the left so that every sequence ends at the same position in the batch.
Tokens are bytes first; frequent pairs of bytes are merged into longer pieces.
The café on the corner serves crème brûlée and naïve jokes; the façade is old.
Straße, Ångström, São Paulo, Zürich, Kraków, and Málaga are names with accents.
Arrows and symbols: → ← ≤ ≥ ≠ × ÷ ± √ ∞ π ° € £ ¥ and the em dash — used in text.
  Indented lines keep their spaces,
    and tabs	separate	columns	in	tables.
Line one
Line two

Line four after a blank line.
"It's fine," she said. "We'll see," he replied. They're sure it'd work; I'm not.
def add(a, b):
    return a + b
print(add(2, 3))  # prints 5
{"question": "What is 6 * 7?", "answer": 42, "correct": true}
"""


def corpus_lines() -> list[str]:
    lines = [line for line in CORPUS.split("\n") if line.strip()]
    # Repeat the arithmetic part with generated facts so numbers and operators get merged.
    rng = random.Random(SEED)
    for _ in range(120):
        a, b = rng.randint(0, 99), rng.randint(1, 99)
        op = rng.choice(["+", "-", "*"])
        value = {"+": a + b, "-": a - b, "*": a * b}[op]
        lines.append(f"Question: What is {a} {op} {b}? <answer>{value}</answer>")
    return lines


# ---------------------------------------------------------------------------------------------
# Tokenizers
# ---------------------------------------------------------------------------------------------

# Pre-tokenisation regexes in the style of Qwen2 (single digits) and Llama 3 (digit runs of 1-3).
QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
LLAMA_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
LLAMA_SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|finetune_right_pad_id|>",
]

# ChatML-style template written for this project (not copied from any model repository).
QWEN_CHAT_TEMPLATE = r"""{%- set ns = namespace(system='You are a small test assistant. Put the final result in <answer></answer> tags.', first=0) %}
{%- if messages and messages[0].role == 'system' %}
    {%- set ns.system = messages[0].content.strip() %}
    {%- set ns.first = 1 %}
{%- endif %}
{{- '<|im_start|>system\n' + ns.system }}
{%- if tools %}
    {{- '\n\n## Functions\nYou can call these functions, one JSON schema per line:\n' }}
    {%- for tool in tools %}
        {{- (tool | tojson) + '\n' }}
    {%- endfor %}
    {{- 'To call one, reply with <call>{"name": ..., "arguments": {...}}</call>.' }}
{%- endif %}
{{- '<|im_end|>\n' }}
{%- for message in messages[ns.first:] %}
    {%- if message.role not in ['user', 'assistant', 'tool'] %}
        {{- raise_exception('Unsupported role in conversation: ' + message.role) }}
    {%- endif %}
    {%- if message.role == 'tool' %}
        {%- if loop.first or messages[ns.first + loop.index0 - 1].role != 'tool' %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<result>\n' + message.content.strip() + '\n</result>' }}
        {%- if loop.last or messages[ns.first + loop.index0 + 1].role != 'tool' %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- elif message.role == 'assistant' %}
        {{- '<|im_start|>assistant\n' }}
        {%- if message.content %}
            {{- message.content.strip() }}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for call in message.tool_calls %}
                {%- if call.function is defined %}
                    {%- set call = call.function %}
                {%- endif %}
                {%- if not loop.first or message.content %}
                    {{- '\n' }}
                {%- endif %}
                {{- '<call>' + ({'name': call.name, 'arguments': call.arguments} | tojson) + '</call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>user\n' + message.content.strip() + '<|im_end|>\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""

# Llama-3-style template written for this project; `date_string` has a default so the output does not
# depend on the clock (no strftime_now).
LLAMA_CHAT_TEMPLATE = r"""{{- bos_token }}
{%- if date_string is not defined %}
    {%- set date_string = "14 Mar 2025" %}
{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_text = messages[0]['content'] | trim %}
    {%- set turns = messages[1:] %}
{%- else %}
    {%- set system_text = "Answer briefly. Put the final result in <answer></answer>." %}
    {%- set turns = messages %}
{%- endif %}
{{- '<|start_header_id|>system<|end_header_id|>\n\n' }}
{{- 'Date: ' + date_string + '\n\n' }}
{{- system_text + '<|eot_id|>' }}
{%- for message in turns %}
    {%- if message['role'] not in ['user', 'assistant'] %}
        {{- raise_exception('Only user and assistant turns may follow the system turn, got ' + message['role']) }}
    {%- endif %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + (message['content'] | trim) + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"""


def train_bpe(split_regex: str, nfc: bool, ignore_merges: bool) -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False, ignore_merges=ignore_merges))
    if nfc:
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(split_regex), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(corpus_lines(), trainer=trainer)
    assert tok.get_vocab_size() == BPE_VOCAB, tok.get_vocab_size()
    return tok


def build_tokenizer(style: str) -> Tokenizer:
    if style == "qwen":
        make = lambda: train_bpe(QWEN_SPLIT, nfc=True, ignore_merges=False)  # noqa: E731
    else:
        make = lambda: train_bpe(LLAMA_SPLIT, nfc=False, ignore_merges=True)  # noqa: E731
    tok = make()
    assert tok.to_str() == make().to_str(), "BPE training is not deterministic"
    specials = QWEN_SPECIALS if style == "qwen" else LLAMA_SPECIALS
    tok.add_special_tokens(
        [AddedToken(s, single_word=False, lstrip=False, rstrip=False, normalized=False, special=True) for s in specials]
    )
    ids = {s: tok.token_to_id(s) for s in specials}
    assert sorted(ids.values()) == list(range(BPE_VOCAB, BPE_VOCAB + len(specials))), ids
    if style == "qwen":
        tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    else:
        bos = "<|begin_of_text|>"
        tok.post_processor = processors.Sequence(
            [
                processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
                processors.TemplateProcessing(
                    single=f"{bos}:0 $A:0",
                    pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
                    special_tokens=[(bos, ids[bos])],
                ),
            ]
        )
    return tok


def wrap_tokenizer(tok: Tokenizer, style: str) -> PreTrainedTokenizerFast:
    common = dict(
        tokenizer_object=tok,
        model_max_length=256,
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
    )
    if style == "qwen":
        return PreTrainedTokenizerFast(
            bos_token=None,
            eos_token="<|im_end|>",
            pad_token="<|endoftext|>",
            unk_token=None,
            chat_template=QWEN_CHAT_TEMPLATE,
            **common,
        )
    return PreTrainedTokenizerFast(
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        pad_token="<|finetune_right_pad_id|>",
        unk_token=None,
        chat_template=LLAMA_CHAT_TEMPLATE,
        **common,
    )


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------


def perturb_(model: torch.nn.Module, seed: int) -> None:
    """HF initialises biases to 0 and RMSNorm weights to 1; make them non-trivial so a loader that
    drops them (or swaps q/k/v biases) cannot pass the parity test."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            elif "norm" in name and name.endswith(".weight"):
                p.copy_(1.0 + torch.randn(p.shape, generator=g) * 0.1)


def round_up(n: int, k: int) -> int:
    return (n + k - 1) // k * k


def make_qwen(vocab_size: int, ids: dict) -> tuple[Qwen2ForCausalLM, GenerationConfig]:
    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        hidden_act="silu",
        max_position_embeddings=256,
        initializer_range=0.2,
        rms_norm_eps=1e-6,
        use_cache=True,
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        use_sliding_window=False,
        attention_dropout=0.0,
        bos_token_id=ids["<|endoftext|>"],  # like Qwen2.5: config names a BOS the tokenizer never adds
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    torch.manual_seed(SEED)
    model = Qwen2ForCausalLM(config).to(torch.float32).eval()
    perturb_(model, SEED + 1)
    gen = GenerationConfig(
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        do_sample=False,
    )
    return model, gen


LLAMA_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    # head_dim 16 -> wavelengths 6.3, 32.3, 167, ...: with 64 the three llama3 branches (keep,
    # smooth interpolation, divide by factor) are all exercised.
    "original_max_position_embeddings": 64,
}


def check_llama3_branches(head_dim: int, rope: dict) -> None:
    inv = 1.0 / (rope["rope_theta"] ** (np.arange(0, head_dim, 2) / head_dim))
    wavelen = 2 * math.pi / inv
    old = rope["original_max_position_embeddings"]
    low, high = old / rope["low_freq_factor"], old / rope["high_freq_factor"]
    kinds = {"keep": (wavelen < high).sum(), "divide": (wavelen > low).sum()}
    kinds["smooth"] = len(wavelen) - kinds["keep"] - kinds["divide"]
    assert all(v > 0 for v in kinds.values()), kinds


def make_llama(vocab_size: int, ids: dict) -> tuple[LlamaForCausalLM, GenerationConfig]:
    eos = [ids["<|eot_id|>"], ids["<|end_of_text|>"]]
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        hidden_act="silu",
        max_position_embeddings=256,
        initializer_range=0.2,
        rms_norm_eps=1e-5,
        use_cache=True,
        tie_word_embeddings=False,
        rope_parameters=dict(LLAMA_ROPE),
        attention_bias=False,
        mlp_bias=False,
        bos_token_id=ids["<|begin_of_text|>"],
        eos_token_id=eos,
        pad_token_id=None,  # like Llama 3: no pad in config.json; generation_config names one
    )
    check_llama3_branches(16, LLAMA_ROPE)
    torch.manual_seed(SEED + 10)
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    perturb_(model, SEED + 11)
    gen = GenerationConfig(
        bos_token_id=ids["<|begin_of_text|>"],
        eos_token_id=eos,
        pad_token_id=ids["<|finetune_right_pad_id|>"],
        do_sample=False,
    )
    return model, gen


# ---------------------------------------------------------------------------------------------
# Reference computations
# ---------------------------------------------------------------------------------------------

TOKENIZE_TEXTS = [
    "Question: What is 12 + 30? <answer>42</answer>",
    "The café in Zürich costs €4.50 — naïve? 😀 ∞ 中文",
    "  leading spaces,\ttabs\tand\n\nnewlines\r\n  trailing   ",
    "Numbers 1234567 and 3.14159, 2^10=1024, -8+15=7, 1e-6",
    "it's THEY'RE we'll I'M   <unknown>not sure</unknown>\n",
    "cafe\u0301 with a combining accent, then <|im_start|> and <|eot_id|> literally",
]


def load_reference(model_dir: Path, attn: str):
    model, info = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation=attn, output_loading_info=True
    )
    bad = {k: v for k, v in info.items() if v}
    if bad:
        raise SystemExit(f"loading {model_dir} reported problems: {bad}")
    model.eval()
    for name, p in model.named_parameters():
        assert p.dtype == torch.float32, (name, p.dtype)
    return model


def eos_and_pad(model, tokenizer) -> tuple[list[int], int]:
    gen = model.generation_config
    eos = gen.eos_token_id if gen.eos_token_id is not None else model.config.eos_token_id
    if eos is None:
        eos = tokenizer.eos_token_id
    eos = [eos] if isinstance(eos, int) else list(eos)
    pad = gen.pad_token_id
    if pad is None:
        pad = model.config.pad_token_id
    if pad is None:
        pad = tokenizer.pad_token_id
    if pad is None:
        pad = eos[0]
    return [int(e) for e in eos], int(pad)


@torch.no_grad()
def full_logits(model, ids: list[int]) -> torch.Tensor:
    out = model(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long))
    return out.logits[0].float()


@torch.no_grad()
def greedy(model, prompt: list[int], n: int, eos: list[int], pad: int) -> tuple[list[int], float]:
    gen = GenerationConfig(
        do_sample=False, max_new_tokens=n, eos_token_id=eos, pad_token_id=pad, use_cache=True,
        output_logits=True, return_dict_in_generate=True,
    )
    out = model.generate(
        torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long), generation_config=gen
    )
    new = out.sequences[0, len(prompt):].tolist()
    margin = min(top2_margin(l[0]) for l in out.logits)
    return new, margin


def top2_margin(row: torch.Tensor) -> float:
    top = torch.topk(row.float(), 2).values
    return float(top[0] - top[1])


def strip_after_eos(ids: list[int], eos: list[int]) -> list[int]:
    for i, t in enumerate(ids):
        if t in eos:
            return ids[: i + 1]
    return ids


@torch.no_grad()
def batched_greedy(model, tokenizer, prompts: list[list[int]], n: int, eos: list[int], pad: int) -> list[list[int]]:
    width = max(map(len, prompts))
    manual = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    if tokenizer.pad_token_id == pad:  # the tokenizer's own left padding must build the same batch
        tokenizer.padding_side = "left"
        batch = tokenizer.pad({"input_ids": prompts}, padding=True, return_tensors="pt")
        assert torch.equal(batch["input_ids"], manual) and torch.equal(batch["attention_mask"], mask)
    gen = GenerationConfig(do_sample=False, max_new_tokens=n, eos_token_id=eos, pad_token_id=pad, use_cache=True)
    out = model.generate(manual, attention_mask=mask, generation_config=gen)
    return [strip_after_eos(row[width:].tolist(), eos) for row in out]


def logprobs_of(model, prompt: list[int], completion: list[int]) -> list[float]:
    logits = full_logits(model, prompt + completion)
    lp = torch.log_softmax(logits.double(), dim=-1)
    return [float(lp[len(prompt) + j - 1, t]) for j, t in enumerate(completion)]


def assert_attn_agree(model_dir: Path, eager, seqs: list[list[int]], prompts: list[list[int]], eos, pad):
    sdpa = load_reference(model_dir, "sdpa")
    worst = 0.0
    for ids in seqs:
        worst = max(worst, float((full_logits(eager, ids) - full_logits(sdpa, ids)).abs().max()))
    assert worst < 1e-4, f"eager vs sdpa logits differ by {worst}"
    for p in prompts:
        assert greedy(eager, p, 16, eos, pad)[0] == greedy(sdpa, p, 16, eos, pad)[0]
    print(f"  eager vs sdpa: max |dlogit| = {worst:.3g}, greedy identical")


def chat_cases(style: str) -> list[dict]:
    single = [{"role": "user", "content": "What is 12 + 30?"}]
    multi = [
        {"role": "system", "content": "  You are terse. Answer with a number.\n"},
        {"role": "user", "content": "What is 7 * 8?"},
        {"role": "assistant", "content": "<answer>56</answer>\n\n"},
        {"role": "user", "content": "  And 9 * 9?  "},
    ]
    cases = [
        {"messages": single, "add_generation_prompt": True},
        {"messages": multi, "add_generation_prompt": True},
        {"messages": multi[:3], "add_generation_prompt": False},
    ]
    if style == "qwen":
        tools = [
            {
                "type": "function",
                "function": {
                    "name": "calculator",
                    "description": "Evaluate an arithmetic expression like '3 * (4 + 5)' — returns a number < 1e9 & > -1e9.",
                    "parameters": {
                        "type": "object",
                        "properties": {"expression": {"type": "string", "description": "the expression, e.g. 2^10"}},
                        "required": ["expression"],
                    },
                },
            },
            {
                "type": "function",
                "function": {
                    "name": "lookup",
                    "description": "Look up a café's opening hours.",
                    "parameters": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
                },
            },
        ]
        tool_chat = [
            {"role": "user", "content": "What is 3 * (4 + 5), and is the café open?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"type": "function", "function": {"name": "calculator", "arguments": {"expression": "3 * (4 + 5)"}}},
                    {"type": "function", "function": {"name": "lookup", "arguments": {"name": "Café Zürich"}}},
                ],
            },
            {"role": "tool", "content": "27"},
            {"role": "tool", "content": " open until 18:00 \n"},
        ]
        cases.append({"messages": tool_chat, "tools": tools, "add_generation_prompt": True})
    return cases


def raw_tokenizer(tokenizer) -> Tokenizer | None:
    """The tokenizer.json pipeline exactly as the Rust `tokenizers` crate will run it.  transformers 5
    may rebuild the pipeline in a model-specific class (Qwen2Tokenizer re-creates its normalizer and
    pre-tokenizer in Python), so every id list in the fixtures is cross-checked against this."""
    path = Path(tokenizer.name_or_path) / "tokenizer.json"
    return Tokenizer.from_file(str(path)) if path.exists() else None


def render_chat(tokenizer, case: dict) -> dict:
    kwargs = {"tools": case["tools"]} if "tools" in case else {}
    text = tokenizer.apply_chat_template(
        case["messages"], tokenize=False, add_generation_prompt=case["add_generation_prompt"], **kwargs
    )
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    # apply_chat_template(tokenize=True) must agree (it also tokenises without special tokens)
    direct = tokenizer.apply_chat_template(
        case["messages"], tokenize=True, add_generation_prompt=case["add_generation_prompt"], return_dict=False, **kwargs
    )
    if isinstance(direct, dict) or hasattr(direct, "keys"):
        direct = direct["input_ids"]
    assert list(direct) == ids, (direct, ids)
    raw = raw_tokenizer(tokenizer)
    if raw is not None:
        assert raw.encode(text, add_special_tokens=False).ids == ids, "tokenizer.json disagrees with transformers"
    out = dict(case)
    out["text"] = text
    out["ids"] = ids
    return out


def tokenize_cases(tokenizer, texts: list[str]) -> list[dict]:
    cases = []
    raw = raw_tokenizer(tokenizer)
    for text in texts:
        ids = tokenizer.encode(text, add_special_tokens=False)
        if raw is not None:
            assert raw.encode(text, add_special_tokens=False).ids == ids, text
            assert raw.encode(text, add_special_tokens=True).ids == tokenizer.encode(text, add_special_tokens=True), text
            assert raw.decode(ids, skip_special_tokens=False) == tokenizer.decode(ids, skip_special_tokens=False), text
        cases.append(
            {
                "text": text,
                "ids": ids,
                "ids_with_special_tokens": tokenizer.encode(text, add_special_tokens=True),
                "decoded": tokenizer.decode(ids, skip_special_tokens=False),
            }
        )
    return cases


def pick_greedy_prompts(model, tokenizer, eos, pad, rng: random.Random) -> list[list[int]]:
    """Three prompts of length 3, 7 and 12 with decisive greedy steps (top-1/top-2 logit margin >= 5e-3
    at every step, so f32 reimplementations cannot flip a token).  The last one is chosen so that
    generation stops at an EOS before max_new_tokens when such a prompt can be found, to exercise
    stopping and padding of finished rows in the batched case."""
    specials = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder.keys())
    ordinary = [i for i in range(len(tokenizer)) if i not in specials]
    text_ids = tokenizer.encode(
        "Question: What is 3 + 4 * 5? Multiply first, then add. The answer is", add_special_tokens=False
    )
    chosen = []
    for length, want_eos in ((3, False), (7, False), (12, True)):
        candidates = [text_ids[:length]] + [[rng.choice(ordinary) for _ in range(length)] for _ in range(3000)]
        fallback = None
        for cand in candidates:
            new, margin = greedy(model, cand, 16, eos, pad)
            if margin < 5e-3:
                continue
            stopped = len(new) < 16 and new[-1] in eos
            if not want_eos or stopped:
                chosen.append(cand)
                break
            if fallback is None:
                fallback = cand
        else:
            assert fallback is not None, "no decisive prompt found"
            print(f"  note: no prompt of length {length} stops at EOS within 16 tokens")
            chosen.append(fallback)
    return chosen


def reference_numbers(name: str, model_dir: Path, style: str | None, rng: random.Random, fixed_ids: bool) -> dict:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = load_reference(model_dir, "eager")
    eos, pad = eos_and_pad(model, tokenizer)
    vocab = model.config.vocab_size
    result: dict = {"model": name, "transformers_version": transformers.__version__, "torch_version": torch.__version__}

    if fixed_ids:
        texts = TOKENIZE_TEXTS
        result["tokenize"] = tokenize_cases(tokenizer, texts)
        result["chat"] = [render_chat(tokenizer, c) for c in chat_cases(style)] if tokenizer.chat_template else []
        text_seq = tokenizer.encode("Question: What is 7 * 8? Seven times eight is", add_special_tokens=False)[:12]
        rand_seq = [rng.randrange(vocab) for _ in range(12)]  # may include ids past the tokenizer's vocab
        logit_seqs = [text_seq, rand_seq]
        completions = [
            (tokenizer.encode("What is 2^10?", add_special_tokens=False),
             tokenizer.encode(" <answer>1024</answer>", add_special_tokens=False) + eos[:1]),
            (result["chat"][0]["ids"], tokenizer.encode("<answer>42</answer>", add_special_tokens=False)),
            ([rng.randrange(len(tokenizer)) for _ in range(5)], [rng.randrange(vocab) for _ in range(6)]),
        ]
        prompts = pick_greedy_prompts(model, tokenizer, eos, pad, rng)
    else:
        # Tokenizer-independent ids in [0, 50) so any checkpoint can be compared.
        result["tokenize"] = tokenize_cases(tokenizer, TOKENIZE_TEXTS[:3])
        result["chat"] = []
        if tokenizer.chat_template:
            single = {"messages": [{"role": "user", "content": "What is 12 + 30?"}], "add_generation_prompt": True}
            result["chat"] = [render_chat(tokenizer, single)]
        logit_seqs = [[rng.randrange(50) for _ in range(12)] for _ in range(2)]
        completions = [([rng.randrange(50) for _ in range(6)], [rng.randrange(50) for _ in range(5)]) for _ in range(2)]
        prompts = []
        for n in (4, 9):  # prefer decisive prompts (see pick_greedy_prompts); the margin is recorded either way
            cands = [[rng.randrange(50) for _ in range(n)] for _ in range(64)]
            prompts.append(next((c for c in cands if greedy(model, c, 16, eos, pad)[1] >= 5e-3), cands[0]))

    floats = len(logit_seqs) * 12 * vocab
    result["logits"] = []
    for ids in logit_seqs:
        logits = full_logits(model, ids)
        if floats <= 2_000_000:
            result["logits"].append({"input_ids": ids, "logits": logits.tolist()})
        else:  # big vocab: keep the file small
            top = torch.topk(logits, 20, dim=-1)
            result["logits"].append(
                {
                    "input_ids": ids,
                    "top20_ids": top.indices.tolist(),
                    "top20_logits": top.values.tolist(),
                    "logsumexp": torch.logsumexp(logits.double(), -1).tolist(),
                }
            )

    result["logprobs"] = [
        {"prompt_ids": p, "completion_ids": c, "logprobs": logprobs_of(model, p, c)} for p, c in completions
    ]

    result["greedy"] = []
    for p in prompts:
        new, margin = greedy(model, p, 16, eos, pad)
        result["greedy"].append({"prompt_ids": p, "max_new_tokens": 16, "output_ids": new, "min_top2_margin": margin})
        print(f"  greedy len {len(p)}: {len(new)} new tokens, min margin {margin:.3g}, stopped={new[-1] in eos}")

    outputs = batched_greedy(model, tokenizer, prompts, 16, eos, pad)
    for g, o in zip(result["greedy"], outputs):
        assert o == g["output_ids"], f"batched != unbatched: {o} vs {g['output_ids']}"
    result["batched_greedy"] = {"prompts": prompts, "max_new_tokens": 16, "padding_side": "left", "outputs": outputs}

    assert_attn_agree(model_dir, model, logit_seqs, prompts, eos, pad)
    result["eos_token_ids"] = eos
    result["pad_token_id"] = pad
    result["vocab_size"] = vocab
    result["tokenizer_vocab_size"] = len(tokenizer)
    return result


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"  wrote {path} ({path.stat().st_size} bytes)")


# ---------------------------------------------------------------------------------------------
# Modes
# ---------------------------------------------------------------------------------------------


def save_model_dir(out: Path, model, gen: GenerationConfig, tokenizer, *, dtype, shard: str | None, inline_template: bool):
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    model = model.to(dtype)
    model.generation_config = gen
    kwargs = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(out, safe_serialization=True, **kwargs)
    tokenizer.save_pretrained(out, save_jinja_files=not inline_template)


def finalize_tokenizer_config(out: Path, fast: PreTrainedTokenizerFast, style: str) -> None:
    """transformers 5 writes tokenizer_class "TokenizersBackend", a "backend" key and no
    added_tokens_decoder.  Rewrite it in the shape found in Hub repositories (and accepted by
    transformers 4.x and 5.x): a concrete tokenizer_class and an explicit added_tokens_decoder."""
    path = out / "tokenizer_config.json"
    cfg = json.loads(path.read_text(encoding="utf-8"))
    cfg.pop("backend", None)
    cfg["tokenizer_class"] = "Qwen2TokenizerFast" if style == "qwen" else "PreTrainedTokenizerFast"
    cfg["added_tokens_decoder"] = {
        str(i): {
            "content": t.content,
            "lstrip": t.lstrip,
            "normalized": t.normalized,
            "rstrip": t.rstrip,
            "single_word": t.single_word,
            "special": t.special,
        }
        for i, t in sorted(fast.added_tokens_decoder.items())
    }
    order = ["tokenizer_class", "added_tokens_decoder", "bos_token", "eos_token", "pad_token", "unk_token"]
    cfg = {**{k: cfg[k] for k in order if k in cfg}, **{k: v for k, v in sorted(cfg.items()) if k not in order}}
    path.write_text(json.dumps(cfg, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def generate(root: Path) -> None:
    models_dir = root / "tests" / "fixtures" / "models"
    parity_dir = root / "tests" / "fixtures" / "parity"

    for style, name in (("qwen", "qwen2-tiny"), ("llama", "llama-tiny")):
        print(f"[{name}]")
        tok = build_tokenizer(style)
        fast = wrap_tokenizer(tok, style)
        ids = {t: fast.convert_tokens_to_ids(t) for t in (QWEN_SPECIALS if style == "qwen" else LLAMA_SPECIALS)}
        print(f"  tokenizer: {len(fast)} tokens ({BPE_VOCAB} BPE + {len(ids)} special)")
        out = models_dir / name
        if style == "qwen":
            model, gen = make_qwen(round_up(len(fast), 64), ids)
            save_model_dir(out, model, gen, fast, dtype=torch.float32, shard=None, inline_template=True)
        else:
            model, gen = make_llama(len(fast), ids)
            save_model_dir(out, model, gen, fast, dtype=torch.bfloat16, shard="150KB", inline_template=False)
            assert (out / "model.safetensors.index.json").exists()
            assert len(list(out.glob("model-*-of-*.safetensors"))) >= 2

        finalize_tokenizer_config(out, fast, style)
        for f in out.iterdir():
            f.chmod(0o644)  # save_pretrained creates the safetensors files 0600

        # reloaded tokenizer must behave exactly like the in-memory one
        reloaded = AutoTokenizer.from_pretrained(out)
        assert reloaded.chat_template == fast.chat_template
        assert (reloaded.bos_token, reloaded.eos_token, reloaded.pad_token) == (fast.bos_token, fast.eos_token, fast.pad_token)
        for text in TOKENIZE_TEXTS:
            assert reloaded.encode(text, add_special_tokens=True) == fast.encode(text, add_special_tokens=True), text

        result = reference_numbers(name, out, style, random.Random(SEED + 100), fixed_ids=True)
        write_json(parity_dir / f"{name}.json", result)


def check(model_dir: Path, out_json: Path) -> None:
    print(f"[check {model_dir}]")
    result = reference_numbers(model_dir.name, model_dir, None, random.Random(SEED + 200), fixed_ids=False)
    write_json(out_json, result)


# ---------------------------------------------------------------------------------------------
# LoRA (PEFT) parity: both directions on qwen2-tiny
# ---------------------------------------------------------------------------------------------

LORA_BASE = "tests/fixtures/models/qwen2-tiny"  # relative: it is what base_model_name_or_path records
# The adapter tandem writes; tests/lora.rs runs the same command and compares the bytes.
TANDEM_ADAPTER_ARGS = [
    "model", "init-adapter", LORA_BASE, "tests/fixtures/adapters/qwen2-tiny-tandem",
    "--r", "8", "--alpha", "16", "--seed", "7", "--random-b",
]


def lora_cases(rng: random.Random, vocab: int) -> tuple[list[list[int]], list[tuple[list[int], list[int]]]]:
    seqs = [[rng.randrange(vocab) for _ in range(n)] for n in (12, 7)]
    pairs = [([rng.randrange(vocab) for _ in range(p)], [rng.randrange(vocab) for _ in range(c)]) for p, c in ((5, 6), (9, 3))]
    return seqs, pairs


def peft_numbers(model, seqs, pairs) -> dict:
    return {
        "logits": [{"input_ids": ids, "logits": full_logits(model, ids).tolist()} for ids in seqs],
        "logprobs": [
            {"prompt_ids": p, "completion_ids": c, "logprobs": logprobs_of(model, p, c)} for p, c in pairs
        ],
    }


def lora(tandem: Path) -> None:
    import subprocess

    import peft
    from peft import LoraConfig, PeftModel, get_peft_model
    from safetensors.torch import load_file

    assert peft.__version__ == "0.21.2", peft.__version__
    os.chdir(REPO_ROOT)
    adapters = Path("tests/fixtures/adapters")
    base_vocab = 400  # ids the tokenizer has, below the padded embedding rows

    def base():
        return load_reference(Path(LORA_BASE), "eager")

    # 1. PEFT writes an adapter with non-zero B (rsLoRA, a subset of the projections); tandem
    #    must compute PEFT's numbers with it.
    print("[lora: PEFT's adapter]")
    torch.manual_seed(SEED + 300)
    config = LoraConfig(
        r=4, lora_alpha=8, use_rslora=True, lora_dropout=0.1, task_type="CAUSAL_LM",
        target_modules=["q_proj", "v_proj", "o_proj", "gate_proj", "down_proj"],
    )
    model = get_peft_model(base(), config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn_like(p) * 0.1)
    model.eval()
    out = adapters / "qwen2-tiny-peft"
    if out.exists():
        shutil.rmtree(out)
    model.save_pretrained(out)
    (out / "README.md").unlink(missing_ok=True)
    for f in out.iterdir():
        f.chmod(0o644)
    rng = random.Random(SEED + 301)
    seqs, pairs = lora_cases(rng, base_vocab)
    reloaded = PeftModel.from_pretrained(base(), out).eval()
    peft_side = {"adapter": str(out), **peft_numbers(reloaded, seqs, pairs)}
    # Reloading gives the numbers of the model that was saved.
    assert peft_side["logits"][0]["logits"] == peft_numbers(model, seqs[:1], [])["logits"][0]["logits"]

    # 2. tandem writes a seeded adapter; PEFT loads it (every tensor, no key left over) and its
    #    numbers are recorded for tandem to match.
    print("[lora: tandem's adapter]")
    run = subprocess.run([str(tandem), *TANDEM_ADAPTER_ARGS], capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"tandem failed: {run.stderr}")
    out = Path(TANDEM_ADAPTER_ARGS[3])
    (out / "README.md").unlink(missing_ok=True)
    for f in out.iterdir():
        f.chmod(0o644)
    saved = load_file(out / "adapter_model.safetensors")
    loaded = PeftModel.from_pretrained(base(), out).eval()
    state = {k: v for k, v in loaded.state_dict().items() if "lora_" in k}
    assert len(state) == len(saved), (len(state), len(saved))
    for key, value in saved.items():
        live = key.replace(".lora_A.weight", ".lora_A.default.weight").replace(".lora_B.weight", ".lora_B.default.weight")
        assert torch.equal(state[live], value), key
    assert bool((saved[next(k for k in saved if "lora_B" in k)] != 0).any()), "B must be non-zero"
    cfg = loaded.peft_config["default"]
    assert (cfg.r, cfg.lora_alpha, cfg.use_rslora) == (8, 16, False), cfg
    tandem_side = {"adapter": str(out), "command": ["tandem", *TANDEM_ADAPTER_ARGS], **peft_numbers(loaded, seqs, pairs)}
    # The merged model (what `tandem model merge` writes) computes the same.
    merged = loaded.merge_and_unload()
    worst = max(
        float((full_logits(merged, ids) - torch.tensor(c["logits"])).abs().max())
        for ids, c in zip(seqs, tandem_side["logits"])
    )
    assert worst < 1e-4, worst
    write_json(
        Path("tests/fixtures/parity/lora-qwen2-tiny.json"),
        {"base": LORA_BASE, "peft_version": peft.__version__, "peft": peft_side, "tandem": tandem_side},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    g = sub.add_parser("generate", help="rebuild tests/fixtures/{models,parity}")
    g.add_argument("--root", type=Path, default=REPO_ROOT)
    c = sub.add_parser("check", help="reference numbers for an existing HF checkpoint directory")
    c.add_argument("model_dir", type=Path)
    c.add_argument("out", type=Path)
    lo = sub.add_parser("lora", help="rebuild tests/fixtures/adapters and parity/lora-qwen2-tiny.json (PEFT)")
    lo.add_argument("--tandem", type=Path, default=REPO_ROOT / "target" / "debug" / "tandem")
    args = parser.parse_args()
    torch.manual_seed(SEED)
    if args.mode == "generate":
        generate(args.root)
    elif args.mode == "lora":
        lora(args.tandem.resolve())
    else:
        check(args.model_dir, args.out)


if __name__ == "__main__":
    main()
