"""A slide's TIL map in the formats users already load: Stony Brook's text, WSInfer's CSV,
QuPath's GeoJSON and a heat map, with summary.json, put in place together."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from nar_search.data.errors import DataError
from nar_search.models.export import apply_umask
from nar_search.prediction.network import TIL_CLASS, TIL_THRESHOLD
from nar_search.prediction.predictor import SlidePrediction

CLASS_COLOURS = {"til-positive": (220, 30, 30), "til-negative": (40, 110, 220)}
HEATMAP_OPACITY = 0.55
HEATMAP_SIDE = 1024  # pixels of the map's long side; the title and colour bar come around it
SUMMARY_FILE = "summary.json"


def output_names(name: str) -> tuple[str, ...]:
    """The files of slide `name`'s TIL map, summary.json last: the order they are put in place."""
    return f"prediction-{name}", f"{name}.csv", f"{name}.geojson", f"{name}.heatmap.png", SUMMARY_FILE


def write_outputs(prediction: SlidePrediction, out: Path) -> Path:
    """Write the slide's TIL map into out/<slide name>/ and return that folder. Every file is
    written before any is put in place, summary.json last, so that a folder with it holds a
    complete map; in an existing folder, which may hold the user's own files, only the files
    of the same names are replaced."""
    folder = Path(out) / prediction.name
    if os.path.lexists(folder) and not folder.is_dir():
        raise DataError(f"{folder}, meant for {prediction.name}'s maps, is not a folder: move it or use another --out")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{prediction.name}.", dir=folder.parent))
    try:
        _write_stony_brook(prediction, staging / f"prediction-{prediction.name}")
        _write_csv(prediction, staging / f"{prediction.name}.csv")
        _write_geojson(prediction, staging / f"{prediction.name}.geojson")
        heatmap(prediction).save(staging / f"{prediction.name}.heatmap.png", compress_level=1)  # half the time, a fifth larger
        (staging / SUMMARY_FILE).write_text(json.dumps(prediction.summary(), indent=2) + "\n")
        apply_umask(staging)
        if folder.is_dir():
            for name in output_names(prediction.name):
                os.replace(staging / name, folder / name)
            staging.rmdir()
        else:
            os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def _write_stony_brook(prediction: SlidePrediction, path: Path) -> None:
    """Stony Brook's TIL map: `x y prob` per patch, x, y its centre in level-0 pixels."""
    rows = np.column_stack([prediction.grid.centres, prediction.til_probabilities])
    np.savetxt(path, rows, fmt=["%d", "%d", "%.6f"], delimiter=" ")


def _write_csv(prediction: SlidePrediction, path: Path) -> None:
    """WSInfer's table: the patch's box in level-0 pixels and its probability of each class."""
    grid = prediction.grid
    side = np.full(len(grid), grid.patch_px)
    rows = np.column_stack([grid.coords, side, side, prediction.probabilities])
    header = ",".join(["minx", "miny", "width", "height", *prediction.probability_columns])
    np.savetxt(path, rows, fmt=["%d"] * 4 + ["%.6f"] * len(prediction.class_names), delimiter=",", header=header, comments="")


def _write_geojson(prediction: SlidePrediction, path: Path) -> None:
    """A QuPath FeatureCollection of tiles, streamed: a whole slide has ~10⁵ of them. The
    measurements are the CSV's probability columns."""
    side = prediction.grid.patch_px
    classes = {
        positive: json.dumps({"name": name, "color": list(CLASS_COLOURS[name])})
        for positive, name in ((True, "til-positive"), (False, "til-negative"))
    }
    columns = [json.dumps(column) for column in prediction.probability_columns]
    rows = zip(prediction.grid.coords.tolist(), prediction.til_probabilities.tolist(), prediction.probabilities.tolist())
    with path.open("w") as file:
        file.write('{"type": "FeatureCollection", "features": [')
        for i, ((x, y), til, probabilities) in enumerate(rows):
            box = f"[[{x}, {y}], [{x + side}, {y}], [{x + side}, {y + side}], [{x}, {y + side}], [{x}, {y}]]"
            measurements = ", ".join(f"{column}: {p:.6f}" for column, p in zip(columns, probabilities))
            file.write(
                f'{"," if i else ""}\n{{"type": "Feature", "geometry": {{"type": "Polygon", "coordinates": [{box}]}}, '
                f'"properties": {{"objectType": "tile", "classification": {classes[til >= TIL_THRESHOLD]}, '
                f'"measurements": {{{measurements}}}}}}}'
            )
        file.write("\n]}\n")


def heatmap(prediction: SlidePrediction) -> Image.Image:
    """The TIL-positive probability (jet colour map, as Stony Brook's maps) over the slide
    thumbnail, HEATMAP_SIDE pixels on its long side, with a colour bar and a title that gives
    the TIL-positive fraction."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    grid = prediction.grid
    cells = grid.coords // grid.patch_px
    probability = np.full((cells[:, 1].max() + 1, cells[:, 0].max() + 1) if len(grid) else (1, 1), np.nan, np.float32)
    probability[cells[:, 1], cells[:, 0]] = prediction.til_probabilities
    patch_side = grid.patch_px / grid.tissue_downsample  # in thumbnail pixels
    height, width = grid.thumbnail.shape[:2]
    # Laid out in pixels: the map with a margin around it, the colour bar and its labels to its
    # right, the title above; wide enough for the title whatever the slide's shape.
    scale = HEATMAP_SIDE / max(width, height)
    map_width, map_height, margin, bar, title = width * scale, height * scale, 24, 20, 64
    figure_width, figure_height = max(map_width + bar + 5 * margin, 640), map_height + title + margin
    figure = Figure(figsize=(figure_width / 100, figure_height / 100), dpi=100)
    canvas = FigureCanvasAgg(figure)

    def placed(left: float, wide: float) -> tuple[float, float, float, float]:
        """Axes `wide` pixels wide from `left`, level with the map, in figure fractions."""
        return left / figure_width, margin / figure_height, wide / figure_width, map_height / figure_height

    axes = figure.add_axes(placed(margin, map_width))
    # Resampled to the map's pixels beforehand: several times cheaper than by matplotlib.
    thumbnail = Image.fromarray(grid.thumbnail).resize((round(map_width), round(map_height)), Image.Resampling.BILINEAR)
    axes.imshow(thumbnail, extent=(0, width, height, 0))
    colours = ScalarMappable(Normalize(0, 1), "jet")
    extent = (0, probability.shape[1] * patch_side, probability.shape[0] * patch_side, 0)
    axes.imshow(probability, cmap=colours.cmap, norm=colours.norm, alpha=HEATMAP_OPACITY, interpolation="nearest", extent=extent)
    axes.set(xlim=(0, width), ylim=(height, 0))
    axes.set_axis_off()
    figure.colorbar(colours, cax=figure.add_axes(placed(2 * margin + map_width, bar)), label=f"probability {TIL_CLASS}")
    figure.suptitle(
        f"{prediction.name}: {prediction.til_positive_fraction:.1%} {TIL_CLASS}\n"
        f"({len(grid)} tissue patches of {grid.patch_px * grid.mpp:g} µm, threshold {TIL_THRESHOLD:g})",
        y=1 - 8 / figure_height,
        va="top",
        wrap=True,
    )
    canvas.draw()
    return Image.fromarray(np.asarray(canvas.buffer_rgba())).convert("RGB")
