"""The experiment config reference: the schema of ``experiments/config.py`` as tables.

Every section of :class:`experiments.config.Config` becomes one table of its keys,
each with its type, default and meaning, generated from the pydantic models at build
time (into ``_generated/``, which experiments.md includes): the reference cannot drift
from the schema. The meaning of a key is its description, the docstring under the field
(the schema sets pydantic's ``use_attribute_docstrings``); a section's text is its
model's docstring. A key without a description is a build warning, so the strict
build (``sphinx -W``) fails until it has one.
"""

import inspect
import pathlib
import typing

import pydantic
import yaml
from sphinx.util import logging

_LOGGER = logging.getLogger(__name__)


def _bounds(metadata) -> str:
  """`` (>= 1, <= 4)`` from pydantic's constraint objects (``Field(ge=1, le=4)``)."""
  bounds = []
  flat = []
  for item in metadata:  # Field(ge=1) inside Annotated is a FieldInfo holding the constraints
    flat += getattr(item, "metadata", None) or [item]
  for constraint in flat:
    for attr, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
      value = getattr(constraint, attr, None)
      if value is not None:
        bounds.append(f"{op} {value}")
  return f" ({', '.join(bounds)})" if bounds else ""


def _type_name(annotation) -> str:
  """A short, readable name of a type (``list[int (>= 1)]``, ``'fixed' | 'dynamic'``)."""
  origin = typing.get_origin(annotation)
  args = typing.get_args(annotation)
  if origin is typing.Annotated:
    return _type_name(args[0]) + _bounds(annotation.__metadata__)
  if origin is typing.Literal:
    return " | ".join(repr(a) for a in args)
  if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
    names = [_type_name(a) for a in args if a is not type(None)]
    return " | ".join(names) + (" or null" if len(names) < len(args) else "")
  if origin in (list, tuple):
    return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
  if origin is dict:
    return "mapping"
  if inspect.isclass(annotation) and issubclass(annotation, pydantic.BaseModel):
    return f"section {annotation.__name__}"
  return getattr(annotation, "__name__", str(annotation))


def _default(field) -> str:
  if field.is_required():
    return "required"
  value = field.get_default(call_default_factory=True)
  if isinstance(value, pydantic.BaseModel):
    return "see its section"
  text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
  return "`" + text.removesuffix("\n...").removesuffix("...").strip() + "`"


def _models(annotation):
  """The pydantic models a field's type holds (sections and task variants)."""
  if inspect.isclass(annotation) and issubclass(annotation, pydantic.BaseModel):
    yield annotation
    return
  for arg in typing.get_args(annotation):
    yield from _models(arg)


def _sections(root, prefix=""):
  """``(dotted prefix, model)`` of every section, depth first, each model once."""
  seen = set()
  stack = [(prefix, root)]
  while stack:
    where, model = stack.pop(0)
    if model in seen:
      continue
    seen.add(model)
    yield where, model
    for name, field in model.model_fields.items():
      for sub in _models(field.annotation):
        stack.append((f"{where}{name}." if where or name else name, sub))


def _cell(text: str) -> str:
  return " ".join(text.split()).replace("|", "\\|")


def markdown(root) -> str:
  """The reference of ``root``'s schema as MyST Markdown."""
  lines = []
  for where, model in _sections(root):
    title = where.rstrip(".") or "top level"
    lines.append(f"### `{title}` ({model.__name__})")
    lines.append("")
    doc = inspect.getdoc(model)
    if doc and doc != inspect.getdoc(pydantic.BaseModel):
      lines += [doc, ""]
    lines.append("| key | type | default | meaning |")
    lines.append("|---|---|---|---|")
    for name, field in model.model_fields.items():
      lines.append(f"| `{name}` | {_cell(_type_name(field.annotation) + _bounds(field.metadata))} | "
                   f"{_cell(_default(field))} | {_cell(field.description or '')} |")
    lines.append("")
  return "\n".join(lines)


def undocumented(root) -> list[str]:
  """``Section.key`` of every field of ``root``'s schema without a description."""
  return [f"{model.__name__}.{name}" for _, model in _sections(root)
          for name, field in model.model_fields.items() if not field.description]


def write(app) -> None:
  """Writes ``_generated/config_reference.md`` (included by experiments.md) when it
  changed; warns about every config key without a description."""
  from experiments import config
  for key in undocumented(config.Config):
    _LOGGER.warning(f"config key {key} has no description: write a docstring under the "
                    "field in experiments/config.py")
  path = pathlib.Path(app.srcdir) / "_generated" / "config_reference.md"
  text = markdown(config.Config)
  if not path.exists() or path.read_text() != text:
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)


def setup(app):
  app.connect("builder-inited", write)
  return {"parallel_read_safe": True, "parallel_write_safe": True}
