"""CUDA kernels vs an fp32 reference, through paddle_flashmask.torch.

Every case draws fresh random inputs (the seed is printed), outputs are
NaN-poisoned before each launch (FLASHMASK_POISON=1, see conftest.py), and
errors are judged by FlashAttention's rule: our error against the fp32
reference is at most 2x that of a plain low-precision PyTorch computation.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import numpy as np
import pytest

from paddle_flashmask import masks
from paddle_flashmask._kernels import COMPILED_HEAD_DIMS
from paddle_flashmask.masks.spec import block_count
from tests import mask_cases, tolerance
from tests.gpu.helpers import (
    assert_close_fa,
    attention_grads_lowp,
    attention_ref,
    dense_allowed,
    fresh_seed,
    rng_for,
)
from tests.random_bounds import BOUND_FORMS, random_bounds
from tests.score_ramps import ramp_factors

torch = pytest.importorskip("torch")

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _run_case(
    idx,
    causal,
    *,
    batch=2,
    seqlen_q=None,
    seqlen_k=None,
    heads=4,
    heads_k=2,
    head_dim=128,
    dtype=torch.bfloat16,
    scale=None,
    block_mask=None,
    seed=None,
    roundoff_floor=False,
    pass_indices=True,
    window_size=None,
    key_ramp=None,
):
    """pass_indices=False calls without startend_row_indices: with `window_size` if given,
    else without a mask (idx must then mask what the call means; the reference reads it).
    key_ramp=(step, rising): positive queries and keys scaled by score_ramps.ramp_factors."""
    from paddle_flashmask.torch import flashmask_attention

    seed = fresh_seed() if seed is None else seed
    g = torch.Generator(device="cuda").manual_seed(seed)
    seqlen_k = idx.shape[2] if seqlen_k is None else seqlen_k
    seqlen_q = seqlen_k if seqlen_q is None else seqlen_q
    dev = "cuda"
    q = torch.randn(batch, seqlen_q, heads, head_dim, device=dev, generator=g).to(dtype)
    k = torch.randn(batch, seqlen_k, heads_k, head_dim, device=dev, generator=g).to(dtype)
    if key_ramp is not None:
        factors = torch.from_numpy(ramp_factors(seqlen_k, *key_ramp)).to(dev)
        q, k = q.abs(), (k.float().abs() * factors[None, :, None, None]).to(dtype)
    v = torch.randn(batch, seqlen_k, heads_k, head_dim, device=dev, generator=g).to(dtype)
    dout = torch.randn(batch, seqlen_q, heads, head_dim, device=dev, generator=g).to(dtype)
    sc = head_dim**-0.5 if scale is None else scale
    allowed = dense_allowed(torch, idx, causal, seqlen_q, block_mask, heads, heads_k, dev)

    qs, ks, vs = (t.detach().clone().requires_grad_() for t in (q, k, v))
    out, lse = flashmask_attention(
        qs, ks, vs, idx if pass_indices else None, causal=causal, window_size=window_size, softmax_scale=scale,
        block_mask=block_mask, return_softmax_lse=True,
    )
    qr, kr, vr = (t.detach().clone().float().requires_grad_() for t in (q, k, v))
    out_ref, lse_ref = attention_ref(torch, qr, kr, vr, allowed, sc, upcast=True)
    out_pt, _ = attention_ref(torch, q, k, v, allowed, sc, upcast=False)

    assert_close_fa("out", out, out_ref, out_pt)
    # lse: same -inf pattern, finite values close to fp32.
    assert not torch.isnan(lse).any(), "lse: NaN"
    inf_ours, inf_ref = torch.isinf(lse), torch.isinf(lse_ref)
    assert torch.equal(inf_ours, inf_ref), "lse: -inf pattern differs"
    fin = ~inf_ref
    if fin.any():
        lse_err = (lse[fin] - lse_ref[fin]).abs().max().item()
        assert lse_err < 2e-3, f"lse err {lse_err}"
    out.backward(dout)
    out_ref.backward(dout.float())
    grads_pt = attention_grads_lowp(torch, q, k, v, out_pt, dout, allowed, sc)
    floors = (0.0, 0.0, 0.0)
    if roundoff_floor:
        # Random shapes reach results that are sums of cancelling terms, and calls of a few
        # tokens whose dq/dk error is mostly the kernel's own roundings: D's from its rounded
        # output (tolerance.BackwardTerms.output_rounding_shift; the fuzz found fp16 calls of 1 x 10 and
        # 2 x 2) and P's and dS's to the dtype before their products (operand_rounding_shift;
        # fp16 2 x 2, dk 1.02x the tolerance without it).
        as64 = lambda t: t.detach().double().cpu().numpy()  # noqa: E731
        args = [as64(t) for t in (qr, kr, vr, dout, out_ref)]
        mask64, lse64 = as64(allowed).astype(bool), as64(lse_ref)
        terms = tolerance.BackwardTerms(*args, mask64, lse64, sc)
        sizes = terms.term_sizes()
        shifts = terms.output_rounding_shift(as64(out) - args[4])
        operands = terms.operand_rounding_shift(str(dtype).removeprefix("torch."))
        floors = tuple(
            tolerance.roundoff_floor(s) + d + r for s, d, r in zip(sizes, shifts + (0.0,), operands)
        )
    for name, a, r, p, floor in zip(
        ("dq", "dk", "dv"), (qs.grad, ks.grad, vs.grad), (qr.grad, kr.grad, vr.grad), grads_pt, floors
    ):
        assert_close_fa(name, a, r, p, floor=floor)
    return out


# ---------------------------------------------------------------- mask builders
@pytest.mark.parametrize("name", mask_cases.NAMES)
def test_mask_builders(name):
    spec = mask_cases.builder_case(name, 2, fresh_seed())
    _run_case(spec.startend_row_indices, spec.causal)


@pytest.mark.parametrize("name", ["causal_document", "share_question", "random_eviction"])
def test_mask_builders_hdim64_fp16(name):
    spec = mask_cases.builder_case(name, 2, fresh_seed())
    _run_case(spec.startend_row_indices, spec.causal, head_dim=64, dtype=torch.float16)


# ---------------------------------------------------------------- random bounds
@pytest.mark.parametrize("causal,nb", BOUND_FORMS)
@pytest.mark.parametrize("mask_heads", ["1", "hk", "h"])
@pytest.mark.parametrize("sq,sk", [(257, 257), (200, 333), (333, 200)])
def test_random_bounds(causal, nb, mask_heads, sq, sk):
    seed = fresh_seed()
    heads, heads_k = 4, 2
    hm = {"1": 1, "hk": heads_k, "h": heads}[mask_heads]
    idx = random_bounds(rng_for(seed), 2, hm, sq, sk, nb, causal)
    dtype = torch.float16 if seed % 2 else torch.bfloat16
    _run_case(idx, causal, seqlen_q=sq, seqlen_k=sk, heads=heads, heads_k=heads_k, dtype=dtype, seed=seed)


@pytest.mark.parametrize("causal,nb", BOUND_FORMS)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_random_bounds_hdim256(causal, nb, dtype):
    """head_dim 256 (its own Hopper tile shapes): GQA, per-head masks, odd lengths."""
    seed = fresh_seed()
    idx = random_bounds(rng_for(seed), 2, 4, 200, 333, nb, causal)
    _run_case(idx, causal, seqlen_q=200, seqlen_k=333, head_dim=256, dtype=getattr(torch, dtype), seed=seed)


@pytest.mark.parametrize("causal,nb", BOUND_FORMS)
@pytest.mark.parametrize("head_dim", COMPILED_HEAD_DIMS)
def test_mma_sync_kernels_on_hopper(monkeypatch, causal, nb, head_dim):
    """FLASHMASK_DISABLE_SM90=1 selects the mma.sync kernels, so they stay tested on Hopper."""
    monkeypatch.setenv("FLASHMASK_DISABLE_SM90", "1")
    seed = fresh_seed()
    idx = random_bounds(rng_for(seed), 2, 4, 200, 333, nb, causal)
    _run_case(idx, causal, seqlen_q=200, seqlen_k=333, head_dim=head_dim, seed=seed)


# ---------------------------------------------------------------- persistent schedule
@pytest.mark.parametrize("with_block_mask", [True, False])
@pytest.mark.parametrize("head_dim", COMPILED_HEAD_DIMS)
def test_persistent_schedule(head_dim, with_block_mask):
    """More query blocks than SMs, so each persistent forward CTA runs several items
    (list and Q buffers reused, ring phases and consumer turns carried across items);
    per-head causal documents of random lengths, so blocks have very unequal work and the
    longest-first order differs per head; block-mask rows of zeros, so some items have no
    key tile. Without the block mask, D=64 runs its three-consumer forward (192-row blocks)."""
    seed = fresh_seed()
    rng = rng_for(seed)
    batch, heads, seqlen = 3, 8, 1500  # 12 query blocks (8 of 192 rows) x 24 (batch, head) = 288 (192) items
    idx = np.empty((batch, heads, seqlen, 1), dtype=np.int32)
    for bi in range(batch):
        for hi in range(heads):
            cuts = np.sort(rng.choice(np.arange(1, seqlen), size=int(rng.integers(1, 6)), replace=False))
            lens = np.diff(np.concatenate([[0], cuts, [seqlen]])).tolist()
            idx[bi, hi] = masks.causal_document_mask([lens]).startend_row_indices[0, 0]
    blocks = block_count(seqlen)
    bm = np.ones((batch, heads, blocks, blocks), dtype=np.int32)
    for bi in range(batch):
        for hi in range(heads):
            bm[bi, hi, rng.choice(blocks, size=2, replace=False)] = 0
    _run_case(idx, True, batch=batch, heads=heads, heads_k=heads // 2, head_dim=head_dim,
              block_mask=bm if with_block_mask else None, seed=seed)


def test_tail_order_kernel(tmp_path):
    """tail_order_kernel (csrc/cuda/tail_order.cuh) writes the order its definition gives, on
    the schedules of tests/tail_order_check.cu and 200 random ones (its device part)."""
    nvcc = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    if not os.path.exists(nvcc):
        pytest.skip("nvcc not found")
    exe = tmp_path / "tail_order_check"
    subprocess.run([nvcc, "-std=c++17", "-O2", "-arch=native", f"-I{ROOT / 'csrc' / 'cuda'}",
                    str(ROOT / "tests" / "tail_order_check.cu"), "-o", str(exe)], check=True)
    run = subprocess.run([str(exe)], capture_output=True, text=True)
    assert run.returncode == 0 and "ok (host and device)" in run.stdout, run.stdout + run.stderr


@pytest.mark.parametrize("head_dim", COMPILED_HEAD_DIMS)
def test_tail_order_moves_long_items(head_dim):
    """global_sliding_window over 32 (batch, head) rows: the global rows of the last heads'
    (forward) and their global columns (backward) are items of every tile that the tail order
    moves to the front (tail_order.cuh); every item must still run once."""
    spec = masks.global_sliding_window_mask(2048, 128, 256, batch=2)
    _run_case(spec.startend_row_indices, spec.causal, batch=2, heads=16, heads_k=8, head_dim=head_dim)


D64_FWD_BLOCK_ROWS, D64_SHIFT_STEP = 192, 64  # flashmask_launch.cuh, preprocess.h: FwdRowShifts


@pytest.mark.parametrize("seqlen", [4000, 4096])
@pytest.mark.parametrize("candidate", [0, 1, 2])
def test_row_shift_choice(seqlen, candidate):
    """The D=64 forward chooses its query blocks' shift per call among three candidates
    (preprocess.h: FwdRowShifts). A global_sliding_window mask whose global rows end on one
    candidate's block edge makes that candidate the cheapest (under the others one block
    straddles the edge, partial on every key tile past the band, by more than the choice's
    margin; tests/test_tile_cost_fit.py counts it), so each case runs the kernel under a
    different shift, with a ragged block at both ends for two of them; the output must not
    depend on it."""
    first = (D64_FWD_BLOCK_ROWS - seqlen % D64_FWD_BLOCK_ROWS) % D64_FWD_BLOCK_ROWS
    shift = (first + candidate * D64_SHIFT_STEP) % D64_FWD_BLOCK_ROWS
    global_tokens = D64_FWD_BLOCK_ROWS + (D64_FWD_BLOCK_ROWS - shift) % D64_FWD_BLOCK_ROWS  # a block edge
    spec = masks.global_sliding_window_mask(seqlen, global_tokens, 64)
    _run_case(spec.startend_row_indices, spec.causal, batch=1, heads=2, heads_k=1, head_dim=64)


@pytest.mark.parametrize("head_dim", COMPILED_HEAD_DIMS)
def test_consumers_pass_unseen_tiles(head_dim):
    """A Hopper forward consumer (64 query rows) passes the key tiles at the ends of its block's
    list whose keys its rows do not see (FwdItemRecord's busy ranges, tile_scheduler.cuh), the
    scheduler looking at most 32 tiles in from each end. Causal documents of 5000 and 333 tokens:
    the blocks across their boundary have consumers blind to the first document's ~40 key tiles
    (more than 32, at the list's end) and others blind to the second's diagonal tiles (at its
    start); a sliding window cuts the blocks' first and last tiles."""
    spec = masks.causal_document_mask([[5000, 333]])
    _run_case(spec.startend_row_indices, spec.causal, batch=1, heads=2, heads_k=1, head_dim=head_dim)
    spec = masks.sliding_window_mask(2000, 300)
    _run_case(spec.startend_row_indices, spec.causal, batch=1, heads=2, heads_k=1, head_dim=head_dim)


# ---------------------------------------------------------------- odd lengths
@pytest.mark.parametrize("seqlen", [1, 17, 127, 129, 1000, 8191])
@pytest.mark.parametrize("causal,nb", [(True, 2), (False, 4), (True, 1)])
def test_odd_lengths(seqlen, causal, nb):
    seed = fresh_seed()
    big = seqlen > 4096
    idx = random_bounds(rng_for(seed), 1 if big else 2, 1, seqlen, seqlen, nb, causal)
    if big:  # sparse enough bounds that the dense fp32 reference still fits
        _run_case(idx, causal, batch=1, heads=2, heads_k=1, head_dim=64, seed=seed)
    else:
        _run_case(idx, causal, seed=seed)


@pytest.mark.parametrize("sq,sk", [(1, 129), (129, 1), (17, 1000), (1000, 17), (127, 8191)])
@pytest.mark.parametrize("causal", [True, False])
def test_unequal_lengths_plain(sq, sk, causal):
    idx = None
    spec = masks.causal_mask(sk) if causal else masks.full_mask(sk)
    idx = np.ascontiguousarray(np.broadcast_to(spec.startend_row_indices, (2,) + spec.startend_row_indices.shape[1:]))
    if causal:
        idx = np.full_like(idx, sq)  # causal, nothing else masked
    else:
        idx[..., 0] = sq
    _run_case(idx, causal, seqlen_q=sq, seqlen_k=sk, head_dim=64)


# Without a mask: non-causal D=128 calls take the Hopper forward's 176-key tiles
# (KernelSet::FwdSm90Wide), whose last tile is partial unless seqlen_k is a multiple of 176.
@pytest.mark.parametrize("sq,sk", [(1000, 1000), (176, 176), (177, 353), (1, 175), (352, 1), (8191, 8191)])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("head_dim,dtype", [(128, "bfloat16"), (128, "float16"), (64, "bfloat16")])
def test_no_mask(sq, sk, causal, head_dim, dtype):
    from paddle_flashmask.masks.builders import no_mask_indices

    big = sq * sk > 1 << 24
    idx = no_mask_indices(causal, 1 if big else 2, sq, sk)
    kw = dict(batch=1, heads=2, heads_k=1) if big else dict(heads=4, heads_k=2)
    # One key: dS = P (dP - D) cancels to 0 exactly, so the reference's own roundoff (the fp64
    # floor, cheap at this size) is the allowance there.
    _run_case(idx, causal, seqlen_q=sq, seqlen_k=sk, head_dim=head_dim, dtype=getattr(torch, dtype),
              pass_indices=False, roundoff_floor=sk == 1, **kw)


# ---------------------------------------------------------------- head dims, dtypes
@pytest.mark.parametrize("head_dim", COMPILED_HEAD_DIMS + (32, 80))  # 32, 80: padded
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_head_dims(head_dim, dtype):
    seed = fresh_seed()
    idx = random_bounds(rng_for(seed), 2, 2, 300, 300, 2, True)
    _run_case(idx, True, head_dim=head_dim, dtype=getattr(torch, dtype), seed=seed)


@pytest.mark.parametrize("heads,heads_k", [(8, 1), (8, 8), (6, 3)])
def test_gqa_mqa(heads, heads_k):
    seed = fresh_seed()
    idx = random_bounds(rng_for(seed), 2, heads, 300, 300, 4, False)
    _run_case(idx, False, heads=heads, heads_k=heads_k, seed=seed)


def test_softmax_scale():
    spec = masks.causal_document_mask([[100, 200, 211]] * 2)
    _run_case(spec.startend_row_indices, True, scale=0.3)


@pytest.mark.parametrize("head_dim", COMPILED_HEAD_DIMS)
@pytest.mark.parametrize("step", [1.5, 0.5])
@pytest.mark.parametrize("rising", [True, False])
@pytest.mark.parametrize("causal,masked", [(True, True), (False, True), (False, False)])
def test_scores_jumping_by_key_blocks(head_dim, step, rising, causal, masked):
    """Key tiles whose scores jump past the lazy rescaling's slack (step 1.5: ~14 log2 units
    per 64 keys) or stay within it (0.5: ~5), in either tile order (score_ramps.py); masked=False
    calls without a mask (D=128's 176-key forward)."""
    from paddle_flashmask.masks.builders import no_mask_indices

    seed = fresh_seed()
    sq, sk = 200, 320
    idx = random_bounds(rng_for(seed), 2, 2, sq, sk, 1 if causal else 2, causal) if masked else no_mask_indices(
        causal, 2, sq, sk
    )
    _run_case(idx, causal, seqlen_q=sq, seqlen_k=sk, head_dim=head_dim, seed=seed, roundoff_floor=True,
              pass_indices=masked, key_ramp=(step, rising))


# ---------------------------------------------------------------- block mask
@pytest.mark.parametrize("causal,nb", [(True, 1), (False, 4)])
def test_block_mask(causal, nb):
    seed = fresh_seed()
    rng = rng_for(seed)
    sq = sk = 600
    idx = random_bounds(rng, 2, 2, sq, sk, nb, causal)
    bm = (rng.random((2, 2, block_count(sq), block_count(sk))) < 0.6).astype(np.int32)
    _run_case(idx, causal, block_mask=bm, seed=seed)


# ---------------------------------------------------------------- fully masked rows
def test_fully_masked_rows():
    from paddle_flashmask.torch import flashmask_attention

    s = 300
    idx = np.zeros((1, 1, s, 4), dtype=np.int32)
    idx[..., 0], idx[..., 1] = 50, 120  # rows [50, 120) masked everywhere
    idx[..., 2], idx[..., 3] = 0, 0
    idx[0, 0, :, 2], idx[0, 0, :, 3] = 250, 260  # and rows [250, 260)
    out = _run_case(idx, False, batch=1)
    assert out[:, 50:120].abs().max().item() == 0.0
    # Every key masked for every row (a causal bound of 0: every row masked from the start):
    # output 0, lse -inf, grads 0.
    q = torch.randn(1, 200, 2, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(1, 200, 2, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(1, 200, 2, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    idx = np.full((1, 1, 200, 1), 0, dtype=np.int32)
    o, lse = flashmask_attention(q, k, v, idx, causal=True, return_softmax_lse=True)
    assert o.abs().max().item() == 0 and torch.isneginf(lse).all()
    o.backward(torch.randn_like(o))
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all() and t.grad.abs().max().item() == 0


@pytest.mark.parametrize("head_dim", COMPILED_HEAD_DIMS)
@pytest.mark.parametrize("causal", [False, True])
def test_fully_masked_query_blocks(head_dim, causal):
    """Whole query blocks (128 or 192 rows) whose rows see no key, between blocks that do: the
    Hopper forward's items without key tiles, which still take a Q buffer where the output is
    staged in it and end the consumers' stream of tiles (flash). Rows [128, 448) see no key."""
    s = 900
    if causal:  # one bound: column j hides rows >= LTS[j] (and the rows above the diagonal)
        idx = np.full((1, 1, s, 1), s, dtype=np.int32)
        idx[0, 0, :128, 0] = 128
        idx[0, 0, 128:448, 0] = np.arange(128, 448)
    else:  # rows [LTS, LTE) and [UTS, UTE) hidden in every column
        idx = np.zeros((1, 1, s, 4), dtype=np.int32)
        idx[..., 0], idx[..., 1] = 128, 448
    out = _run_case(idx, causal, batch=1, head_dim=head_dim)
    assert out[:, 128:448].abs().max().item() == 0.0


# ---------------------------------------------------------------- deterministic
@pytest.mark.parametrize("head_dim", COMPILED_HEAD_DIMS)
def test_deterministic(monkeypatch, head_dim):
    from paddle_flashmask.torch import flashmask_attention

    seed = fresh_seed()
    idx = random_bounds(rng_for(seed), 2, 4, 1000, 1000, 2, True)
    g = torch.Generator(device="cuda").manual_seed(seed)
    q, k, v, do = (
        torch.randn(2, 1000, 4, head_dim, device="cuda", generator=g).to(torch.bfloat16) for _ in range(4)
    )

    def grads():
        qs, ks, vs = (t.clone().requires_grad_() for t in (q, k, v))
        flashmask_attention(qs, ks, vs, idx, causal=True).backward(do)
        return qs.grad, ks.grad, vs.grad

    monkeypatch.setenv("FLASHMASK_DETERMINISTIC", "1")
    a, b = grads(), grads()
    for x, y in zip(a, b):
        assert torch.equal(x, y), "deterministic grads differ run to run"
    monkeypatch.setenv("FLASHMASK_DETERMINISTIC", "0")
    c = grads()
    for x, y in zip(a, c):
        assert (x.float() - y.float()).abs().max().item() <= 2e-2 * max(1.0, x.float().abs().max().item())


# ---------------------------------------------------------------- long sequences
def test_long_sequence_128k():
    """128K tokens in one sequence: 2^34 (row, key) pairs, past any 32-bit pair index; reference
    per document. The tensors are 2^24 elements: the cases past 2^31 elements are the opt-in
    tests/gpu/test_scale.py's."""
    from paddle_flashmask.torch import flashmask_attention

    seqlen, doc, heads, d = 128 * 1024, 4096, 2, 64
    spec = masks.causal_document_mask([doc] * (seqlen // doc))
    g = torch.Generator(device="cuda").manual_seed(fresh_seed())
    q, k, v, do = (torch.randn(1, seqlen, heads, d, device="cuda", generator=g).to(torch.bfloat16) for _ in range(4))
    qs, ks, vs = (t.clone().requires_grad_() for t in (q, k, v))
    out = flashmask_attention(qs, ks, vs, spec.startend_row_indices, causal=True)
    out.backward(do)
    causal = torch.ones(doc, doc, device="cuda", dtype=torch.bool).tril()[None, None]
    for i in (0, 7, seqlen // doc - 1):  # a few documents, incl. the last
        sl = slice(i * doc, (i + 1) * doc)
        qr, kr, vr = (t[:, sl].detach().float().requires_grad_() for t in (q, k, v))
        qp, kp, vp = (t[:, sl] for t in (q, k, v))
        o_ref, _ = attention_ref(torch, qr, kr, vr, causal, d**-0.5, upcast=True)
        o_pt, _ = attention_ref(torch, qp, kp, vp, causal, d**-0.5, upcast=False)
        assert_close_fa(f"out doc {i}", out[:, sl], o_ref, o_pt)
        o_ref.backward(do[:, sl].float())
        grads_pt = attention_grads_lowp(torch, qp, kp, vp, o_pt, do[:, sl], causal, d**-0.5)
        for name, ours, ref, pt in zip(("dq", "dk", "dv"), (qs, ks, vs), (qr, kr, vr), grads_pt):
            assert_close_fa(f"{name} doc {i}", ours.grad[:, sl], ref.grad, pt)


# ---------------------------------------------------------------- API surface
def test_api_options():
    from paddle_flashmask.torch import flashmask_attention

    q = torch.randn(1, 130, 2, 64, device="cuda", dtype=torch.float16)
    out, lse, so = flashmask_attention(
        q, q, q, None, causal=True, window_size=(16, 0), return_softmax_lse=True, return_seed_offset=True
    )
    assert out.shape == q.shape and lse.shape == (1, 2, 130) and so.shape == (2,)
    idx = masks.window_size_to_indices((16, 0), True, 130, 130, 1)
    out2 = flashmask_attention(q, q, q, idx, causal=True)
    assert torch.equal(out, out2)
    with pytest.raises(NotImplementedError):
        flashmask_attention(q, q, q, None, dropout=0.1)
    with pytest.raises(TypeError):
        flashmask_attention(q.float(), q.float(), q.float())
    with pytest.raises(ValueError):
        flashmask_attention(q, q[:, :, :, :32], q)
