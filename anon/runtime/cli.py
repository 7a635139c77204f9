"""``anon`` command line: sub-commands dispatch to their modules.

    anon anonymize [hydra overrides]     anonymise a dataset (default when only overrides are given)
    anon pipeline [hydra overrides]      fakes -> invert -> pair -> anonymize, each stage cached
    anon evaluate run_dir=DIR [...]      verify a finished run image by image (report.md, verification.jsonl)
    anon publish run_dir=DIR out=DIR     publish only verified images; re-optimise or withhold the rest
    anon photos input=DIR output=DIR     anonymise every face of whole photos (same size and format out)
    anon download NAME|all [--dir DIR]   fetch and verify official checkpoints
"""
from __future__ import annotations

import os
import sys

USAGE = __doc__


#: set by ``anon evaluate`` and ``anon pipeline`` for the processes they start: Lightning's DDP relaunch
#: (``strategy=ddp``, e.g. ``trainer=gpu``) re-runs ``anon`` with the Hydra overrides only, without the
#: sub-command, which would otherwise make every other rank of ``anon pipeline`` a plain ``anon anonymize``
RELAUNCH_COMMAND = "ANON_CLI_COMMAND"


def relaunched(argv: list[str]) -> list[str]:
    """The command line of a rank that Lightning started for ``anon evaluate`` or ``anon pipeline``.

    In a pipeline only the anonymisation starts a Trainer, after rank 0 has run (and cached) every stage
    before it: the new rank runs ``only=anonymize`` (unless the user chose a stage)."""
    command = os.environ[RELAUNCH_COMMAND]
    if command == "pipeline" and not any(a.lstrip("+~").startswith("only=") for a in argv):
        return [command, *argv, "only=anonymize"]
    return [command, *argv]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv else ""
    if os.environ.get(RELAUNCH_COMMAND) in ("evaluate", "pipeline") and ("=" in command or command.startswith(("-", "+"))):
        argv = relaunched(argv)
        command = argv[0]
    if command in ("", "-h", "--help", "help"):
        print(USAGE)
        return 0
    if command == "download":
        from anon.runtime.weights_download import download_main

        return download_main(argv[1:])
    if command in ("pipeline", "evaluate", "photos", "publish"):
        sys.argv = [sys.argv[0], *argv[1:]]
        if command == "pipeline":
            from anon.stages.pipeline import pipeline_entry as entry

            os.environ[RELAUNCH_COMMAND] = "pipeline"
        elif command == "publish":
            from anon.publish.stage import publish_entry as entry
        elif command == "evaluate":
            from anon.stages.evaluate import evaluate_entry as entry

            os.environ[RELAUNCH_COMMAND] = "evaluate"
        else:
            from anon.photos.cli import photos_entry as entry
        entry()
        return 0
    if command == "anonymize" or "=" in command or command.startswith(("-", "+")):
        # Hydra reads sys.argv; Lightning's DDP relaunch re-runs this command with overrides only.
        rest = argv[1:] if command == "anonymize" else argv
        sys.argv = [sys.argv[0], *rest]
        from anon.runtime.run import hydra_entry

        hydra_entry()
        return 0
    print(f"anon: unknown command {command!r}\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
