"""Publishing without replacing, owners by content, and the sweep of killed runs (``data_cache/outputs.py``,
``data_cache/_publish.py``, ``data_cache/ownership.py``; issue 20 items 1 and 2)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

from data_cache._publish import MARKER, RESERVED
from data_cache.outputs import (
    OutputError,
    atomic_folder,
    atomic_outputs,
    check_output_file,
    check_output_folder,
    write_text_atomic,
)
from data_cache.ownership import json_kind, torch_kind

EXPORT = json_kind("exitconfig/1")


def _race(publish) -> list:
    """Run ``publish(barrier)`` in two threads that both finish writing before either publishes."""
    barrier, results = threading.Barrier(2), []

    def one(i: int) -> None:
        try:
            publish(barrier, i)
            results.append("ok")
        except OutputError as exc:
            results.append(str(exc))
    threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(results)


def test_two_writers_of_one_new_file_exactly_one_succeeds(tmp_path):
    target = tmp_path / "front.json"

    def publish(barrier, i):
        with atomic_outputs([("--export", target)]) as (tmp,):
            tmp.write_text(f"run {i}\n")
            barrier.wait()
    results = _race(publish)
    assert results[1] == "ok" and results[0].startswith(f"--export {target}: a file appeared there"), results
    assert target.read_text() in ("run 0\n", "run 1\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["front.json"]


@pytest.mark.parametrize("overwrite", [False, True])
def test_two_writers_of_one_new_folder_exactly_one_succeeds(tmp_path, overwrite):
    target = tmp_path / "bundle"
    building, second_done = threading.Event(), threading.Event()
    results = []

    def first():
        with atomic_folder(target) as tmp:
            (tmp / "manifest.json").write_text("first\n")
            building.set()
            second_done.wait(timeout=30)
        results.append("ok")

    t = threading.Thread(target=first)
    t.start()
    building.wait(timeout=30)
    with pytest.raises(OutputError, match=f"--out {target}: another run is writing there"):
        with atomic_folder(target, overwrite=overwrite) as tmp:
            (tmp / "manifest.json").write_text("second\n")
    with pytest.raises(OutputError, match="another run is writing there"):
        check_output_folder(target, overwrite=overwrite)
    second_done.set()
    t.join()
    assert results == ["ok"] and (target / "manifest.json").read_text() == "first\n"
    assert sorted(p.name for p in target.iterdir()) == ["manifest.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_a_file_that_appears_during_the_run_stops_every_output(tmp_path):
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    with pytest.raises(OutputError, match="b.json: a file appeared there while this command ran"):
        with atomic_outputs([("--a", first), ("--b", second)]) as (ta, tb):
            ta.write_text("new a\n")
            tb.write_text("new b\n")
            second.write_text("someone else's\n")
    assert not first.exists()                 # the first one, already linked, was taken back
    assert second.read_text() == "someone else's\n"


def test_overwrite_replaces_only_its_own_kind(tmp_path):
    target = tmp_path / "front.json"
    target.write_text('{"format": "exitconfig/1"}')
    write_text_atomic(target, '{"format": "exitconfig/1", "v": 2}', overwrite=True, kind=EXPORT)
    assert json.loads(target.read_text())["v"] == 2
    target.write_text('{"format": "exitcache/1"}')
    with pytest.raises(OutputError, match="is the manifest of a folder the tool wrote"):
        write_text_atomic(target, "{}", overwrite=True)
    with pytest.raises(OutputError, match="file exists; pass --overwrite"):
        check_output_file(target, overwrite=False)


def test_a_write_error_names_the_users_path(tmp_path):
    target = tmp_path / "front.json"
    with pytest.raises(OutputError) as err:
        with atomic_outputs([("--export", target)]) as (tmp,):
            raise OSError(28, "No space left on device", str(tmp))
    assert str(err.value) == f"--export {target}: could not write (No space left on device)"
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_kind_reads_the_format_without_unpickling(tmp_path):
    torch = pytest.importorskip("torch")
    mine, other, text = tmp_path / "heads.pt", tmp_path / "weights.pt", tmp_path / "notes.txt"
    torch.save({"format": "exitheads/1", "w": torch.zeros(3)}, mine)
    torch.save({"w": torch.zeros(3)}, other)
    text.write_text("exitheads/1")
    kind = torch_kind("exitheads/1")
    assert kind.owns(mine) and not kind.owns(other) and not kind.owns(text)
    with zipfile.ZipFile(tmp_path / "z.zip", "w") as z:
        z.writestr("a/other.pkl", b"exitheads/1")
    assert not kind.owns(tmp_path / "z.zip")


def _bundle(folder: Path, *extra: str) -> None:
    (folder / "graphs").mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"format": "exitbundle/1", "graphs": [{"file": "graphs/a.onnx"}]}))
    (folder / "graphs" / "a.onnx").write_bytes(b"graph")
    for name in extra:
        (folder / name).write_text("the user's")


def _listed(m: dict) -> list[str]:
    return [g["file"] for g in m["graphs"]]


def test_overwrite_replaces_a_bundle_and_says_so(tmp_path, capsys):
    target = tmp_path / "bundle"
    _bundle(target)
    check_output_folder(target, overwrite=True, format="exitbundle/1", listed=_listed)
    assert capsys.readouterr().err == f"warning: --out {target}: replacing the folder there (--overwrite)\n"
    with atomic_folder(target, overwrite=True, format="exitbundle/1", listed=_listed) as tmp:
        (tmp / "manifest.json").write_text("new")
    assert [p.name for p in target.iterdir()] == ["manifest.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_a_file_added_to_a_bundle_during_the_run_keeps_it(tmp_path):
    target = tmp_path / "bundle"
    _bundle(target)
    with pytest.raises(OutputError, match="holds notes.txt, which its manifest.json does not list"):
        with atomic_folder(target, overwrite=True, format="exitbundle/1", listed=_listed) as tmp:
            (tmp / "manifest.json").write_text("new")
            (target / "notes.txt").write_text("the user's")
    assert (target / "notes.txt").exists() and (target / "graphs" / "a.onnx").read_bytes() == b"graph"


# -- the sweep of killed runs ---------------------------------------------------------------------

KILLED = """
import os, sys
from pathlib import Path
from data_cache.outputs import atomic_folder, atomic_outputs
target = Path(sys.argv[2])
if sys.argv[1] == "file":
    with atomic_outputs([("--export", target)]) as (tmp,):
        tmp.write_text("half")
        os._exit(9)
with atomic_folder(target) as tmp:
    (tmp / "graphs").mkdir()
    (tmp / "graphs" / "a.onnx").write_text("half")
    os._exit(9)
"""


def _killed(what: str, target: Path) -> None:
    subprocess.run([sys.executable, "-c", KILLED, what, str(target)], check=False, env=dict(os.environ))


def test_a_killed_runs_work_folder_is_swept_at_the_next_start(tmp_path):
    target = tmp_path / "front.json"
    _killed("file", target)
    left = [p for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].name.startswith(".front.json.exitsearch-") and (left[0] / MARKER).is_file()
    check_output_file(target, overwrite=False)
    assert list(tmp_path.iterdir()) == []


def test_a_killed_bundle_export_is_swept_placeholder_and_all(tmp_path):
    target = tmp_path / "bundle"
    _killed("folder", target)
    assert (target / RESERVED).is_file() and len(list(tmp_path.iterdir())) == 2
    assert check_output_folder(target, overwrite=False) == target
    assert list(tmp_path.iterdir()) == []


def test_the_sweep_leaves_what_it_cannot_prove_its_own(tmp_path):
    look_alike = tmp_path / ".x.json.exitsearch-999999-0123456789ab.tmp"   # the name, but no marker
    look_alike.mkdir()
    (look_alike / "data").write_text("the user's")
    live = tmp_path / f".y.json.exitsearch-{os.getpid()}-0123456789ab.tmp"   # a marker of a live process
    live.mkdir()
    (live / MARKER).write_text(json.dumps({"tool": "exitsearch", "pid": os.getpid(), "host": os.uname().nodename}))
    forged = tmp_path / ".z.json.exitsearch-999999-0123456789ab.tmp"        # a marker of another tool
    forged.mkdir()
    (forged / MARKER).write_text(json.dumps({"tool": "other", "pid": 999999}))
    check_output_file(tmp_path / "x.json", overwrite=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([look_alike.name, live.name, forged.name])
    with pytest.raises(OutputError, match="another run is writing there"):
        reserved = tmp_path / "bundle"
        reserved.mkdir()
        (reserved / RESERVED).write_text(json.dumps({"tool": "exitsearch", "pid": os.getpid(),
                                                     "host": os.uname().nodename}))
        check_output_folder(reserved, overwrite=True)


def test_a_run_replaces_the_file_it_published_itself_but_not_one_edited_since(tmp_path):
    target = tmp_path / "report.json"
    write_text_atomic(target, '{"format": "r/1", "sections": 1}')
    write_text_atomic(target, '{"format": "r/1", "sections": 2}')   # saved again after the next section
    assert json.loads(target.read_text())["sections"] == 2
    os.utime(target, ns=(0, 0))                                    # someone touched it since
    with pytest.raises(OutputError, match="a file appeared there"):
        write_text_atomic(target, '{"format": "r/1", "sections": 3}')
