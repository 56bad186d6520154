# Quick start: `make demo` runs the demo on SQLite; `make test` runs the whole suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test install translations catalogs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Compile the .po catalogs into the .mo files the app reads (fuzzy entries are left out).
translations: $(STAMP)
	$(BIN)/pybabel compile --statistics -d translations

# Re-extract strings and merge them into every catalog (then translate, then `make translations`).
catalogs: $(STAMP)
	$(BIN)/pybabel extract --no-location --sort-output --omit-header --ignore-dirs '.* __pycache__' -F translations/babel.cfg -k _l -k lazy_gettext -o translations/messages.pot .
	$(BIN)/pybabel update --no-fuzzy-matching -i translations/messages.pot -d translations

demo: translations
	$(BIN)/portal demo

test: translations
	$(BIN)/pytest

clean:
	rm -rf $(VENV) instance .pytest_cache

bench: translations ; $(BIN)/python bench/run_all.py
