"""Report figures, the Lightning CSV reader and the HTML report."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mango.errors import DataError
from mango.report import (
    Section,
    class_colours,
    colorize,
    read_lightning_csv,
    save_attention_maps,
    save_learning_curves,
    save_prediction_grid,
    write_report,
)

NAMES = ("background", "warm dome", "warm pit", "cool dome", "cool pit")


def _row(size: int, names: tuple[str, ...], fill: int = 3) -> dict:
    target = np.full((size, size), fill, dtype=np.int64)
    return {
        "rgb": np.full((size, size, 3), 0.5),
        "depth": np.linspace(0, 1, size * size).reshape(size, size),
        "target": target,
        "predictions": {name: target.copy() for name in names},
    }


def _png(path: Path) -> Image.Image:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(path)
    image.load()
    return image


def test_class_colours_fixed_and_distinct() -> None:
    colours = class_colours(40)
    assert colours.shape == (40, 3) and 0 <= colours.min() and colours.max() <= 1
    assert len({tuple(c) for c in np.round(colours, 4)}) == 40
    np.testing.assert_allclose(class_colours(5), colours[:5])
    np.testing.assert_allclose(colours[0], (0.25, 0.25, 0.25))


def test_colorize_maps_labels_and_ignore() -> None:
    out = colorize(np.array([[0, 1], [255, 4]]), 5)
    palette = class_colours(5)
    np.testing.assert_allclose(out[0, 0], palette[0])
    np.testing.assert_allclose(out[0, 1], palette[1])
    np.testing.assert_allclose(out[1, 0], (1.0, 1.0, 1.0))  # ignore -> white
    np.testing.assert_allclose(out[1, 1], palette[4])


@pytest.mark.parametrize(("rows", "predictions"), [(1, ("fusion",)), (2, ("a", "b", "c"))])
def test_prediction_grid_layout(tmp_path: Path, rows: int, predictions: tuple[str, ...]) -> None:
    path = save_prediction_grid(
        tmp_path / "sub" / "grid.png", [_row(16, predictions) for _ in range(rows)], NAMES
    )
    image = _png(path).convert("RGB")
    columns = 3 + len(predictions)
    # (3 + P) panels of 2 in; rows of 2.25 in + 0.35 in titles + one legend row + 0.1 in, at 100 dpi
    assert image.size == (columns * 200, round((rows * 2.25 + 0.35 + 0.28 + 0.1) * 100))
    # the centre of the Target panel of the first row shows the palette colour of class 3
    pixels = np.asarray(image)
    x = int(image.size[0] * 2.5 / columns)
    y = 35 + 100  # title strip, then half a panel
    expected = np.round(class_colours(5)[3] * 255)
    np.testing.assert_allclose(pixels[y, x], expected, atol=2)
    # the last prediction column shows the same colour (the prediction equals the target)
    x_last = int(image.size[0] * (columns - 0.5) / columns)
    np.testing.assert_allclose(pixels[y, x_last], expected, atol=2)


def test_prediction_grid_legend_grows_with_classes(tmp_path: Path) -> None:
    names = tuple(f"class {i}" for i in range(40))
    image = _png(save_prediction_grid(tmp_path / "g.png", [_row(8, ("p",))], names))
    assert image.size == (800, round((2.25 + 0.35 + 0.28 * math.ceil(40 / 6) + 0.1) * 100))


def test_prediction_grid_rejects_inconsistent_rows(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="row 1"):
        save_prediction_grid(tmp_path / "g.png", [_row(8, ("a",)), _row(8, ("b",))], NAMES)
    with pytest.raises(ValueError, match="no rows"):
        save_prediction_grid(tmp_path / "g.png", [], NAMES)
    assert not (tmp_path / "g.png").exists()


CSV = """epoch,step,train/loss,val/miou,lr
0,9,1.5,,0.002
0,19,1.25,,
0,19,,41.5,
1,29,0.75,,1e-3
1,39,,52.25,
"""


def test_read_lightning_csv(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text(CSV)
    assert read_lightning_csv(path) == {
        "train/loss": [(9, 1.5), (19, 1.25), (29, 0.75)],
        "val/miou": [(19, 41.5), (39, 52.25)],
        "lr": [(9, 0.002), (29, 0.001)],
    }


def test_read_lightning_csv_without_epoch_and_empty_metric(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text("step,loss,never\n3.0,2,\n")
    assert read_lightning_csv(path) == {"loss": [(3, 2.0)]}


def test_read_lightning_csv_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        read_lightning_csv(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("epoch,loss\n0,1\n")
    with pytest.raises(DataError, match="missing column 'step'"):
        read_lightning_csv(bad)
    bad.write_text("epoch,step,loss\n0,1,0.5\n0,2,oops\n")
    with pytest.raises(DataError, match=r"line 3: column 'loss': not a number: 'oops'"):
        read_lightning_csv(bad)


@pytest.mark.parametrize(("metrics", "size"), [(1, (460, 340)), (3, (1380, 340)), (4, (1380, 680))])
def test_learning_curves(tmp_path: Path, metrics: int, size: tuple[int, int]) -> None:
    curves = {
        model: {
            f"metric {k}": [(s, float(s * (m + 1) + k)) for s in range(0, 50, 10)]
            for k in range(metrics)
        }
        for m, model in enumerate(("fusion", "rgb_only"))
    }
    del curves["rgb_only"]["metric 0"]  # a model may miss a metric
    assert _png(save_learning_curves(tmp_path / "curves.png", curves)).size == size


def test_learning_curves_without_data(tmp_path: Path) -> None:
    assert _png(save_learning_curves(tmp_path / "c.png", {"fusion": {}})).size == (460, 340)


def _attention(tokens: int) -> np.ndarray:
    """Upper-triangular row-stochastic matrix (the MANGO mask: row i sees j >= i)."""
    scores = np.where(np.triu(np.ones((tokens, tokens), dtype=bool)), 0.0, -np.inf)
    weights = np.exp(scores)
    return weights / weights.sum(1, keepdims=True)


@pytest.mark.parametrize(("queries", "height"), [([0], 420), ([0, 5, 15], 810)])
def test_attention_maps(tmp_path: Path, queries: list[int], height: int) -> None:
    rgb = np.random.default_rng(0).random((16, 16, 3))
    depth = np.linspace(0, 1, 256).reshape(16, 16)
    path = save_attention_maps(
        tmp_path / "attention.png", rgb, depth, _attention(16), (4, 4), queries, "test"
    )
    assert _png(path).size == (900, height)


def test_attention_maps_rejects_bad_shapes(tmp_path: Path) -> None:
    rgb, depth = np.zeros((8, 8, 3)), np.zeros((8, 8))
    with pytest.raises(ValueError, match="expected \\(16, 16\\)"):
        save_attention_maps(tmp_path / "a.png", rgb, depth, _attention(9), (4, 4), [0], "t")
    with pytest.raises(ValueError, match="queries"):
        save_attention_maps(tmp_path / "a.png", rgb, depth, _attention(16), (4, 4), [16], "t")
    with pytest.raises(ValueError, match="rgb"):
        save_attention_maps(tmp_path / "a.png", rgb, depth[:4], _attention(16), (4, 4), [0], "t")


def test_failed_savefig_leaves_existing_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from matplotlib.figure import Figure

    path = tmp_path / "grid.png"
    path.write_bytes(b"previous figure")

    def broken(self: Figure, f, **kwargs) -> None:
        f.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        save_prediction_grid(path, [_row(8, ("p",))], NAMES)
    with pytest.raises(RuntimeError, match="disk full"):
        save_learning_curves(path, {"m": {"loss": [(0, 1.0)]}})
    assert path.read_bytes() == b"previous figure"
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]  # no temporary files left


def test_figures_leave_the_global_backend_alone(tmp_path: Path) -> None:
    import matplotlib

    before = matplotlib.get_backend()
    save_learning_curves(tmp_path / "c.png", {"m": {"loss": [(0, 1.0), (1, 0.5)]}})
    assert matplotlib.get_backend() == before


def test_write_report(tmp_path: Path) -> None:
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "grid.png").write_bytes(b"png")
    sections = [
        Section(
            "Result <1>",
            "Fusion wins: 91 > 45 & more.\n\nSecond <script>alert(1)</script> paragraph.",
            table=[
                {"model": "fusion", "miou": 91.2345, "steps": 600, "ok": True},
                {"model": "rgb_only", "miou": np.float32(45.678), "note": "a<b"},
                {"model": "depth_only", "miou": float("nan")},
            ],
        ),
        Section("Figures", "", images=[("figures/grid.png", "Grid & co"), ("gone.png", "Missing")]),
    ]
    path = write_report(tmp_path, "Demo <report>", sections)
    assert path == tmp_path / "report.html"
    text = path.read_text()
    assert text.startswith("<!DOCTYPE html>")
    assert "<title>Demo &lt;report&gt;</title>" in text
    assert "<h2>Result &lt;1&gt;</h2>" in text and "<h2>Figures</h2>" in text
    assert "<p>Fusion wins: 91 &gt; 45 &amp; more.</p>" in text
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    rows = re.findall(r"<tr>(.*?)</tr>", text)
    assert rows[0] == "<th>model</th><th>miou</th><th>steps</th><th>ok</th><th>note</th>"
    assert rows[1] == (
        '<td>fusion</td><td class="number">91.23</td><td class="number">600</td>'
        "<td>True</td><td></td>"
    )
    assert rows[2] == (
        '<td>rgb_only</td><td class="number">45.68</td><td></td><td></td><td>a&lt;b</td>'
    )
    assert rows[3].startswith('<td>depth_only</td><td class="number">–</td>')
    # only existing images are linked; nothing points outside the page
    assert re.findall(r'src="([^"]*)"', text) == ["figures/grid.png"]
    assert "<figcaption>Grid &amp; co</figcaption>" in text
    assert "Figure not available: gone.png" in text
    assert "http://" not in text and "https://" not in text and "<link" not in text


def test_write_report_replaces_previous_report(tmp_path: Path) -> None:
    write_report(tmp_path, "first", [Section("A", "one")])
    write_report(tmp_path, "second", [Section("B", "two")])
    text = (tmp_path / "report.html").read_text()
    assert "second" in text and "first" not in text
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]
