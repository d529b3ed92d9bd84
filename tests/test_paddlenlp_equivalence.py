"""SFT, LoRA, DPO and RM: the same batch with and without --flashmask gives the
same loss (fp32, rtol 1e-5) and the same gradients.

Trainers are built by the example scripts' own build_trainer(), so this checks
exactly what `train.py --flashmask` and `train.py` run.
"""

import importlib.util
import sys
import tempfile
import unittest
from pathlib import Path

import numpy as np
import paddle

from paddle_flashmask.paddlenlp import flashmask_routing

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SMALL_RUN = ["--max_seq_len", "192", "--per_device_train_batch_size", "2"]


def _load_script(relative_path: str):
    path = EXAMPLES / relative_path
    spec = importlib.util.spec_from_file_location(path.parent.name + "_train", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


SFT_SCRIPT = _load_script("sft_lora/train.py")
PREFERENCE_SCRIPT = _load_script("dpo_rm/train.py")


def _loss_and_gradients(trainer):
    """compute_loss + backward on the first batch of the trainer's own data and collator."""
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    loss = trainer.compute_loss(trainer.model, {k: paddle.to_tensor(v) for k, v in batch.items()})
    loss.backward()
    gradients = {name: p.grad.numpy() for name, p in trainer.model.named_parameters() if p.grad is not None}
    return batch, float(loss), gradients


class TestFlashmaskMatchesDense(unittest.TestCase):
    def _compare(self, script, argv):
        results = {}
        for flashmask in (False, True):
            with tempfile.TemporaryDirectory() as output_dir:
                parsed = script.parse(argv + SMALL_RUN + ["--output_dir", output_dir, "--flashmask", str(flashmask)])
                trainer, _report = script.build_trainer(*parsed)
                if flashmask:
                    with flashmask_routing():
                        results[flashmask] = _loss_and_gradients(trainer)
                else:
                    results[flashmask] = _loss_and_gradients(trainer)
        (dense_batch, dense_loss, dense_grads), (flash_batch, flash_loss, flash_grads) = results[False], results[True]

        self.assertIn("attention_mask", dense_batch)
        self.assertIn("attn_mask_startend_row_indices", flash_batch)
        self.assertNotIn("attention_mask", flash_batch)
        np.testing.assert_allclose(flash_loss, dense_loss, rtol=1e-5)
        self.assertEqual(sorted(flash_grads), sorted(dense_grads))
        self.assertTrue(any(np.abs(g).max() > 0 for g in dense_grads.values()))
        for name, gradient in dense_grads.items():
            scale = np.abs(gradient).max()
            np.testing.assert_allclose(flash_grads[name], gradient, rtol=1e-4, atol=1e-5 * scale, err_msg=name)
        return dense_grads

    def test_sft(self):
        self._compare(SFT_SCRIPT, [])

    def test_lora(self):
        gradients = self._compare(SFT_SCRIPT, ["--lora"])
        self.assertTrue(all("lora" in name for name in gradients))

    def test_dpo(self):
        # An SFT term makes the loss depend on the logits even while policy == reference.
        self._compare(PREFERENCE_SCRIPT, ["--mode", "dpo", "--sft_loss_ratio", "1.0"])

    def test_rm(self):
        self._compare(PREFERENCE_SCRIPT, ["--mode", "rm"])


if __name__ == "__main__":
    unittest.main()
