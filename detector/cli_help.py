"""``--help`` of every command, generated from its ``conf/<command>.yaml`` and the comments in it.

The config files are the one source of truth: their header comment is the usage, each key's
comment (on its line, or the comment lines just above it) is its description, and each
config group in the defaults list is shown with its options. Hydra prints this instead of
its generic text through ``hydra.help.template`` (``conf/hydra/*.yaml``), which calls the
``detector_help`` resolver registered in :mod:`detector.config`.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

CONFIG_PACKAGE = "detector.conf"
# config name -> the module that runs it
COMMANDS = {"infer": "detector.infer", "infer_ray": "detector.infer.ray",
            "train": "detector.train", "evaluate": "detector.evaluate",
            "adapt": "detector.adapt", "monitor": "detector.monitor",
            "dataset": "detector.data", "synth": "detector.synth",
            "recalibrate": "detector.train.recalibrate"}
_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w.-]*):(?P<rest>.*)$")
VALUE_WIDTH = 28
WIDTH = 100


@dataclass
class Key:
    """One config key: dotted name, default value as written, description."""

    name: str
    value: str
    doc: str
    section: str = ""  # a comment block above a key that has its own comment


def _conf_dir() -> Path:
    return Path(str(resources.files(CONFIG_PACKAGE)))


def _split_comment(rest: str) -> tuple[str, str]:
    """``" 0.5   # why"`` → ("0.5", "why"); a ``#`` inside quotes is kept."""
    quote = None
    for i, char in enumerate(rest):
        if char in "'\"" and quote in (None, char):
            quote = None if quote else char
        elif char == "#" and quote is None and (i == 0 or rest[i - 1] in " \t"):
            return rest[:i].strip(), rest[i + 1:].strip()
    return rest.strip(), ""


def header(text: str) -> list[str]:
    """The file's leading comment lines, without ``#``."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[1:].strip())
    return [line for line in lines if not line.startswith("@package")]


def keys(text: str, skip: tuple[str, ...] = ("defaults", "hydra")) -> list[Key]:
    """Every key of a config file with its value (leaves) and comment, in file order.

    Keys under ``skip`` sections are left out; a mapping's own comment is kept as a key
    whose value is empty.
    """
    out: list[Key] = []
    stack: list[tuple[int, str]] = []
    pending: list[str] = []
    last: Key | None = None
    last_col = -1
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            col = len(line) - len(line.lstrip())
            if last is not None and col == last_col:  # a comment continued under itself
                last.doc = f"{last.doc} {stripped[1:].strip()}".strip()
            else:
                pending.append(stripped[1:].strip())
                last = None
            continue
        match = _KEY.match(line)
        if not match:
            if not stripped:
                pending, last = [], None
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        value, comment = _split_comment(match["rest"])
        name = ".".join([k for _, k in stack] + [match["key"]])
        stack.append((indent, match["key"]))
        section = " ".join(pending) if comment else ""
        doc = comment or " ".join(pending)
        pending = []
        if name.split(".")[0] in skip:
            last = None
            continue
        last = Key(name, value, doc, section)
        last_col = line.index("#", len(match["indent"]) + len(match["key"])) if comment else -2
        if value or doc:
            out.append(last)
    return out


def defaults_lines(text: str) -> list[str]:
    """The lines of a config's ``defaults:`` list (its indented block)."""
    lines, inside = [], False
    for line in text.splitlines():
        if line.startswith("defaults:"):
            inside = True
            continue
        if inside and not line.startswith((" ", "\t", "#")) and line.strip():
            break
        if inside:
            lines.append(line)
    return lines


def groups(text: str) -> list[tuple[str, str, str]]:
    """(group, default option, comment) of the defaults list, ``hydra`` and ``_self_`` left
    out."""
    found = []
    for line in defaults_lines(text):
        item = re.match(r"^\s+-\s+(?:override\s+)?([\w/]+):\s*([^#\s]+)?\s*(?:#\s*(.*))?$", line)
        if item and item[1] != "hydra" and not item[1].startswith("hydra/"):
            found.append((item[1], item[2] or "null", (item[3] or "").strip()))
    return found


def parents(text: str) -> list[str]:
    """Configs the defaults list builds on (``- infer``): their keys apply too."""
    found = []
    for line in defaults_lines(text):
        item = re.match(r"^\s+-\s+([\w/]+)\s*(?:#.*)?$", line)
        if item and item[1] != "_self_":
            found.append(item[1])
    return found


def options(group: str) -> list[str]:
    """The options of a config group: the ``conf/<group>/*.yaml`` names (``_base`` files,
    which options build on, left out)."""
    folder = _conf_dir() / group
    return sorted(p.stem for p in folder.glob("*.yaml")
                  if not p.stem.startswith("_")) if folder.is_dir() else []


def _wrap(left: str, doc: str) -> str:
    """``  KEY=VALUE   doc`` with the doc wrapped in its column (below a long KEY=VALUE)."""
    indent = " " * (2 + VALUE_WIDTH)
    lines = textwrap.wrap(doc, WIDTH - len(indent)) or [""]
    if len(left) + 2 > VALUE_WIDTH and doc:
        return "\n".join([f"  {left}", *(indent + line for line in lines)])
    first = f"  {left.ljust(VALUE_WIDTH)}{lines[0]}".rstrip()
    return "\n".join([first, *(indent + line for line in lines[1:])])


def _key_lines(items: list[Key], prefix: str = "") -> list[str]:
    out = []
    for k in items:
        if k.section:
            out += ["", *textwrap.wrap(k.section, WIDTH, initial_indent="  ",
                                       subsequent_indent="  ")]
        name = f"{prefix}{k.name}"
        out.append(_wrap(f"{name}={k.value}" if k.value else f"{name}.*", k.doc))
    return out


def usage(config_name: str) -> str:
    """The ``--help`` text of the command whose primary config is ``config_name``."""
    path = _conf_dir() / f"{config_name}.yaml"
    text = path.read_text()
    module = COMMANDS.get(config_name, f"<command using conf/{config_name}.yaml>")
    lines = header(text) or [f"python -m {module} [KEY=VALUE ...]"]
    out = [f"usage: {lines[0]}" if lines[0].startswith("python") else
           f"usage: python -m {module} [KEY=VALUE ...]"]
    out += lines[1:] if lines[0].startswith("python") else lines
    out += ["", f"Keys (KEY=VALUE on the command line; defaults from conf/{config_name}.yaml):"]
    out += _key_lines(keys(text))
    for parent in parents(text):
        command = COMMANDS.get(parent)
        out.append(f"  Every key of conf/{parent}.yaml applies too"
                   + (f" (python -m {command} --help)." if command else "."))
    chosen = groups(text)
    if chosen:
        out += ["", "Config groups (GROUP=OPTION; the option's keys as GROUP.KEY=VALUE):"]
        for group, default, doc in chosen:
            opts = ", ".join(options(group)) or "none"
            out.append(_wrap(f"{group}={default}", f"{doc + '; ' if doc else ''}options: {opts}"))
            option = _conf_dir() / group / f"{default}.yaml"
            if option.is_file():
                out += _key_lines(keys(option.read_text()), group.replace("/", ".") + ".")
    out += ["", "Show the composed config: --cfg job; Hydra's own options: --hydra-help; "
            "sweeps: -m KEY=a,b"]
    return "\n".join(out)


def help_template(config_name: str) -> str:
    """:func:`usage` escaped for Hydra's ``string.Template`` (``$`` doubled)."""
    return usage(str(config_name)).replace("$", "$$")

