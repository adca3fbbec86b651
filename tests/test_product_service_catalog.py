"""The seed catalogue: the shipped JSON list and the real Go service's data file (an object keyed by name)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ROOT
from test_product_service_cli import fails_to_start, fetch, running  # noqa: F401 (running is a fixture)

from product_service.catalog import CatalogError, Product, load_catalog, parse_catalog

CATALOG = json.loads((ROOT / "product_service" / "catalog.json").read_text(encoding="utf-8"))
BLENDER = {"name": "Blender Pro", "description": "A 1200 W blender.", "price": 89.99, "stock": 40,
           "category": "Kitchenware"}


def go_data_file(products: list[dict]) -> dict[str, dict]:
    """The Go service's own data file: one JSON object, product name -> product."""
    return {product["name"]: product for product in products}


def write(tmp_path: Path, content: object | str) -> Path:
    path = tmp_path / "data.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return path


def test_the_go_data_file_gives_the_same_products_as_the_list_it_was_made_from():
    assert parse_catalog(go_data_file(CATALOG)) == parse_catalog(CATALOG)


def test_a_missing_inner_name_is_filled_from_the_key():
    entry = {key: value for key, value in BLENDER.items() if key != "name"}
    assert parse_catalog({"Blender Pro": entry}) == [Product("Blender Pro", "A 1200 W blender.", 89.99, 40,
                                                             "Kitchenware")]


def test_a_null_inner_name_is_filled_from_the_key():
    assert parse_catalog({"Blender Pro": {**BLENDER, "name": None}})[0].name == "Blender Pro"


@pytest.mark.parametrize("raw, needle", [
    ({"Blender Pro": {**BLENDER, "name": "Blender"}}, "product 'Blender Pro': its 'name' 'Blender' differs from its key"),
    ({"Blender Pro": {**BLENDER, "name": "blender pro"}}, "differs from its key"),  # exact, like the service's lookups
    ({"Blender Pro": {**BLENDER, "name": 7}}, "product 'Blender Pro': 'name' must be a non-empty string"),
    ({"Blender Pro": {**BLENDER, "name": ""}}, "product 'Blender Pro': 'name' must be a non-empty string"),
    ({"": {**BLENDER, "name": None}}, "a product's key is \"\""),
    ({"x" * 300: {**BLENDER, "name": None}}, "'name' is longer than 256 characters"),
    ({"Blender Pro": [BLENDER]}, "product 'Blender Pro' is not a JSON object"),
    ({"products": CATALOG}, "product 'products' is not a JSON object"),
    ({"Blender Pro": {**BLENDER, "stock": -1}}, "product 'Blender Pro': 'stock' must be an integer >= 0"),
    ({"Blender Pro": {**BLENDER, "stock": 4.0}}, "'stock' must be an integer >= 0"),
    ({"Blender Pro": {**BLENDER, "price": "89.99"}}, "product 'Blender Pro': 'price' must be a number >= 0"),
    ({"Blender Pro": {**BLENDER, "category": ""}}, "product 'Blender Pro': 'category' must be a non-empty string"),
    ({}, "must be a non-empty JSON list of products or a non-empty JSON object keyed by product name"),
    ([], "must be a non-empty JSON list of products or a non-empty JSON object keyed by product name"),
    ("Blender Pro", "must be a non-empty JSON list"),
])
def test_each_bad_entry_of_a_data_file_is_one_clear_line(raw, needle):
    with pytest.raises(CatalogError) as caught:
        parse_catalog(raw)
    message = str(caught.value)
    assert needle in message and "\n" not in message


def test_a_name_with_a_newline_stays_on_one_line_in_the_error():
    with pytest.raises(CatalogError) as caught:
        parse_catalog({"Bad\nName": {**BLENDER, "name": "Other"}})
    assert "\n" not in str(caught.value) and "'Bad\\nName'" in str(caught.value)


@pytest.mark.parametrize("text, needle", [
    ('{"Blender Pro": {"price": 1, "stock": 1, "category": "K"}, "Blender Pro": {"price": 2, "stock": 1, '
     '"category": "K"}}', "the key 'Blender Pro' appears twice"),
    ('{"Blender Pro": {"price": 1, "stock": 1, "stock": 5, "category": "K"}}', "the key 'stock' appears twice"),
])
def test_a_key_given_twice_is_refused_instead_of_silently_keeping_the_last(tmp_path, text, needle):
    path = write(tmp_path, text)
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    assert needle in str(caught.value) and str(path) in str(caught.value)


def test_the_service_seeded_from_a_go_data_file_serves_its_products(running, tmp_path):
    data = go_data_file([*CATALOG[:3], BLENDER])
    service = running("--port", "0", "--db", str(tmp_path / "p.db"), "--catalog", str(write(tmp_path, data)))
    status, body = fetch(service.url + "/products")
    assert status == 200 and sorted(p["name"] for p in body["data"]) == sorted(data)
    assert fetch(service.url + "/products/details", "POST", {"name": "Blender Pro"}) == (
        200, {"status": "success", "data": BLENDER})
    name = CATALOG[0]["name"]  # an apostrophe and a colon survive the file's keys
    assert fetch(service.url + "/products/buy", "POST", {"name": name, "quantity": 2})[1]["data"] == {
        "productName": name, "quantity": 2, "remainingStock": CATALOG[0]["stock"] - 2}


def test_the_go_profile_seeded_from_a_go_data_file_serves_its_products(running, tmp_path):
    service = running("--port", "0", "--db", str(tmp_path / "p.db"), "--profile", "go",
                      "--catalog", str(write(tmp_path, go_data_file([BLENDER]))))
    assert fetch(service.url + "/products/details", "POST", {"name": "Blender Pro"}) == (
        200, {"status": "success", "data": BLENDER})


def test_a_bad_data_file_exits_2_with_one_line_naming_the_file_and_the_product(tmp_path):
    path = write(tmp_path, {"Blender Pro": {**BLENDER, "name": "Blender"}})
    line = fails_to_start("--port", "0", "--db", str(tmp_path / "p.db"), "--catalog", str(path))
    assert str(path) in line and "product 'Blender Pro'" in line and "differs from its key" in line
