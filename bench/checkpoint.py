"""Checkpoint benchmark: notice -> durable, resume -> first step, and throughput with checkpoints,
each printed next to a baseline measured in the same run (moto S3 on 127.0.0.1 by default).

    python bench/checkpoint.py --sizes 10M,50M [--repeats R] [--device cpu|cuda|auto] [--json OUT]
                               [--method full|lora|qlora] [--precision auto|bf16|fp16|fp32]

--method lora: the checkpoint is the adapter and its optimizer state; (b)'s baseline downloads it and
loads the base model and the adapter (PeftModel.from_pretrained).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# GPT-2 shapes (layers, hidden) giving about the named parameter count with a 512-token vocabulary
SIZES = {"10M": (6, 384), "50M": (8, 704), "125M": (13, 896)}
TARGETS = {"notice": 1.3, "resume": 1.3, "throughput": 0.95}
CALIBRATION_STEPS = 6


def moto_subprocess():
    """A moto server in its own process at a lower priority: like a remote S3, its CPU work does not
    share this process's GIL, and it does not take the trainer's CPU while training runs."""
    from deployments.local_aws import moto_server_process

    return moto_server_process(nice=10)


def build_model(root: Path, size: str, dataset: Path) -> Path:
    import torch
    from transformers import GPT2LMHeadModel

    from training.tiny_model import tiny_config, train_tokenizer
    from training.data import parse_corpus

    layers, hidden = SIZES[size]
    tokenizer = train_tokenizer(parse_corpus(dataset.read_bytes(), dataset.name), 512)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(tiny_config(len(tokenizer), layers, hidden, heads=hidden // 64, positions=256))
    out = root / f"model-{size}"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def run(spec, s3, stop_at: int | None = None, step_ends: list[float] | None = None):
    from training.loop import TrainerIO, run_training
    from training.stopping import StopFlag
    from training.storage import S3Store

    flag = StopFlag()

    def on_step(step, loss):
        if step_ends is not None:
            step_ends.append(time.perf_counter())
        if stop_at is not None and step == stop_at:
            flag.set("spot_notice")

    result = run_training(spec, TrainerIO(store=S3Store.from_uri(s3, spec.output), s3=s3, on_step=on_step), flag)
    if result.error:
        raise RuntimeError(result.error)
    return result


def median_step_s(step_ends: list[float]) -> float:
    """The median step time, the first step (warm-up) excluded."""
    gaps = sorted(b - a for a, b in zip(step_ends[1:], step_ends[2:]))
    return gaps[len(gaps) // 2]


def raw_upload_s(s3, bucket: str, local: Path) -> float:
    """Baseline (a): plain boto3 upload_file of the same files, one after another."""
    files = sorted(p for p in local.rglob("*") if p.is_file())
    start = time.perf_counter()
    for path in files:
        s3.upload_file(str(path), bucket, f"raw-upload/{path.name}")
    return time.perf_counter() - start


def raw_download_load_s(s3, output: str, step: int, target: Path, model_dir: Path, method: str,
                        batch: tuple[int, int] | None = None) -> tuple[float, float | None]:
    """Baseline (b): plain boto3 download of the same checkpoint files + from_pretrained (for an
    adapter: the base model from its source, then PeftModel.from_pretrained of the adapter); and,
    given `batch` (size, seq_len), the time of one training step of the loaded model (ours counts
    its first step: for a small checkpoint the step is most of the time)."""
    import torch
    from transformers import AutoModelForCausalLM

    from training.contract import checkpoint_prefix
    from training.storage import split_s3_uri

    bucket, prefix = split_s3_uri(output)
    start = time.perf_counter()
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=prefix + checkpoint_prefix(step))["Contents"]
    for obj in listing:
        s3.download_file(bucket, obj["Key"], str(target / obj["Key"].rsplit("/", 1)[1]))
    if method == "full":
        model = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32)
    else:
        from peft import PeftModel

        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
                                          target, is_trainable=True)
    loaded = time.perf_counter() - start
    if batch is None:
        return loaded, None
    start = time.perf_counter()
    ids = torch.randint(0, model.config.vocab_size, batch)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    return loaded, time.perf_counter() - start


def trainer_default_s(model_dir: Path, s3, bucket: str, work: Path, method: str = "full") -> float | None:
    """(a) the transformers way: Trainer.save_model + save_state (+ its optimizer/scheduler files),
    then a synchronous upload of the folder."""
    try:
        import accelerate  # noqa: F401  (the Trainer needs it)
    except ImportError:
        print("  trainer_default_s: skipped (the transformers Trainer needs `accelerate`)")
        return None
    import torch
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if method != "full":
        from peft import LoraConfig, get_peft_model

        from training.adapters import default_target_modules
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, task_type="CAUSAL_LM",
                                                 target_modules=default_target_modules(model.config.model_type)))
    args = TrainingArguments(output_dir=str(work / "hf-trainer"), report_to=[], use_cpu=not torch.cuda.is_available())
    trainer = Trainer(model=model, args=args)
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    ids = torch.randint(0, model.config.vocab_size, (1, 16), device=model.device)
    model(input_ids=ids, labels=ids).loss.backward()
    trainer.optimizer.step()  # the optimizer state now has its moments, as in a real checkpoint
    out = work / "hf-trainer" / "checkpoint"
    start = time.perf_counter()
    trainer.save_model(str(out))
    trainer.save_state()
    trainer._save_optimizer_and_scheduler(str(out))  # what Trainer._save_checkpoint writes besides
    for path in sorted(p for p in Path(args.output_dir).rglob("*") if p.is_file()):
        s3.upload_file(str(path), bucket, f"hf-trainer/{path.relative_to(args.output_dir)}")
    return time.perf_counter() - start


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def measure_once(tag: str, args, s3, bucket: str, work: Path, common: dict, plain_first: bool) -> dict:
    """One repeat of (a), (b) and (c) (those in --parts), each next to its baseline, under fresh S3 prefixes."""
    parts = args.parts
    from training.checkpoint import download_verified
    from training.contract import read_latest
    from training.spec import TrainingSpec
    from training.storage import S3Store

    # (a) notice -> checkpoint durable in S3, vs a plain upload of the same bytes; the first steps
    # also time one training step, to turn --checkpoint-seconds into an interval N for (c)
    notice = TrainingSpec(job_id="notice", output=f"s3://{bucket}/notice-{tag}/", max_steps=100_000,
                          checkpoint_every_steps=None, **common)
    step_ends: list[float] = []
    figures: dict = {}
    if "a" in parts:
        result = run(notice, s3, stop_at=CALIBRATION_STEPS, step_ends=step_ends)
        manifest = read_latest(s3, notice.output)
        local = work / f"copy-{bucket}-{tag}"
        for name, data in download_verified(S3Store.from_uri(s3, notice.output), manifest).items():
            (local / name).parent.mkdir(parents=True, exist_ok=True)
            (local / name).write_bytes(data)
        figures.update(checkpoint_bytes=manifest.total_bytes, notice_to_durable_s=result.durable_s,
                       raw_upload_s=raw_upload_s(s3, bucket, local))
    else:  # only the step time
        run(notice.model_copy(update={"max_steps": CALIBRATION_STEPS + 1}), s3, step_ends=step_ends)
    step_s = median_step_s(step_ends)

    # (b) start -> first training step after resume, vs plain download + from_pretrained
    if "b" in parts:
        resumed = run(notice.model_copy(update={"max_steps": manifest.step + 1}), s3)
        (work / f"raw-{bucket}-{tag}").mkdir()
        loaded, step = raw_download_load_s(s3, notice.output, manifest.step, work / f"raw-{bucket}-{tag}",
                                           Path(common["model"]), common["method"], (args.batch_size, args.seq_len))
        figures.update(resume_to_first_step_s=resumed.first_step_s, raw_download_load_s=loaded,
                       raw_download_load_step_s=loaded + step)

    # (c) steady throughput with a checkpoint every N steps vs none: (intervals + 1) * N steps, so
    # each checkpoint is followed by N steps that its background upload overlaps; the two runs
    # alternate which goes first from one repeat to the next
    every = args.every or max(2, round(args.checkpoint_seconds / step_s))
    plain = TrainingSpec(job_id="plain", output=f"s3://{bucket}/plain-{tag}/", max_steps=(args.intervals + 1) * every,
                         checkpoint_every_steps=None, **common)
    with_ckpt = plain.model_copy(update={"job_id": "ckpt", "output": f"s3://{bucket}/ckpt-{tag}/",
                                         "checkpoint_every_steps": every})
    if plain_first:
        base_rate = run(plain, s3).steps_per_s
        checkpointed = run(with_ckpt, s3)
    else:
        checkpointed = run(with_ckpt, s3)
        base_rate = run(plain, s3).steps_per_s
    return figures | {
        "steps_per_s_no_checkpoint": base_rate, "steps_per_s_with_checkpoint": checkpointed.steps_per_s,
        "throughput_ratio": checkpointed.steps_per_s / base_rate, "checkpoint_every": every,
        "steps": plain.max_steps, "snapshot_s": checkpointed.snapshot_s, "publish_s": checkpointed.publish_s,
    }


def bench_case(size: str, args, s3, work: Path, dataset: Path) -> dict:
    """Every figure of one model size: the median over --repeats of each figure and of each ratio."""
    model_dir = build_model(work, size, dataset)
    bucket = f"bench-{size.lower()}-{os.getpid()}"
    s3.create_bucket(Bucket=bucket)
    common = dict(model=str(model_dir), dataset=str(dataset), batch_size=args.batch_size, seq_len=args.seq_len,
                  keep_checkpoints=2, heartbeat_seconds=2.0, control_poll_seconds=2.0, device=args.device,
                  method=args.method, precision=args.precision)
    repeats = [measure_once(str(r), args, s3, bucket, work, common, plain_first=r % 2 == 0) for r in range(args.repeats)]

    from transformers import AutoConfig
    config = AutoConfig.from_pretrained(model_dir)
    params = 12 * config.n_layer * config.n_embd ** 2 + (config.vocab_size + config.n_positions) * config.n_embd
    figures = ("notice_to_durable_s", "raw_upload_s", "resume_to_first_step_s", "raw_download_load_s",
               "raw_download_load_step_s",
               "steps_per_s_no_checkpoint", "steps_per_s_with_checkpoint", "throughput_ratio")
    case = {"size": size, "method": args.method, "precision": args.precision, "params": params, "checkpoint_bytes": repeats[0].get("checkpoint_bytes"), "repeats": len(repeats)}
    case.update({name: median([r[name] for r in repeats]) if name in repeats[0] else None for name in figures})
    case["notice_ratio"] = (median([r["notice_to_durable_s"] / r["raw_upload_s"] for r in repeats])
                            if "a" in args.parts else None)
    case["resume_ratio"] = (median([r["resume_to_first_step_s"] / r["raw_download_load_s"] for r in repeats])
                            if "b" in args.parts else None)
    case["resume_ratio_with_step"] = (median([r["resume_to_first_step_s"] / r["raw_download_load_step_s"]
                                              for r in repeats]) if "b" in args.parts else None)
    case["throughput_ratios"] = [r["throughput_ratio"] for r in repeats]
    # each repeat's (ours, baseline) seconds: the spread behind the medians on a noisy machine
    case["notice_per_repeat"] = [(r["notice_to_durable_s"], r["raw_upload_s"]) for r in repeats] \
        if "a" in args.parts else None
    case["resume_per_repeat"] = [(r["resume_to_first_step_s"], r["raw_download_load_s"]) for r in repeats] \
        if "b" in args.parts else None
    last = repeats[-1]
    case.update({"checkpoint_every": last["checkpoint_every"], "steps": last["steps"],
                 "checkpoint_interval_s": last["checkpoint_every"] / case["steps_per_s_no_checkpoint"],
                 "snapshot_s": [x for r in repeats for x in r["snapshot_s"]],
                 "publish_s": [x for r in repeats for x in r["publish_s"]]})
    try:
        case["trainer_default_s"] = (trainer_default_s(model_dir, s3, bucket, work, args.method)
                                     if "a" in args.parts else None)
    except Exception as exc:  # an informative extra: it must not lose the figures above
        print(f"  trainer_default_s: failed ({type(exc).__name__}: {exc})")
        case["trainer_default_s"] = None
    return case


def report(case: dict) -> None:
    size_mb = f", checkpoint {case['checkpoint_bytes'] / 1e6:.1f} MB" if case["checkpoint_bytes"] else ""
    print(f"{case['size']}: {case['params'] / 1e6:.1f}M params, method {case['method']}, precision "
          f"{case['precision']}{size_mb}")
    if case["repeats"] > 1:
        print(f"  medians of {case['repeats']} repeats (each ratio: the median of the per-repeat ratios)")
    if case["notice_ratio"] is not None:
        a, raw = case["notice_to_durable_s"], case["raw_upload_s"]
        print(f"  (a) notice -> durable   {a:8.2f} s   plain boto3 upload {raw:8.2f} s   ratio {case['notice_ratio']:5.2f}x (target <= {TARGETS['notice']}x)")
        print_per_repeat(case["notice_per_repeat"])
    if case["trainer_default_s"] is not None:
        t = case["trainer_default_s"]
        print(f"      Trainer save_model+save_state+optimizer, then sync upload {t:8.2f} s   (Trainer / ours = {t / a:5.2f}x)")
    if case["resume_ratio"] is not None:
        b, raw = case["resume_to_first_step_s"], case["raw_download_load_s"]
        print(f"  (b) resume -> 1st step  {b:8.2f} s   download+from_pretrained {raw:8.2f} s   ratio {case['resume_ratio']:5.2f}x (target <= {TARGETS['resume']}x)")
        print_per_repeat(case["resume_per_repeat"])
        print(f"      download+from_pretrained+one training step {case['raw_download_load_step_s']:8.2f} s   "
              f"ratio {case['resume_ratio_with_step']:5.2f}x")
    print(f"  (c) throughput, checkpoint every {case['checkpoint_every']} steps (= {case['checkpoint_interval_s']:.1f} s of training), "
          f"{case['steps']} steps: {case['steps_per_s_with_checkpoint']:.3f} steps/s"
          f"   none: {case['steps_per_s_no_checkpoint']:.3f} steps/s   ratio {case['throughput_ratio']:.3f} (target >= {TARGETS['throughput']})")
    if case["repeats"] > 1:
        print("      throughput ratio per repeat: " + ", ".join(f"{x:.3f}" for x in case["throughput_ratios"]))
    snaps = ", ".join(f"{x:.2f}" for x in case["snapshot_s"])
    pubs = ", ".join(f"{x:.1f}" for x in case["publish_s"])
    print(f"      per checkpoint: snapshot on the training thread {snaps} s; background upload until durable {pubs} s")


def print_per_repeat(pairs: list[tuple[float, float]] | None) -> None:
    if pairs and len(pairs) > 1:
        print("      per repeat (ours / baseline): " + ", ".join(f"{a:.2f} / {b:.2f} s" for a, b in pairs))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10M,50M,125M", help=f"comma-separated, from {', '.join(SIZES)}")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--method", default="full", choices=["full", "lora", "qlora"],
                        help="what the trainer fine-tunes (qlora needs a CUDA GPU)")
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"],
                        help="the trainer's precision (auto: bf16 on a GPU that has it, fp32 on CPU)")
    parser.add_argument("--endpoint", help="an existing S3 endpoint (default: start a moto server on 127.0.0.1)")
    parser.add_argument("--checkpoint-seconds", type=float, default=45.0,
                        help="(c): checkpoint every N steps, N chosen so that N steps take about this long")
    parser.add_argument("--every", type=int, help="(c): a fixed checkpoint interval N in steps instead")
    parser.add_argument("--intervals", type=int, default=1, help="(c): checkpoint intervals per run (steps = (this + 1) * N)")
    parser.add_argument("--parts", default="a,b,c", help="which of (a), (b), (c) to measure: a,b,c / a,c / c")
    parser.add_argument("--repeats", type=int, default=1,
                        help="repeat (a), (b), (c) this many times per size and report medians (the (c) runs alternate order)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on a small CPU box this leaves a core to the uploader; 0 = torch's choice)")
    args = parser.parse_args(argv)
    args.parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if args.parts - {"a", "b", "c"} or "c" not in args.parts or ("b" in args.parts and "a" not in args.parts):
        parser.error(f"--parts: {sorted(args.parts)}; choose from a,b,c / a,c / c (c always runs; b needs a's checkpoint)")
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        parser.error(f"--sizes: unknown {unknown}; choose from {', '.join(SIZES)}")

    import logging
    logging.basicConfig(level=logging.WARNING)
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()

    from deployments.local_aws import FAKE_CREDENTIALS
    from training.tiny_model import write_demo_dataset

    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    print(f"device: {device if device != 'auto' else 'cpu'} ({torch.cuda.get_device_name() if device.startswith('cuda') else f'{torch.get_num_threads()} CPU threads'})")
    os.environ.update(FAKE_CREDENTIALS)
    cases = []
    with tempfile.TemporaryDirectory(prefix="spotshift-bench-") as tmp, \
            (nullcontext(args.endpoint) if args.endpoint else moto_subprocess()) as endpoint:
        work = Path(tmp)
        import boto3

        from training.storage import s3_client_config

        # one client, the trainer's settings, for ours and for every baseline alike
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", config=s3_client_config())
        dataset = write_demo_dataset(work / "corpus.jsonl", lines=2000)
        for size in sizes:
            case = bench_case(size, args, s3, work, dataset)
            report(case)
            cases.append(case)
            if args.json:  # after every size, so a run cut short keeps what it measured
                args.json.write_text(json.dumps({"device": device, "cases": cases}, indent=1))
    return 0


@contextmanager
def nullcontext(value):
    yield value


if __name__ == "__main__":
    raise SystemExit(main())
