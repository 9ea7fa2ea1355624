"""Mutations of a command line's argument vector, registered by kind.

An argument vector is held as items: ``["--k", "2"]``, ``["--quiet"]``, ``["CACHE"]`` (a positional, key
``#pos``). A :class:`Command` says which options take numbers, input paths, output paths and names; a
mutation kind says which of those it needs (``applies``) and rewrites the items with values drawn by
hypothesis. Kinds in ``MUST_REFUSE`` must end in exit status 2 when they are the only mutation of a case.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import strategies as st

__all__ = ["Command", "Case", "Kind", "ARGV_KINDS", "MUST_REFUSE", "flatten", "items_of", "kinds_for"]

Items = list[list[str]]


@dataclass(frozen=True)
class Command:
    """A command line under fuzzing: its ``main`` and the shape of its options.

    ``base(world, case)`` is a valid argument vector writing only under ``case``. ``numbers`` take numbers
    (``work``: those whose large values only mean more work, never given huge values); ``inputs`` read paths
    (``#pos``: the positional); ``outputs`` maps an output option to ``"file"`` or ``"folder"``; ``words``
    take names; ``flags`` are switches safe to add (none needing a network or a compiler).
    """
    name: str
    main: Callable[[list[str]], int]
    base: Callable[..., list[str]]
    numbers: tuple[str, ...] = ()
    work: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()
    outputs: dict[str, str] = field(default_factory=dict)
    words: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()


@dataclass
class Case:
    """What a mutation may use: the command, the valid inputs (``world``) and the case's own folder."""
    command: Command
    world: object
    place: Path
    draw: Callable


@dataclass(frozen=True)
class Kind:
    name: str
    needs: str | None          # the Command field that must be non-empty, or None
    apply: Callable[[Items, Case], Items | None]   # None: not applicable to this vector (left as it was)


def items_of(argv: list[str]) -> Items:
    items: Items = []
    for token in argv:
        if token.startswith("--") or not items or not items[-1][0].startswith("--") or len(items[-1]) == 2:
            items.append([token])
        else:
            items[-1].append(token)
    return items


def flatten(items: Items) -> list[str]:
    return [t for item in items for t in item]


def _key(item: list[str]) -> str:
    return item[0] if item[0].startswith("--") else "#pos"


def _set(items: Items, option: str, value: str) -> Items:
    """``option`` (or the first positional, ``#pos``) given ``value``: replaced where present, else added."""
    for item in items:
        if _key(item) == option:
            item[(0 if option == "#pos" else 1):] = [value]
            return items
    items.append([value] if option == "#pos" else [option, value])
    return items


def _value(items: Items, option: str) -> str | None:
    for item in items:
        if _key(item) == option:
            return item[-1]
    return None


ARGV_KINDS: dict[str, Kind] = {}


def kind(name: str, needs: str | None = None):
    def register(fn: Callable[[Items, Case], Items]) -> Callable[[Items, Case], Items]:
        ARGV_KINDS[name] = Kind(name, needs, fn)
        return fn
    return register


def kinds_for(command: Command) -> list[str]:
    return [k.name for k in ARGV_KINDS.values() if k.needs is None or getattr(command, k.needs)]


# -- the shape of the vector ---------------------------------------------------------------------

@kind("drop an option")
def _drop(items, case):
    del items[case.draw(st.integers(0, len(items) - 1))]
    return items


@kind("duplicate an option")
def _duplicate(items, case):
    i = case.draw(st.integers(0, len(items) - 1))
    items.insert(case.draw(st.integers(0, len(items))), list(items[i]))
    return items


@kind("swap two values")
def _swap(items, case):
    valued = [it for it in items if len(it) == 2 or not it[0].startswith("--")]
    if len(valued) >= 2:
        a, b = case.draw(st.lists(st.sampled_from(range(len(valued))), min_size=2, max_size=2, unique=True))
        valued[a][-1], valued[b][-1] = valued[b][-1], valued[a][-1]
    return items


@kind("unknown option")
def _unknown(items, case):
    extra = case.draw(st.sampled_from([["--no-such-option"], ["--bogus", "1"], ["-x"], ["--"], ["---k", "2"]]))
    items.insert(case.draw(st.integers(0, len(items))), extra)
    return items


@kind("option without its value")
def _no_value(items, case):
    valued = [it for it in items if len(it) == 2]
    if valued:
        item = case.draw(st.sampled_from(valued))
        items.remove(item)
        items.append([item[0]])
    return items


@kind("a value that looks like an option")
def _value_option(items, case):
    valued = [it for it in items if len(it) == 2]
    if valued:
        case.draw(st.sampled_from(valued))[1] = case.draw(st.sampled_from(["--quiet", "-h", "--", "-1x"]))
    return items


@kind("stray positional argument")
def _stray(items, case):
    items.insert(case.draw(st.integers(0, len(items))), [case.draw(st.sampled_from(["stray", "1", "."]))])
    return items


@kind("abbreviated option")
def _abbreviated(items, case):
    options = [it for it in items if it[0].startswith("--") and len(it[0]) > 4]
    if options:
        item = case.draw(st.sampled_from(options))
        item[0] = item[0][:case.draw(st.integers(3, len(item[0]) - 1))]
    return items


@kind("option=value form, empty")
def _equals(items, case):
    valued = [it for it in items if len(it) == 2]
    if valued:
        item = case.draw(st.sampled_from(valued))
        item[:] = [f"{item[0]}=" + case.draw(st.sampled_from(["", item[1], "=" + item[1]]))]
    return items


@kind("a switch added", "flags")
def _flag(items, case):
    items.insert(case.draw(st.integers(0, len(items))), [case.draw(st.sampled_from(case.command.flags))])
    return items


# -- numbers ---------------------------------------------------------------------------------------

def _number_kind(name: str, values: list[str], *, huge: bool = False) -> None:
    def apply(items, case):
        options = [o for o in case.command.numbers if not (huge and o in case.command.work)]
        if options:
            _set(items, case.draw(st.sampled_from(options)), case.draw(st.sampled_from(values)))
        return items
    ARGV_KINDS[name] = Kind(name, "numbers", apply)


_number_kind("number of the wrong type", ["abc", "1.2.3", "ten", "0,5", "[1]"])
_number_kind("negative number", ["-1", "-0.5", "-1e9", "-0"])
_number_kind("zero", ["0", "0.0", "0e0"])
_number_kind("huge number", ["1e308", "99999999999999999999999", "1e400", "4294967296"], huge=True)
_number_kind("NaN", ["nan", "NaN", "-nan"])
_number_kind("infinity", ["inf", "-inf", "Infinity"])
_number_kind("digits with an underscore", ["1_0", "0_5", "1__0", "_1"])
_number_kind("empty value", [""])
_number_kind("unicode digits", ["\u0661\u0660", "\uff11\uff10", "\u00b2", "\u00bd"])
_number_kind("other spellings of a number", [" 3 ", "0x10", "1e1", "+2", "3.", "1/2", "true"])


# -- paths read ------------------------------------------------------------------------------------

def _input_kind(name: str, where: Callable[[Case], str]) -> None:
    def apply(items, case):
        return _set(items, case.draw(st.sampled_from(case.command.inputs)), where(case))
    ARGV_KINDS[name] = Kind(name, "inputs", apply)


_input_kind("input: a 300-character name", lambda c: str(c.place / ("n" * 300)))
_input_kind("input: a folder", lambda c: str(c.world.odd / "adir"))
_input_kind("input: a missing file", lambda c: str(c.place / "missing.json"))
_input_kind("input: a file nobody may read", lambda c: str(c.world.odd / "unreadable"))
_input_kind("input: a link loop", lambda c: str(c.world.odd / "loop"))
_input_kind("input: an empty file", lambda c: str(c.world.odd / "empty"))
_input_kind("input: a dangling link", lambda c: str(c.world.odd / "dangling"))
_input_kind("input: a NUL byte in the name", lambda c: str(c.place / "a\x00b"))


@kind("input: another input of the command", "inputs")
def _other_input(items, case):
    values = [v for v in (_value(items, o) for o in case.command.inputs) if v]
    if values:
        _set(items, case.draw(st.sampled_from(case.command.inputs)), case.draw(st.sampled_from(values)))
    return items


# -- paths written ---------------------------------------------------------------------------------

def _output_option(case: Case) -> str:
    return case.draw(st.sampled_from(sorted(case.command.outputs)))


def _output_kind(name: str, where: Callable[[Items, Case, str], str | None]) -> None:
    def apply(items, case):
        option = _output_option(case)
        target = where(items, case, option)
        if target is None:
            return None
        _set(items, option, target)
        if case.draw(st.booleans()):
            items.append(["--overwrite"])
        return items
    ARGV_KINDS[name] = Kind(name, "outputs", apply)


def _an_input(items: Items, case: Case) -> str | None:
    values = [v for v in (_value(items, o) for o in case.command.inputs) if v]
    return case.draw(st.sampled_from(values)) if values else None


def _is_dir(value: str) -> bool:
    try:
        return Path(value).is_dir()
    except (OSError, ValueError):   # a name too long, a NUL byte: a mutation before this one
        return False


def _inside_an_input(items: Items, case: Case, option: str) -> str | None:
    folders = [v for v in (_value(items, o) for o in case.command.inputs) if v and _is_dir(v)]
    if not folders:
        return None
    folder = Path(case.draw(st.sampled_from(folders)))
    return str(folder / case.draw(st.sampled_from(["out.json", "manifest.json", "new", "x.png"])))


def _a_folder_of_mine(items: Items, case: Case, option: str) -> str:
    folder = case.place / "mine"
    folder.mkdir(exist_ok=True)
    (folder / "keep.txt").write_text("not written by the tool\n")
    if case.draw(st.booleans()):
        (folder / "manifest.json").write_text('{"format": "exitbundle/1"}\n')
    return str(folder)


def _an_old_file(items: Items, case: Case, option: str) -> str:
    old = case.place / ("old.json" if case.command.outputs[option] == "file" else "old")
    old.write_text('{"mine": true}\n')
    return str(old)


_output_kind("output: the same path as an input", lambda items, case, option: _an_input(items, case))
_output_kind("output: inside an input folder", _inside_an_input)
_output_kind("output: a folder holding files the tool did not write", _a_folder_of_mine)
_output_kind("output: an existing file", _an_old_file)
_output_kind("output: in a missing folder", lambda items, case, option: str(case.place / "missing" / "x.json"))
_output_kind("output: a 300-character name", lambda items, case, option: str(case.place / ("o" * 300 + ".json")))
_output_kind("output: a unicode name", lambda items, case, option: str(case.place / "\u00fcn\u00ef \u20ac.json"))
_output_kind("output: a special file", lambda items, case, option: "/dev/null")


# -- names -----------------------------------------------------------------------------------------

@kind("name: unicode, control characters, a path", "words")
def _word(items, case):
    value = case.draw(st.sampled_from(["r\u00e9snet\U0001d518", "\u540d\u524d", "a\nb", "a\tb", "../../etc",
                                       "x" * 300, " ", "None"]))
    return _set(items, case.draw(st.sampled_from(case.command.words)), value)


MUST_REFUSE = {"number of the wrong type", "NaN", "digits with an underscore", "unicode digits", "unknown option",
               "stray positional argument",
               "input: a folder", "input: a missing file", "input: a link loop", "input: a dangling link",
               "input: a NUL byte in the name", "input: a 300-character name",
               "output: the same path as an input", "output: inside an input folder",
               "output: a folder holding files the tool did not write", "output: in a missing folder",
               "output: a 300-character name", "output: a special file"}
