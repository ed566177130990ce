"""``ai8x-shards install-ai8x``: put a shim module into an ai8x-training checkout.

The shim (``datasets/ai8x_shards.py``) holds its entries as literals and imports this
package only inside the loader functions, so it imports cleanly even where ai8x-shards
is not installed (train.py imports every module in ``datasets/``; one failing import
kills every run). Installing is idempotent; ``--add NAME=DIR`` entries are merged with
those already installed; ``--augment [NAME=]module:name`` attaches an augmentation (see
:mod:`loaders.augment`) to an entry's train split, imported only when train.py loads that
entry; ``uninstall`` removes only a file this command wrote.
"""

from __future__ import annotations

import ast
import os
import pprint
from pathlib import Path
from typing import Any

from shardwriter.errors import InstallError, SettingsError

SHIM_NAME = "ai8x_shards.py"
MARKER = "# ai8x-shards shim v1"

DEFAULT_ENTRIES: list[dict[str, Any]] = [
    {"name": "AISegment_80_shards", "input": (3, 80, 80), "output": (0, 1), "sub": "AISegment_80"},
    {"name": "AISegment_352_shards", "input": (48, 88, 88), "output": (0, 1), "fold_ratio": 4, "sub": "AISegment_352"},
]

SHIM = '''"""ai8x-shards datasets for train.py, installed by `ai8x-shards install-ai8x`.

Do not edit: re-run that command to change the entries, or `--uninstall` to remove this
file. Importing this module never fails: if the ai8x-shards package is missing, using one
of these datasets raises an error that says how to install it.
"""
{marker}
ENTRIES = {entries}


def _make_loader(sub, augment=None):
    def loader(data, load_train=True, load_test=True):
        try:
            from loaders.ai8x import make_loader
        except ImportError as exc:
            raise RuntimeError(
                "this dataset needs the ai8x-shards package in this environment (it is not on PyPI): "
                "pip install -e /path/to/ai8x-shards-checkout, or "
                "pip install 'ai8x-shards @ git+<its repository URL>'; see its README, Install ("
                + str(exc) + ")"
            ) from exc
        return make_loader(sub, augment)(data, load_train, load_test)

    loader.__name__ = "shards_" + sub.replace("/", "_") + "_get_datasets"
    return loader


def collate(batch):
    """Whole batches from ShardDataset.__getitems__, without a second copy."""
    try:
        from loaders.mapstyle import collate as shards_collate
    except ImportError:
        from torch.utils.data import default_collate as shards_collate
    return shards_collate(batch)


datasets = []
for _entry in ENTRIES:
    _d = dict(_entry)
    _d["loader"] = _make_loader(_d.pop("sub"), _d.get("augment"))
    _d["collate"] = collate
    datasets.append(_d)
'''




def _shim_path(checkout: str | os.PathLike[str]) -> Path:
    root = Path(checkout)
    if not (root / "train.py").is_file() or not (root / "datasets").is_dir():
        raise InstallError(f"{root}: not an ai8x-training checkout (expected train.py and datasets/)")
    return root / "datasets" / SHIM_NAME


def installed_entries(checkout: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The entries of an installed shim (read as literals, never executed)."""
    path = _shim_path(checkout)
    if not path.exists():
        return []
    text = path.read_text()
    if MARKER not in text:
        raise InstallError(f"{path}: exists and was not written by ai8x-shards; move it away first")
    literal = text.split("ENTRIES = ", 1)[1].split("\n\n\n", 1)[0]
    return list(ast.literal_eval(literal))


def entry_from_folder(name: str, location: str, sub: str) -> dict[str, Any]:
    """A shim entry for the dataset at ``location``; its loader reads ``<--data>/sub``."""
    from .ai8x import entry

    d = entry(location, name, sub=sub)
    out = {k: d[k] for k in ("name", "input", "output", "weight", "regression", "fold_ratio") if k in d}
    out["sub"] = sub
    return out


def check_augment_spec(spec: str) -> str:
    """``module:name`` (checked for form only: the module lives beside train.py, not here)."""
    module, sep, name = spec.partition(":")
    idents = module.split(".") + name.split(".")
    if not sep or not all(p.isidentifier() for p in idents):
        raise SettingsError(f"--augment {spec!r}: expected [NAME=]module:name, e.g. my_augment:train_augment")
    return spec


def install(checkout: str | os.PathLike[str], add: list[dict[str, Any]] | None = None,
            augment: dict[str, str | None] | None = None) -> Path:
    """Write (or rewrite) the shim with the default entries, the installed ones and ``add``.

    ``augment`` maps entry names to ``"module:name"`` (or ``None`` to remove an entry's
    augmentation); every name must be an entry of the result.
    """
    path = _shim_path(checkout)
    merged: dict[str, dict[str, Any]] = {}
    for e in DEFAULT_ENTRIES + installed_entries(checkout) + list(add or []):
        if e["name"] in merged and "augment" in merged[e["name"]] and "augment" not in e:
            e = {**e, "augment": merged[e["name"]]["augment"]}  # re-adding an entry keeps its augmentation
        merged[e["name"]] = e
    for name, spec in (augment or {}).items():
        if name not in merged:
            raise SettingsError(f"--augment {name}=...: no entry {name!r} (entries: {', '.join(merged)})")
        entry = {k: v for k, v in merged[name].items() if k != "augment"}
        if spec is not None:
            entry["augment"] = check_augment_spec(spec)
        merged[name] = entry
    entries = pprint.pformat(list(merged.values()), width=100, sort_dicts=False)
    text = SHIM.format(marker=MARKER, entries=entries)
    if not path.exists() or path.read_text() != text:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return path


def uninstall(checkout: str | os.PathLike[str]) -> bool:
    """Remove the shim if this command wrote it; returns whether a file was removed."""
    path = _shim_path(checkout)
    if not path.exists():
        return False
    installed_entries(checkout)  # refuses a file that is not ours
    path.unlink()
    return True
