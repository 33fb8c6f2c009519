"""The recipe's JSON Schema with every registered stage config in it (`edgecompress schema`)."""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import Field, create_model

from edgecompress.recipe import Recipe
from edgecompress.registry import STAGES


def recipe_json_schema() -> dict[str, Any]:
    """Recipe's schema where `stages` items are a union over the config of every registered stage."""
    configs = tuple(STAGES.get(name).Config for name in STAGES.names())
    stage_union = Annotated[Union[configs], Field(discriminator="type")]  # noqa: UP007 - built from a tuple
    full = create_model(
        "Recipe",
        __base__=Recipe,
        stages=(
            list[stage_union],
            Field(default_factory=list, description=Recipe.model_fields["stages"].description),
        ),
    )
    return full.model_json_schema()
