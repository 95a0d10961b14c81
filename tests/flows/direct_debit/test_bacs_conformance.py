"""Conformance of the Bacs side with independent public evidence (issue 14): other implementations' golden
Standard 18 files compared field by field, the independent checker (`bacs check`), the Bacs calendar, the
submission serial register, real-shaped ARUDD and ADDACS documents, the full ARUDD reason table, and hostile
values in the bank's reports (issue 18 items 8 and 9)."""

from __future__ import annotations

import dataclasses
from datetime import date, timedelta
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from cmp_pipelines.core.config import load_rejection_codes
from cmp_pipelines.core.intake import FileQuarantined
from cmp_pipelines.core.probe_queries import PROBE_SQL
from cmp_pipelines.defs.direct_debit import standard18 as std18
from cmp_pipelines.defs.direct_debit.bacs_check import check_text
from cmp_pipelines.defs.direct_debit.calendar import add_working_days, cycle, is_working_day, next_working_day
from cmp_pipelines.defs.direct_debit.submission import SubmissionRefused
from tests.support.direct_debit import (
    BUREAU,
    CONFIG_DIR,
    DD_CONFIG,
    active_dd_accounts,
    add_invoice,
    addacs,
    arudd,
    auddis_day,
    collection_day,
    drop_report,
    process_addacs,
    process_arudd,
    returned,
)

D0 = date(2026, 12, 1)
GOLDEN_TS = [  # a TypeScript payroll writer's published golden file (credits, '17' contra), CRLF removed
    "VOL1000007                               123456                                1",
    "HDR1A123456S   12345600000700010001       26226 26240 000000                    ",
    "HDR2F0200000100                                   00                            ",
    "UHL1 26233999999    000000001 DAILY  007                                        ",
    "2045121234567809960161312345678    00000250000ACME LTD          PAY EMP-0001      ADA WIDGET        ",
    "6016138765432109960161312345678    00000182150ACME LTD          PAY EMP-0002      BO SAVER          ",
    "6016131234567801760161312345678    00000432150ACME LTD          CONTRA            ACME LTD          ",
    "EOF1A123456S   12345600000700010001       26226 26240 000000                    ",
    "EOF2F0200000100                                   00                            ",
    "UTL10000000432150000000043215000000010000002                                    ",
]
GOLDEN_JAVA = [  # a Java writer's test (com.ail.eft.bacs), SUN 135790, direct debits 01/17/19
    "VOL11000000                              135790                                1",
    "HDR1A135790S  11357901     0001          {p} {e}  000000                    ",
    "UHL1{p} 999999    000000004 MULTI                                             ",
    "1111111122334400122446611335577 {d}00000014200ServiceUserName   P1111             Mr Test Account1        ",
    "2222222233445501722446611335577 {d}00000025700ServiceUserName   P2222             Ms Test Account2        ",
    "3333333344556601922446611335577 {d}00000004500ServiceUserName   P3333             Mrs Test Account3       ",
    "UTL10000000044400000000000000000000030000000        0000000                     ",
]


def _columns(line: str, first: int, last: int) -> str:
    return line[first - 1:last]


def test_labels_and_credits_equal_a_published_golden_file_field_for_field():
    submission = std18.Submission("123456", "ACME LTD", "601613", "12345678", date(2026, 8, 21), "1 DAILY",
                                  "000007", 7, date(2026, 8, 14))
    ours = std18.labels(submission)
    assert ours[0][:10] == GOLDEN_TS[0][:10] and ours[0][11:] == GOLDEN_TS[0][11:]  # col 11: '0' or blank
    assert _columns(ours[1], 1, 47) == _columns(GOLDEN_TS[1], 1, 47)  # file id, set id (serial), section, created
    assert _columns(ours[1], 54, 80) == _columns(GOLDEN_TS[1], 54, 80)  # (expiry: a writer's own choice)
    assert ours[2:] == GOLDEN_TS[2:4]  # HDR2, and UHL1 with processing day, work code and file number 007
    credits = [std18.DataRecord("204512", "12345678", "99", "601613", "12345678", 250000, "ACME LTD",
                                "PAY EMP-0001", "Ada Widget"),
               std18.DataRecord("601613", "87654321", "99", "601613", "12345678", 182150, "ACME LTD",
                                "PAY EMP-0002", "Bo Saver")]
    assert [std18.data_record(r) for r in credits] == GOLDEN_TS[4:6]
    assert std18.trailers(submission, 432150, 432150, 1, 2)[2] == GOLDEN_TS[9]


def test_direct_debit_records_equal_a_second_published_golden_file_field_for_field():
    day = date(2026, 12, 3)
    expiry = day + timedelta(days=30)  # that writer formats its dates 'YYDDD', without the leading blank
    fill = {"p": f"{day:%y}{day.timetuple().tm_yday:03d}", "e": f"{expiry:%y}{expiry.timetuple().tm_yday:03d}",
            "d": f"{day.timetuple().tm_yday:03d}"}
    golden = [line.format(**fill) for line in GOLDEN_JAVA]
    submission = std18.Submission("135790", "SERVICEUSERNAME", "224466", "11335577", day, "1 DAILY", "100000")
    records = [std18.DataRecord(sort, account, code, "224466", "11335577", pence, "ServiceUserName", ref, name)
               for sort, account, code, pence, ref, name in (
                   ("111111", "11223344", "01", 14200, "P1111", "Mr Test Account1"),
                   ("222222", "22334455", "17", 25700, "P2222", "Ms Test Account2"),
                   ("333333", "33445566", "19", 4500, "P3333", "Mrs Test Account3"))]
    text = std18.write(submission, records, with_contra=True).splitlines()
    vol1, hdr1, uhl1 = text[0], text[1], text[3]
    assert _columns(vol1, 1, 10) == _columns(golden[0], 1, 10) and _columns(vol1, 42, 80) == _columns(golden[0],
                                                                                                        42, 80)
    # the file identifier: 'A', SUN, 'S', blanks, column 15 blank or '1', the SUN in columns 16-21
    assert _columns(hdr1, 5, 14) == _columns(golden[1], 5, 14) and _columns(hdr1, 16, 21) == "135790"
    assert _columns(golden[1], 16, 21) == "135790" and _columns(golden[1], 15, 15) in " 1"
    assert _columns(uhl1, 11, 20) == _columns(golden[2], 11, 20)  # the receiving party '999999    '
    # its processing date is 'YYDDD' in 5-9; the bank specifications and the other golden file give ' YYDDD' in 5-10
    assert _columns(uhl1, 6, 10) == _columns(golden[2], 5, 9)
    for ours, theirs in zip(text[4:7], golden[3:6], strict=True):
        for first, last in ((1, 31), (36, 46), (65, 82)):
            assert _columns(ours, first, last) == _columns(theirs, first, last)
        for first, last in ((47, 64), (83, 100)):  # theirs keeps lower case, which Bacs refuses; ours upper-cases
            assert _columns(ours, first, last) == _columns(theirs, first, last).upper()
    assert _columns(text[-1], 5, 17) == _columns(golden[6], 5, 17)  # debit value total 444.00
    assert _columns(text[-1], 31, 37) == _columns(golden[6], 31, 37)  # three debits
    # their five-character references are the one thing Bacs would refuse (at least six letters or digits)
    assert [(p.line, p.first) for p in check_text("\n".join(text) + "\n")] == [(5, 65), (6, 65), (7, 65)]


def _problems(text: str) -> list[str]:
    return [str(p) for p in check_text(text)]


GOOD = std18.write(std18.Submission("123456", "CMP TELECOM", "400000", "12345678", date(2026, 12, 3)), [
    std18.DataRecord("201575", "87654321", "17", "400000", "12345678", 1234, "CMP TELECOM", "CMPACC0001", "J SMITH"),
    std18.DataRecord("309634", "11112222", "01", "400000", "12345678", 99, "CMP TELECOM", "CMPACC0002", "A OTHER"),
], with_contra=True)


def _edit(text: str, line: int, column: int, replacement: str) -> str:
    lines = text.split("\n")
    target = lines[line - 1]
    lines[line - 1] = target[:column - 1] + replacement + target[column - 1 + len(replacement):]
    return "\n".join(lines)


@pytest.mark.parametrize(("broken", "expected"), [
    (_edit(_edit(GOOD, 2, 15, "123456 "), 8, 15, "123456 "),  # the old layout: SUN in 15-20
     "line 2, columns 16-21: HDR1 service user number '23456 ' must be '123456'"),
    (_edit(GOOD, 4, 29, "AUDDIS   "), "line 4, columns 29-37: UHL1 work code 'AUDDIS   ' must be '1 DAILY  ' or "
                                     "'4 MULTI  ' (AUDDIS is known by its records)"),
    (_edit(GOOD, 4, 5, " 26339"), "line 4, columns 5-10: UHL1 processing date ' 26339' must be ' YYDDD', a day that "
                                  "exists and is not a weekend"),
    (_edit(GOOD, 2, 22, "000002"), "line 2, columns 22-27: HDR1 set identification '000002' must be the VOL1 serial "
                                   "'000001'"),
    (_edit(GOOD, 7, 36, "00000001332"), "line 7, columns 36-46: the contra credits 1332 pence, the debits add up to "
                                        "1333: the file does not balance"),
    (_edit(GOOD, 10, 31, "0000003"), "line 10, columns 31-37: UTL1 debit item count is 3, the records make 2"),
    (_edit(GOOD, 5, 65, "AAAAAAAAAA"), "line 5, columns 65-82: reference 'AAAAAAAAAA        ' must start in column "
                                       "65, hold at least six letters or digits and not repeat one character"),
    (_edit(GOOD, 5, 65, "CMPACC0001xx"), "line 5, columns 65-82: reference 'CMPACC0001xx      ' is outside the Bacs "
                                         "character set"),
    (_edit(GOOD, 5, 36, "0000000123²"), "line 5, columns 36-46: amount '0000000123²' must be eleven digits (pence)"),
    (_edit(GOOD, 5, 16, "0N"), "line 5, columns 36-46: an AUDDIS instruction carries a zero amount, this one "
                               "'00000001234'"),
    (_edit(GOOD, 7, 1, "200000"), "line 7, columns 1-17: the contra must credit the service user's own account "
                                  "(columns 1-14 equal to the originating sort code and account, columns 18-31)"),
    (GOOD[:-1], "line 10, column 1: the file does not end with a newline (truncated?)"),
])
def test_the_checker_names_every_problem_with_its_line_and_columns(broken, expected):
    assert _problems(GOOD) == []
    assert expected in _problems(broken)


def test_the_cli_checks_plain_and_encrypted_files_and_exits_1_on_problems(platform, tmp_path):
    from cmp_pipelines.cli import main

    platform.keyring.init_keys(BUREAU)
    plain, encrypted, bad = tmp_path / "good.std18", tmp_path / "good.std18.enc", tmp_path / "bad.std18"
    plain.write_text(GOOD)
    encrypted.write_bytes(platform.keyring.encrypt(BUREAU, GOOD.encode()))
    bad.write_text(_edit(GOOD, 4, 29, "AUDDIS   "))
    runner = CliRunner()
    for path in (plain, encrypted):
        result = runner.invoke(main, ["bacs", "check", str(path)])
        assert result.exit_code == 0 and "conforms to Standard 18 (3 data record(s))" in result.output
    result = runner.invoke(main, ["bacs", "check", str(bad)])
    assert result.exit_code == 1
    assert "line 4, columns 29-37: UHL1 work code 'AUDDIS   '" in result.output and "1 problem(s)" in result.output


def test_bacs_calendar_from_the_holidays_library():
    assert not is_working_day(date(2026, 12, 25)) and not is_working_day(date(2026, 12, 28))  # Boxing Day, moved
    assert not is_working_day(date(2027, 5, 3)) and is_working_day(date(2027, 5, 4))  # early May bank holiday
    assert not is_working_day(date(2026, 8, 31))  # summer bank holiday (England and Wales, not Scotland)
    assert next_working_day(date(2026, 12, 25)) == date(2026, 12, 29)
    assert add_working_days(date(2026, 12, 24), 2) == date(2026, 12, 30)
    moved = cycle(date(2026, 12, 26))
    assert (moved.input_day, moved.processing_day, moved.entry_day) == (date(2026, 12, 29), date(2026, 12, 30),
                                                                       date(2026, 12, 31))
    assert moved.moved == ("2026-12-26 is not a Bacs working day (Boxing Day): the submission is input on "
                           "2026-12-29")
    assert cycle(date(2026, 12, 2)).moved is None


@pytest.fixture
def dd(platform):
    platform.keyring.init_keys(BUREAU)
    add_invoice(platform, "ACCDD0001", "INVDD0001", 4567, date(2026, 12, 1), date(2026, 12, 15))
    add_invoice(platform, "ACCDD0002", "INVDD0002", 1000, date(2026, 12, 1), date(2026, 12, 15))
    active_dd_accounts(platform, {"ACCDD0001": "CMPDD0001", "ACCDD0002": "CMPDD0002"}, D0)
    return platform


def _labels(platform, folder: str, batch_id: str) -> list[str]:
    data = platform.files.read_bytes(f"outbound/{folder}/{BUREAU}/{batch_id}.std18.enc")
    return platform.keyring.decrypt(BUREAU, data).decode("ascii").splitlines()


def test_two_submissions_on_a_day_carry_their_own_serials_and_file_numbers(dd):
    from cmp_pipelines.core.mandates import create_mandate
    from tests.support.direct_debit import at

    day = date(2026, 12, 14)
    add_invoice(dd, "ACCDD0003", "INVDD0003", 100, D0, date(2026, 12, 31))
    with dd.connect() as con:
        create_mandate(con, "ACCDD0003", sort_code="201575", bank_account="12121212", account_name="Zoë Müller",
                       config=DD_CONFIG, now=at(day), reference="CMPDD0003")
    auddis_day(dd, day)
    collection_day(dd, day)
    auddis = _labels(dd, "auddis", "AUD-20261214")
    collection = _labels(dd, "dd_collections", "DDX-20261214")
    serials = {auddis[0][4:10], collection[0][4:10]}
    assert len(serials) == 2  # the day's two submissions never share a VOL1 serial
    for lines in (auddis, collection):
        assert lines[1][21:27] == lines[0][4:10]  # HDR1 set identification is the serial
        assert check_text("\n".join(lines) + "\n") == []
    assert {auddis[3][37:40], collection[3][37:40]} == {"001", "002"}  # UHL1 file numbers on the input day
    assert "ZOE MULLER" in auddis[4]
    register = dd.query("SELECT batch_id, serial, file_number FROM bacs_submissions ORDER BY serial")
    assert len(register) == 3 and len({row[1] for row in register}) == 3  # the activation day's AUDDIS too
    collection_day(dd, day)  # a re-run keeps its serial: the register does not grow
    assert dd.query("SELECT count(*) FROM bacs_submissions") == [(3,)]


def test_a_submission_that_fails_the_check_is_never_published_and_the_run_fails(dd):
    with dd.connect() as con:  # a legacy mandate whose reference Bacs refuses (one character repeated)
        con.execute("UPDATE mandates SET reference = 'AAAAAAAA' WHERE reference = 'CMPDD0002'")
    with pytest.raises(SubmissionRefused) as refused:
        collection_day(dd, date(2026, 12, 14))
    assert "the Standard 18 submission fails its check, not published: line 5, columns 65-82: reference " \
           "'AAAAAAAA          ' must start in column 65" in str(refused.value)
    assert dd.files.list_files("outbound/dd_collections") == []
    # the check runs while the file is encrypted into the store's staging: nothing of it is left behind either
    assert [p.name for p in (Path(dd.files.base_dir) / "outbound" / "dd_collections").rglob("*") if p.is_file()] == []


def _real_arudd(items: str, count: int, value: str) -> bytes:
    """The shape of real ARUDD reports (public samples): ISO-8859-1, BACSDocument/Data/ARUDD with Header,
    ServiceLicenseInformation, Advice/OriginatingAccountRecords/OriginatingAccountRecord, ReturnedDebitItem with
    a PayerAccount child, and Totals."""
    return f"""<?xml version="1.0" encoding="ISO-8859-1"?>
<BACSDocument xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <Data>
    <ARUDD>
      <Header reportType="REFT1027" adviceNumber="001" currentProcessingDate="2026-12-17"/>
      <AddresseeInformation name="CMP TELECOM"/>
      <ServiceLicenseInformation userName="CMP TELECOM" userNumber="123456"/>
      <Advice>
        <OriginatingAccountRecords>
          <OriginatingAccountRecord>
            <OriginatingAccount name="CMP TELECOM" number="12345678" sortCode="40-00-00" type="0"/>
{items}
            <Totals numberOf="{count}" valueOf="{value}" currency="GBP"/>
          </OriginatingAccountRecord>
        </OriginatingAccountRecords>
      </Advice>
    </ARUDD>
  </Data>
</BACSDocument>
""".encode("iso-8859-1", "xmlcharrefreplace")


def _item(ref: str, code: str, description: str, amount: str, processed: str = "2026-12-15") -> str:
    return (f'            <ReturnedDebitItem ref="{ref}" transCode="01" returnCode="{code}" '
            f'returnDescription="{description}" originalProcessingDate="{processed}" valueOf="{amount}" '
            f'currency="GBP">\n              <PayerAccount number="87654321" ref="{ref}" name="PAYER ZOË" '
            f'sortCode="20-15-75" bankName="A BANK" branchName="A BRANCH"/>\n            </ReturnedDebitItem>')


def test_a_real_shaped_arudd_cancels_on_instruction_cancelled_and_holds_on_an_unmapped_code(dd):
    collection_day(dd, date(2026, 12, 14))  # processed Tue 15th
    report = _real_arudd("\n".join([_item("CMPDD0001", "1012", "INSTRUCTION CANCELLED", "45.67"),
                                    _item("CMPDD0002", "0177", "SOMETHING NEW", "10.00")]), 2, "55.67")
    load, posted, outcome = process_arudd(dd, drop_report(dd, "arudd", "ARUDD-real.xml", report), date(2026, 12, 17))
    assert load.outcomes == {"HARD_DECLINE": 1, "UNCONFIGURED_CODE": 1}
    assert (posted.posting_count, posted.total_minor) == (2, 5567)  # both debits reversed to the penny
    assert dd.balance("ACCDD0001") == 4567 and dd.balance("ACCDD0002") == 1000
    mandates = dd.query("SELECT reference, status, held_reason FROM mandates ORDER BY reference")
    assert mandates[0] == ("CMPDD0001", "CANCELLED", None)
    assert mandates[1][:2] == ("CMPDD0002", "HELD")
    assert mandates[1][2] == "ARUDD returnCode 0177 (SOMETHING NEW) is unmapped: held until an operator decides"
    [error] = dd.query("SELECT category, detail FROM job_errors WHERE job = 'arudd'")
    assert error[0] == "CONFIGURATION" and error[1].startswith("UNKNOWN_RETURN_CODE: returnCode '0177' (SOMETHING NEW)")
    with dd.connect() as con:
        assert con.execute(PROBE_SQL["arudd_unmapped_return_codes"]).fetchone() == (1,)
    # neither mandate collects, even with money due and the accounts back on direct debit
    add_invoice(dd, "ACCDD0001", "INVDD0011", 300, date(2026, 12, 1), date(2026, 12, 18))
    add_invoice(dd, "ACCDD0002", "INVDD0012", 400, date(2026, 12, 1), date(2026, 12, 18))
    with dd.connect() as con:
        con.execute("UPDATE accounts SET payment_type = 'DIRECT_DEBIT'")
    assert collection_day(dd, date(2026, 12, 21))[0].collection_count == 0
    # the operator decides: the held mandate resumes and collects again
    runner = CliRunner()
    from cmp_pipelines.cli import main

    assert "DDI-123456-CMPDD0002" in runner.invoke(main, ["mandates", "held"]).output
    resumed = runner.invoke(main, ["mandates", "resume", "DDI-123456-CMPDD0002", "--reason", "code 0177 mapped"])
    assert resumed.exit_code == 0 and orjson.loads(resumed.output)["status"] == "ACTIVE"
    again = runner.invoke(main, ["mandates", "resume", "DDI-123456-CMPDD0002", "--reason", "twice"])
    assert again.exit_code == 1 and "is ACTIVE, not HELD" in again.output
    batch, parsed, _ = collection_day(dd, date(2026, 12, 22))
    # the new invoice only: the debit returned with the unmapped code was reversed, not re-presented
    assert [r.reference for r in parsed.records] == ["CMPDD0002", "CONTRA"] and batch.total_minor == 400
    assert outcome["returns"][0]["return_description"] == "INSTRUCTION CANCELLED"


def test_account_transferred_holds_until_the_addacs_amendment(dd, monkeypatch, tmp_path):
    import shutil

    import yaml

    config = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, config)
    codes = yaml.safe_load((config / "rejection_codes.yaml").read_text())
    codes["bacs_return_codes"].append({"return_code": "0301", "rejection_code": "ARUDD3"})  # a bureau's own code
    (config / "rejection_codes.yaml").write_text(yaml.safe_dump(codes))
    monkeypatch.setattr("tests.support.direct_debit.CONFIG_DIR", config)
    collection_day(dd, date(2026, 12, 14))
    report = arudd([returned("CMPDD0001", "0301", date(2026, 12, 15), "45.67", trans="01")])
    process_arudd(dd, drop_report(dd, "arudd", "ARUDD-3.xml", report), date(2026, 12, 17))
    assert dd.query("SELECT status, held_reason FROM mandates WHERE reference = 'CMPDD0001'") == [
        ("HELD", "ARUDD returnCode 0301 (RETURNED): held until the ADDACS amendment or an operator")]
    amendment = addacs([{"reference": "CMPDD0001", "payer-name": "Payer", "reason-code": "3",
                         "effective-date": "2026-12-18", "payer-new-sort-code": "309634",
                         "payer-new-account-number": "11112222"}])
    load = process_addacs(dd, drop_report(dd, "addacs", "ADDACS-3.xml", amendment), date(2026, 12, 18))
    assert load.outcomes == {"MANDATE_AMENDED": 1}
    assert dd.query("SELECT status, pending_instruction, bank_account, held_reason FROM mandates "
                    "WHERE reference = 'CMPDD0001'") == [("AMENDMENT_PENDING", "NEW", "11112222", None)]


def test_every_arudd_reason_has_its_meaning_and_mandate_action():
    codes = load_rejection_codes(CONFIG_DIR)
    table = {code: (codes.codes[code].description, codes.codes[code].decline, action)
             for code, action in codes.mandate_actions.items()}
    assert table == {
        "ARUDD0": ("Refer to payer", "SOFT", "KEEP"),
        "ARUDD1": ("Instruction cancelled", "HARD", "CANCEL"),
        "ARUDD2": ("Payer deceased", "HARD", "CANCEL"),
        "ARUDD3": ("Account transferred", "HARD", "HOLD"),
        "ARUDD4": ("Advance notice disputed", "HARD", "HOLD"),
        "ARUDD5": ("No account", "HARD", "CANCEL"),
        "ARUDD6": ("No instruction", "HARD", "CANCEL"),
        "ARUDD7": ("Amount differs", "HARD", "HOLD"),
        "ARUDD8": ("Amount not yet due", "HARD", "HOLD"),
        "ARUDD9": ("Presentation overdue", "HARD", "HOLD"),
        "ARUDDA": ("Service user differs", "HARD", "HOLD"),
        "ARUDDB": ("Account closed", "HARD", "CANCEL"),
    }
    assert codes.bacs_return_codes == {"0128": "ARUDD0", "1012": "ARUDD1"}  # seen in public ARUDD samples
    assert not set(codes.mandate_actions) & set(codes.card_codes)


def _quarantine(platform, feed: str, name: str, data: bytes, process) -> dict:
    key = drop_report(platform, feed, name, data)
    with pytest.raises(FileQuarantined):
        process(platform, key, date(2026, 12, 17))
    assert not platform.files.exists(f"inbound/{feed}/{BUREAU}/{name}")
    return orjson.loads(platform.files.read_bytes(f"quarantine/{feed}/{BUREAU}/{name}.error.json"))


@pytest.mark.parametrize("count", ["²", "١", "1\n", " 1", "+1", "1.0", ""])
def test_a_malformed_number_in_a_report_quarantines_it_with_the_reason(dd, count):
    report = _real_arudd(_item("CMPDD0001", "1012", "INSTRUCTION CANCELLED", "45.67"), 1, "45.67")
    report = report.replace(b'numberOf="1"', f'numberOf="{count}"'.encode("iso-8859-1", "xmlcharrefreplace"))
    error = _quarantine(dd, "arudd", "bad-count.xml", report, process_arudd)
    assert error["error_code"] == "TOTALS_INVALID" and "Totals numberOf" in error["error"]


@pytest.mark.parametrize("amount", ["4².67", "45.6٧", "45.67 "])
def test_a_non_ascii_digit_in_an_amount_rejects_the_item(dd, amount):
    collection_day(dd, date(2026, 12, 14))
    report = _real_arudd(_item("CMPDD0001", "1012", "INSTRUCTION CANCELLED", amount), 1, "45.67")
    _, posted, outcome = process_arudd(dd, drop_report(dd, "arudd", "bad-amount.xml", report), date(2026, 12, 17))
    [row] = outcome["returns"]
    assert (row["problem_code"], row["problem"]) == (
        "INVALID_RECORD", f"valueOf '{amount}' must be a decimal amount with two places")
    assert posted.posting_count == 0 and dd.balance("ACCDD0001") == 0


def test_card_numbers_in_the_banks_free_text_are_masked_everywhere(dd):
    collection_day(dd, date(2026, 12, 14))
    report = _real_arudd(_item("CMPDD0001", "1012", "CANCELLED PAID BY CARD 4111 1111 1111 1111", "45.67"), 1,
                         "45.67")
    key = drop_report(dd, "arudd", "ARUDD-pan.xml", report)
    _, _, outcome = process_arudd(dd, key, date(2026, 12, 17))
    assert outcome["returns"][0]["return_description"] == "CANCELLED PAID BY CARD ************1111"
    advice = addacs([{"reference": "CMPDD0002", "payer-name": "J SMITH 5555-5555-5555-4444", "reason-code": "1",
                      "effective-date": "2026-12-18"}])
    process_addacs(dd, drop_report(dd, "addacs", "ADDACS-pan.xml", advice), date(2026, 12, 18))
    assert dd.query("SELECT payer_name FROM addacs_advices") == [("J SMITH ************4444",)]
    errors = dd.query("SELECT job, detail FROM job_errors WHERE detail LIKE 'CARD_NUMBER_MASKED%' ORDER BY job")
    assert errors == [
        ("addacs", "CARD_NUMBER_MASKED: payer-name of MessagingAdvice 1 carried a card number; stored masked"),
        ("arudd", "CARD_NUMBER_MASKED: returnDescription of ReturnedDebitItem 1 carried a card number; stored masked")]
    for folder in ("outbound", "archive"):
        for stored in dd.files.list_files(folder):
            data = dd.files.read_bytes(stored.path)
            assert b"4111 1111 1111 1111" not in data and b"5555-5555-5555-4444" not in data
    with dd.connect() as con:
        for table in ("dd_returns", "addacs_advices", "job_errors", "workflow_events", "customer_communications"):
            text = str(con.execute(f"SELECT * FROM {table}").fetchall())
            assert "4111 1111" not in text and "5555-5555" not in text


def test_an_addacs_resent_with_other_whitespace_is_refused_as_the_same_report(dd):
    advices = [{"reference": "CMPDD0001", "payer-name": "Zoë Müller", "reason-code": "1",
                "effective-date": "2026-12-18"}]
    first = addacs(advices)
    assert b"advice-number" not in first and b'report-generation-time="06:00:01"' in first
    process_addacs(dd, drop_report(dd, "addacs", "ADDACS-1.xml", first), date(2026, 12, 18))
    resend = first.replace(b"<MessagingAdvice ", b"\n  <MessagingAdvice   ").replace(b'payer-name="Zo',
                                                                                    b'payer-name="  Zo')
    assert resend != first
    error = _quarantine(dd, "addacs", "ADDACS-1-resent.xml", resend, process_addacs)
    assert error["error_code"] == "DUPLICATE_FILE" and "ADDACS 123456 2026-12-20 06:00:01 advices" in error["error"]
    other_time = addacs(advices, number="000002")  # generated at another time: a new report
    assert process_addacs(dd, drop_report(dd, "addacs", "ADDACS-2.xml", other_time), date(2026, 12, 19)).outcomes == {
        "REJECTED": 1}  # already cancelled by the first


def test_auddis_is_not_written_on_a_day_with_nothing_pending_and_metadata_says_so(dd):
    batch, parsed = auddis_day(dd, date(2026, 12, 15))
    assert parsed is None and batch.record_count == 0
    assert dd.query("SELECT status FROM batches WHERE batch_id = 'AUD-20261215'") == [("NOTHING_PENDING",)]
    assert not dd.files.exists(f"outbound/auddis/{BUREAU}/AUD-20261215.std18.enc")


def test_submission_dates_follow_the_cycle_and_a_weekend_run_moves(dd):
    batch, parsed, _ = collection_day(dd, date(2026, 12, 12))  # a Saturday
    assert parsed.submission.processing_date == date(2026, 12, 15)  # input Mon 14, processed Tue 15
    assert parsed.submission.created_on == date(2026, 12, 14)
    assert dataclasses.astuple(batch.cycle)[1:] == (date(2026, 12, 14), date(2026, 12, 15), date(2026, 12, 16))
    assert dd.query("SELECT DISTINCT processing_date::VARCHAR FROM dd_collections") == [("2026-12-15",)]


@pytest.mark.parametrize(("mutate", "code", "fragment"), [
    (lambda d: d.replace(b"ISO-8859-1", b"x-nonsense"), "WRONG_ENCODING", "declares the encoding x-nonsense"),
    (lambda d: d.replace(b'valueOf="45.67" currency="GBP"/>\n          </Orig',
                         'valueOf="4\u00b9.67" currency="GBP"/>\n          </Orig'.encode("latin-1")),
     "TOTALS_INVALID", "must be a decimal amount with two places"),
])
def test_other_malformed_report_values_are_refused_not_crashed_on(dd, mutate, code, fragment):
    report = _real_arudd(_item("CMPDD0001", "1012", "INSTRUCTION CANCELLED", "45.67"), 1, "45.67")
    broken = mutate(report)
    assert broken != report
    error = _quarantine(dd, "arudd", "hostile.xml", broken, process_arudd)
    assert error["error_code"] == code and fragment in error["error"]


def test_the_file_check_reads_records_with_duckdb_and_agrees_with_the_text_check(tmp_path):
    from cmp_pipelines.defs.direct_debit.bacs_check import check_file

    broken = _edit(_edit(GOOD, 5, 65, "AAAAAAAAAA"), 6, 16, "42")
    for name, text in (("lf.std18", broken), ("crlf.std18", broken.replace("\n", "\r\n"))):
        path = tmp_path / name
        path.write_bytes(text.encode("ascii"))
        assert [str(p) for p in check_file(path)] == _problems(broken)
    assert [(p.line, p.first) for p in check_text(broken)][:2] == [(5, 65), (6, 16)]  # then the totals


@pytest.mark.parametrize("shape", ["good", "broken", "no final newline", "a label cut short", "empty", "one newline",
                                   "three lines", "only labels", "long last line", "non-ascii bytes",
                                   "a lone carriage return"])
def test_the_file_check_reads_labels_from_the_ends_and_agrees_with_the_text_check(tmp_path, shape):
    """check_file counts lines in blocks and reads the labels from the file's two ends; whatever the shape, it
    names exactly what the whole-text check names (line numbers included)."""
    from cmp_pipelines.defs.direct_debit.bacs_check import check_file

    lines = GOOD.split("\n")[:-1]
    data = {
        "good": GOOD,
        "broken": _edit(_edit(GOOD, 5, 65, "AAAAAAAAAA"), 6, 16, "42"),
        "no final newline": GOOD[:-1],
        "a label cut short": "\n".join(lines[:-1] + [lines[-1][:40]]),
        "empty": "",
        "one newline": "\n",
        "three lines": "\n".join(lines[:3]) + "\n",
        "only labels": "\n".join(lines[:4] + lines[-3:]) + "\n",
        "long last line": "\n".join(lines[:-1] + [lines[-1] + "X" * 200_000]) + "\n",
        "non-ascii bytes": _edit(GOOD.replace("UTL1", "UTL\u00e9", 1), 5, 83, "J SM\u00cfTH"),
        "a lone carriage return": _edit(GOOD, 5, 83, "J\rSMITH"),
    }[shape]
    path = tmp_path / "submission.std18"
    path.write_bytes(data.encode("latin-1"))
    expected = [str(p) for p in check_text(data.encode("latin-1").decode("ascii", errors="replace"))]
    assert [str(p) for p in check_file(path)] == expected
    assert (expected == []) == (shape == "good")
