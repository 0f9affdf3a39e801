"""Copy generated tables (docs/*.md) into README.md between their markers.

    <!-- begin: docs/reliability.md --> ... <!-- end: docs/reliability.md -->
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    for match in re.finditer(r"<!-- begin: (\S+) -->", text):
        rel = match.group(1)
        body = (ROOT / rel).read_text().strip()
        text = re.sub(rf"(<!-- begin: {re.escape(rel)} -->).*?(<!-- end: {re.escape(rel)} -->)",
                      lambda m: f"{m.group(1)}\n{body}\n{m.group(2)}", text, flags=re.S)
    readme.write_text(text)


if __name__ == "__main__":
    main()
