"""Progress bars redraw on a terminal and write plain lines anywhere else."""

import io

from detector.progress import progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_not_a_terminal_gets_plain_lines_without_escape_codes():
    stream = io.StringIO()
    bar = progress(range(5), desc="scenes", unit="scene", stream=stream, leave=False)
    for _ in bar:
        bar.set_postfix_str("working", refresh=True)
    bar.close()
    text = stream.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert lines and all(line.startswith("scenes:") for line in lines)
    assert "5/5" in lines[-1]  # the last state stays, even with leave=False


def test_terminal_gets_a_live_bar_and_disabled_prints_nothing():
    tty = Terminal()
    list(progress(range(3), desc="tiles", stream=tty))
    assert "\r" in tty.getvalue() and "3/3" in tty.getvalue()
    quiet = io.StringIO()
    list(progress(range(3), desc="tiles", stream=quiet, enabled=False))
    assert quiet.getvalue() == ""
