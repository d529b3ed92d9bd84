"""Scale tests of the Hopper kernels (issue 16): a packed 1M-token sequence, causal at 512K,
an input of more than 2^31 elements and lists of several segments with gaps and partial
tiles (banded 4-bound masks, GQA and every mask-head count, D=64/128/256), forward and
backward, against float32 references
on sampled rows and columns computed exactly (per document, or in row chunks on the GPU:
never a materialised N x N matrix).

Opt-in: FLASHMASK_SCALE_TESTS=1 (they take minutes and tens of GB); the normal GPU run
skips them.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from paddle_flashmask import masks
from tests.gpu.helpers import assert_close_fa, attention_grads_lowp, attention_ref, fresh_seed

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.skipif(
    os.environ.get("FLASHMASK_SCALE_TESTS") != "1", reason="scale tests: set FLASHMASK_SCALE_TESTS=1"
)


def _inputs(shape_q, shape_kv, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randn(*shape_q, device="cuda", generator=g, dtype=torch.bfloat16)
    k = torch.randn(*shape_kv, device="cuda", generator=g, dtype=torch.bfloat16)
    v = torch.randn(*shape_kv, device="cuda", generator=g, dtype=torch.bfloat16)
    do = torch.randn(*shape_q, device="cuda", generator=g, dtype=torch.bfloat16)
    return q, k, v, do


def _measured(call):
    """call() once, printing its time (CUDA events; one call, the first of its shape, with the
    tests' NaN fill of every output before its launch: conftest's FLASHMASK_POISON) and the peak
    GPU memory while it ran, total and above what was allocated before (the inputs), for the
    results of record (`pytest -s`, tools/gpu_check.sh scale). The time says the call runs, not
    its rate: benchmarks/bench_length.py measures that."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    result = call()
    end.record()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    test = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]
    print(f"{test}: fwd+bwd {start.elapsed_time(end):.1f} ms, peak {peak / 2**30:.2f} GiB "
          f"({(peak - before) / 2**30:.2f} GiB above the inputs)")
    return result


def _fwd_bwd(q, k, v, do, idx, causal=True):
    """The kernels through the binding's launch functions (paddle_flashmask.torch._forward and
    _backward, no front end), outputs NaN-poisoned first (FLASHMASK_POISON=1, conftest.py).
    test_more_than_2_to_the_31_elements goes through the public API instead (_api_fwd_bwd)."""
    from paddle_flashmask.torch import _backward, _forward

    idx_t = torch.from_numpy(np.ascontiguousarray(idx)).to("cuda")
    scale = q.shape[-1] ** -0.5

    def call():
        out, lse = _forward(q, k, v, idx_t, None, causal, False, scale)
        return (out, lse) + tuple(_backward(q, k, v, out, lse, do, idx_t, None, causal, False, scale, False))

    return _measured(call)


def _api_fwd_bwd(q, k, v, do, idx, causal=True):
    """The public torch API with autograd: paddle_flashmask.torch.flashmask_attention (the
    front end's checks included) on leaves sharing q, k, v's storage, then out.backward(do);
    the grads from .grad. Same results as _fwd_bwd: out, lse, dq, dk, dv."""
    from paddle_flashmask.torch import flashmask_attention

    ql, kl, vl = (t.detach().requires_grad_() for t in (q, k, v))

    def call():
        out, lse = flashmask_attention(ql, kl, vl, idx, causal=causal, return_softmax_lse=True)
        out.backward(do)
        return out.detach(), lse, ql.grad, kl.grad, vl.grad

    return _measured(call)


def _check_documents(q, k, v, do, results, docs, starts, b=0, heads=slice(None)):
    """Per document [start, start + len) of batch row b: the dense fp32 reference of that
    document alone is exact (its rows see only its keys, its keys only its rows), judged by
    FlashAttention's rule against a plain bf16 computation."""
    out, lse, dq, dk, dv = results
    d = q.shape[-1]
    for i in docs:
        n, s0 = int(docs[i]), int(starts[i])
        sl = slice(s0, s0 + n)
        causal = torch.ones(n, n, device="cuda", dtype=torch.bool).tril()[None, None]
        part = [t[b : b + 1, sl, heads] for t in (q, k, v, do)]
        qr, kr, vr = (t.detach().float().requires_grad_() for t in part[:3])
        o_ref, lse_ref = attention_ref(torch, qr, kr, vr, causal, d**-0.5, upcast=True)
        o_pt, _ = attention_ref(torch, *part[:3], causal, d**-0.5, upcast=False)
        assert_close_fa(f"out doc {i}", out[b : b + 1, sl, heads], o_ref, o_pt)
        lse_ours = lse[b : b + 1, heads, sl]
        assert torch.isfinite(lse_ours).all(), f"lse doc {i}"
        assert (lse_ours - lse_ref).abs().max().item() < 1e-2, f"lse doc {i}"
        o_ref.backward(part[3].float())
        grads_pt = attention_grads_lowp(torch, *part[:3], o_pt, part[3], causal, d**-0.5)
        for name, ours, ref, pt in zip(("dq", "dk", "dv"), (dq, dk, dv), (qr, kr, vr), grads_pt):
            assert_close_fa(f"{name} doc {i}", ours[b : b + 1, sl, heads], ref.grad, pt)
        del qr, kr, vr, o_ref, o_pt, grads_pt
        torch.cuda.empty_cache()


def _packed_documents(rng, total, lo, hi):
    lens = []
    while sum(lens) < total:
        lens.append(int(rng.integers(lo, hi + 1)))
    lens[-1] -= sum(lens) - total
    if lens[-1] <= 0:
        lens.pop()
        lens[-1] += total - sum(lens)
    return np.array(lens), np.concatenate([[0], np.cumsum(lens)[:-1]])


def _doc_sample(lens, rng, count):
    """Documents to check: the first, the longest, the last and a few at random."""
    picks = {0, int(np.argmax(lens)), len(lens) - 1} | set(rng.choice(len(lens), size=count, replace=False).tolist())
    return {i: lens[i] for i in sorted(picks)}


def test_packed_1m_causal_document():
    """One packed 1M-token sequence of documents of 1K-16K tokens, D=128, 4 heads."""
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    total, heads, d = 1 << 20, 4, 128
    lens, starts = _packed_documents(rng, total, 1024, 16384)
    idx = masks.causal_document_mask([lens.tolist()]).startend_row_indices
    q, k, v, do = _inputs((1, total, heads, d), (1, total, heads, d), seed)
    results = _fwd_bwd(q, k, v, do, idx)
    _check_documents(q, k, v, do, results, _doc_sample(lens, rng, 3), starts)


def _chunk_reference(qc, doc, kf, vf, masked, cols, scale):
    """One chunk of query rows (qc, doc [rows, D]) against keys kf, vf [keys, D], exactly in
    fp32, the scores where `masked` is True removed: probabilities p, output o, lse,
    D = rowsum(dO * O), and the chunk's contributions to dv and dk of the key columns `cols`."""
    s = (qc @ kf.T) * scale
    s.masked_fill_(masked, float("-inf"))
    lse = torch.logsumexp(s, dim=-1)
    p = torch.exp(s - lse[:, None])
    o = p @ vf
    dsum = (doc * o).sum(-1)
    pc = p[:, cols]
    dpc = doc @ vf[cols].T
    return p, o, lse, dsum, pc.T @ doc, (pc * (dpc - dsum[:, None])).T @ qc * scale


def _rows_dq(p, doc, kf, vf, dsum, local, scale):
    """dq of the chunk's rows `local`, from _chunk_reference's p and dsum."""
    ds = p[local] * (doc[local] @ vf.T - dsum[local][:, None])
    return ds @ kf * scale


def _chunked_reference(q, k, v, do, rows, cols, chunk=256):
    """Exact fp32 reference of causal attention (one batch row, one head; q, k, v, do
    [S, D]) on query rows `rows` (out, lse, dq) and key columns `cols` (dk, dv), in chunks
    of rows over their visible keys [0, row]: lse and D = rowsum(dO * O) of every row that
    sees a sampled column are computed exactly along the way."""
    n, d = q.shape
    dev, scale = q.device, d**-0.5
    qf, kf, vf, dof = (t.float() for t in (q, k, v, do))
    rows_t, cols_t = torch.as_tensor(rows, device=dev), torch.as_tensor(cols, device=dev)
    out_r = torch.zeros(len(rows), d, device=dev)
    lse_r = torch.zeros(len(rows), device=dev)
    dq_r = torch.zeros(len(rows), d, device=dev)
    dk_c = torch.zeros(len(cols), d, device=dev)
    dv_c = torch.zeros(len(cols), d, device=dev)
    first = min(int(min(rows)), int(min(cols)))
    for r0 in range(first // chunk * chunk, n, chunk):
        r1 = min(r0 + chunk, n)
        masked = torch.arange(r1, device=dev)[None, :] > torch.arange(r0, r1, device=dev)[:, None]
        seen = cols_t < r1  # the sampled columns this chunk's rows may see
        p, o, lse, dsum, dv_part, dk_part = _chunk_reference(
            qf[r0:r1], dof[r0:r1], kf[:r1], vf[:r1], masked, cols_t[seen], scale)
        dv_c[seen] += dv_part
        dk_c[seen] += dk_part
        hit = (rows_t >= r0) & (rows_t < r1)
        if bool(hit.any()):
            local = rows_t[hit] - r0
            dq_r[hit] = _rows_dq(p, dof[r0:r1], kf[:r1], vf[:r1], dsum, local, scale)
            out_r[hit] = o[local]
            lse_r[hit] = lse[local]
        del p
    return out_r, lse_r, dq_r, dk_c, dv_c


def _assert_rel(name, ours, ref, rel):
    ours = ours.float()
    assert torch.isfinite(ours).all(), f"{name}: NaN/inf"
    err = (ours - ref).abs().max().item()
    scale = ref.abs().max().item()
    assert err <= rel * max(scale, 1e-3), f"{name}: max err {err:.3e} > {rel} x {scale:.3e}"


def _check_sampled(q, k, v, do, results, b, h, rows, cols):
    """Sampled rows (out, lse, dq) and columns (dk, dv) of batch row b, head h against the
    chunked fp32 reference. The plain bf16 computation of FlashAttention's rule would need
    the dense matrix, so the bound is relative: 2% of the largest reference value (bf16
    keeps 8 bits: its own rounding is 0.4%)."""
    out, lse, dq, dk, dv = results
    hk = h * k.shape[2] // q.shape[2]
    ref = _chunked_reference(q[b, :, h], k[b, :, hk], v[b, :, hk], do[b, :, h], rows, cols)
    out_r, lse_r, dq_r, dk_c, dv_c = ref
    _assert_rel("out", out[b, rows, h], out_r, 2e-2)
    assert (lse[b, h, rows] - lse_r).abs().max().item() < 1e-2, "lse"
    _assert_rel("dq", dq[b, rows, h], dq_r, 2e-2)
    if k.shape[2] == q.shape[2]:  # MHA: dk/dv of a column come from this head alone
        _assert_rel("dk", dk[b, cols, hk], dk_c, 2e-2)
        _assert_rel("dv", dv[b, cols, hk], dv_c, 2e-2)


def test_causal_512k():
    """Causal at 512K: a query block near the end lists 4K key tiles (4 segments of the
    forward's list buffers), a key block near the start 8K query tiles (8 backward segments)."""
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    total, heads, d = 1 << 19, 2, 128
    idx = masks.causal_mask(total).startend_row_indices
    q, k, v, do = _inputs((1, total, heads, d), (1, total, heads, d), seed)
    results = _fwd_bwd(q, k, v, do, idx)
    rows = np.unique(np.concatenate([[0, 127, 128, total - 1], rng.integers(0, total, 28)]))
    cols = np.unique(np.concatenate([[0, 1, 129, total - 1], rng.integers(0, total, 12)]))
    for h in range(heads):
        _check_sampled(q, k, v, do, results, 0, h, rows.tolist(), cols.tolist())


def test_more_than_2_to_the_31_elements():
    """B * S * H * D = 5 * 64K * 64 * 128 > 2^31 elements per tensor (and B * H * S * D
    of the fp32 dQ accumulator), through the public API and autograd (the front end takes
    it): the last batch row's last heads, where the offsets are largest, checked per
    document."""
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    batch, total, heads, d = 5, 1 << 16, 64, 128
    assert batch * total * heads * d > 2**31
    lens, starts = _packed_documents(rng, total, 1024, 4096)
    idx = masks.causal_document_mask([lens.tolist()] * batch).startend_row_indices
    q, k, v, do = _inputs((batch, total, heads, d), (batch, total, heads, d), seed)
    results = _api_fwd_bwd(q, k, v, do, idx)
    _check_documents(q, k, v, do, results, _doc_sample(lens, rng, 2), starts, b=batch - 1, heads=slice(heads - 2, heads))


def _banded_bounds(rng, n, mask_heads, width=128):
    """Non-causal 4-bound bounds [1, mask_heads, n, 4] (LTS, LTE, UTS, UTE): per mask head and
    `width`-column group two masked row bands of up to n/12 rows each, constant over the group
    (the key tiles inside a band are skipped: every list has gaps), 3% of the columns with
    jittered band ends (partial tiles at band edges, in every segment), a few groups masked
    whole (their dK and dV are 0) and a few whose lower band is [2^31 - 1, 2^31 - 1): a bound
    past Sq masks nothing (mask.h) and must not overflow the backward's query-range cut."""
    groups = (n + width - 1) // width
    idx = np.empty((1, mask_heads, n, 4), np.int64)
    special = rng.choice(groups, size=8, replace=False)  # the same groups in every mask head
    for hm in range(mask_heads):
        g = np.empty((groups, 4), np.int64)
        for band in (0, 2):
            length = rng.integers(0, n // 12 + 1, groups)
            g[:, band] = rng.integers(0, n - length + 1)
            g[:, band + 1] = g[:, band] + length
        g[special[:4]] = [0, n, 0, 0]
        g[special[4:], :2] = 2**31 - 1
        cols = np.repeat(g, width, axis=0)[:n]
        jitter = (rng.random(n) < 0.03) & ~np.isin(np.arange(n) // width, special)
        cols[jitter] = np.clip(cols[jitter] + rng.integers(-300, 301, (int(jitter.sum()), 4)), 0, n)
        idx[0, hm] = cols
    return idx.astype(np.int32), special * width


def _banded_reference(q, k, v, do, bounds, rows, cols, chunk=512):
    """Exact fp32 reference of non-causal attention under 4-bound masks, one batch row: q, do
    [S, H, D], k, v [S, Hk, D], bounds [Hm, S, 4] (int64). Every row is visited (any row may
    see a sampled column): out, lse, dq of `rows` per query head ([H, len(rows), ...]), dk, dv
    of `cols` per key head, summed over its query heads ([Hk, len(cols), D])."""
    n, heads, d = q.shape
    heads_k, mask_heads = k.shape[1], bounds.shape[0]
    dev, scale = q.device, d**-0.5
    rows_t, cols_t = torch.as_tensor(rows, device=dev), torch.as_tensor(cols, device=dev)
    out_r = torch.zeros(heads, len(rows), d, device=dev)
    lse_r = torch.zeros(heads, len(rows), device=dev)
    dq_r = torch.zeros(heads, len(rows), d, device=dev)
    dk_c = torch.zeros(heads_k, len(cols), d, device=dev)
    dv_c = torch.zeros(heads_k, len(cols), d, device=dev)
    for h in range(heads):
        hk, hm = h // (heads // heads_k), h // (heads // mask_heads)
        qf, dof = q[:, h].float(), do[:, h].float()
        kf, vf = k[:, hk].float(), v[:, hk].float()
        lts, lte, uts, ute = (bounds[hm, :, i][None, :] for i in range(4))
        for r0 in range(0, n, chunk):
            r1 = min(r0 + chunk, n)
            r = torch.arange(r0, r1, device=dev)[:, None]
            masked = ((r >= lts) & (r < lte)) | ((r >= uts) & (r < ute))
            p, o, lse, dsum, dv_part, dk_part = _chunk_reference(qf[r0:r1], dof[r0:r1], kf, vf, masked, cols_t, scale)
            dv_c[hk] += dv_part
            dk_c[hk] += dk_part
            hit = (rows_t >= r0) & (rows_t < r1)
            if bool(hit.any()):
                local = rows_t[hit] - r0
                dq_r[h, hit] = _rows_dq(p, dof[r0:r1], kf, vf, dsum, local, scale)
                out_r[h, hit] = o[local]
                lse_r[h, hit] = lse[local]
            del p
    return out_r, lse_r, dq_r, dk_c, dv_c


@pytest.mark.parametrize(
    "n,d,heads,heads_k,mask_heads",
    [(160 << 10, 64, 4, 2, 2), (96 << 10, 256, 2, 1, 1), (160 << 10, 128, 2, 1, 2)],
    ids=["d64-gqa-maskheads=hk", "d256-maskheads=1", "d128-maskheads=h"],
)
def test_multi_segment_banded(n, d, heads, heads_k, mask_heads):
    """Lists of several segments with gaps and partial tiles in each (4-bound banded mask,
    _banded_bounds): forward query blocks list ~1.1-1.4K key tiles (2 segments of 1024), backward
    key blocks ~1.4-2.3K query tiles (2-3 segments), at D=64 (GQA, a mask head per key head),
    D=256 (the forward's single Q buffer, dK/dV staged in K/V) and D=128 (a mask head per query
    head). Sampled rows and columns (fully masked ones among them) against the exact reference."""
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    idx, special_cols = _banded_bounds(rng, n, mask_heads)
    q, k, v, do = _inputs((1, n, heads, d), (1, n, heads_k, d), seed)
    out, lse, dq, dk, dv = _fwd_bwd(q, k, v, do, idx, causal=False)
    rows = np.unique(np.concatenate([[0, 63, 64, 127, 128, n - 1], rng.integers(0, n, 26)])).tolist()
    cols = np.unique(np.concatenate([[0, 1, 127, 128, n - 1], special_cols, rng.integers(0, n, 19)])).tolist()
    bounds = torch.from_numpy(idx[0].astype(np.int64)).to("cuda")
    out_r, lse_r, dq_r, dk_c, dv_c = _banded_reference(q[0], k[0], v[0], do[0], bounds, rows, cols)
    for h in range(heads):
        _assert_rel(f"out h{h}", out[0, rows, h], out_r[h], 2e-2)
        assert (lse[0, h, rows] - lse_r[h]).abs().max().item() < 1e-2, f"lse h{h}"
        _assert_rel(f"dq h{h}", dq[0, rows, h], dq_r[h], 2e-2)
    for hk in range(heads_k):
        _assert_rel(f"dk h{hk}", dk[0, cols, hk], dk_c[hk], 2e-2)
        _assert_rel(f"dv h{hk}", dv[0, cols, hk], dv_c[hk], 2e-2)
