#!/bin/sh
# Build the Bouncy Castle peer with javac against Debian's jars (libbctls-java).
set -eu
cd "$(dirname "$0")"
out=../../.build/bouncycastle
cp=/usr/share/java/bctls.jar:/usr/share/java/bcprov.jar:/usr/share/java/bcutil.jar
rm -rf "$out/classes"
mkdir -p "$out/classes"
javac -nowarn -Xlint:-options -encoding UTF-8 -cp "$cp" -d "$out/classes" \
  $(find ../java-common/src src -name '*.java')
