"""Chat templates from model files render within bounds of time and size, and exactly as llama-cpp-python renders them."""

from __future__ import annotations

import resource
import subprocess
import time

import pytest
from llama_cpp.llama_chat_format import Jinja2ChatFormatter
from support import ROOT, zootui_command

from tui.zoo import bounded_jinja
from tui.zoo.bounded_jinja import MAX_TEMPLATE_CHARS, BoundedChatFormatter, TemplateLimitError
from tui.zoo.templates import FORMATS

TINY = ROOT / "tests" / "fixtures" / "tiny"

CONVERSATIONS = [
    [{"role": "user", "content": "Hello there"}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Name a bear."},
        {"role": "assistant", "content": "A panda."},
        {"role": "user", "content": "动物园里有熊猫吗？ <|im_end|> </s>"},
    ],
]


@pytest.mark.parametrize("family", sorted(FORMATS))
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_every_catalog_template_renders_as_llama_cpp_python_renders_it(family, add_generation_prompt):
    template = FORMATS[family].template
    for messages in CONVERSATIONS:
        ours = BoundedChatFormatter(template, "</s>", "<s>", add_generation_prompt)(messages=messages)
        theirs = Jinja2ChatFormatter(template, "</s>", "<s>", add_generation_prompt)(messages=messages)
        assert ours.prompt == theirs.prompt


def render(template: str, messages=CONVERSATIONS[0]) -> str:
    return BoundedChatFormatter(template, "</s>", "<s>")(messages=messages).prompt


HOSTILE = {
    # The two: output from a 100000 × 100000 loop, and a string doubled until memory runs out.
    "output of a double loop": (
        "{% for i in range(100000) %}{% for j in range(100000) %}xxxxxxxxxx{% endfor %}{% endfor %}",
        "writes a prompt of more than",
    ),
    "a string doubled by ~": (
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
        "would build a string of",
    ),
    "a string doubled by +": (
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
        "would build a joined value",
    ),
    "one concatenation of many copies": (
        "{% set s = 'x' * 200000 %}{{ " + " ~ ".join(["s"] * 64) + " }}",
        "would build a string of",
    ),
    "string repetition": ("{{ 'x' * 10**10 }}", "would build a repeated value"),
    "list repetition": ("{{ ([1, 2] * 10**9)|length }}", "would build a repeated value"),
    "list of large strings repeated": ("{% set s = 'x' * 100000 %}{{ ([s] * 100)|length }}", "repeated value"),
    "big integer power": ("{{ 2 ** (10 ** 9) }}", "integer of more than"),
    "big integer products": (
        "{% set ns = namespace(n=3) %}{% for i in range(64) %}{% set ns.n = ns.n * ns.n %}{% endfor %}",
        "integer of more than",
    ),
    "printf width": ("{{ '%999999999s' % 'a' }}", "formats with a width of 999999999"),
    "printf star width": ("{{ '%*s' % (10**9, 'a') }}", "passes 1000000000 where a size or count goes"),
    "format width": ("{{ '{:>999999999}'.format('a') }}", "formats with a width"),
    "format nested width": ("{{ '{:>{w}}'.format('a', w=10**9) }}", "passes 1000000000"),
    "format filter width": ("{{ '%999999999s'|format('a') }}", "formats with a width"),
    "center filter": ("{{ 'a'|center(10**9) }}", "passes 1000000000"),
    "ljust method": ("{{ 'a'.ljust(10**9) }}", "passes 1000000000"),
    "replace filter of the empty string": (
        "{% set s = 'x' * 100000 %}{{ s|replace('', s) }}",
        "would build a string of",
    ),
    "replace method": ("{% set s = 'x' * 100000 %}{{ s.replace('x', s) }}", "would build a string of"),
    "join with a large separator": (
        "{% set s = 'x' * 100000 %}{{ range(1000)|join(s) }}",
        "would build a string of",
    ),
    "join method with a large separator": (
        "{% set s = 'x' * 100000 %}{{ s.join(range(1000)|map('string')) }}",
        "would build a string of",
    ),
    "indent by a large string": (
        "{% set s = 'x' * 100000 %}{{ ('a\\n' * 100000)|indent(s) }}",
        "would build a string of",
    ),
    "wordwrap with a large wrapstring": (
        "{% set s = 'x' * 100000 %}{{ ('a ' * 100000)|wordwrap(1, wrapstring=s) }}",
        "would build a string of",
    ),
    "batch padded with large values": (
        "{% set s = 'x' * 100000 %}{{ range(3)|batch(100000, s)|list|length }}",
        "would build a string of",
    ),
    "expandtabs": ("{{ ('\\t' * 100000).expandtabs(100000) }}", "would build a string of"),
    "translate": (
        "{% set s = 'x' * 100000 %}{{ s.translate({120: s}) }}",
        "would build a string of",
    ),
    "tojson with a large indent": ("{{ range(1000)|list|tojson(indent=100000) }}", "would build a string of"),
    "sum of lists": ("{{ range(100000)|map('list')|sum(start=[]) }}", "sums something other than numbers"),
    "endless macro recursion": ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "recurses too deep"),
    "template of a megabyte": ("x" * (MAX_TEMPLATE_CHARS + 1), "characters long"),
    "blocks nested too deep to compile": ("{% if 1 %}" * 5000 + "{% endif %}" * 5000, "nests its blocks too deep"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_templates_end_in_one_line_within_bounds(case):
    template, problem = HOSTILE[case]
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    with pytest.raises(TemplateLimitError, match=problem) as raised:
        render(template)
    assert time.monotonic() - started < bounded_jinja.MAX_RENDER_SECONDS
    assert "\n" not in str(raised.value)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
    assert grown_kib < 256 * 1024, f"peak RSS grew by {grown_kib} KiB"


def test_long_numbers_in_text_are_not_widths():
    assert render("{{ 'in 123456789012 years: %s' % 'yes' }}{{ 'id {} of 99999999999'.format(7) }}") == (
        "in 123456789012 years: yesid 7 of 99999999999"
    )


def test_a_long_conversation_still_renders():
    """The size limits grow with the messages: a real template repeats message text, nothing more."""
    turns = [{"role": r, "content": "word " * 2000} for r in ("user", "assistant") * 200]  # 4 MB of text
    prompt = render(FORMATS["vicuna_v1.1"].template, turns[:-1])
    assert len(prompt) > 3_900_000


@pytest.mark.parametrize(
    "template",
    [
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",  # no output, no call
        "{% for i in range(100000) %}{% for j in range(100000) %}{% set x = i %}{% endfor %}{% endfor %}",
        "{% macro f(n) %}{% for i in range(100000) %}{{ f(n) if 0 }}{% endfor %}{% endmacro %}"
        "{% for i in range(100000) %}{{ f(1) }}{% endfor %}",
    ],
)
def test_work_without_output_stops_at_the_deadline(monkeypatch, template):
    monkeypatch.setattr(bounded_jinja, "MAX_RENDER_SECONDS", 0.5)
    started = time.monotonic()
    with pytest.raises(TemplateLimitError, match="took more than 0.5 s to render"):
        render(template)
    assert time.monotonic() - started < 5


def _gguf_with_template(tmp_path, template: str, stored_instead: str | None = None):
    """The tiny LLaMA as a GGUF carrying `template`; `stored_instead` (same length) replaces it in the file's bytes,
    which is how a template the converter would refuse gets into a file."""
    from converters import convert

    path = convert(TINY / "llama", tmp_path / "tiny.gguf", outtype="q8_0", chat_template=template)
    if stored_instead is not None:
        assert len(stored_instead) == len(template)
        data = path.read_bytes()
        assert data.count(template.encode()) == 1
        path.write_bytes(data.replace(template.encode(), stored_instead.encode()))
    return path


def _chat(cli_env, model, *args):
    return subprocess.run(
        zootui_command("chat", "-m", str(model), "--n-ctx", "256", "--max-tokens", "2", *args, "hi"),
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
def test_chat_on_a_model_whose_template_does_not_compile_is_one_line(cli_env, tmp_path):
    good = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    broken = "{% for m in messages %}{{ m['content'] }{% endfor %} "
    result = _chat(cli_env, _gguf_with_template(tmp_path, good, broken))
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "tiny.gguf: its chat template does not compile" in line and "zootui convert --chat-template" in line


@pytest.mark.slow
def test_chat_on_a_model_whose_template_loops_is_one_line(cli_env, tmp_path):
    looping = (
        "{% for i in range(100000) %}{% for j in range(100000) %}{{ messages[0]['content'] }}{% endfor %}{% endfor %}"
    )
    result = _chat(cli_env, _gguf_with_template(tmp_path, looping))
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "its chat template failed" in line and "writes a prompt of more than" in line


def test_the_converter_refuses_a_template_that_does_not_compile(tmp_path):
    from converters import ConversionError, convert

    with pytest.raises(ConversionError, match=r"the chat template given is not a valid Jinja template \(line 1: "):
        convert(TINY / "llama", tmp_path / "x.gguf", outtype="q8_0", chat_template="{% for m in messages %}{{ m }")
    assert not list(tmp_path.iterdir())
