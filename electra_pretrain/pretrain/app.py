"""`accelerate launch train.py <overrides>` (or `python train.py`, `electra-pretrain train`): the Hydra app.

Composes configs/pretrain/train.yaml with the overrides, checks every key and value before anything heavy is built,
then runs the `Trainer` (imported only then, so `--help` and config errors answer before torch loads).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from electra_pretrain.jobs import config_dir, exit_if_jobs_failed, run_job
from electra_pretrain.pretrain.config import TrainConfig, register_configs

CONFIG_DIR = config_dir("pretrain")
register_configs()


def run(config: TrainConfig, config_yaml: str) -> int:
    from electra_pretrain.pretrain.train import Trainer
    from electra_pretrain.signals import die_with_launcher

    die_with_launcher()
    return Trainer(config, config_yaml).run()


@hydra.main(config_path=CONFIG_DIR, config_name="train", version_base="1.3")
def hydra_main(cfg: DictConfig) -> None:
    run_job(cfg, TrainConfig, run)


def main() -> None:
    hydra_main()
    exit_if_jobs_failed()


if __name__ == "__main__":
    main()
