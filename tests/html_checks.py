"""What makes a report open in an air-gapped hospital network: no script, nothing fetched."""

from __future__ import annotations

import re

EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:|//)|url\(\s*["']?https?:|@import""")


def is_self_contained(page: str) -> bool:
    return "<script" not in page.lower() and not EXTERNAL.search(page)
