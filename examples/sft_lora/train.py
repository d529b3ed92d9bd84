"""SFT, or LoRA with --lora, of a causal LM on packed tulu-v2 conversations.

    python examples/sft_lora/train.py --flashmask            # SFT through paddle_flashmask
    python examples/sft_lora/train.py                        # the same batches, dense mask
    python examples/sft_lora/train.py --lora --flashmask     # LoRA

Context parallelism (CPU or GPU), two processes sharing each sequence, and the
same batches in one process for comparison:

    python -m paddle.distributed.launch --nproc_per_node 2 examples/sft_lora/train.py \
        --flashmask --context_parallel_degree 2 --distributed_sampler
    python examples/sft_lora/train.py --flashmask --distributed_sampler

Conversations are packed greedily into rows of --max_seq_len tokens with
position ids restarting per conversation and a causal document mask, given
to PaddleNLP's Trainer either as attn_mask_startend_row_indices (--flashmask)
or as a dense attention_mask. The last stdout line is a JSON summary.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from paddle.io import DistributedBatchSampler
from paddlenlp.datasets import MapDataset
from paddlenlp.peft import LoRAConfig, LoRAModel
from paddlenlp.trainer import Trainer
from paddlenlp.transformers import AutoModelForCausalLM

from paddle_flashmask.paddlenlp import apply
from paddle_flashmask.paddlenlp.chat_format import load_jsonl, sft_example
from paddle_flashmask.paddlenlp.collators import PackedSFTCollator
from paddle_flashmask.paddlenlp.packing import pack_greedily

# The examples' shared harness, examples/common (not part of the library).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common.run_report import RunReport  # noqa: E402
from common.runner import FineTuneArguments, load_model, load_tokenizer, parse_arguments, splits_sequence  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parent / "data" / "tulu_v2_sft_sample.jsonl"
# The projections of Llama and Qwen2 decoder layers.
LORA_TARGET_MODULES = [
    f".*{name}.*" for name in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
]


@dataclass
class SFTArguments(FineTuneArguments):
    lora: bool = field(default=False, metadata={"help": "train LoRA adapters instead of all weights"})
    lora_rank: int = field(default=8, metadata={"help": "LoRA rank"})
    distributed_sampler: bool = field(
        default=False,
        metadata={
            "help": "batches in the order of a multi-process run (PaddleNLP's DistributedBatchSampler) even in "
            "one process: a one-process run then sees the batches of a context-parallel run, step for step"
        },
    )


class _DistributedSamplerTrainer(Trainer):
    """PaddleNLP's Trainer shuffles with paddle.io.BatchSampler in one process and with
    DistributedBatchSampler in several; this one uses the latter always."""

    def _get_train_sampler(self):
        return DistributedBatchSampler(
            self.train_dataset,
            batch_size=self.args.per_device_train_batch_size,
            shuffle=True,
            num_replicas=self.args.dataset_world_size,
            rank=self.args.dataset_rank,
            drop_last=self.args.dataloader_drop_last,
        )


def parse(argv=None):
    args, training_args = parse_arguments((SFTArguments,), "sft_lora", DEFAULT_DATA, argv)
    if splits_sequence(training_args) and not args.flashmask:
        # The Trainer splits only [B, S] inputs: the dense [B, 1, S, S] mask cannot be split.
        raise ValueError("--context_parallel_degree / --sep_parallel_degree > 1 need --flashmask (the dense mask "
                         "of a run without it cannot be split along the sequence)")
    return args, training_args


def build_trainer(args: SFTArguments, training_args):
    """Returns (trainer, report); the caller decides whether FlashMask routing is applied."""
    records = load_jsonl(args.data_path)
    texts = [message["content"] for record in records for message in record["messages"]]
    tokenizer = load_tokenizer(args, texts, training_args.output_dir)
    examples = [sft_example(record["messages"], tokenizer, args.max_seq_len) for record in records]
    examples = [example for example in examples if example is not None]
    packs = pack_greedily(examples, [len(example.input_ids) for example in examples], args.max_seq_len)

    model = load_model(
        args, AutoModelForCausalLM, len(tokenizer), training_args.seed, max(training_args.context_parallel_degree, 1)
    )
    if args.lora:
        lora_config = LoRAConfig(target_modules=LORA_TARGET_MODULES, r=args.lora_rank, lora_alpha=2 * args.lora_rank)
        model = LoRAModel(model, lora_config)
        model.mark_only_lora_as_trainable()
        model.print_trainable_parameters()

    report = RunReport(
        task="lora" if args.lora else "sft",
        flashmask=args.flashmask,
        tokens_per_step=training_args.per_device_train_batch_size
        * training_args.gradient_accumulation_steps
        * args.max_seq_len,
    )
    trainer_class = _DistributedSamplerTrainer if args.distributed_sampler else Trainer
    trainer = trainer_class(
        model=model,
        args=training_args,
        train_dataset=MapDataset(packs),
        data_collator=PackedSFTCollator(
            args.max_seq_len, tokenizer.pad_token_id, args.flashmask, sequence_split=splits_sequence(training_args)
        ),
        tokenizer=tokenizer,
        callbacks=[report],
    )
    return trainer, report


def main():
    args, training_args = parse()
    if args.flashmask:
        apply()
    trainer, report = build_trainer(args, training_args)
    trainer.train()
    trainer.save_model()
    report.finish(training_args.output_dir)


if __name__ == "__main__":
    main()
