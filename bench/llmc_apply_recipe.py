#!/usr/bin/python3
"""Applies the llm.c recipe of docs/integration.md to a checkout of llm.c's
train_gpt2.c, exactly as written there, so that the page is what gets tested.

    /usr/bin/python3 bench/llmc_apply_recipe.py docs/integration.md LLMC/train_gpt2.c

Reads the blocks headed '**K. After line N** (`anchor`...)' or '**K. Replace
line N** (`anchor`)' and the C code block below each, checks that line N of
the file is the quoted anchor, and rewrites the file with the blocks applied
(from the last line to the first, so the numbers refer to the original).
Exits nonzero when an anchor does not match.
"""
import re
import sys


def blocks(doc):
    pattern = re.compile(r"\*\*\d+\. (After|Replace) line (\d+)\*\* \(`(.*?)`[^\n]*\n+```c\n(.*?)```",
                         re.S)
    return [(m.group(1), int(m.group(2)), m.group(3), m.group(4)) for m in pattern.finditer(doc)]


def main():
    doc, target = sys.argv[1], sys.argv[2]
    found = blocks(open(doc).read())
    lines = open(target).read().split("\n")
    for kind, number, anchor, code in sorted(found, key=lambda b: -b[1]):
        if lines[number - 1] != anchor:
            sys.exit(f"line {number} is {lines[number - 1]!r}, the recipe quotes {anchor!r}")
        new = code.rstrip("\n").split("\n")
        if kind == "After":
            lines[number:number] = new
        else:
            lines[number - 1:number] = new
    open(target, "w").write("\n".join(lines))
    print(f"applied {len(found)} blocks to {target}")


if __name__ == "__main__":
    main()
