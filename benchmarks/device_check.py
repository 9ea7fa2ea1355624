"""The GPU check: the torch side on CUDA in one prepared run, one JSON report (``--quick``: CPU, seconds).

Needs torch, timm, numpy (scipy, matplotlib present) and this working tree on ``PYTHONPATH``; never imports
optuna or pymoo, needs no network. Sections:

1. ``demo``: the Fashion-MNIST demo (head checkpoint + the bundled cache it was dumped into + the
   Fashion-MNIST test files). The demo's configuration is searched on the cache as ``exits.pipeline``
   chooses it (``dp``; the cheapest without an accuracy drop on the search split), then run by
   ``ExitRuntime`` on the holdout split on the
   device, in fp32 and under bf16 autocast: agreement with the cache (sample by sample: same exit, same
   prediction), measured MACs and accuracy against the base model, throughput at each batch size and
   latency at batch 1 against the base model's.
2. ``time``: the time prediction on the device: ``exits.profile``'s eager profile of the demo model at the
   largest batch size (fp32, and again under bf16 autocast), then the demo configuration's predicted
   speed-up (``search.time_cost.TimeCostModel`` on the cache's exits) against the measured one
   (``exits.validate.validate`` with the time model, interleaved rounds) at batch 1, 64 and 256.
3. ``zoo``: random-init ResNet-50, ConvNeXt-T and ViT-S at 224 px, linear exits after the blocks at a
   quarter, half and three quarters of the depth. A cache is dumped on the device (fp32, deterministic;
   dump throughput against a plain forward over the same batches), a fixed exit profile (a quarter of
   the samples leaves at each exit, a quarter reaches the end; thresholds from the search split) is
   exported, and the runtime runs it on the holdout split: agreement with the device-made cache,
   speedup at each batch size against the MAC estimate (1 / measured relative MACs).

All device work runs under ``exits.dump.deterministic()`` (no TF32, no cuDNN autotuning), for the base
model as for the runtime. The report is rewritten after every section, so a run cut short keeps what
it measured. Usage (see docs/device-check.md)::

    PYTHONPATH=. python3 benchmarks/device_check.py --fashion-mnist .fashion-mnist --out report.json
    PYTHONPATH=. python3 benchmarks/device_check.py --quick --out /tmp/quick.json      # CPU, seconds
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS, before CUDA starts

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from data_cache import format as cache_format  # noqa: E402
from data_cache import open_cache  # noqa: E402
from data_cache.memory import InMemoryCache  # noqa: E402
from data_cache.outputs import check_output_file, write_text_atomic  # noqa: E402
from data_cache.ownership import json_kind  # noqa: E402
from exits.measure import sync  # noqa: E402

REPORT_FORMAT = "exitdevicecheck/1"
DEMO_CHECKPOINT = ROOT / "data_cache" / "bundled" / "fashion_mnist.checkpoint.pt"
DEMO_CACHE = ROOT / "data_cache" / "bundled" / "fashion_mnist"
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
TEST_FILES = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
PROFILE = (0.25, 0.25, 0.25)  # fraction of all samples leaving at each of the three zoo exits
MAX_DROP = 0.5  # points, as the demo pipeline chooses (exits.pipeline --max-drop 0.5, certified at delta 0.1)


@dataclass(frozen=True)
class Sizes:
    """How much each section does: the full run for a GPU, or the quick one for a CPU."""

    batch_sizes: tuple[int, ...] = (64, 256)
    time_batch_sizes: tuple[int, ...] = (1, 64, 256)  # the profile runs at the largest
    profile_min_time: float = 2e-3
    timing_samples: int = 4096
    latency_samples: int = 200
    rounds: int = 3
    demo_samples: int | None = None  # None: the whole cache; n: its first n rows per split
    zoo: tuple[str, ...] = ("resnet50", "convnext_tiny", "vit_small_patch16_224")
    zoo_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)  # timm kwargs per zoo model
    zoo_size: int = 224
    zoo_search: int = 1024
    zoo_holdout: int = 4096
    dump_batch: int = 256


FULL = Sizes()
QUICK = Sizes(batch_sizes=(8, 16), time_batch_sizes=(1, 8, 16), profile_min_time=1e-4, timing_samples=32,
              latency_samples=3, rounds=1, demo_samples=48,
              zoo=("resnet10t", "convnext_atto", "vit_tiny_patch16_224"),
              zoo_kwargs={"vit_tiny_patch16_224": {"img_size": 32, "depth": 4}},
              zoo_size=32, zoo_search=24, zoo_holdout=32, dump_batch=8)
TARGETS = {"zoo agreement with the device-made cache, fp32": 0.999,
           "vit_small_patch16_224 speedup / MAC estimate at batch 256": 0.8}


def environment(device: torch.device) -> dict[str, Any]:
    import timm

    info = {"python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
            "numpy": np.__version__, "device": str(device), "platform": platform.platform(),
            "cpu_threads": torch.get_num_threads()}
    if device.type == "cuda":
        info.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())
    return info


# -- demo ------------------------------------------------------------------------------------------

def first_rows(cache, n: int) -> InMemoryCache:
    """The first ``n`` rows of every split of ``cache``, as a cache of its own (same exits, units, provenance)."""
    splits = {s: min(n, cache.n_samples(s)) for s in cache.splits()}
    arrays = {s: {cache_format.LABELS: cache.labels(s)[:m], cache_format.SAMPLE_INDEX: cache.sample_index(s)[:m],
                  cache_format.TOPK_IDS: cache.topk_ids(s)[..., :m],
                  cache_format.TOPK_PROBS: cache.topk_probs(s)[..., :m]}
              for s, m in splits.items()}
    return InMemoryCache(replace(cache.meta, splits=splits), arrays)


def _idx_file(folder: Path, name: str) -> Path:
    for cand in (folder / f"{name}.gz", folder / name):
        if cand.is_file():
            return cand
    raise SystemExit(f"error: {folder}: no {name}[.gz] (the Fashion-MNIST test files; pass --fashion-mnist DIR)")


def holdout_images(folder: Path, data_config: dict, sample_index: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """Fashion-MNIST test rows ``sample_index`` through the model's evaluation transform, and their labels."""
    from PIL import Image

    from exits.data import eval_transform, read_idx

    images, labels = (read_idx(_idx_file(folder, f)) for f in TEST_FILES)
    tf = eval_transform(data_config)
    x = torch.stack([tf(Image.fromarray(images[i])) for i in sample_index])
    return x, labels[sample_index].astype(np.int64)


def demo_config(cache) -> tuple[dict, str]:
    """The export of the cheapest configuration certified within ``MAX_DROP`` of the base (dp on the search
    split, Pareto Testing on the calibration split): the demo pipeline's ``choice.json``; and how it was
    chosen. Where nothing is certified (the quick mode's few rows), the cheapest within ``MAX_DROP`` on the
    search split, labelled uncertified."""
    from search import ExitProblem, run_search
    from search.export import build_export
    from search.pareto_testing import certified_within_drop
    from search.queries import cheapest_within_drop

    problem = ExitProblem(cache, "search")
    front = run_search(problem, "dp")
    answer = certified_within_drop(problem, MAX_DROP, front=front)
    if answer.certificate is not None:
        config, how = answer.config, (f"certified within {MAX_DROP:g} points at delta "
                                      f"{answer.certificate.delta:g} ({answer.certificate.bound})")
    else:
        config = cheapest_within_drop(problem, MAX_DROP, front=front).config
        how = f"uncertified (nothing certified within {MAX_DROP:g} points on these calibration rows)"
    return build_export([("dp", config)], search=problem, holdout=problem.on_split("holdout"), pareto=False), how


PARTNER_RULES = ("max_prob", "agree", "ensemble")


def partner_config(cache) -> tuple[dict, str]:
    """The export of a configuration deciding with a rule that reads the partner exit (``agree``, ``ensemble``):
    on dp's front over ``PARTNER_RULES`` (search split), the cheapest using one within ``MAX_DROP`` points, else
    the most accurate using one (uncertified: a check of the runtime's partner path on the device)."""
    from search import ExitProblem, run_search
    from search.export import build_export

    problem = ExitProblem(cache, "search", rules=PARTNER_RULES)
    front = run_search(problem, "dp")
    base_error = 1.0 - problem.base.accuracy
    using = [(F, c) for F, c in zip(front.F, front.configs, strict=True)
             if set(c.rule_names) & {"agree", "ensemble"}]
    if not using:
        raise RuntimeError("dp's front over max_prob, agree and ensemble uses no partner rule on these rows")
    within = [(F, c) for F, c in using if F[0] - base_error <= MAX_DROP / 100]
    F, config = min(within, key=lambda r: r[0][1]) if within else min(using, key=lambda r: r[0][0])
    how = (f"uncertified; rules {sorted(set(config.rule_names))}; search drop "
           f"{100 * (F[0] - base_error):.2f} points, relative MACs {F[1]:.3f}")
    return build_export([("dp", config)], search=problem, holdout=problem.on_split("holdout"), pareto=False), how


def partner_section(checkpoint: Path, cache_dir: Path, fashion: Path, device: torch.device, sizes: Sizes) -> dict:
    """A configuration with partner rules on the device (fp32): its decisions against the cache, MACs, speed."""
    from exits.runtime import ExitRuntime

    cache, model, x = _demo_inputs(checkpoint, cache_dir, fashion, sizes)
    doc, how = partner_config(cache)
    runtime = ExitRuntime(model, doc, cache=cache, device=device, check_inputs=False)
    entry = doc["configs"][0]
    return {"config": {"chosen": how, "exits": entry["exits"], "predicted": entry["holdout"]},
            "fp32": run_runtime(runtime, cache, x, sizes, precision="fp32", latency=False)}


def _loader(x: torch.Tensor, labels: np.ndarray, sample_index: np.ndarray, batch: int) -> list:
    labels, sample_index = torch.tensor(np.asarray(labels)), torch.tensor(np.asarray(sample_index))
    return [(x[i:i + batch], labels[i:i + batch], sample_index[i:i + batch]) for i in range(0, len(x), batch)]


def _summary(report: dict) -> dict:
    """The figures of a one-configuration ``exits.validate.validate`` report."""
    c, base = report["configs"][0], report["base"]
    out = {"agreement": c["agreement"], "n_disagree": c["n_disagree"],
           "n_disagree_near_threshold": c["n_disagree_near_threshold"],
           "accuracy": c["measured"]["accuracy"], "predicted_accuracy": c["predicted"]["accuracy"],
           "base_accuracy": base["measured"]["accuracy"], "relative_macs": c["measured"]["relative_cost"],
           "predicted_relative_macs": c["predicted"]["relative_cost"],
           "exit_fractions": c["measured"]["exit_fractions"],
           "mac_estimate_speedup": c["mac_estimate_speedup"]}
    if "throughput_b64" in c:
        t = c["throughput_b64"]
        out.update(base_throughput=t["base_throughput"], throughput=t["throughput"], speedup=t["speedup"],
                   speedup_per_round=t["speedup_per_round"], speedup_vs_mac_estimate=c["throughput_vs_mac_estimate"])
    if "latency_b1" in c:
        b1 = c["latency_b1"]
        out.update(latency_b1_base_ms=1e3 * b1["base_median_s"], latency_b1_ms=1e3 * b1["median_s"],
                   latency_b1_speedup=b1["speedup_median"])
    return out


def run_runtime(runtime, cache, x: torch.Tensor, sizes: Sizes, *, precision: str, latency: bool) -> dict:
    """The runtime's one configuration over the holdout split at every batch size (``validate``)."""
    from exits.dump import deterministic
    from exits.validate import validate

    labels, index = np.asarray(cache.labels("holdout")), np.asarray(cache.sample_index("holdout"))
    device = runtime.device
    timing_x = x[: sizes.timing_samples].to(device)
    out = {}
    for i, batch in enumerate(sizes.batch_sizes):
        lat = [s.unsqueeze(0) for s in timing_x[: sizes.latency_samples]] if latency and i == 0 else []
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
        with deterministic(), autocast:
            report = validate(runtime, [runtime.configs[0]], _loader(x, labels, index, batch), split="holdout",
                              cache=cache, timing_batches=list(timing_x.split(batch)), latency_samples=lat,
                              rounds=sizes.rounds)
        out[f"batch_{batch}"] = _summary(report)
    return out


def _demo_inputs(checkpoint: Path, cache_dir: Path, fashion: Path, sizes: Sizes) -> tuple:
    """The demo's cache (its first rows in quick mode), its model and holdout images."""
    from exits.checkpoints import model_from_checkpoint, read_checkpoint

    cache = open_cache(cache_dir)
    if sizes.demo_samples is not None:
        cache = first_rows(cache, sizes.demo_samples)
    ckpt = read_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt)
    x, labels = holdout_images(fashion, ckpt["data_config"], np.asarray(cache.sample_index("holdout")))
    if not np.array_equal(labels, cache.labels("holdout")):
        raise SystemExit(f"error: {fashion}: the test labels differ from the cache's; another Fashion-MNIST?")
    return cache, model, x


def _demo(checkpoint: Path, cache_dir: Path, fashion: Path, device: torch.device, sizes: Sizes) -> tuple:
    """The demo's cache (its first rows in quick mode), holdout images, chosen export, how, and runtime."""
    from exits.runtime import ExitRuntime

    cache, model, x = _demo_inputs(checkpoint, cache_dir, fashion, sizes)
    doc, how = demo_config(cache)
    # the images come from eval_transform, as exits.validate's do: no input check (the runtime's timings alone)
    return cache, x, doc, how, ExitRuntime(model, doc, cache=cache, device=device, check_inputs=False)


def demo_section(checkpoint: Path, cache_dir: Path, fashion: Path, device: torch.device, sizes: Sizes) -> dict:
    cache, x, doc, how, runtime = _demo(checkpoint, cache_dir, fashion, device, sizes)
    entry = doc["configs"][0]
    out = {"checkpoint": str(checkpoint), "cache": str(cache_dir), "cache_fingerprint": cache.fingerprint,
           "n_holdout": int(len(x)), "config": {"chosen": how, "exits": entry["exits"], "predicted": entry["holdout"]},
           "macs_per_sample_base": runtime.base_macs}
    for precision in ("fp32", "bf16"):
        out[precision] = run_runtime(runtime, cache, x, sizes, precision=precision, latency=True)
    return out


# -- zoo -------------------------------------------------------------------------------------------

def profile_points(backbone: torch.nn.Module) -> list[str]:
    """The blocks at a quarter, half and three quarters of the depth (by block count)."""
    from exits.segments import plan_for

    blocks = plan_for(backbone).blocks
    return [blocks[max(0, round(len(blocks) * q) - 1)] for q in (0.25, 0.5, 0.75)]


def profile_thresholds(scores: np.ndarray, fractions: tuple[float, ...]) -> list[float]:
    """Thresholds (``score > t`` leaves) so that ``fractions[j]`` of all samples leave at exit j in turn;
    each midway between two neighbouring scores. ``scores``: (n_exits, n_samples) float32."""
    n = scores.shape[1]
    remaining = np.ones(n, dtype=bool)
    out = []
    for j, f in enumerate(fractions):
        s = np.sort(scores[j][remaining].astype(np.float64))[::-1]
        take = min(int(round(f * n)), len(s) - 1)
        t = float((s[take - 1] + s[take]) / 2) if take > 0 else float(s[0] + 1e-6)
        out.append(t)
        remaining &= ~(scores[j] > t)
    return out


def _timed_loop(fn: Callable[[torch.Tensor], Any], batches: list, device: torch.device) -> float:
    """Seconds for ``fn`` over CPU ``batches`` (moved to ``device`` as a dump does), after one warm-up batch."""
    with torch.inference_mode():
        fn(batches[0][0].to(device))
        sync(device)
        t0 = time.perf_counter()
        for x, *_ in batches:
            fn(x.to(device, non_blocking=True))
        sync(device)
    return time.perf_counter() - t0


def zoo_model(name: str, device: torch.device, sizes: Sizes, tmp: Path) -> dict:
    from exits import attach_exits
    from exits.check import segments_equal_forward
    from exits.data import TensorDataset
    from exits.dump import deterministic, dump_cache
    from exits.model import create_backbone
    from exits.runtime import ExitRuntime
    from search import ExitProblem
    from search.config import ExitConfig
    from search.export import build_export

    torch.manual_seed(0)
    backbone = create_backbone(name, num_classes=1000, **sizes.zoo_kwargs.get(name, {}))
    size = (3, sizes.zoo_size, sizes.zoo_size)
    t0 = time.perf_counter()
    model = attach_exits(backbone, points=profile_points(backbone), heads="linear", input_size=size)
    out: dict[str, Any] = {"points": [p.module for p in model.exit_points], "attach_s": time.perf_counter() - t0,
                           "plan": model.plan.family}
    model.to(device).eval()
    g = torch.Generator().manual_seed(0)
    n = sizes.zoo_search + sizes.zoo_holdout
    images = torch.randn(n, *size, generator=g)
    labels = torch.randint(0, 1000, (n,), generator=g)
    splits = {"search": TensorDataset(images[: sizes.zoo_search], labels[: sizes.zoo_search]),
              "holdout": TensorDataset(images[sizes.zoo_search:], labels[sizes.zoo_search:])}
    with deterministic():
        out["segments_equal_forward_on_device"] = segments_equal_forward(model)
        marks: dict[str, float] = {}

        def progress(split: str, done: int, total: int) -> None:
            marks.setdefault(f"{split}:start", time.perf_counter())
            if done == total:
                marks[f"{split}:end"] = time.perf_counter()

        cache = dump_cache(model, splits, tmp / name, k=2, batch_size=sizes.dump_batch, device=device,
                           progress=progress)
        dump_s = marks["holdout:end"] - marks["holdout:start"]
        batches = [(images[sizes.zoo_search + i: sizes.zoo_search + i + sizes.dump_batch],)
                   for i in range(0, sizes.zoo_holdout, sizes.dump_batch)]
        plain_s = _timed_loop(model.backbone, batches, device)
    out["dump"] = {"batch_size": sizes.dump_batch, "n": sizes.zoo_holdout, "dump_img_s": sizes.zoo_holdout / dump_s,
                   "plain_forward_img_s": sizes.zoo_holdout / plain_s, "dump_vs_plain": plain_s / dump_s}
    problem = ExitProblem(cache, "search")
    early = list(range(len(cache.exits) - 1))
    scores = np.asarray(cache.topk_probs("search"))[early, 0, :]
    config = ExitConfig(tuple(early), tuple(profile_thresholds(scores, PROFILE)), "max_prob")
    doc = build_export([("profile", config)], search=problem, holdout=problem.on_split("holdout"), pareto=False)
    runtime = ExitRuntime(model, doc, cache=cache, device=device)
    out["fp32"] = run_runtime(runtime, cache, images[sizes.zoo_search:], sizes, precision="fp32", latency=False)
    return out


# -- main ------------------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    from data_cache.cli_types import CommandParser, positive_float, threads
    from exits.devices import device_option

    p = CommandParser(prog="python -m benchmarks.device_check", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="JSON report to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report")
    p.add_argument("--quick", action="store_true", help="tiny sizes on the CPU (seconds): the check of the check")
    p.add_argument("--device", type=device_option, default=None,
                   help="cpu, cuda or cuda:N (default: cuda; cpu with --quick)")
    p.add_argument("--checkpoint", default=str(DEMO_CHECKPOINT), help="the demo's head checkpoint")
    p.add_argument("--cache", default=str(DEMO_CACHE), help="the cache that checkpoint was dumped into")
    p.add_argument("--fashion-mnist", default=str(FASHION_MNIST), help="folder of the Fashion-MNIST test files")
    p.add_argument("--sections", default="demo,time,zoo,partner",
                   help="comma-separated: demo, time, zoo, partner")
    p.add_argument("--zoo", default=None, help="comma-separated timm names instead of the zoo's three")
    p.add_argument("--budget-s", type=positive_float, default=420.0,
                   help="skip what would start after this many seconds")
    p.add_argument("--threads", type=threads, default=None, help="torch CPU threads (default: torch's; 1 with --quick)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Exit status 0 when every section ran, 1 when one failed or was skipped, 2 on bad input."""
    from data_cache.outputs import OutputError

    args = _parser().parse_args(argv)
    try:
        out_path = check_output_file(args.out, overwrite=args.overwrite, option="--out", suffixes=(".json",),
                                     kind=json_kind(REPORT_FORMAT))
    except OutputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sizes = QUICK if args.quick else FULL
    if args.zoo:
        sizes = replace(sizes, zoo=tuple(n for n in args.zoo.split(",") if n))
    device = torch.device(args.device or ("cpu" if args.quick else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():  # the default device (--device was checked)
        print("error: no CUDA device (use --quick or --device cpu)", file=sys.stderr)
        return 2
    if args.threads or args.quick:  # a CPU shared with others: one thread unless told otherwise
        torch.set_num_threads(args.threads or 1)
    sections = [s for s in args.sections.split(",") if s]
    unknown = sorted(set(sections) - {"demo", "time", "partner", "zoo"})
    if unknown:
        print(f"error: --sections: unknown {unknown}; choose from demo, time, partner, zoo", file=sys.stderr)
        return 2
    started = time.perf_counter()
    report: dict[str, Any] = {"format": REPORT_FORMAT, "quick": args.quick, "sizes": asdict(sizes),
                              "environment": environment(device), "sections": {}, "seconds": {}}

    def save() -> None:
        report["elapsed_s"] = time.perf_counter() - started
        report["targets"] = targets(report["sections"])
        report["imported_optuna_or_pymoo"] = sorted(m for m in ("optuna", "pymoo") if sys.modules.get(m) is not None)
        write_text_atomic(out_path, json.dumps(report, indent=1, default=float) + "\n", option="--out",
                          overwrite=args.overwrite, kind=json_kind(REPORT_FORMAT))

    def run(name: str, fn: Callable[[], dict]) -> None:
        if time.perf_counter() - started > args.budget_s:
            report["sections"][name] = {"skipped": f"over the {args.budget_s:.0f} s budget"}
        else:
            t0 = time.perf_counter()
            try:
                report["sections"][name] = fn()
            except Exception as exc:  # one section failing must not lose the others' figures
                report["sections"][name] = {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}"}
            report["seconds"][name] = time.perf_counter() - t0
        save()
        print(f"{name}: {_headline(report['sections'][name])}", flush=True)

    if "demo" in sections:
        run("demo", lambda: demo_section(Path(args.checkpoint), Path(args.cache), Path(args.fashion_mnist),
                                         device, sizes))
    if "time" in sections:
        from benchmarks._device_time import time_section

        run("time", lambda: time_section(*_demo(Path(args.checkpoint), Path(args.cache), Path(args.fashion_mnist),
                                                device, sizes), sizes, _loader))
    if "zoo" in sections:
        with tempfile.TemporaryDirectory() as tmp:
            for name in sizes.zoo:
                run(f"zoo:{name}", lambda name=name: zoo_model(name, device, sizes, Path(tmp)))
    if "partner" in sections:
        run("partner", lambda: partner_section(Path(args.checkpoint), Path(args.cache), Path(args.fashion_mnist),
                                               device, sizes))
    print(f"report written to {out_path} ({report['elapsed_s']:.0f} s)")
    failed = [n for n, s in report["sections"].items() if "error" in s or "skipped" in s]
    return 1 if failed or report["imported_optuna_or_pymoo"] else 0


def targets(sections: dict) -> dict[str, Any]:
    """The issue's numbers: each target with the value measured (None: not measured) and whether it is met."""
    agree = [r["agreement"] for name, s in sections.items() if name.startswith("zoo:")
             for r in (s.get("fp32") or {}).values()]
    vit = (sections.get("zoo:vit_small_patch16_224") or {}).get("fp32") or {}
    ratio = (vit.get("batch_256") or {}).get("speedup_vs_mac_estimate")
    values = dict(zip(TARGETS, (min(agree) if agree else None, ratio), strict=True))
    return {k: {"target": TARGETS[k], "measured": v, "met": None if v is None else v >= TARGETS[k]}
            for k, v in values.items()}


def _headline(section: dict) -> str:
    if "error" in section or "skipped" in section:
        return section.get("error") or section["skipped"]
    parts = []
    for precision in ("fp32", "bf16"):
        for key, r in (section.get(precision) or {}).items():
            if not isinstance(r, dict):
                continue
            if "predicted_speedup" in r:
                parts.append(f"{precision} {key}: x{r['measured_speedup']:.2f} measured, x{r['predicted_speedup']:.2f} "
                             f"predicted ({r['speedup_error']:+.1%}; MACs {r['mac_speedup_error']:+.1%})")
                continue
            parts.append(f"{precision} {key}: agree {r['agreement']:.4%}, x{r.get('speedup', float('nan')):.2f} "
                         f"(MAC estimate x{r['mac_estimate_speedup']:.2f})")
    return "; ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
