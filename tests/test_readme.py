"""The README's two commands are the ones CI runs, and its Python example works."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def bash_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_ci_runs_the_readme_commands():
    readme = bash_blocks((ROOT / "README.md").read_text())
    ci = (ROOT / ".ci" / "run").read_text()
    setup, tests = readme[0], readme[1]
    assert setup.count("\n") == 0 and tests.count("\n") == 0
    assert setup in ci.splitlines()
    assert re.search(rf"^{re.escape(tests)}$", ci, flags=re.M)


def test_python_example_runs():
    block = re.search(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S).group(1)
    exec(compile(block, "README.md", "exec"), {})
