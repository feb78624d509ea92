"""The options that say how a patch source is read, shared by every command that takes `--data`."""

from __future__ import annotations

from typing import Annotated

import typer

Positive = Annotated[
    list[str] | None,
    typer.Option(help="class folder of positive patches (repeatable); every other class folder is negative. E.g. 04_LYMPHO"),
]
Exclude = Annotated[list[str] | None, typer.Option(help="class folder to leave out (repeatable). E.g. 08_EMPTY")]
SlidePattern = Annotated[
    str | None,
    typer.Option(
        help="regular expression that finds each patch's slide (or source image) in its file name, its first group if it has one, "
        "so that splits keep slides apart. E.g. 'CRC-Prim-HE-\\d+'"
    ),
]
