"""PaddleNLP data path: chat formatting, greedy packing, collators and their masks."""

import tempfile
import unittest

import numpy as np

from paddle_flashmask.masks import to_dense
from paddle_flashmask.paddlenlp.chat_format import (
    IGNORE_INDEX,
    PreferencePair,
    SFTExample,
    preference_pair,
    sft_example,
    tokenize_conversation,
)
from paddle_flashmask.paddlenlp.collators import PackedPreferenceCollator, PackedSFTCollator
from paddle_flashmask.paddlenlp.packing import pack_greedily
from tests import examples_path  # noqa: F401  (examples/common importable as `common`)
from common.synthetic_data import preference_examples, sft_examples  # noqa: E402
from common.tiny_llama import build_tokenizer  # noqa: E402


def _document_ids(lengths):
    return np.repeat(np.arange(len(lengths)), lengths)


class TestPacking(unittest.TestCase):
    def test_greedy_keeps_order_and_capacity(self):
        packs = pack_greedily(list("abcdef"), [3, 4, 2, 5, 1, 6], max_seq_len=7)
        self.assertEqual(packs, [["a", "b"], ["c", "d"], ["e", "f"]])

    def test_too_long_example_is_an_error(self):
        with self.assertRaisesRegex(ValueError, "`lengths\\[0\\]` \\(5\\) must be at most `max_seq_len` \\(4\\)"):
            pack_greedily(["a"], [5], max_seq_len=4)


class TestChatFormat(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        texts = [m["content"] for r in sft_examples(60) for m in r["messages"]]
        cls.tokenizer = build_tokenizer(texts, cls.tmp.name, vocab_size=400)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_only_assistant_replies_are_trained(self):
        messages = [
            {"role": "user", "content": "What is 2 plus 3?"},
            {"role": "assistant", "content": "2 plus 3 is 5."},
        ]
        tokens, trained = tokenize_conversation(messages, self.tokenizer)
        reply = self.tokenizer.decode([t for t, keep in zip(tokens, trained) if keep])
        self.assertEqual(reply.replace("</s>", "").strip(), "2 plus 3 is 5.")
        self.assertEqual(tokens[-1], self.tokenizer.eos_token_id)
        self.assertTrue(trained[-1])

    def test_sft_example_is_shifted_and_truncated(self):
        messages = sft_examples(1, seed=3)[0]["messages"]
        tokens, trained = tokenize_conversation(messages, self.tokenizer)
        example = sft_example(messages, self.tokenizer, max_seq_len=10_000)
        self.assertEqual(example.input_ids, tokens[:-1])
        expected = [t if keep else IGNORE_INDEX for t, keep in zip(tokens[1:], trained[1:])]
        self.assertEqual(example.labels, expected)
        short = sft_example(messages, self.tokenizer, max_seq_len=len(tokens) - 3)
        self.assertEqual(len(short.input_ids), len(tokens) - 3)

    def test_preference_pair_fits_max_seq_len(self):
        record = preference_examples(1)[0]
        full = preference_pair(record, self.tokenizer, max_seq_len=10_000)
        self.assertEqual(full.chosen[-1], self.tokenizer.eos_token_id)
        self.assertIn(record["prompt"], self.tokenizer.decode(full.prompt))
        for limit in (full.length - 1, full.length // 2, 8):
            pair = preference_pair(record, self.tokenizer, max_seq_len=limit)
            self.assertLessEqual(pair.length, limit)
            self.assertGreaterEqual(pair.question_length, 1)
            self.assertTrue(pair.chosen and pair.rejected)


class TestPackedSFTCollator(unittest.TestCase):
    def setUp(self):
        # Two packs: examples of 4 and 3 tokens, then one of 5.
        self.examples = [
            [self._example(10, 4), self._example(20, 3)],
            [self._example(30, 5)],
        ]
        self.dense = PackedSFTCollator(9, pad_token_id=0, flashmask=False)(self.examples)
        self.flash = PackedSFTCollator(9, pad_token_id=0, flashmask=True)(self.examples)

    @staticmethod
    def _example(base, length):
        """Tokens base, base+1, ...; each labelled with the next one, the last one with nothing."""
        ids = list(range(base, base + length))
        return SFTExample(ids, ids[1:] + [IGNORE_INDEX])

    def _check_layout(self, batch):
        np.testing.assert_array_equal(batch["input_ids"][0, :7], [10, 11, 12, 13, 20, 21, 22])
        # An example's last label stays its own: never the next example's first token.
        np.testing.assert_array_equal(batch["labels"][0, :7], [11, 12, 13, IGNORE_INDEX, 21, 22, IGNORE_INDEX])
        np.testing.assert_array_equal(batch["position_ids"][0, :7], [0, 1, 2, 3, 0, 1, 2])
        np.testing.assert_array_equal(batch["position_ids"][1, :5], [0, 1, 2, 3, 4])
        np.testing.assert_array_equal(batch["input_ids"][1, 5:], [0] * 4)
        np.testing.assert_array_equal(batch["labels"][1, 5:], [IGNORE_INDEX] * 4)

    def test_layout(self):
        for batch in (self.dense, self.flash):
            self._check_layout(batch)

    def test_flashmask_indices_are_the_dense_mask(self):
        indices = self.flash["attn_mask_startend_row_indices"]
        self.assertEqual(indices.shape, (2, 1, 9))
        self.assertEqual(indices.dtype, np.int32)
        np.testing.assert_array_equal(to_dense(indices[..., None], causal=True), self.dense["attention_mask"])
        self.assertNotIn("attention_mask", self.flash)
        self.assertNotIn("attn_mask_startend_row_indices", self.dense)

    def test_examples_only_see_themselves(self):
        # the padding is a document of its own
        for row, lengths in enumerate(([4, 3, 2], [5, 4])):
            docs = _document_ids(lengths)
            expected = (docs[:, None] == docs[None, :]) & np.tri(9, dtype=bool)
            np.testing.assert_array_equal(self.dense["attention_mask"][row, 0], expected)


class TestPackedPreferenceCollator(unittest.TestCase):
    def setUp(self):
        # prompt of 4 tokens (question 3 + the answers' first input), answers of 3 and 2 tokens.
        first = PreferencePair(prompt=[11, 12, 13, 14], chosen=[21, 22, 2], rejected=[31, 2])
        second = PreferencePair(prompt=[41, 42], chosen=[51, 2], rejected=[61, 62, 2])
        self.packs = [[first, second], [second]]
        self.collate = PackedPreferenceCollator(16, pad_token_id=0, flashmask=False)
        self.batch = self.collate(self.packs)

    def test_layout_and_labels(self):
        batch = self.batch
        # first pair: question 11 12 13 | 14 21 22 | 14 31 ; second: 41 | 42 51 | 42 61 62 ; padding
        np.testing.assert_array_equal(
            batch["input_ids"][0], [11, 12, 13, 14, 21, 22, 14, 31, 41, 42, 51, 42, 61, 62, 0, 0]
        )
        np.testing.assert_array_equal(
            batch["position_ids"][0, :14], [0, 1, 2, 3, 4, 5, 3, 4, 0, 1, 2, 1, 2, 3]
        )
        np.testing.assert_array_equal(batch["chosen_labels"][0, 3:6], [21, 22, 2])
        np.testing.assert_array_equal(batch["rejected_labels"][0, 6:8], [31, 2])
        self.assertEqual(batch["chosen_labels"][0].astype(bool).sum(), 3 + 2)
        np.testing.assert_array_equal(batch["response_indexs"], [[0, 3, 6, 8], [0, 9, 11, 14], [1, 1, 3, 6]])

    @staticmethod
    def _share_question(pairs, padding, n=16):
        """The mask from its definition: each pair's question is causal over itself, each answer
        sees its question and itself causally (never the other answer nor another pair); the
        padding [padding, n) is a causal document of its own. pairs: (question, answers) ranges."""
        allowed = np.zeros((n, n), bool)
        tri = lambda r: np.tri(len(r), dtype=bool)  # noqa: E731
        for question, answers in pairs:
            allowed[question.start:question.stop, question.start:question.stop] = tri(question)
            for a in answers:
                allowed[a.start:a.stop, question.start:question.stop] = True
                allowed[a.start:a.stop, a.start:a.stop] = tri(a)
        allowed[padding:, padding:] = tri(range(padding, n))
        return allowed

    def test_share_question_mask(self):
        # row 0: question 11 12 13, chosen 14 21 22, rejected 14 31; question 41, chosen 42 51,
        # rejected 42 61 62; padding. Row 1: the second pair alone, then padding.
        expected = [
            self._share_question([(range(0, 3), (range(3, 6), range(6, 8))),
                                  (range(8, 9), (range(9, 11), range(11, 14)))], padding=14),
            self._share_question([(range(0, 1), (range(1, 3), range(3, 6)))], padding=6),
        ]
        for row, want in enumerate(expected):
            np.testing.assert_array_equal(self.batch["attention_mask"][row, 0], want)

    def test_flashmask_indices_are_the_dense_mask(self):
        flash = PackedPreferenceCollator(16, pad_token_id=0, flashmask=True)(self.packs)
        indices = flash["attn_mask_startend_row_indices"]
        np.testing.assert_array_equal(to_dense(indices[..., None], causal=True), self.batch["attention_mask"])
        for key in ("input_ids", "position_ids", "chosen_labels", "rejected_labels", "response_indexs"):
            np.testing.assert_array_equal(flash[key], self.batch[key])

    def test_reward_model_batches_carry_no_dpo_labels(self):
        batch = PackedPreferenceCollator(16, pad_token_id=0, flashmask=True, dpo_labels=False)(self.packs)
        self.assertNotIn("chosen_labels", batch)
        self.assertIn("response_indexs", batch)


if __name__ == "__main__":
    unittest.main()
