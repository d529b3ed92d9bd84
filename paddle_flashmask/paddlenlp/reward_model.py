"""A reward model for packed preference sequences (PaddleNLP's pip package has none).

A PaddleNLP backbone (LlamaModel, Qwen2Model, ...) with a linear score head.
A pair's rewards are the scores at the last token of its chosen and of its
rejected answer; thanks to the share-question mask each of those tokens has
seen the question and its own answer only. The loss is the Bradley-Terry
pairwise loss -log sigmoid(r_chosen - r_rejected).
"""

from __future__ import annotations

import paddle
import paddle.nn.functional as F
from paddle import nn


class RewardModel(nn.Layer):
    def __init__(self, backbone: nn.Layer):
        super().__init__()
        self.backbone = backbone
        self.config = backbone.config
        self.score = nn.Linear(backbone.config.hidden_size, 1)

    def forward(
        self,
        input_ids,
        position_ids,
        response_indexs,
        attention_mask=None,
        attn_mask_startend_row_indices=None,
    ):
        """response_indexs: [pairs, 4] rows of [row, chosen_start, rejected_start, rejected_end].
        Returns (loss, chosen_rewards, rejected_rewards)."""
        hidden_states = self.backbone(
            input_ids,
            position_ids=position_ids,
            attention_mask=attention_mask,
            attn_mask_startend_row_indices=attn_mask_startend_row_indices,
            return_dict=True,
        ).last_hidden_state
        rows = response_indexs[:, 0]
        chosen_last = paddle.stack([rows, response_indexs[:, 2] - 1], axis=-1)
        rejected_last = paddle.stack([rows, response_indexs[:, 3] - 1], axis=-1)
        chosen_rewards = self.score(paddle.gather_nd(hidden_states, chosen_last)).squeeze(-1)
        rejected_rewards = self.score(paddle.gather_nd(hidden_states, rejected_last)).squeeze(-1)
        loss = -F.log_sigmoid(chosen_rewards - rejected_rewards).mean()
        return loss, chosen_rewards, rejected_rewards
