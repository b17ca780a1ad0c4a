"""The hint an error gives for a name that is not among the choices.

>>> did_you_mean("lyaers", ["layers", "heads"])
" (did you mean 'layers'?)"
>>> did_you_mean("xyz", ["layers"])
''
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """` (did you mean 'CLOSEST'?)` for the closest of `choices`, or '' when none is close."""
    close = difflib.get_close_matches(value, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
