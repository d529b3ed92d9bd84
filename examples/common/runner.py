"""What the example scripts share: arguments, tokenizer and model loading.

Arguments are parsed by PaddleNLP's PdArgumentParser, so every PaddleNLP
TrainingArguments flag works (--learning_rate, --per_device_train_batch_size,
--bf16, ...). Without --model_name_or_path the run uses a tiny randomly
initialised Llama and a tokenizer trained on the run's own data.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence, Tuple, Type

from paddlenlp.trainer import PdArgumentParser, TrainingArguments, set_seed
from paddlenlp.transformers import AutoTokenizer

from paddle_flashmask.paddlenlp.patching import routed_layer_count

from common.tiny_llama import build_tokenizer, tiny_llama_config


@dataclass
class FineTuneArguments:
    data_path: str = field(metadata={"help": "JSONL training data"})
    model_name_or_path: Optional[str] = field(
        default=None, metadata={"help": "local PaddleNLP checkpoint; default: a tiny random Llama"}
    )
    max_seq_len: int = field(default=512, metadata={"help": "length of every packed sequence"})
    flashmask: bool = field(
        default=False,
        metadata={"help": "attn_mask_startend_row_indices through paddle_flashmask; off: dense attention_mask"},
    )
    model_dtype: str = field(
        default="float32", metadata={"help": "parameter dtype; on GPU the op needs bfloat16 or float16"}
    )
    tiny_hidden_size: int = field(default=64, metadata={"help": "hidden size of the tiny Llama"})
    tiny_num_layers: int = field(default=2, metadata={"help": "layers of the tiny Llama"})


# Defaults for a one-minute CPU run; any of them can be overridden on the command line.
TRAINING_DEFAULTS = (
    "--max_steps 100 --per_device_train_batch_size 2 --learning_rate 3e-3 --warmup_steps 10 "
    "--logging_steps 1 --save_strategy no --report_to none --dataloader_num_workers 0 --seed 42"
).split()


def parse_arguments(
    argument_classes: Tuple[Type, ...], task: str, default_data_path: Path, argv: Sequence[str] = None
) -> Tuple:
    """Command line (default: sys.argv) over the example's defaults: one instance
    of each of `argument_classes` (a FineTuneArguments first), then TrainingArguments."""
    argv = list(sys.argv[1:] if argv is None else argv)
    defaults = ["--data_path", str(default_data_path), "--output_dir", f"output/{task}"] + TRAINING_DEFAULTS
    parser = PdArgumentParser(tuple(argument_classes) + (TrainingArguments,))
    # argparse keeps the last occurrence of an option: the user's flags win.
    return parser.parse_args_into_dataclasses(args=defaults + argv)


def load_tokenizer(args: FineTuneArguments, texts: Iterable[str], output_dir: str):
    if args.model_name_or_path:
        tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer
    return build_tokenizer(texts, str(Path(output_dir) / "tokenizer"))


def splits_sequence(training_args) -> bool:
    """Whether PaddleNLP's Trainer splits the batches along the sequence (context or
    segment parallelism)."""
    return max(training_args.context_parallel_degree, training_args.sep_parallel_degree) > 1


def load_model(args: FineTuneArguments, auto_class, vocab_size: int, seed: int, context_parallel_degree: int = 1):
    """`auto_class` (AutoModelForCausalLM, AutoModel) from the checkpoint, or a
    tiny Llama seeded with `seed` (the same seed gives the same weights).

    use_flash_attention follows --flashmask: it is how PaddleNLP users switch
    FlashMask on, and it lets GQA models skip repeating K/V heads.
    context_parallel_degree goes into the model's config (PaddleNLP's Trainer
    does not put it there, and the model must know its tokens are a shard).
    """
    if args.model_name_or_path:
        model = auto_class.from_pretrained(
            args.model_name_or_path,
            use_flash_attention=args.flashmask,
            dtype=args.model_dtype,
            context_parallel_degree=context_parallel_degree,
        )
        if args.flashmask and routed_layer_count(model) == 0:
            raise ValueError(
                f"--flashmask: the model at --model_name_or_path ({getattr(model.config, 'model_type', '?')}) has no "
                "Llama or Qwen2 attention layer, the ones paddle_flashmask.paddlenlp routes to its op"
            )
        return model
    config = tiny_llama_config(
        vocab_size,
        args.max_seq_len,
        hidden_size=args.tiny_hidden_size,
        num_hidden_layers=args.tiny_num_layers,
    )
    config.use_flash_attention = args.flashmask
    config.dtype = args.model_dtype
    config.context_parallel_degree = context_parallel_degree
    set_seed(seed)
    return auto_class.from_config(config)
