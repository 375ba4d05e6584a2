"""Turn a :class:`RobustnessResult` into a report a person can read.

:func:`write_report` writes, into one folder, ``index.html`` (rendered from the
Jinja2 templates in ``templates/``; self-contained: inline CSS, the plots embedded
as base64 PNG, no script and no external URL, so it opens offline), ``summary.md`` (the same sections in GitHub Markdown,
the plots referenced by file name), the plots as PNG files, and the raw
numbers as ``distances.csv`` and ``distinct_pairs.csv``.
:func:`terminal_summary` returns the few lines the CLI prints at the end.

Everything here is presentation: the statistics come from the result's own
methods (threshold, match rates, per-edit statistics, curves). Output is
deterministic: no timestamp, fixed number formats, and PNG bytes that do not
depend on the clock or the matplotlib version string.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import NeuralHashError, install_hint
from ..files.fileio import atomic_write
from .results import MISSING, HasherInfo, RobustnessResult

__all__ = ["terminal_summary", "write_report"]

INSTALL_HINT = install_hint("robustness")

# One colour per hash, in the order of result.hashers, the same in every plot.
PALETTE = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f")

PLOT_DPI = 100
PLOT_FILES = {
    "strength": "distance_vs_strength.png",
    "distinct": "distinct_distances.png",
    "curve": "match_rate.png",
}

SYNTHETIC_WARNING = (
    "This report used the demo model, whose weights are synthetic (random): "
    "the NeuralHash rows carry no meaning and say nothing about Apple's NeuralHash. "
    "Run {command} with Apple's model files to measure the real model."
)
RERUN_COMMAND = "neuralhash robustness --model SRC IMAGES... --out DIR"

NO_THRESHOLD = "n/a (needs two or more images)"
NO_SEPARATION = "none (two distinct images have equal hashes)"


# -- per-hash numbers, computed once ------------------------------------------------------------

@dataclass(frozen=True)
class HashSummary:
    """What the report shows of one hash: its baseline, threshold and per-edit statistics."""

    info: HasherInfo
    threshold: int | None      # RobustnessResult.threshold
    distinct: np.ndarray       # distinct-pair distances in bits
    copies: np.ndarray         # every measured edited-copy distance in bits (MISSING left out)
    matched: int               # copies within the threshold
    stats: dict[str, np.ndarray]  # RobustnessResult.edit_stats
    rates: np.ndarray          # per edit, the match rate at the threshold

    @property
    def bits(self) -> int:
        return self.info.bits

    @property
    def match_rate(self) -> float:
        """The fraction of all measured edited copies matched at the threshold (NaN if none)."""
        if self.threshold is None or self.copies.size == 0:
            return math.nan
        return self.matched / self.copies.size


def summarise(result: RobustnessResult) -> list[HashSummary]:
    """One :class:`HashSummary` per hash, in the result's order."""
    out = []
    for info in result.hashers:
        d = np.asarray(result.distances[info.name])
        copies = d[d != MISSING].astype(np.int64)
        threshold = result.threshold(info.name)
        # MISSING is -1, so count only measured copies: threshold -1 must match nothing.
        matched = int((copies <= threshold).sum()) if threshold is not None else 0
        out.append(HashSummary(
            info=info,
            threshold=threshold,
            distinct=np.asarray(result.distinct[info.name], dtype=np.int64),
            copies=copies,
            matched=matched,
            stats=result.edit_stats(info.name),
            rates=result.match_rates(info.name),
        ))
    return out


def families(result: RobustnessResult) -> list[tuple[str, list[int]]]:
    """(family, edit indices) in order of first appearance; a family split in two is shown as one."""
    groups: dict[str, list[int]] = {}
    for j, edit in enumerate(result.edits):
        groups.setdefault(edit.family, []).append(j)
    return list(groups.items())


# -- number formatting: fixed precision everywhere, so the text is deterministic ----------------

DASH = "–"


def fmt_bits(x: float) -> str:
    """A distance in bits: an integer as is, anything else to one decimal."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return DASH
    x = float(x)
    return str(int(x)) if x.is_integer() else f"{x:.1f}"


def fmt_mean(x: float) -> str:
    """A mean distance in bits, always one decimal so a column lines up."""
    return DASH if math.isnan(x) else f"{x:.1f}"


def fmt_frac(x: float, bits: int, compact: bool = False) -> str:
    """A distance as a fraction of the hash length; compact drops the leading zero (".417")."""
    if x is None or math.isnan(float(x)):
        return DASH
    text = f"{float(x) / bits:.3f}"
    return text[1:] if compact and text.startswith("0.") else text


def fmt_rate(x: float) -> str:
    """A match rate (a fraction of copies or pairs) as a percentage."""
    return DASH if math.isnan(x) else f"{100 * x:.1f}%"


def fmt_threshold(t: int | None) -> str:
    if t is None:
        return NO_THRESHOLD
    if t < 0:
        return NO_SEPARATION
    return str(t)


def fmt_strength(x: float) -> str:
    return f"{float(x):g}"


def count_range(counts: Sequence[int]) -> str:
    """How many copies were measured, over the hashes: "3", or "2–3" when the hashes differ."""
    lo, hi = int(min(counts)), int(max(counts))
    return str(lo) if lo == hi else f"{lo}{DASH}{hi}"


# -- escaping -----------------------------------------------------------------------------------

_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*[]|"})


def md(text: Any) -> str:
    """Markdown text from the input: HTML-escaped (GitHub renders raw HTML), Markdown syntax
    and table pipes backslash-escaped, newlines flattened so a cell stays one line."""
    flat = " ".join(str(text).split())
    return html.escape(flat, quote=False).translate(_MD_SPECIAL)


# -- the "at a glance" selection ----------------------------------------------------------------

@dataclass(frozen=True)
class KeyEdit:
    """A published measurement of Apple's model, and how to find the same edit in a result."""

    name: str
    families: tuple[str, ...]  # family names that may hold it, first match wins
    strength: float | None     # None: the family's edit whose strength is nearest ``near``
    published: str
    near: float = 0.0


KEY_EDITS = (
    KeyEdit("rescale 0.5x", ("downscale", "rescale", "resize", "scale"), 0.5, "0"),
    KeyEdit("rescale 1.5x", ("upscale", "rescale", "resize", "scale"), 1.5, "0"),
    KeyEdit("rescale 3x", ("upscale", "rescale", "resize", "scale"), 3.0, "0"),
    KeyEdit("JPEG quality 35", ("jpeg",), 35.0, "0"),
    KeyEdit("contrast x0.6", ("contrast",), 0.6, "0"),
    KeyEdit("20-pixel crop", ("crop-left", "crop-right", "crop-top", "crop-bottom", "crop-border",
                              "crop-centre", "crop-center", "crop"), None, "0", near=0.05),
    KeyEdit("brightness x1.45", ("brightness",), 1.45, "5"),
    KeyEdit("horizontal flip", ("hflip", "flip-horizontal", "mirror"), None, "27"),
)


def find_key_edit(result: RobustnessResult, key: KeyEdit) -> int | None:
    """The index of the edit of ``result`` that stands for ``key``, or None when absent."""
    for family in key.families:
        idx = [j for j, e in enumerate(result.edits) if e.family == family]
        if not idx:
            continue
        if key.strength is not None:
            for j in idx:
                if math.isclose(result.edits[j].strength, key.strength, rel_tol=1e-6, abs_tol=1e-9):
                    return j
            continue
        # No exact match: a flip has one edit; a 20-pixel crop is 5.6% of a 360-pixel side, so the
        # crop nearest 5% stands for it.
        return min(idx, key=lambda j: abs(result.edits[j].strength - key.near))
    return None


GLANCE_HEADER = ("Measurement", "Edit in this run", "Median", "Mean", "Range", "Published (Apple's model)")


def glance_intro(result: RobustnessResult) -> str:
    text = ("NeuralHash distances in bits (out of 96) for a few edits with published measurements of "
            "Apple's model, next to the published values.")
    if result.synthetic:
        return text + " The synthetic demo model's values are not comparable."
    return text + " The published values came from other images, so expect agreement in kind, not to the bit."


def glance_rows(result: RobustnessResult, summaries: list[HashSummary]) -> list[tuple[str, ...]]:
    """Rows (measurement, edit here, median, mean, range, published) for NeuralHash; [] without it."""
    nh = next((s for s in summaries if s.info.name == "NeuralHash"), None)
    if nh is None:
        return []
    d = np.asarray(result.distances["NeuralHash"])
    rows = []
    for key in KEY_EDITS:
        j = find_key_edit(result, key)
        if j is None:
            continue
        col = d[:, j][d[:, j] != MISSING]
        span = f"{col.min()}{DASH}{col.max()}" if col.size else DASH
        rows.append((key.name, result.edits[j].label, fmt_bits(nh.stats["median"][j]),
                     fmt_mean(nh.stats["mean"][j]), span, key.published))
    if nh.distinct.size:
        rows.append(("unrelated images", "distinct pairs", fmt_bits(float(np.median(nh.distinct))),
                     fmt_mean(float(nh.distinct.mean())), f"{nh.distinct.min()}{DASH}{nh.distinct.max()}",
                     f"41{DASH}53"))
    return rows


# -- plots ------------------------------------------------------------------------------------

def _figure_class() -> Any:
    """matplotlib's Figure, or a NeuralHashError saying how to install matplotlib.

    Imported here, not at module level: the rest of the package works without matplotlib.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401  (png_bytes needs it)
        from matplotlib.figure import Figure
    except ImportError:
        raise NeuralHashError(f"the robustness report needs matplotlib: {INSTALL_HINT}") from None
    return Figure


def png_bytes(fig: Any) -> bytes:
    """Render a Figure to PNG bytes with the Agg canvas (no pyplot, no global state).

    Software metadata off: the bytes then depend on the drawing only, not on the version.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=PLOT_DPI, metadata={"Software": None})
    return buf.getvalue()


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _style(ax: Any) -> None:
    ax.grid(True, color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    ax.tick_params(labelsize=8)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _fraction_limit(summaries: list[HashSummary]) -> float:
    """The right end of a distance-fraction axis: the data plus a margin, at least 0.5."""
    top = 0.5
    for s in summaries:
        for arr in (s.distinct, s.copies):
            if arr.size:
                top = max(top, float(arr.max()) / s.bits)
    return min(1.0, top + 0.05)


def plot_strength(result: RobustnessResult, summaries: list[HashSummary]) -> bytes:
    """Mean distance (fraction of length) against edit strength: one small panel per family."""
    Figure = _figure_class()
    from matplotlib.lines import Line2D

    groups = families(result)
    ncols = max(1, min(4, len(groups)))
    nrows = max(1, math.ceil(len(groups) / ncols))
    fig = Figure(figsize=(3.1 * ncols, 2.25 * nrows + 0.7), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    ymax = 0.5
    for s in summaries:
        with np.errstate(invalid="ignore"):
            peak = np.nanmax(s.stats["mean"]) if np.any(~np.isnan(s.stats["mean"])) else 0.0
        ymax = max(ymax, float(peak) / s.bits)
    for k, (family, idx) in enumerate(groups):
        ax = axes[k // ncols][k % ncols]
        _style(ax)
        edits = [result.edits[j] for j in idx]
        order = sorted(range(len(idx)), key=lambda m: edits[m].strength)
        xs = np.array([edits[m].strength for m in order], dtype=float)
        for h, s in enumerate(summaries):
            ys = np.array([s.stats["mean"][idx[m]] for m in order]) / s.bits
            if s.threshold is not None and s.threshold >= 0:
                ax.axhline(s.threshold / s.bits, color=colour(h), linewidth=0.8, linestyle=":", alpha=0.7)
            if len(idx) > 1:
                ax.plot(xs, ys, "o-", color=colour(h), markersize=3.5, linewidth=1.4)
            else:
                # One edit (a flip): the hashes side by side as points, the label as the axis name.
                ax.plot([h], ys, "o", color=colour(h), markersize=6)
        if len(idx) > 1:
            ax.set_xlabel(edits[0].unit, fontsize=8)
        else:
            ax.set_xticks([])
            ax.set_xlim(-0.8, len(summaries) - 0.2)
            ax.set_xlabel(edits[0].label, fontsize=8)
        ax.set_title(family, fontsize=9.5, fontweight="bold")
        if k % ncols == 0:
            ax.set_ylabel("mean distance / length", fontsize=8)
    for k in range(len(groups), nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    axes[0][0].set_ylim(0, min(1.0, ymax * 1.08))
    handles = [Line2D([], [], color=colour(h), marker="o", markersize=4, label=f"{s.info.name} ({s.bits} bits)")
               for h, s in enumerate(summaries)]
    handles.append(Line2D([], [], color="#555555", linestyle=":", label="threshold (dotted)"))
    fig.legend(handles=handles, loc="outside upper center", ncol=len(handles), fontsize=9, frameon=False)
    return png_bytes(fig)


def plot_distinct(summaries: list[HashSummary]) -> bytes:
    """Per hash, histograms of distinct-pair distances and of edited-copy distances, with the threshold."""
    Figure = _figure_class()
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    n = max(1, len(summaries))
    ncols = 1 if n == 1 else 2
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(5.6 * ncols, 3.1 * nrows + 0.5), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    xmax = _fraction_limit(summaries)
    for h, s in enumerate(summaries):
        ax = axes[h // ncols][h % ncols]
        _style(ax)
        # Integer-bit bins, grouped for long hashes so PDQ's 256 bins are not mostly empty.
        step = max(1, round(s.bits / 64))
        edges = (np.arange(0, s.bits + step + 1, step) - 0.5) / s.bits
        if s.copies.size:
            ax.hist(s.copies / s.bits, bins=edges, weights=np.full(s.copies.size, 1 / s.copies.size),
                    histtype="stepfilled", color=colour(h), alpha=0.25)
        if s.distinct.size:
            ax.hist(s.distinct / s.bits, bins=edges, weights=np.full(s.distinct.size, 1 / s.distinct.size),
                    histtype="step", color=colour(h), linewidth=1.8)
        else:
            ax.text(0.5, 0.5, "no distinct pairs (one image)", transform=ax.transAxes,
                    ha="center", va="center", fontsize=9, color="#777777")
        if s.threshold is not None and s.threshold >= 0:
            ax.axvline(s.threshold / s.bits, color="#333333", linestyle="--", linewidth=1.0)
            thr = f"threshold {s.threshold} ({fmt_frac(s.threshold, s.bits)})"
        else:
            thr = f"threshold {fmt_threshold(s.threshold).split(' (')[0]}"
        ax.set_xlim(-0.01, xmax)  # a little left of 0: the bin of identical hashes shows whole
        ax.set_title(f"{s.info.name} ({s.bits} bits), {thr}", fontsize=10, fontweight="bold")
        ax.set_xlabel("distance / hash length", fontsize=8)
        ax.set_ylabel("fraction of pairs", fontsize=8)
    for k in range(len(summaries), nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    handles = [Patch(facecolor="#999999", alpha=0.4, label="original vs edited copy"),
               Patch(facecolor="none", edgecolor="#555555", linewidth=1.8, label="distinct images"),
               Line2D([], [], color="#333333", linestyle="--", label="threshold")]
    fig.legend(handles=handles, loc="outside upper center", ncol=3, fontsize=9, frameon=False)
    return png_bytes(fig)


def plot_curve(result: RobustnessResult, summaries: list[HashSummary]) -> bytes:
    """Against the threshold: edited copies matched (solid), distinct pairs falsely matched (dashed)."""
    Figure = _figure_class()
    from matplotlib.lines import Line2D

    fig = Figure(figsize=(10.5, 5.0), layout="constrained")
    ax = fig.subplots()
    _style(ax)
    handles = []
    for h, s in enumerate(summaries):
        thresholds, copies, false = result.curve(s.info.name)
        x = thresholds / s.bits
        ax.plot(x, copies, color=colour(h), linewidth=1.8, drawstyle="steps-post")
        if not np.all(np.isnan(false)):
            ax.plot(x, false, color=colour(h), linewidth=1.4, linestyle="--", drawstyle="steps-post")
        if s.threshold is not None and s.threshold >= 0:
            ax.plot([s.threshold / s.bits], [copies[s.threshold]], "o", color=colour(h), markersize=6)
        handles.append(Line2D([], [], color=colour(h), linewidth=2, label=f"{s.info.name} ({s.bits} bits)"))
    handles += [
        Line2D([], [], color="#555555", linewidth=1.8, label="edited copies matched"),
        Line2D([], [], color="#555555", linewidth=1.4, linestyle="--", label="distinct pairs falsely matched"),
        Line2D([], [], color="#555555", marker="o", linestyle="", label="at the threshold"),
    ]
    ax.set_xlim(0, _fraction_limit(summaries))
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("threshold / hash length (a copy matches when distance ≤ threshold)", fontsize=9)
    ax.set_ylabel("fraction", fontsize=9)
    fig.legend(handles=handles, fontsize=8.5, frameon=False, loc="outside right upper")
    return png_bytes(fig)


def render_plots(result: RobustnessResult, summaries: list[HashSummary]) -> dict[str, bytes]:
    """File name -> PNG bytes of every plot."""
    return {
        PLOT_FILES["strength"]: plot_strength(result, summaries),
        PLOT_FILES["distinct"]: plot_distinct(summaries),
        PLOT_FILES["curve"]: plot_curve(result, summaries),
    }


PLOT_CAPTIONS = {
    PLOT_FILES["strength"]: (
        "Distance against edit strength",
        "Mean distance between each original and its edited copy, as a fraction of the hash length, "
        "one panel per family of edits; dotted lines are each hash's threshold."),
    PLOT_FILES["distinct"]: (
        "Distinct-pair distances",
        "Distances between pairs of different images (outline) and between originals and their edited "
        "copies (shaded), as a fraction of the hash length; the dashed line is the threshold."),
    PLOT_FILES["curve"]: (
        "Match rate against threshold",
        "For every threshold: the fraction of edited copies that still match their original (solid), "
        "and the fraction of distinct pairs that falsely match (dashed)."),
}


# -- tables, as rows of plain strings shared by HTML and Markdown --------------------------------

def facts(result: RobustnessResult) -> list[tuple[str, str]]:
    """(label, value) lines of the run."""
    return [
        ("Model", result.model),
        ("Model id", result.model_id[:12]),
        ("Images", str(len(result.images))),
        ("Edits", f"{len(result.edits)} in {len(families(result))} families"),
        ("Seed", str(result.seed)),
    ] + ([("Originals", f"shrunk to at most {result.max_side} px on the longer side before editing "
                        "(--max-side); their hashes are of the shrunk image")] if result.max_side else [])


THRESHOLD_HEADER = ("Hash", "Bits", "Distinct min", "Distinct median", "Distinct max", "Threshold",
                    "Edited copies matched")


def threshold_cells(s: HashSummary) -> list[tuple[str, str]]:
    """(bits, fraction) pairs of one thresholds-table row after the name and length; fraction '' if none."""
    def dist(x: float) -> tuple[str, str]:
        return (fmt_bits(x), fmt_frac(x, s.bits)) if s.distinct.size else (DASH, "")

    if s.distinct.size:
        lo, med, hi = float(s.distinct.min()), float(np.median(s.distinct)), float(s.distinct.max())
    else:
        lo = med = hi = math.nan
    t = s.threshold
    thr = (fmt_threshold(t), fmt_frac(t, s.bits) if t is not None and t >= 0 else "")
    matched = fmt_rate(s.match_rate)
    count = f"{s.matched} of {s.copies.size}" if s.threshold is not None else ""
    return [dist(lo), dist(med), dist(hi), thr, (matched, count)]


def edit_row_cells(s: HashSummary, j: int) -> tuple[str, str, str, float]:
    """(mean bits, mean fraction, max bits, match rate) of edit ``j`` for one hash."""
    mean = float(s.stats["mean"][j])
    return fmt_mean(mean), fmt_frac(mean, s.bits, compact=True), fmt_bits(float(s.stats["max"][j])), \
        float(s.rates[j])


def catalogue_rows(result: RobustnessResult) -> list[tuple[str, str, str, str, str]]:
    return [(e.label, e.family, fmt_strength(e.strength), e.unit, e.description) for e in result.edits]


FAILURE_HEADER = ("Image", "Edit", "Reason")


def failure_rows(result: RobustnessResult) -> list[tuple[str, str, str]]:
    return [(f.image, f.edit if f.edit is not None else "(the original)", f.reason) for f in result.failures]


def image_rows(result: RobustnessResult) -> list[tuple[str, str]]:
    rows = []
    for name, (w, h) in zip(result.images, result.sizes):
        rows.append((name, f"{w}×{h}" if w and h else "unreadable"))
    return rows


def measured_counts(summaries: list[HashSummary], j: int) -> str:
    return count_range([int(s.stats["count"][j]) for s in summaries]) if summaries else DASH


# -- HTML: templates/report.html, fed plain values (numbers already formatted) --------------------

def _environment() -> Any:
    """The Jinja2 environment of the report's templates (autoescaped), or a NeuralHashError saying
    how to install Jinja2. Imported here: the rest of the package works without it."""
    try:
        import jinja2
    except ImportError:
        raise NeuralHashError(f"the robustness report needs jinja2: {INSTALL_HINT}") from None
    return jinja2.Environment(loader=jinja2.PackageLoader("neuralhash.robustness", "templates"),
                              autoescape=True, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                              undefined=jinja2.StrictUndefined)


def rate_hue(rate: float) -> str | None:
    """A cell's hue from red (0%) to green (100%): the eye finds weak edits quickly (None: no colour)."""
    return None if math.isnan(rate) else f"{120 * rate:.0f}"


def _edits_context(result: RobustnessResult, summaries: list[HashSummary]) -> dict[str, Any]:
    hashes = [{"name": s.info.name, "bits": s.bits, "threshold": fmt_threshold(s.threshold), "colour": colour(h)}
              for h, s in enumerate(summaries)]
    groups = []
    for family, idx in families(result):
        rows = []
        for j in idx:
            cells = []
            for s in summaries:
                mean, frac, mx, rate = edit_row_cells(s, j)
                cells.append({"mean": mean, "frac": frac if mean != DASH else "", "max": mx,
                              "rate": fmt_rate(rate), "hue": rate_hue(rate)})
            rows.append({"label": result.edits[j].label, "count": measured_counts(summaries, j), "cells": cells})
        groups.append({"name": family, "unit": result.edits[idx[0]].unit, "rows": rows})
    return {"hashes": hashes, "families": groups, "columns": 2 + 3 * len(summaries)}


def render_html(result: RobustnessResult, summaries: list[HashSummary], plots: dict[str, bytes]) -> str:
    """The whole self-contained page, from ``templates/report.html``."""
    overall, names, per_edit = precision_rows(result)
    p = f"{100 * PRECISION:g}%"
    warning = SYNTHETIC_WARNING.split("{command}")
    context = {
        "synthetic": result.synthetic,
        "warning": (warning[0], warning[1]),
        "rerun_command": RERUN_COMMAND,
        "facts": facts(result),
        "hashers": result.hashers,
        "notes": result.notes,
        "glance": {"intro": glance_intro(result), "header": GLANCE_HEADER, "rows": glance_rows(result, summaries)},
        "thresholds": {"header": THRESHOLD_HEADER,
                       "rows": [{"name": s.info.name, "bits": s.bits, "cells": threshold_cells(s)} for s in summaries]},
        "precision": {"label": p, "intro": PRECISION_INTRO.format(p=p), "header": PRECISION_HEADER,
                      "overall": overall, "names": names, "per_edit": per_edit},
        "plots": [{"title": PLOT_CAPTIONS[name][0], "caption": PLOT_CAPTIONS[name][1],
                   "uri": "data:image/png;base64," + base64.b64encode(data).decode("ascii")}
                  for name, data in plots.items()],
        "edits": _edits_context(result, summaries),
        "images": image_rows(result),
        "failure_header": FAILURE_HEADER,
        "failures": failure_rows(result),
        "catalogue": catalogue_rows(result),
    }
    return _environment().get_template("report.html").render(context)


# -- recall at a fixed precision (perception's metric) ------------------------------------------

#: The precision of perception's published table, and its overall recalls there (42,394 images).
PRECISION = 0.9999
PUBLISHED = "perception's benchmark (42,394 images, 99.99% precision): pHash 82.0% overall recall, PDQ 77.2%"
PRECISION_HEADER = ("Hash", "Overall recall", "Threshold", "Precision", "Copies")
PRECISION_INTRO = (
    "Recall at {p} precision, as Thorn's perception benchmark computes it: a copy is a true match when it lies "
    "within the threshold of its own original and a false one when it lies within it of another original; the "
    "threshold is the largest at which precision stays at least {p}, chosen once over all edits (overall) and "
    "separately per edit (below). For comparison, " + PUBLISHED + ". With few images, precision is coarse.")


def _pct(x: float) -> str:
    return DASH if math.isnan(x) else f"{100 * x:.1f}%"


def precision_rows(result: RobustnessResult) -> tuple[list[tuple[str, ...]], list[str], list[list[str]]]:
    """(overall rows, hash names, per-edit rows) of the recall-at-precision tables; empty
    when the result has no nearest-other distances."""
    names = [h.name for h in result.hashers if h.name in result.nearest_other]
    overall, per_edit = [], [[e.label] for e in result.edits]
    for name in names:
        edits, total = result.recall_at_precision(name, PRECISION)
        overall.append((name, _pct(total.recall), DASH if total.threshold is None else str(total.threshold),
                        _pct(total.precision),
                        str(total.copies)))
        for row, r in zip(per_edit, edits):
            row.append(_pct(r.recall) + ("" if r.threshold is None else f" (≤ {r.threshold})"))
    return overall, names, per_edit if names else []


def md_precision(result: RobustnessResult) -> str:
    overall, names, per_edit = precision_rows(result)
    if not names:
        return ""
    p = f"{100 * PRECISION:g}%"
    return (f"## Recall at {p} precision\n\n{md(PRECISION_INTRO.format(p=p))}\n\n"
            + md_table(PRECISION_HEADER, overall, numeric=(1, 2, 3, 4)) + "\n\nPer edit (recall, threshold):\n\n"
            + md_table(["Edit"] + names, per_edit, numeric=range(1, len(names) + 1)))


# -- Markdown ---------------------------------------------------------------------------------

def md_table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    """A GitHub table; every cell escaped, ``numeric`` columns right-aligned."""
    align = ["---:" if i in numeric else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(md(h) for h in header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(md(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _pair(bits: str, frac: str) -> str:
    return f"{bits} ({frac})" if frac else bits


def md_header(result: RobustnessResult) -> str:
    parts = ["# NeuralHash robustness report", ""]
    if result.synthetic:
        warning = md(SYNTHETIC_WARNING).format(command=f"`{RERUN_COMMAND}`")
        parts += [f"> **Warning: synthetic model.** {warning}", ""]
    parts += [f"- **{k}:** {md(v)}" for k, v in facts(result)]
    parts += ["", "**Hashes compared**", ""]
    parts += [f"- **{md(h.name)}** ({h.bits} bits): {md(h.description)}" for h in result.hashers]
    if result.notes:
        parts += ["", "**Notes**", ""] + [f"- {md(n)}" for n in result.notes]
    return "\n".join(parts)


def md_glance(result: RobustnessResult, rows: list[tuple[str, ...]]) -> str:
    if not rows:
        return ""
    return (f"## NeuralHash at a glance\n\n{md(glance_intro(result))}\n\n"
            + md_table(GLANCE_HEADER, rows,
                       numeric=(2, 3, 4, 5)))


def md_thresholds(summaries: list[HashSummary]) -> str:
    rows = [[s.info.name, str(s.bits)] + [_pair(b, f) for b, f in threshold_cells(s)] for s in summaries]
    return ("## Thresholds\n\nA copy matches its original when their distance is at most the threshold. Each "
            "hash's threshold is the largest distance at which no two distinct images match: one less than "
            "the smallest distance between different images. Distances in bits (fraction of the hash "
            "length).\n\n" + md_table(THRESHOLD_HEADER, rows, numeric=range(1, 7)))


def md_plots(plots: dict[str, bytes]) -> str:
    parts = ["## Plots"]
    for name in plots:
        title, caption = PLOT_CAPTIONS[name]
        parts += ["", f"![{title}]({name})", "", f"*{title}.* {caption}"]
    return "\n".join(parts)


def md_edits(result: RobustnessResult, summaries: list[HashSummary]) -> str:
    header = ["Family", "Edit", "n"]
    for s in summaries:
        header += [f"{s.info.name} mean", f"{s.info.name} max", f"{s.info.name} match"]
    rows = []
    for family, idx in families(result):
        for k, j in enumerate(idx):
            row = [family if k == 0 else "", result.edits[j].label, measured_counts(summaries, j)]
            for s in summaries:
                mean, frac, mx, rate = edit_row_cells(s, j)
                row += [_pair(mean, frac if mean != DASH else ""), mx, fmt_rate(rate)]
            rows.append(row)
    thresholds = "; ".join(f"{s.info.name} {fmt_threshold(s.threshold)}" for s in summaries)
    return ("## Per edit\n\nFor each edit and hash: the mean distance between originals and their edited copies "
            "in bits (fraction of the hash length), the largest, and the share of copies still matched at "
            f"the hash's threshold ({md(thresholds)}). n: copies measured.\n\n"
            + md_table(header, rows, numeric=range(2, len(header))))


def md_images(result: RobustnessResult) -> str:
    return f"## Images\n\n{len(result.images)} original image(s).\n\n" + md_table(("Image", "Size"),
                                                                                  image_rows(result), (1,))


def md_failures(result: RobustnessResult) -> str:
    if not result.failures:
        return "## Failures\n\nNone: every image and edited copy was measured."
    return "## Failures\n\n" + md_table(FAILURE_HEADER, failure_rows(result))


def md_catalogue(result: RobustnessResult) -> str:
    return "## Edit catalogue\n\n" + md_table(("Edit", "Family", "Strength", "Unit", "Description"),
                                              catalogue_rows(result), numeric=(2,))


def render_markdown(result: RobustnessResult, summaries: list[HashSummary], plots: dict[str, bytes]) -> str:
    sections = [
        md_header(result),
        md_glance(result, glance_rows(result, summaries)),
        md_thresholds(summaries),
        md_precision(result),
        md_plots(plots),
        md_edits(result, summaries),
        md_images(result),
        md_failures(result),
        md_catalogue(result),
    ]
    return "\n\n".join(s for s in sections if s) + "\n"


# -- CSV --------------------------------------------------------------------------------------

def _csv(header: Sequence[str], rows: Any) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


def distances_csv(result: RobustnessResult) -> bytes:
    """One row per (image, edit, hash); an unmeasured distance is an empty cell."""
    def rows():
        for i, image in enumerate(result.images):
            for j, edit in enumerate(result.edits):
                for info in result.hashers:
                    d = int(result.distances[info.name][i, j])
                    dist, frac = ("", "") if d == MISSING else (str(d), f"{d / info.bits:.4f}")
                    yield (image, edit.label, edit.family, f"{float(edit.strength):.10g}", edit.unit,
                           info.name, info.bits, dist, frac)

    return _csv(("image", "edit", "family", "strength", "unit", "hash", "bits", "distance", "fraction"), rows())


def distinct_csv(result: RobustnessResult) -> bytes:
    """One row per (pair of distinct originals, hash)."""
    def rows():
        for k, (a, b) in enumerate(np.asarray(result.pairs).reshape(-1, 2)):
            for info in result.hashers:
                d = int(result.distinct[info.name][k])
                yield (result.images[a], result.images[b], info.name, info.bits, d, f"{d / info.bits:.4f}")

    return _csv(("image_a", "image_b", "hash", "bits", "distance", "fraction"), rows())


# -- entry points -----------------------------------------------------------------------------

def write_report(result: RobustnessResult, out_dir: str | os.PathLike) -> list[Path]:
    """Write the report into ``out_dir`` (created with its parents) and return the files written.

    Each file is written atomically; other files in ``out_dir`` are left alone.
    """
    _figure_class()  # fail before touching the disk when matplotlib or Jinja2 is missing
    _environment()
    out = Path(out_dir).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NeuralHashError(f"{out}: cannot create the report directory ({exc.strerror or exc})") from None
    if not out.is_dir():
        raise NeuralHashError(f"{out}: cannot create the report directory (not a directory)")

    summaries = summarise(result)
    plots = render_plots(result, summaries)
    files: dict[str, bytes] = {
        "summary.md": render_markdown(result, summaries, plots).encode("utf-8"),
        "distances.csv": distances_csv(result),
        "distinct_pairs.csv": distinct_csv(result),
        **plots,
    }
    # index.html last: once it exists, everything it describes does too.
    files["index.html"] = render_html(result, summaries, plots).encode("utf-8")
    for name, data in files.items():
        atomic_write(out / name, data)
    order = ["index.html", "summary.md", "distances.csv", "distinct_pairs.csv", *plots]
    return [out / name for name in order]


def terminal_summary(result: RobustnessResult, out_dir: str | os.PathLike | None = None) -> str:
    """A few plain-text lines (at most 100 columns) for the CLI to print when the run finishes."""
    width = 100
    summaries = summarise(result)
    lines = [f"Robustness: {_plural(len(result.images), 'image')} x {_plural(len(result.edits), 'edit')} x "
             f"{_plural(len(result.hashers), 'hash', 'hashes')}, seed {result.seed}",
             _model_line(result, width)]
    if result.synthetic:
        lines.append("WARNING: demo model with synthetic weights: the NeuralHash figures carry no meaning.")
        lines.append("Use --model SRC with Apple's model files to measure the real NeuralHash.")
    lines.append(f"{'hash':<12}{'bits':>5}  {'distinct pairs':<22}{'threshold':<16}edited copies matched")
    for s in summaries:
        if s.distinct.size:
            span = f"{s.distinct.min()}-{s.distinct.max()} (median {fmt_bits(float(np.median(s.distinct)))})"
        else:
            span = "none"
        t = s.threshold
        thr = f"{t} ({fmt_frac(t, s.bits)})" if t is not None and t >= 0 else fmt_threshold(t)
        lines.append(f"{s.info.name[:12]:<12}{s.bits:>5}  {span:<22}{thr:<16}{fmt_rate(s.match_rate)}"[:width])
    lines += _most_moved(result, summaries, width)
    if result.failures:
        lines.append(f"{_plural(len(result.failures), 'failure')}: listed in the report.")
    if out_dir is not None:
        lines.append(f"Report: {Path(out_dir) / 'index.html'}")
    return "\n".join(lines)


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def _model_line(result: RobustnessResult, width: int) -> str:
    """"Model: <description> (id <12 hex>)", the description shortened so the id always shows."""
    suffix = f" (id {result.model_id[:12]})"
    room = width - len("Model: ") - len(suffix)
    model = " ".join(result.model.split())
    if len(model) > room:
        model = model[:room - 3].rstrip() + "..."
    return f"Model: {model}{suffix}"


def _most_moved(result: RobustnessResult, summaries: list[HashSummary], width: int) -> list[str]:
    """The five edits that move NeuralHash (or the first hash) the most, by mean distance."""
    s = next((s for s in summaries if s.info.name == "NeuralHash"), summaries[0] if summaries else None)
    if s is None:
        return []
    means = s.stats["mean"]
    measured = [j for j in range(len(result.edits)) if not math.isnan(means[j])]
    top = sorted(measured, key=lambda j: (-means[j], j))[:5]
    if not top:
        return []
    # Packed by hand so that no "label (bits)" item is split across two lines.
    items = [f"{result.edits[j].label} ({means[j]:.1f})" for j in top]
    lines = [f"Edits moving {s.info.name} most (mean bits):"]
    for item in items:
        if len(lines[-1]) + 1 + len(item) + 1 > width:
            lines.append(" ")
        lines[-1] += f" {item},"
    lines[-1] = lines[-1].rstrip(",")
    return lines
