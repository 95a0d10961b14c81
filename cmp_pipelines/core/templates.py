"""Customer communication templates (Jinja2) under `config/templates/`.

A template NAME is three files: `NAME.subject.txt` (one line), `NAME.body.txt` and, optionally, `NAME.body.html`.
HTML is autoescaped (a customer's name or an event's detail cannot inject markup); text is not. An undefined
variable is an error rather than an empty string, so a typo never sends a half-filled letter.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jinja2

SUBJECT, TEXT, HTML = ".subject.txt", ".body.txt", ".body.html"


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str | None


class TemplateError(ValueError):
    pass


class Templates:
    def __init__(self, folder: Path):
        self.folder = folder
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(folder)),
            autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=False),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
        )

    def names(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted(p.name[: -len(SUBJECT)] for p in self.folder.glob(f"*{SUBJECT}")
                      if (self.folder / (p.name[: -len(SUBJECT)] + TEXT)).is_file())

    def problems(self, name: str, names: set[str] | None = None) -> list[str]:
        """Why template `name` cannot be used (missing file, Jinja2 syntax error); empty when it can."""
        names = set(self.names()) if names is None else names
        if name not in names:
            known = ", ".join(sorted(names)) or "none"
            return [f"unknown template {name!r}: {self.folder} needs {name}{SUBJECT} and {name}{TEXT} "
                    f"(known templates: {known})"]
        found = []
        for suffix in (SUBJECT, TEXT, HTML):
            if suffix == HTML and not (self.folder / f"{name}{suffix}").is_file():
                continue
            try:
                self.env.get_template(f"{name}{suffix}")
            except jinja2.TemplateSyntaxError as exc:
                found.append(f"template {name}{suffix} line {exc.lineno}: {exc.message}")
        return found

    def render(self, name: str, context: dict) -> Rendered:
        try:
            subject = self.env.get_template(f"{name}{SUBJECT}").render(context)
            text = self.env.get_template(f"{name}{TEXT}").render(context)
            html = None
            if (self.folder / f"{name}{HTML}").is_file():
                html = self.env.get_template(f"{name}{HTML}").render(context)
        except jinja2.TemplateNotFound as exc:
            raise TemplateError(f"template {name!r}: {exc.name} is missing in {self.folder}") from None
        except jinja2.UndefinedError as exc:
            raise TemplateError(f"template {name!r}: {exc.message}") from None
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"template {name!r} line {exc.lineno}: {exc.message}") from None
        subject = " ".join(subject.split())
        if not subject:
            raise TemplateError(f"template {name!r}: the subject is empty")
        return Rendered(subject, text, html)
