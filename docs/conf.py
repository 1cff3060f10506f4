"""Sphinx configuration of the CellBridge documentation site.

Build: ``python -m sphinx -W --keep-going -n -b html docs docs/_build/html`` (what
``tests/test_docs.py`` runs). Warnings are errors; every cross-reference to a ``cellbridge`` object
must resolve (nitpicky); references to other packages are linked through intersphinx when the
network is reachable and shown as plain code otherwise (``CELLBRIDGE_DOCS_OFFLINE=1`` skips the
inventories). The tutorials in ``tutorials/*.py`` are executed at every build.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT / "src"))  # an editable or a plain checkout both build

import cellbridge

# The tutorials run in Jupyter kernels started by this process: they draw inline (whatever
# MPLBACKEND the shell sets, e.g. Agg in CI), and use one thread each unless told otherwise (the
# tutorials' tiny models gain nothing from more, and the build runs them two at a time with -j 2).
os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
os.environ.setdefault("OMP_NUM_THREADS", "1")

project = "CellBridge"
author = "CellBridge developers"
copyright = "CellBridge developers"
version = release = cellbridge.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "numpydoc",
    "myst_nb",
    "sphinxarg.ext",
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".py": "myst-nb"}
exclude_patterns = ["_build", "**/.ipynb_checkpoints", "conf.py"]
html_theme = "furo"
html_title = f"CellBridge {release}"
templates_path: list[str] = []

# ----------------------------------------------------------------------------- API (autodoc + numpydoc)
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # types are described in the numpy docstrings; signatures stay readable
# every name of a module's ``__all__`` is documented, constants included
autodoc_default_options = {"members": True, "undoc-members": True, "show-inheritance": False}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# ----------------------------------------------------------------------------- cross-references
nitpicky = True
#: packages whose objects we mention without owning them: unresolved references to them are fine
EXTERNAL = ("numpy", "np", "scipy", "sp", "pandas", "pd", "anndata", "ad", "mudata", "md", "scanpy", "sc",
            "torch", "sklearn", "matplotlib", "faiss", "hnswlib", "igraph", "leidenalg", "h5py", "tqdm",
            "pathlib", "os", "typing", "collections", "logging", "json", "argparse", "numbers")
BUILTINS = ("int", "float", "str", "bool", "bytes", "dict", "list", "tuple", "set", "None", "object",
            "callable", "Callable", "Sequence", "Mapping", "Iterable", "Iterator", "Literal", "Any",
            "Path", "PathLike", "AnnData", "MuData", "DataFrame", "Series", "ndarray", "Figure", "Axes",
            "Generator", "Exception", "ValueError", "TypeError", "KeyError", "RuntimeError",
            "FileExistsError", "FileNotFoundError", "UserWarning", "Warning", "optional")
nitpick_ignore_regex = [
    (r"py:.*", rf"({'|'.join(EXTERNAL)})(\..*)?"),
    (r"py:.*", rf"({'|'.join(BUILTINS)})"),
]
intersphinx_mapping = {} if os.environ.get("CELLBRIDGE_DOCS_OFFLINE") == "1" else {
    "python": ("https://docs.python.org/3", None),
    "numpy": ("https://numpy.org/doc/stable", None),
    "pandas": ("https://pandas.pydata.org/docs", None),
    "anndata": ("https://anndata.readthedocs.io/en/stable", None),
    "mudata": ("https://mudata.readthedocs.io/en/latest", None),
    "scanpy": ("https://scanpy.readthedocs.io/en/stable", None),
    "matplotlib": ("https://matplotlib.org/stable", None),
}

# ----------------------------------------------------------------------------- pages (MyST) and tutorials (myst-nb)
myst_enable_extensions = ["colon_fence", "deflist", "dollarmath"]
myst_heading_anchors = 3
nb_custom_formats = {".py": ["jupytext.reads", {"fmt": "py:percent"}]}
nb_execution_mode = "force"  # run every tutorial at every build: they are tests of the API they show
nb_execution_raise_on_error = True
nb_execution_in_temp = True  # files a tutorial writes go to a temporary folder
nb_execution_timeout = 300
nb_merge_streams = True
nb_execution_show_tb = True

# ----------------------------------------------------------------------------- generated API pages
#: public modules that get no page of their own: the CLI has its page, the models have theirs
NOT_API = {"cli", "workflows", "models"}
TITLES = {
    "pp": "Preprocessing (`cellbridge.pp`)", "tl": "Tools (`cellbridge.tl`)", "pl": "Plots (`cellbridge.pl`)",
    "metrics": "Metrics (`cellbridge.metrics`)", "neighbors": "Neighbour search (`cellbridge.neighbors`)",
    "io": "Reading and writing (`cellbridge.io`)", "datasets": "Example data (`cellbridge.datasets`)",
    "report": "Run reports (`cellbridge.report`)",
}


MODELS_PAGE = """Models
======

Both models share their verbs: ``train()`` returns the model, ``get_latent(adata=None, modality=None)``,
``history_`` (one row per epoch), ``save(dir)`` / ``load(dir, ...)`` and ``params`` (the resolved
hyper-parameters).

.. autoclass:: cellbridge.BiCLUM

.. autoclass:: cellbridge.scMDCF

Presets and helpers
-------------------

.. automodule:: cellbridge.models.biclum
   :exclude-members: BiCLUM

.. automodule:: cellbridge.models.scmdcf
   :exclude-members: scMDCF
"""


def public_modules() -> list[str]:
    """Public modules of ``cellbridge`` that import (a module added today gets its page automatically)."""
    found = []
    for info in pkgutil.iter_modules(cellbridge.__path__):
        if info.name.startswith("_") or info.name in NOT_API:
            continue
        importlib.import_module(f"cellbridge.{info.name}")  # an import error is a build error
        found.append(info.name)
    order = list(TITLES)
    return sorted(found, key=lambda m: (order.index(m) if m in order else len(order), m))


def write_api_pages(_app=None) -> None:
    """Write ``api/<module>.rst`` (autodoc of the module's public members) and ``api/index.rst``."""
    out = DOCS / "api"
    out.mkdir(exist_ok=True)
    _write_if_changed(out / "models.rst", MODELS_PAGE)
    pages = ["models"]
    for name in public_modules():
        title = TITLES.get(name, f"`cellbridge.{name}`")
        text = f"{title}\n{'=' * len(title)}\n\n.. automodule:: cellbridge.{name}\n"
        _write_if_changed(out / f"{name}.rst", text)
        pages.append(name)
    toc = "\n".join(f"   {p}" for p in pages)
    index = (f"API reference\n=============\n\n``import cellbridge as cb``: the models are ``cb.BiCLUM`` and "
             f"``cb.scMDCF``; the functions live in the namespaces below.\n\n"
             f"Errors and warnings\n-------------------\n\n{_errors_rst()}\n"
             f".. toctree::\n   :maxdepth: 1\n\n{toc}\n")
    _write_if_changed(out / "index.rst", index)


def _errors_rst() -> str:
    """Every exception and warning class CellBridge raises, under the name users import it by."""
    from cellbridge import _errors

    out = []
    for name, obj in vars(_errors).items():
        if isinstance(obj, type) and issubclass(obj, BaseException) and obj.__module__ == _errors.__name__:
            where = "cellbridge" if hasattr(cellbridge, name) else "cellbridge._errors"
            out.append(f".. autoexception:: {where}.{name}\n   :show-inheritance:\n")
    return "\n".join(out)


def _write_if_changed(path: Path, text: str) -> None:
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)


def resolve_in_source(app, env, node, contnode):
    """Resolve a Python reference the way its docstring's own module would read it.

    Docstrings are written in their source module (``cellbridge.pp.atac``) but documented under
    the namespace users import (``cellbridge.pp``), so ``:data:`ARCHR_DEFAULTS``` or
    ``:class:`scMDCF``` may not resolve as written. Try, in order: the documented object whose
    full name ends with the target; else, when the target exists in the source module (or is a
    ``cellbridge...`` path that imports), render it as code without a link (an internal helper
    with no page). A target that names nothing is left unresolved: nitpicky mode makes it a build
    error, so a renamed or misspelled reference in a docstring fails the build.
    """
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip("~.")
    domain = env.get_domain("py")
    matches = [name for name in domain.objects if name == target or name.endswith("." + target)]
    if len(matches) == 1:
        from sphinx.util.nodes import make_refnode

        obj = domain.objects[matches[0]]
        return make_refnode(app.builder, node["refdoc"], obj.docname, obj.node_id, contnode, matches[0])
    if _exists(target, _source_module(node)):
        return contnode
    return None


def _source_module(node) -> str | None:
    """``cellbridge.pp.atac`` from a node whose source is '... docstring of cellbridge.pp.atac.gene_activity'."""
    source = None
    while node is not None and not source:
        source, node = node.source, node.parent
    marker = "docstring of "
    if not source or marker not in source:
        return None
    qualname = source.split(marker, 1)[1].strip()
    parts = qualname.split(".")
    for i in range(len(parts), 0, -1):  # longest importable prefix
        try:
            importlib.import_module(".".join(parts[:i]))
            return ".".join(parts[:i])
        except ImportError:
            continue
    return None


def _exists(target: str, module: str | None) -> bool:
    candidates = [target] + ([f"{module}.{target}"] if module else [])
    for dotted in candidates:
        parts = dotted.split(".")
        if parts[0] != "cellbridge":
            continue
        for i in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:i]))
            except ImportError:
                continue
            try:
                for attr in parts[i:]:
                    obj = getattr(obj, attr)
            except AttributeError:
                break
            return True
    return False


def setup(app):
    app.connect("builder-inited", write_api_pages)
    app.connect("missing-reference", resolve_in_source)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
