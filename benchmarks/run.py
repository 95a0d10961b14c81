"""Performance harness for the non-recurring payments flow (`make bench`): prints figures, never asserts.

Each measured phase runs in a fresh interpreter (this script re-invoked with `--phase`), so peak RSS is
per phase and every phase pays the same import costs a Dagster run process would. Phases hand their
figures back as JSON files in the work directory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
PARTNER = "PAYPOINT"
TARGETS = {"rate": 150_000, "check_s": 5.0, "rss_gb": 3.0, "floor_ratio": 1.5}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _env(workdir: Path, data_dir: Path) -> None:
    """Point the package at this run's folders before it is imported, so nothing touches ./data."""
    os.environ["CMP_DATA_DIR"] = str(data_dir)
    os.environ["CMP_KEYS_DIR"] = str(workdir / "keys")
    os.environ["DAGSTER_HOME"] = str(workdir / "dagster_home")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


# ---- phase: setup (seeded store template, keys, encrypted file) -----------------------------------


def _payments(records: int, accounts: int, seed: int, when: datetime) -> list[dict]:
    """Vectorised draws, one comprehension: ~4 s for a million records instead of ~15 s with `random`."""
    import numpy as np

    from cmp_pipelines.services.demo import METHODS

    rng = np.random.default_rng(seed)
    account = rng.integers(1, accounts + 1, records).tolist()
    own_invoice = (rng.random(records) < 0.6).tolist()
    minor = rng.integers(100, 20001, records).tolist()
    dated = (rng.random(records) >= 0.03).tolist()
    method = rng.integers(0, len(METHODS), records).tolist()
    reference = [f"PP {r}" if keep else None for r, keep in zip(
        rng.integers(1000, 10000, records).tolist(), (rng.random(records) < 0.5).tolist(), strict=True)]
    stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    payments = [
        {"record_id": f"R{k}", "account_number": f"ACC{a:08d}",
         "invoice_number": f"INV{a:08d}1" if inv else None, "amount": f"{m // 100}.{m % 100:02d}",
         "payment_date": stamp if d else None, "payment_method": METHODS[me], "reference": ref}
        for k, a, inv, m, d, me, ref in zip(
            range(1, records + 1), account, own_invoice, minor, dated, method, reference, strict=True)
    ]
    # A handful of bad records, one of each kind the rules reject or divert, spread through the file.
    bad = [
        {"amount": "-5.00"},
        {"amount": "12.345"},
        {"reference": "card 4111 1111 1111 1111"},
        {"account_number": "ACCX9999999", "invoice_number": None},
        {"invoice_number": "INV000000011", "account_number": f"ACC{min(accounts, 2):08d}"},
        {"record_id": "R1"},
        {"payment_method": "CRYPTO"},
        {"payment_date": "2026-02-30T10:00:00Z"},
    ]
    if records >= 10 * len(bad):
        for index, change in enumerate(bad):
            payments[(index + 1) * records // (len(bad) + 1)].update(change)
    return payments


def phase_setup(args: argparse.Namespace) -> dict:
    workdir = Path(args.workdir)
    template = workdir / "template"
    _env(workdir, template)
    import orjson

    from cmp_pipelines.configuration import load_partners, load_probes
    from cmp_pipelines.formats.encryption import PartnerKeyring
    from cmp_pipelines.services.demo import nrp_document, seed_accounts
    from cmp_pipelines.services.non_recurring import partition_key, sha256_hex
    from cmp_pipelines.services.reference import sync_reference_data
    from cmp_pipelines.settings import paths
    from cmp_pipelines.store.connection import connect

    now = datetime.now(UTC)
    started = time.perf_counter()
    config = paths().config_dir
    with connect(template / "cmp.duckdb") as con:
        sync_reference_data(con, load_partners(config), load_probes(config))
        invoices = seed_accounts(con, args.accounts, args.seed, now)
        con.execute("CHECKPOINT")
    seeded_s = time.perf_counter() - started

    started = time.perf_counter()
    file_id = f"{PARTNER}-BENCH-{args.records}-{args.seed}"
    payments = _payments(args.records, args.accounts, args.seed, now)
    plaintext = orjson.dumps(nrp_document(PARTNER, file_id, payments, now))
    del payments
    keyring = PartnerKeyring(workdir / "keys")
    keyring.init_keys(PARTNER)
    ciphertext = keyring.encrypt(PARTNER, plaintext)
    file_name = f"{file_id}.json.enc"
    (workdir / file_name).write_bytes(ciphertext)
    generated_s = time.perf_counter() - started
    return {
        "file_name": file_name,
        "file_id": partition_key(PARTNER, file_name, sha256_hex(ciphertext)),
        "plaintext_bytes": len(plaintext),
        "ciphertext_bytes": len(ciphertext),
        "invoices": invoices,
        "seeded_s": seeded_s,
        "generated_s": generated_s,
    }


# ---- phase: flow (the timed path, exactly the calls the four assets make) ----------------------------


def _open_flow(workdir: Path, data_dir: Path, wrap=None):
    """The flow object the assets build, over this phase's own copy of the store and inbound file."""
    _env(workdir, data_dir)
    from cmp_pipelines.configuration import load_partners
    from cmp_pipelines.formats.encryption import PartnerKeyring
    from cmp_pipelines.resources.file_store import LocalFileStore
    from cmp_pipelines.services.non_recurring import NonRecurringPayments
    from cmp_pipelines.settings import paths
    from cmp_pipelines.store.connection import connect

    @contextmanager
    def opened():
        with connect(paths().database) as con:
            files = LocalFileStore(base_dir=str(data_dir))
            keyring = PartnerKeyring(paths().keys_dir)
            if wrap:
                con, files = wrap(con), wrap(files)
            yield con, NonRecurringPayments(con, files, keyring, load_partners(paths().config_dir))

    return opened()


def phase_flow(args: argparse.Namespace) -> dict:
    workdir, meta = Path(args.workdir), json.loads((Path(args.workdir) / "setup.json").read_text())
    started = time.perf_counter()
    opened = _open_flow(workdir, workdir / "flow")
    with opened as (con, flow):
        ready_s = time.perf_counter() - started
        rss_ready = peak_rss_mb()
        t0 = time.perf_counter()
        load = flow.load(meta["file_id"])
        t1 = time.perf_counter()
        posted = flow.post(load)
        t2 = time.perf_counter()
        posting_path = flow.write_posting_file(posted)
        t3 = time.perf_counter()
        ack_path = flow.acknowledge(load)
        t4 = time.perf_counter()
        ledger_rows = con.execute("SELECT count(*) FROM ledger_postings").fetchone()[0]
    data = workdir / "flow"
    return {
        "imports_and_connect_s": ready_s,
        "rss_after_imports_mb": rss_ready,
        "steps": {"load": t1 - t0, "post": t2 - t1, "posting file": t3 - t2, "acknowledge": t4 - t3},
        "total_s": t4 - t0,
        "peak_rss_mb": peak_rss_mb(),
        "records": load.record_count,
        "accepted": load.accepted_count,
        "rejected": load.rejected_count,
        "allocations": load.allocations,
        "rejections": load.rejections,
        "postings": posted.posting_count,
        "ledger_rows": ledger_rows,
        "posting_file_bytes": (data / posting_path).stat().st_size,
        "ack_bytes": (data / ack_path).stat().st_size,
    }


# ---- phase: profile (the same path again, on a fresh copy, with every inner call timed) ----------------


class Spans:
    """Nested wall-clock spans aggregated by path, so the breakdown shows where load's seconds go."""

    def __init__(self) -> None:
        self.stack: list[str] = []
        self.totals: dict[tuple[str, ...], list[float]] = {}

    @contextmanager
    def span(self, name: str):
        self.stack.append(name)
        entry = self.totals.setdefault(tuple(self.stack), [0, 0.0])  # first-seen order = tree order
        started = time.perf_counter()
        try:
            yield
        finally:
            entry[0] += 1
            entry[1] += time.perf_counter() - started
            self.stack.pop()

    def wrap(self, name: str, fn):
        def timed(*a, **kw):
            with self.span(name):
                return fn(*a, **kw)

        return timed


def _sql_label(sql: str) -> str:
    words = " ".join(sql.split())
    if words.startswith("INSERT INTO nrp_records"):
        return "SQL rules + match INSERT nrp_records"
    if words.startswith("COPY"):
        return "SQL COPY to JSON"
    return "SQL " + (words[:48] + "..." if len(words) > 51 else words)


class _Proxy:
    """Times every call of the wrapped object's methods (DuckDB's connection cannot be monkeypatched)."""

    def __init__(self, target, spans: Spans, kind: str):
        self._target, self._spans, self._kind = target, spans, kind

    def __getattr__(self, name):
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr
        if self._kind == "sql" and name == "execute":
            def execute(sql, *a, **kw):
                with self._spans.span(_sql_label(sql)):
                    attr(sql, *a, **kw)
                return self  # execute returns the connection; keep later calls on the proxy
            return execute
        return self._spans.wrap(f"{self._kind}.{name}", attr)


def phase_profile(args: argparse.Namespace) -> dict:
    workdir, meta = Path(args.workdir), json.loads((Path(args.workdir) / "setup.json").read_text())
    _env(workdir, workdir / "profile")
    import duckdb

    from cmp_pipelines.formats import encryption, nrp_file
    from cmp_pipelines.services import non_recurring as nr

    spans = Spans()

    def instrument(owner: object, names: tuple[str, ...], prefix: str = "") -> None:
        """Wrap what exists: a renamed internal drops out of the breakdown instead of breaking the run."""
        for name in names:
            if hasattr(owner, name):
                setattr(owner, name, spans.wrap(prefix + name, getattr(owner, name)))

    instrument(nrp_file, ("parse_document", "validate_envelope", "payment_columns", "check_control_totals"),
               "nrp_file.")
    instrument(nr, ("sha256_hex", "first_error"))
    instrument(encryption.PartnerKeyring, ("decrypt", "encrypt"), "keyring.")
    instrument(nr.NonRecurringPayments,
               ("_guard_schema_agreement", "_load_result", "_archive", "_copy_json"))

    def wrap(target):
        kind = "sql" if isinstance(target, duckdb.DuckDBPyConnection) else "files"
        return _Proxy(target, spans, kind)

    with _open_flow(workdir, workdir / "profile", wrap) as (_con, flow):
        with spans.span("load"):
            load = flow.load(meta["file_id"])
        with spans.span("post"):
            posted = flow.post(load)
        with spans.span("posting file"):
            flow.write_posting_file(posted)
        with spans.span("acknowledge"):
            flow.acknowledge(load)
    return {"spans": [[list(k), v[0], v[1]] for k, v in spans.totals.items()], "peak_rss_mb": peak_rss_mb()}


# ---- phase: expectations (the asset check's query and Great Expectations validation) -----------------


def phase_expectations(args: argparse.Namespace) -> dict:
    workdir, meta = Path(args.workdir), json.loads((Path(args.workdir) / "setup.json").read_text())
    _env(workdir, workdir / "flow")
    from cmp_pipelines.checks.nrp_expectations import SUITE
    from cmp_pipelines.services.expectations import load_suite, validate_frame
    from cmp_pipelines.settings import paths
    from cmp_pipelines.store.connection import connect
    from cmp_pipelines.store.nrp_records import batch_frame

    suite = load_suite(paths().expectations_dir, SUITE)
    started = time.perf_counter()
    with connect(paths().database, read_only=True) as con:
        frame = batch_frame(con, meta["file_id"])
    query_s = time.perf_counter() - started
    rss_frame = peak_rss_mb()
    started = time.perf_counter()
    import great_expectations  # noqa: F401 - timed apart: a fresh run process pays it before validating

    import_s = time.perf_counter() - started
    started = time.perf_counter()
    outcomes = validate_frame(frame, suite)
    validate_s = time.perf_counter() - started
    return {
        "rows": len(frame),
        "query_s": query_s,
        "import_s": import_s,
        "validate_s": validate_s,
        "met": sum(o.success for o in outcomes),
        "expectations": len(outcomes),
        "rss_after_query_mb": rss_frame,
        "peak_rss_mb": peak_rss_mb(),
    }


PHASES = {
    "setup": phase_setup, "flow": phase_flow, "profile": phase_profile, "expectations": phase_expectations,
}


# ---- orchestration ------------------------------------------------------------------------------------


def _run(command: list[str], result: Path, label: str) -> dict:
    print(f"  {label} ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=PROJECT)
    data = json.loads(result.read_text())
    data["wall_s"] = time.perf_counter() - started
    return data


def _phase(args: argparse.Namespace, name: str) -> dict:
    result = Path(args.workdir) / f"{name}.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--phase", name, "--workdir", args.workdir,
               "--records", str(args.records), "--accounts", str(args.accounts), "--seed", str(args.seed)]
    return _run(command, result, name)


def _stage(workdir: Path, name: str, meta: dict) -> None:
    """A fresh copy of the seeded store plus the file dropped in the partner's inbound folder (untimed)."""
    data = workdir / name
    shutil.rmtree(data, ignore_errors=True)
    inbound = data / "inbound" / "nrp" / PARTNER
    inbound.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(workdir / "template" / "cmp.duckdb", data / "cmp.duckdb")
    shutil.copyfile(workdir / meta["file_name"], inbound / meta["file_name"])


def _tree(spans: list) -> list[str]:
    """Indented span tree in first-seen order; 'untracked' is a parent's time its children do not explain."""
    totals = {tuple(k): (count, seconds) for k, count, seconds in spans}
    children: dict[tuple, float] = {}
    for key in totals:
        if len(key) > 1:
            children[key[:-1]] = children.get(key[:-1], 0.0) + totals[key][1]
    lines = []
    for key in totals:
        count, seconds = totals[key]
        if seconds < 0.005 and len(key) > 1:
            continue
        label = "  " * (len(key) - 1) + key[-1] + (f" x{count}" if count > 1 else "")
        lines.append(f"    {label:<60} {seconds:8.3f} s")
        rest = seconds - children.get(key, 0.0)
        if key in children and rest >= 0.01:
            lines.append(f"    {'  ' * len(key) + '(rest, not timed apart)':<60} {rest:8.3f} s")
    return lines


def _median(runs: list[dict]) -> dict:
    """The run with the median total, whole, so its step times add up to the figure shown."""
    return sorted(runs, key=lambda run: run["total_s"])[(len(runs) - 1) // 2]


def _report(
    args: argparse.Namespace, meta: dict, flows: list[dict], check: dict | None, profile: dict | None,
    floors: list[dict],
) -> None:
    import duckdb

    flow, floor = dict(_median(flows)), dict(_median(floors)) if floors else None
    flow["peak_rss_mb"] = max(run["peak_rss_mb"] for run in flows)
    if floor:
        floor["peak_rss_mb"] = max(run["peak_rss_mb"] for run in floors)
    n = flow["records"]
    rate = n / flow["total_s"]
    gb = flow["peak_rss_mb"] / 1024
    print()
    print(f"NRP benchmark: {n:,} records against {args.accounts:,} accounts (seed {args.seed}), "
          f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, DuckDB {duckdb.__version__}")
    print(f"  file: {meta['plaintext_bytes'] / 1e6:.0f} MB JSON, {meta['ciphertext_bytes'] / 1e6:.0f} MB "
          f"encrypted; untimed setup: seeding {meta['seeded_s']:.1f} s, "
          f"generating+encrypting {meta['generated_s']:.1f} s")
    print(f"  outcome: {flow['accepted']:,} accepted, {flow['rejected']:,} rejected, allocations "
          f"{flow['allocations']}, rejections {flow['rejections']}")
    def totals(runs: list[dict]) -> str:
        return " ".join(f"{run['total_s']:.2f}" for run in runs)

    floor_runs = f"; floor {totals(floors)}" if floors else ""
    print(f"  timed runs (s), median shown: flow {totals(flows)}{floor_runs}")
    print()
    header = f"  {'figure':<50} {'value':>14} {'target':>14} {'value/target':>13}"
    print(header)
    print("  " + "-" * (len(header) - 2))

    def row(label: str, value: str, target: str = "", ratio: float | None = None) -> None:
        shown = "" if ratio is None else f"{ratio:.2f}"
        print(f"  {label:<50} {value:>14} {target:>14} {shown:>13}")

    row("(a) inbound file -> acknowledgement, records/s", f"{rate:,.0f}", f">= {TARGETS['rate']:,}",
        rate / TARGETS["rate"])
    row("    same, seconds", f"{flow['total_s']:.2f} s", f"<= {n / TARGETS['rate']:.2f} s")
    row("    before it, untimed: imports + connect", f"{flow['imports_and_connect_s']:.2f} s")
    if check:
        row("(b) expectation suite check: validate_frame", f"{check['validate_s']:.2f} s",
            f"<= {TARGETS['check_s']:.0f} s", check["validate_s"] / TARGETS["check_s"])
        row("    great_expectations import, timed apart", f"{check['import_s']:.2f} s")
        row("    check's query to a DataFrame", f"{check['query_s']:.2f} s")
        whole = check["query_s"] + check["import_s"] + check["validate_s"]
        row("    whole check as a fresh run process pays it", f"{whole:.2f} s",
            f"<= {TARGETS['check_s']:.0f} s", whole / TARGETS["check_s"])
    row("(c) peak RSS of the flow process", f"{gb:.2f} GB", f"<= {TARGETS['rss_gb']:.0f} GB",
        gb / TARGETS["rss_gb"])
    row("    of which imports + connect", f"{flow['rss_after_imports_mb'] / 1024:.2f} GB")
    if floor:
        ratio = flow["total_s"] / floor["total_s"]
        row("(d) time of (a) / time of the floor", f"{ratio:.2f}x", f"<= {TARGETS['floor_ratio']}x",
            ratio / TARGETS["floor_ratio"])
        row("    floor seconds", f"{floor['total_s']:.2f} s", f"{n / floor['total_s']:,.0f}/s")
        row("    floor peak RSS", f"{floor['peak_rss_mb'] / 1024:.2f} GB")
    print()
    print(f"  {'flow steps (median run)':<44}{'floor steps (median run)' if floor else ''}")
    left = [f"    {name:<20} {seconds:7.2f} s" for name, seconds in flow["steps"].items()]
    right = [f"{name:<20} {seconds:7.2f} s" for name, seconds in (floor or {}).get("steps", {}).items()]
    for index in range(max(len(left), len(right))):
        print(f"{left[index] if index < len(left) else '':<46}{right[index] if index < len(right) else ''}")
    if floor:
        print()
        print(f"  {'outputs':<22} {'flow':>14} {'floor':>14}")
        for key in ("records", "accepted", "postings", "posting_file_bytes", "ack_bytes"):
            print(f"    {key:<20} {flow[key]:>14,} {floor[key]:>14,}")
    if profile:
        total = sum(seconds for key, _, seconds in profile["spans"] if len(key) == 1)
        print()
        print(f"  inside the steps (separate profiling run on a fresh copy, {total:.2f} s with timers;"
              " calls >= 5 ms)")
        for line in _tree(profile["spans"]):
            print(line)
    phases = {"flow": flow, "expectations": check, "profile": profile, "floor": floor}
    print()
    print("  peak RSS per phase: " + ", ".join(
        f"{name} {data['peak_rss_mb'] / 1024:.2f} GB" for name, data in phases.items() if data))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--accounts", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--workdir", help="default: a fresh folder under benchmarks/out/, removed afterwards")
    parser.add_argument("--keep", action="store_true", help="keep the auto-created work folder")
    parser.add_argument("--repeat", type=int, default=3,
                        help="timed flow and floor runs, interleaved; figures are the median run (default 3)")
    parser.add_argument("--skip", action="append", default=[], choices=["profile", "expectations", "floor"],
                        help="leave out a phase (repeatable)")
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.phase:
        result = PHASES[args.phase](args)
        (Path(args.workdir) / f"{args.phase}.json").write_text(json.dumps(result))
        return

    created = args.workdir is None
    if created:
        (HERE / "out").mkdir(exist_ok=True)
        args.workdir = tempfile.mkdtemp(prefix="bench-", dir=HERE / "out")
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"benchmark work folder: {workdir}", file=sys.stderr, flush=True)
    try:
        meta = _phase(args, "setup")
        (workdir / "setup.json").write_text(json.dumps(meta))
        result = workdir / "floor.json"
        floor_command = [
            sys.executable, str(HERE / "nrp_floor.py"), "--input", str(workdir / meta["file_name"]),
            "--key-file", str(workdir / "keys" / f"{PARTNER}.keys"), "--accounts", str(args.accounts),
            "--seed", str(args.seed), "--workdir", str(workdir / "floor"), "--result", str(result),
        ]
        flows, floors = [], []
        for _ in range(max(1, args.repeat)):  # interleaved, so drift in the machine hits both alike
            _stage(workdir, "flow", meta)
            flows.append(_phase(args, "flow"))
            if "floor" not in args.skip:
                floors.append(_run(floor_command, result, "floor"))
        check = None if "expectations" in args.skip else _phase(args, "expectations")
        profile = None
        if "profile" not in args.skip:
            _stage(workdir, "profile", meta)
            profile = _phase(args, "profile")
        _report(args, meta, flows, check, profile, floors)
    finally:
        if created and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
