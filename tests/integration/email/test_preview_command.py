"""``dunlink emails preview``, run as an operator runs it: files on disk, paths on stdout, clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from adapters.email.render import EMAILS

ROOT = Path(__file__).resolve().parents[3]


def dunlink(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dunlink.cli.main", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False, stdin=subprocess.DEVNULL)


def test_writes_every_email_in_both_languages(tmp_path: Path) -> None:
    out = tmp_path / "preview"
    result = dunlink("emails", "preview", "--out", str(out))

    assert result.returncode == 0, result.stderr
    expected = {f"{name}.{locale}.{suffix}" for name in EMAILS for locale in ("de", "en")
                for suffix in ("html", "txt", "subject.txt")}
    assert {path.name for path in out.iterdir()} == expected
    assert sorted(result.stdout.split()) == sorted(str(out / name) for name in expected)
    assert "588,00 €" in (out / "reminder.de.txt").read_text(encoding="utf-8")
    assert "€588.00" in (out / "reminder.en.html").read_text(encoding="utf-8")
    assert (out / "vendor_summary.de.subject.txt").read_text(encoding="utf-8").startswith("Mahnwesen-Übersicht vom")


def test_one_email_in_one_language(tmp_path: Path) -> None:
    result = dunlink("emails", "preview", "final_notice", "--locale", "en", "--out", str(tmp_path))

    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "final_notice.en.html", "final_notice.en.subject.txt", "final_notice.en.txt"]
    assert (tmp_path / "final_notice.en.subject.txt").read_text(encoding="utf-8") == (
        "Last reminder: your order for Yoga Teacher Training 200h will be cancelled on October 15, 2026\n")


def test_an_unknown_email_names_the_ones_there_are(tmp_path: Path) -> None:
    result = dunlink("emails", "preview", "welcome", "--out", str(tmp_path))

    assert result.returncode == 2
    assert "unknown email 'welcome'" in result.stderr
    assert "payment_link, reminder, final_notice, vendor_summary" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_help_answers(tmp_path: Path) -> None:
    result = dunlink("emails", "preview", "--help")

    assert result.returncode == 0
    for word in ("--locale", "--out", "NAME", "vendor_summary", "sample data"):
        assert word in result.stdout
