"""train.py / finetune.py with a fault injected at one phase: `python faulty.py APP PHASE <overrides>`.

APP is train or finetune; PHASE one of FAULTS[APP]. The fault is a RuntimeError (what a CUDA out-of-memory error or
a bug raises), or with PHASE=disk an OSError ENOSPC, raised from inside the real code path, so the test sees what a
user would: the exit code, the time to exit, the message and what is left on disk.
"""

import errno
import sys


def fail(where: str, disk: bool = False):
    def raising(*args, **kwargs):
        if disk:
            raise OSError(errno.ENOSPC, "No space left on device", where)
        raise RuntimeError(f"injected fault: {where}")

    return raising


def after_steps(real, steps: int, where: str):
    calls = {"n": 0}

    def step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > steps:
            raise RuntimeError(f"injected fault: {where}")
        return real(*args, **kwargs)

    return step


def inject_train(phase: str) -> None:
    import electra_pretrain.pretrain.train as trainer
    from electra_pretrain.pretrain.evaluate import Evaluator

    if phase == "startup":
        trainer.prepare_tokenizer = fail("start-up")
    elif phase == "step":
        trainer.train_step = after_steps(trainer.train_step, 2, "training step 3")
    elif phase == "evaluation":
        Evaluator.__call__ = fail("held-out evaluation")
    elif phase == "save":
        trainer.Checkpointer.save = fail("saving a checkpoint")
    elif phase == "export":
        trainer.export_model = fail("export", disk=True)
    elif phase == "export_midway":  # the discriminator written, then the disk is full
        from electra_pretrain.modeling import ElectraGenerator

        ElectraGenerator.save_pretrained = fail("writing the generator", disk=True)
    elif phase == "finish":
        trainer.plot_runs = fail("drawing the curves")
    else:
        raise SystemExit(f"unknown phase {phase}")


def inject_finetune(phase: str) -> None:
    import electra_pretrain.finetune.train as tuner

    if phase == "step":
        tuner.FineTuner._step = after_steps(tuner.FineTuner._step, 2, "fine-tuning step 3")
    elif phase == "evaluation":
        tuner.FineTuner._evaluate = fail("validation")
    elif phase == "finish":
        tuner.write_model = fail("writing the model", disk=True)
    else:
        raise SystemExit(f"unknown phase {phase}")


if __name__ == "__main__":
    app, phase, *overrides = sys.argv[1:]
    sys.argv = [f"faulty {app}", *overrides]
    if app == "train":
        inject_train(phase)
        from electra_pretrain.pretrain.app import main
    else:
        inject_finetune(phase)
        from electra_pretrain.finetune.app import main
    main()
