#!/bin/sh
# Registry command (run from the repository root): the environment is the contract's.
exec "$(dirname "$0")/../../.build/go/atls-go" "$@"
