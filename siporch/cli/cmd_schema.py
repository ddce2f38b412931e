"""siporch schema"""

from __future__ import annotations

import json

import click

from siporch.model.schema import Model


def model_schema() -> dict[str, object]:
    schema = Model.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "siporch trunk model (the `siporch` variable)"
    return schema


@click.command()
def cli() -> int:
    """Print the JSON Schema of the trunk model (the value of the `siporch` variable)."""
    click.echo(json.dumps(model_schema(), indent=2, sort_keys=True))
    return 0
