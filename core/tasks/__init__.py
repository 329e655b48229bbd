"""Tasks: text-to-text formats, data sources and metrics (T5 style, no task-name prefix).

>>> from softprompt.core import tasks
>>> spec = tasks.get_task("sst2")
>>> spec.label_words
('negative', 'positive')
>>> spec.input_text({"sentence": "a gorgeous film"})
'sentence: a gorgeous film'
"""

from softprompt.core.tasks.errors import TaskDataError, UnknownTaskError
from softprompt.core.tasks.registry import builtin_task_names, get_task, is_task_file
from softprompt.core.tasks.spec import Example, TaskSpec

__all__ = [
    "Example",
    "TaskDataError",
    "TaskSpec",
    "UnknownTaskError",
    "builtin_task_names",
    "get_task",
    "is_task_file",
]
