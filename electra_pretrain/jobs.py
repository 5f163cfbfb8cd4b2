"""The Hydra job shell both apps share: where the configs are, checks of a composed config, the output folder of
each sweep job, and exit codes.

Nothing heavy is imported here, so an app's `--help` and a config error answer before torch is loaded.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from electra_pretrain.failures import known_failure

EXIT_FAILED = 1
EXIT_STOPPED = 75  # EX_TEMPFAIL: stopped by a signal after saving; rerun the same command to resume
# The errors a user can act on (bad input, a full disk, a diverged run): one line, no traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, FloatingPointError)


def config_dir(app: str) -> str:
    """configs/<app> of a source checkout, else the copy an installed wheel carries (electra_pretrain/configs)."""
    package = Path(__file__).resolve().parent
    for candidate in (package.parent / "configs" / app, package / "configs" / app):
        if candidate.is_dir():
            return str(candidate)
    raise FileNotFoundError(f"no Hydra configs for {app!r} beside {package} (configs/{app}/)")


def check_known_keys(config: DictConfig, schema: DictConfig, prefix: str = "") -> None:
    """Refuse keys the schema does not have, `+key=value` additions included (Hydra accepts those silently)."""
    for key in map(str, config):
        if key == "hydra" and not prefix:
            continue
        name = f"{prefix}{key}"
        if key not in schema:
            known = ", ".join(sorted(str(k) for k in schema))
            raise ValueError(f"unknown config key {name!r} (known under {prefix.rstrip('.') or 'the root'}: {known})")
        value, expected = config[key], schema[key]
        # A dict-typed field (e.g. task.extra_validation_files) takes keys of the user's choosing.
        open_mapping = OmegaConf.get_type(expected) is dict
        if isinstance(value, DictConfig) and isinstance(expected, DictConfig) and not open_mapping:
            check_known_keys(value, expected, f"{name}.")


def job_output_dir(output_dir: str) -> str:
    """In a Hydra sweep (-m) each job runs in its own folder, output_dir/<job number> (Hydra's own convention;
    the job's config.yaml says which overrides it ran with)."""
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        return str(Path(output_dir) / str(HydraConfig.get().job.num))
    return output_dir


def yaml_mapping(text: str) -> dict[str, Any]:
    """A resolved config's YAML text as plain nested dicts (for trackers, model cards and config checks)."""
    mapping = OmegaConf.to_container(OmegaConf.create(text), resolve=True)
    if not isinstance(mapping, dict):
        raise ValueError(f"a config is a mapping of keys to values, not a {type(mapping).__name__}")
    return {str(k): v for k, v in mapping.items()}


FAILED_JOBS: list[str] = []


def run_job(cfg: DictConfig, schema: type, run: Callable[[Any, str], int]) -> None:
    """One Hydra job: its own folder in a sweep, unknown keys refused, the typed config built (its checks run) and
    `run(config, resolved_yaml)` called. A user error is one line on stderr; a failed job exits with its code, or
    in a sweep is recorded and the sweep goes on (`exit_if_jobs_failed`)."""
    cfg.output_dir = job_output_dir(cfg.output_dir)
    try:
        check_known_keys(cfg, OmegaConf.structured(schema))
        code = run(OmegaConf.to_object(cfg), OmegaConf.to_yaml(cfg, resolve=True))
    except Exception as error:
        known = known_failure(error)
        if known is None and not isinstance(error, USER_ERRORS):
            raise  # a bug: Hydra prints the traceback and the process exits with 1
        print(f"error: {known or error}", file=sys.stderr)
        code = EXIT_FAILED
    if code and HydraConfig.get().mode == RunMode.MULTIRUN:
        FAILED_JOBS.append(cfg.output_dir)
    elif code:
        sys.exit(code)


def exit_if_jobs_failed() -> None:
    if FAILED_JOBS:
        print(f"error: {len(FAILED_JOBS)} sweep job(s) did not finish: {', '.join(FAILED_JOBS)}", file=sys.stderr)
        sys.exit(EXIT_FAILED)
