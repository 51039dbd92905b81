"""Replaces one generated section of bench/README.md (shared by the bench reports).

    from readme_section import replace
    replace(README, "fetch", section_text)   # between <!-- fetch:start --> and <!-- fetch:end -->
"""


def replace(readme, name, section):
    """Puts `section` (which holds its own markers) where the `name` markers are, or appends it."""
    with open(readme) as f:
        text = f.read()
    s, e = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if s in text and e in text:
        a, b = text.index(s), text.index(e) + len(e)
        if text[b:b + 1] == "\n":
            b += 1
        text = text[:a] + section + text[b:]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(readme, "w") as f:
        f.write(text)
