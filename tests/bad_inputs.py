"""Bad inputs tried against every public entry point, and the exact error each gets.

`docs/bad-inputs.md` is `render()` of this table (regenerate it with
`python -m tests.bad_inputs > docs/bad-inputs.md`); tests/test_bad_inputs.py
checks that every call raises exactly the error written here and that the
document is current, so neither can drift.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

# What the calls are evaluated with (each name is described in the document's preamble).
NAMESPACE_DOC = """\
- `fa` is `paddle_flashmask.flashmask_attention`; `q` = `paddle.zeros([2, 16, 4, 8])`,
  `k` = `v` = `paddle.zeros([2, 16, 2, 8])` (float32, CPU), `idx` =
  `masks.causal_mask(16, batch=2).startend_row_indices` (int32 `[2, 1, 16, 1]`);
- `core` is `paddle_flashmask._frontend`, the front-end core both APIs call (its
  shape check needs no tensor, so dimensions past 2^31 - 1 are tried without allocating;
  element counts are not limited);
- `tfa` is `paddle_flashmask.torch.flashmask_attention`; `tq` = `torch.zeros(2, 16, 4, 8,
  dtype=torch.float16)`, `tk` = `tv` = `torch.zeros(2, 16, 2, 8, dtype=torch.float16)`, on CPU
  (the torch binding runs on CUDA only; its checks run anywhere);
- `masks` is `paddle_flashmask.masks`; `PackedSFTCollator` comes from
  `paddle_flashmask.paddlenlp.collators` and `pack_greedily` from `paddle_flashmask.paddlenlp.packing`; `routed_indices(x)` is what the PaddleNLP attention routed by
  `paddle_flashmask.paddlenlp.apply()` does first with `attn_mask_startend_row_indices=x`.
"""


class BadInput(NamedTuple):
    call: str  # a Python expression over the names above
    argument: str  # the argument the message must name
    exception: type
    message: str  # the exact message


def namespace(with_torch: bool) -> dict:
    import paddle

    import paddle_flashmask
    from paddle_flashmask import _frontend, masks
    from paddle_flashmask.paddlenlp.collators import PackedSFTCollator
    from paddle_flashmask.paddlenlp.packing import pack_greedily
    from paddle_flashmask.paddlenlp.patching import _startend_row_indices

    names = {
        "np": np,
        "paddle": paddle,
        "masks": masks,
        "core": _frontend,
        "fa": paddle_flashmask.flashmask_attention,
        "q": paddle.zeros([2, 16, 4, 8]),
        "k": paddle.zeros([2, 16, 2, 8]),
        "v": paddle.zeros([2, 16, 2, 8]),
        "idx": masks.causal_mask(16, batch=2).startend_row_indices,
        "PackedSFTCollator": PackedSFTCollator,
        "pack_greedily": pack_greedily,
        "routed_indices": _startend_row_indices,
    }
    if with_torch:
        import torch

        from paddle_flashmask.torch import flashmask_attention

        names.update(
            tfa=flashmask_attention,
            tq=torch.zeros(2, 16, 4, 8, dtype=torch.float16),
            tk=torch.zeros(2, 16, 2, 8, dtype=torch.float16),
            tv=torch.zeros(2, 16, 2, 8, dtype=torch.float16),
        )
    return names


def needs_torch(case: BadInput) -> bool:
    return case.call.startswith("tfa(")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render() -> str:
    lines = [
        "# Bad inputs and the errors they get",
        "",
        "Generated from `tests/bad_inputs.py` (`python -m tests.bad_inputs > docs/bad-inputs.md`);",
        "`tests/test_bad_inputs.py` runs every call below and checks the exception and the exact",
        "message, and that this file is current. Every message names the argument. In the calls:",
        "",
        NAMESPACE_DOC,
        "| # | call | argument | exception | message |",
        "|---|---|---|---|---|",
    ]
    for i, case in enumerate(CASES, 1):
        lines.append(
            f"| {i} | `{_cell(case.call)}` | `{_cell(case.argument)}` | {case.exception.__name__} | {_cell(case.message)} |"
        )
    return "\n".join(lines) + "\n"


CASES = [
    BadInput('fa(q.numpy(), k, v)', 'query', TypeError, 'flashmask_attention: `query` must be a paddle.Tensor, got numpy.ndarray of shape [2, 16, 4, 8] and dtype float32'),
    BadInput('fa([[1.0]], k, v)', 'query', TypeError, 'flashmask_attention: `query` must be a paddle.Tensor, got [[1.0]] (list)'),
    BadInput('fa(None, k, v)', 'query', TypeError, 'flashmask_attention: `query` must be a paddle.Tensor, got None (NoneType)'),
    BadInput('fa(q, k, None)', 'value', TypeError, 'flashmask_attention: `value` must be a paddle.Tensor, got None (NoneType)'),
    BadInput('fa(q, k, v, idx, causal=True, fixed_seed_offset=paddle.zeros([3], "int64"), return_seed_offset=True)', 'fixed_seed_offset', ValueError, 'flashmask_attention: `fixed_seed_offset` must have shape [2] (seed, offset), got [3]'),
    BadInput('fa(q.astype("int32"), k, v)', 'query', TypeError, "flashmask_attention: `query` dtype must be one of ['float32', 'float16', 'bfloat16'] on CPU, got int32"),
    BadInput('fa(q, k.astype("float16"), v)', 'key', TypeError, "flashmask_attention: `key` dtype must match query's (float32), got float16"),
    BadInput('fa(q.reshape([2, 16, 32]), k, v)', 'query', ValueError, 'flashmask_attention: `query` must be a 4-D tensor [batch, seqlen_q, num_heads, head_dim], got shape [2, 16, 32]'),
    BadInput('fa(q, k, v[:, :8])', 'value', ValueError, "flashmask_attention: `value` must have key's shape [2, 16, 2, 8], got [2, 8, 2, 8]"),
    BadInput('fa(q, k[:1], v[:1])', 'key', ValueError, "flashmask_attention: `key` batch (1) must equal query's batch (2)"),
    BadInput('fa(q[:, :, :3], k, v)', 'query', ValueError, 'flashmask_attention: `query` num_heads (3) must be a multiple of `key` num_heads_k (2) (GQA/MQA)'),
    BadInput('fa(paddle.zeros([1, 8, 2, 300]), paddle.zeros([1, 8, 2, 300]), paddle.zeros([1, 8, 2, 300]))', 'query', ValueError, 'flashmask_attention: `query` head_dim must be in [1, 256], got 300 (shape [1, 8, 2, 300])'),
    BadInput('fa(paddle.zeros([1, 8, 2, 0]), paddle.zeros([1, 8, 2, 0]), paddle.zeros([1, 8, 2, 0]))', 'query', ValueError, 'flashmask_attention: `query` head_dim must be in [1, 256], got 0 (shape [1, 8, 2, 0])'),
    BadInput('fa(q[:0], k[:0], v[:0])', 'query', ValueError, 'flashmask_attention: `query` batch must be positive, got 0 (shape [0, 16, 4, 8])'),
    BadInput('fa(q[:0], k[:0], v[:0], idx[:0], causal=True)', 'query', ValueError, 'flashmask_attention: `query` batch must be positive, got 0 (shape [0, 16, 4, 8])'),
    BadInput('fa(q[:, :0], k, v)', 'query', ValueError, 'flashmask_attention: `query` seqlen_q must be positive, got 0 (shape [2, 0, 4, 8])'),
    BadInput('core.check_shapes((1, 2**31 + 64, 1, 1), (1, 8, 1, 1), (1, 8, 1, 1))', 'query', ValueError, 'flashmask_attention: `query` seqlen_q must be at most 2147483647 (the kernels take each dimension as a 32-bit int), got 2147483712 (shape [1, 2147483712, 1, 1])'),
    BadInput('core.check_shapes((1, 8, 1, 64), (1, 8, 2**31, 64), (1, 8, 2**31, 64))', 'key', ValueError, 'flashmask_attention: `key` num_heads_k must be at most 2147483647 (the kernels take each dimension as a 32-bit int), got 2147483648 (shape [1, 8, 2147483648, 64])'),
    BadInput('core.check_device_limits(core.check_shapes((70000, 16, 4, 8), (70000, 16, 2, 8), (70000, 16, 2, 8)), on_gpu=True)', 'query', ValueError, 'flashmask_attention: `query` batch must be at most 65535 on GPU (a CUDA grid dimension), got 70000'),
    BadInput('core.check_device_limits(core.check_shapes((1, 8, 4, 8), (1, 2**29 + 1, 2, 8), (1, 2**29 + 1, 2, 8)), on_gpu=True)', 'key', ValueError, 'flashmask_attention: `key` seqlen_k must be at most 536870912 on GPU (the longest sequence the kernels index), got 536870913'),
    BadInput('core.check_mask_shapes(core.check_shapes((-1, -1, 4, 8), (-1, -1, 2, 8), (-1, -1, 2, 8)), True, (-1, 1, -1, -1))', 'startend_row_indices', ValueError, 'flashmask_attention: `startend_row_indices` num_bounds (its last dimension, 1, 2 or 4) must be known in a static graph, got shape [-1, 1, -1, -1]'),
    BadInput('fa(q, k, v, idx.astype(np.int64), causal=True)', 'startend_row_indices', TypeError, 'flashmask_attention: `startend_row_indices` dtype must be int32, got int64'),
    BadInput('fa(q, k, v, idx.astype(np.float32), causal=True)', 'startend_row_indices', TypeError, 'flashmask_attention: `startend_row_indices` dtype must be int32, got float32'),
    BadInput('fa(q, k, v, idx.tolist(), causal=True)', 'startend_row_indices', TypeError, 'flashmask_attention: `startend_row_indices` must be a paddle.Tensor or numpy.ndarray, got list'),
    BadInput('fa(q, k, v, idx[0], causal=True)', 'startend_row_indices', ValueError, 'flashmask_attention: `startend_row_indices` must be a 4-D tensor [batch, num_mask_heads, seqlen_k, num_bounds] = [2, 1|2|4, 16, 1|2|4], got shape [1, 16, 1]'),
    BadInput('fa(q, k, v, idx[:1], causal=True)', 'startend_row_indices', ValueError, 'flashmask_attention: `startend_row_indices` must have shape [2, 1|2|4, 16, 1|2|4], got [1, 1, 16, 1]'),
    BadInput('fa(q, k, v, np.repeat(idx, 3, axis=1), causal=True)', 'startend_row_indices', ValueError, 'flashmask_attention: `startend_row_indices` must have shape [2, 1|2|4, 16, 1|2|4], got [2, 3, 16, 1]'),
    BadInput('fa(q, k, v, np.repeat(idx, 4, axis=3), causal=True)', 'startend_row_indices', ValueError, 'flashmask_attention: startend_row_indices.shape[-1] must be 1 or 2 when causal=True, got 4'),
    BadInput('fa(q, k, v, idx, causal=False)', 'startend_row_indices', ValueError, 'flashmask_attention: startend_row_indices.shape[-1] must be 2 or 4 when causal=False, got 1'),
    BadInput('fa(q, k, v, masks.full_mask(16, batch=2), causal=True)', 'causal', ValueError, "flashmask_attention: `causal=True` disagrees with the MaskSpec given as `startend_row_indices` (built for causal=False); leave `causal` at its default to use the spec's"),
    BadInput('fa(q, k, v, softmax_scale=float("nan"))', 'softmax_scale', ValueError, 'flashmask_attention: `softmax_scale` must be finite, got nan'),
    BadInput('fa(q, k, v, softmax_scale=float("inf"))', 'softmax_scale', ValueError, 'flashmask_attention: `softmax_scale` must be finite, got inf'),
    BadInput('fa(q, k, v, softmax_scale="abc")', 'softmax_scale', TypeError, "flashmask_attention: `softmax_scale` must be a real number, got 'abc' (str)"),
    BadInput('fa(q, k, v, softmax_scale=True)', 'softmax_scale', TypeError, 'flashmask_attention: `softmax_scale` must be a real number, got True (bool)'),
    BadInput('fa(q, k, v, softmax_scale=-0.5)', 'softmax_scale', ValueError, 'flashmask_attention: `softmax_scale` must be > 0, got -0.5'),
    BadInput('fa(q, k, v, causal="False")', 'causal', TypeError, "flashmask_attention: `causal` must be a bool, got 'False' (str)"),
    BadInput('fa(q, k, v, causal=1)', 'causal', TypeError, 'flashmask_attention: `causal` must be a bool, got 1 (int)'),
    BadInput('fa(q, k, v, causal=None)', 'causal', TypeError, 'flashmask_attention: `causal` must be a bool, got None (NoneType)'),
    BadInput('fa(q, k, v, window_size=(1, 2, 3))', 'window_size', ValueError, 'flashmask_attention: `window_size` must be an int or a (left, right) pair, got 3 values'),
    BadInput('fa(q, k, v, window_size=-1)', 'window_size', ValueError, 'flashmask_attention: `window_size` must be >= 0, got -1'),
    BadInput('fa(q, k, v, window_size=2.5)', 'window_size', TypeError, 'flashmask_attention: `window_size` must be an int or a (left, right) pair of ints, got 2.5 (float)'),
    BadInput('fa(q, k, v, window_size=True)', 'window_size', TypeError, 'flashmask_attention: `window_size` must be an int or a (left, right) pair of ints, got True (bool)'),
    BadInput('fa(q, k, v, window_size=("a", 1))', 'window_size[0]', TypeError, "flashmask_attention: `window_size[0]` must be an int, got 'a' (str)"),
    BadInput('fa(q, k, v, idx, causal=True, window_size=3)', 'window_size', ValueError, 'flashmask_attention: pass either `window_size` or `startend_row_indices`, not both'),
    BadInput('fa(q, k, v, dropout="0.1")', 'dropout', TypeError, "flashmask_attention: `dropout` must be a real number, got '0.1' (str)"),
    BadInput('fa(q, k, v, dropout=float("nan"))', 'dropout', ValueError, 'flashmask_attention: `dropout` must be finite, got nan'),
    BadInput('fa(q, k, v, dropout=1.5, training=False)', 'dropout', ValueError, 'flashmask_attention: `dropout` must be in [0.0, 1.0), got 1.5'),
    BadInput('fa(q, k, v, dropout=0.1)', 'dropout', NotImplementedError, 'flashmask_attention: dropout=0.1 is not implemented by paddle_flashmask; pass dropout=0.0 (or training=False, where dropout does not apply)'),
    BadInput('fa(q, k, v, training="yes")', 'training', TypeError, "flashmask_attention: `training` must be a bool, got 'yes' (str)"),
    BadInput('fa(q, k, v, return_softmax_lse="no")', 'return_softmax_lse', TypeError, "flashmask_attention: `return_softmax_lse` must be a bool, got 'no' (str)"),
    BadInput('fa(q, k, v, idx, causal=True, block_mask=np.full((2, 1, 1, 1), 2, np.int32))', 'block_mask', ValueError, 'flashmask_attention: `block_mask` values must be 0 (mask the block) or 1 (keep it), got 2 at [0, 0, 0, 0]'),
    BadInput('fa(q, k, v, idx, causal=True, block_mask=np.ones((2, 1, 2, 1), np.int32))', 'block_mask', ValueError, 'flashmask_attention: `block_mask` must have shape [batch, num_mask_heads, ceil(seqlen_q/128), ceil(seqlen_k/128)] = [2, 1, 1, 1], got [2, 1, 2, 1]'),
    BadInput('fa(q, k, v, idx, causal=True, block_mask=np.ones((2, 1, 1, 1), np.int64))', 'block_mask', TypeError, 'flashmask_attention: `block_mask` dtype must be int32, got int64'),
    BadInput('fa(q, k, v, idx, causal=True, block_mask=[[1]])', 'block_mask', TypeError, 'flashmask_attention: `block_mask` must be a paddle.Tensor or numpy.ndarray, got [[1]] (list)'),
    BadInput('fa(q, k, v, block_mask=np.ones((2, 1, 1, 1), np.int32))', 'block_mask', ValueError, 'flashmask_attention: `block_mask` must be used together with `startend_row_indices`'),
    BadInput('fa(q, k, v, window_size=2, block_mask=np.ones((2, 1, 1, 1), np.int32))', 'block_mask', ValueError, 'flashmask_attention: `block_mask` must be used together with `startend_row_indices`'),
    BadInput('tfa(tq, tk, tv)', 'query', ValueError, 'flashmask_attention: `query` must be a CUDA tensor (this binding runs on GPU only), got one on cpu'),
    BadInput('tfa(tq.numpy(), tk, tv)', 'query', TypeError, 'flashmask_attention: `query` must be a torch.Tensor, got numpy.ndarray of shape [2, 16, 4, 8] and dtype float16'),
    BadInput('tfa(q, k, v)', 'query', TypeError, 'flashmask_attention: `query` must be a torch.Tensor, got paddle.Tensor'),
    BadInput('masks.causal_mask(16.0)', 'seqlen', TypeError, 'causal_mask: `seqlen` must be an int, got 16.0 (float)'),
    BadInput('masks.causal_mask(0)', 'seqlen', ValueError, 'causal_mask: `seqlen` must be >= 1, got 0'),
    BadInput('masks.sliding_window_mask(16, -1)', 'window', ValueError, 'sliding_window_mask: `window` must be >= 0, got -1'),
    BadInput('masks.causal_document_mask([3, 0])', 'doc_lengths[1]', ValueError, 'causal_document_mask: `doc_lengths[1]` must be >= 1, got 0'),
    BadInput('masks.causal_document_mask("3,4")', 'doc_lengths', TypeError, "causal_document_mask: `doc_lengths` must be a list, got '3,4' (str)"),
    BadInput('masks.share_question_mask([(2, [1, 0])])', 'documents[0][1][1]', ValueError, 'share_question_mask: `documents[0][1][1]` must be >= 1, got 0'),
    BadInput('masks.prefix_lm_causal_mask(8, 9)', 'prefix_length', ValueError, 'prefix_lm_causal_mask: `prefix_length` must be in [0, 8], got 9'),
    BadInput('masks.qk_sparse_mask(8, [(5, 2)])', 'spans[0]', ValueError, 'qk_sparse_mask: `spans[0]` must be (start, end) with 0 <= start < end <= 8, got [5, 2]'),
    BadInput('masks.random_eviction_mask(8, 2, evict_fraction=float("nan"))', 'evict_fraction', ValueError, 'random_eviction_mask: `evict_fraction` must be finite, got nan'),
    BadInput('masks.window_size_to_indices((1,), True, 8, 8)', 'window_size', ValueError, 'window_size_to_indices: `window_size` must be an int or a (left, right) pair, got 1 values'),
    BadInput('masks.to_dense(idx)', 'causal', TypeError, 'to_dense: `causal` (a bool) is needed unless `startend_row_indices` is a MaskSpec'),
    BadInput('masks.to_dense(idx.astype(np.float32), True)', 'startend_row_indices', TypeError, 'to_dense: `startend_row_indices` must have an integer dtype, got float32'),
    BadInput('masks.to_dense(masks.causal_mask(8), causal=False)', 'causal', ValueError, "to_dense: `causal=False` disagrees with the MaskSpec's causal=True"),
    BadInput('masks.to_dense(idx, True, block_mask=np.full((2, 1, 1, 1), 3))', 'block_mask', ValueError, 'to_dense: `block_mask` values must be 0 or 1, got [3]'),
    BadInput('masks.from_dense(np.full((4, 4), 2))', 'allowed', ValueError, 'from_dense: `allowed` values must be 0 or 1, got [2]'),
    BadInput('masks.from_dense(np.ones(4, bool))', 'allowed', ValueError, 'from_dense: `allowed` must be a non-empty [Sq, Sk] or [B, Hm, Sq, Sk] array, got shape [4]'),
    BadInput('masks.render_text("abc")', 'allowed', TypeError, "render_text: `allowed` must be a numpy.ndarray, got 'abc' (str)"),
    BadInput('masks.save_png(masks.causal_mask(4), 123)', 'path', TypeError, 'save_png: `path` must be a str or os.PathLike, got 123 (int)'),
    BadInput('masks.expand_mask_heads(np.ones((1, 3, 4, 4), bool), 4, 2)', 'mask', ValueError, 'expand_mask_heads: `mask` has 3 heads; expected 1, num_heads_k=2 or num_heads=4'),
    BadInput('PackedSFTCollator(0, 0, True)', 'max_seq_len', ValueError, 'PackedSFTCollator: `max_seq_len` must be >= 1, got 0'),
    BadInput('PackedSFTCollator(16, 0, "yes")', 'flashmask', TypeError, "PackedSFTCollator: `flashmask` must be a bool, got 'yes' (str)"),
    BadInput('pack_greedily(["a"], [1, 2], 4)', 'lengths', ValueError, 'pack_greedily: `lengths` must have one entry per example (1), got 2'),
    BadInput('pack_greedily(["a"], [5], 4)', 'lengths[0]', ValueError, 'pack_greedily: `lengths[0]` (5) must be at most `max_seq_len` (4)'),
    BadInput('routed_indices(paddle.zeros([1, 8]))', 'attn_mask_startend_row_indices', TypeError, 'paddle_flashmask.paddlenlp: `attn_mask_startend_row_indices` dtype must be int32 or int64, got paddle.float32'),
    BadInput('routed_indices(paddle.zeros([1, 1, 1, 1, 8], "int32"))', 'attn_mask_startend_row_indices', ValueError, 'paddle_flashmask.paddlenlp: `attn_mask_startend_row_indices` must be [batch, seqlen] or [batch, num_mask_heads, seqlen], got shape [1, 1, 1, 1, 8]'),
    BadInput('routed_indices(np.zeros((1, 8), np.int32))', 'attn_mask_startend_row_indices', TypeError, 'paddle_flashmask.paddlenlp: `attn_mask_startend_row_indices` must be a paddle.Tensor, got numpy.ndarray of shape [1, 8] and dtype int32'),
]

if __name__ == "__main__":
    print(render(), end="")
