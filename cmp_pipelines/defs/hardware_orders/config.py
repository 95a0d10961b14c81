"""Hardware orders configuration (`config/hardware_orders.yaml`): catalogue, warehouses, device manufacturers,
the fraud-check deny list and when an order counts as stuck.

A typed model like every file of config/ (core/config.py), registered there so that `init` and `config validate`
check it; it stays with its flow because core must not import the flow's rules (product types, postcodes)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator

from cmp_pipelines.core.config import (
    SECTION,
    ConfigFile,
    Entries,
    FileModel,
    Partner,
    Problems,
    between,
    fail,
    matches,
    non_empty,
    one_of,
    register,
    text,
)
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


# The adaptors a warehouse (stock_check, fraud_check) or manufacturer (enrolment) can name, and their settings:
# {kind: {adaptor: {setting: (type, required)}}}. defs/hardware_orders/adaptors.py maps each name to its
# implementation (a Dagster resource, which this module must not import: the API and demo read this file);
# tests/flows/hardware_orders/test_hardware_adaptors.py holds the two in step.
ADAPTOR_SETTINGS: dict[str, dict[str, dict[str, tuple[type | tuple[type, ...], bool]]]] = {
    "stock_check": {"stock_file": {"stock_dir": (str, False)},
                    "http": {"base_url": (str, True), "timeout_seconds": ((int, float), False)}},
    "fraud_check": {"rules": {}, "http": {"url": (str, True), "timeout_seconds": ((int, float), False)}},
    "enrolment": {"file_drop": {}, "http": {"url": (str, True), "timeout_seconds": ((int, float), False)}},
}


@dataclass(frozen=True)
class AdaptorChoice:
    """An adaptor named in the configuration and its settings (defs/hardware_orders/adaptors.py builds it)."""

    kind: str  # stock_check, fraud_check, enrolment
    name: str
    settings: tuple[tuple[str, str | int | float | bool], ...] = ()


@dataclass(frozen=True)
class Warehouse:
    warehouse: str
    name: str
    stock_check: AdaptorChoice | None = None  # None: the warehouse_stock resource (built-in: the stock file)
    fraud_check: AdaptorChoice | None = None  # None: the fraud_check resource (built-in: the CMP rules)


@dataclass(frozen=True)
class Manufacturer:
    manufacturer: str
    name: str
    enrolment: AdaptorChoice | None = None  # None: the device_manufacturer resource (built-in: the file drop)


@dataclass(frozen=True)
class HardwareConfig:
    catalogue: dict[str, Product]
    warehouses: dict[str, Warehouse]
    manufacturers: dict[str, Manufacturer]
    deny_names: tuple[str, ...]  # upper case, single spaces
    deny_postcodes: tuple[str, ...]  # normalised 'SW1A 1AA'
    stuck_order_days: int


def _quoted_price(value: object) -> object:
    if not isinstance(value, str):
        fail(f"must be a quoted decimal string like '499.00', got {value!r}")
    try:
        parse_amount(value)
    except MoneyError as exc:
        fail(str(exc))
    return value


def _name(value: str) -> str:
    return value if value.strip() else fail(f"must be a non-empty string, got {value!r}")


Name = Annotated[str, AfterValidator(_name)]


Setting = str | int | float | bool


class AdaptorEntry(FileModel):
    """`{adaptor: NAME, settings: {...}}`: which implementation serves this warehouse or manufacturer
    (defs/hardware_orders/adaptors.py lists them)."""

    adaptor: Annotated[str, AfterValidator(_name)]
    settings: dict[str, Setting] = {}


class WarehouseEntry(FileModel):
    warehouse: str
    name: Name | None = None
    stock_check: AdaptorEntry | None = None
    fraud_check: AdaptorEntry | None = None


class ManufacturerEntry(FileModel):
    manufacturer: str
    name: Name | None = None
    enrolment: AdaptorEntry | None = None


class ProductEntry(FileModel):
    sku: Annotated[str, matches(SKU, "must be 2-32 of A-Z, 0-9 and '-', starting with a letter or digit")]
    type: one_of(*PRODUCT_TYPES)
    description: Annotated[str, text(1, 80)]
    price: Annotated[str, BeforeValidator(_quoted_price)]
    currency: Annotated[str, matches(CURRENCY, lambda v: f"must be an ISO 4217 code like GBP, got {v!r}")] = "GBP"
    warehouse: str
    manufacturer: str | None = None


def _postcode(value: str) -> str:
    return value if uk_postcode_valid(value) else fail(f"{value!r} is not a UK postcode")


NonEmpty = Annotated[str, AfterValidator(lambda v: v if v.strip() else fail("must be a list of non-empty strings"))]


class FraudDenyListSection(FileModel):
    names: list[NonEmpty] = []
    postcodes: list[Annotated[NonEmpty, AfterValidator(_postcode)]] = []


class HardwareOrdersFile(FileModel):
    stuck_order_days: Annotated[int, between(1, 90)]
    warehouses: Annotated[list[WarehouseEntry], non_empty("must be a non-empty list of warehouses entries")]
    manufacturers: Annotated[list[ManufacturerEntry], non_empty("must be a non-empty list of manufacturers entries")]
    catalogue: Annotated[list[ProductEntry], non_empty("must be a non-empty list of products")]
    fraud_deny_list: FraudDenyListSection = FraudDenyListSection()


def _partners_with_feed(key: str, idents: list[str], feed: str, problems: Problems,
                        partners: dict[str, Partner] | None) -> None:
    seen: set[str] = set()
    id_field = key[:-1]
    for index, ident in enumerate(idents):
        if ident in seen:
            problems.add((key, index, id_field), "is defined twice")
        seen.add(ident)
        if partners is not None and (ident not in partners or feed not in partners[ident].feeds):
            problems.add((key, index, id_field),
                         f"{ident!r} is not a partner with feed {feed!r} in partners.yaml (its files need keys)")


def _adaptor(at: tuple, kind: str, entry: AdaptorEntry | None, problems: Problems) -> AdaptorChoice | None:
    """The configured adaptor, checked against ADAPTOR_SETTINGS: an unknown name, an unknown or missing setting
    or a setting of the wrong type is an error at `init` / `config validate`, not at the first order."""
    if entry is None:
        return None
    known = ADAPTOR_SETTINGS[kind]
    if entry.adaptor not in known:
        problems.add((*at, kind, "adaptor"), f"unknown {kind} adaptor {entry.adaptor!r}; known: "
                                             f"{', '.join(sorted(known))}")
        return None
    fields = known[entry.adaptor]
    allowed = f"; the {entry.adaptor} {kind} adaptor's settings: {', '.join(sorted(fields)) or 'none'}"
    for name, value in entry.settings.items():
        if name not in fields:
            problems.add((*at, kind, "settings", name), "is not a setting of this adaptor" + allowed)
        elif isinstance(value, bool) or not isinstance(value, fields[name][0]):
            what = "a number" if fields[name][0] == (int, float) else "a string"
            problems.add((*at, kind, "settings", name), f"must be {what}, got {value!r}")
    for name, (_, required) in sorted(fields.items()):
        if required and name not in entry.settings:
            problems.add((*at, kind, "settings", name), "is required" + allowed)
    return AdaptorChoice(kind, entry.adaptor, tuple(sorted(entry.settings.items())))


def _build(parsed: HardwareOrdersFile, problems: Problems, partners: dict[str, Partner] | None) -> HardwareConfig:
    _partners_with_feed("warehouses", [w.warehouse for w in parsed.warehouses], WAREHOUSE_FEED, problems, partners)
    _partners_with_feed("manufacturers", [m.manufacturer for m in parsed.manufacturers], MANUFACTURER_FEED, problems,
                        partners)
    warehouses = {w.warehouse: Warehouse(w.warehouse, w.name or w.warehouse,
                                         _adaptor(("warehouses", i), "stock_check", w.stock_check, problems),
                                         _adaptor(("warehouses", i), "fraud_check", w.fraud_check, problems))
                  for i, w in enumerate(parsed.warehouses)}
    manufacturers = {m.manufacturer: Manufacturer(m.manufacturer, m.name or m.manufacturer,
                                                  _adaptor(("manufacturers", i), "enrolment", m.enrolment, problems))
                     for i, m in enumerate(parsed.manufacturers)}
    products: dict[str, Product] = {}
    for index, p in enumerate(parsed.catalogue):
        if p.sku in products:
            problems.add(("catalogue", index, "sku"), "is defined twice; SKUs are unique")
        if p.warehouse not in warehouses:
            problems.add(("catalogue", index, "warehouse"), f"{p.warehouse!r} is not a configured warehouse; known: "
                                                            f"{', '.join(sorted(warehouses))}")
        if p.type == "HANDSET" and p.manufacturer not in manufacturers:
            problems.add(("catalogue", index, "manufacturer"), "a handset needs a configured manufacturer (who enrols "
                                                               f"it); known: {', '.join(sorted(manufacturers))}")
        if p.type != "HANDSET" and p.manufacturer is not None:
            problems.add(("catalogue", index, "manufacturer"), "only a handset is enrolled with its manufacturer")
        products[p.sku] = Product(p.sku, p.type, p.description, parse_amount(p.price), p.currency, p.warehouse,
                                  p.manufacturer)
    deny = parsed.fraud_deny_list
    return HardwareConfig(products, warehouses, manufacturers,
                          tuple(" ".join(n.upper().split()) for n in deny.names),
                          tuple(normalise_postcode(p) or "" for p in deny.postcodes), parsed.stuck_order_days)


HARDWARE_ORDERS_FILE = register(ConfigFile(
    FILE_NAME, HardwareOrdersFile, _build,
    {"warehouses": Entries("warehouse"), "manufacturers": Entries("manufacturer"), "catalogue": Entries("sku"),
     "fraud_deny_list": SECTION}))


def load_hardware_orders(config_dir: Path, partners: dict[str, Partner] | None = None) -> HardwareConfig:
    """`partners` (from partners.yaml), when given, must hold every warehouse and manufacturer with its feed."""
    return HARDWARE_ORDERS_FILE.load(config_dir, partners)
