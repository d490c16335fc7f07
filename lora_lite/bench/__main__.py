# `python -m lora_lite.bench` / `accelerate launch -m lora_lite.bench`: the `lora-lite-bench` command. Written by hand.
import sys
from lora_lite.bench.cli import main
if __name__ == "__main__": sys.exit(main())
