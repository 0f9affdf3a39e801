"""Custom-op libraries: graphs whose ops only run with an extra onnxruntime library, and where they run.

Core ONNX (plus ``ai.onnx.ml``) cannot express every preprocessing step exactly; the export then
uses onnxruntime-extensions' ``ai.onnx.contrib`` ops (regex standardisation and splitting of
``TextVectorization``). A bundle records the ops (``contrib_ops``, ``"domain:Op"``), the Python
packages they need (``custom_op_libraries``) and which onnxruntime bindings can run the graph
(``bindings``); :class:`~seqdeploy.runtime.predictor.Predictor`, ``seqdeploy serve`` and the Ray
scorer register the libraries from there. onnxruntime-extensions is imported only when a graph needs it.

    >>> domains_of(["ai.onnx.contrib:StringRegexReplace", "ai.onnx.ml:LabelEncoder"])
    ('ai.onnx.contrib',)
    >>> [b.binding for b in binding_support(()) if b.runs]
    ['python', 'node', 'web']

Importing this module needs the standard library only.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from typing import Iterable, Mapping

from seqdeploy.errors import BundleError

#: opset domains every onnxruntime build (Python, Node, web) runs natively
STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml")


@dataclass(frozen=True)
class CustomOpLibrary:
    """The Python package whose shared library implements the ops of one opset domain."""

    domain: str
    module: str  # importable name
    package: str  # pip name
    extra: str  # the seqdeploy extra that installs it

    @property
    def install(self) -> str:
        return f"pip install 'seqdeploy[{self.extra}]'"


#: opset domain -> the library onnxruntime needs to run its ops
LIBRARIES: Mapping[str, CustomOpLibrary] = {
    "ai.onnx.contrib": CustomOpLibrary("ai.onnx.contrib", "onnxruntime_extensions", "onnxruntime-extensions", "strings"),
}


@dataclass(frozen=True)
class BindingSupport:
    """Whether one onnxruntime binding can run a graph, and what to do instead when it cannot."""

    binding: str  # "python", "node" (onnxruntime-node), "web" (onnxruntime-web)
    runs: bool
    note: str


def domains_of(contrib_ops: Iterable[str]) -> tuple[str, ...]:
    """The opset domains of ``"domain:Op"`` names that need a custom-op library (sorted, unique)."""
    return tuple(sorted({op.rsplit(":", 1)[0] for op in contrib_ops if ":" in op} & set(LIBRARIES)))


def packages_for(contrib_ops: Iterable[str]) -> tuple[str, ...]:
    """The pip packages the ops ``contrib_ops`` need (empty for core + ``ai.onnx.ml`` graphs)."""
    return tuple(sorted({LIBRARIES[d].package for d in domains_of(contrib_ops)}))


def import_library(module: str) -> str:
    """Import the custom-op package ``module`` and return its shared library's path.

    onnxruntime-extensions carries its own RE2. When TensorFlow is already loaded in the process,
    the dynamic linker binds the library's RE2 calls to TensorFlow's and the regex ops silently
    return their input unchanged; importing it with ``RTLD_DEEPBIND`` (Linux) keeps its own symbols
    first. Every import of a custom-op package goes through here. Raises ``ImportError`` when the
    package is missing.
    """
    if module not in sys.modules:
        flags = sys.getdlopenflags() if hasattr(sys, "getdlopenflags") else None
        if flags is not None:
            sys.setdlopenflags(os.RTLD_NOW | os.RTLD_LOCAL | getattr(os, "RTLD_DEEPBIND", 0))
        try:
            importlib.import_module(module)
        finally:
            if flags is not None:
                sys.setdlopenflags(flags)
    return sys.modules[module].get_library_path()


def extensions_library_path() -> str:
    """Path of the onnxruntime-extensions custom-op library (imported with ``RTLD_DEEPBIND``, see
    :func:`import_library`); raises :class:`BundleError` naming the install command when it is missing."""
    return library_paths(["ai.onnx.contrib"])[0]


def library_paths(domains: Iterable[str], what: str = "this model") -> list[str]:
    """Shared-library paths to register for the opset ``domains`` (``make_session(custom_ops_libraries=...)``).

    Raises :class:`BundleError` naming the package and the install command when one is missing.
    """
    paths = []
    for domain in sorted(set(domains)):
        lib = LIBRARIES.get(domain)
        if lib is None:
            raise BundleError(f"{what} uses ops of opset domain {domain!r}, which no known custom-op library "
                              f"implements (known: {', '.join(LIBRARIES)}); re-export the model with the "
                              f"standard ONNX domains")
        try:
            paths.append(import_library(lib.module))
        except ImportError:
            raise BundleError(f"{what} uses {domain} ops (exact string preprocessing), which run only with the "
                              f"{lib.package} package, and it is not installed; install it: {lib.install} "
                              f"(or pip install {lib.package})") from None
    return paths


def libraries_for(contrib_ops: Iterable[str], what: str = "this model") -> list[str]:
    """Shared-library paths for a graph whose non-standard ops are ``contrib_ops`` (``"domain:Op"``)."""
    return library_paths(domains_of(contrib_ops), what)


def binding_support(contrib_ops: Iterable[str]) -> tuple[BindingSupport, ...]:
    """Which onnxruntime bindings run a portable graph with these non-standard ops.

    Measured with onnxruntime-node 1.30 and onnxruntime-web (wasm): both run core ONNX and
    ``ai.onnx.ml`` (``LabelEncoder`` on string tensors included) but register no custom-op library,
    so ``ai.onnx.contrib`` graphs fail to load there.
    """
    domains = domains_of(contrib_ops)
    if not domains:
        return (BindingSupport("python", True, "onnxruntime"),
                BindingSupport("node", True, "onnxruntime-node"),
                BindingSupport("web", True, "onnxruntime-web"))
    needs = ", ".join(sorted({LIBRARIES[d].package for d in domains}))
    ops = ", ".join(sorted(op.split(":", 1)[1] for op in contrib_ops if op.rsplit(":", 1)[0] in domains))
    instead = (f"the graph needs {needs} custom ops ({ops}), which this binding cannot register; "
               f"run the bundle with the Python runtime, or call `seqdeploy serve` over the Open Inference "
               f"Protocol (HTTP/JSON) from this side")
    return (BindingSupport("python", True, f"onnxruntime + {needs}: {LIBRARIES[domains[0]].install}"),
            BindingSupport("node", False, f"onnxruntime-node: {instead}"),
            BindingSupport("web", False, f"onnxruntime-web: {instead}"))


__all__ = ["BindingSupport", "CustomOpLibrary", "LIBRARIES", "STANDARD_DOMAINS", "binding_support", "domains_of",
           "extensions_library_path", "import_library", "libraries_for", "library_paths", "packages_for"]
