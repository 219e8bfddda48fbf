"""``dunlink emails``: see every email as buyers and vendors will, without a database or a mail server."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from adapters.email.render import EMAILS, LOCALES


def _email_name(value: str) -> str:
    if value not in EMAILS:
        raise argparse.ArgumentTypeError(f"unknown email {value!r}; the emails are: {', '.join(EMAILS)}")
    return value


def _preview(args: argparse.Namespace) -> int:
    # Imported here so that 'dunlink --help' and the other commands do not compile templates.
    from adapters.email.preview import sample
    from adapters.email.render import EmailRenderer

    names = [args.name] if args.name else list(EMAILS)
    locales = [args.locale] if args.locale else list(LOCALES)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    renderer = EmailRenderer()
    for name in names:
        for locale in locales:
            rendered = renderer.email(sample(name, locale))
            for suffix, content in (("html", rendered.html), ("txt", rendered.text),
                                    ("subject.txt", rendered.subject + "\n")):
                path = out / f"{name}.{locale}.{suffix}"
                path.write_text(content, encoding="utf-8")
                print(path)
    print(f"{len(names) * len(locales)} email(s) rendered with sample data into {out}", file=sys.stderr)
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``emails`` with its actions to the ``dunlink`` parser."""
    emails = commands.add_parser(
        "emails", help="look at the emails dunlink sends (rendered with sample data)",
        description="Work with the email templates under templates/email/.")
    actions = emails.add_subparsers(dest="emails_command", metavar="ACTION", required=True)
    preview = actions.add_parser(
        "preview", help="render every email (or one) with sample data to files",
        description="Render each email with the sample data of adapters/email/preview.py to "
        "DIR/<name>.<locale>.html, .txt and .subject.txt, and print the paths written. Open the .html files in "
        "a browser to see what a recipient sees. Emails: " + ", ".join(EMAILS) + ".")
    preview.add_argument("name", nargs="?", type=_email_name, metavar="NAME",
                         help="only this email (one of " + ", ".join(EMAILS) + "; default: all)")
    preview.add_argument("--locale", choices=LOCALES, help="only this language (default: " + " and ".join(LOCALES)
                         + ")")
    preview.add_argument("--out", type=Path, default=Path("var/email-preview"), metavar="DIR",
                         help="folder to write into, created if missing (default var/email-preview)")
    preview.set_defaults(handler=_preview)
