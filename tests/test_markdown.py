"""How messages are read as Markdown: line breaks as written, code blocks as the screen shows them."""

from __future__ import annotations

from tui.widgets.message import code_blocks, markdown_parser


def inline_children(markdown: str) -> list[str]:
    return [child.type for token in markdown_parser().parse(markdown) for child in token.children or ()]


def test_single_newlines_in_paragraphs_lists_and_quotes_are_line_breaks():
    poem = "Roses are red,\nviolets are blue\n\n- a list item\n  that goes on\n\n> quoted\n> twice\n"
    kinds = inline_children(poem)
    assert "softbreak" not in kinds and kinds.count("hardbreak") == 3


def test_code_blocks_keep_their_lines_and_tables_their_rows():
    tokens = markdown_parser().parse("```\nline 1\nline 2\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    fence = next(token for token in tokens if token.type == "fence")
    assert fence.content == "line 1\nline 2\n"
    assert "hardbreak" not in [child.type for token in tokens for child in token.children or ()]


def test_code_blocks_include_one_a_cut_off_reply_never_closed():
    assert code_blocks("Here:\n\n```python\nprint('zoo')\n```\n\nand\n\n```\nls\n") == ["print('zoo')", "ls"]
    assert code_blocks("text only") == []
    assert code_blocks("    indented code\n") == ["indented code"]
