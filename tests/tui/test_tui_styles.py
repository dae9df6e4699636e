"""Styles beside their widgets, one way: DEFAULT_CSS on the class, no .tcss files, no CSS_PATH."""

import ast
from pathlib import Path

TUI = Path(__file__).resolve().parents[2] / "squish" / "tui"


def class_attributes(path: Path) -> list[tuple[str, str]]:
    """(class, attribute) for every attribute assigned in a class body."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                targets = item.targets if isinstance(item, ast.Assign) else [getattr(item, "target", None)]
                found += [(node.name, t.id) for t in targets if isinstance(t, ast.Name)]
    return found


def test_no_tcss_files():
    assert sorted(TUI.rglob("*.tcss")) == []


def test_styles_are_default_css_on_the_class():
    sources = sorted(TUI.rglob("*.py"))
    assert len(sources) > 10
    elsewhere = [
        f"{path.relative_to(TUI)}: {cls}.{name}"
        for path in sources
        for cls, name in class_attributes(path)
        if name in ("CSS", "CSS_PATH")
    ]
    assert elsewhere == []
    styled = {cls for path in sources for cls, name in class_attributes(path) if name == "DEFAULT_CSS"}
    assert {"ChatScreen", "ChatMessage", "StatsPanel", "ModelBar", "PromptInput", "PullScreen"} <= styled
