"""Progress bars on stderr that stay readable when stderr is a log file instead of a terminal."""
from __future__ import annotations

import sys

# On a terminal the bar redraws in place; in a log file every redraw is kept, so redraw rarely there.
TERMINAL_REFRESH_S = 0.1
LOG_REFRESH_S = 30.0


def progress_bar(file=None, **tqdm_kwargs):
    """tqdm bar on `file` (default stderr); refreshes every LOG_REFRESH_S seconds when `file` is not a terminal."""
    from tqdm import tqdm

    file = file if file is not None else sys.stderr
    is_terminal = hasattr(file, "isatty") and file.isatty()
    tqdm_kwargs.setdefault("mininterval", TERMINAL_REFRESH_S if is_terminal else LOG_REFRESH_S)
    return tqdm(file=file, dynamic_ncols=is_terminal, **tqdm_kwargs)
