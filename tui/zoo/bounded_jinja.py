"""Chat templates rendered within limits of time and size.

A chat template comes from a model file, which may come from anyone. llama-cpp-python renders it in
Jinja's immutable sandbox, which keeps it away from Python's internals but not from looping
100000 × 100000 times or doubling a string until the machine runs out of memory. `BoundedChatFormatter`
renders exactly as llama-cpp-python's `Jinja2ChatFormatter` (same environment options, same
variables; tests compare the two on every catalog template) in a sandbox that also bounds:

- the template's length (`MAX_TEMPLATE_CHARS`) and the time one rendering takes (`MAX_RENDER_SECONDS`,
  checked at every iteration of every loop, every call, every operator and every piece of output:
  all a template can repeat work with);
- the size of every value it builds and of its output, in characters (list items count by their
  own sizes): a base plus a multiple of the messages' size, so a real conversation of any length
  renders. Each operation that can make a value larger than its inputs (`*`, `+`, `~`, `%`,
  `**`, and the filters and string methods that repeat, pad or join) is checked before it runs, and
  every call's result after.

Any limit ends the rendering with `TemplateLimitError`, a `jinja2.TemplateError` whose one line says which.
"""

from __future__ import annotations

import functools
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import jinja2
import jinja2.ext
from jinja2.compiler import CodeGenerator
from jinja2.sandbox import ImmutableSandboxedEnvironment
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

MAX_TEMPLATE_CHARS = 256 * 1024  # real chat templates are at most a few KB
MAX_RENDER_SECONDS = 5.0  # a real template renders a long conversation in milliseconds
BASE_VALUE_CHARS = 256 * 1024
VALUE_CHARS_PER_INPUT_CHAR = 8  # a template may repeat or escape message text a few times, not more
MAX_INT_BITS = 4096
# Widths and precisions in "%-10.3s" and "{:>10.3}" specs (the number after % or after : inside braces).
_FORMAT_WIDTHS = re.compile(r"%[-+ #0]*(\d*)(?:\.(\d*))?|\{[^{}]*?:[^{}\d]*(\d*)(?:\.(\d*))?")


class TemplateLimitError(jinja2.TemplateError):
    """A chat template went past a limit of time or size; the message is one line."""


class _Limits(threading.local):
    """The limits of the rendering running in this thread (formatters are shared between threads)."""

    value_chars = BASE_VALUE_CHARS
    deadline = float("inf")


_limits = _Limits()
_SEQUENCES = (list, tuple, set, frozenset)


def weight(value: Any, budget: int) -> int:
    """Characters `str(value)` holds at least, counted until `budget` is passed (so the count is cheap)."""
    if isinstance(value, str):  # the common case, on every operation's result
        return len(value)
    total, pending = 0, [value]
    while pending and total <= budget:
        item = pending.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, _SEQUENCES):
            total += len(item)
            pending.extend(item)
        elif isinstance(item, dict):
            total += len(item)
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 1
        else:
            total += 1
    return total


def _check_deadline() -> None:
    if time.monotonic() > _limits.deadline:
        raise _refuse(f"took more than {MAX_RENDER_SECONDS:g} s to render")


def _bounded_iteration(items: Any) -> Iterator[Any]:
    """What every for-loop iterates: its items, stopped at the deadline (a loop need not call or write anything)."""
    for item in items:
        _check_deadline()
        yield item


def _refuse(what: str) -> TemplateLimitError:
    return TemplateLimitError(f"the chat template {what}; a real template does not, the model file may be hostile")


def _check_size(value: Any) -> Any:
    limit = _limits.value_chars
    if weight(value, limit) > limit:
        raise _refuse(f"builds a value of more than {limit} characters")
    return value


def _check_projection(chars: int, what: str) -> None:
    if chars > _limits.value_chars:
        raise _refuse(f"would build {what} of {chars} characters, more than {_limits.value_chars}")


def _check_int(value: Any) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
        raise _refuse(f"computes an integer of more than {MAX_INT_BITS} bits")


def _check_widths(format_string: Any) -> None:
    """Widths and precisions written in a format string ("%999999999s", "{:>999999999}")."""
    if isinstance(format_string, str):
        for groups in _FORMAT_WIDTHS.findall(format_string):
            for width in filter(None, groups):
                if len(width) > 9 or int(width) > _limits.value_chars:
                    raise _refuse(f"formats with a width of {width}")


def _check_arguments(args: tuple, kwargs: dict) -> None:
    """No count, width or repeat argument larger than a value may be."""
    for argument in (*args, *kwargs.values()):
        if isinstance(argument, int) and not isinstance(argument, bool) and abs(argument) > _limits.value_chars:
            raise _refuse(f"passes {argument} where a size or count goes")


def _lines(text: Any) -> int:
    return text.count("\n") + 1 if isinstance(text, str) else 1


def _size(value: Any) -> int:
    return weight(value, _limits.value_chars)


# What a growing operation would build, from its arguments, before it runs: (value, *args, **kwargs) -> chars.
def _replace_size(text: Any, old: Any = "", new: Any = "", count: Any = -1, *_: Any) -> int:
    if not all(isinstance(s, str) for s in (text, old, new)):
        return 0
    matches = len(text) + 1 if old == "" else text.count(old)
    if isinstance(count, int) and count >= 0:
        matches = min(matches, count)
    return len(text) + matches * max(len(new) - len(old), 0)


def _items(value: Any) -> Any:
    """An iterable as a list (a generator from `map` or a range would be used up by a projection), else value."""
    if isinstance(value, str | bytes | dict | list | tuple) or not hasattr(value, "__iter__"):
        return value
    items = []
    for item in value:
        items.append(item)
        if len(items) > _limits.value_chars:
            raise _refuse(f"joins more than {_limits.value_chars} items")
    return items


def _join_size(separator: Any, items: Any = (), *_: Any) -> int:
    if not isinstance(items, list | tuple | str):
        return 0
    return _size(items) + _size(separator) * max(len(items) - 1, 0)


def _expandtabs_size(text: str, tabsize: Any = 8, *_: Any) -> int:
    return len(text) + text.count("\t") * (tabsize if isinstance(tabsize, int) else 8)


def _translate_size(text: str, table: Any = None, *_: Any) -> int:
    largest = max((_size(v) for v in table.values()), default=1) if isinstance(table, dict) else 1
    return len(text) * largest


def _indent_size(text: Any, width: Any = 4, *_: Any, **__: Any) -> int:
    return _size(text) + _lines(text) * (_size(width) if isinstance(width, str) else 0)


def _wordwrap_size(text: Any, width: Any = 79, _breaks: Any = True, wrapstring: Any = None, *_: Any, **kw: Any) -> int:
    wrapstring = kw.get("wrapstring", wrapstring)
    lines = _size(text) // max(width if isinstance(width, int) else 1, 1) + 1
    return _size(text) + lines * _size(wrapstring or "\n")


def _batch_size(items: Any, linecount: Any = 1, fill_with: Any = None, *_: Any, **__: Any) -> int:
    count = len(items) if isinstance(items, list | tuple) else 0
    return _size(items) + count + (linecount if isinstance(linecount, int) else 0) * _size(fill_with)


def _tojson_size(value: Any, _ensure_ascii: Any = False, indent: Any = None, *_: Any, **kw: Any) -> int:
    indent = kw.get("indent", indent)
    if isinstance(indent, int) and not isinstance(indent, bool):
        per_line = max(indent, 0)
    else:
        per_line = len(indent) if isinstance(indent, str) else 0
    return _size(value) * (2 + per_line)


_STRING_METHOD_SIZES: dict[str, Callable[..., int]] = {
    "replace": _replace_size,
    "join": _join_size,
    "expandtabs": _expandtabs_size,
    "translate": _translate_size,
}
_JOINING_FILTERS = ("join", "batch")
_FILTER_SIZES: dict[str, Callable[..., int]] = {
    "replace": _replace_size,
    "join": lambda items, separator="", *_, **__: _join_size(separator, items),
    "indent": _indent_size,
    "wordwrap": _wordwrap_size,
    "batch": _batch_size,
    "tojson": _tojson_size,
}


def _guarded_call(call: Callable[..., Any], function: Any, args: tuple, kwargs: dict, projected: int | None) -> Any:
    _check_arguments(args, kwargs)
    if projected is not None:
        _check_projection(projected, "a string")
    return _check_size(call(function, *args, **kwargs))


def _guard_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    passes_context = getattr(function, "jinja_pass_arg", None) is not None
    projection = _FILTER_SIZES.get(name)

    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if name in _JOINING_FILTERS:  # the projection must see the items, and the filter still get them
            args = (*args[:1], _items(args[1]), *args[2:]) if passes_context else (_items(args[0]), *args[1:])
        own = args[1:] if passes_context else args
        if name == "format" and own:
            _check_widths(own[0])
        if name == "sum" and not isinstance(kwargs.get("start", own[2] if len(own) > 2 else 0), int | float):
            raise _refuse("sums something other than numbers")
        projected = projection(*own, **kwargs) if projection else None
        return _guarded_call(lambda f, *a, **k: f(*a, **k), function, args, kwargs, projected)

    return guarded


_ITERATION_FILTER = "zootui_bounded_iteration"  # a name no template uses


class _BoundedCodeGenerator(CodeGenerator):
    def visit_Template(self, node: jinja2.nodes.Template, frame: Any = None) -> None:
        """Every loop iterates its items through `_bounded_iteration` (the tree is changed before the code is written,
        as the generator looks up every filter a template uses first)."""
        for loop in node.find_all(jinja2.nodes.For):
            loop.iter = jinja2.nodes.Filter(loop.iter, _ITERATION_FILTER, [], [], None, None, lineno=loop.iter.lineno)
            loop.iter.set_environment(self.environment)
        super().visit_Template(node, frame)

    def visit_Concat(self, node: jinja2.nodes.Concat, frame: Any) -> None:
        """`a ~ b` joins through the environment, so its size is checked before the join."""
        self.write("environment.bounded_concat((")
        for argument in node.nodes:
            self.visit(argument, frame)
            self.write(", ")
        self.write("))")


class BoundedSandbox(ImmutableSandboxedEnvironment):
    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.filters = {name: _guard_filter(name, f) for name, f in self.filters.items()}
        self.filters[_ITERATION_FILTER] = _bounded_iteration
        del self.globals["lipsum"]  # paragraphs of filler text on demand: no chat template needs it

    @staticmethod
    def bounded_concat(pieces: tuple) -> str:
        texts = [str(piece) for piece in pieces]
        _check_projection(sum(len(t) for t in texts), "a string")
        return "".join(texts)

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any) -> Any:
        _check_deadline()
        if operator == "*":
            for sequence, times in ((left, right), (right, left)):
                if isinstance(sequence, str | list | tuple) and isinstance(times, int):
                    _check_projection(_size(sequence) * max(times, 0), "a repeated value")
            if (
                isinstance(left, int)
                and isinstance(right, int)
                and left.bit_length() + right.bit_length() > MAX_INT_BITS
            ):
                raise _refuse(f"computes an integer of more than {MAX_INT_BITS} bits")
        elif operator == "**" and isinstance(left, int) and isinstance(right, int):
            if right > 0 and max(left.bit_length(), 1) * right > MAX_INT_BITS:
                raise _refuse(f"computes an integer of more than {MAX_INT_BITS} bits")
        elif operator == "+":
            _check_projection(_size(left) + _size(right), "a joined value")
        elif operator == "%":
            _check_widths(left)
            _check_arguments(right if isinstance(right, tuple) else (right,), {})
        result = super().call_binop(context, operator, left, right)
        _check_int(result)
        return _check_size(result)

    def call(__self, __context: jinja2.runtime.Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        # Double underscores, as in Jinja's own signature: a template may pass keyword arguments of any name.
        # The sandbox hands out str.format as a wrapper whose __wrapped__ is the bound method.
        _check_deadline()
        owner = getattr(__obj, "__self__", None) or getattr(getattr(__obj, "__wrapped__", None), "__self__", None)
        name = getattr(__obj, "__name__", "")
        projected = None
        if isinstance(owner, str):
            if name in ("format", "format_map"):
                _check_widths(owner)
            if name == "join" and args:
                args = (_items(args[0]), *args[1:])
            if name in _STRING_METHOD_SIZES:
                projected = _STRING_METHOD_SIZES[name](owner, *args, **kwargs)
        return _guarded_call(
            lambda f, *a, **k: ImmutableSandboxedEnvironment.call(__self, __context, f, *a, **k),
            __obj,
            args,
            kwargs,
            projected,
        )


class _BoundedTemplate:
    """A compiled template whose `render` streams the output, bounded in size and time."""

    def __init__(self, template: jinja2.Template) -> None:
        self.template = template

    def render(self, **variables: Any) -> str:
        limit = BASE_VALUE_CHARS + VALUE_CHARS_PER_INPUT_CHAR * weight(variables.get("messages"), 2**62)
        previous = (_limits.value_chars, _limits.deadline)
        _limits.value_chars, _limits.deadline = limit, time.monotonic() + MAX_RENDER_SECONDS
        try:
            return "".join(self._bounded(self.template.generate(**variables), limit))
        except RecursionError:  # a macro calling itself without end
            raise _refuse("recurses too deep") from None
        finally:
            _limits.value_chars, _limits.deadline = previous

    @staticmethod
    def _bounded(chunks: Iterator[str], limit: int) -> Iterator[str]:
        written = 0
        for chunk in chunks:
            written += len(chunk)
            if written > limit:
                raise _refuse(f"writes a prompt of more than {limit} characters")
            _check_deadline()
            yield chunk


class BoundedChatFormatter(Jinja2ChatFormatter):
    """`Jinja2ChatFormatter` (llama-cpp-python 0.3.36, pinned) with its template compiled in `BoundedSandbox`.

    Its `__init__` is not called: it would compile the template unbounded. The options below are the
    ones it gives its environment; `__call__` (the rendering variables) is inherited unchanged.
    """

    def __init__(self, template: str, eos_token: str, bos_token: str, add_generation_prompt: bool = True) -> None:
        if len(template) > MAX_TEMPLATE_CHARS:
            raise _refuse(f"is {len(template)} characters long, more than {MAX_TEMPLATE_CHARS}")
        self.template = template
        self.eos_token = eos_token
        self.bos_token = bos_token
        self.add_generation_prompt = add_generation_prompt
        self.stop_token_ids = None
        environment = BoundedSandbox(
            loader=jinja2.BaseLoader(),
            trim_blocks=True,
            lstrip_blocks=True,
            extensions=[Jinja2ChatFormatter.IgnoreGenerationTags, jinja2.ext.loopcontrols],
        )
        environment.filters["tojson"] = _guard_filter("tojson", self.tojson)
        try:
            compiled = environment.from_string(template)
        except RecursionError:
            raise _refuse("nests its blocks too deep to compile") from None
        self._environment = _BoundedTemplate(compiled)  # type: ignore[assignment]
