"""The reStructuredText the project's docstrings use, turned into the Markdown the site renders.

Docstrings state their equations as ``.. math::`` blocks and ``:math:`` roles, and name code with
``:mod:``/``:class:``/``:func:``/``:meth:`` roles. The site writes math for pymdownx.arithmatex
(``$...$`` inline, ``$$ ... $$`` blocks), which MathJax typesets in the browser.
"""

from __future__ import annotations

import re

_INLINE_MATH = re.compile(r":math:`([^`]+)`")
_CODE_ROLE = re.compile(r":(?:mod|class|func|meth|attr|data|obj|exc):`~?([^`]+)`")
_DIRECTIVE = re.compile(r"^(?P<indent>\s*)\.\. math::\s*(?P<first>.*)$")


def _indent_of(line: str) -> int:
    return len(line) - len(line.lstrip())


def _math_blocks(lines: list[str], start: int, indent: str, first: str) -> tuple[list[str], int]:
    """The ``$$`` blocks of the directive at ``lines[start]``; blank lines separate equations."""
    body: list[str] = [first] if first.strip() else []
    i = start + 1
    while i < len(lines) and (not lines[i].strip() or _indent_of(lines[i]) > len(indent)):
        body.append(lines[i].strip())
        i += 1
    while body and not body[-1]:
        body.pop()
    equations, current = [], []
    for line in body + [""]:
        if line:
            current.append(line)
        elif current:
            equations.append(current)
            current = []
    out: list[str] = [""]
    for equation in equations:
        out += [f"{indent}$$", *(f"{indent}{line}" for line in equation), f"{indent}$$", ""]
    return out, i


def rst_to_markdown(text: str) -> str:
    """``text`` with math directives and roles in arithmatex form and code roles as code spans."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _DIRECTIVE.match(lines[i])
        if match:
            block, i = _math_blocks(lines, i, match["indent"], match["first"])
            out += block
            continue
        out.append(lines[i])
        i += 1
    converted = "\n".join(out)
    converted = _INLINE_MATH.sub(lambda m: f"${m[1].strip()}$", converted)
    return _CODE_ROLE.sub(lambda m: f"`{m[1]}`", converted)
