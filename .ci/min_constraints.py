"""Print a pip constraints file that pins every runtime dependency in pyproject.toml at its declared minimum.

`make test-min` installs the project with it, so a floor that admits a version the code cannot run on
(an attribute that arrived later, say) fails a test instead of a user's install. Only direct dependencies
are pinned, as `uv pip install --resolution lowest-direct` would; what they need resolves as usual.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Ubuntu 22.04's Python 3.10; tomli is a runtime dependency there
    import tomli as tomllib

REQUIREMENT = re.compile(r"(?P<name>[A-Za-z0-9._-]+)(?P<specifiers>[^;]*)(?P<marker>;.*)?")


def lowest(requirement: str) -> str:
    """'tenacity>=8.3,!=8.4.0' -> 'tenacity==8.3'; the environment marker, if any, is kept."""
    match = REQUIREMENT.fullmatch(requirement.strip())
    floor = re.search(r">=\s*([^,\s]+)", match["specifiers"]) if match else None
    if match is None or floor is None:
        raise SystemExit(f"{requirement!r}: every runtime dependency needs a >= floor")
    return f"{match['name']}=={floor[1]}{match['marker'] or ''}"


def main() -> None:
    project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        print(lowest(requirement))


if __name__ == "__main__":
    main()
