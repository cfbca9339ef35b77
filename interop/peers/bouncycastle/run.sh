#!/bin/sh
# Registry command (run from the repository root): the environment is the contract's.
# Small heap and C1 only: a short-lived peer on shared cores.
here=$(dirname "$0")
cp=$here/../../.build/bouncycastle/classes:/usr/share/java/bctls.jar:/usr/share/java/bcprov.jar:/usr/share/java/bcutil.jar
exec java -Xmx128m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -cp "$cp" atls.interop.bc.BcPeer "$@"
