"""The seed document's text: its sections, the code it prints, and checks read off that text.

The seed (``000_2ef9e53f9445ed92.txt``, kept beside this module, a copy of
``shared/seeds/000_2ef9e53f9445ed92.txt``) lost its indentation when it was flattened to text, so
Python cannot run or parse it as printed. What can be read off it reliably, line by line, is here:
where a section starts and ends, the lines of a class or function, the imports of a section's code,
which functions it defines and calls.
"""

from __future__ import annotations

import functools
import inspect
import re
from dataclasses import dataclass
from pathlib import Path

SEED_PATH = Path(__file__).with_name("000_2ef9e53f9445ed92.txt")
_HEADING = re.compile(r"^(\d+)\.(\d*)\s+\S")  # "2.1 为什么需要残差连接", "7. 避坑小贴士"
_DEF = re.compile(r"^(class|def)\s+(\w+)\s*\(([^)]*)")


@functools.lru_cache(maxsize=1)
def seed_lines() -> tuple[str, ...]:
    return tuple(SEED_PATH.read_text(encoding="utf-8").splitlines())


def sections() -> list[str]:
    """Every section label of the seed, in order ("1", "2", "2.1", ...)."""
    return [
        m.group(1) + (f".{m.group(2)}" if m.group(2) else "") for line in seed_lines() if (m := _HEADING.match(line))
    ]


def leaf_sections() -> list[str]:
    """The sections with no subsections: where the seed's text and code sit ("2.1", ..., "7", "8", "9")."""
    labels = sections()
    return [s for s in labels if not any(other.startswith(s + ".") for other in labels)]


def section_lines(section: str) -> list[str]:
    """The lines of seed section ``section`` ("4.1", or "7" for a whole chapter), heading excluded,
    up to the next heading of the same or a higher level."""
    lines, start = seed_lines(), None
    for i, line in enumerate(lines):
        m = _HEADING.match(line)
        if not m:
            continue
        label = m.group(1) + (f".{m.group(2)}" if m.group(2) else "")
        if start is None and label == section:
            start = i + 1
        elif start is not None and ("." in section or not label.startswith(section + ".")):
            return list(lines[start:i])
    if start is None:
        raise KeyError(f"the seed has no section {section}")
    return list(lines[start:])


def normalize(line: str) -> str:
    """A code line with its comment and every whitespace removed ('#' never occurs in the seed's strings)."""
    return re.sub(r"\s+", "", line.split("#", 1)[0])


def _is_docstring(line: str) -> bool:
    return bool(re.fullmatch(r'"""[^"]*"""', line))


def definition_lines(name: str) -> list[str]:
    """The seed's lines of class or function ``name``, normalized, docstrings and blank lines dropped.

    The flattened text has no indentation, so the end is found this way: a definition ends before
    the first line that starts another class, or a ``def`` without ``self`` (a function, not a
    method), or any line after a ``return``/``pass`` that is not a new method (``def ...(self``):
    such a line would be unreachable inside the method, so it is module level."""
    lines = seed_lines()
    starts = [i for i, line in enumerate(lines) if _DEF.match(line) and _DEF.match(line).group(2) == name]
    if len(starts) != 1:
        raise KeyError(f"the seed defines {name!r} {len(starts)} times")
    body, last = [], ""
    for line in lines[starts[0] :]:
        text = normalize(line)
        if not text or _is_docstring(line.strip()):
            continue
        m = _DEF.match(line)
        if body and m and (m.group(1) == "class" or not m.group(3).startswith("self")):
            break
        if body and re.match(r"(return|pass)\b", last) and not (m and m.group(3).startswith("self")):
            break
        body.append(text)
        last = line.strip()
    return body


def elision(name: str) -> str | None:
    """The comment with which the seed elides a method body of class or function ``name``: a line
    starting '# ...' right before a ``pass`` of that definition; None if there is none."""
    lines = seed_lines()
    start = next(i for i, line in enumerate(lines) if (m := _DEF.match(line)) and m.group(2) == name)
    remaining, previous = len(definition_lines(name)), ""
    for line in lines[start:]:
        text = line.strip()
        if normalize(text) == "pass" and previous.startswith("# ..."):
            return previous
        if normalize(text) and not _is_docstring(text):
            remaining -= 1
            if remaining == 0:
                return None
        previous = text or previous
    return None


_PREFIX = re.compile(r"\b(Seed(?=[A-Z])|seed_(?=[a-z]))")


def transcribed_lines(obj) -> list[str]:
    """A transcription's source lines, normalized as ``definition_lines``, the ``Seed``/``seed_`` prefix removed."""
    source = re.sub(r'"""[\s\S]*?"""', "", inspect.getsource(obj))
    return [text for text in (normalize(_PREFIX.sub("", line)) for line in source.splitlines()) if text]


def transcription_mismatch(obj) -> str | None:
    """None when ``obj`` has exactly the seed's lines of its definition, in the seed's order (modulo
    whitespace, comments, docstrings and the name prefix); else the first line that differs."""
    name = _PREFIX.sub("", obj.__name__)
    seed, ours = definition_lines(name), transcribed_lines(obj)
    for i, (a, b) in enumerate(zip(seed, ours)):
        if a != b:
            return f"{name}, line {i + 1}: the seed has {a!r}, the transcription {b!r}"
    if len(seed) != len(ours):
        longer, what = (seed, "the seed") if len(seed) > len(ours) else (ours, "the transcription")
        return f"{name}: {what} goes on with {longer[min(len(seed), len(ours))]!r}"
    return None


def imported_names(section: str) -> set[str]:
    """Names a section's code imports (``import a.b as c`` -> c; ``import a`` -> a; ``from m import x`` -> x)."""
    names = set()
    for line in section_lines(section):
        if m := re.match(r"import\s+([\w.]+)(?:\s+as\s+(\w+))?\s*$", line):
            names.add(m.group(2) or m.group(1).split(".")[0])
        elif m := re.match(r"from\s+[\w.]+\s+import\s+(.+)$", line):
            names.update(part.split(" as ")[-1].strip() for part in m.group(1).split(","))
    return names


def used_modules(
    section: str, candidates: tuple[str, ...] = ("F", "nn", "torch", "models", "time", "math")
) -> set[str]:
    """Which of ``candidates`` the section's code uses as ``NAME.attribute`` (comments dropped; spacing
    kept, so that ``with torch.no_grad()`` is not read as ``withtorch``)."""
    text = "\n".join(line.split("#", 1)[0] for line in section_lines(section))
    return {c for c in candidates if re.search(rf"(?<![\w.]){c}\.\w", text)}


def uncalled_functions() -> list[str]:
    """Module-level functions the seed defines and never calls (a call: ``name(`` outside its own ``def`` line)."""
    lines = seed_lines()
    defined = [
        m.group(2)
        for line in lines
        if (m := _DEF.match(line)) and m.group(1) == "def" and not m.group(3).startswith("self")
    ]

    def called(name: str) -> bool:  # builders like resnet18() are called through a dict: any call counts
        return any(re.search(rf"(?<![\w.]){name}\(", line) and not line.startswith(f"def {name}(") for line in lines)

    return [name for name in dict.fromkeys(defined) if not called(name)]


def lines_containing(text: str) -> list[str]:
    return [line for line in seed_lines() if text in line]


@dataclass(frozen=True)
class SeedPreprocessing:
    """The evaluation preprocessing a seed section prints for the pretrained torchvision model it loads."""

    builder: str  # "resnet50" (``models.resnet50(weights=...)``)
    weights: str  # "IMAGENET1K_V1"
    resize: int  # ``transforms.Resize(N)``: the shorter side to N
    crop: int  # ``transforms.CenterCrop(N)``
    mean: tuple[float, ...]
    std: tuple[float, ...]


def seed_preprocessing(section: str = "6.1") -> SeedPreprocessing:
    """Read off section ``section``: the model and weights it loads and its ``transforms.Compose`` pipeline.
    Raises ``ValueError`` naming what the section does not print."""
    text = "\n".join(line.split("#", 1)[0] for line in section_lines(section))
    found = {
        "model": re.search(r"models\.(\w+)\(\s*weights\s*=\s*['\"](\w+)['\"]", text),
        "Resize": re.search(r"transforms\.Resize\(\s*(\d+)\s*\)", text),
        "CenterCrop": re.search(r"transforms\.CenterCrop\(\s*(\d+)\s*\)", text),
        "Normalize": re.search(r"transforms\.Normalize\(\s*mean\s*=\s*\[([^\]]*)\]\s*,\s*std\s*=\s*\[([^\]]*)\]", text),
    }
    missing = [name for name, match in found.items() if match is None]
    if missing:
        raise ValueError(f"seed section {section} prints no {', '.join(missing)}")

    def numbers(listed: str) -> tuple[float, ...]:
        return tuple(float(n) for n in listed.split(","))

    return SeedPreprocessing(
        builder=found["model"].group(1), weights=found["model"].group(2), resize=int(found["Resize"].group(1)),
        crop=int(found["CenterCrop"].group(1)), mean=numbers(found["Normalize"].group(1)),
        std=numbers(found["Normalize"].group(2)),
    )
