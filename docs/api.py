"""``make docs``: the API reference, generated from the docstrings with pdoc, into ``docs/api/``.

Every module of ``shardwriter``, ``loaders`` and ``ai8x_shards`` gets a page (the
benchmark, ``ai8x_shards.benchmarks``, is left out). Warnings are errors: a module that
fails to import, or a docstring pdoc cannot place, stops the build. Usage::

    python docs/api.py [OUT]        # default docs/api (not committed; CI builds it)
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import shutil
import sys
import warnings
from pathlib import Path

PACKAGES = ("shardwriter", "loaders", "ai8x_shards")
SKIP = ("ai8x_shards.benchmarks", "ai8x_shards.__main__")


def modules() -> list[str]:
    """Every module of PACKAGES, each once, packages before their modules."""
    out: list[str] = []
    for top in PACKAGES:
        pkg = importlib.import_module(top)
        out.append(top)
        out += [m.name for m in pkgutil.walk_packages(pkg.__path__, top + ".") if not m.name.startswith(SKIP)]
    return out


_ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc|obj):`~?([^`]+)`")


def main(argv: list[str]) -> int:
    import pdoc
    import pdoc.docstrings
    import pdoc.extract

    convert = pdoc.docstrings.convert

    def sphinx_roles(docstring: str, docformat: str, source_file: Path | None) -> str:
        # :class:`~a.b.C` -> `a.b.C`: a code span pdoc links to the page of a.b.C
        return convert(_ROLE.sub(r"`\1`", docstring), docformat, source_file)

    pdoc.docstrings.convert = sphinx_roles  # pdoc keeps Sphinx roles' "~" otherwise

    out = Path(argv[0] if argv else Path(__file__).parent / "api")
    warnings.simplefilter("error")
    specs: list[str] = []
    walked: set[str] = set()
    for name in modules():  # pdoc walks a package's public submodules itself: name each module once
        if name not in walked:
            specs.append(name)
            walked.update(pdoc.extract.walk_specs([name]))
    pdoc.render.configure(docformat="restructuredtext", show_source=False, footer_text="ai8x-shards API reference")
    shutil.rmtree(out, ignore_errors=True)
    pdoc.pdoc(*specs, output_directory=out)
    pages = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.html"))
    print(f"wrote {len(pages)} pages to {out}/ (open {out / 'index.html'})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
