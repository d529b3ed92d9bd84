"""A tiny randomly initialised Llama and its tokenizer, built offline.

The examples must run on a fresh CPU machine with no download: the tokenizer
is a SentencePiece BPE model trained in about a second on the run's own
training texts and loaded through PaddleNLP's LlamaTokenizer; the model is a
PaddleNLP LlamaForCausalLM (or LlamaModel) built from a small LlamaConfig.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from paddlenlp.transformers import LlamaConfig, LlamaTokenizer

from paddle_flashmask.paddlenlp.chat_format import ROLE_TAGS

_SENTENCEPIECE_OPTIONS = dict(
    model_type="bpe",
    character_coverage=1.0,
    byte_fallback=True,  # any text still encodes, including newlines
    split_digits=True,  # every digit its own piece, so that numbers tokenize consistently
    normalization_rule_name="identity",
    remove_extra_whitespaces=False,
    unk_id=0,
    bos_id=1,
    eos_id=2,
    pad_id=-1,
    hard_vocab_limit=False,  # a small corpus may not fill the vocabulary
    num_threads=1,  # deterministic
    minloglevel=2,
)


def build_tokenizer(texts: Iterable[str], save_dir: str, vocab_size: int = 1024) -> LlamaTokenizer:
    """Trains a BPE SentencePiece model on `texts` and returns it as a LlamaTokenizer.

    The chat role tags are single pieces. Padding uses <unk> (id 0), as
    PaddleNLP's Llama does.
    """
    import sentencepiece as spm

    save_path = Path(save_dir)
    save_path.mkdir(parents=True, exist_ok=True)
    model_file = save_path / LlamaTokenizer.resource_files_names["vocab_file"]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([t for t in texts if t.strip()]),
        model_prefix=str(model_file.with_suffix("")),
        vocab_size=vocab_size,
        user_defined_symbols=list(ROLE_TAGS.values()),
        **_SENTENCEPIECE_OPTIONS,
    )
    tokenizer = LlamaTokenizer(vocab_file=str(model_file), pad_token="<unk>")
    tokenizer.save_pretrained(str(save_path))
    return tokenizer


def tiny_llama_config(
    vocab_size: int,
    max_position_embeddings: int,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
) -> LlamaConfig:
    """A Llama small enough to train in seconds on a CPU, with GQA like real Llamas."""
    return LlamaConfig(
        architectures=["LlamaForCausalLM"],  # lets PaddleNLP's Auto classes pick the Llama model
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 8 // 3,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        max_position_embeddings=max_position_embeddings,
        rms_norm_eps=1e-6,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
