"""The judge's questions and the answer parsing, exactly as CoBSAT's evaluation_icl.py."""

from __future__ import annotations

import pytest

from evaluation.cobsat.protocol import TASKS, item, parse_answer, question, true_label, word


@pytest.mark.parametrize(("reply", "option"), [
    ("1", 1), ("3", 3), ("The answer is (3)", 3), (" (7)green", 7), ("10", 10), ("10.", 10),
    ("1 or 10", -1),  # all digits concatenated: 110, not an option
    ("3.5", -1),  # 35
    ("0", -1), ("11", -1), ("", -1), ("green", -1), ("²", -1),  # a digit-like sign int() refuses
])
def test_answers_are_all_digits_concatenated(reply: str, option: int):
    assert parse_answer(reply) == option


def test_questions_are_the_protocols_strings():
    assert question(TASKS[1], "detail") == (
        "What is the color (of the main object) in this image? Answer from the following options:  (1)yellow (2)white "
        "(3)red (4)purple (5)pink (6)orange (7)green (8)brown (9)blue (10)black. Answer the number only and do not include "
        "any other texts (e.g., 1).")
    assert question(TASKS[2], "obj") == (
        "What is the main object in this image? Answer from the following options:  (1)leaf (2)hat (3)cup (4)chair (5)car "
        "(6)box (7)book (8)ball (9)bag (10)apple. Answer the number only and do not include any other texts (e.g., 1).")
    assert "(5)amusement park (6)gym" in question(TASKS[3], "detail")
    assert question(TASKS[4], "obj").startswith("What is the main object in this image? Answer from the following options:  (1)zebra")
    assert "(8)futuristic (9)wireframe (10)old." in question(TASKS[6], "detail")
    assert question(TASKS[7], "detail").startswith("What is the action (of the main object) in this image?")
    assert question(TASKS[9], "detail").startswith("What is the texture (of the main object)")


def test_display_words_map_both_ways_and_to_option_numbers():
    assert (word("3d"), word("park"), word("red")) == ("wireframe", "amusement park", "red")
    assert (item("wireframe"), item("amusement park"), item("red")) == ("3d", "park", "red")
    assert true_label(TASKS[3], "detail", "amusement park") == true_label(TASKS[4], "detail", "park") == 5
    assert true_label(TASKS[5], "detail", "wireframe") == true_label(TASKS[6], "detail", "3d") == 9
    assert true_label(TASKS[1], "obj", "car") == 5 and true_label(TASKS[1], "detail", "yellow") == 1
