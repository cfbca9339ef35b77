#!/bin/sh
# Registry command (run from the repository root): the environment is the contract's.
# Small heap and C1 only: a short-lived peer on shared cores.
here=$(dirname "$0")
exec java -Xmx128m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -cp "$here/../../.build/jsse/classes" atls.interop.jsse.JssePeer "$@"
