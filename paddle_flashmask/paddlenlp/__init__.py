"""PaddleNLP integration: FlashMask for SFT, LoRA, DPO and RM fine-tuning.

    import paddle_flashmask.paddlenlp as fm_nlp
    fm_nlp.apply()      # Llama/Qwen2 attention with attn_mask_startend_row_indices -> our op
    ...                 # train as usual, with batches carrying attn_mask_startend_row_indices
    fm_nlp.revert()     # or: with fm_nlp.flashmask_routing(): ...

Submodules: `patching` (the routing), `chat_format` (records -> token ids),
`packing` (greedy packing), `collators` (packed batches with FlashMask indices
or a dense mask), `reward_model` (a causal LM with a scalar reward head). The
example scripts' own harness (arguments, tiny offline model, run reports,
synthetic data) is examples/common.
"""

from paddle_flashmask.paddlenlp.patching import apply, flashmask_routing, is_applied, revert

__all__ = ["apply", "revert", "flashmask_routing", "is_applied"]
