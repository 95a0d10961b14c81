"""Hardware orders configuration (`config/hardware_orders.yaml`): catalogue, warehouses, device manufacturers,
the fraud-check deny list and when an order counts as stuck. Every error names file, entry and field."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from cmp_pipelines.core.config import ConfigError, Partner, read_document, reject_unknown_fields, require_field
from cmp_pipelines.core.money import MoneyError, parse_amount
from cmp_pipelines.defs.hardware_orders.checks_rules import normalise_postcode, uk_postcode_valid
from cmp_pipelines.defs.hardware_orders.rules import PRODUCT_TYPES

FILE_NAME = "hardware_orders.yaml"
WAREHOUSE_FEED = "warehouse_dispatch"
MANUFACTURER_FEED = "device_enrolment"
SKU = re.compile(r"^[A-Z0-9][A-Z0-9-]{1,31}$")
CURRENCY = re.compile(r"^[A-Z]{3}$")


@dataclass(frozen=True)
class Product:
    sku: str
    product_type: str  # HANDSET, PERIPHERAL or LICENCE
    description: str
    price_minor: int
    currency: str
    warehouse: str  # the partner that stocks and ships it
    manufacturer: str | None  # handsets: who enrols the device


@dataclass(frozen=True)
class Warehouse:
    warehouse: str
    name: str


@dataclass(frozen=True)
class Manufacturer:
    manufacturer: str
    name: str


@dataclass(frozen=True)
class HardwareConfig:
    catalogue: dict[str, Product]
    warehouses: dict[str, Warehouse]
    manufacturers: dict[str, Manufacturer]
    deny_names: tuple[str, ...]  # upper case, single spaces
    deny_postcodes: tuple[str, ...]  # normalised 'SW1A 1AA'
    stuck_order_days: int


def _partner_list(file: Path, document: dict, key: str, id_field: str, feed: str,
                  partners: dict[str, Partner] | None) -> dict[str, tuple[str, str]]:
    entries = document.get(key)
    if not isinstance(entries, list) or not entries:
        raise ConfigError(file, "-", key, f"must be a non-empty list of {key} entries")
    found: dict[str, tuple[str, str]] = {}
    for index, raw in enumerate(entries):
        entry = raw[id_field] if isinstance(raw, dict) and isinstance(raw.get(id_field), str) else f"{key}[{index}]"
        if not isinstance(raw, dict):
            raise ConfigError(file, entry, "-", "must be a mapping")
        reject_unknown_fields(file, entry, raw, {id_field, "name"})
        ident = require_field(file, entry, raw, id_field, str)
        if ident in found:
            raise ConfigError(file, entry, id_field, "is defined twice")
        if partners is not None and (ident not in partners or feed not in partners[ident].feeds):
            raise ConfigError(file, entry, id_field,
                              f"{ident!r} is not a partner with feed {feed!r} in partners.yaml (its files need keys)")
        name = raw.get("name", ident)
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(file, entry, "name", f"must be a non-empty string, got {name!r}")
        found[ident] = (ident, name)
    return found


def _catalogue(file: Path, document: dict, warehouses: dict, manufacturers: dict) -> dict[str, Product]:
    entries = document.get("catalogue")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(file, "-", "catalogue", "must be a non-empty list of products")
    products: dict[str, Product] = {}
    fields = {"sku", "type", "description", "price", "currency", "warehouse", "manufacturer"}
    for index, raw in enumerate(entries):
        entry = raw["sku"] if isinstance(raw, dict) and isinstance(raw.get("sku"), str) else f"catalogue[{index}]"
        if not isinstance(raw, dict):
            raise ConfigError(file, entry, "-", "must be a mapping")
        reject_unknown_fields(file, entry, raw, fields)
        sku = require_field(file, entry, raw, "sku", str)
        if not SKU.match(sku):
            raise ConfigError(file, entry, "sku", "must be 2-32 of A-Z, 0-9 and '-', starting with a letter or digit")
        if sku in products:
            raise ConfigError(file, entry, "sku", "is defined twice; SKUs are unique")
        product_type = require_field(file, entry, raw, "type", str)
        if product_type not in PRODUCT_TYPES:
            raise ConfigError(file, entry, "type", f"must be one of {', '.join(PRODUCT_TYPES)}, got {product_type!r}")
        description = require_field(file, entry, raw, "description", str)
        if not description.strip() or len(description) > 80:
            raise ConfigError(file, entry, "description", "must be 1-80 characters")
        price = raw.get("price")
        if not isinstance(price, str):
            raise ConfigError(file, entry, "price", f"must be a quoted decimal string like '499.00', got {price!r}")
        try:
            price_minor = parse_amount(price)
        except MoneyError as exc:
            raise ConfigError(file, entry, "price", str(exc)) from exc
        currency = raw.get("currency", "GBP")
        if not isinstance(currency, str) or not CURRENCY.match(currency):
            raise ConfigError(file, entry, "currency", f"must be an ISO 4217 code like GBP, got {currency!r}")
        warehouse = require_field(file, entry, raw, "warehouse", str)
        if warehouse not in warehouses:
            raise ConfigError(file, entry, "warehouse", f"{warehouse!r} is not a configured warehouse; known: "
                                                        f"{', '.join(sorted(warehouses))}")
        manufacturer = raw.get("manufacturer")
        if product_type == "HANDSET":
            if not isinstance(manufacturer, str) or manufacturer not in manufacturers:
                raise ConfigError(file, entry, "manufacturer", f"a handset needs a configured manufacturer (who "
                                                               f"enrols it); known: {', '.join(sorted(manufacturers))}")
        elif manufacturer is not None:
            raise ConfigError(file, entry, "manufacturer", "only a handset is enrolled with its manufacturer")
        products[sku] = Product(sku, product_type, description, price_minor, currency, warehouse, manufacturer)
    return products


def _deny_list(file: Path, document: dict) -> tuple[tuple[str, ...], tuple[str, ...]]:
    raw = document.get("fraud_deny_list", {})
    entry = "fraud_deny_list"
    if not isinstance(raw, dict):
        raise ConfigError(file, entry, "-", "must be a mapping with 'names' and 'postcodes'")
    reject_unknown_fields(file, entry, raw, {"names", "postcodes"})
    names = raw.get("names", [])
    postcodes = raw.get("postcodes", [])
    for field, values in (("names", names), ("postcodes", postcodes)):
        if not isinstance(values, list) or not all(isinstance(v, str) and v.strip() for v in values):
            raise ConfigError(file, entry, field, "must be a list of non-empty strings")
    for postcode in postcodes:
        if not uk_postcode_valid(postcode):
            raise ConfigError(file, entry, "postcodes", f"{postcode!r} is not a UK postcode")
    return (tuple(" ".join(n.upper().split()) for n in names),
            tuple(normalise_postcode(p) or "" for p in postcodes))


def load_hardware_orders(config_dir: Path, partners: dict[str, Partner] | None = None) -> HardwareConfig:
    """`partners` (from partners.yaml), when given, must hold every warehouse and manufacturer with its feed."""
    file = config_dir / FILE_NAME
    document = read_document(file, "catalogue")
    reject_unknown_fields(file, "-", document,
                          {"catalogue", "warehouses", "manufacturers", "fraud_deny_list", "stuck_order_days"})
    warehouses = {k: Warehouse(*v) for k, v in
                  _partner_list(file, document, "warehouses", "warehouse", WAREHOUSE_FEED, partners).items()}
    manufacturers = {k: Manufacturer(*v) for k, v in
                     _partner_list(file, document, "manufacturers", "manufacturer", MANUFACTURER_FEED,
                                   partners).items()}
    catalogue = _catalogue(file, document, warehouses, manufacturers)
    deny_names, deny_postcodes = _deny_list(file, document)
    stuck = require_field(file, "-", document, "stuck_order_days", int)
    if not 1 <= stuck <= 90:
        raise ConfigError(file, "-", "stuck_order_days", f"must be between 1 and 90, got {stuck}")
    return HardwareConfig(catalogue, warehouses, manufacturers, deny_names, deny_postcodes, stuck)
