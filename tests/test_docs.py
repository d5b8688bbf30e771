"""The documentation cannot drift from the code unnoticed: every `mupbench …` command line quoted in README.md and
docs/*.md parses with the real command-line parser, every `--option` they name exists, every relative link (file and
#anchor) resolves, and the test command README states is the one CI runs.

Commands are checked at `--help` level: the argv goes through `mupbench.cli.build_parser().parse_args`, which knows
every command, option, choice and number type, and nothing runs (no training, no file access). Quoted synopses are
expanded: `[...]` is an optional group (checked with and without it), `a|b` inside one word or `[X | Y]` between groups
are alternatives (each checked), and placeholders (`DIR`, `W`, `<file>`, `δ`, `…`) become a dummy value.
"""
from __future__ import annotations

import argparse
import itertools
import re
import shlex
from pathlib import Path

import pytest

from mupbench.cli import build_parser
from mupbench.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINKED_PAGES = PAGES + sorted((ROOT / "reports" / "sweeps").rglob("*.md"))  # results pages: their links are checked too

FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<lang>[^`\n]*)$")
INLINE = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
ANCHOR_TAG = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"", re.IGNORECASE)
SHELL_BLOCKS = {"", "bash", "sh", "shell", "console", "text"}
PLACEHOLDER = re.compile(r"^(?:[A-Z][A-Z0-9_]*|<[^<>]+>|δ|…|\.\.\.)$")
DUMMY = "1"  # parses as a path, a name, an integer and a number alike
MAX_VARIANTS = 64


# --- reading pages ---------------------------------------------------------------------------------------------------
def split_blocks(text: str) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """(fenced code blocks as (language, lines), the lines outside them)."""
    blocks, prose, fence, lang, body = [], [], None, "", []
    for line in text.splitlines():
        m = FENCE.match(line)
        if fence is None and m:
            fence, lang, body = m["fence"], m["lang"].strip().lower(), []
        elif fence is not None and line.strip().startswith(fence[0] * len(fence)) and not line.strip().strip(fence[0]):
            blocks.append((lang, body))
            fence = None
        elif fence is not None:
            body.append(line)
        else:
            prose.append(line)
    return blocks, prose


def _logical_lines(lines: list[str]) -> list[str]:
    out, held = [], ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            held += line.rstrip()[:-1] + " "
            continue
        out.append(held + line)
        held = ""
    return out + ([held] if held else [])


def commands(text: str) -> list[str]:
    """Every `mupbench …` command line in a page: in shell code blocks, in indented code, and in inline code."""
    blocks, prose = split_blocks(text)
    found = []
    for lang, body in blocks:
        if (lang.split()[0] if lang else "") in SHELL_BLOCKS:
            for line in _logical_lines(body):
                found += _shell_commands(line.strip().removeprefix("$ "))
    indented = [line[4:] if line.startswith("    ") else "" for line in prose]  # indented code, blank elsewhere
    for line in _logical_lines(indented):
        found += _shell_commands(line.strip()) if line.strip().startswith("mupbench") else []
    for line in prose:
        for m in INLINE.finditer(line):
            code = m[2].strip().replace("\\|", "|")
            if re.match(r"(?:\S*/)?mupbench(?:\s|$)|python3? -m mupbench\.cli(?:\s|$)", code):
                found.append(code)
    return found


def _shell_commands(line: str) -> list[str]:
    """The mupbench invocations of a shell line (a comment dropped, split at ; && || |)."""
    if not re.search(r"(?:^|[\s/;&|(])mupbench(?:\s|$)|-m mupbench\.cli", line):
        return []
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split, lexer.commenters = True, "#"
    try:
        words = list(lexer)
    except ValueError:  # unbalanced quotes: reported by parse_errors, which cannot split it either
        return [line]
    segments, current = [], []
    for w in words + [";"]:
        if w and set(w) <= set(";&|"):
            segments.append(current)
            current = []
        else:
            current.append(w)
    return [shlex.join(s) for s in segments if s and _argv(s) is not None]


def _argv(words: list[str]) -> list[str] | None:
    """The arguments after the program, if `words` invokes mupbench (`mupbench`, `.venv/bin/mupbench`,
    `python -m mupbench.cli`)."""
    if Path(words[0]).name == "mupbench":
        return words[1:]
    if Path(words[0]).name.startswith("python") and words[1:3] == ["-m", "mupbench.cli"]:
        return words[3:]
    return None


# --- synopses → argv variants ----------------------------------------------------------------------------------------
def variants(command: str) -> list[list[str]]:
    """The argv lists a quoted command or synopsis stands for (placeholders replaced by a dummy)."""
    words = shlex.split(re.sub(r"([\[\]])", r" \1 ", command)) if "[" in command else shlex.split(command)
    items, end = _sequence(words, 0)
    if end != len(words):
        raise ValueError(f"unbalanced ']' in {command!r}")
    argv_lists = []
    for combo in itertools.islice(_expand(items), MAX_VARIANTS):
        words = [w for w in combo if w]
        argv = _argv(words) if words else None
        if argv is None:
            raise ValueError(f"not a mupbench command: {command!r}")
        argv_lists.append([DUMMY if PLACEHOLDER.match(w) else w for w in argv])
    return argv_lists


def _sequence(words: list[str], i: int) -> tuple[list, int]:
    """Items up to the matching ']' (or the end): ("word", choices) or ("optional", [alternative item lists])."""
    items, alternatives = [], []
    while i < len(words) and words[i] != "]":
        w = words[i]
        if w == "[":
            inner, i = _sequence(words, i + 1)
            if i >= len(words):
                raise ValueError("unbalanced '['")
            items.append(("optional", inner))
        elif w == "|":
            alternatives.append(items)
            items = []
        else:
            items.append(("word", w.split("|") if "|" in w and not w.startswith(("'", '"')) else [w]))
        i += 1
    if alternatives:
        return [("choice", alternatives + [items])], i
    return items, i


def _expand(items: list):
    options = []
    for kind, value in items:
        if kind == "word":
            options.append([[c] for c in value])
        elif kind == "choice":
            options.append([flat for alt in value for flat in _expand(alt)])
        else:  # optional: absent, or any of its expansions
            options.append([[]] + list(_expand(value)))
    for combo in itertools.product(*options):
        yield [w for part in combo for w in part]


def parse_errors(command: str) -> list[str]:
    """Why a quoted command does not parse (empty when every variant does)."""
    try:
        argv_lists = variants(command)
    except ValueError as e:
        return [f"{command!r}: {e}"]
    errors = []
    for argv in argv_lists:
        try:
            build_parser().parse_args(argv)
        except (UserError, SystemExit) as e:
            errors.append(f"{command!r} as {shlex.join(argv)!r}: {e}")
    return errors


# --- options mentioned in prose ---------------------------------------------------------------------------------------
# Flags of the other tools the pages quote: pip, Ray, Slurm, Docker, scripts/gpu-check, TensorBoard, MLflow.
OTHER_TOOLS_FLAGS = {"--no-deps", "--head", "--port", "--address", "--num-gpus", "--num-cpus", "--block",
                     "--node-ip-address", "--ip-address", "--nodes", "--ntasks", "--ntasks-per-node", "--gpus-per-node",
                     "--cpus-per-task", "--exclusive", "--time", "--shm-size", "--only",
                     "--logdir", "--backend-store-uri",
                     "--draws", "--presets", "--designs", "--estimators",  # scripts/error-rates
                     "--parameterization", "--result"}  # examples/train_gpt.py
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def mupbench_flags() -> set[str]:
    flags, parsers = set(), [build_parser()]
    while parsers:
        parser = parsers.pop()
        for action in parser._actions:
            flags.update(action.option_strings)
            if isinstance(action, argparse._SubParsersAction):
                parsers += action.choices.values()
    return flags


def unknown_flags(text: str) -> set[str]:
    """Options a page names (`--steps N` in a sentence, too) that no mupbench command has: renamed or removed ones."""
    return set(FLAG.findall(text)) - mupbench_flags() - OTHER_TOOLS_FLAGS


# --- links -----------------------------------------------------------------------------------------------------------
def slug(heading: str) -> str:
    """GitHub's anchor for a heading: inline markup dropped, lower case, punctuation removed, spaces → hyphens."""
    text = re.sub(r"`([^`]*)`", r"\1", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[*_]{1,3}([^*_]+)[*_]{1,3}", r"\1", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text: str) -> set[str]:
    _, prose = split_blocks(text)
    seen: dict[str, int] = {}
    out = set()
    for line in prose:
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            base = slug(m[1])
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
        out.update(ANCHOR_TAG.findall(line))
    return out


def broken_links(page: Path) -> list[str]:
    """Every relative link of `page` whose file, or #anchor in a Markdown file, does not exist."""
    _, prose = split_blocks(page.read_text())
    broken = []
    for line in prose:
        for target in LINK.findall(INLINE.sub("", line)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            path_part, _, anchor = target.partition("#")
            path = (page.parent / path_part).resolve() if path_part else page
            if not path.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and path.suffix == ".md" and anchor not in anchors(path.read_text()):
                broken.append(f"{page.name}: {target} (no heading or anchor #{anchor} in {path.name})")
    return broken


# --- the pages -------------------------------------------------------------------------------------------------------
ALL_COMMANDS = [(page.relative_to(ROOT).as_posix(), c) for page in PAGES for c in commands(page.read_text())]


def test_the_pages_quote_commands():
    """The extraction finds what is there (a broken extractor would make the parsing test pass vacuously)."""
    pages = {p for p, _ in ALL_COMMANDS}
    assert {"README.md", "docs/running-sweeps.md", "docs/gating.md", "docs/ray.md", "docs/your-model.md"} <= pages
    assert len(ALL_COMMANDS) >= 40
    subcommands = {variants(c)[0][0] for _, c in ALL_COMMANDS if variants(c)[0]}
    assert {"run", "status", "analyze", "report", "list", "explain", "coord-check", "gate", "bench"} <= subcommands


@pytest.mark.parametrize("page, command", ALL_COMMANDS, ids=[f"{p}:{c[:60]}" for p, c in ALL_COMMANDS])
def test_every_quoted_command_parses(page, command):
    assert parse_errors(command) == []


@pytest.mark.parametrize("page", LINKED_PAGES, ids=[p.relative_to(ROOT).as_posix() for p in LINKED_PAGES])
def test_every_relative_link_resolves(page):
    assert broken_links(page) == []


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_every_option_named_exists(page):
    assert unknown_flags(page.read_text()) == set()


def test_the_checker_finds_a_planted_unknown_option():
    assert unknown_flags("run with `--seeds 3`, `--steps 30` and --frobnicate; `ray start --head`") == {"--frobnicate"}


def test_readme_links_every_docs_page():
    linked = {t.partition("#")[0] for t in LINK.findall((ROOT / "README.md").read_text())}
    assert {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")} <= linked


def _fenced_after(text: str, phrase: str) -> str:
    """The first command of the first fenced block after `phrase` (wherever its lines break)."""
    rest = text[re.search(r"\s+".join(map(re.escape, phrase.split())), text).start():]
    blocks, _ = split_blocks(rest)
    return blocks[0][1][0].strip()


def test_readme_states_the_commands_ci_and_the_smoke_script_run():
    readme = (ROOT / "README.md").read_text()
    ci = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()
          if line.strip() and not line.lstrip().startswith("#")]
    test_command = _fenced_after(readme, "sets up and runs the tests")
    assert test_command == "bash scripts/test.sh" and ci[-1] == test_command
    assert "pytest" in (ROOT / "scripts/test.sh").read_text()
    smoke_command = _fenced_after(readme, "sets up and runs the CPU smoke sweep")
    assert smoke_command == "bash scripts/smoke.sh"
    assert re.search(r"mupbench run\b", (ROOT / "scripts/smoke.sh").read_text())


# --- the checker itself ----------------------------------------------------------------------------------------------
PLANTED = """# A page

```bash
mupbench run --suite smoke --out runs/x      # fine
mupbench run --no-such-option
ray start --head && mupbench gate --strict DIR || echo failed
```

Inline: `mupbench frobnicate`, `mupbench explain --width W [--parameterization mup\\|sp] [--depth L]`,
`mupbench explain --width wide`, `mupbench.kernels.rms_norm(x)` (not a command), `python -m mupbench.cli list`.
"""


def test_the_checker_finds_planted_bad_commands():
    found = commands(PLANTED)
    assert found == ["mupbench run --suite smoke --out runs/x", "mupbench run --no-such-option",
                     "mupbench gate --strict DIR", "mupbench frobnicate",
                     "mupbench explain --width W [--parameterization mup|sp] [--depth L]",
                     "mupbench explain --width wide", "python -m mupbench.cli list"]
    bad = {c for c in found if parse_errors(c)}
    assert commands("```bash\nmupbench run --out 'unclosed\n```\n") == ["mupbench run --out 'unclosed"]
    assert parse_errors("mupbench run --out 'unclosed")
    assert bad == {"mupbench run --no-such-option", "mupbench frobnicate", "mupbench explain --width wide"}


def test_synopses_expand_to_every_alternative():
    assert variants("mupbench explain --width W [--parameterization mup|sp] [--depth L]") == [
        ["explain", "--width", "1"], ["explain", "--width", "1", "--depth", "1"],
        ["explain", "--width", "1", "--parameterization", "mup"],
        ["explain", "--width", "1", "--parameterization", "mup", "--depth", "1"],
        ["explain", "--width", "1", "--parameterization", "sp"],
        ["explain", "--width", "1", "--parameterization", "sp", "--depth", "1"]]
    assert variants("mupbench gate [DIR | --suite S] [--strict]") == [
        ["gate"], ["gate", "--strict"], ["gate", "1"], ["gate", "1", "--strict"],
        ["gate", "--suite", "1"], ["gate", "--suite", "1", "--strict"]]
    # one bad alternative is enough to fail: --executor takes local or ray only
    assert parse_errors("mupbench run --executor local|slurm") and not parse_errors("mupbench run --executor local|ray")


def test_the_checker_finds_planted_broken_links(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "b.md").write_text("# B page\n\n## Exit codes\n\n<a id=\"custom\"></a>\n")
    page = tmp_path / "a.md"
    page.write_text("# A\n\n## Local section\n\n"
                    "[ok](docs/b.md) [ok](docs/b.md#exit-codes) [ok](docs/b.md#custom) [ok](#local-section) "
                    "[web](https://example.org/x) `[not a link](nowhere.md)`\n\n"
                    "[gone](docs/missing.md) [bad anchor](docs/b.md#exit-code) [bad local](#nowhere)\n\n"
                    "```\n[in code](ignored.md)\n## not a heading\n```\n")
    assert broken_links(page) == ["a.md: docs/missing.md (no such file)",
                                  "a.md: docs/b.md#exit-code (no heading or anchor #exit-code in b.md)",
                                  "a.md: #nowhere (no heading or anchor #nowhere in a.md)"]


def test_slugs_follow_github():
    assert slug("`mupbench run`") == "mupbench-run"
    assert slug("results.json") == "resultsjson"
    assert slug("On a GPU: one command") == "on-a-gpu-one-command"
    assert slug("Depth rules, as data") == "depth-rules-as-data"
    assert anchors("# T\n## Tests\n## Tests\n") == {"t", "tests", "tests-1"}
