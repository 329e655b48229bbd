"""The science, usable alone in a notebook: frozen models, soft prompts, tasks, training,
evaluation and prediction. No Ray, no MLflow.

    >>> from softprompt.core import TrainConfig, load_model, SoftPrompt     # doctest: +SKIP
    >>> result = train(TrainConfig(task="rte", steps=20, batch_size=4, eval_every=10))   # doctest: +SKIP
"""

from ._exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    # models
    "FrozenModel": "models", "load_model": "models", "native_dtype": "models",
    # prompts
    "SoftPrompt": "prompts", "PromptTable": "multi_prompt", "stack_prompts": "multi_prompt",
    # tasks
    "TaskSpec": "tasks", "get_task": "tasks",
    # training and inference
    "TrainConfig": "config", "TrainResult": "train", "train": "train",
    "evaluate": "api", "evaluate_text_prompt": "api", "explain": "api", "load_prompt": "api", "predict": "api",
})
