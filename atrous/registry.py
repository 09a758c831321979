"""Registries of models and backbones, and the checked call into their builders.

Builders are plain functions with keyword-only options, registered with a decorator.
``create_model`` rejects unknown names and unknown options with a message listing
the valid ones (no catch-all ``**kwargs`` that swallow typos).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, get_type_hints

from atrous.errors import ConfigError, choices_message

if TYPE_CHECKING:  # torch loads with the builders' own modules, not with the registry
    from torch import nn

Builder = TypeVar("Builder", bound="Callable[..., nn.Module]")

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_BACKBONES: dict[str, Callable[..., nn.Module]] = {}
# Backbones DeepLab models are built on (registration order), and who wants to hear of new ones.
_DEEPLAB_BACKBONES: list[str] = []
_BACKBONE_HOOKS: list[Callable[[str], None]] = []


def _register(table: dict[str, Callable[..., nn.Module]], name: str) -> Callable[[Builder], Builder]:
    def decorate(builder: Builder) -> Builder:
        if name in table:
            raise ValueError(f"{name!r} is registered twice")
        catch_all = [p.name for p in inspect.signature(builder).parameters.values() if p.kind is p.VAR_KEYWORD]
        if catch_all:
            raise TypeError(
                f"builder {name!r} takes **{catch_all[0]}: name every option it accepts "
                "(keyword-only parameters), so that a misspelt option is refused instead of swallowed"
            )
        table[name] = builder
        return builder

    return decorate


def register_model(name: str) -> Callable[[Builder], Builder]:
    """Decorator: register a segmentation-model builder under ``name``."""
    return _register(_MODELS, name)


def register_backbone(name: str, *, deeplab: bool = True) -> Callable[[Builder], Builder]:
    """Decorator: register a backbone builder (``output_stride``, ``num_classes`` …).

    Every backbone it builds carries its registered name as ``backbone_name`` (the
    weight loader looks up the published ImageNet files by it). With ``deeplab`` (the
    default) the DeepLab versions its class declares (``Backbone.deeplab_versions``)
    are registered as models on it — ``deeplabv3_{name}`` … — so a new backbone is one
    file; ``deeplab=False`` for an ImageNet-only variant (Chollet's original Xception).
    """

    def decorate(builder: Builder) -> Builder:
        @functools.wraps(builder)
        def build(*args: Any, **options: Any) -> nn.Module:
            backbone = builder(*args, **options)
            backbone.backbone_name = name
            return backbone

        registered = _register(_BACKBONES, name)(build)  # type: ignore[arg-type]
        if deeplab:
            _DEEPLAB_BACKBONES.append(name)
            for hook in _BACKBONE_HOOKS:
                hook(name)
        return registered  # type: ignore[return-value]

    return decorate


def on_deeplab_backbone(hook: Callable[[str], None]) -> None:
    """Call ``hook(name)`` for every DeepLab backbone registered so far and from now on."""
    _BACKBONE_HOOKS.append(hook)
    for name in list(_DEEPLAB_BACKBONES):
        hook(name)


def deeplab_backbones() -> list[str]:
    """The backbones DeepLab models are built on (every registered one but ImageNet-only
    variants), sorted."""
    _ensure_loaded()
    return sorted(_DEEPLAB_BACKBONES)


def _ensure_loaded() -> None:
    # Importing the packages runs their @register decorators.
    import atrous.backbones  # noqa: F401
    import atrous.models  # noqa: F401


def list_models() -> list[str]:
    """All registered segmentation model names, sorted."""
    _ensure_loaded()
    return sorted(_MODELS)


def list_backbones() -> list[str]:
    """All registered backbone names, sorted."""
    _ensure_loaded()
    return sorted(_BACKBONES)


def valid_options(builder: Callable[..., Any]) -> list[str]:
    """Names of the keyword options a builder accepts."""
    return [
        p.name
        for p in inspect.signature(builder).parameters.values()
        if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]


def call_checked(kind: str, name: str, builder: Callable[..., nn.Module], options: dict[str, Any]) -> nn.Module:
    """Call ``builder(**options)`` after checking every option name is accepted and every
    value is of the type the builder annotates (:func:`atrous.limits.check_options`)."""
    from atrous.limits import check_options

    accepted = valid_options(builder)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} for {kind} {name!r}; valid: {', '.join(accepted)}")
    check_options(kind, name, builder, options)
    return builder(**options)


def get_builder(kind: str, name: str) -> Callable[..., nn.Module]:
    """The builder registered as ``name`` (kind "model" or "backbone")."""
    _ensure_loaded()
    table = _MODELS if kind == "model" else _BACKBONES
    if name not in table:
        raise ConfigError(choices_message(kind, name, table))
    return table[name]


def model_backbone(name: str) -> str | None:
    """The backbone registered model ``name`` is built on (``"resnet50"`` for
    ``deeplabv3plus_resnet50``), or None for a builder that does not name one."""
    builder = get_builder("model", name)
    if isinstance(builder, functools.partial) and builder.args and isinstance(builder.args[0], str):
        return builder.args[0]
    return None


def backbone_class(name: str) -> type[nn.Module]:
    """The class a registered backbone builder returns (its return annotation), whose
    attributes declare the backbone's capabilities (``supports_multi_grid`` …) before
    anything is built."""
    from torch import nn

    builder = inspect.unwrap(get_builder("backbone", name))
    returned = get_type_hints(builder).get("return")
    if not (isinstance(returned, type) and issubclass(returned, nn.Module)):
        raise TypeError(f"backbone builder {name!r} must annotate the class it returns (-> ResNet …), not {returned!r}")
    return returned


def create_backbone(name: str, **options: Any) -> nn.Module:
    """Build a registered backbone, e.g. ``create_backbone("resnet50", output_stride=16)``."""
    return call_checked("backbone", name, get_builder("backbone", name), options)
