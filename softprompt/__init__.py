"""softprompt: adapt one frozen language model to many tasks with soft prompts.

The public surface, re-exported from the layers (`softprompt.core`, ...) and imported on first
use, so `import softprompt` loads neither JAX, Ray nor MLflow::

    from softprompt import load_model, SoftPrompt
    model = load_model("t5-tiny-random")
    prompt = SoftPrompt.init(model, length=20, init="random_uniform", seed=0)
"""

from softprompt.core._exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports("softprompt.core", {
    "FrozenModel": "models", "load_model": "models",
    "FingerprintMismatchError": "prompts", "PromptArtifactError": "prompts", "SoftPrompt": "prompts",
    "PromptTable": "multi_prompt", "gather_prompts": "multi_prompt", "stack_prompts": "multi_prompt",
    "TrainConfig": "config", "train": "train", "evaluate": "api", "predict": "api",
})
