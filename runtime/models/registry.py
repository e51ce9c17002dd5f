"""ModelRegistry: HF architecture name -> model class.

Model modules are listed explicitly (not discovered) so an import error in one of them surfaces
instead of silently dropping its architectures. Each module exports `EntryClass` (a class or a
list). External models: `ModelRegistry.models["MyArch"] = MyClass` before starting the runtime.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple, Type

from torch import nn

MODEL_MODULES = ("sgl.runtime.models.llama", "sgl.runtime.models.qwen2", "sgl.runtime.models.qwen3",
                 "sgl.runtime.models.phi3", "sgl.runtime.models.gemma2", "sgl.runtime.models.llama_embedding",
                 "sgl.runtime.models.mixtral")


def import_model_classes() -> Dict[str, Type[nn.Module]]:
    classes: Dict[str, Type[nn.Module]] = {}
    for module_name in MODEL_MODULES:
        entry = importlib.import_module(module_name).EntryClass
        for cls in entry if isinstance(entry, (list, tuple)) else [entry]:
            if cls.__name__ in classes:
                raise ValueError(f"architecture {cls.__name__} is registered twice")
            classes[cls.__name__] = cls
    return classes


@dataclass
class _ModelRegistry:
    models: Dict[str, Type[nn.Module]] = field(default_factory=dict)

    def get_supported_archs(self) -> List[str]:
        return sorted(self.models)

    def resolve_model_cls(self, architectures: "Sequence[str] | str | None") -> Tuple[Type[nn.Module], str]:
        """The first registered class among `architectures`; ValueError listing the supported ones."""
        if isinstance(architectures, str):
            architectures = [architectures]
        for arch in architectures or []:
            if arch in self.models:
                return self.models[arch], arch
        raise ValueError(
            f"Model architectures {list(architectures or [])} are not supported for now. "
            f"Supported architectures: {self.get_supported_archs()}"
        )


ModelRegistry = _ModelRegistry(import_model_classes())
