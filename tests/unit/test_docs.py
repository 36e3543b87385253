"""The user documentation stays short and true: README.md is under 400 lines, every `app.py` command
shown in README.md and BENCHMARKS.md exists with the options it is shown with, every `make` target
named in the README exists, and every relative link in the README points at a file in the repository.

Commands are checked against the CLI's own argparse parser (`app._parser()`), not a copied list, so a
renamed or removed command or option fails here until the documents follow.
"""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
BENCHMARKS = ROOT / "BENCHMARKS.md"
MAX_README_LINES = 400

# Options of the top-level parser that may come before the command (and take a value or not).
_GLOBAL_WITH_VALUE = {"--config", "--set"}
_GLOBAL_FLAGS = {"-v", "--verbose", "-q", "--quiet"}
# Shell words that end a command on its line.
_SHELL_STOP = {"|", "||", "&&", ";", ">", ">>", "2>", "2>>", "<", ")", "&"}
_WORD = re.compile(r"^[a-z][a-z0-9-]*$")


def _parser() -> argparse.ArgumentParser:
    import app

    build = getattr(app, "_parser", None) or getattr(app, "build_parser", None)
    assert build is not None, "app.py no longer has _parser() or build_parser(): point this test at its builder"
    parser = build()
    assert isinstance(parser, argparse.ArgumentParser)
    return parser


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _positional_choices(parser: argparse.ArgumentParser) -> list[str] | None:
    """Choices of the parser's first positional argument (`train {run,data,...}`), if it has any."""
    for action in parser._actions:
        if not action.option_strings and not isinstance(action, argparse._SubParsersAction):
            return [str(c) for c in action.choices] if action.choices else None
    return None


def mentions(text: str) -> Iterator[tuple[int, str]]:
    """(line number, the words after `app.py`) for each `python app.py ...` or `` `app.py ...` `` in ``text``.

    Shell line continuations are joined; an inline mention ends at its closing backtick. A bare
    `app.py` in prose (no `python` or backtick before it) is a file name, not a command, and is skipped.
    """
    lines = text.replace("\\\n", " ").splitlines()
    for number, line in enumerate(lines, 1):
        for m in re.finditer(r"(python\S*\s+|`)app\.py\b", line):
            rest = line[m.end():]
            if m.group(1) == "`":
                rest = rest.split("`", 1)[0]
            elif "`" in rest and line[:m.start()].count("`") % 2 == 1:
                rest = rest.split("`", 1)[0]  # `python app.py ...` inline
            yield number, rest


def _words(rest: str) -> list[str]:
    try:
        words = shlex.split(rest, comments=True)
    except ValueError:  # an unbalanced quote in prose
        words = rest.split()
    out: list[str] = []
    for w in words:
        if w in _SHELL_STOP or w.startswith(("2>", ">")):
            break
        out.append(w)
    return out


def check_command(parser: argparse.ArgumentParser, rest: str) -> str | None:
    """None when the words after `app.py` name a real command with real options; else what is wrong."""
    words = _words(rest)
    path = ["app.py"]
    current = parser
    i = 0
    expect_command = True
    positional_checked = False
    while i < len(words):
        w = words[i]
        if w.startswith("$"):  # a shell variable holding options ($A in BENCHMARKS)
            i += 1
            continue
        if w.startswith("-") and len(w) > 1 and not re.match(r"^-\d", w):
            name = w.split("=", 1)[0]
            if path == ["app.py"] and (name in _GLOBAL_WITH_VALUE or name in _GLOBAL_FLAGS):
                i += 1 if (name in _GLOBAL_FLAGS or "=" in w) else 2
                continue
            action = current._option_string_actions.get(name)
            if action is None:
                return f"`{' '.join(path)}` has no option {name}"
            takes_value = action.nargs != 0 and "=" not in w
            i += 2 if takes_value else 1
            continue
        subs = _subparsers(current)
        if expect_command and subs:
            if not _WORD.match(w):
                # `app.py ...` / `app.py COMMAND`: a placeholder, not a command name
                return None if path == ["app.py"] else f"`{' '.join(path)}` needs a subcommand, got {w!r}"
            if w not in subs:
                return f"`{' '.join(path)}` has no subcommand {w!r} (it has: {', '.join(sorted(subs))})"
            path.append(w)
            current = subs[w]
            i += 1
            continue
        expect_command = False
        if not positional_checked:
            positional_checked = True
            choices = _positional_choices(current)
            if choices is not None and _WORD.match(w) and w not in choices:
                return f"`{' '.join(path)}` takes one of {', '.join(choices)}, not {w!r}"
        i += 1
    if path == ["app.py"] and words and not any(_WORD.match(w) for w in words):
        return None
    if _subparsers(current) and len(path) > 1:
        return f"`{' '.join(path)}` is shown without its subcommand"
    return None


def _all_mentions() -> list[tuple[str, int, str]]:
    out = []
    for doc in (README, BENCHMARKS):
        for number, rest in mentions(doc.read_text(encoding="utf-8")):
            out.append((doc.name, number, rest))
    return out


def test_readme_is_short() -> None:
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n < MAX_README_LINES, f"README.md has {n} lines: move detail to docs/ (limit {MAX_README_LINES})"


def test_documents_mention_many_commands() -> None:
    # Guards the extraction itself: if the regex stopped matching, every other check would pass vacuously.
    found = _all_mentions()
    assert sum(1 for doc, _, _ in found if doc == "README.md") >= 20
    assert sum(1 for doc, _, _ in found if doc == "BENCHMARKS.md") >= 20


def test_every_documented_command_exists() -> None:
    parser = _parser()
    problems = []
    for doc, number, rest in _all_mentions():
        problem = check_command(parser, rest)
        if problem:
            problems.append(f"{doc}:{number}: {problem}: app.py{rest}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("rest, wrong", [
    (" query \"x\" --patient P002", None),
    (" --config configs/full.yaml index build --source-set full", None),
    (" --set a=b eval trust run --part dev", None),
    (" train verifier --overwrite", None),
    (" ...", None),
    (" quiz \"x\"", "no subcommand 'quiz'"),
    (" index rebuild", "no subcommand 'rebuild'"),
    (" query \"x\" --patients P002", "no option --patients"),
    (" eval trust explode", "takes one of"),
    (" index", "without its subcommand"),
])
def test_command_checker_catches_wrong_commands(rest: str, wrong: str | None) -> None:
    problem = check_command(_parser(), rest)
    if wrong is None:
        assert problem is None, problem
    else:
        assert problem is not None and wrong in problem, problem


def test_make_targets_in_readme_exist() -> None:
    targets = set(re.findall(r"^([a-zA-Z][\w-]*):", (ROOT / "Makefile").read_text(), flags=re.M))
    named = set(re.findall(r"`make ([a-z][\w-]*)`|^make ([a-z][\w-]*)", README.read_text(), flags=re.M))
    names = {a or b for a, b in named}
    assert {"demo", "test"} <= names
    assert names <= targets, f"README names make targets the Makefile lacks: {sorted(names - targets)}"


def _broken_links(doc: Path) -> list[str]:
    text = doc.read_text(encoding="utf-8")
    links = re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", text)
    assert links, f"no links found in {doc.name}: the pattern is broken"
    missing = []
    for target in links:
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue  # http(s):, mailto:, in-page anchors (checked below for BENCHMARKS)
        if not (doc.parent / target.split("#", 1)[0]).exists():
            missing.append(target)
    return missing


def test_readme_relative_links_exist() -> None:
    missing = _broken_links(README)
    assert not missing, f"README.md links to missing files: {missing}"


@pytest.mark.parametrize("doc", [BENCHMARKS, *sorted((ROOT / "docs").glob("*.md"))], ids=lambda p: p.name)
def test_other_documents_relative_links_exist(doc: Path) -> None:
    missing = _broken_links(doc)
    assert not missing, f"{doc.name} links to missing files: {missing}"


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = heading.lstrip("#").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def test_benchmarks_contents_links_match_headings() -> None:
    text = BENCHMARKS.read_text(encoding="utf-8")
    slugs = {_slug(h) for h in re.findall(r"^#{1,6} .+$", text, flags=re.M)}
    anchors = re.findall(r"\]\(#([^)]+)\)", text)
    assert len(anchors) >= 10, "BENCHMARKS.md has lost its table of contents"
    assert "appendix-superseded-runs" in anchors
    dangling = [a for a in anchors if a not in slugs]
    assert not dangling, f"BENCHMARKS.md contents link to no heading: {dangling}"

def _config_key_exists(key: str) -> bool:
    from pydantic import BaseModel

    from rag.config import AppConfig

    model: type[BaseModel] = AppConfig
    parts = key.split(".")
    for i, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return False
        annotation = field.annotation
        if i < len(parts) - 1:
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                return False
            model = annotation
    return True


def test_documented_set_keys_exist() -> None:
    keys = []
    for doc in (README, BENCHMARKS):
        for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
            keys += [(doc.name, number, k) for k in re.findall(r"--set ([a-z_]+\.[a-z0-9_.]+)=", line)]
    assert len(keys) >= 10
    wrong = [f"{doc}:{number}: {key}" for doc, number, key in keys if not _config_key_exists(key)]
    assert not wrong, "`--set` keys that rag/config.py does not have:\n" + "\n".join(wrong)
    assert not _config_key_exists("generator.no_such_key")
