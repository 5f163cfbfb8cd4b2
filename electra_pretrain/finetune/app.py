"""`python finetune.py model_path=DIR task=<kind or preset> <overrides>` (or `accelerate launch finetune.py`,
`electra-pretrain finetune`): the Hydra app.

Composes configs/finetune/finetune.yaml with the overrides, checks every key and value, then runs the fine-tuner
(imported only then, so `--help` and config errors answer before torch loads).
"""

from __future__ import annotations

import hydra
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from electra_pretrain.finetune.config import FinetuneConfig, register_finetune_configs
from electra_pretrain.jobs import check_known_keys, config_dir, exit_if_jobs_failed, run_job

CONFIG_DIR = config_dir("finetune")
register_finetune_configs()


def run(config: FinetuneConfig, config_yaml: str) -> int:
    from electra_pretrain.finetune.train import run_finetuning

    code, _ = run_finetuning(config, config_yaml)
    return code


def compose_config(overrides: list[str]) -> tuple[FinetuneConfig, str]:
    """configs/finetune/finetune.yaml with the overrides, checked: the config and its resolved YAML."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("finetune", overrides=overrides)
    check_known_keys(cfg, OmegaConf.structured(FinetuneConfig))
    config = OmegaConf.to_object(cfg)
    assert isinstance(config, FinetuneConfig)
    return config, OmegaConf.to_yaml(cfg, resolve=True)


def finetune_from_overrides(overrides: list[str]) -> dict:
    """The command line's run in this process (benchmarks, tests, studies): compose, check and run it; returns the
    results ({} when a stop signal ended it)."""
    from electra_pretrain.finetune.train import run_finetuning

    _, results = run_finetuning(*compose_config(overrides))
    return results


@hydra.main(config_path=CONFIG_DIR, config_name="finetune", version_base="1.3")
def hydra_main(cfg: DictConfig) -> None:
    run_job(cfg, FinetuneConfig, run)


def main() -> None:
    hydra_main()
    exit_if_jobs_failed()


if __name__ == "__main__":
    main()
