"""DPO (--mode dpo) or reward-model training (--mode rm) on packed ultrafeedback pairs.

    python examples/dpo_rm/train.py --mode dpo --flashmask   # DPO through paddle_flashmask
    python examples/dpo_rm/train.py --mode dpo               # the same batches, dense mask
    python examples/dpo_rm/train.py --mode rm --flashmask    # reward model

Each pair becomes prompt | chosen | rejected in one sequence under a
share-question mask (both answers see the prompt, not each other), and pairs
are packed greedily into rows of --max_seq_len tokens. DPO runs on PaddleNLP's
DPOTrainer and DPOCriterion; RM on PaddleNLP's Trainer with a Bradley-Terry
reward head. The last stdout line is a JSON summary.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import paddle
from paddlenlp.datasets import MapDataset
from paddlenlp.trainer import Trainer
from paddlenlp.transformers import AutoModel, AutoModelForCausalLM
from paddlenlp.trl import DPOTrainer

from paddle_flashmask.paddlenlp import apply
from paddle_flashmask.paddlenlp.chat_format import load_jsonl, preference_pair
from paddle_flashmask.paddlenlp.collators import PackedPreferenceCollator
from paddle_flashmask.paddlenlp.packing import pack_greedily
from paddle_flashmask.paddlenlp.reward_model import RewardModel

# The examples' shared harness, examples/common (not part of the library).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common.run_report import RunReport  # noqa: E402
from common.runner import FineTuneArguments, load_model, load_tokenizer, parse_arguments, splits_sequence  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parent / "data" / "ultrafeedback_binarized_sample.jsonl"


@dataclass
class PreferenceArguments(FineTuneArguments):
    mode: str = field(default="dpo", metadata={"help": "dpo or rm"})


@dataclass
class DPOConfig:
    """What PaddleNLP's DPOTrainer and DPOCriterion read (PaddleNLP's defaults)."""

    beta: float = field(default=0.1, metadata={"help": "DPO temperature"})
    loss_type: str = field(default="sigmoid", metadata={"help": "sigmoid, hinge, ipo, simpo, ..."})
    label_smoothing: float = 0.0
    simpo_gamma: float = 0.5
    dpop_lambda: float = 50.0
    pref_loss_ratio: float = 1.0
    sft_loss_ratio: float = 0.0
    reference_free: bool = False
    ref_model_update_steps: int = -1
    # Not a flag: this script trains the whole policy (LoRA is examples/sft_lora's); DPOTrainer
    # with lora=True would take the policy itself as its reference.
    lora: bool = field(default=False, init=False)


class OneDeviceDPOTrainer(DPOTrainer):
    """PaddleNLP's DPOTrainer always wraps the reference model with
    fleet.distributed_model, which fails unless launched distributed; on one
    device the reference model only needs the AMP decoration."""

    def _wrap_ref_model(self, model):
        if self.args.world_size > 1:
            return super()._wrap_ref_model(model)
        amp_dtype = "float16" if self.args.fp16 else "bfloat16"
        return paddle.amp.decorate(models=model, level=self.args.fp16_opt_level, dtype=amp_dtype)


def parse(argv=None):
    args, dpo_config, training_args = parse_arguments(
        (PreferenceArguments, DPOConfig), "dpo_rm", DEFAULT_DATA, argv
    )
    if args.mode not in ("dpo", "rm"):
        raise ValueError(f"--mode must be dpo or rm, got {args.mode!r}")
    if splits_sequence(training_args):
        raise ValueError("--context_parallel_degree / --sep_parallel_degree: examples/dpo_rm does not split "
                         "sequences (its preference batches are not split); examples/sft_lora does")
    return args, dpo_config, training_args


def build_trainer(args: PreferenceArguments, dpo_config: DPOConfig, training_args):
    """Returns (trainer, report); the caller decides whether FlashMask routing is applied."""
    records = load_jsonl(args.data_path)
    texts = [record["prompt"] for record in records]
    texts += [record[side][-1]["content"] for record in records for side in ("chosen", "rejected")]
    tokenizer = load_tokenizer(args, texts, training_args.output_dir)
    pairs = [preference_pair(record, tokenizer, args.max_seq_len) for record in records]
    pairs = [pair for pair in pairs if pair is not None]
    packs = pack_greedily(pairs, [pair.length for pair in pairs], args.max_seq_len)

    report = RunReport(
        task=args.mode,
        flashmask=args.flashmask,
        tokens_per_step=training_args.per_device_train_batch_size
        * training_args.gradient_accumulation_steps
        * args.max_seq_len,
    )
    common = dict(
        args=training_args,
        train_dataset=MapDataset(packs),
        data_collator=PackedPreferenceCollator(
            args.max_seq_len, tokenizer.pad_token_id, args.flashmask, dpo_labels=args.mode == "dpo"
        ),
        tokenizer=tokenizer,
        callbacks=[report],
    )
    if args.mode == "rm":
        backbone = load_model(args, AutoModel, len(tokenizer), training_args.seed)
        return Trainer(model=RewardModel(backbone), **common), report
    # The reference model starts as an identical frozen copy of the policy.
    policy = load_model(args, AutoModelForCausalLM, len(tokenizer), training_args.seed)
    reference = None if dpo_config.reference_free else load_model(
        args, AutoModelForCausalLM, len(tokenizer), training_args.seed
    )
    trainer = OneDeviceDPOTrainer(policy, ref_model=reference, dpo_config=dpo_config, **common)
    return trainer, report


def main():
    args, dpo_config, training_args = parse()
    if args.flashmask:
        apply()
    trainer, report = build_trainer(args, dpo_config, training_args)
    trainer.train()
    trainer.save_model()
    report.finish(training_args.output_dir)


if __name__ == "__main__":
    main()
