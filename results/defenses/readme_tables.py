"""Paste results/defenses/README_SECTION.md into the README between its defenses:tables markers.

    python results/defenses/readme_tables.py        # after report.py
"""

from pathlib import Path

from hesig.core.io import atomic_write_text

ROOT = Path(__file__).resolve().parents[2]
START, END = "<!-- defenses:tables -->", "<!-- /defenses:tables -->"

readme = (ROOT / "README.md").read_text()
head, rest = readme.split(START, 1)
_, tail = rest.split(END, 1)
tables = (ROOT / "results" / "defenses" / "README_SECTION.md").read_text().strip()
atomic_write_text(ROOT / "README.md", f"{head}{START}\n{tables}\n{END}{tail}")
