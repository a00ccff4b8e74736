"""``python -m hesig``: the ``hesig`` command without its console script (a checkout on PYTHONPATH)."""

from .cli import main

if __name__ == "__main__":
    main()
