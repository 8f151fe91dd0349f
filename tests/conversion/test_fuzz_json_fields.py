"""Fuzzing the typed JSON reader through the code that uses what it lets through.

One field of a real config.json, tokenizer.json or tokenizer_config.json is replaced by any JSON
value; reading the hyper-parameters, planning the tensors and building the vocabulary must then
succeed or end in the one-line ConversionError. A wrongly typed value that the schemas let pass
would surface here as a TypeError, KeyError or AttributeError deeper in the converter.
"""

from __future__ import annotations

import json
import shutil
import time

from conftest import TINY
from fuzzing import EXAMPLE_GROWTH_KIB, EXAMPLE_SECONDS, peak_rss_kib
from hypothesis import event, given
from hypothesis import strategies as st

from converters import ConversionError, open_checkpoint
from converters.archs import architecture_for
from converters.tokenizer import load_vocab

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=6),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8,
)


def _paths(value, prefix=()):
    """Every key path in a JSON value (list items by index), shallow ones first."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value[:3]):  # a vocabulary's thousands of entries are alike
            yield from _paths(item, (*prefix, index))


def _replace(data, path, value):
    if not path:
        return value
    target = data
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return data


_FILES = {
    ("neox_sequential", "config.json"): None,
    ("bloom", "tokenizer.json"): None,
    ("bloom", "tokenizer_config.json"): None,
    ("llama", "tokenizer_config.json"): None,
}
for variant, name in _FILES:
    document = json.loads((TINY / variant / name).read_text(encoding="utf-8"))
    _FILES[variant, name] = (document, [p for p in _paths(document) if len(p) <= 4][:400])


@st.composite
def damaged_file(draw):
    variant, name = draw(st.sampled_from(sorted(_FILES)))
    document, paths = _FILES[variant, name]
    path = draw(st.sampled_from(paths))
    return variant, name, path, _replace(json.loads(json.dumps(document)), path, draw(_json))


@given(damaged_file())
def test_any_value_in_any_field_converts_or_is_one_line(tmp_path_factory, drawn):
    variant, name, _path, document = drawn
    directory = tmp_path_factory.mktemp("fuzz") / variant
    shutil.copytree(TINY / variant, directory)
    (directory / name).write_text(json.dumps(document), encoding="utf-8")
    started, peak = time.monotonic(), peak_rss_kib()
    try:
        with open_checkpoint(directory) as checkpoint:
            arch = architecture_for(checkpoint.config)
            arch.plan(checkpoint)
            load_vocab(
                directory, arch.vocab_rows(checkpoint), checkpoint.config, arch.default_pre, hints=arch.tokenizer
            )
    except ConversionError as error:
        assert "\n" not in str(error)
        event("refused")
    else:
        event("converted")
    assert time.monotonic() - started < EXAMPLE_SECONDS
    assert peak_rss_kib() - peak < EXAMPLE_GROWTH_KIB
