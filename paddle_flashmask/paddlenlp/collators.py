"""Collators: packs of examples -> padded model inputs with the right attention mask.

Every row is padded to `max_seq_len`; the padding is one more document that
attends only to itself. The mask comes from `paddle_flashmask.masks`, then
goes to the model in one of two forms:

- flashmask=True: `attn_mask_startend_row_indices`, int32 [B, 1, S], the
  layout PaddleNLP's own collators produce (O(S) per row);
- flashmask=False: the same mask as a dense bool `attention_mask`
  [B, 1, S, S] (O(S^2) per row), the baseline PaddleNLP uses without FlashMask.
"""

from __future__ import annotations

from typing import Dict, List

import numpy as np

from paddle_flashmask import _args
from paddle_flashmask.masks import MaskSpec, causal_document_mask, share_question_mask, to_dense
from paddle_flashmask.paddlenlp.chat_format import IGNORE_INDEX, PreferencePair, SFTExample
from paddle_flashmask.paddlenlp.patching import warn_if_not_routed


def _mask_inputs(spec: MaskSpec, flashmask: bool, sequence_split: bool = False) -> Dict[str, np.ndarray]:
    indices = spec.startend_row_indices  # [B, 1, S, 1]: causal masks with one bound per column
    if flashmask:
        warn_if_not_routed()
        # PaddleNLP's Trainer splits only [B, S] inputs along the sequence.
        return {"attn_mask_startend_row_indices": indices[:, 0, :, 0] if sequence_split else indices[..., 0]}
    return {"attention_mask": to_dense(spec)}


def _common_arguments(collator, max_seq_len, pad_token_id, flashmask) -> None:
    where = type(collator).__name__
    collator.max_seq_len = _args.integer(max_seq_len, "max_seq_len", where, minimum=1)
    collator.pad_token_id = _args.integer(pad_token_id, "pad_token_id", where, minimum=0)
    collator.flashmask = _args.boolean(flashmask, "flashmask", where)


class PackedSFTCollator:
    """Packs of SFTExample -> input_ids, labels, position_ids (restarting per
    example) and a causal document mask, so that packed examples never see
    each other. sequence_split=True (context/segment parallelism, where
    PaddleNLP's Trainer splits the inputs along the sequence): the FlashMask
    indices as [B, S] instead of [B, 1, S]."""

    def __init__(self, max_seq_len: int, pad_token_id: int, flashmask: bool, sequence_split: bool = False):
        _common_arguments(self, max_seq_len, pad_token_id, flashmask)
        self.sequence_split = _args.boolean(sequence_split, "sequence_split", type(self).__name__)

    def __call__(self, packs: List[List[SFTExample]]) -> Dict[str, np.ndarray]:
        shape = (len(packs), self.max_seq_len)
        input_ids = np.full(shape, self.pad_token_id, dtype=np.int64)
        labels = np.full(shape, IGNORE_INDEX, dtype=np.int64)
        position_ids = np.zeros(shape, dtype=np.int64)
        document_lengths = []
        for row, pack in enumerate(packs):
            lengths, start = [], 0
            for example in pack:
                end = start + len(example.input_ids)
                input_ids[row, start:end] = example.input_ids
                labels[row, start:end] = example.labels
                position_ids[row, start:end] = np.arange(end - start)
                lengths.append(end - start)
                start = end
            if start < self.max_seq_len:
                lengths.append(self.max_seq_len - start)
            document_lengths.append(lengths)
        batch = {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}
        batch.update(_mask_inputs(causal_document_mask(document_lengths), self.flashmask, self.sequence_split))
        return batch


class PackedPreferenceCollator:
    """Packs of PreferencePair -> one sequence per pack for DPO (PaddleNLP's
    DPOTrainer batch: chosen_labels, rejected_labels, response_indexs) or RM.

    Each pair is laid out as question | chosen | rejected with a share-question
    mask: both answers see the question, neither sees the other, and pairs
    never see each other. Position ids restart at every pair and each answer's
    restart right after the question, as if it were the only answer.
    `response_indexs` rows are [row, chosen_start, rejected_start, rejected_end].
    Label arrays hold 0 outside their answer (PaddleNLP's DPO convention: the
    criterion only reads the spans of `response_indexs`).
    """

    def __init__(self, max_seq_len: int, pad_token_id: int, flashmask: bool, dpo_labels: bool = True):
        _common_arguments(self, max_seq_len, pad_token_id, flashmask)
        self.dpo_labels = _args.boolean(dpo_labels, "dpo_labels", type(self).__name__)

    def __call__(self, packs: List[List[PreferencePair]]) -> Dict[str, np.ndarray]:
        shape = (len(packs), self.max_seq_len)
        input_ids = np.full(shape, self.pad_token_id, dtype=np.int64)
        position_ids = np.zeros(shape, dtype=np.int64)
        answer_labels = {"chosen_labels": np.zeros(shape, np.int64), "rejected_labels": np.zeros(shape, np.int64)}
        response_indexs, documents = [], []
        for row, pack in enumerate(packs):
            row_documents, start = [], 0
            for pair in pack:
                question = pair.question_length
                input_ids[row, start : start + question] = pair.prompt[:-1]
                position_ids[row, start : start + question] = np.arange(question)
                answer_starts = []
                answer_start = start + question
                for answer, labels in ((pair.chosen, "chosen_labels"), (pair.rejected, "rejected_labels")):
                    answer_end = answer_start + len(answer)
                    # The last prompt token predicts the answer's first token.
                    input_ids[row, answer_start:answer_end] = [pair.prompt[-1]] + answer[:-1]
                    answer_labels[labels][row, answer_start:answer_end] = answer
                    position_ids[row, answer_start:answer_end] = np.arange(question, question + len(answer))
                    answer_starts.append(answer_start)
                    answer_start = answer_end
                response_indexs.append([row, answer_starts[0], answer_starts[1], answer_start])
                row_documents.append((question, [len(pair.chosen), len(pair.rejected)]))
                start = answer_start
            if start < self.max_seq_len:
                row_documents.append((self.max_seq_len - start, []))  # padding: a question with no answer
            documents.append(row_documents)
        batch = {
            "input_ids": input_ids,
            "position_ids": position_ids,
            "response_indexs": np.asarray(response_indexs, dtype=np.int64),
        }
        if self.dpo_labels:
            batch.update(answer_labels)
        batch.update(_mask_inputs(share_question_mask(documents), self.flashmask))
        return batch
