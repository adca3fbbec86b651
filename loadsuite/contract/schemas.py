"""The contract's product as a pydantic model, and the hot-path check that agrees with it.

`Product` is the definition; `product_problem` uses it to word a failure. `valid_product` is the same
rule written by hand because it runs on every product of every list: measured on 20-product lists,
pydantic's TypeAdapter(list[Product]) takes 35.6 us against 10.4 us by hand (tests prove they agree).
"""
from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, ValidationError


class Product(BaseModel):
    """{"name", "description", "price", "stock", "category"}: no id, name is the key."""

    model_config = ConfigDict(strict=True, extra="allow")
    name: Annotated[StrictStr, Field(min_length=1)]
    description: StrictStr
    price: Annotated[Union[StrictInt, StrictFloat], Field(ge=0)]
    stock: Annotated[StrictInt, Field(ge=0)]
    category: StrictStr


# What a failure reason says is expected of each field (a small fixed vocabulary: reasons stay groupable).
_EXPECTED = {"name": "name as non-empty string", "description": "description as string",
             "price": "price as number >= 0", "stock": "stock as integer >= 0", "category": "category as string"}
_FIELD_ORDER = tuple(_EXPECTED)


def describe(value: object) -> str:
    """A value as a failure reason names it: its kind, never its content."""
    if value is None:
        return "null or missing"
    if value is True or value is False:
        return "bool"
    if type(value) is str and not value:
        return "empty string"
    if type(value) in (int, float) and not value >= 0:
        return "negative number"
    return type(value).__name__


def product_problem(product: Any) -> str | None:
    """Why `product` is not a valid Product (the first field in contract order), or None."""
    if type(product) is not dict:
        return f"expected a product object, saw {describe(product)}"
    try:
        Product.model_validate(product)
    except ValidationError as error:
        fields = {str(item["loc"][0]) for item in error.errors() if item["loc"]}
        field = next((name for name in _FIELD_ORDER if name in fields), None)
        if field is None:
            return "expected a valid product"
        return f"expected {_EXPECTED[field]}, saw {describe(product.get(field))}"
    return None


def valid_product(product: Any) -> bool:
    """The rule of `Product`, without building a failure text (the hot path; see the module docstring)."""
    if type(product) is not dict:
        return False
    get = product.get
    name, price, stock = get("name"), get("price"), get("stock")
    return (type(name) is str and name != "" and type(get("description")) is str
            and (type(price) is int or type(price) is float) and price >= 0
            and type(stock) is int and stock >= 0 and type(get("category")) is str)
