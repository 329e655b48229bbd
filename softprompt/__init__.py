"""softprompt: adapt one frozen language model to many tasks with soft prompts.

The public surface, re-exported from the layers (`softprompt.core`, ...)::

    from softprompt import load_model, SoftPrompt
    model = load_model("t5-tiny-random")
    prompt = SoftPrompt.init(model, length=20, init="random_uniform", seed=0)
"""

from softprompt.core.models import FrozenModel, load_model
from softprompt.core.multi_prompt import PromptTable, gather_prompts, stack_prompts
from softprompt.core.prompts import FingerprintMismatchError, PromptArtifactError, SoftPrompt

__all__ = ["FingerprintMismatchError", "FrozenModel", "PromptArtifactError", "PromptTable", "SoftPrompt",
           "gather_prompts", "load_model", "stack_prompts"]
