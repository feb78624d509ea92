"""`nar reduce`: what NAR (or IR) does to a network at one ϕ or a sweep, and what it costs."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from nar_search.models import DEFAULT_MODEL
from nar_search.models.errors import ModelError
from nar_search.models.spec import ArchSpec
from nar_search.search.cli.console import console
from nar_search.search.cli.method_options import with_method_options
from nar_search.search.methods import METHODS, MethodSettings, get_method, method_help
from nar_search.search.methods.phi import parse_phis

REDUCE_METHODS_HELP = method_help(m for m in METHODS.values() if not m.reduces_in_training)


@with_method_options(m for m in METHODS.values() if not m.reduces_in_training)
def reduce_command(
    model: Annotated[str, typer.Option(help="timm model name, e.g. resnetv2_50, inception_v4")] = DEFAULT_MODEL,
    input_size: Annotated[int | None, typer.Option(help="base input side in px (default: the model's)")] = None,
    phi: Annotated[str, typer.Option(help="ϕ, a list 0,1,3 or a range 0:5")] = "1",
    method: Annotated[str, typer.Option(help=REDUCE_METHODS_HELP)] = "nar",
    latency: Annotated[bool, typer.Option(help="also measure CPU latency (batch 16)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print specs and costs as JSON")] = False,
    settings: MethodSettings | None = None,
) -> None:
    """Show the reduced architecture and its cost at one ϕ or a sweep of ϕ."""
    from nar_search.models.cost import measure_latency, spec_cost
    from nar_search.models.registry import original_spec

    strategy = get_method(method)
    if strategy.reduces_in_training:
        raise ModelError(
            f"{method} reduces a network while it trains: nothing to show before; try `nar train --method {method} --data PATCHES`"
        )
    original = original_spec(model, input_size)
    base_cost = spec_cost(original)
    records = []
    for value in parse_phis(phi):
        candidate = strategy.candidate(original, value, settings)
        spec = candidate.spec
        cost = spec_cost(spec)
        record = {
            "phi": value,
            "spec": spec.to_dict(),
            "gflops": cost.gflops,
            "params": cost.params,
            "reduction": base_cost.gflops / cost.gflops,
        }
        if latency:
            measured = measure_latency(spec.build(), spec.input_size)
            record["latency_ms_per_patch"] = measured.ms_per_patch
        records.append((spec, record))
    if as_json:
        typer.echo(json.dumps([record for _, record in records], indent=2))
    else:
        console.print(_table(records, strategy.heading(candidate)))  # every ϕ of the sweep shares the heading


def _table(records: list[tuple[ArchSpec, dict[str, Any]]], heading: str) -> Table:
    first = records[0][0]
    caption = "cells: blocks × widths (k w: k times the original widths); fewer GFLOPs: the original's ÷ this one's"
    table = Table(title=f"{first.model_name} · {heading}", caption=caption)
    table.add_column("ϕ", justify="right")
    for stage in first.stages():
        table.add_column(stage.name, justify="center")
    for header in ("input", "GFLOPs", "params", "fewer GFLOPs"):
        table.add_column(header, justify="right")
    has_latency = "latency_ms_per_patch" in records[0][1]
    if has_latency:
        table.add_column("ms/patch", justify="right")
    for spec, record in records:
        cells = [f"{record['phi']:g}"]
        cells += [f"{s.blocks} × {s.widths}" for s in spec.stages()]
        cells += [str(spec.input_size), f"{record['gflops']:.3f}", f"{record['params'] / 1e6:.2f} M", f"{record['reduction']:.2f}×"]
        if has_latency:
            cells.append(f"{record['latency_ms_per_patch']:.2f}")
        table.add_row(*cells)
    return table
