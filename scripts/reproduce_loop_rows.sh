#!/usr/bin/env bash
# Regenerate the training data behind the README's data-loop rows and re-run the loop that
# produced them (benchmarks/results/loop_rounds.json: aggregated_v2_current_engine, and with
# FAILURE_WEIGHT=1 aggregated_v2_failure_weight_1). Run from the repository root:
#
#     scripts/reproduce_loop_rows.sh            # all three steps (hours on 2 CPU cores)
#     STEPS=1 scripts/reproduce_loop_rows.sh    # only the 200 expert + DAgger shards
#
# 1. out/bc-expert: 150 pdm_closed roll-outs of the library (seeds 100-105) and one DAgger round
#    (seeds 106-107: the round-0 policy drives, pdm_closed labels) = the 200 shards, and the
#    round-0 policy models/bc-round0.safetensors (README, "bc_policy", step 1); exactly 200 of the
#    270 shard names the shipped weights record.
# 2. out/loop-agg1: two loop rounds from that policy (aggregated_v1's command with its weights
#    file in place of the then-shipped `shipped`): the mined and generated shards of
#    round_0/shards and round_1/shards, the other 88 shard files the shipped weights were trained
#    on (70 names: 18 mined-* names occur in both rounds; agents/weights/bc_policy.json lists 288).
# 3. out/loop-nw: the rows' command: two rounds from the shipped weights, with every shard folder
#    they were trained on as --init-shards.
#
# Every step is deterministic (fixed seeds; the engine, the expert and the seeded training give
# the same shards and tensors on a rerun) and resumable (existing shards are kept, the loop
# resumes its stages). The shipped weights were trained on shards collected by an earlier engine
# (towns built from the scenario horizon; see loop_rounds.json), which are not shipped: the
# expert/DAgger shard names of step 1 are theirs, their content and the generated cases of
# step 2 are the current engine's, so step 3 re-measures the rows rather than replaying them bit
# for bit (one retraining's spread: loop_rounds.json, aggregated_v1_3rounds.reproducibility).
set -euo pipefail

LOOPDRIVE=${LOOPDRIVE:-loopdrive}
STEPS=${STEPS:-123}
FAILURE_WEIGHT=${FAILURE_WEIGHT:-3}
BASES=(--base scenarios/cut_in_left.yaml --base scenarios/jaywalker.yaml --base scenarios/lead_brake_hard.yaml)
LOOP_ARGS=(--planner bc_policy --scenarios scenarios/ "${BASES[@]}" --rounds 2 --budget 90 --heldout-budget 120
           --heldout-seed 1000 --method cem --retrain both --candidates 2 --epochs 8 --batch-size 128 --lr 1e-3
           --finetune-lr 3e-4 --finetune-epochs 6 --init-random 10 --horizon 6)

if [[ $STEPS == *1* ]]; then
  "$LOOPDRIVE" train bc --scenarios scenarios/ --seeds 100,101,102,103,104,105 --dagger-rounds 1 --dagger-seeds 106,107 \
    --episodes out/bc-expert --out models/bc-round0.safetensors --epochs 8 --batch-size 128
fi
if [[ $STEPS == *2* ]]; then
  "$LOOPDRIVE" loop "${LOOP_ARGS[@]}" --init-weights models/bc-round0.safetensors --init-shards out/bc-expert \
    --failure-weight 3 --out out/loop-agg1
fi
if [[ $STEPS == *3* ]]; then
  out=out/loop-nw
  [[ $FAILURE_WEIGHT == 3 ]] || out=out/loop-nw-fw$FAILURE_WEIGHT
  "$LOOPDRIVE" loop "${LOOP_ARGS[@]}" --init-weights shipped --init-shards out/bc-expert \
    --init-shards out/loop-agg1/round_0/shards --init-shards out/loop-agg1/round_1/shards \
    --failure-weight "$FAILURE_WEIGHT" --out "$out"
fi
