"""One case per mask builder, shared by the GPU tests of the torch binding (tests/gpu) and of
the Paddle op (tests/gpu_paddle), so that both suites run the same masks."""

from paddle_flashmask import masks

SEQLEN = 1000
_CASES = {
    "full": lambda b, seed: masks.full_mask(SEQLEN, batch=b),
    "causal": lambda b, seed: masks.causal_mask(SEQLEN, batch=b),
    "sliding_window": lambda b, seed: masks.sliding_window_mask(SEQLEN, 200, batch=b),
    "causal_document": lambda b, seed: masks.causal_document_mask([[300, 200, 500]] * b),
    "document": lambda b, seed: masks.document_mask([[150, 600, 250]] * b),
    "share_question": lambda b, seed: masks.share_question_mask([[(200, [150, 150]), (100, [300, 100])]] * b),
    "global_sliding_window": lambda b, seed: masks.global_sliding_window_mask(SEQLEN, 64, 150, batch=b),
    "causal_blockwise": lambda b, seed: masks.causal_blockwise_mask([[300, 200, 500]] * b),
    "prefix_lm_causal": lambda b, seed: masks.prefix_lm_causal_mask(SEQLEN, 250, batch=b),
    "prefix_lm_document": lambda b, seed: masks.prefix_lm_document_mask([[(100, 400), (200, 600)]] * b),
    "qk_sparse": lambda b, seed: masks.qk_sparse_mask(SEQLEN, [(100, 300), (600, 900)], batch=b),
    "random_eviction": lambda b, seed: masks.random_eviction_mask(SEQLEN, 4, batch=b, seed=seed),
}
NAMES = tuple(sorted(_CASES))


def builder_case(name: str, batch: int, seed: int) -> masks.MaskSpec:
    """The MaskSpec of builder `name` for `batch` rows of SEQLEN tokens (`seed`: the random ones')."""
    return _CASES[name](batch, seed)
