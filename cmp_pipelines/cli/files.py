"""`files` (encrypt/decrypt a partner file) and `bacs check` (a Standard 18 file, independently)."""

from __future__ import annotations

from pathlib import Path

import click

from cmp_pipelines.cli.common import _dd_config, _fail
from cmp_pipelines.core.settings import paths


@click.group()
def files() -> None:
    """Encrypt or decrypt a partner file with that partner's keys."""


def _crypt(encrypt: bool, partner: str, source: Path, target: Path) -> None:
    from cmp_pipelines.core.crypto.keyring import PartnerKeyring
    from cmp_pipelines.core.files.errors import FileRejected

    keyring = PartnerKeyring(paths().keys_dir)
    try:
        data = source.read_bytes()
        out = keyring.encrypt(partner, data) if encrypt else keyring.decrypt(partner, data)
    except FileRejected as exc:
        _fail(f"{source}: {exc.message}")
    except OSError as exc:
        _fail(f"{source}: {exc.strerror}")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.part")  # a sensor never sees a half-written file
    partial.write_bytes(out)
    partial.replace(target)
    click.echo(f"{'encrypted' if encrypt else 'decrypted'} {source} -> {target}")


@files.command("encrypt")
@click.option("--partner", required=True)
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("target", type=click.Path(path_type=Path))
def files_encrypt(partner: str, source: Path, target: Path) -> None:
    """Encrypt SOURCE for PARTNER into TARGET (Fernet, newest key)."""
    _crypt(True, partner, source, target)


@files.command("decrypt")
@click.option("--partner", required=True)
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("target", type=click.Path(path_type=Path))
def files_decrypt(partner: str, source: Path, target: Path) -> None:
    """Decrypt SOURCE with any of PARTNER's keys into TARGET."""
    _crypt(False, partner, source, target)


@click.group()
def bacs() -> None:
    """Bacs submissions: check a Standard 18 file against the published layout."""


@bacs.command("check")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--partner", default=None, help="Whose keys decrypt an encrypted file (default: the Bacs bureau).")
def bacs_check(file: Path, partner: str | None) -> None:
    """Check FILE, a Standard 18 submission (plaintext, or encrypted for the bureau), and print every problem
    with its line and columns; exit 1 when there is any."""
    from cmp_pipelines.core.crypto.keyring import PartnerKeyring
    from cmp_pipelines.defs.direct_debit.bacs_check import check_text

    data = file.read_bytes()
    if data.startswith(b"gAAAAA"):  # a Fernet token
        partner = partner or _dd_config().bureau
        try:
            data = PartnerKeyring(paths().keys_dir).decrypt(partner, data)
        except Exception as exc:  # noqa: BLE001 - any failure to decrypt is reported the same way
            _fail(f"{file}: cannot decrypt with {partner}'s keys ({type(exc).__name__})")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        _fail(f"{file}: line {line}: byte {data[exc.start]:#04x} is not ASCII; a Standard 18 file is ASCII only")
    problems = check_text(text)
    for problem in problems:
        click.echo(str(problem))
    if problems:
        _fail(f"{file}: {len(problems)} problem(s); a bureau would refuse this submission")
    records = max(text.count("\n") - 7, 0)
    click.echo(f"{file}: conforms to Standard 18 ({records} data record(s))")


@files.command("stripe-batch")
@click.argument("extract")
@click.option("--partner", default="CARDPAY", show_default=True,
              help="The card provider partner: whose keys decrypt the extract and encrypt the rejection file.")
@click.option("--attempts", default=3, show_default=True, help="Tries per record on a timeout or a 5xx (same key).")
def files_stripe_batch(extract: str, partner: str, attempts: int) -> None:
    """Charge a recurring card extract (EXTRACT: its path under the data folder, e.g.
    outbound/card_payments/CARDPAY/RCX-20261202-CARDPAY-GBP.json.enc) at Stripe and write the declines as a card
    rejection file in inbound/card_rejections/<partner>/ (README "Stripe")."""
    from cmp_pipelines.core.crypto.keyring import PartnerKeyring
    from cmp_pipelines.core.files.errors import FileRejected
    from cmp_pipelines.core.stripe_batch import ExtractError, run_stripe_batch
    from cmp_pipelines.core.stripe_provider import stripe_from_config
    from cmp_pipelines.lib.resources.file_store import configured_file_store

    try:
        provider = stripe_from_config(paths().config_dir, paths().keys_dir)
        result = run_stripe_batch(configured_file_store(), PartnerKeyring(paths().keys_dir), extract, provider,
                                  partner=partner, attempts=attempts)
    except FileRejected as exc:
        _fail(f"{extract}: {exc.message}")
    except (ExtractError, ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    counts = ", ".join(f"{result.count(o)} {o.lower()}" for o in sorted(set(result.outcomes.values())))
    click.echo(f"{result.file_id}: {counts or 'no records'}")
    click.echo(f"rejection file: {result.rejection_path or '(none: nothing declined)'}")
    click.echo(f"report: {result.report_path}")
