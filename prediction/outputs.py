"""A slide's TIL map in the formats users already load: Stony Brook's text, WSInfer's CSV,
QuPath's GeoJSON and a heat map, with summary.json, put in place together."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import cast

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from nar_search.data.errors import DataError
from nar_search.data.tiling import SlideGrid
from nar_search.models.export import apply_umask
from nar_search.prediction.network import TIL_CLASS, TIL_THRESHOLD
from nar_search.prediction.predictor import SlidePrediction

CLASS_COLOURS = {"til-positive": (220, 30, 30), "til-negative": (40, 110, 220)}
HEATMAP_OPACITY = 0.55
# matplotlib's viridis at 17 even steps from 0 to 1, interpolated between (within 6 of 255 of
# matplotlib's own): perceptually uniform, so equal steps of probability look equal, where jet
# (Stony Brook's) shows bands that are not in the data; and legible to colour-blind readers.
VIRIDIS = (
    (68, 1, 84), (72, 24, 106), (71, 45, 123), (66, 64, 134), (59, 82, 139), (51, 99, 141), (44, 114, 142), (38, 130, 142),
    (33, 145, 140), (31, 160, 136), (40, 174, 128), (63, 188, 115), (94, 201, 98), (132, 212, 75), (173, 220, 48), (216, 226, 25),
    (253, 231, 37),
)  # fmt: skip
HEATMAP_SIDE = 1024  # pixels of the map's long side; the title, colour bar and scale bar come around it
SUMMARY_FILE = "summary.json"


def output_names(name: str) -> tuple[str, ...]:
    """The files of slide `name`'s TIL map, summary.json last: the order they are put in place."""
    return f"prediction-{name}", f"{name}.csv", f"{name}.geojson", f"{name}.heatmap.png", SUMMARY_FILE


def viridis(values: np.ndarray) -> np.ndarray:
    """The viridis colours (uint8 RGB, in a new last axis) of `values` from 0 to 1."""
    steps = np.linspace(0, 1, len(VIRIDIS))
    channels = [np.interp(values, steps, [colour[channel] for colour in VIRIDIS]) for channel in range(3)]
    return np.stack(channels, axis=-1).round().astype(np.uint8)


def scale_bar_um(um_per_pixel: float, longest: float) -> float:
    """The longest 1, 2 or 5 × 10^k µm whose bar spans at most `longest` pixels."""
    most = longest * um_per_pixel
    power = 10 ** np.floor(np.log10(most))
    return float(max(step * power for step in (1, 2, 5) if step * power <= most))


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
    """The TIL-positive probability (viridis) over the slide thumbnail, HEATMAP_SIDE pixels on
    its long side, with a colour bar, a scale bar in µm below and a title that gives the
    TIL-positive fraction. Drawn with Pillow: matplotlib would add a second to every run's start
    for one figure."""
    grid = prediction.grid
    cells = grid.coords // grid.patch_px
    probability = np.full((cells[:, 1].max() + 1, cells[:, 0].max() + 1) if len(grid) else (1, 1), np.nan, np.float32)
    probability[cells[:, 1], cells[:, 0]] = prediction.til_probabilities
    height, width = grid.thumbnail.shape[:2]
    scale = HEATMAP_SIDE / max(width, height)
    map_width, map_height = round(width * scale), round(height * scale)
    # FreeType fonts (Pillow's wheels build with FreeType): _colour_bar sizes its label by font.size.
    title_font, label_font = ImageFont.load_default(size=16), cast(ImageFont.FreeTypeFont, ImageFont.load_default(size=12))
    title = (  # "microns": Pillow's own font has no µ
        f"{prediction.name}: {prediction.til_positive_fraction:.1%} {TIL_CLASS}\n"
        f"({len(grid)} tissue patches of {grid.patch_px * grid.mpp:g} microns, threshold {TIL_THRESHOLD:g})"
    )
    # Laid out in pixels: the title above, the map with a margin around it, the colour bar and
    # its labels to its right, the scale bar below; wide enough for the title whatever the
    # slide's shape.
    margin, bar, top, bottom = 24, 20, 64, 48
    title_width = max(title_font.getlength(line) for line in title.splitlines())
    figure_width = round(max(map_width + bar + 5 * margin, 640, title_width + 2 * margin))
    figure = Image.new("RGB", (figure_width, map_height + top + bottom), "white")
    figure.paste(_blended_map(grid, probability, scale, (map_width, map_height)), (margin, top))
    draw = ImageDraw.Draw(figure)
    draw.multiline_text((figure.width / 2, 8), title, fill="black", font=title_font, anchor="ma", align="center")
    _colour_bar(figure, draw, (2 * margin + map_width, top), (bar, map_height), label_font)
    um_per_pixel = grid.mpp * grid.tissue_downsample / scale  # µm per thumbnail pixel over map pixels per thumbnail pixel
    _scale_bar(draw, (margin, top + map_height + 16), um_per_pixel, map_width / 4, label_font)
    return figure


def _blended_map(grid: SlideGrid, probability: np.ndarray, scale: float, size: tuple[int, int]) -> Image.Image:
    """The thumbnail at `size` with each mapped patch's colour over it (HEATMAP_OPACITY)."""
    # Resampled to the map's pixels first, then each map pixel looks up the patch it falls in.
    thumbnail = np.asarray(Image.fromarray(grid.thumbnail).convert("RGB").resize(size, Image.Resampling.BILINEAR), np.float32)
    patch_side = grid.patch_px / grid.tissue_downsample * scale  # in map pixels
    rows, columns = (((np.arange(n) + 0.5) // patch_side).astype(int) for n in (size[1], size[0]))
    padded = np.pad(probability, ((0, 1), (0, 1)), constant_values=np.nan)  # pixels past the last patch
    per_pixel = padded[np.minimum(rows, probability.shape[0])[:, None], np.minimum(columns, probability.shape[1])[None, :]]
    mapped = ~np.isnan(per_pixel)
    thumbnail[mapped] += HEATMAP_OPACITY * (viridis(per_pixel[mapped]) - thumbnail[mapped])
    return Image.fromarray(thumbnail.round().astype(np.uint8))


def _colour_bar(
    figure: Image.Image, draw: ImageDraw.ImageDraw, corner: tuple[int, int], size: tuple[int, int], font: ImageFont.FreeTypeFont
) -> None:
    """Viridis from 1 (top) to 0 at `corner`, framed, with ticks every 0.2 and its label, rotated."""
    (left, top), (width, height) = corner, size
    figure.paste(Image.fromarray(np.repeat(viridis(np.linspace(1, 0, height))[:, None], width, axis=1)), corner)
    draw.rectangle((left - 1, top - 1, left + width, top + height), outline="black")
    for tick in np.linspace(0, 1, 6):
        y = top + (1 - tick) * (height - 1)
        draw.line(((left + width, y), (left + width + 4, y)), fill="black")
        draw.text((left + width + 7, y), f"{tick:.1f}", fill="black", font=font, anchor="lm")
    text = f"probability {TIL_CLASS}"
    label = Image.new("L", (round(font.getlength(text)) + 2, int(font.size) + 4))
    ImageDraw.Draw(label).text((1, 1), text, fill=255, font=font)
    label = label.rotate(90, expand=True)
    x = left + width + 7 + round(font.getlength("0.0")) + 6
    figure.paste((0, 0, 0), (x, top + (height - label.height) // 2), label)


def _scale_bar(
    draw: ImageDraw.ImageDraw, corner: tuple[int, int], um_per_pixel: float, longest: float, font: ImageFont.FreeTypeFont
) -> None:
    """A black bar of a round length in µm (scale_bar_um) from `corner`, ends marked, labelled
    to its right ("microns": Pillow's own font has no µ)."""
    um = scale_bar_um(um_per_pixel, longest)
    (left, top), length = corner, round(um / um_per_pixel)
    draw.rectangle((left, top, left + length - 1, top + 3), fill="black")
    for x in (left, left + length - 1):
        draw.line(((x, top - 4), (x, top + 7)), fill="black")
    label = f"{um / 1000:g} mm" if um >= 1000 else f"{um:g} microns"
    draw.text((left + length + 8, top + 2), label, fill="black", font=font, anchor="lm")
