#!/usr/bin/env bash
# Distributed testing with torchrun and mmengine's PyTorch launcher.
#
# Usage: tools/dist_test.sh CONFIG CHECKPOINT GPUS [tools/test.py arguments]
#   GPUS is the number of processes on this node (see tools/dist_train.sh).
#
# Multi-node (run on every node, same MASTER_ADDR and PORT):
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.1.1.1 PORT=29500 tools/dist_test.sh CONFIG CKPT 8
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=10.1.1.1 PORT=29500 tools/dist_test.sh CONFIG CKPT 8
#
# Environment: NNODES (1), NODE_RANK (0), MASTER_ADDR (127.0.0.1),
# PORT (29500), PYTHON (python; the interpreter that has torch and mmseg).
set -e
if [ "$#" -lt 3 ]; then
    echo "usage: $0 CONFIG CHECKPOINT GPUS [tools/test.py arguments]" >&2
    exit 2
fi
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
PYTHON=${PYTHON:-python}

if [ ! -f "$CONFIG" ]; then
    echo "$0: config file not found: $CONFIG" >&2
    exit 2
fi
if [ ! -f "$CHECKPOINT" ]; then
    echo "$0: checkpoint file not found: $CHECKPOINT" >&2
    exit 2
fi
case "$GPUS" in
    ''|*[!0-9]*|0) echo "$0: GPUS must be a positive integer, got '$GPUS'" >&2; exit 2 ;;
esac

PYTHONPATH="$(dirname "$0")/..":$PYTHONPATH \
exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    "$(dirname "$0")/test.py" \
    "$CONFIG" \
    "$CHECKPOINT" \
    --launcher pytorch "${@:4}"
