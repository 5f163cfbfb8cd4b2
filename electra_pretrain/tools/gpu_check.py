"""`make gpu-check`: everything a first GPU should show, in one command of at most 10 minutes, written to
gpu-report.json and gpu-report.md (the device, the driver, the versions, and every command with its output).

In order, each step bounded in time so that the whole fits: the GPU tests; `bench` of Small and Base in bf16,
eager and compiled (reduce-overhead for Small), with MFU and peak memory; `prepare` of a corpus, then a short
Small run from the prepared examples with two data workers and a held-out evaluation, read back from its
metrics.jsonl (tokens/s, MFU, the share of step time spent waiting for data, peak memory). A step that fails is
reported and the next one runs. Without CUDA it says so in one line and writes a report that says so.

`--on-cpu` runs the same plan at toy sizes on the CPU (the suite does, so that the plan itself is tested).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TAIL_CHARS = 4000  # of each command's output, in the report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the report's folder")
    parser.add_argument("--on-cpu", action="store_true", help="the plan at toy sizes on the CPU (a test of it)")
    parser.add_argument("--corpus", default=None, help="text to prepare and train on (default: data/sotu, else made)")
    parser.add_argument(
        "--budget", type=float, default=540, help="seconds for all steps; a step that would not fit is skipped"
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    import torch

    report: dict = {"cuda": torch.cuda.is_available(), "on_cpu": args.on_cpu, "environment": environment()}
    if not report["cuda"] and not args.on_cpu:
        print("gpu-check: no CUDA device here (torch sees none); nothing to check")
        write(report, args.out)
        return 0
    start = time.time()
    report["steps"] = []
    for step in plan(args):
        left = args.budget - (time.time() - start)
        if left < step["limit"] / 2:  # too little time for it: say so rather than overrun the machine's limit
            report["steps"].append(
                {
                    "name": step["name"],
                    "command": shlex.join(step["command"]),
                    "returncode": None,
                    "seconds": 0,
                    "output_tail": f"skipped: {left:.0f} s of the budget left",
                }
            )
            continue
        report["steps"].append(run({**step, "limit": min(step["limit"], left)}, args.out))
        report["seconds"] = round(time.time() - start, 1)
        report["summary"] = summary(report["steps"], args.out)
        write(report, args.out)  # after every step: a run cut short still leaves its report
    report["seconds"] = round(time.time() - start, 1)
    report["summary"] = summary(report["steps"], args.out)
    write(report, args.out)
    failed = [step["name"] for step in report["steps"] if step["returncode"] not in (0, None)]
    print(
        f"gpu-check: {len(report['steps']) - len(failed)} of {len(report['steps'])} steps passed in "
        f"{report['seconds']:.0f} s; report: {args.out / 'gpu-report.md'}" + (f"; failed: {failed}" if failed else "")
    )
    return 1 if failed else 0


def environment() -> dict:
    import torch

    found: dict[str, object] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "cpus": os.cpu_count(),
    }
    for name in ("accelerate", "transformers", "tokenizers", "datasets", "safetensors", "triton"):
        try:
            found[name] = __import__(name).__version__
        except Exception:  # absent or broken: the report says so rather than stop
            found[name] = None
    if torch.cuda.is_available():
        found["device"] = torch.cuda.get_device_name()
        found["device_memory_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        found["capability"] = ".".join(map(str, torch.cuda.get_device_capability()))
        try:
            found["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            found["driver"] = None
    return found


def plan(args) -> list[dict]:
    """The steps: name, command, time limit (seconds). Toy sizes with --on-cpu."""
    py = [sys.executable]
    cli = [*py, "-m", "electra_pretrain"]
    out = args.out
    steps = []
    tests = ["tests/test_gpu.py", "tests/test_gpu_paths.py", "-m", "not slow", "-q", "-p", "no:cacheprovider"]
    steps.append({"name": "gpu tests", "command": [*py, "-m", "pytest", *tests], "limit": 120})
    if args.on_cpu:
        benches = [("bench tiny eager", ["--model", "tiny", "--device", "cpu", "--steps", "2", "--warmup", "1"])]
    else:
        common = ["--device", "cuda", "--precision", "bf16", "--seq-len", "128", "--steps", "20", "--warmup", "5"]
        benches = [
            ("bench small bf16 eager", ["--model", "small", "--batch-size", "128", *common]),
            (
                "bench small bf16 compiled (reduce-overhead)",
                [
                    "--model",
                    "small",
                    "--batch-size",
                    "128",
                    "--compile",
                    "--compile-mode",
                    "reduce-overhead",
                    "--no-reference",
                    *common,
                ],
            ),
            ("bench base bf16 eager", ["--model", "base", "--batch-size", "64", *common]),
            (
                "bench base bf16 compiled",
                ["--model", "base", "--batch-size", "64", "--compile", "--no-reference", *common],
            ),
        ]
    bench_steps = [
        {"name": name, "command": [*cli, "bench", *options, "--json"], "limit": 90, "json": True}
        for name, options in benches
    ]
    steps.append(bench_steps.pop(0))  # the first bench, then the data path and training, then the others
    corpus = args.corpus or (str(ROOT / "data" / "sotu") if (ROOT / "data" / "sotu").is_dir() else None)
    if corpus is None:
        corpus = str(out / "corpus")
        steps.append({"name": "make a corpus", "command": [*py, "-c", MAKE_CORPUS, corpus], "limit": 60})
    tokenizer, prepared, run_dir = out / "tokenizer", out / "prepared", out / "run"
    vocab = "2000" if args.on_cpu else "8000"
    steps.append(
        {
            "name": "tokenizer",
            "command": [
                *cli,
                "tokenizer",
                "train",
                corpus,
                "--vocab-size",
                vocab,
                "--out",
                str(tokenizer),
                "--document-boundary",
                "line",
            ],
            "limit": 60,
        }
    )
    steps.append(
        {
            "name": "prepare",
            "command": [
                *cli,
                "prepare",
                corpus,
                "--tokenizer",
                str(tokenizer),
                "--out",
                str(prepared),
                "--document-boundary",
                "line",
                "--held-out-share",
                "0.05",
            ],
            "limit": 60,
        }
    )
    if args.on_cpu:
        training = [
            "model=tiny",
            "trainer.max_steps=6",
            "trainer.global_batch_size=8",
            "trainer.log_every=2",
            "trainer.eval_tokens=2000",
            "optim.warmup_steps=1",
        ]
    else:
        training = [
            "experiment=electra_small_1gpu",
            "trainer.max_steps=600",
            "trainer.log_every=100",
            "trainer.eval_tokens=200000",
            "trainer.compile=true",
            "trainer.compile_mode=reduce-overhead",
        ]
    steps.append(
        {
            "name": "train small from prepared examples, 2 workers, held-out evaluation",
            "command": [
                *py,
                str(ROOT / "train.py"),
                *training,
                "data=prepared",
                f"data.path={prepared}",
                "data.eval_share=0.05",
                "data.num_workers=2",
                "trainer.eval_every=0",
                "trainer.save_every=100000",
                "logging=none",
                f"output_dir={run_dir}",
            ],
            "limit": 180,
            "metrics": str(run_dir / "metrics.jsonl"),
        }
    )
    return steps + bench_steps


MAKE_CORPUS = (
    "import random, sys, pathlib; r = random.Random(0); "
    "w = 'the of and to a in that is was he for it with as his on be at by i this had not are but from or have an "
    "they which one you were her all she there would their we him been has when who will more no if out so said "
    "what up its about into than them can only other new some could time these two may then do first any my now "
    "such like our over man me even most made after also did many before must through back years where much your "
    "way well down should because each just those people how too little state good very make world still own see "
    "men work long get here between both life being under never day same another know while last might us great "
    "old year off come since against go came right used take three'.split(); "
    "p = pathlib.Path(sys.argv[1]); p.mkdir(parents=True, exist_ok=True); "
    "(p / 'made.txt').write_text(''.join(' '.join(r.choice(w) for _ in range(r.randint(40, 400))) + '.\\n' "
    "for _ in range(20000)))"
)


def run(step: dict, out: Path) -> dict:
    print(f"gpu-check: {step['name']}: {shlex.join(step['command'])}", flush=True)
    start = time.time()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    try:
        done = subprocess.run(step["command"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=step["limit"])
        returncode, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as error:
        returncode = 124
        output = (error.stdout or b"").decode(errors="replace") + (error.stderr or b"").decode(errors="replace")
        output += f"\n(stopped at its {step['limit']} s limit)"
    result = {
        "name": step["name"],
        "command": shlex.join(step["command"]),
        "returncode": returncode,
        "seconds": round(time.time() - start, 1),
        "output_tail": output[-TAIL_CHARS:],
    }
    if step.get("json") and returncode == 0:
        lines = [line for line in output.splitlines() if line.startswith("{")]
        result["result"] = json.loads(lines[-1]) if lines else None
    if step.get("metrics") and Path(step["metrics"]).is_file():
        rows = [json.loads(line) for line in Path(step["metrics"]).read_text().splitlines() if line.strip()]
        result["result"] = {
            "train": [r for r in rows if "loss" in r][-3:],
            "eval": [r for r in rows if any(k.startswith("eval/") for k in r)][-1:],
        }
    print(f"gpu-check: {step['name']}: exit {returncode} after {result['seconds']} s", flush=True)
    return result


def summary(steps: list[dict], out: Path) -> list[str]:
    lines = []
    for step in steps:
        result = step.get("result") or {}
        if "tokens_per_s" in result:
            lines.append(
                f"{step['name']}: {result['tokens_per_s'] / 1e6:.2f} M tokens/s, MFU {result.get('mfu', 0):.1%}, "
                f"peak memory {result.get('peak_mem_bytes', 0) / 2**30:.1f} GiB"
            )
        if "train" in result and result["train"]:
            last = result["train"][-1]
            lines.append(
                f"{step['name']}: {last.get('tokens_per_s', 0) / 1e6:.2f} M tokens/s, MFU {last.get('mfu', 0):.1%}, "
                f"waiting for data {last.get('data_wait_share', 0):.1%} of the time, peak memory "
                f"{last.get('peak_memory_gb', 0):.1f} GiB"
            )
        if result.get("eval"):
            auc = result["eval"][-1].get("eval/random_replacement_auc")
            lines.append(f"{step['name']}: held-out random-replacement AUC {auc}")
    return lines


def write(report: dict, out: Path) -> None:
    (out / "gpu-report.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = ["# gpu-check report", ""]
    lines += [f"- {k}: {v}" for k, v in report["environment"].items()]
    if not report["cuda"] and not report["on_cpu"]:
        lines += ["", "No CUDA device: nothing was checked."]
    lines += ["", *[f"- {line}" for line in report.get("summary", [])], ""]
    for step in report.get("steps", []):
        lines += [
            f"## {step['name']}: exit {step['returncode']}, {step['seconds']} s",
            "",
            f"`{step['command']}`",
            "",
            "```",
            step["output_tail"].rstrip(),
            "```",
            "",
        ]
    (out / "gpu-report.md").write_text("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
