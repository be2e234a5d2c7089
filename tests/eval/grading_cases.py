r"""Regression fixture for `l2ray.grading`: what our grader says, case by case.

Each case is ``(response, gold, answer_type, expected_extracted, expected_correct)``. The fixture records
what the grader *does*, including math-verify's known leniencies and false negatives (Math-Verify issues
#14, #47, #69), each marked ``KNOWN`` with a comment, so that an upgrade that changes a verdict shows up.
"""

from __future__ import annotations

CASES: list[tuple[str, str, str, str | None, bool]] = [
    # --- fractions and decimals
    (r"So \boxed{\frac{11}{12}}.", r"\frac{11}{12}", "math", r"\frac{11}{12}", True),
    (r"\boxed{11/12}", r"\frac{11}{12}", "math", "11/12", True),
    (r"\boxed{\dfrac{3}{4}}", r"\frac{3}{4}", "math", r"\dfrac{3}{4}", True),
    (r"\boxed{0.75}", r"\frac{3}{4}", "math", "0.75", True),
    (r"\boxed{\frac{1}{10}}", "0.1", "math", r"\frac{1}{10}", True),
    (r"\boxed{\frac{2}{3}}", r"\frac{3}{4}", "math", r"\frac{2}{3}", False),
    # --- pi and radicals
    (r"\boxed{9\pi}", r"9\pi", "math", r"9\pi", True),
    # A rounded decimal is not the exact value.
    (r"\boxed{28.27}", r"9\pi", "math", "28.27", False),
    (r"\boxed{2\sqrt{2}}", r"\sqrt{8}", "math", r"2\sqrt{2}", True),
    # --- sets and intervals
    (r"\boxed{\{2,1\}}", r"\{1,2\}", "math", r"\{2,1\}", True),
    # KNOWN leniency: a bare list "1, 2" is accepted for the set {1, 2}.
    (r"\boxed{1, 2}", r"\{1,2\}", "math", "1, 2", True),
    (r"\boxed{\{1,3\}}", r"\{1,2\}", "math", r"\{1,3\}", False),
    (r"\boxed{(-\infty, 4)}", r"(-\infty,4)", "math", r"(-\infty, 4)", True),
    (r"\boxed{(-\infty,4]}", r"(-\infty,4)", "math", r"(-\infty,4]", False),
    # KNOWN false negative: the inequality x < 4 is the same set as (-oo, 4) but is not matched.
    (r"\boxed{x<4}", r"(-\infty,4)", "math", "x<4", False),
    # --- units, percent, degrees, text-wrapped and formatted numbers
    (r"\boxed{50 \text{ dollars}}", "50", "math", r"50 \text{ dollars}", True),
    (r"\boxed{\$50}", "50", "math", r"\$50", True),
    (r"\boxed{70^\circ}", "70", "math", r"70^\circ", True),
    # KNOWN leniency: "36%" (= 0.36) is accepted for 36.
    (r"\boxed{36\%}", "36", "math", r"36\%", True),
    (r"\boxed{\text{391}}", "391", "math", r"\text{391}", True),
    (r"\boxed{1,023}", "1023", "math", "1,023", True),
    (r"\boxed{x=7}", "7", "math", "x=7", True),
    (r"\boxed{-11}", "-11", "math", "-11", True),
    (r"\boxed{11}", "-11", "math", "11", False),
    # --- which answer counts: the last box, and never one inside the thinking part
    (r"First \boxed{3}, then corrected: \boxed{5}", "5", "math", "5", True),
    (r"First \boxed{3}, then corrected: \boxed{5}", "3", "math", "5", False),
    (r"<think>maybe \boxed{3}</think> The answer is \boxed{5}.", "3", "math", "5", False),
    ("The answer is 3. Wait, actually the answer is 5.", "5", "math", "5", True),
    # --- answers in prose of other languages (anchors of every registered language)
    (r"<think>4! = 24</think>所以答案是 \boxed{24}。", "24", "math", "24", True),
    ("因此，答案是 24。", "24", "math", "24", True),
    ("Die Antwort ist 3/4.", r"\frac{3}{4}", "math", "3/4", True),
    (
        r"Also ist die endgültige Antwort \boxed{\frac{5}{2}} Stunden.",
        r"\frac{5}{2}",
        "math",
        r"\frac{5}{2}",
        True,
    ),
    ("答えは 42 です。", "42", "math", "42 です", True),
    (r"Donc la réponse est $\frac{1}{3}$.", r"\frac{1}{3}", "math", r"\frac{1}{3}", True),
    ("Ответ: 12", "12", "math", "12", True),
    ("The final answer is 7", "7", "math", "is 7", True),
    ("The answer is 210.", "210", "math", "210", True),
    # a LaTeX command after an anchor (no box) is read as math, not cut at the backslash
    (r"The answer is $2\sqrt{2}$.", r"2\sqrt{2}", "math", r"2\sqrt{2}", True),
    (r"所以答案是 $15-10\sqrt{2}$。", r"15-10\sqrt{2}", "math", r"15-10\sqrt{2}", True),
    # --- no answer, truncated output
    ("I am not sure how to solve this.", "5", "math", None, False),
    ("", "5", "math", None, False),
    (r"<think>17 × 23 = 391. So the answer is \boxed{39", "391", "math", None, False),
    ("<think>Let me compute 17 × 23 step by", "391", "math", None, False),
    # A complete answer inside thinking that never closed is cut-off reasoning, not an answer.
    (r"<think>17 × 23 = 391, so \boxed{391}", "391", "math", None, False),
    (r"<think>So the answer is \boxed{391}", "391", "integer", None, False),
    ("<think>The answer is C", "C", "letter", None, False),
    # --- integers (AIME style)
    (r"\boxed{033}", "33", "integer", "033", True),
    (r"\boxed{33.5}", "33", "integer", "33.5", False),
    # Not an integer literal: math-verify decides, 66/2 == 33.
    (r"\boxed{\frac{66}{2}}", "33", "integer", r"\frac{66}{2}", True),
    # Commas only as thousands separators, and never digits joined across spaces: a list of two
    # numbers is not their concatenation.
    (r"\boxed{3, 5}", "35", "integer", "3, 5", False),
    (r"\boxed{2 3}", "23", "integer", "2 3", False),
    (r"\boxed{1,2}", "12", "integer", "1,2", False),
    ("The answer is 1,2", "12", "integer", "1,2", False),
    (r"\boxed{12,34}", "1234", "integer", "12,34", False),
    (r"\boxed{1,000}", "1000", "integer", "1,000", True),
    (r"\boxed{-12,345}", "-12345", "integer", "-12,345", True),
    (r"\boxed{1\,000}", "1000", "integer", r"1\,000", True),
    (r"\boxed{ 42 }", "42", "integer", "42", True),
    ("The answer is 42 .", " 42 ", "integer", "42", True),
    # --- multiple choice letters, extracted strictly
    (r"\boxed{C}", "C", "letter", "C", True),
    (r"\boxed{(B)}", "C", "letter", "B", False),
    (r"\boxed{\text{C}}", "C", "letter", "C", True),
    (r"\boxed{C) 29}", "C", "letter", "C", True),
    ("The answer is (D).", "D", "letter", "D", True),
    ("<think>29 is prime</think>答案是C。", "C", "letter", "C", True),
    ("答え：A", "A", "letter", "A", True),
    ("Die Antwort ist B, weil 5/6 die Summe ist.", "B", "letter", "B", True),
    ("Checking each option, 29 is the only prime.\nC", "C", "letter", "C", True),
    # No letter is guessed from prose: neither "Clearly" nor "a prime" is an answer.
    ("Clearly the best choice is the third one.", "C", "letter", None, False),
    ("I think the answer is a prime number.", "C", "letter", None, False),
    (r"\boxed{29}", "C", "letter", None, False),
]
