#!/bin/sh
# Build the JSSE peer with javac (JDK 17, no external jars).
set -eu
cd "$(dirname "$0")"
out=../../.build/jsse

rm -rf "$out/classes"
mkdir -p "$out/classes"
javac -nowarn -Xlint:-options -encoding UTF-8 -d "$out/classes" \
  $(find ../java-common/src src -name '*.java')
