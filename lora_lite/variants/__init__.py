# Imports every variant module so each one registers itself, and puts each module's config classes and Variant classes
# (nothing else: helpers such as `skew` or `lokr_plan` stay in their module) on the package face. Written by hand: new
# variant notebooks exported to lora_lite/variants/ are picked up without editing this file. Two modules that define
# the same public class name are an error, never a silent overwrite.
import importlib as _importlib, inspect as _inspect, pkgutil as _pkgutil
from ..core import AdapterConfig as _AdapterConfig, Variant as _Variant

__all__ = []
_owner = {}
for _m in sorted(_pkgutil.iter_modules(__path__), key=lambda m: m.name):
    _mod = _importlib.import_module(f"{__name__}.{_m.name}")
    for _n in getattr(_mod, "__all__", []):
        _o = getattr(_mod, _n)
        if not (_inspect.isclass(_o) and issubclass(_o, (_AdapterConfig, _Variant)) and _o.__module__ == _mod.__name__): continue
        if _n in _owner:
            raise ImportError(f"lora_lite.variants: {_n} is defined by both {_owner[_n]} and {_mod.__name__}; rename one "
                              "(the package face lists every variant's config and Variant class by name)")
        _owner[_n] = _mod.__name__
        globals()[_n] = _o
        __all__.append(_n)
