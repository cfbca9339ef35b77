"""Coverage-guided fuzzing of one target with atheris (libFuzzer).

    .venv/bin/python -m tests.fuzz.run_atheris TARGET [libFuzzer options] [CORPUS_DIR...]

e.g. ``-max_total_time=60 -rss_limit_mb=1024 -timeout=10``. A crash, a leak past
the RSS limit or a hang (``-timeout``) stops the run with a non-zero exit, and
libFuzzer writes the input to ``-artifact_prefix`` (the test wrapper points it
at ``corpus/TARGET/``: every crash found is kept as a regression input).
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["atls", "atls_policy", "atls_service", "atls_client"]):
    # the targets import the addon's modules lazily: import them here, instrumented
    import atls_policy.detect
    import atls_policy.observe
    import atls_policy.policy  # noqa: F401
    from tests.fuzz import targets


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in targets.TARGETS:
        raise SystemExit(
            f"usage: run_atheris TARGET [options]; targets: {', '.join(targets.TARGETS)}"
        )
    target = targets.TARGETS[sys.argv[1]]
    targets._pki()  # build the PKI (and the server's TLS context) before fuzzing starts
    if sys.argv[1] == "server_driver":
        targets._server_context()
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
