"""A malformed YAML config names the line to fix (an unclosed bracket or quote: the line where it opens, not the
line after the end of the file that PyYAML points at)."""
import pytest

from posetrack_app.config import load_yaml
from posetrack_app.errors import ConfigError


@pytest.mark.parametrize("text, line, fragment", [
    ("detector:\n  input_size: [640\n", 2, "flow sequence that starts at line 2"),  # unclosed [
    ("a: 1\nb: 'unterminated\nc: 3\n", 2, "quoted scalar that starts at line 2"),   # unclosed quote
    ("a: 1\nb: c: d\n", 2, "mapping values are not allowed here"),
    ("a:\n  - 1\n - 2\n", 3, "expected <block end>"),
    ("a: 1\n\tb: 2\n", 2, "cannot start any token"),
    ("detector:\n  input_size: 640\n  score: {0.5\n", 3, "flow mapping that starts at line 3"),
])
def test_yaml_error_names_the_line_to_fix(tmp_path, text, line, fragment):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    assert line <= len(text.splitlines())
    with pytest.raises(ConfigError) as info:
        load_yaml(path)
    message = str(info.value)
    assert f"is not valid YAML at line {line}:" in message and fragment in message, message
    assert "\n" not in message
