"""Experiment: the Hopper backward with its workspace (the dQ accumulator) in compressible memory
(cuMemCreate, CU_MEM_ALLOCATION_COMP_GENERIC) against torch's ordinary allocation; and the 2 GiB
memset alone in each (perf-notes v91; rejected). On the GPU machine, in the project root:
    nvcc -shared -Xcompiler -fPIC -o /tmp/comp_alloc.so tools/probes/compressible_alloc.cu -lcuda
    FLASHMASK_CUDA_LIB=build/libflashmask_cuda.so OUT=DIR python3 tools/probes/compressible_workspace.py \
        /tmp/comp_alloc.so 32k-64 global_sliding_window
"""
import ctypes, json, statistics, sys, os, pathlib
sys.path.insert(0, os.getcwd()); sys.path.insert(0, os.getcwd() + "/benchmarks")
import torch
import bench_gpu
from paddle_flashmask.torch import _lib
import paddle_flashmask.torch as pt

ca = ctypes.CDLL(sys.argv[1])
ca.comp_alloc.argtypes = [ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_ulonglong),
                          ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_int)]
ca.memset_d32.argtypes = [ctypes.c_ulonglong, ctypes.c_size_t, ctypes.c_void_p]
dev = torch.device("cuda")
torch.cuda.init(); torch.empty(1, device=dev)
print("compression supported:", ca.comp_supported(0), flush=True)

def alloc(nbytes, compress):
    p, m, g = ctypes.c_ulonglong(), ctypes.c_size_t(), ctypes.c_int()
    rc = ca.comp_alloc(nbytes, compress, 0, ctypes.byref(p), ctypes.byref(m), ctypes.byref(g))
    assert rc == 0, rc
    return p.value, m.value, g.value

flush = torch.empty(256 << 20, dtype=torch.int8, device=dev)
stream = lambda: ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)

def med_ms(fn, warm=3, reps=15):
    for _ in range(warm): fn()
    ev = []
    for _ in range(reps):
        flush.zero_(); s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); fn(); e.record(); ev.append((s, e))
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in ev)

res = {}
GIB2 = 2 << 30
bufs = {c: alloc(GIB2 + (512 << 20), c) for c in (0, 1)}
print("granted:", {c: b[2] for c, b in bufs.items()}, flush=True)
for rnd in range(2):
    for c in (0, 1):
        ms = med_ms(lambda: ca.memset_d32(bufs[c][0], GIB2 // 4, stream()))
        res.setdefault(f"memset2g_comp{c}", []).append(ms)
print("memset:", res, flush=True)


WS = {"ptr": None}
_orig_empty = torch.empty

def _backward(q, k, v, out, lse, dout, idx, block_mask, causal, masks_nothing, scale, deterministic):
    """pt._backward with the workspace taken from WS["ptr"] when set."""
    lib = _lib.load()
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    p = pt._params(_lib.BwdParams(), q, k, idx, block_mask, causal, masks_nothing, scale)
    p.deterministic = bool(deterministic)
    p.q, p.k, p.v, p.out, p.dout = q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), dout.data_ptr()
    p.lse, p.dq, p.dk, p.dv = lse.data_ptr(), dq.data_ptr(), dk.data_ptr(), dv.data_ptr()
    for name, t in (("q", q), ("k", k), ("v", v), ("out", out), ("dout", dout), ("dq", dq), ("dk", dk), ("dv", dv)):
        setattr(p, name + "_strides", pt._strides(t))
    nb = lib.flashmask_cuda_bwd_workspace_size(ctypes.byref(p))
    if WS["ptr"] is None:
        ws = torch.empty(max(nb, 1), dtype=torch.uint8, device=q.device); ptr = ws.data_ptr()
    else:
        assert nb <= WS["size"], (nb, WS["size"]); ptr = WS["ptr"]
    _lib.check(lib.flashmask_cuda_bwd(ctypes.byref(p), ptr, nb, pt._stream(q)), "backward")
    return dq, dk, dv

pt._backward = _backward
cfg = sys.argv[2]
N, B, D, H = bench_gpu.CONFIGS[cfg]
g = torch.Generator(device=dev).manual_seed(1)
mk = lambda: torch.randn(B, N, H, D, device=dev, dtype=torch.bfloat16, generator=g).requires_grad_()
q, k, v = mk(), mk(), mk()
dout = torch.randn(B, N, H, D, device=dev, dtype=torch.bfloat16, generator=g)
wsbuf = {c: bufs[c] for c in (0, 1)}
for mname in sys.argv[3].split(","):
    spec = bench_gpu.build_mask(mname, N, B, H)
    idx_t = bench_gpu.ours_indices(mname, torch.from_numpy(spec.startend_row_indices).to(dev))
    out = pt.flashmask_attention(q, k, v, idx_t, causal=spec.causal)
    pairs = bench_gpu.total_unmasked_pairs(spec.startend_row_indices, spec.causal, H)
    flops = 2.5 * 4.0 * D * pairs
    variants = {"torch_ws": None, "plain_cumem": 0, "compressible": 1}
    grads = {}
    def run(vname):
        c = variants[vname]
        WS["ptr"], WS["size"] = (None, 0) if c is None else (wsbuf[c][0], wsbuf[c][1])
        return torch.autograd.grad(out, (q, k, v), dout, retain_graph=True)
    for vname in variants:
        grads[vname] = run(vname)
    torch.cuda.synchronize()
    diffs = {vn: max(float((a.float() - b.float()).abs().max()) for a, b in zip(grads[vn], grads["torch_ws"])) for vn in variants}
    scale_ = max(float(t.float().abs().max()) for t in grads["torch_ws"])
    bad = any(not torch.isfinite(t).all() for g_ in grads.values() for t in g_)
    print(f"{cfg} {mname}: max |grad diff| vs torch_ws {diffs} (grad max {scale_:.3g}) nonfinite={bad}", flush=True)
    del grads
    ms = {vn: [] for vn in variants}
    blocks = {vn: [] for vn in variants}
    order = list(variants)
    import time
    for rnd in range(4):
        for vn in (order if rnd % 2 == 0 else order[::-1]):
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < 0.3:
                run(vn); torch.cuda.synchronize()
            ev = []
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < 1.0 or len(ev) < 8:
                flush.zero_(); s_, e_ = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                s_.record(); run(vn); e_.record(); ev.append((s_, e_))
                if len(ev) % 8 == 0: torch.cuda.synchronize()
            torch.cuda.synchronize()
            ms[vn] += [a.elapsed_time(b) for a, b in ev]
            blocks[vn].append(round(statistics.median(a.elapsed_time(b) for a, b in ev), 3))
    row = {vn: dict(blocks=blocks[vn], n=len(ms[vn]), p10=sorted(ms[vn])[len(ms[vn])//10], median_ms=statistics.median(ms[vn]), tflops=flops / (statistics.median(ms[vn]) * 1e-3) / 1e12) for vn in variants}
    res[f"{cfg}/{mname}"] = row
    print(f"  " + "  ".join(f"{vn} {r['median_ms']:.3f} ms {r['tflops']:.1f}" for vn, r in row.items()), flush=True)
    print("  blocks:", blocks, flush=True)
    print(f"  compressible/torch_ws time {row['compressible']['median_ms']/row['torch_ws']['median_ms']:.4f}, "
          f"compressible/plain_cumem {row['compressible']['median_ms']/row['plain_cumem']['median_ms']:.4f}", flush=True)
json.dump(res, open(pathlib.Path(os.environ.get("OUT", "/tmp")) / "comp_bench.json", "w"), indent=1)
