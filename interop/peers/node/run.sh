#!/bin/sh
# Registry command (run from the repository root): the environment is the contract's.
exec node "$(dirname "$0")/atls-node.mjs" "$@"
