__version__ = "0.1.0"
# The public API. This file is written by hand (nbdev keeps only __version__ in sync with settings.ini);
# every other module is exported from nbs/.
from .helpers import *
from .weights import *         # linear-like modules, dense_weight, bitsandbytes
from .cache import *           # cached parameter-only work, clear_cache
from .core import *
from .shared import *          # tensors every layer of one adapter shares (VeRA's pair): SharedTensors, share_tensors
from .calibrate import *
from .attach import *
from .adapter_file import *    # save, load, read_adapter
from .peft_io import *
from .deploy import *          # merged export, ll.disabled, ll.summary
from .train_step import *      # ll.step, ll.aux_loss: methods that act between optimizer steps (AdaLoRA)
from . import variants          # every variant registers itself on import
from .variants import *
