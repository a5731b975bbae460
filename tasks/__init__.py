"""The NRAM tasks: samplers of (initial memory, target memory, scored cells), curricula and Gymnasium envs.

``import tasks`` registers the Gymnasium environments ``nram/<Task>-v0``.
"""

from tasks.base import Task, TaskBatch, cell_accuracy
from tasks.curriculum import Curriculum, FixedCurriculum, ZarembaCurriculum
from tasks.envs import NRAMEnv, register_envs
from tasks.registry import TASK_NAMES, get_task

register_envs()

__all__ = ["TASK_NAMES", "Curriculum", "FixedCurriculum", "NRAMEnv", "Task", "TaskBatch",
           "ZarembaCurriculum", "cell_accuracy", "get_task", "register_envs"]
