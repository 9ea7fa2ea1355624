"""python -m exits.export_bundle and python -m exits.validate_bundle end to end; every refusal is one line
(exit status 2 on the command line, BundleError in the library)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from _runtime_fixtures import certify, fashion_dump, make_export
from torch import nn

from bundle import BundleError, open_bundle
from bundle.manifest import MANIFEST
from data_cache.outputs import OutputError, atomic_folder, check_output_folder
from exits.export_bundle import BundleExportError, _Part, _probe
from exits.export_bundle import main as export_main
from exits.validate_bundle import main as validate_main


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny model dumped on fake Fashion-MNIST files, its checkpoint, a table and the bundle of it."""
    tmp = tmp_path_factory.mktemp("cli")
    model, ckpt, cache = fashion_dump(tmp)
    root = tmp / "fm"
    doc = make_export(cache)
    (tmp / "front.json").write_text(json.dumps(doc))
    common = ["--checkpoint", str(ckpt), "--config", str(tmp / "front.json"), "--cache", str(tmp / "cache"),
              "--exporter", "torchscript", "--quiet"]
    assert export_main(common + ["--out", str(tmp / "bundle")]) == 0
    return tmp, root, common, doc


def _one_line_error(capsys, match: str) -> None:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1 and match in err, err


def test_export_then_validate_agrees_with_the_cache(setup, capsys):
    tmp, root, _, doc = setup
    manifest = json.loads((tmp / "bundle" / MANIFEST).read_text())
    assert manifest["format"] == "exitbundle/1" and manifest["data"]["dataset"] == "fashion_mnist"
    assert manifest["input"]["shape"] == [3, 16, 16] and "mean" in manifest["input"] and "std" in manifest["input"]
    assert manifest["onnx"]["check"]["max_abs_diff"] <= 1e-4
    for g in manifest["graphs"]:
        assert g["sha256"].startswith("sha256:") and g["macs"] > 0 and (tmp / "bundle" / g["file"]).is_file()
    capsys.readouterr()
    argv = ["--bundle", str(tmp / "bundle"), "--cache", str(tmp / "cache"), "--data-root", str(root),
            "--report", str(tmp / "report.json"), "--timing-samples", "16", "--latency-samples", "3", "--rounds", "1",
            "--quiet"]
    assert validate_main(argv) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp / "report.json").read_text())
    assert report["format"] == "bundlevalidation/1" and report["n_samples"] == 30 and doc["configs"][0]["id"] in out
    assert report["base"]["measured"]["agreement_with_cache"] == 1.0
    for c, want in zip(report["configs"], doc["configs"], strict=True):
        assert c["id"] == want["id"] and c["agreement"] == 1.0 and c["n_disagree"] == 0
        assert c["measured"]["accuracy"] == pytest.approx(want["holdout"]["accuracy"], abs=1e-12)
        assert c["measured"]["relative_cost"] == pytest.approx(want["holdout"]["relative_cost"], rel=1e-12)
        assert c["throughput_speedup_b64"] > 0 and c["latency_speedup_b1"] > 0
    assert validate_main(argv) == 2  # the report exists
    _one_line_error(capsys, "pass --overwrite")


def test_export_refusals(setup, capsys):
    tmp, _, common, _ = setup
    (tmp / "full").mkdir(exist_ok=True)
    (tmp / "full" / "keep.txt").write_text("mine")
    assert export_main(common + ["--out", str(tmp / "full")]) == 2
    _one_line_error(capsys, "folder is not empty; pass --overwrite")
    assert export_main(common + ["--out", str(tmp / "full"), "--overwrite"]) == 2
    _one_line_error(capsys, "no manifest.json")
    assert (tmp / "full" / "keep.txt").read_text() == "mine"
    assert export_main(common + ["--out", str(tmp / "bundle")]) == 2
    _one_line_error(capsys, "pass --overwrite")
    assert export_main(common + ["--out", str(tmp / "x"), "--id", "nope"]) == 2
    _one_line_error(capsys, "no configuration with id 'nope'")
    assert not (tmp / "x").exists() and not list(tmp.glob(".x.tmp*"))
    assert export_main(common + ["--out", str(tmp / "nowhere" / "b")]) == 2
    _one_line_error(capsys, "does not exist; create it first")


def test_overwrite_replaces_a_bundle(setup, capsys):
    tmp, _, common, doc = setup
    shutil.copytree(tmp / "bundle", tmp / "again")
    cid = doc["configs"][1]["id"]
    assert export_main(common + ["--out", str(tmp / "again"), "--overwrite", "--id", cid, "--no-base"]) == 0
    router = open_bundle(tmp / "again")
    assert router.ids == [cid] and router.manifest.base is None
    assert not list(tmp.glob(".again.*"))


def _copy(setup, name: str) -> Path:
    tmp = setup[0]
    shutil.rmtree(tmp / name, ignore_errors=True)
    shutil.copytree(tmp / "bundle", tmp / name)
    return tmp / name


def test_missing_or_altered_bundles_are_refused(setup, capsys):
    tmp, root, _, _ = setup
    with pytest.raises(BundleError, match="no manifest.json; not a bundle"):
        open_bundle(tmp / "fm")
    with pytest.raises(BundleError, match="no such bundle folder"):
        open_bundle(tmp / "absent")
    edited = _copy(setup, "edited")
    doc = json.loads((edited / MANIFEST).read_text())
    doc["exitconfig"]["configs"][0]["exits"][0]["threshold"] = 0.01
    (edited / MANIFEST).write_text(json.dumps(doc))
    with pytest.raises(BundleError, match="does not match its fingerprint"):
        open_bundle(edited)
    (edited / MANIFEST).write_text("{")
    with pytest.raises(BundleError, match="not readable JSON"):
        open_bundle(edited)
    lost = _copy(setup, "lost")
    graph = doc["graphs"][1]["file"]
    (lost / graph).unlink()
    with pytest.raises(BundleError, match="is missing from the bundle"):
        open_bundle(lost)
    altered = _copy(setup, "altered")
    with open(altered / graph, "ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match="does not match the manifest's fingerprint"):
        open_bundle(altered)
    capsys.readouterr()
    argv = ["--bundle", str(altered), "--cache", str(tmp / "cache"), "--data-root", str(root), "--report",
            str(tmp / "r2.json"), "--no-timing"]
    assert validate_main(argv) == 2
    _one_line_error(capsys, "does not match the manifest's fingerprint")
    assert not (tmp / "r2.json").exists()


@pytest.mark.parametrize("target", ["bundle", "cache"])
def test_the_report_never_replaces_a_manifest_it_reads(setup, capsys, target):
    # regression: --report BUNDLE/manifest.json (or the cache's) --overwrite wrote the report over it
    tmp, root, _, _ = setup
    bundle = _copy(setup, f"kept-{target}")
    cache = tmp / f"cache-{target}"
    shutil.copytree(tmp / "cache", cache)
    manifest = (bundle if target == "bundle" else cache) / MANIFEST
    before = manifest.read_bytes()
    capsys.readouterr()
    assert validate_main(["--bundle", str(bundle), "--cache", str(cache), "--data-root", str(root), "--report",
                          str(manifest), "--overwrite", "--no-timing"]) == 2
    _one_line_error(capsys,
                    f"lies inside --{target} {bundle if target == 'bundle' else cache}, which this command reads")
    assert manifest.read_bytes() == before


def test_configurations_and_inputs_that_do_not_fit(setup):
    tmp = setup[0]
    doc = json.loads((tmp / "front.json").read_text())
    doc["configs"] = [json.loads(json.dumps(doc["configs"][0]))]
    doc["configs"][0]["exits"][0]["name"] = "layer9.9/linear"
    with pytest.raises(BundleError, match="exit 'layer9.9/linear' is not in this bundle"):
        open_bundle(tmp / "bundle", configs=doc)
    doc["configs"][0]["exits"] = [dict(doc["configs"][0]["exits"][0], name="layer1.0/linear", threshold=1.5)]
    with pytest.raises(BundleError, match="outside"):
        open_bundle(tmp / "bundle", configs=doc)
    router = open_bundle(tmp / "bundle")
    x = np.zeros((2, 3, 16, 16), np.float32)
    for bad, match in [(x[:, :1], "has 1 channels, the bundle's model takes 3"), (x[0], "add the batch axis"),
                       (x[:, :, :8], "expected (batch, 3, 16, 16)"), (x.astype(np.uint8), "dtype uint8")]:
        with pytest.raises(BundleError, match=match.replace("(", r"\(").replace(")", r"\)")):
            router.run(bad)
    assert len(router.run(x.astype(np.float64)).exits) == 2
    with pytest.raises(BundleError, match="threads must be >= 1"):
        open_bundle(tmp / "bundle", threads=0)


class _TwoTensors(nn.Module):
    def forward(self, x):
        return x, x


def test_a_segment_passing_several_tensors_is_refused():
    part = _Part("backbone.0", "segment", "backbone", 0, False, _TwoTensors(), ("segment:x",), None)
    with pytest.raises(BundleExportError, match="passes on 2 tensors, not one tensor"):
        _probe([part], torch.zeros(1, 3, 4, 4))


def test_output_folder_policy(tmp_path):
    assert check_output_folder(tmp_path / "new", overwrite=False) == tmp_path / "new"
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="exists and is not a folder"):
        check_output_folder(tmp_path / "file", overwrite=True)
    with pytest.raises(OutputError, match="not a folder name"):
        check_output_folder("", overwrite=True)
    with atomic_folder(tmp_path / "b") as tmp:
        (tmp / "a.txt").write_text("1")
    assert (tmp_path / "b" / "a.txt").read_text() == "1"
    with pytest.raises(RuntimeError):
        with atomic_folder(tmp_path / "b", overwrite=True) as tmp:
            (tmp / "half.txt").write_text("2")
            raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "file"]  # no temporary folder left
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["a.txt"]


def test_forged_numbers_and_certificates_are_refused_by_export_and_validation(setup, capsys):
    """Regression (issue 20): export_bundle sealed an edited certificate into the bundle; validate_bundle took
    the bundle's numbers as they were. Both now recompute the table from the cache."""
    from bundle.manifest import seal_manifest
    from data_cache import open_cache

    tmp, root, common, doc = setup
    forged = json.loads(json.dumps(doc))
    certify(open_cache(tmp / "cache"), forged, 1)
    genuine = json.loads(json.dumps(forged))
    forged["configs"][1]["certificate"]["certified_drop"] = 0.001
    (tmp / "forged.json").write_text(json.dumps(forged))
    argv = [a if a != str(tmp / "front.json") else str(tmp / "forged.json") for a in common]
    capsys.readouterr()
    assert export_main(argv + ["--out", str(tmp / "forged-bundle")]) == 2
    _one_line_error(capsys, f"configs[1] (id '{forged['configs'][1]['id']}'): certificate.certified_drop: 0.001 "
                            "does not reproduce")
    assert not (tmp / "forged-bundle").exists() and not list(tmp.glob(".forged-bundle*"))
    # a bundle re-sealed around edited numbers: the router opens it, the validation refuses it
    resealed = _copy(setup, "resealed")
    manifest = json.loads((resealed / MANIFEST).read_text())
    manifest.pop("fingerprint")
    manifest["exitconfig"] = genuine
    manifest["exitconfig"]["configs"][1]["holdout"]["accuracy"] = 0.999
    (resealed / MANIFEST).write_text(json.dumps(seal_manifest(manifest)))
    open_bundle(resealed)
    argv = ["--bundle", str(resealed), "--cache", str(tmp / "cache"), "--data-root", str(root), "--report",
            str(tmp / "r3.json"), "--no-timing"]
    assert validate_main(argv) == 2
    _one_line_error(capsys, "exitconfig: configs[1] (id 'test-0001'): holdout.accuracy: 0.999 does not reproduce")
    assert not (tmp / "r3.json").exists()
