"""The pipeline's stage names and arm names: the one list of each, which every other list derives from
(config choices, flow parameters, command-line choices, deployments, the worker's stage table)."""

from __future__ import annotations

TRAINING_STAGES = ("bootstrap", "stage1", "stage2")  # the shared training loop's three uses
STAGES = ("data", *TRAINING_STAGES, "evaluate")  # in pipeline order

# base: the base model; sft: stage 2 from base; control: stage 1 with both lambdas 0, then stage 2;
# alignx: stage 1 with the alignment losses, then stage 2
ARMS = ("base", "sft", "control", "alignx")
STAGE2_ARMS = tuple(arm for arm in ARMS if arm != "base")  # every arm but base trains stage 2
STAGE1_ARMS = tuple(arm for arm in STAGE2_ARMS if arm != "sft")  # sft starts at stage 2
