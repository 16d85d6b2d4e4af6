"""The README's "Filter-prune any model" example runs as written."""
import re
from pathlib import Path


def test_readme_example(tmp_path, monkeypatch):
    text = (Path(__file__).parents[2] / "README.md").read_text()
    section = text.split("## Filter-prune any model", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) <= 10
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "mobilenet_v2-pruned.pt").exists()
