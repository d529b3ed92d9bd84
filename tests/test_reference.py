"""The float64 reference checked on its own: a per-row loop and finite differences."""

import unittest

import numpy as np

from paddle_flashmask import reference
from paddle_flashmask.masks import to_dense
from tests.random_bounds import BOUND_FORMS, random_bounds


def _loop_forward(q, k, v, allowed, scale):
    """(out [B, Sq, H, D], lse [B, H, Sq]) row by row; a row without keys: 0 and -inf."""
    batch, seqlen_q, heads, _ = q.shape
    group = heads // k.shape[2]
    out = np.zeros(q.shape)
    lse = np.full((batch, heads, seqlen_q), -np.inf)
    for b in range(batch):
        for h in range(heads):
            m = allowed[b, h if allowed.shape[1] == heads else 0]
            for i in range(seqlen_q):
                keys = np.nonzero(m[i])[0]
                if len(keys) == 0:
                    continue
                s = np.array([q[b, i, h] @ k[b, j, h // group] for j in keys]) * scale
                w = np.exp(s - s.max())
                out[b, i, h] = (w / w.sum()) @ v[b, keys, h // group]
                lse[b, h, i] = s.max() + np.log(w.sum())
    return out, lse


class TestReference(unittest.TestCase):
    def setUp(self):
        self.rng = np.random.default_rng(0)

    def inputs(self, sq, sk, heads=4, heads_k=2, dim=5):
        r = self.rng.standard_normal
        return r((2, sq, heads, dim)), r((2, sk, heads_k, dim)), r((2, sk, heads_k, dim))

    def test_forward_matches_loop(self):
        empty_rows = 0
        for causal, nb in BOUND_FORMS:
            for sq, sk in ((7, 7), (5, 9)):
                q, k, v = self.inputs(sq, sk)
                idx = random_bounds(self.rng, 2, 1, sq, sk, nb, causal)
                out, lse = reference.attention_forward(q, k, v, idx, causal, softmax_scale=0.3)
                allowed = to_dense(idx, causal, seqlen_q=sq)
                want_out, want_lse = _loop_forward(q, k, v, allowed, 0.3)
                np.testing.assert_allclose(out, want_out, atol=1e-12)
                np.testing.assert_allclose(lse, want_lse, atol=1e-12)  # -inf where a row has no key
                empty_rows += int(np.isneginf(want_lse).sum())
        self.assertGreater(empty_rows, 0)  # the cases include rows without keys

    def test_backward_matches_finite_differences(self):
        for causal, nb in BOUND_FORMS:
            q, k, v = self.inputs(6, 6, heads=2, heads_k=1, dim=3)
            idx = random_bounds(self.rng, 2, 2, 6, 6, nb, causal)
            dout = self.rng.standard_normal(q.shape)
            grads = reference.attention_backward(q, k, v, idx, causal, dout)

            def loss(q_, k_, v_):
                return (reference.attention_forward(q_, k_, v_, idx, causal)[0] * dout).sum()

            for which, grad in enumerate(grads):
                args = [q, k, v]
                x = args[which]
                num = np.zeros_like(x)
                for pos in np.ndindex(x.shape):
                    hi, lo = x.copy(), x.copy()
                    hi[pos] += 1e-6
                    lo[pos] -= 1e-6
                    args_hi, args_lo = list(args), list(args)
                    args_hi[which], args_lo[which] = hi, lo
                    num[pos] = (loss(*args_hi) - loss(*args_lo)) / 2e-6
                np.testing.assert_allclose(grad, num, atol=1e-6, err_msg=f"grad {which} {causal} {nb}")


if __name__ == "__main__":
    unittest.main()
