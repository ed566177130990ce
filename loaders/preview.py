"""``ai8x-shards preview``: a PNG grid of samples as the model sees them, with a legend.

Inputs are unfolded back to images (fold ratio from the manifest). The samples are drawn
across the whole split with a seeded generator (``seed``), or picked by ``indices``;
``classes`` narrows the draw to samples of those classes (class targets) or the tint to
those classes (masks).

Colours and names come from the manifest (:func:`legend`): class names are the manifest's
string classes, or, for integer classes, what the writer recorded (AISegment's
``preprocessing.label``: 1 is the background, 0 the portrait). A mask tints every class
in its own colour except the background, so a portrait preview tints the person and
leaves the background as it is; a class target frames its tile in the class's colour.
The legend under the grid names every class drawn, with its colour, or "not tinted".
"""

from __future__ import annotations

import colorsys
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from PIL.PngImagePlugin import PngInfo

from shardwriter import format as fmt
from shardwriter.errors import SettingsError

from .mapstyle import ShardDataset
from .transforms import unfold

__all__ = ["ALPHA", "ClassStyle", "draw", "legend", "legend_box", "pick_indices", "preview", "shown_indices", "tile"]

#: How strongly a mask class tints its pixels (0: not at all, 1: flat colour).
ALPHA = 0.45
#: Tiles narrower than this are scaled up (nearest neighbour) so small inputs stay visible.
MIN_TILE = 160
#: Class names that mean "nothing here": such a class is not tinted in mask previews.
BACKGROUND_NAMES = frozenset({"background", "bg", "void", "unlabeled", "unlabelled", "none", "nothing", "empty"})
#: Names for integer classes of datasets the writer knows, by manifest name prefix.
KNOWN_CLASS_NAMES: dict[str, dict[int, str]] = {
    "AISegment": {0: "portrait", 1: "background"},
}
_FIXED = [(255, 40, 40), (40, 200, 40), (40, 90, 255), (255, 200, 0), (200, 0, 255), (0, 200, 200), (255, 120, 0), (120, 60, 0)]
_LABEL_NAME = re.compile(r"(?<![\w.])(\d+)\s*\(([A-Za-z][\w -]*)\)")
_BORDER = 4
_GAP = 8
_CAPTION = 24
_LINE = 18
_SWATCH = 12


def colour(k: int) -> tuple[int, int, int]:
    """The tint of the ``k``-th class: a fixed list, then evenly spread hues."""
    if k < len(_FIXED):
        return _FIXED[k]
    h = (k * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.85, 0.95)
    return (round(r * 255), round(g * 255), round(b * 255))


@dataclass(frozen=True)
class ClassStyle:
    """How one class is drawn: its position in ``classes``, value, name and tint (None: not tinted)."""

    index: int
    value: Any
    name: str
    tint: tuple[int, int, int] | None

    @property
    def label(self) -> str:
        value = str(self.value)
        return value if self.name == value else f"{value} {self.name}"


def _names(m: fmt.Manifest) -> dict[int, str]:
    """Names of the classes (by position) the manifest gives or implies."""
    classes = list(m.classes)
    names = {k: str(c) for k, c in enumerate(classes)}
    if not all(isinstance(c, int) for c in classes):
        return names
    for prefix, known in KNOWN_CLASS_NAMES.items():
        if m.name.startswith(prefix):
            return {k: known.get(c, str(c)) for k, c in enumerate(classes)}
    text = str(m.preprocessing.get("label", ""))
    said = {int(v): n.strip() for v, n in _LABEL_NAME.findall(text)}
    return {k: said.get(c, str(c)) for k, c in enumerate(classes)}


def legend(m: fmt.Manifest, only: Sequence[int] | None = None) -> list[ClassStyle]:
    """Every class of the manifest as drawn: its name and tint.

    The tint is None (not tinted) for a mask's background class, or, when ``only`` (class
    positions) is given, for every class not in it: an explicit choice overrides the rule.
    """
    names = _names(m)
    out = []
    for k, value in enumerate(m.classes):
        name = names[k]
        if only is not None:
            tinted = k in only
        else:
            tinted = not (m.target.kind == "mask" and name.lower() in BACKGROUND_NAMES)
        out.append(ClassStyle(k, value, name, colour(k) if tinted else None))
    return out


def tile(x: np.ndarray, fold_ratio: int, mask: np.ndarray | None = None,
         styles: Sequence[ClassStyle] | None = None) -> Image.Image:
    """One sample (uint8, model layout) as an RGB image, ``mask`` classes tinted per ``styles``.

    Without ``styles``, every class of the mask above 0 is tinted in its own colour.
    """
    img = unfold(x, fold_ratio) if x.ndim == 3 else x[None]
    if img.ndim == 2:
        img = img[None]
    if img.shape[0] not in (1, 3):
        img = img[:1]
    rgb = np.repeat(img, 3, axis=0) if img.shape[0] == 1 else img
    rgb = rgb.transpose(1, 2, 0).astype(np.float32)
    if mask is not None and mask.shape == rgb.shape[:2]:
        k = int(mask.max(initial=0)) + 1
        tints = [None] + [colour(c) for c in range(1, k)] if styles is None else [s.tint for s in styles]
        table = np.zeros((max(k, len(tints)), 3), np.float32)
        alpha = np.zeros(len(table), np.float32)
        for c, t in enumerate(tints):
            if t is not None:
                table[c], alpha[c] = t, ALPHA
        m = np.minimum(mask, len(table) - 1)
        a = alpha[m][..., None]
        rgb = rgb * (1 - a) + table[m] * a
    return Image.fromarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8))


def _class_positions(ds: ShardDataset, classes: Sequence[str | int]) -> list[int]:
    """Positions in ``ds.classes`` of the classes given by value, name or position."""
    styles = legend(ds.manifest)
    out = []
    for c in classes:
        want = str(c).strip()
        hit = next((s.index for s in styles if want in (str(s.value), s.name)), None)
        if hit is None and want.isdigit() and int(want) < len(styles):
            hit = int(want)
        if hit is None:
            known = ", ".join(s.label for s in styles[:20])
            raise SettingsError(f"{ds.location}: no class {want!r} (classes: {known}{' ...' if len(styles) > 20 else ''})")
        out.append(hit)
    return out


def pick_indices(ds: ShardDataset, n: int = 8, *, seed: int = 0, classes: Sequence[str | int] | None = None,
                 indices: Sequence[int] | None = None) -> list[int]:
    """Which samples a preview draws: ``indices`` as given, else ``n`` drawn across the split.

    The draw is a seeded random choice without repeats over the whole split (sorted), so
    a preview shows the split rather than its first shard; with class targets,
    ``classes`` keeps the draw to samples of those classes.
    """
    total = len(ds)
    if indices is not None:
        bad = [i for i in indices if not -total <= i < total]
        if bad:
            raise SettingsError(f"{ds.location}: split {ds.split} has {total} samples; no index {bad[0]}")
        return [i % total for i in indices]
    pool = np.arange(total)
    if classes and ds.target_kind == "class":
        wanted = _class_positions(ds, classes)
        pool = pool[np.isin(ds.index.label[:total], wanted)]
    if n < 1:
        raise SettingsError(f"preview: n must be at least 1, not {n}")
    if len(pool) == 0:
        what = f" of class {', '.join(map(str, classes))}" if classes else ""
        raise SettingsError(f"{ds.location}: split {ds.split} has no samples{what}")
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(pool, size=min(n, len(pool)), replace=False))


def draw(ds: ShardDataset, indices: Sequence[int], classes: Sequence[str | int] | None = None,
         columns: int = 4) -> Image.Image:
    """The preview image of samples ``indices`` of ``ds`` (a uint8 :class:`ShardDataset`), legend included."""
    only = _class_positions(ds, classes) if classes and ds.target_kind == "mask" else None
    styles = legend(ds.manifest, only)
    r = ds.manifest.fold_ratio
    split = ds.split
    tiles, captions, seen = [], [], set()
    for i in indices:
        x, y = ds[i]
        caption = f"{split}[{i}]"
        if ds.target_kind == "mask":
            mask = y.numpy().astype(np.int64)
            seen.update(int(c) for c in np.unique(mask) if c < len(styles))
            t = tile(x.numpy(), r, mask, styles)
        else:
            t = tile(x.numpy(), r)
            if ds.target_kind == "regression":
                values = y.reshape(-1).tolist()
                caption += " y=" + ", ".join(f"{v:.3g}" for v in values[:3]) + (" ..." if len(values) > 3 else "")
        if t.width < MIN_TILE:
            t = t.resize((MIN_TILE, round(MIN_TILE * t.height / t.width)), Image.NEAREST)
        if ds.target_kind == "class":
            s = styles[int(y)]
            seen.add(s.index)
            framed = Image.new("RGB", (t.width + 2 * _BORDER, t.height + 2 * _BORDER), s.tint or (0, 0, 0))
            framed.paste(t, (_BORDER, _BORDER))
            t = framed
            caption += f" class {s.label}"
        tiles.append(t)
        captions.append(caption)
    if not tiles:
        raise SettingsError(f"{ds.location}: nothing to preview")
    shown = [s for s in styles if s.index in seen]
    cols = max(1, min(len(tiles), columns))
    rows = (len(tiles) + cols - 1) // cols
    w, h = max(t.width for t in tiles), max(t.height for t in tiles)
    legend_h = (_GAP + _LINE * len(shown) + _GAP) if shown else 0
    grid = Image.new("RGB", (max(cols * (w + _GAP) + _GAP, 240), rows * (h + _CAPTION) + _GAP + legend_h), (255, 255, 255))
    pen = ImageDraw.Draw(grid)
    for k, (t, cap) in enumerate(zip(tiles, captions)):
        x0, y0 = _GAP + (k % cols) * (w + _GAP), _GAP + (k // cols) * (h + _CAPTION)
        grid.paste(t, (x0, y0))
        pen.text((x0, y0 + t.height + 4), cap, fill=(0, 0, 0))
    top = rows * (h + _CAPTION) + _GAP
    for j, s in enumerate(shown):
        y0 = top + j * _LINE
        box = (_GAP, y0 + 2, _GAP + _SWATCH, y0 + 2 + _SWATCH)
        if s.tint is None:
            pen.rectangle(box, outline=(0, 0, 0), fill=(255, 255, 255))
        else:
            pen.rectangle(box, fill=s.tint)
        what = "not tinted" if s.tint is None else ("frame" if ds.target_kind == "class" else "tint")
        pen.text((_GAP + _SWATCH + 8, y0 + 2), f"{s.label} ({what})", fill=(0, 0, 0))
    return grid


def legend_box(i: int, rows: int, tile_height: int) -> tuple[int, int, int, int]:
    """Where :func:`draw` puts the colour swatch of legend line ``i`` (for tests and tools)."""
    y0 = rows * (tile_height + _CAPTION) + _GAP + i * _LINE
    return (_GAP, y0 + 2, _GAP + _SWATCH, y0 + 2 + _SWATCH)


def preview(
    location: str | os.PathLike[str],
    split: str = "test",
    n: int = 8,
    out: str | os.PathLike[str] = "preview.png",
    *,
    seed: int = 0,
    classes: Sequence[str | int] | None = None,
    indices: Sequence[int] | None = None,
    columns: int = 4,
) -> Path:
    """Write a grid of ``split``'s samples (see :func:`pick_indices`) with a legend to ``out``; returns its path.

    The PNG records what it shows in a text chunk ``ai8x-shards`` (location, split, indices).
    """
    ds = ShardDataset(location, split, output="uint8")
    if len(ds) == 0:
        raise SettingsError(f"{location}: split {split} is empty")
    picked = pick_indices(ds, n, seed=seed, classes=classes, indices=indices)
    info = PngInfo()
    info.add_text("ai8x-shards", json.dumps({"location": str(location), "split": split, "indices": picked}))
    out = Path(out)
    draw(ds, picked, classes, columns).save(out, pnginfo=info)
    return out


def shown_indices(path: str | os.PathLike[str]) -> list[int]:
    """The sample indices a preview PNG written by :func:`preview` shows."""
    with Image.open(path) as im:
        return list(json.loads(im.text["ai8x-shards"])["indices"])
