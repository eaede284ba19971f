"""The figures (crt/report/figures.py): `make figures PROFILE=smoke` draws all nine, every plotted axis labelled
(read from the matplotlib figure objects), the SMOKE banner clear of the titles, one colour per class."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from crt.report import figures as F
from tests.conftest import ROOT

NINE = ("per_class_f1_toy_extreme", "tsne_sources", "mmd_augmentation", "lambda_sensitivity", "learning_curves",
        "extreme_curve", "rho_sources", "efficiency", "augmentation_comparison")


def plotted_axes(fig: plt.Figure) -> list[plt.Axes]:
    """The axes that draw data (a colour bar or a table drawn with the axis off is not one)."""
    return [ax for ax in fig.axes if ax.axison]


def unlabelled(fig: plt.Figure) -> list[str]:
    return [f"axes {i} ({ax.get_title()!r}): " + ("no x label " if not ax.get_xlabel() else "") +
            ("no y label" if not ax.get_ylabel() else "")
            for i, ax in enumerate(plotted_axes(fig)) if not (ax.get_xlabel() and ax.get_ylabel())]


def texts(fig: plt.Figure) -> list[str]:
    out = [t.get_text() for t in fig.texts]
    for ax in fig.axes:
        out += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
        leg = ax.get_legend()
        out += [t.get_text() for t in leg.get_texts()] if leg else []
    for leg in fig.legends:
        out += [t.get_text() for t in leg.get_texts()]
    return out


def test_class_colours_are_fixed_and_distinct() -> None:
    assert F.class_color(3) == F.class_color(3)
    assert len({F.class_color(c) for c in range(10)}) == 10
    assert len({F.class_color(c) for c in range(200)}) > 150
    assert F.method_color("ecrt_mp") == F.method_color("ecrt_mp (3 seeds)") != F.method_color("erm")
    assert F.seeds_label(1) == "1 seed" and F.seeds_label(3) == "3 seeds"


def test_smoke_banner_sits_above_the_titles(tmp_path: Path) -> None:
    fig, axes = plt.subplots(1, 2)
    for ax in axes:
        ax.set_title("a long panel title that reaches the top")
    fig.suptitle("A suptitle")
    banner = F.stamp_smoke(fig, "SMOKE RUN (debug=tiny): not the paper's sizes")
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    box = banner.get_window_extent(r)
    for t in [fig._suptitle, *(ax.title for ax in axes)]:
        assert not box.overlaps(t.get_window_extent(r)), t.get_text()
    plt.close(fig)


def test_augmentation_comparison_needs_no_runs(tmp_path: Path) -> None:
    F.CAPTURE = {}
    try:
        paths = F.augmentation_comparison(tmp_path, sizes=(10,), repeats=2, n_aug=100)
        fig = F.CAPTURE["augmentation_comparison"]
    finally:
        F.CAPTURE = None
    assert {p.suffix for p in paths} == {".png", ".pdf", ".csv"}
    assert not unlabelled(fig)
    legends = [t for t in texts(fig) if t.startswith("MMD² = ")]
    assert len(legends) == 5  # the real samples and the four schemes
    plt.close("all")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_make_figures_smoke_draws_nine_labelled_figures(tmp_path: Path) -> None:
    """`make figures PROFILE=smoke`, then the same figures drawn again in-process and read from the objects."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV",)}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    data_dir = os.environ.get("CRT_DATA_DIR") or str(ROOT.parent / "shared" / "data")
    cmd = ["make", "figures", "PROFILE=smoke", f"PY={sys.executable}", f"OUTPUT_DIR={tmp_path}",
           f"CRT_DATA_DIR={data_dir}"]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500, check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for name in NINE:
        for ext in ("png", "pdf"):
            f = tmp_path / "figures" / f"{name}.{ext}"
            assert f.exists() and f.stat().st_size > 1000, f
    assert (tmp_path / "figures" / "efficiency_table.md").exists()

    F.CAPTURE = {}
    try:
        F.make_all(tmp_path, smoke={"debug": "tiny"}, fig_dir=tmp_path / "again")
        figs = dict(F.CAPTURE)
    finally:
        F.CAPTURE = None
    assert set(NINE) <= set(figs), sorted(set(NINE) - set(figs))
    bad = {name: unlabelled(fig) for name, fig in figs.items() if unlabelled(fig)}
    assert not bad, bad
    for name, fig in figs.items():
        all_text = " ".join(texts(fig))
        assert "(1 seeds)" not in all_text, name
        assert any(t.get_text().startswith("SMOKE RUN") for t in fig.texts), name
        for ax in plotted_axes(fig):
            assert "[smoke]" not in ax.get_title(), name
    lc = figs["learning_curves"]
    for ax in plotted_axes(lc):
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert all(float(t).is_integer() for t in ticks), ticks
    assert any("nats" in ax.get_ylabel() for ax in plotted_axes(figs["extreme_curve"]))
    # tsne_sources shows every class of its run, each in its fixed colour
    tsne = plotted_axes(figs["tsne_sources"])[0]
    assert len(tsne.collections) == 7
    assert [tuple(c.get_facecolor()[0][:3]) for c in tsne.collections] == \
        [tuple(F.class_color(int(c.get_label().split()[1]))[:3]) for c in tsne.collections]
    plt.close("all")
