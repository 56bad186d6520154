"""The translation catalogs are complete and current.

Fails when a catalog under translations/*/LC_MESSAGES/ has an untranslated or fuzzy
entry, when the committed messages.pot no longer matches what `make catalogs` would
extract, when a catalog is missing strings from the .pot, when a translation's
python-format placeholders differ from its msgid's, or when an SMS drops a carrier
keyword (STOP, START, HELP). Fix with `make catalogs`, translate, then `make translations`.
"""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from babel.messages.catalog import PYTHON_FORMAT, Catalog, Message
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parent.parent
TRANSLATIONS = ROOT / "translations"
POT = TRANSLATIONS / "messages.pot"
CATALOGS = sorted(TRANSLATIONS.glob("*/LC_MESSAGES/*.po"))


def load(path: Path, locale: str | None = None) -> Catalog:
    with path.open("rb") as handle:
        return read_po(handle, locale=locale)


def key(message: Message) -> tuple:
    return (message.context, message.id)


def show(message: Message) -> str:
    text = message.id if isinstance(message.id, str) else " | ".join(message.id)
    return repr(text if message.context is None else f"[{message.context}] {text}")


def entries(catalog: Catalog) -> list[Message]:
    """Every real entry (the header is not a message; obsolete #~ entries are not iterated)."""
    return [message for message in catalog if message.id]


def forms(value) -> tuple[str, ...]:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


@pytest.fixture(scope="module", params=CATALOGS, ids=lambda path: str(path.relative_to(TRANSLATIONS)))
def catalog(request) -> Catalog:
    path = request.param
    return load(path, locale=path.parent.parent.name)


def test_there_are_catalogs_to_check():
    assert POT.is_file(), "translations/messages.pot is missing: run `make catalogs`"
    assert CATALOGS, "no translations/*/LC_MESSAGES/*.po found"


def test_no_untranslated_or_fuzzy_entries(catalog):
    assert not catalog.fuzzy, "the catalog header is marked fuzzy, so `pybabel compile` would skip the whole file"
    untranslated = [show(m) for m in entries(catalog) if not all(form.strip() for form in forms(m.string))]
    fuzzy = [show(m) for m in entries(catalog) if m.fuzzy]
    assert not untranslated and not fuzzy, (
        f"{len(untranslated)} untranslated entries:\n" + "".join(f"  {text}\n" for text in untranslated)
        + f"{len(fuzzy)} fuzzy entries:\n" + "".join(f"  {text}\n" for text in fuzzy))


def test_catalog_has_every_string_of_the_pot(catalog):
    template = entries(load(POT))
    have = {key(m) for m in entries(catalog)}
    missing = sorted(show(m) for m in template if key(m) not in have)
    assert template and not missing, (
        f"{len(missing)} strings of messages.pot are not in the catalog (run `make catalogs`):\n" + "\n".join(missing))


def placeholders(text: str) -> tuple[Counter, list[str]]:
    """Named placeholders as a set of (name, conversion) and positional ones in order."""
    named: Counter = Counter()
    positional: list[str] = []
    for name, _params, conversion in PYTHON_FORMAT.findall(text):
        if conversion == "%":
            continue
        if name:
            named[(name, conversion)] = 1  # a translation may use a named placeholder twice or reorder it
        else:
            positional.append(conversion)
    return named, positional


def test_translations_keep_the_placeholders_of_their_msgid(catalog):
    wrong = []
    for message in entries(catalog):
        ids = forms(message.id)
        if "python-format" not in message.flags and not any("%(" in text for text in ids):
            continue
        expected_named, expected_positional = Counter(), []
        for text in ids:  # singular and plural together: a singular form may leave out the count
            named, positional = placeholders(text)
            expected_named |= named
            expected_positional = expected_positional or positional
        translated = [form for form in forms(message.string) if form]
        got_named = Counter()
        for form in translated:
            named, positional = placeholders(form)
            got_named |= named
            if positional != expected_positional:
                wrong.append(f"{show(message)} -> {form!r}: positional {positional} != {expected_positional}")
        if translated and got_named != expected_named:
            want = sorted(f"%({n}){c}" for n, c in expected_named)
            have = sorted(f"%({n}){c}" for n, c in got_named)
            wrong.append(f"{show(message)}: expected {want}, translation has {have}")
    assert not wrong, "placeholders differ from the msgid:\n" + "\n".join(wrong)


CARRIER_KEYWORDS = re.compile(r"\b(STOP|START|HELP|UNSTOP|CANCEL|END|QUIT|UNSUBSCRIBE|STOPALL)\b")


def test_sms_keep_the_carrier_keywords_in_english(catalog):
    """Carriers act on the opt-out and help keywords exactly as they are (STOP, START, HELP):
    a translation keeps every one its msgid names."""
    wrong = []
    for message in entries(catalog):
        wanted = {word for text in forms(message.id) for word in CARRIER_KEYWORDS.findall(text)}
        for form in forms(message.string):
            lost = wanted - set(CARRIER_KEYWORDS.findall(form))
            if form and lost:
                wrong.append(f"{show(message)}: lost {sorted(lost)}")
    assert not wrong, "translations that lost a carrier keyword:\n" + "\n".join(wrong)


def extract_command(output: Path) -> list[str]:
    """The `pybabel extract` line of the Makefile's `catalogs` target, writing to `output`."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    target = re.search(r"^catalogs:.*\n((?:\t.*\n?)+)", makefile, re.MULTILINE)
    assert target, "the Makefile has no `catalogs` target"
    line = next((line for line in target.group(1).splitlines() if "pybabel extract" in line), None)
    assert line, "the Makefile `catalogs` target has no `pybabel extract` line"
    words = shlex.split(line.strip())
    args = words[words.index("extract"):]
    out = next(i for i, word in enumerate(args) if word in ("-o", "--output-file", "--output"))
    args[out + 1] = str(output)
    return [sys.executable, "-m", "babel.messages.frontend", *args]


def test_committed_pot_is_not_stale(tmp_path):
    fresh_pot = tmp_path / "messages.pot"
    result = subprocess.run(extract_command(fresh_pot), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    fresh = {key(m): m for m in entries(load(fresh_pot))}
    committed = {key(m): m for m in entries(load(POT))}
    new = sorted(show(fresh[k]) for k in fresh.keys() - committed.keys())
    gone = sorted(show(committed[k]) for k in committed.keys() - fresh.keys())
    assert not new and not gone, (
        "translations/messages.pot is stale: run `make catalogs`, translate, then `make translations`.\n"
        + "".join(f"  not in the .pot yet: {text}\n" for text in new)
        + "".join(f"  no longer in the code: {text}\n" for text in gone))


def test_no_source_folder_is_skipped_by_extraction():
    """Walk every folder (even `_macros`), extract with babel.cfg and the Makefile's keywords,
    and find strings the committed .pot does not have."""
    from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
    from babel.messages.frontend import parse_mapping_cfg

    args = extract_command(Path("unused"))
    keywords = dict(DEFAULT_KEYWORDS)
    keywords.update({args[i + 1]: None for i, word in enumerate(args) if word in ("-k", "--keyword", "--keywords")})
    with (TRANSLATIONS / "babel.cfg").open(encoding="utf-8") as handle:
        method_map, options_map = parse_mapping_cfg(handle)

    def every_folder(path: str) -> bool:
        name = Path(path).name
        return name != "__pycache__" and not name.startswith(".") and name != "node_modules"

    found = {}
    for filename, _line, message, _comments, context in extract_from_dir(
            ROOT, method_map, options_map, keywords=keywords, directory_filter=every_folder):
        found.setdefault((context, message[0] if isinstance(message, tuple) else message), filename)
    committed = {(m.context, forms(m.id)[0]) for m in entries(load(POT))}
    missing = sorted(f"{text!r} ({filename})" for (context, text), filename in found.items()
                     if (context, text) not in committed)
    assert not missing, "strings in the code that `make catalogs` does not extract:\n" + "\n".join(missing)
