"""Datasets, splits, models and metrics, combined into named tasks."""

# Registers the segmentation, detection and face-parsing tasks into TASKS and DATASETS.
from benchmark.tasks import dense_tasks  # noqa: E402, F401  (imported for its registrations)
from benchmark.tasks.datasets import Dataset
from benchmark.tasks.metrics import METRICS, Accuracy, Metric
from benchmark.tasks.models import MODELS, build_model
from benchmark.tasks.registry import DATASETS, TASKS, Task, TaskDefinition, TaskSpec, load_task
from benchmark.tasks.splits import SplitData, split_dataset

__all__ = [
    "DATASETS",
    "METRICS",
    "MODELS",
    "TASKS",
    "Accuracy",
    "Dataset",
    "Metric",
    "SplitData",
    "Task",
    "TaskDefinition",
    "TaskSpec",
    "build_model",
    "load_task",
    "split_dataset",
]
