"""Bacs Standard 18: fixed-width 100-character data records between 80-character labels.

Layout written and read here (columns 1-based, inclusive):

    VOL1  1-4 'VOL1', 5-10 volume serial, 11 '0', 42-47 service user number, 80 '1'
    HDR1  1-4, 5-21 file id: 5 'A', 6-11 SUN, 12 'S', 13-14 blank, 15 blank, 16-21 SUN; 22-27 set id (the VOL1
          serial), 28-31 file section '0001', 32-35 file sequence '0001', 42-47 creation ' YYDDD',
          48-53 expiry ' YYDDD', 55-60 block count '000000'
    HDR2  1-4, 5 'F', 6-10 '02000' block length, 11-15 '00100' record length, 51-52 '00'
    UHL1  1-4, 5-10 processing date ' YYDDD' (the day Bacs processes the file), 11-20 '999999    ', 21-22 '00',
          23-28 '000000', 29-37 work code '1 DAILY  ' or '4 MULTI  ' (AUDDIS is told apart by its 0N/0C/0S records,
          not here), 38-40 file number (the submission's number on its day)
    data  1-6 destination sort code, 7-14 destination account, 15 account type '0', 16-17 transaction code,
          18-23 originating sort code, 24-31 originating account, 32-35 free format, 36-46 amount in pence
          (11 digits, zero-filled), 47-64 service user name, 65-82 reference, 83-100 destination account name
    EOF1, EOF2  as HDR1, HDR2
    UTL1  1-4, 5-17 debit value total, 18-30 credit value total, 31-37 debit count, 38-44 credit count (pence,
          zero-filled). Debits are every data record but the contra; credits are the `99` contra records.

Records end with '\\n'. Text fields use the Bacs character set (A-Z 0-9 space . / & -): the writer folds accents
and transliterates (`Zoë Müller` -> `ZOE MULLER`, `ß` -> `SS`), drops apostrophes (`O'Neil` -> `ONEIL`), upper-cases,
replaces what is left outside the set with a space and truncates to the field; the reader refuses anything else.
Sources: README "Bacs conventions".
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date, timedelta

BACS_TEXT = re.compile(r"^[A-Z0-9 ./&-]*$")
_NOT_BACS = re.compile(r"[^A-Z0-9 ./&-]")
_NOT_ASCII = re.compile(r"[^\x00-\x7f]")
DEBIT_CODES = {"01": "first collection", "17": "regular collection", "18": "re-presentation",
               "19": "final collection"}
AUDDIS_CODES = {"0N": "new or reinstated instruction", "0C": "cancelled instruction", "0S": "conversion"}
CONTRA = "99"
TRANSACTION_CODES = {**DEBIT_CODES, **AUDDIS_CODES, CONTRA: "contra"}
LABELS = ("VOL1", "HDR1", "HDR2", "UHL1")
TRAILERS = ("EOF1", "EOF2", "UTL1")
WORK_CODES = ("1 DAILY", "4 MULTI")
# Letters NFKD does not decompose into a base letter plus accents, and apostrophes (dropped, not blanked).
_TRANSLITERATE = {"ß": "SS", "ẞ": "SS", "Æ": "AE", "æ": "AE", "Œ": "OE", "œ": "OE", "Ø": "O", "ø": "O", "Ł": "L",
                  "ł": "L", "Đ": "D", "đ": "D", "Ð": "D", "ð": "D", "Þ": "TH", "þ": "TH", "'": "", "’": "", "‘": "",
                  "`": ""}
_TRANSLITERATE_TABLE = str.maketrans(_TRANSLITERATE)


class Standard18Error(ValueError):
    """A malformed file: the line and column (1-based) at fault, and why."""

    def __init__(self, line: int, column: int, message: str):
        super().__init__(f"line {line}, column {column}: {message}")
        self.line, self.column, self.message = line, column, message


@dataclass(frozen=True)
class DataRecord:
    destination_sort_code: str
    destination_account: str
    transaction_code: str
    originating_sort_code: str
    originating_account: str
    amount_pence: int
    service_user_name: str
    reference: str
    destination_name: str
    free_format: str = "    "


@dataclass(frozen=True)
class Submission:
    service_user_number: str
    service_user_name: str
    originating_sort_code: str
    originating_account: str
    processing_date: date  # the day Bacs processes the file (UHL1), a Bacs working day
    work_code: str = "1 DAILY"  # '1 DAILY' or '4 MULTI', for AUDDIS and collections alike
    volume_serial: str = "000001"  # unique per service user and day (defs/direct_debit/submission.allocate_serial)
    file_number: int = 1  # UHL1 38-40: the submission's number on its day
    created_on: date | None = None  # HDR1 creation date (the input day); the processing date when not given


@dataclass(frozen=True)
class Standard18File:
    submission: Submission
    records: tuple[DataRecord, ...]  # the contra included
    debit_total: int
    credit_total: int
    debit_count: int
    credit_count: int


def fold(value: str | None) -> str:
    """Accents folded and letters transliterated, so a name keeps its letters: `Zoë Müller` -> `Zoe Muller`."""
    decomposed = unicodedata.normalize("NFKD", (value or "").translate(_TRANSLITERATE_TABLE))
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def bacs_text(value: str | None, width: int) -> str:
    """Folded, upper-cased, Bacs character set only, truncated and space-padded to `width` (`bacs_text_sql`)."""
    return _NOT_BACS.sub(" ", _NOT_ASCII.sub(" ", fold(value)).upper())[:width].ljust(width)


def fold_sql(column: str) -> str:
    """`fold` in DuckDB: the transliterations, then strip_accents (in the core); only for the few values that hold
    anything but plain letters, digits and the Bacs punctuation, so millions of plain names cost one regex each."""
    expression = f"coalesce({column}, '')"
    for source, target in _TRANSLITERATE.items():
        quoted = source.replace("'", "''")
        expression = f"replace({expression}, '{quoted}', '{target}')"
    return (f"CASE WHEN regexp_full_match(coalesce({column}, ''), '[A-Za-z0-9 ./&-]*') THEN coalesce({column}, '') "
            f"ELSE strip_accents({expression}) END")


def bacs_text_sql(column: str, width: int) -> str:
    """The same as `bacs_text`, as a DuckDB expression, for writing millions of records in SQL. A value of plain
    letters, digits and Bacs punctuation (nearly every one) is only upper-cased: the folding and the two
    replacements would leave it as it is, and skipping them is a third of a million-record file's writing."""
    value = f"coalesce({column}, '')"
    cleaned = f"regexp_replace(upper(regexp_replace({fold_sql(column)}, '[^\\x00-\\x7f]', ' ', 'g')), " \
              f"'[^A-Z0-9 ./&-]', ' ', 'g')"
    plain = f"CASE WHEN regexp_full_match({value}, '[A-Za-z0-9 ./&-]*') THEN upper({value}) ELSE {cleaned} END"
    return f"rpad(left({plain}, {width}), {width}, ' ')"


def data_record_sql(dest_sort: str, dest_account: str, code: str, orig_sort: str, orig_account: str, amount: str,
                    su_name: str, reference: str, name: str) -> str:
    """One data record as a DuckDB expression over validated columns (digits already checked)."""
    return (f"{dest_sort} || {dest_account} || '0' || {code} || {orig_sort} || {orig_account} || '    ' || "
            f"lpad(({amount})::VARCHAR, 11, '0') || {bacs_text_sql(su_name, 18)} || {bacs_text_sql(reference, 18)} "
            f"|| {bacs_text_sql(name, 18)}")


def julian(day: date) -> str:
    return f" {day:%y}{day.timetuple().tm_yday:03d}"


def from_julian(text: str) -> date:
    year, day_of_year = 2000 + int(text[1:3]), int(text[3:6])
    if not 1 <= day_of_year <= (366 if year % 4 == 0 else 365):
        raise ValueError(f"day of year {day_of_year} does not exist in {year}")
    return date(year, 1, 1) + timedelta(days=day_of_year - 1)


def _digits(value: str, width: int, what: str) -> str:
    if not (len(value) == width and value.isdigit()):
        raise ValueError(f"{what} must be {width} digits, got {value!r}")
    return value


def data_record(r: DataRecord) -> str:
    if r.transaction_code not in TRANSACTION_CODES:
        raise ValueError(f"transaction code {r.transaction_code!r} is not a Standard 18 direct debit code")
    if not 0 <= r.amount_pence <= 99_999_999_999:
        raise ValueError(f"amount {r.amount_pence} pence does not fit 11 digits")
    return (
        _digits(r.destination_sort_code, 6, "destination sort code")
        + _digits(r.destination_account, 8, "destination account")
        + "0" + r.transaction_code
        + _digits(r.originating_sort_code, 6, "originating sort code")
        + _digits(r.originating_account, 8, "originating account")
        + bacs_text(r.free_format, 4) + f"{r.amount_pence:011d}"
        + bacs_text(r.service_user_name, 18) + bacs_text(r.reference, 18) + bacs_text(r.destination_name, 18)
    )


def _file_id(sun: str) -> str:
    """Columns 5-21: 'A', the SUN (6-11), 'S', two blanks, a blank in 15, the SUN again in 16-21."""
    return f"A{sun}S   {sun}"


def _hdr1(kind: str, s: Submission) -> str:
    return (kind + _file_id(s.service_user_number) + s.volume_serial + "0001" + "0001" + "    " + "  "
            + julian(s.created_on or s.processing_date)
            + julian((s.created_on or s.processing_date) + timedelta(days=30)) + " " + "000000"
            + " " * 13 + " " * 7)


def _hdr2(kind: str) -> str:
    return kind + "F" + "02000" + "00100" + " " * 35 + "00" + " " * 28


def check_submission(s: Submission) -> None:
    _digits(s.service_user_number, 6, "service user number")
    _digits(s.volume_serial, 6, "volume serial")
    if s.work_code not in WORK_CODES:
        raise ValueError(f"work code {s.work_code!r} is not one of {', '.join(WORK_CODES)}")
    if not 1 <= s.file_number <= 999:
        raise ValueError(f"file number {s.file_number} does not fit 3 digits")


def labels(s: Submission) -> list[str]:
    check_submission(s)
    return [
        "VOL1" + s.volume_serial + "0" + " " * 20 + " " * 6 + " " * 4 + s.service_user_number + " " * 4
        + " " * 28 + "1",
        _hdr1("HDR1", s),
        _hdr2("HDR2"),
        "UHL1" + julian(s.processing_date) + "999999    " + "00" + "000000" + s.work_code.ljust(9)
        + f"{s.file_number:03d}" + " " * 7 + " " * 3 + " " * 30,
    ]


def trailers(s: Submission, debit_total: int, credit_total: int, debit_count: int, credit_count: int,
             instruction_count: int | None = None) -> list[str]:
    """UTL1: values and item counts; an AUDDIS file has no items, its DDI count goes in columns 53-59."""
    ddis = " " * 7 if instruction_count is None else f"{instruction_count:07d}"
    return [
        _hdr1("EOF1", s),
        _hdr2("EOF2"),
        "UTL1" + f"{debit_total:013d}{credit_total:013d}{debit_count:07d}{credit_count:07d}" + " " * 8 + ddis
        + " " * 21,
    ]


def contra(s: Submission, debit_total: int) -> DataRecord:
    """The `99` record crediting the service user's own account with the file's debits."""
    return DataRecord(s.originating_sort_code, s.originating_account, CONTRA, s.originating_sort_code,
                      s.originating_account, debit_total, s.service_user_name, "CONTRA", s.service_user_name)


def write(s: Submission, records: list[DataRecord], with_contra: bool) -> str:
    """The whole file; a collection file gets its contra, an AUDDIS file (zero amounts) does not."""
    check_submission(s)
    debit_total = sum(r.amount_pence for r in records)
    body = list(records) + ([contra(s, debit_total)] if with_contra else [])
    credit_total = debit_total if with_contra else 0
    counts = (len(records), 1, None) if with_contra else (0, 0, len(records))
    lines = [*labels(s), *(data_record(r) for r in body), *trailers(s, debit_total, credit_total, *counts)]
    return "".join(line + "\n" for line in lines)


def _text(line: str, number: int, start: int, end: int, what: str) -> str:
    value = line[start - 1:end]
    if not BACS_TEXT.match(value):
        bad = next(i for i, c in enumerate(value) if not BACS_TEXT.match(c))
        raise Standard18Error(number, start + bad, f"{what} holds {value[bad]!r}, outside the Bacs character set")
    return value.rstrip()


def _number(line: str, number: int, start: int, end: int, what: str) -> str:
    value = line[start - 1:end]
    if not value.isdigit() or not value.isascii():
        bad = next((i for i, c in enumerate(value) if not ("0" <= c <= "9")), 0)
        raise Standard18Error(number, start + bad, f"{what} must be digits, got {value!r}")
    return value


def parse_record(line: str, number: int) -> DataRecord:
    if len(line) != 100:
        raise Standard18Error(number, min(len(line), 100) + 1,
                              f"a data record is 100 characters, this line has {len(line)}")
    if line[14] != "0":
        raise Standard18Error(number, 15, f"account type must be '0', got {line[14]!r}")
    code = line[15:17]
    if code not in TRANSACTION_CODES:
        raise Standard18Error(number, 16, f"transaction code {code!r} is not one of {', '.join(TRANSACTION_CODES)}")
    return DataRecord(
        _number(line, number, 1, 6, "destination sort code"), _number(line, number, 7, 14, "destination account"),
        code, _number(line, number, 18, 23, "originating sort code"),
        _number(line, number, 24, 31, "originating account"), int(_number(line, number, 36, 46, "amount")),
        _text(line, number, 47, 64, "service user name"), _text(line, number, 65, 82, "reference"),
        _text(line, number, 83, 100, "destination account name"), line[31:35],
    )


def read(text: str) -> Standard18File:
    """Parse and check a whole file: labels in order, records well formed, UTL1 totals equal to the records."""
    if not text.endswith("\n"):
        raise Standard18Error(text.count("\n") + 1, len(text.rsplit("\n", 1)[-1]) + 1,
                              "the file must end with a newline (it may be truncated)")
    lines = text[:-1].split("\n")
    if len(lines) < len(LABELS) + len(TRAILERS):
        raise Standard18Error(len(lines), 1, f"a Standard 18 file has at least 7 labels, this one has {len(lines)} "
                                             "lines")
    for index, name in enumerate(LABELS):
        _label(lines[index], index + 1, name)
    for offset, name in enumerate(TRAILERS):
        index = len(lines) - len(TRAILERS) + offset
        _label(lines[index], index + 1, name)
    vol1, uhl1, utl1 = lines[0], lines[3], lines[-1]
    sun = _number(vol1, 1, 42, 47, "service user number")
    try:
        processing = from_julian(_processing_date(uhl1))
    except ValueError as exc:
        raise Standard18Error(4, 5, f"processing date {uhl1[4:10]!r} is not ' YYDDD': {exc}") from exc
    records = tuple(parse_record(line, index + 5) for index, line in enumerate(lines[4:-3]))
    debits = [r for r in records if r.transaction_code != CONTRA]
    contras = [r for r in records if r.transaction_code == CONTRA]
    auddis = any(r.transaction_code in AUDDIS_CODES for r in records)
    totals = (sum(r.amount_pence for r in debits), sum(r.amount_pence for r in contras),
              0 if auddis else len(debits), len(contras))
    last = len(lines)
    if auddis and utl1[52:59] != f"{len(records):07d}":
        raise Standard18Error(last, 53, f"UTL1 instruction count {utl1[52:59]!r} must be {len(records):07d}, the "
                                        "file's AUDDIS records")
    declared = (int(_number(utl1, last, 5, 17, "debit value total")),
                int(_number(utl1, last, 18, 30, "credit value total")),
                int(_number(utl1, last, 31, 37, "debit count")), int(_number(utl1, last, 38, 44, "credit count")))
    for (name, column), got, said in zip((("debit value total", 5), ("credit value total", 18),
                                          ("debit count", 31), ("credit count", 38)), totals, declared, strict=True):
        if got != said:
            raise Standard18Error(last, column, f"UTL1 {name} is {said} but the records add up to {got}")
    if contras and contras[-1] is not records[-1]:
        raise Standard18Error(5 + records.index(contras[-1]), 16, "the contra record must be the last data record")
    first = records[0] if records else None
    submission = Submission(sun, contras[0].service_user_name if contras else (first.service_user_name if first
                            else ""), first.originating_sort_code if first else "", first.originating_account
                            if first else "", processing, uhl1[28:37].rstrip(), vol1[4:10],
                            int(uhl1[37:40]) if uhl1[37:40].isdigit() and uhl1[37:40].isascii() else 0,
                            _created_on(lines[1]))
    return Standard18File(submission, records, *totals)


def _created_on(hdr1: str) -> date | None:
    try:
        return from_julian(hdr1[41:47]) if re.fullmatch(r" [0-9]{5}", hdr1[41:47], re.ASCII) else None
    except ValueError:
        return None


def _processing_date(uhl1: str) -> str:
    value = uhl1[4:10]
    if not re.fullmatch(r" [0-9]{5}", value):
        raise ValueError("expected a space then five digits")
    return value


def _label(line: str, number: int, name: str) -> None:
    if not line.startswith(name):
        raise Standard18Error(number, 1, f"expected the {name} label, got {line[:4]!r}")
    if len(line) != 80:
        raise Standard18Error(number, min(len(line), 80) + 1, f"the {name} label is 80 characters, this one has "
                                                              f"{len(line)}")
