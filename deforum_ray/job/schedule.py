"""Deforum schedule grammar: ``"0:(1.0), 60:(1.1)"`` -> one float64 value per frame.

Grammar (whitespace allowed anywhere between tokens)::

    schedule := number | pair ("," pair)* ","?
    pair     := key ":" "(" expr ")"
    key      := INT | '"' expr '"' | "'" expr "'"     an expression key: over max_f and s
    expr     := term (("+" | "-") term)*
    term     := unary (("*" | "/" | "%") unary)*
    unary    := ("-" | "+") unary | power
    power    := atom ("**" unary)?                 right-associative, -2**2 == -4
    atom     := NUMBER | NAME | NAME "(" expr ("," expr)* ")" | "(" expr ")"

A key whose value is a plain (optionally signed) number is a numeric keyframe: the frames
between numeric keys are linearly interpolated. Any other value is an expression, evaluated
on every frame from its key up to the next key, over ``t`` (frame index), ``max_f`` (last
frame index of the clip) and ``s`` (seed). Frames that no expression covers are linearly
interpolated between their known neighbours, so numbers and expressions mix (as in Deforum).

As in classic Deforum (``parse_key_frames``/``get_inbetweens`` of sd-webui-deforum): a key may be
an expression in quotes (``"max_f-1":(s)``), truncated to a frame; a key repeated means its last
value; keys at or past the clip's last frame are ignored (the last frame holds the value of the
last key within the clip). tests/test_import.py checks real settings files against a reference
evaluator written from Deforum's code.

The parser is our own, not Python's: it accepts only the operators and functions listed
below, so a schedule string can never reach ``eval``, attributes or imports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Union

import numpy as np

from .limits import MAX_EXPRESSION_TERMS, MAX_KEY, MAX_NESTING, MAX_SCHEDULE_LENGTH

__all__ = [
    "FUNCTIONS",
    "VARIABLES",
    "Keyframe",
    "ScheduleError",
    "evaluate_keyframes",
    "parse_keyframes",
    "parse_schedule",
]

DIGITS = frozenset("0123456789")  # str.isdigit() also takes '²' and other digits float() refuses


def _digits(text: str) -> bool:
    return bool(text) and all(c in DIGITS for c in text)

Value = Union[float, np.ndarray]


def _fn_min(*args: Value) -> Value:
    return np.minimum.reduce(np.broadcast_arrays(*args)) if len(args) > 1 else args[0]


def _fn_max(*args: Value) -> Value:
    return np.maximum.reduce(np.broadcast_arrays(*args)) if len(args) > 1 else args[0]


# name -> (function, min arity, max arity or None for variadic)
FUNCTIONS: dict[str, tuple[Callable[..., Value], int, int | None]] = {
    "sin": (np.sin, 1, 1),
    "cos": (np.cos, 1, 1),
    "tan": (np.tan, 1, 1),
    "abs": (np.abs, 1, 1),
    "sqrt": (np.sqrt, 1, 1),
    "exp": (np.exp, 1, 1),
    "log": (np.log, 1, 1),
    "floor": (np.floor, 1, 1),
    "ceil": (np.ceil, 1, 1),
    "min": (_fn_min, 1, None),
    "max": (_fn_max, 1, None),
}
VARIABLES = ("t", "max_f", "s")
CONSTANTS = {"pi": math.pi}

_BINARY: dict[str, Callable[[Value, Value], Value]] = {
    "+": np.add,
    "-": np.subtract,
    "*": np.multiply,
    "/": np.true_divide,
    "%": np.mod,
    "**": np.power,
}


class ScheduleError(ValueError):
    """A schedule string that cannot be parsed or evaluated; ``position`` is 0-based."""

    def __init__(self, text: str, position: int, reason: str):
        self.text = text
        self.position = position
        self.reason = reason
        super().__init__(f'cannot parse "{_excerpt(text, position)}" at position {position}: {reason}')


def _excerpt(text: str, position: int, width: int = 60) -> str:
    """The whole text when short, else a window around ``position`` (keeps errors one line)."""
    flat = text.replace("\n", " ").replace("\r", " ")
    if len(flat) <= width:
        return flat
    start = max(0, min(position - width // 2, len(flat) - width))
    head = "..." if start > 0 else ""
    tail = "..." if start + width < len(flat) else ""
    return head + flat[start : start + width] + tail


# ---------------------------------------------------------------------------------------------
# Expression tree


@dataclass(frozen=True)
class Num:
    value: float
    pos: int


@dataclass(frozen=True)
class Var:
    name: str
    pos: int


@dataclass(frozen=True)
class Unary:
    op: str
    operand: "Expr"
    pos: int


@dataclass(frozen=True)
class Binary:
    op: str
    left: "Expr"
    right: "Expr"
    pos: int


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple["Expr", ...]
    pos: int


Expr = Union[Num, Var, Unary, Binary, Call]


@dataclass(frozen=True)
class Keyframe:
    """One ``frame:(value)`` pair. ``number`` is set when the value is a plain number; an
    expression key (``"max_f-1"``) has ``frame`` None and ``frame_expr`` set until
    :func:`resolve_keyframes` evaluates it for a clip."""

    frame: int | None
    expr: Expr
    number: float | None
    key_pos: int  # where the frame number starts
    pos: int  # where the value starts, for evaluation errors
    key_text: str = ""  # the key as written (quotes and all), for tools that rewrite values
    frame_expr: Expr | None = None


def _evaluate(node: Expr, env: dict[str, Value]) -> Value:
    if isinstance(node, Num):
        return node.value
    if isinstance(node, Var):
        return env[node.name]
    if isinstance(node, Unary):
        operand = _evaluate(node.operand, env)
        return np.negative(operand) if node.op == "-" else operand
    if isinstance(node, Binary):
        return _BINARY[node.op](_evaluate(node.left, env), _evaluate(node.right, env))
    fn = FUNCTIONS[node.name][0]
    return fn(*(_evaluate(arg, env) for arg in node.args))


# ---------------------------------------------------------------------------------------------
# Parser


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.pos = 0
        self.depth = 0
        self.terms = 0  # of the expression being read; bounds its tree's depth and evaluation

    # -- helpers -------------------------------------------------------------------------------
    def error(self, reason: str, position: int | None = None) -> ScheduleError:
        return ScheduleError(self.text, self.pos if position is None else position, reason)

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        self.skip_ws()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def describe_here(self) -> str:
        return f"'{self.text[self.pos]}'" if self.pos < len(self.text) else "end of input"

    def expect(self, char: str, why: str = "") -> None:
        if self.peek() != char:
            reason = f"expected '{char}'{why}, found {self.describe_here()}"
            raise self.error(reason)
        self.pos += 1

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise self.error(f"expression nested more than {MAX_NESTING} levels deep")

    def leave(self) -> None:
        self.depth -= 1

    def count_term(self) -> None:
        self.terms += 1
        if self.terms > MAX_EXPRESSION_TERMS:
            raise self.error(f"expression of more than {MAX_EXPRESSION_TERMS} terms")

    # -- tokens --------------------------------------------------------------------------------
    def number(self) -> tuple[float, int]:
        """Scan a decimal literal at pos: ``12``, ``1.5``, ``.5``, ``1.``, ``2e-3``."""
        self.skip_ws()
        start = self.pos
        text = self.text
        end = start
        while end < len(text) and text[end] in DIGITS:
            end += 1
        if end < len(text) and text[end] == ".":
            end += 1
            while end < len(text) and text[end] in DIGITS:
                end += 1
        if end == start or text[start:end] == ".":
            raise self.error(f"expected a number, found {self.describe_here()}")
        if end < len(text) and text[end] in "eE":
            exp_end = end + 1
            if exp_end < len(text) and text[exp_end] in "+-":
                exp_end += 1
            digits_start = exp_end
            while exp_end < len(text) and text[exp_end] in DIGITS:
                exp_end += 1
            if exp_end > digits_start:
                end = exp_end
        self.pos = end
        return float(text[start:end]), start

    def name(self) -> tuple[str, int]:
        self.skip_ws()
        start = self.pos
        text = self.text
        while self.pos < len(text) and (text[self.pos].isalnum() or text[self.pos] == "_"):
            self.pos += 1
        return text[start : self.pos], start

    # -- schedule ------------------------------------------------------------------------------
    def schedule(self) -> list[Keyframe]:
        if not self.text.strip():
            raise self.error("empty schedule", 0)
        if len(self.text) > MAX_SCHEDULE_LENGTH:
            raise self.error(f"schedule longer than {MAX_SCHEDULE_LENGTH} characters", MAX_SCHEDULE_LENGTH)
        bare = self.bare_number()
        if bare is not None:
            return [bare]
        keys: list[Keyframe] = []
        while True:
            keys.append(self.pair())  # a repeated key: the last wins (resolve_keyframes), as in Deforum
            char = self.peek()
            if char == "":
                break
            if char != ",":
                raise self.error(f"expected ',' between keyframes, found {self.describe_here()}")
            self.pos += 1
            if self.peek() == "":  # one trailing comma is common in Deforum settings
                break
        return keys

    def bare_number(self) -> Keyframe | None:
        """``"1.0"`` or ``"-0.5"`` alone means that constant on every frame."""
        saved = self.pos
        start = self.pos
        sign = 1.0
        if self.peek() in ("+", "-"):
            start = self.pos
            sign = -1.0 if self.text[self.pos] == "-" else 1.0
            self.pos += 1
        try:
            value, num_start = self.number()
        except ScheduleError:
            self.pos = saved
            return None
        if self.peek() != "":
            self.pos = saved
            return None
        start = min(start, num_start)
        return Keyframe(0, Num(sign * value, start), sign * value, start, start)

    def pair(self) -> Keyframe:
        char = self.peek()
        key_pos = self.pos
        frame: int | None = None
        frame_expr: Expr | None = None
        if char in ("'", '"'):
            self.pos += 1
            self.terms = 0
            frame_expr = self.expr()
            if _uses(frame_expr, "t"):
                raise self.error("a keyframe expression may use max_f and s, not t", key_pos)
            self.expect(char, " to close the keyframe expression")
        else:
            if char == "-":
                raise self.error("keyframe must not be negative")
            if char not in DIGITS:
                raise self.error(f"expected a keyframe number or a quoted expression, found {self.describe_here()}")
            value, _ = self.number()
            if not value.is_integer() or not _digits(self.text[key_pos : self.pos]):
                raise self.error("keyframe must be a whole frame number", key_pos)
            if value > MAX_KEY:
                raise self.error(f"keyframe larger than {MAX_KEY}", key_pos)
            frame = int(value)
        key_text = self.text[key_pos : self.pos]
        self.expect(":", f" after keyframe {key_text}")
        self.expect("(", f" to open the value of keyframe {key_text}")
        open_pos = self.pos - 1
        self.skip_ws()
        value_pos = self.pos
        self.terms = 0
        expr = self.expr()
        if self.peek() != ")":
            if self.pos >= len(self.text):
                raise self.error(f"missing ')' to close '(' at position {open_pos}")
            raise self.error(f"expected ')' or an operator, found {self.describe_here()}")
        self.pos += 1
        number = _plain_number(expr)
        return Keyframe(frame, expr, number, key_pos, value_pos, key_text, frame_expr)

    # -- expressions ---------------------------------------------------------------------------
    def expr(self) -> Expr:
        node = self.term()
        while self.peek() in ("+", "-"):
            op_pos = self.pos
            op = self.text[self.pos]
            self.pos += 1
            self.count_term()
            node = Binary(op, node, self.term(), op_pos)
        return node

    def term(self) -> Expr:
        node = self.unary()
        while True:
            char = self.peek()
            if char == "*" and self.text.startswith("**", self.pos):
                break  # power binds tighter; handled in power()
            if char not in ("*", "/", "%"):
                break
            op_pos = self.pos
            self.pos += 1
            self.count_term()
            node = Binary(char, node, self.unary(), op_pos)
        return node

    def unary(self) -> Expr:
        char = self.peek()
        if char in ("-", "+"):
            op_pos = self.pos
            self.pos += 1
            self.enter()
            operand = self.unary()
            self.leave()
            return Unary(char, operand, op_pos)
        return self.power()

    def power(self) -> Expr:
        base = self.atom()
        self.skip_ws()
        if self.text.startswith("**", self.pos):
            op_pos = self.pos
            self.pos += 2
            self.enter()
            exponent = self.unary()
            self.leave()
            return Binary("**", base, exponent, op_pos)
        return base

    def atom(self) -> Expr:
        char = self.peek()
        start = self.pos
        self.count_term()
        if char == "(":
            self.pos += 1
            self.enter()
            node = self.expr()
            self.leave()
            if self.peek() != ")":
                if self.pos >= len(self.text):
                    raise self.error(f"missing ')' to close '(' at position {start}")
                raise self.error(f"expected ')' or an operator, found {self.describe_here()}")
            self.pos += 1
            self.reject_trailer()
            return node
        if char in DIGITS or char == ".":
            value, num_pos = self.number()
            self.reject_trailer()
            return Num(value, num_pos)
        if char.isalpha() or char == "_":
            name, name_pos = self.name()
            if self.peek() == "(":
                return self.call(name, name_pos)
            if name in CONSTANTS:
                node: Expr = Num(CONSTANTS[name], name_pos)
            elif name in VARIABLES:
                node = Var(name, name_pos)
            elif name in FUNCTIONS:
                raise self.error(f"function '{name}' needs arguments in parentheses", name_pos)
            else:
                allowed = ", ".join((*VARIABLES, *CONSTANTS))
                raise self.error(f"unknown name '{name}' (allowed: {allowed})", name_pos)
            self.reject_trailer()
            return node
        if char == "":
            raise self.error("expected a value, found end of input")
        if char in "'\"":
            raise self.error("strings are not allowed")
        raise self.error(f"expected a value, found {self.describe_here()}")

    def call(self, name: str, name_pos: int) -> Expr:
        if name not in FUNCTIONS:
            allowed = " ".join(FUNCTIONS)
            raise self.error(f"unknown function '{name}' (allowed: {allowed})", name_pos)
        _, min_args, max_args = FUNCTIONS[name]
        open_pos = self.pos
        self.pos += 1  # "("
        self.enter()
        args = [self.expr()]
        while self.peek() == ",":
            self.pos += 1
            args.append(self.expr())
        self.leave()
        if self.peek() != ")":
            if self.pos >= len(self.text):
                raise self.error(f"missing ')' to close '(' at position {open_pos}")
            raise self.error(f"expected ')' or ',' in call to {name}, found {self.describe_here()}")
        self.pos += 1
        if len(args) < min_args or (max_args is not None and len(args) > max_args):
            want = f"{min_args}" if min_args == max_args else f"at least {min_args}"
            raise self.error(f"{name}() takes {want} argument(s), got {len(args)}", name_pos)
        self.reject_trailer()
        return Call(name, tuple(args), name_pos)

    def reject_trailer(self) -> None:
        """Name the Python constructs people try, instead of a generic 'unexpected'."""
        char = self.peek()
        if char == ".":
            raise self.error("attribute access is not allowed")
        if char == "[":
            raise self.error("subscripts are not allowed")
        if char == "(":
            raise self.error("only the listed functions can be called")


def _uses(node: Expr, name: str) -> bool:
    if isinstance(node, Var):
        return node.name == name
    if isinstance(node, Unary):
        return _uses(node.operand, name)
    if isinstance(node, Binary):
        return _uses(node.left, name) or _uses(node.right, name)
    if isinstance(node, Call):
        return any(_uses(arg, name) for arg in node.args)
    return False


def _plain_number(expr: Expr) -> float | None:
    """A literal, optionally signed, is a numeric keyframe (interpolated); anything else is not."""
    if isinstance(expr, Num):
        return expr.value
    if isinstance(expr, Unary) and isinstance(expr.operand, Num):
        return -expr.operand.value if expr.op == "-" else expr.operand.value
    return None


# ---------------------------------------------------------------------------------------------
# Public API


def parse_keyframes(text: str | int | float) -> list[Keyframe]:
    """Parse a schedule into keyframes, in the order written. Raises ``ScheduleError``."""
    if isinstance(text, bool):
        raise ScheduleError(str(text), 0, "a schedule is a string or a number, not a boolean")
    if isinstance(text, (int, float)):
        text = repr(float(text))
    if not isinstance(text, str):
        raise ScheduleError(str(text), 0, f"a schedule is a string or a number, not {type(text).__name__}")
    return _Parser(text).schedule()


def resolve_keyframes(keys: list[Keyframe], num_frames: int, seed: int = 0, text: str = "") -> list[Keyframe]:
    """The keys that shape a clip of ``num_frames`` frames, sorted by frame: expression keys
    evaluated (``max_f`` = num_frames - 1, truncated toward zero, as Deforum's ``int()``), the
    last of a repeated key kept, keys outside the clip dropped."""
    max_f = float(num_frames - 1)
    by_frame: dict[int, Keyframe] = {}
    for key in keys:
        frame = key.frame
        if frame is None:
            with np.errstate(all="ignore"):
                value = float(np.asarray(_evaluate(key.frame_expr, {"max_f": max_f, "s": float(seed)})))  # type: ignore[arg-type]
            if not math.isfinite(value):
                raise ScheduleError(text, key.key_pos, f"keyframe expression is not finite ({value})")
            frame = int(value)
            key = Keyframe(frame, key.expr, key.number, key.key_pos, key.pos, key.key_text, key.frame_expr)
        by_frame.pop(frame, None)  # the last one written wins
        by_frame[frame] = key
    return sorted((k for f, k in by_frame.items() if 0 <= f < num_frames), key=lambda k: k.frame or 0)


def evaluate_keyframes(
    keys: list[Keyframe], num_frames: int, seed: int = 0, text: str = ""
) -> np.ndarray:
    """Per-frame float64 values of parsed keyframes for a clip of ``num_frames`` frames.

    Known points are the numeric keys within the clip and every frame an expression covers
    (from its key up to the next key). Everything else is linear interpolation, holding the
    ends. No key within the clip: the value at frame 0 of the first key's (Deforum fails there).
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    within = resolve_keyframes(keys, num_frames, seed, text)
    if not within:  # every key is past the clip: its first key's value, from frame 0 on
        first = keys[0]
        within = [Keyframe(0, first.expr, first.number, first.key_pos, first.pos, first.key_text)]
    keys = within
    known_x: list[np.ndarray] = []
    known_y: list[np.ndarray] = []
    max_f = float(num_frames - 1)
    for i, key in enumerate(keys):
        if key.number is not None:
            frames = np.array([key.frame], dtype=np.float64)
            values = np.array([key.number], dtype=np.float64)
        else:
            next_key = keys[i + 1].frame if i + 1 < len(keys) else None
            stop = num_frames if next_key is None else min(next_key, num_frames)
            frames = np.arange(key.frame, max(stop, key.frame + 1), dtype=np.float64)
            env: dict[str, Value] = {"t": frames, "max_f": max_f, "s": float(seed)}
            with np.errstate(all="ignore"):
                values = np.broadcast_to(np.asarray(_evaluate(key.expr, env), dtype=np.float64), frames.shape)
        bad = ~np.isfinite(values)
        if bad.any():
            frame = int(frames[np.argmax(bad)])
            raise ScheduleError(text, key.pos, f"value is not finite ({values[bad][0]}) at frame {frame}")
        known_x.append(frames)
        known_y.append(values)
    x = np.concatenate(known_x)
    y = np.concatenate(known_y)
    return np.interp(np.arange(num_frames, dtype=np.float64), x, y).astype(np.float64)


def parse_schedule(text: str | int | float, num_frames: int, seed: int = 0) -> np.ndarray:
    """Deforum schedule -> ``numpy.ndarray`` of float64, one value per frame (length num_frames)."""
    keys = parse_keyframes(text)
    return evaluate_keyframes(keys, num_frames, seed, text if isinstance(text, str) else repr(text))
