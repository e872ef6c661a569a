"""The public verbs are plain, documented, typed functions (issue 16, item 1).

``inspect.signature`` must show each verb's real parameters (no module trickery) and each verb must return a
real result type, not ``Any``, so type checkers and IDEs see what a call gives back.
"""

from __future__ import annotations

import importlib
import inspect
import typing

import pytest

import mednas

_VERBS = sorted(name for name in mednas.__all__ if inspect.isfunction(getattr(mednas, name)))

# The packages whose result types the API names under TYPE_CHECKING.
_RESULT_PACKAGES = (
    "mednas.bundle",
    "mednas.evaluation",
    "mednas.reporting",
    "mednas.retraining",
    "mednas.study",
)


def _result_namespace() -> dict[str, object]:
    import torch

    namespace: dict[str, object] = {"torch": torch}
    for package in _RESULT_PACKAGES:
        module = importlib.import_module(package)
        namespace.update({name: getattr(module, name) for name in module.__all__})
    return namespace


def test_the_public_verbs_are_the_api_functions() -> None:
    """The verbs ``mednas`` exports are the functions of ``mednas.api`` (not modules or wrappers)."""
    import mednas.api

    assert {"search", "retrain", "export", "report", "evaluate", "load", "predict", "status"} <= set(_VERBS)
    for name in mednas.api.__all__:
        assert getattr(mednas, name, None) is getattr(mednas.api, name) or name == "default_run_dir", name


@pytest.mark.parametrize("name", _VERBS)
def test_each_verb_has_a_signature_a_docstring_and_a_typed_result(name: str) -> None:
    """``inspect.signature`` shows real parameters, the docstring says what the verb does, the result is typed."""
    verb = getattr(mednas, name)
    signature = inspect.signature(verb)
    assert signature.parameters, f"mednas.{name}: no parameters"
    assert not any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in signature.parameters.values()), name
    assert inspect.getdoc(verb) and inspect.getdoc(verb).strip(), f"mednas.{name}: no docstring"
    assert signature.return_annotation is not inspect.Signature.empty, f"mednas.{name}: no return annotation"
    # Resolve the (postponed) annotation: a name that does not exist fails here, as it would for a type checker.
    returned = typing.get_type_hints(verb, localns=_result_namespace())["return"]
    assert returned is not typing.Any, f"mednas.{name} returns Any"
    assert inspect.isclass(returned) or typing.get_origin(returned) is not None, (
        f"mednas.{name}: {returned!r}"
    )
    # A JSON-ready mapping (``status``) may hold Any values; the result itself must not be a bare Any.
    assert typing.get_args(returned)[:1] != (typing.Any,), f"mednas.{name}: {returned!r}"


def test_the_result_types_are_what_the_verbs_return_in_their_modules() -> None:
    """The API names the same result types as the functions it calls, so the annotations cannot drift apart."""
    import mednas.api
    from mednas.bundle import _bundle, _predict
    from mednas.evaluation import _evaluate
    from mednas.reporting import _report
    from mednas.retraining import _calibrate, _retrain
    from mednas.study import _runner

    namespace = _result_namespace()
    pairs = {
        "search": _runner.run_search,
        "retrain": _retrain.run_retrain,
        "calibrate_proxy": _calibrate.calibrate_proxy,
        "export": _bundle.export_bundle,
        "load": _predict.load_bundle,
        "predict": _predict.predict_to_dir,
        "evaluate": _evaluate.evaluate_bundle,
        "report": _report.write_report,
    }
    for name, inner in pairs.items():
        outer = typing.get_type_hints(getattr(mednas.api, name), localns=namespace)["return"]
        assert outer == typing.get_type_hints(inner)["return"], name
