"""Prompts this project writes from seeded templates, a minority of the router's corpus:
arithmetic and logic word problems (reasoning), and code requests as people phrase them
(code: asking for a function, a fix, an explanation, a command, in many languages), each
its own source so a source-held-out evaluation can leave them out."""

from __future__ import annotations

import random


def word_problems(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    names = ["Sarah", "Ali", "Mei", "John", "Priya", "Lucas", "Ana", "Tom", "Fatima", "Ivan"]
    things = ["apples", "books", "marbles", "tickets", "pencils", "coins", "cookies", "stamps"]
    templates = [
        "{a} has {x} {t}. {b} gives {a} {y} more and {a} then loses {z}. How many {t} "
        "does {a} have now?",
        "A train travels {x} km in {y} hours. What is its average speed in km per hour?",
        "If {x} workers can build a wall in {y} days, how many days would {z} workers need?",
        "Solve for x: {x}x + {y} = {z}. Show your steps.",
        "A bag holds {x} red and {y} blue balls. Two are drawn without replacement. What is "
        "the probability that both are red?",
        "Prove that the sum of two odd numbers is always even.",
        "What is {x}% of {y}? Explain how you computed it.",
        "{a} is {x} years older than {b}. In {y} years their ages will add up to {z}. How "
        "old is {b} now?",
        "A rectangle has a perimeter of {z} cm and one side of {x} cm. What is its area?",
        "If all {t} are heavy and some heavy things are red, must some {t} be red? Reason "
        "step by step.",
        "The price of a jacket rose by {x}% and then fell by {y}%. Is it cheaper or dearer "
        "than at first, and by how much?",
        "How many ways can {x} people sit in a row if two of them refuse to sit together?",
        "Find the next number in the sequence {x}, {y}, {z}, ... and explain the rule.",
        "A tank fills in {x} hours and drains in {y} hours. With both open, how long until "
        "it is full?",
        "Is {z} a prime number? Justify the answer.",
        "{a} saves {x} dollars a week. How many weeks until {a} can buy a bike costing {z} "
        "dollars?",
    ]
    out = []
    for _ in range(n):
        t = rng.choice(templates)
        a, b = rng.sample(names, 2)
        out.append(
            t.format(
                a=a,
                b=b,
                t=rng.choice(things),
                x=rng.randint(2, 60),
                y=rng.randint(2, 40),
                z=rng.randint(41, 400),
            )
        )
    return out


LANGS = ["Python", "JavaScript", "TypeScript", "Java", "C++", "C#", "Go", "Rust", "Ruby",
         "PHP", "Kotlin", "Swift", "bash", "SQL", "R", "Scala", "Haskell", "Lua", "Perl",
         "Dart"]  # fmt: skip
TASKS = [
    "reverses a string", "removes duplicates from a list", "reads a CSV file and sums a column",
    "checks whether a number is prime", "parses a date like 2024-03-01", "merges two sorted arrays",
    "counts the words in a text file", "retries an HTTP request three times",
    "validates an email address", "flattens a nested list", "finds the longest common prefix",
    "converts JSON to a dictionary", "sorts records by two keys", "reads environment variables",
    "uploads a file to S3", "debounces a function", "caches results of a slow call",
    "streams lines from a large file", "computes a moving average", "builds a REST endpoint",
]  # fmt: skip
ERRORS = ["a null pointer exception", "'undefined is not a function'", "a segmentation fault",
          "an index out of range error", "a KeyError", "a deadlock", "a memory leak",
          "'permission denied'", "a type mismatch at compile time", "a stack overflow"]  # fmt: skip
REQUESTS = [
    "Write a {lang} function that {task}.",
    "How do I write something in {lang} that {task}?",
    "can you give me {lang} code which {task}",
    "My {lang} program crashes with {error}. How do I debug it?",
    "Why does my {lang} code give {error} when it {task}?",
    "What's the idiomatic way in {lang} to do something that {task}?",
    "Refactor my {lang} class so it {task} without global state.",
    "Explain line by line what this {lang} snippet does: it {task}.",
    "Write unit tests in {lang} for a function that {task}.",
    "Is there a library for {lang} that {task}, or should I write it myself?",
    "Convert this Python into {lang}: a helper that {task}.",
    "What is the time complexity of an approach that {task}, and can {lang} do better?",
    "How do I fix {error} in my {lang} build?",
    "Give me a one-liner in {lang} that {task}",
    "I'm new to {lang}. How would I make a script that {task}?",
    "Review this {lang} pull request: the change {task}. Anything wrong?",
]  # fmt: skip


def code_requests(n: int, seed: int) -> list[str]:
    """``n`` code questions from ``REQUESTS`` (seeded)."""
    rng = random.Random(seed + 1)
    return [
        rng.choice(REQUESTS).format(
            lang=rng.choice(LANGS), task=rng.choice(TASKS), error=rng.choice(ERRORS)
        )
        for _ in range(n)
    ]
