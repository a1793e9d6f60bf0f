"""Progress bars redraw in place on a terminal and rarely in a log file."""
import io
import time

import pytest

from posetrack_app.progress import LOG_REFRESH_S, TERMINAL_REFRESH_S, progress_bar


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("file_type, refresh_s", [(io.StringIO, LOG_REFRESH_S), (_Terminal, TERMINAL_REFRESH_S)])
def test_refresh_interval_follows_the_kind_of_stderr(file_type, refresh_s):
    bar = progress_bar(file=file_type(), total=10)
    assert bar.mininterval == refresh_s
    bar.close()


@pytest.mark.parametrize("mininterval, most_redraws", [(None, 3), (0.05, 100)])
def test_a_log_file_gets_a_few_lines_not_one_per_frame(mininterval, most_redraws):
    """200 frames over ~0.6 s: a terminal-rate bar (0.05 s) would redraw ~10 times; the log-rate one only at the
    start and the end."""
    log = io.StringIO()
    kwargs = {} if mininterval is None else {"mininterval": mininterval}
    bar = progress_bar(file=log, total=200, unit="frame", **kwargs)
    for _ in range(200):
        time.sleep(0.003)
        bar.update(1)
    bar.close()
    redraws = log.getvalue().count("\r")
    assert redraws <= most_redraws, log.getvalue()[:500]
    if mininterval is not None:
        assert redraws > 3  # the comparison row: the rate, not the test, keeps the log short
    assert "200/200" in log.getvalue()
