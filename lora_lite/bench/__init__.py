"""The GSM8K benchmark behind `lora-lite-bench`: data -> train -> evaluate -> report -> run -> cli (nbs/90_gsm8k ... 94_bench_cli)."""
# Written by hand (nbdev exports modules, not package files). Imports nothing heavy, so that
# `lora-lite-bench --help` works and a missing optional dependency gives an install hint, not a traceback.

def main(argv=None) -> int:
    "The `lora-lite-bench` command (`lora_lite.bench.cli.main`), importable from the package for the console script."
    from lora_lite.bench.cli import main as _main
    return _main(argv)
