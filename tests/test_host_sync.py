"""A step that neither logs, evaluates nor saves makes no host sync: the GPU may run ahead of the loop."""

import collections

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from .helpers.runs import overrides

# The tensor methods that wait for the device and copy a value to the host.
SYNCING = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")


@pytest.mark.slow
def test_steps_that_do_not_log_make_no_host_sync(corpus, tmp_path, monkeypatch):
    """Counted in the training process; the examples are built in a dataloader worker, as on a GPU machine (its
    tensors are host memory anyway)."""
    from electra_pretrain.pretrain.app import CONFIG_DIR
    from electra_pretrain.pretrain.train import Trainer

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=overrides(
                corpus,
                tmp_path / "run",
                "trainer.max_steps=8",
                "trainer.log_every=4",
                "trainer.save_every=8",
                "data.num_workers=1",
            ),
        )
    trainer = Trainer(OmegaConf.to_object(cfg), OmegaConf.to_yaml(cfg, resolve=True))
    syncs = collections.Counter()

    def counted(name):
        original = getattr(torch.Tensor, name)

        def method(self, *args, **kwargs):
            syncs[trainer.state.step, name] += 1
            return original(self, *args, **kwargs)

        return method

    for name in SYNCING:
        monkeypatch.setattr(torch.Tensor, name, counted(name))
    assert trainer.run() == 0
    monkeypatch.undo()
    steps = {step for step, _ in syncs}
    # step 1 once: the first step's end is waited for, so start-up and compilation stay out of tokens/s
    assert syncs[1, "item"] == 1 and sum(n for (step, _), n in syncs.items() if step == 1) == 1, sorted(syncs.items())
    assert steps <= {0, 1, 4, 8}, sorted(syncs.items())
    assert {4, 8} <= steps  # the counting sees the log steps' reads
