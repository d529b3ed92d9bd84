"""paddle_flashmask.paddlenlp.apply(): PaddleNLP Llama/Qwen2 attention through our op."""

import unittest
import warnings
from unittest import mock

import numpy as np
import paddle
from paddlenlp.transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM
from paddlenlp.transformers.llama import modeling as llama_modeling

import paddle_flashmask.api
from paddle_flashmask.paddlenlp import apply, flashmask_routing, is_applied, patching, revert
from paddle_flashmask.paddlenlp.chat_format import PreferencePair, SFTExample
from paddle_flashmask.paddlenlp.collators import PackedPreferenceCollator, PackedSFTCollator

VOCAB = 97
SMALL = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
)


def _model(model_class, config_class, use_flash_attention=False):
    paddle.seed(0)
    model = model_class(config_class(use_flash_attention=use_flash_attention, **SMALL))
    model.eval()
    return model


def _logits(model, batch):
    inputs = {k: paddle.to_tensor(v) for k, v in batch.items() if k not in ("labels", "response_indexs")}
    inputs = {k: v for k, v in inputs.items() if not k.endswith("_labels")}
    return model(**inputs)[0].numpy()


def _sft_batch(packs, flashmask, seqlen=24):
    return PackedSFTCollator(seqlen, pad_token_id=0, flashmask=flashmask)(packs)


def _random_example(rng, length):
    ids = rng.integers(3, VOCAB, size=length).tolist()
    return SFTExample(ids, ids[1:] + [2])


class CountingOp:
    """Wraps the op to count its calls."""

    def __init__(self):
        self.calls = 0
        self.op = paddle_flashmask.api.flashmask_attention

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.op(*args, **kwargs)


class TestRouting(unittest.TestCase):
    def setUp(self):
        rng = np.random.default_rng(0)
        self.packs = [[_random_example(rng, 7), _random_example(rng, 9)], [_random_example(rng, 20)]]
        self.op = CountingOp()
        patcher = mock.patch.object(paddle_flashmask.api, "flashmask_attention", self.op)
        patcher.start()
        self.addCleanup(patcher.stop)
        self.addCleanup(revert)

    def test_llama_and_qwen2_match_the_dense_mask(self):
        dense_batch, flash_batch = _sft_batch(self.packs, False), _sft_batch(self.packs, True)
        for model_class, config_class in ((LlamaForCausalLM, LlamaConfig), (Qwen2ForCausalLM, Qwen2Config)):
            for use_flash_attention in (False, True):
                with self.subTest(model=model_class.__name__, use_flash_attention=use_flash_attention):
                    model = _model(model_class, config_class, use_flash_attention)  # built before apply()
                    reference = _logits(_model(model_class, config_class), dense_batch)
                    self.op.calls = 0
                    apply()
                    routed = _logits(model, flash_batch)
                    self.assertEqual(self.op.calls, SMALL["num_hidden_layers"])
                    np.testing.assert_allclose(routed, reference, rtol=1e-5, atol=1e-5)
                    revert()

    def test_revert_restores_paddlenlp(self):
        model = _model(LlamaForCausalLM, LlamaConfig)
        flash_batch = _sft_batch(self.packs, True)
        before = _logits(model, flash_batch)  # PaddleNLP alone on CPU: indices ignored, plain causal
        apply()
        revert()
        self.assertFalse(is_applied())
        np.testing.assert_array_equal(_logits(model, flash_batch), before)
        self.assertEqual(self.op.calls, 0)

    def test_calls_without_indices_stay_with_paddlenlp(self):
        model = _model(LlamaForCausalLM, LlamaConfig)
        dense_batch = _sft_batch(self.packs, False)
        expected = _logits(model, dense_batch)
        with flashmask_routing():
            np.testing.assert_array_equal(_logits(model, dense_batch), expected)
        self.assertEqual(self.op.calls, 0)

    def test_no_dense_mask_is_built(self):
        model = _model(LlamaForCausalLM, LlamaConfig)
        builders = [
            mock.patch.object(llama_modeling.LlamaModel, "_prepare_decoder_attention_mask", side_effect=AssertionError),
            mock.patch.object(llama_modeling, "get_triangle_upper_mask", side_effect=AssertionError),
        ]
        for builder in builders:
            builder.start()
            self.addCleanup(builder.stop)
        with flashmask_routing():
            _logits(model, _sft_batch(self.packs, True))
        self.assertEqual(self.op.calls, SMALL["num_hidden_layers"])

    def test_older_paddlenlp_is_refused(self):
        with mock.patch("paddlenlp.__version__", "3.0.0b2"):
            with self.assertRaisesRegex(RuntimeError, "PaddleNLP >= 3.0.0b3"):
                apply()
        self.assertFalse(is_applied())

    def test_context_manager_nests(self):
        apply()
        with flashmask_routing():
            self.assertTrue(is_applied())
        self.assertTrue(is_applied())
        revert()
        with flashmask_routing():
            self.assertTrue(is_applied())
        self.assertFalse(is_applied())


class TestRoutedLayerCount(unittest.TestCase):
    """What the examples' --flashmask check counts: the routed classes' layers, exactly."""

    def test_counts_routed_attention_layers_only(self):
        self.assertEqual(patching.routed_layer_count(_model(LlamaForCausalLM, LlamaConfig)), 2)
        self.assertEqual(patching.routed_layer_count(_model(Qwen2ForCausalLM, Qwen2Config)), 2)
        self.assertEqual(patching.routed_layer_count(paddle.nn.Linear(4, 4)), 0)

        class OwnAttention(llama_modeling.LlamaAttention):  # a subclass may call its own attention
            pass

        model = _model(LlamaForCausalLM, LlamaConfig)
        layer = model.llama.layers[0]
        layer.self_attn.__class__ = OwnAttention
        self.assertEqual(patching.routed_layer_count(model), 1)


class TestWarningWithoutApply(unittest.TestCase):
    """On CPU PaddleNLP drops attn_mask_startend_row_indices unless apply() routes them."""

    def setUp(self):
        patching._warn_not_routed.cache_clear()
        self.addCleanup(patching._warn_not_routed.cache_clear)
        self.addCleanup(revert)
        self.packs = [[_random_example(np.random.default_rng(0), 7)]]

    def test_warns_once_without_apply(self):
        revert()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _sft_batch(self.packs, True)
            _sft_batch(self.packs, True)
            PackedPreferenceCollator(24, pad_token_id=0, flashmask=True)([[PreferencePair([5, 6, 7], [10, 2], [20, 2])]])
        messages = [str(w.message) for w in caught if "apply() was not called" in str(w.message)]
        self.assertEqual(len(messages), 1, messages)

    def test_silent_with_apply_or_a_dense_mask(self):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _sft_batch(self.packs, False)
            apply()
            _sft_batch(self.packs, True)
        self.assertFalse([w for w in caught if "apply() was not called" in str(w.message)])


class TestPackedExamplesAreIsolated(unittest.TestCase):
    """Through the routed model: changing one packed example leaves the others' logits alone."""

    @classmethod
    def setUpClass(cls):
        cls.model = _model(LlamaForCausalLM, LlamaConfig, use_flash_attention=True)

    def setUp(self):
        apply()
        self.addCleanup(revert)

    def test_sft_pack(self):
        rng = np.random.default_rng(1)
        first, second, third = (_random_example(rng, n) for n in (6, 8, 5))
        changed_first = _random_example(rng, 6)
        logits = _logits(self.model, _sft_batch([[first, second, third]], True))
        changed = _logits(self.model, _sft_batch([[changed_first, second, third]], True))
        self.assertGreater(np.abs(changed[0, :6] - logits[0, :6]).max(), 1e-3)
        np.testing.assert_allclose(changed[0, 6:], logits[0, 6:], rtol=1e-5, atol=1e-6)

    def test_preference_pack(self):
        pair = PreferencePair(prompt=[5, 6, 7, 8], chosen=[10, 11, 12, 2], rejected=[20, 21, 2])
        other = PreferencePair(prompt=[30, 31], chosen=[40, 2], rejected=[50, 51, 2])
        new_chosen = pair._replace(chosen=[13, 14, 15, 2])
        collate = PackedPreferenceCollator(20, pad_token_id=0, flashmask=True)
        logits = _logits(self.model, collate([[pair, other]]))
        changed = _logits(self.model, collate([[new_chosen, other]]))
        chosen, rejected_and_rest = slice(3, 7), slice(7, 20)
        self.assertGreater(np.abs(changed[0, chosen] - logits[0, chosen]).max(), 1e-3)
        np.testing.assert_allclose(changed[0, rejected_and_rest], logits[0, rejected_and_rest], rtol=1e-5, atol=1e-6)


if __name__ == "__main__":
    unittest.main()
