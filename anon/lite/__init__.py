"""The "lite" weight set: real pretrained face networks that ship inside registry packages (PyPI wheels, npm tarballs)."""
