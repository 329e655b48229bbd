"""Prompt artifacts and checkpoints survive a SIGKILL at any instant of being replaced: the
folder holds the previous complete version or the new one, never a mix or nothing."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np

from softprompt.core.atomic import recover_folder, replace_folder, staging_folder
from softprompt.core.prompts import SoftPrompt

WRITER = """
import sys, numpy as np
from softprompt.core.prompts import SoftPrompt
folder = sys.argv[1]
version = 1
print("ready", flush=True)
while True:
    SoftPrompt(np.full((64, 256), version, np.float32), "f" * 64, step=version).save(folder)
    version += 1
"""


def test_a_prompt_killed_mid_save_is_the_old_or_the_new_one(tmp_path):
    folder = tmp_path / "prompt"
    SoftPrompt(np.zeros((64, 256), np.float32), "f" * 64).save(folder)
    rng = random.Random(0)
    for _ in range(8):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(folder)], stdout=subprocess.PIPE, text=True,
                                  start_new_session=True)
        assert writer.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 0.4))
        os.killpg(writer.pid, signal.SIGKILL)
        writer.wait()
        prompt = SoftPrompt.load(folder)                      # recovers a swap cut in half
        values = np.unique(prompt.embeddings)
        assert values.size == 1 and int(values[0]) == prompt.step   # one complete version, tensor and metadata agree


def test_recovery_takes_the_new_version_between_the_two_renames(tmp_path):
    target = tmp_path / "checkpoint"
    target.mkdir()
    (target / "version").write_text("old")
    staging = staging_folder(target)
    (staging / "version").write_text("new")
    os.replace(target, target.with_name("checkpoint.retired"))      # the first rename, then a crash
    assert recover_folder(target) and (target / "version").read_text() == "new"
    assert not target.with_name("checkpoint.retired").exists()
    staging = staging_folder(target)
    (staging / "version").write_text("newer")
    assert (replace_folder(staging, target) / "version").read_text() == "newer"
