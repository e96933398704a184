"""Every relative link in the Markdown docs points at a file that exists, and every
``#anchor`` at a heading of its target (GitHub's heading slugs)."""

import functools
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")),
        *sorted((ROOT / "benchmarks").rglob("*.md"))]


def _outside_code(text):
  fence = False
  for number, line in enumerate(text.splitlines(), 1):
    if line.lstrip().startswith("```"):
      fence = not fence
    elif not fence:
      yield number, line


def slug(heading):
  """GitHub's anchor for a heading: lower case, punctuation but '-' and '_' dropped."""
  text = heading.replace("`", "").strip().lower()
  return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@functools.lru_cache(maxsize=None)
def anchors(path):
  """The anchors of a Markdown file's headings, each file read once per session."""
  seen: dict[str, int] = {}
  out = set()
  for _, line in _outside_code(path.read_text()):
    match = re.match(r"#{1,6}\s+(.*)", line)
    if match:
      base = slug(match.group(1))
      count = seen.get(base, 0)
      seen[base] = count + 1
      out.add(base if count == 0 else f"{base}-{count}")
  return out


def test_slug_follows_github():
  assert slug("Results (test, nats, lower is better)") == "results-test-nats-lower-is-better"
  assert slug("150,000 steps: MuProp, SF") == "150000-steps-muprop-sf"
  assert slug("The paper's `learned` prior") == "the-papers-learned-prior"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc):
  broken = []
  for number, line in _outside_code(doc.read_text()):
    for target in re.findall(r"\]\(([^)\s]+)\)", line):
      if re.match(r"[a-z]+:", target):
        continue
      path, _, fragment = target.partition("#")
      resolved = (doc.parent / path) if path else doc
      if not resolved.exists():
        broken.append(f"line {number}: no file {target}")
      elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
        broken.append(f"line {number}: no heading for {target}")
  assert not broken, "\n".join(broken)
