"""Deforum schedule grammar: interpolation, expressions, and errors with positions."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from deforum_ray.job.schedule import ScheduleError, parse_keyframes, parse_schedule, resolve_keyframes


def reference_interp(points: dict[int, float], num_frames: int) -> list[float]:
    """Piecewise-linear by hand (no numpy), holding the ends: an independent oracle."""
    keys = sorted(points)
    out = []
    for f in range(num_frames):
        if f <= keys[0]:
            out.append(points[keys[0]])
        elif f >= keys[-1]:
            out.append(points[keys[-1]])
        else:
            hi = next(k for k in keys if k >= f)
            lo = max(k for k in keys if k <= f)
            w = 0.0 if hi == lo else (f - lo) / (hi - lo)
            out.append(points[lo] + w * (points[hi] - points[lo]))
    return out


# --- keyframes and interpolation ----------------------------------------------------------------


def test_linear_interpolation_between_keys():
    values = parse_schedule("0:(1.0), 10:(2.0)", 11)
    assert values.dtype == np.float64
    assert values.shape == (11,)
    np.testing.assert_allclose(values, 1.0 + np.arange(11) / 10)


def test_three_keys_piecewise():
    values = parse_schedule("0:(0), 4:(8), 6:(2)", 8)
    np.testing.assert_allclose(values, [0, 2, 4, 6, 8, 5, 2, 2])


def test_holds_before_first_and_after_last_key():
    values = parse_schedule("5:(2), 10:(4)", 15)
    np.testing.assert_allclose(values[:6], 2.0)
    np.testing.assert_allclose(values[10:], 4.0)
    np.testing.assert_allclose(values[5:11], np.linspace(2, 4, 6))


def test_keys_in_any_order():
    ordered = parse_schedule("0:(1), 5:(3), 9:(-1)", 12)
    shuffled = parse_schedule("9:(-1), 0:(1), 5:(3)", 12)
    np.testing.assert_array_equal(ordered, shuffled)
    assert [k.frame for k in parse_keyframes("9:(-1), 0:(1), 5:(3)")] == [9, 0, 5]  # as written
    assert [k.frame for k in resolve_keyframes(parse_keyframes("9:(-1), 0:(1), 5:(3)"), 12)] == [0, 5, 9]


def test_a_repeated_key_means_its_last_value_as_in_deforum():
    np.testing.assert_array_equal(parse_schedule("0:(1), 10:(2), 10:(3)", 15), parse_schedule("0:(1), 10:(3)", 15))
    np.testing.assert_array_equal(parse_schedule('0:(1), "max_f":(5), 4:(2)', 5), np.linspace(1, 2, 5))


def test_keys_past_the_clip_are_ignored_as_in_deforum():
    """Deforum reads keys of frames 0 .. max_frames-1 only; the last frame holds the last of those."""
    np.testing.assert_array_equal(parse_schedule("0:(0), 200:(1)", 120), np.zeros(120))
    np.testing.assert_array_equal(parse_schedule("0:(0), 10:(1), 20:(5)", 15),
                                  np.concatenate([np.linspace(0, 1, 11), np.ones(4)]))
    np.testing.assert_array_equal(parse_schedule("30:(2), 40:(3)", 10), np.full(10, 2.0))  # none within: the first


@pytest.mark.parametrize(("text", "frames", "expected"), [
    # Deforum's default seed_schedule: max_f is the last frame, so "max_f-1" is the one before it,
    # and its expression (s) goes on to the end
    ('0:(s), 1:(-1), "max_f-2":(-1), "max_f-1":(s)', 6, [7, -1, -1, -1, 7, 7]),
    ("0:(0), 'max_f/2':(10)", 11, [0, 2, 4, 6, 8, 10, 10, 10, 10, 10, 10]),  # key 5.0: frame 5
    ('0:(0), "max_f/4+0.9":(3)', 9, [0, 1.5, 3, 3, 3, 3, 3, 3, 3]),  # key 2.9 truncates to frame 2
    ('0:(0), "s":(4)', 9, [0, 1, 2, 3, 4, 4, 4, 4, 4]),  # s = 4 here
    ('"max_f":(t)', 4, [3, 3, 3, 3]),  # an expression key at the end; held back to frame 0
])
def test_expression_keys_are_evaluated_for_the_clip(text, frames, expected):
    np.testing.assert_allclose(parse_schedule(text, frames, seed=7 if "max_f-1" in text else 4), expected)


def test_an_expression_key_may_not_use_t():
    with pytest.raises(ScheduleError, match="may use max_f and s, not t"):
        parse_keyframes('0:(1), "t+1":(2)')


def test_whitespace_anywhere():
    compact = parse_schedule("0:(1.0),10:(sin(t/3)*2+1)", 14)
    spaced = parse_schedule("  0 :\t( 1.0 ) ,\n 10 : ( sin ( t / 3 ) * 2 + 1 )  ", 14)
    np.testing.assert_array_equal(compact, spaced)


def test_only_key_past_the_end_holds_its_value():
    np.testing.assert_allclose(parse_schedule("50:(3)", 4), [3, 3, 3, 3])


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1.5", 1.5), ("-2", -2.0), ("  3  ", 3.0), ("+4", 4.0), ("1e-3", 0.001), (".5", 0.5), ("7.", 7.0)],
)
def test_bare_number_is_constant(text, expected):
    np.testing.assert_array_equal(parse_schedule(text, 5), np.full(5, expected))


@pytest.mark.parametrize("value", [2, 0.25, -1])
def test_python_numbers_are_constants(value):
    np.testing.assert_array_equal(parse_schedule(value, 3), np.full(3, float(value)))


def test_trailing_comma_is_accepted():
    np.testing.assert_array_equal(parse_schedule("0:(1), 4:(5),", 5), parse_schedule("0:(1), 4:(5)", 5))


def test_single_frame_clip():
    np.testing.assert_allclose(parse_schedule("0:(t+max_f+3)", 1), [3.0])


def test_random_numeric_keys_match_reference():
    rng = np.random.default_rng(1234)
    for _ in range(25):
        num_frames = int(rng.integers(1, 60))
        keys = rng.choice(90, size=int(rng.integers(1, 6)), replace=False)
        points = {int(k): float(np.round(rng.normal(), 3)) for k in keys}
        text = ", ".join(f"{k}:({v})" for k, v in points.items())
        # Keys past the end are ignored (as in Deforum): the oracle sees only those within the clip.
        within = {k: v for k, v in points.items() if k < num_frames} or {0: points[int(keys[0])]}
        ref = reference_interp(within, num_frames)
        np.testing.assert_allclose(parse_schedule(text, num_frames), ref, rtol=0, atol=1e-12, err_msg=text)


# --- expressions ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("2+3", 5.0),
        ("2-3", -1.0),
        ("2*3", 6.0),
        ("7/2", 3.5),
        ("2**10", 1024.0),
        ("7%3", 1.0),
        ("-7%3", 2.0),  # Python's modulo: sign of the divisor
        ("7.5%2", 1.5),
        ("-3", -3.0),
        ("+3", 3.0),
        ("--3", 3.0),
        ("2+3*4", 14.0),
        ("(2+3)*4", 20.0),
        ("2**3**2", 512.0),  # right-associative
        ("-2**2", -4.0),  # power binds tighter than unary minus
        ("2**-1", 0.5),
        ("10-4-3", 3.0),  # left-associative
        ("16/4/2", 2.0),
        ("1e2+.5", 100.5),
        ("pi", math.pi),
        ("2*pi", 2 * math.pi),
    ],
)
def test_operators_and_precedence(expr, expected):
    np.testing.assert_allclose(parse_schedule(f"0:({expr})", 3), expected, rtol=1e-15)


@pytest.mark.parametrize(
    ("name", "fn"),
    [
        ("sin", math.sin),
        ("cos", math.cos),
        ("tan", math.tan),
        ("abs", abs),
        ("sqrt", math.sqrt),
        ("exp", math.exp),
        ("log", math.log),
        ("floor", math.floor),
        ("ceil", math.ceil),
    ],
)
def test_every_unary_function(name, fn):
    num_frames = 20
    arg = "abs(t/3 - 2.5) + 0.1" if name in ("sqrt", "log") else "t/3 - 2.5"
    values = parse_schedule(f"0:({name}({arg}))", num_frames)
    inner = [abs(t / 3 - 2.5) + 0.1 if name in ("sqrt", "log") else t / 3 - 2.5 for t in range(num_frames)]
    np.testing.assert_allclose(values, [fn(x) for x in inner], rtol=1e-12)


def test_min_and_max_take_several_arguments():
    np.testing.assert_allclose(parse_schedule("0:(min(t, 3))", 6), [0, 1, 2, 3, 3, 3])
    np.testing.assert_allclose(parse_schedule("0:(max(t, 3, 10-2*t))", 6), [10, 8, 6, 4, 4, 5])
    np.testing.assert_allclose(parse_schedule("0:(min(5))", 2), [5, 5])


def test_commas_inside_calls_belong_to_the_call():
    keys = parse_keyframes("0:(max(1, t)), 3:(min(t, 2, 1.5)), 5:(4)")
    assert [k.frame for k in keys] == [0, 3, 5]
    np.testing.assert_allclose(parse_schedule("0:(max(1, t)), 3:(min(t, 2, 1.5)), 5:(4)", 6), [1, 1, 2, 1.5, 1.5, 4])


def test_variables_t_max_f_and_s():
    np.testing.assert_allclose(parse_schedule("0:(t)", 5), np.arange(5))
    np.testing.assert_allclose(parse_schedule("0:(max_f)", 5), np.full(5, 4.0))
    np.testing.assert_allclose(parse_schedule("0:(s)", 3, seed=42), np.full(3, 42.0))
    np.testing.assert_allclose(parse_schedule("0:(s)", 3), np.zeros(3))  # seed defaults to 0
    np.testing.assert_allclose(parse_schedule("0:(t/max_f)", 5), np.linspace(0, 1, 5))


def test_expression_holds_from_its_key_until_the_next_key():
    # A constant expression is evaluated per frame over its span, not interpolated toward the next key.
    np.testing.assert_allclose(parse_schedule("0:(1+1), 4:(4)", 6), [2, 2, 2, 2, 4, 4])


def test_expressions_switching_to_numbers_and_back():
    values = parse_schedule("0:(t), 5:(2), 8:(t*10)", 11)
    # frames 0-4 follow t; frame 5 is the number; 6-7 ramp from 2 toward 8*10; 8+ follow t*10.
    np.testing.assert_allclose(values, [0, 1, 2, 3, 4, 2, 28, 54, 80, 90, 100])


def test_number_ramps_into_an_expression():
    values = parse_schedule("0:(5), 10:(t*2)", 14)
    np.testing.assert_allclose(values[:10], 5 + 1.5 * np.arange(10))
    np.testing.assert_allclose(values[10:], 2.0 * np.arange(10, 14))


def test_deforum_style_zoom_wobble():
    values = parse_schedule("0:(1 + 0.002*sin(t/10))", 100)
    np.testing.assert_allclose(values, 1 + 0.002 * np.sin(np.arange(100) / 10))


def test_expression_is_evaluated_with_absolute_frame_index():
    np.testing.assert_allclose(parse_schedule("0:(0), 3:(t)", 6), [0, 1, 2, 3, 4, 5])
    np.testing.assert_allclose(parse_schedule("0:(9), 3:(t), 5:(t*0)", 7), [9, 7, 5, 3, 4, 0, 0])


def test_num_frames_must_be_positive():
    with pytest.raises(ValueError, match="num_frames"):
        parse_schedule("0:(1)", 0)


# --- errors with positions -----------------------------------------------------------------------


def error_of(text: str, num_frames: int = 10) -> ScheduleError:
    with pytest.raises(ScheduleError) as info:
        parse_schedule(text, num_frames)
    err = info.value
    assert isinstance(err, ValueError)  # callers may catch ValueError
    assert "\n" not in str(err)  # one line
    assert str(err).startswith("cannot parse ")
    assert f"at position {err.position}:" in str(err)
    return err


@pytest.mark.parametrize(
    ("text", "position", "fragment"),
    [
        ("0:(1.0), 60:(1.1", 16, "missing ')' to close '(' at position 12"),
        ("0:(sin(t)", 9, "missing ')' to close '(' at position 2"),
        ("0:((1+2)", 8, "missing ')'"),
        ("0:1.0", 2, "expected '('"),
        ("0:(1.0), 60(1.1)", 11, "expected ':'"),
        ("0 (1.0)", 2, "expected ':'"),
        ('0:(1), "max_f:(2)', 13, "expected '\"' to close the keyframe expression"),
        ("-5:(1)", 0, "must not be negative"),
        ("0:(1), -5:(2)", 7, "must not be negative"),
        ("", 0, "empty schedule"),
        ("   ", 0, "empty schedule"),
        ("1.5:(2)", 0, "whole frame number"),
        ("0:(1) 5:(2)", 6, "expected ','"),
        ("0:(1),, 5:(2)", 6, "expected a keyframe number"),
        ("0:()", 3, "expected a value"),
        ("0:(1 2)", 5, "expected ')' or an operator"),
        ("0:(2^3)", 4, "expected ')' or an operator, found '^'"),
        ("0:(1+)", 5, "expected a value"),
        ("0:(sin(1, 2))", 3, "sin() takes 1 argument(s), got 2"),
        ("0:(sin)", 3, "needs arguments"),
        ("abc", 0, "expected a keyframe number"),
        ("0:(1), 99999999999:(2)", 7, "keyframe larger than"),
    ],
)
def test_malformed_input_reports_position(text, position, fragment):
    err = error_of(text)
    assert err.position == position, str(err)
    assert fragment in str(err)
    assert f'"{text}"' in str(err) or not text.strip()


@pytest.mark.parametrize(
    ("text", "position", "frame"),
    [
        ("0:(1/0)", 3, 0),
        ("0:(log(t))", 3, 0),
        ("0:(0), 5:(sqrt(t-7))", 10, 5),
        ("0:(10**400)", 3, 0),
        ("0:(t % 0)", 3, 0),
        ("0:(1), 4:(exp(t*1000))", 10, 4),
    ],
)
def test_non_finite_results_are_errors(text, position, frame):
    err = error_of(text)
    assert err.position == position
    assert f"not finite" in str(err) and f"at frame {frame}" in str(err)


def test_non_finite_bare_number():
    assert "not finite" in str(error_of("1e999"))


@pytest.mark.parametrize(
    ("text", "position", "fragment"),
    [
        ("0:(__import__('os'))", 3, "unknown function '__import__'"),
        ("0:(__import__('os').system('true'))", 3, "unknown function '__import__'"),
        ("0:(t.real)", 4, "attribute access is not allowed"),
        ("0:((1).__class__)", 6, "attribute access is not allowed"),
        ("0:(sin(t).conjugate())", 9, "attribute access is not allowed"),
        ("0:(os)", 3, "unknown name 'os'"),
        ("0:(x + 1)", 3, "unknown name 'x'"),
        ("0:(eval(1))", 3, "unknown function 'eval'"),
        ("0:(open(1))", 3, "unknown function 'open'"),
        ("0:(round(t))", 3, "unknown function 'round'"),
        ("0:(t[0])", 4, "subscripts are not allowed"),
        ("0:(max_f[0])", 8, "subscripts are not allowed"),
        ("0:(lambda: 1)", 3, "unknown name 'lambda'"),
        ("0:((lambda x: x)(1))", 4, "unknown name 'lambda'"),
        ("0:('a')", 3, "strings are not allowed"),
        ('0:("a" * 3)', 3, "strings are not allowed"),
        ("0:(t(1))", 3, "unknown function 't'"),
        ("0:(sin(t)(1))", 9, "only the listed functions can be called"),
        ("0:(1 if t else 2)", 5, "expected ')' or an operator"),
        ("0:(t == 1)", 5, "expected ')' or an operator"),
        ("0:([1, 2])", 3, "expected a value"),
    ],
)
def test_unsafe_constructs_are_rejected(text, position, fragment):
    err = error_of(text)
    assert err.position == position, str(err)
    assert fragment in str(err)


@pytest.mark.parametrize(
    "text",
    [
        "0:(" + "(" * 200 + "1" + ")" * 200 + ")",
        "0:(" + "-" * 500 + "1)",
        "0:(" + "sin(" * 200 + "t" + ")" * 200 + ")",
        "0:(" + "2**" * 300 + "1)",
        "0:(" + "(" * 100_000,
    ],
    ids=["parens", "unary", "calls", "power", "open-parens"],
)
def test_deeply_nested_input_is_rejected_quickly(text):
    start = time.perf_counter()
    err = error_of(text)
    assert "nested more than" in str(err) or "longer than" in str(err)
    assert time.perf_counter() - start < 2.0
    assert len(str(err)) < 300  # the excerpt keeps the message one readable line


def test_very_long_input_is_rejected():
    text = "0:(" + "1+" * 60_000 + "1)"
    err = error_of(text)
    assert "longer than" in str(err)
    assert len(str(err)) < 300


def test_long_but_legitimate_schedule_parses():
    text = ", ".join(f"{k}:({k % 7})" for k in range(0, 4000, 2))
    values = parse_schedule(text, 4000)
    assert values[10] == 10 % 7 and values[11] == (10 % 7 + 12 % 7) / 2


def test_error_deep_in_long_input_shows_nearby_text():
    text = ", ".join(f"{k}:({k})" for k in range(200)) + ", 999:(t.real)"
    err = error_of(text)
    assert "t.real" in str(err) and "..." in str(err)
    assert text[err.position] == "."


@pytest.mark.parametrize("value", [True, None, [1, 2]])
def test_non_string_input_is_an_error(value):
    with pytest.raises(ScheduleError, match="a schedule is a string or a number"):
        parse_schedule(value, 3)
