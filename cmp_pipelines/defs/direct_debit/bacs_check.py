"""An independent Standard 18 checker: every problem of a submission, with its line and columns.

Written from the published layouts (Bank of Ireland's "BACS File Specification" appendix, HSBC's "Message
Implementation Guide BACS Standard 18", FinDock's Bacs collection file mapping; see README "Bacs conventions"),
not from our writer: it shares no field table with `bacs_standard18`, so a misreading in the writer cannot
check itself. Labels are checked here in Python (seven lines); data records, which may be millions, in one
DuckDB statement of per-column rules, so the check is set-based and reports the first problems of each kind.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta

import duckdb

_DIGITS = re.compile(r"[0-9]+", re.ASCII)
_BACS = re.compile(r"[A-Z0-9 ./&-]*", re.ASCII)
_JULIAN = re.compile(r" ([0-9]{2})([0-9]{3})", re.ASCII)
LIMIT_PER_RULE = 20  # records reported per data-record rule: a broken writer is named, not echoed a million times


@dataclass(frozen=True)
class Problem:
    line: int
    first: int  # columns, 1-based, inclusive
    last: int
    message: str

    def __str__(self) -> str:
        where = f"column {self.first}" if self.first == self.last else f"columns {self.first}-{self.last}"
        return f"line {self.line}, {where}: {self.message}"


def _julian(value: str) -> date | None:
    match = _JULIAN.fullmatch(value)
    if not match:
        return None
    year, day = 2000 + int(match.group(1)), int(match.group(2))
    if not 1 <= day <= (366 if year % 4 == 0 else 365):
        return None
    return date(year, 1, 1) + timedelta(days=day - 1)


class _Ends:
    """The first four and last three lines of a file, indexed like its list of lines, without splitting it all."""

    def __init__(self, head: list[str], tail: list[str], count: int):
        self.head, self.tail, self.count = head, tail, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index):
        if isinstance(index, slice):
            if index == slice(None, 4):
                return self.head
            if index == slice(-3, None):
                return self.tail
            raise IndexError(index)
        index = index if index >= 0 else self.count + index
        return self.head[index] if index < 4 else self.tail[index - (self.count - 3)]


class _Labels:
    def __init__(self, problems: list[Problem]):
        self.problems = problems

    def field(self, line: str, number: int, first: int, last: int, what: str, rule) -> str:
        """The value in `first`-`last`; `rule` is a fixed string, a compiled pattern or a predicate."""
        value = line[first - 1:last]
        if isinstance(rule, str):
            ok, expected = value == rule, f"must be {rule!r}"
        elif isinstance(rule, re.Pattern):
            ok, expected = bool(rule.fullmatch(value)), f"must match {rule.pattern}"
        else:
            ok, expected = rule(value)
        if not ok:
            self.problems.append(Problem(number, first, last, f"{what} {value!r} {expected}"))
        return value

    def blank(self, line: str, number: int, first: int, last: int, what: str) -> None:
        self.field(line, number, first, last, what, " " * (last - first + 1))


def _digits(width: int):
    return re.compile(f"[0-9]{{{width}}}", re.ASCII)


def check_file(path) -> list[Problem]:
    """`check_text` for a plaintext file on disk, without holding it as one string: its lines counted in blocks,
    the seven labels read from its two ends, the data records read by DuckDB straight from the file. A file with
    carriage returns or bytes outside ASCII (not ours: the writer ends lines with LF and writes the Bacs character
    set) goes through `check_text` whole."""
    with open(path, "rb") as handle:
        newlines, carriage, ascii_only = 0, False, True
        while block := handle.read(_BLOCK):
            newlines += block.count(b"\n")
            carriage = carriage or b"\r" in block
            ascii_only = ascii_only and block.isascii()
        size = handle.tell()
        if carriage or not ascii_only:  # records from the text as it reads them, not by DuckDB (UTF-8, any newline)
            handle.seek(0)
            return check_text(handle.read().decode("ascii", errors="replace"))
        handle.seek(max(size - 1, 0))
        complete = handle.read(1) == b"\n"
        body = size - 1 if complete else size  # bytes before the final newline
        count = newlines - complete + 1 if body else 0
        problems = [] if complete else [Problem(newlines + 1, 1, 1, "the file does not end with a newline "
                                                                    "(truncated?)")]
        if count < 7:
            return [*problems, _too_short(count)]
        handle.seek(0)
        head = [handle.readline().rstrip(b"\n").decode("ascii", errors="replace") for _ in range(4)]
        end, tail = body, b""
        while tail.count(b"\n") < 3 and end > 0:  # back from the end until the last three lines are whole
            step = min(end, 1 << 16)
            end -= step
            handle.seek(end)
            tail = handle.read(step) + tail
    ends = [line.decode("ascii", errors="replace") for line in tail.rsplit(b"\n", 3)[-3:]]
    return _check(problems, _Ends(head, ends, count), path=path)


_BLOCK = 1 << 24


def _too_short(count: int) -> Problem:
    return Problem(count, 1, 4, f"a submission has VOL1 HDR1 HDR2 UHL1 ... EOF1 EOF2 UTL1, this file has {count} lines")


def check_text(text: str, path=None) -> list[Problem]:
    """Every problem found in a plaintext Standard 18 submission (empty when it conforms). Only the seven labels
    are handled as Python strings; the data records (from `path` when given, a file holding `text`) in DuckDB."""
    problems: list[Problem] = []
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    if not text.endswith("\n"):
        problems.append(Problem(text.count("\n") + 1, 1, 1, "the file does not end with a newline (truncated?)"))
    body = text[:-1] if text.endswith("\n") else text
    count = body.count("\n") + 1 if body else 0
    if count < 7:
        return [*problems, _too_short(count)]
    lines = _Ends(body.split("\n", 4)[:4], body.rsplit("\n", 3)[-3:], count)
    records = None if path is not None else (body.split("\n", 4)[4].rsplit("\n", 3)[0] if count > 7 else "")
    return _check(problems, lines, path=path, text=records)


def _check(problems: list[Problem], lines: _Ends, *, path=None, text: str | None = None) -> list[Problem]:
    """The labels' fields and the totals they declare, against the data records (`path`'s lines 5 to the
    fourth-last, or `text`)."""
    check = _Labels(problems)
    for number, name in [(1, "VOL1"), (2, "HDR1"), (3, "HDR2"), (4, "UHL1"), (len(lines) - 2, "EOF1"),
                         (len(lines) - 1, "EOF2"), (len(lines), "UTL1")]:
        line = lines[number - 1]
        if line[:4] != name:
            problems.append(Problem(number, 1, 4, f"expected the {name} label, found {line[:4]!r}"))
        if len(line) != 80:
            problems.append(Problem(number, 1, 80, f"the {name} label must be 80 characters, it has {len(line)}"))
    vol1, hdr1, hdr2, uhl1 = (line.ljust(80) for line in lines[:4])
    eof1, eof2, utl1 = (line.ljust(80) for line in lines[-3:])

    serial = check.field(vol1, 1, 5, 10, "VOL1 submission serial", lambda v: (
        bool(re.fullmatch(r"[A-Z0-9]{6}", v, re.ASCII)) and v.strip("0") != "",
        "must be six letters or digits, not all zeros, unique for the service user on the day"))
    check.field(vol1, 1, 11, 11, "VOL1 accessibility indicator", lambda v: (v in (" ", "0"), "must be blank or 0"))
    check.blank(vol1, 1, 12, 41, "VOL1 reserved")
    sun = check.field(vol1, 1, 42, 47, "VOL1 owner (service user number)", _digits(6))
    check.blank(vol1, 1, 48, 79, "VOL1 reserved")
    check.field(vol1, 1, 80, 80, "VOL1 label standard level", "1")

    for number, label in ((2, hdr1), (len(lines) - 2, eof1)):
        name = label[:4]
        check.field(label, number, 5, 5, f"{name} file identifier", "A")
        check.field(label, number, 6, 11, f"{name} service user number", lambda v: (v == sun, f"must be {sun!r}"))
        check.field(label, number, 12, 12, f"{name} file identifier", "S")
        check.blank(label, number, 13, 14, f"{name} file identifier")
        check.field(label, number, 15, 15, f"{name} file identifier", lambda v: (v in (" ", "1"), "must be blank or 1"))
        check.field(label, number, 16, 21, f"{name} service user number", lambda v: (v == sun, f"must be {sun!r}"))
        check.field(label, number, 22, 27, f"{name} set identification",
                    lambda v: (v == serial, f"must be the VOL1 serial {serial!r}"))
        check.field(label, number, 28, 31, f"{name} file section number", "0001")
        check.field(label, number, 32, 35, f"{name} file sequence number", "0001")
        check.blank(label, number, 36, 41, f"{name} generation number and version")
        created = check.field(label, number, 42, 47, f"{name} creation date", lambda v: (
            _julian(v) is not None, "must be ' YYDDD' with a day that exists"))
        created_on = _julian(created)
        check.field(label, number, 48, 53, f"{name} expiration date", lambda v, since=created_on: (
            _julian(v) is not None and (since is None or _julian(v) >= since),
            "must be ' YYDDD', on or after the creation date"))
        check.blank(label, number, 54, 54, f"{name} accessibility indicator")
        check.field(label, number, 55, 60, f"{name} block count", "000000")
        check.blank(label, number, 61, 80, f"{name} system code and reserved")
    if hdr1[4:] != eof1[4:]:
        problems.append(Problem(len(lines) - 2, 5, 80, "EOF1 must repeat HDR1 columns 5-80"))
    for number, label in ((3, hdr2), (len(lines) - 1, eof2)):
        name = label[:4]
        check.field(label, number, 5, 5, f"{name} record format", "F")
        check.field(label, number, 6, 10, f"{name} block length", "02000")
        check.field(label, number, 11, 15, f"{name} record length", "00100")
        check.blank(label, number, 16, 50, f"{name} reserved")
        check.field(label, number, 51, 52, f"{name} buffer offset", "00")
        check.blank(label, number, 53, 80, f"{name} reserved")

    check.field(uhl1, 4, 5, 10, "UHL1 processing date", lambda v: (
        _julian(v) is not None and _julian(v).weekday() < 5,
        "must be ' YYDDD', a day that exists and is not a weekend"))
    check.field(uhl1, 4, 11, 20, "UHL1 receiving party identifier", "999999    ")
    check.field(uhl1, 4, 21, 22, "UHL1 currency code", "00")
    check.field(uhl1, 4, 23, 28, "UHL1 country code", "000000")
    work_code = check.field(uhl1, 4, 29, 37, "UHL1 work code", lambda v: (
        v in ("1 DAILY  ", "4 MULTI  "), "must be '1 DAILY  ' or '4 MULTI  ' (AUDDIS is known by its records)"))
    check.field(uhl1, 4, 38, 40, "UHL1 file number", _digits(3))
    check.blank(uhl1, 4, 41, 80, "UHL1 reserved")
    if work_code == "4 MULTI  ":
        problems.append(Problem(4, 29, 37, "multi-day files (106-character records) are not produced here; "
                                           "this checker covers single-day '1 DAILY' submissions"))

    number = len(lines)
    values = [check.field(utl1, number, first, last, f"UTL1 {what}", _digits(last - first + 1))
              for first, last, what in ((5, 17, "debit value total"), (18, 30, "credit value total"),
                                        (31, 37, "debit item count"), (38, 44, "credit item count"))]
    check.blank(utl1, number, 45, 52, "UTL1 reserved")
    ddi_count = check.field(utl1, number, 53, 59, "UTL1 DDI count", lambda v: (
        v.strip() == "" or bool(_digits(7).fullmatch(v)), "must be blank or seven digits"))
    check.blank(utl1, number, 60, 80, "UTL1 reserved")

    summary = _check_records(problems, len(lines), path=path, text=text)
    if summary is None:
        return problems
    debit_total, credit_total, debit_count, credit_count, instructions, contra_problem = summary
    if instructions and (debit_count or credit_count):
        problems.append(Problem(5, 16, 17, "an AUDDIS submission holds only 0N/0C/0S instructions; this one mixes "
                                           "them with debits or contras"))
    if instructions:
        expected = (0, 0, 0, 0)
        if ddi_count.strip() != f"{instructions:07d}":
            problems.append(Problem(number, 53, 59, f"UTL1 DDI count {ddi_count!r} must be {instructions:07d}, "
                                                    "the file's instructions"))
    else:
        expected = (debit_total, credit_total, debit_count, credit_count)
        if debit_count and credit_count != 1:
            problems.append(Problem(len(lines) - 3, 16, 17, f"a collection ends with one 99 contra record, this "
                                                            f"file has {credit_count}"))
        if credit_count and credit_total != debit_total:
            problems.append(Problem(len(lines) - 3, 36, 46, f"the contra credits {credit_total} pence, the debits "
                                                            f"add up to {debit_total}: the file does not balance"))
        if contra_problem:
            problems.append(Problem(len(lines) - 3, 1, 17, contra_problem))
    for (first, last, what), declared, found in zip(
            ((5, 17, "debit value total"), (18, 30, "credit value total"), (31, 37, "debit item count"),
             (38, 44, "credit item count")), values, expected, strict=True):
        if _DIGITS.fullmatch(declared) and int(declared) != found:
            problems.append(Problem(number, first, last, f"UTL1 {what} is {int(declared)}, the records make {found}"))
    return problems


# Each rule: (first column, last column, SQL condition that is TRUE for a bad record, message as SQL).
_RECORD_RULES = [
    (1, 100, "length(line) <> 100", "'a data record must be 100 characters, it has ' || length(line)"),
    (1, 6, "NOT regexp_full_match(substr(line, 1, 6), '[0-9]{6}')",
     "'destination sort code ' || quote(substr(line, 1, 6)) || ' must be six digits'"),
    (7, 14, "NOT regexp_full_match(substr(line, 7, 8), '[0-9]{8}')",
     "'destination account ' || quote(substr(line, 7, 8)) || ' must be eight digits'"),
    (15, 15, "substr(line, 15, 1) <> '0'", "'account type ' || quote(substr(line, 15, 1)) || ' must be 0'"),
    (16, 17, "substr(line, 16, 2) NOT IN ('01', '17', '18', '19', '99', '0N', '0C', '0S')",
     "'transaction code ' || quote(substr(line, 16, 2)) || ' is not a direct debit, contra or AUDDIS code'"),
    (18, 23, "NOT regexp_full_match(substr(line, 18, 6), '[0-9]{6}')",
     "'originating sort code ' || quote(substr(line, 18, 6)) || ' must be six digits'"),
    (24, 31, "NOT regexp_full_match(substr(line, 24, 8), '[0-9]{8}')",
     "'originating account ' || quote(substr(line, 24, 8)) || ' must be eight digits'"),
    (32, 35, "substr(line, 32, 4) <> '    '",
     "'free format ' || quote(substr(line, 32, 4)) || ' must be blank in a single-day file'"),
    (36, 46, "NOT regexp_full_match(substr(line, 36, 11), '[0-9]{11}')",
     "'amount ' || quote(substr(line, 36, 11)) || ' must be eleven digits (pence)'"),
    (36, 46, "substr(line, 16, 2) IN ('0N', '0C', '0S') AND substr(line, 36, 11) <> '00000000000'",
     "'an AUDDIS instruction carries a zero amount, this one ' || quote(substr(line, 36, 11))"),
    (36, 46, "substr(line, 16, 2) IN ('01', '17', '18', '19') AND substr(line, 36, 11) = '00000000000'",
     "'a debit of zero pence is not collected'"),
    (47, 64, "NOT regexp_full_match(substr(line, 47, 18), '[A-Z0-9 ./&-]{18}')",
     "'service user name ' || quote(substr(line, 47, 18)) || ' is outside the Bacs character set'"),
    (47, 64, "trim(substr(line, 47, 18)) = ''", "'service user name is blank'"),
    (65, 82, "NOT regexp_full_match(substr(line, 65, 18), '[A-Z0-9 ./&-]{18}')",
     "'reference ' || quote(substr(line, 65, 18)) || ' is outside the Bacs character set'"),
    (65, 82, "substr(line, 16, 2) <> '99' AND (substr(line, 65, 1) = ' ' "
             "OR length(regexp_replace(substr(line, 65, 18), '[^A-Z0-9]', '', 'g')) < 6 "
             "OR replace(trim(substr(line, 65, 18)), substr(line, 65, 1), '') = '')",
     "'reference ' || quote(substr(line, 65, 18)) || ' must start in column 65, hold at least six letters or "
     "digits and not repeat one character'"),
    (83, 100, "NOT regexp_full_match(substr(line, 83, 18), '[A-Z0-9 ./&-]{18}')",
     "'account name ' || quote(substr(line, 83, 18)) || ' is outside the Bacs character set'"),
    (83, 100, "trim(substr(line, 83, 18)) = ''", "'account name is blank'"),
]


# One regular expression of a well-formed record: the first pass over millions of records only picks out the bad
# ones (RE2 in DuckDB, about a second a million); the rules above then say what is wrong with each of those.
_WELL_FORMED = ("regexp_full_match(line, '[0-9]{14}0(01|17|18|19|99|0N|0C|0S)[0-9]{14}    [0-9]{11}"
                "[A-Z0-9 ./&-]{54}')")
_SUSPECT = f"""NOT coalesce({_WELL_FORMED}, FALSE)
    OR substr(line, 47, 18) = '                  ' OR substr(line, 83, 18) = '                  '
    OR (substr(line, 16, 2) IN ('0N', '0C', '0S') AND substr(line, 36, 11) <> '00000000000')
    OR (substr(line, 16, 2) IN ('01', '17', '18', '19') AND substr(line, 36, 11) = '00000000000')
    OR (substr(line, 16, 2) <> '99' AND (substr(line, 65, 1) = ' '
        OR NOT regexp_full_match(substr(line, 65, 18), '[A-Z0-9]([^A-Z0-9]*[A-Z0-9]){{5}}.*')
        OR replace(trim(substr(line, 65, 18)), substr(line, 65, 1), '') = ''))"""


def _check_records(problems: list[Problem], count: int, *, text: str | None = None, path=None):
    """Rules over every data record in DuckDB; returns the totals, or None when there are no records."""
    if count <= 7:
        problems.append(Problem(5, 1, 4, "the submission has no data records: nothing to send"))
        return None
    con = duckdb.connect()
    try:
        con.execute("CREATE MACRO quote(v) AS chr(39) || v || chr(39)")
        if path is not None:
            con.execute("CREATE TEMP TABLE records AS SELECT number, line FROM (SELECT row_number() OVER () AS number, "
                        "line FROM read_csv($path, columns = {'line': 'VARCHAR'}, header = false, delim = chr(1), "
                        "quote = '', escape = '', auto_detect = false, null_padding = true)) "
                        "WHERE number BETWEEN 5 AND $last", {"path": str(path), "last": count - 3})
        else:
            con.execute("CREATE TEMP TABLE records AS WITH split AS (SELECT string_split($text, chr(10)) AS a) "
                        "SELECT r.i + 4 AS number, r.line FROM (SELECT unnest(list_zip(a, range(1, len(a) + 1)), "
                        "recursive := true) FROM split) r(line, i)", {"text": text})
        con.execute(f"CREATE TEMP TABLE suspect AS SELECT number, coalesce(line, '') AS line FROM records "
                    f"WHERE line IS NULL OR {_SUSPECT}")
        rules = " UNION ALL ".join(
            f"(SELECT {index} AS rule, number, {first} AS first, {last} AS last, {message} AS message "
            f"FROM suspect WHERE coalesce({condition}, TRUE) ORDER BY number LIMIT {LIMIT_PER_RULE})"
            for index, (first, last, condition, message) in enumerate(_RECORD_RULES))
        for _, number, first, last, message in con.execute(f"SELECT * FROM ({rules}) ORDER BY number, first, "
                                                           "rule").fetchall():
            problems.append(Problem(number, first, last, message))
        debit_total, debit_count, credit_total, credit_count, instructions, last_code, origins = con.execute(
            """
            SELECT coalesce(sum(try_cast(substr(line, 36, 11) AS BIGINT))
                       FILTER (substr(line, 16, 2) IN ('01', '17', '18', '19')), 0),
                   count(*) FILTER (substr(line, 16, 2) IN ('01', '17', '18', '19')),
                   coalesce(sum(try_cast(substr(line, 36, 11) AS BIGINT)) FILTER (substr(line, 16, 2) = '99'), 0),
                   count(*) FILTER (substr(line, 16, 2) = '99'),
                   count(*) FILTER (substr(line, 16, 2) IN ('0N', '0C', '0S')),
                   arg_max(substr(line, 16, 2), number),
                   CASE WHEN min(substr(line, 18, 14)) = max(substr(line, 18, 14)) THEN 1 ELSE 2 END
            FROM records
            """).fetchone()
        contra_problem = None
        if credit_count and last_code != "99":
            contra_problem = "the 99 contra must be the last data record"
        elif credit_count:
            mismatch = con.execute(
                "SELECT number FROM records WHERE substr(line, 16, 2) = '99' "
                "AND substr(line, 1, 14) <> substr(line, 18, 14) LIMIT 1").fetchone()
            if mismatch:
                contra_problem = ("the contra must credit the service user's own account (columns 1-14 equal to "
                                  "the originating sort code and account, columns 18-31)")
        if origins > 1:
            problems.append(Problem(5, 18, 31, "every record of a submission must carry the same originating "
                                               "sort code and account"))
    finally:
        con.close()
    return debit_total, credit_total, debit_count, credit_count, instructions, contra_problem
