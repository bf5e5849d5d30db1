"""MkDocs hooks for the documentation site (``mkdocs.yml``: ``hooks: [docs/tooling/hooks.py]``).

- One page per registered algorithm (``metaconstraint.algorithms.ALGORITHMS``): the module's
  docstring (its equations), a defaults table built from its pydantic ``Config.model_fields``,
  and its API. Pages for new algorithms appear on their own, and a default changed in the code
  changes the page: nothing to keep in sync by hand.
- The run configuration page (from ``RunConfig.model_fields``) and the CLI reference (from the
  typer app, with typer's own Markdown writer).
- MathJax, served from the site itself: its browser bundle comes from the ``django-static-mathjax``
  package (the ``docs`` extra) and is added to the site's files at build time, so the site builds
  and renders without network. Nothing of MathJax is kept in this repository.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
import typing
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

sys.path.insert(0, str(Path(__file__).parent))  # rst_markup, and the griffe extension beside it

from rst_markup import rst_to_markdown  # noqa: E402

# Pages that other pieces of work add to docs/; their nav entries are dropped while absent.
PAGES_ADDED_ELSEWHERE = {"extending.md", "scaling.md"}
ALGORITHMS_SECTION = "Algorithms"
MATHJAX_SITE_DIR = "assets/mathjax"
# tex-chtml.js is the whole TeX-to-HTML pipeline; it loads fonts and rarely used TeX packages
# (autoload) from beside itself.
MATHJAX_PARTS = ["tex-chtml.js", "output/chtml/fonts/woff-v2", "input/tex/extensions", "ui", "a11y"]


# ----------------------------------------------------------------------------- MathJax
def mathjax_root() -> Path:
    spec = importlib.util.find_spec("mathjax")
    root = Path(spec.origin).parent / "static" / "mathjax" / "es5" if spec and spec.origin else None
    if root is None or not (root / "tex-chtml.js").exists():
        raise PluginError(
            "MathJax for the site is missing: install the docs extra (`pip install -e '.[docs]'`, which brings "
            "django-static-mathjax, MathJax's browser bundle as a Python package)."
        )
    return root


def mathjax_files(config) -> list[File]:
    root = mathjax_root()
    paths = []
    for part in MATHJAX_PARTS:
        source = root / part
        paths += [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    return [
        File.generated(config, f"{MATHJAX_SITE_DIR}/{path.relative_to(root).as_posix()}", abs_src_path=str(path))
        for path in paths
    ]


# ----------------------------------------------------------------------------- pydantic tables
def _type_name(annotation) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{value}`" for value in typing.get_args(annotation))
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " or ".join(_type_name(arg) for arg in typing.get_args(annotation))
    if origin is not None:
        args = ", ".join(_type_name(arg) for arg in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


_BOUNDS = {"gt": ">", "ge": "≥", "lt": "<", "le": "≤", "min_length": "length ≥", "max_length": "length ≤"}


def _bounds(field) -> str:
    found = []
    for item in field.metadata:
        for name, symbol in _BOUNDS.items():
            value = getattr(item, name, None)
            if value is not None:
                found.append(f"{symbol} {value:g}" if isinstance(value, float) else f"{symbol} {value}")
        if getattr(item, "pattern", None):
            found.append(f"matches `{item.pattern}`")
    return ", ".join(found)


def _default(field) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "—"
    if isinstance(value, (list, tuple)):
        return "`[" + ", ".join(repr(v) for v in value) + "]`"
    return f"`{value!r}`" if not isinstance(value, str) else f'`"{value}"`'


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def fields_table(model) -> str:
    """A Markdown table of a pydantic model's fields: key, default, type, allowed values, meaning."""
    rows = ["| key | default | type | allowed | meaning |", "|---|---|---|---|---|"]
    for name, field in model.model_fields.items():
        rows.append(
            f"| `{name}` | {_default(field)} | {_type_name(field.annotation)} | {_bounds(field)} | "
            f"{_cell(field.description or '')} |"
        )
    return "\n".join(rows)


# ----------------------------------------------------------------------------- generated pages
def variant_of_a_registered_algorithm(cls) -> bool:
    """Whether ``cls`` is registered beside the algorithm it varies, in the same module (``aspc-wpc`` in wpc.py)."""
    return bool(cls.__dict__.get("__doc__")) and any(
        other is not cls and other.__module__ == cls.__module__ and issubclass(cls, other)
        for other in registered_algorithms().values()
    )


def algorithm_page(name: str, cls) -> str:
    module = sys.modules[cls.__module__]
    doc = rst_to_markdown((module.__doc__ or name).strip())
    title, _, body = doc.partition("\n")
    if variant_of_a_registered_algorithm(cls):  # e.g. aspc-rebrac beside rebrac: its own title, the module's text below
        title, body = f"{name}: {cls.__doc__.strip().splitlines()[0]}", f"{rst_to_markdown(inspect.cleandoc(cls.__doc__))}\n\n{title}\n{body}"
    config = cls.Config
    return "\n".join(
        [
            f"# {title.strip().rstrip('.')}",
            "",
            body.strip(),
            "",
            "## Defaults",
            "",
            f"Generated from `{config.__module__}.{config.__qualname__}` when the site is built, so it always shows the "
            f"code's defaults. Every key can be set in a config file (`--config FILE`, flat TOML or YAML keys beside the "
            f"[run keys](../configuration.md)); the resolved values of a run are in its `config.toml`.",
            "",
            fields_table(config),
            "",
            "## Run it",
            "",
            "```bash",
            f"metaconstraint run {name} --dataset pen-human",
            f"metaconstraint run {name} --dataset builtin/pendulum/medium-v0 --steps 3000   # offline, built-in data",
            "```",
            "",
            *api_section(name, cls),
        ]
    )


def api_section(name: str, cls) -> list[str]:
    """The module's API, on one page only: a variant (``aspc-rebrac``) points to its module's page."""
    if variant_of_a_registered_algorithm(cls):
        base = next(other for other in cls.__mro__[1:] if getattr(other, "name", None) in registered_algorithms())
        return ["## API", "", f"The classes are on [{base.name}'s page]({base.name}.md#api).", ""]
    return [
        "## API",
        "",
        f"::: {cls.__module__}",
        "    options:",
        "      show_root_heading: false",
        "      show_root_toc_entry: false",
        "      show_docstring_description: false",
        "      heading_level: 3",
        "",
    ]


def configuration_page() -> str:
    from metaconstraint.config import RunConfig

    return "\n".join(
        [
            "# Run configuration",
            "",
            "The keys of a run, beside each algorithm's own keys (see its page). Flags of `metaconstraint run` set them "
            "(`--eval-every` sets `eval_every`); a config file (`--config FILE`, TOML or YAML) holds them flat, and each "
            "run folder's `config.toml` records the resolved values. Generated from `metaconstraint.config.RunConfig`.",
            "",
            fields_table(RunConfig),
            "",
        ]
    )


def cli_page() -> str:
    import click
    import typer
    from typer.cli import get_docs_for_click

    from metaconstraint.cli import app

    command = typer.main.get_command(app)
    with click.Context(command, info_name="metaconstraint") as context:
        body = get_docs_for_click(obj=command, ctx=context, name="metaconstraint", title="CLI reference")
    intro = (
        "Generated from the typer app (`metaconstraint.cli.app`) when the site is built: the same text as "
        "`metaconstraint COMMAND --help`."
    )
    title, _, rest = body.partition("\n")
    return f"{title}\n\n{intro}\n{_escape_angles(rest)}"


def _escape_angles(markdown: str) -> str:
    """``<`` outside code spans and blocks as ``&lt;``: help texts such as ``OUT/<algorithm>/`` are
    not HTML tags (Markdown would drop them)."""
    lines, fenced = [], False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and not line.startswith("```"):
            parts = line.split("`")
            line = "`".join(part if i % 2 else part.replace("<", "&lt;") for i, part in enumerate(parts))
        lines.append(line)
    return "\n".join(lines) + "\n"


def registered_algorithms() -> dict:
    from metaconstraint.algorithms import ALGORITHMS

    return dict(sorted(ALGORITHMS.items()))


# ----------------------------------------------------------------------------- MkDocs events
def _prune(nav: list, docs_dir: Path) -> list:
    kept = []
    for entry in nav:
        (title, target), = entry.items() if isinstance(entry, dict) else [(None, entry)]
        if isinstance(target, list):
            kept.append({title: _prune(target, docs_dir)})
        elif isinstance(target, str) and target in PAGES_ADDED_ELSEWHERE and not (docs_dir / target).exists():
            continue
        else:
            kept.append(entry)
    return kept


def on_config(config, **kwargs):
    mathjax_root()  # fail early, with the install line, when the docs extra is missing
    nav = _prune(config["nav"] or [], Path(config["docs_dir"]))
    for entry in nav:
        if isinstance(entry, dict) and ALGORITHMS_SECTION in entry:
            entry[ALGORITHMS_SECTION] = [{name: f"algorithms/{name}.md"} for name in registered_algorithms()]
    config["nav"] = nav
    return config


def on_files(files, config, **kwargs):
    for name, cls in registered_algorithms().items():
        files.append(File.generated(config, f"algorithms/{name}.md", content=algorithm_page(name, cls)))
    files.append(File.generated(config, "configuration.md", content=configuration_page()))
    files.append(File.generated(config, "cli.md", content=cli_page()))
    for file in mathjax_files(config):
        files.append(file)
    return files
