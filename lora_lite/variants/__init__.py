# Imports every variant module so each one registers itself. Written by hand: new variant notebooks
# exported to lora_lite/variants/ are picked up without editing this file.
import importlib as _importlib, pkgutil as _pkgutil
__all__ = []
for _m in sorted(_pkgutil.iter_modules(__path__), key=lambda m: m.name):
    _mod = _importlib.import_module(f"{__name__}.{_m.name}")
    for _n in getattr(_mod, "__all__", []):
        globals()[_n] = getattr(_mod, _n)
        __all__.append(_n)
