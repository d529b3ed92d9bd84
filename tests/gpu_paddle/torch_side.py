"""The torch binding's half of test_matches_torch_binding, in its own process:
reads DIR/inputs.npz, runs fwd + bwd in bfloat16, writes DIR/outputs.npz (float32).
Exit code 3 (with the reason on stdout) when torch has no CUDA or the kernel library
is not built."""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def main(folder):
    import torch

    from paddle_flashmask.torch import _lib, flashmask_attention

    if not torch.cuda.is_available() or _lib.find_library() is None:
        print("torch without CUDA, or libflashmask_cuda.so not built (tools/build_cuda.sh)")
        return 3
    data = np.load(os.path.join(folder, "inputs.npz"))
    q, k, v, dout = (
        torch.from_numpy(data[n]).cuda().to(torch.bfloat16).requires_grad_(n != "dout")
        for n in ("q", "k", "v", "dout")
    )
    out, lse = flashmask_attention(q, k, v, data["idx"], causal=False, return_softmax_lse=True)
    out.backward(dout)
    result = {"out": out, "lse": lse, "dq": q.grad, "dk": k.grad, "dv": v.grad}
    np.savez(os.path.join(folder, "outputs.npz"), **{n: t.detach().float().cpu().numpy() for n, t in result.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
