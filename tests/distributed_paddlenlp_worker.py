"""One rank of the PaddleNLP context-parallel routing test (tests/test_distributed.py,
`paddle.distributed.launch`, gloo): fleet's hybrid set-up with a sep group of all
ranks, a tiny Llama with context_parallel_degree = world size and FlashMask
routing, fed the shards PaddleNLP's Trainer makes
(`split_inputs_sequence_dim_load_balance`), against the same weights with no
context parallelism on the whole batch. Writes <out_dir>/rank<r>.json: the two
losses and the largest relative difference of the weight gradients (summed over
the ranks, as the Trainer's hybrid-parallel optimizer does).
"""

import json
import os
import sys

import numpy as np
import paddle
import paddle.distributed as dist
from paddle.distributed import fleet
from paddlenlp.transformers import LlamaForCausalLM
from paddlenlp.transformers.context_parallel_utils import split_inputs_sequence_dim_load_balance

import examples_path  # noqa: F401, E402  (this script's folder is tests/: examples/common as `common`)
from common.tiny_llama import tiny_llama_config  # noqa: E402
from paddle_flashmask import masks  # noqa: E402
from paddle_flashmask.paddlenlp import apply  # noqa: E402

SEQLEN, VOCAB, SEED = 48, 128, 7
DOCS = [[10, 21, 17]]


def _model(context_parallel_degree):
    config = tiny_llama_config(VOCAB, SEQLEN, hidden_size=32, num_hidden_layers=2)
    config.use_flash_attention = True
    config.context_parallel_degree = context_parallel_degree
    paddle.seed(SEED)
    return LlamaForCausalLM(config)


def _grads(model):
    return {n: p.grad.numpy() for n, p in model.named_parameters() if p.grad is not None}


class _GatheringReshard:
    """Stands in for PaddleNLP's ReshardLayer (whose all-to-all gloo lacks): from the
    whole sequence and this rank's heads to this rank's contiguous sequence part and
    all heads, with an all-gather."""

    def __init__(self, group):
        self.sep_group = group

    def __call__(self, x, split_axis, concat_axis):
        assert (split_axis, concat_axis) == (1, 2)
        parts = []
        dist.all_gather(parts, x, group=self.sep_group)
        rows = x.shape[1] // self.sep_group.nranks
        rank = self.sep_group.rank
        return paddle.concat(parts, axis=2)[:, rank * rows : (rank + 1) * rows]


def _sep_routing_error(group, rank, world_size):
    """The routed attention in sep mode (q/k/v: whole sequence, this rank's heads;
    bounds split by the Trainer) against the op on everything."""
    from paddlenlp.transformers.llama import modeling
    from paddlenlp.transformers.segment_parallel_utils import split_inputs_sequence_dim

    from paddle_flashmask import flashmask_attention
    from paddle_flashmask.paddlenlp.patching import _routed

    config = tiny_llama_config(VOCAB, SEQLEN)
    config.sep_parallel_degree = world_size
    rng = np.random.default_rng(SEED)
    q, k, v = (paddle.to_tensor(rng.standard_normal((1, SEQLEN, 4, 8)).astype("float32")) for _ in range(3))
    indices = paddle.to_tensor(masks.causal_document_mask(DOCS).startend_row_indices[:, 0, :, 0])
    heads = slice(rank * 4 // world_size, (rank + 1) * 4 // world_size)
    out = _routed(modeling.scaled_dot_product_attention)(
        q[:, :, heads], config, k[:, :, heads], v[:, :, heads], None, False,
        attn_mask_startend_row_indices=split_inputs_sequence_dim(indices, sep_rank=rank, sep_degree=world_size),
        reshard_layer=_GatheringReshard(group),
    )
    rows = SEQLEN // world_size
    expected = flashmask_attention(q, k, v, indices.unsqueeze(1).unsqueeze(-1), causal=True)
    expected = expected[:, rank * rows : (rank + 1) * rows].reshape([1, rows, -1])
    return float(np.abs(out.numpy() - expected.numpy()).max())


def main(out_dir):
    paddle.set_device("cpu")
    apply()
    rng = np.random.default_rng(SEED)
    batch = {
        "input_ids": paddle.to_tensor(rng.integers(1, VOCAB, size=(1, SEQLEN))),
        "labels": paddle.to_tensor(rng.integers(1, VOCAB, size=(1, SEQLEN))),
        # [B, S] as PaddleNLP's collators give it (the Trainer splits only 2-D inputs)
        "attn_mask_startend_row_indices": paddle.to_tensor(masks.causal_document_mask(DOCS).startend_row_indices[:, 0, :, 0]),
    }
    # The reference first: once fleet's sep group exists, the routing refuses a
    # model without context parallelism (it would attend within a shard).
    reference = _model(1)
    loss_ref = reference(**batch)[0]
    loss_ref.backward()
    world_size = int(os.environ["PADDLE_TRAINERS_NUM"])
    strategy = fleet.DistributedStrategy()
    strategy.hybrid_configs = {"dp_degree": 1, "mp_degree": 1, "pp_degree": 1, "sharding_degree": 1, "sep_degree": world_size}
    fleet.init(is_collective=True, strategy=strategy)
    group = fleet.get_hybrid_communicate_group().get_sep_parallel_group()
    rank = group.rank
    model = _model(world_size)
    loss = model(**split_inputs_sequence_dim_load_balance(batch, rank=rank, degree=world_size))[0]
    loss.backward()
    errors = {}
    for name, grad in _grads(model).items():
        summed = paddle.to_tensor(grad)
        dist.all_reduce(summed, group=group)
        ref = _grads(reference)[name]
        errors[name] = float(np.abs(summed.numpy() - ref).max() / max(1.0, np.abs(ref).max()))
    try:  # a model without context parallelism on a rank's shard is refused
        reference(**split_inputs_sequence_dim_load_balance(batch, rank=rank, degree=world_size))
        refused = ""
    except ValueError as e:
        refused = str(e)
    result = {"loss": float(loss), "loss_ref": float(loss_ref), "max_grad_error": max(errors.values()),
              "grads": len(errors), "refused": refused, "sep_error": _sep_routing_error(group, rank, world_size)}
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1])
