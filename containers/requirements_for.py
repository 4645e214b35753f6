"""Print the requirements of the library core plus one extra, read from pyproject.toml.

The images' dependency layer installs these, constrained by requirements.lock, from two files
only (this one's inputs), so a change to the code never reinstalls a dependency.

    python3 requirements_for.py pyproject.toml serving > requirements.in
"""

import sys
import tomllib
from pathlib import Path


def requirements(pyproject: Path, extra: str) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    extras = project.get("optional-dependencies", {})
    if extra not in extras:
        raise SystemExit(f"error: pyproject.toml has no extra {extra!r} (it has {sorted(extras)})")
    return [*project["dependencies"], *extras[extra]]


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: requirements_for.py PYPROJECT EXTRA")
    print("\n".join(requirements(Path(sys.argv[1]), sys.argv[2])))
