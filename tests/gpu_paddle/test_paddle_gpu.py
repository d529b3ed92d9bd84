"""The Paddle op on GPU, through Paddle: forward against the float64 reference,
gradients through paddle.grad, every bound form, GQA/MQA, mask heads, Sq != Sk, head
dims (64/128/256 compiled, others padded), float16 and bfloat16, block_mask, the
deterministic switch both ways, the head-dim/dtype policy, and bitwise parity with the
torch binding on the same inputs. See conftest.py for when these run."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import paddle
import pytest

import paddle_flashmask
from paddle_flashmask import masks
from paddle_flashmask.masks.spec import block_count
from tests.gpu_paddle.helpers import (
    DTYPES,
    assert_lse_close,
    fresh_seed,
    random_inputs,
    run_case,
    to_gpu,
    to_numpy,
)
from tests import mask_cases
from tests.random_bounds import BOUND_FORMS, random_bounds

os.environ.setdefault("FLASHMASK_POISON", "1")  # outputs NaN-filled before every launch
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


@pytest.mark.parametrize("causal,nb", BOUND_FORMS)
@pytest.mark.parametrize("mask_heads", ["1", "hk", "h"])
def test_random_bounds(causal, nb, mask_heads):
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    heads, heads_k, sq, sk = 4, 2, 200, 333
    hm = {"1": 1, "hk": heads_k, "h": heads}[mask_heads]
    idx = random_bounds(rng, 2, hm, sq, sk, nb, causal)
    run_case(rng, idx, causal, seqlen_q=sq, heads=heads, heads_k=heads_k, dtype=DTYPES[seed % 2])


@pytest.mark.parametrize("head_dim", [64, 128, 256, 96, 40])
@pytest.mark.parametrize("dtype", DTYPES)
def test_head_dims(head_dim, dtype):
    """64/128/256 run compiled kernels; 96 and 40 run padded to 128 and 64."""
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    idx = random_bounds(rng, 2, 2, 300, 300, 2, True)
    run_case(rng, idx, True, head_dim=head_dim, dtype=dtype)


@pytest.mark.parametrize("heads,heads_k", [(8, 1), (8, 8), (6, 3)])
def test_gqa_mqa(heads, heads_k):
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    idx = random_bounds(rng, 2, heads, 300, 300, 4, False)
    run_case(rng, idx, False, heads=heads, heads_k=heads_k, dtype=DTYPES[seed % 2])


@pytest.mark.parametrize("name", ["causal_document", "share_question", "sliding_window", "document"])
def test_mask_builders(name):
    seed = fresh_seed()
    spec = mask_cases.builder_case(name, 2, seed)
    run_case(np.random.default_rng(seed), spec.startend_row_indices, spec.causal)


@pytest.mark.parametrize("causal,nb", [(True, 1), (False, 4)])
def test_block_mask(causal, nb):
    rng = np.random.default_rng(fresh_seed())
    sq = sk = 600
    idx = random_bounds(rng, 2, 2, sq, sk, nb, causal)
    bm = (rng.random((2, 2, block_count(sq), block_count(sk))) < 0.6).astype(np.int32)
    run_case(rng, idx, causal, block_mask=bm)


def test_softmax_scale():
    rng = np.random.default_rng(fresh_seed())
    spec = masks.causal_document_mask([[100, 200, 211]] * 2)
    run_case(rng, spec.startend_row_indices, True, scale=0.3, dtype="float16")


def test_fully_masked_rows():
    """Rows with every key masked: output 0, lse -inf, zero gradients, never NaN."""
    rng = np.random.default_rng(fresh_seed())
    idx = np.zeros((1, 1, 300, 4), dtype=np.int32)
    idx[..., 0], idx[..., 1] = 50, 120  # rows [50, 120) masked for every key
    out, lse, grads = run_case(rng, idx, False, batch=1)
    assert np.abs(out[:, 50:120]).max() == 0.0 and np.isneginf(lse[:, :, 50:120]).all()
    assert np.abs(grads[0][:, 50:120]).max() == 0.0


def _grads(q, k, v, dout, idx, dtype):
    qt, kt, vt = (to_gpu(x, dtype, requires_grad=True) for x in (q, k, v))
    out = paddle_flashmask.flashmask_attention(qt, kt, vt, idx, causal=True)
    return [to_numpy(g) for g in paddle.grad([out], [qt, kt, vt], grad_outputs=[to_gpu(dout, dtype)])]


@pytest.mark.parametrize("switch", ["env", "flag"])
@pytest.mark.parametrize("head_dim", [64, 128, 256])
def test_deterministic(monkeypatch, switch, head_dim):
    """Bitwise equal gradients on repeat, switched on by FLASHMASK_DETERMINISTIC or by
    paddle.set_flags({'FLAGS_cudnn_deterministic': True})."""
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    idx = random_bounds(rng, 2, 4, 1000, 1000, 2, True)
    q, k, v, dout = random_inputs(rng, 2, 1000, 1000, 4, 4, head_dim, "bfloat16")
    if switch == "env":
        monkeypatch.setenv("FLASHMASK_DETERMINISTIC", "1")
    else:
        monkeypatch.delenv("FLASHMASK_DETERMINISTIC", raising=False)
        previous = paddle.get_flags(["FLAGS_cudnn_deterministic"])
        paddle.set_flags({"FLAGS_cudnn_deterministic": True})
    try:
        first, second = _grads(q, k, v, dout, idx, "bfloat16"), _grads(q, k, v, dout, idx, "bfloat16")
    finally:
        if switch == "flag":
            paddle.set_flags(previous)
    for a, b in zip(first, second):
        assert np.array_equal(a, b), "deterministic gradients differ run to run"


def test_refuses_float32_and_large_head_dim():
    """What the GPU kernels lack gets the same clear errors as through the torch binding."""
    x = to_gpu(np.zeros((1, 8, 2, 64), np.float32), "float32")
    with pytest.raises(TypeError, match="query"):
        paddle_flashmask.flashmask_attention(x, x, x, causal=True)
    y = to_gpu(np.zeros((1, 8, 2, 288), np.float32), "bfloat16")
    with pytest.raises(ValueError, match="head_dim"):
        paddle_flashmask.flashmask_attention(y, y, y, causal=True)


def test_return_softmax_lse_matches_reference():
    from paddle_flashmask import reference

    rng = np.random.default_rng(fresh_seed())
    idx = random_bounds(rng, 1, 2, 257, 257, 1, True)
    q, k, v, _ = random_inputs(rng, 1, 257, 257, 2, 2, 64, "float16")
    _, lse = paddle_flashmask.flashmask_attention(
        *(to_gpu(x, "float16") for x in (q, k, v)), idx, causal=True, return_softmax_lse=True
    )
    assert_lse_close(to_numpy(lse), reference.attention_forward(q, k, v, idx, True)[1])


def test_matches_torch_binding(tmp_path, monkeypatch):
    """The same inputs through the torch binding (another process: it loads its own
    libflashmask_cuda.so) give bitwise the same out, lse and deterministic gradients."""
    pytest.importorskip("torch")
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    idx = random_bounds(rng, 2, 2, 300, 333, 4, False)
    q, k, v, dout = random_inputs(rng, 2, 300, 333, 4, 2, 128, "bfloat16")
    np.savez(tmp_path / "inputs.npz", q=q, k=k, v=v, dout=dout, idx=idx)
    env = dict(os.environ, FLASHMASK_DETERMINISTIC="1")
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "torch_side.py"), str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )
    if proc.returncode == 3:  # torch_side.py: no CUDA torch or no libflashmask_cuda.so
        pytest.skip(proc.stdout.strip())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    theirs = np.load(tmp_path / "outputs.npz")

    monkeypatch.setenv("FLASHMASK_DETERMINISTIC", "1")
    qt, kt, vt = (to_gpu(x, "bfloat16", requires_grad=True) for x in (q, k, v))
    out, lse = paddle_flashmask.flashmask_attention(qt, kt, vt, idx, causal=False, return_softmax_lse=True)
    grads = paddle.grad([out], [qt, kt, vt], grad_outputs=[to_gpu(dout, "bfloat16")])
    ours = dict(out=to_numpy(out), lse=to_numpy(lse), **{n: to_numpy(g) for n, g in zip(("dq", "dk", "dv"), grads)})
    for name, value in ours.items():
        assert np.array_equal(value, theirs[name]), f"{name} differs from the torch binding's"


def test_parity_with_paddle_flashmask_attention():
    """Where Paddle has its own GPU flashmask_attention (Paddle >= 3.0), ours agrees."""
    import paddle.nn.functional as F

    native = getattr(F, "flashmask_attention", None)
    if native is None or native is paddle_flashmask.flashmask_attention:
        pytest.skip(f"Paddle {paddle.__version__} has no flashmask_attention of its own")
    rng = np.random.default_rng(fresh_seed())
    spec = masks.causal_document_mask([[300, 200, 500]] * 2)
    q, k, v, _ = random_inputs(rng, 2, 1000, 1000, 4, 4, 128, "bfloat16")
    args = [to_gpu(x, "bfloat16") for x in (q, k, v)]
    idx = paddle.to_tensor(spec.startend_row_indices, place=args[0].place)
    ours = to_numpy(paddle_flashmask.flashmask_attention(*args, idx, causal=True))
    theirs = to_numpy(native(*args, idx, causal=True))
    assert np.abs(ours - theirs).max() <= 2e-2 * max(1.0, np.abs(theirs).max())
